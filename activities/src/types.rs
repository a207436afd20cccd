//! Activity inputs and outputs. They travel through workflow history, so they stay small:
//! bundles, reports and transcripts are referenced by blob key, never inlined.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sigma_shared::config::SandboxLimits;
use sigma_shared::consensus::{CastVote, Decision, SandboxSignals};
use sigma_shared::domain::{Category, Outcome, RiskLevel, Stage};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SandboxInput {
    pub submission_id: String,
    pub bundle_key: String,
    pub category: Category,
    pub limits: SandboxLimits,
    /// Set when the skill comes from a public git repository: the activity fetches it.
    #[serde(default)]
    pub git: Option<GitSource>,
}

/// A public git repository pinned to a ref (a commit SHA or a tag).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitSource {
    /// `owner/name`.
    pub repository: String,
    pub reference: String,
}

impl GitSource {
    /// The source of a recorded submission: both columns, or none.
    pub fn recorded(repository: Option<String>, reference: Option<String>) -> Option<Self> {
        repository
            .zip(reference)
            .map(|(repository, reference)| Self {
                repository,
                reference,
            })
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SandboxOutcome {
    pub report_key: String,
    pub signals: SandboxSignals,
    pub risk_level: RiskLevel,
    pub finding_count: u32,
    pub skill_md_sha256: Option<String>,
    pub bundle_digest: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ValidatorRef {
    pub validator_id: String,
    pub model: String,
    /// The effective weight (shared/src/council.rs), as used for this draw.
    pub weight: f64,
    /// Panels prefer validators of different model families; `None` is a family of its own.
    #[serde(default)]
    pub model_family: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VoteRequest {
    pub submission_id: String,
    pub round_id: String,
    pub phase: u8,
    pub validator_id: String,
    /// Phase 1 findings, shown to phase 2 as hypotheses to check, not conclusions.
    pub prior_findings: Vec<String>,
    pub answer_attempts: u32,
    pub llm_timeout_secs: u64,
    /// The validator whose provider failed and whom this vote replaces.
    #[serde(default)]
    pub replaces: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VoteResult {
    pub phase: u8,
    pub validator_id: String,
    pub cast: Option<CastVote>,
    pub failure: Option<String>,
    /// Short finding titles, for the next phase's prompt.
    pub finding_titles: Vec<String>,
    /// The provider failed (unreachable, refusing, or the validator misconfigured), as opposed
    /// to answering badly: such a vote may be replaced by another validator's.
    #[serde(default)]
    pub provider_failed: bool,
    /// Set when another validator's vote replaced this failed one; consensus then skips it.
    #[serde(default)]
    pub replaced_by: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct StageUpdate {
    pub submission_id: String,
    pub stage: Option<Stage>,
    pub round_id: Option<String>,
    pub risk_level: Option<RiskLevel>,
    pub consensus: Option<Outcome>,
    pub outcome: Option<Outcome>,
    pub reasons: Option<Vec<String>>,
    /// Internal detail of a platform failure, shown to operators only.
    #[serde(default)]
    pub failure_detail: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RoundStart {
    pub submission_id: String,
    pub round_id: String,
    pub panel: BTreeMap<u8, Vec<String>>,
    /// Who the panels were drawn from, with the weights used.
    #[serde(default)]
    pub candidates: Vec<ValidatorRef>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VerdictInput {
    pub submission_id: String,
    pub round_id: String,
    pub signals: SandboxSignals,
    pub votes: Vec<VoteResult>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OperatorDecision {
    pub decision: Outcome,
    pub reason: String,
    pub decided_by: String,
    pub operator_id: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DecisionRecord {
    pub submission_id: String,
    pub decision: OperatorDecision,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CertificateInput {
    pub submission_id: String,
    pub round_id: String,
    pub decision: Decision,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CertificateIssued {
    pub certificate_id: String,
    pub payload_hash: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NotifyInput {
    pub submission_id: String,
    pub outcome: Outcome,
    pub reasons: Vec<String>,
    pub certificate_id: Option<String>,
}
