//! Email login: a six-digit code and a magic link sent by SMTP, exchanged for a long-lived portal
//! session. Codes are keyed hashes, single-use, short-lived and attempt-limited; starts are
//! rate-limited per address and per client; no answer tells whether an account exists.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use rand::{Rng, RngCore};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use sigma_shared::email::Email;
use sqlx::types::Uuid;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::auth::{self, DeveloperAuth, PORTAL_COOKIE, PORTAL_COOKIE_PATH, PORTAL_SESSION_PREFIX};
use crate::core::client_ip::ClientIp;
use crate::error::{ApiError, ApiJson, ApiResult, ErrorBody};
use sigma_shared::domain::EmailAddress;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(start_login))
        .routes(routes!(verify_login))
        .routes(routes!(logout))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoginStart {
    /// An email address (checked by lettre's parser; the pattern is the part of it clients can rely on).
    #[schema(
        min_length = 3,
        max_length = 254,
        pattern = "^\\s*(?=[^@]{1,64}@)[A-Za-z0-9_%+-]+(\\.[A-Za-z0-9_%+-]+)*@[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)+\\s*$"
    )]
    pub email: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LoginStarted {
    /// Always true: the same answer whether or not an account exists.
    pub sent: bool,
    pub expires_in_seconds: i64,
}

/// Either the address and the code from the email, or the magic link's token.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum LoginVerify {
    Code(CodeLogin),
    Link(LinkLogin),
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CodeLogin {
    /// The address the code was sent to.
    #[schema(
        min_length = 3,
        max_length = 254,
        pattern = "^\\s*(?=[^@]{1,64}@)[A-Za-z0-9_%+-]+(\\.[A-Za-z0-9_%+-]+)*@[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)+\\s*$"
    )]
    pub email: String,
    /// The six-digit code from the email.
    #[schema(pattern = "^\\s*[0-9]{6}\\s*$")]
    pub code: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LinkLogin {
    /// The token of the magic link.
    #[schema(min_length = 1, max_length = 200)]
    pub token: String,
    /// Ignored: the token names its address.
    #[schema(max_length = 254)]
    pub email: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PortalSession {
    /// The session token (`sigma_portal_…`): send it as a bearer token, or rely on the cookie
    /// set with this answer. Shown once.
    pub token: String,
    pub expires_at: DateTime<Utc>,
    pub developer_id: String,
    pub email: String,
}

fn code_mac(state: &AppState, email: &EmailAddress, code: &str) -> Hmac<Sha256> {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(state.settings.portal.secret.expose_secret().as_bytes())
            .expect("HMAC takes any key length");
    mac.update(email.as_str().as_bytes());
    mac.update(&[0]);
    mac.update(code.as_bytes());
    mac
}

fn code_hash(state: &AppState, email: &EmailAddress, code: &str) -> Vec<u8> {
    code_mac(state, email, code)
        .finalize()
        .into_bytes()
        .to_vec()
}

/// Send a login code and magic link to an address.
///
/// The answer is the same whether or not the address has an account (the first login creates
/// it). A new start voids the address's earlier codes.
#[utoipa::path(post, path = "/auth/email/start", tag = "developer",
    request_body = LoginStart,
    responses(
        (status = 202, description = "If the address can receive mail, a code is on its way", body = LoginStarted),
        (status = 422, description = "Not an email address", body = ErrorBody),
        (status = 429, description = "Too many logins for this address or from this client", body = ErrorBody),
        (status = 503, description = "The email could not be sent; nothing was recorded", body = ErrorBody),
    ))]
#[tracing::instrument(name = "login_start", skip_all)]
async fn start_login(
    State(state): State<AppState>,
    ClientIp(client): ClientIp,
    ApiJson(body): ApiJson<LoginStart>,
) -> ApiResult<Response> {
    state.public.limits.check_login(client)?;
    let email = EmailAddress::parse(&body.email)
        .map_err(|e| ApiError::unprocessable("invalid_email", e))?;
    let portal = &state.settings.portal;
    let recent = sqlx::query_scalar!(
        r#"select count(*) as "n!" from login_challenge where email = $1 and created_at > now() - interval '1 hour'"#,
        email.as_str()
    )
    .fetch_one(&state.db)
    .await?;
    // Wrong codes across all of the address's challenges of the last day: new starts cannot buy
    // an attacker more guesses than this.
    let guesses = sqlx::query_scalar!(
        r#"select coalesce(sum(attempts), 0)::bigint as "n!" from login_challenge
           where email = $1 and created_at > now() - interval '1 day'"#,
        email.as_str()
    )
    .fetch_one(&state.db)
    .await?;
    if guesses >= portal.code_failures_per_address_per_day {
        return Err(ApiError::RateLimited {
            detail: "too many wrong codes for this address today; try again tomorrow".into(),
            retry_after_secs: 86_400,
        });
    }
    if recent >= portal.logins_per_address_per_hour {
        return Err(ApiError::RateLimited {
            detail: "too many login emails for this address; wait before asking again".into(),
            retry_after_secs: 600,
        });
    }
    let code = format!("{:06}", rand::rng().random_range(0..1_000_000u32));
    let mut link = [0u8; 32];
    rand::rng().fill_bytes(&mut link);
    let link_token = hex::encode(link);
    let challenge_id = Uuid::new_v4();
    let expires_at = Utc::now() + chrono::Duration::seconds(portal.code_ttl_secs);
    let mut tx = state.db.begin().await?;
    sqlx::query!(
        "update login_challenge set consumed_at = now() where email = $1 and consumed_at is null",
        email.as_str()
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        r#"insert into login_challenge (challenge_id, email, code_hash, link_hash, client_ip, expires_at)
           values ($1, $2, $3, $4, $5, $6)"#,
        challenge_id,
        email.as_str(),
        code_hash(&state, &email, &code),
        auth::token_hash(&link_token),
        client.to_string(),
        expires_at
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;

    let minutes = portal.code_ttl_secs / 60;
    let magic = format!(
        "{}/login?token={link_token}",
        portal.portal_base_url.trim_end_matches('/')
    );
    let email_message = Email {
        to: email.as_str().to_owned(),
        subject: format!("Your SIGMA login code: {code}"),
        text: format!(
            "Your SIGMA login code is {code}\n\nOr open this link to sign in: {magic}\n\nBoth expire in {minutes} minutes and work once. If you did not ask to sign in, ignore this email.\n"
        ),
        html: format!(
            "<p>Your SIGMA login code is <strong style=\"font-size:1.4em\">{code}</strong></p><p>Or <a href=\"{magic}\">sign in with this link</a>.</p><p>Both expire in {minutes} minutes and work once. If you did not ask to sign in, ignore this email.</p>"
        ),
        message_id: Some(format!("<login-{challenge_id}@sigma>")),
    };
    // Sent from here, not queued: the code must not rest anywhere but in the recipient's inbox.
    if let Err(e) = send_with_retry(&state, email_message).await {
        tracing::error!(error = %format!("{e:#}"), "login email not sent");
        sqlx::query!(
            "delete from login_challenge where challenge_id = $1",
            challenge_id
        )
        .execute(&state.db)
        .await?;
        return Err(ApiError::unavailable(
            "email_unavailable",
            "the login email could not be sent; try again shortly",
        ));
    }
    tracing::info!(%challenge_id, "login code sent");
    Ok((
        StatusCode::ACCEPTED,
        Json(LoginStarted {
            sent: true,
            expires_in_seconds: portal.code_ttl_secs,
        }),
    )
        .into_response())
}

async fn send_with_retry(state: &AppState, email: Email) -> anyhow::Result<()> {
    let mut delay = std::time::Duration::from_millis(200);
    for attempt in 1..=3 {
        let copy = Email {
            to: email.to.clone(),
            subject: email.subject.clone(),
            text: email.text.clone(),
            html: email.html.clone(),
            message_id: email.message_id.clone(),
        };
        match state.mailer.send(copy).await {
            Ok(()) => return Ok(()),
            Err(e) if attempt == 3 => return Err(e),
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), attempt, "SMTP failed; retrying");
                tokio::time::sleep(delay).await;
                delay *= 4;
            }
        }
    }
    unreachable!("the loop returns on its last attempt")
}

fn invalid_code() -> ApiError {
    ApiError::unauthorized("the code is wrong, expired or already used")
}

/// Exchange a login code (or a magic-link token) for a portal session.
///
/// The session is returned once as a token and set as an `HttpOnly`, `SameSite=Strict` cookie
/// scoped to the developer plane. It slides: each use extends it.
#[utoipa::path(post, path = "/auth/email/verify", tag = "developer",
    request_body = LoginVerify,
    responses(
        (status = 200, description = "Signed in", body = PortalSession),
        (status = 401, description = "Wrong, expired or used code; or too many attempts", body = ErrorBody),
        (status = 422, description = "Neither `email` + `code` nor `token`", body = ErrorBody),
        (status = 429, body = ErrorBody),
    ))]
#[tracing::instrument(name = "login_verify", skip_all)]
async fn verify_login(
    State(state): State<AppState>,
    ClientIp(client): ClientIp,
    headers: HeaderMap,
    ApiJson(body): ApiJson<LoginVerify>,
) -> ApiResult<Response> {
    state.public.limits.check_login(client)?;
    let mut tx = state.db.begin().await?;
    let email = match &body {
        LoginVerify::Link(LinkLogin { token, .. }) => sqlx::query_scalar!(
            r#"update login_challenge set consumed_at = now()
               where link_hash = $1 and consumed_at is null and expires_at > now() returning email"#,
            auth::token_hash(token.trim())
        )
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(invalid_code)?,
        LoginVerify::Code(CodeLogin { email, code }) => {
            let email = EmailAddress::parse(email)
                .map_err(|e| ApiError::unprocessable("invalid_email", e))?;
            let challenge = sqlx::query!(
                r#"select challenge_id, code_hash, attempts, expires_at > now() as "live!"
                   from login_challenge where email = $1 and consumed_at is null
                   order by created_at desc limit 1 for update"#,
                email.as_str()
            )
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(invalid_code)?;
            if !challenge.live {
                return Err(invalid_code());
            }
            let max = state.settings.portal.code_max_attempts;
            let attempts = challenge.attempts + 1;
            // Constant-time comparison.
            let matches = code_mac(&state, &email, code.trim())
                .verify_slice(&challenge.code_hash)
                .is_ok();
            if !matches {
                // Counted in its own commit: a failed guess is never rolled back.
                let exhausted = attempts >= max;
                sqlx::query!(
                    r#"update login_challenge set attempts = $2,
                           consumed_at = case when $3 then now() else consumed_at end
                       where challenge_id = $1"#,
                    challenge.challenge_id,
                    attempts,
                    exhausted
                )
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                return Err(if exhausted {
                    ApiError::unauthorized(
                        "too many wrong codes: this code is void; ask for a new one",
                    )
                } else {
                    invalid_code()
                });
            }
            sqlx::query!(
                "update login_challenge set consumed_at = now() where challenge_id = $1",
                challenge.challenge_id
            )
            .execute(&mut *tx)
            .await?;
            email.as_str().to_owned()
        }
    };
    // Stored addresses were parsed on the way in.
    let email = EmailAddress::parse(&email).map_err(anyhow::Error::msg)?;
    let developer_id = auth::upsert_developer(&mut *tx, &email, None).await?;
    let (token, hash) = auth::new_token(PORTAL_SESSION_PREFIX);
    let idle = state.settings.portal.session_idle_days;
    let expires_at = Utc::now() + chrono::Duration::days(idle);
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|ua| ua.chars().take(300).collect::<String>());
    sqlx::query!(
        r#"insert into developer_session (session_id, token_hash, developer_id, user_agent, client_ip, expires_at)
           values ($1, $2, $3, $4, $5, $6)"#,
        Uuid::new_v4(),
        hash,
        developer_id,
        user_agent,
        client.to_string(),
        expires_at
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    tracing::info!(%developer_id, "portal session opened");
    // The server decides when a session ends (it slides there); the cookie just lives long.
    let cookie = auth::session_cookie(
        PORTAL_COOKIE,
        PORTAL_COOKIE_PATH,
        Some(&token),
        auth::COOKIE_MAX_AGE_SECS,
        state.settings.portal.secure_cookies,
    );
    Ok((
        [(header::SET_COOKIE, cookie)],
        Json(PortalSession {
            token,
            expires_at,
            developer_id: developer_id.to_string(),
            email: email.as_str().to_owned(),
        }),
    )
        .into_response())
}

/// End the current portal session (API tokens are revoked elsewhere).
#[utoipa::path(post, path = "/auth/logout", tag = "developer", security(("developer_session" = [])),
    responses((status = 204, description = "Signed out"), (status = 401, body = ErrorBody)))]
async fn logout(State(state): State<AppState>, developer: DeveloperAuth) -> ApiResult<Response> {
    if let Some(session) = developer.session_id {
        sqlx::query!(
            "update developer_session set revoked_at = now() where session_id = $1",
            session
        )
        .execute(&state.db)
        .await?;
    }
    let cookie = auth::session_cookie(
        PORTAL_COOKIE,
        PORTAL_COOKIE_PATH,
        None,
        0,
        state.settings.portal.secure_cookies,
    );
    Ok((StatusCode::NO_CONTENT, [(header::SET_COOKIE, cookie)]).into_response())
}
