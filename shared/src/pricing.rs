//! Quotes from the pricing catalog: a pure function of the catalog, the draft's measured facts and
//! the clock, so a stored price snapshot can always be recomputed and explained line by line.
//! Amounts are credits: 1 USD = 100 credits, one credit is one US cent.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub const CREDITS_PER_USD: i64 = 100;

/// `1234` credits → `"12.34"`.
pub fn usd(credits: i64) -> String {
    let sign = if credits < 0 { "-" } else { "" };
    let c = credits.unsigned_abs();
    format!("{sign}{}.{:02}", c / 100, c % 100)
}

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
pub enum ComplexityTier {
    #[serde(rename = "standard")]
    Standard,
    #[serde(rename = "complex")]
    Complex,
    #[serde(rename = "high-complex")]
    HighComplex,
}

impl ComplexityTier {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Standard => "standard",
            Self::Complex => "complex",
            Self::HighComplex => "high-complex",
        }
    }
}

/// An HTTP endpoint a skill declares it calls.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeclaredEndpoint {
    /// An absolute `https://` (or `http://`) URL.
    #[schema(
        max_length = 2000,
        pattern = "^\\s*https?://[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*(:[0-9]{1,5})?(/[^\\s\\u0000]*)?\\s*$"
    )]
    pub url: String,
    /// GET, HEAD, OPTIONS, POST, PUT, PATCH or DELETE (any case).
    #[schema(
        pattern = "^\\s*(GET|HEAD|OPTIONS|POST|PUT|PATCH|DELETE|get|head|options|post|put|patch|delete)\\s*$"
    )]
    pub method: String,
    /// Whether the call carries credentials (bearer token, API key, signed request).
    #[serde(default)]
    pub authenticated: bool,
}

impl DeclaredEndpoint {
    pub const METHODS: [&'static str; 7] =
        ["GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE"];

    /// Normalises the method and checks the URL; the error says what is wrong.
    pub fn validate(mut self) -> Result<Self, String> {
        self.method = self.method.trim().to_ascii_uppercase();
        if !Self::METHODS.contains(&self.method.as_str()) {
            return Err(format!("`{}` is not an HTTP method", self.method));
        }
        let url = url::Url::parse(self.url.trim())
            .map_err(|e| format!("`{}` is not an absolute URL: {e}", self.url))?;
        if !matches!(url.scheme(), "https" | "http") || url.host_str().is_none() {
            return Err(format!("`{}` must be an http(s) URL with a host", self.url));
        }
        self.url = url.to_string();
        Ok(self)
    }

    pub fn mutating(&self) -> bool {
        matches!(self.method.as_str(), "POST" | "PUT" | "PATCH" | "DELETE")
    }
}

/// What the dry-run measured about a draft; the inputs of a quote.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QuoteFacts {
    pub file_count: u32,
    pub total_bytes: u64,
    pub language_count: u32,
    /// `registry:name` of each declared dependency.
    pub packages: Vec<String>,
    pub endpoints: Vec<DeclaredEndpoint>,
}

impl QuoteFacts {
    /// The code-footprint tier (documented names: standard, complex, high-complex).
    pub fn complexity_tier(&self) -> ComplexityTier {
        let f = self;
        if f.file_count > 30
            || f.total_bytes > 256 * 1024
            || f.packages.len() > 20
            || f.language_count >= 3
            || f.endpoints.len() > 10
        {
            ComplexityTier::HighComplex
        } else if f.file_count > 10
            || f.total_bytes > 64 * 1024
            || f.packages.len() > 5
            || f.language_count == 2
            || f.endpoints.len() > 3
        {
            ComplexityTier::Complex
        } else {
            ComplexityTier::Standard
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RuleKind {
    ComplexityTier,
    Endpoint,
    AuthenticatedEndpoint,
    MutatingEndpoint,
    Package,
    /// The price of renewing a certificate: the category's base price scaled by
    /// `multiplier_bps`, plus `amount_credits`. Not part of a submission's quote.
    Renewal,
}

impl std::str::FromStr for RuleKind {
    type Err = String;
    fn from_str(raw: &str) -> Result<Self, String> {
        serde_json::from_value(serde_json::Value::String(raw.to_owned()))
            .map_err(|_| format!("unknown rule kind `{raw}`"))
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    pub rule_id: Uuid,
    pub kind: RuleKind,
    pub tier: Option<ComplexityTier>,
    pub amount_credits: i64,
    pub multiplier_bps: Option<i32>,
    pub label: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CampaignKind {
    FirstN,
    Window,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Campaign {
    pub campaign_id: Uuid,
    pub name: String,
    pub kind: CampaignKind,
    pub discount_bps: i32,
    pub limit_n: Option<i32>,
    pub used_n: i32,
    pub starts_at: Option<DateTime<Utc>>,
    pub ends_at: Option<DateTime<Utc>>,
}

impl Campaign {
    /// Running now and, for first-N, not yet used up. The counter itself is claimed at submit.
    pub fn available(&self, now: DateTime<Utc>) -> bool {
        self.starts_at.is_none_or(|s| s <= now)
            && self.ends_at.is_none_or(|e| now < e)
            && self.limit_n.is_none_or(|n| self.used_n < n)
    }
}

/// The catalog entries that apply to one category.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Catalog {
    pub category: String,
    pub base_credits: i64,
    pub rules: Vec<Rule>,
    pub campaigns: Vec<Campaign>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LineKind {
    Base,
    Rule,
    Package,
    Campaign,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LineItem {
    pub kind: LineKind,
    pub label: String,
    pub quantity: u32,
    /// Negative for discounts.
    pub amount_credits: i64,
    pub amount_usd: String,
}

impl LineItem {
    fn new(kind: LineKind, label: impl Into<String>, quantity: u32, amount_credits: i64) -> Self {
        Self {
            kind,
            label: label.into(),
            quantity,
            amount_credits,
            amount_usd: usd(amount_credits),
        }
    }
}

/// A computed price: what the quote shows and the submission keeps as its snapshot.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Priced {
    pub category: String,
    pub complexity_tier: ComplexityTier,
    pub line_items: Vec<LineItem>,
    pub total_credits: i64,
    pub campaign_id: Option<Uuid>,
    /// What already-certified packages would have cost.
    pub registry_savings_credits: i64,
}

/// What renewing a certificate of `catalog`'s category costs: the category's own RENEWAL line if
/// it has one, else the catalog-wide one (rules are listed category first), else nothing.
pub fn renewal_price(catalog: &Catalog) -> Option<(i64, String)> {
    let rule = catalog.rules.iter().find(|r| r.kind == RuleKind::Renewal)?;
    let scaled = rule
        .multiplier_bps
        .map(|bps| catalog.base_credits.saturating_mul(i64::from(bps)) / 10_000)
        .unwrap_or(0);
    Some((
        scaled.saturating_add(rule.amount_credits),
        rule.label.clone(),
    ))
}

/// Prices `facts` against `catalog` at `now` (saturating: no catalog can overflow a quote). `certified` holds the packages the registry already
/// certified (free for everyone).
pub fn price(
    catalog: &Catalog,
    facts: &QuoteFacts,
    certified: &BTreeSet<String>,
    now: DateTime<Utc>,
) -> Priced {
    let tier = facts.complexity_tier();
    let mut items = vec![LineItem::new(
        LineKind::Base,
        format!("{} base price", catalog.category),
        1,
        catalog.base_credits,
    )];
    let count = |pred: &dyn Fn(&DeclaredEndpoint) -> bool| {
        facts.endpoints.iter().filter(|e| pred(e)).count() as u32
    };
    let mut savings = 0;
    for rule in &catalog.rules {
        match rule.kind {
            RuleKind::ComplexityTier => {
                if rule.tier != Some(tier) {
                    continue;
                }
                let scaled = rule
                    .multiplier_bps
                    .map(|bps| {
                        catalog.base_credits.saturating_mul(i64::from(bps) - 10_000) / 10_000
                    })
                    .unwrap_or(0);
                let amount = scaled.saturating_add(rule.amount_credits);
                if amount != 0 {
                    items.push(LineItem::new(LineKind::Rule, &rule.label, 1, amount));
                }
            }
            RuleKind::Endpoint | RuleKind::AuthenticatedEndpoint | RuleKind::MutatingEndpoint => {
                let n = match rule.kind {
                    RuleKind::Endpoint => count(&|_| true),
                    RuleKind::AuthenticatedEndpoint => count(&|e| e.authenticated),
                    _ => count(&DeclaredEndpoint::mutating),
                };
                if n > 0 && rule.amount_credits > 0 {
                    items.push(LineItem::new(
                        LineKind::Rule,
                        &rule.label,
                        n,
                        rule.amount_credits.saturating_mul(i64::from(n)),
                    ));
                }
            }
            RuleKind::Renewal => {}
            RuleKind::Package => {
                let unique: BTreeSet<&String> = facts.packages.iter().collect();
                let (known, unknown): (Vec<&String>, Vec<&String>) =
                    unique.into_iter().partition(|p| certified.contains(*p));
                savings += rule.amount_credits.saturating_mul(known.len() as i64);
                let n = unknown.len() as u32;
                if n > 0 && rule.amount_credits > 0 {
                    items.push(LineItem::new(
                        LineKind::Package,
                        &rule.label,
                        n,
                        rule.amount_credits.saturating_mul(i64::from(n)),
                    ));
                }
            }
        }
    }
    let subtotal: i64 = items
        .iter()
        .fold(0i64, |sum, i| sum.saturating_add(i.amount_credits));
    // The best running campaign; ties go to the one that ends first (it is the scarcer).
    let campaign = catalog
        .campaigns
        .iter()
        .filter(|c| c.available(now))
        .max_by_key(|c| {
            (
                c.discount_bps,
                std::cmp::Reverse(c.ends_at.unwrap_or(DateTime::<Utc>::MAX_UTC)),
            )
        });
    let mut total = subtotal;
    if let Some(c) = campaign {
        let discount = (i128::from(subtotal) * i128::from(c.discount_bps) / 10_000) as i64;
        if discount > 0 {
            items.push(LineItem::new(LineKind::Campaign, &c.name, 1, -discount));
            total -= discount;
        }
    }
    Priced {
        category: catalog.category.clone(),
        complexity_tier: tier,
        line_items: items,
        total_credits: total.max(0),
        campaign_id: campaign.map(|c| c.campaign_id),
        registry_savings_credits: savings,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(kind: RuleKind, tier: Option<ComplexityTier>, amount: i64, bps: Option<i32>) -> Rule {
        Rule {
            rule_id: Uuid::new_v4(),
            kind,
            tier,
            amount_credits: amount,
            multiplier_bps: bps,
            label: format!("{kind:?}"),
        }
    }

    fn catalog() -> Catalog {
        Catalog {
            category: "SKILL_API".into(),
            base_credits: 1500,
            rules: vec![
                rule(
                    RuleKind::ComplexityTier,
                    Some(ComplexityTier::Standard),
                    0,
                    Some(10_000),
                ),
                rule(
                    RuleKind::ComplexityTier,
                    Some(ComplexityTier::Complex),
                    0,
                    Some(15_000),
                ),
                rule(RuleKind::Endpoint, None, 100, None),
                rule(RuleKind::AuthenticatedEndpoint, None, 50, None),
                rule(RuleKind::MutatingEndpoint, None, 100, None),
                rule(RuleKind::Package, None, 25, None),
            ],
            campaigns: vec![],
        }
    }

    fn endpoint(method: &str, authenticated: bool) -> DeclaredEndpoint {
        DeclaredEndpoint {
            url: "https://api.example.org/v1".into(),
            method: method.into(),
            authenticated,
        }
    }

    #[test]
    fn itemises_endpoints_packages_and_tier() {
        let facts = QuoteFacts {
            file_count: 12,
            total_bytes: 1000,
            language_count: 1,
            packages: vec![
                "pypi:requests".into(),
                "pypi:httpx".into(),
                "pypi:requests".into(),
            ],
            endpoints: vec![
                endpoint("GET", true),
                endpoint("POST", true),
                endpoint("GET", false),
            ],
        };
        let certified = BTreeSet::from(["pypi:httpx".to_owned()]);
        let p = price(&catalog(), &facts, &certified, Utc::now());
        assert_eq!(p.complexity_tier, ComplexityTier::Complex);
        // 1500 base + 750 complex + 3×100 endpoints + 2×50 authenticated + 1×100 mutating + 1×25 package.
        assert_eq!(p.total_credits, 1500 + 750 + 300 + 100 + 100 + 25);
        assert_eq!(p.registry_savings_credits, 25);
        assert_eq!(
            p.line_items.iter().map(|i| i.amount_credits).sum::<i64>(),
            p.total_credits
        );
        assert!(
            p.line_items
                .iter()
                .any(|i| i.kind == LineKind::Package && i.quantity == 1)
        );
    }

    #[test]
    fn best_available_campaign_applies() {
        let now = Utc::now();
        let mut c = catalog();
        let campaign = |bps, limit: Option<i32>, used, ends: Option<DateTime<Utc>>| Campaign {
            campaign_id: Uuid::new_v4(),
            name: format!("{bps}"),
            kind: if limit.is_some() {
                CampaignKind::FirstN
            } else {
                CampaignKind::Window
            },
            discount_bps: bps,
            limit_n: limit,
            used_n: used,
            starts_at: None,
            ends_at: ends,
        };
        let used_up = campaign(10_000, Some(10), 10, None);
        let expired = campaign(9_000, None, 0, Some(now - chrono::Duration::hours(1)));
        let running = campaign(5_000, Some(100), 3, None);
        c.campaigns = vec![used_up, expired, running.clone()];
        let p = price(&c, &QuoteFacts::default(), &BTreeSet::new(), now);
        assert_eq!(p.campaign_id, Some(running.campaign_id));
        assert_eq!(p.total_credits, 750);
    }

    #[test]
    fn usd_formats_cents() {
        assert_eq!(usd(900), "9.00");
        assert_eq!(usd(1234), "12.34");
        assert_eq!(usd(5), "0.05");
        assert_eq!(usd(-250), "-2.50");
    }

    #[test]
    fn endpoints_are_validated() {
        assert!(endpoint("get", false).validate().is_ok());
        assert!(endpoint("FETCH", false).validate().is_err());
        let bad = DeclaredEndpoint {
            url: "ftp://x".into(),
            method: "GET".into(),
            authenticated: false,
        };
        assert!(bad.validate().is_err());
    }
}
