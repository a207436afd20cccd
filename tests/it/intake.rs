//! Intake: idempotency and clear errors that leave nothing half-written.

use serde_json::{Value, json};
use sigma_testkit::TestApp;
use sigma_testkit::bundle;

async fn submission_count(app: &TestApp) -> i64 {
    sqlx::query_scalar("select count(*) from submission")
        .fetch_one(&app.db)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_idempotency_key_twice_gives_one_submission_and_one_workflow() {
    let app = TestApp::spawn().await.unwrap();
    let meta = Some(json!({"name": "weather", "version": "1.0.0"}));
    let first = app
        .submit(
            "SKILL",
            bundle::weather_skill(),
            meta.clone(),
            Some("key-1"),
        )
        .await;
    assert_eq!(first.status(), 202);
    let first: Value = first.json().await.unwrap();
    let second = app
        .submit(
            "SKILL",
            bundle::weather_skill(),
            meta.clone(),
            Some("key-1"),
        )
        .await;
    assert_eq!(second.status(), 202);
    let second: Value = second.json().await.unwrap();
    assert_eq!(first["id"], second["id"]);
    assert_eq!(submission_count(&app).await, 1);
    let workflow_id = format!("submission:{}", first["id"].as_str().unwrap());
    assert_eq!(app.runs_of(&workflow_id, 1).await, 1);

    let conflict = app
        .submit(
            "SKILL",
            bundle::weather_skill_variant(1),
            meta,
            Some("key-1"),
        )
        .await;
    assert_eq!(conflict.status(), 409);
    let body: Value = conflict.json().await.unwrap();
    assert_eq!(body["code"], "idempotency_key_reused");
    assert_eq!(submission_count(&app).await, 1);

    // Without a key, each POST is its own submission.
    let a = app.submit_ok(bundle::weather_skill()).await;
    let b = app.submit_ok(bundle::weather_skill()).await;
    assert_ne!(a, b);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_retries_with_one_key_create_one_submission() {
    let app = TestApp::spawn().await.unwrap();
    let calls = (0..6).map(|_| app.submit("SKILL", bundle::weather_skill(), None, Some("race")));
    let responses = futures::future::join_all(calls).await;
    let mut ids = Vec::new();
    for response in responses {
        assert_eq!(response.status(), 202);
        ids.push(response.json::<Value>().await.unwrap()["id"].clone());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(submission_count(&app).await, 1);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_error_and_writes_nothing() {
    let app = TestApp::spawn_with(sigma_testkit::Options {
        tweak: std::sync::Arc::new(|s| s.api.max_body_bytes = 64 * 1024),
        ..Default::default()
    })
    .await
    .unwrap();
    let cases: Vec<(reqwest::Response, u16, &str)> = vec![
        (
            app.submit("SMART_CONTRACT", bundle::weather_skill(), None, None)
                .await,
            422,
            "unknown_category",
        ),
        (
            app.submit("SKILL", b"just some text".to_vec(), None, None)
                .await,
            422,
            "unsupported_bundle",
        ),
        (
            app.submit("SKILL", b"PK\x03\x04 not really a zip".to_vec(), None, None)
                .await,
            422,
            "corrupt_archive",
        ),
        (
            app.submit(
                "SKILL",
                {
                    let mut b = bundle::weather_skill();
                    b.truncate(b.len() / 2);
                    b
                },
                None,
                None,
            )
            .await,
            422,
            "corrupt_archive",
        ),
        (
            app.submit("SKILL", vec![0u8; 100 * 1024], None, None).await,
            413,
            "payload_too_large",
        ),
        (
            app.submit(
                "SKILL",
                bundle::weather_skill(),
                Some(json!({"unknown": 1})),
                None,
            )
            .await,
            422,
            "invalid_metadata",
        ),
        (
            app.http
                .post(app.url("/api/v1/sigma/dev/submissions?category=SKILL"))
                .body(bundle::weather_skill())
                .send()
                .await
                .unwrap(),
            401,
            "unauthorized",
        ),
        (
            app.http
                .post(app.url("/api/v1/sigma/dev/submissions?category=SKILL"))
                .bearer_auth(&app.operator_token)
                .body(bundle::weather_skill())
                .send()
                .await
                .unwrap(),
            401,
            "unauthorized",
        ),
        (
            app.http
                .post(app.url("/api/v1/sigma/dev/submissions"))
                .bearer_auth(&app.developer_token)
                .header("content-type", "application/gzip")
                .body(bundle::weather_skill())
                .send()
                .await
                .unwrap(),
            422,
            "missing_category",
        ),
    ];
    for (response, status, code) in cases {
        let actual = response.status().as_u16();
        let body: Value = response
            .json()
            .await
            .unwrap_or_else(|e| panic!("{code}: body is not JSON ({e})"));
        assert_eq!(
            (actual, body["code"].as_str().unwrap()),
            (status, code),
            "{body}"
        );
        assert!(!body["detail"].as_str().unwrap().is_empty());
    }
    assert_eq!(submission_count(&app).await, 0, "nothing half-written");

    // The raw-body form works too, and the status URL it returns is readable.
    let raw = app
        .http
        .post(app.url("/api/v1/sigma/dev/submissions?category=SKILL%20%2B%20API&name=weather"))
        .bearer_auth(&app.developer_token)
        .header("content-type", "application/gzip")
        .body(bundle::weather_skill())
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 202);
    let location = raw.headers()["location"].to_str().unwrap().to_owned();
    let accepted: Value = raw.json().await.unwrap();
    assert_eq!(location, accepted["statusUrl"]);
    let dev = app.dev(&app.developer_token);
    let path = location
        .strip_prefix(&dev.url(""))
        .unwrap_or_else(|| panic!("{location} is not on this API's developer plane"));
    let status: Value = dev.get(path, 200).await;
    assert_eq!(status["category"], "SKILL_API");
    assert_eq!(status["skillName"], "weather");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submissions_list_pages_newest_first_and_stays_private() {
    // Only the ops queue: runs record their submissions (workflow first) and go no further.
    let app = TestApp::spawn_with(sigma_testkit::Options {
        queues: vec![sigma_workflows::worker::Queue::Ops],
        ..Default::default()
    })
    .await
    .unwrap();
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(app.submit_ok(bundle::weather_skill_variant(n)).await);
    }
    let dev = app.dev(&app.developer_token);
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = "/submissions?limit=2".to_owned();
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let page: Value = dev.get(&path, 200).await;
        seen.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["id"].as_str().unwrap().to_owned()),
        );
        match page["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    ids.reverse();
    assert_eq!(seen, ids);
    for query in [
        "limit=500",
        "limit=abc",
        "cursor=9223372036854775807_x",
        "cursor=nonsense",
    ] {
        let body: Value = dev.get(&format!("/submissions?{query}"), 400).await;
        assert!(
            body["code"].is_string() && body["detail"].is_string(),
            "{query}: {body}"
        );
    }
    // Status reads come from the projection: no sandbox or audit worker is needed for them.
    let status = app
        .wait_for_stage(&ids[0], "SANDBOX", std::time::Duration::from_secs(30))
        .await;
    assert_eq!(status["id"], ids[0].as_str());
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_served_openapi_document_is_the_committed_one_with_a_browsable_ui() {
    let app = TestApp::spawn_with(sigma_testkit::Options::without_workers())
        .await
        .unwrap();
    let served: Value = app.public_json("/api/v1/openapi.json").await;
    let committed: Value = serde_json::from_str(include_str!("../../openapi.json")).unwrap();
    assert_eq!(served, committed);
    assert!(served["paths"]["/api/v1/sigma/dev/submissions"]["post"].is_object());
    let ui = app.http.get(app.url("/docs/")).send().await.unwrap();
    assert_eq!(ui.status(), 200);
    assert!(
        ui.text().await.unwrap().contains("swagger"),
        "Swagger UI page"
    );
    app.shutdown().await;
}
