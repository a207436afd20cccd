//! Domain types. Each is parsed once at the edge ("parse, don't validate") and carried typed.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

/// Submission (and certificate) identifier: 24 lowercase hex characters, as in the product.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(try_from = "String", into = "String")]
#[schema(value_type = String, example = "97e79d874a12451fabeca6ab")]
pub struct SubmissionId(String);

impl SubmissionId {
    pub fn random() -> Self {
        let bytes: [u8; 12] = rand::random();
        Self(hex::encode(bytes))
    }
    /// The id of the submission a business key names (a draft, or a developer's
    /// `Idempotency-Key`): every request carrying the key reaches the same workflow, so a
    /// repeated or concurrent request joins the first run instead of starting a second.
    pub fn for_business_key(parts: &[&[u8]]) -> Self {
        let mut hash = Sha256::new();
        hash.update(b"sigma-submission\0");
        for part in parts {
            // Length-prefixed, so ("ab", "c") and ("a", "bc") differ.
            hash.update((part.len() as u64).to_be_bytes());
            hash.update(part);
        }
        Self(hex::encode(&hash.finalize()[..12]))
    }
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.len() == 24
            && raw
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            Ok(Self(raw.to_owned()))
        } else {
            Err(format!(
                "`{raw}` is not a submission id (24 lowercase hex characters)"
            ))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// The Temporal workflow id: one workflow per submission, ever.
    pub fn workflow_id(&self) -> String {
        format!("submission:{}", self.0)
    }
}

impl TryFrom<String> for SubmissionId {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}
impl From<SubmissionId> for String {
    fn from(value: SubmissionId) -> Self {
        value.0
    }
}
impl fmt::Display for SubmissionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Lowercase hex SHA-256 digest.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(try_from = "String", into = "String")]
#[schema(value_type = String)]
pub struct Sha256Hex(String);

impl Sha256Hex {
    pub fn of(bytes: &[u8]) -> Self {
        Self(hex::encode(Sha256::digest(bytes)))
    }
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.len() == 64
            && raw
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        {
            Ok(Self(raw.to_owned()))
        } else {
            Err(format!("`{raw}` is not a lowercase hex SHA-256 digest"))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
impl TryFrom<String> for Sha256Hex {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}
impl From<Sha256Hex> for String {
    fn from(value: Sha256Hex) -> Self {
        value.0
    }
}
impl fmt::Display for Sha256Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Submission categories (product reference §3.1). Surfaces are derived, never stored apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Category {
    Skill,
    SkillApi,
    Api,
    Code,
    CodePackages,
    SkillCode,
    SkillCodePackages,
    SkillApiCodePackages,
}

impl Category {
    pub const ALL: [Category; 8] = [
        Self::Skill,
        Self::SkillApi,
        Self::Api,
        Self::Code,
        Self::CodePackages,
        Self::SkillCode,
        Self::SkillCodePackages,
        Self::SkillApiCodePackages,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Skill => "SKILL",
            Self::SkillApi => "SKILL_API",
            Self::Api => "API",
            Self::Code => "CODE",
            Self::CodePackages => "CODE_PACKAGES",
            Self::SkillCode => "SKILL_CODE",
            Self::SkillCodePackages => "SKILL_CODE_PACKAGES",
            Self::SkillApiCodePackages => "SKILL_API_CODE_PACKAGES",
        }
    }
    pub fn has_skill(self) -> bool {
        self.as_str().starts_with("SKILL")
    }
    pub fn has_api(self) -> bool {
        self.as_str().contains("API")
    }
    pub fn has_code(self) -> bool {
        self.as_str().contains("CODE")
    }
    pub fn has_packages(self) -> bool {
        self.as_str().contains("PACKAGES")
    }
}

impl FromStr for Category {
    type Err = String;
    /// Accepts the canonical names and the documented labels ("SKILL + API", "skill_api").
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let normalised: String = raw
            .trim()
            .to_ascii_uppercase()
            .split(|c: char| c == '+' || c == '_' || c == '-' || c.is_whitespace())
            .filter(|part| !part.is_empty())
            .collect::<Vec<_>>()
            .join("_");
        Self::ALL
            .into_iter()
            .find(|c| c.as_str() == normalised)
            .ok_or_else(|| {
                let known: Vec<_> = Self::ALL.iter().map(|c| c.as_str()).collect();
                format!(
                    "unknown category `{raw}`; expected one of {}",
                    known.join(", ")
                )
            })
    }
}
impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
        pub enum $name { $(#[serde(rename = $text)] $variant),+ }
        impl $name {
            pub fn as_str(self) -> &'static str { match self { $(Self::$variant => $text),+ } }
        }
        impl FromStr for $name {
            type Err = String;
            fn from_str(raw: &str) -> Result<Self, Self::Err> {
                match raw { $($text => Ok(Self::$variant),)+ _ => Err(format!(concat!("unknown ", stringify!($name), " `{}`"), raw)) }
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(self.as_str()) }
        }
    };
}

string_enum! {
    /// Where a submission is in the pipeline.
    Stage {
        Received => "RECEIVED",
        Sandbox => "SANDBOX",
        AuditPhase1 => "AUDIT_PHASE_1",
        AuditPhase2 => "AUDIT_PHASE_2",
        Verdict => "VERDICT",
        AwaitingOperator => "AWAITING_OPERATOR",
        Certificate => "CERTIFICATE",
        Notification => "NOTIFICATION",
        Done => "DONE",
        Failed => "FAILED",
    }
}

string_enum! {
    /// The final outcome of a submission.
    Outcome {
        Approved => "APPROVED",
        Rejected => "REJECTED",
        Escalated => "ESCALATED",
    }
}

string_enum! {
    /// One validator's verdict.
    Verdict {
        Safe => "SAFE",
        Unsafe => "UNSAFE",
    }
}

string_enum! {
    /// Finding and verdict severity, ordered from least to most severe.
    Severity {
        None => "NONE",
        Low => "LOW",
        Medium => "MEDIUM",
        High => "HIGH",
        Critical => "CRITICAL",
    }
}

string_enum! {
    /// Overall sandbox risk.
    RiskLevel {
        Low => "LOW",
        Medium => "MEDIUM",
        High => "HIGH",
        Critical => "CRITICAL",
    }
}

impl RiskLevel {
    pub fn from_max_severity(severity: Option<Severity>) -> Self {
        match severity {
            None | Some(Severity::None) | Some(Severity::Low) => Self::Low,
            Some(Severity::Medium) => Self::Medium,
            Some(Severity::High) => Self::High,
            Some(Severity::Critical) => Self::Critical,
        }
    }
}

/// SHA-256 of text after normalising CRLF and lone CR line endings to LF (product §4.8 step 4).
pub fn lf_normalised_sha256(text: &[u8]) -> Sha256Hex {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        match text[i] {
            b'\r' => {
                out.push(b'\n');
                if text.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    Sha256Hex::of(&out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_parse_from_documented_labels() {
        assert_eq!("SKILL + API".parse::<Category>(), Ok(Category::SkillApi));
        assert_eq!(
            "skill_code_packages".parse::<Category>(),
            Ok(Category::SkillCodePackages)
        );
        assert!("SMART_CONTRACT".parse::<Category>().is_err());
        assert!(Category::SkillApi.has_api() && Category::SkillApi.has_skill());
        assert!(!Category::Code.has_skill() && Category::Code.has_code());
    }

    #[test]
    fn submission_ids_are_24_lower_hex() {
        let id = SubmissionId::random();
        assert_eq!(SubmissionId::parse(id.as_str()), Ok(id.clone()));
        assert!(SubmissionId::parse("97E79D874A12451FABECA6AB").is_err());
        assert!(SubmissionId::parse("../../etc/passwd").is_err());
        assert_eq!(id.workflow_id(), format!("submission:{id}"));
    }

    #[test]
    fn lf_normalisation_makes_line_endings_irrelevant() {
        assert_eq!(
            lf_normalised_sha256(b"a\r\nb\rc\n"),
            lf_normalised_sha256(b"a\nb\nc\n")
        );
        assert_eq!(lf_normalised_sha256(b"a\nb\n"), Sha256Hex::of(b"a\nb\n"));
    }
}
