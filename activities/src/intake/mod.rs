//! Intake: the first step of every submission workflow. The API starts the workflow under an id
//! made of a business key; this local activity then writes the submission's projection (and, for
//! a paid draft, takes the payment in the same transaction, see [`checkout`]). Because the row is
//! written from inside the run, a crash of the API between "paid" and "started" cannot happen: the
//! money moves only once a run exists, and the run finishes what it started.

pub mod checkout;
pub mod refund;
pub mod retry;

use std::sync::Arc;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use sigma_shared::domain::{Category, Sha256Hex, Stage};
use temporalio_macros::activities;
use temporalio_sdk::activities::{ActivityContext, ActivityError};
use uuid::Uuid;

use crate::types::GitSource;
use crate::{Deps, retryable};

pub use checkout::{DraftCheckout, PaymentMethod};
pub use retry::RetryIntake;

/// An `Idempotency-Key` and the digest of the request that first used it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Idempotency {
    pub key: String,
    pub request_sha256: String,
}

/// What a run records before its pipeline starts.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Intake {
    /// An upload or a git repository sent with an administrator's API token (no payment).
    Direct(DirectIntake),
    /// A draft paid through a payment intent.
    Draft(DraftCheckout),
    /// An operator's retry of a recorded submission whose run failed.
    Retry(RetryIntake),
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DirectIntake {
    pub developer_id: Uuid,
    pub category: Category,
    pub skill_name: Option<String>,
    pub skill_version: Option<String>,
    pub source_url: Option<String>,
    pub source_ref: Option<String>,
    pub note: Option<String>,
    /// Empty for a git submission: the sandbox fetches and records the archive.
    pub bundle_key: String,
    pub bundle_sha256: Option<Sha256Hex>,
    pub bundle_bytes: i64,
    pub bundle_format: String,
    pub git: Option<GitSource>,
    pub idempotency: Option<Idempotency>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RecordIntake {
    pub submission_id: String,
    pub intake: Intake,
}

/// How the intake step ended; the API answers the client from it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum IntakeOutcome {
    /// The projection exists (written now, or by an earlier attempt of this step): run the pipeline.
    Recorded(Recorded),
    /// A run of an earlier request already took this submission past intake: this run stops.
    AlreadyHandled(Recorded),
    /// Nothing was written and nothing charged.
    Refused(Refusal),
}

/// What the pipeline needs from the recorded submission.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Recorded {
    pub category: Category,
    pub bundle_key: String,
    pub bundle_sha256: Option<String>,
    pub skill_name: Option<String>,
    pub git: Option<GitSource>,
    /// Credits or a campaign slot were taken: a platform failure gives them back.
    pub charged: bool,
    /// The request digest stored with the idempotency key, so a different request under the same
    /// key is told apart from a retry.
    pub request_sha256: Option<String>,
    /// A re-audit of an existing certificate: its outcome acts on that certificate, and it
    /// never issues one of its own (set for an operator's retry of a re-audit).
    #[serde(default)]
    pub reaudit: bool,
}

/// Why an intake was refused, with the HTTP status the API answers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Refusal {
    pub reason: RefusalReason,
    pub detail: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalReason {
    DraftNotFound,
    IntentNotFound,
    IntentForOtherDraft,
    IntentNotUsable,
    QuoteStale,
    SourceNotPinned,
    CampaignEnded,
    InsufficientCredits,
    VoucherUsedUp,
    NotEligibleForFree,
    OverrideUsed,
    IdempotencyKeyReused,
    SubmissionNotFound,
    NotFailed,
    CertificateIssued,
}

impl RefusalReason {
    /// The stable `code` of the API's error body.
    pub fn code(self) -> &'static str {
        match self {
            Self::DraftNotFound | Self::IntentNotFound | Self::SubmissionNotFound => "not_found",
            Self::IntentForOtherDraft => "intent_for_other_draft",
            Self::IntentNotUsable => "intent_not_usable",
            Self::QuoteStale => "quote_stale",
            Self::SourceNotPinned => "source_not_pinned",
            Self::CampaignEnded => "campaign_ended",
            Self::InsufficientCredits => "insufficient_credits",
            Self::VoucherUsedUp => "voucher_used_up",
            Self::NotEligibleForFree => "not_eligible_for_free",
            Self::OverrideUsed => "override_used",
            Self::IdempotencyKeyReused => "idempotency_key_reused",
            Self::NotFailed => "not_failed",
            Self::CertificateIssued => "certificate_issued",
        }
    }
    pub fn http_status(self) -> u16 {
        match self {
            Self::DraftNotFound | Self::IntentNotFound | Self::SubmissionNotFound => 404,
            Self::InsufficientCredits => 402,
            _ => 409,
        }
    }
}

impl Refusal {
    pub fn new(reason: RefusalReason, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
        }
    }
}

pub struct IntakeActivities {
    deps: Deps,
}

impl IntakeActivities {
    pub fn new(deps: Deps) -> Self {
        Self { deps }
    }
}

#[activities]
impl IntakeActivities {
    /// Writes the submission's projection (and takes a draft's payment) exactly once per
    /// submission id; a retry finds the row and answers as the first attempt did.
    #[activity(name = "intake.record")]
    pub async fn record_intake(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: RecordIntake,
    ) -> Result<IntakeOutcome, ActivityError> {
        let result = match &input.intake {
            Intake::Direct(direct) => record_direct(&self.deps, &input.submission_id, direct).await,
            Intake::Draft(draft) => checkout::submit(&self.deps, &input.submission_id, draft).await,
            Intake::Retry(retry) => {
                let run_id = ctx.info().workflow_run_id.clone().unwrap_or_default();
                retry::claim(&self.deps, &input.submission_id, &run_id, retry).await
            }
        };
        result.map_err(retryable)
    }

    /// The checkout's compensation: gives back what a submission was charged, once, when the
    /// platform failed it. (Its name predates the move here: histories know it by that name.)
    #[activity(name = "portal.refund_charge")]
    pub async fn refund_charge(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: refund::RefundInput,
    ) -> Result<refund::RefundOutcome, ActivityError> {
        refund::refund(&self.deps, input).await.map_err(retryable)
    }
}

/// The row of a submission that was recorded before, as an outcome.
pub(crate) async fn recorded_before(
    conn: &mut sqlx::PgConnection,
    submission_id: &str,
) -> anyhow::Result<Option<IntakeOutcome>> {
    let row = sqlx::query!(
        r#"select s.category, s.bundle_key, s.bundle_sha256, s.skill_name, s.stage, s.git_repository, s.source_ref,
               coalesce(i.method = 'credits' and i.status = 'CONSUMED', false) as "charged!",
               (select k.request_sha256 from idempotency_key k where k.submission_id = s.submission_id limit 1) as request_sha256
           from submission s left join payment_intent i on i.intent_id = s.payment_intent_id
           where s.submission_id = $1"#,
        submission_id
    )
    .fetch_optional(&mut *conn)
    .await
    .context("Failed to look for an earlier intake")?;
    let Some(row) = row else { return Ok(None) };
    let recorded = Recorded {
        category: row.category.parse().map_err(anyhow::Error::msg)?,
        bundle_key: row.bundle_key,
        bundle_sha256: Some(row.bundle_sha256).filter(|s| !s.is_empty()),
        skill_name: row.skill_name,
        git: GitSource::recorded(row.git_repository, row.source_ref),
        charged: row.charged,
        request_sha256: row.request_sha256,
        reaudit: false,
    };
    // Still RECEIVED: an earlier attempt of this very step committed, so carry on. Further
    // along: another run owns it.
    Ok(Some(if row.stage == Stage::Received.as_str() {
        IntakeOutcome::Recorded(recorded)
    } else {
        IntakeOutcome::AlreadyHandled(recorded)
    }))
}

/// Claims `idempotency` for the submission in `tx`; a refusal when the key names another one.
pub(crate) async fn claim_key(
    tx: &mut sqlx::PgConnection,
    developer_id: Uuid,
    submission_id: &str,
    idempotency: &Idempotency,
) -> anyhow::Result<Option<Refusal>> {
    let claimed = sqlx::query!(
        r#"insert into idempotency_key (developer_id, idempotency_key, request_sha256, submission_id)
           values ($1, $2, $3, $4) on conflict do nothing"#,
        developer_id,
        idempotency.key,
        idempotency.request_sha256,
        submission_id,
    )
    .execute(&mut *tx)
    .await
    .context("Failed to claim the idempotency key")?;
    Ok((claimed.rows_affected() == 0).then(|| {
        Refusal::new(
            RefusalReason::IdempotencyKeyReused,
            "this Idempotency-Key was already used for a different request",
        )
    }))
}

#[tracing::instrument(name = "record_direct", skip_all, fields(submission_id))]
async fn record_direct(
    deps: &Deps,
    submission_id: &str,
    new: &DirectIntake,
) -> anyhow::Result<IntakeOutcome> {
    let mut tx = deps.db.begin().await?;
    if let Some(before) = recorded_before(&mut tx, submission_id).await? {
        return Ok(before);
    }
    let workflow_id = format!("submission:{submission_id}");
    sqlx::query!(
        r#"insert into submission (submission_id, developer_id, category, skill_name, skill_version, source_url,
               source_ref, note, bundle_key, bundle_sha256, bundle_bytes, bundle_format, workflow_id, git_repository)
           values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"#,
        submission_id,
        new.developer_id,
        new.category.as_str(),
        new.skill_name,
        new.skill_version,
        new.source_url,
        new.source_ref,
        new.note,
        new.bundle_key,
        new.bundle_sha256.as_ref().map(|s| s.as_str()).unwrap_or(""),
        new.bundle_bytes,
        new.bundle_format,
        workflow_id,
        new.git.as_ref().map(|g| g.repository.as_str()),
    )
    .execute(&mut *tx)
    .await
    .context("Failed to record the submission")?;
    if let Some(idempotency) = &new.idempotency
        && let Some(refusal) =
            claim_key(&mut tx, new.developer_id, submission_id, idempotency).await?
    {
        return Ok(IntakeOutcome::Refused(refusal));
    }
    tx.commit().await.context("Failed to commit the intake")?;
    tracing::info!(category = %new.category, bytes = new.bundle_bytes, git = new.git.is_some(), "submission recorded");
    Ok(IntakeOutcome::Recorded(Recorded {
        category: new.category,
        bundle_key: new.bundle_key.clone(),
        bundle_sha256: new.bundle_sha256.as_ref().map(|s| s.to_string()),
        skill_name: new.skill_name.clone(),
        git: new.git.clone(),
        charged: false,
        request_sha256: new.idempotency.as_ref().map(|i| i.request_sha256.clone()),
        reaudit: false,
    }))
}
