//! Plane-neutral pieces every plane's resources use: starting and asking submission workflows,
//! idempotency keys. No plane module is imported from here, and planes never import each other.

pub mod client_ip;
pub mod dispute_run;
pub mod fault;
pub mod flag_run;
pub mod idempotency;
pub mod submission_run;
pub mod tickets;
