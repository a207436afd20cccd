//! Reports from the public about a certificate.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::cache::{OPEN_REPORTS, UNRESOLVED_FLAGS};
use super::find;
use crate::AppState;
use crate::core::client_ip::ClientIp;
use crate::core::flag_run;
use crate::error::{ApiError, ApiJson, ApiPath, ApiResult, ErrorBody, stored};
use sigma_shared::domain::{CertificateId, FlagStatus};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(flag_certificate))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FlagRequest {
    /// What is wrong, 1–2000 characters, not all spaces.
    #[schema(
        min_length = 1,
        max_length = 2000,
        pattern = "^[^\\u0000]*[^\\s\\u0000][^\\u0000]*$"
    )]
    reason: String,
    /// Links, logs or excerpts that show it (up to 10,000 characters).
    #[schema(max_length = 10000)]
    evidence: Option<String>,
    /// How to reach the reporter, if they want to be reached (up to 320 characters).
    #[schema(max_length = 320)]
    contact: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FlagCreated {
    flag_id: String,
    status: FlagStatus,
    /// The certificate's escalated flags (re-audits, monitor flags): what makes `valid` false.
    active_flag_count: i64,
    /// Public reports on the certificate awaiting triage, this one included.
    open_report_count: i64,
    /// False when the same reporter had already raised the same reason; that flag is returned.
    created: bool,
}

/// Report a problem with a certificate. A report is not a verdict: it is counted at once in
/// `openReportCount`, and the certificate stays valid unless an operator escalates it (a
/// re-audit) or upholds it (a suspension). Rate-limited per client, with caps on reports awaiting
/// triage per client and per certificate; the same reporter raising the same reason again gets
/// the report it already made.
#[utoipa::path(post, path = "/certificates/{id}/flags", tag = "public",
    params(("id" = String, Path, description = "Certificate id")), request_body = FlagRequest,
    responses((status = 201, body = FlagCreated), (status = 200, description = "Already flagged by this reporter", body = FlagCreated),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 429, body = ErrorBody)))]
async fn flag_certificate(
    State(state): State<AppState>,
    ClientIp(client): ClientIp,
    ApiPath(id): ApiPath<CertificateId>,
    ApiJson(request): ApiJson<FlagRequest>,
) -> ApiResult<(StatusCode, axum::Json<FlagCreated>)> {
    let c = find(&state, &id).await?;
    let reason = request.reason.trim();
    let length_error = |field: &str, max: usize| {
        ApiError::unprocessable(
            "invalid_flag",
            format!("{field} must be 1–{max} characters"),
        )
    };
    if reason.is_empty() || reason.chars().count() > 2000 {
        return Err(length_error("reason", 2000));
    }
    if request
        .evidence
        .as_ref()
        .is_some_and(|e| e.chars().count() > 10_000)
    {
        return Err(length_error("evidence", 10_000));
    }
    if request
        .contact
        .as_ref()
        .is_some_and(|e| e.chars().count() > 320)
    {
        return Err(length_error("contact", 320));
    }
    state.public.limits.check_flag(client)?;
    let reporter = hex::encode(Sha256::digest(format!("sigma-flag-reporter:{client}")));
    let mut tx = state.db.begin().await?;
    // One reporter's reports are counted and inserted one at a time, and so are one
    // certificate's: the caps hold under concurrency.
    sqlx::query_scalar!(
        r#"select 1 as "locked!" from pg_advisory_xact_lock(hashtextextended($1, 0))"#,
        reporter
    )
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query_scalar!(
        "select certificate_id from certificate where certificate_id = $1 for update",
        c.id
    )
    .fetch_one(&mut *tx)
    .await?;
    let existing = sqlx::query!(
        r#"select flag_id, status from certificate_flag
           where certificate_id = $1 and reporter_hash = $2 and md5(reason) = md5($3)
             and status = any($4)"#,
        c.id,
        reporter,
        reason,
        &UNRESOLVED_FLAGS.map(String::from)[..],
    )
    .fetch_optional(&mut *tx)
    .await?;
    let (flag_id, status, created) = match existing {
        Some(existing) => (existing.flag_id, stored(&existing.status)?, false),
        None => {
            let open = sqlx::query!(
                r#"select count(*) filter (where certificate_id = $1) as "on_certificate!",
                          count(*) filter (where reporter_hash = $2) as "by_reporter!"
                   from certificate_flag
                   where (certificate_id = $1 or reporter_hash = $2) and raised_by = 'PUBLIC' and status = any($3)"#,
                c.id,
                reporter,
                &OPEN_REPORTS.map(String::from)[..],
            )
            .fetch_one(&mut *tx)
            .await?;
            let limits = &state.settings.public;
            if open.by_reporter >= limits.max_open_reports_per_reporter {
                return Err(ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "open_report_limit",
                    format!(
                        "this client already has {} reports awaiting triage; wait for an operator to look at them",
                        open.by_reporter
                    ),
                ));
            }
            if open.on_certificate >= limits.max_open_reports_per_certificate {
                return Err(ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "open_report_limit",
                    format!(
                        "this certificate already has {} reports awaiting triage; wait for an operator to look at them",
                        open.on_certificate
                    ),
                ));
            }
            let flag_id = sqlx::types::Uuid::new_v4();
            sqlx::query!(
                r#"insert into certificate_flag (flag_id, certificate_id, reason, evidence, contact, reporter_hash)
                   values ($1, $2, $3, $4, $5, $6)"#,
                flag_id,
                c.id,
                reason,
                request.evidence,
                request.contact,
                reporter,
            )
            .execute(&mut *tx)
            .await?;
            (flag_id, FlagStatus::Open, true)
        }
    };
    let counts = sqlx::query!(
        r#"select count(*) filter (where status = 'REAUDIT' or (raised_by = 'MONITOR' and status = any($2))) as "escalated!",
                  count(*) filter (where raised_by = 'PUBLIC' and status = any($2)) as "reports!"
           from certificate_flag where certificate_id = $1"#,
        c.id,
        &OPEN_REPORTS.map(String::from)[..],
    )
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    if created {
        flag_run::start(&state, &flag_id.to_string(), &c.id).await;
    }
    // Other replicas hear of it through NOTIFY; this one need not wait.
    state.public.cache.invalidate(&c.id).await;
    tracing::info!(certificate_id = %c.id, %flag_id, created, "certificate flagged");
    Ok((
        if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        axum::Json(FlagCreated {
            flag_id: flag_id.to_string(),
            status,
            active_flag_count: counts.escalated,
            open_report_count: counts.reports,
            created,
        }),
    ))
}
