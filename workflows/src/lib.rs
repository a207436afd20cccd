//! Deterministic orchestration: the submission workflow, what a certificate lives through after
//! issuance (renewals, started by Temporal Schedules), and the worker that hosts each task queue.
//! Workflow code here does no I/O; time, randomness and concurrency come from the Temporal SDK.

pub mod dev_server;
pub mod lifecycle;
pub mod panel;
pub mod portal;
pub mod schedules;
pub mod search;
pub mod submission;
pub mod worker;

pub use lifecycle::{
    CertificateStatusWorkflow, DisputeWorkflow, FlagWorkflow, ModelSyncWorkflow,
    MonitorCheckWorkflow, MonitorSweepWorkflow, ReconcileWorkflow, RenewalSweepWorkflow,
    RenewalWorkflow, SiteVerificationInput, SiteVerificationWorkflow,
};
pub use portal::{DraftCheckWorkflow, ManifestWorkflow, SupportEmailWorkflow};
pub use submission::{SubmissionInput, SubmissionProgress, SubmissionResult, SubmissionWorkflow};
