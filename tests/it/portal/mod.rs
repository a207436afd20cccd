//! The developer plane as a developer meets it: email login (codes read from maildev), drafts,
//! manifests, dry-runs, quotes, credits and submission, with the operator's console beside it.
//! The helpers here are the steps a developer takes; each test module is one area.

mod drafts;
mod journey;
mod login;
mod payments;
mod planes;
mod support;
mod vouchers;

use std::time::{Duration, Instant};

use futures::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};
use sigma_testkit::{Reply, TestApp, bundle};

pub(crate) const DEV: &str = "/api/v1/sigma/dev";
pub(crate) const OPS: &str = "/api/v1/sigma/operator";
pub(crate) const WAIT: Duration = Duration::from_secs(90);

pub(crate) fn unique_email(tag: &str) -> String {
    format!(
        "{tag}-{}@example.org",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    )
}

/// What the manifest model answers for the weather skill.
pub(crate) fn manifest_answer() -> Reply {
    Reply::Content(
        json!({
            "safety": {"network": true, "filesystem": false, "shell": false, "env": false},
            "capabilities": ["http-requests"],
            "externalCalls": [{"url": "https://api.open-meteo.com/v1/forecast", "method": "GET", "auth": "none", "reason": "Fetches the forecast."}]
        })
        .to_string(),
    )
}

/// Uploads a draft's bundle (a gzip body, so not through the JSON client).
pub(crate) async fn put_bundle(
    app: &TestApp,
    token: &str,
    draft: &str,
    bundle: Vec<u8>,
) -> (u16, Value) {
    let response = app
        .http
        .put(app.dev(token).url(&format!("/drafts/{draft}/bundle")))
        .bearer_auth(token)
        .header("content-type", "application/gzip")
        .body(bundle)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// A draft of `body` with `bundle` uploaded; returns its id.
pub(crate) async fn draft_with(app: &TestApp, token: &str, body: Value, bundle: Vec<u8>) -> String {
    let draft: Value = app.dev(token).post("/drafts", &body, 201).await;
    let id = draft["id"].as_str().unwrap().to_owned();
    let (status, body) = put_bundle(app, token, &id, bundle).await;
    assert_eq!(status, 200, "{body}");
    id
}

/// A SKILL draft with the weather bundle; returns its id.
pub(crate) async fn skill_draft(app: &TestApp, token: &str, bundle: Vec<u8>) -> String {
    draft_with(
        app,
        token,
        json!({"category": "SKILL", "advisoryNote": "Calls open-meteo only."}),
        bundle,
    )
    .await
}

/// The draft's dry-run report.
pub(crate) async fn dry_run(app: &TestApp, token: &str, draft: &str) -> Value {
    app.dev(token)
        .post_empty(&format!("/drafts/{draft}/validate"), 200)
        .await
}

pub(crate) async fn quote(app: &TestApp, token: &str, draft: &str) -> Value {
    app.dev(token)
        .post_empty(&format!("/drafts/{draft}/quote"), 201)
        .await
}

pub(crate) async fn intent(
    app: &TestApp,
    token: &str,
    quote_id: &str,
    method: &str,
) -> (u16, Value) {
    app.dev(token)
        .call(
            Method::POST,
            "/payment-intents",
            Some(&json!({"quoteId": quote_id, "method": method})),
        )
        .await
}

pub(crate) async fn submit(
    app: &TestApp,
    token: &str,
    draft: &str,
    intent_id: &str,
) -> (u16, Value) {
    app.dev(token)
        .call(
            Method::POST,
            &format!("/drafts/{draft}/submit"),
            Some(&json!({"paymentIntentId": intent_id})),
        )
        .await
}

pub(crate) async fn developer_id(app: &TestApp, token: &str) -> String {
    let me: Value = app.dev(token).get("/me", 200).await;
    me["id"].as_str().unwrap().to_owned()
}

pub(crate) async fn grant(
    app: &TestApp,
    console: &str,
    developer: &str,
    credits: i64,
    key: &str,
) -> (u16, Value) {
    app.operator(console)
        .with_header("Idempotency-Key", key)
        .call(
            Method::POST,
            &format!("/developers/{developer}/credits"),
            Some(&json!({"credits": credits, "reason": "test grant"})),
        )
        .await
}

pub(crate) async fn wait_for_stage(app: &TestApp, token: &str, id: &str, stage: &str) -> Value {
    let start = Instant::now();
    loop {
        let (_, s) = app
            .dev(token)
            .call(Method::GET, &format!("/submissions/{id}"), None::<&()>)
            .await;
        if s["stage"] == stage {
            return s;
        }
        assert!(start.elapsed() < WAIT, "stage {stage} not reached: {s}");
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

pub(crate) async fn balance(app: &TestApp, token: &str) -> i64 {
    let me: Value = app.dev(token).get("/me", 200).await;
    me["creditBalance"].as_i64().unwrap()
}

/// Drafts of `n` quoted, each with a credits intent: (draft, intent) pairs.
pub(crate) async fn quoted_drafts(app: &TestApp, token: &str, n: usize) -> Vec<(String, String)> {
    futures::stream::iter(0..n)
        .map(|i| async move {
            let draft = skill_draft(app, token, bundle::weather_skill_variant(i)).await;
            let q = quote(app, token, &draft).await;
            let (status, intent) =
                intent(app, token, q["quoteId"].as_str().unwrap(), "credits").await;
            assert_eq!(status, 201, "{intent}");
            (draft, intent["id"].as_str().unwrap().to_owned())
        })
        .buffer_unordered(6)
        .collect()
        .await
}
