//! The monitor sweep at scale: seeds N monitored certificates (10,000 by default), each with one
//! declared endpoint on a local HTTP server, all due now; starts one sweep run as the
//! `sigma-monitor-sweep` schedule would, and prints how long the sweep takes to start one check
//! workflow per certificate, then how long until every check has probed its endpoint and
//! recorded its result. A second sweep shows an overlapping firing that finds nothing due.
//!
//! Run through `bench/run-monitor.sh`, which starts the servers this needs.
//! Usage: monitor-bench [certificates=10000]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sigma_testkit::{Options, TestApp};
use sigma_workflows::MonitorSweepWorkflow;
use sigma_workflows::lifecycle::{MonitorSweepInput, MonitorSweepReport};
use temporalio_client::{WorkflowGetResultOptions, WorkflowStartOptions};

async fn seed(app: &TestApp, count: i64, endpoint: &str) -> anyhow::Result<()> {
    app.seed_certificates("bench", count, "SKILL_API", "300 days", "270 days")
        .await?;
    // One healthy GET endpoint each, as issuance records it, due now.
    sqlx::query(
        "insert into monitor (certificate_id, checks, checks_remaining, interval_secs, next_check_at, baseline)
         select certificate_id, array['ENDPOINTS'], 90, 86400, now() - interval '1 second',
             jsonb_build_object('endpoints', jsonb_build_array(jsonb_build_object(
                 'url', $1 || '/' || certificate_id, 'method', 'GET', 'authenticated', false,
                 'status', 200, 'finalHost', '127.0.0.1', 'healthy', true)))
         from certificate",
    )
    .bind(endpoint)
    .execute(&app.db)
    .await?;
    Ok(())
}

async fn sweep(app: &TestApp, run: &str) -> anyhow::Result<(Duration, MonitorSweepReport)> {
    let queue = format!("{}ops", app.settings.temporal.task_queue_prefix);
    let start = Instant::now();
    let handle = app
        .temporal
        .start_workflow(
            MonitorSweepWorkflow::run,
            MonitorSweepInput::default(),
            WorkflowStartOptions::new(queue, format!("bench-monitor-sweep-{run}")).build(),
        )
        .await?;
    let report = handle
        .get_result(WorkflowGetResultOptions::default())
        .await?;
    Ok((start.elapsed(), report))
}

/// The endpoints every monitored certificate declares: a local server counting probes.
async fn serve(hits: Arc<AtomicUsize>) -> anyhow::Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let app = axum::Router::new().route(
        "/{certificate}",
        axum::routing::get(move || {
            let hits = hits.clone();
            async move {
                hits.fetch_add(1, Ordering::Relaxed);
                axum::Json(serde_json::json!({"ok": true}))
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(address)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let count: i64 = std::env::args()
        .nth(1)
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(10_000);
    let hits = Arc::new(AtomicUsize::new(0));
    let address = serve(hits.clone()).await?;
    let app = TestApp::spawn_with(Options {
        tweak: Arc::new(move |s| s.probe.allow_addresses = vec![address.to_string()]),
        ..Default::default()
    })
    .await?;
    let seeding = Instant::now();
    seed(&app, count, &format!("http://{address}")).await?;
    println!(
        "seeded {count} monitored certificates, each with one endpoint due now, in {:.1} s",
        seeding.elapsed().as_secs_f64()
    );
    let (took, report) = sweep(&app, "1").await?;
    println!(
        "monitor sweep: started {} check workflows ({} already running) in {:.1} s over {} runs \
         (continue-as-new every {} items) — {:.0} certificates/s",
        report.started,
        report.already_started,
        took.as_secs_f64(),
        report.runs,
        app.settings.ops.sweep_items_per_run,
        f64::from(report.started) / took.as_secs_f64()
    );
    let checking = Instant::now();
    loop {
        let n: i64 = sqlx::query_scalar("select count(*) from monitor_check")
            .fetch_one(&app.db)
            .await?;
        if n >= count || checking.elapsed() > Duration::from_secs(900) {
            let ok: i64 =
                sqlx::query_scalar("select count(*) from monitor_check where result = 'OK'")
                    .fetch_one(&app.db)
                    .await?;
            println!(
                "every check probed and recorded {:.1} s after the sweep ended ({n} of {count}, {ok} OK, \
                 {} probes served) — one sweep end to end: {:.1} s",
                checking.elapsed().as_secs_f64(),
                hits.load(Ordering::Relaxed),
                (took + checking.elapsed()).as_secs_f64()
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (again, report) = sweep(&app, "2").await?;
    println!(
        "a second sweep: {} started, {:.2} s (nothing is due until the next interval)",
        report.started,
        again.as_secs_f64()
    );
    app.shutdown().await;
    Ok(())
}
