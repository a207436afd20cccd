//! The council's arithmetic: a validator's effective weight in panel selection.
//!
//! `effective = weight × (1 + stake_factor × ln(1 + stake)) × (0.5 + reputation)^reputation_exponent
//!  × (0.5 + audit_accuracy)^accuracy_exponent`
//!
//! Reputation and audit accuracy are in [0, 1] and start at 0.5, so a new validator's effective
//! weight is its configured weight. Stake counts logarithmically: a large stake buys influence
//! slowly. Only eligible validators (active, SIGMA-eligible, status ACTIVE) are candidates.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct WeightPolicy {
    pub stake_factor: f64,
    pub reputation_exponent: f64,
    pub accuracy_exponent: f64,
}

impl Default for WeightPolicy {
    fn default() -> Self {
        Self {
            stake_factor: 0.25,
            reputation_exponent: 1.0,
            accuracy_exponent: 1.0,
        }
    }
}

pub struct Standing {
    pub weight: f64,
    pub stake: f64,
    pub reputation: f64,
    pub audit_accuracy: f64,
}

impl WeightPolicy {
    pub fn effective_weight(&self, s: &Standing) -> f64 {
        let clamp = |x: f64| x.clamp(0.0, 1.0);
        s.weight.max(0.0)
            * (1.0 + self.stake_factor * s.stake.max(0.0).ln_1p())
            * (0.5 + clamp(s.reputation)).powf(self.reputation_exponent)
            * (0.5 + clamp(s.audit_accuracy)).powf(self.accuracy_exponent)
    }
}

/// Audit accuracy from agreement counts, smoothed towards 0.5 so a handful of rounds cannot
/// swing it to an extreme.
pub fn audit_accuracy(agreed: i64, disagreed: i64) -> f64 {
    (agreed as f64 + 1.0) / ((agreed + disagreed) as f64 + 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_validator_weighs_its_configured_weight_and_standing_moves_it() {
        let policy = WeightPolicy::default();
        let new = Standing {
            weight: 2.0,
            stake: 0.0,
            reputation: 0.5,
            audit_accuracy: 0.5,
        };
        assert!((policy.effective_weight(&new) - 2.0).abs() < 1e-9);
        let staked = Standing {
            stake: 1000.0,
            ..new
        };
        let w = policy.effective_weight(&staked);
        assert!(
            w > 2.0 && w < 2.0 * 3.0,
            "stake helps, logarithmically: {w}"
        );
        let poor = Standing {
            weight: 2.0,
            stake: 0.0,
            reputation: 0.0,
            audit_accuracy: 0.0,
        };
        assert!((policy.effective_weight(&poor) - 0.5).abs() < 1e-9);
        assert_eq!(audit_accuracy(0, 0), 0.5);
        assert!(audit_accuracy(9, 1) > 0.8 && audit_accuracy(1, 9) < 0.2);
    }
}
