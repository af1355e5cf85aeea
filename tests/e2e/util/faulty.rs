//! A `Store` that fails on command, around a real one: writes with ENOSPC (a full disk), reads
//! with EIO (a failing disk).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use larder::store::{Blob, Error, Records, Store};

pub struct Faulty {
    inner: Arc<dyn Store>,
    pub full: AtomicBool,
    pub broken_reads: AtomicBool,
}

impl Faulty {
    pub fn new(inner: Arc<dyn Store>) -> Arc<Faulty> {
        Arc::new(Faulty { inner, full: AtomicBool::new(false), broken_reads: AtomicBool::new(false) })
    }

    fn write(&self, what: &str) -> Result<(), Error> {
        if self.full.load(Ordering::SeqCst) {
            let source = std::io::Error::new(std::io::ErrorKind::StorageFull, "No space left on device (injected)");
            return Err(Error::Io { what: format!("/injected/path/{what}"), source });
        }
        Ok(())
    }

    fn read(&self, what: &str) -> Result<(), Error> {
        if self.broken_reads.load(Ordering::SeqCst) {
            let source = std::io::Error::other("Input/output error (injected)");
            return Err(Error::Io { what: format!("/injected/path/{what}"), source });
        }
        Ok(())
    }
}

#[async_trait]
impl Store for Faulty {
    async fn open_blob(&self, sha256: &str) -> Result<Option<Blob>, Error> {
        self.read(sha256)?;
        self.inner.open_blob(sha256).await
    }
    async fn has_blob(&self, sha256: &str) -> Result<bool, Error> {
        self.read(sha256)?;
        self.inner.has_blob(sha256).await
    }
    async fn put_blob_file(&self, sha256: &str, path: &Path) -> Result<(), Error> {
        self.write(sha256)?;
        self.inner.put_blob_file(sha256, path).await
    }
    async fn put_blob_bytes(&self, sha256: &str, bytes: Bytes) -> Result<(), Error> {
        self.write(sha256)?;
        self.inner.put_blob_bytes(sha256, bytes).await
    }
    async fn delete_blob(&self, sha256: &str) -> Result<(), Error> {
        self.inner.delete_blob(sha256).await
    }
    async fn list_blobs(&self) -> Result<Vec<(String, u64)>, Error> {
        self.inner.list_blobs().await
    }
    async fn get_record(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        self.read(key)?;
        self.inner.get_record(key).await
    }
    async fn put_record(&self, key: &str, value: Vec<u8>) -> Result<(), Error> {
        self.write(key)?;
        self.inner.put_record(key, value).await
    }
    async fn delete_record(&self, key: &str) -> Result<(), Error> {
        self.inner.delete_record(key).await
    }
    async fn get_record_versioned(&self, key: &str) -> Result<Option<(Vec<u8>, String)>, Error> {
        self.read(key)?;
        self.inner.get_record_versioned(key).await
    }
    async fn put_record_if(&self, key: &str, value: Vec<u8>, expected: Option<&str>) -> Result<Option<String>, Error> {
        self.write(key)?;
        self.inner.put_record_if(key, value, expected).await
    }
    async fn list_records(&self) -> Result<Records, Error> {
        self.inner.list_records().await
    }
    fn location(&self) -> String {
        self.inner.location()
    }
}
