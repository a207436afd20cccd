//! Monitor checks: the monitor sweep's page of due certificates, and one check of one
//! certificate — its declared endpoints probed again, its pinned git ref re-resolved, its
//! verified site re-checked — compared with the facts at issuance. Anomalies open flags raised
//! by `monitor` (one per distinct anomaly while unresolved); every check is recorded once.

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sigma_shared::domain::lf_normalised_sha256;
use sigma_shared::pricing::DeclaredEndpoint;

use super::FlagRef;
use super::sites;
use crate::Deps;
use crate::probe::{EndpointProbe, ProbeSeverity};
use crate::sandbox::git::{archive_url, download};
use crate::types::GitSource;

/// The reporter recorded on flags the monitor raises (in place of a hashed client address).
pub const MONITOR_REPORTER: &str = "monitor";

/// How long a check waits before probing a failing endpoint a second time.
const REPROBE_AFTER: std::time::Duration = std::time::Duration::from_secs(2);

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MonitorCursor {
    pub next_check_at: DateTime<Utc>,
    pub certificate_id: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct MonitorPage {
    pub after: Option<MonitorCursor>,
    pub limit: u32,
}

/// The `check_no`-th check of one certificate's monitor (from 1): the check's business key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckKey {
    pub certificate_id: String,
    pub check_no: i32,
}

impl CheckKey {
    pub fn workflow_id(&self) -> String {
        format!("monitor:{}:{}", self.certificate_id, self.check_no)
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DueChecks {
    pub items: Vec<CheckKey>,
    pub next: Option<MonitorCursor>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckOutcome {
    /// OK, ANOMALY, or SKIPPED (the certificate is no longer valid, or the check was done).
    pub result: String,
    pub findings: Vec<String>,
    /// Unresolved monitor flags for this check's anomalies (new or joined): the workflow makes
    /// sure each has its `flag:{id}` workflow.
    pub flags: Vec<FlagRef>,
}

pub(crate) async fn due(deps: &Deps, page: MonitorPage) -> anyhow::Result<DueChecks> {
    let limit = i64::from(page.limit.clamp(1, 1000));
    let (after_at, after_id) = match &page.after {
        Some(c) => (Some(c.next_check_at), c.certificate_id.clone()),
        None => (None, String::new()),
    };
    let rows = sqlx::query!(
        r#"select m.certificate_id, m.check_count + 1 as "check_no!", m.next_check_at
           from monitor m join certificate c using (certificate_id)
           where m.status = 'ACTIVE' and m.checks_remaining > 0 and m.next_check_at <= now()
             and c.status = 'APPROVED' and (c.expires_at is null or c.expires_at > now())
             and ($1::timestamptz is null or (m.next_check_at, m.certificate_id) > ($1, $2))
           order by m.next_check_at, m.certificate_id
           limit $3"#,
        after_at,
        after_id,
        limit,
    )
    .fetch_all(&deps.db)
    .await
    .context("Failed to page through due monitors")?;
    let next = (rows.len() as i64 == limit)
        .then(|| rows.last())
        .flatten()
        .map(|r| MonitorCursor {
            next_check_at: r.next_check_at,
            certificate_id: r.certificate_id.clone(),
        });
    Ok(DueChecks {
        items: rows
            .into_iter()
            .map(|r| CheckKey {
                certificate_id: r.certificate_id,
                check_no: r.check_no,
            })
            .collect(),
        next,
    })
}

#[tracing::instrument(name = "monitor_check", skip_all, fields(certificate_id = %key.certificate_id, check_no = key.check_no))]
pub(crate) async fn run_check(deps: &Deps, key: CheckKey) -> anyhow::Result<CheckOutcome> {
    let monitor = sqlx::query!(
        r#"select m.checks, m.check_count, m.baseline, m.interval_secs, c.status as certificate_status,
                  c.expires_at, c.developer_id as "developer_id?"
           from monitor m join certificate c using (certificate_id) where m.certificate_id = $1"#,
        key.certificate_id
    )
    .fetch_one(&deps.db)
    .await
    .context("Failed to load the monitor")?;
    if monitor.check_count >= key.check_no {
        // Done by an earlier attempt: answer what it recorded.
        return stored_outcome(deps, &key).await;
    }
    if monitor.certificate_status != "APPROVED"
        || monitor.expires_at.is_some_and(|at| at <= Utc::now())
    {
        // The check's number is used up, so a later check (after a reinstatement) has its own.
        let reason = format!(
            "the certificate is {}; nothing is checked",
            monitor.certificate_status
        );
        let mut tx = deps.db.begin().await?;
        let recorded = sqlx::query!(
            r#"insert into monitor_check (certificate_id, check_no, result, findings)
               values ($1, $2, 'SKIPPED', $3) on conflict do nothing"#,
            key.certificate_id,
            key.check_no,
            json!([reason]),
        )
        .execute(&mut *tx)
        .await
        .context("Failed to record the skipped check")?;
        if recorded.rows_affected() == 1 {
            sqlx::query!(
                r#"update monitor set check_count = $2,
                       next_check_at = now() + make_interval(secs => interval_secs::double precision)
                   where certificate_id = $1 and check_count = $2 - 1"#,
                key.certificate_id,
                key.check_no,
            )
            .execute(&mut *tx)
            .await
            .context("Failed to advance the monitor")?;
        }
        tx.commit().await?;
        return stored_outcome(deps, &key).await;
    }
    let baseline = monitor.baseline;
    let mut anomalies: Vec<String> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    let mut probe_record = Value::Null;
    if monitor.checks.iter().any(|c| c == "ENDPOINTS") {
        let (found, record) = check_endpoints(deps, &baseline["endpoints"]).await;
        anomalies.extend(found);
        probe_record = record;
    }
    let mut drift: Option<(String, String)> = None;
    if monitor.checks.iter().any(|c| c == "SOURCE") {
        let (state, detail) = check_source(deps, &baseline["source"]).await?;
        if state == "DRIFTED" {
            anomalies.push(format!("source drift: {detail}"));
        }
        drift = Some((state.to_owned(), detail));
    }
    if monitor.checks.iter().any(|c| c == "SITE")
        && let (Some(developer), Some(url)) =
            (monitor.developer_id, baseline["site"]["url"].as_str())
        && let Some(note) = sites::recheck(deps, developer, url).await?
    {
        notes.push(note);
    }
    let result = if anomalies.is_empty() {
        "OK"
    } else {
        "ANOMALY"
    };
    let mut findings = anomalies.clone();
    findings.extend(notes);
    let mut tx = deps.db.begin().await?;
    let recorded = sqlx::query!(
        r#"insert into monitor_check (certificate_id, check_no, result, findings, probe)
           values ($1, $2, $3, $4, $5) on conflict do nothing"#,
        key.certificate_id,
        key.check_no,
        result,
        json!(findings),
        probe_record,
    )
    .execute(&mut *tx)
    .await
    .context("Failed to record the check")?;
    if recorded.rows_affected() == 1 {
        sqlx::query!(
            r#"update monitor set check_count = $2, checks_remaining = greatest(checks_remaining - 1, 0),
                   status = case when checks_remaining <= 1 then 'COMPLETED' else status end,
                   last_check_at = now(), last_result = $3, last_findings = $4,
                   next_check_at = now() + make_interval(secs => interval_secs::double precision),
                   drift_state = coalesce($5, drift_state), drift_detail = coalesce($6, drift_detail),
                   drift_checked_at = case when $5::text is null then drift_checked_at else now() end
               where certificate_id = $1 and check_count = $2 - 1"#,
            key.certificate_id,
            key.check_no,
            result,
            json!(findings),
            drift.as_ref().map(|d| d.0.clone()),
            drift.as_ref().map(|d| d.1.clone()),
        )
        .execute(&mut *tx)
        .await
        .context("Failed to advance the monitor")?;
        for reason in &anomalies {
            let reason: String = format!("monitor: {reason}").chars().take(2000).collect();
            sqlx::query!(
                r#"insert into certificate_flag (flag_id, certificate_id, reason, evidence, reporter_hash, raised_by)
                   values ($1, $2, $3, $4, $5, 'MONITOR')
                   on conflict do nothing"#,
                sqlx::types::Uuid::new_v4(),
                key.certificate_id,
                reason,
                format!("monitor check {} at {}", key.check_no, Utc::now().to_rfc3339()),
                MONITOR_REPORTER,
            )
            .execute(&mut *tx)
            .await
            .context("Failed to open a monitor flag")?;
        }
    }
    tx.commit().await.context("Failed to commit the check")?;
    if recorded.rows_affected() == 0 {
        // An overlapping attempt recorded this check first: its result is the check's.
        return stored_outcome(deps, &key).await;
    }
    tracing::info!(result, anomalies = anomalies.len(), "monitor check done");
    Ok(CheckOutcome {
        result: result.into(),
        findings,
        flags: open_monitor_flags(deps, &key.certificate_id).await?,
    })
}

/// The recorded result of a check, with the monitor flags left open.
async fn stored_outcome(deps: &Deps, key: &CheckKey) -> anyhow::Result<CheckOutcome> {
    let stored = sqlx::query!(
        "select result, findings from monitor_check where certificate_id = $1 and check_no = $2",
        key.certificate_id,
        key.check_no
    )
    .fetch_optional(&deps.db)
    .await
    .context("Failed to read the recorded check")?;
    Ok(CheckOutcome {
        result: stored
            .as_ref()
            .map_or("SKIPPED".into(), |s| s.result.clone()),
        findings: stored
            .and_then(|s| serde_json::from_value(s.findings).ok())
            .unwrap_or_default(),
        flags: open_monitor_flags(deps, &key.certificate_id).await?,
    })
}

async fn open_monitor_flags(deps: &Deps, certificate_id: &str) -> anyhow::Result<Vec<FlagRef>> {
    let ids = sqlx::query_scalar!(
        r#"select flag_id from certificate_flag
           where certificate_id = $1 and raised_by = 'MONITOR' and status in ('OPEN', 'TRIAGED', 'REAUDIT')
           order by created_at"#,
        certificate_id
    )
    .fetch_all(&deps.db)
    .await
    .context("Failed to list the monitor's open flags")?;
    Ok(ids
        .into_iter()
        .map(|id| FlagRef {
            flag_id: id.to_string(),
            certificate_id: certificate_id.to_owned(),
            workflow_id: format!("flag:{id}"),
        })
        .collect())
}

/// Probes each endpoint probed at issuance and names what changed for the worse.
async fn check_endpoints(deps: &Deps, baseline: &Value) -> (Vec<String>, Value) {
    let Some(endpoints) = baseline.as_array() else {
        return (Vec::new(), Value::Null);
    };
    let declared: Vec<DeclaredEndpoint> = endpoints
        .iter()
        .map(|e| DeclaredEndpoint {
            url: e["url"].as_str().unwrap_or_default().to_owned(),
            method: e["method"].as_str().unwrap_or("GET").to_owned(),
            authenticated: e["authenticated"].as_bool().unwrap_or(false),
        })
        .collect();
    let mut report = deps.prober.probe_all(&declared, true).await;
    let mut anomalies = Vec::new();
    for (i, then) in endpoints.iter().enumerate() {
        if compare(then, &report.endpoints[i]).is_empty() {
            continue;
        }
        // One failed exchange is not an outage: an endpoint flagged is probed once more, and
        // only what the second probe still shows is an anomaly.
        tokio::time::sleep(REPROBE_AFTER).await;
        report.endpoints[i] = deps.prober.probe(&declared[i]).await;
        anomalies.extend(compare(then, &report.endpoints[i]));
    }
    (anomalies, serde_json::to_value(&report).unwrap_or_default())
}

/// An endpoint's anomalies against its facts at issuance.
pub fn compare(then: &Value, now: &EndpointProbe) -> Vec<String> {
    let name = format!("{} {}", now.method, now.url);
    let mut found = Vec::new();
    if now.blocks_approval {
        found.push(format!("{name}: {}", now.findings.join("; ")));
        return found;
    }
    let was_healthy = then["healthy"].as_bool().unwrap_or(true);
    match (now.status, &now.error) {
        (_, Some(error)) => found.push(format!("{name} is unreachable: {error}")),
        (Some(status @ (404 | 410)), _) => found.push(format!("{name} is gone ({status})")),
        (Some(status @ 500..=599), _) if was_healthy => {
            found.push(format!("{name} fails with a server error ({status})"))
        }
        _ => {}
    }
    let (host_then, host_now) = (then["finalHost"].as_str(), now.final_host.as_deref());
    if let (Some(a), Some(b)) = (host_then, host_now)
        && !a.eq_ignore_ascii_case(b)
    {
        let declared_host = url::Url::parse(&now.url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
            .unwrap_or_default();
        if b.eq_ignore_ascii_case(&declared_host) {
            found.push(format!("{name} no longer redirects to {a}"));
        } else {
            found.push(format!(
                "{name} now redirects off the declared host to {b} (was {a})"
            ));
        }
    }
    let (tls_then, tls_now) = (
        then["tlsFingerprint"].as_str(),
        now.tls.as_ref().map(|t| t.fingerprint.as_str()),
    );
    if let (Some(a), Some(b)) = (tls_then, tls_now)
        && a != b
    {
        found.push(format!("{name} serves a different TLS certificate"));
    }
    if then["refusesAnonymous"] == json!(true) && now.refuses_anonymous == Some(false) {
        found.push(format!(
            "{name} is declared authenticated but now answers anonymous calls"
        ));
    }
    if now.severity >= ProbeSeverity::High && found.is_empty() && was_healthy {
        found.push(format!("{name}: {}", now.findings.join("; ")));
    }
    found
}

/// Re-resolves the pinned ref: `UNCHANGED` when the archive holds the reviewed files,
/// `DRIFTED` with what changed otherwise.
async fn check_source(deps: &Deps, baseline: &Value) -> anyhow::Result<(&'static str, String)> {
    let git = GitSource {
        repository: baseline["repository"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        reference: baseline["reference"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    };
    let url = archive_url(&deps.settings.sandbox.git_archive_base_url, &git);
    let bytes = match download(
        &deps.http,
        &url,
        deps.settings.sandbox.git_max_archive_bytes,
    )
    .await
    .with_context(|| format!("Failed to re-resolve {url}"))?
    {
        Ok(bytes) => bytes,
        Err(gone) => {
            return Ok((
                "DRIFTED",
                format!(
                    "{}@{} can no longer be fetched: {gone}",
                    git.repository, git.reference
                ),
            ));
        }
    };
    if sigma_shared::domain::Sha256Hex::of(&bytes).as_str()
        == baseline["archiveSha256"].as_str().unwrap_or_default()
    {
        return Ok((
            "UNCHANGED",
            format!(
                "{}@{} serves the reviewed archive",
                git.repository, git.reference
            ),
        ));
    }
    let limits = deps.settings.sandbox.limits;
    let files = match sigma_scanner::unpack::unpack(&bytes, &limits) {
        Ok(files) => sigma_scanner::unpack::strip_single_root(files),
        Err(e) => {
            return Ok((
                "DRIFTED",
                format!(
                    "{}@{} now serves an archive that cannot be unpacked: {e}",
                    git.repository, git.reference
                ),
            ));
        }
    };
    let digest = sigma_scanner::unpack::bundle_digest(&files);
    if Some(digest.as_str()) == baseline["bundleDigest"].as_str() {
        return Ok((
            "UNCHANGED",
            format!(
                "{}@{} serves the reviewed files (the archive was re-packed)",
                git.repository, git.reference
            ),
        ));
    }
    let skill_md = files
        .iter()
        .find(|f| f.path == "SKILL.md")
        .map(|f| lf_normalised_sha256(&f.bytes).to_string());
    let mut detail = format!(
        "{}@{} now points at different files (digest {digest})",
        git.repository, git.reference
    );
    if skill_md.as_deref() != baseline["skillMdSha256"].as_str() {
        detail.push_str(&format!(
            "; SKILL.md changed (now {})",
            skill_md.as_deref().unwrap_or("absent")
        ));
    }
    Ok(("DRIFTED", detail))
}
