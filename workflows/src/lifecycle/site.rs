//! `site:{id}:{request}`: one verification request of a developer's site. Looks for the token
//! (well-known file, then meta tag) up to `attempts` times, `retry_secs` apart on a durable
//! timer — a developer who publishes the file a minute after asking is still verified — and
//! ends VERIFIED or FAILED. Each attempt is its own activity, visible in the Web UI.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sigma_activities::lifecycle::LifecycleActivities;
use sigma_activities::lifecycle::sites::SiteCheck;
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{WorkflowContext, WorkflowResult};

use super::bookkeeping;
use crate::submission::Explained;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SiteVerificationInput {
    pub site_id: String,
    pub attempts: u32,
    pub retry_secs: u64,
}

#[workflow]
#[derive(Default)]
pub struct SiteVerificationWorkflow {}

#[workflow_methods]
impl SiteVerificationWorkflow {
    #[run]
    pub async fn run(
        ctx: &mut WorkflowContext<Self>,
        input: SiteVerificationInput,
    ) -> WorkflowResult<SiteCheck> {
        let queue = ctx.task_queue().to_owned();
        let attempts = input.attempts.max(1);
        let mut attempt = 1;
        loop {
            let check = ctx
                .execute_activity(
                    LifecycleActivities::check_site,
                    input.site_id.clone(),
                    bookkeeping(&queue, 20),
                )
                .await
                .explained();
            // A check that kept failing (the database, say) still ends the request, as FAILED,
            // so it never stays CHECKING; the developer can ask again.
            let last = match &check {
                Ok(check) => check.verified || attempt >= attempts,
                Err(_) => true,
            };
            if !last {
                attempt += 1;
                ctx.timer(Duration::from_secs(input.retry_secs.max(1)))
                    .await;
                continue;
            }
            if !matches!(&check, Ok(c) if c.verified) {
                ctx.execute_activity(
                    LifecycleActivities::fail_site,
                    input.site_id.clone(),
                    bookkeeping(&queue, 20),
                )
                .await
                .explained()?;
            }
            return check;
        }
    }
}
