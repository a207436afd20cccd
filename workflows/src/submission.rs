//! The submission workflow: sandbox → audit phase 1 → audit phase 2 → verdict → (operator, when
//! escalated) → certificate → notification. Every step is an activity on its own task queue with a
//! bounded retry policy; the workflow itself only decides.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sigma_activities::audit::AuditActivities;
use sigma_activities::intake::{Intake, IntakeActivities, IntakeOutcome, RecordIntake};
use sigma_activities::ops::OpsActivities;
use sigma_activities::portal::{PortalActivities, RefundInput};
use sigma_activities::queues;
use sigma_activities::sandbox::SandboxActivities;
use sigma_activities::types::{
    CertificateInput, CertificateIssued, DecisionRecord, GitSource, NotifyInput, OperatorDecision,
    RoundStart, SandboxInput, StageUpdate, VerdictInput, VoteRequest, VoteResult,
};
use sigma_shared::config::{PipelineSettings, SandboxLimits};
use sigma_shared::consensus::Decision;
use sigma_shared::domain::{Category, Outcome, RiskLevel, Stage};
use temporalio_common::RetryPolicy;
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{
    ActivityOptions, LocalActivityOptions, SyncWorkflowContext, WorkflowContext,
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

/// `maximum_attempts` 0 retries without end.
fn retry(policy: &PipelineSettings, maximum_attempts: u32) -> RetryPolicy {
    RetryPolicy::builder()
        .initial_interval(Duration::from_millis(policy.activity_initial_retry_ms))
        .backoff_coefficient(2.0)
        .maximum_interval(Duration::from_secs(60))
        .maximum_attempts(maximum_attempts)
        .build()
}

fn on_queue(policy: &PipelineSettings, queue: &str, start_to_close: Duration) -> ActivityOptions {
    ActivityOptions::with_start_to_close_timeout(start_to_close)
        .task_queue(queue.to_owned())
        .retry_policy(retry(policy, policy.activity_max_attempts))
        .build()
}

/// Bookkeeping on the ops queue retries far longer than analysis does: a passing database or
/// SMTP outage must not turn a decided submission into a failed one.
fn ops(policy: &PipelineSettings) -> ActivityOptions {
    ActivityOptions::with_start_to_close_timeout(Duration::from_secs(30))
        .task_queue(queues::OPS.to_owned())
        .retry_policy(retry(policy, policy.ops_max_attempts))
        .build()
}

/// Marks histories whose projection writes are local activities (see `enter`).
const LOCAL_PROJECTION_PATCH: &str = "local-projection-activities";

/// Projection writes run as local activities in the workflow's own worker: same retries, no
/// round trip through the server per stage (about half of a submission's hops).
fn local_ops(policy: &PipelineSettings) -> LocalActivityOptions {
    LocalActivityOptions::builder()
        .start_to_close_timeout(Duration::from_secs(30))
        .retry_policy(retry(policy, policy.ops_max_attempts))
        .build()
}

/// The failure's message and every cause's, since the SDK's `Display` shows only the outer one
/// ("Activity task failed") and the operator needs the root cause ("HTTP 503 …").
fn failure_chain(error: &temporalio_sdk::ActivityExecutionError) -> String {
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
                            PortalActivities::refund_charge,
                            RefundInput {
                                submission_id: input.submission_id.clone(),
                            },
                            ActivityOptions::with_start_to_close_timeout(Duration::from_secs(30))
                                .task_queue(queues::OPS.to_owned())
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
    /// The first step: record the submission (and take a draft's payment) from inside the run.
    /// A refusal fails the run without retries, so a corrected request can start a fresh one
    /// under the same id; nothing was written or charged.
    async fn intake(
        ctx: &WorkflowContext<Self>,
        input: SubmissionInput,
    ) -> WorkflowResult<SubmissionInput> {
        let Some(intake) = input.intake.clone() else {
            ctx.state_mut(|s| s.intake_settled = true);
            return Ok(input);
        };
        let outcome = ctx
            .execute_local_activity(
                IntakeActivities::record_intake,
                RecordIntake {
                    submission_id: input.submission_id.clone(),
                    intake,
                },
                local_ops(&input.policy),
            )
            .await
            .explained();
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(failure) => {
                ctx.state_mut(|s| s.intake_settled = true);
                return Err(failure);
            }
        };
        ctx.state_mut(|s| {
            s.intake = Some(outcome.clone());
            s.intake_settled = true;
        });
        if !matches!(outcome, IntakeOutcome::Recorded(_)) {
            // The request that started this run asks how intake ended in the same call: stay
            // open until it has its answer (a run that closes first fails the update), but not
            // for ever if that caller is gone.
            temporalio_sdk::workflows::select! {
                _ = ctx.wait_condition(|s| s.intake_answered) => {},
                _ = ctx.timer(Duration::from_secs(30)) => {},
            };
        }
        match outcome {
            IntakeOutcome::Recorded(recorded) => Ok(SubmissionInput {
                category: recorded.category,
                bundle_key: recorded.bundle_key,
                git: recorded.git,
                charged: recorded.charged,
                ..input
            }),
            IntakeOutcome::AlreadyHandled(_) => Err(temporalio_sdk::ApplicationFailure::new(
                "an earlier run already handles this submission; this run did nothing",
            )
            .into()),
            IntakeOutcome::Refused(refusal) => {
                Err(temporalio_sdk::ApplicationFailure::new(format!(
                    "intake refused ({}): {}",
                    refusal.reason.code(),
                    refusal.detail
                ))
                .into())
            }
        }
    }

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
                on_queue(policy, queues::SANDBOX, Duration::from_secs(120)),
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
        let validators = ctx
            .execute_activity(OpsActivities::eligible_validators, (), ops(policy))
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
        ctx.execute_activity(
            OpsActivities::start_round,
            RoundStart {
                submission_id: input.submission_id.clone(),
                round_id: round_id.clone(),
                panel: panels.clone(),
                candidates: validators.clone(),
            },
            ops(policy),
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
        let decision = ctx
            .execute_activity(
                OpsActivities::assemble_verdict,
                VerdictInput {
                    submission_id: input.submission_id.clone(),
                    round_id: round_id.clone(),
                    signals: sandbox.signals.clone(),
                    votes,
                },
                ops(policy),
            )
            .await
            .explained()?;
        ctx.state_mut(|s| s.progress.consensus = Some(decision.clone()));

        let (outcome, reasons) = match decision.outcome {
            Outcome::Escalated => Self::await_operator(ctx, input, &decision).await?,
            other => (other, decision.reasons.clone()),
        };

        let certificate = if outcome == Outcome::Approved {
            Self::enter(
                ctx,
                input,
                StageUpdate {
                    stage: Some(Stage::Certificate),
                    ..Default::default()
                },
            )
            .await?;
            let issued = ctx
                .execute_activity(
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
                    ops(policy),
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

    /// One phase: the panel votes in parallel. A vote whose activity spent every retry counts as
    /// a failed vote, never as SAFE.
    async fn phase(
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
                .task_queue(queues::AUDIT.to_owned())
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
    async fn await_operator(
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
        ctx.execute_activity(
            OpsActivities::record_decision,
            DecisionRecord {
                submission_id: input.submission_id.clone(),
                decision: operator.clone(),
            },
            ops(&input.policy),
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
        let notified = ctx
            .execute_activity(
                OpsActivities::notify_developer,
                NotifyInput {
                    submission_id: input.submission_id.clone(),
                    outcome,
                    reasons: reasons.clone(),
                    certificate_id: certificate_id.clone(),
                },
                ops(&input.policy),
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
        if ctx.patched(LOCAL_PROJECTION_PATCH) {
            ctx.execute_local_activity(
                OpsActivities::update_projection,
                update,
                local_ops(&input.policy),
            )
            .await
            .explained()?;
        } else {
            ctx.execute_activity(OpsActivities::update_projection, update, ops(&input.policy))
                .await
                .explained()?;
        }
        Ok(())
    }
}
