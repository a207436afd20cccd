//! An operator's support reply, emailed to the developer once (`support-email:{message}`).

use anyhow::Context;
use serde::{Deserialize, Serialize};
use sigma_shared::email::Email;
use sqlx::types::Uuid;

use crate::Deps;
use crate::portal::html_escape;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SupportEmailInput {
    pub message_id: String,
}

#[tracing::instrument(name = "support_email", skip_all, fields(message_id = %input.message_id))]
pub(crate) async fn send(deps: &Deps, input: SupportEmailInput) -> anyhow::Result<()> {
    let message_id: Uuid = input.message_id.parse().context("bad message id")?;
    let row = sqlx::query!(
        r#"select m.body, m.emailed_at, t.ticket_id, t.subject, d.email
           from support_message m join support_ticket t using (ticket_id) join developer d using (developer_id)
           where m.message_id = $1"#,
        message_id
    )
    .fetch_one(&deps.db)
    .await
    .context("Failed to load the support message")?;
    if row.emailed_at.is_some() {
        return Ok(());
    }
    let portal = deps.settings.portal.portal_base_url.trim_end_matches('/');
    let link = format!("{portal}/support/{}", row.ticket_id);
    let text = format!(
        "SIGMA support replied to your ticket \"{}\":\n\n{}\n\nThe whole conversation: {link}\n",
        row.subject, row.body
    );
    let html = format!(
        "<p>SIGMA support replied to your ticket <strong>{}</strong>:</p><blockquote>{}</blockquote><p><a href=\"{link}\">The whole conversation</a></p>",
        html_escape(&row.subject),
        html_escape(&row.body).replace('\n', "<br>")
    );
    let sent = deps
        .mailer
        .send(Email {
            to: row.email,
            subject: format!("Re: {} [ticket {}]", row.subject, row.ticket_id),
            text,
            html,
            message_id: Some(format!("<support-{message_id}@sigma>")),
        })
        .await;
    match sent {
        Ok(()) => {
            sqlx::query!(
                "update support_message set emailed_at = now(), email_error = null where message_id = $1",
                message_id
            )
            .execute(&deps.db)
            .await
            .context("Failed to record the sent email")?;
            Ok(())
        }
        Err(e) => {
            // Visible on the ticket while Temporal retries.
            sqlx::query!(
                "update support_message set email_error = $2 where message_id = $1",
                message_id,
                format!("{e:#}")
            )
            .execute(&deps.db)
            .await
            .ok();
            Err(e)
        }
    }
}
