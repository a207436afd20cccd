//! Support on the operator side: the queue of tickets, and replies that are emailed to the
//! developer by a durable workflow (`support-email:{message_id}`).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use sigma_activities::ops::support_email::SupportEmailInput;
use sigma_shared::domain::{TicketId, TicketStatus};
use sigma_workflows::SupportEmailWorkflow;
use sqlx::types::Uuid;
use temporalio_client::WorkflowStartOptions;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::auth::OperatorAuth;
use crate::core::tickets::{self, TicketPage, TicketRow, TicketView, message_body, ticket_view};
use crate::error::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult, ErrorBody};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_tickets))
        .routes(routes!(get_ticket))
        .routes(routes!(reply))
        .routes(routes!(set_status))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TicketQuery {
    /// OPEN when absent.
    #[param(inline)]
    pub status: Option<TicketStatus>,
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

/// Tickets in a status, oldest first (the queue order).
#[utoipa::path(get, path = "/support/tickets", tag = "operator", operation_id = "operator_list_tickets", security(("operator_session" = [])), params(TicketQuery),
    responses((status = 200, body = TicketPage), (status = 400, body = ErrorBody)))]
async fn list_tickets(
    State(state): State<AppState>,
    _operator: OperatorAuth,
    ApiQuery(query): ApiQuery<TicketQuery>,
) -> ApiResult<Json<TicketPage>> {
    let status = query.status.unwrap_or(TicketStatus::Open);
    let page = crate::paging::ListParams {
        limit: query.limit,
        cursor: query.cursor,
    }
    .page()?;
    let mut rows = sqlx::query!(
        r#"select ticket_id::text as "id!", subject, status, created_at, updated_at from support_ticket
           where status = $1 and ($2::timestamptz is null or (created_at, ticket_id) > ($2, $3))
           order by created_at, ticket_id limit $4"#,
        status.as_str(),
        page.after_time,
        page.after_uuid()?.unwrap_or_default(),
        page.limit + 1
    )
    .fetch_all(&state.db)
    .await?;
    let next_cursor = page.finish(&mut rows, |t| (t.created_at, t.id.clone()));
    let items = rows
        .into_iter()
        .map(|t| tickets::summary(t.id, t.subject, &t.status, t.created_at, t.updated_at))
        .collect::<ApiResult<_>>()?;
    Ok(Json(TicketPage { items, next_cursor }))
}

#[utoipa::path(get, path = "/support/tickets/{id}", tag = "operator", operation_id = "operator_get_ticket", security(("operator_session" = [])),
    params(("id" = Uuid, Path)), responses((status = 200, body = TicketView), (status = 404, body = ErrorBody)))]
async fn get_ticket(
    State(state): State<AppState>,
    _operator: OperatorAuth,
    ApiPath(id): ApiPath<TicketId>,
) -> ApiResult<Json<TicketView>> {
    let ticket = TicketRow::load(&state, id, None)
        .await?
        .ok_or_else(|| ApiError::not_found("ticket"))?;
    Ok(Json(tickets::view_of(&state, ticket).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Reply {
    /// 1 to 10,000 characters, not all spaces.
    #[schema(
        min_length = 1,
        max_length = 10000,
        pattern = "^[^\\u0000]*[^\\s\\u0000][^\\u0000]*$"
    )]
    pub body: String,
    /// The ticket's status after the reply (default PENDING: waiting on the developer).
    pub status: Option<TicketStatus>,
}

/// Reply to a ticket; the reply is emailed to the developer (retried until SMTP takes it; the
/// message shows `emailedAt` or the last `emailError`).
#[utoipa::path(post, path = "/support/tickets/{id}/messages", tag = "operator", security(("operator_session" = [])),
    params(("id" = Uuid, Path)), request_body = Reply,
    responses((status = 201, body = TicketView), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 503, description = "Recorded, but the email could not be queued: the workflow engine is unreachable", body = ErrorBody)))]
#[tracing::instrument(name = "support_reply", skip_all, fields(ticket_id = %id))]
async fn reply(
    State(state): State<AppState>,
    operator: OperatorAuth,
    ApiPath(id): ApiPath<TicketId>,
    ApiJson(body): ApiJson<Reply>,
) -> ApiResult<Response> {
    let id = id.uuid();
    let text = message_body(&body.body)?;
    let status = body.status.unwrap_or(TicketStatus::Pending);
    let message_id = Uuid::new_v4();
    let mut tx = state.db.begin().await?;
    let updated = sqlx::query!(
        "update support_ticket set status = $2 where ticket_id = $1",
        id,
        status.as_str()
    )
    .execute(&mut *tx)
    .await?;
    if updated.rows_affected() == 0 {
        return Err(ApiError::not_found("ticket"));
    }
    sqlx::query!(
        "insert into support_message (message_id, ticket_id, author, operator_id, body) values ($1, $2, 'OPERATOR', $3, $4)",
        message_id,
        id,
        operator.operator_id,
        text
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    let workflow_id = format!("support-email:{message_id}");
    let options = WorkflowStartOptions::new(state.workflow_queue(), &workflow_id)
        .static_summary(format!("support reply on ticket {id}"))
        .build();
    if let Err(e) = state
        .temporal
        .start_workflow(
            SupportEmailWorkflow::run,
            SupportEmailInput {
                message_id: message_id.to_string(),
            },
            options,
        )
        .await
    {
        tracing::error!(error = %e, "cannot queue the support email");
        sqlx::query!(
            "update support_message set email_error = 'not queued: the workflow engine was unreachable' where message_id = $1",
            message_id
        )
        .execute(&state.db)
        .await?;
        return Err(ApiError::unavailable(
            "workflow_engine_unavailable",
            "the reply is recorded but its email could not be queued; the message shows it",
        ));
    }
    let view = ticket_view(&state, id).await?;
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StatusChange {
    pub status: TicketStatus,
}

/// Move a ticket (resolve or close it without a reply).
#[utoipa::path(put, path = "/support/tickets/{id}/status", tag = "operator", security(("operator_session" = [])),
    params(("id" = Uuid, Path)), request_body = StatusChange,
    responses((status = 200, body = TicketView), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn set_status(
    State(state): State<AppState>,
    _operator: OperatorAuth,
    ApiPath(id): ApiPath<TicketId>,
    ApiJson(body): ApiJson<StatusChange>,
) -> ApiResult<Json<TicketView>> {
    let id = id.uuid();
    let updated = sqlx::query!(
        "update support_ticket set status = $2 where ticket_id = $1",
        id,
        body.status.as_str()
    )
    .execute(&state.db)
    .await?;
    if updated.rows_affected() == 0 {
        return Err(ApiError::not_found("ticket"));
    }
    Ok(Json(ticket_view(&state, id).await?))
}
