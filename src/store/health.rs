//! The store's health, as a layer around any `Store` (sccache's one-job wrapper shape): every
//! read and write passes through and is counted; the last failure of each is kept for
//! `/-/health` and `/-/ready` (a full disk, a bucket that stopped answering).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;

use super::{Blob, Error, RecordRead, Records, Store};

/// How long a read failure keeps the store reported as degraded.
const READ_FAILURE_MEMORY: Duration = Duration::from_secs(30);

pub struct Health {
    inner: Arc<dyn Store>,
    /// The last failure of a write, cleared by the next successful write.
    failing_writes: Mutex<Option<String>>,
    /// The last failure of a read, cleared by the next successful read or after
    /// `READ_FAILURE_MEMORY`.
    failing_reads: Mutex<Option<(Instant, String)>>,
}

/// A failure, as health reports it: the operation and the kind of error, never a path.
fn summary(op: &str, e: &Error) -> String {
    let kind = match e {
        Error::Io { source, .. } => source.kind().to_string(),
        Error::Cache { .. } => "storage error".into(),
        Error::Integrity { .. } => "integrity check failed".into(),
        Error::InvalidKey { .. } => "invalid key".into(),
        Error::Unreachable { .. } => "the bucket is unreachable".into(),
    };
    format!("store {op} failing ({kind})")
}

impl Health {
    pub fn new(inner: Arc<dyn Store>) -> Health {
        Health { inner, failing_writes: Mutex::new(None), failing_reads: Mutex::new(None) }
    }

    /// What is degraded: failing writes, or reads that failed recently.
    pub fn degraded(&self) -> Option<String> {
        if let Some(w) = self.failing_writes.lock().expect("health lock").clone() {
            return Some(w);
        }
        let reads = self.failing_reads.lock().expect("health lock");
        reads.as_ref().filter(|(at, _)| at.elapsed() < READ_FAILURE_MEMORY).map(|(_, why)| why.clone())
    }

    /// Counts a failure (`larder_store_errors_total{op}`) and keeps it for health.
    fn wrote<T>(&self, result: Result<T, Error>) -> Result<T, Error> {
        match &result {
            Ok(_) => *self.failing_writes.lock().expect("health lock") = None,
            Err(e) => {
                metrics::counter!("larder_store_errors_total", "op" => "write").increment(1);
                *self.failing_writes.lock().expect("health lock") = Some(summary("writes", e));
            }
        }
        result
    }

    fn read<T>(&self, result: Result<T, Error>) -> Result<T, Error> {
        match &result {
            Ok(_) => {
                let mut failing = self.failing_reads.lock().expect("health lock");
                if failing.is_some() {
                    *failing = None;
                }
            }
            Err(e) => {
                metrics::counter!("larder_store_errors_total", "op" => "read").increment(1);
                *self.failing_reads.lock().expect("health lock") = Some((Instant::now(), summary("reads", e)));
            }
        }
        result
    }
}

#[async_trait]
impl Store for Health {
    async fn open_blob(&self, sha256: &str) -> Result<Option<Blob>, Error> {
        self.read(self.inner.open_blob(sha256).await)
    }

    async fn has_blob(&self, sha256: &str) -> Result<bool, Error> {
        self.read(self.inner.has_blob(sha256).await)
    }

    async fn put_blob_file(&self, sha256: &str, path: &Path) -> Result<(), Error> {
        self.wrote(self.inner.put_blob_file(sha256, path).await)
    }

    async fn put_verified_blob_file(&self, sha256: &str, path: &Path) -> Result<(), Error> {
        self.wrote(self.inner.put_verified_blob_file(sha256, path).await)
    }

    async fn put_blob_bytes(&self, sha256: &str, bytes: Bytes) -> Result<(), Error> {
        self.wrote(self.inner.put_blob_bytes(sha256, bytes).await)
    }

    async fn delete_blob(&self, sha256: &str) -> Result<(), Error> {
        self.inner.delete_blob(sha256).await
    }

    async fn list_blobs(&self) -> Result<Vec<(String, u64)>, Error> {
        self.inner.list_blobs().await
    }

    async fn get_record(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        self.read(self.inner.get_record(key).await)
    }

    async fn put_record(&self, key: &str, value: Vec<u8>) -> Result<(), Error> {
        self.wrote(self.inner.put_record(key, value).await)
    }

    async fn delete_record(&self, key: &str) -> Result<(), Error> {
        self.inner.delete_record(key).await
    }

    async fn list_records(&self) -> Result<Records, Error> {
        self.inner.list_records().await
    }

    async fn get_record_versioned(&self, key: &str) -> Result<Option<(Vec<u8>, String)>, Error> {
        self.read(self.inner.get_record_versioned(key).await)
    }

    async fn get_record_if_changed(&self, key: &str, known: Option<&str>) -> Result<RecordRead, Error> {
        self.read(self.inner.get_record_if_changed(key, known).await)
    }

    async fn put_record_if(&self, key: &str, value: Vec<u8>, expected: Option<&str>) -> Result<Option<String>, Error> {
        self.wrote(self.inner.put_record_if(key, value, expected).await)
    }

    async fn list_record_keys(&self, prefix: &str) -> Result<Vec<(String, Option<String>)>, Error> {
        self.read(self.inner.list_record_keys(prefix).await)
    }

    fn is_shared(&self) -> bool {
        self.inner.is_shared()
    }

    fn location(&self) -> String {
        self.inner.location()
    }
}
