//! Reading a submission's upload: a multipart form or a raw archive body, its metadata, and a
//! public git repository pinned to a ref.

use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Request};
use axum::http::{StatusCode, header};
use serde::{Deserialize, Serialize};
use sigma_activities::types::GitSource;
use sigma_scanner::unpack::{self, UnpackError};
use sigma_shared::domain::{Category, GitRef, GitRepository};
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::error::{ApiError, ApiResult};

/// Optional descriptive metadata sent with a bundle.
#[derive(Clone, Debug, Default, Deserialize, Serialize, ToSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SubmissionMetadata {
    #[schema(max_length = 4096)]
    pub name: Option<String>,
    #[schema(max_length = 4096)]
    pub version: Option<String>,
    /// Public repository the bundle was taken from, if any: an http(s) URL.
    #[schema(max_length = 4096, pattern = "^https?://[^\\u0000]*$")]
    pub source_url: Option<String>,
    #[schema(max_length = 4096)]
    pub source_ref: Option<String>,
    /// Advisory note for the reviewers; treated as a hypothesis, never as fact.
    #[schema(max_length = 4096)]
    pub note: Option<String>,
}

/// Multipart form of a submission (the bundle may also be sent as the raw body).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct SubmissionUpload {
    category: Category,
    /// The skill bundle: a zip, tar or tar.gz archive.
    #[schema(value_type = String, format = Binary)]
    bundle: Vec<u8>,
    /// JSON-encoded `SubmissionMetadata`.
    metadata: Option<String>,
}

/// Query parameters of a raw-body upload.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RawUploadParams {
    /// Submission category; required for a raw-body upload.
    #[param(inline)]
    pub category: Option<Category>,
    pub name: Option<String>,
    pub version: Option<String>,
    pub note: Option<String>,
}

pub(crate) struct Intake {
    pub category: Category,
    pub bundle: Bytes,
    pub metadata: SubmissionMetadata,
}

const MAX_TEXT_FIELD: usize = 4096;

/// Checks that an uploaded archive can be read, and names its format.
pub(crate) async fn readable_bundle(bundle: &Bytes) -> ApiResult<&'static str> {
    // Inflating an archive is CPU work: keep it off the async workers.
    let bundle = bundle.clone();
    let readable =
        tokio::task::spawn_blocking(move || unpack::check_readable(&bundle, INTAKE_INFLATE_CAP))
            .await
            .map_err(anyhow::Error::from)?;
    let format = readable.map_err(|e| match e {
        // The media type was fine; the bytes are not an archive we read.
        UnpackError::UnknownFormat => ApiError::unprocessable(
            "unsupported_bundle",
            "the bundle must be a zip or tar.gz archive",
        ),
        other => ApiError::unprocessable("corrupt_archive", other.to_string()),
    })?;
    Ok(format.as_str())
}

/// `owner/name` and a ref, by the one rule of `sigma_shared::domain::{GitRepository, GitRef}`.
pub(crate) fn validate_git(repository: &str, reference: &str) -> ApiResult<GitSource> {
    let repository = GitRepository::parse(repository)
        .map_err(|e| ApiError::unprocessable("invalid_repository", e))?;
    let reference =
        GitRef::parse(reference).map_err(|e| ApiError::unprocessable("invalid_ref", e))?;
    Ok(GitSource {
        repository: repository.to_string(),
        reference: reference.to_string(),
    })
}

/// Decompressed bytes read at intake to prove an archive is readable; the sandbox enforces the
/// real limits, so this only bounds the work a hostile archive can cause here.
const INTAKE_INFLATE_CAP: u64 = 16 * 1024 * 1024;

pub(crate) async fn read_intake(
    state: &AppState,
    params: RawUploadParams,
    request: Request,
) -> ApiResult<Intake> {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if content_type.starts_with("multipart/form-data") {
        let multipart = Multipart::from_request(request, state)
            .await
            .map_err(|e| ApiError::bad_request("invalid_multipart", e.body_text()))?;
        return read_multipart(multipart).await;
    }
    let category = params.category.ok_or_else(|| {
        ApiError::unprocessable("missing_category", "a raw-body upload needs ?category=")
    })?;
    let bundle = Bytes::from_request(request, state).await.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            too_large(state)
        } else {
            ApiError::bad_request("invalid_body", e.body_text())
        }
    })?;
    let metadata = SubmissionMetadata {
        name: params.name,
        version: params.version,
        note: params.note,
        ..Default::default()
    };
    validate_metadata(&metadata)?;
    non_empty(Intake {
        category,
        bundle,
        metadata,
    })
}

async fn read_multipart(mut multipart: Multipart) -> ApiResult<Intake> {
    let mut category = None;
    let mut bundle = None;
    let mut metadata = SubmissionMetadata::default();
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                return Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    e.body_text(),
                ));
            }
            Err(e) => return Err(ApiError::bad_request("invalid_multipart", e.body_text())),
        };
        let name = field.name().unwrap_or("").to_owned();
        let data = field.bytes().await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    e.body_text(),
                )
            } else {
                ApiError::bad_request("invalid_multipart", e.body_text())
            }
        })?;
        match name.as_str() {
            "bundle" => bundle = Some(data),
            "category" => category = Some(text_field("category", &data)?),
            "metadata" => {
                metadata = serde_json::from_slice(&data).map_err(|e| {
                    ApiError::unprocessable(
                        "invalid_metadata",
                        format!("metadata is not valid: {e}"),
                    )
                })?;
            }
            other => {
                return Err(ApiError::unprocessable(
                    "unknown_field",
                    format!("unknown form field `{other}`"),
                ));
            }
        }
    }
    let category = category.ok_or_else(|| {
        ApiError::unprocessable("missing_category", "the form has no `category` field")
    })?;
    let category = category
        .parse()
        .map_err(|e: String| ApiError::unprocessable("unknown_category", e))?;
    let bundle = bundle.ok_or_else(|| {
        ApiError::unprocessable("missing_bundle", "the form has no `bundle` file")
    })?;
    validate_metadata(&metadata)?;
    non_empty(Intake {
        category,
        bundle,
        metadata,
    })
}

fn text_field(name: &str, data: &[u8]) -> ApiResult<String> {
    if data.len() > MAX_TEXT_FIELD {
        return Err(ApiError::unprocessable(
            "field_too_long",
            format!("`{name}` is too long"),
        ));
    }
    let text = String::from_utf8(data.to_vec())
        .map_err(|_| ApiError::unprocessable("invalid_field", format!("`{name}` is not UTF-8")))?;
    crate::error::text_ok(&text, || format!("`{name}`"))?;
    Ok(text)
}

pub(crate) fn validate_metadata(m: &SubmissionMetadata) -> ApiResult<()> {
    for (field, value) in [
        ("name", &m.name),
        ("version", &m.version),
        ("sourceUrl", &m.source_url),
        ("sourceRef", &m.source_ref),
        ("note", &m.note),
    ] {
        if let Some(v) = value {
            crate::error::text_ok(v, || format!("metadata.{field}"))?;
        }
        if value
            .as_ref()
            .is_some_and(|v| v.chars().count() > MAX_TEXT_FIELD)
        {
            return Err(ApiError::unprocessable(
                "field_too_long",
                format!("metadata.{field} exceeds {MAX_TEXT_FIELD} characters"),
            ));
        }
    }
    if let Some(url) = &m.source_url
        && !(url.starts_with("https://") || url.starts_with("http://"))
    {
        return Err(ApiError::unprocessable(
            "invalid_source_url",
            "metadata.sourceUrl must be an http(s) URL",
        ));
    }
    Ok(())
}

fn non_empty(intake: Intake) -> ApiResult<Intake> {
    if intake.bundle.is_empty() {
        return Err(ApiError::unprocessable(
            "empty_bundle",
            "the bundle is empty",
        ));
    }
    Ok(intake)
}

fn too_large(state: &AppState) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!(
            "the body exceeds {} bytes",
            state.settings.api.max_body_bytes
        ),
    )
}
