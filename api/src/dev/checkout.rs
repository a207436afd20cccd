//! The submit: from a quoted, paid-for draft to a running submission. The run's first step
//! moves the money in one transaction (`sigma_activities::intake::checkout`).

use axum::extract::State;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use sigma_shared::domain::SubmissionId;
use sqlx::types::Uuid;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::drafts::OwnedDraft;
use crate::AppState;
use crate::core::idempotency::{IdempotencyKey, request_digest, submission_for_key};
use crate::core::submission_run::{self, NewRun, SubmissionAccepted};
use crate::error::{ApiError, ApiJson, ApiResult, ErrorBody};
use sigma_activities::intake::{DraftCheckout, Idempotency, Intake};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(submit_draft))
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SubmitDraft {
    pub payment_intent_id: String,
}

/// Submit the draft. The submission's run starts first, under an id made of the draft (a draft
/// is submitted once); its first step uses the payment intent (debiting credits, a voucher use
/// or a free override, and the quote's campaign slot) and records the submission with the draft
/// and price snapshots, all in one transaction. Repeating the request, concurrently or later
/// (or reusing its `Idempotency-Key`), answers with the same submission and charges once.
#[utoipa::path(post, path = "/drafts/{id}/submit", tag = "developer", security(("developer_session" = [])),
    params(("id" = Uuid, Path), ("Idempotency-Key" = Option<String>, Header, description = "Deduplicates retries of the same request")),
    request_body = SubmitDraft,
    responses((status = 202, description = "Submitted; the pipeline has started", body = SubmissionAccepted),
        (status = 402, description = "Not enough credits (the detail says how many are missing)", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "Intent expired or used, quote stale, campaign sold out, voucher used up, key reused", body = ErrorBody),
        (status = 503, description = "The workflow engine is unreachable (nothing was charged), or the payment is still being settled: repeat the request", body = ErrorBody)))]
#[tracing::instrument(name = "submit_draft", skip_all, fields(draft_id = %owned.item.draft_id, submission_id, workflow_id))]
async fn submit_draft(
    State(state): State<AppState>,
    owned: OwnedDraft,
    IdempotencyKey(idempotency_key): IdempotencyKey,
    ApiJson(body): ApiJson<SubmitDraft>,
) -> ApiResult<Response> {
    let OwnedDraft {
        developer,
        item: draft,
    } = owned;
    let draft_id = draft.draft_id;
    let request_sha256 = request_digest(
        "draft-submit",
        &[draft_id.as_bytes(), body.payment_intent_id.as_bytes()],
    );
    if let Some(key) = &idempotency_key
        && let Some(previous) =
            submission_for_key(&state.db, developer.developer_id, key, &request_sha256).await?
    {
        let previous = SubmissionId::parse(&previous).map_err(anyhow::Error::msg)?;
        return submission_run::replay(&state, &previous).await;
    }
    let intent_id: Uuid = body
        .payment_intent_id
        .parse()
        .map_err(|_| ApiError::not_found("payment intent"))?;
    if let Some(existing) = &draft.submission_id {
        // Submitted before (a retry, or a second click): the same answer.
        let existing = SubmissionId::parse(existing).map_err(anyhow::Error::msg)?;
        return submission_run::replay(&state, &existing).await;
    }
    let category = draft.category()?;
    let id = SubmissionId::for_business_key(&[b"draft", draft_id.as_bytes()]);
    let span = tracing::Span::current();
    span.record("submission_id", tracing::field::display(&id));
    span.record("workflow_id", id.workflow_id());
    let outcome = submission_run::start_with_intake(
        &state,
        NewRun {
            id: &id,
            category,
            name: None,
            bundle_key: String::new(),
            git: None,
            charged: false,
            intake: Some(Intake::Draft(DraftCheckout {
                developer_id: developer.developer_id,
                developer_email: developer.email.clone(),
                draft_id,
                intent_id,
                idempotency: idempotency_key.map(|key| Idempotency {
                    key,
                    request_sha256: request_sha256.clone(),
                }),
            })),
        },
    )
    .await?;
    crate::core::fault::point("submit_draft.after_checkout");
    match outcome {
        Some(outcome) => submission_run::answer(&state, &id, outcome, Some(&request_sha256)),
        // The run closed (completed long ago) or no worker answered yet: the projection says.
        None => match submission_run::recorded_digest(&state, &id).await? {
            Some(digest) => Ok(submission_run::accepted(&state, &id, digest.as_deref())),
            None => Err(ApiError::unavailable(
                "checkout_pending",
                "the payment is being settled by the submission's run; repeat the request to see its outcome",
            )),
        },
    }
}
