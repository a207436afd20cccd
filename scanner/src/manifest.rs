//! SKILL.md front matter → manifest. Accepts both `externalCalls` and `external_calls`, each as a
//! list of URLs or of `{url, method, purpose|reason, auth}` objects.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub name: String,
    pub version: Option<String>,
    pub description: Option<String>,
    pub capabilities: Vec<String>,
    pub external_calls: Vec<ExternalCall>,
    pub allowed_tools: Vec<String>,
    /// The file the skill runs, when the front matter names one (`entry`, `entrypoint`, `main`).
    pub entry_point: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ExternalCall {
    pub url: String,
    pub method: Option<String>,
    pub purpose: Option<String>,
    pub auth: Option<String>,
}

#[derive(Debug, Deserialize)]
struct FrontMatter {
    name: Option<String>,
    version: Option<serde_yaml_ng::Value>,
    description: Option<String>,
    #[serde(default)]
    capabilities: Option<serde_yaml_ng::Value>,
    #[serde(default, alias = "externalCalls")]
    external_calls: Option<Vec<serde_yaml_ng::Value>>,
    #[serde(default, alias = "allowed-tools", alias = "allowedTools")]
    allowed_tools: Option<serde_yaml_ng::Value>,
    #[serde(
        default,
        alias = "entrypoint",
        alias = "entry_point",
        alias = "entryPoint",
        alias = "main"
    )]
    entry: Option<serde_yaml_ng::Value>,
}

/// Returns the manifest, or why the front matter is unusable.
pub fn parse(skill_md: &str) -> Result<Manifest, String> {
    let text = skill_md.trim_start_matches('\u{feff}');
    let mut lines = text.lines();
    if lines.next().map(str::trim_end) != Some("---") {
        return Err("SKILL.md has no YAML front matter (it must start with a `---` line)".into());
    }
    let mut yaml = String::new();
    let mut closed = false;
    for line in lines {
        if line.trim_end() == "---" {
            closed = true;
            break;
        }
        yaml.push_str(line);
        yaml.push('\n');
    }
    if !closed {
        return Err("SKILL.md front matter is not closed by a `---` line".into());
    }
    let front: FrontMatter = serde_yaml_ng::from_str(&yaml)
        .map_err(|e| format!("SKILL.md front matter is not valid YAML: {e}"))?;
    let name = front
        .name
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty())
        .ok_or("SKILL.md front matter has no `name`")?;
    Ok(Manifest {
        name,
        version: front.version.and_then(|v| scalar(&v)),
        description: front.description,
        capabilities: string_list(front.capabilities.as_ref()),
        external_calls: front
            .external_calls
            .unwrap_or_default()
            .iter()
            .filter_map(external_call)
            .collect(),
        allowed_tools: string_list(front.allowed_tools.as_ref()),
        entry_point: front.entry.as_ref().and_then(scalar),
    })
}

fn scalar(value: &serde_yaml_ng::Value) -> Option<String> {
    match value {
        serde_yaml_ng::Value::String(s) => Some(s.clone()),
        serde_yaml_ng::Value::Number(n) => Some(n.to_string()),
        serde_yaml_ng::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A list, a comma/space separated string, or a mapping whose keys are the items.
fn string_list(value: Option<&serde_yaml_ng::Value>) -> Vec<String> {
    match value {
        Some(serde_yaml_ng::Value::Sequence(items)) => items.iter().filter_map(scalar).collect(),
        Some(serde_yaml_ng::Value::String(s)) => s
            .split([',', ' '])
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect(),
        Some(serde_yaml_ng::Value::Mapping(map)) => map.keys().filter_map(scalar).collect(),
        _ => Vec::new(),
    }
}

fn external_call(value: &serde_yaml_ng::Value) -> Option<ExternalCall> {
    match value {
        serde_yaml_ng::Value::String(url) => Some(ExternalCall {
            url: url.clone(),
            ..Default::default()
        }),
        serde_yaml_ng::Value::Mapping(map) => {
            let get = |key: &str| map.get(key).and_then(scalar);
            Some(ExternalCall {
                url: get("url")?,
                method: get("method"),
                purpose: get("purpose").or_else(|| get("reason")),
                auth: get("auth"),
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_external_call_spellings() {
        let a = parse("---\nname: weather\nversion: 1.2\nexternalCalls:\n  - https://api.example.com\ncapabilities: [http-requests]\n---\n# Weather\n").unwrap();
        assert_eq!(a.name, "weather");
        assert_eq!(a.version.as_deref(), Some("1.2"));
        assert_eq!(a.external_calls[0].url, "https://api.example.com");
        assert_eq!(a.capabilities, ["http-requests"]);
        let b = parse("---\nname: db\nexternal_calls:\n  - url: https://x.io/r\n    method: POST\n    purpose: usage\ncapabilities:\n  shell-execution: true\n---\n").unwrap();
        assert_eq!(b.external_calls[0].method.as_deref(), Some("POST"));
        assert_eq!(b.external_calls[0].purpose.as_deref(), Some("usage"));
        assert_eq!(b.capabilities, ["shell-execution"]);
        let c = parse("---\nname: c\nentrypoint: src/index.ts\nallowed-tools: Read, Bash\n---\n")
            .unwrap();
        assert_eq!(c.entry_point.as_deref(), Some("src/index.ts"));
        assert_eq!(c.allowed_tools, ["Read", "Bash"]);
    }

    #[test]
    fn missing_or_broken_front_matter_is_explained() {
        assert!(
            parse("# no front matter")
                .unwrap_err()
                .contains("no YAML front matter")
        );
        assert!(parse("---\nname: x\n").unwrap_err().contains("not closed"));
        assert!(
            parse("---\ndescription: x\n---\n")
                .unwrap_err()
                .contains("no `name`")
        );
        assert!(
            parse("---\nname: [unclosed\n---\n")
                .unwrap_err()
                .contains("not valid YAML")
        );
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    proptest! {
        /// The front-matter parser never panics, whatever the text.
        #[test]
        fn never_panics(text in "(---\n)?[ -~\n]{0,300}(\n---\n)?[ -~\n]{0,50}") {
            let _ = super::parse(&text);
        }

        /// A name and externalCalls written out are read back.
        #[test]
        fn reads_back_what_it_is_given(name in "[a-z][a-z0-9-]{0,20}", host in "[a-z]{1,10}\\.[a-z]{2,5}") {
            let text = format!("---\nname: {name}\nexternalCalls:\n  - https://{host}/v1\n---\nbody\n");
            let m = super::parse(&text).unwrap();
            prop_assert_eq!(m.name, name);
            prop_assert_eq!(&m.external_calls[0].url, &format!("https://{host}/v1"));
        }
    }
}
