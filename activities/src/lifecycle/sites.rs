//! Site verification: a developer proves control of a site by serving the token SIGMA issued,
//! either as `/.well-known/sigma-verification.txt` on the site's origin or as
//! `<meta name="sigma-verification" content="…">` on the page itself. Fetched through the
//! probes' address policy (a site URL is the developer's input). The `site:{id}` workflow checks
//! with retries; each monitor check re-checks a verified site.

use std::sync::LazyLock;

use anyhow::Context;
use regex::Regex;
use serde::{Deserialize, Serialize};
use url::Url;
use uuid::Uuid;

use crate::Deps;
use crate::probe::Fetcher;

pub const WELL_KNOWN_PATH: &str = "/.well-known/sigma-verification.txt";
pub const META_NAME: &str = "sigma-verification";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SiteCheck {
    pub verified: bool,
    /// FILE or META when verified.
    pub method: Option<String>,
    /// Why the token was not found (each place tried).
    pub error: Option<String>,
}

static META_TAG: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#"(?is)<meta\b[^>]*>"#).expect("a valid pattern"));
static ATTRIBUTE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"(?is)\b(name|content)\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'>]+))"#)
        .expect("a valid pattern")
});

/// Whether an HTML page carries `<meta name="sigma-verification" content="{token}">` (either
/// attribute order, either quote).
pub fn page_has_token(html: &str, token: &str) -> bool {
    META_TAG.find_iter(html).any(|tag| {
        let mut name = None;
        let mut content = None;
        for attribute in ATTRIBUTE.captures_iter(tag.as_str()) {
            let value = attribute
                .get(2)
                .or(attribute.get(3))
                .or(attribute.get(4))
                .map(|m| m.as_str().trim().to_owned());
            match attribute[1].to_ascii_lowercase().as_str() {
                "name" => name = value,
                _ => content = value,
            }
        }
        name.is_some_and(|n| n.eq_ignore_ascii_case(META_NAME)) && content.as_deref() == Some(token)
    })
}

/// Looks for the token in the well-known file, then in the page's meta tags.
pub async fn find_token(fetcher: &Fetcher, site: &str, token: &str) -> SiteCheck {
    let Ok(page) = Url::parse(site) else {
        return SiteCheck {
            verified: false,
            method: None,
            error: Some(format!("`{site}` is not a URL")),
        };
    };
    let mut errors = Vec::new();
    let mut file = page.clone();
    file.set_path(WELL_KNOWN_PATH);
    file.set_query(None);
    file.set_fragment(None);
    // The proof must come from the site itself: an answer reached through a redirect to another
    // host (an open redirect on a big site, say) proves nothing about the site.
    let same_host = |answer: &crate::probe::Fetched| {
        answer.final_url.host_str() == page.host_str()
            && answer.final_url.port_or_known_default() == page.port_or_known_default()
    };
    match fetcher.fetch(reqwest::Method::GET, &file, &[]).await {
        Ok(answer) if answer.status == 200 && !same_host(&answer) => errors.push(format!(
            "{file} redirects to {}, another host",
            answer.final_url
        )),
        Ok(answer) if answer.status == 200 => {
            let text = String::from_utf8_lossy(&answer.body);
            if text.lines().any(|line| line.trim() == token) {
                return verified("FILE");
            }
            errors.push(format!("{file} does not hold the token"));
        }
        Ok(answer) => errors.push(format!("{file} answered {}", answer.status)),
        Err(e) => errors.push(format!("{file}: {e}")),
    }
    match fetcher.fetch(reqwest::Method::GET, &page, &[]).await {
        Ok(answer) if answer.status == 200 && !same_host(&answer) => errors.push(format!(
            "{page} redirects to {}, another host",
            answer.final_url
        )),
        Ok(answer) if answer.status == 200 => {
            if page_has_token(&String::from_utf8_lossy(&answer.body), token) {
                return verified("META");
            }
            errors.push(format!(
                "{page} has no matching <meta name=\"{META_NAME}\"> tag"
            ));
        }
        Ok(answer) => errors.push(format!("{page} answered {}", answer.status)),
        Err(e) => errors.push(format!("{page}: {e}")),
    }
    SiteCheck {
        verified: false,
        method: None,
        error: Some(errors.join("; ")),
    }
}

fn verified(method: &str) -> SiteCheck {
    SiteCheck {
        verified: true,
        method: Some(method.into()),
        error: None,
    }
}

/// One check of a verification request, recorded: VERIFIED when the token is found; otherwise
/// the error is kept and the status left for the workflow (it retries, then fails it).
pub(crate) async fn check(deps: &Deps, site_id: &str) -> anyhow::Result<SiteCheck> {
    let site_id = Uuid::parse_str(site_id).context("Bad site id")?;
    let site = sqlx::query!(
        "select url, token from site_verification where site_id = $1",
        site_id
    )
    .fetch_one(&deps.db)
    .await
    .context("Failed to load the site verification")?;
    let result = find_token(deps.prober.fetcher(), &site.url, &site.token).await;
    sqlx::query!(
        r#"update site_verification set checked_at = now(), last_error = $2,
               status = case when $3 then 'VERIFIED' else status end,
               method = coalesce($4, method),
               verified_at = case when $3 then coalesce(verified_at, now()) else verified_at end
           where site_id = $1"#,
        site_id,
        result.error,
        result.verified,
        result.method,
    )
    .execute(&deps.db)
    .await
    .context("Failed to record the site check")?;
    Ok(result)
}

/// Every attempt failed: the request ends FAILED with the last reason.
pub(crate) async fn fail(deps: &Deps, site_id: &str) -> anyhow::Result<()> {
    let site_id = Uuid::parse_str(site_id).context("Bad site id")?;
    sqlx::query!(
        "update site_verification set status = 'FAILED' where site_id = $1 and status = 'CHECKING'",
        site_id
    )
    .execute(&deps.db)
    .await
    .context("Failed to end the site verification")?;
    Ok(())
}

/// A monitor's re-check of a developer's site proof: VERIFIED stays or becomes LOST (and a lost
/// one found again is VERIFIED). Pending or failed requests are left to their own workflow.
pub(crate) async fn recheck(
    deps: &Deps,
    developer_id: Uuid,
    url: &str,
) -> anyhow::Result<Option<String>> {
    let Some(site) = sqlx::query!(
        r#"select site_id, token, status from site_verification
           where developer_id = $1 and url = $2 and status in ('VERIFIED', 'LOST')"#,
        developer_id,
        url
    )
    .fetch_optional(&deps.db)
    .await
    .context("Failed to load the site verification")?
    else {
        return Ok(None);
    };
    let result = find_token(deps.prober.fetcher(), url, &site.token).await;
    sqlx::query!(
        r#"update site_verification set checked_at = now(), last_error = $2,
               status = case when $3 then 'VERIFIED' else 'LOST' end, method = coalesce($4, method)
           where site_id = $1 and status in ('VERIFIED', 'LOST')"#,
        site.site_id,
        result.error,
        result.verified,
        result.method,
    )
    .execute(&deps.db)
    .await
    .context("Failed to record the site re-check")?;
    Ok(Some(if result.verified {
        format!("site {url} still verified")
    } else {
        format!(
            "site {url} no longer proves control: {}",
            result.error.unwrap_or_default()
        )
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_meta_tag_is_found_in_any_spelling_and_only_with_the_token() {
        for html in [
            r#"<html><head><meta name="sigma-verification" content="tok-1"></head></html>"#,
            r#"<META CONTENT='tok-1' NAME='Sigma-Verification' />"#,
            "<meta\n  content=tok-1\n  name=sigma-verification>",
        ] {
            assert!(page_has_token(html, "tok-1"), "{html}");
        }
        for html in [
            r#"<meta name="sigma-verification" content="tok-2">"#,
            r#"<meta name="description" content="tok-1">"#,
            r#"<p>name="sigma-verification" content="tok-1"</p>"#,
            "",
        ] {
            assert!(!page_has_token(html, "tok-1"), "{html}");
        }
    }
}
