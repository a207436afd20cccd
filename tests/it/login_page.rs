//! The magic link of a login email opens a page that exists: the API's own sign-in page.
//! Opening it spends nothing; the token it carries then signs in once.

use serde_json::{Value, json};
use sigma_testkit::{Options, TestApp};

use crate::portal::unique_email;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_magic_link_opens_a_sign_in_page_and_opening_it_spends_nothing() {
    let app = TestApp::spawn_with(Options {
        tweak: std::sync::Arc::new(|s| {
            s.portal.portal_base_url = "http://placeholder/portal".into()
        }),
        ..Options::without_workers()
    })
    .await
    .unwrap();
    let address = unique_email("page");
    let seen = app.emails_to(&address).await.len();
    let _: Value = app
        .public_dev()
        .post("/auth/email/start", &json!({"email": address}), 202)
        .await;
    let mail = app.next_email_to(&address, seen).await;
    let text = mail["text"].as_str().unwrap();
    // The link names the portal's base URL; this API serves its /portal/login page.
    let link = text
        .split_whitespace()
        .find(|w| w.starts_with("http://placeholder/portal/login?token="))
        .unwrap_or_else(|| panic!("no magic link in {text}"));
    let path = link.trim_start_matches("http://placeholder");
    let token = path.trim_start_matches("/portal/login?token=");

    // Opening the page (twice, as a mail scanner and then the person) spends nothing.
    for _ in 0..2 {
        let page = app.http.get(app.url(path)).send().await.unwrap();
        assert_eq!(page.status(), 200);
        assert_eq!(page.headers()["cache-control"], "no-store");
        let html = page.text().await.unwrap();
        assert!(html.contains("Sign in to SIGMA"), "{html}");
        assert!(
            html.contains("/api/v1/sigma/dev/auth/email/verify"),
            "the page sends the token to the verify endpoint"
        );
        assert!(!html.contains(token), "the server never echoes the token");
    }
    // The button's request: the token signs in, once.
    let session: Value = app
        .public_dev()
        .post("/auth/email/verify", &json!({"token": token}), 200)
        .await;
    assert_eq!(session["email"], address.as_str());
    let (status, _) = app
        .public_dev()
        .call(
            reqwest::Method::POST,
            "/auth/email/verify",
            Some(&json!({"token": token})),
        )
        .await;
    assert_eq!(status, 401, "a magic link works once");
    app.shutdown().await;
}
