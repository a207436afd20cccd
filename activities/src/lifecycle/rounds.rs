//! Fresh audit rounds over bytes SIGMA already holds: a renewal, a re-audit and a disputed
//! rejection each run as a submission of their own, copied from the one that was audited (same
//! stored bundle, source and declarations), so the whole pipeline and its projection apply.

use anyhow::Context;
use serde_json::Value;
use sigma_shared::domain::SubmissionId;

/// What the new submission is, besides a copy of `source`.
pub(crate) struct AuditCopy<'a> {
    pub id: &'a SubmissionId,
    /// The submission whose bytes are audited again.
    pub source: &'a str,
    pub note: String,
    pub renewal_of: Option<&'a str>,
    pub reaudit_of: Option<&'a str>,
    pub dispute_of: Option<&'a str>,
    pub charged_credits: i64,
    pub price_snapshot: Option<Value>,
}

pub(crate) struct Copied {
    pub category: String,
    pub bundle_key: String,
    pub skill_name: Option<String>,
}

/// Records the copy once: a retry finds the row the first attempt wrote.
pub(crate) async fn record_copy(
    conn: &mut sqlx::PgConnection,
    c: AuditCopy<'_>,
) -> anyhow::Result<Copied> {
    sqlx::query!(
        r#"insert into submission (submission_id, developer_id, category, skill_name, skill_version, source_url,
               source_ref, note, bundle_key, bundle_sha256, bundle_bytes, bundle_format, workflow_id, git_repository,
               draft_snapshot, renewal_of, reaudit_of, dispute_of, charged_credits, price_snapshot)
           select $1, o.developer_id, o.category, o.skill_name, o.skill_version, o.source_url, o.source_ref,
                  $3, o.bundle_key, o.bundle_sha256, o.bundle_bytes, o.bundle_format, $4, o.git_repository,
                  o.draft_snapshot, $5, $6, $7, $8, $9
           from submission o where o.submission_id = $2
           on conflict (submission_id) do nothing"#,
        c.id.as_str(),
        c.source,
        c.note,
        c.id.workflow_id(),
        c.renewal_of,
        c.reaudit_of,
        c.dispute_of,
        c.charged_credits,
        c.price_snapshot,
    )
    .execute(&mut *conn)
    .await
    .context("Failed to record the round's submission")?;
    let row = sqlx::query!(
        "select category, bundle_key, skill_name from submission where submission_id = $1",
        c.id.as_str()
    )
    .fetch_one(&mut *conn)
    .await
    .with_context(|| format!("submission {} has nothing to audit again", c.source))?;
    anyhow::ensure!(
        !row.bundle_key.is_empty(),
        "submission {} has no stored bundle to audit again",
        c.source
    );
    Ok(Copied {
        category: row.category,
        bundle_key: row.bundle_key,
        skill_name: row.skill_name,
    })
}
