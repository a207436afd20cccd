//! What every SIGMA process shares: domain types, configuration, database access, the blob store,
//! email, telemetry, canonical hashing and the consensus policy.

pub mod attestation;
pub mod blob;
pub mod canonical;
pub mod config;
pub mod consensus;
pub mod council;
pub mod db;
pub mod domain;
pub mod email;
pub mod manifest;
pub mod pricing;
pub mod telemetry;

pub use config::Settings;
