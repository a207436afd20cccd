//! The monitor sweep, run by the `sigma-monitor-sweep` schedule: pages through monitors whose
//! next check is due and starts one `monitor:{certificate}:{check}` workflow each. A check that
//! exists already (an overlapping sweep, a retry) is refused by the server and counted, so no
//! check runs twice. Each check workflow runs the check, then makes sure every monitor flag it
//! left open has its `flag:{id}` workflow (which sends an untriaged monitor flag to re-audit).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sigma_activities::lifecycle::LifecycleActivities;
use sigma_activities::lifecycle::monitor::{CheckKey, CheckOutcome, MonitorCursor, MonitorPage};
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{
    ChildWorkflowOptions, ContinueAsNewOptions, ParentClosePolicy, WorkflowContext,
    WorkflowIdReusePolicy, WorkflowResult,
};

use super::flag::{FlagInput, FlagWorkflow};
use super::sweep::{StartTally, tally_starts};
use super::{bookkeeping, local_bookkeeping};
use crate::submission::Explained;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct MonitorSweepInput {
    #[serde(default)]
    pub after: Option<MonitorCursor>,
    #[serde(default)]
    pub report: MonitorSweepReport,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MonitorSweepReport {
    /// Check workflows this sweep started.
    pub started: u32,
    /// Due checks whose workflow already existed.
    pub already_started: u32,
    pub runs: u32,
}

#[workflow]
#[derive(Default)]
pub struct MonitorSweepWorkflow {}

#[workflow_methods]
impl MonitorSweepWorkflow {
    #[run]
    pub async fn run(
        ctx: &mut WorkflowContext<Self>,
        input: MonitorSweepInput,
    ) -> WorkflowResult<MonitorSweepReport> {
        let queue = ctx.task_queue().to_owned();
        let policy = ctx
            .execute_activity(
                LifecycleActivities::renewal_policy,
                (),
                bookkeeping(&queue, 10),
            )
            .await
            .explained()?;
        let mut report = input.report.clone();
        report.runs += 1;
        let mut after = input.after.clone();
        let mut handled = 0u32;
        loop {
            let page = ctx
                .execute_activity(
                    LifecycleActivities::due_monitors,
                    MonitorPage {
                        after: after.clone(),
                        limit: policy.ops.sweep_page_size,
                    },
                    bookkeeping(&queue, 10),
                )
                .await
                .explained()?;
            let starts = page.items.iter().map(|key| {
                let options = ChildWorkflowOptions::builder()
                    .workflow_id(key.workflow_id())
                    .parent_close_policy(ParentClosePolicy::Abandon)
                    // A check is done once; only a run that failed (its activity kept failing
                    // for hours) is started again by a later sweep.
                    .id_reuse_policy(WorkflowIdReusePolicy::AllowDuplicateFailedOnly)
                    .static_summary(format!(
                        "check {} of certificate {}",
                        key.check_no, key.certificate_id
                    ))
                    .build();
                ctx.start_child_workflow(
                    MonitorCheckWorkflow::run,
                    MonitorCheckInput {
                        key: key.clone(),
                        triage_deadline_secs: policy.ops.flag_triage_deadline_secs,
                    },
                    options,
                )
            });
            let StartTally {
                started,
                already_started,
            } = tally_starts(
                temporalio_sdk::workflows::join_all(starts).await,
                "monitor check",
            )?;
            report.started += started;
            report.already_started += already_started;
            handled += page.items.len() as u32;
            let Some(next) = page.next else { break };
            after = Some(next);
            if handled >= policy.ops.sweep_items_per_run {
                let continued = MonitorSweepInput {
                    after,
                    report: report.clone(),
                };
                match ctx.continue_as_new(continued, ContinueAsNewOptions::default()) {
                    Err(termination) => return Err(termination),
                    Ok(never) => match never {},
                }
            }
        }
        Ok(report)
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MonitorCheckInput {
    pub key: CheckKey,
    pub triage_deadline_secs: u64,
}

#[workflow]
#[derive(Default)]
pub struct MonitorCheckWorkflow {}

#[workflow_methods]
impl MonitorCheckWorkflow {
    #[run]
    pub async fn run(
        ctx: &mut WorkflowContext<Self>,
        input: MonitorCheckInput,
    ) -> WorkflowResult<CheckOutcome> {
        // Probes and a git download take longer than bookkeeping.
        let outcome = ctx
            .execute_local_activity(
                LifecycleActivities::run_monitor_check,
                input.key.clone(),
                local_bookkeeping(20, Duration::from_secs(300)),
            )
            .await
            .explained()?;
        let starts = outcome.flags.iter().map(|flag| {
            let options = ChildWorkflowOptions::builder()
                .workflow_id(flag.workflow_id.clone())
                .parent_close_policy(ParentClosePolicy::Abandon)
                .id_reuse_policy(WorkflowIdReusePolicy::RejectDuplicate)
                .static_summary(format!("monitor flag on {}", flag.certificate_id))
                .build();
            ctx.start_child_workflow(
                FlagWorkflow::run,
                FlagInput {
                    flag_id: flag.flag_id.clone(),
                    certificate_id: flag.certificate_id.clone(),
                    triage_deadline_secs: input.triage_deadline_secs,
                    raised_by_monitor: true,
                },
                options,
            )
        });
        tally_starts(temporalio_sdk::workflows::join_all(starts).await, "flag")?;
        Ok(outcome)
    }
}
