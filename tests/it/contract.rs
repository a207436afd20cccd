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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owned_resources_answer_only_their_owner_and_ids_are_typed() {
    let app = TestApp::spawn_with(Options::without_workers())
        .await
        .unwrap();
    let owner = app.login(&unique_email("owner")).await;
    let stranger = app.login(&unique_email("stranger")).await;
    // A documented label is read as the category's name, and the answer carries the name.
    let dev = app.dev(&owner);
    let draft: Value = dev
        .post(
            "/drafts",
            &json!({"category": "skill + api", "entry": "SKILL.md"}),
            201,
        )
        .await;
    assert_eq!(draft["category"], "SKILL_API", "{draft}");
    assert_eq!(draft["source"]["type"], "none");
    let draft = draft["id"].as_str().unwrap().to_owned();
    let ticket: Value = dev
        .post(
            "/support/tickets",
            &json!({"subject": "mine", "body": "only mine"}),
            201,
        )
        .await;
    assert_eq!(ticket["status"], "OPEN", "{ticket}");
    let ticket = ticket["id"].as_str().unwrap().to_owned();

    // Someone else's resource is as absent as a missing one, on every route that acts on one;
    // nothing runs (no worker is up: a dry-run or manifest would wait) and nothing changes.
    let owned: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, format!("/drafts/{draft}"), None),
        (
            Method::PATCH,
            format!("/drafts/{draft}"),
            Some(json!({"advisoryNote": "x"})),
        ),
        (Method::DELETE, format!("/drafts/{draft}"), None),
        (Method::GET, format!("/drafts/{draft}/manifest"), None),
        (Method::POST, format!("/drafts/{draft}/manifest"), None),
        (Method::POST, format!("/drafts/{draft}/validate"), None),
        (Method::POST, format!("/drafts/{draft}/quote"), None),
        (
            Method::POST,
            format!("/drafts/{draft}/submit"),
            Some(json!({"paymentIntentId": "00000000-0000-0000-0000-000000000000"})),
        ),
        (Method::GET, format!("/support/tickets/{ticket}"), None),
        (
            Method::POST,
            format!("/support/tickets/{ticket}/messages"),
            Some(json!({"body": "not yours"})),
        ),
    ];
    for (method, path, body) in &owned {
        let (status, answer) = app
            .dev(&stranger)
            .call(method.clone(), path, body.as_ref())
            .await;
        assert_eq!(
            (status, answer["code"].as_str()),
            (404, Some("not_found")),
            "{method} {path}: {answer}"
        );
        // Without a credential the answer is 401, whoever owns it.
        let (status, _) = app
            .public_dev()
            .call(method.clone(), path, body.as_ref())
            .await;
        assert_eq!(status, 401, "{method} {path}");
    }
    let still: Value = dev.get(&format!("/drafts/{draft}"), 200).await;
    assert_eq!(still["advisoryNote"].as_str(), None, "{still}");
    let mine: Value = dev.get(&format!("/support/tickets/{ticket}"), 200).await;
    assert_eq!(mine["messages"].as_array().map(Vec::len), Some(1), "{mine}");

    // Malformed ids are 404 `not_found` in JSON too, on every plane; a path that is not
    // UTF-8 is 400 in JSON, not axum's text.
    let console = app.console_session().await;
    for (path, token) in [
        (format!("{DEV}/drafts/not-a-uuid"), owner.as_str()),
        (format!("{DEV}/payment-intents/not-a-uuid"), owner.as_str()),
        (
            format!("{DEV}/payment-intents/00000000-0000-0000-0000-000000000000"),
            owner.as_str(),
        ),
        (format!("{DEV}/submissions/not-an-id"), owner.as_str()),
        (
            format!("{DEV}/submissions/ffffffffffffffffffffffff"),
            owner.as_str(),
        ),
        (format!("{DEV}/support/tickets/1"), owner.as_str()),
        (format!("{OPS}/support/tickets/1"), console.as_str()),
        (
            "/api/v1/public/certificates/ABC/live-status".to_owned(),
            owner.as_str(),
        ),
    ] {
        let answer = send_raw(&app, Method::GET, &path, Some(token), None).await;
        assert_error(&answer, 404, "not_found", "not found");
    }
    let answer = send_raw(
        &app,
        Method::GET,
        &format!("{DEV}/drafts/%FF"),
        Some(&owner),
        None,
    )
    .await;
    assert_eq!(
        (answer.0, answer.1["code"].as_str()),
        (400, Some("invalid_path")),
        "{}",
        answer.1
    );

    // Closed sets are typed: an unknown value is refused naming the field (JSON) or the
    // parameter (queries, 400), and an unknown path value is the resource's 404.
    let cases = [
        (
            Method::POST,
            format!("{DEV}/drafts"),
            owner.as_str(),
            Some(r#"{"category": "SMART_CONTRACT"}"#),
            422,
            "invalid_field",
            "`category`",
        ),
        (
            Method::PUT,
            format!("{OPS}/support/tickets/{ticket}/status"),
            console.as_str(),
            Some(r#"{"status": "SOLVED"}"#),
            422,
            "invalid_field",
            "`status`",
        ),
        (
            Method::GET,
            format!("{OPS}/flags?status=GONE"),
            console.as_str(),
            None,
            400,
            "invalid_query",
            "`status`",
        ),
        (
            Method::GET,
            format!("{OPS}/support/tickets?status=open"),
            console.as_str(),
            None,
            400,
            "invalid_query",
            "`status`",
        ),
        (
            Method::PUT,
            format!("{OPS}/payment-methods/barter"),
            console.as_str(),
            Some(r#"{"enabled": false}"#),
            404,
            "not_found",
            "payment method",
        ),
    ];
    for (method, path, token, body, status, code, mentions) in cases {
        let answer = send_raw(&app, method, &path, Some(token), body).await;
        assert_error(&answer, status, code, mentions);
    }

    // One cursor format on every plane: a developer list's cursor is not a certificate's
    // (its id is a UUID), and a made-up one is refused alike.
    for n in 0..2 {
        let _: Value = dev
            .post(
                "/drafts",
                &json!({"category": "SKILL", "advisoryNote": format!("draft {n}")}),
                201,
            )
            .await;
    }
    let page: Value = dev.get("/drafts?limit=1", 200).await;
    let cursor = page["nextCursor"].as_str().unwrap().to_owned();
    let next: Value = dev
        .get(&format!("/drafts?limit=1&cursor={cursor}"), 200)
        .await;
    assert_eq!(next["items"].as_array().map(Vec::len), Some(1), "{next}");
    for path in [
        format!("/api/v1/public/certificates?cursor={cursor}"),
        format!("{DEV}/support/tickets?cursor=bm90LWEtY3Vyc29y"),
        format!("{DEV}/credits/ledger?cursor={cursor}"),
    ] {
        let answer = send_raw(&app, Method::GET, &path, Some(&owner), None).await;
        assert_error(&answer, 400, "invalid_cursor", "cursor");
    }
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unique_constraints_answer_409_naming_the_field() {
    let app = TestApp::spawn_with(Options::without_workers())
        .await
        .unwrap();
    let console = app.console_session().await;
    let domain = format!("@{}.example.org", unique_email("dup").replace('@', "-at-"));
    let operator = app.operator(&console);
    let body = json!({"pattern": domain, "note": "partner"});
    let add = || operator.call(Method::POST, "/free-allowlist", Some(&body));
    assert_eq!(add().await.0, 201);
    // Postgres decides (no read before the write) and the answer names what is taken.
    let (status, body) = add().await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("already_allowlisted")),
        "{body}"
    );
    assert!(
        body["detail"].as_str().unwrap().contains("`pattern`"),
        "{body}"
    );
    app.shutdown().await;
}
