//! Model-tier sync: asks each validator provider's OpenAI-compatible `GET /models` what it
//! serves, records the catalog (tier, family, prices), pauses validators whose model vanished,
//! resumes those it paused when the model returns, and refreshes the family and prices that panel
//! selection and the usage ledger read. A provider that does not answer changes nothing about its
//! validators (an outage is the council's replacement logic's business); it is recorded, and the
//! step fails so Temporal retries it and the Web UI shows it.

use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sigma_shared::config::ModelTier;

use crate::Deps;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelSyncReport {
    pub providers: u32,
    pub models_listed: u32,
    /// Validators paused because their model is no longer listed.
    pub paused: Vec<String>,
    /// Validators this sync had paused whose model is listed again.
    pub resumed: Vec<String>,
}

/// One model as a provider lists it, with what the configuration adds.
#[derive(Clone, Debug, PartialEq)]
struct Listed {
    id: String,
    family: Option<String>,
    tier: String,
    price_in: Option<f64>,
    price_out: Option<f64>,
    price_source: Option<&'static str>,
}

/// Reads an OpenAI-style model list (`{"data": [{"id", "owned_by", "pricing"?}]}`); prices per
/// token (OpenRouter's `pricing.prompt` and `pricing.completion`) become prices per million.
fn parse(body: &Value, tiers: &[ModelTier]) -> anyhow::Result<Vec<Listed>> {
    let data = body["data"]
        .as_array()
        .context("the answer has no `data` list of models")?;
    Ok(data
        .iter()
        .filter_map(|m| {
            let id = m["id"].as_str()?.to_owned();
            let bare = id.rsplit('/').next().unwrap_or(&id);
            let configured = tiers.iter().find(|t| bare.starts_with(&t.prefix));
            let per_million = |v: &Value| {
                v.as_str()
                    .and_then(|s| s.parse::<f64>().ok())
                    .or_else(|| v.as_f64())
                    .filter(|p| p.is_finite() && *p >= 0.0)
                    .map(|p| p * 1_000_000.0)
            };
            let (provider_in, provider_out) = (
                per_million(&m["pricing"]["prompt"]),
                per_million(&m["pricing"]["completion"]),
            );
            let (price_in, price_out, price_source) = match (provider_in, provider_out) {
                (Some(i), Some(o)) => (Some(i), Some(o), Some("provider")),
                _ => match configured {
                    Some(t) if t.price_in_per_mtok.is_some() || t.price_out_per_mtok.is_some() => {
                        (t.price_in_per_mtok, t.price_out_per_mtok, Some("config"))
                    }
                    _ => (None, None, None),
                },
            };
            // The family: configured, else the vendor part of a routed id (`anthropic/…`).
            let family = configured
                .map(|t| t.family.clone())
                .or_else(|| id.split_once('/').map(|(vendor, _)| vendor.to_owned()));
            Some(Listed {
                tier: configured
                    .map(|t| t.tier.clone())
                    .unwrap_or_else(|| "standard".into()),
                family,
                price_in,
                price_out,
                price_source,
                id,
            })
        })
        .collect())
}

async fn list(
    deps: &Deps,
    provider_url: &str,
    api_key_env: Option<&str>,
) -> anyhow::Result<Vec<Listed>> {
    let url = format!("{}/models", provider_url.trim_end_matches('/'));
    let mut request = deps.http.get(&url).timeout(Duration::from_secs(
        deps.settings.ops.model_sync_timeout_secs,
    ));
    if let Some(key) = api_key_env.and_then(|name| std::env::var(name).ok()) {
        request = request.bearer_auth(key);
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("GET {url} failed"))?;
    let status = response.status();
    anyhow::ensure!(status.is_success(), "GET {url} answered {status}");
    let body: Value = response
        .json()
        .await
        .with_context(|| format!("GET {url} did not answer JSON"))?;
    // A partial page would read as models withdrawn: refuse it rather than pause on it.
    anyhow::ensure!(
        body["has_more"] != Value::Bool(true),
        "GET {url} answered one page of a longer list; paginated model lists are not read"
    );
    let listed = parse(&body, &deps.settings.ops.model_tiers)?;
    // An empty list is a broken provider, not every model withdrawn at once.
    anyhow::ensure!(!listed.is_empty(), "GET {url} listed no models");
    Ok(listed)
}

#[tracing::instrument(name = "model_sync", skip_all)]
pub(crate) async fn sync(deps: &Deps) -> anyhow::Result<ModelSyncReport> {
    let providers = sqlx::query!(
        r#"select provider_url as "provider_url!", max(api_key_env) as api_key_env
           from validator where status <> 'RETIRED' group by provider_url order by provider_url"#
    )
    .fetch_all(&deps.db)
    .await
    .context("Failed to list validator providers")?;
    let mut report = ModelSyncReport::default();
    let mut failures = Vec::new();
    for provider in providers {
        report.providers += 1;
        let url = provider.provider_url;
        let listed = match list(deps, &url, provider.api_key_env.as_deref()).await {
            Ok(listed) => listed,
            Err(e) => {
                let error = format!("{e:#}");
                sqlx::query!(
                    r#"insert into model_provider_sync (provider_url, ok, error) values ($1, false, $2)
                       on conflict (provider_url) do update set ok = false, error = $2, synced_at = now()"#,
                    url,
                    error,
                )
                .execute(&deps.db)
                .await?;
                tracing::warn!(provider = %url, %error, "model list unavailable");
                failures.push(error);
                continue;
            }
        };
        report.models_listed += listed.len() as u32;
        let ids: Vec<String> = listed.iter().map(|m| m.id.clone()).collect();
        let mut tx = deps.db.begin().await?;
        for m in &listed {
            sqlx::query!(
                r#"insert into model_catalog (provider_url, model_id, family, tier, price_in_per_mtok, price_out_per_mtok,
                       price_source, available, last_seen_at)
                   values ($1, $2, $3, $4, $5, $6, $7, true, now())
                   on conflict (provider_url, model_id) do update set family = excluded.family, tier = excluded.tier,
                       price_in_per_mtok = excluded.price_in_per_mtok, price_out_per_mtok = excluded.price_out_per_mtok,
                       price_source = excluded.price_source, available = true, last_seen_at = now(), synced_at = now()"#,
                url,
                m.id,
                m.family,
                m.tier,
                m.price_in,
                m.price_out,
                m.price_source,
            )
            .execute(&mut *tx)
            .await
            .context("Failed to record a model")?;
        }
        sqlx::query!(
            r#"update model_catalog set available = false, synced_at = now()
               where provider_url = $1 and model_id <> all($2) and available"#,
            url,
            &ids,
        )
        .execute(&mut *tx)
        .await?;
        let paused = sqlx::query_scalar!(
            r#"update validator set status = 'PAUSED', paused_by = 'model-sync',
                   paused_reason = 'model ' || model || ' is no longer listed by its provider'
               where provider_url = $1 and status = 'ACTIVE' and model <> all($2)
               returning validator_id"#,
            url,
            &ids,
        )
        .fetch_all(&mut *tx)
        .await
        .context("Failed to pause validators")?;
        let resumed = sqlx::query_scalar!(
            r#"update validator set status = 'ACTIVE', paused_by = null, paused_reason = null
               where provider_url = $1 and status = 'PAUSED' and paused_by = 'model-sync' and model = any($2)
               returning validator_id"#,
            url,
            &ids,
        )
        .fetch_all(&mut *tx)
        .await
        .context("Failed to resume validators")?;
        // Panel diversity and the usage ledger read these from the validator row.
        sqlx::query!(
            r#"update validator v set
                   -- An operator's family stays; the catalog fills a missing one.
                   model_family = coalesce(v.model_family, c.family),
                   price_in_per_mtok = coalesce(c.price_in_per_mtok, v.price_in_per_mtok),
                   price_out_per_mtok = coalesce(c.price_out_per_mtok, v.price_out_per_mtok)
               from model_catalog c
               where c.provider_url = v.provider_url and c.model_id = v.model and v.provider_url = $1
                 and (v.model_family is distinct from coalesce(v.model_family, c.family)
                   or v.price_in_per_mtok is distinct from coalesce(c.price_in_per_mtok, v.price_in_per_mtok)
                   or v.price_out_per_mtok is distinct from coalesce(c.price_out_per_mtok, v.price_out_per_mtok))"#,
            url,
        )
        .execute(&mut *tx)
        .await
        .context("Failed to refresh validator families and prices")?;
        sqlx::query!(
            r#"insert into model_provider_sync (provider_url, ok, models_listed) values ($1, true, $2)
               on conflict (provider_url) do update set ok = true, error = null, models_listed = $2, synced_at = now()"#,
            url,
            listed.len() as i32,
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await.context("Failed to commit the sync")?;
        if !paused.is_empty() || !resumed.is_empty() {
            tracing::info!(provider = %url, ?paused, ?resumed, "validators follow their models");
        }
        report.paused.extend(paused);
        report.resumed.extend(resumed);
    }
    anyhow::ensure!(
        failures.is_empty(),
        "{} of {} providers did not list their models: {}",
        failures.len(),
        report.providers,
        failures.join("; ")
    );
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn provider_prices_win_over_configured_ones_and_families_come_from_config_or_vendor() {
        let tiers = vec![ModelTier {
            prefix: "claude-".into(),
            family: "claude".into(),
            tier: "premium".into(),
            price_in_per_mtok: Some(3.0),
            price_out_per_mtok: Some(15.0),
        }];
        let body = json!({"object": "list", "data": [
            {"id": "anthropic/claude-sonnet-4", "pricing": {"prompt": "0.000003", "completion": "0.000015"}},
            {"id": "claude-haiku"},
            {"id": "meta-llama/llama-3-8b"},
            {"id": "smollm2"},
            {"object": "model"},
        ]});
        let listed = parse(&body, &tiers).unwrap();
        assert_eq!(listed.len(), 4);
        assert_eq!(listed[0].family.as_deref(), Some("claude"));
        assert_eq!(listed[0].price_source, Some("provider"));
        assert!((listed[0].price_in.unwrap() - 3.0).abs() < 1e-9);
        assert_eq!(listed[1].tier, "premium");
        assert_eq!(listed[1].price_source, Some("config"));
        assert_eq!(listed[2].family.as_deref(), Some("meta-llama"));
        assert_eq!(listed[2].tier, "standard");
        assert_eq!(
            (listed[3].family.as_deref(), listed[3].price_in),
            (None, None)
        );
        assert!(parse(&json!({"error": "nope"}), &tiers).is_err());
    }
}
