//! The public plane's read model: certificates held in a bounded in-memory cache per API process,
//! invalidated by PostgreSQL `NOTIFY sigma_certificate` (a trigger announces every status, flag
//! and issuance change), and view counts gathered in memory and written in one batched statement
//! per interval instead of a write per request.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};
use sqlx::PgPool;
use sqlx::postgres::PgListener;

pub const CHANNEL: &str = "sigma_certificate";

pub use sigma_shared::domain::{OPEN_REPORTS, UNRESOLVED_FLAGS};

/// One certificate as the public plane serves it.
pub struct Certificate {
    pub id: String,
    /// The stored status: APPROVED, SUSPENDED, REVOKED or SUPERSEDED.
    pub stored_status: String,
    pub status_reason: Option<String>,
    pub status_changed_at: Option<DateTime<Utc>>,
    pub superseded_by: Option<String>,
    pub issued_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    /// Escalations: re-audits ordered by an operator, and unresolved flags the monitor raised.
    pub open_flags: i64,
    /// Public reports no operator has escalated or resolved yet.
    pub open_reports: i64,
    pub renewal_due_at: Option<DateTime<Utc>>,
    /// The newest renewal's state (SCHEDULED, UNPAID, IN_PROGRESS, RENEWED, LAPSED, NOT_NEEDED).
    pub renewal_status: Option<String>,
    pub renews: Option<String>,
    pub sealed: Value,
    pub envelope: Option<Value>,
    pub signing_key_id: Option<String>,
    pub payload_hash: String,
    pub hash_algorithm: String,
    pub skill_md_sha256: Option<String>,
    pub bundle_digest: String,
    /// Verify calls counted so far, as last read plus those this process served since.
    pub views: AtomicU64,
    /// Whether the skill reaches the network (category, declared or observed endpoints, network
    /// capability): the inputs of the API disclaimer rule.
    pub reaches_network: bool,
    /// The monitor's state (`None`: nothing about this certificate is monitored).
    pub monitoring: Option<Value>,
    /// The developer's proof of control of the site the draft named, if they asked for one.
    pub site: Option<Value>,
    /// The `verify` members that do not change between calls, serialised once (`"k":v,...`).
    verify_static: String,
}

impl Certificate {
    /// The status a reader sees now: an APPROVED certificate past its expiry reads EXPIRED.
    pub fn status(&self, now: DateTime<Utc>) -> &str {
        match self.expires_at {
            Some(at) if self.stored_status == "APPROVED" && at <= now => "EXPIRED",
            _ => &self.stored_status,
        }
    }

    pub fn valid(&self, now: DateTime<Utc>) -> bool {
        self.status(now) == "APPROVED" && self.open_flags == 0
    }

    pub fn skill_name(&self) -> &str {
        self.sealed["skillName"].as_str().unwrap_or("this skill")
    }

    /// One sentence for people and agents.
    pub fn summary(&self, now: DateTime<Utc>) -> String {
        let name = self.skill_name();
        match self.status(now) {
            "APPROVED" if self.open_flags == 0 && self.open_reports == 0 => {
                format!("{name} is certified: approved by the SIGMA council with no open flags.")
            }
            "APPROVED" if self.open_flags == 0 => format!(
                "{name} is certified: approved by the SIGMA council. {} public report(s) await an \
                 operator's triage; a report alone does not change the certificate.",
                self.open_reports
            ),
            "APPROVED" => format!(
                "{name} was approved, but {} escalated flag(s) are under review (re-audit or monitor); \
                 do not rely on it until they are resolved.",
                self.open_flags
            ),
            "EXPIRED" => format!("The certificate of {name} expired; it needs a renewal."),
            "SUPERSEDED" => format!(
                "This certificate of {name} was superseded by {}; verify that one instead.",
                self.superseded_by
                    .as_deref()
                    .unwrap_or("a newer certificate")
            ),
            other => format!(
                "The certificate of {name} is {other}{}.",
                self.status_reason
                    .as_deref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            ),
        }
    }

    /// What changes after issuance, as the record and `live-status` show it.
    pub fn live_state(&self, now: DateTime<Utc>) -> Map<String, Value> {
        let mut state = Map::new();
        for (key, value) in [
            ("certificateId", json!(self.id)),
            ("status", json!(self.status(now))),
            ("valid", json!(self.valid(now))),
            ("activeFlagCount", json!(self.open_flags)),
            ("openReportCount", json!(self.open_reports)),
            ("statusReason", json!(self.status_reason)),
            ("statusChangedAt", json!(self.status_changed_at)),
            ("supersededBy", json!(self.superseded_by)),
            ("expiresAt", json!(self.expires_at)),
            ("renewalDueAt", json!(self.renewal_due_at)),
            ("renewalStatus", json!(self.renewal_status)),
            ("renews", json!(self.renews)),
            ("views", json!(self.views.load(Ordering::Relaxed))),
            ("monitoring", self.monitoring_state(now)),
            ("site", self.site.clone().unwrap_or(Value::Null)),
        ] {
            state.insert(key.into(), value);
        }
        state
    }

    /// The monitor as a reader sees it now: checks run only while the certificate is valid, so
    /// an ACTIVE monitor of a suspended or expired certificate reads PAUSED.
    pub fn monitoring_state(&self, now: DateTime<Utc>) -> Value {
        let Some(Value::Object(monitor)) = &self.monitoring else {
            return json!({"state": "NOT_APPLICABLE", "checksRemaining": 0});
        };
        let mut monitor = monitor.clone();
        if monitor.get("state") == Some(&json!("ACTIVE")) && self.status(now) != "APPROVED" {
            monitor.insert("state".into(), json!("PAUSED"));
        }
        Value::Object(monitor)
    }

    /// The `verify` body: what changes per call first, then the prepared static members.
    pub fn verify_json(&self, now: DateTime<Utc>, views: u64, disclaimer: Option<&str>) -> String {
        let mut head = Map::new();
        head.insert("valid".into(), json!(self.valid(now)));
        head.insert("status".into(), json!(self.status(now)));
        head.insert("summary".into(), json!(self.summary(now)));
        head.insert("views".into(), json!(views));
        head.insert("monitoring".into(), self.monitoring_state(now));
        if let Some(text) = disclaimer {
            head.insert("apiDisclaimer".into(), json!(text));
        }
        head.insert("checkedAt".into(), json!(now));
        let head = Value::Object(head).to_string();
        let mut body = String::with_capacity(head.len() + self.verify_static.len() + 1);
        body.push_str(&head[..head.len() - 1]);
        body.push(',');
        body.push_str(&self.verify_static);
        body.push('}');
        body
    }

    fn from_row(row: Row) -> Self {
        let sealed = row.sealed;
        let category = sealed["category"].as_str().unwrap_or_default();
        let declared = sealed["endpointReview"]["declaredEndpoints"]
            .as_array()
            .is_some_and(|a| !a.is_empty());
        let observed = sealed["endpointReview"]["observedUrls"]
            .as_array()
            .is_some_and(|a| !a.is_empty());
        let external_calls = sealed["manifest"]["externalCalls"]
            .as_array()
            .is_some_and(|a| !a.is_empty());
        let network = sealed["review"]["capabilities"]["network"] == true;
        let reaches_network =
            category.contains("API") || declared || observed || external_calls || network;
        // Sealed since live probing began; older certificates were never probed.
        let endpoint_status = match sealed["endpointStatus"].as_str() {
            Some(status) => status,
            None if category.contains("API") => "SKIPPED",
            None => "NOT_APPLICABLE",
        };
        let mut members = Map::new();
        let review = &sealed["review"];
        for (key, value) in [
            ("certificateId", json!(row.certificate_id)),
            ("activeFlagCount", json!(row.open_flags)),
            ("openReportCount", json!(row.open_reports)),
            ("securityLevel", review["securityLevel"].clone()),
            ("sandboxRiskLevel", review["sandboxRiskLevel"].clone()),
            ("retainedWarnings", review["retainedWarnings"].clone()),
            ("retainedErrors", review["retainedErrors"].clone()),
            ("skillName", sealed["skillName"].clone()),
            ("skillVersion", sealed["skillVersion"].clone()),
            ("certificateIssuedAt", json!(row.issued_at)),
            ("expiresAt", json!(row.expires_at)),
            ("renewalDueAt", json!(row.renewal_due_at)),
            ("renews", json!(row.renews)),
            ("statusReason", json!(row.status_reason)),
            ("statusChangedAt", json!(row.status_changed_at)),
            ("supersededBy", json!(row.superseded_by)),
            ("roundType", sealed["roundType"].clone()),
            ("endpointStatus", json!(endpoint_status)),
            ("site", row.site.clone().unwrap_or(Value::Null)),
            ("payloadHash", json!(row.payload_hash)),
            ("hashAlgorithm", json!(row.hash_algorithm)),
            ("skillMdSha256", json!(row.skill_md_sha256)),
            ("bundleDigest", json!(row.bundle_digest)),
            (
                "signature",
                json!({"keyId": row.signing_key_id, "envelope": row.envelope}),
            ),
        ] {
            members.insert(key.into(), value);
        }
        // The union with the sealed snapshot: every sealed field the summary does not carry.
        // `status` is left out: the live status, computed per call, is the one that counts.
        if let Some(fields) = sealed.as_object() {
            for (key, value) in fields.iter().filter(|(key, _)| *key != "status") {
                members.entry(key.clone()).or_insert_with(|| value.clone());
            }
        }
        let members = Value::Object(members).to_string();
        let verify_static = members[1..members.len() - 1].to_owned();
        Self {
            id: row.certificate_id,
            stored_status: row.status,
            status_reason: row.status_reason,
            status_changed_at: row.status_changed_at,
            superseded_by: row.superseded_by,
            issued_at: row.issued_at,
            expires_at: row.expires_at,
            open_flags: row.open_flags,
            open_reports: row.open_reports,
            renewal_due_at: row.renewal_due_at,
            renewal_status: row.renewal_status,
            renews: row.renews,
            envelope: row.envelope,
            signing_key_id: row.signing_key_id,
            payload_hash: row.payload_hash,
            hash_algorithm: row.hash_algorithm,
            skill_md_sha256: row.skill_md_sha256,
            bundle_digest: row.bundle_digest,
            views: AtomicU64::new(row.view_count.max(0) as u64),
            reaches_network,
            verify_static,
            sealed,
            monitoring: row.monitoring,
            site: row.site,
        }
    }
}

struct Row {
    certificate_id: String,
    status: String,
    status_reason: Option<String>,
    status_changed_at: Option<DateTime<Utc>>,
    superseded_by: Option<String>,
    issued_at: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
    open_flags: i64,
    open_reports: i64,
    renewal_due_at: Option<DateTime<Utc>>,
    renewal_status: Option<String>,
    renews: Option<String>,
    sealed: Value,
    envelope: Option<Value>,
    signing_key_id: Option<String>,
    payload_hash: String,
    hash_algorithm: String,
    skill_md_sha256: Option<String>,
    bundle_digest: String,
    view_count: i64,
    monitoring: Option<Value>,
    site: Option<Value>,
}

/// Certificates by id (`None` remembers an unknown id, so probing ids does not reach the
/// database each time; issuance announces the id and clears it).
pub struct CertificateCache {
    entries: moka::future::Cache<String, Option<Arc<Certificate>>>,
    /// Bumped by every invalidation; a load that raced one is served but not kept.
    generation: AtomicU64,
    pending_views: Mutex<HashMap<String, u64>>,
    db: PgPool,
}

impl CertificateCache {
    pub fn new(db: PgPool, capacity: u64) -> Self {
        Self {
            entries: moka::future::Cache::builder()
                .max_capacity(capacity)
                // A backstop only: notifications keep entries fresh.
                .time_to_live(Duration::from_secs(600))
                .build(),
            generation: AtomicU64::new(0),
            pending_views: Mutex::new(HashMap::new()),
            db,
        }
    }

    pub async fn get(&self, id: &str) -> anyhow::Result<Option<Arc<Certificate>>> {
        if let Some(hit) = self.entries.get(id).await {
            return Ok(hit);
        }
        let generation = self.generation.load(Ordering::Acquire);
        let loaded = self.load(id).await?.map(Arc::new);
        if self.generation.load(Ordering::Acquire) == generation {
            self.entries.insert(id.to_owned(), loaded.clone()).await;
        }
        Ok(loaded)
    }

    async fn load(&self, id: &str) -> anyhow::Result<Option<Certificate>> {
        let row = sqlx::query_as!(
            Row,
            r#"select c.certificate_id, c.status, c.status_reason, c.status_changed_at, c.superseded_by,
                      c.issued_at, c.expires_at, c.sealed, c.envelope, c.signing_key_id, c.payload_hash,
                      c.hash_algorithm, c.skill_md_sha256, c.bundle_digest,
                      coalesce((select views from certificate_view w where w.certificate_id = c.certificate_id), 0) as "view_count!",
                      c.renewal_due_at, c.renews,
                      (select r.status from renewal r where r.certificate_id = c.certificate_id
                        order by r.due_at desc limit 1) as renewal_status,
                      (select count(*) from certificate_flag f where f.certificate_id = c.certificate_id
                        and (f.status = 'REAUDIT' or (f.raised_by = 'MONITOR' and f.status = any($2)))) as "open_flags!",
                      (select count(*) from certificate_flag f where f.certificate_id = c.certificate_id
                        and f.raised_by = 'PUBLIC' and f.status = any($2)) as "open_reports!",
                      (select jsonb_build_object('state', m.status, 'checks', m.checks,
                              'checksRemaining', m.checks_remaining, 'intervalSecs', m.interval_secs,
                              'checkCount', m.check_count, 'lastCheckAt', m.last_check_at,
                              'lastResult', m.last_result, 'lastFindings', m.last_findings,
                              'nextCheckAt', m.next_check_at,
                              'sourceDrift', jsonb_build_object('state', m.drift_state, 'detail', m.drift_detail,
                                                                'checkedAt', m.drift_checked_at))
                       from monitor m where m.certificate_id = c.certificate_id) as "monitoring?: Value",
                      (select jsonb_build_object('url', v.url, 'status', v.status, 'verified', v.status = 'VERIFIED',
                              'method', v.method, 'checkedAt', v.checked_at, 'verifiedAt', v.verified_at)
                       from site_verification v join submission s
                         on s.developer_id = v.developer_id and s.draft_snapshot ->> 'siteUrl' = v.url
                       where s.submission_id = c.certificate_id) as "site?: Value"
               from certificate c where c.certificate_id = $1"#,
            id,
            &OPEN_REPORTS.map(String::from)[..],
        )
        .fetch_optional(&self.db)
        .await?;
        let pending = self.pending_for(id);
        Ok(row.map(|row| {
            let certificate = Certificate::from_row(row);
            certificate.views.fetch_add(pending, Ordering::Relaxed);
            certificate
        }))
    }

    fn pending_for(&self, id: &str) -> u64 {
        self.pending_views
            .lock()
            .expect("view counter lock")
            .get(id)
            .copied()
            .unwrap_or(0)
    }

    pub async fn invalidate(&self, id: &str) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.entries.invalidate(id).await;
    }

    pub fn invalidate_all(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.entries.invalidate_all();
    }

    /// Counts one verify call and returns the view count including it.
    pub fn count_view(&self, certificate: &Certificate) -> u64 {
        {
            let mut pending = self.pending_views.lock().expect("view counter lock");
            match pending.get_mut(certificate.id.as_str()) {
                Some(n) => *n += 1,
                None => {
                    pending.insert(certificate.id.clone(), 1);
                }
            }
        }
        certificate.views.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Writes the counted views in one statement. On failure they are kept for the next try.
    pub async fn flush_views(&self) -> anyhow::Result<usize> {
        let batch: HashMap<String, u64> =
            std::mem::take(&mut *self.pending_views.lock().expect("view counter lock"));
        if batch.is_empty() {
            return Ok(0);
        }
        let (ids, counts): (Vec<String>, Vec<i64>) =
            batch.iter().map(|(id, n)| (id.clone(), *n as i64)).unzip();
        let result = sqlx::query!(
            r#"insert into certificate_view (certificate_id, views)
               select v.id, v.n from unnest($1::text[], $2::bigint[]) as v(id, n)
               where exists (select 1 from certificate c where c.certificate_id = v.id)
               on conflict (certificate_id) do update set views = certificate_view.views + excluded.views"#,
            &ids,
            &counts,
        )
        .execute(&self.db)
        .await;
        if let Err(e) = result {
            let mut pending = self.pending_views.lock().expect("view counter lock");
            for (id, n) in batch {
                *pending.entry(id).or_default() += n;
            }
            return Err(e.into());
        }
        Ok(ids.len())
    }

    /// Follows `sigma_certificate` notifications until `stop`. Whenever the connection was lost
    /// (notifications may have been missed) everything is invalidated.
    pub async fn follow_changes(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            let mut listener = match PgListener::connect_with(&self.db).await {
                Ok(listener) => listener,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for certificate changes; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        _ = stop.changed() => return,
                    }
                }
            };
            if let Err(e) = listener.listen(CHANNEL).await {
                tracing::warn!(error = %e, "LISTEN failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            // Whatever changed before we listened is reloaded on the next read.
            self.invalidate_all();
            loop {
                tokio::select! {
                    message = listener.try_recv() => match message {
                        Ok(Some(notification)) => self.invalidate(notification.payload()).await,
                        // The connection dropped and will be re-established by the next call.
                        Ok(None) => {
                            tracing::warn!("certificate change feed reconnecting");
                            self.invalidate_all();
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "certificate change feed failed; reconnecting");
                            break;
                        }
                    },
                    _ = stop.changed() => return,
                }
            }
        }
    }

    /// Flushes views every `interval` until `stop`, then once more.
    pub async fn flush_periodically(
        self: Arc<Self>,
        interval: Duration,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut ticker = tokio::time::interval(interval);
        loop {
            let stopping = tokio::select! {
                _ = ticker.tick() => false,
                _ = stop.changed() => true,
            };
            if let Err(e) = self.flush_views().await {
                tracing::warn!(
                    error = format!("{e:#}"),
                    "cannot write view counts; kept for the next flush"
                );
            }
            if stopping {
                return;
            }
        }
    }
}
