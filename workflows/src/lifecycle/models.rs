//! Model-tier sync, run by the `sigma-model-tier-sync` schedule: one activity that lists every
//! validator provider's models (see `sigma_activities::lifecycle::models`).

use sigma_activities::lifecycle::LifecycleActivities;
use sigma_activities::lifecycle::models::ModelSyncReport;
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{WorkflowContext, WorkflowResult};

use super::bookkeeping;
use crate::submission::Explained;

#[workflow]
#[derive(Default)]
pub struct ModelSyncWorkflow {}

#[workflow_methods]
impl ModelSyncWorkflow {
    #[run]
    pub async fn run(
        ctx: &mut WorkflowContext<Self>,
        _input: (),
    ) -> WorkflowResult<ModelSyncReport> {
        let queue = ctx.task_queue().to_owned();
        ctx.execute_activity(LifecycleActivities::sync_models, (), bookkeeping(&queue, 5))
            .await
            .explained()
    }
}
