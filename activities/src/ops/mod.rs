//! The ops queue's bookkeeping activities: the Postgres projection the API reads, validator
//! lookup, rounds, certificate issuance and the outcome email. Verdict assembly and operator
//! decisions are in `crate::verdict`.

mod certificate;
pub mod support_email;

use std::sync::Arc;

use anyhow::Context;
use sigma_shared::council::Standing;
use sigma_shared::email::Email;
use temporalio_macros::activities;
use temporalio_sdk::activities::{ActivityContext, ActivityError};

use crate::types::{
    CertificateInput, CertificateIssued, NotifyInput, RoundStart, StageUpdate, ValidatorRef,
};
use crate::{Deps, retryable};

pub struct OpsActivities {
    deps: Deps,
}

impl OpsActivities {
    pub fn new(deps: Deps) -> Self {
        Self { deps }
    }
}

#[activities]
impl OpsActivities {
    /// Emails an operator's support reply to the developer, once. (Its name predates the move
    /// here: recorded histories know it by that name.)
    #[activity(name = "portal.email_support_reply")]
    pub async fn email_support_reply(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: support_email::SupportEmailInput,
    ) -> Result<(), ActivityError> {
        support_email::send(&self.deps, input)
            .await
            .map_err(retryable)
    }

    /// Writes the submission's stage (and outcome, when known) to the projection the API reads.
    #[activity(name = "ops.update_projection")]
    pub async fn update_projection(
        self: Arc<Self>,
        _ctx: ActivityContext,
        update: StageUpdate,
    ) -> Result<(), ActivityError> {
        self.project(update).await.map_err(retryable)
    }

    /// Eligible validators with their effective weights, ordered by id so the workflow's seeded
    /// choice is reproducible.
    #[activity(name = "ops.eligible_validators")]
    pub async fn eligible_validators(
        self: Arc<Self>,
        _ctx: ActivityContext,
        _input: (),
    ) -> Result<Vec<ValidatorRef>, ActivityError> {
        let rows = sqlx::query!(
            r#"select validator_id, model, model_family, weight, stake, reputation, audit_accuracy from validator
               where active and sigma_eligible and status = 'ACTIVE' order by validator_id"#
        )
        .fetch_all(&self.deps.db)
        .await
        .context("Failed to list validators")
        .map_err(retryable)?;
        Ok(rows
            .into_iter()
            .map(|r| ValidatorRef {
                weight: self.deps.settings.council.effective_weight(&Standing {
                    weight: r.weight,
                    stake: r.stake,
                    reputation: r.reputation,
                    audit_accuracy: r.audit_accuracy,
                }),
                validator_id: r.validator_id,
                model: r.model,
                model_family: r.model_family,
            })
            .collect())
    }

    #[activity(name = "ops.start_round")]
    pub async fn start_round(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: RoundStart,
    ) -> Result<(), ActivityError> {
        let result: anyhow::Result<()> = async {
            sqlx::query!(
                r#"insert into audit_round (round_id, submission_id, ordinal, panel, candidates, round_type)
                   values ($1, $2, coalesce((select max(ordinal) from audit_round where submission_id = $2), 0) + 1, $3, $4,
                           (select case when renewal_of is not null then 'RENEWAL'
                                        when reaudit_of is not null then 'REAUDIT'
                                        else 'INITIAL_AUDIT' end
                            from submission where submission_id = $2))
                   on conflict (round_id) do update set panel = excluded.panel, candidates = excluded.candidates"#,
                input.round_id,
                input.submission_id,
                serde_json::to_value(&input.panel)?,
                serde_json::to_value(&input.candidates)?,
            )
            .execute(&self.deps.db)
            .await
            .context("Failed to record the audit round")?;
            Ok(())
        }
        .await;
        result.map_err(retryable)
    }

    /// Seals, hashes and stores the certificate. At most one per submission: a retry returns
    /// the certificate the first attempt issued.
    #[activity(name = "ops.issue_certificate")]
    pub async fn issue_certificate(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: CertificateInput,
    ) -> Result<CertificateIssued, ActivityError> {
        certificate::issue(&self.deps, input)
            .await
            .map_err(retryable)
    }

    /// Emails the developer the outcome, once.
    #[activity(name = "ops.notify_developer")]
    pub async fn notify_developer(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: NotifyInput,
    ) -> Result<(), ActivityError> {
        self.notify(input).await.map_err(retryable)
    }
}

impl OpsActivities {
    #[tracing::instrument(name = "projection", skip_all, fields(submission_id = %u.submission_id, stage = ?u.stage))]
    async fn project(&self, u: StageUpdate) -> anyhow::Result<()> {
        let stage = u.stage.map(|s| s.as_str());
        let reasons = u.reasons.as_ref().map(serde_json::to_value).transpose()?;
        let updated = sqlx::query!(
            r#"update submission set
                   stage = coalesce($2, stage),
                   round_id = coalesce($3, round_id),
                   risk_level = coalesce($4, risk_level),
                   consensus = coalesce($5, consensus),
                   outcome = coalesce($6, outcome),
                   reasons = coalesce($7, reasons),
                   failure_detail = coalesce($8, failure_detail),
                   sandbox_started_at = case when $2 = 'SANDBOX' then coalesce(sandbox_started_at, now()) else sandbox_started_at end,
                   audit_started_at = case when $2 = 'AUDIT_PHASE_1' then coalesce(audit_started_at, now()) else audit_started_at end,
                   decided_at = case when $6::text is not null then coalesce(decided_at, now()) else decided_at end,
                   completed_at = case when $2 in ('DONE', 'FAILED') then coalesce(completed_at, now()) else completed_at end
               where submission_id = $1"#,
            u.submission_id,
            stage,
            u.round_id,
            u.risk_level.map(|r| r.as_str()),
            u.consensus.map(|c| c.as_str()),
            u.outcome.map(|o| o.as_str()),
            reasons,
            u.failure_detail,
        )
        .execute(&self.deps.db)
        .await
        .context("Failed to update the submission projection")?;
        anyhow::ensure!(
            updated.rows_affected() == 1,
            "submission {} has no row to project onto",
            u.submission_id
        );
        if let Some(outcome) = u.outcome {
            record_agreement(&self.deps, &u.submission_id, outcome).await?;
        }
        Ok(())
    }

    #[tracing::instrument(name = "notify", skip_all, fields(submission_id = %input.submission_id))]
    async fn notify(&self, input: NotifyInput) -> anyhow::Result<()> {
        // One email per outcome: a retried run that reaches the same outcome does not send again,
        // one that reaches another outcome does.
        let kind = format!("OUTCOME_{}", input.outcome);
        let row = sqlx::query!(
            r#"select d.email, s.skill_name, s.category, s.renewal_of, s.reaudit_of from submission s join developer d using (developer_id)
               where s.submission_id = $1"#,
            input.submission_id
        )
        .fetch_one(&self.deps.db)
        .await
        .context("Failed to load the submission's developer")?;
        let base = self.deps.settings.api.public_base_url.trim_end_matches('/');
        let name = row.skill_name.unwrap_or_else(|| row.category.clone());
        let what = match (&row.renewal_of, &row.reaudit_of) {
            (Some(_), _) => format!("the renewal of {name}"),
            (_, Some(_)) => format!("the re-audit of {name}"),
            _ => name.clone(),
        };
        let subject = format!(
            "SIGMA: {what} was {}",
            input.outcome.as_str().to_lowercase()
        );
        let status_url = format!(
            "{base}/api/v1/sigma/dev/submissions/{}",
            input.submission_id
        );
        let mut text = format!(
            "Your {} submission {} ({name}) finished with outcome {}.\n\nReasons:\n",
            row.category, input.submission_id, input.outcome
        );
        for reason in &input.reasons {
            text.push_str(&format!("- {reason}\n"));
        }
        if let Some(certificate) = &row.reaudit_of {
            text.push_str(&format!(
                "\nThis was a re-audit of certificate {certificate} after a report; its outcome \
                 keeps (APPROVED) or suspends (REJECTED) that certificate.\n"
            ));
        }
        if let Some(renewed) = &row.renewal_of {
            text.push_str(&format!(
                "\nThis was the renewal audit of certificate {renewed}.{}\n",
                if input.certificate_id.is_some() {
                    " The new certificate below supersedes it."
                } else {
                    " It stays valid until its expiry date and then expires."
                }
            ));
        }
        text.push_str(&format!("\nStatus: {status_url}\n"));
        if let Some(cert) = &input.certificate_id {
            text.push_str(&format!(
                "Certificate: {base}/api/v1/public/certificates/{cert}/verify\n"
            ));
        }
        email_once(
            &self.deps,
            &input.submission_id,
            &kind,
            &row.email,
            subject,
            text,
        )
        .await
    }
}

/// Sends one email per (submission, kind), whatever the retries: the `notification` row records
/// it, a claim keeps two concurrent attempts (one timed out but still running) from both
/// sending, and a stable Message-ID lets mail systems drop the duplicate a crash right after
/// sending can cause. A failure is recorded on the row (`last_error`) and returned for a retry.
pub(crate) async fn email_once(
    deps: &Deps,
    submission_id: &str,
    kind: &str,
    recipient: &str,
    subject: String,
    text: String,
) -> anyhow::Result<()> {
    let db = &deps.db;
    sqlx::query!(
        r#"insert into notification (submission_id, kind, recipient, subject) values ($1, $2, $3, $4)
           on conflict (submission_id, kind) do nothing"#,
        submission_id,
        kind,
        recipient,
        subject,
    )
    .execute(db)
    .await
    .context("Failed to record the email")?;
    let claimed = sqlx::query_scalar!(
        r#"update notification set claimed_at = now(), claim_token = gen_random_uuid(), attempts = attempts + 1
           where submission_id = $1 and kind = $2 and sent_at is null
             and (claimed_at is null or claimed_at < now() - interval '2 minutes')
           returning claim_token as "claim_token!""#,
        submission_id,
        kind,
    )
    .fetch_optional(db)
    .await?;
    let Some(claim) = claimed else {
        let sent = sqlx::query_scalar!(
            "select sent_at is not null from notification where submission_id = $1 and kind = $2",
            submission_id,
            kind
        )
        .fetch_one(db)
        .await?;
        anyhow::ensure!(
            sent == Some(true),
            "another attempt is sending this email; will check again"
        );
        tracing::info!(kind, "email already sent");
        return Ok(());
    };
    let html = format!(
        "<pre>{}</pre>",
        text.replace('&', "&amp;").replace('<', "&lt;")
    );
    let email = Email {
        to: recipient.to_owned(),
        subject,
        text,
        html,
        message_id: Some(format!(
            "<{submission_id}.{}@sigma>",
            kind.to_lowercase().replace(
                |c: char| !c.is_ascii_alphanumeric() && c != '_' && c != '-',
                "."
            )
        )),
    };
    match deps.mailer.send(email).await {
        Ok(()) => {
            sqlx::query!(
                "update notification set sent_at = now(), last_error = null where submission_id = $1 and kind = $2 and claim_token = $3",
                submission_id,
                kind,
                claim,
            )
            .execute(db)
            .await?;
            tracing::info!(to = %recipient, kind, "email sent");
            Ok(())
        }
        Err(e) => {
            sqlx::query!(
                "update notification set last_error = $3, claimed_at = null, claim_token = null where submission_id = $1 and kind = $2 and claim_token = $4",
                submission_id,
                kind,
                format!("{e:#}"),
                claim,
            )
            .execute(db)
            .await?;
            Err(e)
        }
    }
}

/// After an outcome (the consensus's or an operator's), whether each cast vote agreed with
/// it, and each validator's audit accuracy recomputed from all its agreements
/// (`(agreed + 1) / (votes + 2)`, as `sigma_shared::council::audit_accuracy`). Idempotent.
pub(crate) async fn record_agreement(
    deps: &Deps,
    submission_id: &str,
    outcome: sigma_shared::domain::Outcome,
) -> anyhow::Result<()> {
    use sigma_shared::domain::Outcome;
    if !matches!(outcome, Outcome::Approved | Outcome::Rejected) {
        return Ok(());
    }
    let mut tx = deps.db.begin().await?;
    let validators = sqlx::query_scalar!(
        r#"insert into validator_agreement (round_id, phase, validator_id, verdict, outcome, agreed)
           select v.round_id, v.phase, v.validator_id, v.verdict, $2, (v.verdict = 'SAFE') = ($2 = 'APPROVED')
           from audit_vote v join submission s on s.round_id = v.round_id
           where s.submission_id = $1 and v.status = 'CAST' and v.verdict is not null
           on conflict (round_id, phase, validator_id) do update set
               outcome = excluded.outcome, agreed = excluded.agreed, recorded_at = now()
           returning validator_id"#,
        submission_id,
        outcome.as_str(),
    )
    .fetch_all(&mut *tx)
    .await
    .context("Failed to record validator agreement")?;
    sqlx::query!(
        r#"update validator v set audit_accuracy = (a.agreed + 1)::float8 / (a.total + 2)
           from (select validator_id, count(*) filter (where agreed) as agreed, count(*) as total
                 from validator_agreement where validator_id = any($1) group by validator_id) a
           where v.validator_id = a.validator_id"#,
        &validators,
    )
    .execute(&mut *tx)
    .await
    .context("Failed to update audit accuracy")?;
    tx.commit().await?;
    Ok(())
}
