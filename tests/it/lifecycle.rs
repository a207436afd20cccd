//! Certificates after issuance: the Ops worker's schedules and renewals, end to end on real
//! servers. "Time passes" by moving a certificate's due and expiry dates in its row; the
//! schedule, the sweep, the renewal workflow, its timers, the audit and the emails are real.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sigma_shared::attestation::{self, Envelope, KeySet};
use sigma_testkit::llm::Reply;
use sigma_testkit::{Options, TestApp, bundle, model_of};
use sigma_workflows::schedules::{self, Ensured};
use temporalio_client::schedules::{
    PauseScheduleOptions, ScheduleOverlapPolicy, TriggerScheduleOptions,
};

const WAIT: Duration = Duration::from_secs(90);

async fn approved(app: &TestApp) -> String {
    let id = app.submit_ok(bundle::weather_skill()).await;
    let done = app.wait_for_stage(&id, "DONE", WAIT).await;
    assert_eq!(done["outcome"], "APPROVED", "{done}");
    id
}

/// Moves a certificate's renewal due date and expiry to `due` and `expires` seconds from now.
async fn make_due(app: &TestApp, certificate: &str, due: f64, expires: f64) {
    sqlx::query(
        "update certificate set renewal_due_at = now() + make_interval(secs => $2),
             expires_at = now() + make_interval(secs => $3) where certificate_id = $1",
    )
    .bind(certificate)
    .bind(due)
    .bind(expires)
    .execute(&app.db)
    .await
    .unwrap();
}

async fn set_balance(app: &TestApp, credits: i64) {
    sqlx::query("update developer set credit_balance = $2 where email = $1")
        .bind(&app.developer_email)
        .bind(credits)
        .execute(&app.db)
        .await
        .unwrap();
}

/// Fires the renewal sweep's schedule now, as "Trigger" in the Web UI does.
async fn trigger_sweep(app: &TestApp) {
    trigger(app, "renewal-sweep").await
}

/// Fires a job's schedule now (creating the schedules first).
pub(crate) async fn trigger(app: &TestApp, job: &str) {
    schedules::ensure_schedules(&app.temporal, &app.settings)
        .await
        .unwrap();
    app.temporal
        .get_schedule_handle(schedules::schedule_id(&app.settings, job))
        .trigger(
            ScheduleOverlapPolicy::AllowAll,
            TriggerScheduleOptions::default(),
        )
        .await
        .unwrap();
}

async fn renewal_row(
    app: &TestApp,
    certificate: &str,
) -> Option<(String, Option<String>, Option<String>, Option<String>)> {
    sqlx::query_as(
        "select status, submission_id, new_certificate_id, reason from renewal where certificate_id = $1",
    )
    .bind(certificate)
    .fetch_optional(&app.db)
    .await
    .unwrap()
}

async fn wait_for_renewal(
    app: &TestApp,
    certificate: &str,
    status: &str,
) -> (String, Option<String>, Option<String>, Option<String>) {
    let start = Instant::now();
    loop {
        if let Some(row) = renewal_row(app, certificate).await
            && row.0 == status
        {
            return row;
        }
        assert!(
            start.elapsed() < WAIT,
            "renewal of {certificate} never reached {status}: {:?}",
            renewal_row(app, certificate).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn subjects(app: &TestApp) -> Vec<String> {
    app.emails_to(&app.developer_email)
        .await
        .iter()
        .map(|m| m["subject"].as_str().unwrap_or_default().to_owned())
        .collect()
}

async fn wait_for_subject(app: &TestApp, needle: &str) -> Value {
    let start = Instant::now();
    loop {
        if let Some(mail) = app
            .emails_to(&app.developer_email)
            .await
            .into_iter()
            .find(|m| m["subject"].as_str().is_some_and(|s| s.contains(needle)))
        {
            return mail;
        }
        assert!(
            start.elapsed() < WAIT,
            "no email with {needle:?}: {:?}",
            subjects(app).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn balance(app: &TestApp) -> i64 {
    sqlx::query_scalar("select credit_balance from developer where email = $1")
        .bind(&app.developer_email)
        .fetch_one(&app.db)
        .await
        .unwrap()
}

/// From now on every validator of the default council answers `reply`.
pub(crate) fn council_answers(app: &TestApp, reply: Reply) {
    for v in ["v1", "v2", "v3", "v4"] {
        app.llm.fallback(&model_of(v), reply.clone());
    }
}

/// A test app with its settings adjusted.
async fn app_with(tweak: impl Fn(&mut sigma_shared::Settings) + Send + Sync + 'static) -> TestApp {
    TestApp::spawn_with(Options {
        tweak: std::sync::Arc::new(tweak),
        ..Default::default()
    })
    .await
    .unwrap()
}

pub(crate) async fn verify(app: &TestApp, certificate: &str) -> Value {
    app.public_json(&format!("/api/v1/public/certificates/{certificate}/verify"))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_are_created_once_updated_in_place_and_keep_an_operators_pause() {
    let app = TestApp::spawn_with(Options::without_workers())
        .await
        .unwrap();
    let first = schedules::ensure_schedules(&app.temporal, &app.settings)
        .await
        .unwrap();
    let id = schedules::schedule_id(&app.settings, "renewal-sweep");
    let all: Vec<String> = [
        "renewal-sweep",
        "monitor-sweep",
        "model-tier-sync",
        "reconciler",
    ]
    .iter()
    .map(|job| schedules::schedule_id(&app.settings, job))
    .collect();
    let created: Vec<_> = all
        .iter()
        .map(|id| (id.clone(), Ensured::Created))
        .collect();
    assert_eq!(first, created);
    assert!(id.ends_with("sigma-renewal-sweep"), "{id}");

    let handle = app.temporal.get_schedule_handle(id.clone());
    let described = handle.describe(Default::default()).await.unwrap();
    let schedule = described.raw().schedule.clone().unwrap();
    let policies = schedule.policies.unwrap();
    assert_eq!(
        policies.overlap_policy,
        temporalio_common::protos::temporal::api::enums::v1::ScheduleOverlapPolicy::Skip as i32
    );
    let Some(temporalio_common::protos::temporal::api::schedule::v1::schedule_action::Action::StartWorkflow(run)) =
        schedule.action.unwrap().action
    else {
        panic!("the schedule starts a workflow");
    };
    assert_eq!(run.workflow_type.unwrap().name, "RenewalSweepWorkflow");
    assert_eq!(
        run.task_queue.unwrap().name,
        format!("{}ops", app.settings.temporal.task_queue_prefix)
    );
    assert_eq!(
        run.workflow_execution_timeout.unwrap().seconds as u64,
        app.settings.ops.scheduled_run_timeout_secs
    );
    assert_eq!(run.retry_policy.unwrap().maximum_attempts, 3);
    assert!(run.memo.unwrap().fields.contains_key("job"));
    assert!(
        run.search_attributes
            .unwrap()
            .indexed_fields
            .contains_key("SigmaJob")
    );
    assert_eq!(
        schedule.spec.unwrap().interval[0].interval.unwrap().seconds as u64,
        app.settings.ops.renewal_sweep_interval_secs
    );

    // An operator pauses it in the Web UI; running setup again updates it but keeps the pause.
    handle
        .pause(Some("maintenance"), PauseScheduleOptions::default())
        .await
        .unwrap();
    let again = schedules::ensure_schedules(&app.temporal, &app.settings)
        .await
        .unwrap();
    let updated: Vec<_> = all
        .iter()
        .map(|id| (id.clone(), Ensured::Updated))
        .collect();
    assert_eq!(again, updated);
    let described = handle.describe(Default::default()).await.unwrap();
    assert!(described.paused(), "setup must not unpause a schedule");
    for id in all {
        app.temporal
            .get_schedule_handle(id)
            .delete(Default::default())
            .await
            .unwrap();
    }
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_due_certificate_is_reminded_charged_renewed_and_superseded_once() {
    let app = TestApp::spawn().await.unwrap();
    let old = approved(&app).await;
    let issued = verify(&app, &old).await;
    assert!(issued["renewalDueAt"].is_string(), "{issued}");
    assert_eq!(issued["roundType"], "INITIAL_AUDIT");
    set_balance(&app, 1000).await;
    make_due(&app, &old, 6.0, 3600.0).await;

    // Two overlapping firings of the schedule: one renewal, one reminder.
    trigger_sweep(&app).await;
    trigger_sweep(&app).await;
    let reminder = wait_for_subject(&app, "due for renewal").await;
    let text = reminder["text"].as_str().unwrap_or_default();
    assert!(text.contains("450 credits"), "{text}");
    let (status, submission, ..) = wait_for_renewal(&app, &old, "RENEWED").await;
    assert_eq!(status, "RENEWED");
    let submission = submission.unwrap();
    let renewal_runs: i64 =
        sqlx::query_scalar("select count(*) from renewal where certificate_id = $1")
            .bind(&old)
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(renewal_runs, 1);
    let reminders = subjects(&app)
        .await
        .into_iter()
        .filter(|s| s.contains("due for renewal"))
        .count();
    assert_eq!(reminders, 1);

    // The renewal was a full audit round over the same bytes, paid from the balance.
    let audit = app.wait_for_stage(&submission, "DONE", WAIT).await;
    assert_eq!(audit["outcome"], "APPROVED", "{audit}");
    let (balance, debit): (i64, i64) = sqlx::query_as(
        "select d.credit_balance, l.amount_credits from developer d join credit_ledger l using (developer_id)
         where d.email = $1 and l.kind = 'DEBIT_RENEWAL' and l.reference = $2",
    )
    .bind(&app.developer_email)
    .bind(&submission)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!((balance, debit), (550, -450));

    // The new certificate renews the old one; the old one says so and is no longer valid.
    let new = submission;
    let renewed = verify(&app, &new).await;
    assert_eq!(renewed["valid"], true, "{renewed}");
    assert_eq!(renewed["roundType"], "RENEWAL");
    assert_eq!(renewed["renews"], old.as_str());
    assert_eq!(renewed["skillMdSha256"], issued["skillMdSha256"]);
    assert_eq!(renewed["bundleDigest"], issued["bundleDigest"]);
    let old_now = verify(&app, &old).await;
    assert_eq!(
        (
            &old_now["status"],
            &old_now["supersededBy"],
            &old_now["valid"]
        ),
        (&json!("SUPERSEDED"), &json!(new), &json!(false)),
        "{old_now}"
    );
    // The term continues from the old expiry, and the next renewal is scheduled.
    let live: Value = app
        .public_json(&format!("/api/v1/public/certificates/{new}/live-status"))
        .await;
    assert!(live["renewalDueAt"].is_string(), "{live}");
    let (term_days, window_secs): (f64, f64) = sqlx::query_as(
        "select (extract(epoch from n.expires_at - o.expires_at) / 86400)::float8,
                extract(epoch from n.expires_at - n.renewal_due_at)::float8
         from certificate n, certificate o where n.certificate_id = $1 and o.certificate_id = $2",
    )
    .bind(&new)
    .bind(&old)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(term_days, app.settings.public.validity_days as f64);
    assert_eq!(window_secs, app.settings.ops.renewal_window_secs as f64);
    let old_live: Value = app
        .public_json(&format!("/api/v1/public/certificates/{old}/live-status"))
        .await;
    assert_eq!(old_live["renewalStatus"], "RENEWED", "{old_live}");

    // Offline, with the published keys: the renewal's signature binds the same digests and names
    // the renewed certificate.
    let record: Value = app
        .public_json(&format!("/api/v1/public/certificates/{new}"))
        .await;
    let keys: KeySet =
        serde_json::from_value(app.public_json("/.well-known/sigma-keys.json").await).unwrap();
    let envelope: Envelope = serde_json::from_value(record["envelope"].clone()).unwrap();
    let (statement, _) = attestation::verify_envelope(&envelope, &keys).unwrap();
    attestation::check_sealed(&statement, &record["sealed"]).unwrap();
    assert_eq!(record["sealed"]["renews"], old.as_str());
    assert_eq!(
        attestation::subject_digest(&statement, "bundle"),
        issued["bundleDigest"].as_str()
    );

    // A later sweep finds nothing to do for either certificate.
    trigger_sweep(&app).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rows: i64 = sqlx::query_scalar("select count(*) from renewal")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(rows, 1);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unpaid_renewal_is_reminded_then_the_certificate_expires_on_its_date() {
    let app = app_with(|s| s.ops.renewal_payment_retry_secs = 2).await;
    let id = approved(&app).await;
    set_balance(&app, 100).await;
    make_due(&app, &id, 2.0, 12.0).await;
    trigger_sweep(&app).await;
    let reminder = wait_for_subject(&app, "due for renewal").await;
    assert!(
        reminder["text"]
            .as_str()
            .unwrap_or_default()
            .contains("Top up"),
        "{reminder}"
    );
    let unpaid = wait_for_subject(&app, "top up to renew").await;
    assert!(
        unpaid["text"]
            .as_str()
            .unwrap_or_default()
            .contains("100 credits"),
        "{unpaid}"
    );
    let live: Value = app
        .public_json(&format!("/api/v1/public/certificates/{id}/live-status"))
        .await;
    assert_eq!(live["renewalStatus"], "UNPAID", "{live}");
    assert_eq!(live["valid"], true, "valid until its expiry date: {live}");

    let (_, submission, _, reason) = wait_for_renewal(&app, &id, "LAPSED").await;
    assert!(submission.is_none(), "nothing was charged or audited");
    assert!(reason.unwrap().contains("unpaid"));
    let stored: String =
        sqlx::query_scalar("select status from certificate where certificate_id = $1")
            .bind(&id)
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(stored, "EXPIRED");
    let expired = verify(&app, &id).await;
    assert_eq!(
        (&expired["status"], &expired["valid"]),
        (&json!("EXPIRED"), &json!(false)),
        "{expired}"
    );
    wait_for_subject(&app, "expired").await;
    let balance = balance(&app).await;
    assert_eq!(balance, 100, "an unpaid renewal takes nothing");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_renewal_keeps_its_charge_and_lets_the_certificate_lapse() {
    let app = TestApp::spawn().await.unwrap();
    let id = approved(&app).await;
    set_balance(&app, 1000).await;
    // The council now finds the same bytes unsafe.
    council_answers(&app, Reply::unsafe_());
    make_due(&app, &id, 1.0, 25.0).await;
    trigger_sweep(&app).await;
    let (_, submission, _, _) = wait_for_renewal(&app, &id, "IN_PROGRESS").await;
    let submission = submission.unwrap();
    let audit = app.wait_for_stage(&submission, "DONE", WAIT).await;
    assert_eq!(audit["outcome"], "REJECTED", "{audit}");
    wait_for_subject(&app, "the renewal of").await;
    // Still valid until its date, then EXPIRED.
    assert_eq!(verify(&app, &id).await["valid"], true);
    let (_, _, new, reason) = wait_for_renewal(&app, &id, "LAPSED").await;
    assert!(new.is_none());
    assert!(reason.unwrap().contains("REJECTED"));
    let expired = verify(&app, &id).await;
    assert_eq!(expired["status"], "EXPIRED", "{expired}");
    let balance = balance(&app).await;
    assert_eq!(balance, 550, "the audit was done: its price is kept");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_escalated_renewal_waits_for_an_operator_who_renews_it() {
    let app = TestApp::spawn_with(Options::one_per_phase()).await.unwrap();
    let id = approved(&app).await;
    set_balance(&app, 1000).await;
    app.llm.fallback(&model_of("v1"), Reply::safe());
    app.llm.fallback(&model_of("v2"), Reply::unsafe_());
    make_due(&app, &id, 1.0, 3600.0).await;
    trigger_sweep(&app).await;
    let (_, submission, _, _) = wait_for_renewal(&app, &id, "IN_PROGRESS").await;
    let submission = submission.unwrap();
    app.wait_for_stage(&submission, "AWAITING_OPERATOR", WAIT)
        .await;
    let (status, body) = app
        .decide(
            &submission,
            "APPROVED",
            "the second finding is the declared API",
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, _, new, _) = wait_for_renewal(&app, &id, "RENEWED").await;
    assert_eq!(new.as_deref(), Some(submission.as_str()));
    let renewed = verify(&app, &submission).await;
    assert_eq!(
        (&renewed["valid"], &renewed["renews"]),
        (&json!(true), &json!(id)),
        "{renewed}"
    );
    app.shutdown().await;
}

async fn validator_status(app: &TestApp, validator: &str) -> String {
    sqlx::query_scalar("select status from validator where validator_id = $1")
        .bind(validator)
        .fetch_one(&app.db)
        .await
        .unwrap()
}

async fn wait_for_validator(app: &TestApp, validator: &str, status: &str) {
    let start = Instant::now();
    while validator_status(app, validator).await != status {
        assert!(start.elapsed() < WAIT, "{validator} never became {status}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_sync_records_the_catalog_and_pauses_a_validator_whose_model_vanished() {
    let app = TestApp::spawn_with(Options {
        tweak: std::sync::Arc::new(|s| {
            s.ops.model_tiers = vec![sigma_shared::config::ModelTier {
                prefix: "model-v1".into(),
                family: "alpha".into(),
                tier: "premium".into(),
                price_in_per_mtok: Some(2.0),
                price_out_per_mtok: Some(8.0),
            }];
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    trigger(&app, "model-tier-sync").await;
    let start = Instant::now();
    loop {
        let synced: Option<bool> = sqlx::query_scalar("select ok from model_provider_sync limit 1")
            .fetch_optional(&app.db)
            .await
            .unwrap();
        if synced == Some(true) {
            break;
        }
        assert!(start.elapsed() < WAIT, "model sync never ran");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let operator = app.operator(&app.operator_token);
    let catalog: Value = operator.get("/models", 200).await;
    let models = catalog["models"].as_array().unwrap();
    assert_eq!(models.len(), 4, "{catalog}");
    let v1 = models.iter().find(|m| m["modelId"] == "model-v1").unwrap();
    assert_eq!(
        (
            &v1["family"],
            &v1["tier"],
            &v1["priceInPerMtok"],
            &v1["priceSource"],
            &v1["validators"]
        ),
        (
            &json!("alpha"),
            &json!("premium"),
            &json!(2.0),
            &json!("config"),
            &json!(["v1"])
        ),
        "{v1}"
    );
    let (family, price): (Option<String>, f64) = sqlx::query_as(
        "select model_family, price_in_per_mtok from validator where validator_id = 'v1'",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!((family.as_deref(), price), (Some("alpha"), 2.0));

    // The provider stops listing v2's model: v2 is paused and leaves the panels.
    app.llm.unlist_model(&model_of("v2"));
    trigger(&app, "model-tier-sync").await;
    wait_for_validator(&app, "v2", "PAUSED").await;
    let catalog: Value = operator.get("/models", 200).await;
    assert_eq!(
        catalog["pausedValidators"][0]["validatorId"], "v2",
        "{catalog}"
    );
    let gone = catalog["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["modelId"] == "model-v2")
        .unwrap();
    assert_eq!(gone["available"], false);
    let id = app.submit_ok(bundle::weather_skill()).await;
    let done = app.wait_for_stage(&id, "DONE", WAIT).await;
    let voters: Vec<String> = sqlx::query_scalar(
        "select validator_id from audit_vote v join submission s on s.round_id = v.round_id where s.submission_id = $1",
    )
    .bind(&id)
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert!(
        !voters.is_empty() && !voters.contains(&"v2".to_owned()),
        "{voters:?} {done}"
    );

    // It comes back: v2 is resumed. An operator's own pause is never lifted by the sync.
    sqlx::query("update validator set status = 'PAUSED' where validator_id = 'v3'")
        .execute(&app.db)
        .await
        .unwrap();
    app.llm.list_model(&model_of("v2"));
    trigger(&app, "model-tier-sync").await;
    wait_for_validator(&app, "v2", "ACTIVE").await;
    assert_eq!(validator_status(&app, "v3").await, "PAUSED");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_runs_as_a_workflow_and_a_rejecting_reaudit_suspends_the_certificate() {
    let app = app_with(|s| s.ops.flag_triage_deadline_secs = 2).await;
    let id = approved(&app).await;
    let filed: Value = app
        .public()
        .post(
            &format!("/certificates/{id}/flags"),
            &json!({"reason": "posts the city to an undeclared host"}),
            201,
        )
        .await;
    let flag = filed["flagId"].as_str().unwrap().to_owned();
    // Its workflow runs, and marks it overdue when nobody triages it in time.
    let start = Instant::now();
    loop {
        let (workflow, overdue): (Option<String>, bool) = sqlx::query_as(
            "select workflow_id, overdue_at is not null from certificate_flag where flag_id = $1::uuid",
        )
        .bind(&flag)
        .fetch_one(&app.db)
        .await
        .unwrap();
        if overdue {
            assert_eq!(workflow.as_deref(), Some(format!("flag:{flag}").as_str()));
            break;
        }
        assert!(start.elapsed() < WAIT, "the flag was never marked overdue");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(verify(&app, &id).await["valid"], true);

    let operator = app.operator(&app.operator_token);
    let path = format!("/flags/{flag}");
    let triaged: Value = operator
        .post(&path, &json!({"status": "TRIAGED", "note": "looking"}), 200)
        .await;
    assert_eq!(triaged["status"], "TRIAGED", "{triaged}");
    let (again, body) = operator
        .call(
            reqwest::Method::POST,
            &path,
            Some(&json!({"status": "TRIAGED", "note": "twice"})),
        )
        .await;
    assert_eq!(again, 409, "{body}");
    // The council now finds the bytes unsafe: the re-audit upholds the report.
    council_answers(&app, Reply::unsafe_());
    let escalated: Value = operator
        .post(
            &path,
            &json!({"status": "REAUDIT", "note": "confirmed pattern"}),
            200,
        )
        .await;
    assert_eq!(escalated["status"], "REAUDIT", "{escalated}");
    wait_for_subject(&app, "is being re-audited").await;
    let start = Instant::now();
    let suspended = loop {
        let v = verify(&app, &id).await;
        if v["status"] == "SUSPENDED" {
            break v;
        }
        assert!(start.elapsed() < WAIT, "{v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(suspended["valid"], false);
    assert!(
        suspended["statusReason"]
            .as_str()
            .is_some_and(|r| r.starts_with("re-audit")),
        "{suspended}"
    );
    wait_for_subject(&app, "was suspended").await;
    let (status, reaudit): (String, String) = sqlx::query_as(
        "select status, reaudit_submission_id from certificate_flag where flag_id = $1::uuid",
    )
    .bind(&flag)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(status, "UPHELD");
    let round: String =
        sqlx::query_scalar("select round_type from audit_round where submission_id = $1")
            .bind(&reaudit)
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(round, "REAUDIT");
    let certificates: i64 = sqlx::query_scalar("select count(*) from certificate")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(certificates, 1, "a re-audit issues no certificate");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reconciler_starts_the_workflow_of_a_flag_filed_without_one() {
    let app = TestApp::spawn().await.unwrap();
    let id = approved(&app).await;
    // Filed as the API files one, but the API stopped before starting its workflow.
    let flag = uuid::Uuid::new_v4();
    sqlx::query(
        "insert into certificate_flag (flag_id, certificate_id, reason, reporter_hash, created_at)
         values ($1, $2, 'left behind', 'r', now() - interval '5 minutes')",
    )
    .bind(flag)
    .bind(&id)
    .execute(&app.db)
    .await
    .unwrap();
    trigger(&app, "reconciler").await;
    let start = Instant::now();
    loop {
        let workflow: Option<String> =
            sqlx::query_scalar("select workflow_id from certificate_flag where flag_id = $1")
                .bind(flag)
                .fetch_one(&app.db)
                .await
                .unwrap();
        if let Some(workflow) = workflow {
            assert_eq!(workflow, format!("flag:{flag}"));
            break;
        }
        assert!(
            start.elapsed() < WAIT,
            "the reconciler never started the flag"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Its workflow now takes the operator's moves.
    let moved: Value = app
        .operator(&app.operator_token)
        .post(
            &format!("/flags/{flag}"),
            &json!({"status": "DISMISSED", "note": "duplicate"}),
            200,
        )
        .await;
    assert_eq!(moved["status"], "DISMISSED", "{moved}");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disputed_rejection_overturned_by_an_operator_gets_a_fresh_round_that_decides() {
    let app = TestApp::spawn().await.unwrap();
    council_answers(&app, Reply::unsafe_());
    let id = app.submit_ok(bundle::weather_skill()).await;
    let done = app.wait_for_stage(&id, "DONE", WAIT).await;
    assert_eq!(done["outcome"], "REJECTED", "{done}");
    let voters: Vec<(String, f64)> = sqlx::query_as(
        "select v.validator_id, v.audit_accuracy from validator v
         where v.validator_id in (select validator_id from audit_vote a join submission s on s.round_id = a.round_id
                                  where s.submission_id = $1) order by 1",
    )
    .bind(&id)
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert!(!voters.is_empty());

    let dev = app.dev(&app.developer_token);
    let path = format!("/submissions/{id}/disputes");
    let opened: Value = dev
        .post(
            &path,
            &json!({"reason": "the host is the declared weather API"}),
            201,
        )
        .await;
    assert_eq!(
        (&opened["kind"], &opened["status"]),
        (&json!("REJECTION"), &json!("OPEN"))
    );
    // One open dispute per submission: asking again answers the open one.
    let again: Value = dev.post(&path, &json!({"reason": "again"}), 200).await;
    assert_eq!(again["disputeId"], opened["disputeId"]);
    wait_for_subject(&app, "dispute about").await;
    // The operators are told, under the dispute's id (their address is shared by the run's tests).
    let dispute_id = opened["disputeId"].as_str().unwrap().to_owned();
    let start = Instant::now();
    while !app
        .emails_to(&app.settings.ops.operator_alert_email)
        .await
        .iter()
        .any(|m| {
            m["subject"]
                .as_str()
                .is_some_and(|s| s.contains(&dispute_id))
        })
    {
        assert!(start.elapsed() < WAIT, "operators are told of the dispute");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The council would now approve; the operator overturns and the fresh round decides.
    council_answers(&app, Reply::safe());
    let dispute = opened["disputeId"].as_str().unwrap();
    let decided: Value = app
        .operator(&app.operator_token)
        .post(
            &format!("/disputes/{dispute}/decision"),
            &json!({"verdict": "OVERTURN", "note": "the finding misread the declared API"}),
            200,
        )
        .await;
    assert_eq!(decided["status"], "OVERTURNED", "{decided}");
    let start = Instant::now();
    let (fresh, outcome) = loop {
        let row: (Option<String>, Option<String>) = sqlx::query_as(
            "select fresh_submission_id, final_outcome from dispute where dispute_id = $1::uuid",
        )
        .bind(dispute)
        .fetch_one(&app.db)
        .await
        .unwrap();
        if let (Some(fresh), Some(outcome)) = row {
            break (fresh, outcome);
        }
        assert!(start.elapsed() < WAIT, "the fresh round never concluded");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(outcome, "APPROVED");
    assert_eq!(verify(&app, &fresh).await["valid"], true);
    // The votes on the disputed rejection are scored against the final outcome.
    for (validator, before) in voters {
        let after: f64 =
            sqlx::query_scalar("select audit_accuracy from validator where validator_id = $1")
                .bind(&validator)
                .fetch_one(&app.db)
                .await
                .unwrap();
        assert!(after < before, "{validator}: {before} -> {after}");
    }
    wait_for_subject(&app, "is concluded").await;
    // Decided already: a second decision is refused.
    let (status, _) = app
        .operator(&app.operator_token)
        .call(
            reqwest::Method::POST,
            &format!("/disputes/{dispute}/decision"),
            Some(&json!({"verdict": "UPHOLD", "note": "late"})),
        )
        .await;
    assert_eq!(status, 409);
    // An approved submission has nothing to dispute.
    let (status, body) = dev
        .call(
            reqwest::Method::POST,
            &format!("/submissions/{fresh}/disputes"),
            Some(&json!({"reason": "?"})),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disputed_suspension_past_its_deadline_alerts_operators_and_an_overturn_lifts_it() {
    let app = app_with(|s| s.ops.dispute_decision_deadline_secs = 2).await;
    let id = approved(&app).await;
    let operator = app.operator(&app.operator_token);
    let _: Value = operator
        .post(
            &format!("/certificates/{id}/status"),
            &json!({"status": "SUSPENDED", "reason": "reported exfiltration"}),
            200,
        )
        .await;
    let opened: Value = app
        .dev(&app.developer_token)
        .post(
            &format!("/submissions/{id}/disputes"),
            &json!({"reason": "the host is the declared API"}),
            201,
        )
        .await;
    assert_eq!(opened["kind"], "SUSPENSION");
    let dispute = opened["disputeId"].as_str().unwrap().to_owned();
    // Silence does not lift an operator's suspension: the operators are told it is overdue.
    let start = Instant::now();
    loop {
        let overdue = app
            .emails_to(&app.settings.ops.operator_alert_email)
            .await
            .iter()
            .any(|m| {
                m["subject"]
                    .as_str()
                    .is_some_and(|s| s.contains(&dispute) && s.contains("is overdue"))
            });
        if overdue {
            break;
        }
        assert!(start.elapsed() < WAIT, "no overdue alert");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(verify(&app, &id).await["status"], "SUSPENDED");
    // An operator overturns it: the certificate is re-audited, and the approval lifts it.
    let decided: Value = operator
        .post(
            &format!("/disputes/{dispute}/decision"),
            &json!({"verdict": "OVERTURN", "note": "the host is declared"}),
            200,
        )
        .await;
    assert_eq!(decided["status"], "OVERTURNED", "{decided}");
    let start = Instant::now();
    loop {
        let v = verify(&app, &id).await;
        if v["status"] == "APPROVED" && v["valid"] == true {
            assert_eq!(
                v["statusReason"],
                "suspension overturned: the re-audit approved it"
            );
            break;
        }
        assert!(start.elapsed() < WAIT, "{v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let certificates: i64 = sqlx::query_scalar("select count(*) from certificate")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(certificates, 1, "the re-audit issues no certificate");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_suspended_before_its_due_date_is_not_renewed_or_charged() {
    let app = TestApp::spawn().await.unwrap();
    let id = approved(&app).await;
    set_balance(&app, 1000).await;
    make_due(&app, &id, 5.0, 3600.0).await;
    trigger_sweep(&app).await;
    wait_for_subject(&app, "due for renewal").await;
    let _: Value = app
        .operator(&app.operator_token)
        .post(
            &format!("/certificates/{id}/status"),
            &json!({"status": "SUSPENDED", "reason": "under investigation"}),
            200,
        )
        .await;
    let (_, submission, _, reason) = wait_for_renewal(&app, &id, "NOT_NEEDED").await;
    assert!(submission.is_none());
    assert!(reason.unwrap().contains("SUSPENDED"));
    let balance = balance(&app).await;
    assert_eq!(
        balance, 1000,
        "nothing is charged for a suspended certificate"
    );
    app.shutdown().await;
}
