//! Developers' disputes as operators decide them: list, and UPHOLD or OVERTURN (a workflow
//! update on `dispute:{id}`; an overturn runs a fresh audit round).

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use sigma_activities::lifecycle::disputes::{DisputeDecision, DisputeVerdict};
use sigma_shared::domain::DisputeId;
use sigma_workflows::lifecycle::DisputeProgress;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::auth::OperatorAuth;
use crate::core::dispute_run;
use crate::error::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult, ErrorBody};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_disputes))
        .routes(routes!(decide_dispute))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DisputeQuery {
    /// OPEN (default), UPHELD or OVERTURNED.
    #[param(pattern = "^(OPEN|UPHELD|OVERTURNED)$")]
    status: Option<String>,
}

/// Disputes, oldest first (at most 500).
#[utoipa::path(get, path = "/disputes", tag = "operator", security(("operator_token" = [])), params(DisputeQuery),
    responses((status = 200, body = Object), (status = 400, body = ErrorBody)))]
async fn list_disputes(
    State(state): State<AppState>,
    _operator: OperatorAuth,
    ApiQuery(query): ApiQuery<DisputeQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    let status = query.status.unwrap_or_else(|| "OPEN".into());
    if !matches!(status.as_str(), "OPEN" | "UPHELD" | "OVERTURNED") {
        return Err(ApiError::bad_request(
            "invalid_status",
            "status is OPEN, UPHELD or OVERTURNED",
        ));
    }
    let rows = sqlx::query!(
        r#"select dispute_id, submission_id, kind, certificate_id, reason, status, decision_note, decided_by,
                  fresh_submission_id, final_outcome, created_at, decided_at
           from dispute where status = $1 order by created_at limit 500"#,
        status
    )
    .fetch_all(&state.db)
    .await?;
    Ok(Json(serde_json::json!({
        "items": rows.iter().map(|r| serde_json::json!({
            "disputeId": r.dispute_id.to_string(), "submissionId": r.submission_id, "kind": r.kind,
            "certificateId": r.certificate_id, "reason": r.reason, "status": r.status,
            "decisionNote": r.decision_note, "decidedBy": r.decided_by,
            "freshSubmissionId": r.fresh_submission_id, "finalOutcome": r.final_outcome,
            "createdAt": r.created_at, "decidedAt": r.decided_at,
        })).collect::<Vec<_>>(),
    })))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DisputeDecisionRequest {
    pub verdict: DisputeVerdict,
    /// Why; sent to the developer.
    #[schema(
        min_length = 1,
        max_length = 2000,
        pattern = "^[^\\u0000]*[^\\s\\u0000][^\\u0000]*$"
    )]
    pub note: String,
}

/// Uphold a dispute's decision, or overturn it (a fresh audit round then decides).
#[utoipa::path(post, path = "/disputes/{dispute_id}/decision", tag = "operator", security(("operator_token" = [])),
    params(("dispute_id" = uuid::Uuid, Path, description = "Dispute id")), request_body = DisputeDecisionRequest,
    responses((status = 200, body = Object), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
#[tracing::instrument(name = "decide_dispute", skip_all, fields(operator = %operator.name, dispute_id = %dispute_id))]
async fn decide_dispute(
    State(state): State<AppState>,
    operator: OperatorAuth,
    ApiPath(dispute_id): ApiPath<DisputeId>,
    ApiJson(request): ApiJson<DisputeDecisionRequest>,
) -> ApiResult<Json<DisputeProgress>> {
    let note = crate::input::required_text("note", &request.note, 2000)?;
    let id = dispute_id.uuid();
    let status = sqlx::query_scalar!("select status from dispute where dispute_id = $1", id)
        .fetch_optional(&state.db)
        .await?
        .ok_or_else(|| ApiError::not_found("dispute"))?;
    if status != "OPEN" {
        return Err(ApiError::conflict(
            "dispute_decided",
            format!("the dispute is already {status}"),
        ));
    }
    let progress = dispute_run::decide(
        &state,
        &id.to_string(),
        DisputeDecision {
            verdict: request.verdict,
            note: note.to_owned(),
            operator: operator.name.clone(),
        },
    )
    .await?;
    Ok(Json(progress))
}
