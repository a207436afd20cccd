//! Disputes: a developer contests a REJECTED outcome or a suspension of their certificate within
//! `ops.dispute_window_days`. One dispute per submission, ever: sending it again answers that
//! one (so a decision cannot be re-rolled). The rounds SIGMA runs itself (renewals, re-audits,
//! dispute rounds) are not disputed: their outcome acts on a certificate, whose suspension is.
//! Its `dispute:{id}` workflow does the rest (see `sigma_workflows::lifecycle`).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::types::Uuid;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::submission_views::OwnedSubmission;
use crate::AppState;
use crate::core::dispute_run;
use crate::error::{ApiError, ApiJson, ApiResult, ErrorBody};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(open_dispute))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DisputeRequest {
    /// Why the decision is wrong, 1–4000 characters.
    #[schema(
        min_length = 1,
        max_length = 4000,
        pattern = "^[^\\u0000]*[^\\s\\u0000][^\\u0000]*$"
    )]
    pub reason: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DisputeView {
    pub dispute_id: String,
    pub submission_id: String,
    /// REJECTION or SUSPENSION.
    pub kind: String,
    pub certificate_id: Option<String>,
    /// OPEN, UPHELD or OVERTURNED.
    pub status: String,
    pub reason: String,
    pub created_at: DateTime<Utc>,
    /// False when this submission's dispute already existed (it is returned, whatever its status).
    pub created: bool,
}

/// Dispute a rejection or a suspension, within the dispute window. An operator upholds or
/// overturns it; an overturn (or no decision by the deadline) runs a fresh audit round.
#[utoipa::path(post, path = "/submissions/{id}/disputes", tag = "developer", security(("developer_session" = [])),
    params(("id" = String, Path, description = "Submission id")), request_body = DisputeRequest,
    responses((status = 201, body = DisputeView), (status = 200, description = "The submission's dispute, filed before", body = DisputeView),
        (status = 404, body = ErrorBody), (status = 409, description = "Nothing to dispute, or the window closed", body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
#[tracing::instrument(name = "open_dispute", skip_all)]
async fn open_dispute(
    State(state): State<AppState>,
    submission: OwnedSubmission,
    ApiJson(request): ApiJson<DisputeRequest>,
) -> ApiResult<(StatusCode, Json<DisputeView>)> {
    let reason = crate::input::required_text("reason", &request.reason, 4000)?;
    let id = submission.item.id().to_owned();
    let developer = submission.developer.developer_id;
    let s = sqlx::query!(
        r#"select s.outcome, s.decided_at, c.status as "certificate_status?", c.status_changed_at as "suspended_at?",
                  (s.renewal_of is not null or s.reaudit_of is not null or s.dispute_of is not null) as "internal!"
           from submission s left join certificate c on c.certificate_id = s.submission_id
           where s.submission_id = $1"#,
        id
    )
    .fetch_one(&state.db)
    .await?;
    if s.internal {
        return Err(ApiError::conflict(
            "not_disputable",
            "this is a round SIGMA ran on a certificate (renewal, re-audit or dispute); dispute the \
             certificate's suspension instead, or submit the skill again",
        ));
    }
    let (kind, since, certificate) = match (s.certificate_status.as_deref(), s.outcome.as_deref()) {
        (Some("SUSPENDED"), _) => ("SUSPENSION", s.suspended_at, Some(id.clone())),
        (_, Some("REJECTED")) => ("REJECTION", s.decided_at, None),
        _ => {
            return Err(ApiError::conflict(
                "not_disputable",
                "only a REJECTED outcome or a suspended certificate can be disputed",
            ));
        }
    };
    let window = chrono::Duration::days(state.settings.ops.dispute_window_days);
    if since.is_none_or(|at| at + window < Utc::now()) {
        return Err(ApiError::conflict(
            "dispute_window_closed",
            format!(
                "disputes are accepted for {} days after the decision",
                state.settings.ops.dispute_window_days
            ),
        ));
    }
    let dispute_id = Uuid::new_v4();
    let inserted = sqlx::query_scalar!(
        r#"insert into dispute (dispute_id, submission_id, developer_id, kind, certificate_id, reason, workflow_id)
           values ($1, $2, $3, $4, $5, $6, $7)
           on conflict (submission_id) do nothing
           returning dispute_id"#,
        dispute_id,
        id,
        developer,
        kind,
        certificate,
        reason,
        dispute_run::workflow_id(&dispute_id.to_string()),
    )
    .fetch_optional(&state.db)
    .await?;
    let created = inserted.is_some();
    let row = sqlx::query!(
        r#"select dispute_id, kind, certificate_id, status, reason, created_at from dispute
           where submission_id = $1"#,
        id
    )
    .fetch_one(&state.db)
    .await?;
    dispute_run::start(&state, &row.dispute_id.to_string()).await?;
    tracing::info!(submission_id = %id, dispute_id = %row.dispute_id, created, "dispute opened");
    Ok((
        if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        Json(DisputeView {
            dispute_id: row.dispute_id.to_string(),
            submission_id: id,
            kind: row.kind,
            certificate_id: row.certificate_id,
            status: row.status,
            reason: row.reason,
            created_at: row.created_at,
            created,
        }),
    ))
}
