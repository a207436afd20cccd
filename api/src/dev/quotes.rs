//! Quotes: an itemised price for a draft's checked revision, from the operators' catalog, the
//! dry-run's facts and the clock (`sigma_shared::pricing`); it expires, and its snapshot travels
//! with the intent and the submission.

use std::collections::BTreeSet;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sigma_shared::domain::Category;
use sigma_shared::pricing::{
    self, Campaign, CampaignKind, Catalog, ComplexityTier, LineItem, Priced, Rule,
};
use sqlx::types::Uuid;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::drafts::OwnedDraft;
use crate::AppState;
use crate::error::{ApiError, ApiResult, ErrorBody};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(create_quote))
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
    responses((status = 201, body = QuoteView), (status = 404, body = ErrorBody),
        (status = 409, description = "The draft was submitted, or fails its dry-run", body = ErrorBody),
        (status = 422, description = "The draft's category is not offered", body = ErrorBody),
        (status = 502, description = "The dry-run could not complete (a repository archive could not be fetched)", body = ErrorBody)))]
#[tracing::instrument(name = "quote", skip_all, fields(draft_id = %owned.item.draft_id))]
async fn create_quote(State(state): State<AppState>, owned: OwnedDraft) -> ApiResult<Response> {
    let OwnedDraft {
        developer,
        item: draft,
    } = owned;
    let id = draft.draft_id;
    if draft.submission_id.is_some() {
        return Err(super::drafts::frozen());
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
