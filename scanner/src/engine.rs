//! The rule pass over one text: prefilter, regexes, exclusions, entropy, context weighing.

use sigma_shared::domain::Severity;

use crate::context::{Role, TextMap, weigh};
use crate::finding::{Finding, MatchContext, snippet};
use crate::rules::{RulePack, entropy};

/// Most findings one rule may report per file; the rest are summarised in one extra finding so a
/// noisy file cannot bury everything else.
const MAX_PER_RULE_PER_FILE: usize = 20;

pub fn run_rules(pack: &RulePack, path: &str, map: &TextMap<'_>, out: &mut Vec<Finding>) {
    let text = map.text;
    for index in pack.candidates(map.kind, text) {
        let rule = &pack.rules[index];
        if !rule.applies_to(map.kind, path) {
            continue;
        }
        if map.role == Role::Legal && rule.intent != crate::rules::Intent::Artifact {
            continue;
        }
        let mut reported = 0usize;
        let mut extra = 0usize;
        let mut last_line = 0usize;
        for pattern in &rule.patterns {
            for caps in pattern.captures_iter(text) {
                let whole = caps.get(0).expect("group 0 exists");
                let line = map.line(whole.start());
                if line == last_line {
                    continue; // One finding per rule per line.
                }
                let line_text = map.line_text(line);
                if rule.exclude.iter().any(|x| x.is_match(line_text)) {
                    continue;
                }
                if let Some(min) = rule.entropy_min {
                    let secret = caps.name("secret").map_or(whole.as_str(), |m| m.as_str());
                    if entropy(secret) < min {
                        continue;
                    }
                }
                last_line = line;
                if reported >= MAX_PER_RULE_PER_FILE {
                    extra += 1;
                    continue;
                }
                reported += 1;
                let context = map.context(whole.start());
                let (severity, confidence) = weigh(rule.intent, rule.severity, context, map.role);
                out.push(Finding {
                    rule_id: rule.id.clone(),
                    category: rule.category,
                    severity,
                    confidence,
                    context,
                    file: path.to_owned(),
                    line: Some(line),
                    snippet: Some(redact(rule.category, whole.as_str())),
                    message: rule.message.clone(),
                    remediation: Some(rule.remediation.clone()),
                    blocks: rule.blocks && confidence >= crate::finding::Confidence::Medium,
                });
            }
        }
        if extra > 0 {
            out.push(Finding {
                rule_id: rule.id.clone(),
                category: rule.category,
                severity: Severity::Low,
                confidence: crate::finding::Confidence::Low,
                context: MatchContext::Structure,
                file: path.to_owned(),
                line: None,
                snippet: None,
                message: format!("{extra} more matches of this rule in the file"),
                remediation: None,
                blocks: false,
            });
        }
    }
}

/// Secrets are shown with their middle masked: enough to find them, not enough to use them.
fn redact(category: crate::finding::RuleCategory, matched: &str) -> String {
    if category != crate::finding::RuleCategory::Secret {
        return snippet(matched);
    }
    let chars: Vec<char> = matched.chars().collect();
    if chars.len() <= 12 {
        return "*".repeat(chars.len());
    }
    let head: String = chars[..6].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    snippet(&format!("{head}…{tail}"))
}
