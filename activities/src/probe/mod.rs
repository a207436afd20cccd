//! Live probing of a skill's declared HTTP endpoints, at submission time (the sandbox stage) and
//! on each monitor check. Only GET, HEAD and OPTIONS are sent; a mutating endpoint is recorded
//! as skipped. Each probe records DNS, TLS, status, latency, content type and redirects, whether
//! an endpoint declared as authenticated refuses an anonymous call, and whether the answer fits
//! the declaration. An endpoint that leads into SIGMA's own network, or whose TLS fails, blocks
//! approval.

pub mod fetch;
pub mod guard;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use sigma_shared::config::ProbeSettings;
use sigma_shared::pricing::DeclaredEndpoint;
use url::Url;

pub use fetch::{FetchError, Fetched, Fetcher, Redirect, TlsFacts};
pub use guard::AddressPolicy;

/// Severity of what a probe found, ordered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ProbeSeverity {
    #[default]
    None,
    Low,
    Medium,
    High,
    Critical,
}

/// The summary status shown as `endpointStatus`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EndpointStatus {
    Passed,
    Failed,
    Skipped,
    NotApplicable,
}

impl EndpointStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Passed => "PASSED",
            Self::Failed => "FAILED",
            Self::Skipped => "SKIPPED",
            Self::NotApplicable => "NOT_APPLICABLE",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointProbe {
    pub url: String,
    /// As declared.
    pub method: String,
    pub authenticated: bool,
    /// The method sent, or `None` when the endpoint was not called.
    pub probed_method: Option<String>,
    pub skipped: Option<String>,
    pub addresses: Vec<String>,
    pub status: Option<u16>,
    pub latency_ms: Option<u64>,
    pub content_type: Option<String>,
    pub redirects: Vec<Redirect>,
    pub final_host: Option<String>,
    pub tls: Option<TlsFacts>,
    /// For endpoints declared as authenticated: did an anonymous call get 401 or 403?
    pub refuses_anonymous: Option<bool>,
    pub matches_declaration: bool,
    pub error: Option<String>,
    pub severity: ProbeSeverity,
    pub findings: Vec<String>,
    pub blocks_approval: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiProbeReport {
    pub status: EndpointStatus,
    pub reached: u32,
    pub skipped: u32,
    pub failed: u32,
    pub highest_severity: ProbeSeverity,
    pub approval_blocked: bool,
    pub block_reasons: Vec<String>,
    pub endpoints: Vec<EndpointProbe>,
    pub probed_at: DateTime<Utc>,
}

impl ApiProbeReport {
    /// A surface with nothing to probe: `NOT_APPLICABLE` without an API, `SKIPPED` with one.
    pub fn empty(api_surface: bool) -> Self {
        Self {
            status: if api_surface {
                EndpointStatus::Skipped
            } else {
                EndpointStatus::NotApplicable
            },
            reached: 0,
            skipped: 0,
            failed: 0,
            highest_severity: ProbeSeverity::None,
            approval_blocked: false,
            block_reasons: Vec::new(),
            endpoints: Vec::new(),
            probed_at: Utc::now(),
        }
    }

    /// Lines for the council's prompt: one per endpoint, facts only.
    pub fn prompt_lines(&self) -> Vec<String> {
        let mut lines = vec![format!(
            "endpointStatus {}: {} reached, {} skipped, {} failed; highest severity {:?}; approvalBlocked {}",
            self.status.as_str(),
            self.reached,
            self.skipped,
            self.failed,
            self.highest_severity,
            self.approval_blocked
        )];
        for e in &self.endpoints {
            let mut line = format!("{} {}", e.method, e.url);
            if let Some(why) = &e.skipped {
                line.push_str(&format!(" — skipped: {why}"));
            } else {
                if let Some(status) = e.status {
                    line.push_str(&format!(
                        " — {} answered {status}",
                        e.probed_method.as_deref().unwrap_or("?")
                    ));
                }
                if let Some(error) = &e.error {
                    line.push_str(&format!(" — {error}"));
                }
                for r in &e.redirects {
                    line.push_str(&format!(" → {} {}", r.status, r.location));
                }
                if !e.findings.is_empty() {
                    line.push_str(&format!(" [{:?}: {}]", e.severity, e.findings.join("; ")));
                }
            }
            lines.push(line);
        }
        lines
    }
}

/// The endpoints a submission declares: the draft's, then the SKILL.md's external calls not
/// already listed (method GET when the manifest names none).
pub fn declared_surface(
    draft_endpoints: &[DeclaredEndpoint],
    manifest_calls: &[(String, Option<String>)],
) -> Vec<DeclaredEndpoint> {
    let mut all: Vec<DeclaredEndpoint> = draft_endpoints.to_vec();
    for (url, method) in manifest_calls {
        if all.iter().any(|e| &e.url == url) {
            continue;
        }
        let endpoint = DeclaredEndpoint {
            url: url.clone(),
            method: method.clone().unwrap_or_else(|| "GET".into()),
            authenticated: false,
        };
        if let Ok(valid) = endpoint.validate() {
            all.push(valid);
        }
    }
    all
}

pub struct Prober {
    fetcher: Fetcher,
    concurrency: usize,
    max_endpoints: usize,
}

impl Prober {
    pub fn new(settings: &ProbeSettings) -> anyhow::Result<Self> {
        Ok(Self {
            fetcher: Fetcher {
                policy: AddressPolicy::new(&settings.allow_addresses)?,
                timeout: std::time::Duration::from_millis(settings.timeout_ms),
                max_body_bytes: settings.max_body_bytes,
                max_redirects: settings.max_redirects,
                user_agent: settings.user_agent.clone(),
            },
            concurrency: settings.concurrency.max(1),
            max_endpoints: settings.max_endpoints,
        })
    }

    pub fn fetcher(&self) -> &Fetcher {
        &self.fetcher
    }

    /// Probes every endpoint (concurrently, in declaration order in the report).
    pub async fn probe_all(
        &self,
        endpoints: &[DeclaredEndpoint],
        api_surface: bool,
    ) -> ApiProbeReport {
        if endpoints.is_empty() {
            return ApiProbeReport::empty(api_surface);
        }
        // Futures collected first: a closure inside the stream would not be `Send` for every
        // lifetime, which activity futures must be.
        let (probed, over) = endpoints.split_at(endpoints.len().min(self.max_endpoints));
        let pending: Vec<_> = probed.iter().map(|e| self.probe(e)).collect();
        let mut probes: Vec<EndpointProbe> = futures::stream::iter(pending)
            .buffered(self.concurrency)
            .collect()
            .await;
        probes.extend(over.iter().map(|e| {
            let mut probe = EndpointProbe::declared(e);
            probe.skipped = Some(format!(
                "over the limit of {} probed endpoints",
                self.max_endpoints
            ));
            probe
        }));
        summarise(probes)
    }

    pub async fn probe(&self, declared: &DeclaredEndpoint) -> EndpointProbe {
        let mut probe = EndpointProbe::declared(declared);
        let method = probe.method.clone();
        let sent = match method.as_str() {
            "GET" => reqwest::Method::GET,
            "HEAD" => reqwest::Method::HEAD,
            "OPTIONS" => reqwest::Method::OPTIONS,
            other => {
                probe.skipped = Some(format!(
                    "{other} may change the service's state; only GET, HEAD and OPTIONS are sent"
                ));
                return probe;
            }
        };
        let url = match Url::parse(&probe.url) {
            Ok(url) if matches!(url.scheme(), "http" | "https") => url,
            _ => {
                probe.error = Some("not an http(s) URL".into());
                probe.note(ProbeSeverity::High, "the declared URL cannot be probed");
                return probe;
            }
        };
        probe.probed_method = Some(method.clone());
        let declared_host = url.host_str().unwrap_or_default().to_owned();
        // An anonymous call: an authenticated endpoint must refuse it.
        match self.fetcher.fetch(sent, &url, &[]).await {
            Ok(answer) => probe.judge(&answer, &declared_host, url.scheme() == "https"),
            Err(error) => {
                probe.error = Some(error.to_string());
                match error {
                    FetchError::Forbidden(why) => {
                        probe.note(
                            ProbeSeverity::Critical,
                            &format!("leads into a forbidden network: {why}"),
                        );
                        probe.blocks_approval = true;
                    }
                    FetchError::Tls(_) => {
                        probe.note(
                            ProbeSeverity::Critical,
                            "its TLS certificate does not verify",
                        );
                        probe.blocks_approval = true;
                    }
                    FetchError::Timeout(_) => {
                        probe.note(ProbeSeverity::High, "did not answer in time")
                    }
                    FetchError::Dns(_) => {
                        probe.note(ProbeSeverity::High, "its host does not resolve")
                    }
                    FetchError::Connect(_) => probe.note(ProbeSeverity::High, "unreachable"),
                    FetchError::TooManyRedirects(_) | FetchError::BadRedirect(_) => {
                        probe.note(ProbeSeverity::High, "its redirects cannot be followed")
                    }
                }
            }
        }
        probe
    }
}

impl EndpointProbe {
    /// The declaration, not yet probed.
    fn declared(declared: &DeclaredEndpoint) -> Self {
        Self {
            url: declared.url.trim().to_owned(),
            method: declared.method.trim().to_ascii_uppercase(),
            authenticated: declared.authenticated,
            probed_method: None,
            skipped: None,
            addresses: Vec::new(),
            status: None,
            latency_ms: None,
            content_type: None,
            redirects: Vec::new(),
            final_host: None,
            tls: None,
            refuses_anonymous: None,
            matches_declaration: false,
            error: None,
            severity: ProbeSeverity::None,
            findings: Vec::new(),
            blocks_approval: false,
        }
    }

    fn note(&mut self, severity: ProbeSeverity, finding: &str) {
        self.severity = self.severity.max(severity);
        self.findings.push(finding.to_owned());
    }

    fn judge(&mut self, answer: &Fetched, declared_host: &str, https: bool) {
        self.status = Some(answer.status);
        self.latency_ms = Some(answer.latency_ms);
        self.content_type = answer.content_type.clone();
        self.redirects = answer.redirects.clone();
        self.addresses = answer.addresses.iter().map(ToString::to_string).collect();
        self.tls = answer.tls.clone();
        let final_host = answer.final_url.host_str().unwrap_or_default().to_owned();
        self.final_host = Some(final_host.clone());
        let status = answer.status;
        let refused = matches!(status, 401 | 403);
        let mut fits = true;
        if self.authenticated {
            self.refuses_anonymous = Some(refused);
            if (200..300).contains(&status) {
                self.note(
                    ProbeSeverity::High,
                    "declared as authenticated but answers an anonymous call",
                );
                fits = false;
            }
        } else if refused {
            self.note(
                ProbeSeverity::Medium,
                "declared as open but refuses an anonymous call",
            );
            fits = false;
        }
        match status {
            404 | 410 => {
                self.note(ProbeSeverity::High, &format!("gone ({status})"));
                fits = false;
            }
            405 | 501 => {
                self.note(
                    ProbeSeverity::Medium,
                    &format!("does not accept {} ({status})", self.method),
                );
                fits = false;
            }
            500..=599 => {
                self.note(ProbeSeverity::High, &format!("server error ({status})"));
                fits = false;
            }
            400..=499 if !refused => {
                self.note(ProbeSeverity::Medium, &format!("client error ({status})"));
                fits = false;
            }
            _ => {}
        }
        if !final_host.eq_ignore_ascii_case(declared_host) {
            self.note(
                ProbeSeverity::Medium,
                &format!("redirects off the declared host to {final_host}"),
            );
            fits = false;
        }
        if !https || answer.final_url.scheme() != "https" {
            self.note(ProbeSeverity::Medium, "not encrypted (plain http)");
        }
        if let Some(not_after) = self.tls.as_ref().and_then(|t| t.not_after)
            && not_after - Utc::now() < chrono::Duration::days(14)
        {
            self.note(
                ProbeSeverity::Medium,
                &format!("its TLS certificate expires at {not_after}"),
            );
        }
        self.matches_declaration = fits;
    }
}

fn summarise(endpoints: Vec<EndpointProbe>) -> ApiProbeReport {
    let skipped = endpoints.iter().filter(|e| e.skipped.is_some()).count() as u32;
    let failed = endpoints
        .iter()
        .filter(|e| e.skipped.is_none() && e.severity >= ProbeSeverity::High)
        .count() as u32;
    let reached = endpoints
        .iter()
        .filter(|e| e.skipped.is_none() && e.status.is_some())
        .count() as u32;
    let highest_severity = endpoints
        .iter()
        .map(|e| e.severity)
        .max()
        .unwrap_or_default();
    let block_reasons: Vec<String> = endpoints
        .iter()
        .filter(|e| e.blocks_approval)
        .map(|e| {
            format!(
                "API probe: {} {}: {}",
                e.method,
                e.url,
                e.findings.join("; ")
            )
        })
        .collect();
    let approval_blocked = !block_reasons.is_empty();
    let status = if approval_blocked || failed > 0 {
        EndpointStatus::Failed
    } else if skipped as usize == endpoints.len() {
        EndpointStatus::Skipped
    } else {
        EndpointStatus::Passed
    };
    ApiProbeReport {
        status,
        reached,
        skipped,
        failed,
        highest_severity,
        approval_blocked,
        block_reasons,
        endpoints,
        probed_at: Utc::now(),
    }
}
