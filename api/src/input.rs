//! Request input, checked in one place for every handler: JSON bodies (`ApiJson`), query strings
//! (`ApiQuery`) and path parameters (`ApiPath`), with the text rule every stored string follows.
//! Every refusal is an [`ApiError`], so clients always get `{code, detail}`.

use axum::extract::{FromRequest, FromRequestParts};
use axum::http::StatusCode;

use crate::error::{ApiError, ApiResult};
use sigma_shared::domain as d;

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
        let mut value = value;
        integral_numbers(&mut value);
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

/// `2.0` is the integer 2 to JSON Schema (and to JavaScript clients): such numbers are written as
/// integers before `T` reads them, so an integer field accepts what its schema accepts.
fn integral_numbers(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Number(n) => {
            if let Some(f) = n.as_f64()
                && n.is_f64()
                && f.fract() == 0.0
                && f.abs() <= 9_007_199_254_740_992.0
            {
                *value = serde_json::Value::from(f as i64);
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(integral_numbers),
        serde_json::Value::Object(fields) => fields.values_mut().for_each(integral_numbers),
        _ => {}
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

/// A path segment parsed into its type. Ids of resources answer a malformed id as they answer
/// a missing one (404 `not_found`: a guess learns nothing); other parameters say what is wrong.
pub trait PathParam: Sized {
    fn from_path(raw: &str) -> ApiResult<Self>;
}

/// The route's one path parameter, typed: `ApiPath<DraftId>`. Unlike axum's `Path`, every
/// refusal is `{code, detail}`.
pub struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    S: Send + Sync,
    T: PathParam,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> ApiResult<Self> {
        let axum::extract::Path(raw) =
            axum::extract::Path::<String>::from_request_parts(parts, state)
                .await
                .map_err(|e| ApiError::bad_request("invalid_path", e.body_text()))?;
        T::from_path(&raw).map(ApiPath)
    }
}

impl PathParam for String {
    fn from_path(raw: &str) -> ApiResult<Self> {
        text_ok(raw, || "the path".into())?;
        Ok(raw.to_owned())
    }
}

macro_rules! ids_in_paths {
    ($($ty:ty => $what:literal),+ $(,)?) => {$(
        impl PathParam for $ty {
            fn from_path(raw: &str) -> ApiResult<Self> {
                raw.parse().map_err(|_: String| ApiError::not_found($what))
            }
        }
    )+};
}

ids_in_paths! {
    d::DraftId => "draft",
    d::PaymentIntentId => "payment intent",
    d::TicketId => "ticket",
    d::FlagId => "flag",
    d::RuleId => "rule",
    d::CampaignId => "campaign",
    d::DeveloperId => "developer",
    d::DisputeId => "dispute",
    d::SiteId => "site",
    sigma_activities::intake::checkout::PaymentMethod => "payment method",
}

impl PathParam for d::SubmissionId {
    fn from_path(raw: &str) -> ApiResult<Self> {
        Self::parse(raw).map_err(|_| ApiError::not_found("submission"))
    }
}

impl PathParam for d::CertificateId {
    fn from_path(raw: &str) -> ApiResult<Self> {
        Self::parse(raw).map_err(|_| ApiError::not_found("certificate"))
    }
}

/// A category names a catalog entry rather than a stored row: an unknown one is 422.
impl PathParam for d::Category {
    fn from_path(raw: &str) -> ApiResult<Self> {
        raw.parse()
            .map_err(|e: String| ApiError::unprocessable("unknown_category", e))
    }
}

/// A required free-text field, trimmed: 1 to `max` characters, or 422 `invalid_{field}`.
pub fn required_text<'a>(field: &'static str, text: &'a str, max: usize) -> ApiResult<&'a str> {
    let trimmed = text.trim();
    if trimmed.is_empty() || trimmed.chars().count() > max {
        return Err(ApiError::unprocessable(
            match field {
                "note" => "invalid_note",
                "reason" => "invalid_reason",
                _ => "invalid_text",
            },
            format!("`{field}` is 1–{max} characters saying why"),
        ));
    }
    Ok(trimmed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integral_floats_read_as_integers_and_fractions_stay() {
        let mut value = serde_json::json!({"credits": 695465.0, "ratio": 0.5, "list": [2.0, 3]});
        integral_numbers(&mut value);
        assert_eq!(value["credits"], serde_json::json!(695465));
        assert!(value["credits"].is_i64());
        assert_eq!(value["ratio"], serde_json::json!(0.5));
        assert!(value["list"][0].is_i64());
    }

    #[test]
    fn the_text_rule_counts_characters() {
        let wide = "é".repeat(MAX_JSON_TEXT_CHARS);
        assert!(
            text_ok(&wide, || "`x`".into()).is_ok(),
            "within the limit in characters"
        );
        let over = "a".repeat(MAX_JSON_TEXT_CHARS + 1);
        assert!(text_ok(&over, || "`x`".into()).is_err());
        assert!(text_ok("a\0b", || "`x`".into()).is_err());
    }
}
