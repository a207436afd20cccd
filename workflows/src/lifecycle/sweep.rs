//! The renewal sweep, run by the `sigma-renewal-sweep` schedule: pages through the certificates
//! whose renewal is due within the reminder lead and starts one renewal workflow for each under
//! its business key. A renewal that exists already (an overlapping or repeated sweep, a retry)
//! is refused by the server and counted, so no certificate is ever renewed twice for one due
//! date. Past `sweep_items_per_run` items the sweep continues as new, keeping its history short.

use serde::{Deserialize, Serialize};
use sigma_activities::lifecycle::LifecycleActivities;
use sigma_activities::lifecycle::renewal::{DueCursor, DuePage};
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{
    ChildWorkflowOptions, ChildWorkflowStartError, ContinueAsNewOptions, ParentClosePolicy,
    StartChildWorkflowExecutionFailedCause, WorkflowContext, WorkflowIdReusePolicy, WorkflowResult,
    WorkflowTermination,
};

use super::bookkeeping;
use super::renewal::{RenewalInput, RenewalWorkflow};
use crate::submission::Explained;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RenewalSweepInput {
    /// Where a continued sweep resumes.
    #[serde(default)]
    pub after: Option<DueCursor>,
    /// Counts carried over from the runs this one continues.
    #[serde(default)]
    pub report: RenewalSweepReport,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RenewalSweepReport {
    /// Renewal workflows this sweep started.
    pub started: u32,
    /// Due certificates whose renewal workflow already existed.
    pub already_started: u32,
    /// Runs of this sweep (1 + continue-as-new count).
    pub runs: u32,
}

#[workflow]
#[derive(Default)]
pub struct RenewalSweepWorkflow {}

#[workflow_methods]
impl RenewalSweepWorkflow {
    #[run]
    pub async fn run(
        ctx: &mut WorkflowContext<Self>,
        input: RenewalSweepInput,
    ) -> WorkflowResult<RenewalSweepReport> {
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
                    LifecycleActivities::due_renewals,
                    DuePage {
                        after: after.clone(),
                        limit: policy.ops.sweep_page_size,
                    },
                    bookkeeping(&queue, 10),
                )
                .await
                .explained()?;
            let starts = page.items.iter().map(|item| {
                let options = ChildWorkflowOptions::builder()
                    .workflow_id(item.key.workflow_id())
                    // Renewals wait for their due dates long after this sweep has ended.
                    .parent_close_policy(ParentClosePolicy::Abandon)
                    // A renewal that closed NOT_NEEDED (the certificate was suspended) may run
                    // again once it is reinstated; the due query never lists a finished one.
                    .id_reuse_policy(WorkflowIdReusePolicy::AllowDuplicate)
                    .static_summary(format!(
                        "renewal of certificate {}",
                        item.key.certificate_id
                    ))
                    .build();
                ctx.start_child_workflow(
                    RenewalWorkflow::run,
                    RenewalInput {
                        key: item.key.clone(),
                        payment_retry_secs: policy.ops.renewal_payment_retry_secs,
                    },
                    options,
                )
            });
            let tally = tally_starts(temporalio_sdk::workflows::join_all(starts).await, "renewal")?;
            report.started += tally.started;
            report.already_started += tally.already_started;
            handled += page.items.len() as u32;
            let Some(next) = page.next else { break };
            after = Some(next);
            if handled >= policy.ops.sweep_items_per_run {
                let continued = RenewalSweepInput {
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

/// How a batch of child starts went: a child that exists already is counted, not retried.
pub(super) struct StartTally {
    pub started: u32,
    pub already_started: u32,
}

/// Tallies child starts; any failure other than "already exists" fails the sweep's run.
pub(super) fn tally_starts<T>(
    results: Vec<Result<T, ChildWorkflowStartError>>,
    what: &str,
) -> Result<StartTally, WorkflowTermination> {
    let mut tally = StartTally {
        started: 0,
        already_started: 0,
    };
    for started in results {
        match started {
            Ok(_) => tally.started += 1,
            Err(ChildWorkflowStartError::StartFailed {
                cause: StartChildWorkflowExecutionFailedCause::WorkflowAlreadyExists,
                ..
            }) => tally.already_started += 1,
            Err(e) => {
                return Err(temporalio_sdk::ApplicationFailure::new(format!(
                    "could not start a {what}: {e}"
                ))
                .into());
            }
        }
    }
    Ok(tally)
}
