//! Starting and deciding a dispute's workflow (`dispute:{id}`).

use sigma_activities::lifecycle::disputes::DisputeDecision;
use sigma_workflows::DisputeWorkflow;
use sigma_workflows::lifecycle::{DisputeInput, DisputeProgress};
use temporalio_client::errors::{
    WorkflowStartError, WorkflowUpdateError, WorkflowUpdateWithStartError,
};
use temporalio_client::{
    WorkflowIdConflictPolicy, WorkflowIdReusePolicy, WorkflowStartOptions,
    WorkflowUpdateWithStartOptions,
};

use crate::AppState;
use crate::error::{ApiError, ApiResult};

pub fn workflow_id(dispute_id: &str) -> String {
    format!("dispute:{dispute_id}")
}

/// Starts the dispute's workflow, or joins the one that runs.
pub async fn start(state: &AppState, dispute_id: &str) -> ApiResult<()> {
    let options = WorkflowStartOptions::new(state.workflow_queue(), workflow_id(dispute_id))
        .id_conflict_policy(WorkflowIdConflictPolicy::UseExisting)
        .id_reuse_policy(WorkflowIdReusePolicy::RejectDuplicate)
        .static_summary(format!("dispute {dispute_id}"))
        .build();
    match state
        .temporal
        .start_workflow(DisputeWorkflow::run, input(state, dispute_id), options)
        .await
    {
        Ok(_) | Err(WorkflowStartError::AlreadyStarted { .. }) => Ok(()),
        Err(e) => {
            tracing::error!(error = %e, dispute_id, "cannot start the dispute workflow");
            Err(ApiError::unavailable(
                "workflow_unavailable",
                "the dispute is recorded but its review could not start; send the same request again",
            ))
        }
    }
}

/// An operator's decision, answered once the workflow recorded it. Sent with a start, so a
/// dispute whose workflow never started (the API stopped right after filing it) gets one then.
pub async fn decide(
    state: &AppState,
    dispute_id: &str,
    decision: DisputeDecision,
) -> ApiResult<DisputeProgress> {
    let options = WorkflowUpdateWithStartOptions::new(
        state.workflow_queue(),
        workflow_id(dispute_id),
        WorkflowIdConflictPolicy::UseExisting,
    )
    .id_reuse_policy(WorkflowIdReusePolicy::RejectDuplicate)
    .static_summary(format!("dispute {dispute_id}"))
    .build();
    let call = state.temporal.execute_update_with_start_workflow(
        DisputeWorkflow::run,
        input(state, dispute_id),
        DisputeWorkflow::decide,
        decision,
        options,
    );
    match call.await {
        Ok(progress) => Ok(progress),
        Err(WorkflowUpdateWithStartError::Update(WorkflowUpdateError::Failed(failure))) => Err(
            ApiError::conflict("dispute_decided", failure.message.clone()),
        ),
        Err(WorkflowUpdateWithStartError::Start(WorkflowStartError::AlreadyStarted { .. })) => {
            Err(ApiError::conflict(
                "dispute_decided",
                "the dispute is no longer awaiting a decision",
            ))
        }
        Err(e) => {
            tracing::warn!(error = %e, dispute_id, "dispute decision not delivered");
            Err(ApiError::unavailable(
                "workflow_unavailable",
                "the dispute's workflow did not take the decision; try again",
            ))
        }
    }
}

fn input(state: &AppState, dispute_id: &str) -> DisputeInput {
    DisputeInput {
        dispute_id: dispute_id.to_owned(),
        decision_deadline_secs: state.settings.ops.dispute_decision_deadline_secs,
    }
}
