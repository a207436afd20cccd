//! One guarded HTTP exchange, redirects followed by hand: every hop's host is resolved, every
//! address checked against the [`AddressPolicy`], and the connection pinned to those addresses.
//! Time and body size are bounded; what happened (addresses, TLS facts, hops) is recorded.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use url::Url;

use super::guard::AddressPolicy;

/// Limits and policy shared by every probe of one worker.
#[derive(Clone, Debug)]
pub struct Fetcher {
    pub policy: AddressPolicy,
    pub timeout: Duration,
    pub max_body_bytes: usize,
    pub max_redirects: usize,
    pub user_agent: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Redirect {
    pub status: u16,
    pub location: String,
    pub host: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TlsFacts {
    /// The chain verified against the trusted roots for this host name (a failed verification
    /// ends the exchange as [`FetchError::Tls`], so a recorded TLS fact is always valid).
    pub valid: bool,
    pub not_after: Option<DateTime<Utc>>,
    /// SHA-256 of the leaf certificate: a changed certificate is a monitor anomaly.
    pub fingerprint: String,
    pub issuer: Option<String>,
}

#[derive(Clone, Debug)]
pub struct Fetched {
    pub final_url: Url,
    pub status: u16,
    pub latency_ms: u64,
    pub content_type: Option<String>,
    pub redirects: Vec<Redirect>,
    pub addresses: Vec<IpAddr>,
    pub tls: Option<TlsFacts>,
    pub body: Vec<u8>,
    pub body_truncated: bool,
}

#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum FetchError {
    /// The host, or a redirect, leads to an address no probe may reach.
    #[error("refused: {0}")]
    Forbidden(String),
    #[error("DNS: {0}")]
    Dns(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("timed out after {0} ms")]
    Timeout(u64),
    #[error("connection failed: {0}")]
    Connect(String),
    #[error("more than {0} redirects")]
    TooManyRedirects(usize),
    #[error("bad redirect: {0}")]
    BadRedirect(String),
}

impl Fetcher {
    /// `method` is sent as is; callers only send GET, HEAD and OPTIONS.
    pub async fn fetch(
        &self,
        method: reqwest::Method,
        url: &Url,
        headers: &[(&str, &str)],
    ) -> Result<Fetched, FetchError> {
        let started = Instant::now();
        let budget_ms = self.timeout.as_millis() as u64;
        match tokio::time::timeout(self.timeout, self.follow(method, url, headers, started)).await {
            Ok(result) => result,
            Err(_) => Err(FetchError::Timeout(budget_ms)),
        }
    }

    async fn follow(
        &self,
        method: reqwest::Method,
        url: &Url,
        headers: &[(&str, &str)],
        started: Instant,
    ) -> Result<Fetched, FetchError> {
        let mut url = url.clone();
        let mut redirects = Vec::new();
        loop {
            let addresses = self.resolve(&url).await?;
            let host = url.host_str().unwrap_or_default().to_owned();
            let client = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .tls_info(true)
                .no_proxy()
                .connect_timeout(self.timeout)
                .user_agent(&self.user_agent)
                .resolve_to_addrs(&host, &addresses)
                .build()
                .map_err(|e| FetchError::Connect(e.to_string()))?;
            let mut request = client.request(method.clone(), url.clone());
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            let mut response = request.send().await.map_err(|e| self.classify(e))?;
            let status = response.status();
            if status.is_redirection()
                && let Some(location) = response.headers().get(reqwest::header::LOCATION)
            {
                let location = location
                    .to_str()
                    .map_err(|_| FetchError::BadRedirect("a non-text Location".into()))?;
                let next = url
                    .join(location)
                    .map_err(|e| FetchError::BadRedirect(format!("`{location}`: {e}")))?;
                if !matches!(next.scheme(), "http" | "https") {
                    return Err(FetchError::BadRedirect(format!(
                        "to a {} URL",
                        next.scheme()
                    )));
                }
                redirects.push(Redirect {
                    status: status.as_u16(),
                    location: next.to_string(),
                    host: next.host_str().unwrap_or_default().to_owned(),
                });
                if redirects.len() > self.max_redirects {
                    return Err(FetchError::TooManyRedirects(self.max_redirects));
                }
                url = next;
                continue;
            }
            let tls = response
                .extensions()
                .get::<reqwest::tls::TlsInfo>()
                .and_then(|info| info.peer_certificate())
                .map(tls_facts);
            let content_type = response
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let mut body = Vec::new();
            let mut body_truncated = false;
            while let Some(chunk) = response.chunk().await.map_err(|e| self.classify(e))? {
                let room = self.max_body_bytes - body.len();
                if chunk.len() > room {
                    body.extend_from_slice(&chunk[..room]);
                    body_truncated = true;
                    break;
                }
                body.extend_from_slice(&chunk);
            }
            return Ok(Fetched {
                final_url: url,
                status: status.as_u16(),
                latency_ms: started.elapsed().as_millis() as u64,
                content_type,
                redirects,
                addresses: addresses.iter().map(SocketAddr::ip).collect(),
                tls,
                body,
                body_truncated,
            });
        }
    }

    /// Every address of the host, each one allowed; an IP literal is checked as written.
    async fn resolve(&self, url: &Url) -> Result<Vec<SocketAddr>, FetchError> {
        let port = url
            .port_or_known_default()
            .ok_or_else(|| FetchError::BadRedirect(format!("{url} has no port")))?;
        let addresses: Vec<SocketAddr> = match url.host() {
            Some(url::Host::Ipv4(ip)) => vec![SocketAddr::new(ip.into(), port)],
            Some(url::Host::Ipv6(ip)) => vec![SocketAddr::new(ip.into(), port)],
            Some(url::Host::Domain(name)) => tokio::net::lookup_host((name, port))
                .await
                .map_err(|e| FetchError::Dns(format!("{name}: {e}")))?
                .collect(),
            None => return Err(FetchError::BadRedirect(format!("{url} has no host"))),
        };
        if addresses.is_empty() {
            return Err(FetchError::Dns(format!("{url}: no addresses")));
        }
        let literal = !matches!(url.host(), Some(url::Host::Domain(_)));
        for address in &addresses {
            self.policy.check(*address).map_err(|why| {
                FetchError::Forbidden(if literal {
                    why
                } else {
                    format!("{} resolves to {why}", url.host_str().unwrap_or_default())
                })
            })?;
        }
        Ok(addresses)
    }
}

impl Fetcher {
    fn classify(&self, error: reqwest::Error) -> FetchError {
        let mut chain = error.to_string();
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            chain.push_str(": ");
            chain.push_str(&cause.to_string());
            source = cause.source();
        }
        if error.is_timeout() {
            FetchError::Timeout(self.timeout.as_millis() as u64)
        } else if chain.contains("certificate") || chain.contains("InvalidCertificate") {
            FetchError::Tls(chain)
        } else {
            FetchError::Connect(chain)
        }
    }
}

fn tls_facts(der: &[u8]) -> TlsFacts {
    let parsed = x509_parser::parse_x509_certificate(der)
        .ok()
        .map(|(_, c)| c);
    TlsFacts {
        valid: true,
        not_after: parsed
            .as_ref()
            .and_then(|c| DateTime::from_timestamp(c.validity().not_after.timestamp(), 0)),
        fingerprint: hex::encode(Sha256::digest(der)),
        issuer: parsed.as_ref().map(|c| c.issuer().to_string()),
    }
}
