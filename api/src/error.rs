//! The one API error type. Clients get a stable `{code, detail}` body; internal causes are logged
//! inside the request span and never sent.

use axum::Json;
use axum::extract::{FromRequest, FromRequestParts};
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
        StatusCode::UNPROCESSABLE_ENTITY,
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

/// The longest text any JSON string field may carry unless its own schema says less, in
/// characters as JSON Schema's `maxLength` counts them. Stored text is bounded so that no
/// request can grow a row (or a signed certificate) without limit.
pub const MAX_JSON_TEXT_CHARS: usize = 16 * 1024;

/// A JSON body, checked in one place for every handler: content type (415), syntax (400), text
/// that storage cannot hold or that is too long (422 naming the field: PostgreSQL refuses NUL in
/// text), and the shape of `T` (422 naming the field, via `serde_path_to_error`).
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(request: axum::extract::Request, state: &S) -> ApiResult<Self> {
        let is_json = request
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<mime::Mime>().ok())
            .is_some_and(|m| {
                m.type_() == mime::APPLICATION
                    && (m.subtype() == mime::JSON || m.suffix() == Some(mime::JSON))
            });
        if !is_json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "expected a JSON body (`Content-Type: application/json`)",
            ));
        }
        let bytes = axum::body::Bytes::from_request(request, state)
            .await
            .map_err(|e| {
                let code = if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    "payload_too_large"
                } else {
                    "invalid_body"
                };
                ApiError::new(e.status(), code, e.body_text())
            })?;
        let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::bad_request("invalid_json", format!("the body is not valid JSON: {e}"))
        })?;
        check_text(&value, &mut String::new())?;
        let mut value = value;
        integral_numbers(&mut value);
        serde_path_to_error::deserialize(value)
            .map(ApiJson)
            .map_err(|e| {
                let path = e.path().to_string();
                let inner = e.into_inner();
                let detail = if path == "." {
                    inner.to_string()
                } else {
                    format!("`{path}`: {inner}")
                };
                ApiError::unprocessable("invalid_field", detail)
            })
    }
}

/// `2.0` is the integer 2 to JSON Schema (and to JavaScript clients): such numbers are written as
/// integers before `T` reads them, so an integer field accepts what its schema accepts.
fn integral_numbers(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Number(n) => {
            if let Some(f) = n.as_f64()
                && n.is_f64()
                && f.fract() == 0.0
                && f.abs() <= 9_007_199_254_740_992.0
            {
                *value = serde_json::Value::from(f as i64);
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(integral_numbers),
        serde_json::Value::Object(fields) => fields.values_mut().for_each(integral_numbers),
        _ => {}
    }
}

/// Refuses NUL and over-long strings anywhere in a JSON document, naming where.
fn check_text(value: &serde_json::Value, path: &mut String) -> ApiResult<()> {
    match value {
        serde_json::Value::String(text) => text_ok(text, || path_or_body(path)),
        serde_json::Value::Array(items) => {
            for (n, item) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{n}]"));
                check_text(item, path)?;
                path.truncate(len);
            }
            Ok(())
        }
        serde_json::Value::Object(fields) => {
            for (name, item) in fields {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(name);
                text_ok(name, || format!("the name of `{path}`"))?;
                check_text(item, path)?;
                path.truncate(len);
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

fn path_or_body(path: &str) -> String {
    if path.is_empty() {
        "the body".into()
    } else {
        format!("`{path}`")
    }
}

/// The text rule every stored string follows: no NUL, at most [`MAX_JSON_TEXT_CHARS`]. The
/// problem with `text`, if any, as the rest of a sentence about it.
fn text_problem(text: &str) -> Option<(&'static str, String)> {
    if text.contains('\0') {
        Some(("invalid_text", "contains a NUL character".into()))
    } else if text.len() > MAX_JSON_TEXT_CHARS && text.chars().count() > MAX_JSON_TEXT_CHARS {
        Some((
            "text_too_long",
            format!("is longer than {MAX_JSON_TEXT_CHARS} characters"),
        ))
    } else {
        None
    }
}

/// The text rule for a stored string: 422 naming the field.
pub fn text_ok(text: &str, field: impl FnOnce() -> String) -> ApiResult<()> {
    match text_problem(text) {
        Some((code, problem)) => Err(ApiError::unprocessable(
            code,
            format!("{} {problem}", field()),
        )),
        None => Ok(()),
    }
}

/// Query parameters: malformed ones are 400 (one rule for every list and search), text that
/// breaks the rule of JSON strings included (naming the parameter).
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> ApiResult<Self> {
        let query = parts.uri.query().unwrap_or("");
        for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
            // The text rule holds here too, but a bad query is the request's shape: 400.
            let problem = text_problem(&name)
                .map(|(_, p)| format!("a query parameter name {p}"))
                .or_else(|| {
                    text_problem(&value).map(|(_, p)| format!("query parameter `{name}` {p}"))
                });
            if let Some(detail) = problem {
                return Err(ApiError::bad_request("invalid_query", detail));
            }
        }
        serde_path_to_error::deserialize(serde_urlencoded::Deserializer::new(
            url::form_urlencoded::parse(query.as_bytes()),
        ))
        .map(ApiQuery)
        .map_err(|e| {
            let path = e.path().to_string();
            ApiError::bad_request(
                "invalid_query",
                format!("query parameter `{path}`: {}", e.into_inner()),
            )
        })
    }
}

/// A path segment parsed into its type. Ids of resources answer a malformed id as they answer
/// a missing one (404 `not_found`: a guess learns nothing); other parameters say what is wrong.
pub trait PathParam: Sized {
    fn from_path(raw: &str) -> ApiResult<Self>;
}

/// The route's one path parameter, typed: `ApiPath<DraftId>`. Unlike axum's `Path`, every
/// refusal is `{code, detail}`.
pub struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    S: Send + Sync,
    T: PathParam,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> ApiResult<Self> {
        let axum::extract::Path(raw) =
            axum::extract::Path::<String>::from_request_parts(parts, state)
                .await
                .map_err(|e| ApiError::bad_request("invalid_path", e.body_text()))?;
        T::from_path(&raw).map(ApiPath)
    }
}

impl PathParam for String {
    fn from_path(raw: &str) -> ApiResult<Self> {
        text_ok(raw, || "the path".into())?;
        Ok(raw.to_owned())
    }
}

macro_rules! ids_in_paths {
    ($($ty:ty => $what:literal),+ $(,)?) => {$(
        impl PathParam for $ty {
            fn from_path(raw: &str) -> ApiResult<Self> {
                raw.parse().map_err(|_: String| ApiError::not_found($what))
            }
        }
    )+};
}

use sigma_shared::domain as d;
ids_in_paths! {
    d::DraftId => "draft",
    d::PaymentIntentId => "payment intent",
    d::TicketId => "ticket",
    d::FlagId => "flag",
    d::RuleId => "rule",
    d::CampaignId => "campaign",
    d::DeveloperId => "developer",
    sigma_activities::intake::checkout::PaymentMethod => "payment method",
}

impl PathParam for d::SubmissionId {
    fn from_path(raw: &str) -> ApiResult<Self> {
        Self::parse(raw).map_err(|_| ApiError::not_found("submission"))
    }
}

impl PathParam for d::CertificateId {
    fn from_path(raw: &str) -> ApiResult<Self> {
        Self::parse(raw).map_err(|_| ApiError::not_found("certificate"))
    }
}

/// A category names a catalog entry rather than a stored row: an unknown one is 422.
impl PathParam for d::Category {
    fn from_path(raw: &str) -> ApiResult<Self> {
        raw.parse()
            .map_err(|e: String| ApiError::unprocessable("unknown_category", e))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integral_floats_read_as_integers_and_fractions_stay() {
        let mut value = serde_json::json!({"credits": 695465.0, "ratio": 0.5, "list": [2.0, 3]});
        integral_numbers(&mut value);
        assert_eq!(value["credits"], serde_json::json!(695465));
        assert!(value["credits"].is_i64());
        assert_eq!(value["ratio"], serde_json::json!(0.5));
        assert!(value["list"][0].is_i64());
    }

    #[test]
    fn the_text_rule_counts_characters() {
        let wide = "é".repeat(MAX_JSON_TEXT_CHARS);
        assert!(
            text_ok(&wide, || "`x`".into()).is_ok(),
            "within the limit in characters"
        );
        let over = "a".repeat(MAX_JSON_TEXT_CHARS + 1);
        assert!(text_ok(&over, || "`x`".into()).is_err());
        assert!(text_ok("a\0b", || "`x`".into()).is_err());
    }
}
