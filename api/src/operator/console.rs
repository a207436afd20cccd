//! Console sessions: an operator logs in with the credentials `sigma operator create-login`
//! made. Separate from developer sessions in table, prefix, cookie name and cookie path.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::types::Uuid;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::auth::{
    self, CONSOLE_COOKIE, CONSOLE_COOKIE_PATH, CONSOLE_SESSION_PREFIX, OperatorAuth,
};
use crate::core::client_ip::ClientIp;
use crate::error::{ApiError, ApiJson, ApiResult, ErrorBody};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(login))
        .routes(routes!(logout))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConsoleLogin {
    pub name: String,
    pub password: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConsoleSession {
    /// `sigma_console_…`: a bearer token, also set as the console cookie. Shown once.
    pub token: String,
    pub expires_at: DateTime<Utc>,
    pub operator: String,
}

/// Open a console session.
#[utoipa::path(post, path = "/auth/login", tag = "operator", request_body = ConsoleLogin,
    responses((status = 200, body = ConsoleSession), (status = 401, body = ErrorBody), (status = 429, body = ErrorBody)))]
#[tracing::instrument(name = "console_login", skip_all)]
async fn login(
    State(state): State<AppState>,
    ClientIp(client): ClientIp,
    ApiJson(body): ApiJson<ConsoleLogin>,
) -> ApiResult<Response> {
    state.public.limits.check_console_login(client)?;
    let operator = sqlx::query!(
        "select operator_id, name, password_hash from operator where name = $1",
        body.name.trim()
    )
    .fetch_optional(&state.db)
    .await?;
    let stored = operator.as_ref().and_then(|o| o.password_hash.clone());
    let password = body.password;
    // Argon2 is deliberately slow: off the async workers.
    let ok =
        tokio::task::spawn_blocking(move || auth::verify_password(&password, stored.as_deref()))
            .await
            .map_err(anyhow::Error::from)?;
    let Some(operator) = operator.filter(|_| ok) else {
        tracing::warn!(%client, "console login refused");
        return Err(ApiError::unauthorized("unknown operator or wrong password"));
    };
    let (token, hash) = auth::new_token(CONSOLE_SESSION_PREFIX);
    let hours = state.settings.portal.console_session_idle_hours;
    let expires_at = Utc::now() + chrono::Duration::hours(hours);
    sqlx::query!(
        r#"insert into operator_session (session_id, token_hash, operator_id, client_ip, expires_at)
           values ($1, $2, $3, $4, $5)"#,
        Uuid::new_v4(),
        hash,
        operator.operator_id,
        client.to_string(),
        expires_at
    )
    .execute(&state.db)
    .await?;
    tracing::info!(operator = %operator.name, "console session opened");
    let cookie = auth::session_cookie(
        CONSOLE_COOKIE,
        CONSOLE_COOKIE_PATH,
        Some(&token),
        auth::COOKIE_MAX_AGE_SECS,
        state.settings.portal.secure_cookies,
    );
    Ok((
        [(header::SET_COOKIE, cookie)],
        Json(ConsoleSession {
            token,
            expires_at,
            operator: operator.name,
        }),
    )
        .into_response())
}

#[utoipa::path(post, path = "/auth/logout", tag = "operator", operation_id = "operator_logout", security(("operator_session" = [])),
    responses((status = 204, description = "Signed out"), (status = 401, body = ErrorBody)))]
async fn logout(State(state): State<AppState>, operator: OperatorAuth) -> ApiResult<Response> {
    if let Some(session) = operator.session_id {
        sqlx::query!(
            "update operator_session set revoked_at = now() where session_id = $1",
            session
        )
        .execute(&state.db)
        .await?;
    }
    let cookie = auth::session_cookie(
        CONSOLE_COOKIE,
        CONSOLE_COOKIE_PATH,
        None,
        0,
        state.settings.portal.secure_cookies,
    );
    Ok((StatusCode::NO_CONTENT, [(header::SET_COOKIE, cookie)]).into_response())
}
