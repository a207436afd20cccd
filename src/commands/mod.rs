//! Subcommands. Each builds what it needs from the layered settings and runs until done or Ctrl-C.

mod admin;
mod dev;
mod keys;
mod scan;
mod verify;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use sigma_activities::Deps;
use sigma_shared::Settings;
use sigma_shared::blob::BlobStore;
use sigma_workflows::schedules;
use sigma_workflows::worker::{self, Queue};

#[derive(Parser)]
#[command(
    name = "sigma",
    version,
    about = "SIGMA: verification and certificates for AI agent skills"
)]
pub struct Cli {
    /// TOML config file layered over the defaults; `SIGMA__*` environment variables override both.
    #[arg(long, global = true, env = "SIGMA_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The whole local system: Temporal, PostgreSQL, S3, SMTP, the local LLM, API and all workers.
    Dev(dev::DevArgs),
    /// Serve the HTTP API.
    Api,
    /// Run workers for one or more task queues.
    Worker {
        #[arg(long = "queue", value_enum, required = true)]
        queues: Vec<QueueArg>,
    },
    /// Create the database if needed and apply migrations.
    Migrate,
    /// Register SIGMA's search attributes on the Temporal namespace.
    TemporalSetup,
    /// Everything a deployment needs before first start, idempotently: database and migrations,
    /// the blob bucket, and the Temporal search attributes.
    Setup,
    /// Print the OpenAPI document.
    Openapi,
    /// Scan a skill directory or archive offline with the sandbox engine (no servers needed).
    /// Exit codes: 0 below `--fail-on`, 1 at or above it or blocked, 2 unreadable input.
    Scan(scan::ScanArgs),
    /// Verify a certificate's signature against the published keys and, with `--skill DIR`, that
    /// a local skill is the reviewed one. Offline given a certificate file and `--keys FILE`.
    /// Exit codes: 0 verified, 1 a check failed, 2 unreadable input.
    Verify(verify::VerifyArgs),
    /// Make a new Ed25519 certificate signing key.
    Keygen(keys::KeygenArgs),
    #[command(flatten)]
    Admin(admin::AdminCommand),
}

#[derive(Clone, Copy, ValueEnum)]
enum QueueArg {
    Sandbox,
    Audit,
    Ops,
}

impl From<QueueArg> for Queue {
    fn from(q: QueueArg) -> Self {
        match q {
            QueueArg::Sandbox => Queue::Sandbox,
            QueueArg::Audit => Queue::Audit,
            QueueArg::Ops => Queue::Ops,
        }
    }
}

impl Cli {
    pub async fn run(self) -> anyhow::Result<()> {
        let settings = Settings::load(self.config.as_deref())?;
        // Offline commands: no telemetry, stdout carries their output alone.
        let command = match self.command {
            Command::Scan(args) => std::process::exit(scan::run(&settings, args)),
            Command::Verify(args) => std::process::exit(verify::run(&settings, args).await),
            Command::Keygen(args) => return keys::run(args),
            other => other,
        };
        sigma_shared::telemetry::init(&settings.log);
        match command {
            Command::Scan(_) | Command::Verify(_) | Command::Keygen(_) => {
                unreachable!("handled above")
            }
            Command::Dev(args) => dev::run(settings, args).await,
            Command::Api => {
                let state = api_state(Arc::new(settings)).await?;
                let listener = tokio::net::TcpListener::bind(&state.settings.api.bind)
                    .await
                    .with_context(|| format!("cannot bind {}", state.settings.api.bind))?;
                sigma_api::serve(listener, state, ctrl_c()).await
            }
            Command::Worker { queues } => {
                let settings = Arc::new(settings);
                let deps = deps(settings.clone()).await?;
                let client = worker::connect(&settings.temporal, &identity("worker")).await?;
                run_workers(client, queues.into_iter().map(Queue::from).collect(), deps).await
            }
            Command::Migrate => {
                sigma_shared::db::create_database_if_missing(&settings.database).await?;
                let pool = sigma_shared::db::connect(&settings.database).await?;
                sigma_shared::db::migrate(&pool).await?;
                println!("migrations applied");
                Ok(())
            }
            Command::TemporalSetup => {
                let client = worker::connect(&settings.temporal, &identity("setup")).await?;
                worker::ensure_search_attributes(&client, &settings.temporal.namespace).await?;
                println!(
                    "search attributes registered on namespace {}",
                    settings.temporal.namespace
                );
                for (id, ensured) in schedules::ensure_schedules(&client, &settings).await? {
                    println!("schedule {id}: {ensured:?}");
                }
                Ok(())
            }
            Command::Setup => {
                setup(&settings).await?;
                println!("database, bucket and search attributes are ready");
                Ok(())
            }
            Command::Openapi => {
                println!("{}", sigma_api::openapi().to_pretty_json()?);
                Ok(())
            }
            Command::Admin(command) => command.run(settings).await,
        }
    }
}

/// Migrations, bucket and search attributes; shared by `setup` and `dev`.
pub(crate) async fn setup(settings: &Settings) -> anyhow::Result<sqlx::PgPool> {
    sigma_shared::db::create_database_if_missing(&settings.database).await?;
    let pool = sigma_shared::db::connect(&settings.database).await?;
    sigma_shared::db::migrate(&pool).await?;
    BlobStore::new(&settings.blob).ensure_bucket().await?;
    let client = worker::connect(&settings.temporal, &identity("setup")).await?;
    worker::ensure_search_attributes(&client, &settings.temporal.namespace).await?;
    schedules::ensure_schedules(&client, settings).await?;
    Ok(pool)
}

pub(crate) fn identity(role: &str) -> String {
    format!("sigma-{role}-{}", std::process::id())
}

pub(crate) async fn ctrl_c() {
    let _ = tokio::signal::ctrl_c().await;
}

pub(crate) async fn deps(settings: Arc<Settings>) -> anyhow::Result<Deps> {
    Deps::connect(settings).await
}

pub(crate) async fn api_state(settings: Arc<Settings>) -> anyhow::Result<sigma_api::AppState> {
    {
        use secrecy::ExposeSecret;
        let default = sigma_shared::config::PortalSettings::default();
        if settings.portal.secret.expose_secret() == default.secret.expose_secret()
            && !settings.api.public_base_url.starts_with("http://127.0.0.1")
        {
            tracing::warn!(
                "portal.secret is the built-in default: set SIGMA__PORTAL__SECRET, or login codes are keyed by a public value"
            );
        }
    }
    let db = sigma_shared::db::connect(&settings.database).await?;
    let temporal = worker::connect(&settings.temporal, &identity("api")).await?;
    sigma_api::AppState::new(db, temporal, settings)
}

/// Runs the given queues' workers on this task until Ctrl-C (the worker future is `!Send`).
pub(crate) async fn run_workers(
    client: temporalio_client::Client,
    queues: Vec<Queue>,
    deps: Deps,
) -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        ctrl_c().await;
        let _ = stop_tx.send(true);
    });
    worker::run_all(client, queues, deps, stop_rx).await
}
