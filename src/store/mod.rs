//! The content store: what Larder keeps on disk or in object storage.
//!
//! Two kinds of things live here: **blobs** (distribution and metadata files, addressed by their
//! sha256) and **records** (small keyed documents such as a project's page model). Nothing above
//! this trait assumes a local disk. Backends: `LocalStore` (cacache on disk), `S3Store` (an
//! S3-compatible bucket shared by any number of Larder processes), and `Tiered` (a bounded local
//! cache of hot blobs in front of the bucket). Layers wrap any of them, one job each, forwarding
//! every method in one line: `health` (failures, for `/-/health`), `bounded` (the size limit).
//! `from_config` is the one place that chooses the backend; the engine stacks the layers.

pub mod bounded;
mod breaker;
pub mod format;
pub mod health;
mod local;
pub mod s3;
mod tiered;

use std::path::Path;
use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::Stream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use local::LocalStore;

pub type ByteStream = Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("store I/O failed on {what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("store failed on {what}: {source}")]
    Cache { what: String, source: cacache::Error },
    #[error("content does not match its sha256 {expected}")]
    Integrity { expected: String },
    #[error("`{key}` is not a sha256 (64 lowercase hex digits)")]
    InvalidKey { key: String },
    /// The shared store (a bucket) did not answer, or refused: worth retrying soon.
    #[error("the shared store failed on {what}: {reason}")]
    Unreachable { what: String, reason: String },
}

impl Error {
    /// The shared store is unreachable: a 503, not a 500.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Error::Unreachable { .. })
    }

    /// The disk (or bucket) is full: nothing can be written until space is freed.
    pub fn is_full(&self) -> bool {
        match self {
            Error::Io { source, .. } => source.kind() == std::io::ErrorKind::StorageFull,
            Error::Cache { source: cacache::Error::IoError(e, _), .. } => e.kind() == std::io::ErrorKind::StorageFull,
            _ => false,
        }
    }
}

/// What `Store::list_records` finds.
#[derive(Debug, Default)]
pub struct Records {
    /// Every record key, sorted.
    pub keys: std::collections::BTreeSet<String>,
    /// Per record key: the sha256 and size of its contents (page records are evicted whole).
    pub contents: std::collections::HashMap<String, (String, u64)>,
}

impl Records {
    /// The keys that start with `prefix`, in order.
    pub fn with_prefix<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.keys.range(prefix.to_string()..).map(String::as_str).take_while(move |k| k.starts_with(prefix))
    }
}

/// A stored blob, opened: its length is known; its bytes are in memory already (small blobs)
/// or read on demand.
pub struct Blob {
    pub len: u64,
    body: BlobBody,
}

enum BlobBody {
    Memory(Bytes),
    Source(Box<dyn BlobSource>),
}

impl Blob {
    pub fn new(len: u64, source: Box<dyn BlobSource>) -> Blob {
        Blob { len, body: BlobBody::Source(source) }
    }

    /// The same blob, its whole-content reads checked against `sha256` as they stream: the
    /// last chunk is held back until the hash is known, and a mismatch ends the stream with an
    /// error instead (the client sees a cut body, never a complete wrong one). For a backend
    /// whose bytes are not checked on the way in (a bucket others write to).
    pub fn verified(self, sha256: &str) -> Blob {
        self.verified_then(sha256, None)
    }

    /// The same; `matched` runs once a whole-content read has matched (a caller that
    /// remembers which blobs it has checked need not check them on every read).
    pub fn verified_then(self, sha256: &str, matched: Option<Box<dyn FnOnce() + Send>>) -> Blob {
        match self.body {
            BlobBody::Memory(_) => self,
            BlobBody::Source(inner) => {
                let source = Verified { inner, sha256: sha256.to_string(), len: self.len, matched };
                Blob { len: self.len, body: BlobBody::Source(Box::new(source)) }
            }
        }
    }

    pub fn in_memory(bytes: Bytes) -> Blob {
        Blob { len: bytes.len() as u64, body: BlobBody::Memory(bytes) }
    }

    /// The whole content, when the backend read it already.
    pub fn bytes(&self) -> Option<&Bytes> {
        match &self.body {
            BlobBody::Memory(b) => Some(b),
            BlobBody::Source(_) => None,
        }
    }

    /// The first `limit` bytes (all of a small blob) in one buffer: for the few small things
    /// Larder reads whole (core metadata), never for files it serves.
    pub async fn read_to_bytes(self, limit: u64) -> std::io::Result<Bytes> {
        let len = self.len.min(limit);
        if let Some(b) = self.bytes() {
            return Ok(b.slice(..len as usize));
        }
        let mut out = bytes::BytesMut::with_capacity(len as usize);
        let mut stream = self.stream(0, len).await?;
        while let Some(chunk) = futures_util::StreamExt::next(&mut stream).await {
            out.extend_from_slice(&chunk?);
        }
        Ok(out.freeze())
    }

    /// Streams `len` bytes starting at `start`; callers have checked the range against `self.len`.
    pub async fn stream(self, start: u64, len: u64) -> std::io::Result<ByteStream> {
        match self.body {
            BlobBody::Memory(b) => {
                let part = b.slice(start as usize..(start + len) as usize);
                Ok(Box::pin(futures_util::stream::once(std::future::ready(Ok(part)))))
            }
            BlobBody::Source(source) => source.stream(start, len).await,
        }
    }
}

/// What a conditional record read found.
#[derive(Debug)]
pub enum RecordRead {
    /// The record is still at the version the caller knows.
    Unchanged,
    /// The record now, with its version, or `None` when there is none.
    Changed(Option<(Vec<u8>, String)>),
}

struct Verified {
    inner: Box<dyn BlobSource>,
    sha256: String,
    len: u64,
    matched: Option<Box<dyn FnOnce() + Send>>,
}

#[async_trait]
impl BlobSource for Verified {
    async fn stream(self: Box<Self>, start: u64, len: u64) -> std::io::Result<ByteStream> {
        let whole = start == 0 && len == self.len;
        let stream = self.inner.stream(start, len).await?;
        if !whole {
            return Ok(stream); // a range cannot be checked on its own
        }
        Ok(verify_stream(stream, self.sha256, self.matched))
    }
}

/// Passes `stream` through, hashing it, one chunk behind: the last chunk goes out only once
/// the whole content matched `sha256`.
fn verify_stream(stream: ByteStream, sha256: String, matched: Option<Box<dyn FnOnce() + Send>>) -> ByteStream {
    use futures_util::StreamExt;
    use sha2::Digest;
    struct State {
        stream: ByteStream,
        hasher: sha2::Sha256,
        held: Option<Bytes>,
        sha256: String,
        done: bool,
        matched: Option<Box<dyn FnOnce() + Send>>,
    }
    let state = State { stream, hasher: sha2::Sha256::new(), held: None, sha256, done: false, matched };
    Box::pin(futures_util::stream::unfold(state, |mut st| async move {
        if st.done {
            return None;
        }
        loop {
            match st.stream.next().await {
                Some(Ok(chunk)) => {
                    st.hasher.update(&chunk);
                    if let Some(out) = st.held.replace(chunk) {
                        return Some((Ok(out), st));
                    }
                }
                Some(Err(e)) => {
                    st.done = true;
                    return Some((Err(e), st));
                }
                None => {
                    st.done = true;
                    let actual = hex::encode(std::mem::take(&mut st.hasher).finalize());
                    if actual != st.sha256 {
                        metrics::counter!("larder_integrity_failures_total").increment(1);
                        tracing::error!(expected = %st.sha256, %actual, "a stored blob does not match its sha256; the download is cut");
                        let e = std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            "stored content does not match its sha256",
                        );
                        return Some((Err(e), st));
                    }
                    if let Some(matched) = st.matched.take() {
                        matched();
                    }
                    return st.held.take().map(|last| (Ok(last), st));
                }
            }
        }
    }))
}

/// How a backend reads an opened blob.
#[async_trait]
pub trait BlobSource: Send {
    async fn stream(self: Box<Self>, start: u64, len: u64) -> std::io::Result<ByteStream>;
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Opens the blob with this sha256 (lowercase hex), or `None` when it is not stored.
    async fn open_blob(&self, sha256: &str) -> Result<Option<Blob>, Error>;

    /// Is this blob stored? (Without opening or reading it.)
    async fn has_blob(&self, sha256: &str) -> Result<bool, Error>;

    /// Stores the complete file at `path` as the blob `sha256`. The backend checks the hash
    /// again and stores nothing on a mismatch; the blob becomes visible all at once.
    async fn put_blob_file(&self, sha256: &str, path: &Path) -> Result<(), Error>;

    /// The same for a file whose sha256 the caller computed over exactly these bytes as it
    /// wrote them (a fill's spool): a backend may adopt the file as it is, without writing
    /// its bytes again (issue 11: a miss writes each byte once). `path` stays where it is.
    async fn put_verified_blob_file(&self, sha256: &str, path: &Path) -> Result<(), Error> {
        self.put_blob_file(sha256, path).await
    }

    /// Stores small in-memory content (metadata files) as a blob.
    async fn put_blob_bytes(&self, sha256: &str, bytes: Bytes) -> Result<(), Error>;

    /// Removes a blob (a deleted private file). Removing a missing blob is not an error.
    async fn delete_blob(&self, sha256: &str) -> Result<(), Error>;

    /// Every stored blob, with its size (for export, verify and eviction).
    async fn list_blobs(&self) -> Result<Vec<(String, u64)>, Error>;

    /// Reads a record, or `None` when there is none.
    async fn get_record(&self, key: &str) -> Result<Option<Vec<u8>>, Error>;

    /// Writes (replaces) a record atomically.
    async fn put_record(&self, key: &str, value: Vec<u8>) -> Result<(), Error>;

    /// Removes a record; removing a missing one is not an error.
    async fn delete_record(&self, key: &str) -> Result<(), Error>;

    /// Every record, in one pass over the index: start-up reads it once and hands it to
    /// everything that needs it.
    async fn list_records(&self) -> Result<Records, Error>;

    /// A record with its version (compare-and-swap writes use it): the sha256 of the contents
    /// on a local store, the ETag on an object store.
    async fn get_record_versioned(&self, key: &str) -> Result<Option<(Vec<u8>, String)>, Error>;

    /// A record, unless it is still at version `known` (`None`: the caller knows of none).
    async fn get_record_if_changed(&self, key: &str, known: Option<&str>) -> Result<RecordRead, Error> {
        let now = self.get_record_versioned(key).await?;
        Ok(if now.as_ref().map(|(_, v)| v.as_str()) == known {
            RecordRead::Unchanged
        } else {
            RecordRead::Changed(now)
        })
    }

    /// Writes a record only if it is still at version `expected` (`None`: only if there is
    /// none), atomically against every writer of the store: no default, so that no backend
    /// (least of all a shared one) can inherit a check-then-write by forgetting it.
    /// `Ok(None)`: somebody else wrote it first; read it again and retry. `Ok(Some(v))`:
    /// written, now at version `v` (empty when the store did not say).
    async fn put_record_if(&self, key: &str, value: Vec<u8>, expected: Option<&str>) -> Result<Option<String>, Error>;

    /// The keys of the records under `prefix`, with their versions when the listing says
    /// (the default filters the whole listing, without versions).
    async fn list_record_keys(&self, prefix: &str) -> Result<Vec<(String, Option<String>)>, Error> {
        Ok(self.list_records().await?.with_prefix(prefix).map(|k| (k.to_string(), None)).collect())
    }

    /// Do other processes write to this store? Then what one process keeps in memory about
    /// shared records must be checked against the store before it is trusted.
    fn is_shared(&self) -> bool {
        false
    }

    /// Where the store lives, for logs.
    fn location(&self) -> String;
}

/// Chooses and opens the store backend from the configuration; the one place that knows which
/// backend runs. With an S3 store, the local disk keeps a bounded cache of hot blobs
/// (`local_cache_size`) in `<data_dir>/cache`.
/// Where a store's background work runs (the engine's tracker) and the signal that ends it
/// (the engine's stop): a shutdown waits for the tracker, and background copies end at the
/// signal rather than hold the shutdown up.
#[derive(Clone, Default)]
pub struct Background {
    pub tasks: TaskTracker,
    pub stop: CancellationToken,
}

impl Background {
    /// Runs `work` on the tracker until it is done or the stop signal fires.
    pub fn spawn(&self, work: impl std::future::Future<Output = ()> + Send + 'static) {
        let stop = self.stop.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                () = stop.cancelled() => {}
                () = work => {}
            }
        });
    }
}

/// `background`: where the store's background work runs (the engine's; a command's own).
pub async fn from_config(
    config: &crate::config::Config,
    background: &Background,
) -> anyhow::Result<std::sync::Arc<dyn Store>> {
    let store = open(config, background).await?;
    // Every command opens its store here, so none reads a store format it does not know.
    match format::check(&*store).await {
        Ok(format::Opened::Current) => {}
        Ok(opened) => {
            tracing::info!(store = %store.location(), format = format::CURRENT, ?opened, "store format stamped")
        }
        // A bucket that does not answer now: replicas keep serving what they can (issue 22's
        // fail-closed rules apply per request); the stamp is checked on the next start.
        Err(format::Refused::Store(e)) if e.is_unreachable() => {
            tracing::warn!(store = %store.location(), error = %e, "could not read the store format; checked on the next start")
        }
        Err(e) => return Err(e.into()),
    }
    Ok(store)
}

/// The backend alone, its format not checked: `larder verify`, which checks it itself.
pub async fn open(
    config: &crate::config::Config,
    background: &Background,
) -> anyhow::Result<std::sync::Arc<dyn Store>> {
    let store: std::sync::Arc<dyn Store> = match &config.s3 {
        None => std::sync::Arc::new(LocalStore::open(&config.data_dir.join("store"))?),
        Some(settings) => {
            let bucket = s3::S3Store::open(settings)?;
            let local = LocalStore::open(&config.data_dir.join("cache"))?;
            let tiered =
                tiered::Tiered::new(bucket, local, config.local_cache_bytes, config.spool_dir(), background.clone())
                    .await?;
            std::sync::Arc::new(tiered)
        }
    };
    Ok(store)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    fn chunks(parts: &[&'static [u8]]) -> ByteStream {
        let items: Vec<std::io::Result<Bytes>> = parts.iter().map(|p| Ok(Bytes::from_static(p))).collect();
        Box::pin(futures_util::stream::iter(items))
    }

    async fn collect(mut s: ByteStream) -> (Vec<u8>, bool) {
        let mut out = Vec::new();
        while let Some(item) = s.next().await {
            match item {
                Ok(b) => out.extend_from_slice(&b),
                Err(_) => return (out, false),
            }
        }
        (out, true)
    }

    #[tokio::test]
    async fn a_verified_stream_never_completes_with_wrong_bytes() {
        let parts: &[&'static [u8]] = &[b"abc", b"def", b"ghi"];
        let right = crate::digest::sha256_hex(b"abcdefghi");
        assert_eq!(collect(verify_stream(chunks(parts), right, None)).await, (b"abcdefghi".to_vec(), true));
        let (got, ok) = collect(verify_stream(chunks(parts), crate::digest::sha256_hex(b"other"), None)).await;
        assert!(!ok, "a mismatch ends in an error");
        assert_eq!(got, b"abcdef", "the last chunk is held back");
        // The callback runs once the whole content matched, never on a mismatch.
        let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (a, b) = (seen.clone(), seen.clone());
        let right = crate::digest::sha256_hex(b"abcdefghi");
        let on_match = Box::new(move || {
            a.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        });
        assert!(collect(verify_stream(chunks(parts), right, Some(on_match))).await.1);
        let on_mismatch = Box::new(move || {
            b.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        });
        let wrong = crate::digest::sha256_hex(b"other");
        assert!(!collect(verify_stream(chunks(parts), wrong, Some(on_mismatch))).await.1);
        assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 1);
        let empty = crate::digest::sha256_hex(b"");
        assert_eq!(collect(verify_stream(chunks(&[]), empty, None)).await, (Vec::new(), true));
    }
}
