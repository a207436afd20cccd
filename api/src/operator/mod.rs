//! Operator plane: console sessions, decisions on escalated submissions, retries of failed runs,
//! certificate status, the public's flags, the pricing catalog and money levers, and support.

pub mod console;
pub mod developers;
pub mod disputes;
pub mod flags;
pub mod models;
pub mod monitors;
pub mod pricing;
pub mod support;
pub mod vouchers;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use sigma_activities::lifecycle::flags::StatusChange;
use sigma_activities::types::OperatorDecision;
use sigma_shared::domain::{Category, CertificateId, CertificateStatus, Outcome, SubmissionId};
use sigma_workflows::{CertificateStatusWorkflow, SubmissionProgress, SubmissionWorkflow};
use temporalio_client::errors::WorkflowUpdateError;
use temporalio_client::{
    WorkflowExecuteUpdateOptions, WorkflowExecutionStatus, WorkflowStartOptions,
};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::auth::OperatorAuth;
use crate::core::submission_run::{self, workflow_status};
use crate::error::{ApiError, ApiJson, ApiPath, ApiResult, ErrorBody};
use sigma_activities::intake::{IntakeOutcome, RetryIntake};

/// A decision's reason is sealed into the signed certificate: it stays short.
pub const MAX_REASON_CHARS: usize = 2_000;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(console::router())
        .merge(pricing::routes())
        .merge(vouchers::routes())
        .merge(developers::routes())
        .merge(support::router())
        .routes(routes!(decide_submission))
        .routes(routes!(retry_submission))
        .routes(routes!(set_certificate_status))
        .merge(flags::routes())
        .merge(models::routes())
        .merge(monitors::routes())
        .merge(disputes::routes())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionRequest {
    pub decision: DecisionChoice,
    /// Why; recorded with the operator's name, shown to the developer and sealed into the
    /// certificate.
    #[schema(
        min_length = 1,
        max_length = 2000,
        pattern = "^[^\\u0000]*[^\\s\\u0000][^\\u0000]*$"
    )]
    pub reason: String,
}

/// What an operator decides on an escalated submission.
#[derive(Clone, Copy, Debug, Deserialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum DecisionChoice {
    Approved,
    Rejected,
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
    ApiPath(id): ApiPath<SubmissionId>,
    ApiJson(request): ApiJson<DecisionRequest>,
) -> ApiResult<Json<SubmissionProgress>> {
    let decision = match request.decision {
        DecisionChoice::Approved => Outcome::Approved,
        DecisionChoice::Rejected => Outcome::Rejected,
    };
    if request.reason.chars().count() > MAX_REASON_CHARS {
        return Err(ApiError::unprocessable(
            "reason_too_long",
            format!(
                "`reason` is sealed into the certificate: at most {MAX_REASON_CHARS} characters"
            ),
        ));
    }
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
        // The validator's own words (e.g. "not awaiting an operator decision"), not the
        // failure's debug form.
        Err(WorkflowUpdateError::Failed(failure)) => Err(ApiError::conflict(
            "not_awaiting_decision",
            failure.message.clone(),
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
                "the workflow did not take the decision; try again",
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
    ApiPath(id): ApiPath<SubmissionId>,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    // A failed submission is retried: FAILED in the projection, or (when even writing FAILED
    // failed) a latest run that Temporal reports closed without completing. The new run's
    // intake step claims it atomically, so two retries cannot both go ahead.
    let status = workflow_status(&state, &id).await;
    if status == Some(WorkflowExecutionStatus::Running) {
        // E.g. a failed paid run still settling its refund: it closes by itself.
        return Err(submission_run::run_in_progress(&id));
    }
    // Read for the run's summary and search attributes only; the run claims the row.
    let recorded = sqlx::query!(
        "select category, skill_name from submission where submission_id = $1",
        id.as_str()
    )
    .fetch_optional(&state.db)
    .await?
    .ok_or_else(|| ApiError::not_found("submission"))?;
    let category: Category = recorded.category.parse().map_err(anyhow::Error::msg)?;
    let retry = RetryIntake {
        operator: operator.name.clone(),
        latest_run_failed: matches!(
            status,
            Some(
                WorkflowExecutionStatus::Failed
                    | WorkflowExecutionStatus::Terminated
                    | WorkflowExecutionStatus::TimedOut
                    | WorkflowExecutionStatus::Canceled
            )
        ),
        // A paid submission whose workflow never started (recorded before intake moved into
        // the run) is started here too.
        never_started: status.is_none(),
    };
    match submission_run::start_retry(&state, &id, category, recorded.skill_name.as_deref(), retry)
        .await?
    {
        Some(IntakeOutcome::Refused(refusal)) => {
            return Err(ApiError::new(
                StatusCode::from_u16(refusal.reason.http_status()).unwrap_or(StatusCode::CONFLICT),
                refusal.reason.code(),
                refusal.detail,
            ));
        }
        Some(_) => {}
        // No worker answered in time: the run goes on by itself and the projection tells.
        None => tracing::warn!("the retry's run did not answer its intake in time"),
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

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CertificateStatusRequest {
    pub status: CertificateStatusChange,
    /// Why; shown publicly in `verify` and `live-status`.
    #[schema(
        min_length = 1,
        max_length = 2000,
        pattern = "^[^\\u0000]*[^\\s\\u0000][^\\u0000]*$"
    )]
    pub reason: String,
}

/// Suspend, reinstate or revoke a certificate. Every API replica serves the change within a
/// second (PostgreSQL notifications). A revocation is final.
#[utoipa::path(post, path = "/certificates/{id}/status", tag = "operator", security(("operator_token" = [])),
    params(("id" = String, Path, description = "Certificate id")), request_body = CertificateStatusRequest,
    responses((status = 200, body = Object), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
#[tracing::instrument(name = "set_certificate_status", skip_all, fields(operator = %operator.name, certificate_id = %id))]
async fn set_certificate_status(
    State(state): State<AppState>,
    operator: OperatorAuth,
    ApiPath(id): ApiPath<CertificateId>,
    ApiJson(request): ApiJson<CertificateStatusRequest>,
) -> ApiResult<Json<serde_json::Value>> {
    let status = request.status.status();
    let reason = request.reason.trim();
    if reason.chars().count() > MAX_REASON_CHARS {
        return Err(ApiError::unprocessable(
            "reason_too_long",
            format!("`reason` is shown publicly: at most {MAX_REASON_CHARS} characters"),
        ));
    }
    if reason.is_empty() {
        return Err(ApiError::unprocessable(
            "missing_reason",
            "a status change needs a reason",
        ));
    }
    // Allowed moves: APPROVED ⇄ SUSPENDED, either → REVOKED. Superseded, expired and revoked
    // are final. The change runs as a workflow: its activity applies it and emails the developer.
    sqlx::query_scalar!(
        "select status from certificate where certificate_id = $1",
        id.as_str()
    )
    .fetch_optional(&state.db)
    .await?
    .ok_or_else(|| ApiError::not_found("certificate"))?;
    let request_id = uuid::Uuid::new_v4().simple().to_string();
    let change = StatusChange {
        certificate_id: id.to_string(),
        status: status.as_str().to_owned(),
        reason: reason.to_owned(),
        operator: operator.name.clone(),
        request_id: request_id.clone(),
    };
    let options = WorkflowStartOptions::new(
        state.workflow_queue(),
        format!("certificate-status:{id}:{request_id}"),
    )
    .static_summary(format!("{status} certificate {id} ({})", operator.name))
    .build();
    let run = async {
        let handle = state
            .temporal
            .start_workflow(CertificateStatusWorkflow::run, change, options)
            .await
            .map_err(anyhow::Error::from)?;
        handle
            .get_result(Default::default())
            .await
            .map_err(anyhow::Error::from)
    };
    let row = match tokio::time::timeout(std::time::Duration::from_secs(30), run).await {
        Ok(Ok(changed)) => changed,
        Ok(Err(e)) => {
            tracing::warn!(error = %format!("{e:#}"), "status change workflow failed");
            return Err(ApiError::unavailable(
                "workflow_unavailable",
                "the status change did not complete; try again",
            ));
        }
        Err(_) => {
            return Err(ApiError::unavailable(
                "workflow_unavailable",
                "no worker applied the status change in time; it will still be applied",
            ));
        }
    };
    if !row.applied {
        return Err(ApiError::conflict(
            "invalid_transition",
            format!("a {} certificate cannot become {status}", row.status),
        ));
    }
    state.public.cache.invalidate(id.as_str()).await;
    tracing::info!(status = %row.status, "certificate status changed");
    Ok(Json(serde_json::json!({
        "certificateId": id, "status": row.status, "statusReason": reason,
        "statusChangedAt": row.changed_at, "changedBy": operator.name,
    })))
}

/// What an operator makes of a certificate: SUSPENDED (reversible), REVOKED (final) or
/// APPROVED (lifts a suspension).
#[derive(Clone, Copy, Debug, Deserialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum CertificateStatusChange {
    Suspended,
    Revoked,
    Approved,
}

impl CertificateStatusChange {
    fn status(self) -> CertificateStatus {
        match self {
            Self::Suspended => CertificateStatus::Suspended,
            Self::Revoked => CertificateStatus::Revoked,
            Self::Approved => CertificateStatus::Approved,
        }
    }
}
