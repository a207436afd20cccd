//! Measures the whole pipeline on real servers with an instant scripted LLM:
//! 1. latency from POST to certificate (stage DONE, APPROVED) over sequential submissions;
//! 2. sustained throughput with concurrent clients, each submitting and waiting for completion.
//!
//! Run through `bench/run.sh`, which starts the servers this needs.

use std::time::{Duration, Instant};

use sigma_testkit::{Options, TestApp, bundle};

async fn submit_and_wait(app: &TestApp, n: usize) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let id = app.submit_ok(bundle::weather_skill_variant(n)).await;
    loop {
        let s = app.submission(&id).await;
        if s["stage"] == "DONE" {
            anyhow::ensure!(
                s["outcome"] == "APPROVED" && s["certificateId"].is_string(),
                "unexpected outcome: {s}"
            );
            return Ok(start.elapsed());
        }
        anyhow::ensure!(s["stage"] != "FAILED", "submission failed: {s}");
        anyhow::ensure!(start.elapsed() < Duration::from_secs(120), "timed out: {s}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let sequential = args.first().copied().unwrap_or(20);
    let clients = args.get(1).copied().unwrap_or(4);
    let per_client = args.get(2).copied().unwrap_or(10);
    let app = TestApp::spawn_with(Options::default()).await?;
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    println!(
        "machine: {cores} cores; build profile: {}",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    println!(
        "pipeline per submission: sandbox, 2 phases x 2 validators (scripted, instant LLM), verdict, certificate, email"
    );

    // Warm-up: first-use costs (connections, worker caches) are not what we measure.
    submit_and_wait(&app, 0).await?;

    let mut latencies = Vec::with_capacity(sequential);
    for n in 0..sequential {
        latencies.push(submit_and_wait(&app, 1 + n).await?);
    }
    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "latency POST -> certificate over {sequential} sequential submissions: median {:.0} ms, p95 {:.0} ms, min {:.0} ms, max {:.0} ms",
        ms(percentile(&latencies, 50.0)),
        ms(percentile(&latencies, 95.0)),
        ms(latencies[0]),
        ms(*latencies.last().unwrap())
    );

    let start = Instant::now();
    let runs = (0..clients).map(|c| {
        let app = &app;
        async move {
            let mut done = Vec::new();
            for i in 0..per_client {
                done.push(submit_and_wait(app, 1000 + c * per_client + i).await?);
            }
            anyhow::Ok(done)
        }
    });
    let mut all = Vec::new();
    for result in futures::future::join_all(runs).await {
        all.extend(result?);
    }
    let elapsed = start.elapsed();
    all.sort();
    println!(
        "throughput with {clients} concurrent clients x {per_client}: {} completed pipelines in {:.1} s = {:.2} submissions/s (latency under load: median {:.0} ms, p95 {:.0} ms)",
        all.len(),
        elapsed.as_secs_f64(),
        all.len() as f64 / elapsed.as_secs_f64(),
        ms(percentile(&all, 50.0)),
        ms(percentile(&all, 95.0))
    );
    app.shutdown().await;
    Ok(())
}
