//! The pricing catalog operators run: category prices, rules, campaigns, payment methods.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sigma_activities::intake::checkout::PaymentMethod;
use sigma_shared::domain::{CampaignId, Category, RuleId};
use sigma_shared::pricing::{CampaignKind, ComplexityTier, RuleKind};
use sqlx::types::Uuid;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::auth::OperatorAuth;
use crate::error::{ApiError, ApiJson, ApiPath, ApiResult, ErrorBody, stored, stored_text};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_catalog))
        .routes(routes!(put_category))
        .routes(routes!(create_rule))
        .routes(routes!(retire_rule))
        .routes(routes!(create_campaign))
        .routes(routes!(set_campaign_active))
        .routes(routes!(set_payment_method))
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CategoryPrice {
    pub category: Category,
    pub base_credits: i64,
    pub active: bool,
    pub shown_on_landing: bool,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuleView {
    pub id: String,
    pub category: Option<Category>,
    pub kind: RuleKind,
    pub tier: Option<ComplexityTier>,
    pub amount_credits: i64,
    pub multiplier_bps: Option<i32>,
    pub label: String,
    pub active: bool,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CampaignView {
    pub id: String,
    pub name: String,
    pub category: Option<Category>,
    pub kind: CampaignKind,
    pub discount_bps: i32,
    pub limit_n: Option<i32>,
    pub used_n: i32,
    pub starts_at: Option<DateTime<Utc>>,
    pub ends_at: Option<DateTime<Utc>>,
    pub active: bool,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PaymentMethodView {
    pub method: PaymentMethod,
    pub enabled: bool,
}

fn stored_opt<T: serde::de::DeserializeOwned>(text: Option<String>) -> ApiResult<Option<T>> {
    text.as_deref().map(stored).transpose()
}

struct CategoryRow {
    category: String,
    base_credits: i64,
    active: bool,
    shown_on_landing: bool,
}

impl CategoryRow {
    fn view(self) -> ApiResult<CategoryPrice> {
        Ok(CategoryPrice {
            category: stored(&self.category)?,
            base_credits: self.base_credits,
            active: self.active,
            shown_on_landing: self.shown_on_landing,
        })
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CatalogView {
    pub categories: Vec<CategoryPrice>,
    pub rules: Vec<RuleView>,
    pub campaigns: Vec<CampaignView>,
    pub payment_methods: Vec<PaymentMethodView>,
}

/// The whole catalog, including retired rules and inactive campaigns.
#[utoipa::path(get, path = "/pricing", tag = "operator", security(("operator_session" = [])),
    responses((status = 200, body = CatalogView), (status = 401, body = ErrorBody)))]
async fn get_catalog(
    State(state): State<AppState>,
    _operator: OperatorAuth,
) -> ApiResult<Json<CatalogView>> {
    let categories = sqlx::query_as!(
        CategoryRow,
        "select category, base_credits, active, shown_on_landing from pricing_category order by category"
    )
    .fetch_all(&state.db)
    .await?
    .into_iter()
    .map(CategoryRow::view)
    .collect::<ApiResult<_>>()?;
    let rules = sqlx::query!(
        "select rule_id, category, kind, tier, amount_credits, multiplier_bps, label, active from pricing_rule order by created_at, rule_id"
    )
    .fetch_all(&state.db)
    .await?
    .into_iter()
    .map(|r| {
        Ok(RuleView {
            id: r.rule_id.to_string(),
            category: stored_opt(r.category)?,
            kind: stored(&r.kind)?,
            tier: stored_opt(r.tier)?,
            amount_credits: r.amount_credits,
            multiplier_bps: r.multiplier_bps,
            label: r.label,
            active: r.active,
        })
    })
    .collect::<ApiResult<_>>()?;
    let campaigns = campaigns(&state, None).await?;
    let payment_methods =
        sqlx::query!("select method, enabled from payment_method order by method")
            .fetch_all(&state.db)
            .await?
            .into_iter()
            .map(|m| {
                Ok(PaymentMethodView {
                    method: stored(&m.method)?,
                    enabled: m.enabled,
                })
            })
            .collect::<ApiResult<_>>()?;
    Ok(Json(CatalogView {
        categories,
        rules,
        campaigns,
        payment_methods,
    }))
}

async fn campaigns(state: &AppState, only: Option<Uuid>) -> ApiResult<Vec<CampaignView>> {
    sqlx::query!(
        r#"select campaign_id, name, category, kind, discount_bps, limit_n, used_n, starts_at, ends_at, active
           from pricing_campaign where $1::uuid is null or campaign_id = $1 order by created_at, campaign_id"#,
        only
    )
    .fetch_all(&state.db)
    .await?
    .into_iter()
    .map(|c| {
        Ok(CampaignView {
            id: c.campaign_id.to_string(),
            name: c.name,
            category: stored_opt(c.category)?,
            kind: stored(&c.kind)?,
            discount_bps: c.discount_bps,
            limit_n: c.limit_n,
            used_n: c.used_n,
            starts_at: c.starts_at,
            ends_at: c.ends_at,
            active: c.active,
        })
    })
    .collect::<ApiResult<_>>()
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CategoryUpdate {
    /// Base price in credits (1 USD = 100 credits), 0 to 10,000,000.
    #[schema(minimum = 0, maximum = 10000000)]
    pub base_credits: i64,
    #[serde(default = "yes")]
    pub active: bool,
    #[serde(default = "yes")]
    pub shown_on_landing: bool,
}

fn yes() -> bool {
    true
}

/// Set a category's base price and visibility.
#[utoipa::path(put, path = "/pricing/categories/{category}", tag = "operator", security(("operator_session" = [])),
    params(("category" = Category, Path)), request_body = CategoryUpdate,
    responses((status = 200, body = CategoryPrice), (status = 422, body = ErrorBody)))]
async fn put_category(
    State(state): State<AppState>,
    operator: OperatorAuth,
    ApiPath(category): ApiPath<Category>,
    ApiJson(body): ApiJson<CategoryUpdate>,
) -> ApiResult<Json<CategoryPrice>> {
    if !(0..=10_000_000).contains(&body.base_credits) {
        return Err(ApiError::unprocessable(
            "invalid_price",
            "baseCredits is 0 to 10,000,000",
        ));
    }
    let row = sqlx::query_as!(
        CategoryRow,
        r#"insert into pricing_category (category, base_credits, active, shown_on_landing) values ($1, $2, $3, $4)
           on conflict (category) do update set base_credits = excluded.base_credits, active = excluded.active,
               shown_on_landing = excluded.shown_on_landing
           returning category, base_credits, active, shown_on_landing"#,
        category.as_str(),
        body.base_credits,
        body.active,
        body.shown_on_landing
    )
    .fetch_one(&state.db)
    .await?;
    tracing::info!(operator = %operator.name, %category, base = body.base_credits, "category price set");
    Ok(Json(row.view()?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewRule {
    /// Omit to apply to every category.
    pub category: Option<Category>,
    pub kind: RuleKind,
    /// For COMPLEXITY_TIER only.
    pub tier: Option<ComplexityTier>,
    /// Added per endpoint or package, or once for a tier.
    #[serde(default)]
    #[schema(minimum = 0)]
    pub amount_credits: i64,
    /// For COMPLEXITY_TIER: the base price scaled by this many basis points (15000 = ×1.5).
    #[schema(minimum = 1, maximum = 100000)]
    pub multiplier_bps: Option<i32>,
    #[schema(min_length = 1, pattern = "^[^\\u0000]*[^\\s\\u0000][^\\u0000]*$")]
    pub label: String,
}

/// Add a pricing rule.
#[utoipa::path(post, path = "/pricing/rules", tag = "operator", security(("operator_session" = [])),
    request_body = NewRule, responses((status = 201, body = RuleView), (status = 422, body = ErrorBody)))]
async fn create_rule(
    State(state): State<AppState>,
    operator: OperatorAuth,
    ApiJson(body): ApiJson<NewRule>,
) -> ApiResult<Response> {
    let (kind, tier) = (body.kind, body.tier);
    if (kind == RuleKind::ComplexityTier) != tier.is_some() {
        return Err(ApiError::unprocessable(
            "invalid_rule",
            "a COMPLEXITY_TIER rule names a tier, and only it does",
        ));
    }
    if body.amount_credits < 0
        || body
            .multiplier_bps
            .is_some_and(|m| !(1..=100_000).contains(&m))
    {
        return Err(ApiError::unprocessable(
            "invalid_rule",
            "amountCredits is not negative and multiplierBps is 1 to 100,000",
        ));
    }
    if body.label.trim().is_empty() {
        return Err(ApiError::unprocessable(
            "invalid_rule",
            "a rule needs a label",
        ));
    }
    let category = body.category;
    let id = RuleId::random().uuid();
    let kind_text = stored_text(kind);
    sqlx::query!(
        r#"insert into pricing_rule (rule_id, category, kind, tier, amount_credits, multiplier_bps, label)
           values ($1, $2, $3, $4, $5, $6, $7)"#,
        id,
        category.map(|c| c.as_str()),
        kind_text,
        tier.map(|t| t.as_str()),
        body.amount_credits,
        body.multiplier_bps,
        body.label.trim()
    )
    .execute(&state.db)
    .await?;
    tracing::info!(operator = %operator.name, rule = %id, kind = %kind_text, "pricing rule added");
    Ok((
        StatusCode::CREATED,
        Json(RuleView {
            id: id.to_string(),
            category,
            kind,
            tier,
            amount_credits: body.amount_credits,
            multiplier_bps: body.multiplier_bps,
            label: body.label.trim().to_owned(),
            active: true,
        }),
    )
        .into_response())
}

/// Retire a rule (kept for the price snapshots that used it).
#[utoipa::path(delete, path = "/pricing/rules/{id}", tag = "operator", security(("operator_session" = [])),
    params(("id" = Uuid, Path)), responses((status = 204, description = "Retired"), (status = 404, body = ErrorBody)))]
async fn retire_rule(
    State(state): State<AppState>,
    _operator: OperatorAuth,
    ApiPath(id): ApiPath<RuleId>,
) -> ApiResult<StatusCode> {
    let done = sqlx::query!(
        "update pricing_rule set active = false where rule_id = $1",
        id.uuid()
    )
    .execute(&state.db)
    .await?;
    if done.rows_affected() == 0 {
        return Err(ApiError::not_found("rule"));
    }
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewCampaign {
    #[schema(min_length = 1, pattern = "^[^\\u0000]*[^\\s\\u0000][^\\u0000]*$")]
    pub name: String,
    /// Omit to apply to every category.
    pub category: Option<Category>,
    /// FIRST_N (needs `limitN`) or WINDOW (needs `startsAt` or `endsAt`).
    pub kind: CampaignKind,
    /// 1 to 10000 (10000 = free).
    #[schema(minimum = 1, maximum = 10000)]
    pub discount_bps: i32,
    #[schema(minimum = 1)]
    pub limit_n: Option<i32>,
    pub starts_at: Option<DateTime<Utc>>,
    pub ends_at: Option<DateTime<Utc>>,
}

/// Start a campaign. First-N counters are claimed at submit and can never pass their limit.
#[utoipa::path(post, path = "/pricing/campaigns", tag = "operator", security(("operator_session" = [])),
    request_body = NewCampaign, responses((status = 201, body = CampaignView), (status = 422, body = ErrorBody)))]
async fn create_campaign(
    State(state): State<AppState>,
    operator: OperatorAuth,
    ApiJson(body): ApiJson<NewCampaign>,
) -> ApiResult<Response> {
    let valid = match body.kind {
        CampaignKind::FirstN => body.limit_n.is_some_and(|n| n > 0),
        CampaignKind::Window => {
            body.limit_n.is_none() && (body.starts_at.is_some() || body.ends_at.is_some())
        }
    };
    if !valid || !(1..=10_000).contains(&body.discount_bps) || body.name.trim().is_empty() {
        return Err(ApiError::unprocessable(
            "invalid_campaign",
            "a campaign has a name, discountBps 1 to 10000, and is FIRST_N with limitN > 0 or WINDOW with startsAt/endsAt",
        ));
    }
    if let (Some(s), Some(e)) = (body.starts_at, body.ends_at)
        && s >= e
    {
        return Err(ApiError::unprocessable(
            "invalid_campaign",
            "startsAt is before endsAt",
        ));
    }
    let category = body.category;
    let id = CampaignId::random().uuid();
    sqlx::query!(
        r#"insert into pricing_campaign (campaign_id, name, category, kind, discount_bps, limit_n, starts_at, ends_at)
           values ($1, $2, $3, $4, $5, $6, $7, $8)"#,
        id,
        body.name.trim(),
        category.map(|c| c.as_str()),
        stored_text(body.kind),
        body.discount_bps,
        body.limit_n,
        body.starts_at,
        body.ends_at
    )
    .execute(&state.db)
    .await?;
    tracing::info!(operator = %operator.name, campaign = %id, "campaign started");
    let view = campaigns(&state, Some(id)).await?.pop();
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Toggle {
    pub enabled: bool,
}

/// Pause or resume a campaign.
#[utoipa::path(put, path = "/pricing/campaigns/{id}/active", tag = "operator", security(("operator_session" = [])),
    params(("id" = Uuid, Path)), request_body = Toggle,
    responses((status = 200, body = CampaignView), (status = 404, body = ErrorBody)))]
async fn set_campaign_active(
    State(state): State<AppState>,
    _operator: OperatorAuth,
    ApiPath(id): ApiPath<CampaignId>,
    ApiJson(body): ApiJson<Toggle>,
) -> ApiResult<Json<CampaignView>> {
    let id = id.uuid();
    sqlx::query!(
        "update pricing_campaign set active = $2 where campaign_id = $1",
        id,
        body.enabled
    )
    .execute(&state.db)
    .await?;
    campaigns(&state, Some(id))
        .await?
        .pop()
        .map(Json)
        .ok_or_else(|| ApiError::not_found("campaign"))
}

/// Rails this deployment can take. Chain transfers, x402 and cards come with the agent plane.
const IMPLEMENTED_METHODS: [PaymentMethod; 3] = [
    PaymentMethod::Credits,
    PaymentMethod::Voucher,
    PaymentMethod::Free,
];

/// Enable or disable a payment method.
#[utoipa::path(put, path = "/payment-methods/{method}", tag = "operator", security(("operator_session" = [])),
    params(("method" = PaymentMethod, Path)), request_body = Toggle,
    responses((status = 200, body = PaymentMethodView), (status = 404, body = ErrorBody),
        (status = 409, description = "The rail is not available on this deployment yet", body = ErrorBody)))]
async fn set_payment_method(
    State(state): State<AppState>,
    operator: OperatorAuth,
    ApiPath(method): ApiPath<PaymentMethod>,
    ApiJson(body): ApiJson<Toggle>,
) -> ApiResult<Json<PaymentMethodView>> {
    if body.enabled && !IMPLEMENTED_METHODS.contains(&method) {
        // A well-formed request this deployment cannot honour yet: a conflict with its state.
        return Err(ApiError::conflict(
            "method_not_available",
            format!("`{method}` cannot be enabled: this deployment has no {method} rail yet"),
        ));
    }
    let row = sqlx::query!(
        "update payment_method set enabled = $2, updated_at = now() where method = $1 returning method, enabled",
        method.as_str(),
        body.enabled
    )
    .fetch_optional(&state.db)
    .await?
    .ok_or_else(|| ApiError::not_found("payment method"))?;
    tracing::info!(operator = %operator.name, %method, enabled = body.enabled, "payment method toggled");
    Ok(Json(PaymentMethodView {
        method: stored(&row.method)?,
        enabled: row.enabled,
    }))
}
