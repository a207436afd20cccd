//! The fixture corpus: every skill under `tests/corpus/` is scanned from its directory and checked
//! against its `expect.toml`. Malicious fixtures name the rules that must fire (as counted
//! findings); benign ones bound the risk level and name rules that must stay quiet.

use std::path::Path;

use serde::Deserialize;
use sigma_scanner::report::{RiskLevel, ScanRequest};
use sigma_scanner::{Report, RulePack, unpack};
use sigma_shared::config::SandboxLimits;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    description: String,
    category: Option<String>,
    #[serde(default)]
    must: Vec<String>,
    #[serde(default)]
    must_not: Vec<String>,
    #[serde(default)]
    must_not_counted: Vec<String>,
    min_risk: Option<String>,
    max_risk: Option<String>,
    blocked: Option<bool>,
    min_mismatch: Option<u32>,
}

const LIMITS: SandboxLimits = SandboxLimits {
    max_files: 50,
    max_total_bytes: 512 * 1024,
    max_file_bytes: 200 * 1024,
    max_nested_depth: 2,
};

fn scan_dir(dir: &Path, category: Option<&str>) -> Report {
    sigma_scanner::scan(ScanRequest {
        category: category.map(|c| c.parse().unwrap()),
        files: unpack::read_dir(dir, &LIMITS).map(|files| {
            files
                .into_iter()
                .filter(|f| f.path != "expect.toml")
                .collect()
        }),
        over_limits: None,
        limits: LIMITS,
        source: None,
        pack: RulePack::builtin(),
    })
}

fn check(name: &str, expect: &Expect, report: &Report) -> Vec<String> {
    let mut problems = Vec::new();
    let counted: Vec<&str> = report
        .findings
        .iter()
        .filter(|f| f.counts())
        .map(|f| f.rule_id.as_str())
        .collect();
    let any: Vec<&str> = report.findings.iter().map(|f| f.rule_id.as_str()).collect();
    for id in &expect.must {
        if !counted.contains(&id.as_str()) {
            problems.push(format!("{name}: expected counted {id}"));
        }
    }
    for id in &expect.must_not {
        if any.contains(&id.as_str()) {
            problems.push(format!("{name}: unexpected {id}"));
        }
    }
    for id in &expect.must_not_counted {
        if counted.contains(&id.as_str()) {
            problems.push(format!("{name}: {id} should not count"));
        }
    }
    let level = |raw: &Option<String>| raw.as_deref().map(|r| RiskLevel::parse(r).unwrap());
    if let Some(min) = level(&expect.min_risk)
        && report.risk_level < min
    {
        problems.push(format!(
            "{name}: risk {:?} below {min:?}",
            report.risk_level
        ));
    }
    if let Some(max) = level(&expect.max_risk)
        && report.risk_level > max
    {
        problems.push(format!(
            "{name}: risk {:?} above {max:?}",
            report.risk_level
        ));
    }
    if let Some(blocked) = expect.blocked
        && report.blocked != blocked
    {
        problems.push(format!(
            "{name}: blocked {} (reasons {:?})",
            report.blocked, report.block_reasons
        ));
    }
    if let Some(min) = expect.min_mismatch
        && report.counts.manifest_mismatch < min
    {
        problems.push(format!(
            "{name}: {} manifest mismatches, expected at least {min}",
            report.counts.manifest_mismatch
        ));
    }
    if !problems.is_empty() {
        problems.push(format!(
            "  {name} ({}) findings: {}",
            expect.description,
            report
                .findings
                .iter()
                .map(|f| format!(
                    "{}[{}/{:?}/{:?}]",
                    f.rule_id, f.severity, f.confidence, f.context
                ))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    problems
}

#[test]
fn every_fixture_meets_its_expectations() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut names: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert!(names.len() >= 40, "the corpus has {} skills", names.len());
    let (mut malicious, mut benign) = (0, 0);
    let mut problems = Vec::new();
    for name in &names {
        let dir = root.join(name);
        let expect: Expect =
            toml::from_str(&std::fs::read_to_string(dir.join("expect.toml")).unwrap())
                .unwrap_or_else(|e| panic!("{name}/expect.toml: {e}"));
        if name.starts_with("ok-") {
            benign += 1;
            assert!(
                expect.max_risk.is_some(),
                "{name}: benign fixtures bound the risk"
            );
        } else {
            malicious += 1;
            assert!(
                !expect.must.is_empty(),
                "{name}: malicious fixtures name their rules"
            );
        }
        let report = scan_dir(&dir, expect.category.as_deref());
        problems.extend(check(name, &expect, &report));
    }
    assert!(
        malicious >= 30 && benign >= 10,
        "{malicious} malicious, {benign} benign"
    );
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn every_rule_category_is_exercised_by_a_malicious_fixture() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut seen = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(&root).unwrap() {
        let dir = entry.unwrap().path();
        if dir
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("ok-")
        {
            continue;
        }
        let report = scan_dir(&dir, None);
        seen.extend(
            report
                .findings
                .iter()
                .filter(|f| f.counts())
                .map(|f| f.category),
        );
    }
    use sigma_scanner::RuleCategory::*;
    for category in [
        PromptInjection,
        HiddenContent,
        Secret,
        Exfiltration,
        CodeExecution,
        Obfuscation,
        SuspiciousDestination,
        InstallHook,
        Typosquat,
        Dependency,
        ManifestMismatch,
        Persistence,
        ExcessiveAgency,
        ResourceAbuse,
        Destructive,
        OpaqueArtifact,
    ] {
        assert!(
            seen.contains(&category),
            "no fixture exercises {category:?}"
        );
    }
}
