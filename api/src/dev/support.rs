//! Support tickets: a developer opens one and writes to it; operators answer on their plane and
//! each answer is emailed to the developer.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use sigma_shared::domain::{SubmissionId, TicketId, TicketStatus};
use sqlx::types::Uuid;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::owned::{Owned, OwnedResource};
use super::submission_views::SubmissionRow;
use crate::AppState;
use crate::auth::DeveloperAuth;
use crate::core::tickets::{
    self, TicketPage, TicketRow, TicketView, message_body, ticket_view, view_of,
};
use crate::error::{ApiError, ApiJson, ApiQuery, ApiResult, ErrorBody, stored};
use crate::paging::ListParams;

/// One of the developer's support tickets, loaded and authorised from the path.
pub type OwnedTicket = Owned<TicketRow>;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(open_ticket, list_tickets))
        .routes(routes!(get_ticket))
        .routes(routes!(add_message))
}

const MAX_SUBJECT: usize = 200;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewTicket {
    /// 1 to 200 characters, not all spaces.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = "^[^\\u0000]*[^\\s\\u0000][^\\u0000]*$"
    )]
    pub subject: String,
    /// 1 to 10,000 characters, not all spaces.
    #[schema(
        min_length = 1,
        max_length = 10000,
        pattern = "^[^\\u0000]*[^\\s\\u0000][^\\u0000]*$"
    )]
    pub body: String,
    /// The submission the ticket is about, if any.
    pub submission_id: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewMessage {
    /// 1 to 10,000 characters, not all spaces.
    #[schema(
        min_length = 1,
        max_length = 10000,
        pattern = "^[^\\u0000]*[^\\s\\u0000][^\\u0000]*$"
    )]
    pub body: String,
}

/// The developer's own ticket.
impl OwnedResource for TicketRow {
    type Id = TicketId;
    const NAME: &'static str = "ticket";

    async fn load(state: &AppState, developer: Uuid, id: TicketId) -> ApiResult<Option<Self>> {
        TicketRow::load(state, id, Some(developer)).await
    }
}

/// Open a support ticket.
#[utoipa::path(post, path = "/support/tickets", tag = "developer", security(("developer_session" = [])),
    request_body = NewTicket,
    responses((status = 201, body = TicketView), (status = 404, description = "No such submission of yours", body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn open_ticket(
    State(state): State<AppState>,
    developer: DeveloperAuth,
    ApiJson(body): ApiJson<NewTicket>,
) -> ApiResult<Response> {
    let subject = body.subject.trim();
    if subject.is_empty() || subject.chars().count() > MAX_SUBJECT {
        return Err(ApiError::unprocessable(
            "invalid_subject",
            format!("a subject is 1 to {MAX_SUBJECT} characters"),
        ));
    }
    let text = message_body(&body.body)?;
    if let Some(submission) = &body.submission_id {
        // The ticket may name only one of the developer's own submissions.
        let id = SubmissionId::parse(submission).map_err(|_| ApiError::not_found("submission"))?;
        SubmissionRow::load(&state, developer.developer_id, id)
            .await?
            .ok_or_else(|| ApiError::not_found("submission"))?;
    }
    let ticket_id = Uuid::new_v4();
    let mut tx = state.db.begin().await?;
    sqlx::query!(
        "insert into support_ticket (ticket_id, developer_id, subject, submission_id) values ($1, $2, $3, $4)",
        ticket_id,
        developer.developer_id,
        subject,
        body.submission_id
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        "insert into support_message (message_id, ticket_id, author, body) values ($1, $2, 'DEVELOPER', $3)",
        Uuid::new_v4(),
        ticket_id,
        text
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    let view = ticket_view(&state, ticket_id).await?;
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

/// The developer's tickets, most recently active first.
#[utoipa::path(get, path = "/support/tickets", tag = "developer", security(("developer_session" = [])), params(ListParams),
    responses((status = 200, body = TicketPage), (status = 400, body = ErrorBody)))]
async fn list_tickets(
    State(state): State<AppState>,
    developer: DeveloperAuth,
    ApiQuery(params): ApiQuery<ListParams>,
) -> ApiResult<Json<TicketPage>> {
    let page = params.page()?;
    let mut rows = sqlx::query!(
        r#"select ticket_id::text as "id!", subject, status, created_at, updated_at from support_ticket
           where developer_id = $1 and ($2::timestamptz is null or (created_at, ticket_id) < ($2, $3))
           order by created_at desc, ticket_id desc limit $4"#,
        developer.developer_id,
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

#[utoipa::path(get, path = "/support/tickets/{id}", tag = "developer", security(("developer_session" = [])),
    params(("id" = Uuid, Path)), responses((status = 200, body = TicketView), (status = 404, body = ErrorBody)))]
async fn get_ticket(
    State(state): State<AppState>,
    OwnedTicket { item: ticket, .. }: OwnedTicket,
) -> ApiResult<Json<TicketView>> {
    Ok(Json(view_of(&state, ticket).await?))
}

/// Write to a ticket; a resolved or pending ticket opens again.
#[utoipa::path(post, path = "/support/tickets/{id}/messages", tag = "developer", security(("developer_session" = [])),
    params(("id" = Uuid, Path)), request_body = NewMessage,
    responses((status = 201, body = TicketView), (status = 404, body = ErrorBody), (status = 409, description = "The ticket is closed", body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn add_message(
    State(state): State<AppState>,
    OwnedTicket { item: ticket, .. }: OwnedTicket,
    ApiJson(body): ApiJson<NewMessage>,
) -> ApiResult<Response> {
    let id = ticket.ticket_id;
    let text = message_body(&body.body)?;
    let mut tx = state.db.begin().await?;
    // Read again under the lock: an operator may be closing it right now.
    let status = sqlx::query_scalar!(
        "select status from support_ticket where ticket_id = $1 for update",
        id
    )
    .fetch_one(&mut *tx)
    .await?;
    if stored::<TicketStatus>(&status)? == TicketStatus::Closed {
        return Err(ApiError::conflict(
            "ticket_closed",
            "this ticket is closed; open a new one",
        ));
    }
    sqlx::query!(
        "insert into support_message (message_id, ticket_id, author, body) values ($1, $2, 'DEVELOPER', $3)",
        Uuid::new_v4(),
        id,
        text
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        "update support_ticket set status = 'OPEN' where ticket_id = $1",
        id
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    let view = ticket_view(&state, id).await?;
    Ok((StatusCode::CREATED, Json(view)).into_response())
}
