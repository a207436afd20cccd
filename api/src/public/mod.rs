//! Public plane: certificate search, verification, live status, source integrity, flags, the
//! landing counters, discovery feeds, badges and the certificate page. No authentication; every
//! request spends a per-client rate-limit token, and certificate reads come from a cache kept
//! fresh across replicas by PostgreSQL notifications (see [`cache`]).

pub mod cache;
pub mod limits;
mod page;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sigma_shared::attestation::KeySet;
use sigma_shared::domain::{Category, SubmissionId, lf_normalised_sha256};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::error::{ApiError, ApiJson, ApiResult, ErrorBody};
use cache::{Certificate, CertificateCache, UNRESOLVED_FLAGS};
use limits::{ClientIp, Limits};

/// What the public plane keeps per API process.
pub struct PublicState {
    pub cache: Arc<CertificateCache>,
    pub limits: Arc<Limits>,
    pub keys: KeySet,
}

pub const KEYS_PATH: &str = "/.well-known/sigma-keys.json";
const MAX_SKILL_MD_BYTES: usize = 512 * 1024;
const NO_STORE: &str = "no-store";
const SHORT: &str = "public, max-age=30";
const REVALIDATE: &str = "public, max-age=0, must-revalidate";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_certificates))
        .routes(routes!(get_certificate))
        .routes(routes!(verify_certificate))
        .routes(routes!(live_status))
        .routes(routes!(source_integrity))
        .routes(routes!(compare_skill_from_github))
        .routes(routes!(compare_skill))
        .routes(routes!(flag_certificate))
        .routes(routes!(badge))
        .routes(routes!(landing))
        .routes(routes!(signing_keys))
        // Public POST bodies are small: a flag, a URL, or one SKILL.md.
        .layer(DefaultBodyLimit::max(MAX_SKILL_MD_BYTES))
}

/// Routes outside `/api/v1/public`: discovery under `/.well-known` and the page for people.
pub fn site_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(skill_store))
        .route(KEYS_PATH, get(signing_keys))
        .route("/certificate/{id}", get(page::certificate_page))
}

fn now() -> DateTime<Utc> {
    Utc::now()
}

/// Ids are 24 hex digits; anything else is simply not a certificate.
async fn find(state: &AppState, id: &str) -> ApiResult<Arc<Certificate>> {
    let id = SubmissionId::parse(id).map_err(|_| ApiError::not_found("certificate"))?;
    state
        .public
        .cache
        .get(id.as_str())
        .await?
        .ok_or_else(|| ApiError::not_found("certificate"))
}

fn json_response(body: String, cache_control: &'static str) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static(cache_control),
            ),
        ],
        body,
    )
        .into_response()
}

/// A body with a strong ETag; `If-None-Match` with the same tag gets 304 and no body.
pub(crate) fn with_etag(
    request: &HeaderMap,
    content_type: &'static str,
    cache_control: &'static str,
    body: Vec<u8>,
) -> Response {
    let tag = format!("\"{}\"", &hex::encode(Sha256::digest(&body))[..32]);
    let matches = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().trim_start_matches("W/") == tag)
        });
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (
            header::CACHE_CONTROL,
            HeaderValue::from_static(cache_control),
        ),
        (header::ETAG, HeaderValue::from_str(&tag).expect("hex tag")),
    ];
    if matches {
        (StatusCode::NOT_MODIFIED, headers).into_response()
    } else {
        (headers, body).into_response()
    }
}

fn json_with_etag(request: &HeaderMap, cache_control: &'static str, value: &Value) -> Response {
    with_etag(
        request,
        "application/json",
        cache_control,
        value.to_string().into_bytes(),
    )
}

// ---------------------------------------------------------------------------------------------
// Listing

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Keywords; every word must appear in the skill's name or description.
    q: Option<String>,
    /// 1–100, default 20.
    limit: Option<String>,
    /// `nextCursor` of the previous page.
    cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CertificateListItem {
    #[serde(flatten)]
    certificate: ListRow,
    /// No unresolved flags (listed certificates are approved and unexpired).
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

struct Cursor {
    issued_at: DateTime<Utc>,
    id: String,
}

impl Cursor {
    fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{}:{}", self.issued_at.timestamp_micros(), self.id))
    }

    fn decode(raw: &str) -> Result<Self, ApiError> {
        let bad = || ApiError::bad_request("invalid_cursor", "cursor is not one this API issued");
        let text = URL_SAFE_NO_PAD
            .decode(raw)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(bad)?;
        let (micros, id) = text.split_once(':').ok_or_else(bad)?;
        let issued_at = micros
            .parse()
            .ok()
            .and_then(DateTime::from_timestamp_micros)
            .ok_or_else(bad)?;
        let id = SubmissionId::parse(id).map_err(|_| bad())?;
        Ok(Self {
            issued_at,
            id: id.as_str().to_owned(),
        })
    }
}

fn parse_limit(raw: Option<&str>) -> Result<i64, ApiError> {
    match raw {
        None => Ok(20),
        Some(raw) => match raw.parse::<i64>() {
            Ok(n @ 1..=100) => Ok(n),
            _ => Err(ApiError::bad_request(
                "invalid_limit",
                format!("limit must be a whole number from 1 to 100, not `{raw}`"),
            )),
        },
    }
}

/// `like` patterns for each keyword, with the pattern characters escaped.
fn keyword_patterns(q: Option<&str>) -> Result<Vec<String>, ApiError> {
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
    certificate_id: String,
    status: String,
    skill_name: Option<String>,
    skill_version: Option<String>,
    category: Option<String>,
    security_level: Option<String>,
    issued_at: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
    payload_hash: String,
    skill_md_sha256: Option<String>,
    bundle_digest: String,
    #[serde(rename = "activeFlagCount")]
    open_flags: i64,
}

/// Approved, unexpired certificates, newest first.
async fn approved(
    state: &AppState,
    patterns: &[String],
    after: Option<&Cursor>,
    limit: i64,
) -> ApiResult<Vec<ListRow>> {
    Ok(sqlx::query_as!(
        ListRow,
        r#"select c.certificate_id, c.status, c.sealed ->> 'skillName' as skill_name,
                  c.sealed ->> 'skillVersion' as skill_version, c.sealed ->> 'category' as category,
                  c.sealed #>> '{review,securityLevel}' as security_level, c.issued_at, c.expires_at,
                  c.payload_hash, c.skill_md_sha256, c.bundle_digest,
                  (select count(*) from certificate_flag f
                    where f.certificate_id = c.certificate_id and f.status = any($5)) as "open_flags!"
           from certificate c
           where c.status = 'APPROVED' and (c.expires_at is null or c.expires_at > now())
             and c.search_text like all($1)
             and ($2::timestamptz is null or (c.issued_at, c.certificate_id) < ($2, $3))
           order by c.issued_at desc, c.certificate_id desc
           limit $4"#,
        patterns,
        after.map(|c| c.issued_at),
        after.map(|c| c.id.as_str()).unwrap_or(""),
        limit,
        &UNRESOLVED_FLAGS.map(String::from)[..],
    )
    .fetch_all(&state.db)
    .await?)
}

fn public_url(state: &AppState, path: &str) -> String {
    format!(
        "{}{path}",
        state.settings.api.public_base_url.trim_end_matches('/')
    )
}

/// Search approved certificates by keyword, newest first, with cursor pagination.
#[utoipa::path(get, path = "/certificates", tag = "public", params(ListQuery),
    responses((status = 200, body = CertificateList), (status = 400, body = ErrorBody), (status = 429, body = ErrorBody)))]
async fn list_certificates(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<axum::extract::Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let axum::extract::Query(query) =
        query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let limit = parse_limit(query.limit.as_deref())?;
    let patterns = keyword_patterns(query.q.as_deref())?;
    let cursor = query.cursor.as_deref().map(Cursor::decode).transpose()?;
    let mut rows = approved(&state, &patterns, cursor.as_ref(), limit + 1).await?;
    let next_cursor = (rows.len() as i64 > limit).then(|| {
        rows.truncate(limit as usize);
        let last = rows.last().expect("a full page");
        Cursor {
            issued_at: last.issued_at,
            id: last.certificate_id.clone(),
        }
        .encode()
    });
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
    Path(id): Path<String>,
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
/// with no unresolved flags that is not revoked, suspended, expired or superseded. The body holds
/// the verification summary and every sealed certificate field; `apiDisclaimer` is recomputed on
/// each call. Counts a view.
#[utoipa::path(get, path = "/certificates/{id}/verify", tag = "public",
    params(("id" = String, Path, description = "Certificate id (the submission id)")),
    responses((status = 200, description = "Verification summary and sealed certificate", body = Object),
        (status = 404, body = ErrorBody), (status = 429, body = ErrorBody)))]
async fn verify_certificate(
    State(state): State<AppState>,
    Path(id): Path<String>,
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

/// Mutable post-issuance state: status, open flags, monitoring, views. Prefer it to the sealed
/// record for freshness.
#[utoipa::path(get, path = "/certificates/{id}/live-status", tag = "public",
    params(("id" = String, Path, description = "Certificate id")),
    responses((status = 200, body = Object), (status = 404, body = ErrorBody)))]
async fn live_status(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    let c = find(&state, &id).await?;
    let now = now();
    let mut body = c.live_state(now);
    // Monitoring sweeps apply to API-bearing certificates and are not scheduled yet.
    body.insert(
        "monitoring".into(),
        json!({"state": "NOT_APPLICABLE", "checksRemaining": 0}),
    );
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
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let c = find(&state, &id).await?;
    let body = source_integrity_of(&c);
    Ok(json_with_etag(
        &headers,
        SHORT,
        &serde_json::to_value(body).map_err(anyhow::Error::from)?,
    ))
}

fn source_integrity_of(c: &Certificate) -> SourceIntegrity {
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

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CompareFromGithub {
    /// `https://github.com/OWNER/REPO`.
    source_url: String,
    /// Branch, tag or commit; the certified ref when absent.
    source_ref: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Comparison {
    /// True when the compared SKILL.md hashes to the certified one.
    #[serde(rename = "match")]
    matches: bool,
    certified_sha256: String,
    compared_sha256: String,
    algorithm: &'static str,
    /// The repository and ref that were fetched (GitHub comparisons only).
    #[serde(skip_serializing_if = "Option::is_none")]
    fetched_from: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fetched_ref: Option<String>,
    /// Whether the repository is the certified one.
    #[serde(skip_serializing_if = "Option::is_none")]
    same_repository: Option<bool>,
}

fn certified_skill_md(c: &Certificate) -> ApiResult<String> {
    c.skill_md_sha256.clone().ok_or_else(|| {
        ApiError::unprocessable(
            "no_skill_md",
            "this certificate covers no SKILL.md (a CODE submission); compare the bundle digest instead",
        )
    })
}

/// `owner/repo` of a GitHub repository URL.
fn github_repository(raw: &str) -> ApiResult<String> {
    let invalid = |why: &str| {
        ApiError::bad_request(
            "invalid_url",
            format!("sourceUrl must be https://github.com/OWNER/REPO: {why}"),
        )
    };
    let url = url::Url::parse(raw.trim()).map_err(|e| invalid(&e.to_string()))?;
    if url.scheme() != "https" || !matches!(url.host_str(), Some("github.com" | "www.github.com")) {
        return Err(invalid("not an https github.com URL"));
    }
    let parts: Vec<&str> = url
        .path_segments()
        .map(|s| s.filter(|p| !p.is_empty()).collect())
        .unwrap_or_default();
    let [owner, repo] = parts[..] else {
        return Err(invalid("the path is not /OWNER/REPO"));
    };
    let repo = repo.strip_suffix(".git").unwrap_or(repo);
    let name_ok = |s: &str| {
        !s.is_empty()
            && s.len() <= 100
            && !s.starts_with('.')
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    };
    if !name_ok(owner) || !name_ok(repo) {
        return Err(invalid(
            "owner or repository name has characters GitHub does not allow",
        ));
    }
    Ok(format!("{owner}/{repo}"))
}

fn valid_ref(reference: &str) -> bool {
    !reference.is_empty()
        && reference.len() <= 200
        && !reference.contains("..")
        && !reference.starts_with('/')
        && reference
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
}

/// Reads at most `cap` bytes of a response body.
async fn read_capped(mut response: reqwest::Response, cap: usize) -> ApiResult<Vec<u8>> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| {
        ApiError::bad_gateway(
            "upstream_unavailable",
            format!("reading from GitHub failed: {e}"),
        )
    })? {
        if body.len() + chunk.len() > cap {
            return Err(ApiError::unprocessable(
                "skill_md_too_large",
                format!("the fetched SKILL.md is larger than {cap} bytes"),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Fetch SKILL.md from a public GitHub repository at a ref and compare it with the certified hash.
#[utoipa::path(post, path = "/certificates/{id}/compare-skill-from-github", tag = "public",
    params(("id" = String, Path, description = "Certificate id")), request_body = CompareFromGithub,
    responses((status = 200, body = Comparison), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 502, body = ErrorBody)))]
async fn compare_skill_from_github(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<CompareFromGithub>,
) -> ApiResult<axum::Json<Comparison>> {
    let c = find(&state, &id).await?;
    let certified = certified_skill_md(&c)?;
    let repository = github_repository(&request.source_url)?;
    let reference = request
        .source_ref
        .or_else(|| c.sealed["source"]["sourceRef"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "HEAD".into());
    if !valid_ref(&reference) {
        return Err(ApiError::bad_request(
            "invalid_ref",
            "sourceRef must be a branch, tag or commit name",
        ));
    }
    let entry = c.sealed["source"]["entry"].as_str().unwrap_or("SKILL.md");
    let url = format!(
        "{}/{repository}/{reference}/{entry}",
        state
            .settings
            .public
            .github_raw_base_url
            .trim_end_matches('/')
    );
    let response = state.http.get(&url).send().await.map_err(|e| {
        ApiError::bad_gateway(
            "upstream_unavailable",
            format!("GitHub could not be reached: {e}"),
        )
    })?;
    match response.status() {
        s if s.is_success() => {}
        StatusCode::NOT_FOUND => {
            return Err(ApiError::unprocessable(
                "skill_md_not_found",
                format!("{repository} has no {entry} at {reference}"),
            ));
        }
        s => {
            return Err(ApiError::bad_gateway(
                "upstream_unavailable",
                format!("GitHub answered {s}"),
            ));
        }
    }
    let body = read_capped(response, MAX_SKILL_MD_BYTES).await?;
    let fetched = lf_normalised_sha256(&body).to_string();
    let certified_repository = c.sealed["source"]["sourceUrl"]
        .as_str()
        .and_then(|u| github_repository(u).ok());
    Ok(axum::Json(Comparison {
        matches: fetched == certified,
        certified_sha256: certified,
        compared_sha256: fetched,
        algorithm: "sha256-lf-normalized",
        same_repository: Some(certified_repository.as_deref() == Some(repository.as_str())),
        fetched_from: Some(repository),
        fetched_ref: Some(reference),
    }))
}

/// Upload a SKILL.md (the raw file as the body) and compare it with the certified hash.
#[utoipa::path(post, path = "/certificates/{id}/compare-skill", tag = "public",
    params(("id" = String, Path, description = "Certificate id")),
    request_body(content = String, content_type = "text/markdown", description = "The SKILL.md file"),
    responses((status = 200, body = Comparison), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn compare_skill(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> ApiResult<axum::Json<Comparison>> {
    let body = body.map_err(|e| ApiError::new(e.status(), "invalid_body", e.body_text()))?;
    let c = find(&state, &id).await?;
    let certified = certified_skill_md(&c)?;
    if body.is_empty() {
        return Err(ApiError::bad_request(
            "empty_body",
            "send the SKILL.md file as the request body",
        ));
    }
    let uploaded = lf_normalised_sha256(&body).to_string();
    Ok(axum::Json(Comparison {
        matches: uploaded == certified,
        certified_sha256: certified,
        compared_sha256: uploaded,
        algorithm: "sha256-lf-normalized",
        fetched_from: None,
        fetched_ref: None,
        same_repository: None,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FlagRequest {
    /// What is wrong, 1–2000 characters.
    reason: String,
    /// Links, logs or excerpts that show it (up to 10,000 characters).
    evidence: Option<String>,
    /// How to reach the reporter, if they want to be reached.
    contact: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FlagCreated {
    flag_id: String,
    status: String,
    /// The certificate's unresolved flags, this one included.
    active_flag_count: i64,
    /// False when the same reporter had already raised the same reason; that flag is returned.
    created: bool,
}

/// Flag a certificate. The open flag count rises at once and the certificate stops verifying as
/// valid until an operator resolves the flag. Rate-limited per client; the same reporter raising
/// the same reason again gets the flag it already made.
#[utoipa::path(post, path = "/certificates/{id}/flags", tag = "public",
    params(("id" = String, Path, description = "Certificate id")), request_body = FlagRequest,
    responses((status = 201, body = FlagCreated), (status = 200, description = "Already flagged by this reporter", body = FlagCreated),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 429, body = ErrorBody)))]
async fn flag_certificate(
    State(state): State<AppState>,
    ClientIp(client): ClientIp,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<FlagRequest>,
) -> ApiResult<(StatusCode, axum::Json<FlagCreated>)> {
    let c = find(&state, &id).await?;
    let reason = request.reason.trim();
    let length_error = |field: &str, max: usize| {
        ApiError::bad_request(
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
    let flag_id = sqlx::types::Uuid::new_v4();
    let mut tx = state.db.begin().await?;
    let inserted = sqlx::query_scalar!(
        r#"insert into certificate_flag (flag_id, certificate_id, reason, evidence, contact, reporter_hash)
           values ($1, $2, $3, $4, $5, $6)
           on conflict (certificate_id, reporter_hash, md5(reason)) where status in ('OPEN', 'TRIAGED', 'REAUDIT')
           do nothing returning flag_id"#,
        flag_id,
        c.id,
        reason,
        request.evidence,
        request.contact,
        reporter,
    )
    .fetch_optional(&mut *tx)
    .await?;
    let (flag_id, status, created) = match inserted {
        Some(id) => (id, "OPEN".to_owned(), true),
        None => {
            let existing = sqlx::query!(
                r#"select flag_id, status from certificate_flag
                   where certificate_id = $1 and reporter_hash = $2 and md5(reason) = md5($3)
                     and status = any($4)"#,
                c.id,
                reporter,
                reason,
                &UNRESOLVED_FLAGS.map(String::from)[..],
            )
            .fetch_one(&mut *tx)
            .await?;
            (existing.flag_id, existing.status, false)
        }
    };
    let open = sqlx::query_scalar!(
        r#"select count(*) as "n!" from certificate_flag where certificate_id = $1 and status = any($2)"#,
        c.id,
        &UNRESOLVED_FLAGS.map(String::from)[..],
    )
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
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
            active_flag_count: open,
            created,
        }),
    ))
}

/// A status badge (SVG) for READMEs.
#[utoipa::path(get, path = "/certificates/{id}/badge.svg", tag = "public",
    params(("id" = String, Path, description = "Certificate id")),
    responses((status = 200, content_type = "image/svg+xml", body = String), (status = 404, content_type = "image/svg+xml", body = String)))]
async fn badge(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    match find(&state, &id).await {
        Ok(c) => {
            let now = now();
            let (label, color) = page::badge_state(&c, now);
            with_etag(
                &headers,
                "image/svg+xml",
                SHORT,
                page::badge_svg(label, color).into_bytes(),
            )
        }
        Err(ApiError::Client { status, .. }) if status == StatusCode::NOT_FOUND => (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "image/svg+xml")],
            page::badge_svg("unknown", "#9f9f9f"),
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}

// ---------------------------------------------------------------------------------------------
// Service-wide documents

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Landing {
    certificates_issued: i64,
    /// Counted sandbox findings of high or critical severity, over every submission analysed.
    findings_above_medium: i64,
    active_validators: i64,
    /// The lowest base price among the categories shown on the landing (from the pricing catalog).
    starting_price_usd: f64,
    categories: Vec<&'static str>,
    /// Base prices of the categories shown on the landing.
    prices: Vec<LandingPrice>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LandingPrice {
    category: String,
    base_usd: String,
    base_credits: i64,
}

/// Counters and prices for the public landing page.
#[utoipa::path(get, path = "/landing", tag = "public", responses((status = 200, body = Landing)))]
async fn landing(State(state): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    let counts = sqlx::query!(
        r#"select (select count(*) from certificate) as "issued!",
                  (select coalesce(sum(findings_above_medium), 0) from sandbox_report) as "findings!",
                  (select count(*) from validator where active) as "validators!""#
    )
    .fetch_one(&state.db)
    .await?;
    let prices: Vec<LandingPrice> = sqlx::query!(
        "select category, base_credits from pricing_category where active and shown_on_landing order by base_credits, category"
    )
    .fetch_all(&state.db)
    .await?
    .into_iter()
    .map(|p| LandingPrice {
        category: p.category,
        base_usd: sigma_shared::pricing::usd(p.base_credits),
        base_credits: p.base_credits,
    })
    .collect();
    let body = Landing {
        certificates_issued: counts.issued,
        findings_above_medium: counts.findings,
        active_validators: counts.validators,
        starting_price_usd: prices
            .first()
            .map(|p| p.base_credits as f64 / sigma_shared::pricing::CREDITS_PER_USD as f64)
            .unwrap_or(0.0),
        categories: Category::ALL.iter().map(|c| c.as_str()).collect(),
        prices,
    };
    Ok(json_with_etag(
        &headers,
        SHORT,
        &serde_json::to_value(body).map_err(anyhow::Error::from)?,
    ))
}

/// The public keys that sign certificates (also served at `/.well-known/sigma-keys.json`).
/// Retired keys stay listed so older certificates keep verifying.
#[utoipa::path(get, path = "/keys", tag = "public", responses((status = 200, body = KeySet)))]
async fn signing_keys(State(state): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    Ok(json_with_etag(
        &headers,
        "public, max-age=300",
        &serde_json::to_value(&state.public.keys).map_err(anyhow::Error::from)?,
    ))
}

/// Agent-native discovery: every currently valid certificate (newest 1,000), with where to verify
/// it and the hashes to compare.
#[utoipa::path(get, path = "/.well-known/skill-store", tag = "public", responses((status = 200, body = Object)))]
async fn skill_store(State(state): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    let rows = approved(&state, &[], None, 1000).await?;
    let skills: Vec<Value> = rows
        .iter()
        .filter(|r| r.open_flags == 0)
        .map(|r| {
            json!({
                "id": r.certificate_id,
                "name": r.skill_name,
                "version": r.skill_version,
                "category": r.category,
                "status": r.status,
                "securityLevel": r.security_level,
                "sha256": r.skill_md_sha256,
                "bundleDigest": r.bundle_digest,
                "payloadHash": r.payload_hash,
                "issuedAt": r.issued_at,
                "expiresAt": r.expires_at,
                "verifyUrl": public_url(&state, &format!("/api/v1/public/certificates/{}/verify", r.certificate_id)),
                "pageUrl": public_url(&state, &format!("/certificate/{}", r.certificate_id)),
            })
        })
        .collect();
    let body = json!({
        "name": "SIGMA skill store",
        "description": "Skills certified by SIGMA. Verify before every invocation: GET verifyUrl and require valid == true; compare your SKILL.md's LF-normalised SHA-256 with sha256.",
        "keysUrl": public_url(&state, KEYS_PATH),
        "searchUrl": public_url(&state, "/api/v1/public/certificates?q={keywords}"),
        "count": skills.len(),
        "skills": skills,
    });
    Ok(json_with_etag(&headers, SHORT, &body))
}

/// Background work of the public plane: the change feed, view flushes and limiter upkeep.
pub fn spawn_background(
    state: &AppState,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let public = &state.public;
    let limits = public.limits.clone();
    let mut stop_limits = stop.clone();
    vec![
        tokio::spawn(public.cache.clone().follow_changes(stop.clone())),
        tokio::spawn(public.cache.clone().flush_periodically(
            Duration::from_millis(state.settings.public.view_flush_ms.max(10)),
            stop,
        )),
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(60)) => limits.shrink(),
                    _ = stop_limits.changed() => return,
                }
            }
        }),
    ]
}
