//! Support tickets as both sides see them: the developer who opened one and the operators who
//! answer it read the same views.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sigma_shared::domain::{MessageAuthor, TicketId, TicketStatus};
use sqlx::types::Uuid;
use utoipa::ToSchema;

use crate::AppState;
use crate::error::{ApiError, ApiResult, stored};

/// Longest support message, in characters.
pub const MAX_BODY: usize = 10_000;

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessageView {
    pub id: String,
    pub author: MessageAuthor,
    pub body: String,
    /// For operator replies: when the email went out, or why it has not yet.
    pub emailed_at: Option<DateTime<Utc>>,
    pub email_error: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TicketView {
    pub id: String,
    pub subject: String,
    pub status: TicketStatus,
    pub submission_id: Option<String>,
    pub developer_email: String,
    pub messages: Vec<MessageView>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TicketSummary {
    pub id: String,
    pub subject: String,
    pub status: TicketStatus,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TicketPage {
    pub items: Vec<TicketSummary>,
    pub next_cursor: Option<String>,
}

pub fn message_body(raw: &str) -> ApiResult<String> {
    let body = raw.trim();
    if body.is_empty() || body.chars().count() > MAX_BODY {
        return Err(ApiError::unprocessable(
            "invalid_body",
            format!("a message is 1 to {MAX_BODY} characters"),
        ));
    }
    Ok(body.to_owned())
}

/// A ticket without its messages, as stored.
pub struct TicketRow {
    pub ticket_id: Uuid,
    pub subject: String,
    pub status: String,
    pub submission_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub email: String,
}

impl TicketRow {
    /// The ticket; `developer` limits it to that developer's tickets.
    pub async fn load(
        state: &AppState,
        id: TicketId,
        developer: Option<Uuid>,
    ) -> ApiResult<Option<Self>> {
        Ok(sqlx::query_as!(
            TicketRow,
            r#"select t.ticket_id, t.subject, t.status, t.submission_id, t.created_at, t.updated_at, d.email
           from support_ticket t join developer d using (developer_id)
           where t.ticket_id = $1 and ($2::uuid is null or t.developer_id = $2)"#,
            id.uuid(),
            developer
        )
        .fetch_optional(&state.db)
        .await?)
    }
}

/// A ticket with its messages, read again (after a change) by id alone: callers have already
/// found it on their plane's terms.
pub async fn ticket_view(state: &AppState, id: Uuid) -> ApiResult<TicketView> {
    let row = TicketRow::load(state, id.into(), None)
        .await?
        .ok_or_else(|| ApiError::not_found("ticket"))?;
    view_of(state, row).await
}

/// The view of a ticket already loaded, with its messages.
pub async fn view_of(state: &AppState, t: TicketRow) -> ApiResult<TicketView> {
    let messages = sqlx::query!(
        "select message_id, author, body, emailed_at, email_error, created_at from support_message where ticket_id = $1 order by created_at, message_id",
        t.ticket_id
    )
    .fetch_all(&state.db)
    .await?
    .into_iter()
    .map(|m| {
        Ok(MessageView {
            id: m.message_id.to_string(),
            author: stored(&m.author)?,
            body: m.body,
            emailed_at: m.emailed_at,
            email_error: m.email_error,
            created_at: m.created_at,
        })
    })
    .collect::<ApiResult<_>>()?;
    Ok(TicketView {
        id: t.ticket_id.to_string(),
        subject: t.subject,
        status: stored(&t.status)?,
        submission_id: t.submission_id,
        developer_email: t.email,
        messages,
        created_at: t.created_at,
        updated_at: t.updated_at,
    })
}

/// Ticket summaries from `select ticket_id::text as id, subject, status, created_at, updated_at`.
pub fn summary(
    id: String,
    subject: String,
    status: &str,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
) -> ApiResult<TicketSummary> {
    Ok(TicketSummary {
        id,
        subject,
        status: stored(status)?,
        created_at,
        updated_at,
    })
}
