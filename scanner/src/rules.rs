//! The rule pack: a versioned TOML file of rules as data, compiled once into fast matchers. A
//! per-target Aho-Corasick automaton over every rule's keywords is the prefilter: one pass over a
//! file tells which rules can match at all, and only those rules' regexes run.

use std::collections::BTreeMap;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, AhoCorasickKind, MatchKind};
use regex::Regex;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use sigma_shared::domain::Severity;

use crate::content::FileKind;
use crate::finding::RuleCategory;

pub const BUILTIN_PACK: &str = include_str!("../rules/sigma-rules.toml");

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Intent {
    /// Words aimed at the agent: weighed by quotation, negation and documentation context.
    Agent,
    /// Things that run: weighed by comments and documentation context.
    Behaviour,
    /// Things that are what they are wherever they sit (keys, blobs).
    Artifact,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    Prose,
    Code,
    Config,
    Any,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PackFile {
    pack: PackMeta,
    #[serde(default)]
    rule: Vec<RuleSpec>,
    #[serde(default)]
    capability: Vec<CapabilitySpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PackMeta {
    name: String,
    version: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    id: String,
    category: RuleCategory,
    severity: String,
    intent: Intent,
    targets: Vec<Target>,
    #[serde(default)]
    paths: Vec<String>,
    #[serde(default)]
    keywords: Vec<String>,
    patterns: Vec<String>,
    #[serde(default)]
    exclude: Vec<String>,
    #[serde(default)]
    demote: Vec<String>,
    entropy_min: Option<f64>,
    #[serde(default)]
    blocks: bool,
    message: String,
    remediation: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CapabilitySpec {
    name: String,
    patterns: Vec<String>,
}

pub struct Rule {
    pub id: String,
    pub category: RuleCategory,
    pub severity: Severity,
    pub intent: Intent,
    pub targets: Vec<Target>,
    pub paths: Vec<String>,
    pub patterns: Vec<Regex>,
    pub exclude: Vec<Regex>,
    /// A match on a line that also matches one of these is lowered two severity levels (a known,
    /// reputable installer, say): still reported, rarely decisive.
    pub demote: Vec<Regex>,
    pub entropy_min: Option<f64>,
    pub blocks: bool,
    pub message: String,
    pub remediation: String,
    always_run: bool,
}

impl Rule {
    pub fn applies_to(&self, kind: FileKind, path: &str) -> bool {
        let target_ok = self.targets.iter().any(|t| match t {
            Target::Any => kind != FileKind::Binary,
            Target::Prose => kind == FileKind::Prose,
            Target::Code => kind == FileKind::Code,
            Target::Config => kind == FileKind::Config,
        });
        let name = path.rsplit('/').next().unwrap_or(path);
        target_ok && (self.paths.is_empty() || self.paths.iter().any(|p| p == name))
    }
}

pub struct Capability {
    pub name: String,
    pub patterns: Vec<Regex>,
}

/// One prefilter per file kind: keyword automaton plus, per keyword, the rules it unlocks.
struct Prefilter {
    automaton: Option<AhoCorasick>,
    keyword_rules: Vec<Vec<usize>>,
    always: Vec<usize>,
}

pub struct RulePack {
    pub name: String,
    pub version: String,
    /// SHA-256 of the pack file's bytes, recorded in every report.
    pub sha256: String,
    pub rules: Vec<Rule>,
    pub capabilities: Vec<Capability>,
    prefilters: BTreeMap<FileKind, Prefilter>,
}

#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("rule pack is not valid TOML: {0}")]
    Toml(#[from] toml::de::Error),
    #[error("rule {rule}: {detail}")]
    Rule { rule: String, detail: String },
}

/// Word boundaries are ASCII: Unicode `\b` would force the slow regex engines on any non-ASCII
/// text, and rules are written against ASCII keywords anyway.
fn compile(pattern: &str) -> Result<Regex, regex::Error> {
    Regex::new(&pattern.replace(r"\b", r"(?-u:\b)"))
}

impl RulePack {
    pub fn builtin() -> &'static RulePack {
        static PACK: std::sync::LazyLock<RulePack> = std::sync::LazyLock::new(|| {
            RulePack::parse(BUILTIN_PACK).expect("the built-in rule pack compiles")
        });
        &PACK
    }

    pub fn parse(text: &str) -> Result<RulePack, PackError> {
        let file: PackFile = toml::from_str(text)?;
        let mut rules = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for spec in file.rule {
            let err = |detail: String| PackError::Rule {
                rule: spec.id.clone(),
                detail,
            };
            if !seen.insert(spec.id.clone()) {
                return Err(err("duplicate rule id".into()));
            }
            let severity: Severity = spec
                .severity
                .to_ascii_uppercase()
                .parse()
                .map_err(|e: String| err(e))?;
            if spec.patterns.is_empty() {
                return Err(err("has no patterns".into()));
            }
            let patterns = spec
                .patterns
                .iter()
                .map(|p| compile(p).map_err(|e| err(e.to_string())))
                .collect::<Result<Vec<_>, _>>()?;
            if spec.entropy_min.is_some()
                && !patterns
                    .iter()
                    .all(|p| p.capture_names().any(|n| n == Some("secret")))
            {
                return Err(err("entropy_min needs a `secret` capture group".into()));
            }
            let exclude = spec
                .exclude
                .iter()
                .map(|p| compile(p).map_err(|e| err(e.to_string())))
                .collect::<Result<Vec<_>, _>>()?;
            let demote = spec
                .demote
                .iter()
                .map(|p| compile(p).map_err(|e| err(e.to_string())))
                .collect::<Result<Vec<_>, _>>()?;
            rules.push((
                spec.keywords,
                Rule {
                    id: spec.id,
                    category: spec.category,
                    severity,
                    intent: spec.intent,
                    targets: spec.targets,
                    paths: spec.paths,
                    patterns,
                    exclude,
                    demote,
                    entropy_min: spec.entropy_min,
                    blocks: spec.blocks,
                    message: spec.message,
                    remediation: spec.remediation,
                    always_run: false,
                },
            ));
        }
        let capabilities = file
            .capability
            .into_iter()
            .map(|c| {
                let patterns = c
                    .patterns
                    .iter()
                    .map(|p| {
                        compile(p).map_err(|e| PackError::Rule {
                            rule: format!("capability {}", c.name),
                            detail: e.to_string(),
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Capability {
                    name: c.name,
                    patterns,
                })
            })
            .collect::<Result<Vec<_>, PackError>>()?;
        let mut prefilters = BTreeMap::new();
        for kind in [FileKind::Prose, FileKind::Code, FileKind::Config] {
            let mut keywords: Vec<String> = Vec::new();
            let mut keyword_rules: Vec<Vec<usize>> = Vec::new();
            let mut always = Vec::new();
            for (index, (words, rule)) in rules.iter().enumerate() {
                if !rule.targets.iter().any(|t| match t {
                    Target::Any => true,
                    Target::Prose => kind == FileKind::Prose,
                    Target::Code => kind == FileKind::Code,
                    Target::Config => kind == FileKind::Config,
                }) {
                    continue;
                }
                if words.is_empty() {
                    always.push(index);
                }
                for word in words {
                    let word = word.to_ascii_lowercase();
                    match keywords.iter().position(|k| *k == word) {
                        Some(at) => keyword_rules[at].push(index),
                        None => {
                            keywords.push(word);
                            keyword_rules.push(vec![index]);
                        }
                    }
                }
            }
            let automaton = (!keywords.is_empty()).then(|| {
                AhoCorasickBuilder::new()
                    .ascii_case_insensitive(true)
                    .match_kind(MatchKind::Standard)
                    .kind(Some(AhoCorasickKind::DFA))
                    .build(&keywords)
                    .expect("keywords build an automaton")
            });
            prefilters.insert(
                kind,
                Prefilter {
                    automaton,
                    keyword_rules,
                    always,
                },
            );
        }
        let rules = rules
            .into_iter()
            .map(|(words, mut rule)| {
                rule.always_run = words.is_empty();
                rule
            })
            .collect();
        Ok(RulePack {
            name: file.pack.name,
            version: file.pack.version,
            sha256: hex::encode(Sha256::digest(text.as_bytes())),
            rules,
            capabilities,
            prefilters,
        })
    }

    /// The rules whose keywords occur in `text` (or that have none), in pack order.
    pub fn candidates(&self, kind: FileKind, text: &str) -> Vec<usize> {
        let Some(prefilter) = self.prefilters.get(&kind) else {
            return Vec::new();
        };
        let mut hit = vec![false; self.rules.len()];
        for &index in &prefilter.always {
            hit[index] = true;
        }
        if let Some(automaton) = &prefilter.automaton {
            // Overlapping search so a short keyword never hides a longer one.
            for m in automaton.find_overlapping_iter(text) {
                for &index in &prefilter.keyword_rules[m.pattern().as_usize()] {
                    hit[index] = true;
                }
            }
        }
        hit.iter()
            .enumerate()
            .filter_map(|(i, h)| h.then_some(i))
            .collect()
    }

    /// Per rule: `None` when it cannot match, `Some(empty)` when it must scan the whole text (no
    /// keywords), otherwise the offsets of its keyword hits, around which its regexes run.
    pub fn keyword_hits(&self, kind: FileKind, text: &str) -> Vec<Option<Vec<usize>>> {
        let mut hits: Vec<Option<Vec<usize>>> = vec![None; self.rules.len()];
        let Some(prefilter) = self.prefilters.get(&kind) else {
            return hits;
        };
        if let Some(automaton) = &prefilter.automaton {
            for m in automaton.find_overlapping_iter(text) {
                for &index in &prefilter.keyword_rules[m.pattern().as_usize()] {
                    hits[index].get_or_insert_with(Vec::new).push(m.start());
                }
            }
        }
        for &index in &prefilter.always {
            hits[index] = Some(Vec::new());
        }
        hits
    }

    pub fn rule_is_unconditional(&self, index: usize) -> bool {
        self.rules[index].always_run
    }
}

/// Shannon entropy in bits per character.
pub fn entropy(s: &str) -> f64 {
    let mut counts = [0u32; 256];
    for b in s.bytes() {
        counts[b as usize] += 1;
    }
    let len = s.len() as f64;
    counts
        .iter()
        .filter(|c| **c > 0)
        .map(|c| {
            let p = *c as f64 / len;
            -p * p.log2()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_pack_compiles_with_unique_ids() {
        let pack = RulePack::builtin();
        assert!(pack.rules.len() >= 40, "{}", pack.rules.len());
        assert_eq!(pack.sha256.len(), 64);
        assert!(!pack.capabilities.is_empty());
    }

    #[test]
    fn bad_packs_are_explained() {
        let err = RulePack::parse("[pack]\nname='x'\nversion='1'\n[[rule]]\nid='A'\ncategory='secret'\nseverity='high'\nintent='artifact'\ntargets=['any']\npatterns=['(']\nmessage='m'\nremediation='r'\n")
            .err()
            .unwrap();
        assert!(err.to_string().starts_with("rule A:"), "{err}");
    }

    #[test]
    fn prefilter_selects_rules_by_keyword() {
        let pack = RulePack::builtin();
        let ids = |text: &str| -> Vec<&str> {
            pack.candidates(FileKind::Prose, text)
                .into_iter()
                .filter(|i| !pack.rule_is_unconditional(*i))
                .map(|i| pack.rules[i].id.as_str())
                .collect()
        };
        assert!(ids("IGNORE the rest").contains(&"PI-001"));
        assert!(!ids("a friendly weather skill").contains(&"PI-001"));
    }

    #[test]
    fn entropy_separates_keys_from_words() {
        assert!(entropy("aaaaaaaaaaaaaaaa") < 1.0);
        assert!(entropy("q8Zr2LmX9vT4kPw7") > 3.6);
    }
}
