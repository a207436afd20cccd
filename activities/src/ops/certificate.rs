//! Certificate issuance: a sealed snapshot of what was reviewed and decided, hashed as
//! `keccak256-canonical-json-v1` and stored both in blob storage and in Postgres.

use anyhow::Context;
use serde_json::{Value, json};
use sigma_shared::attestation::certificate_statement;
use sigma_shared::canonical::{PAYLOAD_HASH_ALGORITHM, payload_hash};
use sigma_shared::domain::{RiskLevel, Severity};

use crate::Deps;
use crate::sandbox::SandboxReport;
use crate::types::{CertificateInput, CertificateIssued};

pub const CERTIFICATE_SCHEMA: &str = "sigma-certificate-v1";

fn security_level(risk: RiskLevel) -> &'static str {
    match risk {
        RiskLevel::Low => "CLEAR",
        RiskLevel::Medium => "ADVISORY",
        RiskLevel::High => "ELEVATED",
        RiskLevel::Critical => "BLOCKED",
    }
}

#[tracing::instrument(name = "certificate", skip_all, fields(submission_id = %input.submission_id))]
pub async fn issue(deps: &Deps, input: CertificateInput) -> anyhow::Result<CertificateIssued> {
    let db = &deps.db;
    if let Some(existing) = sqlx::query!(
        "select certificate_id, payload_hash from certificate where certificate_id = $1",
        input.submission_id
    )
    .fetch_optional(db)
    .await?
    {
        return Ok(CertificateIssued {
            certificate_id: existing.certificate_id,
            payload_hash: existing.payload_hash,
        });
    }
    let s = sqlx::query!(
        r#"select s.developer_id, s.category, s.skill_name, s.skill_version, s.source_url, s.source_ref, s.bundle_sha256,
                  s.draft_snapshot, s.renewal_of, s.git_repository, r.report_key, r.analyzed_at, d.decided_by as "decided_by?", d.reason as "decision_reason?"
           from submission s join sandbox_report r using (submission_id)
           left join operator_decision d on d.submission_id = s.submission_id
           where s.submission_id = $1"#,
        input.submission_id
    )
    .fetch_one(db)
    .await
    .context("Failed to load the submission for its certificate")?;
    let report: SandboxReport = deps.blob.get_json(&s.report_key).await?;
    let votes = sqlx::query!(
        r#"select v.phase, v.validator_id, v.model, v.status, v.verdict, v.severity
           from audit_vote v where v.round_id = $1 order by v.phase, v.validator_id"#,
        input.round_id
    )
    .fetch_all(db)
    .await
    .context("Failed to load the round's votes")?;
    let retained = |keep: &dyn Fn(Severity) -> bool| -> Vec<Value> {
        report
            .scan
            .findings
            .iter()
            .filter(|f| f.counts() && keep(f.severity))
            .map(|f| json!({"ruleId": f.rule_id, "category": f.category, "severity": f.severity, "confidence": f.confidence, "path": f.file, "line": f.line, "message": f.message}))
            .collect()
    };
    let manifest = report
        .scan
        .manifest
        .as_ref()
        .map(serde_json::to_value)
        .transpose()?;
    let skill_version = s.skill_version.clone().or_else(|| {
        report
            .scan
            .manifest
            .as_ref()
            .and_then(|m| m.version.clone())
    });
    // A draft submission adds what the developer declared: the entry point and the endpoints
    // (with the SKILL.md's external calls, in that order, once each).
    let draft = s.draft_snapshot.as_ref();
    let entry = draft
        .and_then(|d| d["entry"].as_str())
        .unwrap_or("SKILL.md")
        .to_owned();
    let mut declared: Vec<String> = report
        .scan
        .manifest
        .as_ref()
        .map(|m| m.external_calls.iter().map(|c| c.url.clone()).collect())
        .unwrap_or_default();
    for url in draft
        .and_then(|d| d["declaredEndpoints"].as_array())
        .into_iter()
        .flatten()
        .filter_map(|e| e["url"].as_str())
    {
        if !declared.iter().any(|d| d == url) {
            declared.push(url.to_owned());
        }
    }
    let probe = report.api_probe.as_ref();
    let endpoint_status = probe.map_or("NOT_APPLICABLE", |p| p.status.as_str());
    let probe_summary = probe.map(|p| {
        json!({
            "status": p.status, "reached": p.reached, "skipped": p.skipped, "failed": p.failed,
            "highestSeverity": p.highest_severity, "approvalBlocked": p.approval_blocked, "probedAt": p.probed_at,
            "endpoints": p.endpoints.iter().map(|e| json!({
                "url": e.url, "method": e.method, "probedMethod": e.probed_method, "skipped": e.skipped,
                "status": e.status, "finalHost": e.final_host, "refusesAnonymous": e.refuses_anonymous,
                "matchesDeclaration": e.matches_declaration, "severity": e.severity, "findings": e.findings,
            })).collect::<Vec<_>>(),
        })
    });
    let round_type = if s.renewal_of.is_some() {
        "RENEWAL"
    } else {
        "INITIAL_AUDIT"
    };
    let issued_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let sealed = json!({
        "schemaVersion": CERTIFICATE_SCHEMA,
        "certificateId": input.submission_id,
        "status": "APPROVED",
        "category": s.category,
        "skillName": s.skill_name.clone().or_else(|| report.scan.manifest.as_ref().map(|m| m.name.clone())),
        "skillVersion": skill_version,
        "review": {
            "securityLevel": security_level(report.risk_level()),
            "sandboxRiskLevel": report.risk_level(),
            "sandboxAnalyzedAt": s.analyzed_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "retainedWarnings": retained(&|sev| sev == Severity::Medium),
            "retainedErrors": retained(&|sev| sev >= Severity::High),
            "analyzerVersion": report.scan.scanner_version,
            "rulePack": report.scan.rule_pack,
            "capabilities": report.scan.capabilities,
            "manifestMismatchCount": report.scan.counts.manifest_mismatch,
        },
        "source": {
            "sourceType": if s.source_url.is_some() { "github" } else { "upload" },
            "sourceUrl": s.source_url,
            "sourceRef": s.source_ref,
            "entry": entry,
            "bundleSha256": s.bundle_sha256,
            "bundleDigest": report.scan.bundle_digest,
            "skillMdSha256": report.scan.skill_md_sha256,
            "files": report.scan.files.len(),
        },
        "manifest": manifest,
        // What the skill reaches on the network, declared and observed; `verify` derives its API
        // disclaimer from this on every call.
        "endpointReview": {
            "declaredEndpoints": declared,
            "observedUrls": report.scan.external_hosts,
            "probe": probe_summary,
        },
        "endpointStatus": endpoint_status,
        "roundId": input.round_id,
        "roundType": round_type,
        // A renewal names the certificate it renews: the chain is part of what is signed.
        "renews": s.renewal_of,
        "votes": votes.iter().map(|v| json!({
            "phase": v.phase, "validatorId": v.validator_id, "model": v.model,
            "status": v.status, "verdict": v.verdict, "severity": v.severity,
        })).collect::<Vec<_>>(),
        "decision": {
            "outcome": "APPROVED",
            "policyVersion": input.decision.policy_version,
            "reasons": input.decision.reasons,
            "decidedBy": s.decided_by.clone().unwrap_or_else(|| "consensus".into()),
            "operatorReason": s.decision_reason,
        },
        "issuedAt": issued_at,
        "onChain": {
            "committed": false,
            "txHash": null,
            "explorerUrl": null,
            "network": null,
            "codeVersion": skill_version,
            "immutableCommitmentScope": "No on-chain certification transaction is linked to this certificate snapshot yet.",
        },
    });
    let hash = payload_hash(&sealed)?;
    let envelope = deps
        .keys
        .sign(&certificate_statement(&sealed)?)
        .context("Failed to sign the certificate")?;
    let key_id = envelope.signatures[0].keyid.clone();
    let snapshot_key = deps.blob.put_json("certificates", &sealed).await?;
    let skill_md = report.scan.skill_md_sha256.as_ref().map(|d| d.to_string());
    let bundle_digest = report.scan.bundle_digest.clone().unwrap_or_default();
    let skill_name = sealed["skillName"].as_str().map(str::to_owned);
    let validity = chrono::Duration::days(deps.settings.public.validity_days);
    let renewal_window = chrono::Duration::seconds(deps.settings.ops.renewal_window_secs);
    let interval = |d: chrono::Duration| -> anyhow::Result<sqlx::postgres::types::PgInterval> {
        sqlx::postgres::types::PgInterval::try_from(d.to_std()?).map_err(|e| anyhow::anyhow!("{e}"))
    };
    let mut tx = db.begin().await?;
    // The primary key makes a concurrent or retried issue a no-op; we then return the winner.
    let inserted = sqlx::query!(
        r#"with expiry as (
               -- A renewal extends the renewed certificate's term; a first certificate starts one now.
               select greatest(now(), coalesce((select expires_at from certificate where certificate_id = $12), now()))
                      + $11::interval as expires_at)
           insert into certificate (certificate_id, status, sealed, payload_hash, hash_algorithm, skill_md_sha256,
               bundle_digest, snapshot_key, envelope, signing_key_id, developer_id, expires_at, renewal_due_at,
               renews, round_type)
           select $1, 'APPROVED', $2, $3, $4, $5, $6, $7, $8, $9, $10, e.expires_at, e.expires_at - $13::interval,
                  $12, $14
           from expiry e
           on conflict (certificate_id) do nothing"#,
        input.submission_id,
        sealed,
        hash,
        PAYLOAD_HASH_ALGORITHM,
        skill_md,
        bundle_digest,
        snapshot_key,
        serde_json::to_value(&envelope)?,
        key_id,
        s.developer_id,
        interval(validity)?,
        s.renewal_of,
        interval(renewal_window)?,
        round_type,
    )
    .execute(&mut *tx)
    .await
    .context("Failed to store the certificate")?;
    if inserted.rows_affected() == 1
        && let Some(renewed) = &s.renewal_of
    {
        // The renewed certificate was suspended, revoked or replaced while its renewal was
        // audited: the renewal must not mint a valid certificate around that. The run fails
        // and refunds; the operator's decision on the old certificate stands.
        let standing = sqlx::query_scalar!(
            "select status from certificate where certificate_id = $1 for update",
            renewed
        )
        .fetch_one(&mut *tx)
        .await?;
        anyhow::ensure!(
            matches!(standing.as_str(), "APPROVED" | "EXPIRED"),
            "certificate {renewed} became {standing} during its renewal audit; no renewal is issued"
        );
        sqlx::query!(
            r#"update certificate set status = 'SUPERSEDED', superseded_by = $1, status_changed_at = now(),
                   status_changed_by = 'renewal', status_reason = 'renewed by ' || $1
               where certificate_id = $2 and status in ('APPROVED', 'EXPIRED')"#,
            input.submission_id,
            renewed,
        )
        .execute(&mut *tx)
        .await
        .context("Failed to supersede the renewed certificate")?;
    }
    if inserted.rows_affected() == 1 {
        // A newer certificate of the same developer's same skill replaces the older ones; they stay
        // readable but no longer verify as valid.
        let superseded = sqlx::query!(
            r#"update certificate set status = 'SUPERSEDED', superseded_by = $1, status_changed_at = now(),
                   status_changed_by = 'issuer', status_reason = 'superseded by a newer certificate of the same skill'
               where developer_id = $2 and sealed ->> 'skillName' = $3 and certificate_id <> $1
                 and status = 'APPROVED'"#,
            input.submission_id,
            s.developer_id,
            skill_name,
        )
        .execute(&mut *tx)
        .await
        .context("Failed to supersede older certificates")?;
        if superseded.rows_affected() > 0 {
            tracing::info!(
                superseded = superseded.rows_affected(),
                "older certificates superseded"
            );
        }
    }
    if inserted.rows_affected() == 1 {
        let monitor = monitor_baseline(
            &report,
            s.git_repository.as_deref(),
            s.source_ref.as_deref(),
            &s.bundle_sha256,
            draft,
        );
        if let Some((checks, baseline)) = monitor {
            let ops = &deps.settings.ops;
            sqlx::query!(
                r#"insert into monitor (certificate_id, checks, checks_remaining, interval_secs, next_check_at, baseline,
                       drift_state)
                   values ($1, $2, $3, $4, now() + make_interval(secs => $4::bigint::double precision), $5,
                           case when 'SOURCE' = any($2) then 'UNCHECKED' else 'NOT_APPLICABLE' end)
                   on conflict (certificate_id) do nothing"#,
                input.submission_id,
                &checks,
                ops.monitor_checks.max(0),
                ops.monitor_interval_secs.max(1),
                baseline,
            )
            .execute(&mut *tx)
            .await
            .context("Failed to start the certificate's monitor")?;
        }
    }
    tx.commit()
        .await
        .context("Failed to commit the certificate")?;
    let row = sqlx::query!(
        "select payload_hash from certificate where certificate_id = $1",
        input.submission_id
    )
    .fetch_one(db)
    .await?;
    tracing::info!(payload_hash = %row.payload_hash, key_id, new = inserted.rows_affected() == 1, "certificate issued");
    Ok(CertificateIssued {
        certificate_id: input.submission_id,
        payload_hash: row.payload_hash,
    })
}

/// What a monitor checks for this certificate, and the facts at issuance later checks are
/// compared with: the probed endpoints, the pinned git source, the site the draft named.
/// `None` when there is nothing to watch.
fn monitor_baseline(
    report: &SandboxReport,
    repository: Option<&str>,
    reference: Option<&str>,
    bundle_sha256: &str,
    draft: Option<&Value>,
) -> Option<(Vec<String>, Value)> {
    let mut checks = Vec::new();
    let mut baseline = serde_json::Map::new();
    let probed: Vec<Value> = report
        .api_probe
        .iter()
        .flat_map(|p| &p.endpoints)
        .filter(|e| e.skipped.is_none())
        .map(|e| {
            json!({
                "url": e.url, "method": e.method, "authenticated": e.authenticated,
                "status": e.status, "finalHost": e.final_host,
                "tlsFingerprint": e.tls.as_ref().map(|t| t.fingerprint.clone()),
                "refusesAnonymous": e.refuses_anonymous,
                "healthy": e.severity < crate::probe::ProbeSeverity::High,
            })
        })
        .collect();
    if !probed.is_empty() {
        checks.push("ENDPOINTS".to_owned());
        baseline.insert("endpoints".into(), Value::Array(probed));
    }
    if let (Some(repository), Some(reference)) = (repository, reference) {
        checks.push("SOURCE".to_owned());
        baseline.insert(
            "source".into(),
            json!({
                "repository": repository, "reference": reference, "archiveSha256": bundle_sha256,
                "bundleDigest": report.scan.bundle_digest, "skillMdSha256": report.scan.skill_md_sha256,
            }),
        );
    }
    if let Some(site) = draft.and_then(|d| d["siteUrl"].as_str()) {
        checks.push("SITE".to_owned());
        baseline.insert("site".into(), json!({ "url": site }));
    }
    (!checks.is_empty()).then_some((checks, Value::Object(baseline)))
}
