//! Starting and asking the submission workflow: the one way into the pipeline for every plane.
//! Intake is workflow first (the shape of Temporal's order reference app): the run is started
//! under an id made of a business key, joining a run that already exists, and its first local
//! activity writes the projection. The API then asks the run how intake went.

use std::time::Duration;

use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use sigma_activities::intake::{Intake, IntakeOutcome, RetryIntake};
use sigma_activities::types::GitSource;
use sigma_shared::domain::{Category, SubmissionId};
use sigma_workflows::search;
use sigma_workflows::{SubmissionInput, SubmissionProgress, SubmissionWorkflow};
use temporalio_client::errors::{WorkflowStartError, WorkflowUpdateWithStartError};
use temporalio_client::{
    WorkflowExecutionStatus, WorkflowIdConflictPolicy, WorkflowIdReusePolicy, WorkflowQueryOptions,
    WorkflowUpdateWithStartOptions,
};
use temporalio_common::search_attributes::SearchAttributes;
use utoipa::ToSchema;

use crate::AppState;
use crate::error::{ApiError, ApiResult};

/// What a submission's run starts from.
pub struct NewRun<'a> {
    pub id: &'a SubmissionId,
    pub category: Category,
    /// For the Web UI's summary.
    pub name: Option<&'a str>,
    /// Known at start for direct intake and retries; a draft's comes from its checkout.
    pub bundle_key: String,
    pub git: Option<GitSource>,
    pub charged: bool,
    /// The first step's work (`None` only in histories recorded before intake moved into the run).
    pub intake: Option<Intake>,
}

/// The run's input and its summary in the Web UI.
fn input_of(state: &AppState, run: NewRun<'_>) -> (SubmissionInput, SearchAttributes, String) {
    let settings = &state.settings;
    let id = run.id;
    let attributes = SearchAttributes::new([
        search::SUBMISSION_ID.value_set(id.to_string()),
        search::CATEGORY.value_set(run.category.to_string()),
        search::STAGE.value_set("RECEIVED".to_owned()),
    ]);
    let summary = format!(
        "{} submission {id}{}",
        run.category,
        run.name.map(|n| format!(" ({n})")).unwrap_or_default()
    );
    let input = SubmissionInput {
        submission_id: id.to_string(),
        category: run.category,
        bundle_key: run.bundle_key,
        policy: settings.pipeline.clone(),
        limits: settings.sandbox.limits_for(run.category),
        git: run.git,
        charged: run.charged,
        intake: run.intake,
        issue_certificate: true,
    };
    (input, attributes, summary)
}

/// Intake: starts the run (or joins the one still running under this id) and asks it, in the
/// same atomic call, how its intake step ended. Because the question travels with the start,
/// the run cannot close before answering it. `Ok(None)`: no worker answered within
/// `api.intake_answer_secs` (the run goes on by itself), or the id belongs to a run that
/// completed long ago (the projection answers).
#[tracing::instrument(name = "start_submission", skip_all, fields(submission_id = %run.id, workflow_id = %run.id.workflow_id()))]
pub async fn start_with_intake(
    state: &AppState,
    run: NewRun<'_>,
) -> ApiResult<Option<IntakeOutcome>> {
    let id = run.id.clone();
    let (input, attributes, summary) = input_of(state, run);
    let options = WorkflowUpdateWithStartOptions::new(
        state.workflow_queue(),
        id.workflow_id(),
        WorkflowIdConflictPolicy::UseExisting,
    )
    // After a run that failed at intake (refused: nothing recorded) a corrected request starts
    // afresh; after one that completed, never again.
    .id_reuse_policy(WorkflowIdReusePolicy::AllowDuplicateFailedOnly)
    .search_attributes(attributes)
    .static_summary(summary)
    .build();
    match ask_intake(state, input, options).await? {
        Asked::Answered(outcome) => Ok(outcome),
        // A run under this id completed long ago, or no answer came: the projection answers.
        Asked::AlreadyStarted | Asked::NoAnswer => Ok(None),
    }
}

/// An operator retry: a new run of a recorded submission after a failed one. The run's intake
/// step claims the submission (see `sigma_activities::intake::retry`); a run still open under
/// the id is never joined, since its answer would be its own intake's, not this retry's.
#[tracing::instrument(name = "retry_submission", skip_all, fields(submission_id = %id, workflow_id = %id.workflow_id()))]
pub async fn start_retry(
    state: &AppState,
    id: &SubmissionId,
    category: Category,
    name: Option<&str>,
    retry: RetryIntake,
) -> ApiResult<Option<IntakeOutcome>> {
    // The bundle and source come from the row the run claims.
    let (input, attributes, summary) = input_of(
        state,
        NewRun {
            id,
            category,
            name,
            bundle_key: String::new(),
            git: None,
            charged: false,
            intake: Some(Intake::Retry(retry)),
        },
    );
    let options = WorkflowUpdateWithStartOptions::new(
        state.workflow_queue(),
        id.workflow_id(),
        WorkflowIdConflictPolicy::Fail,
    )
    .id_reuse_policy(WorkflowIdReusePolicy::AllowDuplicateFailedOnly)
    .search_attributes(attributes)
    .static_summary(format!("operator retry of {summary}"))
    .build();
    match ask_intake(state, input, options).await? {
        Asked::Answered(outcome) => Ok(outcome),
        Asked::AlreadyStarted => {
            if workflow_status(state, id).await == Some(WorkflowExecutionStatus::Running) {
                Err(run_in_progress(id))
            } else {
                // The latest run completed: nothing failed to retry.
                Err(ApiError::conflict(
                    "not_failed",
                    format!("submission {id} has not failed; only a failed run can be retried"),
                ))
            }
        }
        Asked::NoAnswer => Ok(None),
    }
}

/// How asking a run for its intake outcome ended.
enum Asked {
    Answered(Option<IntakeOutcome>),
    /// The id's conflict or reuse policy refused a new run.
    AlreadyStarted,
    /// No worker answered within `api.intake_answer_secs`, or the run closed as the update
    /// arrived: the run (if any) goes on by itself.
    NoAnswer,
}

/// Starts the run (as the options' policies allow) and asks it, in the same atomic call, how its
/// intake step ended. Because the question travels with the start, the run cannot close before
/// answering it.
async fn ask_intake(
    state: &AppState,
    input: SubmissionInput,
    options: WorkflowUpdateWithStartOptions,
) -> ApiResult<Asked> {
    let wait = Duration::from_secs(state.settings.api.intake_answer_secs);
    let call = state.temporal.execute_update_with_start_workflow(
        SubmissionWorkflow::run,
        input,
        SubmissionWorkflow::intake_outcome,
        (),
        options,
    );
    match tokio::time::timeout(wait, call).await {
        Ok(Ok(outcome)) => Ok(Asked::Answered(outcome)),
        Ok(Err(WorkflowUpdateWithStartError::Start(WorkflowStartError::AlreadyStarted {
            ..
        }))) => Ok(Asked::AlreadyStarted),
        Ok(Err(WorkflowUpdateWithStartError::Update(e))) => {
            tracing::info!(error = %e, "intake outcome not available from the run");
            Ok(Asked::NoAnswer)
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "cannot start the submission workflow");
            Err(engine_unavailable())
        }
        Err(_) => {
            tracing::warn!("no worker answered the intake update in time");
            Ok(Asked::NoAnswer)
        }
    }
}

pub fn run_in_progress(id: &SubmissionId) -> ApiError {
    ApiError::conflict(
        "run_in_progress",
        format!("submission {id} still has a running workflow; retry once it has closed"),
    )
}

fn engine_unavailable() -> ApiError {
    ApiError::unavailable(
        "workflow_engine_unavailable",
        "the workflow engine is unreachable; nothing was charged or recorded; try again",
    )
}

/// The status of the submission's latest workflow run, or `None` when Temporal has none (or
/// cannot say).
pub async fn workflow_status(
    state: &AppState,
    id: &SubmissionId,
) -> Option<WorkflowExecutionStatus> {
    state
        .temporal
        .get_workflow_handle::<SubmissionWorkflow>(id.workflow_id())
        .describe(Default::default())
        .await
        .ok()
        .map(|d| d.status())
}

/// Live detail from the running workflow; needs a worker.
pub async fn query_progress(state: &AppState, id: &SubmissionId) -> ApiResult<SubmissionProgress> {
    let handle = state
        .temporal
        .get_workflow_handle::<SubmissionWorkflow>(id.workflow_id());
    let query = handle.query(
        SubmissionWorkflow::progress,
        (),
        WorkflowQueryOptions::default(),
    );
    match tokio::time::timeout(Duration::from_secs(5), query).await {
        Ok(Ok(progress)) => Ok(progress),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "progress query failed");
            Err(ApiError::unavailable(
                "progress_unavailable",
                "live progress is unavailable; the stored status is at GET /submissions/{id}",
            ))
        }
        Err(_) => Err(ApiError::unavailable(
            "progress_unavailable",
            "no worker answered in time; the stored status is at GET /submissions/{id}",
        )),
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubmissionAccepted {
    pub id: String,
    pub workflow_id: String,
    pub stage: String,
    pub status_url: String,
    /// SHA-256 of the uploaded archive; absent for a git submission until the sandbox fetches it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bundle_sha256: Option<String>,
}

/// 202 with the submission's status URL in `Location`.
pub fn accepted(state: &AppState, id: &SubmissionId, bundle_sha256: Option<&str>) -> Response {
    let base = state.settings.api.public_base_url.trim_end_matches('/');
    let body = SubmissionAccepted {
        id: id.to_string(),
        workflow_id: id.workflow_id(),
        stage: "RECEIVED".into(),
        status_url: format!("{base}/api/v1/sigma/dev/submissions/{id}"),
        bundle_sha256: bundle_sha256.filter(|s| !s.is_empty()).map(str::to_owned),
    };
    let location = body.status_url.clone();
    (
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(body),
    )
        .into_response()
}

/// The answer to an intake request from how its run's first step ended. `request_sha256` is the
/// caller's digest under an `Idempotency-Key`, told apart from the one the run recorded.
pub fn answer(
    state: &AppState,
    id: &SubmissionId,
    outcome: IntakeOutcome,
    request_sha256: Option<&str>,
) -> ApiResult<Response> {
    match outcome {
        IntakeOutcome::Recorded(r) | IntakeOutcome::AlreadyHandled(r) => {
            if let (Some(mine), Some(theirs)) = (request_sha256, r.request_sha256.as_deref())
                && mine != theirs
            {
                return Err(crate::core::idempotency::key_reused());
            }
            Ok(accepted(state, id, r.bundle_sha256.as_deref()))
        }
        IntakeOutcome::Refused(refusal) => Err(ApiError::new(
            StatusCode::from_u16(refusal.reason.http_status()).unwrap_or(StatusCode::CONFLICT),
            refusal.reason.code(),
            refusal.detail,
        )),
    }
}

/// The bundle digest of a recorded submission (for answering a replay), if it has one.
pub async fn recorded_digest(
    state: &AppState,
    id: &SubmissionId,
) -> ApiResult<Option<Option<String>>> {
    Ok(sqlx::query_scalar!(
        "select bundle_sha256 from submission where submission_id = $1",
        id.as_str()
    )
    .fetch_optional(&state.db)
    .await?
    .map(|s| Some(s).filter(|s| !s.is_empty())))
}

/// A replay's answer: the recorded submission as first accepted.
pub async fn replay(state: &AppState, id: &SubmissionId) -> ApiResult<Response> {
    match recorded_digest(state, id).await? {
        Some(digest) => Ok(accepted(state, id, digest.as_deref())),
        None => Err(ApiError::unavailable(
            "request_in_flight",
            "an earlier request for this submission is still being settled; retry shortly",
        )),
    }
}
