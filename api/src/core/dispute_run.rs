//! Starting and deciding a dispute's workflow (`dispute:{id}`).

use sigma_activities::lifecycle::disputes::DisputeDecision;
use sigma_workflows::DisputeWorkflow;
use sigma_workflows::lifecycle::{DisputeInput, DisputeProgress};
use temporalio_client::errors::{WorkflowStartError, WorkflowUpdateError};
use temporalio_client::{
    WorkflowExecuteUpdateOptions, WorkflowIdConflictPolicy, WorkflowIdReusePolicy,
    WorkflowStartOptions,
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
    let input = DisputeInput {
        dispute_id: dispute_id.to_owned(),
        decision_deadline_secs: state.settings.ops.dispute_decision_deadline_secs,
    };
    match state
        .temporal
        .start_workflow(DisputeWorkflow::run, input, options)
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

/// An operator's decision, answered once the workflow recorded it.
pub async fn decide(
    state: &AppState,
    dispute_id: &str,
    decision: DisputeDecision,
) -> ApiResult<DisputeProgress> {
    let handle = state
        .temporal
        .get_workflow_handle::<DisputeWorkflow>(workflow_id(dispute_id));
    match handle
        .execute_update(
            DisputeWorkflow::decide,
            decision,
            WorkflowExecuteUpdateOptions::default(),
        )
        .await
    {
        Ok(progress) => Ok(progress),
        Err(WorkflowUpdateError::Failed(failure)) => Err(ApiError::conflict(
            "dispute_decided",
            failure.message.clone(),
        )),
        Err(e) => {
            tracing::warn!(error = %e, dispute_id, "dispute decision not delivered");
            Err(ApiError::conflict(
                "dispute_decided",
                "the dispute is no longer awaiting a decision",
            ))
        }
    }
}
