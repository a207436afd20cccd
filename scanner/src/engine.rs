//! The rule pass over one text: prefilter, regexes, exclusions, entropy, context weighing.

use sigma_shared::domain::Severity;

use crate::context::{Role, TextMap, weigh};
use crate::finding::{Finding, MatchContext, snippet};
use crate::rules::{RulePack, entropy};

/// Most findings one rule may report per file; the rest are summarised in one extra finding so a
/// noisy file cannot bury everything else.
const MAX_PER_RULE_PER_FILE: usize = 20;

/// Lines of context around a keyword hit in which a rule's regexes run. Every pattern's match
/// contains one of its keywords (that is what the keywords are), and multi-line patterns span
/// at most this many lines on either side.
const WINDOW_LINES: usize = 2;

/// The byte windows a rule's regexes scan: the whole text for a rule without keywords, otherwise
/// merged windows around each keyword hit. Scanning windows rather than whole files is what keeps
/// the rule pass fast on large files with a few hits.
fn windows(map: &TextMap<'_>, hits: &[usize]) -> Vec<(usize, usize)> {
    if hits.is_empty() {
        return vec![(0, map.text.len())];
    }
    let mut out: Vec<(usize, usize)> = Vec::new();
    let mut last_line = 0usize;
    for &offset in hits {
        let line = map.line(offset);
        if line == last_line {
            continue;
        }
        last_line = line;
        let (start, end) = map.lines_span(line.saturating_sub(WINDOW_LINES), line + WINDOW_LINES);
        match out.last_mut() {
            Some(prev) if start <= prev.1 => prev.1 = prev.1.max(end),
            _ => out.push((start, end)),
        }
    }
    out
}

pub fn run_rules(pack: &RulePack, path: &str, map: &TextMap<'_>, out: &mut Vec<Finding>) {
    let text = map.text;
    for (index, hits) in pack.keyword_hits(map.kind, text).into_iter().enumerate() {
        let Some(hits) = hits else { continue };
        let rule = &pack.rules[index];
        if !rule.applies_to(map.kind, path) {
            continue;
        }
        if map.role == Role::Legal && rule.intent != crate::rules::Intent::Artifact {
            continue;
        }
        let windows = windows(map, &hits);
        let mut reported = 0usize;
        let mut extra = 0usize;
        let mut seen_lines = std::collections::BTreeSet::new();
        for pattern in &rule.patterns {
            for &(from, to) in &windows {
                for whole in pattern.find_iter(&text[from..to]) {
                    let (start, end) = (from + whole.start(), from + whole.end());
                    let line = map.line(start);
                    if !seen_lines.insert(line) {
                        continue; // One finding per rule per line.
                    }
                    let line_text = map.line_text(line);
                    if rule.exclude.iter().any(|x| x.is_match(line_text)) {
                        continue;
                    }
                    if let Some(min) = rule.entropy_min {
                        let caps = pattern.captures(&text[start..end]);
                        let secret = caps
                            .as_ref()
                            .and_then(|c| c.name("secret"))
                            .map_or(&text[start..end], |m| m.as_str());
                        if entropy(secret) < min {
                            continue;
                        }
                    }
                    if reported >= MAX_PER_RULE_PER_FILE {
                        extra += 1;
                        continue;
                    }
                    reported += 1;
                    let context = map.context(start);
                    let base = if rule.demote.iter().any(|d| d.is_match(line_text)) {
                        crate::finding::severity_shift(rule.severity, -2)
                    } else {
                        rule.severity
                    };
                    let (severity, confidence) = weigh(rule.intent, base, context, map.role);
                    out.push(Finding {
                        rule_id: rule.id.clone(),
                        category: rule.category,
                        severity,
                        confidence,
                        context,
                        file: path.to_owned(),
                        line: Some(line),
                        snippet: Some(redact(rule.category, &text[start..end])),
                        message: rule.message.clone(),
                        remediation: Some(rule.remediation.clone()),
                        blocks: rule.blocks && confidence >= crate::finding::Confidence::Medium,
                    });
                }
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

/// Time spent by each rule over the given texts (prefilter included), most expensive first: the
/// benchmark's profile of the rule pass.
pub fn profile_rules(
    pack: &RulePack,
    texts: &[(String, crate::content::FileKind, String)],
) -> Vec<(String, std::time::Duration)> {
    let mut costs: Vec<(String, std::time::Duration)> = pack
        .rules
        .iter()
        .map(|r| (r.id.clone(), std::time::Duration::ZERO))
        .collect();
    for (path, kind, text) in texts {
        let map = TextMap::new(text, *kind, crate::context::role(path, *kind), None);
        for (index, hits) in pack.keyword_hits(*kind, text).into_iter().enumerate() {
            let Some(hits) = hits else { continue };
            let rule = &pack.rules[index];
            if !rule.applies_to(*kind, path) {
                continue;
            }
            let started = std::time::Instant::now();
            let mut n = 0usize;
            for pattern in &rule.patterns {
                for (from, to) in windows(&map, &hits) {
                    n += pattern.find_iter(&text[from..to]).count();
                }
            }
            std::hint::black_box(n);
            costs[index].1 += started.elapsed();
        }
    }
    costs.sort_by_key(|c| std::cmp::Reverse(c.1));
    costs
}
