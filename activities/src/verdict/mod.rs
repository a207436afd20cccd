//! Verdict assembly: the consensus policy applied to a round's votes and the sandbox signals,
//! the round's reproducibility record, and an operator's decision on an escalated submission.
//! The activities run on the ops queue; their names predate this module and stay as they are,
//! since recorded histories name them.

use std::sync::Arc;

use anyhow::Context;
use sigma_shared::consensus::{self, Decision, PhaseVote};
use sigma_shared::domain::Stage;
use temporalio_macros::activities;
use temporalio_sdk::activities::{ActivityContext, ActivityError};

use crate::types::{DecisionRecord, VerdictInput};
use crate::{Deps, retryable};

pub struct VerdictActivities {
    deps: Deps,
}

impl VerdictActivities {
    pub fn new(deps: Deps) -> Self {
        Self { deps }
    }
}

#[activities]
impl VerdictActivities {
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
}

fn uuid_of(raw: &str) -> anyhow::Result<sqlx::types::Uuid> {
    raw.parse()
        .with_context(|| format!("`{raw}` is not a uuid"))
}

impl VerdictActivities {
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
}
