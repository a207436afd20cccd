//! `sigma verify`: checks a certificate's signature against SIGMA's published keys and, given a
//! local copy of the skill, that its bytes are the ones reviewed. With a certificate file and a key
//! file it needs no network at all.
//!
//! Exit codes: 0 every check passed; 1 a check failed (bad signature, altered snapshot, digest
//! mismatch, or a certificate no longer valid when its live status was read); 2 an input could not
//! be read.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, ValueEnum};
use serde_json::{Value, json};
use sigma_scanner::unpack;
use sigma_shared::Settings;
use sigma_shared::attestation::{
    self, Envelope, KeySet, SUBJECT_BUNDLE, SUBJECT_SKILL_MD, check_sealed, subject_digest,
    verify_envelope,
};
use sigma_shared::domain::{SubmissionId, lf_normalised_sha256};

#[derive(Args)]
pub struct VerifyArgs {
    /// A certificate file (the JSON of `GET /api/v1/public/certificates/{id}`, or a bare DSSE
    /// envelope), or a certificate id to fetch from `--api`.
    certificate: String,
    /// A local skill directory whose bundle digest and SKILL.md must match the certificate.
    #[arg(long)]
    skill: Option<PathBuf>,
    /// The published key set: a file, or a URL. Default: `{api}/.well-known/sigma-keys.json`.
    #[arg(long)]
    keys: Option<String>,
    /// The SIGMA API; default `api.public_base_url` from the configuration.
    #[arg(long)]
    api: Option<String>,
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Json,
}

struct Check {
    name: &'static str,
    ok: bool,
    detail: String,
}

pub async fn run(settings: &Settings, args: VerifyArgs) -> i32 {
    match verify(settings, &args).await {
        Ok(checks) => {
            let ok = checks.iter().all(|c| c.ok);
            match args.format {
                Format::Text => {
                    for c in &checks {
                        println!(
                            "{} {:<16} {}",
                            if c.ok { "ok  " } else { "FAIL" },
                            c.name,
                            c.detail
                        );
                    }
                    println!("{}", if ok { "verified" } else { "NOT verified" });
                }
                Format::Json => {
                    let body = json!({
                        "verified": ok,
                        "checks": checks.iter().map(|c| json!({"check": c.name, "ok": c.ok, "detail": c.detail})).collect::<Vec<_>>(),
                    });
                    println!("{body:#}");
                }
            }
            if ok { 0 } else { 1 }
        }
        Err(e) => {
            eprintln!("sigma verify: {e:#}");
            2
        }
    }
}

async fn fetch_json(url: &str) -> anyhow::Result<Value> {
    let response = reqwest::Client::new()
        .get(url)
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    anyhow::ensure!(
        response.status().is_success(),
        "{url} answered {}",
        response.status()
    );
    response
        .json()
        .await
        .with_context(|| format!("{url} did not answer JSON"))
}

fn read_json(path: &Path) -> anyhow::Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))
}

async fn verify(settings: &Settings, args: &VerifyArgs) -> anyhow::Result<Vec<Check>> {
    let api = args
        .api
        .clone()
        .unwrap_or_else(|| settings.api.public_base_url.clone());
    let api = api.trim_end_matches('/');
    let mut live = None;
    let record = if Path::new(&args.certificate).exists() {
        read_json(Path::new(&args.certificate))?
    } else {
        let id = SubmissionId::parse(&args.certificate).map_err(|_| {
            anyhow::anyhow!(
                "{} is neither a file nor a certificate id",
                args.certificate
            )
        })?;
        live = Some(fetch_json(&format!("{api}/api/v1/public/certificates/{id}/verify")).await?);
        fetch_json(&format!("{api}/api/v1/public/certificates/{id}")).await?
    };
    let (envelope, sealed) = if record.get("payloadType").is_some() {
        (record.clone(), None)
    } else {
        (
            record["envelope"].clone(),
            record.get("sealed").filter(|s| !s.is_null()).cloned(),
        )
    };
    anyhow::ensure!(
        !envelope.is_null(),
        "the certificate carries no signature envelope"
    );
    let envelope: Envelope =
        serde_json::from_value(envelope).context("the envelope is not a DSSE envelope")?;
    let keys_source = args
        .keys
        .clone()
        .unwrap_or_else(|| format!("{api}{}", "/.well-known/sigma-keys.json"));
    let keys: KeySet = serde_json::from_value(
        if keys_source.starts_with("http://") || keys_source.starts_with("https://") {
            fetch_json(&keys_source).await?
        } else {
            read_json(Path::new(&keys_source))?
        },
    )
    .context("the key set is not SIGMA's key format")?;

    let mut checks = Vec::new();
    let statement = match verify_envelope(&envelope, &keys) {
        Ok((statement, keyid)) => {
            checks.push(Check {
                name: "signature",
                ok: true,
                detail: format!("Ed25519 over DSSE PAE by {keyid} (from {keys_source})"),
            });
            statement
        }
        Err(e) => {
            checks.push(Check {
                name: "signature",
                ok: false,
                detail: e.to_string(),
            });
            return Ok(checks);
        }
    };
    let predicate = &statement["predicate"];
    checks.push(Check {
        name: "verdict",
        ok: predicate["verdict"] == "APPROVED",
        detail: format!(
            "{} {} — {} (policy {}, issued {})",
            text(&predicate["skillName"]),
            text(&predicate["skillVersion"]),
            text(&predicate["verdict"]),
            text(&predicate["policyVersion"]),
            text(&predicate["issuedAt"])
        ),
    });
    if let Some(sealed) = &sealed {
        checks.push(match check_sealed(&statement, sealed) {
            Ok(()) => Check {
                name: "sealed snapshot",
                ok: true,
                detail: format!(
                    "matches the signed hash {}",
                    text(&predicate["sealedPayloadHash"])
                ),
            },
            Err(e) => Check {
                name: "sealed snapshot",
                ok: false,
                detail: e.to_string(),
            },
        });
    }
    if let Some(dir) = &args.skill {
        checks.extend(check_skill_dir(&statement, dir)?);
    }
    if let Some(live) = live {
        checks.push(Check {
            name: "live status",
            ok: live["valid"] == true,
            detail: format!(
                "{} at {api}: {}",
                text(&live["status"]),
                text(&live["summary"])
            ),
        });
    } else {
        checks.push(Check {
            name: "live status",
            ok: true,
            detail: "not checked offline; revocation and flags need `sigma verify ID` or the verify endpoint".into(),
        });
    }
    Ok(checks)
}

fn text(value: &Value) -> String {
    value
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| value.to_string())
}

/// The local copy's digests against the signed subjects, computed exactly as the sandbox does.
fn check_skill_dir(statement: &Value, dir: &Path) -> anyhow::Result<Vec<Check>> {
    let files = unpack::read_dir(dir, &unpack::ANALYSIS_CAPS)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", dir.display()))?;
    let mut checks = Vec::new();
    let local_bundle = unpack::bundle_digest(&files);
    checks.push(match subject_digest(statement, SUBJECT_BUNDLE) {
        Some(signed) => Check {
            name: "bundle digest",
            ok: signed == local_bundle,
            detail: if signed == local_bundle {
                format!("{local_bundle} matches")
            } else {
                format!(
                    "local {local_bundle} ≠ certified {signed}: these are not the reviewed bytes"
                )
            },
        },
        None => Check {
            name: "bundle digest",
            ok: false,
            detail: "the certificate signs no bundle digest".into(),
        },
    });
    if let Some(signed) = subject_digest(statement, SUBJECT_SKILL_MD) {
        let local = files
            .iter()
            .find(|f| f.path == attestation::SUBJECT_SKILL_MD)
            .map(|f| lf_normalised_sha256(&f.bytes).to_string());
        checks.push(match local {
            Some(local) => Check {
                name: "SKILL.md",
                ok: local == signed,
                detail: if local == signed {
                    format!("{local} matches")
                } else {
                    format!("local {local} ≠ certified {signed}")
                },
            },
            None => Check {
                name: "SKILL.md",
                ok: false,
                detail: format!("{} has no SKILL.md", dir.display()),
            },
        });
    }
    Ok(checks)
}
