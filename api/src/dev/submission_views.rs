//! Reading submissions: the stored status from the projection, live progress from the run, and
//! the developer's list.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sigma_shared::domain::{
    Category, Outcome, RiskLevel, Severity, Stage, SubmissionId, Verdict, VoteStatus,
};
use sigma_workflows::SubmissionProgress;
use sqlx::types::Uuid;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::owned::{Owned, OwnedResource};
use crate::AppState;
use crate::auth::DeveloperAuth;
use crate::core::submission_run::query_progress;
use crate::error::{ApiQuery, ApiResult, ErrorBody, stored};
use crate::paging::ListParams;

/// One of the developer's submissions, loaded and authorised from the path.
pub type OwnedSubmission = Owned<SubmissionRow>;

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
    pub status: VoteStatus,
    pub verdict: Option<Verdict>,
    pub severity: Option<Severity>,
    pub failure: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubmissionView {
    pub id: String,
    pub workflow_id: String,
    pub category: Category,
    pub skill_name: Option<String>,
    pub skill_version: Option<String>,
    pub stage: Stage,
    /// The council's consensus: APPROVED, REJECTED or ESCALATED.
    pub consensus: Option<Outcome>,
    /// The final outcome: APPROVED or REJECTED.
    pub outcome: Option<Outcome>,
    pub reasons: serde_json::Value,
    pub risk_level: Option<RiskLevel>,
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

/// A submission as its projection holds it, with its certificate's id once issued.
pub struct SubmissionRow {
    submission_id: String,
    workflow_id: String,
    category: String,
    skill_name: Option<String>,
    skill_version: Option<String>,
    stage: String,
    consensus: Option<String>,
    outcome: Option<String>,
    reasons: serde_json::Value,
    risk_level: Option<String>,
    round_id: Option<String>,
    bundle_sha256: String,
    bundle_bytes: i64,
    certificate_id: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    sandbox_started_at: Option<DateTime<Utc>>,
    audit_started_at: Option<DateTime<Utc>>,
    decided_at: Option<DateTime<Utc>>,
    completed_at: Option<DateTime<Utc>>,
}

impl SubmissionRow {
    pub fn id(&self) -> &str {
        &self.submission_id
    }
}

/// The developer's own submission.
impl OwnedResource for SubmissionRow {
    type Id = SubmissionId;
    const NAME: &'static str = "submission";

    async fn load(state: &AppState, developer: Uuid, id: SubmissionId) -> ApiResult<Option<Self>> {
        tracing::Span::current().record("submission_id", tracing::field::display(&id));
        Ok(sqlx::query_as!(
            SubmissionRow,
            r#"select s.submission_id, s.workflow_id, s.category, s.skill_name, s.skill_version, s.stage,
                   s.consensus, s.outcome, s.reasons, s.risk_level, s.round_id, s.bundle_sha256,
                   s.bundle_bytes, c.certificate_id as "certificate_id?", s.created_at, s.updated_at,
                   s.sandbox_started_at, s.audit_started_at, s.decided_at, s.completed_at
               from submission s left join certificate c on c.certificate_id = s.submission_id
               where s.submission_id = $1 and s.developer_id = $2"#,
            id.as_str(),
            developer
        )
        .fetch_optional(&state.db)
        .await?)
    }
}

fn stored_opt<T: serde::de::DeserializeOwned>(text: Option<String>) -> ApiResult<Option<T>> {
    text.as_deref().map(stored).transpose()
}

/// A submission's stage, outcome and reasons, read from the projection (works while workers are down).
#[utoipa::path(get, path = "/submissions/{id}", tag = "developer", security(("developer_token" = [])),
    params(("id" = String, Path, description = "Submission id")),
    responses((status = 200, body = SubmissionView), (status = 404, body = ErrorBody)))]
async fn get_submission(
    State(state): State<AppState>,
    OwnedSubmission { item: s, .. }: OwnedSubmission,
) -> ApiResult<Json<SubmissionView>> {
    let votes = match &s.round_id {
        Some(round_id) => sqlx::query!(
            "select phase, validator_id, model, status, verdict, severity, failure from audit_vote where round_id = $1 order by phase, validator_id",
            round_id
        )
        .fetch_all(&state.db)
        .await?
        .into_iter()
        .map(|v| {
            Ok(VoteView {
                phase: v.phase,
                validator_id: v.validator_id,
                model: v.model,
                status: stored(&v.status)?,
                verdict: stored_opt(v.verdict)?,
                severity: stored_opt(v.severity)?,
                failure: v.failure,
            })
        })
        .collect::<ApiResult<Vec<_>>>()?,
        None => Vec::new(),
    };
    Ok(Json(SubmissionView {
        id: s.submission_id,
        workflow_id: s.workflow_id,
        category: stored(&s.category)?,
        skill_name: s.skill_name,
        skill_version: s.skill_version,
        stage: stored(&s.stage)?,
        consensus: stored_opt(s.consensus)?,
        outcome: stored_opt(s.outcome)?,
        reasons: s.reasons,
        risk_level: stored_opt(s.risk_level)?,
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
    OwnedSubmission { item: s, .. }: OwnedSubmission,
) -> ApiResult<Json<SubmissionProgress>> {
    let id = SubmissionId::parse(&s.submission_id).map_err(anyhow::Error::msg)?;
    Ok(Json(query_progress(&state, &id).await?))
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubmissionSummary {
    pub id: String,
    pub category: Category,
    pub skill_name: Option<String>,
    pub stage: Stage,
    pub outcome: Option<Outcome>,
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
    let mut rows = sqlx::query!(
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
    let next_cursor = page.finish(&mut rows, |s| (s.created_at, s.id.clone()));
    let items = rows
        .into_iter()
        .map(|s| {
            Ok(SubmissionSummary {
                id: s.id,
                category: stored(&s.category)?,
                skill_name: s.skill_name,
                stage: stored(&s.stage)?,
                outcome: stored_opt(s.outcome)?,
                created_at: s.created_at,
            })
        })
        .collect::<ApiResult<_>>()?;
    Ok(Json(SubmissionPage { items, next_cursor }))
}
