//! Starting and moving a flag's workflow (`flag:{id}`): the only way a flag changes after it is
//! filed. A move is a workflow update sent with a start, so a flag whose workflow never started
//! (the API stopped right after filing it) gets one then.

use sigma_activities::lifecycle::flags::FlagAction;
use sigma_workflows::FlagWorkflow;
use sigma_workflows::lifecycle::{FlagInput, FlagProgress};
use temporalio_client::errors::{
    WorkflowStartError, WorkflowUpdateError, WorkflowUpdateWithStartError,
};
use temporalio_client::{
    WorkflowIdConflictPolicy, WorkflowIdReusePolicy, WorkflowStartOptions,
    WorkflowUpdateWithStartOptions,
};

use crate::AppState;
use crate::error::{ApiError, ApiResult};

pub fn workflow_id(flag_id: &str) -> String {
    format!("flag:{flag_id}")
}

fn input(
    state: &AppState,
    flag_id: &str,
    certificate_id: &str,
    raised_by_monitor: bool,
) -> FlagInput {
    FlagInput {
        flag_id: flag_id.to_owned(),
        certificate_id: certificate_id.to_owned(),
        triage_deadline_secs: state.settings.ops.flag_triage_deadline_secs,
        raised_by_monitor,
    }
}

/// Starts the flag's workflow (joining it when it runs). A failure is logged, not returned: the
/// report is filed either way, and the first move or the reconciler starts the workflow.
pub async fn start(state: &AppState, flag_id: &str, certificate_id: &str) {
    let options = WorkflowStartOptions::new(state.workflow_queue(), workflow_id(flag_id))
        .id_conflict_policy(WorkflowIdConflictPolicy::UseExisting)
        .id_reuse_policy(WorkflowIdReusePolicy::AllowDuplicateFailedOnly)
        .static_summary(format!("flag {flag_id} on certificate {certificate_id}"))
        .build();
    match state
        .temporal
        .start_workflow(
            FlagWorkflow::run,
            input(state, flag_id, certificate_id, false),
            options,
        )
        .await
    {
        Ok(_) | Err(WorkflowStartError::AlreadyStarted { .. }) => {}
        Err(e) => {
            tracing::warn!(error = %e, flag_id, "flag workflow not started; the reconciler will")
        }
    }
}

/// Sends an operator's move to the flag's workflow and answers once the workflow applied it.
/// A refused move answers 409 with the workflow's reason.
pub async fn move_flag(
    state: &AppState,
    flag_id: &str,
    certificate_id: &str,
    raised_by_monitor: bool,
    step: FlagAction,
) -> ApiResult<FlagProgress> {
    let options = WorkflowUpdateWithStartOptions::new(
        state.workflow_queue(),
        workflow_id(flag_id),
        WorkflowIdConflictPolicy::UseExisting,
    )
    .id_reuse_policy(WorkflowIdReusePolicy::AllowDuplicateFailedOnly)
    .static_summary(format!("flag {flag_id} on certificate {certificate_id}"))
    .build();
    let call = state.temporal.execute_update_with_start_workflow(
        FlagWorkflow::run,
        input(state, flag_id, certificate_id, raised_by_monitor),
        FlagWorkflow::triage,
        step,
        options,
    );
    match call.await {
        Ok(progress) => Ok(progress),
        Err(WorkflowUpdateWithStartError::Update(WorkflowUpdateError::Failed(failure))) => Err(
            ApiError::conflict("invalid_flag_move", failure.message.clone()),
        ),
        // The workflow closed (the flag is resolved): the row says how.
        Err(WorkflowUpdateWithStartError::Start(WorkflowStartError::AlreadyStarted { .. })) => Err(
            ApiError::conflict("flag_resolved", "the flag is already resolved"),
        ),
        Err(e) => {
            tracing::warn!(error = %e, flag_id, "flag move not delivered");
            Err(ApiError::unavailable(
                "workflow_unavailable",
                "the flag's workflow did not take the move; try again",
            ))
        }
    }
}
