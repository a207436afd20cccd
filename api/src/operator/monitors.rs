//! Monitors as operators watch them: which certificates are monitored, what their last check
//! found, which sources drifted; and a pause for a monitor whose anomalies are understood (a
//! planned outage, say) and its resumption.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sigma_shared::domain::CertificateId;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::auth::OperatorAuth;
use crate::error::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult, ErrorBody};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_monitors))
        .routes(routes!(set_monitor_state))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct MonitorFilter {
    /// ACTIVE, PAUSED or COMPLETED.
    #[param(pattern = "^(ACTIVE|PAUSED|COMPLETED)$")]
    pub state: Option<String>,
    /// OK or ANOMALY: the last check's result.
    #[param(pattern = "^(OK|ANOMALY)$")]
    pub last_result: Option<String>,
    /// NOT_APPLICABLE, UNCHECKED, UNCHANGED or DRIFTED.
    #[param(pattern = "^(NOT_APPLICABLE|UNCHECKED|UNCHANGED|DRIFTED)$")]
    pub drift: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MonitorView {
    pub certificate_id: String,
    pub certificate_status: String,
    pub state: String,
    pub checks: Vec<String>,
    pub checks_remaining: i32,
    pub check_count: i32,
    pub interval_secs: i64,
    pub next_check_at: DateTime<Utc>,
    pub last_check_at: Option<DateTime<Utc>>,
    pub last_result: Option<String>,
    #[schema(value_type = Vec<String>)]
    pub last_findings: Value,
    pub drift_state: String,
    pub drift_detail: Option<String>,
    /// Unresolved flags the monitor raised.
    pub open_monitor_flags: i64,
}

const STATES: [&str; 3] = ["ACTIVE", "PAUSED", "COMPLETED"];

fn one_of(name: &str, value: Option<String>, allowed: &[&str]) -> ApiResult<Option<String>> {
    match value {
        Some(v) if !allowed.contains(&v.as_str()) => Err(ApiError::unprocessable(
            "invalid_filter",
            format!("{name} is one of {}", allowed.join(", ")),
        )),
        other => Ok(other),
    }
}

/// Monitored certificates, anomalies and drift first, then by last check (200 at most).
#[utoipa::path(get, path = "/monitors", tag = "operator", security(("operator_session" = [])),
    params(MonitorFilter),
    responses((status = 200, body = Vec<MonitorView>), (status = 422, body = ErrorBody)))]
async fn list_monitors(
    State(state): State<AppState>,
    _operator: OperatorAuth,
    ApiQuery(filter): ApiQuery<MonitorFilter>,
) -> ApiResult<Json<Vec<MonitorView>>> {
    let status = one_of("state", filter.state, &STATES)?;
    let result = one_of("lastResult", filter.last_result, &["OK", "ANOMALY"])?;
    let drift = one_of(
        "drift",
        filter.drift,
        &["NOT_APPLICABLE", "UNCHECKED", "UNCHANGED", "DRIFTED"],
    )?;
    let rows = sqlx::query_as!(
        MonitorView,
        r#"select m.certificate_id, c.status as certificate_status, m.status as state, m.checks,
                  m.checks_remaining, m.check_count, m.interval_secs, m.next_check_at, m.last_check_at,
                  m.last_result, m.last_findings, m.drift_state, m.drift_detail,
                  (select count(*) from certificate_flag f where f.certificate_id = m.certificate_id
                     and f.raised_by = 'MONITOR' and f.status in ('OPEN', 'TRIAGED', 'REAUDIT')) as "open_monitor_flags!"
           from monitor m join certificate c using (certificate_id)
           where ($1::text is null or m.status = $1) and ($2::text is null or m.last_result = $2)
             and ($3::text is null or m.drift_state = $3)
           order by (m.last_result = 'ANOMALY' or m.drift_state = 'DRIFTED') desc nulls last,
                    m.last_check_at desc nulls last, m.certificate_id
           limit 200"#,
        status,
        result,
        drift,
    )
    .fetch_all(&state.db)
    .await?;
    Ok(Json(rows))
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MonitorStateChange {
    /// ACTIVE (resume) or PAUSED.
    #[schema(pattern = "^(ACTIVE|PAUSED)$")]
    pub state: String,
}

/// Pause a monitor (its checks stop; `live-status` shows PAUSED) or resume it. A completed
/// monitor stays completed.
#[utoipa::path(put, path = "/monitors/{id}", tag = "operator", security(("operator_session" = [])),
    params(("id" = String, Path, description = "Certificate id")), request_body = MonitorStateChange,
    responses((status = 200, body = MonitorStateChange), (status = 404, body = ErrorBody),
        (status = 409, description = "The monitor is completed", body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn set_monitor_state(
    State(state): State<AppState>,
    operator: OperatorAuth,
    ApiPath(id): ApiPath<CertificateId>,
    ApiJson(change): ApiJson<MonitorStateChange>,
) -> ApiResult<Json<MonitorStateChange>> {
    if !matches!(change.state.as_str(), "ACTIVE" | "PAUSED") {
        return Err(ApiError::unprocessable(
            "invalid_state",
            "state is ACTIVE or PAUSED",
        ));
    }
    let current = sqlx::query_scalar!(
        "select status from monitor where certificate_id = $1 for no key update",
        id.as_str()
    )
    .fetch_optional(&state.db)
    .await?
    .ok_or_else(|| ApiError::not_found("monitor"))?;
    if current == "COMPLETED" {
        return Err(ApiError::conflict(
            "monitor_completed",
            "the monitor has no checks left",
        ));
    }
    sqlx::query!(
        "update monitor set status = $2 where certificate_id = $1 and status <> 'COMPLETED'",
        id.as_str(),
        change.state
    )
    .execute(&state.db)
    .await?;
    tracing::info!(certificate_id = %id.as_str(), state = %change.state, operator = %operator.name, "monitor state set");
    Ok(Json(change))
}
