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
/// The documented labels ("SKILL + API", "skill_api") are read wherever a category is; the
/// canonical name is what is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, ToSchema)]
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
impl<'de> Deserialize<'de> for Category {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = std::borrow::Cow::<str>::deserialize(deserializer)?;
        raw.parse().map_err(serde::de::Error::custom)
    }
}
impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:tt),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
        pub enum $name { $(#[serde(rename = $text)] $variant),+ }
        impl $name {
            pub fn as_str(self) -> &'static str { match self { $(Self::$variant => $text),+ } }
        }
        impl FromStr for $name {
            type Err = String;
            fn from_str(raw: &str) -> Result<Self, Self::Err> {
                match raw {
                    $($text => Ok(Self::$variant),)+
                    _ => Err(format!(concat!("unknown ", stringify!($name), " `{}`; expected one of ", $($text, ", "),+), raw).trim_end_matches(", ").to_owned()),
                }
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

/// An email address as SIGMA keeps it: lowercased, checked by `lettre`'s RFC 5321 parser, and
/// limited to what a login address needs (a dotted domain name, no IP literal, no display name).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EmailAddress(String);

impl EmailAddress {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let email = raw.trim().to_lowercase();
        let bad = || format!("`{}` is not an email address", raw.trim());
        let address: lettre::Address = email.parse().map_err(|_| bad())?;
        let domain = address.domain();
        let plausible = email.len() <= 254
            && address.user().len() <= 64
            && !address.user().starts_with('"')
            && domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && domain
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'));
        if plausible {
            Ok(Self(email))
        } else {
            Err(bad())
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod email_tests {
    use super::EmailAddress;

    #[test]
    fn email_addresses_are_normalised_and_checked() {
        assert_eq!(
            EmailAddress::parse(" Dev@Example.ORG ").unwrap().as_str(),
            "dev@example.org"
        );
        for bad in [
            "",
            "a",
            "a@b",
            "a@@b.c",
            "a b@c.d",
            "<a@b.c>",
            "a@.b.c",
            "a@b.c.",
            "a@[127.0.0.1]",
            "\"a b\"@c.d",
        ] {
            assert!(EmailAddress::parse(bad).is_err(), "{bad}");
        }
    }
}

/// A public repository as `owner/name`, from that form or a `https://github.com/owner/name`
/// URL (an optional `.git` or trailing `/`). Both parts become URL path segments, so only the
/// characters GitHub allows in names pass.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct GitRepository(String);

impl GitRepository {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let raw = raw.trim();
        let path = raw
            .strip_prefix("https://github.com/")
            .or_else(|| raw.strip_prefix("https://www.github.com/"))
            .unwrap_or(raw)
            .trim_end_matches('/');
        let path = path.strip_suffix(".git").unwrap_or(path);
        let name_ok = |part: &str| {
            !part.is_empty()
                && part.len() <= 100
                && !part.starts_with('.')
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        match path.split('/').collect::<Vec<_>>()[..] {
            [owner, name] if name_ok(owner) && name_ok(name) => Ok(Self(path.to_owned())),
            _ => Err("repository must be `owner/name` (or https://github.com/owner/name)".into()),
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A commit SHA, tag or branch name, checked with git's own ref-name rules (`git
/// check-ref-format`) narrowed to URL-safe characters: it becomes part of a URL path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct GitRef(String);

impl GitRef {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let r = raw.trim();
        let ok = !r.is_empty()
            && r.len() <= 200
            && !r.contains("..")
            && !r.contains("//")
            && !r.contains("@{")
            && !r.starts_with('/')
            && !r.ends_with('/')
            && !r.ends_with('.')
            && !r.ends_with(".lock")
            && !r.split('/').any(|part| part.starts_with('.'))
            && r.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
        if ok {
            Ok(Self(r.to_owned()))
        } else {
            Err("ref must be a commit SHA, a tag or a branch name".into())
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

macro_rules! string_newtype_serde {
    ($($ty:ident),+) => {$(
        impl TryFrom<String> for $ty {
            type Error = String;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::parse(&value)
            }
        }
        impl From<$ty> for String {
            fn from(value: $ty) -> Self {
                value.0
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    )+};
}
string_newtype_serde!(GitRepository, GitRef, CertificateId);

#[cfg(test)]
mod git_tests {
    use super::{GitRef, GitRepository};

    #[test]
    fn one_rule_for_repositories_and_refs() {
        for ok in [
            "acme/skill",
            "https://github.com/acme/skill.git",
            "https://github.com/acme/skill/",
        ] {
            assert_eq!(
                GitRepository::parse(ok).unwrap().as_str(),
                "acme/skill",
                "{ok}"
            );
        }
        for bad in [
            "acme",
            "acme/skill/x",
            "../x",
            "acme/.x",
            "ac me/x",
            "acme/x?y",
        ] {
            assert!(GitRepository::parse(bad).is_err(), "{bad}");
        }
        for ok in [
            "v1.0.0",
            "main",
            "release/2026",
            "0123456789abcdef0123456789abcdef01234567",
        ] {
            assert!(GitRef::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "a..b", "/main", "main/", "a//b", "x.lock", "a@{1}", ".hidden", "a b", "a?b",
        ] {
            assert!(GitRef::parse(bad).is_err(), "{bad}");
        }
    }
}

/// Flags in these states are unresolved and make a certificate not valid.
pub const UNRESOLVED_FLAGS: [&str; 3] = ["OPEN", "TRIAGED", "REAUDIT"];

/// A public report still waiting on an operator: counted apart (`openReportCount`), never
/// enough on its own to make a certificate invalid. Escalations (a REAUDIT an operator ordered,
/// or an unresolved flag the monitor raised) are what `activeFlagCount` counts.
pub const OPEN_REPORTS: [&str; 2] = ["OPEN", "TRIAGED"];

string_enum! {
    /// Where a public flag on a certificate stands: OPEN, TRIAGED and REAUDIT are unresolved
    /// (the certificate does not verify as valid), UPHELD and DISMISSED resolved.
    FlagStatus {
        Open => "OPEN",
        Triaged => "TRIAGED",
        Reaudit => "REAUDIT",
        Upheld => "UPHELD",
        Dismissed => "DISMISSED",
    }
}

impl FlagStatus {
    pub fn is_resolved(self) -> bool {
        matches!(self, Self::Upheld | Self::Dismissed)
    }
}

string_enum! {
    /// A certificate's stored status. SUPERSEDED and REVOKED are final.
    CertificateStatus {
        Approved => "APPROVED",
        Suspended => "SUSPENDED",
        Revoked => "REVOKED",
        Superseded => "SUPERSEDED",
        Expired => "EXPIRED",
    }
}

string_enum! {
    /// A support ticket: OPEN, PENDING (waiting on the developer), RESOLVED or CLOSED.
    TicketStatus {
        Open => "OPEN",
        Pending => "PENDING",
        Resolved => "RESOLVED",
        Closed => "CLOSED",
    }
}

string_enum! {
    /// Who wrote a support message.
    MessageAuthor {
        Developer => "DEVELOPER",
        Operator => "OPERATOR",
    }
}

string_enum! {
    /// A payment intent's life.
    IntentStatus {
        Created => "CREATED",
        AwaitingPayment => "AWAITING_PAYMENT",
        Confirming => "CONFIRMING",
        Confirmed => "CONFIRMED",
        Failed => "FAILED",
        Expired => "EXPIRED",
        Consumed => "CONSUMED",
        Refunded => "REFUNDED",
    }
}

string_enum! {
    /// Why a credit-ledger entry moved a balance.
    LedgerKind {
        Topup => "TOPUP",
        Voucher => "VOUCHER",
        Grant => "GRANT",
        DebitSubmission => "DEBIT_SUBMISSION",
        Refund => "REFUND",
        Adjustment => "ADJUSTMENT",
    }
}

string_enum! {
    /// What a voucher gives: one free submission, or credits per redemption.
    VoucherKind {
        FreeSubmission => "FREE_SUBMISSION",
        Credits => "CREDITS",
    }
}

string_enum! {
    /// Where a draft's bytes come from: nothing yet, an uploaded bundle, or a public repository.
    DraftSource {
        None => "none",
        Upload => "upload",
        Github => "github",
    }
}

string_enum! {
    /// Whether a validator's vote was cast or its call failed.
    VoteStatus {
        Cast => "CAST",
        Failed => "FAILED",
    }
}

/// UUID-keyed identifiers, one type per resource, so an id of one kind is never taken for
/// another. They read and write as the UUID's text.
macro_rules! uuid_id {
    ($($(#[$meta:meta])* $name:ident),+ $(,)?) => {$(
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
        #[serde(transparent)]
        #[schema(value_type = String, format = Uuid)]
        pub struct $name(uuid::Uuid);

        impl $name {
            pub fn random() -> Self {
                Self(uuid::Uuid::new_v4())
            }
            pub fn uuid(self) -> uuid::Uuid {
                self.0
            }
        }
        impl From<uuid::Uuid> for $name {
            fn from(value: uuid::Uuid) -> Self {
                Self(value)
            }
        }
        impl From<$name> for uuid::Uuid {
            fn from(value: $name) -> Self {
                value.0
            }
        }
        impl FromStr for $name {
            type Err = String;
            fn from_str(raw: &str) -> Result<Self, Self::Err> {
                raw.parse()
                    .map(Self)
                    .map_err(|_| format!(concat!("`{}` is not a ", stringify!($name), " (a UUID)"), raw))
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    )+};
}

uuid_id! {
    /// A developer's draft.
    DraftId,
    /// A quote for one draft revision.
    QuoteId,
    /// A payment intent for a quote.
    PaymentIntentId,
    /// A support ticket.
    TicketId,
    /// A public flag on a certificate.
    FlagId,
    /// A pricing rule.
    RuleId,
    /// A pricing campaign.
    CampaignId,
    /// A developer account.
    DeveloperId,
    /// A developer's dispute of a rejection or a suspension.
    DisputeId,
    /// A developer's request to prove control of a site.
    SiteId,
}

/// A certificate's id: the id of the submission it certifies (one certificate per submission).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(try_from = "String", into = "String")]
#[schema(value_type = String, example = "97e79d874a12451fabeca6ab")]
pub struct CertificateId(String);

impl CertificateId {
    pub fn parse(raw: &str) -> Result<Self, String> {
        SubmissionId::parse(raw)
            .map(|id| Self(id.0))
            .map_err(|_| format!("`{raw}` is not a certificate id (24 lowercase hex characters)"))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
impl From<SubmissionId> for CertificateId {
    fn from(value: SubmissionId) -> Self {
        Self(value.0)
    }
}
