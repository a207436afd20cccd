//! The skill manifest the assistant proposes: its JSON schema (also sent to the LLM as the
//! structured-output schema), strict validation of what came back, and the deterministic injection
//! of source metadata that the model never gets to write.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The schema of what the model must answer. Source metadata is deliberately absent.
pub fn schema() -> Value {
    json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["safety", "capabilities", "externalCalls"],
        "properties": {
            "safety": {
                "type": "object",
                "additionalProperties": false,
                "required": ["network", "filesystem", "shell", "env"],
                "properties": {
                    "network": {"type": "boolean"},
                    "filesystem": {"type": "boolean"},
                    "shell": {"type": "boolean"},
                    "env": {"type": "boolean"}
                }
            },
            "capabilities": {
                "type": "array", "maxItems": MAX_CAPABILITIES,
                "items": {"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]{0,39}$"}
            },
            "externalCalls": {
                "type": "array", "maxItems": MAX_CALLS,
                "items": {
                    "type": "object",
                    "additionalProperties": false,
                    "required": ["url", "method", "auth", "reason"],
                    "properties": {
                        "url": {"type": "string"},
                        "method": {"type": "string", "enum": crate::pricing::DeclaredEndpoint::METHODS},
                        "auth": {"type": "string", "enum": AUTH_KINDS},
                        "reason": {"type": "string", "maxLength": MAX_REASON}
                    }
                }
            }
        }
    })
}

const MAX_CAPABILITIES: usize = 32;
const MAX_CALLS: usize = 50;
const MAX_REASON: usize = 300;
pub const AUTH_KINDS: [&str; 6] = ["none", "bearer", "api_key", "basic", "oauth", "signature"];

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Safety {
    pub network: bool,
    pub filesystem: bool,
    pub shell: bool,
    pub env: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalCall {
    pub url: String,
    pub method: String,
    pub auth: String,
    pub reason: String,
}

/// A proposal that passed validation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProposedManifest {
    pub safety: Safety,
    pub capabilities: Vec<String>,
    pub external_calls: Vec<ExternalCall>,
}

/// Checks a model's answer against the schema; every problem is listed.
pub fn validate(answer: &Value) -> Result<ProposedManifest, Vec<String>> {
    let manifest: ProposedManifest = serde_json::from_value(answer.clone())
        .map_err(|e| vec![format!("does not match the manifest schema: {e}")])?;
    let mut problems = Vec::new();
    if manifest.capabilities.len() > MAX_CAPABILITIES {
        problems.push(format!("more than {MAX_CAPABILITIES} capabilities"));
    }
    for c in &manifest.capabilities {
        let ok = !c.is_empty()
            && c.len() <= 40
            && c.starts_with(|ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit())
            && c.chars()
                .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_' || ch == '-');
        if !ok {
            problems.push(format!("capability `{c}` is not a lowercase token"));
        }
    }
    if manifest.external_calls.len() > MAX_CALLS {
        problems.push(format!("more than {MAX_CALLS} external calls"));
    }
    for call in &manifest.external_calls {
        match url::Url::parse(&call.url) {
            Ok(u) if matches!(u.scheme(), "https" | "http") && u.host_str().is_some() => {}
            _ => problems.push(format!(
                "external call `{}` is not an http(s) URL",
                call.url
            )),
        }
        if !crate::pricing::DeclaredEndpoint::METHODS.contains(&call.method.as_str()) {
            problems.push(format!("`{}` is not an HTTP method", call.method));
        }
        if !AUTH_KINDS.contains(&call.auth.as_str()) {
            problems.push(format!("auth `{}` is not one of {AUTH_KINDS:?}", call.auth));
        }
        if call.reason.chars().count() > MAX_REASON {
            problems.push(format!("a reason is longer than {MAX_REASON} characters"));
        }
    }
    if !manifest.safety.network && !manifest.external_calls.is_empty() {
        problems.push("external calls are listed but safety.network is false".into());
    }
    if problems.is_empty() {
        Ok(manifest)
    } else {
        Err(problems)
    }
}

/// Where the reviewed bytes come from, as the backend knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceMetadata {
    /// `upload` or `github`.
    pub source_type: String,
    pub source_url: Option<String>,
    pub source_ref: Option<String>,
    pub entry: String,
    pub bundle_sha256: Option<String>,
    pub skill_md_sha256: Option<String>,
}

/// The locked manifest: the validated proposal, the SKILL.md identity fields and the source,
/// assembled by the backend. Same inputs, same bytes.
pub fn inject(
    proposal: &ProposedManifest,
    name: &str,
    version: Option<&str>,
    description: Option<&str>,
    category: &str,
    source: &SourceMetadata,
) -> Value {
    json!({
        "name": name,
        "version": version,
        "description": description,
        "category": category,
        "safety": proposal.safety,
        "capabilities": proposal.capabilities,
        "externalCalls": proposal.external_calls,
        "source": source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> Value {
        json!({
            "safety": {"network": true, "filesystem": false, "shell": false, "env": true},
            "capabilities": ["http-requests", "cron"],
            "externalCalls": [{"url": "https://api.example.org/v1/ping", "method": "GET", "auth": "bearer", "reason": "preflight"}]
        })
    }

    #[test]
    fn accepts_a_schema_conformant_answer() {
        let m = validate(&good()).unwrap();
        assert_eq!(m.external_calls.len(), 1);
    }

    #[test]
    fn refuses_extra_fields_and_bad_values() {
        let mut extra = good();
        extra["source"] = json!({"sourceUrl": "https://evil"});
        assert!(
            validate(&extra).is_err(),
            "the model may not write source metadata"
        );
        let mut bad = good();
        bad["capabilities"] = json!(["Shell Exec"]);
        bad["externalCalls"][0]["url"] = json!("file:///etc/passwd");
        bad["safety"]["network"] = json!(false);
        let problems = validate(&bad).unwrap_err();
        assert_eq!(problems.len(), 3, "{problems:?}");
    }

    #[test]
    fn injection_is_deterministic() {
        let m = validate(&good()).unwrap();
        let source = SourceMetadata {
            source_type: "upload".into(),
            source_url: None,
            source_ref: None,
            entry: "SKILL.md".into(),
            bundle_sha256: Some("ab".repeat(32)),
            skill_md_sha256: None,
        };
        let a = inject(&m, "n", Some("1.0.0"), None, "SKILL", &source);
        let b = inject(&m, "n", Some("1.0.0"), None, "SKILL", &source);
        assert_eq!(a, b);
        assert_eq!(a["source"]["entry"], "SKILL.md");
        assert_eq!(a["name"], "n");
    }
}
