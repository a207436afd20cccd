//! The compensation of a checkout: when the platform fails a paid run, what it took is given
//! back once (the intent's move from CONSUMED to REFUNDED guards it), with its campaign slot.

use anyhow::Context;
use serde::{Deserialize, Serialize};
use sqlx::types::Uuid;

use crate::Deps;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RefundInput {
    pub submission_id: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RefundOutcome {
    pub refunded_credits: i64,
}

/// Locks the submission row, then as the submit that charged did (intent, campaign,
/// developer), so the two never deadlock. The intent's move from CONSUMED to REFUNDED makes
/// it happen once.
#[tracing::instrument(name = "refund", skip_all, fields(submission_id = %input.submission_id))]
pub(crate) async fn refund(deps: &Deps, input: RefundInput) -> anyhow::Result<RefundOutcome> {
    let mut tx = deps.db.begin().await?;
    let row = sqlx::query!(
        r#"select developer_id, charged_credits, payment_intent_id, price_snapshot from submission
           where submission_id = $1 for update"#,
        input.submission_id
    )
    .fetch_one(&mut *tx)
    .await
    .context("Failed to load the charged submission")?;
    let Some(intent) = row.payment_intent_id else {
        // A charge without an intent (a renewal's debit): the ledger's one REFUND per reference
        // makes it happen once.
        return refund_direct_charge(
            tx,
            row.developer_id,
            row.charged_credits,
            &input.submission_id,
        )
        .await;
    };
    let first = sqlx::query_scalar!(
        "update payment_intent set status = 'REFUNDED' where intent_id = $1 and status = 'CONSUMED' returning intent_id",
        intent
    )
    .fetch_optional(&mut *tx)
    .await
    .context("Failed to mark the intent refunded")?;
    if first.is_none() {
        // Refunded by an earlier attempt.
        tx.rollback().await?;
        return Ok(RefundOutcome {
            refunded_credits: row.charged_credits,
        });
    }
    // The campaign slot this submission used goes back to the pool.
    if let Some(campaign) = row
        .price_snapshot
        .as_ref()
        .and_then(|s| s["campaignId"].as_str())
        .and_then(|s| s.parse::<Uuid>().ok())
    {
        sqlx::query!(
            "update pricing_campaign set used_n = used_n - 1 where campaign_id = $1 and used_n > 0",
            campaign
        )
        .execute(&mut *tx)
        .await
        .context("Failed to release the campaign slot")?;
    }
    if row.charged_credits > 0 {
        let balance = sqlx::query_scalar!(
            "update developer set credit_balance = credit_balance + $2 where developer_id = $1 returning credit_balance",
            row.developer_id,
            row.charged_credits
        )
        .fetch_one(&mut *tx)
        .await
        .context("Failed to credit the refund")?;
        sqlx::query!(
            r#"insert into credit_ledger (developer_id, kind, amount_credits, balance_after, reference, note)
               values ($1, 'REFUND', $2, $3, $4, 'the platform could not complete the audit')"#,
            row.developer_id,
            row.charged_credits,
            balance,
            input.submission_id
        )
        .execute(&mut *tx)
        .await
        .context("Failed to record the refund")?;
    }
    tx.commit().await?;
    tracing::info!(credits = row.charged_credits, "charge refunded");
    Ok(RefundOutcome {
        refunded_credits: row.charged_credits,
    })
}

async fn refund_direct_charge(
    mut tx: sqlx::Transaction<'_, sqlx::Postgres>,
    developer_id: Uuid,
    credits: i64,
    submission_id: &str,
) -> anyhow::Result<RefundOutcome> {
    if credits > 0 {
        let balance = sqlx::query_scalar!(
            "update developer set credit_balance = credit_balance + $2 where developer_id = $1 returning credit_balance",
            developer_id,
            credits
        )
        .fetch_one(&mut *tx)
        .await
        .context("Failed to credit the refund")?;
        let recorded = sqlx::query!(
            r#"insert into credit_ledger (developer_id, kind, amount_credits, balance_after, reference, note)
               values ($1, 'REFUND', $2, $3, $4, 'the platform could not complete the audit')
               on conflict (developer_id, kind, reference) do nothing"#,
            developer_id,
            credits,
            balance,
            submission_id
        )
        .execute(&mut *tx)
        .await
        .context("Failed to record the refund")?;
        if recorded.rows_affected() == 0 {
            // Refunded by an earlier attempt: undo this attempt's credit.
            tx.rollback().await?;
            return Ok(RefundOutcome {
                refunded_credits: credits,
            });
        }
    }
    tx.commit().await?;
    tracing::info!(credits, "charge refunded");
    Ok(RefundOutcome {
        refunded_credits: credits,
    })
}
