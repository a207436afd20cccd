//! The one API error type. Clients get a stable `{code, detail}` body; internal causes are logged
//! inside the request span and never sent.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Stable, machine-readable code, e.g. `unknown_category`.
    pub code: String,
    /// Human-readable explanation.
    pub detail: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{detail}")]
    Client {
        status: StatusCode,
        code: &'static str,
        detail: String,
    },
    /// 429 with `Retry-After`.
    #[error("{detail}")]
    RateLimited {
        detail: String,
        retry_after_secs: u64,
    },
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self::Client {
            status,
            code,
            detail: detail.into(),
        }
    }
    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, detail)
    }
    pub fn unprocessable(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, detail)
    }
    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }
    pub fn conflict(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, detail)
    }
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
    }
    pub fn bad_gateway(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_GATEWAY, code, detail)
    }
    pub fn unavailable(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, code, detail)
    }
}

/// The named constraints a client's input can violate, each with the answer that names the
/// field it guards. Postgres enforces the rule and this table translates it, so no handler
/// checks first and inserts second (which races) or matches error codes itself.
const CONSTRAINTS: &[(&str, StatusCode, &str, &str, &str)] = &[
    // (constraint, status, code, field, what is wrong)
    (
        "voucher_pkey",
        StatusCode::CONFLICT,
        "voucher_exists",
        "code",
        "a voucher with this code exists",
    ),
    (
        "free_allowlist_pkey",
        StatusCode::CONFLICT,
        "already_allowlisted",
        "pattern",
        "this address or domain is already allowlisted",
    ),
    (
        "voucher_redemption_pkey",
        StatusCode::CONFLICT,
        "voucher_already_redeemed",
        "code",
        "this account already used this voucher",
    ),
    (
        "voucher_redemption_code_fkey",
        StatusCode::CONFLICT,
        "voucher_invalid",
        "code",
        "the voucher is unknown, used up, expired, or not a credits voucher",
    ),
    (
        "pricing_rule_category_fkey",
        StatusCode::UNPROCESSABLE_ENTITY,
        "category_not_priced",
        "category",
        "the category has no price in the catalog yet; set one first",
    ),
    (
        "pricing_campaign_category_fkey",
        StatusCode::UNPROCESSABLE_ENTITY,
        "category_not_priced",
        "category",
        "the category has no price in the catalog yet; set one first",
    ),
    (
        "certificate_flag_reason_check",
        StatusCode::BAD_REQUEST,
        "invalid_flag",
        "reason",
        "must be 1–2000 characters",
    ),
    (
        "certificate_flag_evidence_check",
        StatusCode::BAD_REQUEST,
        "invalid_flag",
        "evidence",
        "must be at most 10000 characters",
    ),
    (
        "certificate_flag_contact_check",
        StatusCode::BAD_REQUEST,
        "invalid_flag",
        "contact",
        "must be at most 320 characters",
    ),
    (
        "developer_credit_balance_check",
        StatusCode::UNPROCESSABLE_ENTITY,
        "balance_would_be_negative",
        "credits",
        "the balance cannot go below zero",
    ),
    (
        "voucher_credits_check",
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_voucher",
        "credits",
        "is not negative",
    ),
    (
        "voucher_uses_left_check",
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_voucher",
        "uses",
        "is not negative",
    ),
    (
        "pricing_category_base_credits_check",
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_price",
        "baseCredits",
        "is not negative",
    ),
    (
        "pricing_rule_amount_credits_check",
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_rule",
        "amountCredits",
        "is not negative",
    ),
    (
        "pricing_rule_multiplier_bps_check",
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_rule",
        "multiplierBps",
        "is positive",
    ),
    (
        "pricing_rule_check",
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_rule",
        "tier",
        "a COMPLEXITY_TIER rule names a tier, and only it does",
    ),
    (
        "pricing_campaign_discount_bps_check",
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_campaign",
        "discountBps",
        "is 1 to 10000",
    ),
    (
        "pricing_campaign_limit_n_check",
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_campaign",
        "limitN",
        "is positive",
    ),
    (
        "pricing_campaign_check1",
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_campaign",
        "limitN",
        "a FIRST_N campaign has a limit, and only it does",
    ),
];

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        if let Some(db) = e.as_database_error() {
            // A violation this API knows names its field; any other is still the client's
            // doing, said without leaking SQL.
            if let Some(&(_, status, code, field, why)) = db
                .constraint()
                .and_then(|name| CONSTRAINTS.iter().find(|c| c.0 == name))
            {
                return Self::new(status, code, format!("`{field}`: {why}"));
            }
            if db.is_unique_violation() {
                return Self::conflict("conflict", "the resource already exists");
            }
            if db.is_foreign_key_violation() || db.is_check_violation() {
                return Self::unprocessable(
                    "invalid_reference",
                    "the request refers to something that does not exist or is not allowed",
                );
            }
        }
        Self::Internal(e.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            Self::Client {
                status,
                code,
                detail,
            } => {
                if status == StatusCode::UNAUTHORIZED {
                    let mut response = (
                        status,
                        Json(ErrorBody {
                            code: code.into(),
                            detail,
                        }),
                    )
                        .into_response();
                    response
                        .headers_mut()
                        .insert("www-authenticate", "Bearer".parse().expect("static header"));
                    return response;
                }
                (
                    status,
                    Json(ErrorBody {
                        code: code.into(),
                        detail,
                    }),
                )
                    .into_response()
            }
            Self::RateLimited {
                detail,
                retry_after_secs,
            } => {
                let mut response = (
                    StatusCode::TOO_MANY_REQUESTS,
                    Json(ErrorBody {
                        code: "rate_limited".into(),
                        detail,
                    }),
                )
                    .into_response();
                response
                    .headers_mut()
                    .insert("retry-after", retry_after_secs.into());
                response
            }
            Self::Internal(e) => {
                tracing::error!(error = format!("{e:#}"), "request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    Json(ErrorBody {
                        code: "internal".into(),
                        detail: "internal error; it has been logged".into(),
                    }),
                )
                    .into_response()
            }
        }
    }
}

/// Reads a closed set back from its stored text; storage holding anything else is a bug (500).
pub fn stored<T: serde::de::DeserializeOwned>(text: &str) -> ApiResult<T> {
    serde_json::from_value(serde_json::Value::String(text.to_owned()))
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("unexpected stored value `{text}`: {e}")))
}

/// The stored text of a closed-set value (its wire name).
pub fn stored_text<T: Serialize>(value: T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(text)) => text,
        other => unreachable!("a closed set serialises as text, not {other:?}"),
    }
}

// The input extractors answer with this error type; handlers import them from here too.
pub use crate::input::{ApiJson, ApiPath, ApiQuery, MAX_JSON_TEXT_CHARS, PathParam, text_ok};
