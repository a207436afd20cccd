//! Drafts: what a developer prepares before paying. A draft names its category and source (an
//! uploaded bundle or a public repository pinned to a ref), an entry point, an advisory note,
//! declared endpoints and a site. Every change to what would be reviewed bumps its `revision`;
//! dry-runs, manifests and quotes are bound to the revision they saw.

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sigma_activities::portal::{
    CheckProblem, DraftCheck, DraftCheckInput, ManifestInput, ManifestOutcome,
};
use sigma_shared::blob::keys;
use sigma_shared::domain::{Category, Sha256Hex};
use sigma_shared::pricing::DeclaredEndpoint;
use sigma_workflows::{DraftCheckWorkflow, ManifestWorkflow};
use sqlx::types::Uuid;
use temporalio_client::errors::WorkflowStartError;
use temporalio_client::{WorkflowIdConflictPolicy, WorkflowIdReusePolicy, WorkflowStartOptions};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::auth::DeveloperAuth;
use crate::error::{ApiError, ApiJson, ApiQuery, ApiResult, ErrorBody};
use crate::paging::ListParams;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_draft, list_drafts))
        .routes(routes!(get_draft, update_draft, delete_draft))
        .routes(routes!(upload_bundle))
        .routes(routes!(generate_manifest, get_manifest))
        .routes(routes!(validate_draft))
}

/// A public repository pinned to a ref.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RepositorySource {
    /// `https://github.com/owner/name` or `owner/name`.
    pub repository: String,
    /// A commit SHA (preferred: it cannot move) or a tag.
    #[serde(rename = "ref")]
    pub reference: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewDraft {
    /// SKILL, SKILL_API, API, CODE, CODE_PACKAGES, SKILL_CODE, SKILL_CODE_PACKAGES or SKILL_API_CODE_PACKAGES.
    pub category: String,
    /// A repository source; for an uploaded bundle use `PUT /drafts/{id}/bundle` instead.
    pub source: Option<RepositorySource>,
    /// Repository-relative path: `SKILL.md` (or `dir/SKILL.md`) for skills, the executable file for code.
    pub entry: Option<String>,
    /// What the code does and why its sensitive patterns are safe; a hypothesis for reviewers.
    pub advisory_note: Option<String>,
    #[serde(default)]
    pub declared_endpoints: Vec<DeclaredEndpoint>,
    /// An `https://` homepage to verify.
    pub site_url: Option<String>,
}

/// Absent fields stay as they are; an empty `advisoryNote` or `siteUrl` clears it.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DraftPatch {
    pub category: Option<String>,
    pub source: Option<RepositorySource>,
    pub entry: Option<String>,
    pub advisory_note: Option<String>,
    pub declared_endpoints: Option<Vec<DeclaredEndpoint>>,
    pub site_url: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DraftSourceView {
    /// `none`, `upload` or `github`.
    #[serde(rename = "type")]
    pub source_type: String,
    pub repository: Option<String>,
    #[serde(rename = "ref")]
    pub reference: Option<String>,
    /// Set once the bytes are known (an upload, or a repository archive pinned by a dry-run).
    pub bundle_sha256: Option<String>,
    pub bundle_bytes: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DraftView {
    pub id: String,
    pub category: String,
    pub revision: i32,
    pub source: DraftSourceView,
    pub entry: Option<String>,
    pub advisory_note: Option<String>,
    #[schema(value_type = Vec<Object>)]
    pub declared_endpoints: serde_json::Value,
    pub site_url: Option<String>,
    /// A manifest exists for the current revision.
    pub manifest_current: bool,
    /// The dry-run of the current revision, when one ran.
    pub check_passed: Option<bool>,
    pub submission_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DraftPage {
    pub items: Vec<DraftView>,
    pub next_cursor: Option<String>,
}

const MAX_NOTE_CHARS: usize = 4000;
const MAX_ENDPOINTS: usize = 100;

fn parse_category(raw: &str) -> ApiResult<Category> {
    raw.parse()
        .map_err(|e: String| ApiError::unprocessable("unknown_category", e))
}

/// Entry-point rules: repository-relative, forward slashes, no `..`; skills point at their
/// SKILL.md, code categories at the executable file (never SKILL.md).
fn validate_entry(category: Category, entry: &str) -> ApiResult<String> {
    let entry = entry.trim();
    let bad = |why: &str| ApiError::unprocessable("invalid_entry", why.to_owned());
    if entry.is_empty() || entry.len() > 300 {
        return Err(bad("the entry point is 1 to 300 characters"));
    }
    if entry.starts_with('/') || entry.contains('\\') || entry.contains("//") {
        return Err(bad(
            "the entry point is a repository-relative path with forward slashes",
        ));
    }
    if entry.split('/').any(|part| part == ".." || part == ".") {
        return Err(bad("the entry point may not contain `.` or `..` segments"));
    }
    let is_skill_md = entry == "SKILL.md" || entry.ends_with("/SKILL.md");
    if category.has_code() && is_skill_md {
        return Err(bad(
            "for code categories the entry point is the executable code file, not SKILL.md",
        ));
    }
    if !category.has_code() && !is_skill_md {
        return Err(bad(
            "for skill categories the entry point is the skill's SKILL.md",
        ));
    }
    Ok(entry.to_owned())
}

fn validate_repository(source: &RepositorySource) -> ApiResult<(String, String)> {
    let raw = source.repository.trim();
    let repository = raw
        .strip_prefix("https://github.com/")
        .unwrap_or(raw)
        .trim_end_matches('/')
        .trim_end_matches(".git");
    let git = super::upload::validate_git(repository, source.reference.trim())?;
    Ok((git.repository, git.reference))
}

fn validate_note(note: &str) -> ApiResult<Option<String>> {
    let note = note.trim();
    if note.chars().count() > MAX_NOTE_CHARS {
        return Err(ApiError::unprocessable(
            "note_too_long",
            format!("the advisory note is at most {MAX_NOTE_CHARS} characters"),
        ));
    }
    Ok((!note.is_empty()).then(|| note.to_owned()))
}

fn validate_site(site: &str) -> ApiResult<Option<String>> {
    let site = site.trim();
    if site.is_empty() {
        return Ok(None);
    }
    match url::Url::parse(site) {
        Ok(u) if u.scheme() == "https" && u.host_str().is_some() => Ok(Some(u.to_string())),
        _ => Err(ApiError::unprocessable(
            "invalid_site_url",
            "the site URL must be an absolute https:// URL",
        )),
    }
}

fn validate_endpoints(endpoints: Vec<DeclaredEndpoint>) -> ApiResult<serde_json::Value> {
    if endpoints.len() > MAX_ENDPOINTS {
        return Err(ApiError::unprocessable(
            "too_many_endpoints",
            format!("at most {MAX_ENDPOINTS} declared endpoints"),
        ));
    }
    let endpoints = endpoints
        .into_iter()
        .map(DeclaredEndpoint::validate)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::unprocessable("invalid_endpoint", e))?;
    Ok(serde_json::to_value(endpoints).map_err(anyhow::Error::from)?)
}

pub(crate) fn parse_draft_id(raw: &str) -> ApiResult<Uuid> {
    raw.parse().map_err(|_| ApiError::not_found("draft"))
}

/// Create a draft.
#[utoipa::path(post, path = "/drafts", tag = "developer", security(("developer_session" = [])),
    request_body = NewDraft,
    responses((status = 201, body = DraftView), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_draft(
    State(state): State<AppState>,
    developer: DeveloperAuth,
    ApiJson(body): ApiJson<NewDraft>,
) -> ApiResult<Response> {
    let category = parse_category(&body.category)?;
    let entry = body
        .entry
        .as_deref()
        .map(|e| validate_entry(category, e))
        .transpose()?;
    let source = body.source.as_ref().map(validate_repository).transpose()?;
    let note = body
        .advisory_note
        .as_deref()
        .map(validate_note)
        .transpose()?
        .flatten();
    let site = body
        .site_url
        .as_deref()
        .map(validate_site)
        .transpose()?
        .flatten();
    let endpoints = validate_endpoints(body.declared_endpoints)?;
    let id = Uuid::new_v4();
    sqlx::query!(
        r#"insert into draft (draft_id, developer_id, category, source_type, git_repository, git_ref, entry,
               advisory_note, declared_endpoints, site_url)
           values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"#,
        id,
        developer.developer_id,
        category.as_str(),
        if source.is_some() { "github" } else { "none" },
        source.as_ref().map(|s| s.0.as_str()),
        source.as_ref().map(|s| s.1.as_str()),
        entry,
        note,
        endpoints,
        site,
    )
    .execute(&state.db)
    .await?;
    tracing::info!(draft_id = %id, %category, "draft created");
    let view = load_view(&state, &developer, id).await?;
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

pub(crate) struct DraftRow {
    pub draft_id: Uuid,
    pub category: String,
    pub revision: i32,
    pub source_type: String,
    pub bundle_sha256: Option<String>,
    pub bundle_bytes: Option<i64>,
    pub git_repository: Option<String>,
    pub git_ref: Option<String>,
    pub entry: Option<String>,
    pub advisory_note: Option<String>,
    pub declared_endpoints: serde_json::Value,
    pub site_url: Option<String>,
    pub manifest: Option<serde_json::Value>,
    pub manifest_revision: Option<i32>,
    pub submission_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The developer's own draft; someone else's is as absent as a missing one.
pub(crate) async fn load(
    state: &AppState,
    developer: &DeveloperAuth,
    id: Uuid,
) -> ApiResult<DraftRow> {
    sqlx::query_as!(
        DraftRow,
        r#"select draft_id, category, revision, source_type, bundle_sha256, bundle_bytes,
               git_repository, git_ref, entry, advisory_note, declared_endpoints, site_url, manifest,
               manifest_revision, submission_id, created_at, updated_at
           from draft where draft_id = $1 and developer_id = $2"#,
        id,
        developer.developer_id
    )
    .fetch_optional(&state.db)
    .await?
    .ok_or_else(|| ApiError::not_found("draft"))
}

async fn view_of(state: &AppState, d: DraftRow) -> ApiResult<DraftView> {
    let check_passed = sqlx::query_scalar!(
        "select passed from draft_check where draft_id = $1 and revision = $2",
        d.draft_id,
        d.revision
    )
    .fetch_optional(&state.db)
    .await?;
    Ok(DraftView {
        id: d.draft_id.to_string(),
        category: d.category,
        revision: d.revision,
        source: DraftSourceView {
            source_type: d.source_type,
            repository: d.git_repository,
            reference: d.git_ref,
            bundle_sha256: d.bundle_sha256,
            bundle_bytes: d.bundle_bytes,
        },
        entry: d.entry,
        advisory_note: d.advisory_note,
        declared_endpoints: d.declared_endpoints,
        site_url: d.site_url,
        manifest_current: d.manifest.is_some() && d.manifest_revision == Some(d.revision),
        check_passed,
        submission_id: d.submission_id,
        created_at: d.created_at,
        updated_at: d.updated_at,
    })
}

async fn load_view(state: &AppState, developer: &DeveloperAuth, id: Uuid) -> ApiResult<DraftView> {
    let row = load(state, developer, id).await?;
    view_of(state, row).await
}

fn frozen() -> ApiError {
    ApiError::conflict(
        "draft_submitted",
        "this draft was submitted and can no longer change; create a new draft",
    )
}

/// The developer's drafts, newest first.
#[utoipa::path(get, path = "/drafts", tag = "developer", security(("developer_session" = [])), params(ListParams),
    responses((status = 200, body = DraftPage), (status = 422, body = ErrorBody)))]
async fn list_drafts(
    State(state): State<AppState>,
    developer: DeveloperAuth,
    ApiQuery(params): ApiQuery<ListParams>,
) -> ApiResult<Json<DraftPage>> {
    let page = params.page()?;
    let mut rows = sqlx::query_as!(
        DraftRow,
        r#"select draft_id, category, revision, source_type, bundle_sha256, bundle_bytes,
               git_repository, git_ref, entry, advisory_note, declared_endpoints, site_url, manifest,
               manifest_revision, submission_id, created_at, updated_at
           from draft where developer_id = $1 and ($2::timestamptz is null or (created_at, draft_id) < ($2, $3))
           order by created_at desc, draft_id desc limit $4"#,
        developer.developer_id,
        page.after_time,
        page.after_uuid().unwrap_or_default(),
        page.limit + 1
    )
    .fetch_all(&state.db)
    .await?;
    let next_cursor = page.finish(&mut rows, |d| (d.created_at, d.draft_id.to_string()));
    let mut items = Vec::with_capacity(rows.len());
    for row in rows {
        items.push(view_of(&state, row).await?);
    }
    Ok(Json(DraftPage { items, next_cursor }))
}

#[utoipa::path(get, path = "/drafts/{id}", tag = "developer", security(("developer_session" = [])),
    params(("id" = String, Path)), responses((status = 200, body = DraftView), (status = 404, body = ErrorBody)))]
async fn get_draft(
    State(state): State<AppState>,
    developer: DeveloperAuth,
    Path(id): Path<String>,
) -> ApiResult<Json<DraftView>> {
    Ok(Json(
        load_view(&state, &developer, parse_draft_id(&id)?).await?,
    ))
}

/// Change a draft. A change to the category, source, entry point, endpoints or advisory note
/// starts a new revision: earlier dry-runs and quotes no longer apply, nor does the manifest
/// unless only the note changed.
#[utoipa::path(patch, path = "/drafts/{id}", tag = "developer", security(("developer_session" = [])),
    params(("id" = String, Path)), request_body = DraftPatch,
    responses((status = 200, body = DraftView), (status = 404, body = ErrorBody), (status = 409, description = "Already submitted", body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn update_draft(
    State(state): State<AppState>,
    developer: DeveloperAuth,
    Path(id): Path<String>,
    ApiJson(patch): ApiJson<DraftPatch>,
) -> ApiResult<Json<DraftView>> {
    let id = parse_draft_id(&id)?;
    let current = load(&state, &developer, id).await?;
    if current.submission_id.is_some() {
        return Err(frozen());
    }
    let category = match &patch.category {
        Some(c) => parse_category(c)?,
        None => parse_category(&current.category)?,
    };
    let entry = match (&patch.entry, &current.entry) {
        (Some(e), _) => Some(validate_entry(category, e)?),
        (None, Some(e)) if patch.category.is_some() => Some(validate_entry(category, e)?),
        (None, e) => e.clone(),
    };
    let source = patch.source.as_ref().map(validate_repository).transpose()?;
    let endpoints = patch
        .declared_endpoints
        .map(validate_endpoints)
        .transpose()?;
    let note = patch
        .advisory_note
        .as_deref()
        .map(validate_note)
        .transpose()?;
    let site = patch.site_url.as_deref().map(validate_site).transpose()?;
    // What the manifest depends on; a note change is checked too (it is screened) but leaves a
    // current manifest current.
    let content_change = patch.category.is_some()
        || patch.entry.is_some()
        || source.is_some()
        || endpoints.is_some();
    let note_change = note.as_ref().is_some_and(|n| *n != current.advisory_note);
    let reviewed_change = content_change || note_change;
    // A new repository source forgets the pinned archive; the next dry-run fetches it.
    let updated = sqlx::query!(
        r#"update draft set
               category = $3,
               entry = $4,
               source_type = case when $5::text is not null then 'github' else source_type end,
               git_repository = coalesce($5, git_repository),
               git_ref = coalesce($6, git_ref),
               bundle_key = case when $5::text is not null then null else bundle_key end,
               bundle_sha256 = case when $5::text is not null then null else bundle_sha256 end,
               bundle_bytes = case when $5::text is not null then null else bundle_bytes end,
               bundle_format = case when $5::text is not null then null else bundle_format end,
               declared_endpoints = coalesce($7, declared_endpoints),
               advisory_note = case when $8 then $9 else advisory_note end,
               site_url = case when $10 then $11 else site_url end,
               revision = revision + case when $12 then 1 else 0 end,
               manifest_revision = case when $12 and not $14 and manifest_revision = revision
                   then manifest_revision + 1 else manifest_revision end
           where draft_id = $1 and developer_id = $2 and submission_id is null and revision = $13"#,
        id,
        developer.developer_id,
        category.as_str(),
        entry,
        source.as_ref().map(|s| s.0.as_str()),
        source.as_ref().map(|s| s.1.as_str()),
        endpoints,
        note.is_some(),
        note.flatten(),
        site.is_some(),
        site.flatten(),
        reviewed_change,
        current.revision,
        content_change,
    )
    .execute(&state.db)
    .await?;
    if updated.rows_affected() == 0 {
        return Err(ApiError::conflict(
            "draft_changed",
            "the draft changed or was submitted meanwhile; read it again",
        ));
    }
    Ok(Json(load_view(&state, &developer, id).await?))
}

#[utoipa::path(delete, path = "/drafts/{id}", tag = "developer", security(("developer_session" = [])),
    params(("id" = String, Path)),
    responses((status = 204, description = "Discarded"), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn delete_draft(
    State(state): State<AppState>,
    developer: DeveloperAuth,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = parse_draft_id(&id)?;
    let draft = load(&state, &developer, id).await?;
    if draft.submission_id.is_some() {
        return Err(frozen());
    }
    // Quotes and intents of the draft go with it (nothing was charged: charges happen at submit).
    sqlx::query!(
        "delete from draft where draft_id = $1 and developer_id = $2 and submission_id is null",
        id,
        developer.developer_id
    )
    .execute(&state.db)
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Upload the draft's bundle (a zip, tar or tar.gz archive as the raw body). Replaces any
/// earlier source and starts a new revision.
#[utoipa::path(put, path = "/drafts/{id}/bundle", tag = "developer", security(("developer_session" = [])),
    params(("id" = String, Path)),
    request_body(content((Vec<u8> = "application/zip"), (Vec<u8> = "application/gzip"))),
    responses((status = 200, body = DraftView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn upload_bundle(
    State(state): State<AppState>,
    developer: DeveloperAuth,
    Path(id): Path<String>,
    bundle: Bytes,
) -> ApiResult<Json<DraftView>> {
    let id = parse_draft_id(&id)?;
    let draft = load(&state, &developer, id).await?;
    if draft.submission_id.is_some() {
        return Err(frozen());
    }
    if bundle.is_empty() {
        return Err(ApiError::unprocessable("empty_bundle", "the body is empty"));
    }
    let format = super::upload::readable_bundle(&bundle).await?;
    let sha256 = Sha256Hex::of(&bundle);
    let key = keys::bundle(&sha256);
    state
        .blob
        .put(&key, bundle.clone(), "application/octet-stream")
        .await?;
    let updated = sqlx::query!(
        r#"update draft set source_type = 'upload', bundle_key = $3, bundle_sha256 = $4, bundle_bytes = $5,
               bundle_format = $6, git_repository = null, git_ref = null, revision = revision + 1
           where draft_id = $1 and developer_id = $2 and submission_id is null"#,
        id,
        developer.developer_id,
        key,
        sha256.as_str(),
        bundle.len() as i64,
        format,
    )
    .execute(&state.db)
    .await?;
    if updated.rows_affected() == 0 {
        return Err(frozen());
    }
    Ok(Json(load_view(&state, &developer, id).await?))
}

/// How long a request waits for a dry-run or a manifest before answering 503 (the work goes on).
const WAIT: Duration = Duration::from_secs(90);

fn engine_unavailable(e: impl std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "workflow engine call failed");
    ApiError::unavailable(
        "workflow_engine_unavailable",
        "the workflow engine is unreachable; try again",
    )
}

fn still_running() -> ApiError {
    ApiError::unavailable(
        "still_running",
        "the work is still running; repeat the request to collect its result",
    )
}

/// Start options for a workflow that runs once per business key: a running one is joined
/// (`UseExisting`), a closed one is governed by `reuse`.
fn run_once(
    workflow_id: &str,
    summary: String,
    reuse: WorkflowIdReusePolicy,
) -> WorkflowStartOptions {
    let mut options = WorkflowStartOptions::new(sigma_activities::queues::OPS, workflow_id)
        .static_summary(summary)
        .build();
    options.id_conflict_policy = WorkflowIdConflictPolicy::UseExisting;
    options.id_reuse_policy = reuse;
    options
}

/// Runs (or joins) the dry-run of the draft's current revision and returns its result.
pub(crate) async fn run_check(
    state: &AppState,
    draft_id: Uuid,
    revision: i32,
) -> ApiResult<DraftCheck> {
    let workflow_id = format!("draft-check:{draft_id}:{revision}");
    let input = DraftCheckInput {
        draft_id: draft_id.to_string(),
        revision,
    };
    // One dry-run per revision: a running one is joined, a finished one answers again; only
    // a failed one (every retry spent) runs anew.
    let options = run_once(
        &workflow_id,
        format!("dry-run of draft {draft_id} revision {revision}"),
        WorkflowIdReusePolicy::AllowDuplicateFailedOnly,
    );
    match state
        .temporal
        .start_workflow(DraftCheckWorkflow::run, input, options)
        .await
    {
        Ok(_) | Err(WorkflowStartError::AlreadyStarted { .. }) => {}
        Err(e) => return Err(engine_unavailable(e)),
    }
    let handle = state
        .temporal
        .get_workflow_handle::<DraftCheckWorkflow>(&workflow_id);
    match tokio::time::timeout(WAIT, handle.get_result(Default::default())).await {
        Ok(Ok(check)) => Ok(check),
        Ok(Err(e)) => Err(ApiError::Internal(anyhow::anyhow!(
            "dry-run workflow {workflow_id} failed: {e}"
        ))),
        Err(_) => Err(still_running()),
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DryRun {
    pub draft_id: String,
    pub revision: i32,
    /// True when nothing below would reject the submission before its audit.
    pub passed: bool,
    pub failures: Vec<CheckProblem>,
    pub warnings: Vec<CheckProblem>,
    /// What was measured: files, bytes, languages, packages, endpoints, digests, risk level.
    #[schema(value_type = Object)]
    pub facts: serde_json::Value,
}

impl From<DraftCheck> for DryRun {
    fn from(c: DraftCheck) -> Self {
        Self {
            draft_id: c.draft_id,
            revision: c.revision,
            passed: c.passed,
            failures: c.failures,
            warnings: c.warnings,
            facts: serde_json::to_value(c.facts).unwrap_or_default(),
        }
    }
}

/// Free dry-run: the deterministic checks a submission of this draft would meet first (sandbox
/// pre-processor hard failures, size limits, dependency rules, manifest schema, entry point and
/// endpoints), with what would fail and why. No payment, no audit.
#[utoipa::path(post, path = "/drafts/{id}/validate", tag = "developer", security(("developer_session" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = DryRun), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
#[tracing::instrument(name = "validate_draft", skip_all, fields(draft_id = %id))]
async fn validate_draft(
    State(state): State<AppState>,
    developer: DeveloperAuth,
    Path(id): Path<String>,
) -> ApiResult<Json<DryRun>> {
    let id = parse_draft_id(&id)?;
    let draft = load(&state, &developer, id).await?;
    let check = run_check(&state, id, draft.revision).await?;
    Ok(Json(check.into()))
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManifestPreview {
    pub draft_id: String,
    /// The revision the manifest was generated from.
    pub revision: i32,
    /// True while the draft is still at that revision.
    pub current: bool,
    /// Always true: the manifest is shown as generated, never edited by hand.
    pub locked: bool,
    #[schema(value_type = Object)]
    pub manifest: serde_json::Value,
}

/// Generate the manifest from the draft's SKILL.md: an LLM proposes it, the manifest schema
/// validates it, the backend injects the source metadata. Rate-limited per developer; repeated
/// abusive input locks the assistant (Support can lift it).
#[utoipa::path(post, path = "/drafts/{id}/manifest", tag = "developer", security(("developer_session" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = ManifestPreview),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, description = "The input was refused (no SKILL.md, no front matter, prompt injection)", body = ErrorBody),
        (status = 423, description = "The assistant is locked for this developer", body = ErrorBody),
        (status = 429, body = ErrorBody),
        (status = 502, description = "The assistant's answer failed the manifest schema", body = ErrorBody)))]
#[tracing::instrument(name = "generate_manifest", skip_all, fields(draft_id = %id))]
async fn generate_manifest(
    State(state): State<AppState>,
    developer: DeveloperAuth,
    Path(id): Path<String>,
) -> ApiResult<Json<ManifestPreview>> {
    let id = parse_draft_id(&id)?;
    let draft = load(&state, &developer, id).await?;
    if draft.submission_id.is_some() {
        return Err(frozen());
    }
    let category = parse_category(&draft.category)?;
    if !category.has_skill() {
        return Err(ApiError::unprocessable(
            "no_manifest_for_category",
            format!("{category} submissions have no SKILL.md to generate a manifest from"),
        ));
    }
    // The developer's row is locked while counting and recording, so concurrent calls cannot
    // pass the hourly limit together.
    let mut tx = state.db.begin().await?;
    let account = sqlx::query!(
        r#"select manifest_locked_at,
               (select count(*) from manifest_generation g where g.developer_id = d.developer_id
                  and g.created_at > now() - interval '1 hour') as "recent!"
           from developer d where developer_id = $1 for update"#,
        developer.developer_id
    )
    .fetch_one(&mut *tx)
    .await?;
    if account.manifest_locked_at.is_some() {
        return Err(locked());
    }
    // A generation still running for this revision is joined (a client that timed out collects
    // its result), not started again.
    let pending = sqlx::query_scalar!(
        r#"select generation_id from manifest_generation
           where draft_id = $1 and revision = $2 and status = 'PENDING' and created_at > now() - interval '10 minutes'
           order by created_at desc limit 1"#,
        id,
        draft.revision
    )
    .fetch_optional(&mut *tx)
    .await?;
    let (generation_id, fresh) = match pending {
        Some(generation_id) => {
            tx.rollback().await?;
            (generation_id, false)
        }
        None => {
            if account.recent >= state.settings.portal.manifests_per_hour {
                return Err(ApiError::RateLimited {
                    detail: "too many manifest generations this hour".into(),
                    retry_after_secs: 600,
                });
            }
            let generation_id = Uuid::new_v4();
            sqlx::query!(
                r#"insert into manifest_generation (generation_id, draft_id, developer_id, revision, status)
                   values ($1, $2, $3, $4, 'PENDING')"#,
                generation_id,
                id,
                developer.developer_id,
                draft.revision
            )
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            (generation_id, true)
        }
    };
    // Started here either way: a joined generation whose first request has not started its
    // workflow yet is started now (the id makes it one run); a finished one just answers.
    let input = ManifestInput {
        generation_id: generation_id.to_string(),
        draft_id: id.to_string(),
        revision: draft.revision,
    };
    let options = run_once(
        &format!("manifest:{generation_id}"),
        format!("manifest for draft {id} revision {}", draft.revision),
        WorkflowIdReusePolicy::RejectDuplicate,
    );
    match state
        .temporal
        .start_workflow(ManifestWorkflow::run, input, options)
        .await
    {
        Ok(_) | Err(WorkflowStartError::AlreadyStarted { .. }) => {}
        Err(e) => {
            if fresh {
                sqlx::query!(
                    "delete from manifest_generation where generation_id = $1",
                    generation_id
                )
                .execute(&state.db)
                .await?;
            }
            return Err(engine_unavailable(e));
        }
    }
    let handle = state
        .temporal
        .get_workflow_handle::<ManifestWorkflow>(format!("manifest:{generation_id}"));
    let outcome: ManifestOutcome = match tokio::time::timeout(
        WAIT,
        handle.get_result(Default::default()),
    )
    .await
    {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(e)) => {
            // Every retry of the assistant failed: visible, and not the developer's fault.
            tracing::error!(error = %e, "manifest workflow failed");
            sqlx::query!(
                    "update manifest_generation set status = 'FAILED', detail = 'assistant unavailable', finished_at = now() where generation_id = $1 and status = 'PENDING'",
                    generation_id
                )
                .execute(&state.db)
                .await?;
            return Err(ApiError::bad_gateway(
                "assistant_unavailable",
                "the manifest assistant could not be reached; try again later",
            ));
        }
        Err(_) => return Err(still_running()),
    };
    let detail = || {
        outcome
            .problems
            .iter()
            .map(|p| format!("{}: {}", p.code, p.detail))
            .collect::<Vec<_>>()
            .join("; ")
    };
    match outcome.status.as_str() {
        "ACCEPTED" => Ok(Json(ManifestPreview {
            draft_id: id.to_string(),
            revision: draft.revision,
            current: true,
            locked: true,
            manifest: outcome.manifest.unwrap_or_default(),
        })),
        "ABUSIVE" if outcome.locked => Err(locked()),
        "ABUSIVE" => Err(ApiError::unprocessable("input_refused", detail())),
        "REFUSED" => Err(ApiError::unprocessable("unusable_input", detail())),
        "INVALID" => Err(ApiError::bad_gateway("manifest_invalid", detail())),
        _ => Err(ApiError::conflict("manifest_not_generated", detail())),
    }
}

fn locked() -> ApiError {
    ApiError::new(
        StatusCode::LOCKED,
        "manifest_assistant_locked",
        "the manifest assistant is locked for this account after repeated abusive input; contact Support",
    )
}

/// The locked manifest preview of the draft.
#[utoipa::path(get, path = "/drafts/{id}/manifest", tag = "developer", security(("developer_session" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = ManifestPreview), (status = 404, description = "No draft, or no manifest yet", body = ErrorBody)))]
async fn get_manifest(
    State(state): State<AppState>,
    developer: DeveloperAuth,
    Path(id): Path<String>,
) -> ApiResult<Json<ManifestPreview>> {
    let id = parse_draft_id(&id)?;
    let draft = load(&state, &developer, id).await?;
    let (Some(manifest), Some(revision)) = (draft.manifest, draft.manifest_revision) else {
        return Err(ApiError::not_found("manifest"));
    };
    Ok(Json(ManifestPreview {
        draft_id: id.to_string(),
        revision,
        current: revision == draft.revision,
        locked: true,
        manifest,
    }))
}
