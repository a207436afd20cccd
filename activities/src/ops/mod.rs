//! The ops queue's activities: the Postgres projection the API reads, validator lookup, rounds,
//! verdict assembly, operator decisions, certificate issuance and the outcome email.

mod certificate;
pub mod support_email;

use std::sync::Arc;

use anyhow::Context;
use sigma_shared::consensus::{self, Decision, PhaseVote};
use sigma_shared::council::Standing;
use sigma_shared::domain::Stage;
use sigma_shared::email::Email;
use temporalio_macros::activities;
use temporalio_sdk::activities::{ActivityContext, ActivityError};

use crate::types::{
    CertificateInput, CertificateIssued, DecisionRecord, NotifyInput, RoundStart, StageUpdate,
    ValidatorRef, VerdictInput,
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
                r#"insert into audit_round (round_id, submission_id, ordinal, panel, candidates)
                   values ($1, $2, coalesce((select max(ordinal) from audit_round where submission_id = $2), 0) + 1, $3, $4)
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

    /// Applies the consensus policy to the round's votes and records the result.
    #[activity(name = "ops.assemble_verdict")]
    pub async fn assemble_verdict(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: VerdictInput,
    ) -> Result<Decision, ActivityError> {
        self.assemble(input).await.map_err(retryable)
    }

    #[activity(name = "ops.record_decision")]
    pub async fn record_decision(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: DecisionRecord,
    ) -> Result<(), ActivityError> {
        let d = &input.decision;
        let operator_id = d
            .operator_id
            .as_deref()
            .map(uuid_of)
            .transpose()
            .map_err(retryable)?;
        sqlx::query!(
            r#"insert into operator_decision (submission_id, operator_id, decided_by, decision, reason)
               values ($1, $2, $3, $4, $5)
               on conflict (submission_id) do update set operator_id = excluded.operator_id,
                   decided_by = excluded.decided_by, decision = excluded.decision, reason = excluded.reason,
                   decided_at = now()"#,
            input.submission_id,
            operator_id,
            d.decided_by,
            d.decision.as_str(),
            d.reason,
        )
        .execute(&self.deps.db)
        .await
        .context("Failed to record the operator decision")
        .map_err(retryable)?;
        Ok(())
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

fn uuid_of(raw: &str) -> anyhow::Result<sqlx::types::Uuid> {
    raw.parse()
        .with_context(|| format!("`{raw}` is not a uuid"))
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
            self.record_agreement(&u.submission_id, outcome).await?;
        }
        Ok(())
    }

    /// After an outcome (the consensus's or an operator's), whether each cast vote agreed with
    /// it, and each validator's audit accuracy recomputed from all its agreements
    /// (`(agreed + 1) / (votes + 2)`, as `sigma_shared::council::audit_accuracy`). Idempotent.
    async fn record_agreement(
        &self,
        submission_id: &str,
        outcome: sigma_shared::domain::Outcome,
    ) -> anyhow::Result<()> {
        use sigma_shared::domain::Outcome;
        if !matches!(outcome, Outcome::Approved | Outcome::Rejected) {
            return Ok(());
        }
        let mut tx = self.deps.db.begin().await?;
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

    /// The round's reproducibility record, in the round row and as a content-addressed blob.
    async fn record_round_manifest(
        &self,
        input: &VerdictInput,
        decision: &Decision,
    ) -> anyhow::Result<()> {
        let votes = sqlx::query!(
            r#"select v.phase, v.validator_id, v.model, v.status, v.verdict, v.prompt_sha256, v.replaces,
                      v.transcript_key, val.provider_url as "provider_url?", val.response_format as "response_format?",
                      val.model_family, val.sends_seed as "sends_seed?"
               from audit_vote v left join validator val using (validator_id)
               where v.round_id = $1 order by v.phase, v.validator_id"#,
            input.round_id
        )
        .fetch_all(&self.deps.db)
        .await
        .context("Failed to load the round's votes")?;
        let plugins = sqlx::query!(
            "select plugin_id, plugin_version, plugin_type, validator_id, phase from plugin_usage where round_id = $1 order by phase, validator_id, plugin_id",
            input.round_id
        )
        .fetch_all(&self.deps.db)
        .await
        .context("Failed to load the round's plugin usage")?;
        let panels = sqlx::query!(
            "select panel, candidates from audit_round where round_id = $1",
            input.round_id
        )
        .fetch_one(&self.deps.db)
        .await?;
        let sandbox = sqlx::query!(
            "select rule_pack_version, rule_pack_sha256, scanner_version from sandbox_report where submission_id = $1",
            input.submission_id
        )
        .fetch_optional(&self.deps.db)
        .await?;
        let pipeline = &self.deps.settings.pipeline;
        let manifest = serde_json::json!({
            "roundId": input.round_id,
            "submissionId": input.submission_id,
            "policyVersion": decision.policy_version,
            "outcome": decision.outcome,
            "rulePack": sandbox.as_ref().map(|s| serde_json::json!({"version": s.rule_pack_version, "sha256": s.rule_pack_sha256})),
            "scannerVersion": sandbox.as_ref().and_then(|s| s.scanner_version.clone()),
            "promptVersion": crate::audit::prompt::PROMPT_VERSION,
            "panels": panels.panel,
            "candidates": panels.candidates,
            "parameters": {"temperature": 0, "seed": crate::audit::llm::SEED, "maxTokens": pipeline.llm_max_tokens,
                "answerAttempts": pipeline.llm_answer_attempts, "timeoutSecs": pipeline.llm_timeout_secs},
            "votes": votes.iter().map(|v| serde_json::json!({
                "phase": v.phase, "validatorId": v.validator_id, "model": v.model, "modelFamily": v.model_family,
                "providerUrl": v.provider_url, "responseFormat": v.response_format, "sendsSeed": v.sends_seed, "status": v.status,
                "verdict": v.verdict, "promptSha256": v.prompt_sha256, "replaces": v.replaces,
                "transcriptKey": v.transcript_key,
                "plugins": plugins.iter()
                    .filter(|p| p.validator_id == v.validator_id && p.phase == v.phase)
                    .map(|p| serde_json::json!({"pluginId": p.plugin_id.to_string(), "version": p.plugin_version, "type": p.plugin_type}))
                    .collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        });
        let key = self.deps.blob.put_json("rounds", &manifest).await?;
        sqlx::query!(
            "update audit_round set manifest = $2, manifest_key = $3 where round_id = $1",
            input.round_id,
            manifest,
            key,
        )
        .execute(&self.deps.db)
        .await
        .context("Failed to record the round manifest")?;
        Ok(())
    }

    #[tracing::instrument(name = "verdict", skip_all, fields(submission_id = %input.submission_id, round_id = %input.round_id))]
    async fn assemble(&self, input: VerdictInput) -> anyhow::Result<Decision> {
        let mut tx = self.deps.db.begin().await?;
        // The votes consensus counts are the ones recorded: a vote the workflow saw fail (every
        // Temporal retry spent) is FAILED here even if an earlier attempt left a row behind.
        for vote in input.votes.iter().filter(|v| v.cast.is_none()) {
            sqlx::query!(
                r#"insert into audit_vote (round_id, phase, validator_id, model, status, failure)
                   values ($1, $2, $3, coalesce((select model from validator where validator_id = $3), 'unknown'), 'FAILED', $4)
                   on conflict (round_id, phase, validator_id) do update set
                       status = 'FAILED', verdict = null, severity = null, blocking = null, findings = '[]',
                       rationale = null, failure = excluded.failure,
                       transcript_key = case when audit_vote.status = 'CAST' then null else audit_vote.transcript_key end,
                       -- Postgres re-checks this column against the newest row version, so a late
                       -- attempt waiting on our lock cannot overwrite the vote consensus counted.
                       activity_attempt = 2147483647"#,
                input.round_id,
                vote.phase as i16,
                vote.validator_id,
                vote.failure,
            )
            .execute(&mut *tx)
            .await
            .context("Failed to record a failed vote")?;
        }
        // A failed vote another validator replaced is on record but does not count.
        let votes: Vec<PhaseVote> = input
            .votes
            .iter()
            .filter(|v| v.replaced_by.is_none())
            .map(|v| PhaseVote {
                phase: v.phase,
                validator_id: v.validator_id.clone(),
                cast: v.cast.clone(),
                failure: v.failure.clone(),
            })
            .collect();
        let decision = consensus::decide(&input.signals, &votes, &[1, 2]);
        sqlx::query!(
            "update audit_round set consensus = $2, policy_version = $3, completed_at = coalesce(completed_at, now()) where round_id = $1",
            input.round_id,
            decision.outcome.as_str(),
            decision.policy_version,
        )
        .execute(&mut *tx)
        .await
        .context("Failed to close the audit round")?;
        sqlx::query!(
            "update submission set consensus = $2, reasons = $3, stage = $4 where submission_id = $1",
            input.submission_id,
            decision.outcome.as_str(),
            serde_json::to_value(&decision.reasons)?,
            Stage::Verdict.as_str(),
        )
        .execute(&mut *tx)
        .await
        .context("Failed to record the consensus")?;
        tx.commit().await?;
        self.record_round_manifest(&input, &decision).await?;
        tracing::info!(outcome = %decision.outcome, "consensus reached");
        Ok(decision)
    }

    #[tracing::instrument(name = "notify", skip_all, fields(submission_id = %input.submission_id))]
    async fn notify(&self, input: NotifyInput) -> anyhow::Result<()> {
        // One email per outcome: a retried run that reaches the same outcome does not send again,
        // one that reaches another outcome does.
        let kind = format!("OUTCOME_{}", input.outcome);
        let row = sqlx::query!(
            r#"select d.email, s.skill_name, s.category from submission s join developer d using (developer_id)
               where s.submission_id = $1"#,
            input.submission_id
        )
        .fetch_one(&self.deps.db)
        .await
        .context("Failed to load the submission's developer")?;
        let base = self.deps.settings.api.public_base_url.trim_end_matches('/');
        let name = row.skill_name.unwrap_or_else(|| row.category.clone());
        let subject = format!(
            "SIGMA: {name} was {}",
            input.outcome.as_str().to_lowercase()
        );
        sqlx::query!(
            r#"insert into notification (submission_id, kind, recipient, subject) values ($1, $2, $3, $4)
               on conflict (submission_id, kind) do nothing"#,
            input.submission_id,
            kind,
            row.email,
            subject,
        )
        .execute(&self.deps.db)
        .await?;
        // Claim the email so that two attempts (one timed out but still running) cannot both send.
        let claimed = sqlx::query_scalar!(
            r#"update notification set claimed_at = now(), claim_token = gen_random_uuid(), attempts = attempts + 1
               where submission_id = $1 and kind = $2 and sent_at is null
                 and (claimed_at is null or claimed_at < now() - interval '2 minutes')
               returning claim_token as "claim_token!""#,
            input.submission_id,
            kind,
        )
        .fetch_optional(&self.deps.db)
        .await?;
        let Some(claim) = claimed else {
            let sent = sqlx::query_scalar!(
                "select sent_at is not null from notification where submission_id = $1 and kind = $2",
                input.submission_id,
                kind
            )
            .fetch_one(&self.deps.db)
            .await?;
            anyhow::ensure!(
                sent == Some(true),
                "another attempt is sending this email; will check again"
            );
            tracing::info!("outcome email already sent");
            return Ok(());
        };
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
        text.push_str(&format!("\nStatus: {status_url}\n"));
        if let Some(cert) = &input.certificate_id {
            text.push_str(&format!(
                "Certificate: {base}/api/v1/public/certificates/{cert}/verify\n"
            ));
        }
        let html = format!(
            "<pre>{}</pre>",
            text.replace('&', "&amp;").replace('<', "&lt;")
        );
        let email = Email {
            to: row.email.clone(),
            subject,
            text,
            html,
            // A stable Message-ID lets mail systems drop the duplicate a crash after sending can cause.
            message_id: Some(format!(
                "<{}.{}@sigma>",
                input.submission_id,
                kind.to_lowercase()
            )),
        };
        match self.deps.mailer.send(email).await {
            Ok(()) => {
                sqlx::query!(
                    "update notification set sent_at = now(), last_error = null where submission_id = $1 and kind = $2 and claim_token = $3",
                    input.submission_id,
                    kind,
                    claim,
                )
                .execute(&self.deps.db)
                .await?;
                tracing::info!(to = %row.email, outcome = %input.outcome, "outcome email sent");
                Ok(())
            }
            Err(e) => {
                sqlx::query!(
                    "update notification set last_error = $3, claimed_at = null, claim_token = null where submission_id = $1 and kind = $2 and claim_token = $4",
                    input.submission_id,
                    kind,
                    format!("{e:#}"),
                    claim,
                )
                .execute(&self.deps.db)
                .await?;
                Err(e)
            }
        }
    }
}
