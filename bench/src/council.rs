//! The council's parallel fan-out: with a scripted provider that takes 500 ms per call, each
//! phase's wall time (first vote scheduled → last vote completed, from the workflow history)
//! divided by the slowest single provider call in that phase (from the LLM usage ledger).
//! A perfectly parallel phase scores 1.0; a sequential one scores about the panel size.
//!
//! Run through `bench/run-council.sh`. Usage: council-bench [submissions=10] [panel=3] [delay_ms=500]

use std::collections::HashMap;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sigma_testkit::{Options, Reply, TestApp, bundle, model_of};

const VALIDATORS: [&str; 6] = ["v1", "v2", "v3", "v4", "v5", "v6"];

fn history(app: &TestApp, id: &str) -> anyhow::Result<Vec<Value>> {
    let cli = std::env::var("TEMPORAL_CLI")?;
    let address = app.settings.temporal.address.trim_start_matches("http://");
    let output = Command::new(cli)
        .args([
            "workflow",
            "show",
            "--workflow-id",
            &format!("submission:{id}"),
            "--address",
            address,
            "--output",
            "json",
        ])
        .output()?;
    anyhow::ensure!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let doc: Value = serde_json::from_slice(&output.stdout)?;
    Ok(doc["events"].as_array().cloned().unwrap_or_default())
}

fn time(event: &Value) -> anyhow::Result<DateTime<Utc>> {
    Ok(event["eventTime"].as_str().unwrap_or_default().parse()?)
}

/// First vote scheduled, last vote completed.
type Window = (DateTime<Utc>, DateTime<Utc>);

/// Per phase, its window.
fn phase_windows(events: &[Value]) -> anyhow::Result<HashMap<u8, Window>> {
    let mut scheduled: HashMap<String, (u8, DateTime<Utc>)> = HashMap::new();
    let mut windows: HashMap<u8, Window> = HashMap::new();
    for event in events {
        let kind = event["eventType"].as_str().unwrap_or_default();
        if kind == "EVENT_TYPE_ACTIVITY_TASK_SCHEDULED" {
            let attributes = &event["activityTaskScheduledEventAttributes"];
            if attributes["activityType"]["name"] != "audit.cast_vote" {
                continue;
            }
            let payload = attributes["input"]["payloads"][0]["data"]
                .as_str()
                .unwrap_or_default();
            let request: Value = serde_json::from_slice(
                &base64::engine::general_purpose::STANDARD.decode(payload)?,
            )?;
            let phase = request["phase"].as_u64().unwrap_or(0) as u8;
            let at = time(event)?;
            scheduled.insert(
                event["eventId"].as_str().unwrap_or_default().to_owned(),
                (phase, at),
            );
            let w = windows.entry(phase).or_insert((at, at));
            w.0 = w.0.min(at);
        } else if kind == "EVENT_TYPE_ACTIVITY_TASK_COMPLETED" {
            let id = event["activityTaskCompletedEventAttributes"]["scheduledEventId"]
                .as_str()
                .unwrap_or_default();
            if let Some((phase, _)) = scheduled.get(id) {
                let at = time(event)?;
                let w = windows.get_mut(phase).expect("scheduled first");
                w.1 = w.1.max(at);
            }
        }
    }
    Ok(windows)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let runs = args.first().copied().unwrap_or(10) as usize;
    let panel = args.get(1).copied().unwrap_or(3) as u32;
    let delay = Duration::from_millis(args.get(2).copied().unwrap_or(500));
    let app = TestApp::spawn_with(Options {
        validators: VALIDATORS.to_vec(),
        panel_size: panel,
        tweak: Arc::new(|s| s.log.filter = "warn".into()),
        ..Default::default()
    })
    .await?;
    for v in VALIDATORS {
        app.llm
            .fallback(&model_of(v), Reply::Delayed(delay, Box::new(Reply::safe())));
    }
    println!(
        "{runs} submissions, {panel} validators per phase, every provider call takes {} ms; {} build",
        delay.as_millis(),
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    let mut ratios: HashMap<u8, Vec<f64>> = HashMap::new();
    for n in 0..runs {
        let id = app.submit_ok(bundle::weather_skill_variant(1000 + n)).await;
        let done = app
            .wait_for_stage(&id, "DONE", Duration::from_secs(120))
            .await;
        anyhow::ensure!(done["outcome"] == "APPROVED", "{done}");
        let windows = phase_windows(&history(&app, &id)?)?;
        for (phase, (start, end)) in windows {
            let slowest: i32 = sqlx::query_scalar(
                "select max(latency_ms) from llm_usage where submission_id = $1 and phase = $2",
            )
            .bind(&id)
            .bind(phase as i16)
            .fetch_one(&app.db)
            .await?;
            let wall = (end - start).num_milliseconds() as f64;
            ratios.entry(phase).or_default().push(wall / slowest as f64);
        }
    }
    println!("| phase | median wall / slowest call | worst | runs |");
    println!("|---|---|---|---|");
    for phase in [1u8, 2] {
        let mut r = ratios.remove(&phase).unwrap_or_default();
        r.sort_by(f64::total_cmp);
        anyhow::ensure!(!r.is_empty(), "phase {phase} has no votes");
        println!(
            "| {phase} | {:.3} | {:.3} | {} |",
            r[r.len() / 2],
            r[r.len() - 1],
            r.len()
        );
    }
    app.shutdown().await;
    Ok(())
}
