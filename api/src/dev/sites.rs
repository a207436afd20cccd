//! Site verification ("domain verification for public homepage proof"): a developer asks for a
//! token for a site URL, serves it at `/.well-known/sigma-verification.txt` on that origin or
//! in a `<meta name="sigma-verification" content="…">` tag on the page, and asks SIGMA to check.
//! The `site:{id}:{request}` workflow checks with retries; monitor checks re-check a verified
//! site. A certificate whose draft named the site shows the proof ("site verified, checked at").

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sigma_activities::lifecycle::sites::{META_NAME, WELL_KNOWN_PATH};
use sigma_shared::domain::SiteId;
use sigma_workflows::{SiteVerificationInput, SiteVerificationWorkflow};
use sqlx::types::Uuid;
use temporalio_client::errors::WorkflowStartError;
use temporalio_client::{WorkflowIdConflictPolicy, WorkflowIdReusePolicy, WorkflowStartOptions};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::drafts::validate_site;
use super::owned::{Owned, OwnedResource};
use crate::AppState;
use crate::auth::DeveloperAuth;
use crate::error::{ApiError, ApiJson, ApiResult, ErrorBody};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(request_site, list_sites))
        .routes(routes!(get_site))
        .routes(routes!(verify_site))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SiteRequest {
    /// The site's page, as the draft's `siteUrl` names it (an absolute https URL).
    #[schema(
        max_length = 2000,
        pattern = "^\\s*https://[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*(:[0-9]{1,5})?(/[^\\s\\u0000]*)?\\s*$"
    )]
    pub url: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SiteView {
    pub site_id: SiteId,
    pub url: String,
    /// Serve this exact text, alone on a line, at `fileUrl`, or as the `content` of the meta tag.
    pub token: String,
    pub file_url: String,
    pub meta_tag: String,
    /// PENDING (never checked), CHECKING, VERIFIED, FAILED (every attempt failed) or LOST (a
    /// monitor check no longer found the token).
    pub status: String,
    /// FILE or META, once verified.
    pub method: Option<String>,
    pub last_error: Option<String>,
    pub checked_at: Option<DateTime<Utc>>,
    pub verified_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

pub struct SiteRow {
    site_id: Uuid,
    url: String,
    token: String,
    status: String,
    method: Option<String>,
    last_error: Option<String>,
    checked_at: Option<DateTime<Utc>>,
    verified_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
}

impl SiteRow {
    fn view(&self) -> SiteView {
        let mut file_url = url::Url::parse(&self.url).expect("a stored site URL parses");
        file_url.set_path(WELL_KNOWN_PATH);
        file_url.set_query(None);
        file_url.set_fragment(None);
        SiteView {
            site_id: self.site_id.into(),
            url: self.url.clone(),
            token: self.token.clone(),
            file_url: file_url.to_string(),
            meta_tag: format!(r#"<meta name="{META_NAME}" content="{}">"#, self.token),
            status: self.status.clone(),
            method: self.method.clone(),
            last_error: self.last_error.clone(),
            checked_at: self.checked_at,
            verified_at: self.verified_at,
            created_at: self.created_at,
        }
    }
}

impl OwnedResource for SiteRow {
    type Id = SiteId;
    const NAME: &'static str = "site";

    async fn load(state: &AppState, developer: Uuid, id: SiteId) -> ApiResult<Option<Self>> {
        Ok(sqlx::query_as!(
            SiteRow,
            r#"select site_id, url, token, status, method, last_error, checked_at, verified_at, created_at
               from site_verification where site_id = $1 and developer_id = $2"#,
            id.uuid(),
            developer
        )
        .fetch_optional(&state.db)
        .await?)
    }
}

/// Ask for a verification token for a site. Asking again for the same URL answers the same
/// request (and token).
#[utoipa::path(post, path = "/sites", tag = "developer", security(("developer_session" = [])),
    request_body = SiteRequest,
    responses((status = 201, body = SiteView), (status = 200, description = "This site's request, made before", body = SiteView),
        (status = 422, body = ErrorBody)))]
async fn request_site(
    State(state): State<AppState>,
    developer: DeveloperAuth,
    ApiJson(request): ApiJson<SiteRequest>,
) -> ApiResult<(StatusCode, Json<SiteView>)> {
    let url = validate_site(&state.settings.portal.site_url_schemes, &request.url)?
        .ok_or_else(|| ApiError::unprocessable("invalid_site_url", "a site URL is required"))?;
    let token = format!("sigma-site-{}", hex::encode(rand::random::<[u8; 16]>()));
    let created = sqlx::query_scalar!(
        r#"insert into site_verification (site_id, developer_id, url, token) values ($1, $2, $3, $4)
           on conflict (developer_id, url) do nothing returning site_id"#,
        Uuid::new_v4(),
        developer.developer_id,
        url,
        token,
    )
    .fetch_optional(&state.db)
    .await?
    .is_some();
    let row = sqlx::query_as!(
        SiteRow,
        r#"select site_id, url, token, status, method, last_error, checked_at, verified_at, created_at
           from site_verification where developer_id = $1 and url = $2"#,
        developer.developer_id,
        url
    )
    .fetch_one(&state.db)
    .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(row.view())))
}

/// The developer's site verification requests, newest first.
#[utoipa::path(get, path = "/sites", tag = "developer", security(("developer_session" = [])),
    responses((status = 200, body = Vec<SiteView>)))]
async fn list_sites(
    State(state): State<AppState>,
    developer: DeveloperAuth,
) -> ApiResult<Json<Vec<SiteView>>> {
    let rows = sqlx::query_as!(
        SiteRow,
        r#"select site_id, url, token, status, method, last_error, checked_at, verified_at, created_at
           from site_verification where developer_id = $1 order by created_at desc limit 200"#,
        developer.developer_id
    )
    .fetch_all(&state.db)
    .await?;
    Ok(Json(rows.iter().map(SiteRow::view).collect()))
}

#[utoipa::path(get, path = "/sites/{id}", tag = "developer", security(("developer_session" = [])),
    params(("id" = String, Path, description = "Site id")),
    responses((status = 200, body = SiteView), (status = 404, body = ErrorBody)))]
async fn get_site(site: Owned<SiteRow>) -> ApiResult<Json<SiteView>> {
    Ok(Json(site.item.view()))
}

/// Check the site now: the token is looked for a few times, a minute apart (config), so it may
/// be published just after asking. A check under way is joined, not repeated.
#[utoipa::path(post, path = "/sites/{id}/verify", tag = "developer", security(("developer_session" = [])),
    params(("id" = String, Path, description = "Site id")),
    responses((status = 202, body = SiteView), (status = 200, description = "Already verified: nothing to do", body = SiteView),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn verify_site(
    State(state): State<AppState>,
    site: Owned<SiteRow>,
) -> ApiResult<(StatusCode, Json<SiteView>)> {
    let id = site.item.site_id;
    if site.item.status == "VERIFIED" {
        // Verified stays verified: monitor checks re-check it, and a new request would hide the
        // proof while it runs.
        return Ok((StatusCode::OK, Json(site.item.view())));
    }
    // A new request unless one is under way: CHECKING is joined (its workflow is started again
    // under the same id if the API stopped before starting it, or if that run failed).
    let request = sqlx::query_scalar!(
        r#"update site_verification
           set requests = case when status = 'CHECKING' then requests else requests + 1 end,
               status = 'CHECKING'
           where site_id = $1 returning requests"#,
        id
    )
    .fetch_one(&state.db)
    .await?;
    let ops = &state.settings.ops;
    let options = WorkflowStartOptions::new(state.workflow_queue(), format!("site:{id}:{request}"))
        .id_conflict_policy(WorkflowIdConflictPolicy::UseExisting)
        .id_reuse_policy(WorkflowIdReusePolicy::AllowDuplicateFailedOnly)
        .static_summary(format!("site verification of {}", site.item.url))
        .build();
    let input = SiteVerificationInput {
        site_id: id.to_string(),
        attempts: ops.site_check_attempts,
        retry_secs: ops.site_check_retry_secs,
    };
    match state
        .temporal
        .start_workflow(SiteVerificationWorkflow::run, input, options)
        .await
    {
        Ok(_) | Err(WorkflowStartError::AlreadyStarted { .. }) => {}
        Err(e) => {
            tracing::error!(error = %e, site_id = %id, "cannot start the site verification");
            return Err(ApiError::unavailable(
                "workflow_unavailable",
                "the check could not start; send the same request again",
            ));
        }
    }
    let row = SiteRow::load(&state, site.developer.developer_id, id.into())
        .await?
        .ok_or_else(|| ApiError::not_found("site"))?;
    Ok((StatusCode::ACCEPTED, Json(row.view())))
}
