//! Certificates after issuance: signatures anyone can check offline, the public plane's reads,
//! flags and revocations seen by every replica, and the page for people.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use reqwest::Method;
use serde_json::{Value, json};
use sigma_shared::attestation::{self, Envelope, KeySet};
use sigma_shared::domain::lf_normalised_sha256;
use sigma_testkit::bundle::{self, FORECAST_PY, SKILL_MD};
use sigma_testkit::llm::Reply;
use sigma_testkit::{Options, TestApp};

const WAIT: Duration = Duration::from_secs(60);

async fn approved(app: &TestApp, bundle: Vec<u8>) -> String {
    let id = app.submit_ok(bundle).await;
    let done = app.wait_for_stage(&id, "DONE", WAIT).await;
    assert_eq!(done["outcome"], "APPROVED", "{done}");
    id
}

fn scratch(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("sigma-it-{name}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write_skill(dir: &Path, skill_md: &str, forecast: &str) {
    std::fs::write(dir.join("SKILL.md"), skill_md).unwrap();
    std::fs::write(dir.join("forecast.py"), forecast).unwrap();
}

/// Runs `sigma verify ARGS --format json`; returns the exit code and the report.
fn sigma_verify(args: &[&str]) -> (i32, Value) {
    let output = Command::new(env!("CARGO_BIN_EXE_sigma"))
        .arg("verify")
        .args(args)
        .args(["--format", "json"])
        .output()
        .expect("sigma runs");
    let report = serde_json::from_slice(&output.stdout).unwrap_or_else(|_| {
        json!({"stdout": String::from_utf8_lossy(&output.stdout), "stderr": String::from_utf8_lossy(&output.stderr)})
    });
    (output.status.code().unwrap_or(-1), report)
}

fn failed_checks(report: &Value) -> Vec<String> {
    report["checks"]
        .as_array()
        .map(|c| {
            c.iter()
                .filter(|c| c["ok"] == false)
                .map(|c| c["check"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_certificate_verifies_offline_and_any_tampering_fails() {
    let app = TestApp::spawn().await.unwrap();
    let id = approved(&app, bundle::weather_skill()).await;

    let record: Value = app.public().get(&format!("/certificates/{id}"), 200).await;
    let keys: KeySet =
        serde_json::from_value(app.public_json("/.well-known/sigma-keys.json").await).unwrap();
    let keys_again: KeySet = app.public().get("/keys", 200).await;
    assert_eq!(keys, keys_again);
    assert_eq!(keys.keys.len(), 1);
    assert_eq!(keys.keys[0].status, "active");

    // The envelope is a DSSE in-toto statement signed by the published key, binding digests.
    let envelope: Envelope = serde_json::from_value(record["envelope"].clone()).unwrap();
    let (statement, keyid) = attestation::verify_envelope(&envelope, &keys).unwrap();
    assert_eq!(keyid, keys.keys[0].key_id);
    attestation::check_sealed(&statement, &record["sealed"]).unwrap();
    assert_eq!(
        attestation::subject_digest(&statement, "SKILL.md"),
        Some(lf_normalised_sha256(SKILL_MD.as_bytes()).as_str())
    );
    assert_eq!(
        attestation::subject_digest(&statement, "bundle"),
        record["bundleDigest"].as_str()
    );
    assert_eq!(statement["predicate"]["verdict"], "APPROVED");
    assert_eq!(
        statement["predicate"]["policyVersion"],
        record["sealed"]["decision"]["policyVersion"]
    );
    assert!(
        statement["predicate"]["rulePack"]["version"].is_string(),
        "{statement}"
    );
    assert_eq!(statement["predicate"]["votes"].as_array().unwrap().len(), 4);
    // No key travels with the artifact: verifiers must bring the published ones.
    assert!(
        !record["envelope"]
            .to_string()
            .contains(&keys.keys[0].public_key)
    );

    // Offline: a certificate file, a key file and the local skill.
    let dir = scratch("verify");
    let skill = dir.join("skill");
    std::fs::create_dir_all(&skill).unwrap();
    write_skill(&skill, SKILL_MD, FORECAST_PY);
    let cert_file = dir.join("certificate.json");
    let keys_file = dir.join("keys.json");
    std::fs::write(&cert_file, record.to_string()).unwrap();
    std::fs::write(&keys_file, serde_json::to_string(&keys).unwrap()).unwrap();
    let (cert, keys_path, skill_path) = (
        cert_file.to_str().unwrap(),
        keys_file.to_str().unwrap(),
        skill.to_str().unwrap(),
    );
    let (code, report) = sigma_verify(&[cert, "--keys", keys_path, "--skill", skill_path]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["verified"], true);

    // One changed byte of a skill file: not the reviewed bytes.
    write_skill(
        &skill,
        SKILL_MD,
        &FORECAST_PY.replace("latitude=1", "latitude=7"),
    );
    let (code, report) = sigma_verify(&[cert, "--keys", keys_path, "--skill", skill_path]);
    assert_eq!(code, 1, "{report}");
    assert_eq!(failed_checks(&report), ["bundle digest"]);
    // A changed SKILL.md fails both digests; CRLF line endings alone do not (LF-normalised).
    write_skill(
        &skill,
        &SKILL_MD.replace("three days", "four days"),
        FORECAST_PY,
    );
    let (code, report) = sigma_verify(&[cert, "--keys", keys_path, "--skill", skill_path]);
    assert_eq!(code, 1, "{report}");
    assert_eq!(failed_checks(&report), ["bundle digest", "SKILL.md"]);
    write_skill(&skill, SKILL_MD, FORECAST_PY);

    // One changed byte of the sealed snapshot.
    let mut altered = record.clone();
    altered["sealed"]["review"]["securityLevel"] = json!("CLEAR ");
    std::fs::write(&cert_file, altered.to_string()).unwrap();
    let (code, report) = sigma_verify(&[cert, "--keys", keys_path, "--skill", skill_path]);
    assert_eq!(code, 1, "{report}");
    assert_eq!(failed_checks(&report), ["sealed snapshot"]);

    // One changed byte of the signed payload.
    let mut payload = B64.decode(envelope.payload.as_bytes()).unwrap();
    let last = payload.len() - 2;
    payload[last] ^= 0x01;
    let mut forged = record.clone();
    forged["envelope"]["payload"] = json!(B64.encode(&payload));
    std::fs::write(&cert_file, forged.to_string()).unwrap();
    let (code, report) = sigma_verify(&[cert, "--keys", keys_path]);
    assert_eq!(code, 1, "{report}");
    assert_eq!(failed_checks(&report), ["signature"]);

    // A key set that is not SIGMA's.
    std::fs::write(&cert_file, record.to_string()).unwrap();
    let other_dir = scratch("other-keys");
    std::fs::write(
        other_dir.join("k.pem"),
        attestation::generate_private_key_pem().unwrap(),
    )
    .unwrap();
    let other = attestation::Keyring::load(&other_dir, Some("k")).unwrap();
    std::fs::write(&keys_file, serde_json::to_string(other.key_set()).unwrap()).unwrap();
    let (code, report) = sigma_verify(&[cert, "--keys", keys_path]);
    assert_eq!(code, 1, "{report}");
    assert!(
        report["checks"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("no signature is by a published key")
    );

    // Online by id: also reads the live status, so a revocation fails verification.
    let (code, report) = sigma_verify(&[&id, "--api", &app.base_url, "--skill", skill_path]);
    assert_eq!(code, 0, "{report}");
    let _revoked: Value = app
        .operator(&app.operator_token)
        .post(
            &format!("/certificates/{id}/status"),
            &json!({"status": "REVOKED", "reason": "key material leaked in a later commit"}),
            200,
        )
        .await;
    let (code, report) = sigma_verify(&[&id, "--api", &app.base_url]);
    assert_eq!(code, 1, "{report}");
    assert_eq!(failed_checks(&report), ["live status"]);
    // Unreadable input is exit 2.
    let (code, _) = sigma_verify(&["no-such-file-or-id"]);
    assert_eq!(code, 2);
    app.shutdown().await;
}

async fn wait_until_verify(
    base: &str,
    id: &str,
    http: &reqwest::Client,
    pred: impl Fn(&Value) -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        let body: Value = http
            .get(format!("{base}/api/v1/public/certificates/{id}/verify"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if pred(&body) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "not reflected at {base}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flags_and_revocation_show_on_every_replica_within_a_second() {
    let app = TestApp::spawn().await.unwrap();
    let id = approved(&app, bundle::weather_skill()).await;
    let replica = app.spawn_api_replica().await.unwrap();
    let http = &app.http;
    // Both replicas have the certificate cached as valid.
    for base in [app.base_url.as_str(), replica.as_str()] {
        wait_until_verify(base, &id, http, |v| v["valid"] == true).await;
    }

    // A report raised on the replica shows on the first instance at once, as a report: it does
    // not make the certificate invalid by itself.
    let flag = |reason: &'static str| {
        http.post(format!("{replica}/api/v1/public/certificates/{id}/flags"))
            .json(&json!({"reason": reason, "evidence": "forecast.py posts the city to a third host"}))
            .send()
    };
    let created = flag("undeclared data sharing").await.unwrap();
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.unwrap();
    assert_eq!(
        (&created["activeFlagCount"], &created["openReportCount"]),
        (&json!(0), &json!(1)),
        "{created}"
    );
    let elapsed = wait_until_verify(&app.base_url, &id, http, |v| {
        v["openReportCount"] == 1 && v["activeFlagCount"] == 0 && v["valid"] == true
    })
    .await;
    assert!(
        elapsed < Duration::from_secs(1),
        "report took {elapsed:?} to show"
    );
    // The same reporter repeating the same reason gets the same flag.
    let again = flag("undeclared data sharing").await.unwrap();
    assert_eq!(again.status(), 200);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["flagId"], created["flagId"]);
    assert_eq!(again["created"], false);
    let live: Value = app
        .public()
        .get(&format!("/certificates/{id}/live-status"), 200)
        .await;
    assert_eq!(
        (
            &live["activeFlagCount"],
            &live["openReportCount"],
            &live["valid"]
        ),
        (&json!(0), &json!(1), &json!(true)),
        "{live}"
    );

    // An operator escalates it to a re-audit: now every replica says not valid, within a second.
    let operator = app.operator(&app.operator_token);
    let flags: Value = operator
        .get(&format!("/flags?certificate_id={id}"), 200)
        .await;
    assert_eq!(flags["items"].as_array().unwrap().len(), 1, "{flags}");
    assert_eq!(flags["items"][0]["raisedBy"], "PUBLIC", "{flags}");
    let flag_path = format!("/flags/{}", created["flagId"].as_str().unwrap());
    // The re-audit's votes take a few seconds, long enough to look at the escalation.
    for v in ["v1", "v2", "v3", "v4"] {
        app.llm.script(
            &sigma_testkit::model_of(v),
            [Reply::Delayed(
                Duration::from_secs(3),
                Box::new(Reply::safe()),
            )],
        );
    }
    let escalated: Value = operator
        .post(
            &flag_path,
            &json!({"status": "REAUDIT", "note": "looks real: re-audit"}),
            200,
        )
        .await;
    let elapsed = wait_until_verify(&replica, &id, http, |v| {
        v["valid"] == false && v["activeFlagCount"] == 1 && v["status"] == "APPROVED"
    })
    .await;
    assert!(
        elapsed < Duration::from_secs(1),
        "escalation took {elapsed:?} to show"
    );

    assert_eq!(escalated["status"], "REAUDIT", "{escalated}");
    // While the re-audit runs, its outcome decides: an operator's move is refused.
    let (refused, body) = operator
        .call(
            Method::POST,
            &flag_path,
            Some(&json!({"status": "DISMISSED", "note": "the third host is the declared CDN"})),
        )
        .await;
    assert_eq!(refused, 409, "{body}");
    // The re-audit approves it again: valid again everywhere, the flag dismissed by the re-audit.
    let start = Instant::now();
    loop {
        let v: Value = app
            .public()
            .get(&format!("/certificates/{id}/verify"), 200)
            .await;
        if v["valid"] == true && v["activeFlagCount"] == 0 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "{v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let resolved: Value = operator
        .get(&format!("/flags?certificate_id={id}&status=DISMISSED"), 200)
        .await;
    assert_eq!(resolved["items"][0]["resolvedBy"], "re-audit", "{resolved}");
    // A developer token is refused on the operator plane.
    let status_path = format!("/certificates/{id}/status");
    let _refused: Value = operator
        .with_token(&app.developer_token)
        .post(
            &status_path,
            &json!({"status": "REVOKED", "reason": "x"}),
            401,
        )
        .await;

    // A revocation on the first instance reaches the replica within a second.
    let status = |status: &'static str| {
        let body = json!({"status": status, "reason": "exfiltration confirmed"});
        let (operator, path) = (operator.clone(), status_path.clone());
        async move { operator.call(Method::POST, &path, Some(&body)).await }
    };
    // Upholding a report suspends the certificate, with the operator's note as the reason;
    // lifting the suspension makes it valid again.
    let second = flag("still sends the city elsewhere").await.unwrap();
    assert_eq!(second.status(), 201);
    let second: Value = second.json().await.unwrap();
    let upheld: Value = operator
        .post(
            &format!("/flags/{}", second["flagId"].as_str().unwrap()),
            &json!({"status": "UPHELD", "note": "confirmed by a second look"}),
            200,
        )
        .await;
    assert_eq!(upheld["certificateSuspended"], true, "{upheld}");
    wait_until_verify(&replica, &id, http, |v| {
        v["status"] == "SUSPENDED"
            && v["valid"] == false
            && v["statusReason"] == "flag upheld: confirmed by a second look"
    })
    .await;
    assert_eq!(status("APPROVED").await.0, 200);
    wait_until_verify(&replica, &id, http, |v| v["valid"] == true).await;

    assert_eq!(status("SUSPENDED").await.0, 200);
    wait_until_verify(&replica, &id, http, |v| v["status"] == "SUSPENDED").await;
    assert_eq!(status("REVOKED").await.0, 200);
    let elapsed = wait_until_verify(&replica, &id, http, |v| {
        v["status"] == "REVOKED"
            && v["valid"] == false
            && v["statusReason"] == "exfiltration confirmed"
    })
    .await;
    assert!(
        elapsed < Duration::from_secs(1),
        "revocation took {elapsed:?} to show"
    );
    let (reinstate, body) = status("APPROVED").await;
    assert_eq!(reinstate, 409, "revocation is final: {body}");
    // Each change ran as a workflow that emailed the developer.
    let subjects: Vec<String> = app
        .emails_to(&app.developer_email)
        .await
        .iter()
        .filter_map(|m| m["subject"].as_str().map(str::to_owned))
        .collect();
    assert!(
        subjects.iter().any(|s| s.ends_with("was revoked"))
            && subjects.iter().any(|s| s.ends_with("was reinstated")),
        "{subjects:?}"
    );

    // Views are counted without a write per request, and reach the database in batches.
    for _ in 0..5 {
        let _: Value = app
            .public()
            .get(&format!("/certificates/{id}/verify"), 200)
            .await;
    }
    let start = Instant::now();
    loop {
        let views: i64 = sqlx::query_scalar(
            "select coalesce((select views from certificate_view where certificate_id = $1), 0)",
        )
        .bind(&id)
        .fetch_one(&app.db)
        .await
        .unwrap();
        if views >= 5 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "views not flushed: {views}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A newer certificate of the same skill supersedes the older one.
    let newer = approved(&app, bundle::weather_skill_variant(1)).await;
    let older: String =
        sqlx::query_scalar("select status from certificate where certificate_id = $1")
            .bind(&id)
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(
        older, "REVOKED",
        "a revoked certificate stays revoked, not superseded"
    );
    let third = approved(&app, bundle::weather_skill_variant(2)).await;
    wait_until_verify(&replica, &newer, http, |v| {
        v["status"] == "SUPERSEDED" && v["supersededBy"] == third.as_str() && v["valid"] == false
    })
    .await;
    app.shutdown().await;
}

/// Copies of an issued certificate under other names, issued a second apart (listing fixtures).
async fn seed_copies(app: &TestApp, source: &str, n: usize, tweak: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let base = u64::from_str_radix(&hex::encode(tweak.as_bytes())[..8], 16).unwrap() << 16;
    for i in 0..n {
        let id = format!("{:024x}", base + i as u64);
        sqlx::query(
            "insert into submission (submission_id, developer_id, category, skill_name, bundle_key, bundle_sha256,
                 bundle_bytes, bundle_format, workflow_id, stage)
             select $1, developer_id, category, $2, bundle_key, bundle_sha256, bundle_bytes, bundle_format,
                 'submission:' || $1, 'DONE' from submission where submission_id = $3",
        )
        .bind(&id)
        .bind(format!("{tweak}-{i}"))
        .bind(source)
        .execute(&app.db)
        .await
        .unwrap();
        sqlx::query(
            "insert into certificate (certificate_id, status, sealed, payload_hash, hash_algorithm, skill_md_sha256,
                 bundle_digest, snapshot_key, envelope, signing_key_id, expires_at, issued_at)
             select $1, 'APPROVED', jsonb_set(sealed, '{skillName}', to_jsonb($2::text)), payload_hash, hash_algorithm,
                 skill_md_sha256, bundle_digest, snapshot_key, envelope, signing_key_id, expires_at,
                 issued_at + make_interval(secs => $4)
             from certificate where certificate_id = $3",
        )
        .bind(&id)
        .bind(format!("{tweak}-{i}"))
        .bind(source)
        .bind((i + 1) as f64)
        .execute(&app.db)
        .await
        .unwrap();
        ids.push(id);
    }
    ids
}

/// GET on the public plane (`path` relative to it); the status and the answer.
async fn get(app: &TestApp, path: &str) -> (u16, Value) {
    app.public().call(Method::GET, path, None::<&()>).await
}

/// A local stand-in for raw.githubusercontent.com, at the network boundary; its base URL.
async fn github_stand_in() -> String {
    let github = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let github_url = format!("http://{}", github.local_addr().unwrap());
    let router = axum::Router::new().route(
        "/{owner}/{repo}/{reference}/{file}",
        axum::routing::get(
            |axum::extract::Path((owner, repo, reference, file)): axum::extract::Path<(
                String,
                String,
                String,
                String,
            )>| async move {
                match (
                    owner.as_str(),
                    repo.as_str(),
                    reference.as_str(),
                    file.as_str(),
                ) {
                    ("acme", "weather", "v1", "SKILL.md") => {
                        (axum::http::StatusCode::OK, SKILL_MD.replace('\n', "\r\n"))
                    }
                    ("acme", "weather", "main", "SKILL.md") => (
                        axum::http::StatusCode::OK,
                        format!("{SKILL_MD}\nNow also email the forecast.\n"),
                    ),
                    _ => (
                        axum::http::StatusCode::NOT_FOUND,
                        "404: Not Found".to_owned(),
                    ),
                }
            },
        ),
    );
    tokio::spawn(async move { axum::serve(github, router).await.unwrap() });
    github_url
}

/// An app with one approved certificate of the weather skill and 24 copies (14 named alpha-*,
/// 10 beta-*), each issued a second later than the one before.
async fn listed_app(
    tweak: std::sync::Arc<dyn Fn(&mut sigma_shared::Settings) + Send + Sync>,
) -> (TestApp, String, Vec<String>, Vec<String>) {
    let app = TestApp::spawn_with(Options {
        tweak,
        ..Default::default()
    })
    .await
    .unwrap();
    let id = approved(&app, bundle::weather_skill()).await;
    let alphas = seed_copies(&app, &id, 14, "alpha").await;
    let betas = seed_copies(&app, &id, 10, "beta").await;
    (app, id, alphas, betas)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_listing_pages_searches_and_refuses_bad_input() {
    let (app, id, _alphas, betas) = listed_app(std::sync::Arc::new(|_| {})).await;
    // Pagination: 25 approved certificates, newest first, each exactly once.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/certificates?limit=10&cursor={c}"),
            None => "/certificates?limit=10".into(),
        };
        let (status, page) = get(&app, &path).await;
        assert_eq!(status, 200, "{page}");
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 10);
        seen.extend(
            items
                .iter()
                .map(|i| i["issuedAt"].as_str().unwrap().to_owned() + i["id"].as_str().unwrap()),
        );
        match page["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 25);
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.reverse();
    sorted.dedup();
    assert_eq!(sorted.len(), 25, "no certificate twice");
    // Search: every keyword must match the name or description.
    let (_, found) = get(&app, "/certificates?q=beta&limit=100").await;
    let found: Vec<&str> = found["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(found.len(), betas.len());
    assert!(betas.iter().all(|b| found.contains(&b.as_str())));
    let (_, found) = get(&app, "/certificates?q=weather%20FORECAST").await;
    assert_eq!(found["items"].as_array().unwrap().len(), 1, "{found}");
    assert_eq!(found["items"][0]["id"], id.as_str());
    let (status, found) = get(&app, "/certificates?q=100%25_%5C").await;
    assert_eq!((status, found["items"].as_array().unwrap().len()), (200, 0));
    // Bad limits and cursors are the client's error, clearly said.
    for bad in [
        "limit=0",
        "limit=101",
        "limit=ten",
        "limit=-1",
        "cursor=bm90LWEtY3Vyc29y",
        "cursor=%%%",
        "limit=5&cursor=MTox",
    ] {
        let (status, body) = get(&app, &format!("/certificates?{bad}")).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(
            body["code"].is_string() && body["detail"].is_string(),
            "{body}"
        );
    }

    // Unknown and malformed ids.
    for path in [
        "/certificates/ffffffffffffffffffffffff/verify",
        "/certificates/not-an-id",
        "/certificates/ffffffffffffffffffffffff/live-status",
        "/certificates/%00/source-integrity",
    ] {
        let (status, body) = get(&app, path).await;
        assert_eq!(status, 404, "{path}");
        assert_eq!(body["code"], "not_found", "{path}: {body}");
    }

    // Source integrity, with a working ETag.
    let integrity_url = app.url(&format!(
        "/api/v1/public/certificates/{id}/source-integrity"
    ));
    let first = app.http.get(&integrity_url).send().await.unwrap();
    let etag = first.headers()["etag"].to_str().unwrap().to_owned();
    let integrity: Value = first.json().await.unwrap();
    assert_eq!(
        integrity["sha256"],
        lf_normalised_sha256(SKILL_MD.as_bytes()).as_str()
    );
    assert_eq!(integrity["algorithm"], "sha256-lf-normalized");
    let again = app
        .http
        .get(&integrity_url)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);

    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_matches_uploads_and_github_refs_after_normalising_line_endings() {
    let github_url = github_stand_in().await;
    let app = TestApp::spawn_with(Options {
        tweak: std::sync::Arc::new(move |s| s.public.github_raw_base_url = github_url.clone()),
        ..Default::default()
    })
    .await
    .unwrap();
    let id = approved(&app, bundle::weather_skill()).await;
    // Upload-and-compare: LF-normalised, so CRLF matches; any other change does not.
    let compare = |body: Vec<u8>| {
        app.http
            .post(app.url(&format!("/api/v1/public/certificates/{id}/compare-skill")))
            .body(body)
            .send()
    };
    let same: Value = compare(SKILL_MD.replace('\n', "\r\n").into_bytes())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(same["match"], true, "{same}");
    let other: Value = compare(b"---\nname: weather-forecast\n---\n".to_vec())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(other["match"], false);
    // An empty upload is a file with no bytes: it does not match.
    let empty: Value = compare(vec![]).await.unwrap().json().await.unwrap();
    assert_eq!(empty["match"], false, "{empty}");
    let huge = compare(vec![b'a'; 600 * 1024]).await.unwrap();
    assert_eq!(huge.status(), 413);
    let huge: Value = huge.json().await.unwrap();
    assert!(huge["code"].is_string(), "{huge}");

    // Compare with GitHub at a ref (served by the local stand-in).
    let github_path = format!("/certificates/{id}/compare-skill-from-github");
    let github_compare = |body: Value| {
        let (public, path) = (app.public(), github_path.clone());
        async move { public.call(Method::POST, &path, Some(&body)).await }
    };
    let (status, tagged) =
        github_compare(json!({"sourceUrl": "https://github.com/acme/weather", "sourceRef": "v1"}))
            .await;
    assert_eq!(status, 200, "{tagged}");
    assert_eq!(tagged["match"], true, "{tagged}");
    assert_eq!(tagged["fetchedRef"], "v1");
    let (status, moved) = github_compare(
        json!({"sourceUrl": "https://github.com/acme/weather.git", "sourceRef": "main"}),
    )
    .await;
    assert_eq!(status, 200, "{moved}");
    assert_eq!(moved["match"], false, "{moved}");
    let (status, missing) =
        github_compare(json!({"sourceUrl": "https://github.com/acme/nothing", "sourceRef": "v1"}))
            .await;
    assert_eq!(status, 422, "{missing}");
    for (body, code) in [
        (
            json!({"sourceUrl": "http://github.com/acme/weather"}),
            "invalid_url",
        ),
        (
            json!({"sourceUrl": "https://evil.example/acme/weather"}),
            "invalid_url",
        ),
        (json!({"sourceUrl": "not a url"}), "invalid_url"),
        (
            json!({"sourceUrl": "https://github.com/acme"}),
            "invalid_url",
        ),
        (
            json!({"sourceUrl": "https://github.com/acme/weather", "sourceRef": "../../etc"}),
            "invalid_ref",
        ),
    ] {
        let (status, answer) = github_compare(body.clone()).await;
        assert_eq!(status, 422, "{body}: {answer}");
        assert_eq!(answer["code"], code, "{body}: {answer}");
    }
    let not_json = app
        .http
        .post(app.public().url(&github_path))
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status(), 400);

    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flags_expiry_and_discovery_change_what_is_advertised() {
    let (app, id, alphas, betas) = listed_app(std::sync::Arc::new(|s| {
        s.public.flags_per_hour = 4;
        s.public.max_open_reports_per_reporter = 2;
    }))
    .await;
    // Flags: validated, then limited per client.
    let flag = |body: Value| {
        app.http
            .post(app.url(&format!("/api/v1/public/certificates/{}/flags", alphas[0])))
            .json(&body)
            .send()
    };
    assert_eq!(flag(json!({"reason": "  "})).await.unwrap().status(), 422);
    assert_eq!(
        flag(json!({"reason": "x".repeat(2001)}))
            .await
            .unwrap()
            .status(),
        422
    );
    assert_eq!(
        flag(json!({"reason": "ok", "extra": 1}))
            .await
            .unwrap()
            .status(),
        422
    );
    // Two reports awaiting triage per reporter: the third is refused until an operator acts.
    for n in 0..2 {
        assert_eq!(
            flag(json!({"reason": format!("reason {n}")}))
                .await
                .unwrap()
                .status(),
            201
        );
    }
    let capped = flag(json!({"reason": "reason 2"})).await.unwrap();
    assert_eq!(capped.status(), 429);
    assert_eq!(
        capped.json::<Value>().await.unwrap()["code"],
        "open_report_limit"
    );
    let (_, reported) = get(&app, &format!("/certificates/{}/verify", alphas[0])).await;
    assert_eq!(
        (
            reported["valid"].clone(),
            reported["activeFlagCount"].clone(),
            reported["openReportCount"].clone()
        ),
        (json!(true), json!(0), json!(2)),
        "reports alone leave the certificate valid: {reported}"
    );
    // The operator sees the source and dismisses its reports in one call.
    let operator = app.operator(&app.operator_token);
    let listed: Value = operator
        .get(&format!("/flags?certificate_id={}", alphas[0]), 200)
        .await;
    let reporter = listed["items"][0]["reporterHash"]
        .as_str()
        .unwrap()
        .to_owned();
    let dismissed: Value = operator
        .post(
            "/flags/dismiss",
            &json!({"reporterHash": reporter, "note": "spam from one address"}),
            200,
        )
        .await;
    assert_eq!(dismissed["dismissed"], 2, "{dismissed}");
    let _: Value = operator
        .post("/flags/dismiss", &json!({"note": "no selector"}), 422)
        .await;
    let escalate = flag(json!({"reason": "exfiltrates the city"}))
        .await
        .unwrap();
    assert_eq!(escalate.status(), 201);
    let escalate: Value = escalate.json().await.unwrap();
    let limited = flag(json!({"reason": "one too many"})).await.unwrap();
    assert_eq!(limited.status(), 429);
    assert!(limited.headers().contains_key("retry-after"));
    assert_eq!(
        limited.json::<Value>().await.unwrap()["code"],
        "rate_limited"
    );
    // Escalated to a re-audit, it is no longer valid and no longer advertised (the council takes
    // its time here: the re-audit is still running when the test ends).
    for v in ["v1", "v2", "v3", "v4"] {
        app.llm.fallback(
            &sigma_testkit::model_of(v),
            Reply::Delayed(Duration::from_secs(60), Box::new(Reply::safe())),
        );
    }
    let _: Value = operator
        .post(
            &format!("/flags/{}", escalate["flagId"].as_str().unwrap()),
            &json!({"status": "REAUDIT", "note": "re-audit"}),
            200,
        )
        .await;
    let elapsed = wait_until_verify(&app.base_url, &alphas[0], &app.http, |v| {
        v["valid"] == false && v["activeFlagCount"] == 1 && v["openReportCount"] == 0
    })
    .await;
    assert!(elapsed < Duration::from_secs(1));

    // Verify: the API disclaimer follows the network rules on every call.
    let (_, verify) = get(&app, &format!("/certificates/{id}/verify")).await;
    assert!(
        verify["apiDisclaimer"]
            .as_str()
            .is_some_and(|t| t.contains("external HTTP APIs")),
        "{verify}"
    );
    assert_eq!(verify["endpointStatus"], "NOT_APPLICABLE");
    assert_eq!(
        verify["endpointReview"]["declaredEndpoints"][0],
        "https://api.open-meteo.com/v1/forecast"
    );
    sqlx::query("update certificate set sealed = sealed - 'endpointReview' - 'manifest' #- '{review,capabilities}' where certificate_id = $1")
        .bind(&betas[0]).execute(&app.db).await.unwrap();
    let start = Instant::now();
    loop {
        let (_, offline) = get(&app, &format!("/certificates/{}/verify", betas[0])).await;
        if offline.get("apiDisclaimer").is_none() {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(2), "{offline}");
    }
    // Expired certificates read EXPIRED and leave the listing.
    sqlx::query(
        "update certificate set expires_at = now() - interval '1 day' where certificate_id = $1",
    )
    .bind(&betas[1])
    .execute(&app.db)
    .await
    .unwrap();
    let elapsed = wait_until_verify(&app.base_url, &betas[1], &app.http, |v| {
        v["status"] == "EXPIRED" && v["valid"] == false
    })
    .await;
    assert!(elapsed < Duration::from_secs(1));
    let (_, listing) = get(&app, "/certificates?q=beta&limit=100").await;
    assert_eq!(listing["items"].as_array().unwrap().len(), betas.len() - 1);

    // Badge, landing and discovery.
    let badge = app
        .http
        .get(app.url(&format!("/api/v1/public/certificates/{id}/badge.svg")))
        .send()
        .await
        .unwrap();
    assert_eq!(badge.headers()["content-type"], "image/svg+xml");
    let svg = badge.text().await.unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("certified"),
        "{svg}"
    );
    let flagged_badge = app
        .http
        .get(app.url(&format!(
            "/api/v1/public/certificates/{}/badge.svg",
            alphas[0]
        )))
        .send()
        .await
        .unwrap();
    assert!(flagged_badge.text().await.unwrap().contains("flagged"));
    let unknown = app
        .http
        .get(app.url("/api/v1/public/certificates/ffffffffffffffffffffffff/badge.svg"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    let (_, landing) = get(&app, "/landing").await;
    assert_eq!(landing["certificatesIssued"], 25, "{landing}");
    assert_eq!(landing["activeValidators"], 4);
    assert!(landing["startingPriceUsd"].as_f64().unwrap() > 0.0);
    let store = app.public_json("/.well-known/skill-store").await;
    let listed: Vec<&str> = store["skills"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert!(listed.contains(&id.as_str()));
    assert!(
        !listed.contains(&alphas[0].as_str()),
        "flagged certificates are not advertised"
    );
    assert!(
        !listed.contains(&betas[1].as_str()),
        "expired certificates are not advertised"
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_page_renders_in_headless_chromium() {
    let app = TestApp::spawn().await.unwrap();
    let id = approved(&app, bundle::weather_skill()).await;
    let url = app.url(&format!("/certificate/{id}"));
    let html = app.http.get(&url).send().await.unwrap();
    assert_eq!(html.headers()["content-type"], "text/html; charset=utf-8");
    assert!(
        !html.text().await.unwrap().contains("<script"),
        "the page needs no JavaScript"
    );

    let chromium = std::env::var("SIGMA_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let dir = scratch("chromium");
    let shot = std::env::var("SIGMA_SCREENSHOT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| dir.clone())
        .join("certificate-page.png");
    let browser = |extra: &[String]| {
        let output = Command::new(&chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                "--window-size=1280,1600",
            ])
            .arg(format!("--user-data-dir={}", dir.join("profile").display()))
            .args(extra)
            .arg(&url)
            .output()
            .unwrap_or_else(|e| {
                panic!("{chromium} must be installed (scripts/install-tools.sh): {e}")
            });
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    browser(&[format!("--screenshot={}", shot.display())]);
    let png = std::fs::read(&shot).expect("a screenshot");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert!(
        png.len() > 20_000,
        "a rendered page, not a blank one ({} bytes)",
        png.len()
    );
    // What the browser rendered, scripts or not.
    let dom = browser(&["--dump-dom".into()]);
    let record: Value = app.public().get(&format!("/certificates/{id}"), 200).await;
    for expected in [
        "weather-forecast",
        "Valid",
        "APPROVED",
        record["payloadHash"].as_str().unwrap(),
        record["skillMdSha256"].as_str().unwrap(),
        record["bundleDigest"].as_str().unwrap(),
        "Council votes",
        "sigma verify certificate.json",
    ] {
        assert!(dom.contains(expected), "the page lacks {expected}");
    }
    app.shutdown().await;
}
