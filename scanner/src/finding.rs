//! What a finding says: which rule, how bad, how sure, and where.

use serde::{Deserialize, Serialize};
use sigma_shared::domain::Severity;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleCategory {
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
    Structure,
}

impl RuleCategory {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PromptInjection => "prompt_injection",
            Self::HiddenContent => "hidden_content",
            Self::Secret => "secret",
            Self::Exfiltration => "exfiltration",
            Self::CodeExecution => "code_execution",
            Self::Obfuscation => "obfuscation",
            Self::SuspiciousDestination => "suspicious_destination",
            Self::InstallHook => "install_hook",
            Self::Typosquat => "typosquat",
            Self::Dependency => "dependency",
            Self::ManifestMismatch => "manifest_mismatch",
            Self::Persistence => "persistence",
            Self::ExcessiveAgency => "excessive_agency",
            Self::ResourceAbuse => "resource_abuse",
            Self::Destructive => "destructive",
            Self::OpaqueArtifact => "opaque_artifact",
            Self::Structure => "structure",
        }
    }
}

/// How sure the engine is that a match means what the rule says. Only medium and high
/// confidence findings count towards signals and the risk level; low ones are kept for reviewers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Confidence {
    Low,
    Medium,
    High,
}

/// Where a match sits, which is what its confidence is weighed by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchContext {
    /// Prose addressed to the agent.
    Instruction,
    /// SKILL.md front matter, which the agent also reads.
    Metadata,
    /// Code that runs (including string literals in it).
    Code,
    /// A code comment.
    Comment,
    /// A fenced or inline code block, a block quote or a quoted phrase in prose.
    Example,
    /// Preceded by a negation or protective wording ("never …", "do not …").
    Negated,
    /// Part of a sentence that describes or teaches about attacks.
    Described,
    /// Under a sub-heading about attacks or threats ("## Threat model").
    Section,
    /// Documentation the agent does not follow (README, CHANGELOG, docs/).
    Documentation,
    /// Named rather than used: a lone command, flag or path in inline code in a sentence
    /// (`--yolo`, `~/.aws/credentials`), or a fenced block that is data, output or another
    /// tool's rule language rather than code anyone runs. A SKILL.md code block is not a
    /// mention: it is analysed as the code it is.
    Mention,
    /// Hidden from a human reader (HTML comment, invisible characters).
    Hidden,
    /// A whole-file or whole-bundle fact rather than a match in text.
    Structure,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub rule_id: String,
    pub category: RuleCategory,
    pub severity: Severity,
    pub confidence: Confidence,
    pub context: MatchContext,
    pub file: String,
    pub line: Option<usize>,
    pub snippet: Option<String>,
    pub message: String,
    pub remediation: Option<String>,
    /// A finding that rejects the bundle before any audit.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub blocks: bool,
}

impl Finding {
    pub fn counts(&self) -> bool {
        self.confidence >= Confidence::Medium && self.severity > Severity::None
    }
}

pub fn severity_shift(severity: Severity, by: i8) -> Severity {
    const ORDER: [Severity; 5] = [
        Severity::None,
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ];
    let at = ORDER.iter().position(|s| *s == severity).unwrap_or(0) as i8;
    // Demotion stops at LOW: a weak finding is still a finding for the reviewers.
    ORDER[(at + by).clamp(1, 4) as usize]
}

/// A short, single-line excerpt safe to print in reports and terminals.
pub fn snippet(text: &str) -> String {
    let mut out: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(160)
        .collect();
    if text.chars().count() > 160 {
        out.push('…');
    }
    out.trim().to_owned()
}
