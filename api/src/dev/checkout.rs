//! From a checked draft to a running submission: an itemised quote from the operators' catalog,
//! a payment intent (credits, a voucher, or a free route), then the submit, which starts the
//! submission's run; the run's first step moves the money (`sigma_activities::intake::checkout`). Chain transfers and x402 plug into the same
//! intent (`method`, `network`, `receiveAddress`, `txHash`) with the agent plane.

use std::collections::BTreeSet;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sigma_shared::domain::{Category, IntentStatus, PaymentIntentId, SubmissionId};
use sigma_shared::pricing::{
    self, Campaign, CampaignKind, Catalog, ComplexityTier, LineItem, Priced, Rule,
};
use sqlx::types::Uuid;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::owned::{OwnedDraft, OwnedIntent, OwnedResource};
use crate::AppState;
use crate::auth::DeveloperAuth;
use crate::core::idempotency::{IdempotencyKey, request_digest, submission_for_key};
use crate::core::submission_run::{self, NewRun, SubmissionAccepted};
use crate::error::{ApiError, ApiJson, ApiResult, ErrorBody, stored};
use sigma_activities::intake::checkout::{PaymentMethod, allowlisted};
use sigma_activities::intake::{DraftCheckout, Idempotency, Intake};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_quote))
        .routes(routes!(create_intent))
        .routes(routes!(get_intent))
        .routes(routes!(submit_draft))
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CampaignApplied {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QuoteView {
    pub quote_id: String,
    pub draft_id: String,
    pub revision: i32,
    pub category: Category,
    pub complexity_tier: ComplexityTier,
    pub line_items: Vec<LineItem>,
    pub total_credits: i64,
    pub total_usd: String,
    pub campaign_applied: Option<CampaignApplied>,
    /// What already-certified packages would have cost.
    pub registry_savings_credits: i64,
    pub registry_savings_usd: String,
    pub expires_at: DateTime<Utc>,
}

/// The catalog entries for a category, as the quote saw them.
pub(crate) async fn catalog(state: &AppState, category: Category) -> ApiResult<Catalog> {
    let base = sqlx::query_scalar!(
        "select base_credits from pricing_category where category = $1 and active",
        category.as_str()
    )
    .fetch_optional(&state.db)
    .await?
    .ok_or_else(|| {
        ApiError::unprocessable(
            "category_not_offered",
            format!("{category} submissions are not offered at the moment"),
        )
    })?;
    let rows = sqlx::query!(
        r#"select rule_id, category, kind, tier, amount_credits, multiplier_bps, label from pricing_rule
           where active and (category is null or category = $1) order by created_at, rule_id"#,
        category.as_str()
    )
    .fetch_all(&state.db)
    .await?;
    // A category's own rule replaces the global ones of the same kind (and tier).
    let specific: std::collections::BTreeSet<(String, Option<String>)> = rows
        .iter()
        .filter(|r| r.category.is_some())
        .map(|r| (r.kind.clone(), r.tier.clone()))
        .collect();
    let rules = rows
        .into_iter()
        .filter(|r| r.category.is_some() || !specific.contains(&(r.kind.clone(), r.tier.clone())))
        .map(|r| {
            Ok(Rule {
                rule_id: r.rule_id,
                kind: r.kind.parse().map_err(anyhow::Error::msg)?,
                tier: r
                    .tier
                    .map(|t| serde_json::from_value(serde_json::Value::String(t)))
                    .transpose()
                    .map_err(anyhow::Error::from)?,
                amount_credits: r.amount_credits,
                multiplier_bps: r.multiplier_bps,
                label: r.label,
            })
        })
        .collect::<Result<Vec<_>, anyhow::Error>>()?;
    let campaigns = sqlx::query!(
        r#"select campaign_id, name, kind, discount_bps, limit_n, used_n, starts_at, ends_at from pricing_campaign
           where active and (category is null or category = $1)"#,
        category.as_str()
    )
    .fetch_all(&state.db)
    .await?
    .into_iter()
    .map(|c| Campaign {
        campaign_id: c.campaign_id,
        name: c.name,
        kind: if c.kind == "FIRST_N" {
            CampaignKind::FirstN
        } else {
            CampaignKind::Window
        },
        discount_bps: c.discount_bps,
        limit_n: c.limit_n,
        used_n: c.used_n,
        starts_at: c.starts_at,
        ends_at: c.ends_at,
    })
    .collect();
    Ok(Catalog {
        category: category.as_str().to_owned(),
        base_credits: base,
        rules,
        campaigns,
    })
}

fn quote_view(
    quote_id: Uuid,
    draft_id: Uuid,
    revision: i32,
    category: Category,
    priced: Priced,
    campaign_name: Option<String>,
    expires_at: DateTime<Utc>,
) -> QuoteView {
    QuoteView {
        quote_id: quote_id.to_string(),
        draft_id: draft_id.to_string(),
        revision,
        category,
        complexity_tier: priced.complexity_tier,
        total_usd: pricing::usd(priced.total_credits),
        total_credits: priced.total_credits,
        campaign_applied: priced
            .campaign_id
            .zip(campaign_name)
            .map(|(id, name)| CampaignApplied {
                id: id.to_string(),
                name,
            }),
        registry_savings_usd: pricing::usd(priced.registry_savings_credits),
        registry_savings_credits: priced.registry_savings_credits,
        line_items: priced.line_items,
        expires_at,
    }
}

/// Quote the draft's current revision: base price, complexity tier, endpoint and package fees and
/// the best running campaign, in credits and USD (1 USD = 100 credits). A draft that fails its
/// dry-run is not quoted. The quote expires; its price snapshot is kept with the submission.
#[utoipa::path(post, path = "/drafts/{id}/quote", tag = "developer", security(("developer_session" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 201, body = QuoteView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, description = "The draft fails its dry-run, or its category is not offered", body = ErrorBody)))]
#[tracing::instrument(name = "quote", skip_all, fields(draft_id = %owned.item.draft_id))]
async fn create_quote(State(state): State<AppState>, owned: OwnedDraft) -> ApiResult<Response> {
    let OwnedDraft {
        developer,
        item: draft,
    } = owned;
    let id = draft.draft_id;
    if draft.submission_id.is_some() {
        return Err(ApiError::conflict(
            "draft_submitted",
            "this draft was already submitted",
        ));
    }
    let category = draft.category()?;
    let check = super::dry_run::run_check(&state, id, draft.revision).await?;
    if !check.passed {
        let why = check
            .failures
            .iter()
            .map(|f| format!("{}: {}", f.code, f.detail))
            .collect::<Vec<_>>()
            .join("; ");
        // The request is fine; the draft's state is not (yet): a conflict, not bad input.
        return Err(ApiError::conflict(
            "draft_fails_checks",
            format!("fix the dry-run failures first: {why}"),
        ));
    }
    let catalog = catalog(&state, category).await?;
    // The Package Trust Registry is not populated yet: no package is free for being certified.
    let certified = BTreeSet::new();
    let now = Utc::now();
    let priced = pricing::price(&catalog, &check.facts.quote, &certified, now);
    let campaign_name = priced.campaign_id.and_then(|c| {
        catalog
            .campaigns
            .iter()
            .find(|x| x.campaign_id == c)
            .map(|x| x.name.clone())
    });
    let expires_at = now + chrono::Duration::seconds(state.settings.portal.quote_ttl_secs);
    let quote_id = Uuid::new_v4();
    let snapshot = serde_json::json!({
        "quoteId": quote_id,
        "computedAt": now,
        "priced": priced,
        "catalog": catalog,
        "facts": check.facts,
    });
    sqlx::query!(
        r#"insert into quote (quote_id, draft_id, developer_id, revision, category, complexity_tier, line_items,
               total_credits, campaign_id, registry_savings_credits, price_snapshot, expires_at)
           values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"#,
        quote_id,
        id,
        developer.developer_id,
        draft.revision,
        category.as_str(),
        priced.complexity_tier.as_str(),
        serde_json::to_value(&priced.line_items).map_err(anyhow::Error::from)?,
        priced.total_credits,
        priced.campaign_id,
        priced.registry_savings_credits,
        snapshot,
        expires_at,
    )
    .execute(&state.db)
    .await?;
    tracing::info!(%quote_id, credits = priced.total_credits, "quoted");
    let view = quote_view(
        quote_id,
        id,
        draft.revision,
        category,
        priced,
        campaign_name,
        expires_at,
    );
    Ok((StatusCode::CREATED, Json(view)).into_response())
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
                return Err(ApiError::unprocessable(
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

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SubmitDraft {
    pub payment_intent_id: String,
}

/// Submit the draft. The submission's run starts first, under an id made of the draft (a draft
/// is submitted once); its first step uses the payment intent (debiting credits, a voucher use
/// or a free override, and the quote's campaign slot) and records the submission with the draft
/// and price snapshots, all in one transaction. Repeating the request, concurrently or later
/// (or reusing its `Idempotency-Key`), answers with the same submission and charges once.
#[utoipa::path(post, path = "/drafts/{id}/submit", tag = "developer", security(("developer_session" = [])),
    params(("id" = Uuid, Path), ("Idempotency-Key" = Option<String>, Header, description = "Deduplicates retries of the same request")),
    request_body = SubmitDraft,
    responses((status = 202, description = "Submitted; the pipeline has started", body = SubmissionAccepted),
        (status = 402, description = "Not enough credits (the detail says how many are missing)", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "Intent expired or used, quote stale, campaign sold out, voucher used up, key reused", body = ErrorBody),
        (status = 503, description = "The workflow engine is unreachable (nothing was charged), or the payment is still being settled: repeat the request", body = ErrorBody)))]
#[tracing::instrument(name = "submit_draft", skip_all, fields(draft_id = %owned.item.draft_id, submission_id, workflow_id))]
async fn submit_draft(
    State(state): State<AppState>,
    owned: OwnedDraft,
    IdempotencyKey(idempotency_key): IdempotencyKey,
    ApiJson(body): ApiJson<SubmitDraft>,
) -> ApiResult<Response> {
    let OwnedDraft {
        developer,
        item: draft,
    } = owned;
    let draft_id = draft.draft_id;
    let request_sha256 = request_digest(
        "draft-submit",
        &[draft_id.as_bytes(), body.payment_intent_id.as_bytes()],
    );
    if let Some(key) = &idempotency_key
        && let Some(previous) =
            submission_for_key(&state.db, developer.developer_id, key, &request_sha256).await?
    {
        let previous = SubmissionId::parse(&previous).map_err(anyhow::Error::msg)?;
        return submission_run::replay(&state, &previous).await;
    }
    let intent_id: Uuid = body
        .payment_intent_id
        .parse()
        .map_err(|_| ApiError::not_found("payment intent"))?;
    if let Some(existing) = &draft.submission_id {
        // Submitted before (a retry, or a second click): the same answer.
        let existing = SubmissionId::parse(existing).map_err(anyhow::Error::msg)?;
        return submission_run::replay(&state, &existing).await;
    }
    let category = draft.category()?;
    let id = SubmissionId::for_business_key(&[b"draft", draft_id.as_bytes()]);
    let span = tracing::Span::current();
    span.record("submission_id", tracing::field::display(&id));
    span.record("workflow_id", id.workflow_id());
    let outcome = submission_run::start_with_intake(
        &state,
        NewRun {
            id: &id,
            category,
            name: None,
            bundle_key: String::new(),
            git: None,
            charged: false,
            intake: Some(Intake::Draft(DraftCheckout {
                developer_id: developer.developer_id,
                developer_email: developer.email.clone(),
                draft_id,
                intent_id,
                idempotency: idempotency_key.map(|key| Idempotency {
                    key,
                    request_sha256: request_sha256.clone(),
                }),
            })),
        },
    )
    .await?;
    crate::core::fault::point("submit_draft.after_checkout");
    match outcome {
        Some(outcome) => submission_run::answer(&state, &id, outcome, Some(&request_sha256)),
        // The run closed (completed long ago) or no worker answered yet: the projection says.
        None => match submission_run::recorded_digest(&state, &id).await? {
            Some(digest) => Ok(submission_run::accepted(&state, &id, digest.as_deref())),
            None => Err(ApiError::unavailable(
                "checkout_pending",
                "the payment is being settled by the submission's run; repeat the request to see its outcome",
            )),
        },
    }
}
