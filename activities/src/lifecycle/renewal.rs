//! Renewal: a certificate is due `ops.renewal_window_secs` before it expires. The renewal sweep
//! finds certificates due within `ops.renewal_reminder_lead_secs`; each gets one renewal workflow
//! (`renewal:{certificate}:{due}`) that reminds the developer, waits for the due date, takes the
//! renewal price from their credits and runs a RENEWAL audit of the same stored bytes as a new
//! submission (`renewal_of`). Approval issues a certificate that renews and supersedes the old
//! one; a rejection, an unpaid price or a platform failure lets the old one expire on its date.
//!
//! Pricing: the RENEWAL line of the catalog (a category's own, else the catalog-wide one) scales
//! the category's current base price; free-allowlisted developers renew free. The price is
//! debited as `DEBIT_RENEWAL` when the due date comes and refunded if the platform fails the audit.

use anyhow::Context;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use sigma_shared::config::{OpsSettings, PipelineSettings, SandboxLimits};
use sigma_shared::domain::{Category, SubmissionId};
use sigma_shared::pricing::{Catalog, Rule, RuleKind, renewal_price};

use crate::Deps;
use crate::intake::checkout::allowlisted;
use crate::lifecycle::rounds::{AuditCopy, record_copy};
use crate::ops::email_once;

/// One certificate's renewal for one due date: the business key of its workflow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenewalKey {
    pub certificate_id: String,
    pub due_at: DateTime<Utc>,
}

impl RenewalKey {
    fn due_text(&self) -> String {
        self.due_at.to_rfc3339_opts(SecondsFormat::Secs, true)
    }

    /// `renewal:{certificate}:{due}`: an overlapping or repeated sweep finds the same id.
    pub fn workflow_id(&self) -> String {
        format!("renewal:{}:{}", self.certificate_id, self.due_text())
    }

    /// The renewal's submission: one per renewal, whichever attempt records it.
    pub fn submission_id(&self) -> SubmissionId {
        SubmissionId::for_business_key(&[
            b"renewal",
            self.certificate_id.as_bytes(),
            self.due_text().as_bytes(),
        ])
    }
}

/// What a sweep run works with, read from the worker's settings when it starts.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RenewalPolicy {
    pub ops: OpsSettings,
}

pub(crate) fn policy(deps: &Deps) -> RenewalPolicy {
    RenewalPolicy {
        ops: deps.settings.ops.clone(),
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DueCursor {
    pub due_at: DateTime<Utc>,
    pub certificate_id: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DuePage {
    pub after: Option<DueCursor>,
    pub limit: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DueRenewal {
    pub key: RenewalKey,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DueRenewals {
    pub items: Vec<DueRenewal>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<DueCursor>,
}

pub(crate) async fn due(deps: &Deps, page: DuePage) -> anyhow::Result<DueRenewals> {
    let lead = deps.settings.ops.renewal_reminder_lead_secs as f64;
    let limit = i64::from(page.limit.clamp(1, 1000));
    let rows = sqlx::query!(
        r#"select c.certificate_id, c.renewal_due_at as "due_at!"
           from certificate c
           where c.status = 'APPROVED' and c.renewal_due_at is not null and c.expires_at is not null
             and c.renewal_due_at <= now() + make_interval(secs => $1)
             and ($2::timestamptz is null or (c.renewal_due_at, c.certificate_id) > ($2, $3))
             -- NOT_NEEDED (suspended when its renewal opened, reinstated since) is taken again.
             and not exists (select 1 from renewal r
                             where r.certificate_id = c.certificate_id and r.due_at = c.renewal_due_at
                               and r.status <> 'NOT_NEEDED')
           order by c.renewal_due_at, c.certificate_id
           limit $4"#,
        lead,
        page.after.as_ref().map(|a| a.due_at),
        page.after
            .as_ref()
            .map(|a| a.certificate_id.as_str())
            .unwrap_or(""),
        limit,
    )
    .fetch_all(&deps.db)
    .await
    .context("Failed to list certificates due for renewal")?;
    let items: Vec<DueRenewal> = rows
        .into_iter()
        .map(|r| DueRenewal {
            key: RenewalKey {
                certificate_id: r.certificate_id,
                due_at: r.due_at,
            },
        })
        .collect();
    let next = (items.len() as i64 == limit)
        .then(|| items.last())
        .flatten()
        .map(|last| DueCursor {
            due_at: last.key.due_at,
            certificate_id: last.key.certificate_id.clone(),
        });
    Ok(DueRenewals { items, next })
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RenewalOpened {
    /// False when the certificate was superseded, suspended, revoked or expired meanwhile.
    pub needed: bool,
    pub expires_at: DateTime<Utc>,
}

#[tracing::instrument(name = "open_renewal", skip_all, fields(certificate_id = %key.certificate_id))]
pub(crate) async fn open(deps: &Deps, key: &RenewalKey) -> anyhow::Result<RenewalOpened> {
    let mut tx = deps.db.begin().await?;
    sqlx::query!(
        r#"insert into renewal (certificate_id, due_at, workflow_id) values ($1, $2, $3)
           on conflict (certificate_id, due_at) do update set status = 'SCHEDULED', reason = null
               where renewal.status = 'NOT_NEEDED'"#,
        key.certificate_id,
        key.due_at,
        key.workflow_id(),
    )
    .execute(&mut *tx)
    .await
    .context("Failed to record the renewal")?;
    let c = sqlx::query!(
        r#"select status, expires_at as "expires_at!" from certificate where certificate_id = $1"#,
        key.certificate_id
    )
    .fetch_one(&mut *tx)
    .await
    .context("Failed to load the certificate")?;
    let needed = c.status == "APPROVED";
    if !needed {
        sqlx::query!(
            r#"update renewal set status = 'NOT_NEEDED', reason = $3
               where certificate_id = $1 and due_at = $2 and status = 'SCHEDULED'"#,
            key.certificate_id,
            key.due_at,
            format!("the certificate is {}", c.status),
        )
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(RenewalOpened {
        needed,
        expires_at: c.expires_at,
    })
}

/// The certificate's developer, skill and category, and what renewing it costs them now.
struct Subject {
    developer_id: sqlx::types::Uuid,
    email: String,
    balance: i64,
    skill: String,
    category: String,
    expires_at: DateTime<Utc>,
    price: i64,
    price_label: String,
}

async fn subject(conn: &mut sqlx::PgConnection, certificate_id: &str) -> anyhow::Result<Subject> {
    let c = sqlx::query!(
        r#"select c.developer_id as "developer_id!", c.expires_at as "expires_at!", s.category,
                  coalesce(c.sealed ->> 'skillName', s.skill_name, s.category) as "skill!"
           from certificate c join submission s on s.submission_id = c.certificate_id
           where c.certificate_id = $1"#,
        certificate_id
    )
    .fetch_one(&mut *conn)
    .await
    .context("Failed to load the certificate's submission")?;
    // Locked: in the charge's transaction the balance read is the balance debited (outside
    // one the lock ends with the statement).
    let developer = sqlx::query!(
        "select email, credit_balance from developer where developer_id = $1 for update",
        c.developer_id
    )
    .fetch_one(&mut *conn)
    .await
    .context("Failed to load the developer")?;
    let (price, price_label) = if allowlisted(&mut *conn, &developer.email).await? {
        (0, "free (allowlisted)".to_owned())
    } else {
        renewal_price(&catalog(conn, &c.category).await?)
            .unwrap_or((0, "no renewal price in the catalog".to_owned()))
    };
    Ok(Subject {
        developer_id: c.developer_id,
        email: developer.email,
        balance: developer.credit_balance,
        skill: c.skill,
        category: c.category,
        expires_at: c.expires_at,
        price,
        price_label,
    })
}

/// The category's base price and RENEWAL lines (its own first, then the catalog-wide one).
async fn catalog(conn: &mut sqlx::PgConnection, category: &str) -> anyhow::Result<Catalog> {
    let base = sqlx::query_scalar!(
        "select base_credits from pricing_category where category = $1",
        category
    )
    .fetch_optional(&mut *conn)
    .await?
    .unwrap_or(0);
    let rules = sqlx::query!(
        r#"select rule_id, amount_credits, multiplier_bps, label from pricing_rule
           where kind = 'RENEWAL' and active and (category is null or category = $1)
           order by category nulls last, created_at desc"#,
        category
    )
    .fetch_all(&mut *conn)
    .await
    .context("Failed to read the renewal price")?
    .into_iter()
    .map(|r| Rule {
        rule_id: r.rule_id,
        kind: RuleKind::Renewal,
        tier: None,
        amount_credits: r.amount_credits,
        multiplier_bps: r.multiplier_bps,
        label: r.label,
    })
    .collect();
    Ok(Catalog {
        category: category.to_owned(),
        base_credits: base,
        rules,
        campaigns: Vec::new(),
    })
}

fn certificate_url(deps: &Deps, certificate_id: &str) -> String {
    format!(
        "{}/api/v1/public/certificates/{certificate_id}/verify",
        deps.settings.api.public_base_url.trim_end_matches('/')
    )
}

#[tracing::instrument(name = "remind_renewal", skip_all, fields(certificate_id = %key.certificate_id))]
pub(crate) async fn remind(deps: &Deps, key: &RenewalKey) -> anyhow::Result<()> {
    let mut conn = deps.db.acquire().await?;
    let s = subject(&mut conn, &key.certificate_id).await?;
    drop(conn);
    let due = key.due_text();
    let mut text = format!(
        "The SIGMA certificate {} of {} is due for renewal on {due} and expires on {}.\n\n\
         On the due date SIGMA re-runs the current sandbox rules and a fresh audit panel over the \
         same reviewed bytes. ",
        key.certificate_id,
        s.skill,
        s.expires_at.to_rfc3339_opts(SecondsFormat::Secs, true),
    );
    if s.price > 0 {
        text.push_str(&format!(
            "The renewal costs {} credits ({}), debited from your balance on the due date; your \
             balance is {} credits now.",
            s.price, s.price_label, s.balance
        ));
        if s.balance < s.price {
            text.push_str(" Top up before the due date, or the certificate expires.");
        }
    } else {
        text.push_str("The renewal is free for your account.");
    }
    text.push_str(&format!(
        "\n\nCertificate: {}\n",
        certificate_url(deps, &key.certificate_id)
    ));
    email_once(
        deps,
        &key.certificate_id,
        &format!("RENEWAL_REMINDER {due}"),
        &s.email,
        format!("SIGMA: the certificate of {} is due for renewal", s.skill),
        text,
    )
    .await
}

/// What the renewal's audit runs with: the submission's start as the API would build it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RenewalSubmission {
    pub submission_id: String,
    pub category: Category,
    pub bundle_key: String,
    pub skill_name: Option<String>,
    pub charged: bool,
    pub price_credits: i64,
    pub policy: PipelineSettings,
    pub limits: SandboxLimits,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum RenewalCharge {
    Charged(RenewalSubmission),
    /// The balance does not cover the price; nothing was taken.
    Unpaid {
        price_credits: i64,
        balance_credits: i64,
    },
    /// The certificate is no longer one to renew (suspended, revoked, superseded, expired, or
    /// under re-audit); nothing was taken.
    NotNeeded {
        reason: String,
    },
}

#[tracing::instrument(name = "charge_renewal", skip_all, fields(certificate_id = %key.certificate_id))]
pub(crate) async fn charge(deps: &Deps, key: &RenewalKey) -> anyhow::Result<RenewalCharge> {
    let submission_id = key.submission_id();
    let mut tx = deps.db.begin().await?;
    let s = subject(&mut tx, &key.certificate_id).await?;
    let category: Category = s.category.parse().map_err(anyhow::Error::msg)?;
    let submission =
        |price: i64, charged: bool, bundle_key: String, skill_name| RenewalSubmission {
            submission_id: submission_id.to_string(),
            category,
            bundle_key,
            skill_name,
            charged,
            price_credits: price,
            policy: deps.settings.pipeline.clone(),
            limits: deps.settings.sandbox.limits_for(category),
        };
    // Recorded by an earlier attempt: answer as it did.
    if let Some(before) = sqlx::query!(
        "select bundle_key, skill_name, charged_credits from submission where submission_id = $1",
        submission_id.as_str()
    )
    .fetch_optional(&mut *tx)
    .await?
    {
        return Ok(RenewalCharge::Charged(submission(
            before.charged_credits,
            before.charged_credits > 0,
            before.bundle_key,
            before.skill_name,
        )));
    }
    // Checked again now, under a lock: the reminder went out up to the lead time earlier, and
    // a renewal must never mint a valid certificate past a suspension, a revocation, a newer
    // version or a re-audit.
    let standing = sqlx::query!(
        r#"select c.status, c.expires_at <= now() as "lapsed!",
                  exists(select 1 from certificate_flag f where f.certificate_id = c.certificate_id
                         and (f.status = 'REAUDIT' or (f.raised_by = 'MONITOR' and f.status in ('OPEN', 'TRIAGED')))) as "escalated!"
           from certificate c where c.certificate_id = $1 for update"#,
        key.certificate_id
    )
    .fetch_one(&mut *tx)
    .await
    .context("Failed to lock the certificate")?;
    let refusal = if standing.status != "APPROVED" {
        Some(format!("the certificate is {}", standing.status))
    } else if standing.lapsed {
        Some("the certificate expired before its renewal".to_owned())
    } else if standing.escalated {
        Some("the certificate is under re-audit".to_owned())
    } else {
        None
    };
    if let Some(reason) = refusal {
        sqlx::query!(
            r#"update renewal set status = 'NOT_NEEDED', reason = $3
               where certificate_id = $1 and due_at = $2 and status in ('SCHEDULED', 'UNPAID')"#,
            key.certificate_id,
            key.due_at,
            reason,
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        return Ok(RenewalCharge::NotNeeded { reason });
    }
    if s.balance < s.price {
        sqlx::query!(
            r#"update renewal set status = 'UNPAID', price_credits = $3,
                   reason = format('the balance (%s credits) does not cover the renewal price (%s credits)', $4::bigint, $3::bigint)
               where certificate_id = $1 and due_at = $2 and status in ('SCHEDULED', 'UNPAID')"#,
            key.certificate_id,
            key.due_at,
            s.price,
            s.balance,
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        email_once(
            deps,
            &key.certificate_id,
            &format!("RENEWAL_UNPAID {}", key.due_text()),
            &s.email,
            format!("SIGMA: top up to renew the certificate of {}", s.skill),
            format!(
                "The renewal of certificate {} ({}) costs {} credits and your balance is {} credits. \
                 SIGMA tries again until the certificate expires on {}; top up your credits to renew it.\n\n\
                 Certificate: {}\n",
                key.certificate_id,
                s.skill,
                s.price,
                s.balance,
                s.expires_at.to_rfc3339_opts(SecondsFormat::Secs, true),
                certificate_url(deps, &key.certificate_id),
            ),
        )
        .await?;
        return Ok(RenewalCharge::Unpaid {
            price_credits: s.price,
            balance_credits: s.balance,
        });
    }
    // The renewal's submission: the same stored bytes, source and declarations as the original.
    let price_snapshot = serde_json::json!({
        "renewal": {"certificateId": key.certificate_id, "dueAt": key.due_at, "label": s.price_label},
        "totalCredits": s.price,
    });
    let recorded = record_copy(
        &mut tx,
        AuditCopy {
            id: &submission_id,
            source: &key.certificate_id,
            note: format!("renewal of certificate {}", key.certificate_id),
            renewal_of: Some(&key.certificate_id),
            reaudit_of: None,
            dispute_of: None,
            charged_credits: s.price,
            price_snapshot: Some(price_snapshot),
        },
    )
    .await?;
    if s.price > 0 {
        let balance = sqlx::query_scalar!(
            "update developer set credit_balance = credit_balance - $2 where developer_id = $1 returning credit_balance",
            s.developer_id,
            s.price
        )
        .fetch_one(&mut *tx)
        .await
        .context("Failed to debit the renewal")?;
        sqlx::query!(
            r#"insert into credit_ledger (developer_id, kind, amount_credits, balance_after, reference, note)
               values ($1, 'DEBIT_RENEWAL', $2, $3, $4, $5)"#,
            s.developer_id,
            -s.price,
            balance,
            submission_id.as_str(),
            format!("renewal of certificate {}", key.certificate_id),
        )
        .execute(&mut *tx)
        .await
        .context("Failed to record the renewal debit")?;
    }
    sqlx::query!(
        r#"update renewal set status = 'IN_PROGRESS', submission_id = $3, price_credits = $4, reason = null
           where certificate_id = $1 and due_at = $2"#,
        key.certificate_id,
        key.due_at,
        submission_id.as_str(),
        s.price,
    )
    .execute(&mut *tx)
    .await?;
    tx.commit()
        .await
        .context("Failed to commit the renewal charge")?;
    tracing::info!(submission_id = %submission_id, credits = s.price, "renewal charged and recorded");
    Ok(RenewalCharge::Charged(submission(
        s.price,
        s.price > 0,
        recorded.bundle_key,
        recorded.skill_name,
    )))
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RenewalEnd {
    pub key: RenewalKey,
    /// RENEWED, LAPSED or NOT_NEEDED.
    pub status: String,
    pub new_certificate_id: Option<String>,
    pub reason: Option<String>,
}

pub(crate) async fn finish(deps: &Deps, end: &RenewalEnd) -> anyhow::Result<()> {
    anyhow::ensure!(
        matches!(end.status.as_str(), "RENEWED" | "LAPSED" | "NOT_NEEDED"),
        "a renewal ends RENEWED, LAPSED or NOT_NEEDED, not {}",
        end.status
    );
    sqlx::query!(
        r#"update renewal set status = $3, new_certificate_id = coalesce($4, new_certificate_id), reason = coalesce($5, reason)
           where certificate_id = $1 and due_at = $2 and status <> 'RENEWED'"#,
        end.key.certificate_id,
        end.key.due_at,
        end.status,
        end.new_certificate_id,
        end.reason,
    )
    .execute(&deps.db)
    .await
    .context("Failed to record the renewal's end")?;
    tracing::info!(certificate_id = %end.key.certificate_id, status = %end.status, "renewal ended");
    Ok(())
}

#[tracing::instrument(name = "expire_certificate", skip_all, fields(certificate_id = %key.certificate_id))]
pub(crate) async fn expire(deps: &Deps, key: &RenewalKey) -> anyhow::Result<bool> {
    let expired = sqlx::query_scalar!(
        r#"update certificate set status = 'EXPIRED', status_changed_at = now(), status_changed_by = 'renewal',
               status_reason = 'not renewed by its expiry date'
           where certificate_id = $1 and status = 'APPROVED' and expires_at <= now() + interval '5 seconds'
           returning certificate_id"#,
        key.certificate_id
    )
    .fetch_optional(&deps.db)
    .await
    .context("Failed to expire the certificate")?;
    if expired.is_none() {
        let status = sqlx::query_scalar!(
            "select status from certificate where certificate_id = $1",
            key.certificate_id
        )
        .fetch_one(&deps.db)
        .await?;
        // The workflow's timer fired by Temporal's clock; a database clock behind it would
        // expire early: refuse, and let the retry come back later.
        anyhow::ensure!(
            status != "APPROVED",
            "the certificate's expiry is still ahead by the database's clock"
        );
        // Renewed after all (an operator's retry of the renewal), superseded, or revoked; an
        // earlier attempt that expired it already sent the email below.
        if status != "EXPIRED" {
            return Ok(false);
        }
    }
    let mut conn = deps.db.acquire().await?;
    let s = subject(&mut conn, &key.certificate_id).await?;
    drop(conn);
    email_once(
        deps,
        &key.certificate_id,
        "CERTIFICATE_EXPIRED",
        &s.email,
        format!("SIGMA: the certificate of {} expired", s.skill),
        format!(
            "The SIGMA certificate {} of {} was not renewed and expired; `verify` now answers that \
             it is not valid. Submit the skill again to certify it anew.\n\nCertificate: {}\n",
            key.certificate_id,
            s.skill,
            certificate_url(deps, &key.certificate_id),
        ),
    )
    .await?;
    Ok(true)
}
