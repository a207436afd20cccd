//! Direct intake: a bundle upload or a public git repository, sent with an administrator-issued
//! API token (the trusted automation path; portal sessions submit through drafts and payment).
//! Workflow first: the run starts under an id made of the developer's `Idempotency-Key` (or a
//! fresh one without a key), and its first step records the submission.

use axum::extract::{Request, State};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use sigma_activities::intake::{DirectIntake, Idempotency, Intake};
use sigma_shared::blob::keys;
use sigma_shared::domain::{Category, Sha256Hex, SubmissionId};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::upload::{
    RawUploadParams, SubmissionMetadata, SubmissionUpload, read_intake, readable_bundle,
    validate_git, validate_metadata,
};
use crate::AppState;
use crate::auth::ApiToken;
use crate::core::idempotency::{IdempotencyKey, request_digest, submission_for_key};
use crate::core::submission_run::{self, NewRun, SubmissionAccepted};
use crate::error::{ApiJson, ApiQuery, ApiResult, ErrorBody};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(create_git_submission))
}

/// Submit a skill bundle for verification (administrator-issued API tokens only; portal
/// sessions go through drafts and payment).
///
/// Send `multipart/form-data` with `category`, `bundle` and optional `metadata` (JSON), or the
/// archive itself as the body (`application/zip`, `application/gzip`) with `?category=`. With an
/// `Idempotency-Key` header, repeating the same request returns the same submission; reusing the
/// key for a different request is refused.
#[utoipa::path(post, path = "/submissions", tag = "developer",
    security(("developer_token" = [])),
    params(RawUploadParams, ("Idempotency-Key" = Option<String>, Header, description = "Deduplicates retries of the same request")),
    request_body(content(
        (SubmissionUpload = "multipart/form-data"),
        (Vec<u8> = "application/zip"),
        (Vec<u8> = "application/gzip"),
    )),
    responses(
        (status = 202, description = "Accepted; the pipeline has started", body = SubmissionAccepted),
        (status = 401, body = ErrorBody), (status = 403, description = "A portal session: submit through a draft", body = ErrorBody),
        (status = 409, description = "Idempotency key reused for another request", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 422, description = "Unknown category, bad metadata or unreadable archive", body = ErrorBody),
        (status = 503, description = "The workflow engine is unreachable; nothing was recorded", body = ErrorBody),
    ))]
#[tracing::instrument(
    name = "create_submission",
    skip_all,
    fields(submission_id, workflow_id)
)]
pub(crate) async fn create_submission(
    State(state): State<AppState>,
    ApiToken(developer): ApiToken,
    IdempotencyKey(idempotency_key): IdempotencyKey,
    ApiQuery(params): ApiQuery<RawUploadParams>,
    request: Request,
) -> ApiResult<Response> {
    let intake = read_intake(&state, params, request).await?;
    let bundle_sha256 = Sha256Hex::of(&intake.bundle);
    let metadata_json = serde_json::to_vec(&intake.metadata).map_err(anyhow::Error::from)?;
    let request_sha256 = request_digest(
        "upload",
        &[
            intake.category.as_str().as_bytes(),
            &metadata_json,
            bundle_sha256.as_str().as_bytes(),
        ],
    );
    let format = readable_bundle(&intake.bundle).await?;
    // Content-addressed: storing the same bytes twice is harmless, so this can precede the run.
    let bundle_key = keys::bundle(&bundle_sha256);
    state
        .blob
        .put(
            &bundle_key,
            intake.bundle.clone(),
            "application/octet-stream",
        )
        .await?;
    let m = intake.metadata;
    intake_direct(
        &state,
        developer.developer_id,
        idempotency_key,
        request_sha256,
        DirectIntake {
            developer_id: developer.developer_id,
            category: intake.category,
            skill_name: m.name,
            skill_version: m.version,
            source_url: m.source_url,
            source_ref: m.source_ref,
            note: m.note,
            bundle_key,
            bundle_sha256: Some(bundle_sha256),
            bundle_bytes: intake.bundle.len() as i64,
            bundle_format: format.to_owned(),
            git: None,
            idempotency: None,
        },
    )
    .await
}

/// A git submission: a public repository pinned to a ref.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GitSubmission {
    /// The documented labels (`SKILL + API`, `skill_api`) are read as the names.
    pub category: Category,
    /// `owner/name` of a public repository.
    #[schema(
        max_length = 220,
        pattern = "^\\s*(https://(www\\.)?github\\.com/)?[A-Za-z0-9_-][A-Za-z0-9_.-]{0,99}/[A-Za-z0-9_-][A-Za-z0-9_.-]{0,99}/?\\s*$"
    )]
    pub repository: String,
    /// The commit SHA (preferred: it cannot move) or tag to review.
    #[serde(rename = "ref")]
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = "^\\s*(?!.*\\.lock\\s*$)[A-Za-z0-9_-]+(\\.[A-Za-z0-9_-]+)*(/[A-Za-z0-9_-]+(\\.[A-Za-z0-9_-]+)*)*\\s*$"
    )]
    pub reference: String,
    #[serde(default)]
    pub metadata: SubmissionMetadata,
}

/// Submit a skill from a public git repository pinned to a ref.
///
/// The sandbox fetches the repository as one archive (`{git_archive_base_url}/{owner}/{repo}/tar.gz/{ref}`),
/// stores it like an upload and reviews exactly those bytes. A repository or ref that does not
/// exist rejects the submission with the reason. `Idempotency-Key` works as for uploads.
#[utoipa::path(post, path = "/submissions/git", tag = "developer",
    security(("developer_token" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "Deduplicates retries of the same request")),
    request_body = GitSubmission,
    responses(
        (status = 202, description = "Accepted; the pipeline has started", body = SubmissionAccepted),
        (status = 401, body = ErrorBody), (status = 409, description = "Idempotency key reused for another request", body = ErrorBody),
        (status = 422, description = "Unknown category, bad repository or ref, or bad metadata", body = ErrorBody),
        (status = 503, description = "The workflow engine is unreachable; nothing was recorded", body = ErrorBody),
    ))]
#[tracing::instrument(
    name = "create_git_submission",
    skip_all,
    fields(submission_id, workflow_id)
)]
async fn create_git_submission(
    State(state): State<AppState>,
    ApiToken(developer): ApiToken,
    IdempotencyKey(idempotency_key): IdempotencyKey,
    ApiJson(body): ApiJson<GitSubmission>,
) -> ApiResult<Response> {
    let category = body.category;
    let git = validate_git(&body.repository, &body.reference)?;
    validate_metadata(&body.metadata)?;
    let request_sha256 = request_digest(
        "git",
        &[&serde_json::to_vec(&body).map_err(anyhow::Error::from)?],
    );
    let base = state
        .settings
        .sandbox
        .git_archive_base_url
        .trim_end_matches('/');
    let m = body.metadata;
    intake_direct(
        &state,
        developer.developer_id,
        idempotency_key,
        request_sha256,
        DirectIntake {
            developer_id: developer.developer_id,
            category,
            skill_name: m.name,
            skill_version: m.version,
            source_url: Some(format!("{base}/{}", git.repository)),
            source_ref: Some(git.reference.clone()),
            note: m.note,
            bundle_key: String::new(),
            bundle_sha256: None,
            bundle_bytes: 0,
            bundle_format: "git".into(),
            git: Some(git),
            idempotency: None,
        },
    )
    .await
}

/// Starts (or joins) the submission's run and answers from how its intake step ended.
async fn intake_direct(
    state: &AppState,
    developer_id: uuid::Uuid,
    idempotency_key: Option<String>,
    request_sha256: String,
    mut new: DirectIntake,
) -> ApiResult<Response> {
    let id = match &idempotency_key {
        Some(key) => {
            if let Some(previous) =
                submission_for_key(&state.db, developer_id, key, &request_sha256).await?
            {
                let previous = SubmissionId::parse(&previous).map_err(anyhow::Error::msg)?;
                return submission_run::replay(state, &previous).await;
            }
            SubmissionId::for_business_key(&[b"key", developer_id.as_bytes(), key.as_bytes()])
        }
        None => SubmissionId::random(),
    };
    let span = tracing::Span::current();
    span.record("submission_id", tracing::field::display(&id));
    span.record("workflow_id", id.workflow_id());
    new.idempotency = idempotency_key.map(|key| Idempotency {
        key,
        request_sha256: request_sha256.clone(),
    });
    let bundle_sha256 = new.bundle_sha256.as_ref().map(|s| s.to_string());
    let name = new.skill_name.clone();
    let outcome = submission_run::start_with_intake(
        state,
        NewRun {
            id: &id,
            category: new.category,
            name: name.as_deref(),
            bundle_key: new.bundle_key.clone(),
            git: new.git.clone(),
            charged: false,
            intake: Some(Intake::Direct(new)),
        },
    )
    .await?;
    match outcome {
        Some(outcome) => submission_run::answer(state, &id, outcome, Some(&request_sha256)),
        // No worker answered yet: the run exists and records the submission when one does.
        None => Ok(submission_run::accepted(
            state,
            &id,
            bundle_sha256.as_deref(),
        )),
    }
}
