//! Durability: a worker process dies mid-audit and the pipeline still finishes exactly once.

use std::process::Stdio;
use std::time::Duration;

use sigma_testkit::{Options, Reply, TestApp, bundle, model_of};
use sigma_workflows::worker::Queue;

fn audit_worker(app: &TestApp) -> tokio::process::Child {
    worker_process(app, "audit", &[])
}

/// A `sigma worker` process for one queue, with extra settings in its environment.
fn worker_process(app: &TestApp, queue: &str, env: &[(&str, &str)]) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_sigma"))
        .args(["worker", "--queue", queue])
        .envs(app.process_env())
        .envs(env.iter().map(|(k, v)| (k.to_string(), v.to_string())))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(if std::env::var_os("TEST_LOG").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .kill_on_drop(true)
        .spawn()
        .expect("the sigma binary starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audit_worker_killed_mid_vote_is_replaced_and_one_certificate_is_issued() {
    let app = TestApp::spawn_with(Options {
        validators: vec!["v1", "v2"],
        panel_size: 1,
        queues: vec![Queue::Sandbox, Queue::Ops],
        // The second phase's first call waits out this timeout (its answer is delayed like the
        // killed one's): short, so the test does not sit through the default 20 s.
        tweak: std::sync::Arc::new(|s| s.pipeline.llm_timeout_secs = 5),
    })
    .await
    .unwrap();
    // Each model's first answer takes long enough for us to kill the worker while it waits.
    for v in ["v1", "v2"] {
        app.llm.script(
            &model_of(v),
            [Reply::Delayed(
                Duration::from_secs(60),
                Box::new(Reply::safe()),
            )],
        );
    }
    let mut worker = audit_worker(&app);
    let id = app.submit_ok(bundle::weather_skill()).await;
    let waiting = app
        .wait_for_stage(&id, "AUDIT_PHASE_1", Duration::from_secs(60))
        .await;
    let panel_model = {
        let progress = waiting["roundId"].clone();
        assert!(progress.is_string());
        let mut found = None;
        let start = std::time::Instant::now();
        while found.is_none() {
            found = ["v1", "v2"]
                .into_iter()
                .find(|v| !app.llm.requests_for(&model_of(v)).is_empty());
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "no vote reached the LLM"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        model_of(found.unwrap())
    };

    worker.kill().await.unwrap(); // SIGKILL: no graceful shutdown, the vote is mid-flight.
    let status = app.submission(&id).await;
    assert_eq!(
        status["stage"], "AUDIT_PHASE_1",
        "status reads work while no audit worker runs"
    );
    let mut replacement = audit_worker(&app);

    let done = app
        .wait_for_stage(&id, "DONE", Duration::from_secs(90))
        .await;
    assert_eq!(done["outcome"], "APPROVED", "{done}");
    assert!(
        app.llm.requests_for(&panel_model).len() >= 2,
        "the interrupted vote was asked again"
    );
    let certificates: i64 = sqlx::query_scalar("select count(*) from certificate")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(certificates, 1);
    let votes: i64 = sqlx::query_scalar("select count(*) from audit_vote")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(
        votes, 2,
        "one vote per phase, the retried one not duplicated"
    );
    let emails = app.wait_for_email(Duration::from_secs(10)).await;
    assert_eq!(emails.len(), 1);
    replacement.kill().await.unwrap();
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_provider_is_retried_then_recorded_as_a_failed_vote() {
    let app = TestApp::spawn_with(sigma_testkit::Options::one_per_phase())
        .await
        .unwrap();
    for v in ["v1", "v2"] {
        app.llm.fallback(&model_of(v), Reply::Status(503));
    }
    let id = app.submit_ok(bundle::weather_skill()).await;
    let waiting = app
        .wait_for_stage(&id, "AWAITING_OPERATOR", Duration::from_secs(90))
        .await;
    let votes = waiting["votes"].as_array().unwrap();
    assert_eq!(votes.len(), 2);
    for vote in votes {
        assert_eq!(vote["status"], "FAILED", "{vote}");
        assert!(vote["failure"].as_str().unwrap().contains("503"), "{vote}");
    }
    // Each vote: Temporal's 3 attempts, each asking 3 times (two in-activity retries with
    // backoff); with no validator left to replace them, both stay failed. Every call is ledgered.
    assert_eq!(app.llm.request_count(), 18);
    let ledgered: i64 = sqlx::query_scalar(
        "select count(*) from llm_usage where submission_id = $1 and outcome like 'ERROR%503%'",
    )
    .bind(&id)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(ledgered, 18);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_platform_failure_is_visible_and_an_operator_retry_completes_the_submission() {
    let app = TestApp::spawn_with(Options {
        queues: vec![Queue::Audit, Queue::Ops],
        ..Default::default()
    })
    .await
    .unwrap();
    let bundle = bundle::weather_skill();
    let first = app
        .submit("SKILL", bundle.clone(), None, Some("platform-key"))
        .await;
    assert_eq!(first.status(), 202);
    let id = first.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // The stored bundle disappears before any sandbox worker runs: every sandbox attempt fails.
    let key: String =
        sqlx::query_scalar("select bundle_key from submission where submission_id = $1")
            .bind(&id)
            .fetch_one(&app.db)
            .await
            .unwrap();
    let blob = sigma_shared::blob::BlobStore::new(&app.settings.blob);
    blob.delete(&key).await.unwrap();
    let mut sandbox = tokio::process::Command::new(env!("CARGO_BIN_EXE_sigma"))
        .args(["worker", "--queue", "sandbox"])
        .envs(app.process_env())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    let failed = app
        .wait_for_stage(&id, "FAILED", Duration::from_secs(60))
        .await;
    let reasons = failed["reasons"].to_string();
    assert!(
        reasons.contains("platform failure during SANDBOX; an operator can retry"),
        "{failed}"
    );
    assert!(
        !reasons.contains(&key),
        "internal detail stays out of developer-facing reasons: {failed}"
    );
    let detail: Option<String> =
        sqlx::query_scalar("select failure_detail from submission where submission_id = $1")
            .bind(&id)
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert!(
        detail.unwrap().contains(&key),
        "operators keep the root cause"
    );
    assert!(
        failed["outcome"].is_null(),
        "a platform failure is not a verdict"
    );

    // Replaying the original request answers as before but never re-runs a failed submission:
    // that is the operator's call (and the certificate check's).
    let replayed = app
        .submit("SKILL", bundle.clone(), None, Some("platform-key"))
        .await;
    assert_eq!(replayed.status(), 202);
    assert_eq!(
        replayed.json::<serde_json::Value>().await.unwrap()["id"],
        id.as_str()
    );
    // Intake answers only after the run it starts has recorded the submission, so a new run
    // would already be the latest one here.
    let latest = app
        .temporal
        .get_workflow_handle::<sigma_workflows::SubmissionWorkflow>(format!("submission:{id}"))
        .describe(Default::default())
        .await
        .unwrap();
    assert_eq!(
        latest.status(),
        temporalio_client::WorkflowExecutionStatus::Failed,
        "a replay does not start a new run"
    );
    assert_eq!(app.submission(&id).await["stage"], "FAILED");

    let operator = app.operator(&app.operator_token);
    let _not_failed_yet: serde_json::Value = operator
        .post_empty(
            &format!(
                "/submissions/{}/retry",
                sigma_shared::domain::SubmissionId::random()
            ),
            404,
        )
        .await;
    blob.put(&key, bundle.into(), "application/octet-stream")
        .await
        .unwrap();
    let _retry: serde_json::Value = operator
        .post_empty(&format!("/submissions/{id}/retry"), 202)
        .await;
    let done = app
        .wait_for_stage(&id, "DONE", Duration::from_secs(60))
        .await;
    assert_eq!(done["outcome"], "APPROVED", "{done}");
    // The retry's run began with its own intake step (the claim): its history replays.
    crate::replay::record_and_replay(&app, &id, "operator-retry-approved.json").await;
    // A completed submission is not retried.
    let again: serde_json::Value = operator
        .post_empty(&format!("/submissions/{id}/retry"), 409)
        .await;
    assert_eq!(again["code"], "not_failed", "{again}");
    sandbox.kill().await.unwrap();
    app.shutdown().await;
}

fn ops_worker(app: &TestApp, env: &[(&str, &str)]) -> tokio::process::Child {
    worker_process(app, "ops", env)
}

/// The Ops worker dies while the renewal sweep pages through due certificates (one per page,
/// continuing as new every five), and the schedule is fired twice more on top: the sweep resumes
/// on a new worker from its history, and every certificate still gets exactly one renewal and
/// one reminder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ops_worker_killed_mid_sweep_and_overlapping_triggers_renew_each_certificate_once() {
    const CERTIFICATES: i64 = 20;
    let app = TestApp::spawn_with(Options {
        queues: vec![Queue::Sandbox, Queue::Audit],
        ..Default::default()
    })
    .await
    .unwrap();
    app.seed_certificates("fault", CERTIFICATES, "SKILL", "31 days", "1 day")
        .await
        .unwrap();
    let paging = [
        ("SIGMA__OPS__SWEEP_PAGE_SIZE", "1"),
        ("SIGMA__OPS__SWEEP_ITEMS_PER_RUN", "5"),
    ];
    let mut worker = ops_worker(&app, &paging);
    let renewals = || async {
        sqlx::query_scalar::<_, i64>("select count(*) from renewal")
            .fetch_one(&app.db)
            .await
            .unwrap()
    };
    crate::lifecycle::trigger(&app, "renewal-sweep").await;
    let start = std::time::Instant::now();
    while renewals().await == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the sweep never started a renewal"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    worker.kill().await.unwrap();
    let at_kill = renewals().await;
    // Two more firings while no worker runs, overlapping the interrupted one.
    crate::lifecycle::trigger(&app, "renewal-sweep").await;
    crate::lifecycle::trigger(&app, "renewal-sweep").await;
    let mut replacement = ops_worker(&app, &paging);
    let start = std::time::Instant::now();
    loop {
        let reminders = app
            .emails_to(&app.developer_email)
            .await
            .into_iter()
            .filter(|m| {
                m["subject"]
                    .as_str()
                    .is_some_and(|s| s.contains("is due for renewal"))
            })
            .count();
        if renewals().await == CERTIFICATES && reminders as i64 == CERTIFICATES {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "{} renewals, {reminders} reminders",
            renewals().await
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Let every sweep run finish, then count again: nothing was done twice.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let distinct: i64 = sqlx::query_scalar("select count(distinct certificate_id) from renewal")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!((renewals().await, distinct), (CERTIFICATES, CERTIFICATES));
    let mut subjects: Vec<String> = app
        .emails_to(&app.developer_email)
        .await
        .into_iter()
        .filter_map(|m| m["subject"].as_str().map(str::to_owned))
        .filter(|s| s.contains("is due for renewal"))
        .collect();
    subjects.sort();
    let total = subjects.len();
    subjects.dedup();
    assert_eq!(
        (total, subjects.len()),
        (CERTIFICATES as usize, CERTIFICATES as usize),
        "one reminder each"
    );
    eprintln!("renewals recorded when the worker was killed: {at_kill} of {CERTIFICATES}");
    replacement.kill().await.unwrap();
    app.shutdown().await;
}
