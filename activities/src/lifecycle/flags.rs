//! A flag's life as its `flag:{id}` workflow drives it: the operator's moves (TRIAGED, REAUDIT,
//! UPHELD, DISMISSED), the overdue mark, the re-audit (a submission of its own over the
//! certificate's stored bytes that issues no certificate) and what its outcome does to the
//! certificate, and the developer's emails at each outcome.

use anyhow::Context;
use serde::{Deserialize, Serialize};
use sigma_shared::config::{PipelineSettings, SandboxLimits};
use sigma_shared::domain::{Category, FlagStatus, Outcome, SubmissionId};
use sqlx::types::Uuid;

use crate::Deps;
use crate::lifecycle::rounds::{AuditCopy, record_copy};
use crate::ops::email_once;

/// An operator's move of a flag.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FlagAction {
    pub status: FlagStatus,
    pub note: String,
    pub operator: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FlagStep {
    pub flag_id: String,
    pub certificate_id: String,
    pub step: FlagAction,
}

/// What a move did.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FlagApplied {
    pub status: Option<FlagStatus>,
    /// The certificate status the move (or the re-audit's outcome) set, if it set one.
    pub certificate_status: Option<String>,
}

fn uuid(flag_id: &str) -> anyhow::Result<Uuid> {
    flag_id.parse().context("bad flag id")
}

/// Marks the flag as driven by its workflow (the reconciler starts workflows for flags without).
pub(crate) async fn open(
    deps: &Deps,
    flag_id: &str,
    workflow_id: &str,
) -> anyhow::Result<FlagStatus> {
    let status = sqlx::query_scalar!(
        "update certificate_flag set workflow_id = $2 where flag_id = $1 returning status",
        uuid(flag_id)?,
        workflow_id,
    )
    .fetch_one(&deps.db)
    .await
    .context("Failed to load the flag")?;
    status.parse().map_err(anyhow::Error::msg)
}

pub(crate) async fn mark_overdue(deps: &Deps, flag_id: &str) -> anyhow::Result<()> {
    sqlx::query!(
        "update certificate_flag set overdue_at = coalesce(overdue_at, now()) where flag_id = $1 and status = 'OPEN'",
        uuid(flag_id)?,
    )
    .execute(&deps.db)
    .await
    .context("Failed to mark the flag overdue")?;
    Ok(())
}

/// Records a move; UPHELD suspends the certificate in the same transaction. Idempotent: a
/// retried move finds the flag already where it put it.
#[tracing::instrument(name = "flag_move", skip_all, fields(flag_id = %s.flag_id, status = %s.step.status))]
pub(crate) async fn apply(deps: &Deps, s: &FlagStep) -> anyhow::Result<FlagApplied> {
    let status = s.step.status;
    let mut tx = deps.db.begin().await?;
    sqlx::query!(
        r#"update certificate_flag set status = $2, resolution_note = $3, resolved_by = $4,
               resolved_at = case when $5 then coalesce(resolved_at, now()) end
           where flag_id = $1 and status not in ('UPHELD', 'DISMISSED')"#,
        uuid(&s.flag_id)?,
        status.as_str(),
        s.step.note,
        s.step.operator,
        status.is_resolved(),
    )
    .execute(&mut *tx)
    .await
    .context("Failed to record the flag's move")?;
    let mut certificate_status = None;
    if status == FlagStatus::Upheld {
        let suspended = sqlx::query!(
            r#"update certificate set status = 'SUSPENDED', status_reason = 'flag upheld: ' || $2,
                   status_changed_at = now(), status_changed_by = $3
               where certificate_id = $1 and status = 'APPROVED'"#,
            s.certificate_id,
            s.step.note,
            s.step.operator,
        )
        .execute(&mut *tx)
        .await?;
        if suspended.rows_affected() == 1 {
            certificate_status = Some("SUSPENDED".to_owned());
        }
    }
    tx.commit()
        .await
        .context("Failed to commit the flag's move")?;
    Ok(FlagApplied {
        status: Some(status),
        certificate_status,
    })
}

/// What the re-audit's child run starts from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReauditSubmission {
    pub submission_id: String,
    pub category: Category,
    pub bundle_key: String,
    pub policy: PipelineSettings,
    pub limits: SandboxLimits,
}

/// Records the re-audit's submission: the certificate's stored bytes, free of charge, once per flag.
#[tracing::instrument(name = "start_reaudit", skip_all, fields(flag_id = %flag_id))]
pub(crate) async fn start_reaudit(
    deps: &Deps,
    flag_id: &str,
    certificate_id: &str,
    attempt: u32,
) -> anyhow::Result<ReauditSubmission> {
    // One submission per re-audit of the flag (a failed one may be ordered again).
    let submission_id =
        SubmissionId::for_business_key(&[b"reaudit", flag_id.as_bytes(), &attempt.to_be_bytes()]);
    let mut tx = deps.db.begin().await?;
    let row = record_copy(
        &mut tx,
        AuditCopy {
            id: &submission_id,
            source: certificate_id,
            note: format!("re-audit of certificate {certificate_id} after flag {flag_id}"),
            renewal_of: None,
            reaudit_of: Some(certificate_id),
            dispute_of: None,
            charged_credits: 0,
            price_snapshot: None,
        },
    )
    .await?;
    sqlx::query!(
        "update certificate_flag set reaudit_submission_id = $2 where flag_id = $1",
        uuid(flag_id)?,
        submission_id.as_str(),
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    let category: Category = row.category.parse().map_err(anyhow::Error::msg)?;
    Ok(ReauditSubmission {
        submission_id: submission_id.to_string(),
        category,
        bundle_key: row.bundle_key,
        policy: deps.settings.pipeline.clone(),
        limits: deps.settings.sandbox.limits_for(category),
    })
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReauditOutcome {
    pub flag_id: String,
    pub certificate_id: String,
    pub submission_id: String,
    /// `None`: the re-audit failed on the platform's side.
    pub outcome: Option<Outcome>,
    pub reasons: Vec<String>,
}

/// Applies the re-audit's outcome: APPROVED keeps the certificate and dismisses the flag;
/// REJECTED upholds the flag and suspends the certificate, or revokes it when the sandbox
/// itself blocked the bytes (a finding no vote can outweigh). A platform failure sends the flag
/// back to TRIAGED for an operator.
#[tracing::instrument(name = "conclude_reaudit", skip_all, fields(flag_id = %o.flag_id))]
pub(crate) async fn conclude_reaudit(
    deps: &Deps,
    o: &ReauditOutcome,
) -> anyhow::Result<FlagApplied> {
    let flag = uuid(&o.flag_id)?;
    let mut tx = deps.db.begin().await?;
    let blocked = sqlx::query_scalar!(
        "select blocked from sandbox_report where submission_id = $1",
        o.submission_id
    )
    .fetch_optional(&mut *tx)
    .await?
    .unwrap_or(false);
    let (flag_status, certificate_status, note) = match o.outcome {
        Some(Outcome::Approved) => (
            FlagStatus::Dismissed,
            None,
            format!(
                "re-audit {} approved the certificate again",
                o.submission_id
            ),
        ),
        Some(_) => (
            FlagStatus::Upheld,
            Some(if blocked { "REVOKED" } else { "SUSPENDED" }),
            format!(
                "re-audit {} rejected the certificate: {}",
                o.submission_id,
                o.reasons.join("; ")
            ),
        ),
        None => (
            FlagStatus::Triaged,
            None,
            format!(
                "re-audit {} failed on the platform's side; triage again or retry it",
                o.submission_id
            ),
        ),
    };
    sqlx::query!(
        r#"update certificate_flag set status = $2, resolution_note = $3, resolved_by = 're-audit',
               resolved_at = case when $4 then coalesce(resolved_at, now()) end
           where flag_id = $1 and status = 'REAUDIT'"#,
        flag,
        flag_status.as_str(),
        note,
        flag_status.is_resolved(),
    )
    .execute(&mut *tx)
    .await
    .context("Failed to record the re-audit on the flag")?;
    let mut applied = None;
    if let Some(status) = certificate_status {
        let reason: String = note.chars().take(2000).collect();
        let changed = sqlx::query!(
            r#"update certificate set status = $2, status_reason = $3, status_changed_at = now(),
                   status_changed_by = 're-audit'
               where certificate_id = $1 and status in ('APPROVED', 'SUSPENDED') and status <> $2"#,
            o.certificate_id,
            status,
            reason,
        )
        .execute(&mut *tx)
        .await?;
        if changed.rows_affected() == 1 {
            applied = Some(status.to_owned());
        }
    }
    tx.commit().await?;
    Ok(FlagApplied {
        status: Some(flag_status),
        certificate_status: applied,
    })
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FlagNotice {
    pub flag_id: String,
    pub certificate_id: String,
    /// `REAUDIT_STARTED`, `UPHELD`, `REAUDIT_APPROVED`, `REAUDIT_REJECTED`, `DISMISSED`.
    pub kind: String,
    pub detail: String,
}

/// Tells the certificate's developer what a flag did, once per flag and kind.
pub(crate) async fn notify(deps: &Deps, n: &FlagNotice) -> anyhow::Result<()> {
    let row = sqlx::query!(
        r#"select d.email, coalesce(c.sealed ->> 'skillName', 'your skill') as "skill!"
           from certificate c join developer d on d.developer_id = c.developer_id
           where c.certificate_id = $1"#,
        n.certificate_id
    )
    .fetch_one(&deps.db)
    .await
    .context("Failed to load the certificate's developer")?;
    let (subject, lead) = match n.kind.as_str() {
        "REAUDIT_STARTED" => (
            format!(
                "SIGMA: the certificate of {} is being re-audited",
                row.skill
            ),
            "A report about your certificate was escalated to a re-audit. Until it ends, `verify` \
             answers that the certificate is not valid.",
        ),
        "UPHELD" | "REAUDIT_REJECTED" => (
            format!("SIGMA: the certificate of {} was suspended", row.skill),
            "A report about your certificate was upheld. You may dispute the decision from the \
             developer portal within the dispute window.",
        ),
        "REAUDIT_APPROVED" => (
            format!(
                "SIGMA: the re-audit of {} confirmed its certificate",
                row.skill
            ),
            "The re-audit approved your certificate again; it verifies as valid.",
        ),
        _ => (
            format!("SIGMA: a report about {} was dismissed", row.skill),
            "An escalated report about your certificate was dismissed.",
        ),
    };
    let base = deps.settings.api.public_base_url.trim_end_matches('/');
    let text = format!(
        "{lead}\n\n{}\n\nCertificate: {base}/api/v1/public/certificates/{}/verify\n",
        n.detail, n.certificate_id
    );
    email_once(
        deps,
        &n.certificate_id,
        &format!("FLAG {} {}", n.flag_id, n.kind),
        &row.email,
        subject,
        text,
    )
    .await
}

/// An operator's change of a certificate's status.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusChange {
    pub certificate_id: String,
    /// SUSPENDED, REVOKED, or APPROVED (lifting a suspension).
    pub status: String,
    pub reason: String,
    pub operator: String,
    /// Names the change's email, so a retried change sends it once.
    pub request_id: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusChanged {
    /// False when the move is not allowed from the current status (nothing changed).
    pub applied: bool,
    pub status: String,
    pub changed_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Applies an operator's status change (APPROVED ⇄ SUSPENDED, either → REVOKED; superseded,
/// expired and revoked certificates stay as they are) and emails the developer.
#[tracing::instrument(name = "certificate_status", skip_all, fields(certificate_id = %c.certificate_id, status = %c.status))]
pub(crate) async fn change_status(deps: &Deps, c: &StatusChange) -> anyhow::Result<StatusChanged> {
    let row = sqlx::query!(
        r#"update certificate set status = $2, status_reason = $3, status_changed_at = now(), status_changed_by = $4
           where certificate_id = $1
             and ((status = 'APPROVED' and $2 in ('SUSPENDED', 'REVOKED'))
               or (status = 'SUSPENDED' and $2 in ('APPROVED', 'REVOKED')))
           returning status, status_changed_at"#,
        c.certificate_id,
        c.status,
        c.reason,
        c.operator,
    )
    .fetch_optional(&deps.db)
    .await
    .context("Failed to change the certificate's status")?;
    let (status, changed_at) = match row {
        Some(row) => (row.status, row.status_changed_at),
        None => {
            let current = sqlx::query!(
            "select status, status_changed_by, status_reason, status_changed_at from certificate where certificate_id = $1",
            c.certificate_id
        )
        .fetch_one(&deps.db)
        .await?;
            // A retry of a change that already landed answers as the first attempt did.
            let landed = current.status == c.status
                && current.status_changed_by.as_deref() == Some(c.operator.as_str())
                && current.status_reason.as_deref() == Some(c.reason.as_str());
            if !landed {
                return Ok(StatusChanged {
                    applied: false,
                    status: current.status,
                    changed_at: current.status_changed_at,
                });
            }
            // Landed on an earlier attempt, whose email may not have gone: send it (once) below.
            (current.status, current.status_changed_at)
        }
    };
    let developer = sqlx::query!(
        r#"select d.email, coalesce(c.sealed ->> 'skillName', 'your skill') as "skill!"
           from certificate c join developer d on d.developer_id = c.developer_id where c.certificate_id = $1"#,
        c.certificate_id
    )
    .fetch_one(&deps.db)
    .await?;
    let base = deps.settings.api.public_base_url.trim_end_matches('/');
    let verb = match c.status.as_str() {
        "APPROVED" => "reinstated",
        "REVOKED" => "revoked",
        _ => "suspended",
    };
    email_once(
        deps,
        &c.certificate_id,
        &format!("STATUS {} {}", c.status, c.request_id),
        &developer.email,
        format!("SIGMA: the certificate of {} was {verb}", developer.skill),
        format!(
            "An operator {verb} the certificate {} of {}.\n\nReason: {}\n\n{}Certificate: {base}/api/v1/public/certificates/{}/verify\n",
            c.certificate_id,
            developer.skill,
            c.reason,
            if c.status == "APPROVED" {
                ""
            } else {
                "You may dispute a suspension from the developer portal within the dispute window.\n\n"
            },
            c.certificate_id,
        ),
    )
    .await?;
    Ok(StatusChanged {
        applied: true,
        status,
        changed_at,
    })
}

/// A flag filed but never picked up by its workflow (the API stopped between filing it and
/// starting the workflow).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StrandedFlag {
    pub flag_id: String,
    pub certificate_id: String,
    pub raised_by_monitor: bool,
}

pub(crate) async fn stranded(deps: &Deps, limit: u32) -> anyhow::Result<Vec<StrandedFlag>> {
    let rows = sqlx::query!(
        r#"select flag_id, certificate_id, raised_by from certificate_flag
           where workflow_id is null and status not in ('UPHELD', 'DISMISSED')
             and created_at < now() - interval '1 minute'
           order by created_at limit $1"#,
        i64::from(limit.clamp(1, 1000)),
    )
    .fetch_all(&deps.db)
    .await
    .context("Failed to look for stranded flags")?;
    Ok(rows
        .into_iter()
        .map(|r| StrandedFlag {
            flag_id: r.flag_id.to_string(),
            certificate_id: r.certificate_id,
            raised_by_monitor: r.raised_by == "MONITOR",
        })
        .collect())
}
