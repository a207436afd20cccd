//! Public git repositories pinned to a ref, fetched as one archive over HTTP (GitHub's codeload
//! layout: `{base}/{owner}/{repo}/tar.gz/{ref}`), streamed under a size cap, stored in blob
//! storage like an upload and recorded on the submission so a retried activity reuses the bytes.

use anyhow::Context;
use futures::StreamExt;
use sigma_scanner::report::Source;
use sigma_shared::blob::keys;
use sigma_shared::domain::Sha256Hex;

use super::SandboxActivities;
use crate::types::GitSource;

impl SandboxActivities {
    pub(super) async fn git_bundle(
        &self,
        submission_id: &str,
        git: &GitSource,
    ) -> anyhow::Result<Result<(bytes::Bytes, Source), String>> {
        let url = archive_url(&self.deps.settings.sandbox.git_archive_base_url, git);
        // A retried activity reuses what an earlier attempt stored: the reviewed bytes never change.
        let stored = sqlx::query_scalar!(
            "select bundle_key from submission where submission_id = $1",
            submission_id
        )
        .fetch_one(&self.deps.db)
        .await
        .context("Failed to load the submission")?;
        let bundle = if !stored.is_empty() {
            self.deps
                .blob
                .get(&stored)
                .await
                .context("Failed to fetch the stored git archive")?
        } else {
            let bundle = match download(
                &self.deps.http,
                &url,
                self.deps.settings.sandbox.git_max_archive_bytes,
            )
            .await
            .with_context(|| format!("Failed to download {url}"))?
            {
                Ok(bundle) => bundle,
                Err(permanent) => return Ok(Err(permanent)),
            };
            let sha256 = Sha256Hex::of(&bundle);
            let key = keys::bundle(&sha256);
            self.deps
                .blob
                .put(&key, bundle.clone(), "application/gzip")
                .await
                .context("Failed to store the git archive")?;
            sqlx::query!(
                r#"update submission set bundle_key = $2, bundle_sha256 = $3, bundle_bytes = $4, bundle_format = 'tar.gz'
                   where submission_id = $1 and bundle_key = ''"#,
                submission_id,
                key,
                sha256.as_str(),
                bundle.len() as i64,
            )
            .execute(&self.deps.db)
            .await
            .context("Failed to record the git archive")?;
            bundle
        };
        let archive_sha256 = Sha256Hex::of(&bundle).to_string();
        Ok(Ok((
            bundle,
            Source::Git {
                repository: git.repository.clone(),
                reference: git.reference.clone(),
                archive_sha256,
            },
        )))
    }
}

pub fn archive_url(base: &str, git: &GitSource) -> String {
    format!(
        "{}/{}/tar.gz/{}",
        base.trim_end_matches('/'),
        git.repository,
        git.reference
    )
}

/// Streams the body, refusing it as soon as it passes `cap` bytes (whatever Content-Length says).
/// The inner error is permanent (no such repository or ref, too large): the submission is
/// rejected with it. Network failures and server errors are retried by Temporal.
pub(crate) async fn download(
    http: &reqwest::Client,
    url: &str,
    cap: u64,
) -> anyhow::Result<Result<bytes::Bytes, String>> {
    let response = http.get(url).send().await?;
    let status = response.status();
    // Rate limits and request timeouts are the host's state, not the repository's: retried.
    if status.is_client_error() && !matches!(status.as_u16(), 408 | 429) {
        return Ok(Err(format!(
            "the git host answered {status} for {url}: no such public repository or ref"
        )));
    }
    if !status.is_success() {
        anyhow::bail!("the git host answered {status}");
    }
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        body.extend_from_slice(&chunk);
        if body.len() as u64 > cap {
            return Ok(Err(format!("the repository archive exceeds {cap} bytes")));
        }
    }
    Ok(Ok(body.into()))
}
