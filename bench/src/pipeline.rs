//! Measures the whole pipeline on real servers with an instant scripted LLM:
//! 1. latency from POST to certificate (stage DONE, APPROVED) over sequential submissions, and
//!    where that time goes, read from the runs' Temporal histories (`bench/history-breakdown.py`);
//! 2. sustained throughput with N concurrent clients for a fixed time, each submitting and waiting
//!    for completion, with the latency under that load.
//!
//! `--split SIGMA_BIN` runs the API and each queue's worker as separate `sigma` processes (the
//! scale-out shape); otherwise they run inside this process.
//!
//! Usage: pipeline-bench [--sequential 20] [--clients 4,16] [--seconds 15] [--poll-ms 50]
//!                       [--split SIGMA_BIN]
//! Run through `bench/run.sh`, which starts the servers this needs.

use std::time::{Duration, Instant};

use anyhow::Context;
use sigma_testkit::{Options, TestApp, bundle};

/// Submits a skill and polls its status every `poll` until it is done.
async fn submit_and_wait(app: &TestApp, n: usize, poll: Duration) -> anyhow::Result<Duration> {
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
        tokio::time::sleep(poll).await;
    }
}

/// How often a client asks for its submission's status: often when one submission is measured
/// alone; less under load, where sixteen clients asking every 10 ms would send 1,600 requests a
/// second, more work than the submissions themselves (the latency figures then carry up to 50 ms
/// of polling delay). `--poll-ms` sets the latter.
const ALONE_POLL: Duration = Duration::from_millis(10);
const LOADED_POLL_MS: u64 = 50;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

struct Args {
    sequential: usize,
    clients: Vec<usize>,
    seconds: u64,
    poll: Duration,
    split: Option<String>,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        sequential: 20,
        clients: vec![4, 16],
        seconds: 15,
        poll: Duration::from_millis(LOADED_POLL_MS),
        split: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--sequential" => args.sequential = value()?.parse()?,
            "--clients" => {
                args.clients = value()?
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()?
            }
            "--seconds" => args.seconds = value()?.parse()?,
            "--poll-ms" => args.poll = Duration::from_millis(value()?.parse()?),
            "--split" => args.split = Some(value()?),
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    Ok(args)
}

/// `sigma api` and one `sigma worker --queue Q` per queue, on the test app's stack; the app's
/// requests then go to that API process.
async fn split_processes(
    app: &mut TestApp,
    sigma: &str,
) -> anyhow::Result<Vec<tokio::process::Child>> {
    let (api, api_url) = app
        .spawn_api_process(
            sigma,
            &[("SIGMA__LOG__FILTER", "warn,sigma_api=info,tower_http=warn")],
        )
        .await?;
    app.base_url = api_url;
    let mut children = vec![api];
    for queue in ["ops", "sandbox", "audit"] {
        children.push(
            tokio::process::Command::new(sigma)
                .args(["worker", "--queue", queue])
                .envs(app.process_env())
                .env("SIGMA__LOG__FILTER", "warn")
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("cannot start `sigma worker --queue {queue}`"))?,
        );
    }
    Ok(children)
}

/// Prints where the time of the latest `count` completed submissions went, from their histories.
fn breakdown(app: &TestApp, count: usize) -> anyhow::Result<()> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/history-breakdown.py");
    let address = app
        .settings
        .temporal
        .address
        .trim_start_matches("http://")
        .to_owned();
    let query = format!(
        "WorkflowType = 'SubmissionWorkflow' AND ExecutionStatus = 'Completed' AND TaskQueue = '{}ops'",
        app.settings.temporal.task_queue_prefix
    );
    let status = std::process::Command::new("python3")
        .args([script, "--address", &address, "--limit"])
        .arg(count.to_string())
        .args(["--query", &query])
        .status()
        .context("cannot run bench/history-breakdown.py")?;
    anyhow::ensure!(status.success(), "history-breakdown.py failed");
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let options = if args.split.is_some() {
        Options::without_workers()
    } else {
        Options::default()
    };
    let mut app = TestApp::spawn_with(options).await?;
    let processes = match &args.split {
        Some(sigma) => split_processes(&mut app, sigma).await?,
        None => Vec::new(),
    };
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    println!(
        "machine: {cores} cores; build profile: {}; shape: {}",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        match args.split {
            Some(_) => "separate processes (sigma api, sigma worker --queue ops|sandbox|audit)",
            None => "one process (API and the three queues' workers)",
        }
    );
    println!(
        "pipeline per submission: sandbox, 2 phases x 2 validators (scripted, instant LLM), verdict, certificate, email"
    );

    // Warm-up: first-use costs (connections, worker caches) are not what we measure.
    for n in 0..3 {
        submit_and_wait(&app, n, ALONE_POLL).await?;
    }

    let mut latencies = Vec::with_capacity(args.sequential);
    for n in 0..args.sequential {
        latencies.push(submit_and_wait(&app, 10 + n, ALONE_POLL).await?);
    }
    latencies.sort();
    if let (Some(min), Some(max)) = (latencies.first(), latencies.last()) {
        println!(
            "\nlatency POST -> certificate over {} sequential submissions: median {:.0} ms, p95 {:.0} ms, min {:.0} ms, max {:.0} ms",
            args.sequential,
            ms(percentile(&latencies, 50.0)),
            ms(percentile(&latencies, 95.0)),
            ms(*min),
            ms(*max)
        );
        // Visibility is written asynchronously: give the last runs a moment to be listed.
        tokio::time::sleep(Duration::from_millis(500)).await;
        breakdown(&app, args.sequential)?;
    }

    let mut next = 10_000;
    for &clients in &args.clients {
        let window = Duration::from_secs(args.seconds);
        let start = Instant::now();
        let poll = args.poll;
        let runs = (0..clients).map(|c| {
            let app = &app;
            let first = next + c * 100_000;
            async move {
                let mut done = Vec::new();
                while start.elapsed() < window {
                    done.push(submit_and_wait(app, first + done.len(), poll).await?);
                }
                anyhow::Ok(done)
            }
        });
        let mut all = Vec::new();
        for result in futures::future::join_all(runs).await {
            all.extend(result?);
        }
        let elapsed = start.elapsed();
        next += clients * 100_000;
        all.sort();
        println!(
            "\nsustained with {clients} concurrent clients for {}s, polling every {} ms: {} completed pipelines in {:.1} s = {:.2} submissions/s (latency under load: median {:.0} ms, p95 {:.0} ms)",
            args.seconds,
            args.poll.as_millis(),
            all.len(),
            elapsed.as_secs_f64(),
            all.len() as f64 / elapsed.as_secs_f64(),
            ms(percentile(&all, 50.0)),
            ms(percentile(&all, 95.0))
        );
    }
    // The worker processes go first: they would otherwise retry against a dropped database.
    drop(processes);
    app.shutdown().await;
    Ok(())
}
