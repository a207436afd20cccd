//! The audit stage: one activity call is one validator's vote in one phase. The workflow runs a
//! panel's votes in parallel; each vote retries malformed answers itself and leaves transport
//! failures to Temporal's retry policy.

pub mod llm;
pub mod plugins;
pub mod prompt;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde_json::json;
use sigma_shared::consensus::CastVote;
use temporalio_macros::activities;
use temporalio_sdk::activities::{ActivityContext, ActivityError};

use crate::sandbox::SandboxReport;
use crate::types::{VoteRequest, VoteResult};
use crate::{Deps, retryable};
use llm::{ChatRequest, LlmError, ResponseFormatStyle};
use prompt::{LlmVerdict, PromptInput};

pub struct AuditActivities {
    deps: Deps,
}

impl AuditActivities {
    pub fn new(deps: Deps) -> Self {
        Self { deps }
    }
}

#[activities]
impl AuditActivities {
    /// Asks one validator for a verdict and records the vote with its full transcript.
    #[activity(name = "audit.cast_vote")]
    pub async fn cast_vote(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: VoteRequest,
    ) -> Result<VoteResult, ActivityError> {
        // Heartbeat while the model thinks, so a crashed worker is noticed within the heartbeat
        // timeout rather than after the whole start-to-close budget.
        let heartbeat = async {
            loop {
                let _ = ctx.record_heartbeat(()).await;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        };
        tokio::select! {
            result = self.vote(&input, ctx.info().attempt) => result.map_err(retryable),
            // A stopping worker cancels us: give the vote back to Temporal for another worker.
            () = ctx.cancelled() => Err(ActivityError::cancelled()),
            _ = heartbeat => unreachable!("the heartbeat loop never ends"),
        }
    }
}

/// Failures of the provider or the validator's set-up rather than of the model's answer.
fn is_provider_failure(reason: &str) -> bool {
    reason.starts_with(PROVIDER_REFUSED)
        || reason.starts_with(MISCONFIGURED)
        || reason.starts_with(UNKNOWN_VALIDATOR)
}

/// In-activity retries of one answer on 429/5xx/transport errors, and the longest wait honoured.
const TRANSIENT_TRIES_PER_ANSWER: u32 = 2;
const MAX_RETRY_AFTER: Duration = Duration::from_secs(10);

const PROVIDER_REFUSED: &str = "provider refused the request";
const MISCONFIGURED: &str = "validator is misconfigured";
const UNKNOWN_VALIDATOR: &str = "validator no longer exists";

struct ValidatorRow {
    display_name: String,
    model: String,
    provider_url: String,
    api_key_env: Option<String>,
    response_format: String,
    price_in_per_mtok: f64,
    price_out_per_mtok: f64,
    sends_seed: bool,
}

impl AuditActivities {
    #[tracing::instrument(name = "vote", skip_all, fields(submission_id = %input.submission_id,
        round_id = %input.round_id, phase = input.phase, validator_id = %input.validator_id))]
    async fn vote(&self, input: &VoteRequest, activity_attempt: u32) -> anyhow::Result<VoteResult> {
        let db = &self.deps.db;
        let validator = sqlx::query_as!(
            ValidatorRow,
            "select display_name, model, provider_url, api_key_env, response_format, price_in_per_mtok, price_out_per_mtok, sends_seed from validator where validator_id = $1",
            input.validator_id
        )
        .fetch_optional(db)
        .await
        .context("Failed to load the validator")?;
        let Some(validator) = validator else {
            return self
                .record(
                    input,
                    activity_attempt,
                    "unknown",
                    Err(format!("{UNKNOWN_VALIDATOR}: {}", input.validator_id)),
                    None,
                    0,
                )
                .await;
        };
        let submission = sqlx::query!(
            "select s.note, s.category, r.report_key from submission s join sandbox_report r using (submission_id) where s.submission_id = $1",
            input.submission_id
        )
        .fetch_one(db)
        .await
        .context("Failed to load the submission and its sandbox report")?;
        let report: SandboxReport = self.deps.blob.get_json(&submission.report_key).await?;
        let settings = &self.deps.settings.pipeline;
        let category: sigma_shared::domain::Category =
            submission.category.parse().map_err(anyhow::Error::msg)?;
        let injection = self
            .deps
            .plugins
            .for_validator(&input.validator_id)
            .await?
            .injection(category);
        let messages = prompt::build(&PromptInput {
            plugins_xml: injection.xml.as_deref(),
            validator_name: &validator.display_name,
            phase: input.phase,
            report: &report,
            developer_note: submission.note.as_deref(),
            prior_findings: &input.prior_findings,
            max_evidence_chars: settings.llm_max_evidence_chars,
        });
        let api_key = match &validator.api_key_env {
            Some(var) => match std::env::var(var) {
                Ok(key) => Some(key),
                Err(_) => {
                    tracing::error!(variable = %var, "provider key variable is not set on the audit worker");
                    let failure = format!("{MISCONFIGURED}: its provider key is not available");
                    return self
                        .record(
                            input,
                            activity_attempt,
                            &validator.model,
                            Err(failure),
                            None,
                            0,
                        )
                        .await;
                }
            },
            None => None,
        };
        let style: ResponseFormatStyle = validator
            .response_format
            .parse()
            .map_err(anyhow::Error::msg)?;
        let schema = prompt::verdict_schema();
        let request = ChatRequest {
            base_url: &validator.provider_url,
            api_key: api_key.as_deref(),
            model: &validator.model,
            messages: &messages,
            schema_name: "sigma_verdict",
            schema: &schema,
            style,
            max_tokens: settings.llm_max_tokens,
            timeout: Duration::from_secs(input.llm_timeout_secs),
            send_seed: validator.sends_seed,
        };
        // What the model was asked, content-addressed: the same evidence, plugins and parameters
        // give the same hash, so a round can be compared with a re-run call for call.
        let prompt_doc = llm::request_body(&request);
        let prompt_sha256 = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
            sigma_shared::canonical::canonical_json(&prompt_doc)?,
        ));
        let prompt_key = self
            .deps
            .blob
            .put_json("prompts/audit", &prompt_doc)
            .await?;
        let mut last_raw: Option<serde_json::Value> = None;
        let mut attempts = Vec::new();
        let mut outcome: Result<LlmVerdict, String> = Err("no answer requested".into());
        let mut conversation = messages.clone();
        for answer_attempt in 1..=input.answer_attempts.max(1) {
            let request = ChatRequest {
                messages: &conversation,
                ..request
            };
            // Rate limits and server errors are retried here a few times with backoff (the
            // provider's Retry-After when it sends one, capped); past that, Temporal retries the
            // whole vote with its own backoff.
            let mut transient_tries = 0u32;
            let answer = loop {
                let started = std::time::Instant::now();
                let answer = llm::chat(&self.deps.http, &request).await;
                self.record_usage(input, &validator, started.elapsed(), &answer)
                    .await?;
                match &answer {
                    Err(e) if e.is_transient() && transient_tries < TRANSIENT_TRIES_PER_ANSWER => {
                        let backoff = Duration::from_millis(250 << transient_tries);
                        let wait = e.retry_after().unwrap_or(backoff).min(MAX_RETRY_AFTER);
                        tracing::warn!(error = %e, wait_ms = wait.as_millis() as u64, "provider busy or failing; retrying");
                        tokio::time::sleep(wait).await;
                        transient_tries += 1;
                    }
                    _ => break answer,
                }
            };
            match answer {
                Ok(answer) => {
                    last_raw = Some(answer.raw.clone());
                    let parsed =
                        prompt::parse_verdict(&answer.content, answer.finish_reason.as_deref());
                    attempts.push(json!({
                        "attempt": answer_attempt,
                        "content": answer.content,
                        "finishReason": answer.finish_reason,
                        "promptTokens": answer.prompt_tokens,
                        "completionTokens": answer.completion_tokens,
                        "error": parsed.as_ref().err(),
                    }));
                    match parsed {
                        Ok(verdict) => {
                            outcome = Ok(verdict);
                            break;
                        }
                        Err(reason) => {
                            tracing::warn!(answer_attempt, %reason, "malformed verdict, asking again");
                            // At temperature 0 the same prompt gives the same answer: say what was wrong.
                            conversation.push(llm::Message {
                                role: "assistant".into(),
                                content: answer.content.chars().take(2000).collect(),
                            });
                            conversation.push(llm::Message {
                                role: "user".into(),
                                content: format!("That answer was rejected ({reason}). Reply again with one JSON object that matches the schema exactly."),
                            });
                            outcome = Err(format!(
                                "no schema-valid answer after {answer_attempt} attempt(s): {reason}"
                            ));
                        }
                    }
                }
                Err(e) if e.is_transient() => {
                    if let LlmError::Status { body, .. } = &e {
                        tracing::warn!(%body, "provider error body");
                    }
                    // Temporal retries the whole vote with backoff; the failure shows in the Web UI.
                    return Err(anyhow::Error::new(e)
                        .context(format!("validator {} provider failed", input.validator_id)));
                }
                Err(
                    e @ (LlmError::Status { .. }
                    | LlmError::Envelope(_)
                    | LlmError::Transport(_)
                    | LlmError::Timeout),
                ) => {
                    let body = match &e {
                        LlmError::Status { body, .. } => Some(body.clone()),
                        _ => None,
                    };
                    attempts.push(
                        json!({"attempt": answer_attempt, "error": e.to_string(), "body": body}),
                    );
                    outcome = Err(format!("{PROVIDER_REFUSED}: {e}"));
                    break;
                }
            }
        }
        let transcript = json!({
            "promptVersion": prompt::PROMPT_VERSION,
            "promptSha256": prompt_sha256,
            "plugins": injection.plugins,
            "validatorId": input.validator_id,
            "model": validator.model,
            "providerUrl": validator.provider_url,
            "activityAttempt": activity_attempt,
            "request": llm::request_body(&ChatRequest { messages: &conversation, ..request }),
            "answers": attempts,
        });
        // The three records are independent objects: stored side by side, not one after another.
        let verdict_json = outcome
            .as_ref()
            .ok()
            .map(serde_json::to_value)
            .transpose()?;
        let blob = &self.deps.blob;
        let (response_key, verdict_key, transcript_key) = tokio::try_join!(
            async {
                match &last_raw {
                    Some(raw) => blob.put_json("responses/audit", raw).await.map(Some),
                    None => Ok(None),
                }
            },
            async {
                match &verdict_json {
                    Some(v) => blob.put_json("verdicts/audit", v).await.map(Some),
                    None => Ok(None),
                }
            },
            blob.put_json("transcripts/audit", &transcript),
        )?;
        let result = self
            .record(
                input,
                activity_attempt,
                &validator.model,
                outcome,
                Some(transcript_key),
                attempts.len() as i32,
            )
            .await?;
        sqlx::query!(
            r#"update audit_vote set prompt_sha256 = $5, prompt_key = $6, response_key = $7, verdict_key = $8
               where round_id = $1 and phase = $2 and validator_id = $3 and activity_attempt = $4"#,
            input.round_id,
            input.phase as i16,
            input.validator_id,
            activity_attempt as i32,
            prompt_sha256,
            prompt_key,
            response_key,
            verdict_key,
        )
        .execute(&self.deps.db)
        .await
        .context("Failed to record the vote's artifacts")?;
        self.record_plugin_usage(input, category, &injection.plugins, &result)
            .await?;
        Ok(result)
    }

    /// One usage row per injected plugin and vote (a retried vote rewrites its own rows).
    async fn record_plugin_usage(
        &self,
        input: &VoteRequest,
        category: sigma_shared::domain::Category,
        used: &[plugins::Plugin],
        result: &VoteResult,
    ) -> anyhow::Result<()> {
        for plugin in used {
            sqlx::query!(
                r#"insert into plugin_usage (plugin_id, plugin_version, validator_id, submission_id, round_id, phase,
                       plugin_type, product_type, verdict)
                   values ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                   on conflict (plugin_id, round_id, phase, validator_id) do update set
                       plugin_version = excluded.plugin_version, verdict = excluded.verdict"#,
                plugin.plugin_id,
                plugin.version,
                input.validator_id,
                input.submission_id,
                input.round_id,
                input.phase as i16,
                plugin.plugin_type.as_str(),
                category.as_str(),
                result.cast.as_ref().map(|c| c.verdict.as_str()),
            )
            .execute(&self.deps.db)
            .await
            .context("Failed to record plugin usage")?;
        }
        Ok(())
    }

    /// The LLM usage ledger: one row per provider call, with tokens and cost.
    async fn record_usage(
        &self,
        input: &VoteRequest,
        validator: &ValidatorRow,
        latency: Duration,
        answer: &Result<llm::ChatAnswer, LlmError>,
    ) -> anyhow::Result<()> {
        let (prompt_tokens, completion_tokens, outcome) = match answer {
            Ok(a) => (a.prompt_tokens, a.completion_tokens, "ANSWERED".to_owned()),
            Err(e) => (
                None,
                None,
                format!(
                    "ERROR: {}",
                    e.to_string().chars().take(200).collect::<String>()
                ),
            ),
        };
        sqlx::query!(
            r#"insert into llm_usage (purpose, submission_id, round_id, phase, validator_id, model, provider_url,
                   prompt_tokens, completion_tokens, cost_usd, latency_ms, outcome)
               values ('audit_vote', $1, $2, $3, $4, $5, $6, $7, $8,
                   (coalesce($7, 0) * $9::float8 + coalesce($8, 0) * $10::float8) / 1000000, $11, $12)"#,
            input.submission_id,
            input.round_id,
            input.phase as i16,
            input.validator_id,
            validator.model,
            validator.provider_url,
            prompt_tokens.map(|t| t as i32),
            completion_tokens.map(|t| t as i32),
            validator.price_in_per_mtok,
            validator.price_out_per_mtok,
            latency.as_millis() as i32,
            outcome,
        )
        .execute(&self.deps.db)
        .await
        .context("Failed to record LLM usage")?;
        Ok(())
    }

    async fn record(
        &self,
        input: &VoteRequest,
        activity_attempt: u32,
        model: &str,
        outcome: Result<LlmVerdict, String>,
        transcript_key: Option<String>,
        attempts: i32,
    ) -> anyhow::Result<VoteResult> {
        let (status, verdict, severity, blocking, findings, rationale, failure) = match &outcome {
            Ok(v) => (
                "CAST",
                Some(v.verdict.as_str()),
                Some(v.severity.as_str()),
                Some(v.blocking),
                serde_json::to_value(&v.findings)?,
                Some(v.rationale.as_str()),
                None,
            ),
            Err(reason) => (
                "FAILED",
                None,
                None,
                None,
                json!([]),
                None,
                Some(reason.as_str()),
            ),
        };
        // A retried activity overwrites its own earlier row: the vote that counts is the last one.
        sqlx::query!(
            r#"insert into audit_vote (round_id, phase, validator_id, model, status, verdict, severity, blocking,
                   findings, rationale, failure, transcript_key, attempts, activity_attempt, replaces)
               values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
               on conflict (round_id, phase, validator_id) do update set
                   model = excluded.model, status = excluded.status, verdict = excluded.verdict,
                   severity = excluded.severity, blocking = excluded.blocking, findings = excluded.findings,
                   rationale = excluded.rationale, failure = excluded.failure,
                   transcript_key = excluded.transcript_key, attempts = excluded.attempts,
                   activity_attempt = excluded.activity_attempt, replaces = excluded.replaces
               -- A late, timed-out attempt never overwrites a newer one, nor a closed round.
               where audit_vote.activity_attempt <= excluded.activity_attempt
                 and (select consensus from audit_round where round_id = excluded.round_id) is null"#,
            input.round_id,
            input.phase as i16,
            input.validator_id,
            model,
            status,
            verdict,
            severity,
            blocking,
            findings,
            rationale,
            failure,
            transcript_key,
            attempts,
            activity_attempt as i32,
            input.replaces,
        )
        .execute(&self.deps.db)
        .await
        .context("Failed to record the vote")?;
        tracing::info!(status, verdict, "vote recorded");
        Ok(match outcome {
            Ok(v) => VoteResult {
                phase: input.phase,
                validator_id: input.validator_id.clone(),
                finding_titles: v
                    .findings
                    .iter()
                    .map(|f| format!("[{}] {}", f.severity, f.title))
                    .collect(),
                cast: Some(CastVote {
                    verdict: v.verdict,
                    severity: v.severity,
                    blocking: v.blocking,
                }),
                failure: None,
                provider_failed: false,
                replaced_by: None,
            },
            Err(reason) => VoteResult {
                phase: input.phase,
                validator_id: input.validator_id.clone(),
                cast: None,
                provider_failed: is_provider_failure(&reason),
                failure: Some(reason),
                finding_titles: Vec::new(),
                replaced_by: None,
            },
        })
    }
}
