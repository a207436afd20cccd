//! A dispute's steps as its `dispute:{id}` workflow drives them: the acknowledgement (developer)
//! and alert (operators), the operator's decision, the fresh round an overturn runs, and the
//! conclusion — a reinstated certificate, or validators' audit accuracy following the final
//! outcome of a disputed rejection.

use anyhow::Context;
use serde::{Deserialize, Serialize};
use sigma_shared::config::{PipelineSettings, SandboxLimits};
use sigma_shared::domain::{Category, Outcome, SubmissionId};
use sqlx::types::Uuid;

use crate::Deps;
use crate::lifecycle::rounds::{AuditCopy, record_copy};
use crate::ops::{email_once, record_agreement};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DisputeRef {
    pub dispute_id: String,
}

/// How a dispute stands when its workflow picks it up.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DisputeOpened {
    /// OPEN, UPHELD or OVERTURNED.
    pub status: String,
    /// REJECTION or SUSPENSION.
    #[serde(default)]
    pub kind: String,
}

/// UPHOLD keeps the outcome; OVERTURN runs a fresh audit round that decides instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum DisputeVerdict {
    Uphold,
    Overturn,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DisputeDecision {
    pub verdict: DisputeVerdict,
    pub note: String,
    pub operator: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DisputeDecided {
    pub dispute_id: String,
    pub decision: DisputeDecision,
}

/// The fresh round an overturn runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FreshRound {
    pub submission_id: String,
    pub category: Category,
    pub bundle_key: String,
    /// A disputed rejection may end in a certificate; a disputed suspension acts on the existing one.
    pub issue_certificate: bool,
    pub policy: PipelineSettings,
    pub limits: SandboxLimits,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DisputeConclusion {
    pub dispute_id: String,
    /// `None`: the fresh round failed on the platform's side (an operator can retry it).
    pub outcome: Option<Outcome>,
}

struct Row {
    submission_id: String,
    kind: String,
    certificate_id: Option<String>,
    reason: String,
    email: String,
    skill: String,
}

async fn load(deps: &Deps, dispute_id: &str) -> anyhow::Result<Row> {
    let id: Uuid = dispute_id.parse().context("bad dispute id")?;
    let r = sqlx::query!(
        r#"select x.submission_id, x.kind, x.certificate_id, x.reason, d.email,
                  coalesce(s.skill_name, s.category) as "skill!"
           from dispute x join developer d using (developer_id) join submission s using (submission_id)
           where x.dispute_id = $1"#,
        id
    )
    .fetch_one(&deps.db)
    .await
    .context("Failed to load the dispute")?;
    Ok(Row {
        submission_id: r.submission_id,
        kind: r.kind,
        certificate_id: r.certificate_id,
        reason: r.reason,
        email: r.email,
        skill: r.skill,
    })
}

fn what(row: &Row) -> String {
    match &row.certificate_id {
        Some(c) if row.kind == "SUSPENSION" => format!("the suspension of certificate {c}"),
        _ => format!("the rejection of submission {}", row.submission_id),
    }
}

/// Acknowledges the dispute to the developer and tells the operators; once each.
#[tracing::instrument(name = "open_dispute", skip_all, fields(dispute_id = %d.dispute_id))]
pub(crate) async fn open(deps: &Deps, d: &DisputeRef) -> anyhow::Result<DisputeOpened> {
    let row = load(deps, &d.dispute_id).await?;
    let status = sqlx::query_scalar!(
        "select status from dispute where dispute_id = $1",
        d.dispute_id.parse::<Uuid>()?
    )
    .fetch_one(&deps.db)
    .await?;
    let kind = format!("DISPUTE {} OPENED", d.dispute_id);
    email_once(
        deps,
        &row.submission_id,
        &kind,
        &row.email,
        format!("SIGMA: your dispute about {} was received", row.skill),
        format!(
            "You disputed {}. An operator will uphold the decision or overturn it, in which case a \
             fresh audit round decides. If no operator decides in time, the fresh round runs anyway.\n\n\
             Your reason: {}\n",
            what(&row),
            row.reason
        ),
    )
    .await?;
    email_once(
        deps,
        &row.submission_id,
        &format!("{kind} OPERATORS"),
        &deps.settings.ops.operator_alert_email,
        format!("SIGMA: dispute {} awaits a decision", d.dispute_id),
        format!(
            "The developer of {} disputed {}.\n\nReason: {}\n\nDecide it on the operator plane: \
             POST /api/v1/sigma/operator/disputes/{}/decision\n",
            row.skill,
            what(&row),
            row.reason,
            d.dispute_id
        ),
    )
    .await?;
    Ok(DisputeOpened {
        status,
        kind: row.kind,
    })
}

/// Past its deadline, a disputed suspension is not lifted by default (an operator may have
/// suspended for reasons outside the bytes): the operators are told it is overdue, once.
pub(crate) async fn overdue(deps: &Deps, d: &DisputeRef) -> anyhow::Result<()> {
    let row = load(deps, &d.dispute_id).await?;
    email_once(
        deps,
        &row.submission_id,
        &format!("DISPUTE {} OVERDUE", d.dispute_id),
        &deps.settings.ops.operator_alert_email,
        format!("SIGMA: dispute {} is overdue", d.dispute_id),
        format!(
            "The developer of {} disputed {} and no operator has decided it within the deadline. \
             The suspension stays until an operator upholds or overturns it:\n\
             POST /api/v1/sigma/operator/disputes/{}/decision\n\nReason: {}\n",
            row.skill,
            what(&row),
            d.dispute_id,
            row.reason
        ),
    )
    .await
}

#[tracing::instrument(name = "decide_dispute", skip_all, fields(dispute_id = %d.dispute_id))]
pub(crate) async fn decide(deps: &Deps, d: &DisputeDecided) -> anyhow::Result<()> {
    let status = match d.decision.verdict {
        DisputeVerdict::Uphold => "UPHELD",
        DisputeVerdict::Overturn => "OVERTURNED",
    };
    sqlx::query!(
        r#"update dispute set status = $2, decision_note = $3, decided_by = $4, decided_at = coalesce(decided_at, now())
           where dispute_id = $1 and status in ('OPEN', $2)"#,
        d.dispute_id.parse::<Uuid>()?,
        status,
        d.decision.note,
        d.decision.operator,
    )
    .execute(&deps.db)
    .await
    .context("Failed to record the dispute's decision")?;
    let row = load(deps, &d.dispute_id).await?;
    let text = match d.decision.verdict {
        DisputeVerdict::Uphold => format!(
            "An operator upheld {}: the decision stands.\n\nNote: {}\n",
            what(&row),
            d.decision.note
        ),
        DisputeVerdict::Overturn => format!(
            "{} was overturned: a fresh audit round over the same bytes now decides. You will \
             hear its outcome.\n\nNote: {}\n",
            what(&row),
            d.decision.note
        ),
    };
    email_once(
        deps,
        &row.submission_id,
        &format!("DISPUTE {} {status}", d.dispute_id),
        &row.email,
        format!(
            "SIGMA: your dispute about {} was {}",
            row.skill,
            status.to_lowercase()
        ),
        text,
    )
    .await
}

/// Records the overturn's fresh round: for a rejection a new submission over the same bytes
/// (`dispute_of`), for a suspension a re-audit of the certificate.
pub(crate) async fn fresh_round(deps: &Deps, d: &DisputeRef) -> anyhow::Result<FreshRound> {
    let row = load(deps, &d.dispute_id).await?;
    let id = SubmissionId::for_business_key(&[b"dispute", d.dispute_id.as_bytes()]);
    let suspension = row.kind == "SUSPENSION";
    let certificate = row.certificate_id.clone().unwrap_or_default();
    let mut tx = deps.db.begin().await?;
    let copied = record_copy(
        &mut tx,
        AuditCopy {
            id: &id,
            source: if suspension {
                &certificate
            } else {
                &row.submission_id
            },
            note: format!("fresh round of dispute {}", d.dispute_id),
            renewal_of: None,
            reaudit_of: suspension.then_some(certificate.as_str()),
            dispute_of: (!suspension).then_some(row.submission_id.as_str()),
            charged_credits: 0,
            price_snapshot: None,
        },
    )
    .await?;
    sqlx::query!(
        "update dispute set fresh_submission_id = $2 where dispute_id = $1",
        d.dispute_id.parse::<Uuid>()?,
        id.as_str()
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    let category: Category = copied.category.parse().map_err(anyhow::Error::msg)?;
    Ok(FreshRound {
        submission_id: id.to_string(),
        category,
        bundle_key: copied.bundle_key,
        issue_certificate: !suspension,
        policy: deps.settings.pipeline.clone(),
        limits: deps.settings.sandbox.limits_for(category),
    })
}

/// What the fresh round's outcome changes: a disputed suspension that the re-audit approves is
/// lifted; for a disputed rejection the original votes are scored against the final outcome.
#[tracing::instrument(name = "conclude_dispute", skip_all, fields(dispute_id = %c.dispute_id))]
pub(crate) async fn conclude(deps: &Deps, c: &DisputeConclusion) -> anyhow::Result<()> {
    let row = load(deps, &c.dispute_id).await?;
    let outcome = c.outcome.map(|o| o.as_str().to_owned());
    sqlx::query!(
        "update dispute set final_outcome = $2, concluded_at = coalesce(concluded_at, now()) where dispute_id = $1",
        c.dispute_id.parse::<Uuid>()?,
        outcome.as_deref().unwrap_or("FAILED"),
    )
    .execute(&deps.db)
    .await?;
    let text = match (c.outcome, row.kind.as_str()) {
        (Some(Outcome::Approved), "SUSPENSION") => {
            let certificate = row.certificate_id.clone().unwrap_or_default();
            sqlx::query!(
                r#"update certificate set status = 'APPROVED', status_changed_at = now(), status_changed_by = 'dispute',
                       status_reason = 'suspension overturned: the re-audit approved it'
                   where certificate_id = $1 and status = 'SUSPENDED'"#,
                certificate,
            )
            .execute(&deps.db)
            .await
            .context("Failed to lift the suspension")?;
            format!("The re-audit approved certificate {certificate}: the suspension is lifted.")
        }
        (Some(outcome), "REJECTION") => {
            // Validators who voted on the disputed rejection are scored against the final outcome.
            record_agreement(deps, &row.submission_id, outcome).await?;
            format!(
                "The fresh audit round ended {outcome}{}.",
                if outcome == Outcome::Approved {
                    "; its certificate is issued"
                } else {
                    ""
                }
            )
        }
        (Some(outcome), _) => {
            format!("The re-audit ended {outcome}: the suspension stays.")
        }
        (None, _) => {
            "The fresh audit round failed on the platform's side; an operator will retry it."
                .to_owned()
        }
    };
    email_once(
        deps,
        &row.submission_id,
        &format!("DISPUTE {} CONCLUDED", c.dispute_id),
        &row.email,
        format!("SIGMA: your dispute about {} is concluded", row.skill),
        format!("{text}\n\nYou disputed {}.\n", what(&row)),
    )
    .await
}
