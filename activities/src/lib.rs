//! Every side effect of the pipeline, as Temporal activities grouped by task queue:
//! [`intake::IntakeActivities`] (the first, local step of each submission run),
//! [`sandbox::SandboxActivities`] (`sandbox`), [`audit::AuditActivities`] (`audit`) and
//! [`ops::OpsActivities`] (`ops`: projections, verdicts, certificates, email). Each activity is
//! idempotent: retries and replays write the same rows and blobs again, never twice.

pub mod audit;
pub mod intake;
pub mod ops;
pub mod portal;
pub mod sandbox;
pub mod types;

use std::sync::Arc;

use anyhow::Context;
use sigma_shared::Settings;
use sigma_shared::attestation::Keyring;
use sigma_shared::blob::BlobStore;
use sigma_shared::email::Mailer;
use sqlx::PgPool;

/// The task queues. Each can run in its own `sigma worker --queue …` process.
pub mod queues {
    pub const SANDBOX: &str = "sandbox";
    pub const AUDIT: &str = "audit";
    /// Also hosts the workflows themselves.
    pub const OPS: &str = "ops";
}

/// Connections the activities share. Cheap to clone.
#[derive(Clone)]
pub struct Deps {
    pub db: PgPool,
    pub blob: BlobStore,
    pub mailer: Mailer,
    pub http: reqwest::Client,
    /// Signs certificates; loaded once from `signing.key_dir`.
    pub keys: Arc<Keyring>,
    /// Validators' review plugins, cached per worker and kept fresh by `sigma_plugin` notices.
    pub plugins: Arc<audit::plugins::PluginEngine>,
    pub settings: Arc<Settings>,
}

impl Deps {
    pub async fn connect(settings: Arc<Settings>) -> anyhow::Result<Self> {
        let db = sigma_shared::db::connect(&settings.database).await?;
        let plugins = Arc::new(audit::plugins::PluginEngine::new(db.clone()));
        tokio::spawn(plugins.clone().follow_changes());
        Ok(Self {
            db,
            plugins,
            blob: BlobStore::new(&settings.blob),
            mailer: Mailer::new(&settings.smtp)?,
            http: reqwest::Client::builder()
                .user_agent("sigma-worker/0.1")
                .build()?,
            keys: Arc::new(load_keyring(&settings.signing)?),
            settings,
        })
    }
}

/// The keyring `signing` names, or an empty one when no key directory is configured.
pub fn load_keyring(signing: &sigma_shared::config::SigningSettings) -> anyhow::Result<Keyring> {
    match &signing.key_dir {
        Some(dir) => Keyring::load(dir, signing.active_key.as_deref())
            .context("Failed to load the signing keys"),
        None => Ok(Keyring::empty()),
    }
}

/// Turns an `anyhow` error into an activity failure Temporal will retry, keeping the whole
/// cause chain in the failure message the operator sees in the Web UI.
pub(crate) fn retryable(e: anyhow::Error) -> temporalio_sdk::activities::ActivityError {
    anyhow::anyhow!("{e:#}").into()
}
