//! Public plane: certificate verification. No authentication.

use axum::Json;
use axum::extract::{Path, State};
use serde_json::{Value, json};
use sigma_shared::domain::SubmissionId;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::error::{ApiError, ApiResult, ErrorBody};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(verify_certificate))
        .routes(routes!(get_certificate))
}

struct CertificateRow {
    certificate_id: String,
    status: String,
    sealed: Value,
    payload_hash: String,
    hash_algorithm: String,
    skill_md_sha256: Option<String>,
    bundle_digest: String,
    issued_at: chrono::DateTime<chrono::Utc>,
    view_count: i64,
}

async fn load(state: &AppState, id: &str, count_view: bool) -> ApiResult<CertificateRow> {
    let id = SubmissionId::parse(id).map_err(|_| ApiError::not_found("certificate"))?;
    let row = if count_view {
        sqlx::query_as!(
            CertificateRow,
            r#"update certificate set view_count = view_count + 1 where certificate_id = $1
               returning certificate_id, status, sealed, payload_hash, hash_algorithm, skill_md_sha256, bundle_digest, issued_at, view_count"#,
            id.as_str()
        )
        .fetch_optional(&state.db)
        .await?
    } else {
        sqlx::query_as!(
            CertificateRow,
            r#"select certificate_id, status, sealed, payload_hash, hash_algorithm, skill_md_sha256, bundle_digest, issued_at, view_count
               from certificate where certificate_id = $1"#,
            id.as_str()
        )
        .fetch_optional(&state.db)
        .await?
    };
    row.ok_or_else(|| ApiError::not_found("certificate"))
}

/// Verify a certificate: `valid` is true only for an APPROVED certificate. Returns the
/// verification summary together with every sealed certificate field. Counts a view.
#[utoipa::path(get, path = "/certificates/{id}/verify", tag = "public",
    params(("id" = String, Path, description = "Certificate id (the submission id)")),
    responses((status = 200, description = "Verification summary and sealed certificate", body = Object), (status = 404, body = ErrorBody)))]
async fn verify_certificate(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let c = load(&state, &id, true).await?;
    let sealed = &c.sealed;
    let valid = c.status == "APPROVED";
    let mut body = json!({
        "valid": valid,
        "status": c.status,
        "summary": if valid {
            format!("{} is certified: approved by the SIGMA council with no open flags.", sealed["skillName"].as_str().unwrap_or("this skill"))
        } else {
            format!("certificate status is {}", c.status)
        },
        "certificateId": c.certificate_id,
        "activeFlagCount": 0,
        "securityLevel": sealed["review"]["securityLevel"],
        "sandboxRiskLevel": sealed["review"]["sandboxRiskLevel"],
        "retainedWarnings": sealed["review"]["retainedWarnings"],
        "skillName": sealed["skillName"],
        "skillVersion": sealed["skillVersion"],
        "certificateIssuedAt": c.issued_at,
        "roundType": sealed["roundType"],
        "payloadHash": c.payload_hash,
        "hashAlgorithm": c.hash_algorithm,
        "skillMdSha256": c.skill_md_sha256,
        "bundleDigest": c.bundle_digest,
        "views": c.view_count,
    });
    // The union with the sealed snapshot: every sealed field the summary does not already carry.
    if let (Some(out), Some(fields)) = (body.as_object_mut(), sealed.as_object()) {
        for (key, value) in fields {
            out.entry(key.clone()).or_insert_with(|| value.clone());
        }
    }
    Ok(Json(body))
}

/// The full certificate record: the sealed snapshot and its hash.
#[utoipa::path(get, path = "/certificates/{id}", tag = "public",
    params(("id" = String, Path, description = "Certificate id")),
    responses((status = 200, description = "Certificate record", body = Object), (status = 404, body = ErrorBody)))]
async fn get_certificate(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let c = load(&state, &id, false).await?;
    Ok(Json(json!({
        "certificateId": c.certificate_id,
        "status": c.status,
        "payloadHash": c.payload_hash,
        "hashAlgorithm": c.hash_algorithm,
        "issuedAt": c.issued_at,
        "views": c.view_count,
        "sealed": c.sealed,
    })))
}
