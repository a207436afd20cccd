//! The model catalog as model-tier sync last saw it: each provider's answer, each model's tier,
//! family, prices and availability, and the validators the sync paused.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::auth::OperatorAuth;
use crate::error::ApiResult;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(model_catalog))
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProviderView {
    pub provider_url: String,
    /// Whether its last `GET /models` answered with a usable list.
    pub ok: bool,
    pub models_listed: i32,
    pub error: Option<String>,
    pub synced_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelView {
    pub provider_url: String,
    pub model_id: String,
    pub family: Option<String>,
    pub tier: String,
    pub price_in_per_mtok: Option<f64>,
    pub price_out_per_mtok: Option<f64>,
    /// `provider` or `config`.
    pub price_source: Option<String>,
    /// Listed by the provider at the last sync.
    pub available: bool,
    /// Validators that use this model.
    pub validators: Vec<String>,
    pub last_seen_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PausedValidator {
    pub validator_id: String,
    pub model: String,
    pub reason: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelCatalog {
    pub providers: Vec<ProviderView>,
    pub models: Vec<ModelView>,
    /// Validators model-tier sync paused because their model vanished.
    pub paused_validators: Vec<PausedValidator>,
}

/// The model catalog and the state of the last model-tier sync.
#[utoipa::path(get, path = "/models", tag = "operator", security(("operator_session" = [])),
    responses((status = 200, body = ModelCatalog)))]
async fn model_catalog(
    State(state): State<AppState>,
    _operator: OperatorAuth,
) -> ApiResult<Json<ModelCatalog>> {
    let providers = sqlx::query_as!(
        ProviderView,
        "select provider_url, ok, models_listed, error, synced_at from model_provider_sync order by provider_url"
    )
    .fetch_all(&state.db)
    .await?;
    let models = sqlx::query_as!(
        ModelView,
        r#"select c.provider_url, c.model_id, c.family, c.tier, c.price_in_per_mtok, c.price_out_per_mtok,
                  c.price_source, c.available, c.last_seen_at,
                  coalesce(array(select v.validator_id from validator v
                                 where v.provider_url = c.provider_url and v.model = c.model_id
                                 order by v.validator_id), '{}') as "validators!"
           from model_catalog c order by c.provider_url, c.model_id"#
    )
    .fetch_all(&state.db)
    .await?;
    let paused_validators = sqlx::query_as!(
        PausedValidator,
        r#"select validator_id, model, paused_reason as reason from validator
           where status = 'PAUSED' and paused_by = 'model-sync' order by validator_id"#
    )
    .fetch_all(&state.db)
    .await?;
    Ok(Json(ModelCatalog {
        providers,
        models,
        paused_validators,
    }))
}
