//! Short workflows behind developer-plane requests. Each runs one activity with Temporal's
//! retries, under an id made of its business key, so a repeated request joins the same run.

use std::time::Duration;

use sigma_activities::ops::OpsActivities;
use sigma_activities::ops::support_email::SupportEmailInput;
use sigma_activities::portal::{
    DraftCheck, DraftCheckInput, ManifestInput, ManifestOutcome, PortalActivities,
};
use sigma_activities::queues::QueueNames;
use temporalio_common::RetryPolicy;
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{ActivityOptions, WorkflowContext, WorkflowResult};

use crate::submission::Explained;

fn options(queue: &str, start_to_close: Duration, attempts: u32) -> ActivityOptions {
    ActivityOptions::with_start_to_close_timeout(start_to_close)
        .task_queue(queue.to_owned())
        .retry_policy(
            RetryPolicy::builder()
                .initial_interval(Duration::from_millis(500))
                .backoff_coefficient(2.0)
                .maximum_interval(Duration::from_secs(30))
                .maximum_attempts(attempts)
                .build(),
        )
        .build()
}

/// `draft-check:{draft_id}:{revision}`: the free dry-run of one draft revision.
#[workflow]
#[derive(Default)]
pub struct DraftCheckWorkflow {}

#[workflow_methods]
impl DraftCheckWorkflow {
    #[run]
    pub async fn run(
        ctx: &mut WorkflowContext<Self>,
        input: DraftCheckInput,
    ) -> WorkflowResult<DraftCheck> {
        ctx.execute_activity(
            PortalActivities::check_draft,
            input,
            options(
                &QueueNames::of_workflow_queue(ctx.task_queue()).sandbox(),
                Duration::from_secs(120),
                5,
            ),
        )
        .await
        .explained()
    }
}

/// `manifest:{generation_id}`: one call of the manifest assistant.
#[workflow]
#[derive(Default)]
pub struct ManifestWorkflow {}

#[workflow_methods]
impl ManifestWorkflow {
    #[run]
    pub async fn run(
        ctx: &mut WorkflowContext<Self>,
        input: ManifestInput,
    ) -> WorkflowResult<ManifestOutcome> {
        ctx.execute_activity(
            PortalActivities::generate_manifest,
            input,
            options(
                &QueueNames::of_workflow_queue(ctx.task_queue()).audit(),
                Duration::from_secs(180),
                3,
            ),
        )
        .await
        .explained()
    }
}

/// `support-email:{message_id}`: an operator's reply, delivered however long SMTP is down.
#[workflow]
#[derive(Default)]
pub struct SupportEmailWorkflow {}

#[workflow_methods]
impl SupportEmailWorkflow {
    #[run]
    pub async fn run(
        ctx: &mut WorkflowContext<Self>,
        input: SupportEmailInput,
    ) -> WorkflowResult<()> {
        ctx.execute_activity(
            OpsActivities::email_support_reply,
            input,
            options(
                &QueueNames::of_workflow_queue(ctx.task_queue()).ops(),
                Duration::from_secs(60),
                50,
            ),
        )
        .await
        .explained()
    }
}
