//! Custom search attributes that let an operator find submissions in the Temporal Web UI, e.g.
//! `SigmaStage = "AWAITING_OPERATOR"` or `SigmaOutcome = "REJECTED" AND SigmaCategory = "SKILL"`.

use temporalio_common::search_attributes::SearchAttributeKey;

pub const SUBMISSION_ID: SearchAttributeKey<String> =
    SearchAttributeKey::keyword("SigmaSubmissionId");
pub const STAGE: SearchAttributeKey<String> = SearchAttributeKey::keyword("SigmaStage");
pub const CATEGORY: SearchAttributeKey<String> = SearchAttributeKey::keyword("SigmaCategory");
pub const OUTCOME: SearchAttributeKey<String> = SearchAttributeKey::keyword("SigmaOutcome");

/// Names to register on the namespace (all keywords).
pub const KEYWORDS: [&str; 4] = [
    "SigmaSubmissionId",
    "SigmaStage",
    "SigmaCategory",
    "SigmaOutcome",
];
