//! Authentication extractors, one per plane. A handler's signature shows which plane it serves.
//! Every credential carries its plane in its prefix and is looked up only in that plane's tables,
//! so a developer's token or session never opens the operator plane, and the reverse.
//!
//! - Developer plane: portal sessions (`sigma_portal_…`, from email login; bearer or the
//!   `sigma_portal` cookie) and API tokens for automation (`sigma_dev_…`, bearer).
//! - Operator plane: console sessions (`sigma_console_…`, from a password login; bearer or the
//!   `sigma_console` cookie) and automation tokens (`sigma_op_…`, bearer).

use axum::extract::FromRequestParts;
use axum::http::HeaderValue;
use axum::http::request::Parts;
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use sqlx::types::Uuid;

use crate::AppState;
use crate::error::ApiError;

/// A developer, by portal session or API token.
#[derive(Clone, Debug)]
pub struct DeveloperAuth {
    pub developer_id: Uuid,
    pub email: String,
    /// The portal session used, when it was one (logout revokes it).
    pub session_id: Option<Uuid>,
}

/// An operator, by console session or automation token.
#[derive(Clone, Debug)]
pub struct OperatorAuth {
    pub operator_id: Uuid,
    pub name: String,
    pub session_id: Option<Uuid>,
}

pub const DEVELOPER_TOKEN_PREFIX: &str = "sigma_dev_";
pub const PORTAL_SESSION_PREFIX: &str = "sigma_portal_";
pub const OPERATOR_TOKEN_PREFIX: &str = "sigma_op_";
pub const CONSOLE_SESSION_PREFIX: &str = "sigma_console_";
pub const PORTAL_COOKIE: &str = "sigma_portal";
pub const CONSOLE_COOKIE: &str = "sigma_console";
pub const PORTAL_COOKIE_PATH: &str = "/api/v1/sigma/dev";
pub const CONSOLE_COOKIE_PATH: &str = "/api/v1/sigma/operator";
/// Session cookies outlive any session (browsers cap them at 400 days): the server's sliding
/// expiry is what ends a session, so a cookie never expires under an active user.
pub const COOKIE_MAX_AGE_SECS: i64 = 400 * 86_400;

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

/// The credential sent: a bearer token, else the plane's cookie.
fn credential(parts: &Parts, cookie: &str) -> Result<String, ApiError> {
    if let Some(header) = parts.headers.get(axum::http::header::AUTHORIZATION) {
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .ok_or_else(|| {
                ApiError::unauthorized("the Authorization header must be `Bearer <token>`")
            })?;
        return Ok(token.trim().to_owned());
    }
    cookie_value(parts, cookie)
        .map(str::to_owned)
        .ok_or_else(|| ApiError::unauthorized("missing bearer token or session cookie"))
}

fn cookie_value<'a>(parts: &'a Parts, name: &str) -> Option<&'a str> {
    parts
        .headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

fn wrong_plane() -> ApiError {
    ApiError::unauthorized("this credential is not valid on this plane")
}

/// A `Set-Cookie` value for a session (or, with `None`, one that clears it).
pub fn session_cookie(
    name: &str,
    path: &str,
    token: Option<&str>,
    max_age_secs: i64,
    secure: bool,
) -> HeaderValue {
    let (value, max_age) = match token {
        Some(t) => (t, max_age_secs),
        None => ("", 0),
    };
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}"
    ))
    .expect("cookie is visible ASCII")
}

impl FromRequestParts<AppState> for DeveloperAuth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        // Checked once per request, however many extractors ask (an owned resource does too).
        if let Some(auth) = parts.extensions.get::<Self>() {
            return Ok(auth.clone());
        }
        let token = credential(parts, PORTAL_COOKIE)?;
        let hash = token_hash(&token);
        let auth = if token.starts_with(PORTAL_SESSION_PREFIX) {
            // Sliding expiry: every use pushes the end of an idle session further out.
            let idle = state.settings.portal.session_idle_days as f64 * 86_400.0;
            let row = sqlx::query!(
                r#"update developer_session s set last_used_at = now(),
                       expires_at = now() + make_interval(secs => $2)
                   from developer d
                   where s.token_hash = $1 and s.revoked_at is null and s.expires_at > now()
                     and d.developer_id = s.developer_id
                   returning s.session_id, d.developer_id, d.email"#,
                hash,
                idle
            )
            .fetch_optional(&state.db)
            .await?
            .ok_or_else(|| ApiError::unauthorized("unknown, expired or revoked session"))?;
            Self {
                developer_id: row.developer_id,
                email: row.email,
                session_id: Some(row.session_id),
            }
        } else if token.starts_with(DEVELOPER_TOKEN_PREFIX) {
            let row = sqlx::query!(
                r#"select d.developer_id, d.email from developer_token t join developer d using (developer_id)
                   where t.token_hash = $1 and t.revoked_at is null"#,
                hash
            )
            .fetch_optional(&state.db)
            .await?
            .ok_or_else(|| ApiError::unauthorized("unknown or revoked token"))?;
            Self {
                developer_id: row.developer_id,
                email: row.email,
                session_id: None,
            }
        } else {
            return Err(wrong_plane());
        };
        tracing::Span::current().record("developer_id", tracing::field::display(auth.developer_id));
        parts.extensions.insert(auth.clone());
        Ok(auth)
    }
}

/// A developer by an administrator-issued API token only (`sigma_dev_…`): direct intake skips
/// quotes and payment, so a portal session (anyone with an email address) is refused with 403
/// `submit_through_a_draft`.
#[derive(Clone, Debug)]
pub struct ApiToken(pub DeveloperAuth);

impl FromRequestParts<AppState> for ApiToken {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let developer = DeveloperAuth::from_request_parts(parts, state).await?;
        if developer.session_id.is_some() {
            return Err(ApiError::new(
                axum::http::StatusCode::FORBIDDEN,
                "submit_through_a_draft",
                "portal sessions submit through a draft: POST /drafts, /drafts/{id}/quote, /payment-intents, /drafts/{id}/submit",
            ));
        }
        Ok(Self(developer))
    }
}

impl FromRequestParts<AppState> for OperatorAuth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = credential(parts, CONSOLE_COOKIE)?;
        let hash = token_hash(&token);
        if token.starts_with(CONSOLE_SESSION_PREFIX) {
            let idle = state.settings.portal.console_session_idle_hours as f64 * 3600.0;
            let row = sqlx::query!(
                r#"update operator_session s set last_used_at = now(),
                       expires_at = now() + make_interval(secs => $2)
                   from operator o
                   where s.token_hash = $1 and s.revoked_at is null and s.expires_at > now()
                     and o.operator_id = s.operator_id
                   returning s.session_id, o.operator_id, o.name"#,
                hash,
                idle
            )
            .fetch_optional(&state.db)
            .await?
            .ok_or_else(|| ApiError::unauthorized("unknown, expired or revoked console session"))?;
            Ok(Self {
                operator_id: row.operator_id,
                name: row.name,
                session_id: Some(row.session_id),
            })
        } else if token.starts_with(OPERATOR_TOKEN_PREFIX) {
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
                session_id: None,
            })
        } else {
            Err(wrong_plane())
        }
    }
}

/// Creates the developer if new and issues an API token (returned once; only its hash is kept).
pub async fn developer_token(
    db: &PgPool,
    email: &str,
    name: Option<&str>,
    label: &str,
) -> anyhow::Result<String> {
    let email = sigma_shared::domain::EmailAddress::parse(email).map_err(anyhow::Error::msg)?;
    let developer_id = upsert_developer(db, &email, name).await?;
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

/// The developer with this address, created on first sight.
pub async fn upsert_developer<'e>(
    db: impl sqlx::PgExecutor<'e>,
    email: &sigma_shared::domain::EmailAddress,
    name: Option<&str>,
) -> sqlx::Result<Uuid> {
    sqlx::query_scalar!(
        r#"insert into developer (developer_id, email, display_name) values ($1, $2, $3)
           on conflict (email) do update set display_name = coalesce(excluded.display_name, developer.display_name)
           returning developer_id"#,
        Uuid::new_v4(),
        email.as_str(),
        name
    )
    .fetch_one(db)
    .await
}

/// Creates the operator if new and issues an automation token (returned once; only its hash is kept).
pub async fn operator_token(db: &PgPool, name: &str) -> anyhow::Result<String> {
    let operator_id = upsert_operator(db, name).await?;
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

async fn upsert_operator(db: &PgPool, name: &str) -> anyhow::Result<Uuid> {
    anyhow::ensure!(
        !name.trim().is_empty() && name.len() <= 100,
        "an operator name is 1 to 100 characters"
    );
    Ok(sqlx::query_scalar!(
        r#"insert into operator (operator_id, name) values ($1, $2)
           on conflict (name) do update set name = excluded.name returning operator_id"#,
        Uuid::new_v4(),
        name
    )
    .fetch_one(db)
    .await?)
}

/// Sets (or replaces) an operator's console password; the operator is created if new.
pub async fn operator_login(db: &PgPool, name: &str, password: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        password.chars().count() >= 12,
        "a console password has at least 12 characters"
    );
    let operator_id = upsert_operator(db, name).await?;
    let hash = hash_password(password)?;
    sqlx::query!(
        "update operator set password_hash = $2 where operator_id = $1",
        operator_id,
        hash
    )
    .execute(db)
    .await?;
    // A new password ends every console session opened with the old one.
    sqlx::query!(
        "update operator_session set revoked_at = now() where operator_id = $1 and revoked_at is null",
        operator_id
    )
    .execute(db)
    .await?;
    Ok(())
}

/// A random console password (24 URL-safe characters).
pub fn random_password() -> String {
    use base64::Engine;
    let mut bytes = [0u8; 18];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub fn hash_password(password: &str) -> anyhow::Result<String> {
    use argon2::password_hash::{PasswordHasher, SaltString, rand_core::OsRng};
    let salt = SaltString::generate(&mut OsRng);
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("cannot hash the password: {e}"))
}

/// Checks a password against a stored PHC string. Without one, a dummy hash is checked anyway
/// so the answer takes as long whether the operator exists or not.
pub fn verify_password(password: &str, stored: Option<&str>) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    static DUMMY: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        hash_password("dummy password for timing").expect("argon2 hashes")
    });
    let (hash, real) = match stored {
        Some(s) => (s, true),
        None => (DUMMY.as_str(), false),
    };
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    argon2::Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok()
        && real
}
