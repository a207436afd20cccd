//! The submission workflow: sandbox → audit phase 1 → audit phase 2 → verdict → (operator, when
//! escalated) → certificate → notification. Every step is an activity on its own task queue with a
//! bounded retry policy; the workflow itself only decides.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sigma_activities::intake::refund::RefundInput;
use sigma_activities::intake::{Intake, IntakeActivities, IntakeOutcome};
use sigma_activities::ops::OpsActivities;
use sigma_activities::sandbox::SandboxActivities;
use sigma_activities::types::{
    CertificateInput, CertificateIssued, GitSource, NotifyInput, OperatorDecision, RoundStart,
    SandboxInput, StageUpdate, VerdictInput, VoteResult,
};
use sigma_activities::verdict::VerdictActivities;
use sigma_shared::config::{PipelineSettings, SandboxLimits};
use sigma_shared::consensus::Decision;
use sigma_shared::domain::{Category, Outcome, RiskLevel, Stage};
use temporalio_common::ActivityDefinition;
use temporalio_common::data_converters::TemporalDeserializable;
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{
    ActivityExecutionError, ActivityOptions, SyncWorkflowContext, WorkflowContext,
    WorkflowContextView, WorkflowResult,
};

use crate::{panel, search};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SubmissionInput {
    pub submission_id: String,
    pub category: Category,
    pub bundle_key: String,
    /// The pipeline policy in force when the submission arrived; replays use this copy.
    pub policy: PipelineSettings,
    pub limits: SandboxLimits,
    /// A public git repository to fetch instead of an uploaded bundle (`bundle_key` is empty).
    #[serde(default)]
    pub git: Option<GitSource>,
    /// The run consumed a paid intent (credits, a campaign slot): a platform failure gives them back.
    #[serde(default)]
    pub charged: bool,
    /// Set by intake (workflow first): the run's first, local step records the submission, and
    /// for a draft takes its payment; `bundle_key`, `git` and `charged` then come from what it
    /// recorded. Absent in operator retries and in runs started before intake moved here.
    #[serde(default)]
    pub intake: Option<Intake>,
    /// False for a re-audit: its outcome acts on an existing certificate instead of issuing one.
    #[serde(default = "issues_certificate")]
    pub issue_certificate: bool,
}

fn issues_certificate() -> bool {
    true
}

/// Live detail, answered by the `progress` query.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubmissionProgress {
    pub stage: Stage,
    pub risk_level: Option<RiskLevel>,
    pub round_id: Option<String>,
    pub panel: BTreeMap<u8, Vec<String>>,
    pub votes: Vec<VoteResult>,
    pub consensus: Option<Decision>,
    pub operator_decision: Option<OperatorDecision>,
    pub outcome: Option<Outcome>,
    pub certificate: Option<CertificateIssued>,
    /// Why the outcome email could not be delivered, if it could not.
    #[serde(default)]
    pub email_error: Option<String>,
}

impl Default for SubmissionProgress {
    fn default() -> Self {
        Self {
            stage: Stage::Received,
            risk_level: None,
            round_id: None,
            panel: BTreeMap::new(),
            votes: Vec::new(),
            consensus: None,
            operator_decision: None,
            outcome: None,
            certificate: None,
            email_error: None,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SubmissionResult {
    pub outcome: Outcome,
    pub reasons: Vec<String>,
    pub certificate_id: Option<String>,
}

#[workflow]
#[derive(Default)]
pub struct SubmissionWorkflow {
    progress: SubmissionProgress,
    /// How this run's intake step ended; `intake_settled` is set once it has (or at once, for a
    /// run without one), so the `intake` update can answer.
    intake: Option<IntakeOutcome>,
    intake_settled: bool,
    /// An `intake_outcome` update has been answered: a refused run may close.
    intake_answered: bool,
}

mod audit;
mod intake;
mod options;

use options::*;
pub(crate) use options::{Explained, failure_chain};

#[workflow_methods]
impl SubmissionWorkflow {
    #[run]
    pub async fn run(
        ctx: &mut WorkflowContext<Self>,
        input: SubmissionInput,
    ) -> WorkflowResult<SubmissionResult> {
        let input = Self::intake(ctx, input).await?;
        match Self::pipeline(ctx, &input).await {
            Ok(result) => Ok(result),
            Err(failure) => {
                // A platform failure (every retry of some step spent): make it visible in the
                // projection, then fail the run so an operator can retry it.
                let stage = ctx.state(|s| s.progress.stage);
                let reasons = vec![format!(
                    "platform failure during {stage}; an operator can retry the submission"
                )];
                Self::enter(
                    ctx,
                    &input,
                    StageUpdate {
                        stage: Some(Stage::Failed),
                        reasons: Some(reasons),
                        failure_detail: Some(format!("{failure}")),
                        ..Default::default()
                    },
                )
                .await
                .ok();
                // Compensation: the developer does not pay for the platform's failure. Retried
                // until it lands (the run stays open and visible meanwhile): money is never dropped.
                if input.charged {
                    let refunded = ctx
                        .execute_activity(
                            IntakeActivities::refund_charge,
                            RefundInput {
                                submission_id: input.submission_id.clone(),
                            },
                            ActivityOptions::with_start_to_close_timeout(Duration::from_secs(30))
                                .task_queue(queues(ctx.task_queue()).ops())
                                .retry_policy(retry(&input.policy, 0))
                                .build(),
                        )
                        .await;
                    if let Err(e) = refunded {
                        // A cancelled run (or one whose refund was scheduled under an older,
                        // bounded retry policy) gets here: say so where operators look; an
                        // operator retry carries the unrefunded charge.
                        return Err(temporalio_sdk::ApplicationFailure::new(format!(
                            "{failure}; and the refund did not complete: {}",
                            failure_chain(&e)
                        ))
                        .into());
                    }
                }
                Err(failure)
            }
        }
    }

    #[query]
    pub fn progress(&self, _ctx: &WorkflowContextView) -> SubmissionProgress {
        self.progress.clone()
    }

    /// Waits for the intake step and answers how it ended (`None` for a run without one): the
    /// API's answer to the request that started or joined this run.
    #[update]
    pub async fn intake_outcome(ctx: &mut WorkflowContext<Self>) -> Option<IntakeOutcome> {
        ctx.wait_condition(|s| s.intake_settled).await.ok()?;
        ctx.state_mut(|s| {
            s.intake_answered = true;
            s.intake.clone()
        })
    }

    #[update_validator(decide)]
    fn validate_decide(
        &self,
        _ctx: &WorkflowContextView,
        decision: &OperatorDecision,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        if self.progress.stage != Stage::AwaitingOperator
            || self.progress.operator_decision.is_some()
        {
            return Err(format!(
                "submission is not awaiting an operator decision (stage {})",
                self.progress.stage
            )
            .into());
        }
        if decision.decision == Outcome::Escalated {
            return Err("a decision is APPROVED or REJECTED".into());
        }
        if decision.reason.trim().is_empty() {
            return Err("a decision needs a reason".into());
        }
        Ok(())
    }

    /// An operator's decision on an escalated submission.
    #[update]
    pub fn decide(
        &mut self,
        _ctx: &mut SyncWorkflowContext<Self>,
        decision: OperatorDecision,
    ) -> SubmissionProgress {
        self.progress.operator_decision = Some(decision);
        self.progress.clone()
    }
}

impl SubmissionWorkflow {
    async fn pipeline(
        ctx: &WorkflowContext<Self>,
        input: &SubmissionInput,
    ) -> WorkflowResult<SubmissionResult> {
        let policy = &input.policy;

        // Sandbox.
        Self::enter(
            ctx,
            input,
            StageUpdate {
                stage: Some(Stage::Sandbox),
                ..Default::default()
            },
        )
        .await?;
        let sandbox = ctx
            .execute_activity(
                SandboxActivities::analyze_bundle,
                SandboxInput {
                    submission_id: input.submission_id.clone(),
                    bundle_key: input.bundle_key.clone(),
                    category: input.category,
                    limits: input.limits,
                    git: input.git.clone(),
                },
                on_queue(
                    policy,
                    &queues(ctx.task_queue()).sandbox(),
                    Duration::from_secs(120),
                ),
            )
            .await
            .explained()?;
        ctx.state_mut(|s| s.progress.risk_level = Some(sandbox.risk_level));
        if sandbox.signals.blocked {
            let reasons = sandbox.signals.block_reasons.clone();
            Self::enter(
                ctx,
                input,
                StageUpdate {
                    stage: Some(Stage::Verdict),
                    risk_level: Some(sandbox.risk_level),
                    consensus: Some(Outcome::Rejected),
                    reasons: Some(reasons.clone()),
                    ..Default::default()
                },
            )
            .await?;
            return Self::finish(ctx, input, Outcome::Rejected, reasons, None).await;
        }

        // Audit: two phases, fresh panel in phase 2.
        let validators = Self::ops_step(ctx, policy, OpsActivities::eligible_validators, ())
            .await
            .explained()?;
        let round_id = format!("rnd_{}", ctx.uuid4().replace("-", ""));
        let size = policy.panel_size as usize;
        let first = panel::select(&validators, size, &[], || ctx.random::<f64>());
        let first_ids: Vec<String> = first.iter().map(|v| v.validator_id.clone()).collect();
        let second = panel::select(&validators, size, &first_ids, || ctx.random::<f64>());
        let panels = BTreeMap::from([
            (1u8, first_ids),
            (2u8, second.iter().map(|v| v.validator_id.clone()).collect()),
        ]);
        ctx.state_mut(|s| {
            s.progress.round_id = Some(round_id.clone());
            s.progress.panel = panels.clone();
        });
        Self::ops_step(
            ctx,
            policy,
            OpsActivities::start_round,
            RoundStart {
                submission_id: input.submission_id.clone(),
                round_id: round_id.clone(),
                panel: panels.clone(),
                candidates: validators.clone(),
            },
        )
        .await
        .explained()?;

        let mut prior_findings = Vec::new();
        // Replacements come from validators on neither panel.
        let mut used: Vec<String> = panels.values().flatten().cloned().collect();
        for (phase, stage) in [(1u8, Stage::AuditPhase1), (2u8, Stage::AuditPhase2)] {
            Self::enter(
                ctx,
                input,
                StageUpdate {
                    stage: Some(stage),
                    round_id: Some(round_id.clone()),
                    risk_level: Some(sandbox.risk_level),
                    ..Default::default()
                },
            )
            .await?;
            let mut votes = Self::phase(
                ctx,
                input,
                &round_id,
                phase,
                &panels[&phase],
                &prior_findings,
                None,
            )
            .await;
            // A validator whose provider failed is replaced by another eligible one, within a
            // bound; the failed vote stays on record, marked as replaced.
            let mut left = policy.max_replacements as usize;
            loop {
                let down: Vec<usize> = (0..votes.len())
                    .filter(|&i| votes[i].provider_failed && votes[i].replaced_by.is_none())
                    .collect();
                if down.is_empty() || left == 0 {
                    break;
                }
                let substitutes = panel::select(&validators, down.len().min(left), &used, || {
                    ctx.random::<f64>()
                });
                if substitutes.is_empty() {
                    break;
                }
                left -= substitutes.len();
                let mut wave = Vec::new();
                for (&i, substitute) in down.iter().zip(&substitutes) {
                    votes[i].replaced_by = Some(substitute.validator_id.clone());
                    used.push(substitute.validator_id.clone());
                    let replaced = votes[i].validator_id.clone();
                    wave.push(Self::phase(
                        ctx,
                        input,
                        &round_id,
                        phase,
                        std::slice::from_ref(&substitute.validator_id),
                        &prior_findings,
                        Some(replaced),
                    ));
                }
                let replaced_votes = temporalio_sdk::workflows::join_all(wave).await;
                ctx.state_mut(|s| {
                    for v in &substitutes {
                        s.progress
                            .panel
                            .entry(phase)
                            .or_default()
                            .push(v.validator_id.clone());
                    }
                });
                votes.extend(replaced_votes.into_iter().flatten());
            }
            prior_findings = votes
                .iter()
                .flat_map(|v| v.finding_titles.iter().cloned())
                .collect();
            ctx.state_mut(|s| s.progress.votes.extend(votes));
        }

        // Verdict.
        Self::enter(
            ctx,
            input,
            StageUpdate {
                stage: Some(Stage::Verdict),
                ..Default::default()
            },
        )
        .await?;
        let votes = ctx.state(|s| s.progress.votes.clone());
        let decision = Self::ops_step(
            ctx,
            policy,
            VerdictActivities::assemble_verdict,
            VerdictInput {
                submission_id: input.submission_id.clone(),
                round_id: round_id.clone(),
                signals: sandbox.signals.clone(),
                votes,
            },
        )
        .await
        .explained()?;
        ctx.state_mut(|s| s.progress.consensus = Some(decision.clone()));

        let (outcome, reasons) = match decision.outcome {
            Outcome::Escalated => Self::await_operator(ctx, input, &decision).await?,
            other => (other, decision.reasons.clone()),
        };

        let certificate = if outcome == Outcome::Approved && input.issue_certificate {
            Self::enter(
                ctx,
                input,
                StageUpdate {
                    stage: Some(Stage::Certificate),
                    ..Default::default()
                },
            )
            .await?;
            let issued = Self::ops_step(
                ctx,
                policy,
                OpsActivities::issue_certificate,
                CertificateInput {
                    submission_id: input.submission_id.clone(),
                    round_id: round_id.clone(),
                    decision: Decision {
                        outcome,
                        reasons: reasons.clone(),
                        policy_version: decision.policy_version.clone(),
                    },
                },
            )
            .await
            .explained()?;
            ctx.state_mut(|s| s.progress.certificate = Some(issued.clone()));
            Some(issued.certificate_id)
        } else {
            None
        };
        Self::finish(ctx, input, outcome, reasons, certificate).await
    }

    async fn finish(
        ctx: &WorkflowContext<Self>,
        input: &SubmissionInput,
        outcome: Outcome,
        reasons: Vec<String>,
        certificate_id: Option<String>,
    ) -> WorkflowResult<SubmissionResult> {
        ctx.state_mut(|s| s.progress.outcome = Some(outcome));
        ctx.upsert_search_attributes([search::OUTCOME.value_set(outcome.as_str().to_owned())]);
        Self::enter(
            ctx,
            input,
            StageUpdate {
                stage: Some(Stage::Notification),
                outcome: Some(outcome),
                reasons: Some(reasons.clone()),
                ..Default::default()
            },
        )
        .await?;
        let notified = Self::ops_step(
            ctx,
            &input.policy,
            OpsActivities::notify_developer,
            NotifyInput {
                submission_id: input.submission_id.clone(),
                outcome,
                reasons: reasons.clone(),
                certificate_id: certificate_id.clone(),
            },
        )
        .await;
        if let Err(e) = notified {
            // The outcome stands; the undelivered email stays visible in the notification table
            // (last_error) and in this run's history.
            let error = failure_chain(&e);
            ctx.state_mut(|s| s.progress.email_error = Some(error));
        }
        Self::enter(
            ctx,
            input,
            StageUpdate {
                stage: Some(Stage::Done),
                ..Default::default()
            },
        )
        .await?;
        Ok(SubmissionResult {
            outcome,
            reasons,
            certificate_id,
        })
    }

    /// One bookkeeping step of the ops queue. In runs that carry `LOCAL_OPS_PATCH` it is a local
    /// activity in this worker, with the same timeout and retries: no task for the server to
    /// dispatch and no workflow task after it (each such hop cost two dispatches). Older histories
    /// replay the remote activity they recorded.
    async fn ops_step<AD>(
        ctx: &WorkflowContext<Self>,
        policy: &PipelineSettings,
        activity: AD,
        input: AD::Input,
    ) -> Result<AD::Output, ActivityExecutionError>
    where
        AD: ActivityDefinition,
        AD::Output: TemporalDeserializable,
    {
        Self::ops_step_since(ctx, LOCAL_OPS_PATCH, policy, activity, input).await
    }

    /// An ops step that is a local activity in runs carrying `patch`, and the remote activity it
    /// was before in runs recorded without it.
    async fn ops_step_since<AD>(
        ctx: &WorkflowContext<Self>,
        patch: &str,
        policy: &PipelineSettings,
        activity: AD,
        input: AD::Input,
    ) -> Result<AD::Output, ActivityExecutionError>
    where
        AD: ActivityDefinition,
        AD::Output: TemporalDeserializable,
    {
        if ctx.patched(patch) {
            ctx.execute_local_activity(activity, input, local_ops(policy))
                .await
        } else {
            ctx.execute_activity(activity, input, ops(ctx.task_queue(), policy))
                .await
        }
    }

    /// Moves to a stage: workflow state, search attribute, UI details, then the projection.
    async fn enter(
        ctx: &WorkflowContext<Self>,
        input: &SubmissionInput,
        mut update: StageUpdate,
    ) -> WorkflowResult<()> {
        update.submission_id = input.submission_id.clone();
        if let Some(stage) = update.stage {
            ctx.state_mut(|s| s.progress.stage = stage);
            ctx.upsert_search_attributes([search::STAGE.value_set(stage.as_str().to_owned())]);
        }
        let details = ctx.state(|s| {
            let p = &s.progress;
            let mut md = format!(
                "**Stage:** {}\n\n**Category:** {}\n",
                p.stage, input.category
            );
            if let Some(risk) = p.risk_level {
                md.push_str(&format!("\n**Sandbox risk:** {risk}\n"));
            }
            for vote in &p.votes {
                let verdict = vote
                    .cast
                    .as_ref()
                    .map(|c| c.verdict.as_str())
                    .unwrap_or("FAILED");
                md.push_str(&format!(
                    "\n- phase {} · {} · {verdict}",
                    vote.phase, vote.validator_id
                ));
            }
            if let Some(error) = &p.email_error {
                md.push_str(&format!("\n\n**Outcome email not delivered:** {error}"));
            }
            if let Some(reasons) = &update.reasons {
                md.push_str("\n\n**Reasons:**\n");
                for r in reasons {
                    md.push_str(&format!("\n- {r}"));
                }
            }
            md
        });
        ctx.set_current_details(details);
        // Runs started before projections became local activities keep their recorded shape.
        Self::ops_step_since(
            ctx,
            LOCAL_PROJECTION_PATCH,
            &input.policy,
            OpsActivities::update_projection,
            update,
        )
        .await
        .explained()?;
        Ok(())
    }
}
