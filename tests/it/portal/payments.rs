//! Money under concurrency and failure: credits for ten debit exactly ten, a first-N campaign
//! never oversells, and a platform failure refunds.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sigma_testkit::{TestApp, bundle};

use super::{
    WAIT, balance, developer_id, grant, quote, quoted_drafts, skill_draft, submit, unique_email,
    wait_for_stage,
};

/// Submits every quoted draft at once; the answers and how many were accepted (202).
async fn submit_all(
    app: &TestApp,
    session: &str,
    drafts: &[(String, String)],
) -> (Vec<(u16, Value)>, usize) {
    let answers = futures::future::join_all(
        drafts
            .iter()
            .map(|(draft, intent)| submit(app, session, draft, intent)),
    )
    .await;
    let accepted = answers.iter().filter(|(s, _)| *s == 202).count();
    (answers, accepted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_submits_against_credits_for_ten_debit_exactly_ten() {
    let app = TestApp::spawn().await.unwrap();
    let session = app.login(&unique_email("race")).await;
    let console = app.console_session().await;
    let me = developer_id(&app, &session).await;
    assert_eq!(grant(&app, &console, &me, 10 * 900, "ten").await.0, 201);
    let drafts = quoted_drafts(&app, &session, 50).await;
    let (answers, accepted) = submit_all(&app, &session, &drafts).await;
    let refused = answers
        .iter()
        .filter(|(s, b)| *s == 402 && b["code"] == "insufficient_credits")
        .count();
    assert_eq!((accepted, refused), (10, 40), "{answers:?}");
    assert_eq!(balance(&app, &session).await, 0);
    let (debits, sum): (i64, Option<i64>) = sqlx::query_as(
        "select count(*) filter (where kind = 'DEBIT_SUBMISSION'), sum(amount_credits)::bigint from credit_ledger where developer_id = $1::uuid",
    )
    .bind(&me)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(debits, 10);
    assert_eq!(sum, Some(0), "the ledger sums to the balance");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_n_campaign_never_oversells_under_concurrency() {
    let app = TestApp::spawn().await.unwrap();
    let session = app.login(&unique_email("campaign")).await;
    let console = app.console_session().await;
    let _campaign: Value = app
        .operator(&console)
        .post(
            "/pricing/campaigns",
            &json!({"name": "First three half price", "category": "SKILL", "kind": "FIRST_N", "discountBps": 5000, "limitN": 3}),
            201,
        )
        .await;
    let me = developer_id(&app, &session).await;
    assert_eq!(grant(&app, &console, &me, 100_000, "plenty").await.0, 201);
    let drafts = quoted_drafts(&app, &session, 12).await;
    let (answers, accepted) = submit_all(&app, &session, &drafts).await;
    let sold_out = answers
        .iter()
        .filter(|(s, b)| *s == 409 && b["code"] == "campaign_ended")
        .count();
    assert_eq!((accepted, sold_out), (3, 9), "{answers:?}");
    let catalog: Value = app.operator(&console).get("/pricing", 200).await;
    assert_eq!(catalog["campaigns"][0]["usedN"], 3);
    assert_eq!(
        balance(&app, &session).await,
        100_000 - 3 * 450,
        "three at half of 900"
    );
    // A fresh quote no longer carries the spent campaign.
    let draft = skill_draft(&app, &session, bundle::weather_skill_variant(99)).await;
    let q = quote(&app, &session, &draft).await;
    assert_eq!(q["totalCredits"], 900);
    assert!(q["campaignApplied"].is_null());
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_platform_failure_refunds_the_credits() {
    let app = TestApp::spawn().await.unwrap();
    let session = app.login(&unique_email("refund")).await;
    let console = app.console_session().await;
    let me = developer_id(&app, &session).await;
    assert_eq!(grant(&app, &console, &me, 900, "exact").await.0, 201);
    let drafts = quoted_drafts(&app, &session, 1).await;
    let (draft, intent_id) = &drafts[0];
    // The reviewed bytes vanish from storage before the sandbox reads them: every attempt fails.
    let key: String = sqlx::query_scalar("select bundle_key from draft where draft_id = $1::uuid")
        .bind(draft)
        .fetch_one(&app.db)
        .await
        .unwrap();
    app.deps_blob().delete(&key).await.unwrap();
    let (status, accepted) = submit(&app, &session, draft, intent_id).await;
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(balance(&app, &session).await, 0);
    let id = accepted["id"].as_str().unwrap();
    wait_for_stage(&app, &session, id, "FAILED").await;
    let start = Instant::now();
    while balance(&app, &session).await != 900 {
        assert!(start.elapsed() < WAIT, "no refund");
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let dev = app.dev(&session);
    let ledger: Value = dev.get("/credits/ledger", 200).await;
    assert_eq!(ledger["items"][0]["kind"], "REFUND");
    assert_eq!(ledger["items"][0]["amountCredits"], 900);
    assert_eq!(ledger["items"][0]["reference"], id);
    let intent: Value = dev.get(&format!("/payment-intents/{intent_id}"), 200).await;
    assert_eq!(intent["status"], "REFUNDED");

    // The compensation is part of the workflow's history: it must replay, and is kept as a fixture.
    let json = crate::replay::record_and_replay(&app, id, "charged-refunded.json").await;
    assert!(
        String::from_utf8_lossy(&json).contains("portal.refund_charge"),
        "the refund ran as an activity"
    );
    app.shutdown().await;
}
