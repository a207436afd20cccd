//! `dispute:{id}`: a developer's dispute of a rejection or a suspension. It waits for an
//! operator's decision (a workflow update) until a deadline. Past it, a disputed rejection gets its
//! fresh audit round anyway (the developer's right to a review does not lapse with an operator's
//! silence, and a fresh round of rejected bytes can only help them); a disputed suspension is not
//! lifted by silence (the operator may have suspended for reasons outside the bytes): the
//! operators are told it is overdue and it waits on. UPHOLD keeps the outcome; OVERTURN runs the
//! fresh round as a child submission and applies its outcome.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sigma_activities::lifecycle::LifecycleActivities;
use sigma_activities::lifecycle::disputes::{
    DisputeConclusion, DisputeDecided, DisputeDecision, DisputeRef, DisputeVerdict,
};
use temporalio_common::search_attributes::SearchAttributes;
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{
    ChildWorkflowOptions, ParentClosePolicy, WorkflowContext, WorkflowContextView,
    WorkflowIdReusePolicy, WorkflowResult,
};

use super::bookkeeping;
use crate::search;
use crate::submission::Explained;
use crate::{SubmissionInput, SubmissionWorkflow};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DisputeInput {
    pub dispute_id: String,
    pub decision_deadline_secs: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DisputeProgress {
    /// OPEN, UPHELD or OVERTURNED.
    pub status: String,
    pub decision: Option<DisputeDecision>,
    /// Set once the decision is recorded: an update answers then.
    pub decided: bool,
    pub fresh_submission: Option<String>,
    pub final_outcome: Option<String>,
}

#[workflow]
#[derive(Default)]
pub struct DisputeWorkflow {
    progress: DisputeProgress,
    updates: u32,
    answered: u32,
}

const ATTEMPTS: u32 = 100;

#[workflow_methods]
impl DisputeWorkflow {
    #[run]
    pub async fn run(
        ctx: &mut WorkflowContext<Self>,
        input: DisputeInput,
    ) -> WorkflowResult<DisputeProgress> {
        let queue = ctx.task_queue().to_owned();
        let dispute = DisputeRef {
            dispute_id: input.dispute_id.clone(),
        };
        let opened = ctx
            .execute_activity(
                LifecycleActivities::open_dispute,
                dispute.clone(),
                bookkeeping(&queue, ATTEMPTS),
            )
            .await
            .explained()?;
        ctx.state_mut(|s| s.progress.status = opened.status.clone());
        if opened.status != "OPEN" {
            // Decided by an earlier run: a decision sent with this start is answered with the
            // dispute as it stands, not applied.
            ctx.state_mut(|s| s.progress.decided = true);
            ctx.wait_condition(|s| s.answered >= s.updates).await.ok();
            return Ok(ctx.state(|s| s.progress.clone()));
        }
        let decided = temporalio_sdk::workflows::select! {
            _ = ctx.wait_condition(|s| s.progress.decision.is_some()) => true,
            _ = ctx.timer(Duration::from_secs(input.decision_deadline_secs.max(1))) => false,
        };
        if !decided && opened.kind == "SUSPENSION" {
            ctx.execute_activity(
                LifecycleActivities::dispute_overdue,
                dispute.clone(),
                bookkeeping(&queue, ATTEMPTS),
            )
            .await
            .explained()?;
            ctx.wait_condition(|s| s.progress.decision.is_some())
                .await
                .ok();
        } else if !decided {
            ctx.state_mut(|s| {
                s.progress.decision = Some(DisputeDecision {
                    verdict: DisputeVerdict::Overturn,
                    note: "no operator decision within the deadline: a fresh audit round decides"
                        .into(),
                    operator: "decision-deadline".into(),
                })
            });
        }
        let decision = ctx.state(|s| s.progress.decision.clone()).expect("decided");
        ctx.execute_activity(
            LifecycleActivities::decide_dispute,
            DisputeDecided {
                dispute_id: input.dispute_id.clone(),
                decision: decision.clone(),
            },
            bookkeeping(&queue, ATTEMPTS),
        )
        .await
        .explained()?;
        ctx.state_mut(|s| {
            s.progress.decided = true;
            s.progress.status = match decision.verdict {
                DisputeVerdict::Uphold => "UPHELD".into(),
                DisputeVerdict::Overturn => "OVERTURNED".into(),
            };
        });
        if decision.verdict == DisputeVerdict::Overturn {
            let outcome = Self::fresh_round(ctx, &dispute).await?;
            ctx.execute_activity(
                LifecycleActivities::conclude_dispute,
                DisputeConclusion {
                    dispute_id: input.dispute_id.clone(),
                    outcome,
                },
                bookkeeping(&queue, ATTEMPTS),
            )
            .await
            .explained()?;
            ctx.state_mut(|s| {
                s.progress.final_outcome =
                    Some(outcome.map(|o| o.as_str()).unwrap_or("FAILED").to_owned())
            });
        }
        ctx.wait_condition(|s| s.answered >= s.updates).await.ok();
        Ok(ctx.state(|s| s.progress.clone()))
    }

    #[query]
    pub fn progress(&self, _ctx: &WorkflowContextView) -> DisputeProgress {
        self.progress.clone()
    }

    #[update_validator(decide)]
    fn validate_decide(
        &self,
        _ctx: &WorkflowContextView,
        decision: &DisputeDecision,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        // Before its first step the run has no status yet (a decision sent with the start, or
        // right after the dispute was filed): it is accepted, and applied once the run has
        // read the dispute.
        if self.progress.decision.is_some() || !matches!(self.progress.status.as_str(), "" | "OPEN")
        {
            return Err("the dispute is already decided".into());
        }
        if decision.note.trim().is_empty() {
            return Err("a decision needs a note saying why".into());
        }
        Ok(())
    }

    /// An operator's decision; answered once it is recorded.
    #[update]
    pub async fn decide(
        ctx: &mut WorkflowContext<Self>,
        decision: DisputeDecision,
    ) -> DisputeProgress {
        ctx.state_mut(|s| {
            s.updates += 1;
            s.progress.decision = Some(decision);
        });
        ctx.wait_condition(|s| s.progress.decided).await.ok();
        ctx.state_mut(|s| {
            s.answered += 1;
            s.progress.clone()
        })
    }
}

impl DisputeWorkflow {
    async fn fresh_round(
        ctx: &WorkflowContext<Self>,
        dispute: &DisputeRef,
    ) -> WorkflowResult<Option<sigma_shared::domain::Outcome>> {
        let queue = ctx.task_queue().to_owned();
        let round = ctx
            .execute_activity(
                LifecycleActivities::dispute_round,
                dispute.clone(),
                bookkeeping(&queue, ATTEMPTS),
            )
            .await
            .explained()?;
        let submission_id = round.submission_id.clone();
        ctx.state_mut(|s| s.progress.fresh_submission = Some(submission_id.clone()));
        let options = ChildWorkflowOptions::builder()
            .workflow_id(format!("submission:{submission_id}"))
            .parent_close_policy(ParentClosePolicy::Abandon)
            .id_reuse_policy(WorkflowIdReusePolicy::RejectDuplicate)
            .static_summary(format!("fresh round of dispute {}", dispute.dispute_id))
            .search_attributes(SearchAttributes::new([
                search::SUBMISSION_ID.value_set(submission_id.clone()),
                search::CATEGORY.value_set(round.category.to_string()),
                search::STAGE.value_set("RECEIVED".to_owned()),
            ]))
            .build();
        let input = SubmissionInput {
            submission_id,
            category: round.category,
            bundle_key: round.bundle_key,
            policy: round.policy,
            limits: round.limits,
            git: None,
            charged: false,
            intake: None,
            issue_certificate: round.issue_certificate,
        };
        Ok(
            match ctx
                .start_child_workflow(SubmissionWorkflow::run, input, options)
                .await
            {
                Ok(started) => started.result().await.ok().map(|r| r.outcome),
                Err(_) => None,
            },
        )
    }
}
