//! Credentials never cross planes: tokens and cookies open only their own plane, a portal
//! session cannot take the direct intake, sessions slide, logout revokes, and login calls are
//! limited per client.

use reqwest::Method;
use serde_json::{Value, json};
use sigma_testkit::{Options, TestApp, bundle};

use super::{DEV, unique_email};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_cookies_open_only_their_own_plane() {
    let app = TestApp::spawn_with(Options::without_workers())
        .await
        .unwrap();
    let session = app.login(&unique_email("planes")).await;
    let console = app.console_session().await;
    let dev = app.public_dev();
    let operator = app.public_operator();
    for (plane, path, token, expected) in [
        (&dev, "/me", session.as_str(), 200),
        (&dev, "/me", app.developer_token.as_str(), 200),
        (&dev, "/me", console.as_str(), 401),
        (&dev, "/me", app.operator_token.as_str(), 401),
        (&operator, "/pricing", console.as_str(), 200),
        (&operator, "/pricing", app.operator_token.as_str(), 200),
        (&operator, "/pricing", session.as_str(), 401),
        (&operator, "/pricing", app.developer_token.as_str(), 401),
        (&dev, "/me", "sigma_portal_0000", 401),
    ] {
        let (status, body) = plane
            .with_token(token)
            .call(Method::GET, path, None::<&()>)
            .await;
        assert_eq!(
            status,
            expected,
            "{path} with {}…: {body}",
            &token[..14.min(token.len())]
        );
    }
    // Cookies: each plane reads only its own cookie.
    for (plane, path, cookie, expected) in [
        (&dev, "/me", format!("sigma_portal={session}"), 200),
        (
            &operator,
            "/pricing",
            format!("sigma_portal={session}"),
            401,
        ),
        (
            &operator,
            "/pricing",
            format!("sigma_console={session}"),
            401,
        ),
        (
            &operator,
            "/pricing",
            format!("sigma_console={console}"),
            200,
        ),
    ] {
        let (status, body) = plane
            .with_header("cookie", &cookie)
            .call(Method::GET, path, None::<&()>)
            .await;
        assert_eq!(status, expected, "{path} with {}: {body}", &cookie[..14]);
    }
    app.shutdown().await;
}

/// Anyone can sign in, so a portal session cannot take the direct intake that skips payment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_portal_session_cannot_take_the_direct_intake() {
    let app = TestApp::spawn_with(Options::without_workers())
        .await
        .unwrap();
    let session = app.login(&unique_email("direct")).await;
    // A gzip body, so not through the JSON client.
    let direct = app
        .http
        .post(app.url(&format!("{DEV}/submissions?category=SKILL")))
        .bearer_auth(&session)
        .header("content-type", "application/gzip")
        .body(bundle::weather_skill())
        .send()
        .await
        .unwrap();
    assert_eq!(direct.status(), 403);
    let direct: Value = direct.json().await.unwrap();
    assert_eq!(direct["code"], "submit_through_a_draft");
    let submissions: i64 = sqlx::query_scalar("select count(*) from submission")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(submissions, 0, "nothing was recorded");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_used_session_slides_its_end_forward() {
    let app = TestApp::spawn_with(Options::without_workers())
        .await
        .unwrap();
    let session = app.login(&unique_email("slide")).await;
    let expiry = || async {
        sqlx::query_scalar::<_, chrono::DateTime<chrono::Utc>>(
            "select max(expires_at) from developer_session",
        )
        .fetch_one(&app.db)
        .await
        .unwrap()
    };
    // An hour of idleness, told by moving the stored expiry back rather than by waiting.
    sqlx::query("update developer_session set expires_at = expires_at - interval '1 hour'")
        .execute(&app.db)
        .await
        .unwrap();
    let before = expiry().await;
    let _: Value = app.dev(&session).get("/me", 200).await;
    assert!(expiry().await > before, "the session slid forward");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_ends_the_session_on_both_planes() {
    let app = TestApp::spawn_with(Options::without_workers())
        .await
        .unwrap();
    let session = app.login(&unique_email("logout")).await;
    let console = app.console_session().await;
    let dev = app.dev(&session);
    let _: Value = dev.post_empty("/auth/logout", 204).await;
    let _: Value = dev.get("/me", 401).await;
    let operator = app.operator(&console);
    let _: Value = operator.post_empty("/auth/logout", 204).await;
    let _: Value = operator.get("/pricing", 401).await;
    let _: Value = app
        .public_operator()
        .post(
            "/auth/login",
            &json!({"name": "nobody", "password": "wrong password!"}),
            401,
        )
        .await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_calls_are_limited_per_client() {
    let app = TestApp::spawn_with(Options {
        tweak: std::sync::Arc::new(|s| s.portal.logins_per_client_per_hour = 4),
        ..Options::without_workers()
    })
    .await
    .unwrap();
    // This client uses its four login calls: one start and one verify, two more starts.
    let _session = app.login(&unique_email("client")).await;
    let start = |email: String| {
        let dev = app.public_dev();
        async move {
            dev.call(
                Method::POST,
                "/auth/email/start",
                Some(&json!({ "email": email })),
            )
            .await
        }
    };
    assert_eq!(start(unique_email("x")).await.0, 202);
    assert_eq!(start(unique_email("y")).await.0, 202);
    let (status, body) = start(unique_email("z")).await;
    assert_eq!(status, 429, "{body}");
    app.shutdown().await;
}
