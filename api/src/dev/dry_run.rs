//! The free dry-run of a draft revision (workflow `draft-check:{draft}:{revision}`): what would
//! fail or warn, and the measured facts that price it.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use sigma_activities::portal::{CheckProblem, DraftCheck, DraftCheckInput};
use sigma_workflows::DraftCheckWorkflow;
use sqlx::types::Uuid;
use temporalio_client::errors::WorkflowStartError;
use temporalio_client::{WorkflowIdConflictPolicy, WorkflowIdReusePolicy, WorkflowStartOptions};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::drafts::OwnedDraft;
use crate::AppState;
use crate::error::{ApiError, ApiResult, ErrorBody};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(validate_draft))
}

/// How long a request waits for a dry-run or a manifest before answering 503 (the work goes on).
pub(super) const WAIT: Duration = Duration::from_secs(90);

pub(super) fn engine_unavailable(e: impl std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "workflow engine call failed");
    ApiError::unavailable(
        "workflow_engine_unavailable",
        "the workflow engine is unreachable; try again",
    )
}

pub(super) fn still_running() -> ApiError {
    ApiError::unavailable(
        "still_running",
        "the work is still running; repeat the request to collect its result",
    )
}

/// Start options for a workflow that runs once per business key: a running one is joined
/// (`UseExisting`), a closed one is governed by `reuse`.
pub(super) fn run_once(
    state: &AppState,
    workflow_id: &str,
    summary: String,
    reuse: WorkflowIdReusePolicy,
) -> WorkflowStartOptions {
    let mut options = WorkflowStartOptions::new(state.workflow_queue(), workflow_id)
        .static_summary(summary)
        .build();
    options.id_conflict_policy = WorkflowIdConflictPolicy::UseExisting;
    options.id_reuse_policy = reuse;
    options
}

/// Runs (or joins) the dry-run of the draft's current revision and returns its result.
pub(crate) async fn run_check(
    state: &AppState,
    draft_id: Uuid,
    revision: i32,
) -> ApiResult<DraftCheck> {
    let workflow_id = format!("draft-check:{draft_id}:{revision}");
    let input = DraftCheckInput {
        draft_id: draft_id.to_string(),
        revision,
    };
    // One dry-run per revision: a running one is joined, a finished one answers again; only
    // a failed one (every retry spent) runs anew.
    let options = run_once(
        state,
        &workflow_id,
        format!("dry-run of draft {draft_id} revision {revision}"),
        WorkflowIdReusePolicy::AllowDuplicateFailedOnly,
    );
    match state
        .temporal
        .start_workflow(DraftCheckWorkflow::run, input, options)
        .await
    {
        Ok(_) | Err(WorkflowStartError::AlreadyStarted { .. }) => {}
        Err(e) => return Err(engine_unavailable(e)),
    }
    let handle = state
        .temporal
        .get_workflow_handle::<DraftCheckWorkflow>(&workflow_id);
    match tokio::time::timeout(WAIT, handle.get_result(Default::default())).await {
        Ok(Ok(check)) => Ok(check),
        Ok(Err(e)) => {
            // Every retry spent: most often the repository archive could not be fetched. Logged
            // with its cause; the developer learns that a dependency failed, not the internals.
            tracing::error!(error = %e, workflow_id, "dry-run workflow failed");
            Err(ApiError::bad_gateway(
                "dry_run_unavailable",
                "the dry-run could not complete (for a repository source: the archive could not be fetched); try again later",
            ))
        }
        Err(_) => Err(still_running()),
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DryRun {
    pub draft_id: String,
    pub revision: i32,
    /// True when nothing below would reject the submission before its audit.
    pub passed: bool,
    pub failures: Vec<CheckProblem>,
    pub warnings: Vec<CheckProblem>,
    /// What was measured: files, bytes, languages, packages, endpoints, digests, risk level.
    #[schema(value_type = Object)]
    pub facts: serde_json::Value,
}

impl From<DraftCheck> for DryRun {
    fn from(c: DraftCheck) -> Self {
        Self {
            draft_id: c.draft_id,
            revision: c.revision,
            passed: c.passed,
            failures: c.failures,
            warnings: c.warnings,
            facts: serde_json::to_value(c.facts).unwrap_or_default(),
        }
    }
}

/// Free dry-run: the deterministic checks a submission of this draft would meet first (sandbox
/// pre-processor hard failures, size limits, dependency rules, manifest schema, entry point and
/// endpoints), with what would fail and why. No payment, no audit.
#[utoipa::path(post, path = "/drafts/{id}/validate", tag = "developer", security(("developer_session" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 200, body = DryRun), (status = 404, body = ErrorBody),
        (status = 502, description = "The dry-run could not complete (a repository archive could not be fetched)", body = ErrorBody),
        (status = 503, body = ErrorBody)))]
#[tracing::instrument(name = "validate_draft", skip_all, fields(draft_id = %draft.item.draft_id))]
async fn validate_draft(
    State(state): State<AppState>,
    draft: OwnedDraft,
) -> ApiResult<Json<DryRun>> {
    let draft = draft.item;
    let check = run_check(&state, draft.draft_id, draft.revision).await?;
    Ok(Json(check.into()))
}
