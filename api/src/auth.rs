//! Authentication extractors, one per plane. A handler's signature shows which plane it serves;
//! a token of one plane is looked up only in that plane's table, so it never opens another.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use sqlx::types::Uuid;

use crate::AppState;
use crate::error::ApiError;

/// A developer authenticated by a `sigma_dev_…` bearer token.
#[derive(Clone, Debug)]
pub struct DeveloperAuth {
    pub developer_id: Uuid,
    pub email: String,
}

/// An operator authenticated by a `sigma_op_…` bearer token.
#[derive(Clone, Debug)]
pub struct OperatorAuth {
    pub operator_id: Uuid,
    pub name: String,
}

pub const DEVELOPER_TOKEN_PREFIX: &str = "sigma_dev_";
pub const OPERATOR_TOKEN_PREFIX: &str = "sigma_op_";

/// A new random token with its plane prefix, and the hash that is stored.
pub fn new_token(prefix: &str) -> (String, Vec<u8>) {
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    let token = format!("{prefix}{}", hex::encode(secret));
    let hash = token_hash(&token);
    (token, hash)
}

pub fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

fn bearer<'a>(parts: &'a Parts, prefix: &str) -> Result<&'a str, ApiError> {
    let header = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::unauthorized("missing bearer token"))?;
    let token = header
        .strip_prefix("Bearer ")
        .ok_or_else(|| ApiError::unauthorized("the Authorization header must be `Bearer <token>`"))?
        .trim();
    if !token.starts_with(prefix) {
        return Err(ApiError::unauthorized(
            "this token is not valid on this plane",
        ));
    }
    Ok(token)
}

impl FromRequestParts<AppState> for DeveloperAuth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let hash = token_hash(bearer(parts, DEVELOPER_TOKEN_PREFIX)?);
        let row = sqlx::query!(
            r#"select d.developer_id, d.email from developer_token t join developer d using (developer_id)
               where t.token_hash = $1 and t.revoked_at is null"#,
            hash
        )
        .fetch_optional(&state.db)
        .await?
        .ok_or_else(|| ApiError::unauthorized("unknown or revoked token"))?;
        tracing::Span::current().record("developer_id", tracing::field::display(row.developer_id));
        Ok(Self {
            developer_id: row.developer_id,
            email: row.email,
        })
    }
}

impl FromRequestParts<AppState> for OperatorAuth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let hash = token_hash(bearer(parts, OPERATOR_TOKEN_PREFIX)?);
        let row = sqlx::query!(
            r#"select o.operator_id, o.name from operator_token t join operator o using (operator_id)
               where t.token_hash = $1 and t.revoked_at is null"#,
            hash
        )
        .fetch_optional(&state.db)
        .await?
        .ok_or_else(|| ApiError::unauthorized("unknown or revoked token"))?;
        Ok(Self {
            operator_id: row.operator_id,
            name: row.name,
        })
    }
}

/// Creates the developer if new and issues an API token (returned once; only its hash is kept).
pub async fn developer_token(
    db: &PgPool,
    email: &str,
    name: Option<&str>,
    label: &str,
) -> anyhow::Result<String> {
    anyhow::ensure!(
        email.contains('@') && email.len() <= 320,
        "`{email}` is not an email address"
    );
    let developer_id = sqlx::query_scalar!(
        r#"insert into developer (developer_id, email, display_name) values ($1, lower($2), $3)
           on conflict (email) do update set display_name = coalesce(excluded.display_name, developer.display_name)
           returning developer_id"#,
        Uuid::new_v4(),
        email,
        name
    )
    .fetch_one(db)
    .await?;
    let (token, hash) = new_token(DEVELOPER_TOKEN_PREFIX);
    sqlx::query!(
        "insert into developer_token (token_hash, developer_id, label) values ($1, $2, $3)",
        hash,
        developer_id,
        label
    )
    .execute(db)
    .await?;
    Ok(token)
}

/// Creates the operator if new and issues a console token (returned once; only its hash is kept).
pub async fn operator_token(db: &PgPool, name: &str) -> anyhow::Result<String> {
    let operator_id = sqlx::query_scalar!(
        r#"insert into operator (operator_id, name) values ($1, $2)
           on conflict (name) do update set name = excluded.name returning operator_id"#,
        Uuid::new_v4(),
        name
    )
    .fetch_one(db)
    .await?;
    let (token, hash) = new_token(OPERATOR_TOKEN_PREFIX);
    sqlx::query!(
        "insert into operator_token (token_hash, operator_id) values ($1, $2)",
        hash,
        operator_id
    )
    .execute(db)
    .await?;
    Ok(token)
}
