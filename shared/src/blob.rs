//! Content-addressed blob storage on any S3-compatible server (s3s-fs locally).

use anyhow::Context;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{Credentials, Region};
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use secrecy::ExposeSecret;

use crate::config::BlobSettings;
use crate::domain::Sha256Hex;

#[derive(Clone)]
pub struct BlobStore {
    client: Client,
    bucket: String,
}

/// Blob key layout. Content-addressed keys are derived from the bytes, so writing the same
/// object twice is harmless and a key proves what it holds.
pub mod keys {
    use crate::domain::Sha256Hex;

    pub fn bundle(digest: &Sha256Hex) -> String {
        format!("bundles/sha256/{digest}")
    }
    pub fn content(kind: &str, digest: &Sha256Hex) -> String {
        format!("{kind}/sha256/{digest}.json")
    }
}

impl BlobStore {
    pub fn new(settings: &BlobSettings) -> Self {
        let config = aws_sdk_s3::Config::builder()
            .behavior_version_latest()
            .endpoint_url(&settings.endpoint)
            .region(Region::new(settings.region.clone()))
            .credentials_provider(Credentials::new(
                settings.access_key.clone(),
                settings.secret_key.expose_secret().to_owned(),
                None,
                None,
                "sigma-config",
            ))
            .force_path_style(true)
            .build();
        Self {
            client: Client::from_conf(config),
            bucket: settings.bucket.clone(),
        }
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    pub async fn ensure_bucket(&self) -> anyhow::Result<()> {
        if self
            .client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .is_ok()
        {
            return Ok(());
        }
        match self
            .client
            .create_bucket()
            .bucket(&self.bucket)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            // Another process created it between our two calls.
            Err(e)
                if self
                    .client
                    .head_bucket()
                    .bucket(&self.bucket)
                    .send()
                    .await
                    .is_ok() =>
            {
                tracing::debug!(error = %e, "bucket appeared concurrently");
                Ok(())
            }
            Err(e) => {
                Err(anyhow::Error::new(e).context(format!("cannot create bucket {}", self.bucket)))
            }
        }
    }

    pub async fn put(&self, key: &str, bytes: Bytes, content_type: &str) -> anyhow::Result<()> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .with_context(|| format!("cannot store blob {key}"))?;
        Ok(())
    }

    /// Stores JSON under a key derived from its SHA-256 and returns that key.
    pub async fn put_json(&self, kind: &str, value: &serde_json::Value) -> anyhow::Result<String> {
        let bytes = serde_json::to_vec(value).context("cannot serialise blob")?;
        let key = keys::content(kind, &Sha256Hex::of(&bytes));
        self.put(&key, Bytes::from(bytes), "application/json")
            .await?;
        Ok(key)
    }

    pub async fn delete(&self, key: &str) -> anyhow::Result<()> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .with_context(|| format!("cannot delete blob {key}"))?;
        Ok(())
    }

    pub async fn get(&self, key: &str) -> anyhow::Result<Bytes> {
        let object = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .with_context(|| format!("cannot read blob {key}"))?;
        let data = object
            .body
            .collect()
            .await
            .with_context(|| format!("cannot read blob body {key}"))?;
        Ok(data.into_bytes())
    }

    pub async fn get_json<T: serde::de::DeserializeOwned>(&self, key: &str) -> anyhow::Result<T> {
        let bytes = self.get(key).await?;
        serde_json::from_slice(&bytes)
            .with_context(|| format!("blob {key} is not the expected JSON"))
    }
}
