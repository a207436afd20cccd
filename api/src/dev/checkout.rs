//! From a checked draft to a running submission: an itemised quote from the operators' catalog,
//! a payment intent (credits, a voucher, or a free route), then the submit that moves the money
//! and starts the workflow in one transaction. Chain transfers and x402 plug into the same
//! intent (`method`, `network`, `receiveAddress`, `txHash`) with the agent plane.

use std::collections::BTreeSet;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sigma_activities::portal::DraftFacts;
use sigma_shared::domain::{Category, Sha256Hex, SubmissionId};
use sigma_shared::pricing::{self, Campaign, CampaignKind, Catalog, LineItem, Priced, Rule};
use sqlx::types::Uuid;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::drafts::{self, parse_draft_id};
use super::{SubmissionAccepted, WorkflowStart};
use crate::AppState;
use crate::auth::DeveloperAuth;
use crate::error::{ApiError, ApiJson, ApiResult, ErrorBody};
use sigma_activities::types::GitSource;

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
    pub category: String,
    /// standard, complex or high-complex.
    pub complexity_tier: String,
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
    priced: Priced,
    campaign_name: Option<String>,
    expires_at: DateTime<Utc>,
) -> QuoteView {
    QuoteView {
        quote_id: quote_id.to_string(),
        draft_id: draft_id.to_string(),
        revision,
        category: priced.category,
        complexity_tier: priced.complexity_tier.as_str().to_owned(),
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
    params(("id" = String, Path)),
    responses((status = 201, body = QuoteView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, description = "The draft fails its dry-run, or its category is not offered", body = ErrorBody)))]
#[tracing::instrument(name = "quote", skip_all, fields(draft_id = %id))]
async fn create_quote(
    State(state): State<AppState>,
    developer: DeveloperAuth,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let id = parse_draft_id(&id)?;
    let draft = drafts::load(&state, &developer, id).await?;
    if draft.submission_id.is_some() {
        return Err(ApiError::conflict(
            "draft_submitted",
            "this draft was already submitted",
        ));
    }
    let category: Category = draft.category.parse().map_err(anyhow::Error::msg)?;
    let check = drafts::run_check(&state, id, draft.revision).await?;
    if !check.passed {
        let why = check
            .failures
            .iter()
            .map(|f| format!("{}: {}", f.code, f.detail))
            .collect::<Vec<_>>()
            .join("; ");
        return Err(ApiError::unprocessable(
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
    pub method: String,
    pub voucher_code: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IntentView {
    pub id: String,
    pub draft_id: String,
    pub quote_id: String,
    pub method: String,
    /// CREATED, AWAITING_PAYMENT, CONFIRMING, CONFIRMED, FAILED, EXPIRED, CONSUMED or REFUNDED.
    pub status: String,
    pub amount_credits: i64,
    pub amount_usd: String,
    pub network: Option<String>,
    pub receive_address: Option<String>,
    pub tx_hash: Option<String>,
    pub submission_id: Option<String>,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

pub(crate) async fn intent_view(
    state: &AppState,
    developer: Uuid,
    id: Uuid,
) -> ApiResult<IntentView> {
    let i = sqlx::query!(
        r#"select intent_id, draft_id, quote_id, method, status, amount_credits, network, receive_address, tx_hash,
               submission_id, expires_at, created_at
           from payment_intent where intent_id = $1 and developer_id = $2"#,
        id,
        developer
    )
    .fetch_optional(&state.db)
    .await?
    .ok_or_else(|| ApiError::not_found("payment intent"))?;
    // An intent past its quote's expiry is shown as such even before anything touches it.
    let status =
        if matches!(i.status.as_str(), "CREATED" | "CONFIRMED") && i.expires_at <= Utc::now() {
            "EXPIRED".to_owned()
        } else {
            i.status
        };
    Ok(IntentView {
        id: i.intent_id.to_string(),
        draft_id: i.draft_id.to_string(),
        quote_id: i.quote_id.to_string(),
        method: i.method,
        status,
        amount_usd: pricing::usd(i.amount_credits),
        amount_credits: i.amount_credits,
        network: i.network,
        receive_address: i.receive_address,
        tx_hash: i.tx_hash,
        submission_id: i.submission_id,
        expires_at: i.expires_at,
        created_at: i.created_at,
    })
}

/// Whether an address is on the free allowlist (exactly, or by `@domain`).
async fn allowlisted<'e>(db: impl sqlx::PgExecutor<'e>, email: &str) -> ApiResult<bool> {
    let domain = email
        .rsplit_once('@')
        .map(|(_, d)| format!("@{d}"))
        .unwrap_or_default();
    Ok(sqlx::query_scalar!(
        r#"select exists(select 1 from free_allowlist where pattern = $1 or pattern = $2) as "found!""#,
        email,
        domain
    )
    .fetch_one(db)
    .await?)
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
    let method = body.method.trim().to_ascii_lowercase();
    let enabled = sqlx::query_scalar!(
        "select enabled from payment_method where method = $1",
        method
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
        method
    )
    .fetch_optional(&state.db)
    .await?;
    if let Some(existing) = existing {
        return Ok(
            Json(intent_view(&state, developer.developer_id, existing).await?).into_response(),
        );
    }
    let (amount, status, voucher, override_id) = match method.as_str() {
        "credits" => (quote.total_credits, "CREATED", None, None),
        "voucher" => {
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
        "free" => {
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
        other => {
            return Err(ApiError::unprocessable(
                "method_unavailable",
                format!("`{other}` payments are not available yet"),
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
        method,
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
    params(("id" = String, Path)), responses((status = 200, body = IntentView), (status = 404, body = ErrorBody)))]
async fn get_intent(
    State(state): State<AppState>,
    developer: DeveloperAuth,
    Path(id): Path<String>,
) -> ApiResult<Json<IntentView>> {
    let id: Uuid = id
        .parse()
        .map_err(|_| ApiError::not_found("payment intent"))?;
    Ok(Json(intent_view(&state, developer.developer_id, id).await?))
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SubmitDraft {
    pub payment_intent_id: String,
}

fn usable_intent_problem(status: &str) -> ApiError {
    ApiError::conflict(
        "intent_not_usable",
        format!("the payment intent is {status}; create a new quote and intent"),
    )
}

/// Submit the draft: uses the payment intent (debiting credits, a voucher use or a free override,
/// and the quote's campaign slot, all in one transaction), records the submission with the draft
/// and price snapshots and starts its workflow. A draft is submitted once: repeating the request
/// (or reusing its `Idempotency-Key`) answers with the same submission.
#[utoipa::path(post, path = "/drafts/{id}/submit", tag = "developer", security(("developer_session" = [])),
    params(("id" = String, Path), ("Idempotency-Key" = Option<String>, Header, description = "Deduplicates retries of the same request")),
    request_body = SubmitDraft,
    responses((status = 202, description = "Submitted; the pipeline has started", body = SubmissionAccepted),
        (status = 402, description = "Not enough credits (the detail says how many are missing)", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "Intent expired or used, quote stale, campaign sold out, voucher used up", body = ErrorBody),
        (status = 503, description = "Recorded and paid, but the workflow engine is unreachable: repeat the request", body = ErrorBody)))]
#[tracing::instrument(name = "submit_draft", skip_all, fields(draft_id = %id, submission_id, workflow_id))]
async fn submit_draft(
    State(state): State<AppState>,
    developer: DeveloperAuth,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<SubmitDraft>,
) -> ApiResult<Response> {
    let draft_id = parse_draft_id(&id)?;
    let idempotency_key = super::idempotency_key(&headers)?;
    let request_sha256 = {
        let mut h = Sha256::new();
        h.update(b"draft-submit\0");
        h.update(draft_id.as_bytes());
        h.update(body.payment_intent_id.as_bytes());
        hex::encode(h.finalize())
    };
    if let Some(key) = &idempotency_key
        && let Some(previous) =
            super::find_idempotent(&state, &developer, key, &request_sha256).await?
    {
        return super::replay(&state, &previous, None).await;
    }
    let intent_id: Uuid = body
        .payment_intent_id
        .parse()
        .map_err(|_| ApiError::not_found("payment intent"))?;

    let mut tx = state.db.begin().await?;
    let draft = sqlx::query!(
        r#"select category, revision, source_type, bundle_key, bundle_sha256, bundle_bytes, bundle_format,
               git_repository, git_ref, entry, advisory_note, declared_endpoints, site_url, manifest, manifest_revision,
               submission_id
           from draft where draft_id = $1 and developer_id = $2 for update"#,
        draft_id,
        developer.developer_id
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| ApiError::not_found("draft"))?;
    if let Some(existing) = draft.submission_id {
        // Submitted before (a retry, or a second click): the same answer.
        tx.rollback().await?;
        return super::replay(&state, &existing, None).await;
    }
    let intent = sqlx::query!(
        r#"select i.method, i.status, i.amount_credits, i.voucher_code, i.override_id, i.expires_at > now() as "live!",
               q.revision, q.campaign_id, q.price_snapshot, q.draft_id
           from payment_intent i join quote q using (quote_id)
           where i.intent_id = $1 and i.developer_id = $2 for update of i"#,
        intent_id,
        developer.developer_id
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| ApiError::not_found("payment intent"))?;
    if intent.draft_id != draft_id {
        return Err(ApiError::conflict(
            "intent_for_other_draft",
            "this payment intent belongs to another draft",
        ));
    }
    if !matches!(intent.status.as_str(), "CREATED" | "CONFIRMED") {
        return Err(usable_intent_problem(&intent.status));
    }
    if !intent.live {
        return Err(usable_intent_problem("EXPIRED"));
    }
    if intent.revision != draft.revision {
        return Err(ApiError::conflict(
            "quote_stale",
            "the draft changed after its quote; quote it again",
        ));
    }
    let Some(bundle_key) = draft.bundle_key.clone() else {
        return Err(ApiError::conflict(
            "source_not_pinned",
            "the draft's source is not pinned; run its dry-run",
        ));
    };
    let category: Category = draft.category.parse().map_err(anyhow::Error::msg)?;
    let id = SubmissionId::random();
    let span = tracing::Span::current();
    span.record("submission_id", tracing::field::display(&id));
    span.record("workflow_id", id.workflow_id());

    // The campaign slot: claimed here, by a guarded increment, so it can never oversell. Only a
    // credits payment uses the discount; voucher and free audits leave the slots to others.
    let campaign_claimed = intent.campaign_id.filter(|_| intent.method == "credits");
    if let Some(campaign) = campaign_claimed {
        let claimed = sqlx::query!(
            r#"update pricing_campaign set used_n = used_n + 1
               where campaign_id = $1 and active and (limit_n is null or used_n < limit_n)
                 and (starts_at is null or starts_at <= now()) and (ends_at is null or ends_at > now())"#,
            campaign
        )
        .execute(&mut *tx)
        .await?;
        if claimed.rows_affected() == 0 {
            return Err(ApiError::conflict(
                "campaign_ended",
                "the campaign in this quote has ended or sold out; quote the draft again",
            ));
        }
    }
    let charged = match intent.method.as_str() {
        "credits" => {
            let amount = intent.amount_credits;
            if amount > 0 {
                let balance = sqlx::query_scalar!(
                    r#"update developer set credit_balance = credit_balance - $2
                       where developer_id = $1 and credit_balance >= $2 returning credit_balance"#,
                    developer.developer_id,
                    amount
                )
                .fetch_optional(&mut *tx)
                .await?;
                let Some(balance) = balance else {
                    let have = sqlx::query_scalar!(
                        "select credit_balance from developer where developer_id = $1",
                        developer.developer_id
                    )
                    .fetch_one(&mut *tx)
                    .await?;
                    return Err(ApiError::new(
                        StatusCode::PAYMENT_REQUIRED,
                        "insufficient_credits",
                        format!(
                            "this submission costs {amount} credits; the balance is {have}, {} short",
                            amount - have
                        ),
                    ));
                };
                sqlx::query!(
                    r#"insert into credit_ledger (developer_id, kind, amount_credits, balance_after, reference, note)
                       values ($1, 'DEBIT_SUBMISSION', $2, $3, $4, 'submission')"#,
                    developer.developer_id,
                    -amount,
                    balance,
                    id.as_str()
                )
                .execute(&mut *tx)
                .await?;
            }
            amount
        }
        "voucher" => {
            let code = intent.voucher_code.clone().unwrap_or_default();
            let used = sqlx::query!(
                r#"update voucher set uses_left = uses_left - 1
                   where code = $1 and uses_left > 0 and (expires_at is null or expires_at > now())"#,
                code
            )
            .execute(&mut *tx)
            .await?;
            let redeemed = sqlx::query!(
                "insert into voucher_redemption (code, developer_id) values ($1, $2) on conflict do nothing",
                code,
                developer.developer_id
            )
            .execute(&mut *tx)
            .await?;
            if used.rows_affected() == 0 || redeemed.rows_affected() == 0 {
                return Err(ApiError::conflict(
                    "voucher_used_up",
                    "the voucher was used up or expired meanwhile",
                ));
            }
            0
        }
        "free" => {
            if intent.override_id.is_none() && !allowlisted(&mut *tx, &developer.email).await? {
                return Err(ApiError::conflict(
                    "not_eligible_for_free",
                    "this account is no longer on the free allowlist; pay with credits",
                ));
            }
            if let Some(override_id) = intent.override_id {
                let used = sqlx::query!(
                    "update free_override set used_at = now() where override_id = $1 and used_at is null",
                    override_id
                )
                .execute(&mut *tx)
                .await?;
                if used.rows_affected() == 0 {
                    return Err(ApiError::conflict(
                        "override_used",
                        "the free override was already used",
                    ));
                }
            }
            0
        }
        other => return Err(usable_intent_problem(&format!("of method {other}"))),
    };
    let facts: Option<DraftFacts> = sqlx::query_scalar!(
        "select facts from draft_check where draft_id = $1 and revision = $2",
        draft_id,
        draft.revision
    )
    .fetch_optional(&mut *tx)
    .await?
    .and_then(|f| serde_json::from_value(f).ok());
    let git = match (&draft.git_repository, &draft.git_ref) {
        (Some(repository), Some(reference)) if draft.source_type == "github" => Some(GitSource {
            repository: repository.clone(),
            reference: reference.clone(),
        }),
        _ => None,
    };
    let draft_snapshot = serde_json::json!({
        "draftId": draft_id,
        "revision": draft.revision,
        "category": draft.category,
        "sourceType": draft.source_type,
        "repository": draft.git_repository,
        "ref": draft.git_ref,
        "entry": draft.entry,
        "advisoryNote": draft.advisory_note,
        "declaredEndpoints": draft.declared_endpoints,
        "siteUrl": draft.site_url,
        "manifest": if draft.manifest_revision == Some(draft.revision) { draft.manifest.clone() } else { None },
        "bundleSha256": draft.bundle_sha256,
    });
    let mut price_snapshot = intent.price_snapshot.clone();
    price_snapshot["campaignId"] = serde_json::json!(campaign_claimed);
    price_snapshot["method"] = serde_json::json!(intent.method);
    price_snapshot["chargedCredits"] = serde_json::json!(charged);
    let source_url = git
        .as_ref()
        .map(|g| format!("https://github.com/{}", g.repository));
    sqlx::query!(
        r#"insert into submission (submission_id, developer_id, category, skill_name, skill_version, source_url,
               source_ref, note, bundle_key, bundle_sha256, bundle_bytes, bundle_format, workflow_id, git_repository,
               draft_id, payment_intent_id, charged_credits, price_snapshot, draft_snapshot)
           values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)"#,
        id.as_str(),
        developer.developer_id,
        category.as_str(),
        facts.as_ref().and_then(|f| f.skill_name.clone()),
        facts.as_ref().and_then(|f| f.skill_version.clone()),
        source_url,
        git.as_ref().map(|g| g.reference.clone()),
        draft.advisory_note,
        bundle_key,
        draft.bundle_sha256.clone().unwrap_or_default(),
        draft.bundle_bytes.unwrap_or(0),
        if git.is_some() { "tar.gz".to_owned() } else { draft.bundle_format.clone().unwrap_or_else(|| "tar.gz".into()) },
        id.workflow_id(),
        git.as_ref().map(|g| g.repository.clone()),
        draft_id,
        intent_id,
        charged,
        price_snapshot,
        draft_snapshot,
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        "update payment_intent set status = 'CONSUMED', submission_id = $2 where intent_id = $1",
        intent_id,
        id.as_str()
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        "update draft set submission_id = $2 where draft_id = $1",
        draft_id,
        id.as_str()
    )
    .execute(&mut *tx)
    .await?;
    if let Some(key) = &idempotency_key
        && !super::claim_idempotency_key(&mut tx, &developer, key, &request_sha256, &id).await?
    {
        // A concurrent request with this key committed first: nothing of this one is kept.
        tx.rollback().await?;
        return super::replay_key(&state, &developer, key, &request_sha256, None).await;
    }
    tx.commit().await?;
    tracing::info!(%category, charged, method = %intent.method, "draft submitted");

    // Paid and recorded: if the start fails, the same request (or the operator) starts it later.
    super::ensure_started(
        &state,
        WorkflowStart {
            id: &id,
            category,
            bundle_key: &bundle_key,
            name: facts.as_ref().and_then(|f| f.skill_name.as_deref()),
            git,
            // Credits or a campaign slot were taken: a platform failure gives them back.
            charged: intent.method == "credits",
        },
    )
    .await?;
    let sha = draft
        .bundle_sha256
        .as_deref()
        .and_then(|s| Sha256Hex::parse(s).ok());
    let body = super::accepted(&state, id.as_str(), sha.as_ref());
    let location = body.status_url.clone();
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(body),
    )
        .into_response())
}
