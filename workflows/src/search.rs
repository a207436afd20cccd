//! Custom search attributes that let an operator find submissions in the Temporal Web UI, e.g.
//! `SigmaStage = "AWAITING_OPERATOR"` or `SigmaOutcome = "REJECTED" AND SigmaCategory = "SKILL"`.

use temporalio_common::search_attributes::SearchAttributeKey;

pub const SUBMISSION_ID: SearchAttributeKey<String> =
    SearchAttributeKey::keyword("SigmaSubmissionId");
pub const STAGE: SearchAttributeKey<String> = SearchAttributeKey::keyword("SigmaStage");
pub const CATEGORY: SearchAttributeKey<String> = SearchAttributeKey::keyword("SigmaCategory");
pub const OUTCOME: SearchAttributeKey<String> = SearchAttributeKey::keyword("SigmaOutcome");
/// The periodic job a scheduled run belongs to, e.g. `SigmaJob = "renewal-sweep"`.
pub const JOB: SearchAttributeKey<String> = SearchAttributeKey::keyword("SigmaJob");

/// Names to register on the namespace (all keywords).
pub const KEYWORDS: [&str; 5] = [
    "SigmaSubmissionId",
    "SigmaStage",
    "SigmaCategory",
    "SigmaOutcome",
    "SigmaJob",
];
