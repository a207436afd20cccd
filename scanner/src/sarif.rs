//! SARIF 2.1.0 output, for code-scanning dashboards: one run, the rule pack as the tool's rules,
//! one result per finding with file and line.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use sigma_shared::domain::Severity;

use crate::report::Report;
use crate::rules::RulePack;

fn level(severity: Severity) -> &'static str {
    match severity {
        Severity::Critical | Severity::High => "error",
        Severity::Medium => "warning",
        Severity::Low | Severity::None => "note",
    }
}

/// GitHub's `security-severity` scale (0–10).
fn security_severity(severity: Severity) -> &'static str {
    match severity {
        Severity::Critical => "9.5",
        Severity::High => "8.0",
        Severity::Medium => "5.5",
        Severity::Low => "2.0",
        Severity::None => "0.0",
    }
}

pub fn to_sarif(report: &Report, pack: &RulePack) -> Value {
    let mut rules: BTreeMap<String, Value> = BTreeMap::new();
    for rule in &pack.rules {
        rules.insert(
            rule.id.clone(),
            json!({
                "id": rule.id,
                "name": rule.category.as_str(),
                "shortDescription": {"text": rule.message},
                "help": {"text": rule.remediation},
                "properties": {"tags": [rule.category.as_str()], "security-severity": security_severity(rule.severity)},
            }),
        );
    }
    for finding in &report.findings {
        rules.entry(finding.rule_id.clone()).or_insert_with(|| {
            json!({
                "id": finding.rule_id,
                "name": finding.category.as_str(),
                "shortDescription": {"text": finding.message},
                "help": {"text": finding.remediation.clone().unwrap_or_default()},
                "properties": {"tags": [finding.category.as_str()], "security-severity": security_severity(finding.severity)},
            })
        });
    }
    let index: BTreeMap<&str, usize> = rules
        .keys()
        .enumerate()
        .map(|(i, k)| (k.as_str(), i))
        .collect();
    let results: Vec<Value> = report
        .findings
        .iter()
        .map(|f| {
            let mut region = serde_json::Map::new();
            if let Some(line) = f.line {
                region.insert("startLine".into(), json!(line));
            }
            if let Some(snippet) = &f.snippet {
                region.insert("snippet".into(), json!({"text": snippet}));
            }
            let mut location = json!({"artifactLocation": {"uri": f.file.replace('#', "%23"), "uriBaseId": "%SRCROOT%"}});
            if !region.is_empty() {
                location["region"] = Value::Object(region);
            }
            json!({
                "ruleId": f.rule_id,
                "ruleIndex": index[f.rule_id.as_str()],
                "level": level(f.severity),
                "message": {"text": f.message},
                "locations": [{"physicalLocation": location}],
                "properties": {
                    "severity": f.severity.as_str(),
                    "confidence": f.confidence,
                    "context": f.context,
                    "category": f.category.as_str(),
                },
            })
        })
        .collect();
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "sigma-scan",
                "version": crate::SCANNER_VERSION,
                "informationUri": "https://github.com/sigma/sigma",
                "rules": rules.into_values().collect::<Vec<_>>(),
                "properties": {"rulePack": report.rule_pack.name, "rulePackVersion": report.rule_pack.version, "rulePackSha256": report.rule_pack.sha256},
            }},
            "results": results,
            "properties": {
                "riskLevel": report.risk_level,
                "blocked": report.blocked,
                "blockReasons": report.block_reasons,
                "bundleDigest": report.bundle_digest,
            },
        }],
    })
}

/// A human-readable summary for terminals.
pub fn to_text(report: &Report) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "risk: {}{}   category: {}   files: {} ({} bytes)   rule pack: {} {}",
        report.risk_level.as_str().to_uppercase(),
        if report.blocked { " (BLOCKED)" } else { "" },
        report.category,
        report.files.len(),
        report.total_bytes,
        report.rule_pack.name,
        report.rule_pack.version
    );
    if let Some(digest) = &report.bundle_digest {
        let _ = writeln!(out, "bundle digest: {digest}");
    }
    for reason in &report.block_reasons {
        let _ = writeln!(out, "blocked: {reason}");
    }
    let c = &report.counts;
    let _ = writeln!(
        out,
        "counts: prompt-injection {}  secrets {}  high-risk {}  manifest-mismatch {}  ({} counted, {} low-confidence)",
        c.prompt_injection,
        c.real_secret,
        c.high_risk,
        c.manifest_mismatch,
        c.counted,
        c.low_confidence
    );
    for f in &report.findings {
        let _ = writeln!(
            out,
            "{:8} {:6} {:9} {}{}  {}{}",
            f.severity.as_str(),
            format!("{:?}", f.confidence).to_lowercase(),
            f.rule_id,
            f.file,
            f.line.map(|l| format!(":{l}")).unwrap_or_default(),
            f.message,
            f.snippet
                .as_ref()
                .map(|s| format!("  «{s}»"))
                .unwrap_or_default()
        );
    }
    out
}
