//! Certificates after issuance: the renewal and monitor sweeps (started by Temporal Schedules)
//! with one renewal workflow per certificate and due date and one check workflow per monitor
//! check; flags, re-audits, status changes and disputes; site verification; and the model-tier
//! sync of the council.

mod dispute;
mod flag;
mod models;
mod monitor;
mod reconcile;
mod renewal;
mod site;
mod status;
mod sweep;

use std::time::Duration;

use chrono::{DateTime, Utc};
use sigma_activities::queues::QueueNames;
use temporalio_common::RetryPolicy;
use temporalio_sdk::{ActivityOptions, LocalActivityOptions, WorkflowContext};

pub use dispute::{DisputeInput, DisputeProgress, DisputeWorkflow};
pub use flag::{FlagInput, FlagProgress, FlagWorkflow};
pub use models::ModelSyncWorkflow;
pub use monitor::{
    MonitorCheckInput, MonitorCheckWorkflow, MonitorSweepInput, MonitorSweepReport,
    MonitorSweepWorkflow,
};
pub use reconcile::{ReconcileReport, ReconcileWorkflow};
pub use renewal::{RenewalInput, RenewalProgress, RenewalWorkflow};
pub use site::{SiteVerificationInput, SiteVerificationWorkflow};
pub use status::CertificateStatusWorkflow;
pub use sweep::{RenewalSweepInput, RenewalSweepReport, RenewalSweepWorkflow};

/// Lifecycle bookkeeping on the ops queue: remote activities, so each attempt shows in the Web
/// UI; retried for hours (a database or SMTP outage must not end a renewal), never for ever.
fn bookkeeping(own_queue: &str, attempts: u32) -> ActivityOptions {
    ActivityOptions::with_start_to_close_timeout(Duration::from_secs(60))
        .task_queue(QueueNames::of_workflow_queue(own_queue).ops())
        .retry_policy(retry(attempts))
        .build()
}

/// The first steps of the per-certificate workflows a sweep starts by the thousand (a renewal's
/// record and reminder, a monitor check) run as local activities in the workflow's own worker
/// (the ops worker, where they are registered): the same retries, without a round trip through
/// the server per step, which is what bounds a sweep on one Temporal shard. Their attempts show
/// as markers in the history rather than activity events.
fn local_bookkeeping(attempts: u32, timeout: Duration) -> LocalActivityOptions {
    LocalActivityOptions::builder()
        .start_to_close_timeout(timeout)
        .retry_policy(retry(attempts))
        .build()
}

/// Retried for hours at most (a database or SMTP outage must not end a renewal), never for ever.
fn retry(attempts: u32) -> RetryPolicy {
    RetryPolicy::builder()
        .initial_interval(Duration::from_secs(1))
        .backoff_coefficient(2.0)
        .maximum_interval(Duration::from_secs(300))
        .maximum_attempts(attempts)
        .build()
}

/// The workflow's own clock (deterministic on replay).
fn now<W>(ctx: &WorkflowContext<W>) -> DateTime<Utc> {
    ctx.workflow_time()
        .map(DateTime::<Utc>::from)
        .unwrap_or_default()
}

/// Sleeps on a durable timer until `at` (at once when it has passed).
async fn sleep_until<W>(ctx: &WorkflowContext<W>, at: DateTime<Utc>) {
    if let Ok(wait) = (at - now(ctx)).to_std()
        && !wait.is_zero()
    {
        ctx.timer(wait).await;
    }
}
