//! The public plane's hot path: `verify` over 10,000 certificates against the same server's
//! trivial health endpoint, at 64 connections with wrk, in one run. Both go through the same
//! middleware stack; `verify` adds the rate limiter, the certificate cache and view counting.
//!
//! Run through `bench/run-public.sh`, which installs wrk and starts the servers this needs.
//! Usage: public-bench [certificates=10000] [seconds=10] [connections=64]

use std::process::Command;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use serde_json::{Value, json};
use sigma_shared::attestation::{Keyring, certificate_statement};
use sigma_shared::canonical::payload_hash;
use sigma_testkit::{Options, TestApp};

/// A sealed snapshot shaped like the ones the pipeline issues (about 2.5 KB).
fn sealed(id: &str, n: usize) -> Value {
    json!({
        "schemaVersion": "sigma-certificate-v1",
        "certificateId": id,
        "status": "APPROVED",
        "category": "SKILL",
        "skillName": format!("bench-skill-{n}"),
        "skillVersion": "1.0.0",
        "review": {
            "securityLevel": "CLEAR", "sandboxRiskLevel": "LOW",
            "sandboxAnalyzedAt": "2026-12-01T00:00:00.000Z",
            "retainedWarnings": [{"ruleId": "NET-010", "category": "network", "severity": "MEDIUM", "confidence": "MEDIUM",
                "path": "forecast.py", "line": 2, "message": "outbound HTTPS request to a declared host"}],
            "retainedErrors": [],
            "analyzerVersion": "sigma-scanner-0.1.0+2",
            "rulePack": {"name": "sigma-rules", "version": "2026.11.3", "sha256": "ab".repeat(32)},
            "capabilities": {"shell": false, "env": false, "process": false, "filesystem": false, "network": true, "wallet": false},
            "manifestMismatchCount": 0,
        },
        "source": {"sourceType": "upload", "sourceUrl": null, "sourceRef": null, "entry": "SKILL.md",
            "bundleSha256": format!("{:064x}", n), "bundleDigest": format!("{:064x}", n + 1),
            "skillMdSha256": format!("{:064x}", n + 2), "files": 2},
        "manifest": {"name": format!("bench-skill-{n}"), "version": "1.0.0",
            "description": "Looks up the forecast for a city and summarises the next three days.",
            "capabilities": ["network"], "externalCalls": [{"url": "https://api.open-meteo.com/v1/forecast"}],
            "allowedTools": ["python"]},
        "endpointReview": {"declaredEndpoints": ["https://api.open-meteo.com/v1/forecast"], "observedUrls": ["api.open-meteo.com"]},
        "roundId": format!("round-{n}"),
        "roundType": "INITIAL_AUDIT",
        "votes": (1..=2).flat_map(|phase| (1..=3).map(move |v| json!({
            "phase": phase, "validatorId": format!("v{v}"), "model": format!("model-{v}"),
            "status": "CAST", "verdict": "SAFE", "severity": "NONE"}))).collect::<Vec<_>>(),
        "decision": {"outcome": "APPROVED", "policyVersion": "sigma-consensus-v1", "reasons": [], "decidedBy": "consensus"},
        "issuedAt": "2026-12-01T00:00:00.000Z",
        "onChain": {"committed": false, "txHash": null, "explorerUrl": null, "network": null, "codeVersion": "1.0.0",
            "immutableCommitmentScope": "No on-chain certification transaction is linked to this certificate snapshot yet."},
    })
}

async fn seed(app: &TestApp, count: usize) -> anyhow::Result<Vec<String>> {
    let signing = &app.settings.signing;
    let keys = Keyring::load(
        signing.key_dir.as_ref().expect("the testkit makes a key"),
        signing.active_key.as_deref(),
    )?;
    let developer: sqlx::types::Uuid =
        sqlx::query_scalar("select developer_id from developer limit 1")
            .fetch_one(&app.db)
            .await?;
    let mut ids = Vec::with_capacity(count);
    for chunk in (0..count).collect::<Vec<_>>().chunks(1000) {
        let (mut cids, mut sealed_docs, mut hashes, mut envelopes) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for &n in chunk {
            let id = format!("{:024x}", 0xbe00_0000_u64 + n as u64);
            let doc = sealed(&id, n);
            hashes.push(payload_hash(&doc)?);
            envelopes.push(serde_json::to_value(
                keys.sign(&certificate_statement(&doc)?)?,
            )?);
            sealed_docs.push(doc);
            cids.push(id);
        }
        sqlx::query(
            "insert into submission (submission_id, developer_id, category, bundle_key, bundle_sha256, bundle_bytes,
                 bundle_format, workflow_id, stage)
             select id, $2, 'SKILL', 'bundles/bench', 'bench', 1, 'tar.gz', 'submission:' || id, 'DONE'
             from unnest($1::text[]) as id",
        )
        .bind(&cids)
        .bind(developer)
        .execute(&app.db)
        .await?;
        sqlx::query(
            "insert into certificate (certificate_id, status, sealed, payload_hash, hash_algorithm, skill_md_sha256,
                 bundle_digest, snapshot_key, envelope, signing_key_id, developer_id, expires_at)
             select id, 'APPROVED', s, h, 'keccak256-canonical-json-v1', s #>> '{source,skillMdSha256}',
                 s #>> '{source,bundleDigest}', 'certificates/bench', e, e #>> '{signatures,0,keyid}', $5,
                 now() + interval '365 days'
             from unnest($1::text[], $2::jsonb[], $3::text[], $4::jsonb[]) as t(id, s, h, e)",
        )
        .bind(&cids)
        .bind(&sealed_docs)
        .bind(&hashes)
        .bind(&envelopes)
        .bind(developer)
        .execute(&app.db)
        .await?;
        ids.extend(cids);
    }
    Ok(ids)
}

struct WrkResult {
    requests_per_sec: f64,
    p50: String,
    p99: String,
    non_2xx: u64,
}

fn wrk(
    url: &str,
    script: Option<&str>,
    seconds: u64,
    connections: u32,
) -> anyhow::Result<WrkResult> {
    let mut command = Command::new("wrk");
    command.args([
        "-t2",
        &format!("-c{connections}"),
        &format!("-d{seconds}s"),
        "--latency",
    ]);
    if let Some(script) = script {
        command.args(["-s", script]);
    }
    let output = command.arg(url).output()?;
    anyhow::ensure!(
        output.status.success(),
        "wrk failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let field = |prefix: &str| {
        text.lines()
            .map(str::trim)
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.split_whitespace().nth(1))
            .map(str::to_owned)
            .ok_or_else(|| anyhow::anyhow!("no `{prefix}` in wrk output:\n{text}"))
    };
    let non_2xx = text
        .lines()
        .find(|l| l.contains("Non-2xx"))
        .and_then(|l| l.split(':').nth(1))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    Ok(WrkResult {
        requests_per_sec: field("Requests/sec:")?.parse()?,
        p50: field("50%")?,
        p99: field("99%")?,
        non_2xx,
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let count = args.first().copied().unwrap_or(10_000) as usize;
    let seconds = args.get(1).copied().unwrap_or(10);
    let connections = args.get(2).copied().unwrap_or(64) as u32;
    let app = TestApp::spawn_with(Options {
        tweak: std::sync::Arc::new(|s| {
            // One load generator is one client; the limiter still runs on every request.
            s.public.reads_per_minute = u32::MAX;
            s.public.read_burst = u32::MAX;
            s.public.view_flush_ms = 1000;
            s.log.filter = "warn".into();
        }),
        ..Options::without_workers()
    })
    .await?;
    let started = Instant::now();
    let ids = seed(&app, count).await?;
    println!(
        "seeded {} signed certificates in {:.1} s",
        ids.len(),
        started.elapsed().as_secs_f64()
    );
    let dir = std::env::temp_dir().join(format!("sigma-public-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let ids_file = dir.join("ids.txt");
    std::fs::write(&ids_file, ids.join("\n"))?;
    let script = dir.join("verify.lua");
    std::fs::write(
        &script,
        format!(
            // Requests are formatted once per wrk thread, so generating load costs wrk as
            // little as the health run's static request does.
            r#"local requests = {{}}
for line in io.lines("{}") do
  requests[#requests + 1] = wrk.format("GET", "/api/v1/public/certificates/" .. line .. "/verify")
end
math.randomseed(os.time() + tonumber(tostring({{}}):sub(8), 16))
request = function()
  return requests[math.random(#requests)]
end
"#,
            ids_file.display()
        ),
    )?;
    let script = script.to_str().expect("utf-8 path");
    let verify_url = app.base_url.clone();
    let health_url = app.url("/healthz");
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    println!(
        "machine: {cores} cores (server and wrk share them); server: 2 tokio workers, {} build",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    // Warm-up: every certificate in the cache, as on a long-running replica; then a short run.
    let http = reqwest::Client::new();
    let started = Instant::now();
    futures::stream::iter(ids.iter())
        .map(|id| {
            let http = http.clone();
            let url = app.url(&format!("/api/v1/public/certificates/{id}/verify"));
            async move { anyhow::Ok(http.get(url).send().await?.status().is_success()) }
        })
        .buffer_unordered(32)
        .try_for_each(|ok| async move {
            anyhow::ensure!(ok, "a seeded certificate did not verify");
            Ok(())
        })
        .await?;
    println!(
        "cache warmed with {} certificates in {:.1} s",
        ids.len(),
        started.elapsed().as_secs_f64()
    );
    wrk(&verify_url, Some(script), 2, connections)?;
    wrk(&health_url, None, 2, connections)?;
    let health = wrk(&health_url, None, seconds, connections)?;
    let verify = wrk(&verify_url, Some(script), seconds, connections)?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let views: i64 =
        sqlx::query_scalar("select coalesce(sum(views), 0)::bigint from certificate_view")
            .fetch_one(&app.db)
            .await?;
    println!("{connections} connections, {seconds} s each, wrk -t2:");
    println!("| endpoint | requests/s | p50 | p99 | non-2xx |");
    println!("|---|---|---|---|---|");
    for (name, r) in [
        ("GET /healthz", &health),
        ("GET …/certificates/{random of 10k}/verify", &verify),
    ] {
        println!(
            "| {name} | {:.0} | {} | {} | {} |",
            r.requests_per_sec, r.p50, r.p99, r.non_2xx
        );
    }
    println!(
        "verify / health throughput: {:.0}%",
        100.0 * verify.requests_per_sec / health.requests_per_sec
    );
    println!("views written to PostgreSQL in batches: {views}");
    std::fs::remove_dir_all(&dir).ok();
    app.shutdown().await;
    Ok(())
}
