//! Discovery: the badge, the landing summary, the published signing keys and the
//! `/.well-known/skill-store` index.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};
use sigma_shared::attestation::KeySet;
use sigma_shared::domain::{Category, CertificateId};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::certificates::approved;
use super::{KEYS_PATH, SHORT, find, json_with_etag, now, public_url, with_etag};
use crate::AppState;
use crate::error::{ApiError, ApiPath, ApiResult};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(badge))
        .routes(routes!(landing))
        .routes(routes!(signing_keys))
}

/// A status badge (SVG) for READMEs.
#[utoipa::path(get, path = "/certificates/{id}/badge.svg", tag = "public",
    params(("id" = String, Path, description = "Certificate id")),
    responses((status = 200, content_type = "image/svg+xml", body = String), (status = 404, content_type = "image/svg+xml", body = String)))]
async fn badge(
    State(state): State<AppState>,
    headers: HeaderMap,
    id: Result<ApiPath<CertificateId>, ApiError>,
) -> Response {
    let found = match id {
        Ok(ApiPath(id)) => find(&state, &id).await,
        Err(e) => Err(e),
    };
    match found {
        Ok(c) => {
            let now = now();
            let (label, color) = super::page::badge_state(&c, now);
            with_etag(
                &headers,
                "image/svg+xml",
                SHORT,
                super::page::badge_svg(label, color).into_bytes(),
            )
        }
        Err(ApiError::Client { status, .. }) if status == StatusCode::NOT_FOUND => (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "image/svg+xml")],
            super::page::badge_svg("unknown", "#9f9f9f"),
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
    categories: Vec<Category>,
    /// Base prices of the categories shown on the landing.
    prices: Vec<LandingPrice>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LandingPrice {
    category: Category,
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
    .map(|p| {
        Ok(LandingPrice {
            category: crate::error::stored(&p.category)?,
            base_usd: sigma_shared::pricing::usd(p.base_credits),
            base_credits: p.base_credits,
        })
    })
    .collect::<ApiResult<_>>()?;
    let body = Landing {
        certificates_issued: counts.issued,
        findings_above_medium: counts.findings,
        active_validators: counts.validators,
        starting_price_usd: prices
            .first()
            .map(|p| p.base_credits as f64 / sigma_shared::pricing::CREDITS_PER_USD as f64)
            .unwrap_or(0.0),
        categories: Category::ALL.to_vec(),
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
pub(super) async fn signing_keys(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    Ok(json_with_etag(
        &headers,
        "public, max-age=300",
        &serde_json::to_value(&state.public.keys).map_err(anyhow::Error::from)?,
    ))
}

/// Agent-native discovery: every currently valid certificate (newest 1,000), with where to verify
/// it and the hashes to compare.
#[utoipa::path(get, path = "/.well-known/skill-store", tag = "public", responses((status = 200, body = Object)))]
pub(super) async fn skill_store(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> ApiResult<Response> {
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
