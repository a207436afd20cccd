//! The certificate page for people (server-rendered HTML, no JavaScript) and the README badge.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat, Utc};
use maud::{DOCTYPE, Markup, html};
use serde_json::Value;

use super::cache::Certificate;
use super::{KEYS_PATH, find, public_url, with_etag};
use crate::AppState;
use crate::error::{ApiError, ApiPath};
use sigma_shared::domain::CertificateId;

/// Badge text and colour for a certificate's current state.
pub fn badge_state(c: &Certificate, now: DateTime<Utc>) -> (&'static str, &'static str) {
    match c.status(now) {
        "APPROVED" if c.open_flags == 0 => ("certified", "#2e7d32"),
        "APPROVED" => ("flagged", "#ef6c00"),
        "EXPIRED" => ("expired", "#757575"),
        "SUPERSEDED" => ("superseded", "#757575"),
        "SUSPENDED" => ("suspended", "#c62828"),
        _ => ("revoked", "#c62828"),
    }
}

/// A flat two-part badge; text widths use a fixed 7 px per character, like shields.io's fallback.
pub fn badge_svg(value: &str, color: &str) -> String {
    let label = "SIGMA";
    let lw = 10 + label.len() * 7;
    let vw = 10 + value.len() * 7;
    let w = lw + vw;
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="20" role="img" aria-label="{label}: {value}"><title>{label}: {value}</title><rect width="{lw}" height="20" fill="#555"/><rect x="{lw}" width="{vw}" height="20" fill="{color}"/><g fill="#fff" text-anchor="middle" font-family="Verdana,DejaVu Sans,sans-serif" font-size="11"><text x="{lx}" y="14">{label}</text><text x="{vx}" y="14">{value}</text></g></svg>"##,
        lx = lw / 2,
        vx = lw + vw / 2,
    )
}

fn when(at: Option<DateTime<Utc>>) -> String {
    at.map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
        .unwrap_or_else(|| "—".into())
}

fn day(at: Option<DateTime<Utc>>) -> String {
    at.map(|t| t.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| "—".into())
}

fn time_of_day(at: Option<DateTime<Utc>>) -> String {
    at.map(|t| t.format("%H:%M:%S UTC").to_string())
        .unwrap_or_default()
}

/// Where the reviewed bytes came from, in words.
fn source_text(source: &Value) -> String {
    match source["sourceUrl"].as_str() {
        Some(url) => format!(
            "{url} @ {} · entry {}",
            text(&source["sourceRef"]),
            text(&source["entry"])
        ),
        None => format!("uploaded bundle · entry {}", text(&source["entry"])),
    }
}

fn text(value: &Value) -> String {
    match value {
        Value::Null => "—".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

const STYLE: &str = r#"
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;background:#f6f7f9;color:#1b1f24}
main{max-width:960px;margin:0 auto;padding:24px}
header{display:flex;align-items:center;gap:16px;flex-wrap:wrap}
h1{font-size:28px;margin:0}
.badge{display:inline-block;padding:4px 12px;border-radius:14px;color:#fff;font-weight:600;font-size:14px}
.tiles{display:grid;grid-template-columns:repeat(auto-fill,minmax(200px,1fr));gap:12px;margin:20px 0}
.tile{background:#fff;border:1px solid #dde1e6;border-radius:8px;padding:12px 14px}
.tile .k{font-size:12px;text-transform:uppercase;letter-spacing:.04em;color:#5b6470}
.tile .v{font-size:20px;font-weight:600;margin-top:4px;word-break:break-word}
.tile .n{font-size:12px;color:#5b6470;margin-top:2px}
section{background:#fff;border:1px solid #dde1e6;border-radius:8px;padding:14px 18px;margin:14px 0}
h2{font-size:18px;margin:0 0 10px}
table{border-collapse:collapse;width:100%;font-size:14px}
th,td{text-align:left;padding:6px 8px;border-bottom:1px solid #eceef1;vertical-align:top}
code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:13px}
code.h{word-break:break-all}
pre{background:#f0f2f5;padding:10px;border-radius:6px;overflow-x:auto;white-space:pre-wrap}
.safe{color:#2e7d32;font-weight:600}.unsafe{color:#c62828;font-weight:600}
"#;

fn tile(key: &str, value: &str, note: &str) -> Markup {
    html! {
        div.tile { div.k { (key) } div.v { (value) } div.n { (note) } }
    }
}

fn render(state: &AppState, c: &Certificate, now: DateTime<Utc>) -> Markup {
    let sealed = &c.sealed;
    let status = c.status(now);
    let valid = c.valid(now);
    let (badge, color) = badge_state(c, now);
    let verify_url = public_url(
        state,
        &format!("/api/v1/public/certificates/{}/verify", c.id),
    );
    let record_url = public_url(state, &format!("/api/v1/public/certificates/{}", c.id));
    let badge_url = public_url(
        state,
        &format!("/api/v1/public/certificates/{}/badge.svg", c.id),
    );
    let votes = sealed["votes"].as_array().cloned().unwrap_or_default();
    let source = &sealed["source"];
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "SIGMA certificate · " (c.skill_name()) }
                style { (maud::PreEscaped(STYLE)) }
            }
            body {
                main {
                    header {
                        h1 { (c.skill_name()) }
                        span.badge style=(format!("background:{color}")) { (status) }
                        span { "Certificate " code { (c.id) } }
                    }
                    p { (c.summary(now)) }
                    div.tiles {
                        (tile("Status", if valid { "Valid" } else { "Not valid" },
                            if valid { "approved and no open flag escalations" } else { badge }))
                        (tile("Open flags", &c.open_flags.to_string(), "escalations under review"))
                        (tile("Reports", &c.open_reports.to_string(), "awaiting triage"))
                        (tile("Security level", &text(&sealed["review"]["securityLevel"]), "council and sandbox"))
                        (tile("Sandbox risk", &text(&sealed["review"]["sandboxRiskLevel"]), "static analysis"))
                        (tile("Version", &text(&sealed["skillVersion"]), "certified version"))
                        (tile("Views", &c.views.load(std::sync::atomic::Ordering::Relaxed).to_string(), "verify API calls"))
                        (tile("Issued", &day(Some(c.issued_at)), &time_of_day(Some(c.issued_at))))
                        (tile("Expires", &day(c.expires_at), "unless renewed"))
                        (tile("Renewal due", &day(c.renewal_due_at), c.renewal_status.as_deref().unwrap_or("not started")))
                    }
                    @if let Some(reason) = &c.status_reason {
                        section { h2 { "Status note" } p { (reason) " (" (when(c.status_changed_at)) ")" } }
                    }
                    section {
                        h2 { "What was reviewed" }
                        table {
                            tr { th { "SKILL.md SHA-256" } td { code.h { (c.skill_md_sha256.as_deref().unwrap_or("—")) } } }
                            tr { th { "Bundle digest" } td { code.h { (c.bundle_digest) } } }
                            tr { th { "Payload hash" } td { code.h { (c.payload_hash) } " (" (c.hash_algorithm) ")" } }
                            tr { th { "Signed by" } td { code { (c.signing_key_id.as_deref().unwrap_or("unsigned")) } " (Ed25519, DSSE / in-toto)" } }
                            tr { th { "Source" } td { (source_text(source)) } }
                            tr { th { "Category" } td { (text(&sealed["category"])) } }
                            tr { th { "Policy" } td { (text(&sealed["decision"]["policyVersion"])) " · decided by " (text(&sealed["decision"]["decidedBy"])) } }
                            tr { th { "Rule pack" } td { (text(&sealed["review"]["rulePack"]["name"])) " " (text(&sealed["review"]["rulePack"]["version"])) } }
                            tr { th { "On chain" } td { (text(&sealed["onChain"]["immutableCommitmentScope"])) } }
                        }
                    }
                    section {
                        h2 { "Council votes" }
                        table {
                            tr { th { "Phase" } th { "Validator" } th { "Model" } th { "Verdict" } th { "Severity" } }
                            @for vote in &votes {
                                tr {
                                    td { (text(&vote["phase"])) }
                                    td { (text(&vote["validatorId"])) }
                                    td { code { (text(&vote["model"])) } }
                                    td class=(if vote["verdict"] == "SAFE" { "safe" } else { "unsafe" }) {
                                        (if vote["status"] == "FAILED" { "no vote".to_owned() } else { text(&vote["verdict"]) })
                                    }
                                    td { (text(&vote["severity"])) }
                                }
                            }
                        }
                    }
                    section {
                        h2 { "How to verify" }
                        p { "Agents: call the verify endpoint before each invocation and require " code { "valid: true" } "." }
                        pre { "curl -s " (verify_url) }
                        p { "Offline, against the published keys (" a href=(public_url(state, KEYS_PATH)) { "keys" } "), with your copy of the skill:" }
                        pre { "curl -s " (record_url) " > certificate.json\ncurl -s " (public_url(state, KEYS_PATH)) " > keys.json\nsigma verify certificate.json --keys keys.json --skill ./your-skill" }
                        p { "Badge for a README: " code { "![SIGMA](" (badge_url) ")" } }
                        p { a href=(record_url) { "Full record (JSON)" } " · " a href=(verify_url) { "Verify (JSON)" } }
                    }
                }
            }
        }
    }
}

/// The certificate page: status, flags, digests, votes, dates and how to verify.
pub async fn certificate_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    id: Result<ApiPath<CertificateId>, ApiError>,
) -> Response {
    let found = match id {
        Ok(ApiPath(id)) => find(&state, &id).await,
        Err(e) => Err(e),
    };
    match found {
        Ok(c) => with_etag(
            &headers,
            "text/html; charset=utf-8",
            "public, max-age=0, must-revalidate",
            render(&state, &c, Utc::now()).into_string().into_bytes(),
        ),
        Err(ApiError::Client { status, .. }) if status == StatusCode::NOT_FOUND => (
            StatusCode::NOT_FOUND,
            [("content-type", "text/html; charset=utf-8")],
            html! { (DOCTYPE) html { body { h1 { "No such certificate" } p { "Check the id: a certificate id is 24 lowercase hex characters." } } } }
                .into_string(),
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}
