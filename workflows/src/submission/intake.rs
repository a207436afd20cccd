//! The first step of a run: intake, workflow first (see `sigma_activities::intake`).

use std::time::Duration;

use sigma_activities::intake::{IntakeActivities, IntakeOutcome, RecordIntake};
use temporalio_sdk::{WorkflowContext, WorkflowResult};

use super::options::*;
use super::{SubmissionInput, SubmissionWorkflow};

impl SubmissionWorkflow {
    /// The first step: record the submission (and take a draft's payment) from inside the run.
    /// A refusal fails the run without retries, so a corrected request can start a fresh one
    /// under the same id; nothing was written or charged.
    pub(super) async fn intake(
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
                issue_certificate: input.issue_certificate && !recorded.reaudit,
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
}
