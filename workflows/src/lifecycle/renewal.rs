//! `renewal:{certificate}:{due}`: remind, wait for the due date, charge, audit, then renew or let
//! the certificate expire on its date. See `sigma_activities::lifecycle::renewal` for pricing.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sigma_activities::intake::IntakeActivities;
use sigma_activities::intake::refund::RefundInput;
use sigma_activities::lifecycle::LifecycleActivities;
use sigma_activities::lifecycle::renewal::{RenewalCharge, RenewalEnd, RenewalKey};
use sigma_shared::domain::Outcome;
use temporalio_common::search_attributes::SearchAttributes;
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{
    ChildWorkflowOptions, ParentClosePolicy, WorkflowContext, WorkflowContextView,
    WorkflowIdReusePolicy, WorkflowResult,
};

use super::{bookkeeping, local_bookkeeping, now, sleep_until};
use crate::search;
use crate::submission::{Explained, failure_chain};
use crate::{SubmissionInput, SubmissionWorkflow};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RenewalInput {
    pub key: RenewalKey,
    /// How often an unpaid renewal tries the charge again before the expiry date.
    pub payment_retry_secs: u64,
}

/// Where the renewal stands, answered by the `progress` query and returned at the end.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RenewalProgress {
    /// SCHEDULED, UNPAID, IN_PROGRESS, RENEWED, LAPSED or NOT_NEEDED.
    pub status: String,
    pub submission_id: Option<String>,
    pub new_certificate_id: Option<String>,
    pub reason: Option<String>,
    /// Why the reminder email could not be sent, if it could not (the renewal goes on).
    pub reminder_error: Option<String>,
}

#[workflow]
#[derive(Default)]
pub struct RenewalWorkflow {
    progress: RenewalProgress,
}

/// Attempts of bookkeeping steps (about eight hours at the five-minute ceiling).
const ATTEMPTS: u32 = 100;

#[workflow_methods]
impl RenewalWorkflow {
    #[run]
    pub async fn run(
        ctx: &mut WorkflowContext<Self>,
        input: RenewalInput,
    ) -> WorkflowResult<RenewalProgress> {
        let key = input.key.clone();
        let queue = ctx.task_queue().to_owned();
        Self::set(ctx, |p| p.status = "SCHEDULED".into());
        let opened = ctx
            .execute_local_activity(
                LifecycleActivities::open_renewal,
                key.clone(),
                local_bookkeeping(ATTEMPTS, Duration::from_secs(60)),
            )
            .await
            .explained()?;
        if !opened.needed {
            return Self::end(
                ctx,
                &key,
                "NOT_NEEDED",
                None,
                Some("no longer approved".into()),
            )
            .await;
        }
        // Listed past its expiry (e.g. reinstated after a suspension outlived its term): there is
        // nothing left to renew, only the expiry to record.
        if opened.expires_at <= now(ctx) {
            let reason = "the certificate reached its expiry date before a renewal".to_owned();
            return Self::lapse(ctx, &key, opened.expires_at, reason).await;
        }
        let reminded = ctx
            .execute_local_activity(
                LifecycleActivities::remind_renewal,
                key.clone(),
                local_bookkeeping(10, Duration::from_secs(60)),
            )
            .await;
        if let Err(e) = reminded {
            let error = failure_chain(&e);
            Self::set(ctx, |p| p.reminder_error = Some(error));
        }
        sleep_until(ctx, key.due_at).await;

        let lapse_reason = loop {
            let charge = ctx
                .execute_activity(
                    LifecycleActivities::charge_renewal,
                    key.clone(),
                    bookkeeping(&queue, ATTEMPTS),
                )
                .await
                .explained()?;
            match charge {
                RenewalCharge::Unpaid {
                    price_credits,
                    balance_credits,
                } => {
                    let reason = format!(
                        "unpaid: the balance ({balance_credits} credits) did not cover the renewal \
                         price ({price_credits} credits) before the expiry date"
                    );
                    Self::set(ctx, |p| {
                        p.status = "UNPAID".into();
                        p.reason = Some(reason.clone());
                    });
                    let retry = Duration::from_secs(input.payment_retry_secs.max(1));
                    let next = now(ctx) + chrono::Duration::from_std(retry).unwrap_or_default();
                    if next >= opened.expires_at {
                        break reason;
                    }
                    ctx.timer(retry).await;
                }
                RenewalCharge::NotNeeded { reason } => {
                    return Self::end(ctx, &key, "NOT_NEEDED", None, Some(reason)).await;
                }
                RenewalCharge::Charged(submission) => {
                    let submission_id = submission.submission_id.clone();
                    Self::set(ctx, |p| {
                        p.status = "IN_PROGRESS".into();
                        p.submission_id = Some(submission_id.clone());
                        p.reason = None;
                    });
                    let charged = submission.charged;
                    match Self::audit(ctx, &key, submission).await {
                        Ok(certificate_id) => {
                            return Self::end(ctx, &key, "RENEWED", Some(certificate_id), None)
                                .await;
                        }
                        Err(Unrenewed::Rejected(reason)) => break reason,
                        Err(Unrenewed::Failed(reason)) => {
                            // The platform's failure: the price goes back (once, however many
                            // times this is asked; the child's own compensation may have run).
                            if charged {
                                ctx.execute_activity(
                                    IntakeActivities::refund_charge,
                                    RefundInput {
                                        submission_id: submission_id.clone(),
                                    },
                                    bookkeeping(&queue, ATTEMPTS),
                                )
                                .await
                                .explained()?;
                            }
                            break reason;
                        }
                    }
                }
            }
        };

        Self::lapse(ctx, &key, opened.expires_at, lapse_reason).await
    }

    #[query]
    pub fn progress(&self, _ctx: &WorkflowContextView) -> RenewalProgress {
        self.progress.clone()
    }
}

/// Why a renewal audit gave no certificate.
enum Unrenewed {
    /// The council (or an operator) decided against it: the price is kept.
    Rejected(String),
    /// The platform failed (the child did not start, failed, or was terminated): refunded.
    Failed(String),
}

impl RenewalWorkflow {
    /// The old certificate stays valid until its date, then expires.
    async fn lapse(
        ctx: &WorkflowContext<Self>,
        key: &RenewalKey,
        expires_at: chrono::DateTime<chrono::Utc>,
        reason: String,
    ) -> WorkflowResult<RenewalProgress> {
        let queue = ctx.task_queue().to_owned();
        Self::set(ctx, |p| p.reason = Some(reason.clone()));
        sleep_until(ctx, expires_at).await;
        ctx.execute_activity(
            LifecycleActivities::expire_certificate,
            key.clone(),
            bookkeeping(&queue, ATTEMPTS),
        )
        .await
        .explained()?;
        Self::end(ctx, key, "LAPSED", None, Some(reason)).await
    }

    fn set(ctx: &WorkflowContext<Self>, change: impl FnOnce(&mut RenewalProgress)) {
        ctx.state_mut(|s| change(&mut s.progress));
    }

    /// The RENEWAL audit: the submission pipeline as a child run over the renewal's submission.
    /// `Ok` names the new certificate; `Err` says why there is none.
    async fn audit(
        ctx: &WorkflowContext<Self>,
        key: &RenewalKey,
        submission: sigma_activities::lifecycle::renewal::RenewalSubmission,
    ) -> Result<String, Unrenewed> {
        let workflow_id = format!("submission:{}", submission.submission_id);
        let options = ChildWorkflowOptions::builder()
            .workflow_id(workflow_id.clone())
            // A paid audit finishes whatever happens to the renewal run.
            .parent_close_policy(ParentClosePolicy::Abandon)
            .id_reuse_policy(WorkflowIdReusePolicy::RejectDuplicate)
            .static_summary(format!(
                "renewal audit of certificate {}",
                key.certificate_id
            ))
            .search_attributes(SearchAttributes::new([
                search::SUBMISSION_ID.value_set(submission.submission_id.clone()),
                search::CATEGORY.value_set(submission.category.to_string()),
                search::STAGE.value_set("RECEIVED".to_owned()),
            ]))
            .build();
        let input = SubmissionInput {
            submission_id: submission.submission_id.clone(),
            category: submission.category,
            bundle_key: submission.bundle_key,
            policy: submission.policy,
            limits: submission.limits,
            git: None,
            charged: submission.charged,
            intake: None,
            issue_certificate: true,
        };
        let started = ctx
            .start_child_workflow(SubmissionWorkflow::run, input, options)
            .await
            .map_err(|e| {
                Unrenewed::Failed(format!(
                    "the renewal audit {workflow_id} could not start ({e}); its charge was refunded"
                ))
            })?;
        match started.result().await {
            Ok(result) if result.outcome == Outcome::Approved => {
                result.certificate_id.ok_or_else(|| {
                    Unrenewed::Rejected(
                        "the renewal audit approved but issued no certificate".into(),
                    )
                })
            }
            Ok(result) => Err(Unrenewed::Rejected(format!(
                "the renewal audit {} ended {}: {}",
                submission.submission_id,
                result.outcome,
                result.reasons.join("; ")
            ))),
            Err(e) => Err(Unrenewed::Failed(format!(
                "the renewal audit {} failed on the platform's side ({e}); its charge was \
                 refunded and an operator can retry it",
                submission.submission_id
            ))),
        }
    }

    async fn end(
        ctx: &WorkflowContext<Self>,
        key: &RenewalKey,
        status: &str,
        new_certificate_id: Option<String>,
        reason: Option<String>,
    ) -> WorkflowResult<RenewalProgress> {
        Self::set(ctx, |p| {
            p.status = status.to_owned();
            p.new_certificate_id = new_certificate_id.clone();
            if reason.is_some() {
                p.reason = reason.clone();
            }
        });
        let queue = ctx.task_queue().to_owned();
        ctx.execute_activity(
            LifecycleActivities::finish_renewal,
            RenewalEnd {
                key: key.clone(),
                status: status.to_owned(),
                new_certificate_id,
                reason,
            },
            bookkeeping(&queue, ATTEMPTS),
        )
        .await
        .explained()?;
        Ok(ctx.state(|s| s.progress.clone()))
    }
}
