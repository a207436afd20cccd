//! The audit stage: one activity call is one validator's vote in one phase. The workflow runs a
//! panel's votes in parallel; each vote retries malformed answers itself and leaves transport
//! failures to Temporal's retry policy.

pub mod llm;
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

struct ValidatorRow {
    display_name: String,
    model: String,
    provider_url: String,
    api_key_env: Option<String>,
    response_format: String,
}

impl AuditActivities {
    #[tracing::instrument(name = "vote", skip_all, fields(submission_id = %input.submission_id,
        round_id = %input.round_id, phase = input.phase, validator_id = %input.validator_id))]
    async fn vote(&self, input: &VoteRequest, activity_attempt: u32) -> anyhow::Result<VoteResult> {
        let db = &self.deps.db;
        let validator = sqlx::query_as!(
            ValidatorRow,
            "select display_name, model, provider_url, api_key_env, response_format from validator where validator_id = $1",
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
                    Err(format!("validator {} no longer exists", input.validator_id)),
                    None,
                    0,
                )
                .await;
        };
        let submission = sqlx::query!(
            "select s.note, r.report_key from submission s join sandbox_report r using (submission_id) where s.submission_id = $1",
            input.submission_id
        )
        .fetch_one(db)
        .await
        .context("Failed to load the submission and its sandbox report")?;
        let report: SandboxReport = self.deps.blob.get_json(&submission.report_key).await?;
        let settings = &self.deps.settings.pipeline;
        let messages = prompt::build(&PromptInput {
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
                    let failure =
                        "validator is misconfigured: its provider key is not available".to_owned();
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
        };
        let mut attempts = Vec::new();
        let mut outcome: Result<LlmVerdict, String> = Err("no answer requested".into());
        let mut conversation = messages.clone();
        for answer_attempt in 1..=input.answer_attempts.max(1) {
            let request = ChatRequest {
                messages: &conversation,
                ..request
            };
            match llm::chat(&self.deps.http, &request).await {
                Ok(answer) => {
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
                    e @ (LlmError::Status { .. } | LlmError::Envelope(_) | LlmError::Transport(_)),
                ) => {
                    let body = match &e {
                        LlmError::Status { body, .. } => Some(body.clone()),
                        _ => None,
                    };
                    attempts.push(
                        json!({"attempt": answer_attempt, "error": e.to_string(), "body": body}),
                    );
                    outcome = Err(format!("provider refused the request: {e}"));
                    break;
                }
            }
        }
        let transcript = json!({
            "promptVersion": prompt::PROMPT_VERSION,
            "validatorId": input.validator_id,
            "model": validator.model,
            "providerUrl": validator.provider_url,
            "activityAttempt": activity_attempt,
            "request": llm::request_body(&ChatRequest { messages: &conversation, ..request }),
            "answers": attempts,
        });
        let transcript_key = self
            .deps
            .blob
            .put_json("transcripts/audit", &transcript)
            .await?;
        self.record(
            input,
            activity_attempt,
            &validator.model,
            outcome,
            Some(transcript_key),
            attempts.len() as i32,
        )
        .await
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
                   findings, rationale, failure, transcript_key, attempts, activity_attempt)
               values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
               on conflict (round_id, phase, validator_id) do update set
                   model = excluded.model, status = excluded.status, verdict = excluded.verdict,
                   severity = excluded.severity, blocking = excluded.blocking, findings = excluded.findings,
                   rationale = excluded.rationale, failure = excluded.failure,
                   transcript_key = excluded.transcript_key, attempts = excluded.attempts,
                   activity_attempt = excluded.activity_attempt
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
            },
            Err(reason) => VoteResult {
                phase: input.phase,
                validator_id: input.validator_id.clone(),
                cast: None,
                failure: Some(reason),
                finding_titles: Vec::new(),
            },
        })
    }
}
