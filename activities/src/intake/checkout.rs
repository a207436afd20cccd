//! The money step of submit-from-draft, in one database transaction and one place: it uses the
//! payment intent (credits debited, a voucher use, or a free override), claims the quote's
//! campaign slot, and records the submission with its draft and price snapshots. It runs as the
//! first step of the submission's own workflow, so a debit always has a run that finishes it.
//! Locks are taken draft → intent → campaign → developer, the order the refund also uses.

use std::fmt;
use std::str::FromStr;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use sigma_shared::domain::Category;
use uuid::Uuid;

use super::{
    Idempotency, IntakeOutcome, Recorded, Refusal, RefusalReason, claim_key, recorded_before,
};
use crate::Deps;
use crate::portal::DraftFacts;
use crate::types::GitSource;

/// How a payment intent is paid. The database keeps the lowercase names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PaymentMethod {
    /// Debited from the developer's credit balance at submit.
    Credits,
    /// A free-submission voucher code.
    Voucher,
    /// An allowlisted address or an operator's one-shot override.
    Free,
    /// A token transfer on chain (agent plane).
    DirectMonad,
    /// An x402 payment (agent plane).
    X402,
    Card,
}

impl PaymentMethod {
    pub const ALL: [PaymentMethod; 6] = [
        Self::Credits,
        Self::Voucher,
        Self::Free,
        Self::DirectMonad,
        Self::X402,
        Self::Card,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Credits => "credits",
            Self::Voucher => "voucher",
            Self::Free => "free",
            Self::DirectMonad => "direct_monad",
            Self::X402 => "x402",
            Self::Card => "card",
        }
    }
}

impl FromStr for PaymentMethod {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| format!("`{s}` is not a payment method"))
    }
}

impl fmt::Display for PaymentMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A draft to submit with a payment intent, as the API checked it for the caller.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DraftCheckout {
    pub developer_id: Uuid,
    /// For the free allowlist, re-checked inside the transaction.
    pub developer_email: String,
    pub draft_id: Uuid,
    pub intent_id: Uuid,
    pub idempotency: Option<Idempotency>,
}

/// Whether an address is on the free allowlist (exactly, or by `@domain`).
pub async fn allowlisted<'e>(db: impl sqlx::PgExecutor<'e>, email: &str) -> sqlx::Result<bool> {
    let domain = email
        .rsplit_once('@')
        .map(|(_, d)| format!("@{d}"))
        .unwrap_or_default();
    sqlx::query_scalar!(
        r#"select exists(select 1 from free_allowlist where pattern = $1 or pattern = $2) as "found!""#,
        email,
        domain
    )
    .fetch_one(db)
    .await
}

fn refused(reason: RefusalReason, detail: impl Into<String>) -> anyhow::Result<IntakeOutcome> {
    Ok(IntakeOutcome::Refused(Refusal::new(reason, detail)))
}

fn not_usable(status: &str) -> anyhow::Result<IntakeOutcome> {
    refused(
        RefusalReason::IntentNotUsable,
        format!("the payment intent is {status}; create a new quote and intent"),
    )
}

/// The checkout transaction. Every refusal rolls back everything (the transaction is dropped).
#[tracing::instrument(name = "checkout", skip_all, fields(submission_id, draft_id = %c.draft_id))]
pub(crate) async fn submit(
    deps: &Deps,
    submission_id: &str,
    c: &DraftCheckout,
) -> anyhow::Result<IntakeOutcome> {
    let mut tx = deps.db.begin().await?;
    let draft = sqlx::query!(
        r#"select category, revision, source_type, bundle_key, bundle_sha256, bundle_bytes, bundle_format,
               git_repository, git_ref, entry, advisory_note, declared_endpoints, site_url, manifest, manifest_revision,
               submission_id
           from draft where draft_id = $1 and developer_id = $2 for update"#,
        c.draft_id,
        c.developer_id
    )
    .fetch_optional(&mut *tx)
    .await
    .context("Failed to lock the draft")?;
    let Some(draft) = draft else {
        return refused(RefusalReason::DraftNotFound, "draft not found");
    };
    if draft.submission_id.is_some() {
        // This step committed before (a retry of it), or an earlier run submitted the draft.
        if let Some(before) = recorded_before(&mut tx, submission_id).await? {
            return Ok(before);
        }
        return not_usable("already used: the draft was submitted");
    }
    let intent = sqlx::query!(
        r#"select i.method, i.status, i.amount_credits, i.voucher_code, i.override_id, i.expires_at > now() as "live!",
               q.revision, q.campaign_id, q.price_snapshot, q.draft_id
           from payment_intent i join quote q using (quote_id)
           where i.intent_id = $1 and i.developer_id = $2 for update of i"#,
        c.intent_id,
        c.developer_id
    )
    .fetch_optional(&mut *tx)
    .await
    .context("Failed to lock the payment intent")?;
    let Some(intent) = intent else {
        return refused(RefusalReason::IntentNotFound, "payment intent not found");
    };
    if intent.draft_id != c.draft_id {
        return refused(
            RefusalReason::IntentForOtherDraft,
            "this payment intent belongs to another draft",
        );
    }
    if !matches!(intent.status.as_str(), "CREATED" | "CONFIRMED") {
        return not_usable(&intent.status);
    }
    if !intent.live {
        return not_usable("EXPIRED");
    }
    if intent.revision != draft.revision {
        return refused(
            RefusalReason::QuoteStale,
            "the draft changed after its quote; quote it again",
        );
    }
    let Some(bundle_key) = draft.bundle_key.clone() else {
        return refused(
            RefusalReason::SourceNotPinned,
            "the draft's source is not pinned; run its dry-run",
        );
    };
    let category: Category = draft.category.parse().map_err(anyhow::Error::msg)?;
    let method: PaymentMethod = intent.method.parse().map_err(anyhow::Error::msg)?;

    // The campaign slot: claimed by a guarded increment, so it can never oversell. Only a
    // credits payment uses the discount; voucher and free audits leave the slots to others.
    let campaign_claimed = intent
        .campaign_id
        .filter(|_| method == PaymentMethod::Credits);
    if let Some(campaign) = campaign_claimed {
        let claimed = sqlx::query!(
            r#"update pricing_campaign set used_n = used_n + 1
               where campaign_id = $1 and active and (limit_n is null or used_n < limit_n)
                 and (starts_at is null or starts_at <= now()) and (ends_at is null or ends_at > now())"#,
            campaign
        )
        .execute(&mut *tx)
        .await
        .context("Failed to claim the campaign slot")?;
        if claimed.rows_affected() == 0 {
            return refused(
                RefusalReason::CampaignEnded,
                "the campaign in this quote has ended or sold out; quote the draft again",
            );
        }
    }
    let charged = match method {
        PaymentMethod::Credits => {
            let amount = intent.amount_credits;
            if amount > 0 {
                let balance = sqlx::query_scalar!(
                    r#"update developer set credit_balance = credit_balance - $2
                       where developer_id = $1 and credit_balance >= $2 returning credit_balance"#,
                    c.developer_id,
                    amount
                )
                .fetch_optional(&mut *tx)
                .await
                .context("Failed to debit the credits")?;
                let Some(balance) = balance else {
                    let have = sqlx::query_scalar!(
                        "select credit_balance from developer where developer_id = $1",
                        c.developer_id
                    )
                    .fetch_one(&mut *tx)
                    .await
                    .context("Failed to read the balance")?;
                    return refused(
                        RefusalReason::InsufficientCredits,
                        format!(
                            "this submission costs {amount} credits; the balance is {have}, {} short",
                            amount - have
                        ),
                    );
                };
                sqlx::query!(
                    r#"insert into credit_ledger (developer_id, kind, amount_credits, balance_after, reference, note)
                       values ($1, 'DEBIT_SUBMISSION', $2, $3, $4, 'submission')"#,
                    c.developer_id,
                    -amount,
                    balance,
                    submission_id
                )
                .execute(&mut *tx)
                .await
                .context("Failed to record the debit")?;
            }
            amount
        }
        PaymentMethod::Voucher => {
            let code = intent.voucher_code.clone().unwrap_or_default();
            let used = sqlx::query!(
                r#"update voucher set uses_left = uses_left - 1
                   where code = $1 and uses_left > 0 and (expires_at is null or expires_at > now())"#,
                code
            )
            .execute(&mut *tx)
            .await
            .context("Failed to use the voucher")?;
            let redeemed = sqlx::query!(
                "insert into voucher_redemption (code, developer_id) values ($1, $2) on conflict do nothing",
                code,
                c.developer_id
            )
            .execute(&mut *tx)
            .await
            .context("Failed to record the redemption")?;
            if used.rows_affected() == 0 || redeemed.rows_affected() == 0 {
                return refused(
                    RefusalReason::VoucherUsedUp,
                    "the voucher was used up or expired meanwhile",
                );
            }
            0
        }
        PaymentMethod::Free => {
            if intent.override_id.is_none() && !allowlisted(&mut *tx, &c.developer_email).await? {
                return refused(
                    RefusalReason::NotEligibleForFree,
                    "this account is no longer on the free allowlist; pay with credits",
                );
            }
            if let Some(override_id) = intent.override_id {
                let used = sqlx::query!(
                    "update free_override set used_at = now() where override_id = $1 and used_at is null",
                    override_id
                )
                .execute(&mut *tx)
                .await
                .context("Failed to use the free override")?;
                if used.rows_affected() == 0 {
                    return refused(
                        RefusalReason::OverrideUsed,
                        "the free override was already used",
                    );
                }
            }
            0
        }
        other => return not_usable(&format!("of method {other}")),
    };
    let facts: Option<DraftFacts> = sqlx::query_scalar!(
        "select facts from draft_check where draft_id = $1 and revision = $2",
        c.draft_id,
        draft.revision
    )
    .fetch_optional(&mut *tx)
    .await
    .context("Failed to read the dry-run facts")?
    .and_then(|f| serde_json::from_value(f).ok());
    let git = match (&draft.git_repository, &draft.git_ref) {
        (Some(repository), Some(reference)) if draft.source_type == "github" => Some(GitSource {
            repository: repository.clone(),
            reference: reference.clone(),
        }),
        _ => None,
    };
    let draft_snapshot = serde_json::json!({
        "draftId": c.draft_id,
        "revision": draft.revision,
        "category": draft.category,
        "sourceType": draft.source_type,
        "repository": draft.git_repository,
        "ref": draft.git_ref,
        "entry": draft.entry,
        "advisoryNote": draft.advisory_note,
        "declaredEndpoints": draft.declared_endpoints,
        "siteUrl": draft.site_url,
        "manifest": if draft.manifest_revision == Some(draft.revision) { draft.manifest.clone() } else { None },
        "bundleSha256": draft.bundle_sha256,
    });
    let mut price_snapshot = intent.price_snapshot.clone();
    price_snapshot["campaignId"] = serde_json::json!(campaign_claimed);
    price_snapshot["method"] = serde_json::json!(method);
    price_snapshot["chargedCredits"] = serde_json::json!(charged);
    let source_url = git
        .as_ref()
        .map(|g| format!("https://github.com/{}", g.repository));
    let skill_name = facts.as_ref().and_then(|f| f.skill_name.clone());
    let bundle_format = if git.is_some() {
        "tar.gz".to_owned()
    } else {
        draft
            .bundle_format
            .clone()
            .unwrap_or_else(|| "tar.gz".into())
    };
    sqlx::query!(
        r#"insert into submission (submission_id, developer_id, category, skill_name, skill_version, source_url,
               source_ref, note, bundle_key, bundle_sha256, bundle_bytes, bundle_format, workflow_id, git_repository,
               draft_id, payment_intent_id, charged_credits, price_snapshot, draft_snapshot)
           values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)"#,
        submission_id,
        c.developer_id,
        category.as_str(),
        skill_name,
        facts.as_ref().and_then(|f| f.skill_version.clone()),
        source_url,
        git.as_ref().map(|g| g.reference.clone()),
        draft.advisory_note,
        bundle_key,
        draft.bundle_sha256.clone().unwrap_or_default(),
        draft.bundle_bytes.unwrap_or(0),
        bundle_format,
        format!("submission:{submission_id}"),
        git.as_ref().map(|g| g.repository.clone()),
        c.draft_id,
        c.intent_id,
        charged,
        price_snapshot,
        draft_snapshot,
    )
    .execute(&mut *tx)
    .await
    .context("Failed to record the submission")?;
    sqlx::query!(
        "update payment_intent set status = 'CONSUMED', submission_id = $2 where intent_id = $1",
        c.intent_id,
        submission_id
    )
    .execute(&mut *tx)
    .await
    .context("Failed to consume the intent")?;
    sqlx::query!(
        "update draft set submission_id = $2 where draft_id = $1",
        c.draft_id,
        submission_id
    )
    .execute(&mut *tx)
    .await
    .context("Failed to freeze the draft")?;
    if let Some(idempotency) = &c.idempotency
        && let Some(refusal) =
            claim_key(&mut tx, c.developer_id, submission_id, idempotency).await?
    {
        return Ok(IntakeOutcome::Refused(refusal));
    }
    tx.commit().await.context("Failed to commit the checkout")?;
    tracing::info!(%category, charged, %method, "draft submitted");
    Ok(IntakeOutcome::Recorded(Recorded {
        category,
        bundle_key,
        bundle_sha256: draft.bundle_sha256,
        skill_name,
        git,
        // Credits or a campaign slot were taken: a platform failure gives them back.
        charged: method == PaymentMethod::Credits,
        request_sha256: c.idempotency.as_ref().map(|i| i.request_sha256.clone()),
        reaudit: false,
    }))
}
