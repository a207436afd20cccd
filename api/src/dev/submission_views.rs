//! Reading submissions: the stored status from the projection, live progress from the run, and
//! the developer's list.

use axum::Json;
use axum::extract::{Path, State};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sigma_shared::domain::SubmissionId;
use sigma_workflows::SubmissionProgress;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::auth::DeveloperAuth;
use crate::core::submission_run::query_progress;
use crate::error::{ApiError, ApiQuery, ApiResult, ErrorBody};
use crate::paging::ListParams;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(
            super::submissions::create_submission,
            list_submissions
        ))
        .routes(routes!(get_submission))
        .routes(routes!(get_submission_progress))
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
    responses((status = 200, body = SubmissionPage), (status = 400, description = "A bad limit or cursor", body = ErrorBody)))]
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
