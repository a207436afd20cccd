//! Deterministic orchestration: the submission workflow and the worker that hosts each task queue.
//! Workflow code here does no I/O; time, randomness and concurrency come from the Temporal SDK.

pub mod dev_server;
pub mod panel;
pub mod portal;
pub mod search;
pub mod submission;
pub mod worker;

pub use portal::{DraftCheckWorkflow, ManifestWorkflow, SupportEmailWorkflow};
pub use submission::{SubmissionInput, SubmissionProgress, SubmissionResult, SubmissionWorkflow};
