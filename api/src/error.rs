//! The one API error type. Clients get a stable `{code, detail}` body; internal causes are logged
//! inside the request span and never sent.

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
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

/// `Json` whose rejections use our `{code, detail}` body.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

/// `Query` whose rejections use our `{code, detail}` body.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let status = rejection.status();
        let code = if status == StatusCode::UNSUPPORTED_MEDIA_TYPE {
            "unsupported_media_type"
        } else {
            "invalid_json"
        };
        Self::new(status, code, rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::unprocessable("invalid_query", rejection.body_text())
    }
}
