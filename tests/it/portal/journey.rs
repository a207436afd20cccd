//! The paid journey, once as a short happy path, and its side checks each in a test of its own:
//! intents, the 402 without credits, idempotent grants, racing submits, and what a paid
//! submission leaves in the developer's history.

use reqwest::Method;
use serde_json::{Value, json};
use sigma_testkit::{MANIFEST_MODEL, Options, TestApp, bundle};

use super::{
    balance, developer_id, dry_run, grant, intent, manifest_answer, quote, quoted_drafts,
    skill_draft, submit, unique_email, wait_for_stage,
};

/// The whole journey: login → draft → manifest → dry-run → quote → credits → submit → certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_login_to_draft_to_paid_submission_to_certificate() {
    let app = TestApp::spawn().await.unwrap();
    let email = unique_email("journey");
    let session = app.login(&email).await;
    assert!(session.starts_with("sigma_portal_"));
    let dev = app.dev(&session);
    let me: Value = dev.get("/me", 200).await;
    assert_eq!(me["email"], email.as_str());
    assert_eq!(me["creditBalance"], 0);

    let bundle = bundle::weather_skill();
    let draft = skill_draft(&app, &session, bundle.clone()).await;
    let view: Value = dev.get(&format!("/drafts/{draft}"), 200).await;
    assert_eq!(view["source"]["type"], "upload");
    assert_eq!(view["revision"], 2, "the upload started a new revision");

    // The manifest: the model proposes, the backend injects the source.
    app.llm.script(MANIFEST_MODEL, [manifest_answer()]);
    let preview: Value = dev
        .post_empty(&format!("/drafts/{draft}/manifest"), 200)
        .await;
    assert_eq!(preview["locked"], true);
    let manifest = &preview["manifest"];
    assert_eq!(manifest["name"], "weather-forecast");
    assert_eq!(manifest["category"], "SKILL");
    assert_eq!(manifest["source"]["sourceType"], "upload");
    assert_eq!(
        manifest["source"]["bundleSha256"],
        sigma_shared::domain::Sha256Hex::of(&bundle).as_str()
    );
    assert_eq!(manifest["externalCalls"][0]["method"], "GET");
    let asked = app.llm.requests_for(MANIFEST_MODEL);
    assert_eq!(asked.len(), 1);
    assert!(
        asked[0]["messages"][1]["content"]
            .as_str()
            .unwrap()
            .contains("<skill_md>\n---\nname: weather-forecast"),
        "the SKILL.md goes to the model as delimited data"
    );
    let stored: Value = dev.get(&format!("/drafts/{draft}/manifest"), 200).await;
    assert_eq!(stored["current"], true);
    assert_eq!(stored["manifest"], *manifest);

    // Free dry-run, then the quote.
    let dry = dry_run(&app, &session, &draft).await;
    assert_eq!(dry["passed"], true, "{dry}");
    assert_eq!(dry["facts"]["fileCount"], 2);
    let quote = quote(&app, &session, &draft).await;
    assert_eq!(quote["category"], "SKILL");
    assert_eq!(quote["complexityTier"], "standard");
    assert_eq!(quote["totalCredits"], 900, "{quote}");
    assert_eq!(quote["totalUsd"], "9.00");
    assert_eq!(quote["lineItems"][0]["kind"], "base");
    let (status, paying) = intent(
        &app,
        &session,
        quote["quoteId"].as_str().unwrap(),
        "credits",
    )
    .await;
    assert_eq!(status, 201, "{paying}");
    assert_eq!(paying["amountCredits"], 900);

    // The operator grants credits, the developer pays and the certificate is issued.
    let console = app.console_session().await;
    let me_id = developer_id(&app, &session).await;
    assert_eq!(grant(&app, &console, &me_id, 1000, "grant-1").await.0, 201);
    let (status, accepted) = submit(&app, &session, &draft, paying["id"].as_str().unwrap()).await;
    assert_eq!(status, 202, "{accepted}");
    let id = accepted["id"].as_str().unwrap().to_owned();
    assert_eq!(balance(&app, &session).await, 100, "debited once");
    let done = wait_for_stage(&app, &session, &id, "DONE").await;
    assert_eq!(done["outcome"], "APPROVED", "{done}");
    assert_eq!(done["certificateId"], id.as_str());
    let verify: Value = app
        .public()
        .get(&format!("/certificates/{id}/verify"), 200)
        .await;
    assert_eq!(verify["valid"], true, "{verify}");
    app.shutdown().await;
}

/// Asking twice for an intent on one quote gives the same intent; without credits the submit
/// is 402 with the shortfall, and nothing is charged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_intent_is_made_once_per_quote_and_a_submit_without_credits_is_402() {
    let app = TestApp::spawn().await.unwrap();
    let session = app.login(&unique_email("short")).await;
    let draft = skill_draft(&app, &session, bundle::weather_skill()).await;
    let q = quote(&app, &session, &draft).await;
    let quote_id = q["quoteId"].as_str().unwrap();
    let (status, paying) = intent(&app, &session, quote_id, "credits").await;
    assert_eq!(status, 201, "{paying}");
    assert_eq!(paying["amountCredits"], 900);
    let (status, again) = intent(&app, &session, quote_id, "credits").await;
    assert_eq!(status, 200, "the same intent again: {again}");
    assert_eq!(again["id"], paying["id"]);

    let (status, refused) = submit(&app, &session, &draft, paying["id"].as_str().unwrap()).await;
    assert_eq!(status, 402, "{refused}");
    assert_eq!(refused["code"], "insufficient_credits");
    assert!(
        refused["detail"].as_str().unwrap().contains("900 short"),
        "{refused}"
    );
    assert_eq!(balance(&app, &session).await, 0);
    app.shutdown().await;
}

/// A retried grant (same `Idempotency-Key`) is booked once; the key with another amount is 409.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_credit_grant_is_booked_once() {
    let app = TestApp::spawn_with(Options::without_workers())
        .await
        .unwrap();
    let session = app.login(&unique_email("grant")).await;
    let console = app.console_session().await;
    let me_id = developer_id(&app, &session).await;
    let (status, first) = grant(&app, &console, &me_id, 1000, "grant-1").await;
    assert_eq!(status, 201, "{first}");
    let (status, repeat) = grant(&app, &console, &me_id, 1000, "grant-1").await;
    assert_eq!(status, 200, "{repeat}");
    assert_eq!(repeat["entryId"], first["entryId"]);
    let (status, reused) = grant(&app, &console, &me_id, 5000, "grant-1").await;
    assert_eq!(
        (status, reused["code"].as_str()),
        (409, Some("idempotency_key_reused")),
        "{reused}"
    );
    assert_eq!(balance(&app, &session).await, 1000);
    app.shutdown().await;
}

/// Two racing submits with one `Idempotency-Key`, then a plain repeat: one submission, one debit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_and_repeated_submits_make_one_submission_and_one_debit() {
    let app = TestApp::spawn().await.unwrap();
    let session = app.login(&unique_email("race-one")).await;
    let console = app.console_session().await;
    let me_id = developer_id(&app, &session).await;
    assert_eq!(grant(&app, &console, &me_id, 1000, "grant-1").await.0, 201);
    let drafts = quoted_drafts(&app, &session, 1).await;
    let (draft, intent_id) = &drafts[0];

    let keyed = app
        .dev(&session)
        .with_header("Idempotency-Key", "submit-once");
    let path = format!("/drafts/{draft}/submit");
    let body = json!({"paymentIntentId": intent_id});
    let (accepted, other): (Value, Value) = tokio::join!(
        keyed.post::<_, Value>(&path, &body, 202),
        keyed.post::<_, Value>(&path, &body, 202)
    );
    assert_eq!(accepted["id"], other["id"]);
    let id = accepted["id"].as_str().unwrap().to_owned();
    let (status, replayed) = submit(&app, &session, draft, intent_id).await;
    assert_eq!(
        status, 202,
        "a repeated submit answers as the first: {replayed}"
    );
    assert_eq!(replayed["id"], id.as_str());
    assert_eq!(balance(&app, &session).await, 100, "debited once");
    app.shutdown().await;
}

/// A paid submission shows in the ledger, the payments and the submissions; its draft is
/// frozen and the submission keeps the price it was charged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paid_submission_is_booked_and_freezes_its_draft() {
    let app = TestApp::spawn().await.unwrap();
    let session = app.login(&unique_email("booked")).await;
    let console = app.console_session().await;
    let me_id = developer_id(&app, &session).await;
    assert_eq!(grant(&app, &console, &me_id, 1000, "grant-1").await.0, 201);
    let drafts = quoted_drafts(&app, &session, 1).await;
    let (draft, intent_id) = &drafts[0];
    let (status, accepted) = submit(&app, &session, draft, intent_id).await;
    assert_eq!(status, 202, "{accepted}");
    let id = accepted["id"].as_str().unwrap().to_owned();

    let dev = app.dev(&session);
    let ledger: Value = dev.get("/credits/ledger", 200).await;
    assert_eq!(ledger["balance"], 100);
    let kinds: Vec<(&str, i64)> = ledger["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap(),
                e["amountCredits"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(kinds, [("DEBIT_SUBMISSION", -900), ("GRANT", 1000)]);
    let payments: Value = dev.get("/payments?limit=10", 200).await;
    assert_eq!(payments["items"][0]["status"], "CONSUMED");
    assert_eq!(payments["items"][0]["submissionId"], id.as_str());
    let submissions: Value = dev.get("/submissions", 200).await;
    assert_eq!(submissions["items"][0]["id"], id.as_str());
    let (status, body) = dev
        .call(
            Method::PATCH,
            &format!("/drafts/{draft}"),
            Some(&json!({"advisoryNote": "later"})),
        )
        .await;
    assert_eq!(status, 409, "a submitted draft is frozen: {body}");
    let snapshot: Value =
        sqlx::query_scalar("select price_snapshot from submission where submission_id = $1")
            .bind(&id)
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(snapshot["priced"]["totalCredits"], 900);
    assert_eq!(snapshot["chargedCredits"], 900);
    app.shutdown().await;
}
