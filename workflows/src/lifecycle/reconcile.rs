//! The reconciler, run by the `sigma-reconciler` schedule: finds work that was recorded but whose
//! workflow never started, and starts it under its business key. Submissions cannot strand this
//! way (their run records them, and takes their payment, in its own first step); a flag can,
//! since the API files it before starting `flag:{id}`.

use serde::{Deserialize, Serialize};
use sigma_activities::lifecycle::LifecycleActivities;
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{
    ChildWorkflowOptions, ParentClosePolicy, WorkflowContext, WorkflowIdReusePolicy, WorkflowResult,
};

use super::bookkeeping;
use super::flag::{FlagInput, FlagWorkflow};
use super::sweep::tally_starts;
use crate::submission::Explained;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReconcileReport {
    /// Flag workflows this run started.
    pub flags_started: u32,
    /// Flags whose workflow turned out to exist (it had not recorded itself yet).
    pub flags_running: u32,
}

#[workflow]
#[derive(Default)]
pub struct ReconcileWorkflow {}

#[workflow_methods]
impl ReconcileWorkflow {
    #[run]
    pub async fn run(
        ctx: &mut WorkflowContext<Self>,
        _input: (),
    ) -> WorkflowResult<ReconcileReport> {
        let queue = ctx.task_queue().to_owned();
        let deadline = ctx
            .execute_activity(
                LifecycleActivities::flag_policy,
                (),
                bookkeeping(&queue, 10),
            )
            .await
            .explained()?;
        let stranded = ctx
            .execute_activity(
                LifecycleActivities::stranded_flags,
                500u32,
                bookkeeping(&queue, 10),
            )
            .await
            .explained()?;
        let starts = stranded.iter().map(|f| {
            let options = ChildWorkflowOptions::builder()
                .workflow_id(format!("flag:{}", f.flag_id))
                .parent_close_policy(ParentClosePolicy::Abandon)
                .id_reuse_policy(WorkflowIdReusePolicy::RejectDuplicate)
                .static_summary(format!(
                    "flag {} on certificate {}",
                    f.flag_id, f.certificate_id
                ))
                .build();
            ctx.start_child_workflow(
                FlagWorkflow::run,
                FlagInput {
                    flag_id: f.flag_id.clone(),
                    certificate_id: f.certificate_id.clone(),
                    triage_deadline_secs: deadline,
                    raised_by_monitor: f.raised_by_monitor,
                },
                options,
            )
        });
        let tally = tally_starts(
            temporalio_sdk::workflows::join_all(starts).await,
            "flag's workflow",
        )?;
        let report = ReconcileReport {
            flags_started: tally.started,
            flags_running: tally.already_started,
        };
        Ok(report)
    }
}
