//! `certificate-status:{certificate}:{request}`: an operator's status change, applied (and the
//! developer emailed) with Temporal's retries; the API waits for its answer.

use sigma_activities::lifecycle::LifecycleActivities;
use sigma_activities::lifecycle::flags::{StatusChange, StatusChanged};
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{WorkflowContext, WorkflowResult};

use super::bookkeeping;
use crate::submission::Explained;

#[workflow]
#[derive(Default)]
pub struct CertificateStatusWorkflow {}

#[workflow_methods]
impl CertificateStatusWorkflow {
    #[run]
    pub async fn run(
        ctx: &mut WorkflowContext<Self>,
        change: StatusChange,
    ) -> WorkflowResult<StatusChanged> {
        let queue = ctx.task_queue().to_owned();
        ctx.execute_activity(
            LifecycleActivities::change_certificate_status,
            change,
            bookkeeping(&queue, 20),
        )
        .await
        .explained()
    }
}
