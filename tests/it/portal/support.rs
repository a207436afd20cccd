//! Support tickets between a developer and the operators, with replies by email.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sigma_testkit::TestApp;

use super::unique_email;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn support_replies_reach_the_developer_by_email() {
    let app = TestApp::spawn().await.unwrap();
    let email = unique_email("support");
    let session = app.login(&email).await;
    let console = app.console_session().await;
    let dev = app.dev(&session);
    let operator = app.operator(&console);
    let ticket: Value = dev
        .post(
            "/support/tickets",
            &json!({"subject": "Manifest assistant locked", "body": "Please unlock it."}),
            201,
        )
        .await;
    assert_eq!(ticket["status"], "OPEN");
    let id = ticket["id"].as_str().unwrap();
    let queue: Value = operator.get("/support/tickets", 200).await;
    assert!(
        queue["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["id"] == id),
        "{queue}"
    );
    let seen = app.emails_to(&email).await.len();
    let replied: Value = operator
        .post(
            &format!("/support/tickets/{id}/messages"),
            &json!({"body": "Unlocked: try again."}),
            201,
        )
        .await;
    assert_eq!(replied["status"], "PENDING");
    let mail = app.next_email_to(&email, seen).await;
    assert!(
        mail["subject"]
            .as_str()
            .unwrap()
            .contains("Manifest assistant locked"),
        "{mail}"
    );
    assert!(
        mail["text"]
            .as_str()
            .unwrap()
            .contains("Unlocked: try again.")
    );
    let start = Instant::now();
    loop {
        let t: Value = dev.get(&format!("/support/tickets/{id}"), 200).await;
        if t["messages"][1]["emailedAt"].is_string() {
            assert_eq!(t["messages"][1]["author"], "OPERATOR");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "{t}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let reopened: Value = dev
        .post(
            &format!("/support/tickets/{id}/messages"),
            &json!({"body": "Thanks, it works."}),
            201,
        )
        .await;
    assert_eq!(reopened["status"], "OPEN");
    // Closed by the operator: the developer opens a new ticket instead.
    let closed: Value = operator
        .put(
            &format!("/support/tickets/{id}/status"),
            &json!({"status": "CLOSED"}),
            200,
        )
        .await;
    assert_eq!(closed["status"], "CLOSED");
    let body: Value = dev
        .post(
            &format!("/support/tickets/{id}/messages"),
            &json!({"body": "One more thing."}),
            409,
        )
        .await;
    assert_eq!(body["code"], "ticket_closed");
    // Nobody else's ticket is visible.
    let stranger = app.login(&unique_email("stranger")).await;
    let _: Value = app
        .dev(&stranger)
        .get(&format!("/support/tickets/{id}"), 404)
        .await;
    app.shutdown().await;
}
