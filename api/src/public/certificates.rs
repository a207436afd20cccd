//! Certificates as anyone reads them: search, the record, `verify`, live status and source
//! integrity. Cacheable, rate-limited, no authentication.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sigma_shared::domain::{Category, CertificateId, CertificateStatus};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::cache::{Certificate, OPEN_REPORTS};
use super::{
    KEYS_PATH, NO_STORE, REVALIDATE, SHORT, find, json_response, json_with_etag, now, public_url,
};
use crate::AppState;
use crate::error::{ApiError, ApiPath, ApiQuery, ApiResult, ErrorBody};
use crate::paging::ListParams;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_certificates))
        .routes(routes!(get_certificate))
        .routes(routes!(verify_certificate))
        .routes(routes!(live_status))
        .routes(routes!(source_integrity))
}

// ---------------------------------------------------------------------------------------------
// Listing

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Keywords; every word must appear in the skill's name or description.
    q: Option<String>,
    /// 1–100, default 20.
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
    /// `nextCursor` of the previous page.
    cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CertificateListItem {
    #[serde(flatten)]
    certificate: ListRow,
    /// No escalated flags (listed certificates are approved and unexpired).
    valid: bool,
    verify_url: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CertificateList {
    items: Vec<CertificateListItem>,
    /// Pass as `cursor` for the next page; absent on the last page.
    next_cursor: Option<String>,
}

/// `like` patterns for each keyword, with the pattern characters escaped.
pub(super) fn keyword_patterns(q: Option<&str>) -> Result<Vec<String>, ApiError> {
    let Some(q) = q else { return Ok(vec![]) };
    if q.chars().count() > 200 {
        return Err(ApiError::bad_request(
            "invalid_query",
            "q is limited to 200 characters",
        ));
    }
    Ok(q.split_whitespace()
        .take(10)
        .map(|word| {
            let escaped = word
                .to_lowercase()
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            format!("%{escaped}%")
        })
        .collect())
}

/// One approved certificate as listings show it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListRow {
    #[serde(rename = "id")]
    pub(super) certificate_id: String,
    pub(super) status: CertificateStatus,
    pub(super) skill_name: Option<String>,
    pub(super) skill_version: Option<String>,
    pub(super) category: Option<Category>,
    pub(super) security_level: Option<String>,
    pub(super) issued_at: DateTime<Utc>,
    pub(super) expires_at: Option<DateTime<Utc>>,
    pub(super) payload_hash: String,
    pub(super) skill_md_sha256: Option<String>,
    pub(super) bundle_digest: String,
    /// Escalations under review (an operator's re-audit, a monitor's flag).
    #[serde(rename = "activeFlagCount")]
    pub(super) open_flags: i64,
    /// Public reports awaiting triage; they do not change `valid`.
    #[serde(rename = "openReportCount")]
    pub(super) open_reports: i64,
}

/// Approved, unexpired certificates, newest first, after the one issued at that time with
/// that id.
pub(super) async fn approved(
    state: &AppState,
    patterns: &[String],
    after: Option<(DateTime<Utc>, CertificateId)>,
    limit: i64,
) -> ApiResult<Vec<ListRow>> {
    let rows = sqlx::query!(
        r#"select c.certificate_id, c.status, c.sealed ->> 'skillName' as skill_name,
                  c.sealed ->> 'skillVersion' as skill_version, c.sealed ->> 'category' as category,
                  c.sealed #>> '{review,securityLevel}' as security_level, c.issued_at, c.expires_at,
                  c.payload_hash, c.skill_md_sha256, c.bundle_digest,
                  (select count(*) from certificate_flag f where f.certificate_id = c.certificate_id
                    and (f.status = 'REAUDIT' or (f.raised_by = 'MONITOR' and f.status = any($5)))) as "open_flags!",
                  (select count(*) from certificate_flag f where f.certificate_id = c.certificate_id
                    and f.raised_by = 'PUBLIC' and f.status = any($5)) as "open_reports!"
           from certificate c
           where c.status = 'APPROVED' and (c.expires_at is null or c.expires_at > now())
             and c.search_text like all($1)
             and ($2::timestamptz is null or (c.issued_at, c.certificate_id) < ($2, $3))
           order by c.issued_at desc, c.certificate_id desc
           limit $4"#,
        patterns,
        after.as_ref().map(|(at, _)| *at),
        after.as_ref().map(|(_, id)| id.as_str()).unwrap_or(""),
        limit,
        &OPEN_REPORTS.map(String::from)[..],
    )
    .fetch_all(&state.db)
    .await?;
    rows.into_iter()
        .map(|r| {
            Ok(ListRow {
                certificate_id: r.certificate_id,
                status: crate::error::stored(&r.status)?,
                skill_name: r.skill_name,
                skill_version: r.skill_version,
                // Sealed text from the time of issue: read as the documented labels are.
                category: r.category.as_deref().and_then(|c| c.parse().ok()),
                security_level: r.security_level,
                issued_at: r.issued_at,
                expires_at: r.expires_at,
                payload_hash: r.payload_hash,
                skill_md_sha256: r.skill_md_sha256,
                bundle_digest: r.bundle_digest,
                open_flags: r.open_flags,
                open_reports: r.open_reports,
            })
        })
        .collect()
}

/// Search approved certificates by keyword, newest first, with cursor pagination.
#[utoipa::path(get, path = "/certificates", tag = "public", params(ListQuery),
    responses((status = 200, body = CertificateList), (status = 400, body = ErrorBody), (status = 429, body = ErrorBody)))]
async fn list_certificates(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> ApiResult<Response> {
    let page = ListParams {
        limit: query.limit,
        cursor: query.cursor,
    }
    .page()?;
    let patterns = keyword_patterns(query.q.as_deref())?;
    let after = match (page.after_time, &page.after_id) {
        (Some(at), Some(id)) => Some((
            at,
            CertificateId::parse(id).map_err(|_| crate::paging::bad_cursor())?,
        )),
        _ => None,
    };
    let mut rows = approved(&state, &patterns, after, page.limit + 1).await?;
    let next_cursor = page.finish(&mut rows, |r| (r.issued_at, r.certificate_id.clone()));
    let items = rows
        .into_iter()
        .map(|r| CertificateListItem {
            verify_url: public_url(
                &state,
                &format!("/api/v1/public/certificates/{}/verify", r.certificate_id),
            ),
            valid: r.open_flags == 0,
            certificate: r,
        })
        .collect();
    let body = serde_json::to_value(CertificateList { items, next_cursor })
        .map_err(anyhow::Error::from)?;
    Ok(json_with_etag(&headers, REVALIDATE, &body))
}

// ---------------------------------------------------------------------------------------------
// One certificate

/// The full record: sealed snapshot, signed envelope, live state, and every vote of its audit
/// round with the validator's rationale. Save it to verify offline with `sigma verify FILE`.
#[utoipa::path(get, path = "/certificates/{id}", tag = "public",
    params(("id" = String, Path, description = "Certificate id (the submission id)")),
    responses((status = 200, description = "Certificate record", body = Object), (status = 404, body = ErrorBody)))]
async fn get_certificate(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<CertificateId>,
) -> ApiResult<Response> {
    let c = find(&state, &id).await?;
    let votes = sqlx::query!(
        r#"select v.phase, v.validator_id, v.model, v.status, v.verdict, v.severity, v.blocking,
                  v.findings, v.rationale, v.created_at
           from audit_vote v where v.round_id = $1 order by v.phase, v.validator_id"#,
        c.sealed["roundId"].as_str().unwrap_or_default()
    )
    .fetch_all(&state.db)
    .await?;
    let mut body = c.live_state(now());
    let record = json!({
        "issuedAt": c.issued_at,
        "payloadHash": c.payload_hash,
        "hashAlgorithm": c.hash_algorithm,
        "skillMdSha256": c.skill_md_sha256,
        "bundleDigest": c.bundle_digest,
        "sealed": c.sealed,
        "envelope": c.envelope,
        "keysUrl": public_url(&state, KEYS_PATH),
        "auditRound": {
            "roundId": c.sealed["roundId"],
            "roundType": c.sealed["roundType"],
            "votes": votes.iter().map(|v| json!({
                "phase": v.phase, "validatorId": v.validator_id, "model": v.model, "status": v.status,
                "verdict": v.verdict, "severity": v.severity, "blocking": v.blocking,
                "findings": v.findings, "rationale": v.rationale, "castAt": v.created_at,
            })).collect::<Vec<_>>(),
        },
    });
    if let Value::Object(fields) = record {
        body.extend(fields);
    }
    let body = Value::Object(body);
    Ok(json_with_etag(&headers, REVALIDATE, &body))
}

/// Verify a certificate before invoking a skill. `valid` is true only for an APPROVED certificate
/// with no escalated flag (`activeFlagCount`: a re-audit an operator ordered, or a monitor's
/// flag) that is not revoked, suspended, expired or superseded. Public reports awaiting triage
/// are counted in `openReportCount` and do not change `valid`. The body holds the verification
/// summary and every sealed certificate field; `apiDisclaimer` is recomputed on each call.
/// Counts a view.
#[utoipa::path(get, path = "/certificates/{id}/verify", tag = "public",
    params(("id" = String, Path, description = "Certificate id (the submission id)")),
    responses((status = 200, description = "Verification summary and sealed certificate", body = Object),
        (status = 404, body = ErrorBody), (status = 429, body = ErrorBody)))]
async fn verify_certificate(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<CertificateId>,
) -> ApiResult<Response> {
    let c = find(&state, &id).await?;
    let views = state.public.cache.count_view(&c);
    let disclaimer = c
        .reaches_network
        .then_some(state.settings.public.api_disclaimer.as_str());
    Ok(json_response(
        c.verify_json(now(), views, disclaimer),
        NO_STORE,
    ))
}

/// Mutable post-issuance state: status, escalated flags and open reports, renewal, monitoring,
/// views. Prefer it to the sealed record for freshness.
#[utoipa::path(get, path = "/certificates/{id}/live-status", tag = "public",
    params(("id" = String, Path, description = "Certificate id")),
    responses((status = 200, body = Object), (status = 404, body = ErrorBody)))]
async fn live_status(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<CertificateId>,
) -> ApiResult<Response> {
    let c = find(&state, &id).await?;
    let now = now();
    let mut body = c.live_state(now);
    body.insert("checkedAt".into(), json!(now));
    Ok(json_response(Value::Object(body).to_string(), NO_STORE))
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SourceIntegrity {
    certificate_id: String,
    /// `sha256-lf-normalized`: SHA-256 of SKILL.md after CRLF and CR become LF.
    algorithm: &'static str,
    sha256: Option<String>,
    /// SHA-256 over the `sha256sum` lines of every file, sorted by path (see the README).
    bundle_digest: String,
    bundle_digest_algorithm: &'static str,
    source_type: Value,
    source_url: Value,
    source_ref: Value,
    entry: Value,
}

/// The certified hashes of SKILL.md and of the whole bundle, to compare with what is installed.
#[utoipa::path(get, path = "/certificates/{id}/source-integrity", tag = "public",
    params(("id" = String, Path, description = "Certificate id")),
    responses((status = 200, body = SourceIntegrity), (status = 404, body = ErrorBody)))]
async fn source_integrity(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<CertificateId>,
) -> ApiResult<Response> {
    let c = find(&state, &id).await?;
    let body = source_integrity_of(&c);
    Ok(json_with_etag(
        &headers,
        SHORT,
        &serde_json::to_value(body).map_err(anyhow::Error::from)?,
    ))
}

pub(super) fn source_integrity_of(c: &Certificate) -> SourceIntegrity {
    let source = &c.sealed["source"];
    SourceIntegrity {
        certificate_id: c.id.clone(),
        algorithm: "sha256-lf-normalized",
        sha256: c.skill_md_sha256.clone(),
        bundle_digest: c.bundle_digest.clone(),
        bundle_digest_algorithm: "sha256-of-sha256sum-lines-v1",
        source_type: source["sourceType"].clone(),
        source_url: source["sourceUrl"].clone(),
        source_ref: source["sourceRef"].clone(),
        entry: source["entry"].clone(),
    }
}
