//! Dependency declarations from `requirements.txt` and `package.json`, judged by the product's
//! pinning rules (SIGMA.md §4.4): exact pins are accepted, ranges a public registry can resolve to
//! one version are recorded for resolution, and everything that cannot be audited as one public
//! release — bare names, `*`/`latest`, wildcards, private indexes, VCS and local sources — is
//! rejected.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ecosystem {
    Pypi,
    Npm,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PinStatus {
    /// One exact version.
    Pinned,
    /// A range the registry resolves to one exact version at quote time.
    Range,
    Rejected,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dependency {
    pub ecosystem: Ecosystem,
    pub name: String,
    /// The declared specifier, as written.
    pub spec: String,
    pub status: PinStatus,
    /// Why it was rejected, when it was.
    pub reason: Option<String>,
    pub file: String,
    pub line: Option<usize>,
    /// Declared only for development (`devDependencies`): recorded, not shipped.
    pub dev: bool,
}

/// A problem with a dependency file as a whole (a private index, an unreadable manifest).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DependencyIssue {
    pub file: String,
    pub line: Option<usize>,
    pub reason: String,
}

#[derive(Clone, Debug, Default)]
pub struct Parsed {
    pub dependencies: Vec<Dependency>,
    pub issues: Vec<DependencyIssue>,
    /// npm lifecycle scripts that run at install time: (`preinstall`, command).
    pub install_scripts: Vec<(String, String)>,
}

pub fn is_requirements(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path).to_ascii_lowercase();
    name.starts_with("requirements") && name.ends_with(".txt")
}

pub fn is_package_json(path: &str) -> bool {
    path.rsplit('/').next() == Some("package.json")
}

/// PyPI names compare case-insensitively with `-`, `_` and `.` equivalent (PEP 503).
pub fn normalise_pypi(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut last_sep = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            if !last_sep {
                out.push('-');
            }
            last_sep = true;
        } else {
            out.push(c.to_ascii_lowercase());
            last_sep = false;
        }
    }
    out
}

pub fn parse_requirements(file: &str, text: &str, out: &mut Parsed) {
    let mut pending = String::new();
    let mut start_line = 0;
    for (index, raw) in text.lines().enumerate() {
        if pending.is_empty() {
            start_line = index + 1;
        }
        // Line continuations join before comments are stripped.
        if let Some(head) = raw.strip_suffix('\\') {
            pending.push_str(head);
            pending.push(' ');
            continue;
        }
        pending.push_str(raw);
        let line = std::mem::take(&mut pending);
        let line = match line
            .find(" #")
            .or_else(|| line.starts_with('#').then_some(0))
        {
            Some(i) => line[..i].trim().to_owned(),
            None => line.trim().to_owned(),
        };
        if line.is_empty() {
            continue;
        }
        requirement_line(file, start_line, &line, out);
    }
}

fn requirement_line(file: &str, line_no: usize, line: &str, out: &mut Parsed) {
    let issue = |reason: String| DependencyIssue {
        file: file.to_owned(),
        line: Some(line_no),
        reason,
    };
    if line.starts_with('-') {
        let option = line.split([' ', '=']).next().unwrap_or(line);
        let reason = match option {
            "-i" | "--index-url" | "--extra-index-url" => {
                "a package index other than pypi.org is not allowed"
            }
            "-f" | "--find-links" => "`--find-links` sources are not allowed",
            "--trusted-host" => "`--trusted-host` weakens TLS checks and is not allowed",
            "-e" | "--editable" => "editable installs (local or VCS sources) are not allowed",
            "-r" | "--requirement" | "-c" | "--constraint" => {
                "nested requirement files are not followed; list every dependency in one file"
            }
            // Hash checking and similar options only make installs stricter.
            "--hash" | "--require-hashes" | "--only-binary" | "--no-binary" | "--prefer-binary" => {
                return;
            }
            _ => "unknown pip option",
        };
        out.issues.push(issue(format!("{reason}: `{line}`")));
        return;
    }
    // Drop environment markers and hash options; they do not change what is installed.
    let spec_part = line.split(';').next().unwrap_or(line).trim();
    let spec_part = spec_part.split(" --").next().unwrap_or(spec_part).trim();
    let reject = |name: &str, reason: &str| Dependency {
        ecosystem: Ecosystem::Pypi,
        name: name.to_owned(),
        spec: spec_part.to_owned(),
        status: PinStatus::Rejected,
        reason: Some(reason.to_owned()),
        file: file.to_owned(),
        line: Some(line_no),
        dev: false,
    };
    let lower = spec_part.to_ascii_lowercase();
    if ["git+", "hg+", "svn+", "bzr+"].iter().any(|p| {
        lower.starts_with(p)
            || lower.contains(&format!("@ {p}"))
            || lower.contains(&format!("@{p}"))
    }) {
        out.dependencies
            .push(reject(spec_part, "VCS sources are not allowed"));
        return;
    }
    if lower.contains("://") || lower.starts_with("file:") {
        let name = spec_part.split('@').next().unwrap_or(spec_part).trim();
        out.dependencies.push(reject(
            name,
            "direct URL sources are not allowed; use a pypi.org release",
        ));
        return;
    }
    if spec_part.starts_with('.') || spec_part.starts_with('/') || spec_part.starts_with('~') {
        out.dependencies
            .push(reject(spec_part, "local paths are not allowed"));
        return;
    }
    let name_end = spec_part
        .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        .unwrap_or(spec_part.len());
    let name = &spec_part[..name_end];
    let mut rest = spec_part[name_end..].trim();
    if rest.starts_with('[') {
        rest = rest.find(']').map(|i| rest[i + 1..].trim()).unwrap_or("");
    }
    if name.is_empty() {
        out.issues
            .push(issue(format!("cannot read requirement `{spec_part}`")));
        return;
    }
    let (status, reason) = python_spec_status(rest);
    out.dependencies.push(Dependency {
        ecosystem: Ecosystem::Pypi,
        name: name.to_owned(),
        spec: rest.to_owned(),
        status,
        reason,
        file: file.to_owned(),
        line: Some(line_no),
        dev: false,
    });
}

fn python_spec_status(spec: &str) -> (PinStatus, Option<String>) {
    let spec = spec.trim();
    if spec.is_empty() {
        return (
            PinStatus::Rejected,
            Some("unpinned: give an exact version (`name==1.2.3`) or a resolvable range".into()),
        );
    }
    let clauses: Vec<&str> = spec.split(',').map(str::trim).collect();
    if clauses.len() == 1 {
        let c = clauses[0];
        let version = c
            .strip_prefix("===")
            .or_else(|| c.strip_prefix("=="))
            .map(str::trim);
        if let Some(v) = version {
            if v.contains('*') {
                return (
                    PinStatus::Rejected,
                    Some("wildcard versions cannot be pinned to one audited release".into()),
                );
            }
            return (PinStatus::Pinned, None);
        }
    }
    for c in &clauses {
        let op_end = c
            .find(|ch: char| !matches!(ch, '=' | '<' | '>' | '!' | '~'))
            .unwrap_or(c.len());
        let (op, version) = c.split_at(op_end);
        let valid_op = matches!(op, ">=" | ">" | "<=" | "<" | "~=" | "!=" | "==");
        let version = version.trim();
        if !valid_op || version.is_empty() || version.contains('*') && op != "!=" {
            return (
                PinStatus::Rejected,
                Some(format!("`{spec}` cannot be resolved safely to one release")),
            );
        }
    }
    // A range needs a lower bound for resolution to pick a sensible, auditable release.
    let bounded_below = clauses.iter().any(|c| {
        c.starts_with(">=") || c.starts_with("~=") || c.starts_with('>') || c.starts_with("==")
    });
    if bounded_below {
        (PinStatus::Range, None)
    } else {
        (
            PinStatus::Rejected,
            Some(format!(
                "`{spec}` has no lower bound; any old release would satisfy it"
            )),
        )
    }
}

pub fn parse_package_json(file: &str, text: &str, out: &mut Parsed) {
    let json: serde_json::Value = match serde_json::from_str(text) {
        Ok(json) => json,
        Err(e) => {
            out.issues.push(DependencyIssue {
                file: file.to_owned(),
                line: Some(e.line()),
                reason: format!("package.json is not valid JSON: {e}"),
            });
            return;
        }
    };
    let line_of = |needle: &str| {
        text.find(needle)
            .map(|i| text[..i].matches('\n').count() + 1)
    };
    for (section, dev) in [
        ("dependencies", false),
        ("optionalDependencies", false),
        ("peerDependencies", false),
        ("devDependencies", true),
    ] {
        let Some(map) = json.get(section).and_then(|v| v.as_object()) else {
            continue;
        };
        for (name, spec) in map {
            let spec = spec.as_str().unwrap_or("").trim().to_owned();
            let (status, reason) = npm_spec_status(&spec);
            out.dependencies.push(Dependency {
                ecosystem: Ecosystem::Npm,
                name: name.clone(),
                line: line_of(&format!("\"{name}\"")),
                spec,
                status,
                reason,
                file: file.to_owned(),
                dev,
            });
        }
    }
    if let Some(registry) = json
        .pointer("/publishConfig/registry")
        .and_then(|v| v.as_str())
        .filter(|r| !is_public_npm(r))
    {
        out.issues.push(DependencyIssue {
            file: file.to_owned(),
            line: line_of("\"registry\""),
            reason: format!("private registry `{registry}` is not allowed"),
        });
    }
    if let Some(scripts) = json.get("scripts").and_then(|v| v.as_object()) {
        for hook in [
            "preinstall",
            "install",
            "postinstall",
            "prepare",
            "prepublish",
        ] {
            if let Some(cmd) = scripts.get(hook).and_then(|v| v.as_str()) {
                out.install_scripts.push((hook.to_owned(), cmd.to_owned()));
            }
        }
    }
}

fn is_public_npm(url: &str) -> bool {
    let u = url.trim_end_matches('/');
    u == "https://registry.npmjs.org" || u == "https://registry.npmjs.com"
}

/// `.npmrc` lines that point installs at another registry.
pub fn parse_npmrc(file: &str, text: &str, out: &mut Parsed) {
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        if key.trim().ends_with("registry") && !is_public_npm(value.trim()) {
            out.issues.push(DependencyIssue {
                file: file.to_owned(),
                line: Some(index + 1),
                reason: format!("private registry `{}` is not allowed", value.trim()),
            });
        }
    }
}

fn npm_spec_status(spec: &str) -> (PinStatus, Option<String>) {
    let rejected = |r: &str| (PinStatus::Rejected, Some(r.to_owned()));
    let lower = spec.to_ascii_lowercase();
    if spec.is_empty() || spec == "*" || lower == "latest" || lower == "x" {
        return rejected("`*`, `latest` and empty versions cannot be audited as one release");
    }
    if ["git+", "git:", "github:", "gitlab:", "bitbucket:", "gist:"]
        .iter()
        .any(|p| lower.starts_with(p))
        || (spec.contains('/') && !spec.contains(':') && !spec.starts_with('.'))
    {
        return rejected("VCS sources are not allowed");
    }
    if lower.starts_with("http:") || lower.starts_with("https:") {
        return rejected("direct tarball URLs are not allowed; use a registry.npmjs.org release");
    }
    if ["file:", "link:", "workspace:", "portal:"]
        .iter()
        .any(|p| lower.starts_with(p))
        || spec.starts_with('.')
        || spec.starts_with('/')
    {
        return rejected("local paths are not allowed");
    }
    if lower.starts_with("npm:") {
        return rejected("package aliases (`npm:`) hide the real package name");
    }
    if is_exact_semver(spec.trim_start_matches(['=', 'v'])) {
        return (PinStatus::Pinned, None);
    }
    let parts: Vec<&str> = spec.split_whitespace().collect();
    let resolvable = !spec.contains("||")
        && !spec.contains('*')
        && !spec.contains(['x', 'X'])
        && parts.iter().all(|p| {
            let v = p.trim_start_matches(['^', '~', '>', '<', '=']);
            is_semver_prefix(v)
        })
        && parts
            .first()
            .is_some_and(|p| p.starts_with(['^', '~']) || p.starts_with(">="));
    if resolvable {
        (PinStatus::Range, None)
    } else {
        rejected("this version range or tag cannot be resolved safely to one release")
    }
}

fn is_exact_semver(v: &str) -> bool {
    let core = v.split(['-', '+']).next().unwrap_or(v);
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

fn is_semver_prefix(v: &str) -> bool {
    let core = v.split(['-', '+']).next().unwrap_or(v);
    !core.is_empty()
        && core.split('.').count() <= 3
        && core
            .split('.')
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reqs(text: &str) -> Parsed {
        let mut out = Parsed::default();
        parse_requirements("requirements.txt", text, &mut out);
        out
    }

    #[test]
    fn python_pinning_rules_follow_the_product_table() {
        let p = reqs(
            "requests==2.31.0\nurllib3>=2.0.0\nidna~=3.4\nflask\nnumpy==1.*\nrich[jupyter]==13.7.0 ; python_version>'3.8'\ngit+https://github.com/x/y.git\nlocal @ file:///tmp/x\n./pkg\n<3\n",
        );
        let status: Vec<(&str, PinStatus)> = p
            .dependencies
            .iter()
            .map(|d| (d.name.as_str(), d.status))
            .collect();
        assert_eq!(
            status,
            [
                ("requests", PinStatus::Pinned),
                ("urllib3", PinStatus::Range),
                ("idna", PinStatus::Range),
                ("flask", PinStatus::Rejected),
                ("numpy", PinStatus::Rejected),
                ("rich", PinStatus::Pinned),
                ("git+https://github.com/x/y.git", PinStatus::Rejected),
                ("local", PinStatus::Rejected),
                ("./pkg", PinStatus::Rejected),
            ]
        );
        assert_eq!(p.issues.len(), 1, "`<3` has no name: {:?}", p.issues);
        let private = reqs(
            "--extra-index-url https://pypi.corp/simple\nrequests==2.31.0 --hash=sha256:abc\n",
        );
        assert!(private.issues[0].reason.contains("other than pypi.org"));
        assert_eq!(private.dependencies[0].status, PinStatus::Pinned);
    }

    #[test]
    fn npm_pinning_rules_follow_the_product_table() {
        let mut p = Parsed::default();
        parse_package_json(
            "package.json",
            r#"{"dependencies": {"axios": "1.6.7", "lodash": "^4.17.21", "chalk": "~5.3.0", "ms": ">=2.1.0",
                "a": "*", "b": "latest", "c": "github:u/r", "d": "file:../d", "e": "https://x/e.tgz", "f": "npm:evil@1.0.0",
                "g": "1.x", "h": "next"},
                "scripts": {"postinstall": "node setup.js", "test": "jest"}}"#,
            &mut p,
        );
        let pinned: Vec<_> = p
            .dependencies
            .iter()
            .filter(|d| d.status != PinStatus::Rejected)
            .map(|d| d.name.as_str())
            .collect();
        assert_eq!(pinned, ["axios", "chalk", "lodash", "ms"]);
        assert_eq!(
            p.install_scripts,
            [("postinstall".to_owned(), "node setup.js".to_owned())]
        );
        let mut rc = Parsed::default();
        parse_npmrc(".npmrc", "registry=https://npm.evil.example/\n", &mut rc);
        assert_eq!(rc.issues.len(), 1);
    }
}
