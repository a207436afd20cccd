//! The contract in one place: every text input refuses NUL (PostgreSQL cannot store it) with 422
//! naming the field, JSON errors name the failing field, the router's own answers are
//! `{code, detail}`, and the OpenAPI document declares what the handlers answer.

use reqwest::Method;
use serde_json::{Value, json};
use sigma_testkit::{Options, TestApp};

use crate::portal::{DEV, OPS, unique_email};

async fn send_raw(
    app: &TestApp,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, Value) {
    let mut request = app.http.request(method, app.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_owned());
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|_| panic!("{path}: not a JSON error body: {text:?}"));
    (status, body)
}

fn assert_error(answer: &(u16, Value), status: u16, code: &str, mentions: &str) {
    let (got, body) = answer;
    assert_eq!(*got, status, "{body}");
    assert_eq!(body["code"], code, "{body}");
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.contains(mentions), "`{mentions}` not in {detail:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_text_is_refused_with_422_naming_the_field_on_every_plane() {
    let app = TestApp::spawn_with(Options::without_workers())
        .await
        .unwrap();
    let session = app.login(&unique_email("nul")).await;
    // JSON strings carry NUL only as the escape `\u0000`.
    let cases = [
        (
            Method::POST,
            format!("{DEV}/credits/vouchers"),
            Some(session.as_str()),
            r#"{"code": "abc\u0000def"}"#,
            "`code`",
        ),
        (
            Method::POST,
            format!("{DEV}/support/tickets"),
            Some(session.as_str()),
            r#"{"subject": "help", "body": "x\u0000"}"#,
            "`body`",
        ),
        (
            Method::POST,
            format!("{OPS}/auth/login"),
            None,
            r#"{"name": "\u0000", "password": "x"}"#,
            "`name`",
        ),
        (
            Method::POST,
            "/api/v1/public/certificates/000000000000000000000000/flags".to_owned(),
            None,
            r#"{"reason": "bad\u0000"}"#,
            "`reason`",
        ),
    ];
    for (method, path, token, body, field) in cases {
        let answer = send_raw(&app, method, &path, token, Some(body)).await;
        assert_error(&answer, 422, "invalid_text", field);
    }
    // Query strings too, without login: a malformed query is a 400, like every bad parameter.
    let answer = send_raw(
        &app,
        Method::GET,
        "/api/v1/public/certificates?q=a%00b",
        None,
        None,
    )
    .await;
    assert_error(&answer, 400, "invalid_query", "`q` contains a NUL");
    // Nothing reached storage.
    let tickets: i64 = sqlx::query_scalar("select count(*) from support_ticket")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(tickets, 0);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_name_the_field_and_the_router_answers_in_json() {
    let app = TestApp::spawn_with(Options::without_workers())
        .await
        .unwrap();
    let session = app.login(&unique_email("shape")).await;
    let console = app.console_session().await;
    // A wrongly typed field is named.
    let answer = send_raw(
        &app,
        Method::POST,
        &format!("{DEV}/drafts"),
        Some(&session),
        Some(r#"{"category": 5}"#),
    )
    .await;
    assert_error(&answer, 422, "invalid_field", "`category`");
    // Malformed JSON is 400, a missing content type 415.
    let answer = send_raw(
        &app,
        Method::POST,
        &format!("{DEV}/drafts"),
        Some(&session),
        Some("{"),
    )
    .await;
    assert_error(&answer, 400, "invalid_json", "JSON");
    let (status, body) = {
        let r = app
            .http
            .post(app.url(&format!("{DEV}/drafts")))
            .bearer_auth(&session)
            .body("{}")
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    };
    assert_eq!(
        (status, body["code"].as_str()),
        (415, Some("unsupported_media_type"))
    );
    // An over-long text anywhere in a body.
    let long = json!({"code": "x".repeat(20_000)}).to_string();
    let answer = send_raw(
        &app,
        Method::POST,
        &format!("{DEV}/credits/vouchers"),
        Some(&session),
        Some(&long),
    )
    .await;
    assert_error(&answer, 422, "text_too_long", "`code`");
    // A decision's reason is sealed into a certificate: it is bounded, and a closed set is typed.
    let path = format!("{OPS}/submissions/000000000000000000000000/decision");
    let reason = json!({"decision": "APPROVED", "reason": "r".repeat(3_000)}).to_string();
    let answer = send_raw(&app, Method::POST, &path, Some(&console), Some(&reason)).await;
    assert_error(&answer, 422, "reason_too_long", "2000");
    let answer = send_raw(
        &app,
        Method::POST,
        &path,
        Some(&console),
        Some(r#"{"decision": "MAYBE", "reason": "r"}"#),
    )
    .await;
    assert_error(&answer, 422, "invalid_field", "`decision`");
    // Bad query parameters are 400 on every plane.
    for path in [
        format!("{DEV}/drafts?limit=abc"),
        format!("{DEV}/drafts?limit=0"),
        "/api/v1/public/certificates?limit=abc".into(),
    ] {
        let answer = send_raw(&app, Method::GET, &path, Some(&session), None).await;
        assert_eq!(answer.0, 400, "{path}: {}", answer.1);
    }
    // The router's own answers.
    let answer = send_raw(&app, Method::GET, "/api/v1/no-such-route", None, None).await;
    assert_error(&answer, 404, "route_not_found", "openapi");
    let answer = send_raw(&app, Method::DELETE, "/healthz", None, None).await;
    assert_error(&answer, 405, "method_not_allowed", "method");
    let long = format!(
        "/api/v1/public/certificates?q={}",
        "a".repeat(sigma_api::MAX_URI_BYTES)
    );
    let answer = send_raw(&app, Method::GET, &long, None, None).await;
    assert_error(&answer, 414, "uri_too_long", "bytes");
    app.shutdown().await;
}

#[test]
fn the_openapi_document_has_unique_operation_ids_and_declares_shared_errors() {
    let doc = serde_json::to_value(sigma_api::openapi()).unwrap();
    let mut ids = std::collections::BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let Some(id) = operation["operationId"].as_str() else {
                continue;
            };
            assert!(
                ids.insert(id.to_owned()),
                "{method} {path}: operationId `{id}` is used twice"
            );
            let responses = operation["responses"].as_object().unwrap();
            for status in ["400", "414", "500"] {
                assert!(
                    responses.contains_key(status),
                    "{method} {path} does not declare {status}"
                );
            }
            if operation.get("security").is_some() {
                assert!(
                    responses.contains_key("401"),
                    "{method} {path} does not declare 401"
                );
            }
            if operation.get("requestBody").is_some() {
                assert!(
                    responses.contains_key("415"),
                    "{method} {path} does not declare 415"
                );
            }
        }
    }
}
