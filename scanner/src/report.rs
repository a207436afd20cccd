//! One scan, end to end, and the report it produces.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use sigma_shared::config::SandboxLimits;
use sigma_shared::domain::{Category, Severity, Sha256Hex, lf_normalised_sha256};

use crate::content::{FileKind, TextEncoding, classify};
use crate::context::{TextMap, role};
use crate::deps::{self, Dependency};
use crate::detect::{self, structural};
use crate::finding::{Finding, RuleCategory};
use crate::manifest::{self, Manifest};
use crate::rules::RulePack;
use crate::unpack::{self, BundleFile, UnpackError};

/// Overall risk. `none` means nothing counted; the pipeline maps it to `LOW`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RiskLevel {
    None,
    Low,
    Medium,
    High,
    Critical,
}

impl RiskLevel {
    pub fn from_severity(severity: Option<Severity>) -> Self {
        match severity {
            None | Some(Severity::None) => Self::None,
            Some(Severity::Low) => Self::Low,
            Some(Severity::Medium) => Self::Medium,
            Some(Severity::High) => Self::High,
            Some(Severity::Critical) => Self::Critical,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Critical => "critical",
        }
    }
    pub fn parse(raw: &str) -> Option<Self> {
        [
            Self::None,
            Self::Low,
            Self::Medium,
            Self::High,
            Self::Critical,
        ]
        .into_iter()
        .find(|l| l.as_str().eq_ignore_ascii_case(raw))
    }
    /// The pipeline's four-level sandbox risk.
    pub fn sandbox_level(self) -> sigma_shared::domain::RiskLevel {
        use sigma_shared::domain::RiskLevel as R;
        match self {
            Self::None | Self::Low => R::Low,
            Self::Medium => R::Medium,
            Self::High => R::High,
            Self::Critical => R::Critical,
        }
    }
}

/// Where the scanned bytes came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Source {
    Upload {
        sha256: String,
    },
    Git {
        repository: String,
        reference: String,
        archive_sha256: String,
    },
    Directory {
        path: String,
    },
    Archive {
        path: String,
        sha256: String,
    },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FileFact {
    pub path: String,
    pub sha256: Sha256Hex,
    pub bytes: u64,
    pub kind: FileKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encoding: Option<TextEncoding>,
    /// 0 for the bundle's own files; n for files inside nested archives.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub depth: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    pub shell: bool,
    pub env: bool,
    pub process: bool,
    pub filesystem: bool,
    pub network: bool,
    pub wallet: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub prompt_injection: u32,
    pub real_secret: u32,
    pub high_risk: u32,
    pub manifest_mismatch: u32,
    /// Findings that count (medium or high confidence).
    pub counted: u32,
    /// Findings kept for reviewers at low confidence (quoted, negated, documentation, comments).
    pub low_confidence: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RulePackInfo {
    pub name: String,
    pub version: String,
    pub sha256: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    pub scanner_version: String,
    pub rule_pack: RulePackInfo,
    pub category: Category,
    pub source: Option<Source>,
    pub risk_level: RiskLevel,
    pub blocked: bool,
    pub block_reasons: Vec<String>,
    /// SHA-256 over the `sha256sum` lines of every file (see `unpack::bundle_digest`).
    pub bundle_digest: Option<String>,
    pub skill_md_sha256: Option<Sha256Hex>,
    pub total_bytes: u64,
    pub files: Vec<FileFact>,
    pub languages: BTreeMap<String, u32>,
    pub manifest: Option<Manifest>,
    pub entry_point: Option<String>,
    pub dependencies: Vec<Dependency>,
    pub external_hosts: Vec<String>,
    pub capabilities: Capabilities,
    pub counts: Counts,
    pub findings: Vec<Finding>,
    /// Medium-severity counted findings, as one-line texts for the council.
    pub warnings: Vec<String>,
    /// High and critical counted findings, as one-line texts for the council.
    pub errors: Vec<String>,
}

/// The digests that identify what was scanned, in one place: the bundle digest (see
/// [`unpack::bundle_digest`]), the LF-normalised SHA-256 of the manifest `SKILL.md` (as certificates
/// record it) and the SHA-256 of each of the bundle's own files (not of files inside nested
/// archives, which the bundle digest does not cover either).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digests {
    pub bundle: Option<String>,
    pub skill_md_sha256: Option<Sha256Hex>,
    /// SHA-256 of the input archive's bytes, when an archive was scanned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archive_sha256: Option<String>,
    pub files: BTreeMap<String, Sha256Hex>,
}

impl Report {
    pub fn digests(&self) -> Digests {
        Digests {
            bundle: self.bundle_digest.clone(),
            skill_md_sha256: self.skill_md_sha256.clone(),
            archive_sha256: match &self.source {
                Some(Source::Archive { sha256, .. }) | Some(Source::Upload { sha256 }) => {
                    Some(sha256.clone())
                }
                Some(Source::Git { archive_sha256, .. }) => Some(archive_sha256.clone()),
                _ => None,
            },
            files: self
                .files
                .iter()
                .filter(|f| f.depth == 0)
                .map(|f| (f.path.clone(), f.sha256.clone()))
                .collect(),
        }
    }

    /// The report as JSON with its [`Digests`] added under `digests`: what `sigma scan --format
    /// json` prints.
    pub fn to_json_with_digests(&self) -> serde_json::Value {
        let mut value = serde_json::to_value(self).expect("a report serialises");
        value["digests"] = serde_json::to_value(self.digests()).expect("digests serialise");
        value
    }

    pub fn max_counted_severity(&self) -> Option<Severity> {
        self.findings
            .iter()
            .filter(|f| f.counts())
            .map(|f| f.severity)
            .max()
    }
}

/// What to scan and how.
pub struct ScanRequest<'a> {
    /// `None` infers the category from the files (CLI use).
    pub category: Option<Category>,
    pub files: Result<Vec<BundleFile>, UnpackError>,
    /// The submission limit the bundle broke, if it was read again under the analysis caps.
    pub over_limits: Option<UnpackError>,
    pub limits: SandboxLimits,
    pub source: Option<Source>,
    pub pack: &'a RulePack,
}

/// Guesses the category of an unlabelled bundle, for offline scans.
pub fn infer_category(files: &[BundleFile]) -> Category {
    let skill = files
        .iter()
        .any(|f| f.path == "SKILL.md" || f.path.ends_with("/SKILL.md"));
    let code = files
        .iter()
        .any(|f| classify(&f.path, &f.bytes).kind == FileKind::Code);
    let packages = files
        .iter()
        .any(|f| deps::is_requirements(&f.path) || deps::is_package_json(&f.path));
    match (skill, code, packages) {
        (true, true, true) => Category::SkillCodePackages,
        (true, true, false) => Category::SkillCode,
        (true, false, _) => Category::Skill,
        (false, true, true) => Category::CodePackages,
        (false, _, _) => Category::Code,
    }
}

fn blocked_report(request: &ScanRequest<'_>, category: Category, error: &UnpackError) -> Report {
    Report {
        scanner_version: crate::SCANNER_VERSION.into(),
        rule_pack: pack_info(request.pack),
        category,
        source: request.source.clone(),
        // A hostile archive is critical; one that is merely unreadable was never analysed.
        risk_level: if error.is_hostile() {
            RiskLevel::Critical
        } else {
            RiskLevel::None
        },
        blocked: true,
        block_reasons: vec![format!("bundle rejected: {error}")],
        bundle_digest: None,
        skill_md_sha256: None,
        total_bytes: 0,
        files: Vec::new(),
        languages: BTreeMap::new(),
        manifest: None,
        entry_point: None,
        dependencies: Vec::new(),
        external_hosts: Vec::new(),
        capabilities: Capabilities::default(),
        counts: Counts::default(),
        findings: Vec::new(),
        warnings: Vec::new(),
        errors: Vec::new(),
    }
}

fn pack_info(pack: &RulePack) -> RulePackInfo {
    RulePackInfo {
        name: pack.name.clone(),
        version: pack.version.clone(),
        sha256: pack.sha256.clone(),
    }
}

const CONVENTIONAL_ENTRIES: &[&str] = &[
    "main.py",
    "__main__.py",
    "app.py",
    "cli.py",
    "server.py",
    "run.py",
    "index.js",
    "index.mjs",
    "index.ts",
    "main.js",
    "main.ts",
    "server.js",
    "server.ts",
    "src/index.ts",
    "src/index.js",
    "src/main.py",
    "src/main.ts",
    "src/server.ts",
    "run.sh",
    "main.sh",
    "main.go",
    "src/main.rs",
];

/// Scans a bundle. Never panics on hostile input; every problem becomes a finding or a block
/// reason.
/// The report's name for a capability of the rule pack (the pack may name others; they are not
/// facts the report knows).
fn capability_name(name: &str) -> Option<&'static str> {
    Some(match name {
        "shell" => "shell",
        "env" => "env",
        "process" => "process",
        "filesystem" => "filesystem",
        "network" => "network",
        "wallet" => "wallet",
        _ => return None,
    })
}

pub fn scan(request: ScanRequest<'_>) -> Report {
    let pack = request.pack;
    let files = match &request.files {
        Ok(files) => files.clone(),
        Err(e) => {
            let category = request.category.unwrap_or(Category::Skill);
            return blocked_report(&request, category, e);
        }
    };
    let category = request.category.unwrap_or_else(|| infer_category(&files));
    let mut block_reasons = Vec::new();
    // Submission rules (limits, manifest, entry point, dependency pinning): they reject a
    // submission, and are findings when a skill is merely analysed (no category given).
    let mut policy: Vec<String> = Vec::new();
    let mut findings = Vec::new();
    // Hostile structure (not mere size) makes the bundle critical whatever else it holds.
    let mut hostile = false;
    let mut nested_limits = request.limits;
    if let Some(e) = &request.over_limits {
        policy.push(format!("bundle rejected: {e}"));
        nested_limits = SandboxLimits {
            max_nested_depth: request.limits.max_nested_depth,
            ..unpack::ANALYSIS_CAPS
        };
    }

    // Nested archives are opened to the depth limit; their files are scanned, not digested.
    let (nested, problems) = match unpack::expand_nested(&files, &nested_limits) {
        Ok(found) => found,
        Err(e) => {
            hostile |= e.is_hostile();
            block_reasons.push(format!("bundle rejected: {e}"));
            (Vec::new(), Vec::new())
        }
    };
    for problem in problems {
        findings.push(structural(
            "ART-006",
            RuleCategory::OpaqueArtifact,
            Severity::Medium,
            &problem.path,
            None,
            format!("nested archive cannot be opened: {}", problem.reason),
            "Ship files unpacked so they can be reviewed.",
        ));
    }

    // The manifest: the root SKILL.md wins; a single nested one is a skill in a folder; several
    // nested ones and none at the root are ambiguous, and a decoy could be certified.
    let skill_mds: Vec<&BundleFile> = files
        .iter()
        .filter(|f| f.path == "SKILL.md" || f.path.ends_with("/SKILL.md"))
        .collect();
    let skill_md = match skill_mds.iter().find(|f| f.path == "SKILL.md") {
        Some(root) => Some(*root),
        None if skill_mds.len() == 1 => Some(skill_mds[0]),
        None if skill_mds.len() > 1 => {
            let paths: Vec<&str> = skill_mds.iter().map(|f| f.path.as_str()).collect();
            policy.push(format!(
                "several SKILL.md files and none at the root: {}",
                paths.join(", ")
            ));
            None
        }
        None => None,
    };
    let skill_root = skill_md
        .map(|f| f.path.trim_end_matches("SKILL.md").to_owned())
        .unwrap_or_default();
    let skill_md_sha256 = skill_md.map(|f| lf_normalised_sha256(&f.bytes));
    let manifest = match skill_md {
        Some(file) => match manifest::parse(&String::from_utf8_lossy(&file.bytes)) {
            Ok(m) => Some(m),
            Err(e) => {
                if category.has_skill() {
                    policy.push(e);
                }
                None
            }
        },
        None => {
            if category.has_skill() && skill_mds.is_empty() {
                policy.push(format!(
                    "category {category} requires a SKILL.md, and the bundle has none"
                ));
            }
            None
        }
    };
    let declared_hosts: BTreeSet<String> = manifest
        .as_ref()
        .map(|m| {
            m.external_calls
                .iter()
                .filter_map(|c| detect::host_of(&c.url))
                .collect()
        })
        .unwrap_or_default();

    let all_paths: BTreeSet<&str> = files
        .iter()
        .chain(&nested)
        .map(|f| f.path.as_str())
        .collect();
    let mut facts = Vec::new();
    let mut languages: BTreeMap<String, u32> = BTreeMap::new();
    let mut parsed_deps = deps::Parsed::default();
    let mut used_hosts = BTreeMap::new();
    let mut used_caps: BTreeMap<&'static str, (String, usize)> = BTreeMap::new();
    let mut code_files = 0usize;
    let mut package_json_entries = Vec::new();

    let mut texts: Vec<(String, FileKind, Option<&'static str>, String)> = Vec::new();
    for file in files.iter().chain(&nested) {
        let classified = classify(&file.path, &file.bytes);
        facts.push(FileFact {
            path: file.path.clone(),
            sha256: Sha256Hex::of(&file.bytes),
            bytes: file.bytes.len() as u64,
            kind: classified.kind,
            language: classified.language.map(str::to_owned),
            encoding: classified.encoding,
            depth: file.depth,
        });
        if let Some(language) = classified.language {
            *languages.entry(language.to_owned()).or_default() += 1;
        }
        detect::artifact(&file.path, &classified, &all_paths, &mut findings);
        let Some(text) = classified.text else {
            continue;
        };
        if classified.encoding == Some(TextEncoding::Lossy) && classified.kind != FileKind::Prose {
            findings.push(structural(
                "ART-007",
                RuleCategory::OpaqueArtifact,
                Severity::Low,
                &file.path,
                None,
                "text is not valid UTF-8 and was decoded lossily".into(),
                "Save source files as UTF-8.",
            ));
        }
        if classified.kind == FileKind::Code {
            code_files += 1;
        }
        if deps::is_requirements(&file.path) {
            deps::parse_requirements(&file.path, &text, &mut parsed_deps);
        } else if deps::is_package_json(&file.path) {
            deps::parse_package_json(&file.path, &text, &mut parsed_deps);
            if let Ok(json) = serde_json::from_str::<serde_json::Value>(&text) {
                let dir = file.path.trim_end_matches("package.json").to_owned();
                if let Some(main) = json.get("main").and_then(|v| v.as_str()) {
                    package_json_entries.push(format!("{dir}{}", main.trim_start_matches("./")));
                }
            }
        } else if file.path.rsplit('/').next() == Some(".npmrc") {
            deps::parse_npmrc(&file.path, &text, &mut parsed_deps);
        }
        texts.push((
            file.path.clone(),
            classified.kind,
            classified.language,
            text,
        ));
    }

    // The text passes: rules, hidden Unicode, taint, hosts, capabilities, blobs (whose decoded
    // text is scanned again with everything else, once).
    let mut decoded = Vec::new();
    for (path, kind, language, text) in &texts {
        let map = TextMap::new(text, *kind, role(path, *kind), *language);
        crate::engine::run_rules(pack, path, &map, &mut findings);
        crate::unicode::scan(path, &map, &mut findings);
        detect::lookalike_hosts(path, &map, &mut findings);
        if *kind == FileKind::Code {
            // A shell script is shell use in itself.
            if matches!(language, Some("shell" | "powershell" | "batch")) {
                used_caps
                    .entry("shell")
                    .or_insert_with(|| (path.clone(), 1));
            }
            crate::taint::scan(path, &map, &declared_hosts, &mut findings);
            detect::endless_loops(path, &map, &mut findings);
            for capability in &pack.capabilities {
                for pattern in &capability.patterns {
                    if let Some(m) = pattern
                        .find_iter(text)
                        .find(|m| map.context(m.start()) != crate::finding::MatchContext::Comment)
                    {
                        let Some(name) = capability_name(&capability.name) else {
                            continue;
                        };
                        used_caps
                            .entry(name)
                            .or_insert_with(|| (path.clone(), map.line(m.start())));
                    }
                }
            }
        }
        // Dependency manifests name package sources, not destinations the skill calls.
        let dependency_manifest = deps::is_requirements(path)
            || deps::is_package_json(path)
            || path.rsplit('/').next() == Some(".npmrc");
        if matches!(kind, FileKind::Code | FileKind::Config) && !dependency_manifest {
            detect::code_hosts(&map, &mut used_hosts, path);
        }
        decoded.extend(detect::blobs(
            path,
            text,
            |o| map.line(o),
            *kind == FileKind::Code,
            &mut findings,
        ));
    }
    // SKILL.md is executed text: its code blocks are analysed again as code, with the code
    // rules, the taint pass and the capability and host facts (see `blocks`).
    for (path, kind, _, text) in &texts {
        if *kind != FileKind::Prose || role(path, *kind) != crate::context::Role::Skill {
            continue;
        }
        for view in crate::blocks::code_views(text) {
            let map = TextMap::new(
                &view.text,
                FileKind::Code,
                crate::context::Role::Code,
                Some(view.language),
            );
            crate::engine::run_rules(pack, path, &map, &mut findings);
            crate::taint::scan(path, &map, &declared_hosts, &mut findings);
            for capability in &pack.capabilities {
                let Some(name) = capability_name(&capability.name) else {
                    continue;
                };
                if let Some(m) = capability.patterns.iter().find_map(|p| {
                    p.find_iter(&view.text)
                        .find(|m| map.context(m.start()) != crate::finding::MatchContext::Comment)
                }) {
                    used_caps
                        .entry(name)
                        .or_insert_with(|| (path.clone(), map.line(m.start())));
                }
            }
            detect::code_hosts(&map, &mut used_hosts, path);
            // The prose pass already decoded the block's large blobs: rescan each text once.
            for blob in detect::blobs(path, &view.text, |o| map.line(o), true, &mut findings) {
                if !decoded.iter().any(|d| d.name == blob.name) {
                    decoded.push(blob);
                }
            }
        }
    }
    for blob in decoded {
        let kind = if blob.text.lines().count() > 1 || blob.text.contains('(') {
            FileKind::Code
        } else {
            FileKind::Prose
        };
        let map = TextMap::new(&blob.text, kind, crate::context::Role::Code, None);
        crate::engine::run_rules(pack, &blob.name, &map, &mut findings);
        crate::unicode::scan(&blob.name, &map, &mut findings);
    }

    for (hook, command) in &parsed_deps.install_scripts {
        findings.push(Finding {
            snippet: Some(crate::finding::snippet(&format!("{hook}: {command}"))),
            ..structural(
                "INST-003",
                RuleCategory::InstallHook,
                if hook == "prepare" {
                    Severity::Medium
                } else {
                    Severity::High
                },
                "package.json",
                None,
                format!("npm `{hook}` script runs code at install time"),
                "Remove install-time scripts; skills must not run code when installed.",
            )
        });
    }
    detect::dependency_findings(&parsed_deps.dependencies, &mut findings);
    let enforce_deps = category.has_code() || category.has_packages();
    for issue in &parsed_deps.issues {
        findings.push(structural(
            "DEP-002",
            RuleCategory::Dependency,
            Severity::High,
            &issue.file,
            issue.line,
            issue.reason.clone(),
            "Install only from pypi.org and registry.npmjs.org.",
        ));
        if enforce_deps {
            policy.push(format!("{}: {}", issue.file, issue.reason));
        }
    }
    if enforce_deps {
        for dep in parsed_deps
            .dependencies
            .iter()
            .filter(|d| d.status == deps::PinStatus::Rejected && !d.dev)
        {
            policy.push(format!(
                "dependency `{}` in {}: {}",
                dep.name,
                dep.file,
                dep.reason.as_deref().unwrap_or("rejected")
            ));
        }
    }

    // Entry point: declared ones must exist; code categories need one.
    let declared_entry = manifest
        .as_ref()
        .and_then(|m| m.entry_point.clone())
        .map(|e| format!("{skill_root}{}", e.trim_start_matches("./")));
    let entry_point = if let Some(entry) = declared_entry {
        if !all_paths.contains(entry.as_str()) {
            policy.push(format!(
                "the declared entry point `{entry}` is not in the bundle"
            ));
        }
        Some(entry)
    } else {
        package_json_entries
            .iter()
            .find(|e| all_paths.contains(e.as_str()))
            .cloned()
            .or_else(|| {
                CONVENTIONAL_ENTRIES
                    .iter()
                    .map(|e| format!("{skill_root}{e}"))
                    .find(|e| all_paths.contains(e.as_str()))
            })
            .or_else(|| {
                // A script SKILL.md tells the agent to run is an entry point; so is a lone one.
                let instructions = skill_md
                    .map(|f| String::from_utf8_lossy(&f.bytes).into_owned())
                    .unwrap_or_default();
                let code: Vec<&String> = texts
                    .iter()
                    .filter(|(path, kind, _, _)| {
                        *kind == FileKind::Code && !path.contains("!/") && !path.contains('#')
                    })
                    .map(|(path, ..)| path)
                    .collect();
                code.iter()
                    .find(|p| {
                        let relative = p.strip_prefix(skill_root.as_str()).unwrap_or(p);
                        instructions.contains(relative)
                    })
                    .or(if code.len() == 1 { code.first() } else { None })
                    .map(|p| (*p).clone())
            })
    };
    if category.has_code() {
        if code_files == 0 {
            policy.push(format!(
                "category {category} requires source code, and the bundle has none"
            ));
        } else if entry_point.is_none() {
            findings.push(structural(
                "STRUCT-001",
                RuleCategory::Structure,
                Severity::Low,
                "SKILL.md",
                None,
                "no entry point: declare `entrypoint` in SKILL.md or `main` in package.json".into(),
                "Declare the file the skill runs.",
            ));
        }
    }

    if let Some(manifest) = &manifest {
        let claims = skill_md
            .map(|f| String::from_utf8_lossy(&f.bytes).into_owned())
            .unwrap_or_default();
        detect::declared_vs_actual(
            manifest,
            &claims,
            &used_hosts,
            &used_caps,
            code_files > 0,
            &mut findings,
        );
    }

    if request.category.is_some() {
        block_reasons.append(&mut policy);
    } else {
        for reason in policy {
            findings.push(structural(
                "STRUCT-002",
                RuleCategory::Structure,
                Severity::Low,
                "SKILL.md",
                None,
                format!("would be rejected as a submission: {reason}"),
                "Fix it before submitting the skill for certification.",
            ));
        }
    }
    // A SKILL.md code block is read twice (as prose and as code): one finding per rule and line,
    // the worst.
    findings.sort_by(|a, b| {
        (&a.rule_id, &a.file, a.line)
            .cmp(&(&b.rule_id, &b.file, b.line))
            .then(b.severity.cmp(&a.severity))
            .then(b.confidence.cmp(&a.confidence))
    });
    findings.dedup_by(|later, kept| {
        later.line.is_some()
            && (&later.rule_id, &later.file, later.line) == (&kept.rule_id, &kept.file, kept.line)
    });
    for f in findings.iter().filter(|f| f.blocks) {
        block_reasons.push(format!(
            "{} in {}{}: {}",
            f.rule_id,
            f.file,
            f.line.map(|l| format!(":{l}")).unwrap_or_default(),
            f.message
        ));
    }
    findings.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then(b.confidence.cmp(&a.confidence))
            .then(a.file.cmp(&b.file))
            .then(a.line.cmp(&b.line))
            .then(a.rule_id.cmp(&b.rule_id))
    });

    let counted = |pred: &dyn Fn(&Finding) -> bool| {
        findings.iter().filter(|f| f.counts() && pred(f)).count() as u32
    };
    let counts = Counts {
        prompt_injection: counted(&|f| f.category == RuleCategory::PromptInjection),
        real_secret: counted(&|f| f.category == RuleCategory::Secret),
        high_risk: counted(&|f| {
            f.severity >= Severity::High
                && !matches!(
                    f.category,
                    RuleCategory::PromptInjection
                        | RuleCategory::Secret
                        | RuleCategory::ManifestMismatch
                )
        }),
        manifest_mismatch: counted(&|f| f.category == RuleCategory::ManifestMismatch),
        counted: counted(&|_| true),
        low_confidence: findings.iter().filter(|f| !f.counts()).count() as u32,
    };
    let blocked = !block_reasons.is_empty();
    let max = findings
        .iter()
        .filter(|f| f.counts())
        .map(|f| f.severity)
        .max();
    // Policy blocks (size, entry point, dependency rules) reject without saying anything about
    // danger; the risk level is the content's.
    let risk_level = if hostile || findings.iter().any(|f| f.blocks) {
        RiskLevel::Critical
    } else {
        RiskLevel::from_severity(max)
    };
    let line = |f: &Finding| {
        format!(
            "[{}] {}{}: {}",
            f.rule_id,
            f.file,
            f.line.map(|l| format!(":{l}")).unwrap_or_default(),
            f.message
        )
    };
    let capabilities = Capabilities {
        shell: used_caps.contains_key("shell"),
        env: used_caps.contains_key("env"),
        process: used_caps.contains_key("process"),
        filesystem: used_caps.contains_key("filesystem"),
        network: used_caps.contains_key("network") || !used_hosts.is_empty(),
        wallet: used_caps.contains_key("wallet"),
    };
    let mut dependencies = parsed_deps.dependencies;
    dependencies.sort_by(|a, b| a.file.cmp(&b.file).then(a.line.cmp(&b.line)));
    Report {
        scanner_version: crate::SCANNER_VERSION.into(),
        rule_pack: pack_info(pack),
        category,
        source: request.source.clone(),
        risk_level,
        blocked,
        block_reasons,
        bundle_digest: Some(unpack::bundle_digest(&files)),
        skill_md_sha256,
        total_bytes: files.iter().map(|f| f.bytes.len() as u64).sum(),
        files: facts,
        languages,
        manifest,
        entry_point,
        dependencies,
        external_hosts: used_hosts.into_keys().collect(),
        capabilities,
        counts,
        warnings: findings
            .iter()
            .filter(|f| f.counts() && f.severity == Severity::Medium)
            .map(line)
            .collect(),
        errors: findings
            .iter()
            .filter(|f| f.counts() && f.severity >= Severity::High)
            .map(line)
            .collect(),
        findings,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_round_trip_through_json() {
        let limits = SandboxLimits {
            max_files: 5,
            max_total_bytes: 10_000,
            max_file_bytes: 5_000,
            max_nested_depth: 1,
        };
        let report = scan(ScanRequest {
            category: None,
            files: Ok(vec![
                BundleFile::new(
                    "SKILL.md",
                    b"---\nname: x\nexternalCalls: [https://a.io]\n---\nRun `a.py`.\n".to_vec(),
                ),
                BundleFile::new(
                    "a.py",
                    b"import requests\nrequests.get('https://a.io/x')\n".to_vec(),
                ),
            ]),
            over_limits: None,
            limits,
            source: Some(Source::Upload {
                sha256: "00".into(),
            }),
            pack: RulePack::builtin(),
        });
        let json = serde_json::to_string(&report).unwrap();
        let back: Report = serde_json::from_str(&json).unwrap();
        assert_eq!(serde_json::to_string(&back).unwrap(), json);
        // Declaring external calls declares network use.
        assert!(report.findings.is_empty(), "{:?}", report.findings);
        assert_eq!(report.entry_point.as_deref(), Some("a.py"));
        assert!(report.capabilities.network);
        let digests = report.digests();
        assert_eq!(digests.bundle, report.bundle_digest);
        assert_eq!(digests.skill_md_sha256, report.skill_md_sha256);
        assert_eq!(digests.archive_sha256.as_deref(), Some("00"));
        let files: Vec<&str> = digests.files.keys().map(String::as_str).collect();
        assert_eq!(files, ["SKILL.md", "a.py"]);
        assert_eq!(
            digests.files["a.py"].to_string(),
            Sha256Hex::of(b"import requests\nrequests.get('https://a.io/x')\n").to_string()
        );
        let json = report.to_json_with_digests();
        assert_eq!(json["digests"]["bundle"], json["bundle_digest"]);
        assert_eq!(json["digests"]["skill_md_sha256"], json["skill_md_sha256"]);
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Any text in any file kind scans without panicking, and every finding points at a real
        /// line of a real file.
        #[test]
        fn scanning_arbitrary_text_is_total(text in "\\PC{0,400}", name in "(SKILL\\.md|a\\.py|b\\.js|c\\.json|d\\.txt)") {
            let limits = SandboxLimits { max_files: 5, max_total_bytes: 10_000, max_file_bytes: 5_000, max_nested_depth: 1 };
            let report = scan(ScanRequest {
                category: None,
                files: Ok(vec![BundleFile::new(name.clone(), text.clone().into_bytes())]),
                over_limits: None,
                limits,
                source: None,
                pack: RulePack::builtin(),
            });
            let lines = text.split('\n').count();
            for f in &report.findings {
                if f.file == name && let Some(line) = f.line {
                    prop_assert!(line >= 1 && line <= lines, "{} line {} of {}", f.rule_id, line, lines);
                }
            }
        }
    }
}
