//! Operator plane: decide escalated submissions, retry failed runs.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use sigma_activities::types::OperatorDecision;
use sigma_shared::domain::{Category, Outcome, SubmissionId};
use sigma_workflows::{SubmissionProgress, SubmissionWorkflow};
use temporalio_client::errors::WorkflowUpdateError;
use temporalio_client::{
    WorkflowExecuteUpdateOptions, WorkflowExecutionStatus, WorkflowIdReusePolicy,
};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::auth::OperatorAuth;
use crate::dev::{git_source, start_workflow, workflow_status};
use crate::error::{ApiError, ApiJson, ApiResult, ErrorBody};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(decide_submission))
        .routes(routes!(retry_submission))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionRequest {
    /// APPROVED or REJECTED.
    pub decision: String,
    /// Why; recorded with the operator's name and shown to the developer.
    pub reason: String,
}

/// Decide an escalated submission. Refused unless the workflow is waiting for a decision.
#[utoipa::path(post, path = "/submissions/{id}/decision", tag = "operator", security(("operator_token" = [])),
    params(("id" = String, Path, description = "Submission id")), request_body = DecisionRequest,
    responses((status = 200, description = "Accepted; the workflow continues", body = Object),
        (status = 404, body = ErrorBody), (status = 409, description = "Not awaiting a decision", body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
#[tracing::instrument(name = "decide_submission", skip_all, fields(operator = %operator.name, submission_id = %id))]
async fn decide_submission(
    State(state): State<AppState>,
    operator: OperatorAuth,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<DecisionRequest>,
) -> ApiResult<Json<SubmissionProgress>> {
    let id = SubmissionId::parse(&id).map_err(|_| ApiError::not_found("submission"))?;
    let decision = match request.decision.as_str() {
        "APPROVED" => Outcome::Approved,
        "REJECTED" => Outcome::Rejected,
        other => {
            return Err(ApiError::unprocessable(
                "invalid_decision",
                format!("`{other}`: decision is APPROVED or REJECTED"),
            ));
        }
    };
    if request.reason.trim().is_empty() {
        return Err(ApiError::unprocessable(
            "missing_reason",
            "a decision needs a reason",
        ));
    }
    exists(&state, &id).await?;
    let handle = state
        .temporal
        .get_workflow_handle::<SubmissionWorkflow>(id.workflow_id());
    let decision = OperatorDecision {
        decision,
        reason: request.reason,
        decided_by: operator.name.clone(),
        operator_id: Some(operator.operator_id.to_string()),
    };
    match handle
        .execute_update(
            SubmissionWorkflow::decide,
            decision,
            WorkflowExecuteUpdateOptions::default(),
        )
        .await
    {
        Ok(progress) => Ok(Json(progress)),
        Err(WorkflowUpdateError::Failed(failure)) => Err(ApiError::conflict(
            "not_awaiting_decision",
            failure.to_string(),
        )),
        Err(e) => {
            // A workflow that has finished cannot take an update; say so rather than "unavailable".
            if let Ok(description) = handle.describe(Default::default()).await
                && description.status() != WorkflowExecutionStatus::Running
            {
                return Err(ApiError::conflict(
                    "not_awaiting_decision",
                    format!(
                        "submission {id} is no longer awaiting a decision (workflow {:?})",
                        description.status()
                    ),
                ));
            }
            tracing::warn!(error = %e, "decision update failed");
            Err(ApiError::unavailable(
                "workflow_unavailable",
                format!("the workflow did not accept the decision: {e}"),
            ))
        }
    }
}

/// Retry a submission whose workflow failed (every retry of some step was spent).
#[utoipa::path(post, path = "/submissions/{id}/retry", tag = "operator", security(("operator_token" = [])),
    params(("id" = String, Path, description = "Submission id")),
    responses((status = 202, description = "A new run started", body = Object), (status = 404, body = ErrorBody),
        (status = 409, description = "The workflow has not failed", body = ErrorBody)))]
#[tracing::instrument(name = "retry_submission", skip_all, fields(operator = %operator.name, submission_id = %id))]
async fn retry_submission(
    State(state): State<AppState>,
    operator: OperatorAuth,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    let id = SubmissionId::parse(&id).map_err(|_| ApiError::not_found("submission"))?;
    let certified = sqlx::query_scalar!(
        "select exists(select 1 from certificate where certificate_id = $1)",
        id.as_str()
    )
    .fetch_one(&state.db)
    .await?;
    if certified == Some(true) {
        return Err(ApiError::conflict(
            "certificate_issued",
            "this submission's certificate was issued before the failure; it is not re-audited",
        ));
    }
    // A failed submission is retried: FAILED in the projection, or (when even writing FAILED
    // failed) a latest run that Temporal reports closed without completing. The update claims
    // it atomically, so two retries cannot both start a run; reasons and failure detail stay
    // on record until the new run writes its own.
    let temporal_failed = matches!(
        workflow_status(&state, &id).await,
        Some(
            WorkflowExecutionStatus::Failed
                | WorkflowExecutionStatus::Terminated
                | WorkflowExecutionStatus::TimedOut
                | WorkflowExecutionStatus::Canceled
        )
    );
    let row = sqlx::query!(
        r#"update submission set stage = 'RECEIVED', completed_at = null
           where submission_id = $1 and (stage = 'FAILED' or ($2 and stage not in ('DONE', 'RECEIVED')))
           returning category, bundle_key, skill_name, git_repository, source_ref"#,
        id.as_str(),
        temporal_failed,
    )
    .fetch_optional(&state.db)
    .await?;
    let Some(row) = row else {
        exists(&state, &id).await?;
        return Err(ApiError::conflict(
            "not_failed",
            format!("submission {id} has not failed; only a failed run can be retried"),
        ));
    };
    let category: Category = row.category.parse().map_err(anyhow::Error::msg)?;
    let started = start_workflow(
        &state,
        &id,
        category,
        &row.bundle_key,
        row.skill_name.as_deref(),
        git_source(row.git_repository, row.source_ref),
        WorkflowIdReusePolicy::AllowDuplicateFailedOnly,
    )
    .await;
    if let Err(e) = started {
        // Leave it retryable, unless the run started after all (the start timed out).
        if workflow_status(&state, &id).await != Some(WorkflowExecutionStatus::Running) {
            sqlx::query!("update submission set stage = 'FAILED' where submission_id = $1 and stage = 'RECEIVED'", id.as_str())
                .execute(&state.db)
                .await?;
            return Err(e);
        }
    }
    tracing::info!("submission retried");
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({"id": id, "workflowId": id.workflow_id(), "stage": "RECEIVED"})),
    ))
}

async fn exists(state: &AppState, id: &SubmissionId) -> ApiResult<()> {
    let found = sqlx::query_scalar!(
        "select exists(select 1 from submission where submission_id = $1)",
        id.as_str()
    )
    .fetch_one(&state.db)
    .await?;
    if found == Some(true) {
        Ok(())
    } else {
        Err(ApiError::not_found("submission"))
    }
}
