//! A real SIGMA stack per test: task queues of its own on the run's Temporal dev server, a fresh
//! PostgreSQL database, a fresh S3 bucket on the shared s3s-fs, the shared maildev, the API on
//! port 0, workers in a thread of their own, and a scripted LLM. `scripts/test.sh` starts Temporal,
//! s3s-fs and maildev on free ports and exports where they are; nothing of SIGMA's own is mocked.

pub mod bundle;
pub mod client;
pub mod llm;

use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use anyhow::Context;
use secrecy::SecretString;
use serde_json::Value;
use sigma_activities::Deps;
use sigma_shared::Settings;
use sigma_shared::blob::BlobStore;
use sigma_workflows::worker::{self, Queue};
use sqlx::PgPool;
use temporalio_sdk::testing::{
    EphemeralExe, LocalServer, LocalWorkflowEnvironmentOptions, WorkflowEnvironment,
};
use tokio::sync::watch;

pub use client::PlaneClient;
pub use llm::{Reply, ScriptedLlm};

/// Where a shared test server is: `start_test_servers` (scripts/lib.sh) picks free ports and
/// exports them; there is no fixed default to collide with another run.
fn server_env(name: &str) -> anyhow::Result<String> {
    std::env::var(name).with_context(|| {
        format!("{name} is not set: run the tests through scripts/test.sh, or source scripts/lib.sh and call start_test_servers first")
    })
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn init_tracing() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter("info,temporalio_sdk_core=warn")
                .with_test_writer()
                .try_init();
        }
    });
}

pub struct Options {
    /// Validator ids; validator `x` uses model `model-x` on the scripted LLM.
    pub validators: Vec<&'static str>,
    pub panel_size: u32,
    /// Queues whose workers run inside the test process.
    pub queues: Vec<Queue>,
    /// Adjusts the settings before anything starts.
    pub tweak: Arc<dyn Fn(&mut Settings) + Send + Sync>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            validators: vec!["v1", "v2", "v3", "v4"],
            panel_size: 2,
            queues: Queue::ALL.to_vec(),
            tweak: Arc::new(|_| {}),
        }
    }
}

impl Options {
    /// Two validators, one per phase: each phase's vote is a known validator's.
    pub fn one_per_phase() -> Self {
        Self {
            validators: vec!["v1", "v2"],
            panel_size: 1,
            ..Default::default()
        }
    }

    /// The API alone: submissions are accepted but no worker picks them up.
    pub fn without_workers() -> Self {
        Self {
            queues: vec![],
            ..Default::default()
        }
    }
}

/// The model the manifest assistant asks on the scripted LLM.
pub const MANIFEST_MODEL: &str = "manifest-model";

pub fn model_of(validator: &str) -> String {
    format!("model-{validator}")
}

/// Worker threads: the worker future is `!Send`, so each runs on a runtime of its own.
struct Workers {
    stop: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
}

impl Workers {
    fn start(settings: Arc<Settings>, queues: Vec<Queue>) -> Self {
        let (stop, stop_rx) = watch::channel(false);
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                let deps = deps(settings.clone()).await?;
                let client = worker::connect(&settings.temporal, "sigma-test-worker").await?;
                worker::run_all(client, queues, deps, stop_rx).await
            })
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

pub async fn deps(settings: Arc<Settings>) -> anyhow::Result<Deps> {
    Deps::connect(settings).await
}

/// The six-digit code of a login email.
pub fn code_in(text: &str) -> Option<String> {
    let start = text.find("login code is ")? + "login code is ".len();
    let code: String = text[start..].chars().take(6).collect();
    (code.len() == 6 && code.chars().all(|c| c.is_ascii_digit())).then_some(code)
}

/// A Temporal dev server of this test's own, for a test run without `scripts/test.sh`. The port
/// is probed, released and then bound by the server, which another process can take in between,
/// and a loaded machine can miss the SDK's start deadline: a failed start is retried on a fresh
/// port, and the last cause is reported.
async fn start_own_temporal() -> anyhow::Result<(WorkflowEnvironment<LocalServer>, u16)> {
    let cli = std::env::var("TEMPORAL_CLI")
        .context("TEMPORAL_CLI must point at the temporal binary (scripts/test.sh sets it)")?;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0")?;
            probe.local_addr()?.port()
        };
        let started = WorkflowEnvironment::start_local(
            LocalWorkflowEnvironmentOptions::builder()
                .server_executable(EphemeralExe::ExistingPath(cli.clone()))
                .port(port)
                .extra_args(sigma_workflows::dev_server::dynamic_config_args())
                .build(),
        )
        .await;
        match started {
            Ok(env) => return Ok((env, port)),
            Err(e) if attempt < 3 => {
                eprintln!("Temporal dev server did not start (attempt {attempt}): {e:#}; retrying");
            }
            Err(e) => return Err(e).context("cannot start the Temporal dev server"),
        }
    }
}

/// Makes `db_name` as a copy of the run's migrated template database, which the first test of
/// the run creates under an advisory lock: copying files is far cheaper than running every
/// migration per test. The template is named after the run, so the run's cleanup drops it.
async fn copy_run_template(admin_url: &str, run: &str, db_name: &str) -> anyhow::Result<()> {
    let template = format!("sigma_test_{run}_template");
    let admin = PgPool::connect(admin_url)
        .await
        .context("cannot reach the maintenance database")?;
    let mut lock = admin.acquire().await?;
    sqlx::query("select pg_advisory_lock(hashtext($1))")
        .bind(&template)
        .execute(&mut *lock)
        .await?;
    let exists: bool =
        sqlx::query_scalar("select exists(select 1 from pg_database where datname = $1)")
            .bind(&template)
            .fetch_one(&mut *lock)
            .await?;
    if !exists {
        sqlx::query(&format!("create database \"{template}\""))
            .execute(&mut *lock)
            .await?;
        let url = format!(
            "{}/{template}",
            admin_url
                .rsplit_once('/')
                .map(|(b, _)| b)
                .unwrap_or(admin_url)
        );
        // Nobody may be connected to a template while it is copied: close before unlocking.
        let pool = PgPool::connect(&url).await?;
        sigma_shared::db::migrate(&pool).await?;
        pool.close().await;
    }
    sqlx::query("select pg_advisory_unlock(hashtext($1))")
        .bind(&template)
        .execute(&mut *lock)
        .await?;
    drop(lock);
    sqlx::query(&format!(
        "create database \"{db_name}\" template \"{template}\""
    ))
    .execute(&admin)
    .await
    .with_context(|| format!("cannot copy the template database into {db_name}"))?;
    admin.close().await;
    Ok(())
}

pub struct TestApp {
    pub base_url: String,
    pub http: reqwest::Client,
    pub db: PgPool,
    pub settings: Arc<Settings>,
    pub temporal: temporalio_client::Client,
    pub llm: ScriptedLlm,
    pub developer_email: String,
    pub developer_token: String,
    pub operator_token: String,
    pub maildev_url: String,
    workers: Option<Workers>,
    env: Option<WorkflowEnvironment<LocalServer>>,
    /// This test's database and the maintenance database to drop it from.
    db_name: String,
    admin_url: String,
}

impl TestApp {
    pub async fn spawn() -> anyhow::Result<Self> {
        Self::spawn_with(Options::default()).await
    }

    pub async fn spawn_with(options: Options) -> anyhow::Result<Self> {
        init_tracing();
        let run_id = uuid::Uuid::new_v4().simple().to_string();

        // Temporal: the run's shared dev server when `scripts/test.sh` started one (each test
        // then polls task queues under a prefix of its own, so no test sees another's tasks);
        // otherwise a dev server of this test's own.
        let (env, temporal_address) = match std::env::var("SIGMA_TEST_TEMPORAL_ADDRESS") {
            Ok(address) if !address.is_empty() => (None, address),
            _ => {
                let (env, port) = start_own_temporal().await?;
                (Some(env), format!("http://127.0.0.1:{port}"))
            }
        };
        let mut settings = Settings::default();
        settings.temporal.address = temporal_address;
        settings.temporal.task_queue_prefix = format!("t{}.", &run_id[..12]);
        let base = env_or(
            "SIGMA_TEST_DATABASE_URL",
            "postgres://postgres@127.0.0.1:5432/postgres",
        );
        // `scripts/test.sh` names its run, so it drops exactly the databases of that run (those a
        // panicking test could not drop itself), never another run's.
        let test_run = std::env::var("SIGMA_TEST_RUN")
            .ok()
            .filter(|run| !run.is_empty());
        let db_name = match &test_run {
            Some(run) => format!("sigma_test_{run}_{run_id}"),
            None => format!("sigma_test_{run_id}"),
        };
        let db_url = format!(
            "{}/{db_name}",
            base.rsplit_once('/').map(|(b, _)| b).unwrap_or(&base)
        );
        settings.database.url = SecretString::from(db_url);
        settings.database.max_connections = 5;
        settings.blob.endpoint = server_env("SIGMA_TEST_S3_ENDPOINT")?;
        settings.blob.access_key = env_or("SIGMA_TEST_S3_ACCESS_KEY", "sigma");
        settings.blob.secret_key =
            SecretString::from(env_or("SIGMA_TEST_S3_SECRET_KEY", "sigma-test-secret"));
        settings.blob.bucket = format!("t-{}", &run_id[..20]);
        settings.smtp.port = server_env("SIGMA_TEST_SMTP_PORT")?.parse()?;
        settings.pipeline.panel_size = options.panel_size;
        settings.pipeline.llm_timeout_secs = 20;
        settings.pipeline.llm_answer_attempts = 2;
        settings.pipeline.activity_max_attempts = 3;
        settings.pipeline.activity_initial_retry_ms = 200;
        settings.pipeline.heartbeat_timeout_secs = 3;
        // A signing key of this test's own.
        let key_dir = std::env::temp_dir().join(format!("sigma-test-keys-{run_id}"));
        std::fs::create_dir_all(&key_dir)?;
        std::fs::write(
            key_dir.join("test.pem"),
            sigma_shared::attestation::generate_private_key_pem()?,
        )?;
        settings.signing.key_dir = Some(key_dir);
        settings.signing.active_key = Some("test".into());
        // Tests hammer the public plane from one address.
        settings.public.reads_per_minute = 60_000;
        settings.public.read_burst = 10_000;
        settings.public.view_flush_ms = 100;
        // Declared endpoints on public hosts do not resolve on test machines; a probe that
        // could reach one gives up soon.
        settings.probe.timeout_ms = 3000;
        (options.tweak)(&mut settings);

        match &test_run {
            Some(run) => copy_run_template(&base, run, &db_name).await?,
            None => {
                sigma_shared::db::create_database_if_missing(&settings.database).await?;
                let db = sigma_shared::db::connect(&settings.database).await?;
                sigma_shared::db::migrate(&db).await?;
                db.close().await;
            }
        }
        let db = sigma_shared::db::connect(&settings.database).await?;
        BlobStore::new(&settings.blob).ensure_bucket().await?;
        let temporal = match &env {
            Some(env) => env.client().clone(),
            None => worker::connect(&settings.temporal, "sigma-test").await?,
        };
        worker::ensure_search_attributes(&temporal, &settings.temporal.namespace).await?;

        let llm = ScriptedLlm::start().await?;
        // The manifest assistant is the scripted LLM too, as its own model; plain HTTP here.
        settings.portal.manifest_llm_url = llm.base_url.clone();
        settings.portal.manifest_model = MANIFEST_MODEL.into();
        settings.portal.manifest_response_format = "json_schema".into();
        settings.portal.secure_cookies = false;
        for id in &options.validators {
            llm.list_model(&model_of(id));
            sqlx::query("insert into validator (validator_id, display_name, model, provider_url, response_format) values ($1, $1, $2, $3, 'json_schema')")
                .bind(id)
                .bind(model_of(id))
                .bind(&llm.base_url)
                .execute(&db)
                .await?;
        }
        let developer_email = format!("dev-{}@test.sigma", &run_id[..12]);
        let developer_token =
            sigma_api::auth::developer_token(&db, &developer_email, None, "test").await?;
        let operator_token =
            sigma_api::auth::operator_token(&db, &format!("op-{}", &run_id[..8])).await?;

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base_url = format!("http://{}", listener.local_addr()?);
        settings.api.public_base_url = base_url.clone();
        let settings = Arc::new(settings);
        let state = sigma_api::AppState::new(db.clone(), temporal.clone(), settings.clone())?;
        tokio::spawn(sigma_api::serve(listener, state, std::future::pending()));

        let workers = (!options.queues.is_empty())
            .then(|| Workers::start(settings.clone(), options.queues.clone()));
        Ok(Self {
            base_url,
            http: reqwest::Client::new(),
            db,
            settings,
            temporal,
            llm,
            developer_email,
            developer_token,
            operator_token,
            maildev_url: server_env("SIGMA_TEST_MAILDEV_URL")?,
            workers,
            env,
            db_name,
            admin_url: base,
        })
    }

    /// Another API process on the same database and Temporal, as a second replica would be.
    pub async fn spawn_api_replica(&self) -> anyhow::Result<String> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base_url = format!("http://{}", listener.local_addr()?);
        let db = sigma_shared::db::connect(&self.settings.database).await?;
        let state = sigma_api::AppState::new(db, self.temporal.clone(), self.settings.clone())?;
        tokio::spawn(sigma_api::serve(listener, state, std::future::pending()));
        Ok(base_url)
    }

    /// A `sigma api` process (`sigma_bin`, the test's `CARGO_BIN_EXE_sigma`) on this stack (port 0, read from its "API listening" log line),
    /// with extra environment such as a `SIGMA_TEST_FAULT` point. Killed when dropped.
    pub async fn spawn_api_process(
        &self,
        sigma_bin: &str,
        extra_env: &[(&str, &str)],
    ) -> anyhow::Result<(tokio::process::Child, String)> {
        use tokio::io::AsyncBufReadExt;
        let mut child = tokio::process::Command::new(sigma_bin)
            .arg("api")
            .envs(self.process_env())
            .env("SIGMA__LOG__FORMAT", "json")
            .env("SIGMA__API__BIND", "127.0.0.1:0")
            .envs(extra_env.iter().copied())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start `sigma api`")?;
        let mut lines =
            tokio::io::BufReader::new(child.stderr.take().context("no stderr")?).lines();
        let addr = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await? {
                let Ok(event) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                if event["message"] == "API listening"
                    && let Some(addr) = event["addr"].as_str()
                {
                    return Ok::<_, anyhow::Error>(addr.to_owned());
                }
            }
            anyhow::bail!("`sigma api` exited before listening")
        })
        .await
        .context("`sigma api` did not start listening")??;
        // Keep draining its log so the process never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok((child, format!("http://{addr}")))
    }

    /// Environment for a `sigma` process that joins this stack (e.g. a worker to be killed).
    pub fn process_env(&self) -> Vec<(String, String)> {
        use secrecy::ExposeSecret;
        let s = &self.settings;
        vec![
            (
                "SIGMA__DATABASE__URL".into(),
                s.database.url.expose_secret().to_owned(),
            ),
            (
                "SIGMA__TEMPORAL__ADDRESS".into(),
                s.temporal.address.clone(),
            ),
            (
                "SIGMA__TEMPORAL__TASK_QUEUE_PREFIX".into(),
                s.temporal.task_queue_prefix.clone(),
            ),
            ("SIGMA__BLOB__ENDPOINT".into(), s.blob.endpoint.clone()),
            ("SIGMA__BLOB__BUCKET".into(), s.blob.bucket.clone()),
            ("SIGMA__BLOB__ACCESS_KEY".into(), s.blob.access_key.clone()),
            (
                "SIGMA__BLOB__SECRET_KEY".into(),
                s.blob.secret_key.expose_secret().to_owned(),
            ),
            ("SIGMA__SMTP__PORT".into(), s.smtp.port.to_string()),
            (
                "SIGMA__SIGNING__KEY_DIR".into(),
                s.signing
                    .key_dir
                    .as_ref()
                    .map(|d| d.display().to_string())
                    .unwrap_or_default(),
            ),
            (
                "SIGMA__SIGNING__ACTIVE_KEY".into(),
                s.signing.active_key.clone().unwrap_or_default(),
            ),
            ("SIGMA__LOG__FORMAT".into(), "pretty".into()),
        ]
    }

    /// The blob store this test's stack writes to.
    pub fn deps_blob(&self) -> BlobStore {
        BlobStore::new(&self.settings.blob)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// The developer plane with a portal session or an API token.
    pub fn dev(&self, token: &str) -> PlaneClient {
        PlaneClient::new(self.http.clone(), &self.base_url, client::DEV, Some(token))
    }

    /// The operator plane with a console session or an operator token.
    pub fn operator(&self, token: &str) -> PlaneClient {
        PlaneClient::new(
            self.http.clone(),
            &self.base_url,
            client::OPERATOR,
            Some(token),
        )
    }

    /// The developer plane before sign-in (login endpoints).
    pub fn public_dev(&self) -> PlaneClient {
        PlaneClient::new(self.http.clone(), &self.base_url, client::DEV, None)
    }

    /// The operator plane before sign-in (console login).
    pub fn public_operator(&self) -> PlaneClient {
        PlaneClient::new(self.http.clone(), &self.base_url, client::OPERATOR, None)
    }

    /// The public plane, without credentials.
    pub fn public(&self) -> PlaneClient {
        PlaneClient::new(self.http.clone(), &self.base_url, client::PUBLIC, None)
    }

    /// POST a bundle as multipart form data.
    pub async fn submit(
        &self,
        category: &str,
        bundle: Vec<u8>,
        metadata: Option<Value>,
        idempotency_key: Option<&str>,
    ) -> reqwest::Response {
        let mut form = reqwest::multipart::Form::new()
            .text("category", category.to_owned())
            .part(
                "bundle",
                reqwest::multipart::Part::bytes(bundle).file_name("bundle.tar.gz"),
            );
        if let Some(m) = metadata {
            form = form.text("metadata", m.to_string());
        }
        let mut request = self
            .http
            .post(self.url("/api/v1/sigma/dev/submissions"))
            .bearer_auth(&self.developer_token)
            .multipart(form);
        if let Some(key) = idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        request.send().await.expect("API reachable")
    }

    /// Submits and returns the new submission id, asserting 202.
    pub async fn submit_ok(&self, bundle: Vec<u8>) -> String {
        let response = self.submit("SKILL", bundle, None, None).await;
        let status = response.status();
        let body: Value = response.json().await.expect("JSON body");
        assert_eq!(status, 202, "submission refused: {body}");
        body["id"].as_str().expect("id").to_owned()
    }

    /// The submission's status as its developer reads it (whatever the answer's status).
    pub async fn submission(&self, id: &str) -> Value {
        self.dev(&self.developer_token)
            .call(
                reqwest::Method::GET,
                &format!("/submissions/{id}"),
                None::<&()>,
            )
            .await
            .1
    }

    /// GET a JSON body without credentials; `path` is the whole path, for the documents outside
    /// a plane (`/.well-known/…`, `/api/v1/openapi.json`). Prefer the typed plane clients.
    pub async fn public_json(&self, path: &str) -> Value {
        self.http
            .get(self.url(path))
            .send()
            .await
            .expect("API reachable")
            .json()
            .await
            .expect("JSON body")
    }

    /// Polls the projection until `stage` is reached.
    pub async fn wait_for_stage(&self, id: &str, stage: &str, timeout: Duration) -> Value {
        let start = Instant::now();
        loop {
            let s = self.submission(id).await;
            if s["stage"] == stage {
                return s;
            }
            assert!(
                s["stage"] != "FAILED" || stage == "FAILED",
                "submission failed: {s}"
            );
            assert!(
                start.elapsed() < timeout,
                "stage {stage} not reached in {timeout:?}; last: {s}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The operator's decision on an escalated submission; the status and the answer.
    pub async fn decide(&self, id: &str, decision: &str, reason: &str) -> (u16, Value) {
        self.operator(&self.operator_token)
            .call(
                reqwest::Method::POST,
                &format!("/submissions/{id}/decision"),
                Some(&serde_json::json!({"decision": decision, "reason": reason})),
            )
            .await
    }

    /// Emails maildev holds for this test's developer.
    pub async fn emails(&self) -> Vec<Value> {
        let all: Vec<Value> = self
            .http
            .get(format!("{}/api/email", self.maildev_url))
            .send()
            .await
            .expect("maildev")
            .json()
            .await
            .expect("maildev JSON");
        all.into_iter()
            .filter(|m| {
                m["to"].as_array().is_some_and(|to| {
                    to.iter()
                        .any(|t| t["address"] == self.developer_email.as_str())
                })
            })
            .collect()
    }

    pub async fn wait_for_email(&self, timeout: Duration) -> Vec<Value> {
        let start = Instant::now();
        loop {
            let emails = self.emails().await;
            if !emails.is_empty() || start.elapsed() > timeout {
                return emails;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Emails maildev holds for `address`, oldest first.
    pub async fn emails_to(&self, address: &str) -> Vec<Value> {
        let all: Vec<Value> = self
            .http
            .get(format!("{}/api/email", self.maildev_url))
            .send()
            .await
            .expect("maildev")
            .json()
            .await
            .expect("maildev JSON");
        all.into_iter()
            .filter(|m| {
                m["to"]
                    .as_array()
                    .is_some_and(|to| to.iter().any(|t| t["address"] == address))
            })
            .collect()
    }

    /// Waits until maildev holds more than `seen` emails for `address`; returns the newest.
    pub async fn next_email_to(&self, address: &str, seen: usize) -> Value {
        let start = Instant::now();
        loop {
            let emails = self.emails_to(address).await;
            if emails.len() > seen {
                return emails.last().cloned().expect("an email");
            }
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "no new email for {address}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Starts an email login and returns the six-digit code from the email maildev received.
    pub async fn login_code(&self, address: &str) -> String {
        let seen = self.emails_to(address).await.len();
        let _: Value = self
            .public_dev()
            .post(
                "/auth/email/start",
                &serde_json::json!({ "email": address }),
                202,
            )
            .await;
        let email = self.next_email_to(address, seen).await;
        code_in(email["text"].as_str().unwrap_or_default())
            .unwrap_or_else(|| panic!("no code in the login email: {email}"))
    }

    /// Signs in by email (code read from maildev) and returns the portal session token.
    pub async fn login(&self, address: &str) -> String {
        let code = self.login_code(address).await;
        let body: Value = self
            .public_dev()
            .post(
                "/auth/email/verify",
                &serde_json::json!({ "email": address, "code": code }),
                200,
            )
            .await;
        body["token"].as_str().expect("session token").to_owned()
    }

    /// Seeds `count` APPROVED certificates of this app's developer straight into the database
    /// (submission and certificate rows, skill names `{prefix}-1`…, ids in order and unique to
    /// this app), expiring and
    /// due for renewal at these Postgres intervals from now: scale for sweeps and benchmarks
    /// without running the pipeline that many times.
    pub async fn seed_certificates(
        &self,
        prefix: &str,
        count: i64,
        category: &str,
        expires_in: &str,
        due_in: &str,
    ) -> anyhow::Result<()> {
        let developer: uuid::Uuid =
            sqlx::query_scalar("select developer_id from developer where email = $1")
                .bind(&self.developer_email)
                .fetch_one(&self.db)
                .await?;
        sqlx::query(
            "insert into submission (submission_id, developer_id, category, skill_name, bundle_key, bundle_sha256,
                 bundle_bytes, bundle_format, workflow_id, stage, outcome)
             select id, $2, $3, $4 || '-' || n, 'bundles/' || $4, $4, 1, 'tar.gz', 'submission:' || id, 'DONE', 'APPROVED'
             from (select n, lpad(to_hex(n), 12, '0') || $5 as id from generate_series(1, $1) n) s",
        )
        .bind(count)
        .bind(developer)
        .bind(category)
        .bind(prefix)
        // Ids unique to this app: workflow ids derive from them, and a Temporal server outlives
        // one test or benchmark run.
        .bind(&uuid::Uuid::new_v4().simple().to_string()[..12])
        .execute(&self.db)
        .await?;
        sqlx::query(
            "insert into certificate (certificate_id, status, sealed, payload_hash, hash_algorithm, bundle_digest,
                 snapshot_key, developer_id, expires_at, renewal_due_at)
             select submission_id, 'APPROVED', jsonb_build_object('skillName', skill_name), $2,
                 'keccak256-canonical-json-v1', $2, 'certificates/' || $2, $1,
                 now() + $3::interval, now() + $4::interval
             from submission where skill_name like $2 || '-%'",
        )
        .bind(developer)
        .bind(prefix)
        .bind(expires_in)
        .bind(due_in)
        .execute(&self.db)
        .await?;
        Ok(())
    }

    /// Creates an operator with a console password and returns a console session token.
    pub async fn console_session(&self) -> String {
        let name = format!(
            "console-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let password = "correct horse battery staple";
        sigma_api::auth::operator_login(&self.db, &name, password)
            .await
            .expect("operator login created");
        let body: Value = self
            .public_operator()
            .post(
                "/auth/login",
                &serde_json::json!({ "name": name, "password": password }),
                200,
            )
            .await;
        body["token"].as_str().expect("console token").to_owned()
    }

    /// How many runs Temporal's visibility shows under `workflow_id`. Visibility is eventually
    /// consistent, so this polls (up to 15 s) until at least `at_least` show, then counts.
    pub async fn runs_of(&self, workflow_id: &str, at_least: usize) -> usize {
        use futures::StreamExt;
        let start = Instant::now();
        loop {
            let runs = self
                .temporal
                .list_workflows(format!("WorkflowId = '{workflow_id}'"), Default::default())
                .collect::<Vec<_>>()
                .await
                .len();
            if runs >= at_least || start.elapsed() > Duration::from_secs(15) {
                return runs;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops the in-process workers (as if their process died).
    pub fn stop_workers(&mut self) {
        self.workers.take();
    }

    /// Stops the workers and the Temporal server and drops this test's database.
    pub async fn shutdown(mut self) {
        self.workers.take();
        // Schedules a test created would go on firing on the run's shared server.
        if let Ok(jobs) = sigma_workflows::schedules::jobs(&self.settings) {
            for job in jobs {
                let id = sigma_workflows::schedules::schedule_id(&self.settings, job.name);
                let _ = self
                    .temporal
                    .get_schedule_handle(id)
                    .delete(Default::default())
                    .await;
            }
        }
        if let Some(env) = self.env.take() {
            let _ = env.shutdown().await;
        }
        self.db.close().await;
        if let Ok(admin) = PgPool::connect(&self.admin_url).await {
            // `with (force)`: the API task of this test may still hold connections.
            let _ = sqlx::query(&format!(
                "drop database if exists \"{}\" with (force)",
                self.db_name
            ))
            .execute(&admin)
            .await;
            admin.close().await;
        }
    }
}
