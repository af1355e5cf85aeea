//! The bucket with a bounded local cache in front (issue 13): warm hits are read from the local
//! disk at the local store's speed; the bucket is the truth every replica shares.
//!
//! Writes go to the bucket first (an acknowledged upload survives the loss of this machine),
//! then to the local cache. A read the local cache misses is answered from the bucket: a small
//! blob is read whole, checked against its sha256 and kept; a large one streams from the bucket
//! to the client while one background copy (per blob) fills the local cache, checked the same
//! way. The local cache evicts least-recently-used blobs above `local_cache_size`; the
//! bucket's size is the operator's (lifecycle rules). Records live in the bucket only.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use super::bounded::Bounded;
use super::s3::S3Store;
use super::{Blob, Error, LocalStore, RecordRead, Records, Store};

/// Blobs up to this size are read whole from the bucket, checked, kept and served from memory.
const SMALL: u64 = 1024 * 1024;

/// Background copies of large blobs into the local cache under way at once.
const MAX_COPIES: usize = 4;

pub struct Tiered {
    bucket: Arc<S3Store>,
    /// The local cache, with its size limit (nothing in it is pinned: the bucket has it all).
    local: Arc<Bounded>,
    /// Where background copies are written before the local cache adopts them.
    spool: PathBuf,
    /// Blobs being copied into the local cache now.
    copying: Arc<Mutex<HashSet<String>>>,
    /// Copies under way at once (each is a second download of a large blob).
    copy_slots: Arc<tokio::sync::Semaphore>,
    limit: u64,
    /// The background copies run on the engine's tracker and end at its stop signal (a
    /// partial copy is never adopted: its spool file is cleared at the next start).
    background: super::Background,
}

impl Tiered {
    pub async fn new(
        bucket: S3Store,
        local: LocalStore,
        limit: u64,
        spool: PathBuf,
        background: super::Background,
    ) -> anyhow::Result<Tiered> {
        std::fs::create_dir_all(&spool)?;
        // Its failures are counted (`larder_store_errors_total`) like the bucket's.
        let local: Arc<dyn Store> = Arc::new(super::health::Health::new(Arc::new(local)));
        let local = Arc::new(Bounded::new(local, limit, &Records::default(), |_| false).await?);
        local.enforce().await;
        Ok(Tiered {
            bucket: Arc::new(bucket),
            local,
            spool,
            copying: Arc::default(),
            copy_slots: Arc::new(tokio::sync::Semaphore::new(MAX_COPIES)),
            limit,
            background,
        })
    }

    /// Keeps a copy of a large blob in the local cache, in the background (once per blob).
    fn copy_in_background(&self, sha256: &str, len: u64) {
        // Beyond the cache's own size it would only evict everything else; with every slot
        // busy, the next request for it tries again.
        if len > self.limit / 4 {
            return;
        }
        let Ok(slot) = self.copy_slots.clone().try_acquire_owned() else { return };
        if !self.copying.lock().expect("copying lock").insert(sha256.to_string()) {
            return;
        }
        let (bucket, local, copying) = (self.bucket.clone(), self.local.clone(), self.copying.clone());
        let tmp = self.spool.join(format!("{sha256}.{:016x}.cache", rand::random::<u64>()));
        let sha = sha256.to_string();
        self.background.spawn(async move {
            let result = async {
                let Some(blob) = bucket.open_blob(&sha).await? else { return Ok(()) };
                let io = |e: std::io::Error| Error::Io { what: format!("caching blob {sha}"), source: e };
                let mut out = tokio::fs::File::create(&tmp).await.map_err(io)?;
                let len = blob.len;
                let mut stream = blob.stream(0, len).await.map_err(io)?;
                while let Some(chunk) = stream.next().await {
                    out.write_all(&chunk.map_err(io)?).await.map_err(io)?;
                }
                out.flush().await.map_err(io)?;
                drop(out);
                // Checked against its sha256: a damaged object never enters the cache.
                local.put_blob_file(&sha, &tmp).await?;
                local.enforce().await;
                Ok::<(), Error>(())
            }
            .await;
            let _ = tokio::fs::remove_file(&tmp).await;
            if let Err(e) = result {
                tracing::warn!(sha256 = %sha, error = %e, "could not keep a local copy of a blob from the bucket");
            }
            copying.lock().expect("copying lock").remove(&sha);
            drop(slot);
        });
    }

    /// Best effort: a full local disk must not fail a write the bucket took.
    async fn keep_locally(&self, result: Result<(), Error>, sha256: &str) {
        match result {
            Ok(()) => self.local.enforce().await,
            Err(e) => tracing::warn!(sha256, error = %e, "could not keep a local copy; it is in the bucket"),
        }
    }
}

#[async_trait]
impl Store for Tiered {
    async fn open_blob(&self, sha256: &str) -> Result<Option<Blob>, Error> {
        match self.local.open_blob(sha256).await {
            Ok(Some(blob)) => return Ok(Some(blob)),
            Ok(None) => {}
            // A damaged local copy is dropped; the bucket has the blob.
            Err(e) => {
                tracing::warn!(sha256, error = %e, "local cache copy unreadable; reading the bucket");
                let _ = self.local.delete_blob(sha256).await;
            }
        }
        let Some(blob) = self.bucket.open_blob(sha256).await? else { return Ok(None) };
        metrics::counter!("larder_bucket_reads_total").increment(1);
        if blob.len > SMALL {
            self.copy_in_background(sha256, blob.len);
            // Every byte served matches its sha256, also when the bucket's copy is damaged.
            return Ok(Some(blob.verified(sha256)));
        }
        let len = blob.len;
        let what = format!("reading blob {sha256} from the bucket");
        let failed = |e: std::io::Error| Error::Unreachable { what: what.clone(), reason: e.to_string() };
        let mut stream = blob.stream(0, len).await.map_err(failed)?;
        let mut bytes = Vec::with_capacity(len as usize);
        while let Some(chunk) = stream.next().await {
            bytes.extend_from_slice(&chunk.map_err(failed)?);
        }
        // Every byte served matches its sha256, also when the bucket's copy is damaged.
        if crate::digest::sha256_hex(&bytes) != sha256 {
            tracing::error!(sha256, "the bucket's copy of a blob does not match its sha256; not served");
            return Err(Error::Integrity { expected: sha256.to_string() });
        }
        let bytes = Bytes::from(bytes);
        let kept = self.local.put_blob_bytes(sha256, bytes.clone()).await;
        self.keep_locally(kept, sha256).await;
        Ok(Some(Blob::in_memory(bytes)))
    }

    /// The bucket decides: uploads and `warm` skip writing what is "there", and only the
    /// bucket's copy survives this machine.
    async fn has_blob(&self, sha256: &str) -> Result<bool, Error> {
        self.bucket.has_blob(sha256).await
    }

    async fn put_blob_file(&self, sha256: &str, path: &Path) -> Result<(), Error> {
        self.bucket.put_blob_file(sha256, path).await?;
        let kept = self.local.put_verified_blob_file(sha256, path).await;
        self.keep_locally(kept, sha256).await;
        Ok(())
    }

    async fn put_verified_blob_file(&self, sha256: &str, path: &Path) -> Result<(), Error> {
        self.bucket.put_verified_blob_file(sha256, path).await?;
        let kept = self.local.put_verified_blob_file(sha256, path).await;
        self.keep_locally(kept, sha256).await;
        Ok(())
    }

    async fn put_blob_bytes(&self, sha256: &str, bytes: Bytes) -> Result<(), Error> {
        self.bucket.put_blob_bytes(sha256, bytes.clone()).await?;
        let kept = self.local.put_blob_bytes(sha256, bytes).await;
        self.keep_locally(kept, sha256).await;
        Ok(())
    }

    async fn delete_blob(&self, sha256: &str) -> Result<(), Error> {
        self.bucket.delete_blob(sha256).await?;
        self.local.delete_blob(sha256).await
    }

    async fn list_blobs(&self) -> Result<Vec<(String, u64)>, Error> {
        self.bucket.list_blobs().await
    }

    async fn get_record(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        self.bucket.get_record(key).await
    }

    async fn put_record(&self, key: &str, value: Vec<u8>) -> Result<(), Error> {
        self.bucket.put_record(key, value).await
    }

    async fn delete_record(&self, key: &str) -> Result<(), Error> {
        self.bucket.delete_record(key).await
    }

    async fn list_records(&self) -> Result<Records, Error> {
        self.bucket.list_records().await
    }

    async fn get_record_versioned(&self, key: &str) -> Result<Option<(Vec<u8>, String)>, Error> {
        self.bucket.get_record_versioned(key).await
    }

    async fn get_record_if_changed(&self, key: &str, known: Option<&str>) -> Result<RecordRead, Error> {
        self.bucket.get_record_if_changed(key, known).await
    }

    async fn put_record_if(&self, key: &str, value: Vec<u8>, expected: Option<&str>) -> Result<Option<String>, Error> {
        self.bucket.put_record_if(key, value, expected).await
    }

    async fn list_record_keys(&self, prefix: &str) -> Result<Vec<(String, Option<String>)>, Error> {
        self.bucket.list_record_keys(prefix).await
    }

    fn is_shared(&self) -> bool {
        true
    }

    fn location(&self) -> String {
        format!("{} (local cache: {}, up to {} MiB)", self.bucket.location(), self.local.location(), self.limit >> 20)
    }
}
