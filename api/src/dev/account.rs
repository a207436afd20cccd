//! The developer's account: profile and balance, payments, the credit ledger, voucher top-ups.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sigma_shared::domain::LedgerKind;
use sigma_shared::pricing;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::payment_intents::{IntentView, intent_view};
use crate::AppState;
use crate::auth::DeveloperAuth;
use crate::core::client_ip::ClientIp;
use crate::error::{ApiError, ApiJson, ApiQuery, ApiResult, ErrorBody, stored};
use crate::paging::ListParams;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(me))
        .routes(routes!(list_payments))
        .routes(routes!(ledger))
        .routes(routes!(redeem_voucher))
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Account {
    pub id: String,
    pub email: String,
    pub display_name: Option<String>,
    pub credit_balance: i64,
    pub credit_balance_usd: String,
    /// Set when the manifest assistant is locked for this account (Support lifts it).
    pub manifest_assistant_locked: bool,
    /// Payer wallets arrive with wallet sign-in; empty until then.
    pub wallets: Vec<String>,
    pub created_at: DateTime<Utc>,
}

#[utoipa::path(get, path = "/me", tag = "developer", security(("developer_session" = [])),
    responses((status = 200, body = Account), (status = 401, body = ErrorBody)))]
async fn me(State(state): State<AppState>, developer: DeveloperAuth) -> ApiResult<Json<Account>> {
    let d = sqlx::query!(
        "select developer_id, email, display_name, credit_balance, manifest_locked_at, created_at from developer where developer_id = $1",
        developer.developer_id
    )
    .fetch_one(&state.db)
    .await?;
    Ok(Json(Account {
        id: d.developer_id.to_string(),
        email: d.email,
        display_name: d.display_name,
        credit_balance_usd: pricing::usd(d.credit_balance),
        credit_balance: d.credit_balance,
        manifest_assistant_locked: d.manifest_locked_at.is_some(),
        wallets: vec![],
        created_at: d.created_at,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PaymentPage {
    pub items: Vec<IntentView>,
    pub next_cursor: Option<String>,
}

/// Payment intents, newest first.
#[utoipa::path(get, path = "/payments", tag = "developer", security(("developer_session" = [])), params(ListParams),
    responses((status = 200, body = PaymentPage), (status = 400, description = "A bad limit or cursor", body = ErrorBody)))]
async fn list_payments(
    State(state): State<AppState>,
    developer: DeveloperAuth,
    ApiQuery(params): ApiQuery<ListParams>,
) -> ApiResult<Json<PaymentPage>> {
    let page = params.page()?;
    let mut keys = sqlx::query!(
        r#"select intent_id, created_at from payment_intent
           where developer_id = $1 and ($2::timestamptz is null or (created_at, intent_id) < ($2, $3))
           order by created_at desc, intent_id desc limit $4"#,
        developer.developer_id,
        page.after_time,
        page.after_uuid()?.unwrap_or_default(),
        page.limit + 1
    )
    .fetch_all(&state.db)
    .await?;
    let next_cursor = page.finish(&mut keys, |k| (k.created_at, k.intent_id.to_string()));
    let mut items = Vec::with_capacity(keys.len());
    for k in keys {
        items.push(intent_view(&state, developer.developer_id, k.intent_id).await?);
    }
    Ok(Json(PaymentPage { items, next_cursor }))
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LedgerEntry {
    pub id: i64,
    pub kind: LedgerKind,
    /// Positive for credits in, negative for debits.
    pub amount_credits: i64,
    pub balance_after: i64,
    pub reference: String,
    pub note: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LedgerPage {
    pub balance: i64,
    pub items: Vec<LedgerEntry>,
    pub next_cursor: Option<String>,
}

/// The append-only credit ledger, newest first.
#[utoipa::path(get, path = "/credits/ledger", tag = "developer", security(("developer_session" = [])), params(ListParams),
    responses((status = 200, body = LedgerPage), (status = 400, description = "A bad limit or cursor", body = ErrorBody)))]
async fn ledger(
    State(state): State<AppState>,
    developer: DeveloperAuth,
    ApiQuery(params): ApiQuery<ListParams>,
) -> ApiResult<Json<LedgerPage>> {
    let page = params.page()?;
    let after = page.after_i64()?;
    let mut rows = sqlx::query!(
        r#"select entry_id as id, kind, amount_credits, balance_after, reference, note, created_at from credit_ledger
           where developer_id = $1 and ($2::bigint is null or entry_id < $2)
           order by entry_id desc limit $3"#,
        developer.developer_id,
        after,
        page.limit + 1
    )
    .fetch_all(&state.db)
    .await?;
    let next_cursor = page.finish(&mut rows, |e| (e.created_at, e.id.to_string()));
    let items = rows
        .into_iter()
        .map(|e| {
            Ok(LedgerEntry {
                id: e.id,
                kind: stored(&e.kind)?,
                amount_credits: e.amount_credits,
                balance_after: e.balance_after,
                reference: e.reference,
                note: e.note,
                created_at: e.created_at,
            })
        })
        .collect::<ApiResult<_>>()?;
    let balance = sqlx::query_scalar!(
        "select credit_balance from developer where developer_id = $1",
        developer.developer_id
    )
    .fetch_one(&state.db)
    .await?;
    Ok(Json(LedgerPage {
        balance,
        items,
        next_cursor,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VoucherRedemption {
    /// 8 to 64 letters, digits, `-` or `_`.
    #[schema(min_length = 8, max_length = 64)]
    pub code: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TopUp {
    pub credited: i64,
    pub balance: i64,
}

/// Top up credits with a credits voucher. A voucher works once per account.
#[utoipa::path(post, path = "/credits/vouchers", tag = "developer", security(("developer_session" = [])),
    request_body = VoucherRedemption,
    responses((status = 201, body = TopUp), (status = 409, description = "Already redeemed by this account", body = ErrorBody),
        (status = 422, description = "Unknown, used up, expired, or not a credits voucher", body = ErrorBody),
        (status = 429, body = ErrorBody)))]
async fn redeem_voucher(
    State(state): State<AppState>,
    developer: DeveloperAuth,
    ClientIp(client): ClientIp,
    ApiJson(body): ApiJson<VoucherRedemption>,
) -> ApiResult<Response> {
    state.public.limits.check_voucher(client)?;
    let code = body.code.trim();
    let mut tx = state.db.begin().await?;
    // Once per account and only a known code: the redemption's key and reference say so
    // (`voucher_redemption_pkey` is 409, `voucher_redemption_code_fkey` 422; see error.rs).
    sqlx::query!(
        "insert into voucher_redemption (code, developer_id) values ($1, $2)",
        code,
        developer.developer_id
    )
    .execute(&mut *tx)
    .await?;
    let credits = sqlx::query_scalar!(
        r#"update voucher set uses_left = uses_left - 1
           where code = $1 and kind = 'CREDITS' and uses_left > 0 and (expires_at is null or expires_at > now())
           returning credits"#,
        code
    )
    .fetch_optional(&mut *tx)
    .await?
    .filter(|c| *c > 0)
    .ok_or_else(voucher_invalid)?;
    let balance = sqlx::query_scalar!(
        "update developer set credit_balance = credit_balance + $2 where developer_id = $1 returning credit_balance",
        developer.developer_id,
        credits
    )
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query!(
        r#"insert into credit_ledger (developer_id, kind, amount_credits, balance_after, reference, note)
           values ($1, 'VOUCHER', $2, $3, $4, 'voucher top-up')"#,
        developer.developer_id,
        credits,
        balance,
        code
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        Json(TopUp {
            credited: credits,
            balance,
        }),
    )
        .into_response())
}

/// A well-formed code that cannot be redeemed (unknown, used up, expired): one answer for all, so
/// a guess learns nothing.
fn voucher_invalid() -> ApiError {
    ApiError::conflict(
        "voucher_invalid",
        "the voucher is unknown, used up, expired, or not a credits voucher",
    )
}
