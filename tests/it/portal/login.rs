//! Email login: codes expire, work once, resist guessing and say nothing about who has an
//! account; magic links work once; starts are limited per address.

use reqwest::Method;
use serde_json::{Value, json};
use sigma_testkit::{Options, TestApp, code_in};

use super::unique_email;

/// A stack without workers (login needs none) with small login limits.
async fn login_app() -> TestApp {
    TestApp::spawn_with(Options {
        tweak: std::sync::Arc::new(|s| {
            s.portal.logins_per_address_per_hour = 4;
            s.portal.logins_per_client_per_hour = 1000;
            s.portal.code_failures_per_address_per_day = 8;
        }),
        ..Options::without_workers()
    })
    .await
    .unwrap()
}

async fn start(app: &TestApp, email: &str) -> (u16, Value) {
    app.public_dev()
        .call(
            Method::POST,
            "/auth/email/start",
            Some(&json!({ "email": email })),
        )
        .await
}

async fn verify(app: &TestApp, body: Value) -> (u16, Value) {
    app.public_dev()
        .call(Method::POST, "/auth/email/verify", Some(&body))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_start_reveals_nothing_and_is_limited_per_address() {
    let app = login_app().await;
    // Existing account or not: the same answer.
    let known = start(&app, &app.developer_email).await;
    let unknown = start(&app, &unique_email("nobody")).await;
    assert_eq!(known, unknown);
    assert_eq!(known.0, 202);

    // Per address: the fifth start within the hour is refused.
    let f = unique_email("flood");
    for _ in 0..4 {
        assert_eq!(start(&app, &f).await.0, 202);
    }
    let (status, body) = start(&app, &f).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(start(&app, "not-an-address").await.0, 422);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_code_expires_works_once_and_a_new_start_voids_it() {
    let app = login_app().await;
    // Expired.
    let a = unique_email("expired");
    let code = app.login_code(&a).await;
    // The code's time runs out: move its stored expiry rather than wait the TTL.
    sqlx::query(
        "update login_challenge set expires_at = now() - interval '1 second' where email = $1",
    )
    .bind(&a)
    .execute(&app.db)
    .await
    .unwrap();
    let (status, body) = verify(&app, json!({"email": a, "code": code})).await;
    assert_eq!(status, 401, "an expired code: {body}");

    // Single use.
    let b = unique_email("once");
    let code = app.login_code(&b).await;
    assert_eq!(verify(&app, json!({"email": b, "code": code})).await.0, 200);
    assert_eq!(
        verify(&app, json!({"email": b, "code": code})).await.0,
        401,
        "reused"
    );

    // A new start voids the earlier code.
    let c = unique_email("voided");
    let first = app.login_code(&c).await;
    let second = app.login_code(&c).await;
    if first != second {
        assert_eq!(
            verify(&app, json!({"email": c, "code": first})).await.0,
            401
        );
    }
    assert_eq!(
        verify(&app, json!({"email": c, "code": second})).await.0,
        200
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guesses_void_a_code_and_the_daily_budget_of_guesses_runs_out() {
    let app = login_app().await;
    // Brute force: five wrong guesses void the code, the right one then fails too.
    let d = unique_email("guessed");
    let code = app.login_code(&d).await;
    let wrong: Vec<String> = (0..1_000_000u32)
        .map(|n| format!("{n:06}"))
        .filter(|g| *g != code)
        .take(5)
        .collect();
    for (i, guess) in wrong.iter().enumerate() {
        let (status, body) = verify(&app, json!({"email": d, "code": guess})).await;
        assert_eq!(status, 401);
        if i == 4 {
            assert!(body["detail"].as_str().unwrap().contains("void"), "{body}");
        }
    }
    assert_eq!(
        verify(&app, json!({"email": d, "code": code})).await.0,
        401,
        "void after 5 guesses"
    );
    // New starts do not buy new guesses without end: the address's daily budget (8) runs out.
    let code = app.login_code(&d).await;
    for guess in wrong.iter().filter(|g| **g != code).take(3) {
        assert_eq!(
            verify(&app, json!({"email": d, "code": guess})).await.0,
            401
        );
    }
    let (status, body) = start(&app, &d).await;
    assert_eq!(status, 429, "{body}");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_magic_link_works_once_and_only_hashes_are_stored() {
    let app = login_app().await;
    let e = unique_email("link");
    let seen = app.emails_to(&e).await.len();
    assert_eq!(start(&app, &e).await.0, 202);
    let mail = app.next_email_to(&e, seen).await;
    let text = mail["text"].as_str().unwrap();
    let token = text
        .split("login?token=")
        .nth(1)
        .unwrap()
        .chars()
        .take_while(char::is_ascii_hexdigit)
        .collect::<String>();
    assert_eq!(token.len(), 64);
    let code = code_in(text).unwrap();
    let stored: Vec<(Vec<u8>, Vec<u8>)> =
        sqlx::query_as("select code_hash, link_hash from login_challenge where email = $1")
            .bind(&e)
            .fetch_all(&app.db)
            .await
            .unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].0.len(), 32);
    assert!(!stored[0].0.windows(6).any(|w| w == code.as_bytes()));
    assert!(!stored[0].1.windows(64).any(|w| w == token.as_bytes()));
    let session: Value = app
        .public_dev()
        .post("/auth/email/verify", &json!({"token": token}), 200)
        .await;
    assert_eq!(session["email"], e.as_str());
    assert_eq!(
        verify(&app, json!({"token": token})).await.0,
        401,
        "a link works once"
    );
    app.shutdown().await;
}
