//! An operator retry as the intake step of a new run: the run itself claims the failed
//! submission (back to RECEIVED), so no handler resets a stage and then repairs it when the
//! start fails. The claim names the run, so a repeated attempt of the step finds its own claim.

use anyhow::Context;
use serde::{Deserialize, Serialize};
use sigma_shared::domain::Category;

use super::{IntakeOutcome, Recorded, Refusal, RefusalReason};
use crate::Deps;
use crate::types::GitSource;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RetryIntake {
    /// The operator who asked, for the log.
    pub operator: String,
    /// Temporal reports that the latest run closed without completing, though the projection
    /// may not say FAILED (writing FAILED is what failed).
    pub latest_run_failed: bool,
    /// Temporal has no run for this submission (one recorded before intake moved into the run,
    /// whose start never happened).
    pub never_started: bool,
}

pub(super) async fn claim(
    deps: &Deps,
    submission_id: &str,
    run_id: &str,
    retry: &RetryIntake,
) -> anyhow::Result<IntakeOutcome> {
    let mut tx = deps.db.begin().await?;
    let certified = sqlx::query_scalar!(
        r#"select exists(select 1 from certificate where certificate_id = $1) as "e!""#,
        submission_id
    )
    .fetch_one(&mut *tx)
    .await
    .context("Failed to look for the submission's certificate")?;
    if certified {
        return Ok(IntakeOutcome::Refused(Refusal::new(
            RefusalReason::CertificateIssued,
            "this submission's certificate was issued before the failure; it is not re-audited",
        )));
    }
    // Reasons and failure detail stay on record until the new run writes its own.
    let row = sqlx::query!(
        r#"update submission set stage = 'RECEIVED', completed_at = null, intake_run_id = $4
           where submission_id = $1 and (intake_run_id = $4
               or stage = 'FAILED' or ($2 and stage not in ('DONE', 'RECEIVED'))
               or ($3 and stage = 'RECEIVED'))
           returning category, bundle_key, bundle_sha256, skill_name, git_repository, source_ref,
               reaudit_of is not null as "reaudit!",
               coalesce((select i.method = 'credits' and i.status = 'CONSUMED' from payment_intent i
                          where i.intent_id = submission.payment_intent_id),
                        -- A charge without an intent (a renewal's debit) not refunded yet.
                        payment_intent_id is null and charged_credits > 0
                          and not exists (select 1 from credit_ledger l where l.kind = 'REFUND'
                                          and l.reference = submission.submission_id)) as "charged?""#,
        submission_id,
        retry.latest_run_failed,
        retry.never_started,
        run_id,
    )
    .fetch_optional(&mut *tx)
    .await
    .context("Failed to claim the submission for a retry")?;
    let Some(row) = row else {
        let known = sqlx::query_scalar!(
            r#"select exists(select 1 from submission where submission_id = $1) as "e!""#,
            submission_id
        )
        .fetch_one(&mut *tx)
        .await?;
        return Ok(IntakeOutcome::Refused(if known {
            Refusal::new(
                RefusalReason::NotFailed,
                format!(
                    "submission {submission_id} has not failed; only a failed run can be retried"
                ),
            )
        } else {
            Refusal::new(RefusalReason::SubmissionNotFound, "no such submission")
        }));
    };
    tx.commit().await?;
    tracing::info!(operator = %retry.operator, "submission claimed for a retry");
    Ok(IntakeOutcome::Recorded(Recorded {
        category: row
            .category
            .parse::<Category>()
            .map_err(anyhow::Error::msg)?,
        bundle_key: row.bundle_key,
        bundle_sha256: Some(row.bundle_sha256).filter(|s| !s.is_empty()),
        skill_name: row.skill_name,
        git: GitSource::recorded(row.git_repository, row.source_ref),
        // A failed run refunded its charge (the retry is then on the platform); one stopped
        // before it could, or never started, still holds it.
        charged: row.charged.unwrap_or(false),
        request_sha256: None,
        reaudit: row.reaudit,
    }))
}
