//! Developers as operators help them: lookup, free overrides, credit grants and corrections,
//! and lifting a manifest-assistant lock.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::types::Uuid;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::auth::OperatorAuth;
use crate::error::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult, ErrorBody};
use sigma_shared::domain::DeveloperId;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(find_developer))
        .routes(routes!(grant_free_override))
        .routes(routes!(grant_credits))
        .routes(routes!(unlock_manifest_assistant))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeveloperQuery {
    pub email: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeveloperView {
    pub id: String,
    pub email: String,
    pub credit_balance: i64,
    pub manifest_locked_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// Look a developer up by email.
#[utoipa::path(get, path = "/developers", tag = "operator", security(("operator_session" = [])), params(DeveloperQuery),
    responses((status = 200, body = DeveloperView), (status = 404, body = ErrorBody)))]
async fn find_developer(
    State(state): State<AppState>,
    _operator: OperatorAuth,
    ApiQuery(query): ApiQuery<DeveloperQuery>,
) -> ApiResult<Json<DeveloperView>> {
    let d = sqlx::query!(
        "select developer_id, email, credit_balance, manifest_locked_at, created_at from developer where email = lower($1)",
        query.email.trim()
    )
    .fetch_optional(&state.db)
    .await?
    .ok_or_else(|| ApiError::not_found("developer"))?;
    Ok(Json(DeveloperView {
        id: d.developer_id.to_string(),
        email: d.email,
        credit_balance: d.credit_balance,
        manifest_locked_at: d.manifest_locked_at,
        created_at: d.created_at,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Reason {
    /// Why, for the record; not all spaces.
    #[schema(min_length = 1, pattern = "^[^\\u0000]*[^\\s\\u0000][^\\u0000]*$")]
    pub reason: String,
}

/// Grant a developer one free audit (the treasury pays).
#[utoipa::path(post, path = "/developers/{id}/free-overrides", tag = "operator", security(("operator_session" = [])),
    params(("id" = Uuid, Path)), request_body = Reason,
    responses((status = 201, description = "Granted"), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn grant_free_override(
    State(state): State<AppState>,
    operator: OperatorAuth,
    ApiPath(id): ApiPath<DeveloperId>,
    ApiJson(body): ApiJson<Reason>,
) -> ApiResult<StatusCode> {
    let id = id.uuid();
    if body.reason.trim().is_empty() {
        return Err(ApiError::unprocessable("reason_required", "say why"));
    }
    let done = sqlx::query!(
        r#"insert into free_override (override_id, developer_id, reason, created_by)
           select $1, developer_id, $3, $4 from developer where developer_id = $2"#,
        Uuid::new_v4(),
        id,
        body.reason.trim(),
        operator.operator_id
    )
    .execute(&state.db)
    .await?;
    if done.rows_affected() == 0 {
        return Err(ApiError::not_found("developer"));
    }
    Ok(StatusCode::CREATED)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreditGrant {
    /// Positive to grant, negative to correct an earlier grant (never below zero); not 0.
    #[schema(minimum = -100000000, maximum = 100000000)]
    pub credits: i64,
    #[schema(min_length = 1, pattern = "^[^\\u0000]*[^\\s\\u0000][^\\u0000]*$")]
    pub reason: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GrantResult {
    pub entry_id: i64,
    pub balance: i64,
}

/// Grant (or correct) a developer's credits. Needs an `Idempotency-Key`: a retried grant is
/// booked once.
#[utoipa::path(post, path = "/developers/{id}/credits", tag = "operator", security(("operator_session" = [])),
    params(("id" = Uuid, Path), ("Idempotency-Key" = String, Header, description = "Books the grant once")),
    request_body = CreditGrant,
    responses((status = 201, body = GrantResult), (status = 200, description = "Already booked under this key", body = GrantResult),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 422, description = "Zero, or a correction below a zero balance", body = ErrorBody)))]
async fn grant_credits(
    State(state): State<AppState>,
    operator: OperatorAuth,
    ApiPath(id): ApiPath<DeveloperId>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CreditGrant>,
) -> ApiResult<Response> {
    let id = id.uuid();
    let key = crate::core::idempotency::IdempotencyKey::from_headers(&headers)?
        .0
        .ok_or_else(|| {
            ApiError::bad_request("idempotency_key_required", "send an Idempotency-Key header")
        })?;
    if body.credits == 0 || body.credits.abs() > 100_000_000 || body.reason.trim().is_empty() {
        return Err(ApiError::unprocessable(
            "invalid_grant",
            "credits is non-zero (at most 100,000,000 either way) and a reason is given",
        ));
    }
    let kind = if body.credits > 0 {
        "GRANT"
    } else {
        "ADJUSTMENT"
    };
    let reference = format!("op:{}:{key}", operator.operator_id);
    if let Some(booked) = booked_grant(&state, id, &reference, body.credits).await? {
        return Ok(Json(booked).into_response());
    }
    let mut tx = state.db.begin().await?;
    let balance = sqlx::query_scalar!(
        r#"update developer set credit_balance = credit_balance + $2
           where developer_id = $1 and credit_balance + $2 >= 0 returning credit_balance"#,
        id,
        body.credits
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(balance) = balance else {
        // A concurrent replay of a correction may find the first one already applied.
        tx.rollback().await?;
        if let Some(booked) = booked_grant(&state, id, &reference, body.credits).await? {
            return Ok(Json(booked).into_response());
        }
        let exists = sqlx::query_scalar!(
            r#"select exists(select 1 from developer where developer_id = $1) as "e!""#,
            id
        )
        .fetch_one(&state.db)
        .await?;
        return Err(if exists {
            ApiError::unprocessable(
                "balance_would_be_negative",
                "the correction is larger than the balance",
            )
        } else {
            ApiError::not_found("developer")
        });
    };
    let entry_id = sqlx::query_scalar!(
        r#"insert into credit_ledger (developer_id, kind, amount_credits, balance_after, reference, note, created_by)
           values ($1, $2, $3, $4, $5, $6, $7)
           on conflict (developer_id, kind, reference) do nothing returning entry_id"#,
        id,
        kind,
        body.credits,
        balance,
        reference,
        body.reason.trim(),
        operator.operator_id
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(entry_id) = entry_id else {
        // A concurrent retry booked it first: undo this one and answer as that one did.
        tx.rollback().await?;
        let booked = booked_grant(&state, id, &reference, body.credits)
            .await?
            .ok_or_else(|| anyhow::anyhow!("grant {reference} vanished"))?;
        return Ok(Json(booked).into_response());
    };
    tx.commit().await?;
    tracing::info!(operator = %operator.name, developer = %id, credits = body.credits, "credits granted");
    Ok((StatusCode::CREATED, Json(GrantResult { entry_id, balance })).into_response())
}

/// The grant booked under this key, if any; the same key for another amount is refused.
async fn booked_grant(
    state: &AppState,
    developer: Uuid,
    reference: &str,
    credits: i64,
) -> ApiResult<Option<GrantResult>> {
    let booked = sqlx::query!(
        r#"select entry_id, balance_after, amount_credits from credit_ledger
           where developer_id = $1 and reference = $2 and kind in ('GRANT', 'ADJUSTMENT')"#,
        developer,
        reference
    )
    .fetch_optional(&state.db)
    .await?;
    match booked {
        Some(b) if b.amount_credits == credits => Ok(Some(GrantResult {
            entry_id: b.entry_id,
            balance: b.balance_after,
        })),
        Some(_) => Err(ApiError::conflict(
            "idempotency_key_reused",
            "this Idempotency-Key already booked a different amount",
        )),
        None => Ok(None),
    }
}

/// Lift the manifest-assistant lock of a developer (after a support conversation).
#[utoipa::path(delete, path = "/developers/{id}/manifest-lock", tag = "operator", security(("operator_session" = [])),
    params(("id" = Uuid, Path)), responses((status = 204, description = "Unlocked"), (status = 404, body = ErrorBody)))]
async fn unlock_manifest_assistant(
    State(state): State<AppState>,
    operator: OperatorAuth,
    ApiPath(id): ApiPath<DeveloperId>,
) -> ApiResult<StatusCode> {
    let id = id.uuid();
    // Strikes before the lift no longer count.
    let done = sqlx::query!(
        "update developer set manifest_locked_at = null, manifest_unlocked_at = now() where developer_id = $1",
        id
    )
    .execute(&state.db)
    .await?;
    if done.rows_affected() == 0 {
        return Err(ApiError::not_found("developer"));
    }
    tracing::info!(operator = %operator.name, developer = %id, "manifest assistant unlocked");
    Ok(StatusCode::NO_CONTENT)
}
