//! One run against a real local model (SmolLM2 through llama.cpp's OpenAI-compatible server):
//! whatever it decides, the outcome must be recorded and every vote schema-valid or failed.

use std::time::Duration;

use serde_json::Value;
use sigma_testkit::{Options, TestApp, bundle};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_local_model_audits_to_a_recorded_schema_valid_outcome() {
    let llm_url = std::env::var("SIGMA_TEST_LLM_URL").expect(
        "SIGMA_TEST_LLM_URL must point at the local model server (scripts/test.sh starts it)",
    );
    let app = TestApp::spawn_with(Options {
        validators: vec![],
        panel_size: 1,
        tweak: std::sync::Arc::new(|s| {
            // SmolLM2 has a 2,048-token context.
            s.pipeline.llm_max_evidence_chars = 2_500;
            s.pipeline.llm_max_tokens = 300;
            s.pipeline.llm_timeout_secs = 120;
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    for id in ["smol-a", "smol-b"] {
        sqlx::query("insert into validator (validator_id, display_name, model, provider_url, response_format) values ($1, $1, 'smollm2', $2, 'json_object_schema')")
            .bind(id)
            .bind(&llm_url)
            .execute(&app.db)
            .await
            .unwrap();
    }
    let id = app.submit_ok(bundle::weather_skill()).await;
    let start = std::time::Instant::now();
    let settled = loop {
        let s = app.submission(&id).await;
        if s["stage"] == "DONE" || s["stage"] == "AWAITING_OPERATOR" {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "no outcome in time: {s}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(
        ["APPROVED", "REJECTED", "ESCALATED"].contains(&settled["consensus"].as_str().unwrap()),
        "{settled}"
    );
    let votes = settled["votes"].as_array().unwrap();
    assert_eq!(votes.len(), 2, "{settled}");
    for vote in votes {
        match vote["status"].as_str().unwrap() {
            "CAST" => {
                assert!(["SAFE", "UNSAFE"].contains(&vote["verdict"].as_str().unwrap()));
                assert!(
                    ["NONE", "LOW", "MEDIUM", "HIGH", "CRITICAL"]
                        .contains(&vote["severity"].as_str().unwrap())
                );
            }
            "FAILED" => assert!(!vote["failure"].as_str().unwrap().is_empty()),
            other => panic!("unexpected vote status {other}"),
        }
    }
    // The transcript of each cast vote is stored and parses as the verdict schema the vote claims.
    let keys: Vec<Option<String>> =
        sqlx::query_scalar("select transcript_key from audit_vote where status = 'CAST'")
            .fetch_all(&app.db)
            .await
            .unwrap();
    let blob = sigma_shared::blob::BlobStore::new(&app.settings.blob);
    for key in keys.into_iter().flatten() {
        let transcript: Value = blob.get_json(&key).await.unwrap();
        let last = transcript["answers"]
            .as_array()
            .unwrap()
            .last()
            .unwrap()
            .clone();
        let parsed = sigma_activities::audit::prompt::parse_verdict(
            last["content"].as_str().unwrap(),
            last["finishReason"].as_str(),
        );
        assert!(parsed.is_ok(), "{last}");
        assert_eq!(
            transcript["request"]["response_format"]["type"],
            "json_object"
        );
    }
    if settled["stage"] == "AWAITING_OPERATOR" {
        let (status, decided) = app
            .decide(&id, "REJECTED", "the real model's votes did not agree")
            .await;
        assert_eq!(status, 200, "{decided}");
        let done = app
            .wait_for_stage(&id, "DONE", Duration::from_secs(60))
            .await;
        assert_eq!(done["outcome"], "REJECTED");
    }
    app.shutdown().await;
}
