//! Layered, typed configuration: built-in defaults → optional TOML file → `SIGMA__` environment
//! variables (`SIGMA__DATABASE__URL`, `SIGMA__PIPELINE__PANEL_SIZE`, …). Secrets are `SecretString`
//! and never appear in `Debug` output or logs.

use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub temporal: TemporalSettings,
    pub blob: BlobSettings,
    pub smtp: SmtpSettings,
    pub api: ApiSettings,
    pub pipeline: PipelineSettings,
    pub sandbox: SandboxSettings,
    #[serde(default)]
    pub signing: SigningSettings,
    #[serde(default)]
    pub public: PublicSettings,
    /// How panel selection weighs validators.
    #[serde(default)]
    pub council: crate::council::WeightPolicy,
    /// Sessions, login codes, quotes and the manifest assistant of the developer plane.
    #[serde(default)]
    pub portal: PortalSettings,
    /// The Ops worker's periodic work (Temporal Schedules) and what certificates live through
    /// after issuance.
    #[serde(default)]
    pub ops: OpsSettings,
    /// Live probes of declared endpoints and verified sites.
    #[serde(default)]
    pub probe: ProbeSettings,
    pub log: LogSettings,
}

/// How live probes reach the outside world. Probes never reach loopback, private, link-local or
/// metadata addresses; `allow_addresses` opens named ones for tests and private deployments.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct ProbeSettings {
    /// The most one probe (every redirect hop, the body included) may take.
    pub timeout_ms: u64,
    /// Bytes of an answer kept; the rest is not read.
    pub max_body_bytes: usize,
    pub max_redirects: usize,
    /// Probes run at once for one submission or one monitor check.
    pub concurrency: usize,
    /// Endpoints probed per submission or check; the rest are recorded as skipped (a list of
    /// slow hosts must not outlast the activity, nor turn SIGMA into a traffic source).
    pub max_endpoints: usize,
    pub user_agent: String,
    /// Addresses (`10.0.0.5`), CIDR blocks (`10.1.0.0/16`) or sockets (`127.0.0.1:8081`) probes
    /// may reach although internal. Empty in production.
    pub allow_addresses: Vec<String>,
}

impl Default for ProbeSettings {
    fn default() -> Self {
        Self {
            timeout_ms: 8000,
            max_body_bytes: 64 * 1024,
            max_redirects: 5,
            concurrency: 8,
            max_endpoints: 50,
            user_agent: "SIGMA-probe/1 (+https://sigma.local/probes)".into(),
            allow_addresses: Vec::new(),
        }
    }
}

/// Periodic jobs and post-issuance policy. Intervals are seconds; each job is one Temporal
/// Schedule (`sigma temporal-setup` creates or updates them).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct OpsSettings {
    pub renewal_sweep_interval_secs: u64,
    pub monitor_sweep_interval_secs: u64,
    pub model_sync_interval_secs: u64,
    pub reconcile_interval_secs: u64,
    /// How long one scheduled run may take before Temporal times it out (it is then retried by
    /// the next firing, never overlapping: the schedules skip while a run is open).
    pub scheduled_run_timeout_secs: u64,
    /// A certificate is due for renewal this long before it expires.
    pub renewal_window_secs: i64,
    /// The sweep starts a certificate's renewal (and emails the reminder) this long before it is due.
    pub renewal_reminder_lead_secs: i64,
    /// An unpaid renewal is retried this often until the certificate expires.
    pub renewal_payment_retry_secs: u64,
    /// Items a sweep handles per run before it continues as new (keeps histories short).
    pub sweep_items_per_run: u32,
    /// Rows one page of a sweep reads from Postgres.
    pub sweep_page_size: u32,
    /// Tier, family and prices of models by id prefix, for model-tier sync (the first matching
    /// entry wins; a provider's own listed prices win over these).
    pub model_tiers: Vec<ModelTier>,
    /// How long one provider's `GET /models` may take.
    pub model_sync_timeout_secs: u64,
    /// An untriaged public report past this is listed as overdue; an untriaged monitor flag
    /// past it is sent to re-audit without waiting for an operator.
    pub flag_triage_deadline_secs: u64,
    /// A REJECTED outcome or a suspension may be disputed this long after it.
    pub dispute_window_days: i64,
    /// An open dispute waits this long for an operator; then a fresh audit round decides it.
    pub dispute_decision_deadline_secs: u64,
    /// Where operators are told of new disputes.
    pub operator_alert_email: String,
    /// A monitored certificate is checked this often (endpoints, source drift, verified site).
    pub monitor_interval_secs: i64,
    /// Checks a monitored certificate gets over its term (`checksRemaining` counts down).
    pub monitor_checks: i32,
    /// A site-verification check is tried this many times, this far apart, before it fails.
    pub site_check_attempts: u32,
    pub site_check_retry_secs: u64,
}

/// One line of the model catalog's configuration.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct ModelTier {
    /// Model ids starting with this (after any `vendor/` part) get this entry.
    pub prefix: String,
    pub family: String,
    pub tier: String,
    pub price_in_per_mtok: Option<f64>,
    pub price_out_per_mtok: Option<f64>,
}

impl Default for OpsSettings {
    fn default() -> Self {
        const DAY: i64 = 24 * 3600;
        Self {
            renewal_sweep_interval_secs: 3600,
            monitor_sweep_interval_secs: 6 * 3600,
            model_sync_interval_secs: 3600,
            reconcile_interval_secs: 600,
            scheduled_run_timeout_secs: 1800,
            renewal_window_secs: 30 * DAY,
            renewal_reminder_lead_secs: 14 * DAY,
            renewal_payment_retry_secs: DAY as u64,
            sweep_items_per_run: 500,
            sweep_page_size: 100,
            model_tiers: Vec::new(),
            model_sync_timeout_secs: 20,
            flag_triage_deadline_secs: 3 * DAY as u64,
            dispute_window_days: 14,
            dispute_decision_deadline_secs: 7 * DAY as u64,
            operator_alert_email: "operators@sigma.local".into(),
            monitor_interval_secs: DAY,
            monitor_checks: 90,
            site_check_attempts: 5,
            site_check_retry_secs: 60,
        }
    }
}

/// The developer and operator front doors.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct PortalSettings {
    /// Keys the hashes of login codes, so a leaked table cannot be brute-forced offline.
    #[serde(serialize_with = "expose")]
    pub secret: SecretString,
    /// Where the magic link in the login email points: `{portal_base_url}/login?token=…`.
    pub portal_base_url: String,
    pub code_ttl_secs: i64,
    /// Wrong codes allowed per login challenge before it is void.
    pub code_max_attempts: i32,
    /// Wrong codes per address per day, over all its challenges, before new starts are refused.
    pub code_failures_per_address_per_day: i64,
    /// Login emails per address per hour, and login starts per client IP per hour.
    pub logins_per_address_per_hour: i64,
    pub logins_per_client_per_hour: u32,
    /// Portal sessions slide: each use extends them by this much.
    pub session_idle_days: i64,
    pub console_session_idle_hours: i64,
    /// Console logins per client IP per hour (failed or not).
    pub console_logins_per_hour: u32,
    /// Voucher redemptions per client IP per hour (they are guessable otherwise).
    pub voucher_redemptions_per_hour: u32,
    /// Send `Secure` on session cookies (off only for plain-HTTP local runs).
    pub secure_cookies: bool,
    /// Schemes a draft's site URL may use (https only, except in tests against local servers).
    pub site_url_schemes: Vec<String>,
    pub quote_ttl_secs: i64,
    /// The manifest assistant: any OpenAI-compatible endpoint.
    pub manifest_llm_url: String,
    pub manifest_model: String,
    /// Name of the environment variable holding the assistant's API key, if it needs one.
    pub manifest_api_key_env: Option<String>,
    /// `json_schema` or `json_object_schema`, as for validators.
    pub manifest_response_format: String,
    pub manifest_timeout_secs: u64,
    pub manifests_per_hour: i64,
    /// Abusive or unusable inputs (in a row of the last day) that lock the assistant for a developer.
    pub manifest_abuse_lock_after: i64,
}

impl Default for PortalSettings {
    fn default() -> Self {
        Self {
            secret: SecretString::from("sigma-local-portal-secret-change-me"),
            portal_base_url: "http://127.0.0.1:8080/portal".into(),
            code_ttl_secs: 600,
            code_max_attempts: 5,
            code_failures_per_address_per_day: 20,
            logins_per_address_per_hour: 5,
            logins_per_client_per_hour: 30,
            session_idle_days: 30,
            console_session_idle_hours: 12,
            console_logins_per_hour: 20,
            voucher_redemptions_per_hour: 20,
            secure_cookies: true,
            site_url_schemes: vec!["https".into()],
            quote_ttl_secs: 1800,
            manifest_llm_url: "http://127.0.0.1:8191/v1".into(),
            manifest_model: "smollm2".into(),
            manifest_api_key_env: None,
            manifest_response_format: "json_object_schema".into(),
            manifest_timeout_secs: 60,
            manifests_per_hour: 10,
            manifest_abuse_lock_after: 3,
        }
    }
}

/// The service's Ed25519 keys (see `attestation`): a directory of PEM files and the name of the
/// one that signs. Workers that issue certificates need `active_key`; the API only publishes.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct SigningSettings {
    pub key_dir: Option<std::path::PathBuf>,
    /// File name (without `.pem`) of the private key that signs new certificates.
    pub active_key: Option<String>,
}

/// The public plane: caching, limits and the texts it computes per call.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct PublicSettings {
    /// Certificates kept in each API process's memory.
    pub cache_capacity: u64,
    /// How often counted views are written to PostgreSQL (one batched statement per interval).
    pub view_flush_ms: u64,
    /// Public reads per client IP: sustained per minute, and the burst allowed above it.
    pub reads_per_minute: u32,
    pub read_burst: u32,
    /// Flags per client IP per hour.
    pub flags_per_hour: u32,
    /// Reports awaiting triage one certificate may carry; past it new reports are refused until
    /// an operator triages or dismisses some.
    pub max_open_reports_per_certificate: i64,
    /// Reports awaiting triage one reporter may have open, over all certificates.
    pub max_open_reports_per_reporter: i64,
    /// Take the client IP from the last `X-Forwarded-For` hop (only behind a trusted proxy).
    pub trust_forwarded_for: bool,
    /// Where `compare-skill-from-github` reads raw files: `{base}/{owner}/{repo}/{ref}/{path}`.
    pub github_raw_base_url: String,
    /// Certificates lapse this long after issuance unless renewed.
    pub validity_days: i64,
    /// Added to `verify` for skills that reach the network; recomputed on every call.
    pub api_disclaimer: String,
}

impl Default for PublicSettings {
    fn default() -> Self {
        Self {
            cache_capacity: 100_000,
            view_flush_ms: 1000,
            reads_per_minute: 1200,
            read_burst: 300,
            flags_per_hour: 10,
            max_open_reports_per_certificate: 50,
            max_open_reports_per_reporter: 5,
            trust_forwarded_for: false,
            github_raw_base_url: "https://raw.githubusercontent.com".into(),
            validity_days: 365,
            api_disclaimer: "This skill calls external HTTP APIs. SIGMA reviewed the skill's code \
                and declared endpoints at certification time; it does not control those services, \
                and their behaviour may change after review."
                .into(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct DatabaseSettings {
    #[serde(serialize_with = "expose")]
    pub url: SecretString,
    pub max_connections: u32,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct TemporalSettings {
    /// gRPC endpoint, e.g. `http://127.0.0.1:7233`.
    pub address: String,
    pub namespace: String,
    /// Base URL of the Temporal Web UI, shown to operators next to a submission.
    pub ui_url: String,
    /// Prepended to every task queue name, so several SIGMA deployments (or tests) can share one
    /// Temporal namespace without picking up one another's tasks. Empty in production.
    #[serde(default)]
    pub task_queue_prefix: String,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct BlobSettings {
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    pub access_key: String,
    #[serde(serialize_with = "expose")]
    pub secret_key: SecretString,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub from: String,
    /// `none` (local maildev), `starttls` or `tls`.
    pub security: SmtpSecurity,
    pub username: Option<String>,
    #[serde(serialize_with = "expose_opt")]
    pub password: Option<SecretString>,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    None,
    Starttls,
    Tls,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct ApiSettings {
    pub bind: String,
    /// The externally visible base URL, used in status URLs and emails.
    pub public_base_url: String,
    /// Largest accepted upload body (a compressed bundle plus form fields).
    pub max_body_bytes: usize,
    /// How long an intake request waits for its run to record the submission (and, for a
    /// draft, take the payment) before answering without the outcome. The run goes on.
    pub intake_answer_secs: u64,
}

/// Knobs of the submission workflow. They are copied into each workflow's input at start, so a
/// running workflow keeps the policy it started with and replays deterministically.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct PipelineSettings {
    /// Validators per audit phase.
    pub panel_size: u32,
    /// Timeout of one LLM HTTP call.
    pub llm_timeout_secs: u64,
    /// Attempts at a schema-valid answer from one validator before its vote counts as failed.
    pub llm_answer_attempts: u32,
    /// Largest completion requested from a validator model.
    pub llm_max_tokens: u32,
    /// How much submission text goes into one audit prompt (small local models have small contexts).
    pub llm_max_evidence_chars: usize,
    /// Temporal retry budget of each activity (transport errors, 5xx, crashed workers).
    pub activity_max_attempts: u32,
    pub activity_initial_retry_ms: u64,
    /// Retry budget of bookkeeping activities (projection, verdict, certificate, email): an outage
    /// of Postgres or SMTP shorter than this (about 15 minutes at 20) never fails a submission.
    #[serde(default = "default_ops_max_attempts")]
    pub ops_max_attempts: u32,
    /// A worker that stops heartbeating for this long is presumed dead and its activity retried.
    pub heartbeat_timeout_secs: u64,
    /// How long an escalated submission waits for an operator before it is rejected.
    pub escalation_timeout_secs: u64,
    /// Per phase, how many validators whose provider failed may be replaced by other eligible
    /// ones. Workflow inputs recorded before this existed read 0 (no replacement).
    #[serde(default)]
    pub max_replacements: u32,
}

/// Limits on what the sandbox unpacks. They travel in workflow inputs, so new fields need serde
/// defaults for histories recorded before them.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct SandboxLimits {
    pub max_files: usize,
    pub max_total_bytes: u64,
    pub max_file_bytes: u64,
    /// How deep archives inside the bundle are opened and scanned (1 = archives in the bundle).
    #[serde(default = "default_max_nested_depth")]
    pub max_nested_depth: u32,
}

fn default_max_nested_depth() -> u32 {
    2
}

/// Per-category overrides of [`SandboxLimits`]; unset fields keep the defaults.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct SandboxLimitsOverride {
    pub max_files: Option<usize>,
    pub max_total_bytes: Option<u64>,
    pub max_file_bytes: Option<u64>,
    pub max_nested_depth: Option<u32>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct SandboxSettings {
    /// Limits for every category (product §7: 50 files, 512 KB in all, 200 KB per file).
    pub limits: SandboxLimits,
    /// Overrides keyed by category name (`SKILL`, `CODE_PACKAGES`, ...).
    #[serde(default)]
    pub categories: std::collections::BTreeMap<String, SandboxLimitsOverride>,
    /// Where public git repositories are fetched as archives: `{base}/{owner}/{repo}/tar.gz/{ref}`
    /// (GitHub's codeload layout).
    pub git_archive_base_url: String,
    /// The most a git archive download may weigh, compressed.
    pub git_max_archive_bytes: u64,
}

impl SandboxSettings {
    pub fn limits_for(&self, category: crate::domain::Category) -> SandboxLimits {
        let mut limits = self.limits;
        if let Some(o) = self.categories.get(category.as_str()) {
            limits.max_files = o.max_files.unwrap_or(limits.max_files);
            limits.max_total_bytes = o.max_total_bytes.unwrap_or(limits.max_total_bytes);
            limits.max_file_bytes = o.max_file_bytes.unwrap_or(limits.max_file_bytes);
            limits.max_nested_depth = o.max_nested_depth.unwrap_or(limits.max_nested_depth);
        }
        limits
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct LogSettings {
    /// `json` (default) or `pretty`.
    pub format: String,
    /// An `EnvFilter` directive; `RUST_LOG` wins when set.
    pub filter: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            database: DatabaseSettings {
                url: SecretString::from("postgres://postgres@127.0.0.1:5432/sigma"),
                max_connections: 10,
            },
            temporal: TemporalSettings {
                address: "http://127.0.0.1:7233".into(),
                namespace: "default".into(),
                ui_url: "http://127.0.0.1:8233".into(),
                task_queue_prefix: String::new(),
            },
            blob: BlobSettings {
                endpoint: "http://127.0.0.1:8014".into(),
                region: "us-east-1".into(),
                bucket: "sigma".into(),
                access_key: "sigma".into(),
                secret_key: SecretString::from("sigma-local-secret"),
            },
            smtp: SmtpSettings {
                host: "127.0.0.1".into(),
                port: 1025,
                from: "SIGMA <no-reply@sigma.local>".into(),
                security: SmtpSecurity::None,
                username: None,
                password: None,
            },
            api: ApiSettings {
                bind: "127.0.0.1:8080".into(),
                public_base_url: "http://127.0.0.1:8080".into(),
                max_body_bytes: 8 * 1024 * 1024,
                intake_answer_secs: 20,
            },
            pipeline: PipelineSettings {
                panel_size: 3,
                llm_timeout_secs: 60,
                llm_answer_attempts: 3,
                llm_max_tokens: 800,
                llm_max_evidence_chars: 24_000,
                activity_max_attempts: 5,
                activity_initial_retry_ms: 1000,
                ops_max_attempts: default_ops_max_attempts(),
                heartbeat_timeout_secs: 20,
                escalation_timeout_secs: 72 * 3600,
                max_replacements: 2,
            },
            sandbox: SandboxSettings {
                limits: SandboxLimits {
                    max_files: 50,
                    max_total_bytes: 512 * 1024,
                    max_file_bytes: 200 * 1024,
                    max_nested_depth: default_max_nested_depth(),
                },
                categories: Default::default(),
                git_archive_base_url: "https://codeload.github.com".into(),
                git_max_archive_bytes: 8 * 1024 * 1024,
            },
            signing: SigningSettings::default(),
            public: PublicSettings::default(),
            council: Default::default(),
            portal: PortalSettings::default(),
            ops: OpsSettings::default(),
            probe: ProbeSettings::default(),
            log: LogSettings {
                format: "json".into(),
                filter: "info,sqlx=warn,temporalio_sdk_core=warn".into(),
            },
        }
    }
}

fn default_ops_max_attempts() -> u32 {
    20
}

impl Settings {
    /// Defaults, then `file` (if given and present), then `SIGMA__*` environment variables.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(file) = file {
            anyhow::ensure!(
                file.exists(),
                "config file {} does not exist",
                file.display()
            );
            figment = figment.merge(Toml::file(file));
        }
        figment = figment.merge(Env::prefixed("SIGMA__").split("__"));
        Ok(figment.extract()?)
    }
}

// Defaults are serialised into figment as a base layer; that is the only place a secret is
// written out, and it never leaves the process.
fn expose<S: serde::Serializer>(secret: &SecretString, s: S) -> Result<S::Ok, S::Error> {
    use secrecy::ExposeSecret;
    s.serialize_str(secret.expose_secret())
}
fn expose_opt<S: serde::Serializer>(
    secret: &Option<SecretString>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match secret {
        Some(secret) => expose(secret, s),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API fixes the closure's error type
    fn env_overrides_file_which_overrides_defaults() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "sigma.toml",
                "[pipeline]\npanel_size = 5\n[api]\nbind = \"0.0.0.0:9\"\n",
            )?;
            jail.set_env("SIGMA__API__BIND", "127.0.0.1:7000");
            jail.set_env("SIGMA__BLOB__SECRET_KEY", "s3cr3t");
            let settings = Settings::load(Some(Path::new("sigma.toml"))).expect("loads");
            assert_eq!(settings.pipeline.panel_size, 5);
            assert_eq!(settings.api.bind, "127.0.0.1:7000");
            assert_eq!(settings.blob.secret_key.expose_secret(), "s3cr3t");
            assert_eq!(settings.sandbox.limits.max_files, 50);
            assert_eq!(
                settings
                    .sandbox
                    .limits_for(crate::domain::Category::Code)
                    .max_nested_depth,
                2
            );
            Ok(())
        });
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let settings = Settings::default();
        let debug = format!("{settings:?}");
        assert!(!debug.contains("sigma-local-secret"), "{debug}");
    }
}
