//! Is this the SKILL.md that was certified? Compared from GitHub at a ref, or uploaded.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use sigma_shared::domain::lf_normalised_sha256;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::cache::Certificate;
use super::{MAX_SKILL_MD_BYTES, find};
use crate::AppState;
use crate::error::{ApiError, ApiJson, ApiPath, ApiResult, ErrorBody};
use sigma_shared::domain::{CertificateId, GitRef, GitRepository};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(compare_skill_from_github))
        .routes(routes!(compare_skill))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CompareFromGithub {
    /// `https://github.com/OWNER/REPO`.
    #[schema(
        max_length = 240,
        pattern = "^\\s*https://(www\\.)?github\\.com/[A-Za-z0-9_-][A-Za-z0-9_.-]{0,99}/[A-Za-z0-9_-][A-Za-z0-9_.-]{0,99}/?\\s*$"
    )]
    source_url: String,
    /// Branch, tag or commit; the certified ref when absent.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = "^\\s*(?!.*\\.lock\\s*$)[A-Za-z0-9_-]+(\\.[A-Za-z0-9_-]+)*(/[A-Za-z0-9_-]+(\\.[A-Za-z0-9_-]+)*)*\\s*$"
    )]
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
        ApiError::unprocessable(
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
    GitRepository::parse(&format!("{owner}/{repo}"))
        .map(|r| r.to_string())
        .map_err(|_| invalid("owner or repository name has characters GitHub does not allow"))
}

fn valid_ref(reference: &str) -> bool {
    GitRef::parse(reference).is_ok()
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
    ApiPath(id): ApiPath<CertificateId>,
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
        return Err(ApiError::unprocessable(
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
    ApiPath(id): ApiPath<CertificateId>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> ApiResult<axum::Json<Comparison>> {
    let body = body.map_err(|e| ApiError::new(e.status(), "invalid_body", e.body_text()))?;
    let c = find(&state, &id).await?;
    let certified = certified_skill_md(&c)?;
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
