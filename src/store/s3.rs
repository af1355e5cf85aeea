//! The S3 store (issue 13): blobs and records in an S3-compatible bucket, through the
//! `object_store` crate, so that any number of Larder processes can share one store.
//!
//! Layout under the configured prefix: `blobs/<sha256>` (content-addressed, written once,
//! read with streaming range GETs), `audit/<day>/<event>` (one object per audited write) and
//! `records/<key>` (small documents; private records are
//! written with conditional puts, `PutMode::Create` / `PutMode::Update` with the ETag read, so
//! that two replicas never overwrite each other's upload). Nothing here caches: the tiered
//! store (`tiered.rs`) keeps a bounded local copy of hot blobs in front of this.

use std::path::Path as FsPath;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{
    ClientOptions, GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, RetryConfig,
    UpdateVersion,
};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use super::breaker::{Breaker, Permit};
use super::{Blob, BlobSource, ByteStream, Error, RecordRead, Records, Store};

/// Record keys under these prefixes are kept beside the records, not among them: audit events
/// (`crate::audit`) and trusted publishing's minted tokens and used `jti`s (`crate::oidc`), which
/// only grow and which start-up, export and verify have no business listing.
const AUDIT: &str = "audit/";
const OIDC: &str = "oidc/";

/// Blobs up to this size are written with one PUT; larger ones as multipart uploads in parts
/// of this size (S3's minimum part is 5 MiB).
const PART_SIZE: usize = 8 * 1024 * 1024;

/// Small operations (HEAD, records) that take longer than this fail: a request must not hang
/// on an unreachable bucket (issue 13: "a clear 5xx").
const OP_TIMEOUT: Duration = Duration::from_secs(10);

/// A blob stream that stalls this long fails.
const STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// One PUT of up to `PART_SIZE` bytes (a whole small blob, or one part) must end within this.
const PART_TIMEOUT: Duration = Duration::from_secs(60);

/// A listing of one kind (all blobs, or all records) must end within this.
const LIST_TIMEOUT: Duration = Duration::from_secs(120);

pub use crate::config::S3Settings;

pub struct S3Store {
    bucket: Arc<dyn ObjectStore>,
    /// Fails fast while the bucket is failing (issue 27).
    breaker: Arc<Breaker>,
    prefix: String,
    location: String,
}

fn os_err(what: impl Into<String>) -> impl FnOnce(object_store::Error) -> Error {
    let what = what.into();
    move |e| Error::Unreachable { what, reason: e.to_string() }
}

fn timed_out(what: &str) -> Error {
    Error::Unreachable { what: what.to_string(), reason: "the bucket did not answer in time".into() }
}

fn refused(what: &str) -> Error {
    Error::Unreachable {
        what: what.to_string(),
        reason: "the bucket failed a moment ago; it is asked again shortly".into(),
    }
}

/// Whether an error is still an answer from the bucket: it is up; the object is not there, not
/// changed, another writer won, or these credentials may not do this (S3 answers 403 to a HEAD
/// of a missing key without ListBucket): none of these is a reason to stop asking it.
fn answered(e: &object_store::Error) -> bool {
    matches!(
        e,
        object_store::Error::NotFound { .. }
            | object_store::Error::NotModified { .. }
            | object_store::Error::AlreadyExists { .. }
            | object_store::Error::Precondition { .. }
            | object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. }
            | object_store::Error::InvalidPath { .. }
            | object_store::Error::NotSupported { .. }
            | object_store::Error::NotImplemented { .. }
    )
}

/// Runs one bucket operation within `limit`, through the breaker: refused at once while the
/// bucket is failing; its outcome (answer, failure, timeout) tells the breaker.
async fn guarded<T>(
    breaker: &Breaker,
    what: &str,
    limit: Duration,
    fut: impl Future<Output = object_store::Result<T>>,
) -> Result<object_store::Result<T>, Error> {
    let mut probe = match breaker.permit() {
        Permit::Refused => return Err(refused(what)),
        Permit::Probe => Some(ProbeGuard { breaker, reported: false }),
        Permit::Go => None,
    };
    let result = tokio::time::timeout(limit, fut).await;
    match &result {
        Ok(Ok(_)) => breaker.success(),
        Ok(Err(e)) if answered(e) => breaker.success(),
        _ => breaker.failure(),
    }
    if let Some(p) = probe.as_mut() {
        p.reported = true;
    }
    result.map_err(|_| timed_out(what))
}

/// A probe dropped before its outcome (its request went away) lets another probe go.
struct ProbeGuard<'a> {
    breaker: &'a Breaker,
    reported: bool,
}

impl Drop for ProbeGuard<'_> {
    fn drop(&mut self) {
        if !self.reported {
            self.breaker.abandon_probe();
        }
    }
}

impl S3Store {
    pub fn open(settings: &S3Settings) -> anyhow::Result<S3Store> {
        // Credentials and the rest from the usual AWS_* variables; the settings win.
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(&settings.bucket);
        let allow_http = settings.endpoint.as_deref().is_some_and(|e| e.starts_with("http://"))
            || std::env::var("AWS_ALLOW_HTTP").is_ok_and(|v| v == "true" || v == "1");
        // Client options first: setting them resets allow_http (crates-notes §10 pitfall).
        builder = builder.with_client_options(
            ClientOptions::new()
                .with_connect_timeout(Duration::from_secs(5))
                .with_timeout_disabled() // large blobs stream for long; stalls are bounded per chunk
                .with_allow_http(allow_http),
        );
        builder = builder.with_retry(RetryConfig {
            max_retries: 2,
            retry_timeout: Duration::from_secs(5),
            ..RetryConfig::default()
        });
        if let Some(endpoint) = &settings.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        if let Some(region) = &settings.region {
            builder = builder.with_region(region);
        } else if std::env::var("AWS_REGION").is_err() && std::env::var("AWS_DEFAULT_REGION").is_err() {
            builder = builder.with_region("us-east-1");
        }
        builder = builder.with_virtual_hosted_style_request(settings.virtual_hosted);
        let bucket = builder.build().map_err(|e| anyhow::anyhow!("cannot configure the S3 store: {e}"))?;
        let location = match settings.prefix.as_str() {
            "" => format!("s3://{}", settings.bucket),
            p => format!("s3://{}/{p}", settings.bucket),
        };
        Ok(S3Store { bucket: Arc::new(bucket), breaker: Arc::default(), prefix: settings.prefix.clone(), location })
    }

    /// One small operation (HEAD, a record, a delete) within `OP_TIMEOUT`, through the breaker.
    async fn op<T>(
        &self,
        what: &str,
        fut: impl Future<Output = object_store::Result<T>>,
    ) -> Result<object_store::Result<T>, Error> {
        guarded(&self.breaker, what, OP_TIMEOUT, fut).await
    }

    fn path(&self, kind: &str, key: &str) -> Path {
        let mut parts: Vec<&str> = Vec::new();
        if !self.prefix.is_empty() {
            parts.extend(self.prefix.split('/'));
        }
        parts.push(kind);
        parts.extend(key.split('/'));
        Path::from_iter(parts)
    }

    /// A record's object. Audit events (issue 23) live under `<prefix>/audit/`, beside the
    /// records rather than among them: start-up lists every record, and the audit trail only grows.
    fn record_path(&self, key: &str) -> Path {
        if let Some(rest) = key.strip_prefix(AUDIT) {
            self.path("audit", rest)
        } else if let Some(rest) = key.strip_prefix(OIDC) {
            self.path("oidc", rest)
        } else {
            self.path("records", key)
        }
    }

    /// `kind` may have several segments (`records/private`).
    fn kind_prefix(&self, kind: &str) -> Path {
        let prefix = self.prefix.split('/').filter(|p| !p.is_empty());
        Path::from_iter(prefix.chain(kind.split('/')))
    }

    fn blob(&self, sha256: &str) -> Result<Path, Error> {
        if !crate::index::is_sha256_hex(sha256) {
            return Err(Error::InvalidKey { key: sha256.to_string() });
        }
        Ok(self.path("blobs", sha256))
    }

    /// The keys (decoded) of everything under `kind`, with sizes and ETags.
    async fn list_kind(&self, kind: &str) -> Result<Vec<(String, u64, Option<String>)>, Error> {
        let prefix = self.kind_prefix(kind);
        let skip = prefix.parts().count();
        let what = format!("listing {kind}");
        let listing = self.bucket.list(Some(&prefix)).try_collect::<Vec<object_store::ObjectMeta>>();
        let metas = guarded(&self.breaker, &what, LIST_TIMEOUT, listing).await?.map_err(os_err(what))?;
        Ok(metas
            .into_iter()
            .map(|m| {
                let key = m
                    .location
                    .parts()
                    .skip(skip)
                    .map(|p| percent_encoding::percent_decode_str(p.as_ref()).decode_utf8_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join("/");
                (key, m.size, m.e_tag)
            })
            .collect())
    }

    /// Uploads a file as `sha256`: one PUT when small, a multipart upload otherwise (invisible
    /// until complete). With `check`, the bytes are hashed as they are read and a mismatch
    /// aborts the upload: nothing is stored.
    async fn upload_file(&self, sha256: &str, path: &FsPath, check: bool) -> Result<(), Error> {
        let dest = self.blob(sha256)?;
        // Content-addressed: an existing blob has these bytes already.
        if self.has_blob(sha256).await? {
            return Ok(());
        }
        let what = format!("uploading blob {sha256}");
        let io = |e: std::io::Error| Error::Io { what: what.clone(), source: e };
        let mut file = tokio::fs::File::open(path).await.map_err(io)?;
        let len = file.metadata().await.map_err(io)?.len();
        let mut hasher = Sha256::new();
        if len as usize <= PART_SIZE {
            let mut buf = Vec::with_capacity(len as usize);
            file.read_to_end(&mut buf).await.map_err(io)?;
            hasher.update(&buf);
            if check && hex::encode(hasher.finalize()) != sha256 {
                return Err(Error::Integrity { expected: sha256.to_string() });
            }
            return guarded(&self.breaker, &what, PART_TIMEOUT, self.bucket.put(&dest, PutPayload::from(buf)))
                .await?
                .map(drop)
                .map_err(os_err(what));
        }
        let mut upload = self.op(&what, self.bucket.put_multipart(&dest)).await?.map_err(os_err(what.clone()))?;
        let result: Result<(), Error> = async {
            loop {
                let mut part = Vec::with_capacity(PART_SIZE);
                (&mut file).take(PART_SIZE as u64).read_to_end(&mut part).await.map_err(io)?;
                if part.is_empty() {
                    break;
                }
                hasher.update(&part);
                guarded(&self.breaker, &what, PART_TIMEOUT, upload.put_part(PutPayload::from(part)))
                    .await?
                    .map_err(os_err(what.clone()))?;
            }
            if check && hex::encode(hasher.finalize_reset()) != sha256 {
                return Err(Error::Integrity { expected: sha256.to_string() });
            }
            Ok(())
        }
        .await;
        match result {
            Ok(()) => self.op(&what, upload.complete()).await?.map(drop).map_err(os_err(what)),
            Err(e) => {
                // Bounded: the client has no overall timeout, and a stalled bucket would hold
                // this task forever (an unfinished multipart upload is invisible anyway).
                let _ = guarded(&self.breaker, &what, OP_TIMEOUT, upload.abort()).await;
                Err(e)
            }
        }
    }
}

struct S3Source {
    bucket: Arc<dyn ObjectStore>,
    breaker: Arc<Breaker>,
    path: Path,
}

#[async_trait]
impl BlobSource for S3Source {
    async fn stream(self: Box<Self>, start: u64, len: u64) -> std::io::Result<ByteStream> {
        if len == 0 {
            return Ok(Box::pin(futures_util::stream::empty()));
        }
        let opts = GetOptions { range: Some(GetRange::Bounded(start..start + len)), ..GetOptions::default() };
        let got = guarded(&self.breaker, "reading a blob", OP_TIMEOUT, self.bucket.get_opts(&self.path, opts))
            .await
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::TimedOut, e.to_string()))?
            .map_err(std::io::Error::other)?;
        let breaker = self.breaker.clone();
        let stream = got.into_stream().map_err(std::io::Error::other);
        // A stalled chunk ends the stream with an error rather than hanging the client.
        let stream = futures_util::stream::unfold((stream, breaker), |(mut s, breaker)| async move {
            match tokio::time::timeout(STALL_TIMEOUT, s.next()).await {
                Ok(Some(item)) => Some((item, (s, breaker))),
                Ok(None) => None,
                Err(_) => {
                    breaker.failure();
                    Some((Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "the bucket stalled")), (s, breaker)))
                }
            }
        });
        Ok(Box::pin(stream))
    }
}

#[async_trait]
impl Store for S3Store {
    async fn open_blob(&self, sha256: &str) -> Result<Option<Blob>, Error> {
        let path = self.blob(sha256)?;
        match self.op("reading a blob", self.bucket.head(&path)).await? {
            Ok(meta) => Ok(Some(Blob::new(
                meta.size,
                Box::new(S3Source { bucket: self.bucket.clone(), breaker: self.breaker.clone(), path }),
            ))),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(os_err(format!("reading blob {sha256}"))(e)),
        }
    }

    async fn has_blob(&self, sha256: &str) -> Result<bool, Error> {
        let path = self.blob(sha256)?;
        match self.op("checking a blob", self.bucket.head(&path)).await? {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(os_err(format!("checking blob {sha256}"))(e)),
        }
    }

    async fn put_blob_file(&self, sha256: &str, path: &FsPath) -> Result<(), Error> {
        self.upload_file(sha256, path, true).await
    }

    async fn put_verified_blob_file(&self, sha256: &str, path: &FsPath) -> Result<(), Error> {
        self.upload_file(sha256, path, false).await
    }

    async fn put_blob_bytes(&self, sha256: &str, bytes: Bytes) -> Result<(), Error> {
        let path = self.blob(sha256)?;
        if crate::digest::sha256_hex(&bytes) != sha256 {
            return Err(Error::Integrity { expected: sha256.to_string() });
        }
        self.op("writing a blob", self.bucket.put(&path, PutPayload::from(bytes)))
            .await?
            .map(drop)
            .map_err(os_err(format!("writing blob {sha256}")))
    }

    async fn delete_blob(&self, sha256: &str) -> Result<(), Error> {
        let path = self.blob(sha256)?;
        match self.op("deleting a blob", self.bucket.delete(&path)).await? {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(os_err(format!("deleting blob {sha256}"))(e)),
        }
    }

    async fn list_blobs(&self) -> Result<Vec<(String, u64)>, Error> {
        let all = self.list_kind("blobs").await?;
        Ok(all.into_iter().filter(|(k, _, _)| crate::index::is_sha256_hex(k)).map(|(k, size, _)| (k, size)).collect())
    }

    async fn get_record(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.get_record_versioned(key).await?.map(|(bytes, _)| bytes))
    }

    async fn put_record(&self, key: &str, value: Vec<u8>) -> Result<(), Error> {
        let path = self.record_path(key);
        self.op("writing a record", self.bucket.put(&path, PutPayload::from(value)))
            .await?
            .map(drop)
            .map_err(os_err(format!("writing record {key}")))
    }

    async fn delete_record(&self, key: &str) -> Result<(), Error> {
        let path = self.record_path(key);
        match self.op("deleting a record", self.bucket.delete(&path)).await? {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(os_err(format!("deleting record {key}"))(e)),
        }
    }

    async fn list_records(&self) -> Result<Records, Error> {
        let mut records = Records::default();
        for (key, _, _) in self.list_kind("records").await? {
            records.keys.insert(key);
        }
        Ok(records)
    }

    async fn get_record_versioned(&self, key: &str) -> Result<Option<(Vec<u8>, String)>, Error> {
        match self.get_record_if_changed(key, None).await? {
            RecordRead::Changed(found) => Ok(found),
            RecordRead::Unchanged => unreachable!("nothing known: never unchanged"),
        }
    }

    async fn get_record_if_changed(&self, key: &str, known: Option<&str>) -> Result<RecordRead, Error> {
        let path = self.record_path(key);
        let what = format!("reading record {key}");
        let opts = GetOptions { if_none_match: known.map(str::to_string), ..GetOptions::default() };
        let read = async {
            let got = self.bucket.get_opts(&path, opts).await?;
            let version = got.meta.e_tag.clone().unwrap_or_default();
            let bytes = got.bytes().await?;
            Ok::<_, object_store::Error>((bytes.to_vec(), version))
        };
        match self.op(&what, read).await? {
            Ok(found) => Ok(RecordRead::Changed(Some(found))),
            Err(object_store::Error::NotModified { .. }) => Ok(RecordRead::Unchanged),
            Err(object_store::Error::NotFound { .. }) => Ok(RecordRead::Changed(None)),
            Err(e) => Err(os_err(what)(e)),
        }
    }

    async fn put_record_if(&self, key: &str, value: Vec<u8>, expected: Option<&str>) -> Result<Option<String>, Error> {
        let path = self.record_path(key);
        let mode = match expected {
            None => PutMode::Create,
            Some(etag) => PutMode::Update(UpdateVersion { e_tag: Some(etag.to_string()), version: None }),
        };
        let opts = PutOptions { mode, ..PutOptions::default() };
        match self.op("writing a record", self.bucket.put_opts(&path, PutPayload::from(value), opts)).await? {
            // The ETag the write produced: the version this writer knows its record by (a
            // read-back could return another writer's, later, record under it).
            Ok(put) => Ok(Some(put.e_tag.unwrap_or_default())),
            Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => Ok(None),
            Err(e) => Err(os_err(format!("writing record {key}"))(e)),
        }
    }

    async fn list_record_keys(&self, prefix: &str) -> Result<Vec<(String, Option<String>)>, Error> {
        // Listed under the prefix itself: a private listing does not walk every page record.
        let kind = match prefix.trim_end_matches('/') {
            "" => "records".to_string(),
            p if p.starts_with(AUDIT) || p.starts_with(OIDC) => p.to_string(),
            p => format!("records/{p}"),
        };
        let keys = self.list_kind(&kind).await?;
        let base = prefix.trim_end_matches('/');
        Ok(keys
            .into_iter()
            .map(|(k, _, etag)| (if base.is_empty() { k } else { format!("{base}/{k}") }, etag))
            .collect())
    }

    fn is_shared(&self) -> bool {
        true
    }

    fn location(&self) -> String {
        self.location.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_urls() {
        assert_eq!(S3Settings::parse_url("s3://larder/prod/pypi").unwrap(), ("larder".into(), "prod/pypi".into()));
        assert_eq!(S3Settings::parse_url("s3://larder").unwrap(), ("larder".into(), String::new()));
        assert_eq!(S3Settings::parse_url("s3://larder/").unwrap(), ("larder".into(), String::new()));
        assert!(S3Settings::parse_url("s3://Bad_Bucket/x").is_err());
        assert!(S3Settings::parse_url("s3://ab").is_err());
        assert!(S3Settings::parse_url("s3://larder/a//b").is_err());
        assert!(S3Settings::parse_url("http://larder").is_err());
    }

    fn in_memory() -> S3Store {
        S3Store {
            bucket: Arc::new(object_store::memory::InMemory::new()),
            breaker: Arc::default(),
            prefix: "t".into(),
            location: "mem".into(),
        }
    }

    #[tokio::test]
    async fn records_are_compare_and_swapped() {
        let store = in_memory();
        let key = "private/team/pkg";
        assert!(store.put_record_if(key, b"one".to_vec(), None).await.unwrap().is_some(), "created");
        assert!(
            store.put_record_if(key, b"two".to_vec(), None).await.unwrap().is_none(),
            "exists: the second creator loses"
        );
        let (body, v1) = store.get_record_versioned(key).await.unwrap().unwrap();
        assert_eq!(body, b"one");
        assert!(matches!(store.get_record_if_changed(key, Some(&v1)).await.unwrap(), RecordRead::Unchanged));
        let v2 = store.put_record_if(key, b"three".to_vec(), Some(&v1)).await.unwrap().unwrap();
        assert!(
            store.put_record_if(key, b"four".to_vec(), Some(&v1)).await.unwrap().is_none(),
            "a stale version loses"
        );
        assert!(
            matches!(store.get_record_if_changed(key, Some(&v2)).await.unwrap(), RecordRead::Unchanged),
            "the version the write returned is the record's"
        );
        match store.get_record_if_changed(key, Some(&v1)).await.unwrap() {
            RecordRead::Changed(Some((body, _))) => assert_eq!(body, b"three"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            store.get_record_if_changed("private/team/none", None).await.unwrap(),
            RecordRead::Changed(None)
        ));
        let listed = store.list_records().await.unwrap();
        assert_eq!(listed.keys.into_iter().collect::<Vec<_>>(), [key]);
        store.put_record("page/other", b"{}".to_vec()).await.unwrap();
        let listed = store.list_record_keys("private/").await.unwrap();
        assert_eq!(listed.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), [key]);
        assert_eq!(listed[0].1.as_deref(), Some(v2.as_str()), "the listing's version is the write's");
    }

    #[tokio::test]
    async fn blobs_of_every_size_around_the_part_size_round_trip() {
        let store = in_memory();
        let dir = tempfile::tempdir().unwrap();
        for size in [0, 1, PART_SIZE - 1, PART_SIZE, PART_SIZE + 1, 2 * PART_SIZE + 3] {
            let bytes: Vec<u8> = (0..size).map(|i| (i * 7 + size) as u8).collect();
            let sha = crate::digest::sha256_hex(&bytes);
            let path = dir.path().join(format!("{size}"));
            std::fs::write(&path, &bytes).unwrap();
            // A wrong hash stores nothing, whether one PUT or a multipart upload.
            let wrong = crate::digest::sha256_hex(b"other");
            assert!(matches!(store.put_blob_file(&wrong, &path).await, Err(Error::Integrity { .. })), "{size}");
            assert!(!store.has_blob(&wrong).await.unwrap(), "{size}");
            store.put_blob_file(&sha, &path).await.unwrap();
            let blob = store.open_blob(&sha).await.unwrap().unwrap();
            assert_eq!(blob.len, size as u64);
            let mut got = Vec::new();
            let mut stream = blob.stream(0, size as u64).await.unwrap();
            while let Some(chunk) = stream.next().await {
                got.extend_from_slice(&chunk.unwrap());
            }
            assert!(got == bytes, "size {size}");
            if size > 2 {
                let blob = store.open_blob(&sha).await.unwrap().unwrap();
                let mut part = Vec::new();
                let mut stream = blob.stream(1, size as u64 - 2).await.unwrap();
                while let Some(chunk) = stream.next().await {
                    part.extend_from_slice(&chunk.unwrap());
                }
                assert!(part == bytes[1..size - 1], "range of size {size}");
            }
        }
        assert_eq!(store.list_blobs().await.unwrap().len(), 6);
    }

    /// Through the store's own listing (not a copy of its decoding): a key with an escaped
    /// slash in one segment comes back as written, under a prefix of two segments.
    #[tokio::test]
    async fn record_keys_round_trip_through_object_paths() {
        let store = S3Store {
            bucket: Arc::new(object_store::memory::InMemory::new()),
            breaker: Arc::default(),
            prefix: "p/q".into(),
            location: String::new(),
        };
        let key = "private/group%2Fproj/my-pkg";
        store.put_record(key, b"{}".to_vec()).await.unwrap();
        let listed: Vec<String> = store.list_kind("records").await.unwrap().into_iter().map(|(k, _, _)| k).collect();
        assert_eq!(listed, [key]);
        assert_eq!(store.get_record(key).await.unwrap().as_deref(), Some(&b"{}"[..]));
    }

    /// Audit events live under `<prefix>/audit/`, not among the records start-up lists.
    #[tokio::test]
    async fn audit_events_are_objects_beside_the_records() {
        let bucket = Arc::new(object_store::memory::InMemory::new());
        let store =
            S3Store { bucket: bucket.clone(), breaker: Arc::default(), prefix: "p".into(), location: String::new() };
        store.put_record("audit/2026-12-07/t1-a", b"{}".to_vec()).await.unwrap();
        store.put_record("oidc/jti/abc", b"1".to_vec()).await.unwrap();
        store.put_record("page/x", b"{}".to_vec()).await.unwrap();
        assert!(bucket.head(&Path::from("p/oidc/jti/abc")).await.is_ok());
        let head = bucket.head(&Path::from("p/audit/2026-12-07/t1-a")).await;
        assert!(head.is_ok(), "{head:?}");
        assert_eq!(store.list_records().await.unwrap().keys.into_iter().collect::<Vec<_>>(), ["page/x"]);
        let day = store.list_record_keys("audit/2026-12-07/").await.unwrap();
        assert_eq!(day.into_iter().map(|(k, _)| k).collect::<Vec<_>>(), ["audit/2026-12-07/t1-a"]);
        assert_eq!(store.get_record("audit/2026-12-07/t1-a").await.unwrap().as_deref(), Some(&b"{}"[..]));
    }
}
