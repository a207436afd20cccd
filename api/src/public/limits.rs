//! Per-client rate limits of the public plane (GCRA token buckets keyed by client IP).

use std::net::IpAddr;
use std::num::NonZeroU32;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use sigma_shared::config::{PortalSettings, PublicSettings};

use crate::AppState;
use crate::core::client_ip::ClientIp;
use crate::error::ApiError;

pub struct Limits {
    reads: DefaultKeyedRateLimiter<IpAddr>,
    flags: DefaultKeyedRateLimiter<IpAddr>,
    /// Email-login starts and verifications, and console logins, per client IP.
    logins: DefaultKeyedRateLimiter<IpAddr>,
    console_logins: DefaultKeyedRateLimiter<IpAddr>,
    vouchers: DefaultKeyedRateLimiter<IpAddr>,
    pub(crate) trust_forwarded_for: bool,
}

fn at_least_one(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n.max(1)).expect("at least one")
}

impl Limits {
    pub fn new(settings: &PublicSettings, portal: &PortalSettings) -> Self {
        let hourly = |n: u32| Quota::per_hour(at_least_one(n)).allow_burst(at_least_one(n));
        let reads = Quota::per_minute(at_least_one(settings.reads_per_minute))
            .allow_burst(at_least_one(settings.read_burst));
        let flags = Quota::per_hour(at_least_one(settings.flags_per_hour))
            .allow_burst(at_least_one(settings.flags_per_hour));
        Self {
            reads: DefaultKeyedRateLimiter::keyed(reads),
            flags: DefaultKeyedRateLimiter::keyed(flags),
            logins: DefaultKeyedRateLimiter::keyed(hourly(portal.logins_per_client_per_hour)),
            console_logins: DefaultKeyedRateLimiter::keyed(hourly(portal.console_logins_per_hour)),
            vouchers: DefaultKeyedRateLimiter::keyed(hourly(portal.voucher_redemptions_per_hour)),
            trust_forwarded_for: settings.trust_forwarded_for,
        }
    }

    /// Forgets clients whose buckets are full again, so the maps stay small.
    pub fn shrink(&self) {
        self.reads.retain_recent();
        self.flags.retain_recent();
        self.logins.retain_recent();
        self.console_logins.retain_recent();
        self.vouchers.retain_recent();
    }

    pub fn check_voucher(&self, client: IpAddr) -> Result<(), ApiError> {
        check(&self.vouchers, client, "voucher redemptions")
    }

    pub fn check_login(&self, client: IpAddr) -> Result<(), ApiError> {
        check(&self.logins, client, "login attempts")
    }

    pub fn check_console_login(&self, client: IpAddr) -> Result<(), ApiError> {
        check(&self.console_logins, client, "console login attempts")
    }

    pub fn check_flag(&self, client: IpAddr) -> Result<(), ApiError> {
        check(&self.flags, client, "flags")
    }
}

fn check(
    limiter: &DefaultKeyedRateLimiter<IpAddr>,
    client: IpAddr,
    what: &str,
) -> Result<(), ApiError> {
    limiter.check_key(&client).map_err(|not_until| {
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        ApiError::RateLimited {
            detail: format!(
                "too many {what} from this client; retry in {} s",
                wait.as_secs() + 1
            ),
            retry_after_secs: wait.as_secs() + 1,
        }
    })
}

/// Paths of the public plane (the authenticated planes have limits of their own).
fn is_public(path: &str) -> bool {
    path.starts_with("/api/v1/public/")
        || path.starts_with("/.well-known/")
        || path.starts_with("/certificate/")
}

/// Middleware: every public request spends one read token of its client.
pub async fn limit_reads(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if !is_public(request.uri().path()) {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let client = ClientIp::of(&parts, state.public.limits.trust_forwarded_for);
    if let Err(e) = check(&state.public.limits.reads, client.0, "requests") {
        return e.into_response();
    }
    next.run(Request::from_parts(parts, body)).await
}
