//! Activity options and failure text shared by the submission workflow's steps.

use std::time::Duration;

use sigma_activities::queues::QueueNames;
use sigma_shared::config::PipelineSettings;
use temporalio_common::RetryPolicy;
use temporalio_sdk::{ActivityOptions, LocalActivityOptions, WorkflowResult};

/// `maximum_attempts` 0 retries without end.
pub(super) fn retry(policy: &PipelineSettings, maximum_attempts: u32) -> RetryPolicy {
    RetryPolicy::builder()
        .initial_interval(Duration::from_millis(policy.activity_initial_retry_ms))
        .backoff_coefficient(2.0)
        .maximum_interval(Duration::from_secs(60))
        .maximum_attempts(maximum_attempts)
        .build()
}

pub(super) fn on_queue(
    policy: &PipelineSettings,
    queue: &str,
    start_to_close: Duration,
) -> ActivityOptions {
    ActivityOptions::with_start_to_close_timeout(start_to_close)
        .task_queue(queue.to_owned())
        .retry_policy(retry(policy, policy.activity_max_attempts))
        .build()
}

/// The queue names seen from a workflow running on `own_queue`.
pub(super) fn queues(own_queue: &str) -> QueueNames {
    QueueNames::of_workflow_queue(own_queue)
}

/// Bookkeeping on the ops queue retries far longer than analysis does: a passing database or
/// SMTP outage must not turn a decided submission into a failed one. `own_queue` is the
/// workflow's task queue (`ctx.task_queue()`).
pub(super) fn ops(own_queue: &str, policy: &PipelineSettings) -> ActivityOptions {
    ActivityOptions::with_start_to_close_timeout(Duration::from_secs(30))
        .task_queue(queues(own_queue).ops())
        .retry_policy(retry(policy, policy.ops_max_attempts))
        .build()
}

/// Marks histories whose projection writes are local activities (see `enter`).
pub(super) const LOCAL_PROJECTION_PATCH: &str = "local-projection-activities";

/// Marks histories whose other ops-queue steps (validator lookup, round start, verdict, operator
/// decision record, certificate, email) are local activities too (see `SubmissionWorkflow::ops_step`).
pub(super) const LOCAL_OPS_PATCH: &str = "local-ops-activities";

/// Bookkeeping runs as local activities in the workflow's own worker (which serves the ops queue
/// anyway): same timeout and retries, no round trip through the server per step.
pub(super) fn local_ops(policy: &PipelineSettings) -> LocalActivityOptions {
    LocalActivityOptions::builder()
        .start_to_close_timeout(Duration::from_secs(30))
        .retry_policy(retry(policy, policy.ops_max_attempts))
        .build()
}

/// The failure's message and every cause's, since the SDK's `Display` shows only the outer one
/// ("Activity task failed") and the operator needs the root cause ("HTTP 503 …").
pub(crate) fn failure_chain(error: &temporalio_sdk::ActivityExecutionError) -> String {
    let mut parts = Vec::new();
    let mut failure = error.failure();
    while let Some(f) = failure {
        if !f.message.is_empty() {
            parts.push(f.message.clone());
        }
        failure = f.cause.as_deref();
    }
    if parts.is_empty() {
        error.to_string()
    } else {
        parts.join(": ")
    }
}

/// Turns an activity's failure into a workflow failure that keeps the root cause in its message.
pub(crate) trait Explained<T> {
    fn explained(self) -> WorkflowResult<T>;
}

impl<T> Explained<T> for Result<T, temporalio_sdk::ActivityExecutionError> {
    fn explained(self) -> WorkflowResult<T> {
        self.map_err(|e| temporalio_sdk::ApplicationFailure::new(failure_chain(&e)).into())
    }
}
