//! Every side effect of the pipeline, as Temporal activities grouped by task queue:
//! [`intake::IntakeActivities`] (the first, local step of each submission run),
//! [`sandbox::SandboxActivities`] (`sandbox`), [`audit::AuditActivities`] (`audit`),
//! [`verdict::VerdictActivities`] (`ops`: consensus and operator decisions),
//! [`ops::OpsActivities`] (`ops`: projections, rounds, certificates, email) and
//! [`lifecycle::LifecycleActivities`] (`ops`: renewals and what else a certificate lives through
//! after issuance). Each activity is
//! idempotent: retries and replays write the same rows and blobs again, never twice.

pub mod audit;
pub mod intake;
pub mod lifecycle;
pub mod ops;
pub mod portal;
pub mod probe;
pub mod sandbox;
pub mod types;
pub mod verdict;

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

    /// The three queue names under a deployment's prefix (`temporal.task_queue_prefix`).
    /// A workflow derives the names from the queue it runs on, so the prefix never travels in
    /// inputs or histories, and a history recorded without one replays unchanged.
    #[derive(Clone, Debug, Default, PartialEq, Eq)]
    pub struct QueueNames {
        prefix: String,
    }

    impl QueueNames {
        pub fn new(prefix: impl Into<String>) -> Self {
            Self {
                prefix: prefix.into(),
            }
        }

        /// The names seen from a workflow: workflows always run on the ops queue.
        pub fn of_workflow_queue(own: &str) -> Self {
            Self::new(own.strip_suffix(OPS).unwrap_or_default())
        }

        pub fn sandbox(&self) -> String {
            format!("{}{SANDBOX}", self.prefix)
        }

        pub fn audit(&self) -> String {
            format!("{}{AUDIT}", self.prefix)
        }

        pub fn ops(&self) -> String {
            format!("{}{OPS}", self.prefix)
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn a_workflow_finds_its_siblings_under_its_own_prefix() {
            let names = QueueNames::new("t1.");
            assert_eq!(names.ops(), "t1.ops");
            let seen = QueueNames::of_workflow_queue(&names.ops());
            assert_eq!(seen, names);
            assert_eq!(seen.sandbox(), "t1.sandbox");
            assert_eq!(QueueNames::of_workflow_queue("ops").audit(), "audit");
        }
    }
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
    /// Live probes of declared endpoints and sites, under the address policy.
    pub prober: Arc<probe::Prober>,
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
            prober: Arc::new(probe::Prober::new(&settings.probe).context("Bad probe settings")?),
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
