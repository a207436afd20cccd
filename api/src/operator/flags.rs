//! The public's reports on certificates, as operators triage them: list (with who reported and
//! how), move one along (TRIAGED, REAUDIT, UPHELD, DISMISSED), and dismiss spam in bulk. A report
//! is not a verdict (see `public::flags`): only REAUDIT and UPHELD change what `verify` says, and
//! upholding a report suspends the certificate in the same transaction.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use sigma_shared::domain::{FlagId, FlagStatus, OPEN_REPORTS};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use futures::StreamExt;
use sigma_activities::lifecycle::flags::FlagAction;

use crate::AppState;
use crate::auth::OperatorAuth;
use crate::core::flag_run;
use crate::error::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult, ErrorBody, stored};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_flags))
        .routes(routes!(resolve_flag))
        .routes(routes!(dismiss_reports))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FlagQuery {
    /// Unresolved ones (OPEN, TRIAGED, REAUDIT) when absent.
    #[param(inline)]
    status: Option<FlagStatus>,
    certificate_id: Option<String>,
    /// Only this reporter's (the `reporterHash` of an earlier answer).
    reporter_hash: Option<String>,
}

/// Flags raised by the public or the monitor, oldest first (at most 500), with the reporter's
/// hashed address so spam from one source can be seen and dismissed together.
#[utoipa::path(get, path = "/flags", tag = "operator", security(("operator_token" = [])), params(FlagQuery),
    responses((status = 200, body = Object)))]
async fn list_flags(
    State(state): State<AppState>,
    _operator: OperatorAuth,
    ApiQuery(query): ApiQuery<FlagQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    let states: Vec<String> = match query.status {
        None => unresolved_flag_states(),
        Some(s) => vec![s.as_str().to_owned()],
    };
    let rows = sqlx::query!(
        r#"select flag_id, certificate_id, reason, evidence, contact, status, resolution_note, resolved_by,
                  created_at, resolved_at, reporter_hash, raised_by
           from certificate_flag where status = any($1) and ($2::text is null or certificate_id = $2)
             and ($3::text is null or reporter_hash = $3)
           order by created_at limit 500"#,
        &states,
        query.certificate_id,
        query.reporter_hash,
    )
    .fetch_all(&state.db)
    .await?;
    Ok(Json(serde_json::json!({
        "items": rows.iter().map(|r| serde_json::json!({
            "flagId": r.flag_id.to_string(), "certificateId": r.certificate_id, "reason": r.reason,
            "evidence": r.evidence, "contact": r.contact, "status": r.status,
            "resolutionNote": r.resolution_note, "resolvedBy": r.resolved_by,
            "createdAt": r.created_at, "resolvedAt": r.resolved_at,
            "reporterHash": r.reporter_hash, "raisedBy": r.raised_by,
        })).collect::<Vec<_>>(),
    })))
}

fn unresolved_flag_states() -> Vec<String> {
    sigma_shared::domain::UNRESOLVED_FLAGS
        .map(String::from)
        .to_vec()
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FlagResolution {
    pub status: FlagMove,
    /// Why, 1–2000 characters.
    #[schema(
        min_length = 1,
        max_length = 2000,
        pattern = "^[^\\u0000]*[^\\s\\u0000][^\\u0000]*$"
    )]
    pub note: String,
}

/// Where an operator moves a flag: TRIAGED or REAUDIT (still unresolved), UPHELD or DISMISSED
/// (resolved). A flag is never moved back to OPEN.
#[derive(Clone, Copy, Debug, Deserialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum FlagMove {
    Triaged,
    Reaudit,
    Upheld,
    Dismissed,
}

impl FlagMove {
    fn status(self) -> FlagStatus {
        match self {
            Self::Triaged => FlagStatus::Triaged,
            Self::Reaudit => FlagStatus::Reaudit,
            Self::Upheld => FlagStatus::Upheld,
            Self::Dismissed => FlagStatus::Dismissed,
        }
    }
}

/// Move a flag along: triage it, send the certificate to re-audit (it stops verifying as valid
/// meanwhile), uphold it (the certificate is suspended, with the note as the public reason) or
/// dismiss it.
#[utoipa::path(post, path = "/flags/{flag_id}", tag = "operator", security(("operator_token" = [])),
    params(("flag_id" = uuid::Uuid, Path, description = "Flag id")), request_body = FlagResolution,
    responses((status = 200, body = Object), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
#[tracing::instrument(name = "resolve_flag", skip_all, fields(operator = %operator.name, flag_id = %flag_id))]
async fn resolve_flag(
    State(state): State<AppState>,
    operator: OperatorAuth,
    ApiPath(flag_id): ApiPath<FlagId>,
    ApiJson(request): ApiJson<FlagResolution>,
) -> ApiResult<Json<serde_json::Value>> {
    let flag_id = flag_id.uuid();
    let status = request.status.status();
    let note = crate::input::required_text("note", &request.note, 2000)?;
    let flag = sqlx::query!(
        "select certificate_id, status, raised_by from certificate_flag where flag_id = $1",
        flag_id
    )
    .fetch_optional(&state.db)
    .await?
    .ok_or_else(|| ApiError::not_found("flag"))?;
    let current: FlagStatus = stored(&flag.status)?;
    if current.is_resolved() {
        return Err(ApiError::conflict(
            "flag_resolved",
            format!("the flag is already {current}"),
        ));
    }
    let progress = flag_run::move_flag(
        &state,
        &flag_id.to_string(),
        &flag.certificate_id,
        flag.raised_by == "MONITOR",
        FlagAction {
            status,
            note: note.to_owned(),
            operator: operator.name.clone(),
        },
    )
    .await?;
    state.public.cache.invalidate(&flag.certificate_id).await;
    Ok(Json(serde_json::json!({
        "flagId": flag_id.to_string(),
        "certificateId": flag.certificate_id,
        "status": progress.status,
        "certificateSuspended": progress.certificate_status.as_deref() == Some("SUSPENDED"),
        "reauditSubmissionId": progress.reaudit_submission,
    })))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BulkDismissal {
    /// Every report awaiting triage on this certificate…
    pub certificate_id: Option<String>,
    /// …or from this reporter (`reporterHash` in the list)…
    pub reporter_hash: Option<String>,
    /// …or these reports. At least one selector; several narrow the selection.
    pub flag_ids: Option<Vec<uuid::Uuid>>,
    /// Why, recorded on each report (1–2000 characters).
    #[schema(
        min_length = 1,
        max_length = 2000,
        pattern = "^[^\\u0000]*[^\\s\\u0000][^\\u0000]*$"
    )]
    pub note: String,
}

/// Dismiss public reports awaiting triage (OPEN or TRIAGED) in bulk, e.g. spam from one source.
/// Escalations (REAUDIT) and monitor flags are never dismissed this way.
#[utoipa::path(post, path = "/flags/dismiss", tag = "operator", security(("operator_token" = [])),
    request_body = BulkDismissal, responses((status = 200, body = Object), (status = 422, body = ErrorBody)))]
#[tracing::instrument(name = "dismiss_reports", skip_all, fields(operator = %operator.name))]
async fn dismiss_reports(
    State(state): State<AppState>,
    operator: OperatorAuth,
    ApiJson(request): ApiJson<BulkDismissal>,
) -> ApiResult<Json<serde_json::Value>> {
    let note = crate::input::required_text("note", &request.note, 2000)?;
    if request.certificate_id.is_none()
        && request.reporter_hash.is_none()
        && request.flag_ids.as_ref().is_none_or(|ids| ids.is_empty())
    {
        return Err(ApiError::unprocessable(
            "no_selector",
            "name a certificateId, a reporterHash or flagIds",
        ));
    }
    let selected = sqlx::query!(
        r#"select flag_id, certificate_id from certificate_flag
           where raised_by = 'PUBLIC' and status = any($4)
             and ($1::text is null or certificate_id = $1)
             and ($2::text is null or reporter_hash = $2)
             and ($3::uuid[] is null or flag_id = any($3))
           order by created_at limit 500"#,
        request.certificate_id,
        request.reporter_hash,
        request.flag_ids.as_deref(),
        &OPEN_REPORTS.map(String::from)[..],
    )
    .fetch_all(&state.db)
    .await?;
    // Each report's own workflow dismisses it, a few at a time.
    let moves: Vec<_> = selected
        .iter()
        .map(|f| {
            let (state, flag_id, certificate_id) = (
                state.clone(),
                f.flag_id.to_string(),
                f.certificate_id.clone(),
            );
            let step = FlagAction {
                status: FlagStatus::Dismissed,
                note: note.to_owned(),
                operator: operator.name.clone(),
            };
            async move {
                flag_run::move_flag(&state, &flag_id, &certificate_id, false, step)
                    .await
                    .map(|_| certificate_id)
                    .map_err(|e| serde_json::json!({"flagId": flag_id, "detail": e.to_string()}))
            }
        })
        .collect();
    let results: Vec<_> = futures::stream::iter(moves)
        .buffer_unordered(8)
        .collect()
        .await;
    let (dismissed, failed): (Vec<_>, Vec<_>) = results.into_iter().partition(Result::is_ok);
    let dismissed: Vec<String> = dismissed.into_iter().filter_map(Result::ok).collect();
    let failed: Vec<serde_json::Value> = failed.into_iter().filter_map(Result::err).collect();
    let mut certificates: Vec<&String> = dismissed.iter().collect();
    certificates.sort();
    certificates.dedup();
    for id in &certificates {
        state.public.cache.invalidate(id).await;
    }
    tracing::info!(dismissed = dismissed.len(), "reports dismissed in bulk");
    Ok(Json(serde_json::json!({
        "dismissed": dismissed.len(),
        "selected": selected.len(),
        "certificates": certificates,
        // Reports whose workflow refused or did not take the dismissal (try those again).
        "failed": failed,
    })))
}
