//! Content-addressed blob storage on any S3-compatible server (s3s-fs locally).

use std::sync::{Arc, Mutex};

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
    /// Content-addressed objects this process stored or read, shared by its clones.
    cache: Arc<Mutex<ContentCache>>,
}

/// Recently stored or read content-addressed JSON documents (`{kind}/sha256/{digest}.json`): their
/// key is derived from their bytes, so a cached copy can never be stale. A submission's sandbox
/// report is read by each of its votes and by its certificate; with this cache a worker process
/// reads it from storage at most once, and not at all when it wrote it. Bundles are always read
/// from storage: the bytes under review are the stored ones.
struct ContentCache {
    entries: lru::LruCache<String, Bytes>,
    bytes: usize,
}

/// What the cache holds at most, in all and per object (bundles and large reports are left out).
const CACHE_BYTES: usize = 32 << 20;
const CACHE_MAX_OBJECT: usize = 1 << 20;

impl ContentCache {
    fn new() -> Self {
        Self {
            entries: lru::LruCache::unbounded(),
            bytes: 0,
        }
    }

    fn remove(&mut self, key: &str) {
        if let Some(old) = self.entries.pop(key) {
            self.bytes -= old.len();
        }
    }

    fn cacheable(key: &str, len: usize) -> bool {
        key.contains("/sha256/") && key.ends_with(".json") && len <= CACHE_MAX_OBJECT
    }

    fn insert(&mut self, key: &str, bytes: &Bytes) {
        if !Self::cacheable(key, bytes.len()) {
            return;
        }
        if let Some(old) = self.entries.put(key.to_owned(), bytes.clone()) {
            self.bytes -= old.len();
        }
        self.bytes += bytes.len();
        while self.bytes > CACHE_BYTES {
            match self.entries.pop_lru() {
                Some((_, evicted)) => self.bytes -= evicted.len(),
                None => break,
            }
        }
    }
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
            cache: Arc::new(Mutex::new(ContentCache::new())),
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
            .body(ByteStream::from(bytes.clone()))
            .send()
            .await
            .with_context(|| format!("cannot store blob {key}"))?;
        self.cache.lock().expect("blob cache").insert(key, &bytes);
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
        self.cache.lock().expect("blob cache").remove(key);
        Ok(())
    }

    pub async fn get(&self, key: &str) -> anyhow::Result<Bytes> {
        if let Some(bytes) = self.cache.lock().expect("blob cache").entries.get(key) {
            return Ok(bytes.clone());
        }
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
        let bytes = data.into_bytes();
        self.cache.lock().expect("blob cache").insert(key, &bytes);
        Ok(bytes)
    }

    pub async fn get_json<T: serde::de::DeserializeOwned>(&self, key: &str) -> anyhow::Result<T> {
        let bytes = self.get(key).await?;
        serde_json::from_slice(&bytes)
            .with_context(|| format!("blob {key} is not the expected JSON"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_small_content_addressed_objects_are_kept() {
        let mut c = ContentCache::new();
        c.insert("reports/sandbox/sha256/ab.json", &Bytes::from_static(b"{}"));
        c.insert("uploads/draft-1", &Bytes::from_static(b"mutable"));
        c.insert("bundles/sha256/cd", &Bytes::from_static(b"archive"));
        c.insert(
            "reports/sandbox/sha256/ef.json",
            &Bytes::from(vec![0u8; CACHE_MAX_OBJECT + 1]),
        );
        assert_eq!(c.entries.len(), 1);
        assert!(c.entries.contains("reports/sandbox/sha256/ab.json"));
        assert_eq!(c.bytes, 2);
    }

    #[test]
    fn the_least_recently_used_go_first_when_the_budget_is_spent() {
        let mut c = ContentCache::new();
        let object = Bytes::from(vec![7u8; CACHE_MAX_OBJECT]);
        let n = CACHE_BYTES / CACHE_MAX_OBJECT;
        for i in 0..n {
            c.insert(&format!("k/sha256/{i}.json"), &object);
        }
        // Touch the oldest, then overflow by one object: the second oldest is evicted.
        assert!(c.entries.get("k/sha256/0.json").is_some());
        c.insert("k/sha256/new.json", &object);
        assert_eq!(c.entries.len(), n);
        assert!(c.bytes <= CACHE_BYTES);
        assert!(c.entries.contains("k/sha256/0.json"));
        assert!(!c.entries.contains("k/sha256/1.json"));
        // The same key again replaces its entry without counting it twice.
        c.insert("k/sha256/new.json", &object);
        assert_eq!(c.bytes, n * CACHE_MAX_OBJECT);
        // A deleted object is forgotten, and its bytes with it.
        c.remove("k/sha256/new.json");
        assert!(!c.entries.contains("k/sha256/new.json"));
        assert_eq!(c.bytes, (n - 1) * CACHE_MAX_OBJECT);
    }
}
