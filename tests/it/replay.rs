//! The determinism guard: recorded workflow histories must replay against the current code.
//! Histories under tests/fixtures/histories are committed; set SIGMA_RECORD_HISTORIES=1 to
//! record fresh ones from this run.

use std::path::PathBuf;
use std::time::Duration;

use sigma_testkit::{Reply, TestApp, bundle, model_of};
use sigma_workflows::SubmissionWorkflow;
use temporalio_client::WorkflowHistory;
use temporalio_sdk::workflow_replayer::{WorkflowReplayer, WorkflowReplayerOptions};

pub(crate) fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/histories")
}

pub(crate) fn replayer() -> WorkflowReplayer {
    WorkflowReplayer::new(
        WorkflowReplayerOptions::new()
            .register_workflow::<SubmissionWorkflow>()
            .unwrap()
            .build(),
    )
    .unwrap()
}

/// Waits for the latest run of `id` to close, replays its history, and records it as a fixture
/// when `SIGMA_RECORD_HISTORIES` is set.
pub(crate) async fn record_and_replay(app: &TestApp, id: &str, fixture: &str) -> Vec<u8> {
    let handle = app
        .temporal
        .get_workflow_handle::<sigma_workflows::SubmissionWorkflow>(format!("submission:{id}"));
    let start = std::time::Instant::now();
    while handle.describe(Default::default()).await.unwrap().status()
        == temporalio_client::WorkflowExecutionStatus::Running
    {
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "the run did not close"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let json = handle
        .fetch_history(Default::default())
        .to_json()
        .await
        .unwrap();
    replayer()
        .replay_workflow(temporalio_client::WorkflowHistory::from_json(&json).unwrap())
        .await
        .unwrap();
    if std::env::var_os("SIGMA_RECORD_HISTORIES").is_some() {
        std::fs::write(fixtures().join(fixture), &json).unwrap();
    }
    json
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_histories_replay_against_the_current_workflow_code() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixtures())
        .expect("fixtures directory")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    // Current-shape histories (including a replaced validator) plus `v1-*`, recorded before
    // projections became local activities (the `local-projection-activities` patch), and `v2-*`,
    // recorded before validator replacement, plugins and families, and `v3-row-first-*`,
    // recorded before intake moved into the run (no `intake.record` step), and
    // `v4-remote-ops-*`, recorded before the other ops steps became local activities (the
    // `local-ops-activities` patch): runs in flight across those changes must still replay.
    assert!(
        files.len() >= 27,
        "expected committed histories (approved, rejected, escalated; both shapes) in {}",
        fixtures().display()
    );
    let replayer = replayer();
    for file in files {
        let json = std::fs::read(&file).unwrap();
        let history = WorkflowHistory::from_json(&json).unwrap();
        replayer
            .replay_workflow(history)
            .await
            .unwrap_or_else(|e| panic!("{} no longer replays: {e}", file.display()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_histories_of_every_path_replay_and_can_be_recorded() {
    let app = TestApp::spawn().await.unwrap();
    let approved = app.submit_ok(bundle::weather_skill()).await;
    app.wait_for_stage(&approved, "DONE", Duration::from_secs(60))
        .await;
    let rejected = app.submit_ok(bundle::tar_gz(&[("../escape", b"x")])).await;
    app.wait_for_stage(&rejected, "DONE", Duration::from_secs(60))
        .await;
    app.llm.fallback(&model_of("v2"), Reply::unsafe_());
    let escalated = app.submit_ok(bundle::weather_skill_variant(7)).await;
    app.wait_for_stage(&escalated, "AWAITING_OPERATOR", Duration::from_secs(60))
        .await;
    let (status, decided) = app
        .decide(&escalated, "REJECTED", "confirmed the UNSAFE finding")
        .await;
    assert_eq!(status, 200, "{decided}");
    app.wait_for_stage(&escalated, "DONE", Duration::from_secs(60))
        .await;
    // A provider down: its validator is replaced from the spare ones, a draw that must replay.
    for spare in ["v5", "v6"] {
        sqlx::query("insert into validator (validator_id, display_name, model, provider_url, model_family) values ($1, $1, $2, $3, 'spare')")
            .bind(spare)
            .bind(model_of(spare))
            .bind(&app.llm.base_url)
            .execute(&app.db)
            .await
            .unwrap();
    }
    sqlx::query(
        "update validator set weight = case when validator_id = 'v1' then 1000000 else 1 end",
    )
    .execute(&app.db)
    .await
    .unwrap();
    app.llm.fallback(&model_of("v2"), Reply::safe());
    app.llm.fallback(&model_of("v1"), Reply::Status(503));
    let replaced = app.submit_ok(bundle::weather_skill_variant(8)).await;
    let done = app
        .wait_for_stage(&replaced, "DONE", Duration::from_secs(90))
        .await;
    assert_eq!(done["outcome"], "APPROVED", "{done}");
    let substitutes: i64 = sqlx::query_scalar(
        "select count(*) from audit_vote v join audit_round r using (round_id) where r.submission_id = $1 and v.replaces = 'v1'",
    )
    .bind(&replaced)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(substitutes, 1);

    let replayer = replayer();
    for (name, id) in [
        ("approved", approved),
        ("sandbox-rejected", rejected),
        ("escalated-then-rejected", escalated),
        ("provider-replaced", replaced),
    ] {
        let json = app
            .temporal
            .get_workflow_handle::<SubmissionWorkflow>(format!("submission:{id}"))
            .fetch_history(Default::default())
            .to_json()
            .await
            .unwrap();
        replayer
            .replay_workflow(WorkflowHistory::from_json(&json).unwrap())
            .await
            .unwrap();
        if std::env::var_os("SIGMA_RECORD_HISTORIES").is_some() {
            std::fs::write(fixtures().join(format!("{name}.json")), &json).unwrap();
        }
    }
    app.shutdown().await;
}
