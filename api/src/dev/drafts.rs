//! Drafts: what a developer prepares before paying. A draft names its category and source (an
//! uploaded bundle or a public repository pinned to a ref), an entry point, an advisory note,
//! declared endpoints and a site. Every change to what would be reviewed bumps its `revision`;
//! dry-runs, manifests and quotes are bound to the revision they saw.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sigma_shared::blob::keys;
use sigma_shared::domain::{Category, DraftId, DraftSource, Sha256Hex};
use sigma_shared::pricing::DeclaredEndpoint;
use sqlx::types::Uuid;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::owned::{Owned, OwnedResource};
use crate::AppState;
use crate::auth::DeveloperAuth;
use crate::error::{ApiError, ApiJson, ApiQuery, ApiResult, ErrorBody, stored};
use crate::paging::ListParams;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_draft, list_drafts))
        .routes(routes!(get_draft, update_draft, delete_draft))
        .routes(routes!(upload_bundle))
}

/// One of the developer's drafts, loaded and authorised from the path.
pub type OwnedDraft = Owned<DraftRow>;

/// A public repository pinned to a ref.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RepositorySource {
    /// `https://github.com/owner/name` or `owner/name`.
    #[schema(
        max_length = 220,
        pattern = "^\\s*(https://(www\\.)?github\\.com/)?[A-Za-z0-9_-][A-Za-z0-9_.-]{0,99}/[A-Za-z0-9_-][A-Za-z0-9_.-]{0,99}/?\\s*$"
    )]
    pub repository: String,
    /// A commit SHA (preferred: it cannot move) or a tag.
    #[serde(rename = "ref")]
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = "^\\s*(?!.*\\.lock\\s*$)[A-Za-z0-9_-]+(\\.[A-Za-z0-9_-]+)*(/[A-Za-z0-9_-]+(\\.[A-Za-z0-9_-]+)*)*\\s*$"
    )]
    pub reference: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewDraft {
    /// The documented labels (`SKILL + API`, `skill_api`) are read as the names.
    pub category: Category,
    /// A repository source; for an uploaded bundle use `PUT /drafts/{id}/bundle` instead.
    pub source: Option<RepositorySource>,
    /// Repository-relative path: `SKILL.md` (or `dir/SKILL.md`) for skills, the executable file for code.
    #[schema(
        min_length = 1,
        max_length = 300,
        pattern = "^\\s*([A-Za-z0-9_-][A-Za-z0-9_.-]*/)*[A-Za-z0-9_-][A-Za-z0-9_.-]*\\s*$"
    )]
    pub entry: Option<String>,
    /// What the code does and why its sensitive patterns are safe; a hypothesis for reviewers.
    #[schema(max_length = 4000)]
    pub advisory_note: Option<String>,
    /// At most 100.
    #[serde(default)]
    #[schema(max_items = 100)]
    pub declared_endpoints: Vec<DeclaredEndpoint>,
    /// An `https://` homepage to verify.
    #[schema(
        max_length = 2000,
        pattern = "^\\s*https://[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*(:[0-9]{1,5})?(/[^\\s\\u0000]*)?\\s*$"
    )]
    pub site_url: Option<String>,
}

/// Absent fields stay as they are; an empty `advisoryNote` or `siteUrl` clears it.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DraftPatch {
    pub category: Option<Category>,
    pub source: Option<RepositorySource>,
    #[schema(
        min_length = 1,
        max_length = 300,
        pattern = "^\\s*([A-Za-z0-9_-][A-Za-z0-9_.-]*/)*[A-Za-z0-9_-][A-Za-z0-9_.-]*\\s*$"
    )]
    pub entry: Option<String>,
    #[schema(max_length = 4000)]
    pub advisory_note: Option<String>,
    #[schema(max_items = 100)]
    pub declared_endpoints: Option<Vec<DeclaredEndpoint>>,
    /// An `https://` homepage, or empty to clear it.
    #[schema(
        max_length = 2000,
        pattern = "^\\s*$|^\\s*https://[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*(:[0-9]{1,5})?(/[^\\s\\u0000]*)?\\s*$"
    )]
    pub site_url: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DraftSourceView {
    #[serde(rename = "type")]
    pub source_type: DraftSource,
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
    pub category: Category,
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
    let git = super::upload::validate_git(&source.repository, &source.reference)?;
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

/// A site URL as stored: absolute, of an allowed scheme (`portal.site_url_schemes`), with a host.
pub(crate) fn validate_site(schemes: &[String], site: &str) -> ApiResult<Option<String>> {
    let site = site.trim();
    if site.is_empty() {
        return Ok(None);
    }
    match url::Url::parse(site) {
        Ok(u) if schemes.iter().any(|s| s == u.scheme()) && u.host_str().is_some() => {
            Ok(Some(u.to_string()))
        }
        _ => Err(ApiError::unprocessable(
            "invalid_site_url",
            format!(
                "the site URL must be an absolute {} URL",
                schemes.join(" or ")
            ),
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

/// Create a draft.
#[utoipa::path(post, path = "/drafts", tag = "developer", security(("developer_session" = [])),
    request_body = NewDraft,
    responses((status = 201, body = DraftView), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_draft(
    State(state): State<AppState>,
    developer: DeveloperAuth,
    ApiJson(body): ApiJson<NewDraft>,
) -> ApiResult<Response> {
    let category = body.category;
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
        .map(|site| validate_site(&state.settings.portal.site_url_schemes, site))
        .transpose()?
        .flatten();
    let endpoints = validate_endpoints(body.declared_endpoints)?;
    let id = DraftId::random().uuid();
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

pub struct DraftRow {
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

impl DraftRow {
    /// The draft's category, as stored.
    pub fn category(&self) -> ApiResult<Category> {
        stored(&self.category)
    }
}

/// The developer's own draft; someone else's is as absent as a missing one.
impl OwnedResource for DraftRow {
    type Id = DraftId;
    const NAME: &'static str = "draft";

    async fn load(state: &AppState, developer: Uuid, id: DraftId) -> ApiResult<Option<Self>> {
        Ok(sqlx::query_as!(
            DraftRow,
            r#"select draft_id, category, revision, source_type, bundle_sha256, bundle_bytes,
               git_repository, git_ref, entry, advisory_note, declared_endpoints, site_url, manifest,
               manifest_revision, submission_id, created_at, updated_at
           from draft where draft_id = $1 and developer_id = $2"#,
            id.uuid(),
            developer
        )
        .fetch_optional(&state.db)
        .await?)
    }
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
        category: stored(&d.category)?,
        revision: d.revision,
        source: DraftSourceView {
            source_type: stored(&d.source_type)?,
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

/// The draft as it is now, after a change.
async fn load_view(state: &AppState, developer: &DeveloperAuth, id: Uuid) -> ApiResult<DraftView> {
    let row = DraftRow::load(state, developer.developer_id, id.into())
        .await?
        .ok_or_else(|| ApiError::not_found("draft"))?;
    view_of(state, row).await
}

pub(crate) fn frozen() -> ApiError {
    ApiError::conflict(
        "draft_submitted",
        "this draft was submitted and can no longer change; create a new draft",
    )
}

/// The developer's drafts, newest first.
#[utoipa::path(get, path = "/drafts", tag = "developer", security(("developer_session" = [])), params(ListParams),
    responses((status = 200, body = DraftPage), (status = 400, description = "A bad limit or cursor", body = ErrorBody)))]
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
        page.after_uuid()?.unwrap_or_default(),
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
    params(("id" = Uuid, Path)), responses((status = 200, body = DraftView), (status = 404, body = ErrorBody)))]
async fn get_draft(
    State(state): State<AppState>,
    OwnedDraft { item: draft, .. }: OwnedDraft,
) -> ApiResult<Json<DraftView>> {
    Ok(Json(view_of(&state, draft).await?))
}

/// Change a draft. A change to the category, source, entry point, endpoints or advisory note
/// starts a new revision: earlier dry-runs and quotes no longer apply, nor does the manifest
/// unless only the note changed.
#[utoipa::path(patch, path = "/drafts/{id}", tag = "developer", security(("developer_session" = [])),
    params(("id" = Uuid, Path)), request_body = DraftPatch,
    responses((status = 200, body = DraftView), (status = 404, body = ErrorBody), (status = 409, description = "Already submitted", body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn update_draft(
    State(state): State<AppState>,
    OwnedDraft {
        developer,
        item: current,
    }: OwnedDraft,
    ApiJson(patch): ApiJson<DraftPatch>,
) -> ApiResult<Json<DraftView>> {
    let id = current.draft_id;
    if current.submission_id.is_some() {
        return Err(frozen());
    }
    let category = match patch.category {
        Some(c) => c,
        None => current.category()?,
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
    let site = patch
        .site_url
        .as_deref()
        .map(|site| validate_site(&state.settings.portal.site_url_schemes, site))
        .transpose()?;
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
               category = $2,
               entry = $3,
               source_type = case when $4::text is not null then 'github' else source_type end,
               git_repository = coalesce($4, git_repository),
               git_ref = coalesce($5, git_ref),
               bundle_key = case when $4::text is not null then null else bundle_key end,
               bundle_sha256 = case when $4::text is not null then null else bundle_sha256 end,
               bundle_bytes = case when $4::text is not null then null else bundle_bytes end,
               bundle_format = case when $4::text is not null then null else bundle_format end,
               declared_endpoints = coalesce($6, declared_endpoints),
               advisory_note = case when $7 then $8 else advisory_note end,
               site_url = case when $9 then $10 else site_url end,
               revision = revision + case when $11 then 1 else 0 end,
               manifest_revision = case when $11 and not $13 and manifest_revision = revision
                   then manifest_revision + 1 else manifest_revision end
           where draft_id = $1 and submission_id is null and revision = $12"#,
        id,
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
    params(("id" = Uuid, Path)),
    responses((status = 204, description = "Discarded"), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn delete_draft(
    State(state): State<AppState>,
    OwnedDraft { item: draft, .. }: OwnedDraft,
) -> ApiResult<StatusCode> {
    let id = draft.draft_id;
    if draft.submission_id.is_some() {
        return Err(frozen());
    }
    // Quotes and intents of the draft go with it (nothing was charged: charges happen at submit).
    sqlx::query!(
        "delete from draft where draft_id = $1 and submission_id is null",
        id
    )
    .execute(&state.db)
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Upload the draft's bundle (a zip, tar or tar.gz archive as the raw body). Replaces any
/// earlier source and starts a new revision.
#[utoipa::path(put, path = "/drafts/{id}/bundle", tag = "developer", security(("developer_session" = [])),
    params(("id" = Uuid, Path)),
    request_body(content((Vec<u8> = "application/zip"), (Vec<u8> = "application/gzip"))),
    responses((status = 200, body = DraftView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn upload_bundle(
    State(state): State<AppState>,
    OwnedDraft {
        developer,
        item: draft,
    }: OwnedDraft,
    bundle: Bytes,
) -> ApiResult<Json<DraftView>> {
    let id = draft.draft_id;
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
        r#"update draft set source_type = 'upload', bundle_key = $2, bundle_sha256 = $3, bundle_bytes = $4,
               bundle_format = $5, git_repository = null, git_ref = null, revision = revision + 1
           where draft_id = $1 and submission_id is null"#,
        id,
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
