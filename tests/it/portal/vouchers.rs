//! What the operator's catalog decides: category prices, credit and free-submission vouchers,
//! the free allowlist, and payment rails that are not built.

use reqwest::Method;
use serde_json::{Value, json};
use sigma_testkit::{Options, TestApp, bundle};

use super::{balance, developer_id, grant, intent, quote, skill_draft, submit, unique_email};

/// The operator makes a voucher; the status and answer.
async fn voucher(
    app: &TestApp,
    console: &str,
    code: &str,
    kind: &str,
    credits: i64,
) -> (u16, Value) {
    app.operator(console)
        .call(
            Method::POST,
            "/vouchers",
            Some(&json!({"code": code, "kind": kind, "credits": credits, "uses": 1})),
        )
        .await
}

/// A developer redeems a credit voucher; the status and answer.
async fn redeem(app: &TestApp, session: &str, code: &str) -> (u16, Value) {
    app.dev(session)
        .call(
            Method::POST,
            "/credits/vouchers",
            Some(&json!({"code": code})),
        )
        .await
}

/// The operator's price is the landing page's and the quote's price.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operators_category_price_is_shown_and_quoted() {
    let app = TestApp::spawn().await.unwrap();
    let console = app.console_session().await;
    let session = app.login(&unique_email("price")).await;
    let _: Value = app
        .operator(&console)
        .put(
            "/pricing/categories/SKILL",
            &json!({"baseCredits": 1234}),
            200,
        )
        .await;
    let landing: Value = app.public().get("/landing", 200).await;
    let skill = landing["prices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["category"] == "SKILL")
        .cloned()
        .unwrap();
    assert_eq!(
        (skill["baseCredits"].as_i64(), skill["baseUsd"].as_str()),
        (Some(1234), Some("12.34"))
    );
    assert_eq!(
        landing["startingPriceUsd"], 12.0,
        "the cheapest shown category (API, 1200)"
    );
    let draft = skill_draft(&app, &session, bundle::weather_skill()).await;
    let q = quote(&app, &session, &draft).await;
    assert_eq!(q["totalCredits"], 1234);
    app.shutdown().await;
}

/// A credit top-up voucher: codes are unique, once per account, and no more than its uses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credit_voucher_is_redeemed_once_per_account_and_no_more_than_its_uses() {
    let app = TestApp::spawn_with(Options::without_workers())
        .await
        .unwrap();
    let console = app.console_session().await;
    let session = app.login(&unique_email("voucher")).await;
    assert_eq!(
        voucher(&app, &console, "TOPUP-500-CREDITS", "CREDITS", 500)
            .await
            .0,
        201
    );
    let (status, taken) = voucher(&app, &console, "TOPUP-500-CREDITS", "CREDITS", 500).await;
    assert_eq!(
        (status, taken["code"].as_str()),
        (409, Some("voucher_exists")),
        "codes are unique: {taken}"
    );
    assert!(
        taken["detail"].as_str().unwrap().contains("`code`"),
        "{taken}"
    );
    let (status, topped) = redeem(&app, &session, "TOPUP-500-CREDITS").await;
    assert_eq!(status, 201, "{topped}");
    assert_eq!(topped["balance"], 500);
    let (status, again) = redeem(&app, &session, "TOPUP-500-CREDITS").await;
    assert_eq!(
        (status, again["code"].as_str()),
        (409, Some("voucher_already_redeemed")),
        "{again}"
    );
    let (status, unknown) = redeem(&app, &session, "NO-SUCH-VOUCHER").await;
    assert_eq!(
        (status, unknown["code"].as_str()),
        (409, Some("voucher_invalid")),
        "{unknown}"
    );
    let other = app.login(&unique_email("second")).await;
    assert_eq!(
        redeem(&app, &other, "TOPUP-500-CREDITS").await.0,
        409,
        "used up"
    );
    assert_eq!(balance(&app, &session).await, 500);
    let vouchers: Value = app.operator(&console).get("/vouchers", 200).await;
    let topup = vouchers
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["code"] == "TOPUP-500-CREDITS")
        .cloned()
        .unwrap();
    assert_eq!(
        (topup["usesLeft"].as_i64(), topup["redemptions"].as_i64()),
        (Some(0), Some(1))
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_free_submission_voucher_pays_the_whole_audit() {
    let app = TestApp::spawn().await.unwrap();
    let console = app.console_session().await;
    let session = app.login(&unique_email("free-voucher")).await;
    let me = developer_id(&app, &session).await;
    assert_eq!(grant(&app, &console, &me, 500, "some").await.0, 201);
    assert_eq!(
        voucher(&app, &console, "FREE-ONE-AUDIT", "FREE_SUBMISSION", 0)
            .await
            .0,
        201
    );
    let draft = skill_draft(&app, &session, bundle::weather_skill()).await;
    let q = quote(&app, &session, &draft).await;
    let free: Value = app
        .dev(&session)
        .post(
            "/payment-intents",
            &json!({"quoteId": q["quoteId"], "method": "voucher", "voucherCode": "FREE-ONE-AUDIT"}),
            201,
        )
        .await;
    assert_eq!(
        (free["status"].as_str(), free["amountCredits"].as_i64()),
        (Some("CONFIRMED"), Some(0))
    );
    let (status, accepted) = submit(&app, &session, &draft, free["id"].as_str().unwrap()).await;
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(
        balance(&app, &session).await,
        500,
        "a voucher submission debits nothing"
    );
    app.shutdown().await;
}

/// Free by allowlist: an address on it pays nothing, and one taken off it before submitting
/// can no longer use its free intent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_free_allowlist_pays_until_the_address_is_taken_off() {
    let app = TestApp::spawn().await.unwrap();
    let console = app.console_session().await;
    let other = app.login(&unique_email("allowlisted")).await;
    let other_me: Value = app.dev(&other).get("/me", 200).await;
    let other_draft = skill_draft(&app, &other, bundle::weather_skill_variant(7)).await;
    let oq = quote(&app, &other, &other_draft).await;
    let oq_id = oq["quoteId"].as_str().unwrap();
    assert_eq!(
        intent(&app, &other, oq_id, "free").await.0,
        422,
        "not eligible yet"
    );
    let domain = format!(
        "@{}",
        other_me["email"]
            .as_str()
            .unwrap()
            .split('@')
            .nth(1)
            .unwrap()
    );
    let operator = app.operator(&console);
    let _: Value = operator
        .post("/free-allowlist", &json!({"pattern": domain}), 201)
        .await;
    let (status, free) = intent(&app, &other, oq_id, "free").await;
    let listed: Value = operator.get("/free-allowlist", 200).await;
    assert_eq!(listed[0]["pattern"], domain.as_str());
    assert_eq!(
        (status, free["status"].as_str()),
        (201, Some("CONFIRMED")),
        "{free}"
    );
    // Off the allowlist before submitting: the free intent no longer pays.
    let encoded = domain.replace('@', "%40");
    let _: Value = operator
        .delete(&format!("/free-allowlist/{encoded}"), 204)
        .await;
    let (status, body) = submit(&app, &other, &other_draft, free["id"].as_str().unwrap()).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("not_eligible_for_free")),
        "{body}"
    );
    app.shutdown().await;
}

/// Rails that are not built cannot be enabled or used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_rail_that_is_not_built_cannot_be_enabled_or_used() {
    let app = TestApp::spawn().await.unwrap();
    let console = app.console_session().await;
    let session = app.login(&unique_email("rails")).await;
    let body: Value = app
        .operator(&console)
        .put("/payment-methods/x402", &json!({"enabled": true}), 409)
        .await;
    assert_eq!(body["code"], "method_not_available", "{body}");
    let draft = skill_draft(&app, &session, bundle::weather_skill()).await;
    let q = quote(&app, &session, &draft).await;
    let (status, body) = intent(&app, &session, q["quoteId"].as_str().unwrap(), "x402").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (422, Some("method_unavailable")),
        "{body}"
    );
    app.shutdown().await;
}
