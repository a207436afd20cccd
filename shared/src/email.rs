//! Transactional email over SMTP (maildev locally).
//!
//! Connections are pooled and, for plain and STARTTLS servers, opened by us with `TCP_NODELAY`.
//! lettre writes a message body and its terminating `.` line in two writes before it reads the
//! answer; with Nagle's algorithm on (lettre's own sockets) the second write waits for the
//! server's delayed ACK, about 40 ms on every message. Implicit TLS (port 465) connects through
//! lettre, which builds that socket itself, and keeps the delay.

use std::time::Duration;

use anyhow::Context;
use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};
use lettre::Message;
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use secrecy::ExposeSecret;

use crate::config::{SmtpSecurity, SmtpSettings};

/// Connect, command and message timeout.
const TIMEOUT: Duration = Duration::from_secs(15);
/// An idle connection older than this is closed rather than reused (servers drop idle clients,
/// commonly after 60 s or more).
const IDLE: Duration = Duration::from_secs(50);
/// Connections kept open at most: one per concurrent send.
const POOL_SIZE: usize = 8;

#[derive(Clone)]
pub struct Mailer {
    pool: managed::Pool<SmtpConnector>,
    from: Mailbox,
}

pub struct Email {
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: String,
    pub message_id: Option<String>,
}

/// Opens, authenticates and checks SMTP connections for the pool.
struct SmtpConnector {
    host: String,
    port: u16,
    security: SmtpSecurity,
    credentials: Option<Credentials>,
    hello: ClientId,
}

impl SmtpConnector {
    async fn connect(&self) -> anyhow::Result<AsyncSmtpConnection> {
        let mut conn = match self.security {
            SmtpSecurity::Tls => {
                AsyncSmtpConnection::connect_tokio1(
                    (self.host.as_str(), self.port),
                    Some(TIMEOUT),
                    &self.hello,
                    Some(TlsParameters::new(self.host.clone())?),
                    None,
                )
                .await?
            }
            SmtpSecurity::None | SmtpSecurity::Starttls => {
                let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port)).await?;
                tcp.set_nodelay(true)?;
                let mut conn =
                    AsyncSmtpConnection::connect_with_transport(Box::new(tcp), &self.hello).await?;
                if self.security == SmtpSecurity::Starttls {
                    conn.starttls(TlsParameters::new(self.host.clone())?, &self.hello)
                        .await?;
                }
                conn
            }
        };
        if let Some(credentials) = &self.credentials {
            conn.auth(&[Mechanism::Plain, Mechanism::Login], credentials)
                .await?;
        }
        Ok(conn)
    }
}

impl managed::Manager for SmtpConnector {
    type Type = AsyncSmtpConnection;
    type Error = anyhow::Error;

    async fn create(&self) -> anyhow::Result<AsyncSmtpConnection> {
        tokio::time::timeout(TIMEOUT, self.connect())
            .await
            .with_context(|| format!("SMTP connect to {}:{} timed out", self.host, self.port))?
            .with_context(|| format!("cannot connect to SMTP at {}:{}", self.host, self.port))
    }

    async fn recycle(
        &self,
        conn: &mut AsyncSmtpConnection,
        metrics: &Metrics,
    ) -> RecycleResult<anyhow::Error> {
        if conn.has_broken() {
            return Err(RecycleError::message("broken connection"));
        }
        if metrics.last_used() > IDLE {
            return Err(RecycleError::message("idle too long"));
        }
        match tokio::time::timeout(TIMEOUT, conn.test_connected()).await {
            Ok(true) => Ok(()),
            _ => Err(RecycleError::message("server closed the connection")),
        }
    }
}

impl Mailer {
    pub fn new(settings: &SmtpSettings) -> anyhow::Result<Self> {
        let credentials = match (&settings.username, &settings.password) {
            (Some(user), Some(password)) => Some(Credentials::new(
                user.clone(),
                password.expose_secret().to_owned(),
            )),
            _ => None,
        };
        let connector = SmtpConnector {
            host: settings.host.clone(),
            port: settings.port,
            security: settings.security,
            credentials,
            hello: ClientId::default(),
        };
        let pool = managed::Pool::builder(connector)
            .max_size(POOL_SIZE)
            .runtime(deadpool::Runtime::Tokio1)
            .wait_timeout(Some(TIMEOUT))
            .build()
            .context("cannot build the SMTP connection pool")?;
        let from = settings
            .from
            .parse()
            .context("smtp.from is not a valid mailbox")?;
        Ok(Self { pool, from })
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
        let mut conn = self.pool.get().await.map_err(|e| match e {
            managed::PoolError::Backend(e) => e,
            other => anyhow::anyhow!("no SMTP connection: {other}"),
        })?;
        let sent =
            tokio::time::timeout(TIMEOUT, conn.send(message.envelope(), &message.formatted()))
                .await;
        match sent {
            Ok(Ok(_)) => Ok(()),
            failed => {
                // A connection that failed mid-transaction is in an unknown state: never reuse it.
                let _ = managed::Object::take(conn);
                match failed {
                    Ok(Err(e)) => Err(e).context("SMTP delivery failed"),
                    _ => anyhow::bail!("SMTP delivery timed out after {}s", TIMEOUT.as_secs()),
                }
            }
        }
    }
}
