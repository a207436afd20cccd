//! `flag:{id}`: one report's life. It waits for an operator's triage (a workflow update) up to
//! a deadline; past it an untriaged report is marked overdue, and an untriaged monitor flag is
//! sent to re-audit without waiting. TRIAGED waits again; DISMISSED and UPHELD end it (UPHELD
//! suspends the certificate); REAUDIT runs the audit again as a child submission that issues no
//! certificate, whose outcome keeps, suspends or revokes the certificate. The developer is
//! emailed at each outcome.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sigma_activities::lifecycle::flags::{
    FlagAction, FlagApplied, FlagNotice, FlagStep, ReauditOutcome, ReauditSubmission,
};
use sigma_activities::lifecycle::{FlagRef, LifecycleActivities, ReauditStart};
use sigma_shared::domain::FlagStatus;
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
pub struct FlagInput {
    pub flag_id: String,
    pub certificate_id: String,
    pub triage_deadline_secs: u64,
    /// Raised by the monitor: an escalation that goes to re-audit when no operator triages it.
    #[serde(default)]
    pub raised_by_monitor: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FlagProgress {
    pub status: Option<FlagStatus>,
    /// Moves the run has applied; an update answers once its own is among them.
    pub moves_applied: u32,
    pub certificate_status: Option<String>,
    pub reaudit_submission: Option<String>,
    pub overdue: bool,
}

#[workflow]
#[derive(Default)]
pub struct FlagWorkflow {
    progress: FlagProgress,
    pending: Vec<FlagAction>,
    /// Moves queued so far (operators' and the deadline's); a move's ticket is its number.
    received: u32,
    /// Update handlers accepted and answered: the run ends only once every one has answered.
    updates: u32,
    answered: u32,
}

const ATTEMPTS: u32 = 100;

#[workflow_methods]
impl FlagWorkflow {
    #[run]
    pub async fn run(
        ctx: &mut WorkflowContext<Self>,
        input: FlagInput,
    ) -> WorkflowResult<FlagProgress> {
        let queue = ctx.task_queue().to_owned();
        let flag = FlagRef {
            flag_id: input.flag_id.clone(),
            certificate_id: input.certificate_id.clone(),
            workflow_id: format!("flag:{}", input.flag_id),
        };
        let status = ctx
            .execute_activity(
                LifecycleActivities::open_flag,
                flag.clone(),
                bookkeeping(&queue, ATTEMPTS),
            )
            .await
            .explained()?;
        ctx.state_mut(|s| s.progress.status = Some(status));
        if status.is_resolved() {
            return Ok(ctx.state(|s| s.progress.clone()));
        }
        if status == FlagStatus::Reaudit {
            // An earlier run of this flag ended during its re-audit without concluding it: the
            // flag goes back to an operator rather than staying escalated for ever.
            let applied = Self::apply(
                ctx,
                &flag,
                FlagAction {
                    status: FlagStatus::Triaged,
                    note: "the previous re-audit ended without a conclusion; triage again".into(),
                    operator: "flag-workflow".into(),
                },
            )
            .await?;
            ctx.state_mut(|s| s.progress.status = applied.status);
        }
        let mut awaiting_triage = status == FlagStatus::Open;
        let mut reaudits = 0u32;
        loop {
            let moved = if awaiting_triage {
                temporalio_sdk::workflows::select! {
                    _ = ctx.wait_condition(|s| !s.pending.is_empty()) => true,
                    _ = ctx.timer(Duration::from_secs(input.triage_deadline_secs.max(1))) => false,
                }
            } else {
                ctx.wait_condition(|s| !s.pending.is_empty()).await.ok();
                true
            };
            if !moved {
                awaiting_triage = false;
                ctx.execute_activity(
                    LifecycleActivities::flag_overdue,
                    flag.clone(),
                    bookkeeping(&queue, ATTEMPTS),
                )
                .await
                .explained()?;
                ctx.state_mut(|s| {
                    s.progress.overdue = true;
                    if input.raised_by_monitor {
                        s.received += 1;
                        s.pending.push(FlagAction {
                            status: FlagStatus::Reaudit,
                            note: "untriaged by the deadline: sent to re-audit".into(),
                            operator: "triage-deadline".into(),
                        });
                    }
                });
                continue;
            }
            let step = ctx.state_mut(|s| s.pending.remove(0));
            let status = step.status;
            let applied = Self::apply(ctx, &flag, step.clone()).await?;
            awaiting_triage = false;
            match status {
                FlagStatus::Triaged | FlagStatus::Open => Self::done_move(ctx, &applied),
                FlagStatus::Dismissed => {
                    Self::done_move(ctx, &applied);
                    return Self::finish(ctx).await;
                }
                FlagStatus::Upheld => {
                    Self::done_move(ctx, &applied);
                    Self::notify(ctx, &flag, "UPHELD", &step.note).await;
                    return Self::finish(ctx).await;
                }
                FlagStatus::Reaudit => {
                    Self::done_move(ctx, &applied);
                    Self::notify(ctx, &flag, "REAUDIT_STARTED", &step.note).await;
                    reaudits += 1;
                    let concluded = Self::reaudit(ctx, &flag, reaudits).await?;
                    let kind = match concluded.status {
                        Some(FlagStatus::Dismissed) => Some("REAUDIT_APPROVED"),
                        Some(FlagStatus::Upheld) => Some("REAUDIT_REJECTED"),
                        _ => None,
                    };
                    ctx.state_mut(|s| {
                        s.progress.status = concluded.status;
                        if concluded.certificate_status.is_some() {
                            s.progress.certificate_status = concluded.certificate_status.clone();
                        }
                    });
                    if let Some(kind) = kind {
                        let detail = format!(
                            "Re-audit submission: {}",
                            ctx.state(|s| s.progress.reaudit_submission.clone())
                                .unwrap_or_default()
                        );
                        Self::notify(ctx, &flag, kind, &detail).await;
                        return Self::finish(ctx).await;
                    }
                    // The re-audit failed on the platform's side: the flag is TRIAGED again.
                }
            }
        }
    }

    #[query]
    pub fn progress(&self, _ctx: &WorkflowContextView) -> FlagProgress {
        self.progress.clone()
    }

    #[update_validator(triage)]
    fn validate_triage(
        &self,
        _ctx: &WorkflowContextView,
        step: &FlagAction,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let current = self.progress.status.unwrap_or(FlagStatus::Open);
        if step.note.trim().is_empty() {
            return Err("a move needs a note saying why".into());
        }
        // A move taken from the queue is applied before the status shows it: refuse until then.
        if !self.pending.is_empty() || self.received > self.progress.moves_applied {
            return Err("another move of this flag is being applied; try again".into());
        }
        if current.is_resolved() {
            return Err(format!("the flag is already {current}").into());
        }
        if current == FlagStatus::Reaudit {
            return Err("a re-audit is running; its outcome resolves the flag".into());
        }
        match step.status {
            FlagStatus::Open => Err("a flag is never moved back to OPEN".into()),
            FlagStatus::Triaged if current != FlagStatus::Open => {
                Err(format!("the flag is already {current}").into())
            }
            _ => Ok(()),
        }
    }

    /// An operator's move: answered once the run has applied it.
    #[update]
    pub async fn triage(ctx: &mut WorkflowContext<Self>, step: FlagAction) -> FlagProgress {
        let ticket = ctx.state_mut(|s| {
            s.updates += 1;
            s.received += 1;
            s.pending.push(step);
            s.received
        });
        ctx.wait_condition(|s| s.progress.moves_applied >= ticket)
            .await
            .ok();
        ctx.state_mut(|s| {
            s.answered += 1;
            s.progress.clone()
        })
    }
}

impl FlagWorkflow {
    /// Ends the run once every accepted update has its answer (a run that closed first would
    /// fail them).
    async fn finish(ctx: &WorkflowContext<Self>) -> WorkflowResult<FlagProgress> {
        ctx.wait_condition(|s| s.answered >= s.updates).await.ok();
        Ok(ctx.state(|s| s.progress.clone()))
    }

    fn done_move(ctx: &WorkflowContext<Self>, applied: &FlagApplied) {
        ctx.state_mut(|s| {
            s.progress.moves_applied += 1;
            s.progress.status = applied.status;
            if applied.certificate_status.is_some() {
                s.progress.certificate_status = applied.certificate_status.clone();
            }
        });
    }

    async fn apply(
        ctx: &WorkflowContext<Self>,
        flag: &FlagRef,
        step: FlagAction,
    ) -> WorkflowResult<FlagApplied> {
        let queue = ctx.task_queue().to_owned();
        ctx.execute_activity(
            LifecycleActivities::apply_flag_move,
            FlagStep {
                flag_id: flag.flag_id.clone(),
                certificate_id: flag.certificate_id.clone(),
                step,
            },
            bookkeeping(&queue, ATTEMPTS),
        )
        .await
        .explained()
    }

    /// Emails are told, not waited on: an undeliverable one stays visible on its notification
    /// row and in this run's history; the flag's outcome stands.
    async fn notify(ctx: &WorkflowContext<Self>, flag: &FlagRef, kind: &str, detail: &str) {
        let queue = ctx.task_queue().to_owned();
        let _ = ctx
            .execute_activity(
                LifecycleActivities::notify_flag,
                FlagNotice {
                    flag_id: flag.flag_id.clone(),
                    certificate_id: flag.certificate_id.clone(),
                    kind: kind.to_owned(),
                    detail: detail.to_owned(),
                },
                bookkeeping(&queue, 20),
            )
            .await;
    }

    async fn reaudit(
        ctx: &WorkflowContext<Self>,
        flag: &FlagRef,
        attempt: u32,
    ) -> WorkflowResult<FlagApplied> {
        let queue = ctx.task_queue().to_owned();
        let submission: ReauditSubmission = ctx
            .execute_activity(
                LifecycleActivities::start_reaudit,
                ReauditStart {
                    flag: flag.clone(),
                    attempt,
                },
                bookkeeping(&queue, ATTEMPTS),
            )
            .await
            .explained()?;
        let submission_id = submission.submission_id.clone();
        ctx.state_mut(|s| s.progress.reaudit_submission = Some(submission_id.clone()));
        let options = ChildWorkflowOptions::builder()
            .workflow_id(format!("submission:{submission_id}"))
            .parent_close_policy(ParentClosePolicy::Abandon)
            .id_reuse_policy(WorkflowIdReusePolicy::RejectDuplicate)
            .static_summary(format!(
                "re-audit of certificate {} after flag {}",
                flag.certificate_id, flag.flag_id
            ))
            .search_attributes(SearchAttributes::new([
                search::SUBMISSION_ID.value_set(submission_id.clone()),
                search::CATEGORY.value_set(submission.category.to_string()),
                search::STAGE.value_set("RECEIVED".to_owned()),
            ]))
            .build();
        let input = SubmissionInput {
            submission_id: submission_id.clone(),
            category: submission.category,
            bundle_key: submission.bundle_key,
            policy: submission.policy,
            limits: submission.limits,
            git: None,
            charged: false,
            intake: None,
            issue_certificate: false,
        };
        let result = match ctx
            .start_child_workflow(SubmissionWorkflow::run, input, options)
            .await
        {
            Ok(started) => started.result().await.ok(),
            Err(_) => None,
        };
        ctx.execute_activity(
            LifecycleActivities::conclude_reaudit,
            ReauditOutcome {
                flag_id: flag.flag_id.clone(),
                certificate_id: flag.certificate_id.clone(),
                submission_id,
                outcome: result.as_ref().map(|r| r.outcome),
                reasons: result.map(|r| r.reasons).unwrap_or_default(),
            },
            bookkeeping(&queue, ATTEMPTS),
        )
        .await
        .explained()
    }
}
