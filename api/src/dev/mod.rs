//! Developer plane: email login and portal sessions, drafts, dry-runs and manifests, quotes,
//! payment intents and credits, submissions and their progress, support.

pub mod account;
pub mod checkout;
pub mod drafts;
pub mod login;
pub mod support;

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sigma_scanner::unpack::{self, UnpackError};
use sigma_shared::blob::keys;
use sigma_shared::domain::{Category, Sha256Hex, Stage, SubmissionId};
use sigma_workflows::search;
use sigma_workflows::{SubmissionInput, SubmissionProgress, SubmissionWorkflow};
use temporalio_client::errors::WorkflowStartError;
use temporalio_client::{WorkflowIdReusePolicy, WorkflowQueryOptions, WorkflowStartOptions};
use temporalio_common::search_attributes::SearchAttributes;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::auth::DeveloperAuth;
use crate::error::{ApiError, ApiJson, ApiQuery, ApiResult, ErrorBody};
use crate::paging::ListParams;
use sigma_activities::types::GitSource;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(login::router())
        .merge(account::router())
        .merge(drafts::router())
        .merge(checkout::router())
        .merge(support::router())
        .routes(routes!(create_submission, list_submissions))
        .routes(routes!(create_git_submission))
        .routes(routes!(get_submission))
        .routes(routes!(get_submission_progress))
}

/// Optional descriptive metadata sent with a bundle.
#[derive(Clone, Debug, Default, Deserialize, Serialize, ToSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SubmissionMetadata {
    pub name: Option<String>,
    pub version: Option<String>,
    /// Public repository the bundle was taken from, if any.
    pub source_url: Option<String>,
    pub source_ref: Option<String>,
    /// Advisory note for the reviewers; treated as a hypothesis, never as fact.
    pub note: Option<String>,
}

/// Multipart form of a submission (the bundle may also be sent as the raw body).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct SubmissionUpload {
    /// SKILL, SKILL_API, API, CODE, CODE_PACKAGES, SKILL_CODE, SKILL_CODE_PACKAGES or SKILL_API_CODE_PACKAGES.
    category: String,
    /// The skill bundle: a zip, tar or tar.gz archive.
    #[schema(value_type = String, format = Binary)]
    bundle: Vec<u8>,
    /// JSON-encoded `SubmissionMetadata`.
    metadata: Option<String>,
}

/// Query parameters of a raw-body upload.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RawUploadParams {
    /// Submission category; required for a raw-body upload.
    pub category: Option<String>,
    pub name: Option<String>,
    pub version: Option<String>,
    pub note: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubmissionAccepted {
    pub id: String,
    pub workflow_id: String,
    pub stage: String,
    pub status_url: String,
    /// SHA-256 of the uploaded archive; absent for a git submission until the sandbox fetches it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bundle_sha256: Option<String>,
}

struct Intake {
    category: Category,
    bundle: Bytes,
    metadata: SubmissionMetadata,
}

const MAX_TEXT_FIELD: usize = 4096;

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
async fn create_submission(
    State(state): State<AppState>,
    developer: DeveloperAuth,
    ApiQuery(params): ApiQuery<RawUploadParams>,
    headers: HeaderMap,
    request: Request,
) -> ApiResult<axum::response::Response> {
    direct_intake_allowed(&developer)?;
    let idempotency_key = idempotency_key(&headers)?;
    let intake = read_intake(&state, params, request).await?;
    let bundle_sha256 = Sha256Hex::of(&intake.bundle);
    let request_sha256 = {
        let mut h = Sha256::new();
        h.update(intake.category.as_str());
        h.update([0]);
        h.update(serde_json::to_vec(&intake.metadata).map_err(anyhow::Error::from)?);
        h.update([0]);
        h.update(bundle_sha256.as_str());
        hex::encode(h.finalize())
    };
    if let Some(key) = &idempotency_key
        && let Some(previous) = find_idempotent(&state, &developer, key, &request_sha256).await?
    {
        return replay(&state, &previous, Some(&bundle_sha256)).await;
    }

    let format = readable_bundle(&intake.bundle).await?;

    // Content-addressed: storing the same bytes twice is harmless, so this can precede the row.
    let bundle_key = keys::bundle(&bundle_sha256);
    state
        .blob
        .put(
            &bundle_key,
            intake.bundle.clone(),
            "application/octet-stream",
        )
        .await?;

    record_and_start(
        &state,
        &developer,
        idempotency_key.as_deref(),
        &request_sha256,
        NewSubmission {
            category: intake.category,
            metadata: intake.metadata,
            bundle_key,
            bundle_sha256: Some(bundle_sha256),
            bundle_bytes: intake.bundle.len() as i64,
            format,
            git: None,
        },
    )
    .await
}

/// Records `key` for the submission in its own transaction; false when another request holds it.
pub(crate) async fn claim_idempotency_key(
    tx: &mut sqlx::PgConnection,
    developer: &DeveloperAuth,
    key: &str,
    request_sha256: &str,
    id: &SubmissionId,
) -> ApiResult<bool> {
    let claimed = sqlx::query!(
        r#"insert into idempotency_key (developer_id, idempotency_key, request_sha256, submission_id)
           values ($1, $2, $3, $4) on conflict do nothing"#,
        developer.developer_id,
        key,
        request_sha256,
        id.as_str(),
    )
    .execute(tx)
    .await?;
    Ok(claimed.rows_affected() == 1)
}

/// Answers as the request that holds `key` did (or refuses a different request under it).
pub(crate) async fn replay_key(
    state: &AppState,
    developer: &DeveloperAuth,
    key: &str,
    request_sha256: &str,
    bundle_sha256: Option<&Sha256Hex>,
) -> ApiResult<axum::response::Response> {
    let previous = find_idempotent(state, developer, key, request_sha256)
        .await?
        .ok_or_else(in_flight)?;
    replay(state, &previous, bundle_sha256).await
}

/// Checks that an uploaded archive can be read, and names its format.
pub(crate) async fn readable_bundle(bundle: &Bytes) -> ApiResult<&'static str> {
    // Inflating an archive is CPU work: keep it off the async workers.
    let bundle = bundle.clone();
    let readable =
        tokio::task::spawn_blocking(move || unpack::check_readable(&bundle, INTAKE_INFLATE_CAP))
            .await
            .map_err(anyhow::Error::from)?;
    let format = readable.map_err(|e| match e {
        UnpackError::UnknownFormat => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_bundle",
            "the bundle must be a zip or tar.gz archive",
        ),
        other => ApiError::unprocessable("corrupt_archive", other.to_string()),
    })?;
    Ok(format.as_str())
}

/// Direct intake skips quotes and payment: it is for API tokens an administrator issued
/// (`sigma developer create-token`), the trusted automation path. Portal sessions — anyone
/// with an email address — submit through a draft and a payment intent.
fn direct_intake_allowed(developer: &DeveloperAuth) -> ApiResult<()> {
    if developer.session_id.is_some() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "submit_through_a_draft",
            "portal sessions submit through a draft: POST /drafts, /drafts/{id}/quote, /payment-intents, /drafts/{id}/submit",
        ));
    }
    Ok(())
}

/// What intake records before starting the workflow.
struct NewSubmission {
    category: Category,
    metadata: SubmissionMetadata,
    /// Empty for a git submission: the sandbox fetches and records the archive.
    bundle_key: String,
    bundle_sha256: Option<Sha256Hex>,
    bundle_bytes: i64,
    format: &'static str,
    git: Option<GitSource>,
}

/// Rows first, then the workflow: the workflow's activities always find their submission. With
/// an idempotency key, a concurrent duplicate answers as the winner did.
async fn record_and_start(
    state: &AppState,
    developer: &DeveloperAuth,
    idempotency_key: Option<&str>,
    request_sha256: &str,
    new: NewSubmission,
) -> ApiResult<axum::response::Response> {
    let id = SubmissionId::random();
    let span = tracing::Span::current();
    span.record("submission_id", tracing::field::display(&id));
    span.record("workflow_id", id.workflow_id());
    let mut tx = state.db.begin().await?;
    let m = &new.metadata;
    sqlx::query!(
        r#"insert into submission (submission_id, developer_id, category, skill_name, skill_version, source_url,
               source_ref, note, bundle_key, bundle_sha256, bundle_bytes, bundle_format, workflow_id, git_repository)
           values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"#,
        id.as_str(),
        developer.developer_id,
        new.category.as_str(),
        m.name,
        m.version,
        m.source_url,
        m.source_ref,
        m.note,
        new.bundle_key,
        new.bundle_sha256.as_ref().map(|s| s.as_str()).unwrap_or(""),
        new.bundle_bytes,
        new.format,
        id.workflow_id(),
        new.git.as_ref().map(|g| g.repository.as_str()),
    )
    .execute(&mut *tx)
    .await?;
    if let Some(key) = idempotency_key
        && !claim_idempotency_key(&mut tx, developer, key, request_sha256, &id).await?
    {
        // A concurrent request with the same key won the race: answer as it did.
        tx.rollback().await?;
        return replay_key(
            state,
            developer,
            key,
            request_sha256,
            new.bundle_sha256.as_ref(),
        )
        .await;
    }
    tx.commit().await?;
    // `already_started`: a concurrent replay of this request's idempotency key started it first.
    if let Err(e) = ensure_started(
        state,
        WorkflowStart {
            id: &id,
            category: new.category,
            bundle_key: &new.bundle_key,
            name: m.name.as_deref(),
            git: new.git.clone(),
            charged: false,
        },
    )
    .await
    {
        // The start may have failed after the server created the run (a timeout), or a replay may
        // have started it meanwhile: only a submission with no run at all is removed.
        if workflow_status(state, &id).await.is_none() {
            // Without a workflow the submission must not exist (the idempotency row cascades), so a
            // retry of this request starts afresh. The bundle blob is content-addressed.
            sqlx::query!(
                "delete from submission where submission_id = $1",
                id.as_str()
            )
            .execute(&state.db)
            .await?;
            return Err(e);
        }
    }
    tracing::info!(category = %new.category, bytes = new.bundle_bytes, git = new.git.is_some(), "submission accepted");
    let body = accepted(state, id.as_str(), new.bundle_sha256.as_ref());
    let location = body.status_url.clone();
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(body),
    )
        .into_response())
}

/// A git submission: a public repository pinned to a ref.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GitSubmission {
    /// SKILL, SKILL_API, API, CODE, CODE_PACKAGES, SKILL_CODE, SKILL_CODE_PACKAGES or SKILL_API_CODE_PACKAGES.
    pub category: String,
    /// `owner/name` of a public repository.
    pub repository: String,
    /// The commit SHA (preferred: it cannot move) or tag to review.
    #[serde(rename = "ref")]
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
    developer: DeveloperAuth,
    headers: HeaderMap,
    ApiJson(body): ApiJson<GitSubmission>,
) -> ApiResult<axum::response::Response> {
    direct_intake_allowed(&developer)?;
    let idempotency_key = idempotency_key(&headers)?;
    let category: Category = body
        .category
        .parse()
        .map_err(|e: String| ApiError::unprocessable("unknown_category", e))?;
    let git = validate_git(&body.repository, &body.reference)?;
    validate_metadata(&body.metadata)?;
    let request_sha256 = {
        let mut h = Sha256::new();
        h.update(b"git\0");
        h.update(serde_json::to_vec(&body).map_err(anyhow::Error::from)?);
        hex::encode(h.finalize())
    };
    if let Some(key) = &idempotency_key
        && let Some(previous) = find_idempotent(&state, &developer, key, &request_sha256).await?
    {
        return replay(&state, &previous, None).await;
    }
    let base = state
        .settings
        .sandbox
        .git_archive_base_url
        .trim_end_matches('/');
    let metadata = SubmissionMetadata {
        source_url: Some(format!("{base}/{}", git.repository)),
        source_ref: Some(git.reference.clone()),
        ..body.metadata
    };
    record_and_start(
        &state,
        &developer,
        idempotency_key.as_deref(),
        &request_sha256,
        NewSubmission {
            category,
            metadata,
            bundle_key: String::new(),
            bundle_sha256: None,
            bundle_bytes: 0,
            format: "git",
            git: Some(git),
        },
    )
    .await
}

/// `owner/name` and a ref made of safe characters only: they become part of a URL path.
fn validate_git(repository: &str, reference: &str) -> ApiResult<GitSource> {
    let name_ok = |part: &str| {
        !part.is_empty()
            && part.len() <= 100
            && part != "."
            && part != ".."
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    let parts: Vec<&str> = repository.split('/').collect();
    if parts.len() != 2 || !parts.iter().all(|p| name_ok(p)) {
        return Err(ApiError::unprocessable(
            "invalid_repository",
            "repository must be `owner/name`",
        ));
    }
    let ref_ok = !reference.is_empty()
        && reference.len() <= 200
        && !reference.contains("..")
        && !reference.starts_with('/')
        && !reference.ends_with('/')
        && !reference.contains("//")
        && reference
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
    if !ref_ok {
        return Err(ApiError::unprocessable(
            "invalid_ref",
            "ref must be a commit SHA or a tag name",
        ));
    }
    Ok(GitSource {
        repository: repository.to_owned(),
        reference: reference.to_owned(),
    })
}

/// The git source of a recorded submission, for replays and operator retries.
pub(crate) fn git_source(
    repository: Option<String>,
    reference: Option<String>,
) -> Option<GitSource> {
    Some(GitSource {
        repository: repository?,
        reference: reference?,
    })
}

/// Decompressed bytes read at intake to prove an archive is readable; the sandbox enforces the
/// real limits, so this only bounds the work a hostile archive can cause here.
const INTAKE_INFLATE_CAP: u64 = 16 * 1024 * 1024;

/// Answers a repeated request as the first one was answered, and makes sure its workflow runs
/// (it may not, if the first request's process died between the commit and the start).
pub(crate) async fn replay(
    state: &AppState,
    id: &str,
    bundle_sha256: Option<&Sha256Hex>,
) -> ApiResult<axum::response::Response> {
    let row = sqlx::query!(
        r#"select s.category, s.bundle_key, s.skill_name, s.stage, s.git_repository, s.source_ref,
               coalesce(i.method = 'credits' and i.status = 'CONSUMED', false) as "charged!"
           from submission s left join payment_intent i on i.intent_id = s.payment_intent_id
           where s.submission_id = $1"#,
        id
    )
    .fetch_optional(&state.db)
    .await?;
    // The first request is being undone (its workflow could not start): ask the client to retry.
    let row = row.ok_or_else(in_flight)?;
    // Only a submission that never got going is started here; anything further along (even
    // FAILED) belongs to its workflow or to an operator retry.
    if row.stage == Stage::Received.as_str() {
        let submission_id = SubmissionId::parse(id).map_err(anyhow::Error::msg)?;
        let category: Category = row.category.parse().map_err(anyhow::Error::msg)?;
        ensure_started(
            state,
            WorkflowStart {
                id: &submission_id,
                category,
                bundle_key: &row.bundle_key,
                name: row.skill_name.as_deref(),
                git: git_source(row.git_repository, row.source_ref),
                charged: row.charged,
            },
        )
        .await?;
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(accepted(state, id, bundle_sha256)),
    )
        .into_response())
}

fn in_flight() -> ApiError {
    ApiError::unavailable(
        "request_in_flight",
        "an earlier request with this Idempotency-Key is still being settled; retry shortly",
    )
}

/// The status of the submission's latest workflow run, or `None` when Temporal has none (or
/// cannot say).
pub(crate) async fn workflow_status(
    state: &AppState,
    id: &SubmissionId,
) -> Option<temporalio_client::WorkflowExecutionStatus> {
    let handle = state
        .temporal
        .get_workflow_handle::<SubmissionWorkflow>(id.workflow_id());
    handle
        .describe(Default::default())
        .await
        .ok()
        .map(|d| d.status())
}

pub(crate) fn accepted(
    state: &AppState,
    id: &str,
    bundle_sha256: Option<&Sha256Hex>,
) -> SubmissionAccepted {
    let base = state.settings.api.public_base_url.trim_end_matches('/');
    SubmissionAccepted {
        id: id.to_owned(),
        workflow_id: format!("submission:{id}"),
        stage: "RECEIVED".into(),
        status_url: format!("{base}/api/v1/sigma/dev/submissions/{id}"),
        bundle_sha256: bundle_sha256.map(|s| s.to_string()),
    }
}

/// What a submission's workflow starts from.
pub(crate) struct WorkflowStart<'a> {
    pub id: &'a SubmissionId,
    pub category: Category,
    pub bundle_key: &'a str,
    pub name: Option<&'a str>,
    pub git: Option<GitSource>,
    /// Credits were debited: a platform failure refunds them.
    pub charged: bool,
}

/// Starts the submission's workflow unless it already runs.
pub(crate) async fn ensure_started(state: &AppState, start: WorkflowStart<'_>) -> ApiResult<()> {
    // Intake starts a submission's workflow once, ever; only an operator retry reuses the id.
    match start_workflow(state, start, WorkflowIdReusePolicy::RejectDuplicate).await {
        Err(ApiError::Client {
            code: "already_started",
            ..
        }) => Ok(()),
        other => other,
    }
}

pub(crate) async fn start_workflow(
    state: &AppState,
    start: WorkflowStart<'_>,
    reuse: WorkflowIdReusePolicy,
) -> ApiResult<()> {
    let settings = &state.settings;
    let WorkflowStart {
        id,
        category,
        bundle_key,
        name,
        git,
        charged,
    } = start;
    let input = SubmissionInput {
        submission_id: id.to_string(),
        category,
        bundle_key: bundle_key.to_owned(),
        policy: settings.pipeline.clone(),
        limits: settings.sandbox.limits_for(category),
        git,
        charged,
    };
    let mut options = WorkflowStartOptions::new(sigma_activities::queues::OPS, id.workflow_id())
        .search_attributes(SearchAttributes::new([
            search::SUBMISSION_ID.value_set(id.to_string()),
            search::CATEGORY.value_set(category.to_string()),
            search::STAGE.value_set("RECEIVED".to_owned()),
        ]))
        .static_summary(format!(
            "{category} submission {id}{}",
            name.map(|n| format!(" ({n})")).unwrap_or_default()
        ))
        .build();
    options.id_reuse_policy = reuse;
    match state
        .temporal
        .start_workflow(SubmissionWorkflow::run, input, options)
        .await
    {
        Ok(_) => Ok(()),
        Err(WorkflowStartError::AlreadyStarted { .. }) => Err(ApiError::conflict(
            "already_started",
            format!("a workflow for submission {id} already exists"),
        )),
        Err(e) => {
            tracing::error!(error = %e, "cannot start the submission workflow");
            Err(ApiError::unavailable(
                "workflow_engine_unavailable",
                "the workflow engine is unreachable; try again",
            ))
        }
    }
}

pub(crate) fn idempotency_key(headers: &HeaderMap) -> ApiResult<Option<String>> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .map_err(|_| {
            ApiError::bad_request(
                "invalid_idempotency_key",
                "Idempotency-Key must be visible ASCII",
            )
        })?
        .trim();
    if key.is_empty() || key.len() > 200 {
        return Err(ApiError::bad_request(
            "invalid_idempotency_key",
            "Idempotency-Key must be 1 to 200 characters",
        ));
    }
    Ok(Some(key.to_owned()))
}

async fn find_idempotent(
    state: &AppState,
    developer: &DeveloperAuth,
    key: &str,
    request_sha256: &str,
) -> ApiResult<Option<String>> {
    let row = sqlx::query!(
        "select request_sha256, submission_id from idempotency_key where developer_id = $1 and idempotency_key = $2",
        developer.developer_id,
        key
    )
    .fetch_optional(&state.db)
    .await?;
    match row {
        None => Ok(None),
        Some(row) if row.request_sha256 == request_sha256 => Ok(Some(row.submission_id)),
        Some(_) => Err(ApiError::conflict(
            "idempotency_key_reused",
            "this Idempotency-Key was already used for a different request",
        )),
    }
}

async fn read_intake(
    state: &AppState,
    params: RawUploadParams,
    request: Request,
) -> ApiResult<Intake> {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if content_type.starts_with("multipart/form-data") {
        let multipart = Multipart::from_request(request, state)
            .await
            .map_err(|e| ApiError::bad_request("invalid_multipart", e.body_text()))?;
        return read_multipart(multipart).await;
    }
    let category = params.category.as_deref().ok_or_else(|| {
        ApiError::unprocessable("missing_category", "a raw-body upload needs ?category=")
    })?;
    let category = category
        .parse()
        .map_err(|e: String| ApiError::unprocessable("unknown_category", e))?;
    let bundle = Bytes::from_request(request, state).await.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            too_large(state)
        } else {
            ApiError::bad_request("invalid_body", e.body_text())
        }
    })?;
    let metadata = SubmissionMetadata {
        name: params.name,
        version: params.version,
        note: params.note,
        ..Default::default()
    };
    validate_metadata(&metadata)?;
    non_empty(Intake {
        category,
        bundle,
        metadata,
    })
}

async fn read_multipart(mut multipart: Multipart) -> ApiResult<Intake> {
    let mut category = None;
    let mut bundle = None;
    let mut metadata = SubmissionMetadata::default();
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                return Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    e.body_text(),
                ));
            }
            Err(e) => return Err(ApiError::bad_request("invalid_multipart", e.body_text())),
        };
        let name = field.name().unwrap_or("").to_owned();
        let data = field.bytes().await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    e.body_text(),
                )
            } else {
                ApiError::bad_request("invalid_multipart", e.body_text())
            }
        })?;
        match name.as_str() {
            "bundle" => bundle = Some(data),
            "category" => category = Some(text_field("category", &data)?),
            "metadata" => {
                metadata = serde_json::from_slice(&data).map_err(|e| {
                    ApiError::unprocessable(
                        "invalid_metadata",
                        format!("metadata is not valid: {e}"),
                    )
                })?;
            }
            other => {
                return Err(ApiError::unprocessable(
                    "unknown_field",
                    format!("unknown form field `{other}`"),
                ));
            }
        }
    }
    let category = category.ok_or_else(|| {
        ApiError::unprocessable("missing_category", "the form has no `category` field")
    })?;
    let category = category
        .parse()
        .map_err(|e: String| ApiError::unprocessable("unknown_category", e))?;
    let bundle = bundle.ok_or_else(|| {
        ApiError::unprocessable("missing_bundle", "the form has no `bundle` file")
    })?;
    validate_metadata(&metadata)?;
    non_empty(Intake {
        category,
        bundle,
        metadata,
    })
}

fn text_field(name: &str, data: &[u8]) -> ApiResult<String> {
    if data.len() > MAX_TEXT_FIELD {
        return Err(ApiError::unprocessable(
            "field_too_long",
            format!("`{name}` is too long"),
        ));
    }
    String::from_utf8(data.to_vec())
        .map_err(|_| ApiError::unprocessable("invalid_field", format!("`{name}` is not UTF-8")))
}

fn validate_metadata(m: &SubmissionMetadata) -> ApiResult<()> {
    for (field, value) in [
        ("name", &m.name),
        ("version", &m.version),
        ("sourceUrl", &m.source_url),
        ("sourceRef", &m.source_ref),
        ("note", &m.note),
    ] {
        if value.as_ref().is_some_and(|v| v.len() > MAX_TEXT_FIELD) {
            return Err(ApiError::unprocessable(
                "field_too_long",
                format!("metadata.{field} exceeds {MAX_TEXT_FIELD} bytes"),
            ));
        }
    }
    if let Some(url) = &m.source_url
        && !(url.starts_with("https://") || url.starts_with("http://"))
    {
        return Err(ApiError::unprocessable(
            "invalid_source_url",
            "metadata.sourceUrl must be an http(s) URL",
        ));
    }
    Ok(())
}

fn non_empty(intake: Intake) -> ApiResult<Intake> {
    if intake.bundle.is_empty() {
        return Err(ApiError::unprocessable(
            "empty_bundle",
            "the bundle is empty",
        ));
    }
    Ok(intake)
}

fn too_large(state: &AppState) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!(
            "the body exceeds {} bytes",
            state.settings.api.max_body_bytes
        ),
    )
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VoteView {
    pub phase: i16,
    pub validator_id: String,
    pub model: String,
    pub status: String,
    pub verdict: Option<String>,
    pub severity: Option<String>,
    pub failure: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubmissionView {
    pub id: String,
    pub workflow_id: String,
    pub category: String,
    pub skill_name: Option<String>,
    pub skill_version: Option<String>,
    pub stage: String,
    /// The council's consensus: APPROVED, REJECTED or ESCALATED.
    pub consensus: Option<String>,
    /// The final outcome: APPROVED or REJECTED.
    pub outcome: Option<String>,
    pub reasons: serde_json::Value,
    pub risk_level: Option<String>,
    pub round_id: Option<String>,
    pub bundle_sha256: String,
    pub bundle_bytes: i64,
    pub certificate_id: Option<String>,
    pub votes: Vec<VoteView>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub sandbox_started_at: Option<DateTime<Utc>>,
    pub audit_started_at: Option<DateTime<Utc>>,
    pub decided_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
}

fn parse_id(raw: &str) -> ApiResult<SubmissionId> {
    SubmissionId::parse(raw).map_err(|_| ApiError::not_found("submission"))
}

/// A submission's stage, outcome and reasons, read from the projection (works while workers are down).
#[utoipa::path(get, path = "/submissions/{id}", tag = "developer", security(("developer_token" = [])),
    params(("id" = String, Path, description = "Submission id")),
    responses((status = 200, body = SubmissionView), (status = 404, body = ErrorBody)))]
async fn get_submission(
    State(state): State<AppState>,
    developer: DeveloperAuth,
    Path(id): Path<String>,
) -> ApiResult<Json<SubmissionView>> {
    let id = parse_id(&id)?;
    tracing::Span::current().record("submission_id", tracing::field::display(&id));
    let s = sqlx::query!(
        r#"select s.*, c.certificate_id as "certificate_id?" from submission s
           left join certificate c on c.certificate_id = s.submission_id
           where s.submission_id = $1 and s.developer_id = $2"#,
        id.as_str(),
        developer.developer_id
    )
    .fetch_optional(&state.db)
    .await?
    .ok_or_else(|| ApiError::not_found("submission"))?;
    let votes = match &s.round_id {
        Some(round_id) => sqlx::query_as!(
            VoteView,
            "select phase, validator_id, model, status, verdict, severity, failure from audit_vote where round_id = $1 order by phase, validator_id",
            round_id
        )
        .fetch_all(&state.db)
        .await?,
        None => Vec::new(),
    };
    Ok(Json(SubmissionView {
        id: s.submission_id,
        workflow_id: s.workflow_id,
        category: s.category,
        skill_name: s.skill_name,
        skill_version: s.skill_version,
        stage: s.stage,
        consensus: s.consensus,
        outcome: s.outcome,
        reasons: s.reasons,
        risk_level: s.risk_level,
        round_id: s.round_id,
        bundle_sha256: s.bundle_sha256,
        bundle_bytes: s.bundle_bytes,
        certificate_id: s.certificate_id,
        votes,
        created_at: s.created_at,
        updated_at: s.updated_at,
        sandbox_started_at: s.sandbox_started_at,
        audit_started_at: s.audit_started_at,
        decided_at: s.decided_at,
        completed_at: s.completed_at,
    }))
}

/// Live detail from the running workflow (panel, votes so far, pending decision). Needs a worker.
#[utoipa::path(get, path = "/submissions/{id}/progress", tag = "developer", security(("developer_token" = [])),
    params(("id" = String, Path, description = "Submission id")),
    responses((status = 200, description = "The workflow's live state", body = Object), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn get_submission_progress(
    State(state): State<AppState>,
    developer: DeveloperAuth,
    Path(id): Path<String>,
) -> ApiResult<Json<SubmissionProgress>> {
    let id = parse_id(&id)?;
    let owned = sqlx::query_scalar!(
        "select exists(select 1 from submission where submission_id = $1 and developer_id = $2)",
        id.as_str(),
        developer.developer_id
    )
    .fetch_one(&state.db)
    .await?;
    if owned != Some(true) {
        return Err(ApiError::not_found("submission"));
    }
    Ok(Json(query_progress(&state, &id).await?))
}

pub(crate) async fn query_progress(
    state: &AppState,
    id: &SubmissionId,
) -> ApiResult<SubmissionProgress> {
    let handle = state
        .temporal
        .get_workflow_handle::<SubmissionWorkflow>(id.workflow_id());
    let query = handle.query(
        SubmissionWorkflow::progress,
        (),
        WorkflowQueryOptions::default(),
    );
    match tokio::time::timeout(Duration::from_secs(5), query).await {
        Ok(Ok(progress)) => Ok(progress),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "progress query failed");
            Err(ApiError::unavailable(
                "progress_unavailable",
                "live progress is unavailable; the stored status is at GET /submissions/{id}",
            ))
        }
        Err(_) => Err(ApiError::unavailable(
            "progress_unavailable",
            "no worker answered in time; the stored status is at GET /submissions/{id}",
        )),
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubmissionSummary {
    pub id: String,
    pub category: String,
    pub skill_name: Option<String>,
    pub stage: String,
    pub outcome: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubmissionPage {
    pub items: Vec<SubmissionSummary>,
    pub next_cursor: Option<String>,
}

/// The developer's submissions, newest first.
#[utoipa::path(get, path = "/submissions", tag = "developer", security(("developer_token" = [])), params(ListParams),
    responses((status = 200, body = SubmissionPage), (status = 422, body = ErrorBody)))]
async fn list_submissions(
    State(state): State<AppState>,
    developer: DeveloperAuth,
    ApiQuery(params): ApiQuery<ListParams>,
) -> ApiResult<Json<SubmissionPage>> {
    let page = params.page()?;
    let mut items = sqlx::query_as!(
        SubmissionSummary,
        r#"select submission_id as id, category, skill_name, stage, outcome, created_at from submission
           where developer_id = $1 and ($2::timestamptz is null or (created_at, submission_id) < ($2, $3))
           order by created_at desc, submission_id desc limit $4"#,
        developer.developer_id,
        page.after_time,
        page.after_id,
        page.limit + 1,
    )
    .fetch_all(&state.db)
    .await?;
    let next_cursor = page.finish(&mut items, |s| (s.created_at, s.id.clone()));
    Ok(Json(SubmissionPage { items, next_cursor }))
}
