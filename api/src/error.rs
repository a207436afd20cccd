//! The one API error type. Clients get a stable `{code, detail}` body; internal causes are logged
//! inside the request span and never sent.

use axum::Json;
use axum::extract::{FromRequest, FromRequestParts};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Stable, machine-readable code, e.g. `unknown_category`.
    pub code: String,
    /// Human-readable explanation.
    pub detail: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{detail}")]
    Client {
        status: StatusCode,
        code: &'static str,
        detail: String,
    },
    /// 429 with `Retry-After`.
    #[error("{detail}")]
    RateLimited {
        detail: String,
        retry_after_secs: u64,
    },
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self::Client {
            status,
            code,
            detail: detail.into(),
        }
    }
    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, detail)
    }
    pub fn unprocessable(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, detail)
    }
    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }
    pub fn conflict(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, detail)
    }
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
    }
    pub fn bad_gateway(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_GATEWAY, code, detail)
    }
    pub fn unavailable(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, code, detail)
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        if let Some(db) = e.as_database_error() {
            // Constraint violations are the client's doing; name them without leaking SQL.
            if db.is_unique_violation() {
                return Self::conflict("conflict", "the resource already exists");
            }
            if db.is_foreign_key_violation() || db.is_check_violation() {
                return Self::unprocessable(
                    "invalid_reference",
                    "the request refers to something that does not exist or is not allowed",
                );
            }
        }
        Self::Internal(e.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            Self::Client {
                status,
                code,
                detail,
            } => {
                if status == StatusCode::UNAUTHORIZED {
                    let mut response = (
                        status,
                        Json(ErrorBody {
                            code: code.into(),
                            detail,
                        }),
                    )
                        .into_response();
                    response
                        .headers_mut()
                        .insert("www-authenticate", "Bearer".parse().expect("static header"));
                    return response;
                }
                (
                    status,
                    Json(ErrorBody {
                        code: code.into(),
                        detail,
                    }),
                )
                    .into_response()
            }
            Self::RateLimited {
                detail,
                retry_after_secs,
            } => {
                let mut response = (
                    StatusCode::TOO_MANY_REQUESTS,
                    Json(ErrorBody {
                        code: "rate_limited".into(),
                        detail,
                    }),
                )
                    .into_response();
                response
                    .headers_mut()
                    .insert("retry-after", retry_after_secs.into());
                response
            }
            Self::Internal(e) => {
                tracing::error!(error = format!("{e:#}"), "request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    Json(ErrorBody {
                        code: "internal".into(),
                        detail: "internal error; it has been logged".into(),
                    }),
                )
                    .into_response()
            }
        }
    }
}

/// The longest text any JSON string field may carry unless its own schema says less, in
/// characters as JSON Schema's `maxLength` counts them. Stored text is bounded so that no
/// request can grow a row (or a signed certificate) without limit.
pub const MAX_JSON_TEXT_CHARS: usize = 16 * 1024;

/// A JSON body, checked in one place for every handler: content type (415), syntax (400), text
/// that storage cannot hold or that is too long (422 naming the field: PostgreSQL refuses NUL in
/// text), and the shape of `T` (422 naming the field, via `serde_path_to_error`).
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(request: axum::extract::Request, state: &S) -> ApiResult<Self> {
        let is_json = request
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<mime::Mime>().ok())
            .is_some_and(|m| {
                m.type_() == mime::APPLICATION
                    && (m.subtype() == mime::JSON || m.suffix() == Some(mime::JSON))
            });
        if !is_json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "expected a JSON body (`Content-Type: application/json`)",
            ));
        }
        let bytes = axum::body::Bytes::from_request(request, state)
            .await
            .map_err(|e| {
                let code = if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    "payload_too_large"
                } else {
                    "invalid_body"
                };
                ApiError::new(e.status(), code, e.body_text())
            })?;
        let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::bad_request("invalid_json", format!("the body is not valid JSON: {e}"))
        })?;
        check_text(&value, &mut String::new())?;
        serde_path_to_error::deserialize(value)
            .map(ApiJson)
            .map_err(|e| {
                let path = e.path().to_string();
                let inner = e.into_inner();
                let detail = if path == "." {
                    inner.to_string()
                } else {
                    format!("`{path}`: {inner}")
                };
                ApiError::unprocessable("invalid_field", detail)
            })
    }
}

/// Refuses NUL and over-long strings anywhere in a JSON document, naming where.
fn check_text(value: &serde_json::Value, path: &mut String) -> ApiResult<()> {
    match value {
        serde_json::Value::String(text) => text_ok(text, || path_or_body(path)),
        serde_json::Value::Array(items) => {
            for (n, item) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{n}]"));
                check_text(item, path)?;
                path.truncate(len);
            }
            Ok(())
        }
        serde_json::Value::Object(fields) => {
            for (name, item) in fields {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(name);
                text_ok(name, || format!("the name of `{path}`"))?;
                check_text(item, path)?;
                path.truncate(len);
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

fn path_or_body(path: &str) -> String {
    if path.is_empty() {
        "the body".into()
    } else {
        format!("`{path}`")
    }
}

/// The text rule every stored string follows: no NUL, at most [`MAX_JSON_TEXT_CHARS`]. The
/// problem with `text`, if any, as the rest of a sentence about it.
fn text_problem(text: &str) -> Option<(&'static str, String)> {
    if text.contains('\0') {
        Some(("invalid_text", "contains a NUL character".into()))
    } else if text.len() > MAX_JSON_TEXT_CHARS && text.chars().count() > MAX_JSON_TEXT_CHARS {
        Some((
            "text_too_long",
            format!("is longer than {MAX_JSON_TEXT_CHARS} characters"),
        ))
    } else {
        None
    }
}

/// The text rule for a stored string: 422 naming the field.
pub fn text_ok(text: &str, field: impl FnOnce() -> String) -> ApiResult<()> {
    match text_problem(text) {
        Some((code, problem)) => Err(ApiError::unprocessable(
            code,
            format!("{} {problem}", field()),
        )),
        None => Ok(()),
    }
}

/// Query parameters: malformed ones are 400 (one rule for every list and search), text that
/// breaks the rule of JSON strings included (naming the parameter).
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> ApiResult<Self> {
        let query = parts.uri.query().unwrap_or("");
        for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
            // The text rule holds here too, but a bad query is the request's shape: 400.
            let problem = text_problem(&name)
                .map(|(_, p)| format!("a query parameter name {p}"))
                .or_else(|| {
                    text_problem(&value).map(|(_, p)| format!("query parameter `{name}` {p}"))
                });
            if let Some(detail) = problem {
                return Err(ApiError::bad_request("invalid_query", detail));
            }
        }
        serde_path_to_error::deserialize(serde_urlencoded::Deserializer::new(
            url::form_urlencoded::parse(query.as_bytes()),
        ))
        .map(ApiQuery)
        .map_err(|e| {
            let path = e.path().to_string();
            ApiError::bad_request(
                "invalid_query",
                format!("query parameter `{path}`: {}", e.into_inner()),
            )
        })
    }
}
