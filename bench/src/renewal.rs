//! The renewal sweep at scale: seeds N certificates (10,000 by default) due for renewal, starts
//! one sweep run as the `sigma-renewal-sweep` schedule would, and prints how long the sweep takes
//! to page through them and start one renewal workflow each (continuing as new every
//! `ops.sweep_items_per_run`), then how long until every renewal has recorded itself. A second
//! sweep over the same certificates shows the cost of an overlapping firing that finds nothing.
//!
//! Run through `bench/run-renewal.sh`, which starts the servers this needs.
//! Usage: renewal-bench [certificates=10000]

use std::time::{Duration, Instant};

use sigma_testkit::{Options, TestApp};
use sigma_workflows::RenewalSweepWorkflow;
use sigma_workflows::lifecycle::{RenewalSweepInput, RenewalSweepReport};
use temporalio_client::{WorkflowGetResultOptions, WorkflowStartOptions};

async fn seed(app: &TestApp, count: i64) -> anyhow::Result<()> {
    // Due tomorrow, inside the reminder lead: every one is the sweep's to start.
    app.seed_certificates("bench", count, "SKILL", "31 days", "1 day")
        .await?;
    Ok(())
}

async fn sweep(app: &TestApp, run: &str) -> anyhow::Result<(Duration, RenewalSweepReport)> {
    let queue = format!("{}ops", app.settings.temporal.task_queue_prefix);
    let start = Instant::now();
    let handle = app
        .temporal
        .start_workflow(
            RenewalSweepWorkflow::run,
            RenewalSweepInput::default(),
            WorkflowStartOptions::new(queue, format!("bench-renewal-sweep-{run}")).build(),
        )
        .await?;
    let report = handle
        .get_result(WorkflowGetResultOptions::default())
        .await?;
    Ok((start.elapsed(), report))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let count: i64 = std::env::args()
        .nth(1)
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(10_000);
    let app = TestApp::spawn_with(Options::default()).await?;
    let seeding = Instant::now();
    seed(&app, count).await?;
    println!(
        "seeded {count} certificates due for renewal in {:.1} s",
        seeding.elapsed().as_secs_f64()
    );
    let (took, report) = sweep(&app, "1").await?;
    println!(
        "renewal sweep: started {} renewal workflows ({} already running) in {:.1} s over {} runs \
         (continue-as-new every {} items) — {:.0} certificates/s",
        report.started,
        report.already_started,
        took.as_secs_f64(),
        report.runs,
        app.settings.ops.sweep_items_per_run,
        f64::from(report.started) / took.as_secs_f64()
    );
    let opened = Instant::now();
    loop {
        let n: i64 = sqlx::query_scalar("select count(*) from renewal")
            .fetch_one(&app.db)
            .await?;
        if n >= count || opened.elapsed() > Duration::from_secs(600) {
            println!(
                "every renewal recorded itself {:.1} s after the sweep ended ({n} of {count})",
                opened.elapsed().as_secs_f64()
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (again, report) = sweep(&app, "2").await?;
    println!(
        "a second sweep over the same certificates: {} started, {:.2} s (it finds nothing to do)",
        report.started,
        again.as_secs_f64()
    );
    app.shutdown().await;
    Ok(())
}
