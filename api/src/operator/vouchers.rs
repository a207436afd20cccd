//! Free routes: vouchers (free submissions or credits) and the free allowlist.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sigma_shared::domain::VoucherKind;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::auth::OperatorAuth;
use crate::error::{ApiError, ApiJson, ApiPath, ApiResult, ErrorBody, stored};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_voucher, list_vouchers))
        .routes(routes!(add_allowlist, list_allowlist))
        .routes(routes!(remove_allowlist))
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewVoucher {
    /// 8 to 64 letters, digits, `-` or `_` (short codes are guessable).
    #[schema(min_length = 8, max_length = 64, pattern = "^[A-Za-z0-9_-]{8,64}$")]
    pub code: String,
    pub kind: VoucherKind,
    /// For CREDITS: credits per redemption, 1 to 10,000,000; for FREE_SUBMISSION: 0 or absent.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 10000000)]
    pub credits: i64,
    #[schema(minimum = 1, maximum = 1000000)]
    pub uses: i32,
    pub expires_at: Option<DateTime<Utc>>,
}

/// Create a voucher.
#[utoipa::path(post, path = "/vouchers", tag = "operator", security(("operator_session" = [])),
    request_body = NewVoucher,
    responses((status = 201, body = NewVoucher), (status = 409, description = "The code exists", body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_voucher(
    State(state): State<AppState>,
    operator: OperatorAuth,
    ApiJson(body): ApiJson<NewVoucher>,
) -> ApiResult<Response> {
    let code_ok = (8..=64).contains(&body.code.len())
        && body
            .code
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'));
    let kind_ok = match body.kind {
        VoucherKind::FreeSubmission => body.credits == 0,
        VoucherKind::Credits => (1..=10_000_000).contains(&body.credits),
    };
    if !code_ok || !kind_ok || !(1..=1_000_000).contains(&body.uses) {
        return Err(ApiError::unprocessable(
            "invalid_voucher",
            "a voucher has an 8–64 character code, kind FREE_SUBMISSION (no credits) or CREDITS (1 to 10,000,000 credits), and 1 to 1,000,000 uses",
        ));
    }
    sqlx::query!(
        "insert into voucher (code, kind, credits, uses_left, expires_at, created_by) values ($1, $2, $3, $4, $5, $6)",
        body.code,
        body.kind.as_str(),
        body.credits,
        body.uses,
        body.expires_at,
        operator.operator_id
    )
    .execute(&state.db)
    .await?;
    tracing::info!(operator = %operator.name, kind = %body.kind, uses = body.uses, "voucher created");
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VoucherView {
    pub code: String,
    pub kind: VoucherKind,
    pub credits: i64,
    pub uses_left: i32,
    pub redemptions: i64,
    pub expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// Every voucher with its remaining uses and redemptions, newest first.
#[utoipa::path(get, path = "/vouchers", tag = "operator", security(("operator_session" = [])),
    responses((status = 200, body = Vec<VoucherView>)))]
async fn list_vouchers(
    State(state): State<AppState>,
    _operator: OperatorAuth,
) -> ApiResult<Json<Vec<VoucherView>>> {
    let vouchers = sqlx::query!(
        r#"select v.code, v.kind, v.credits, v.uses_left, v.expires_at, v.created_at,
                   (select count(*) from voucher_redemption r where r.code = v.code) as "redemptions!"
               from voucher v order by v.created_at desc, v.code"#
    )
    .fetch_all(&state.db)
    .await?
    .into_iter()
    .map(|v| {
        Ok(VoucherView {
            code: v.code,
            kind: stored(&v.kind)?,
            credits: v.credits,
            uses_left: v.uses_left,
            redemptions: v.redemptions,
            expires_at: v.expires_at,
            created_at: v.created_at,
        })
    })
    .collect::<ApiResult<_>>()?;
    Ok(Json(vouchers))
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AllowlistEntry {
    /// An address, or `@domain` for a whole domain.
    #[schema(
        min_length = 3,
        max_length = 254,
        pattern = "^(@|(?=[^@]{1,64}@)[A-Za-z0-9_%+-]+(\\.[A-Za-z0-9_%+-]+)*@)[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)+$"
    )]
    pub pattern: String,
    #[serde(default)]
    pub note: String,
}

/// Allow an address or domain free audits.
#[utoipa::path(post, path = "/free-allowlist", tag = "operator", security(("operator_session" = [])),
    request_body = AllowlistEntry,
    responses((status = 201, description = "Allowlisted"), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn add_allowlist(
    State(state): State<AppState>,
    operator: OperatorAuth,
    ApiJson(body): ApiJson<AllowlistEntry>,
) -> ApiResult<StatusCode> {
    let pattern = body.pattern.trim().to_lowercase();
    let valid = match pattern.strip_prefix('@') {
        Some(domain) => domain.contains('.') && !domain.contains('@'),
        None => sigma_shared::domain::EmailAddress::parse(&pattern).is_ok(),
    };
    if !valid {
        return Err(ApiError::unprocessable(
            "invalid_pattern",
            "an address or `@domain`",
        ));
    }
    sqlx::query!(
        "insert into free_allowlist (pattern, note, created_by) values ($1, $2, $3)",
        pattern,
        body.note,
        operator.operator_id
    )
    .execute(&state.db)
    .await?;
    Ok(StatusCode::CREATED)
}

/// An allowlist entry as stored (lowercased and trimmed).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AllowlistedView {
    pub pattern: String,
    pub note: String,
}

/// The free allowlist.
#[utoipa::path(get, path = "/free-allowlist", tag = "operator", security(("operator_session" = [])),
    responses((status = 200, body = Vec<AllowlistedView>)))]
async fn list_allowlist(
    State(state): State<AppState>,
    _operator: OperatorAuth,
) -> ApiResult<Json<Vec<AllowlistedView>>> {
    Ok(Json(
        sqlx::query_as!(
            AllowlistedView,
            "select pattern, note from free_allowlist order by pattern"
        )
        .fetch_all(&state.db)
        .await?,
    ))
}

/// Take an address or domain off the free allowlist (intents already made must re-qualify at submit).
#[utoipa::path(delete, path = "/free-allowlist/{pattern}", tag = "operator", security(("operator_session" = [])),
    params(("pattern" = String, Path)), responses((status = 204, description = "Removed"), (status = 404, body = ErrorBody)))]
async fn remove_allowlist(
    State(state): State<AppState>,
    operator: OperatorAuth,
    ApiPath(pattern): ApiPath<String>,
) -> ApiResult<StatusCode> {
    let done = sqlx::query!(
        "delete from free_allowlist where pattern = lower($1)",
        pattern.trim()
    )
    .execute(&state.db)
    .await?;
    if done.rows_affected() == 0 {
        return Err(ApiError::not_found("allowlist entry"));
    }
    tracing::info!(operator = %operator.name, %pattern, "removed from the free allowlist");
    Ok(StatusCode::NO_CONTENT)
}
