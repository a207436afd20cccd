//! The council's steps: one phase of votes, and the wait for an operator on an escalation.

use std::time::Duration;

use sigma_activities::audit::AuditActivities;
use sigma_activities::types::{
    DecisionRecord, OperatorDecision, StageUpdate, VoteRequest, VoteResult,
};
use sigma_activities::verdict::VerdictActivities;
use sigma_shared::consensus::Decision;
use sigma_shared::domain::{Outcome, Stage};
use temporalio_sdk::{ActivityOptions, WorkflowContext, WorkflowResult};

use super::options::*;
use super::{SubmissionInput, SubmissionWorkflow};

impl SubmissionWorkflow {
    /// One phase: the panel votes in parallel. A vote whose activity spent every retry counts as
    /// a failed vote, never as SAFE.
    pub(super) async fn phase(
        ctx: &WorkflowContext<Self>,
        input: &SubmissionInput,
        round_id: &str,
        phase: u8,
        panel: &[String],
        prior_findings: &[String],
        replaces: Option<String>,
    ) -> Vec<VoteResult> {
        let policy = &input.policy;
        // Start-to-close covers every in-activity answer attempt; the heartbeat notices a dead worker sooner.
        let per_vote = Duration::from_secs(
            policy.llm_timeout_secs * u64::from(policy.llm_answer_attempts.max(1)) + 30,
        );
        let calls = panel.iter().map(|validator_id| {
            let request = VoteRequest {
                submission_id: input.submission_id.clone(),
                round_id: round_id.to_owned(),
                phase,
                validator_id: validator_id.clone(),
                prior_findings: prior_findings.to_vec(),
                answer_attempts: policy.llm_answer_attempts,
                llm_timeout_secs: policy.llm_timeout_secs,
                replaces: replaces.clone(),
            };
            let options = ActivityOptions::with_start_to_close_timeout(per_vote)
                .task_queue(queues(ctx.task_queue()).audit())
                .heartbeat_timeout(Duration::from_secs(policy.heartbeat_timeout_secs))
                .retry_policy(retry(policy, policy.activity_max_attempts))
                .summary(format!("phase {phase} vote by {validator_id}"))
                .build();
            let validator_id = validator_id.clone();
            let call = ctx.execute_activity(AuditActivities::cast_vote, request, options);
            async move {
                match call.await {
                    Ok(vote) => vote,
                    // Every retry spent: the provider kept failing (or timing out).
                    Err(e) => VoteResult {
                        phase,
                        validator_id,
                        cast: None,
                        failure: Some(format!(
                            "vote activity failed after retries: {}",
                            failure_chain(&e)
                        )),
                        finding_titles: Vec::new(),
                        provider_failed: true,
                        replaced_by: None,
                    },
                }
            }
        });
        temporalio_sdk::workflows::join_all(calls).await
    }

    /// Escalation: wait for an operator's decision, or reject when the deadline passes.
    pub(super) async fn await_operator(
        ctx: &WorkflowContext<Self>,
        input: &SubmissionInput,
        decision: &Decision,
    ) -> WorkflowResult<(Outcome, Vec<String>)> {
        Self::enter(
            ctx,
            input,
            StageUpdate {
                stage: Some(Stage::AwaitingOperator),
                consensus: Some(Outcome::Escalated),
                reasons: Some(decision.reasons.clone()),
                ..Default::default()
            },
        )
        .await?;
        let deadline = Duration::from_secs(input.policy.escalation_timeout_secs);
        let decided = temporalio_sdk::workflows::select! {
            _ = ctx.wait_condition(|s| s.progress.operator_decision.is_some()) => true,
            _ = ctx.timer(deadline) => false,
        };
        if !decided {
            // Recorded at once, so a decision arriving now is refused by the update validator
            // instead of being accepted and then ignored.
            ctx.state_mut(|s| {
                s.progress.operator_decision = Some(OperatorDecision {
                    decision: Outcome::Rejected,
                    reason: format!(
                        "no operator decision within {} hours of escalation",
                        deadline.as_secs() / 3600
                    ),
                    decided_by: "escalation-timeout".into(),
                    operator_id: None,
                })
            });
        }
        let operator = ctx
            .state(|s| s.progress.operator_decision.clone())
            .expect("a decision is set once the wait ends");
        Self::ops_step(
            ctx,
            &input.policy,
            VerdictActivities::record_decision,
            DecisionRecord {
                submission_id: input.submission_id.clone(),
                decision: operator.clone(),
            },
        )
        .await
        .explained()?;
        let mut reasons = decision.reasons.clone();
        reasons.push(format!(
            "operator {} decided {}: {}",
            operator.decided_by, operator.decision, operator.reason
        ));
        Ok((operator.decision, reasons))
    }
}
