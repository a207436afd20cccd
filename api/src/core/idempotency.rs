//! `Idempotency-Key`: a retried POST that starts work or moves money answers as the first did.

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

use crate::error::{ApiError, ApiResult};

/// The optional `Idempotency-Key` header, checked: 1 to 200 visible ASCII characters.
#[derive(Clone, Debug, Default)]
pub struct IdempotencyKey(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> ApiResult<Self> {
        Self::from_headers(&parts.headers)
    }
}

impl IdempotencyKey {
    pub fn from_headers(headers: &HeaderMap) -> ApiResult<Self> {
        let Some(value) = headers.get("idempotency-key") else {
            return Ok(Self(None));
        };
        let key = value
            .to_str()
            .map_err(|_| {
                ApiError::bad_request(
                    "invalid_idempotency_key",
                    "Idempotency-Key must be visible ASCII",
                )
            })?
            .trim();
        if key.is_empty() || key.len() > 200 {
            return Err(ApiError::bad_request(
                "invalid_idempotency_key",
                "Idempotency-Key must be 1 to 200 characters",
            ));
        }
        Ok(Self(Some(key.to_owned())))
    }
}

/// The digest a request is recognised by under its key: a domain tag and its parts,
/// length-prefixed.
pub fn request_digest(tag: &str, parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    h.update(tag.as_bytes());
    h.update([0]);
    for part in parts {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    hex::encode(h.finalize())
}

/// The submission an earlier request under `key` created, or a 409 when that request was a
/// different one.
pub async fn submission_for_key(
    db: &PgPool,
    developer_id: Uuid,
    key: &str,
    request_sha256: &str,
) -> ApiResult<Option<String>> {
    let row = sqlx::query!(
        "select request_sha256, submission_id from idempotency_key where developer_id = $1 and idempotency_key = $2",
        developer_id,
        key
    )
    .fetch_optional(db)
    .await?;
    match row {
        None => Ok(None),
        Some(row) if row.request_sha256 == request_sha256 => Ok(Some(row.submission_id)),
        Some(_) => Err(key_reused()),
    }
}

pub fn key_reused() -> ApiError {
    ApiError::conflict(
        "idempotency_key_reused",
        "this Idempotency-Key was already used for a different request",
    )
}
