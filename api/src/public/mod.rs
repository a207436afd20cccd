//! Public plane: certificate search, verification, live status, source integrity, flags, the
//! landing counters, discovery feeds, badges and the certificate page. No authentication; every
//! request spends a per-client rate-limit token, and certificate reads come from a cache kept
//! fresh across replicas by PostgreSQL notifications (see [`cache`]).

pub mod cache;
mod certificates;
mod compare;
mod discovery;
mod flags;
pub mod limits;
mod page;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sha2::{Digest, Sha256};
use sigma_shared::attestation::KeySet;
use sigma_shared::domain::CertificateId;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use cache::{Certificate, CertificateCache};
use limits::Limits;

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
        .merge(certificates::routes())
        .merge(compare::routes())
        .merge(flags::routes())
        .merge(discovery::routes())
        // Public POST bodies are small: a flag, a URL, or one SKILL.md.
        .layer(DefaultBodyLimit::max(MAX_SKILL_MD_BYTES))
}

/// Routes outside `/api/v1/public`: discovery under `/.well-known` and the page for people.
pub fn site_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(discovery::skill_store))
        .route(KEYS_PATH, get(discovery::signing_keys))
        .route("/certificate/{id}", get(page::certificate_page))
}

fn now() -> DateTime<Utc> {
    Utc::now()
}

/// The certificate with this id (a malformed id never gets this far: `ApiPath` answers it).
async fn find(state: &AppState, id: &CertificateId) -> ApiResult<Arc<Certificate>> {
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

fn public_url(state: &AppState, path: &str) -> String {
    format!(
        "{}{path}",
        state.settings.api.public_base_url.trim_end_matches('/')
    )
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
