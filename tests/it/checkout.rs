//! Workflow-first checkout: the submission's run exists before any money moves, so a crash of
//! the API at any point of a paid submit leaves one run, one debit, and nothing to repair.

use std::time::Instant;

use serde_json::Value;
use sigma_testkit::TestApp;

use crate::portal::{
    WAIT, balance, developer_id, grant, quoted_drafts, submit, unique_email, wait_for_stage,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_killed_after_starting_a_paid_submit_leaves_one_run_and_one_debit() {
    let app = TestApp::spawn().await.unwrap();
    let session = app.login(&unique_email("crash")).await;
    let console = app.console_session().await;
    let me = developer_id(&app, &session).await;
    let drafts = quoted_drafts(&app, &session, 1).await;
    let (draft, intent_id) = &drafts[0];

    // No credits: the run refuses at checkout, writes nothing, and fails so that the corrected
    // request can start a fresh one under the same id.
    let (status, refused) = submit(&app, &session, draft, intent_id).await;
    assert_eq!(status, 402, "{refused}");
    assert_eq!(refused["code"], "insufficient_credits");
    let refused_id = sigma_shared::domain::SubmissionId::for_business_key(&[
        b"draft",
        uuid::Uuid::parse_str(draft).unwrap().as_bytes(),
    ]);
    crate::replay::record_and_replay(&app, &refused_id.to_string(), "intake-refused.json").await;
    assert_eq!(grant(&app, &console, &me, 2 * 900, "two").await.0, 201);

    // An API process that dies (abort, no unwinding) after the run took the payment
    // and before the API could answer.
    let (mut doomed, doomed_url) = app
        .spawn_api_process(
            env!("CARGO_BIN_EXE_sigma"),
            &[("SIGMA_TEST_FAULT", "submit_draft.after_checkout")],
        )
        .await
        .unwrap();
    let cut_off = app
        .http
        .post(format!(
            "{doomed_url}/api/v1/sigma/dev/drafts/{draft}/submit"
        ))
        .bearer_auth(&session)
        .json(&serde_json::json!({"paymentIntentId": intent_id}))
        .send()
        .await;
    assert!(cut_off.is_err(), "the client got no answer: {cut_off:?}");
    let exit = doomed.wait().await.unwrap();
    assert!(!exit.success(), "the API process died: {exit:?}");

    // Nobody retries and no operator acts: the run takes the payment and finishes by itself.
    let id: String = {
        let start = Instant::now();
        loop {
            let id: Option<String> =
                sqlx::query_scalar("select submission_id from draft where draft_id = $1::uuid")
                    .bind(draft)
                    .fetch_one(&app.db)
                    .await
                    .unwrap();
            if let Some(id) = id {
                break id;
            }
            assert!(
                start.elapsed() < WAIT,
                "the run never recorded the submission"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    };
    let done = wait_for_stage(&app, &session, &id, "DONE").await;
    assert_eq!(done["outcome"], "APPROVED", "{done}");
    assert_eq!(balance(&app, &session).await, 900, "charged once");

    // The developer's later retry, on a live API, answers with the same submission.
    let (status, again) = submit(&app, &session, draft, intent_id).await;
    assert_eq!(status, 202, "{again}");
    assert_eq!(again["id"], Value::from(id.clone()));
    let debits: i64 = sqlx::query_scalar(
        "select count(*) from credit_ledger where developer_id = $1::uuid and kind = 'DEBIT_SUBMISSION'",
    )
    .bind(&me)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(debits, 1);
    assert_eq!(
        app.runs_of(&format!("submission:{id}"), 2).await,
        2,
        "the refused run and the paid one"
    );
    crate::replay::record_and_replay(&app, &id, "intake-checkout-approved.json").await;
    assert_eq!(balance(&app, &session).await, 900);
    app.shutdown().await;
}
