//! Payment intents: how a quote will be paid (credits, a voucher, or a free route). Nothing is
//! charged here; the submit's run moves the money. Chain transfers and x402 plug into the same
//! intent (`method`, `network`, `receiveAddress`, `txHash`) with the agent plane.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sigma_shared::domain::{IntentStatus, PaymentIntentId};
use sigma_shared::pricing::{self};
use sqlx::types::Uuid;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::owned::{Owned, OwnedResource};
use crate::AppState;
use crate::auth::DeveloperAuth;
use crate::error::{ApiError, ApiJson, ApiResult, ErrorBody, stored};
use sigma_activities::intake::checkout::{PaymentMethod, allowlisted};

/// One of the developer's payment intents, loaded and authorised from the path.
pub type OwnedIntent = Owned<IntentRow>;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_intent))
        .routes(routes!(get_intent))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewIntent {
    pub quote_id: String,
    /// `credits` (debited at submit), `voucher` (a free-submission voucher code) or `free`
    /// (an allowlisted address or an operator's one-shot override). `direct_monad`, `x402` and
    /// `card` are answered 422 until those rails are enabled.
    pub method: PaymentMethod,
    pub voucher_code: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IntentView {
    pub id: String,
    pub draft_id: String,
    pub quote_id: String,
    pub method: PaymentMethod,
    pub status: IntentStatus,
    pub amount_credits: i64,
    pub amount_usd: String,
    pub network: Option<String>,
    pub receive_address: Option<String>,
    pub tx_hash: Option<String>,
    pub submission_id: Option<String>,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

/// A payment intent as stored.
pub struct IntentRow {
    intent_id: Uuid,
    draft_id: Uuid,
    quote_id: Uuid,
    method: String,
    status: String,
    amount_credits: i64,
    network: Option<String>,
    receive_address: Option<String>,
    tx_hash: Option<String>,
    submission_id: Option<String>,
    expires_at: DateTime<Utc>,
    created_at: DateTime<Utc>,
}

/// The developer's own payment intent.
impl OwnedResource for IntentRow {
    type Id = PaymentIntentId;
    const NAME: &'static str = "payment intent";

    async fn load(
        state: &AppState,
        developer: Uuid,
        id: PaymentIntentId,
    ) -> ApiResult<Option<Self>> {
        Ok(sqlx::query_as!(
            IntentRow,
            r#"select intent_id, draft_id, quote_id, method, status, amount_credits, network, receive_address, tx_hash,
               submission_id, expires_at, created_at
           from payment_intent where intent_id = $1 and developer_id = $2"#,
            id.uuid(),
            developer
        )
        .fetch_optional(&state.db)
        .await?)
    }
}

impl IntentRow {
    fn view(self) -> ApiResult<IntentView> {
        let status: IntentStatus = stored(&self.status)?;
        // An intent past its quote's expiry is shown as such even before anything touches it.
        let status = if matches!(status, IntentStatus::Created | IntentStatus::Confirmed)
            && self.expires_at <= Utc::now()
        {
            IntentStatus::Expired
        } else {
            status
        };
        Ok(IntentView {
            id: self.intent_id.to_string(),
            draft_id: self.draft_id.to_string(),
            quote_id: self.quote_id.to_string(),
            method: stored(&self.method)?,
            status,
            amount_usd: pricing::usd(self.amount_credits),
            amount_credits: self.amount_credits,
            network: self.network,
            receive_address: self.receive_address,
            tx_hash: self.tx_hash,
            submission_id: self.submission_id,
            expires_at: self.expires_at,
            created_at: self.created_at,
        })
    }
}

/// One of the developer's intents, by id.
pub(crate) async fn intent_view(
    state: &AppState,
    developer: Uuid,
    id: Uuid,
) -> ApiResult<IntentView> {
    IntentRow::load(state, developer, id.into())
        .await?
        .ok_or_else(|| ApiError::not_found("payment intent"))?
        .view()
}

/// Create a payment intent for a quote. Repeating it for the same quote and method returns the
/// same intent. Nothing is charged here: credits are debited, and vouchers and free overrides
/// used, by the submit.
#[utoipa::path(post, path = "/payment-intents", tag = "developer", security(("developer_session" = [])),
    request_body = NewIntent,
    responses((status = 201, body = IntentView), (status = 200, description = "The existing intent for this quote and method", body = IntentView),
        (status = 404, body = ErrorBody), (status = 409, description = "The quote expired or the draft changed", body = ErrorBody),
        (status = 422, description = "Unknown or disabled method, bad voucher, not eligible for free", body = ErrorBody)))]
async fn create_intent(
    State(state): State<AppState>,
    developer: DeveloperAuth,
    ApiJson(body): ApiJson<NewIntent>,
) -> ApiResult<Response> {
    let quote_id: Uuid = body
        .quote_id
        .parse()
        .map_err(|_| ApiError::not_found("quote"))?;
    let quote = sqlx::query!(
        r#"select q.draft_id, q.revision, q.total_credits, q.price_snapshot, q.expires_at, d.revision as draft_revision,
               d.submission_id
           from quote q join draft d using (draft_id) where q.quote_id = $1 and q.developer_id = $2"#,
        quote_id,
        developer.developer_id
    )
    .fetch_optional(&state.db)
    .await?
    .ok_or_else(|| ApiError::not_found("quote"))?;
    if quote.expires_at <= Utc::now() {
        return Err(ApiError::conflict(
            "quote_expired",
            "the quote expired; ask for a new one",
        ));
    }
    if quote.revision != quote.draft_revision || quote.submission_id.is_some() {
        return Err(ApiError::conflict(
            "quote_stale",
            "the draft changed after this quote; ask for a new one",
        ));
    }
    let method = body.method;
    let enabled = sqlx::query_scalar!(
        "select enabled from payment_method where method = $1",
        method.as_str()
    )
    .fetch_optional(&state.db)
    .await?;
    match enabled {
        None => {
            return Err(ApiError::unprocessable(
                "unknown_method",
                "method is credits, voucher, free, direct_monad, x402 or card",
            ));
        }
        Some(false) => {
            return Err(ApiError::unprocessable(
                "method_unavailable",
                format!("`{method}` payments are not enabled on this deployment"),
            ));
        }
        Some(true) => {}
    }
    let existing = sqlx::query_scalar!(
        r#"select intent_id from payment_intent where quote_id = $1 and method = $2
             and status in ('CREATED', 'CONFIRMED') order by created_at limit 1"#,
        quote_id,
        method.as_str()
    )
    .fetch_optional(&state.db)
    .await?;
    if let Some(existing) = existing {
        return Ok(
            Json(intent_view(&state, developer.developer_id, existing).await?).into_response(),
        );
    }
    let (amount, status, voucher, override_id) = match method {
        PaymentMethod::Credits => (quote.total_credits, "CREATED", None, None),
        PaymentMethod::Voucher => {
            let code = body
                .voucher_code
                .as_deref()
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .ok_or_else(|| ApiError::unprocessable("voucher_required", "send `voucherCode`"))?;
            let usable = sqlx::query_scalar!(
                r#"select exists(select 1 from voucher v where v.code = $1 and v.kind = 'FREE_SUBMISSION' and v.uses_left > 0
                       and (v.expires_at is null or v.expires_at > now())
                       and not exists(select 1 from voucher_redemption r where r.code = v.code and r.developer_id = $2)) as "ok!""#,
                code,
                developer.developer_id
            )
            .fetch_one(&state.db)
            .await?;
            if !usable {
                return Err(ApiError::conflict(
                    "voucher_invalid",
                    "the voucher is unknown, used up, expired, already used by you, or not for submissions",
                ));
            }
            (0, "CONFIRMED", Some(code.to_owned()), None)
        }
        PaymentMethod::Free => {
            let override_id = sqlx::query_scalar!(
                "select override_id from free_override where developer_id = $1 and used_at is null order by created_at limit 1",
                developer.developer_id
            )
            .fetch_optional(&state.db)
            .await?;
            if override_id.is_none() && !allowlisted(&state.db, &developer.email).await? {
                return Err(ApiError::unprocessable(
                    "not_eligible_for_free",
                    "this account is neither allowlisted nor holding a free override",
                ));
            }
            (0, "CONFIRMED", None, override_id)
        }
        PaymentMethod::DirectMonad | PaymentMethod::X402 | PaymentMethod::Card => {
            return Err(ApiError::unprocessable(
                "method_unavailable",
                format!("`{method}` payments are not available yet"),
            ));
        }
    };
    let intent_id = Uuid::new_v4();
    sqlx::query!(
        r#"insert into payment_intent (intent_id, developer_id, draft_id, quote_id, method, amount_credits, status,
               voucher_code, override_id, price_snapshot, expires_at)
           values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"#,
        intent_id,
        developer.developer_id,
        quote.draft_id,
        quote_id,
        method.as_str(),
        amount,
        status,
        voucher,
        override_id,
        quote.price_snapshot,
        quote.expires_at,
    )
    .execute(&state.db)
    .await?;
    tracing::info!(%intent_id, %method, amount, "payment intent created");
    let view = intent_view(&state, developer.developer_id, intent_id).await?;
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

#[utoipa::path(get, path = "/payment-intents/{id}", tag = "developer", security(("developer_session" = [])),
    params(("id" = Uuid, Path)), responses((status = 200, body = IntentView), (status = 404, body = ErrorBody)))]
async fn get_intent(OwnedIntent { item: intent, .. }: OwnedIntent) -> ApiResult<Json<IntentView>> {
    Ok(Json(intent.view()?))
}
