//! Transactional email over SMTP (maildev locally).

use anyhow::Context;
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::ExposeSecret;

use crate::config::{SmtpSecurity, SmtpSettings};

#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

pub struct Email {
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: String,
    pub message_id: Option<String>,
}

impl Mailer {
    pub fn new(settings: &SmtpSettings) -> anyhow::Result<Self> {
        let mut builder = match settings.security {
            SmtpSecurity::None => {
                AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&settings.host)
            }
            SmtpSecurity::Starttls => {
                AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&settings.host)?
            }
            SmtpSecurity::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&settings.host)?,
        }
        .port(settings.port)
        .timeout(Some(std::time::Duration::from_secs(15)));
        if let (Some(user), Some(password)) = (&settings.username, &settings.password) {
            builder = builder.credentials(Credentials::new(
                user.clone(),
                password.expose_secret().to_owned(),
            ));
        }
        let from = settings
            .from
            .parse()
            .context("smtp.from is not a valid mailbox")?;
        Ok(Self {
            transport: builder.build(),
            from,
        })
    }

    pub async fn send(&self, email: Email) -> anyhow::Result<()> {
        let to: Mailbox = email
            .to
            .parse()
            .with_context(|| format!("invalid recipient {}", email.to))?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(email.subject)
            .message_id(email.message_id)
            .multipart(MultiPart::alternative_plain_html(email.text, email.html))
            .context("cannot build email")?;
        self.transport
            .send(message)
            .await
            .context("SMTP delivery failed")?;
        Ok(())
    }
}
