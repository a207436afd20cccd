//! The consensus policy: how validator votes and sandbox signals become an outcome.
//! Pure and deterministic, so the workflow and its tests agree on every case.
//!
//! | sandbox                              | votes (both phases)          | outcome   |
//! |--------------------------------------|------------------------------|-----------|
//! | blocked                              | (audit never runs)           | REJECTED  |
//! | any                                  | a failed or missing vote     | ESCALATED |
//! | hard gate (secret, injection, high)  | all SAFE                     | ESCALATED |
//! | no hard gate                         | all SAFE                     | APPROVED  |
//! | any                                  | all UNSAFE                   | REJECTED  |
//! | any                                  | split                        | ESCALATED |

use serde::{Deserialize, Serialize};

use crate::domain::{Outcome, RiskLevel, Severity, Verdict};

pub const POLICY_VERSION: &str = "sigma-consensus-v1";

/// Sandbox signals the policy weighs. Counts come from the sandbox report.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct SandboxSignals {
    pub blocked: bool,
    pub block_reasons: Vec<String>,
    pub risk_level: Option<RiskLevel>,
    pub real_secret_count: u32,
    pub prompt_injection_count: u32,
    pub high_risk_count: u32,
    pub manifest_mismatch_count: u32,
    /// Why the live probe of the declared endpoints blocks approval (`approvalBlocked`), if it
    /// does: an endpoint leading into SIGMA's own network, or whose TLS fails.
    #[serde(default)]
    pub probe_block_reasons: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CastVote {
    pub verdict: Verdict,
    pub severity: Severity,
    pub blocking: bool,
}

/// One validator's contribution in one phase; `cast == None` is a failed vote (no schema-valid
/// answer after every retry) and is never read as SAFE.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PhaseVote {
    pub phase: u8,
    pub validator_id: String,
    pub cast: Option<CastVote>,
    pub failure: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Decision {
    pub outcome: Outcome,
    pub reasons: Vec<String>,
    pub policy_version: String,
}

pub fn decide(signals: &SandboxSignals, votes: &[PhaseVote], phases: &[u8]) -> Decision {
    let decision = |outcome, reasons| Decision {
        outcome,
        reasons,
        policy_version: POLICY_VERSION.into(),
    };
    if signals.blocked {
        return decision(Outcome::Rejected, signals.block_reasons.clone());
    }
    let mut reasons = Vec::new();
    for phase in phases {
        if !votes.iter().any(|v| v.phase == *phase) {
            reasons.push(format!("phase {phase} has no validator votes"));
        }
    }
    for vote in votes.iter().filter(|v| v.cast.is_none()) {
        reasons.push(format!(
            "phase {} validator {} gave no valid verdict: {}",
            vote.phase,
            vote.validator_id,
            vote.failure.as_deref().unwrap_or("unknown failure")
        ));
    }
    if !reasons.is_empty() {
        return decision(Outcome::Escalated, reasons);
    }
    let safe = votes
        .iter()
        .filter(|v| matches!(&v.cast, Some(c) if c.verdict == Verdict::Safe))
        .count();
    let unsafe_ = votes.len() - safe;
    if unsafe_ == votes.len() {
        let reasons = votes
            .iter()
            .filter_map(|v| v.cast.as_ref().map(|c| (v, c)))
            .map(|(v, c)| {
                format!(
                    "phase {} validator {} voted UNSAFE ({})",
                    v.phase, v.validator_id, c.severity
                )
            })
            .collect();
        return decision(Outcome::Rejected, reasons);
    }
    if safe == votes.len() {
        let mut gates = Vec::new();
        if signals.real_secret_count > 0 {
            gates.push(format!(
                "hard gate: {} embedded secret(s) found by the sandbox",
                signals.real_secret_count
            ));
        }
        if signals.prompt_injection_count > 0 {
            gates.push(format!(
                "hard gate: {} prompt-injection signal(s) found by the sandbox; unanimous SAFE votes cannot clear them",
                signals.prompt_injection_count
            ));
        }
        if signals.high_risk_count > 0 {
            gates.push(format!(
                "hard gate: {} high-risk signal(s) found by the sandbox",
                signals.high_risk_count
            ));
        }
        gates.extend(
            signals
                .probe_block_reasons
                .iter()
                .map(|r| format!("hard gate (approvalBlocked): {r}")),
        );
        if gates.is_empty() {
            return decision(
                Outcome::Approved,
                vec!["all validators voted SAFE in both phases".into()],
            );
        }
        return decision(Outcome::Escalated, gates);
    }
    decision(
        Outcome::Escalated,
        vec![format!("split council: {safe} SAFE, {unsafe_} UNSAFE")],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vote(phase: u8, id: &str, verdict: Option<Verdict>) -> PhaseVote {
        PhaseVote {
            phase,
            validator_id: id.into(),
            cast: verdict.map(|verdict| CastVote {
                verdict,
                severity: Severity::Low,
                blocking: false,
            }),
            failure: verdict.is_none().then(|| "malformed JSON".into()),
        }
    }
    const SAFE: Option<Verdict> = Some(Verdict::Safe);
    const UNSAFE: Option<Verdict> = Some(Verdict::Unsafe);

    #[test]
    fn the_table_holds() {
        let clean = SandboxSignals::default();
        let all_safe = [vote(1, "a", SAFE), vote(2, "b", SAFE)];
        assert_eq!(
            decide(&clean, &all_safe, &[1, 2]).outcome,
            Outcome::Approved
        );
        let all_unsafe = [vote(1, "a", UNSAFE), vote(2, "b", UNSAFE)];
        assert_eq!(
            decide(&clean, &all_unsafe, &[1, 2]).outcome,
            Outcome::Rejected
        );
        let split = [vote(1, "a", SAFE), vote(2, "b", UNSAFE)];
        assert_eq!(decide(&clean, &split, &[1, 2]).outcome, Outcome::Escalated);
        let failed = [vote(1, "a", SAFE), vote(2, "b", None)];
        let d = decide(&clean, &failed, &[1, 2]);
        assert_eq!(d.outcome, Outcome::Escalated);
        assert!(d.reasons[0].contains("malformed JSON"));
        assert_eq!(
            decide(&clean, &[vote(1, "a", SAFE)], &[1, 2]).outcome,
            Outcome::Escalated
        );
    }

    #[test]
    fn unanimous_safe_cannot_pass_a_hard_gate() {
        let injected = SandboxSignals {
            prompt_injection_count: 1,
            ..Default::default()
        };
        let all_safe = [vote(1, "a", SAFE), vote(2, "b", SAFE)];
        let d = decide(&injected, &all_safe, &[1, 2]);
        assert_eq!(d.outcome, Outcome::Escalated);
        assert!(d.reasons[0].contains("prompt-injection"));
        let probe_blocked = SandboxSignals {
            probe_block_reasons: vec![
                "API probe: GET https://x.test/: leads into a forbidden network".into(),
            ],
            ..Default::default()
        };
        let d = decide(&probe_blocked, &all_safe, &[1, 2]);
        assert_eq!(d.outcome, Outcome::Escalated);
        assert!(
            d.reasons[0].starts_with("hard gate (approvalBlocked): API probe"),
            "{:?}",
            d.reasons
        );
        let blocked = SandboxSignals {
            blocked: true,
            block_reasons: vec!["path traversal".into()],
            ..Default::default()
        };
        assert_eq!(
            decide(&blocked, &all_safe, &[1, 2]).outcome,
            Outcome::Rejected
        );
    }
}
