//! SIGMA's static analyser of agent skills — the sandbox stage. Pure and server-free: the
//! pipeline's sandbox activity and the offline `sigma scan` command run the same code.
//!
//! [`scan`] takes a bundle's files (from [`unpack`]), and returns a [`Report`]: source facts
//! (digests, languages, manifest, dependencies, hosts, capabilities), findings from the rule pack
//! and the code detectors, each weighed by context, and the resulting risk level and block
//! decision.

pub mod blocks;
pub mod content;
pub mod context;
pub mod deps;
pub mod detect;
pub mod engine;
pub mod finding;
pub mod manifest;
pub mod report;
pub mod rules;
pub mod sarif;
pub mod taint;
pub mod unicode;
pub mod unpack;

pub use finding::{Confidence, Finding, MatchContext, RuleCategory};
pub use report::{Report, RiskLevel, Source, scan};
pub use rules::RulePack;
pub use unpack::{BundleFile, UnpackError};

/// Recorded in every report; bump when the engine (not the rule pack) changes behaviour.
pub const SCANNER_VERSION: &str = concat!("sigma-scanner-", env!("CARGO_PKG_VERSION"), "+3");
