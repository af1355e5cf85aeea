//! Filling the store from the upstream: one download per missing file, however many clients ask.
//!
//! The first request for a missing file starts a download task. The task writes the upstream
//! bytes to a spool file while hashing them, and publishes how far it has got on a `watch`
//! channel. Every client asking meanwhile reads the spool file up to that mark, so all of them
//! stream at once from one upstream request, and memory stays flat whatever the file's size.
//! When the bytes are complete and their sha256 matches, the file is committed to the store;
//! on a mismatch nothing is stored and every reader's body ends in an error (UP-04).
//! While the total length is known, readers never get the last byte before the hash check, so
//! a client never receives a complete-looking corrupt file.

use std::path::PathBuf;
use std::sync::{Arc, Weak};

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use crate::archive::ArchiveLimits;
use crate::cache::budget::{self, Busy, ClientKey, Downloads, Slot};
use crate::cache::links::MetadataLinks;
use crate::cache::records::RecordKey;
use crate::coalesce::Coalescer;
use crate::index::{DistFile, FileKey, ProjectName};
use crate::store::bounded::Bounded;
use crate::store::{ByteStream, Store};
use crate::upstream::{self, Upstream};

/// Write to the spool in pieces this large: fewer blocking hops, and readers still see progress.
const SPOOL_CHUNK: usize = 256 * 1024;

/// What to fetch.
#[derive(Debug)]
pub struct FillRequest {
    /// Coalescing key: the expected sha256, or the `u-…` key of a file without one.
    pub key: String,
    pub url: String,
    pub expected_sha256: Option<String>,
    /// The size the page lists: more bytes than this are refused, whatever the upstream sends.
    pub expected_size: Option<u64>,
    /// A cap below `max_file_size` for this kind of file (METADATA).
    pub max_size: Option<u64>,
    /// A record to write with the sha256 once known (files listed without a hash).
    pub alias_record: Option<String>,
    /// A wheel without upstream metadata: extract its METADATA once stored (issue 6), and
    /// report this project so that its page is re-rendered to advertise it.
    pub extract_metadata_for: Option<(ProjectName, String)>,
    /// The upstream that owns the file's project (issue 14: its client, its credentials).
    pub upstream: Upstream,
    /// The place this download takes among its client's (issue 22); freed when the client is
    /// gone, so a hang-up does not count against it.
    pub slot: Option<super::budget::Slot>,
}

impl FillRequest {
    /// The download of a file listed on `project`'s page under `key`; `extract_for` when its
    /// METADATA is to be extracted once stored.
    pub fn for_file(
        upstream: &Upstream,
        key: &FileKey,
        file: &DistFile,
        extract_for: Option<ProjectName>,
    ) -> FillRequest {
        FillRequest {
            key: key.to_string(),
            url: file.url.clone(),
            expected_sha256: file.sha256().map(str::to_string),
            expected_size: file.size,
            max_size: None,
            alias_record: match key {
                FileKey::UrlDigest(digest) => Some(RecordKey::Alias(digest.clone()).to_string()),
                FileKey::Sha256(_) => None,
            },
            extract_metadata_for: extract_for.map(|p| (p, file.filename.clone())),
            upstream: upstream.clone(),
            slot: None,
        }
    }

    /// The download of the metadata the upstream serves next to `file` (MD-08), checked
    /// against the hash its page lists.
    pub fn for_metadata(upstream: &Upstream, file: &DistFile, metadata_sha256: &str) -> FillRequest {
        FillRequest {
            key: metadata_sha256.to_string(),
            url: crate::upstream::metadata_url(&file.url),
            expected_sha256: Some(metadata_sha256.to_string()),
            // METADATA files are small; the extraction limit bounds them (EX-4).
            expected_size: None,
            max_size: Some(crate::metadata::MAX_METADATA),
            alias_record: None,
            extract_metadata_for: None,
            upstream: upstream.clone(),
            slot: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Upstream(#[from] upstream::Error),
    #[error(
        "upstream sent a file whose sha256 is {actual}, not the {expected} its page lists ({url}); nothing was stored"
    )]
    HashMismatch { url: String, expected: String, actual: String },
    #[error("upstream ended {url} after {got} of {expected} bytes; nothing was stored")]
    Truncated { url: String, expected: u64, got: u64 },
    #[error("upstream sent more than the {limit} bytes expected for {url} ({why}); nothing was stored")]
    TooLarge { url: String, limit: u64, why: &'static str },
    #[error("cannot write the download spool: {0}")]
    Spool(#[from] std::io::Error),
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    #[error(transparent)]
    Internal(#[from] crate::coalesce::Panicked),
    /// A download another piece of work waited for, and its failure.
    #[error(transparent)]
    Shared(Arc<Error>),
    /// The wheel's METADATA cannot be read, not by ranges and not from the whole wheel.
    #[error("{0}")]
    NoMetadata(String),
    /// Every client of this download hung up, and the budget for finishing downloads nobody
    /// reads was taken (issue 22): nothing was stored.
    #[error("the download of {url} was stopped: every client reading it had gone; retry")]
    Cancelled { url: String },
}

/// The largest Range a miss passes to the upstream; a larger one downloads the whole file
/// (and is served from the store). Resolvers ask for a wheel's tail and one member, a few KiB
/// to a few hundred; passed-through bytes are held in memory while they are sent.
pub const MAX_PASSTHROUGH_RANGE: u64 = 2 * 1024 * 1024;

type Shared<T> = crate::coalesce::SharedResult<T, Error>;

#[derive(Clone, Debug)]
pub enum FillState {
    Connecting,
    Streaming {
        written: u64,
        total: Option<u64>,
    },
    /// Complete and hash-checked: readers may finish from the spool while the store commits.
    Verified {
        len: u64,
    },
    Done {
        sha256: String,
        len: u64,
    },
    Failed(Arc<Error>),
    /// Complete and hash-checked, but the store could not keep it (a full disk): readers
    /// finish from the spool; whoever waits for the stored file gets the error, and the next
    /// request downloads it again.
    Unstored {
        len: u64,
        error: Arc<Error>,
    },
}

/// One download under way.
pub struct Fill {
    state: watch::Receiver<FillState>,
    spool: PathBuf,
}

pub struct Fills {
    inflight: Arc<Coalescer<String, Arc<Fill>>>,
    /// HEAD and Range on a miss, passed to the upstream (issue 11): one request per URL or
    /// per URL and range, however many clients ask at once. Never stored.
    lengths: Arc<Coalescer<String, Shared<u64>>>,
    ranges: Arc<Coalescer<(String, u64, u64), Shared<bytes::Bytes>>>,
    /// `.metadata` on demand, per wheel sha256: the stored metadata's sha256.
    metadata: Arc<Coalescer<String, Shared<String>>>,
    /// METADATA read by ranges, per wheel sha256, shared by the prefetcher and the clients: a
    /// client asking for a wheel the prefetcher is reading joins it (issue 21).
    by_ranges: Arc<Coalescer<String, Shared<String>>>,
    /// The store, bounded: after a commit, the size limit is enforced.
    store: Arc<Bounded>,
    spool_dir: PathBuf,
    links: Arc<MetadataLinks>,
    archive_limits: ArchiveLimits,
    /// Projects whose metadata links changed: their pages are re-rendered by the engine.
    relinked: tokio::sync::mpsc::UnboundedSender<ProjectName>,
    /// Large downloads each client has started (issue 22).
    downloads: Arc<Downloads>,
    /// Downloads that go on after their last reader left: a few, so that a file clients hang
    /// up on is still cached, but never so many that they hold the upstream permits.
    unread: Arc<Semaphore>,
}

/// The sha256 a wheel's metadata is linked to (a wheel listed without one has no link).
fn wheel_sha(file: &DistFile) -> Result<String, Arc<Error>> {
    let sha = file.sha256().map(str::to_string);
    sha.ok_or_else(|| Arc::new(Error::NoMetadata(format!("`{}` has no sha256 to link metadata to", file.filename))))
}

/// The sizes of the two download budgets.
#[derive(Clone, Copy, Debug)]
pub struct FillBudgets {
    pub per_client: usize,
    pub unread: usize,
}

impl Fills {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Arc<Bounded>,
        spool_dir: PathBuf,
        links: Arc<MetadataLinks>,
        archive_limits: ArchiveLimits,
        tasks: tokio_util::task::TaskTracker,
        relinked: tokio::sync::mpsc::UnboundedSender<ProjectName>,
        budgets: FillBudgets,
    ) -> std::io::Result<Fills> {
        std::fs::create_dir_all(&spool_dir)?;
        Ok(Fills {
            inflight: Coalescer::new(tasks.clone()),
            lengths: Coalescer::new(tasks.clone()),
            ranges: Coalescer::new(tasks.clone()),
            metadata: Coalescer::new(tasks.clone()),
            by_ranges: Coalescer::new(tasks),
            store,
            spool_dir,
            links,
            archive_limits,
            relinked,
            downloads: Downloads::new(budgets.per_client),
            unread: Arc::new(Semaphore::new(budgets.unread.max(1))),
        })
    }

    /// A place for a download `client` starts of a file of `size` (issue 22): only large
    /// files (or of unknown size) count; `None` client (the operator's commands) is free.
    pub async fn slot_for(&self, client: Option<&ClientKey>, size: Option<u64>) -> Result<Option<Slot>, Busy> {
        match client {
            Some(client) if size.is_none_or(|s| s >= budget::LARGE_FILE) => {
                Ok(Some(self.downloads.slot(client, budget::CLIENT_WAIT).await?))
            }
            _ => Ok(None),
        }
    }

    /// The download under way for this key, if any (a Range request may read it).
    pub fn in_flight(&self, key: &str) -> Option<Arc<Fill>> {
        self.inflight.get(&key.to_string())
    }

    /// A wheel's METADATA on demand (issue 11), for a `.metadata` request that came before any
    /// link: read by ranges (the prefetcher's reader) and checked against the project's name;
    /// when that fails (no range support, an odd zip), the whole wheel is downloaded, checked
    /// against its sha256 and its METADATA extracted. Either way stored and linked, so pages
    /// advertise the hash from then on. Coalesced per wheel; returns the metadata's sha256.
    pub async fn metadata_on_demand(
        self: &Arc<Self>,
        upstream: &Upstream,
        project: &ProjectName,
        key: &FileKey,
        file: &DistFile,
    ) -> Result<String, Arc<Error>> {
        let wheel = wheel_sha(file)?;
        let (this, up, project, key, file) =
            (Arc::clone(self), upstream.clone(), project.clone(), key.clone(), file.clone());
        self.metadata
            .run(wheel.clone(), move || async move { this.read_metadata(&up, &wheel, &project, &key, &file).await })
            .await
    }

    /// A wheel's METADATA read by range requests (never the whole wheel), checked against the
    /// project's name, stored and linked; coalesced per wheel, so the prefetcher and a client
    /// asking meanwhile share one read. Returns the metadata's sha256.
    pub async fn metadata_by_ranges(
        self: &Arc<Self>,
        upstream: &Upstream,
        project: &ProjectName,
        file: &DistFile,
    ) -> Result<String, Arc<Error>> {
        let wheel = wheel_sha(file)?;
        let (this, up, project, file) = (Arc::clone(self), upstream.clone(), project.clone(), file.clone());
        self.by_ranges
            .run(wheel.clone(), move || async move {
                if let Some(md) = this.links.get(&wheel) {
                    return Ok(md);
                }
                let raw =
                    up.fetch_wheel_metadata(&file.url, file.size).await.map_err(|e| e.to_string()).and_then(|raw| {
                        let md = crate::metadata::CoreMetadata::parse(raw)?;
                        if crate::metadata::names_match(&md.name, project.as_str()) {
                            Ok(md.raw)
                        } else {
                            Err(format!("METADATA names `{}`", md.name))
                        }
                    });
                let raw = raw.map_err(Error::NoMetadata)?;
                let md = this.links.store(&wheel, raw).await?;
                let _ = this.relinked.send(project);
                Ok(md)
            })
            .await
    }

    async fn read_metadata(
        self: &Arc<Self>,
        upstream: &Upstream,
        wheel: &str,
        project: &ProjectName,
        key: &FileKey,
        file: &DistFile,
    ) -> Result<String, Error> {
        if let Some(md) = self.links.get(wheel) {
            return Ok(md);
        }
        match self.metadata_by_ranges(upstream, project, file).await {
            Ok(md) => return Ok(md),
            Err(reason) => {
                tracing::info!(file = %file.filename, %reason, "cannot read METADATA by ranges; downloading the wheel");
            }
        }
        let fill = self.join(FillRequest::for_file(upstream, key, file, None));
        match fill.finished().await {
            FillState::Done { .. } => {}
            FillState::Failed(e) | FillState::Unstored { error: e, .. } => return Err(Error::Shared(e)),
            _ => return Err(Error::NoMetadata("the download ended without a result; retry".into())),
        }
        // Extracted here from the stored, hash-checked wheel (a copy in the spool directory).
        let blob = self
            .store
            .open_blob(wheel)
            .await?
            .ok_or_else(|| Error::NoMetadata("the wheel vanished from the store".into()))?;
        let copy = self.spool_dir.join(format!("{wheel}.{:016x}.part", rand::random::<u64>()));
        let written = async {
            let mut out = tokio::fs::File::create(&copy).await?;
            let len = blob.len;
            let mut stream = blob.stream(0, len).await?;
            while let Some(chunk) = stream.next().await {
                out.write_all(&chunk?).await?;
            }
            out.flush().await
        }
        .await;
        let relinked = match written {
            Ok(()) => self.links.extract_from_file(wheel, &file.filename, &copy, self.archive_limits).await,
            Err(e) => {
                let _ = tokio::fs::remove_file(&copy).await;
                return Err(Error::Spool(e));
            }
        };
        let _ = tokio::fs::remove_file(&copy).await;
        if relinked.is_some() {
            let _ = self.relinked.send(project.clone());
        }
        self.links.get(wheel).ok_or_else(|| Error::NoMetadata(format!("`{}` has no readable METADATA", file.filename)))
    }

    /// The length of an upstream file, by one HEAD request (coalesced).
    pub async fn upstream_len(&self, upstream: &Upstream, url: &str) -> Result<u64, Arc<Error>> {
        let up = upstream.clone();
        let owned = url.to_string();
        self.lengths.run(url.to_string(), move || async move { Ok(up.file_len(&owned).await?) }).await
    }

    /// Bytes `start..=end` of an upstream file, by one Range request (coalesced). The bytes
    /// are the upstream's word: only whole, hash-checked files are ever stored.
    pub async fn upstream_range(
        &self,
        upstream: &Upstream,
        url: &str,
        start: u64,
        end: u64,
    ) -> Result<bytes::Bytes, Arc<Error>> {
        let up = upstream.clone();
        let owned = url.to_string();
        self.ranges
            .run((url.to_string(), start, end), move || async move { Ok(up.file_range(&owned, start, end).await?) })
            .await
    }

    /// Removes the spool files a crash left behind (never visible: they are not in the
    /// store). Only a server does this at start: a command may run beside it.
    pub fn clear_spool(&self) {
        for entry in std::fs::read_dir(&self.spool_dir).into_iter().flatten().flatten() {
            if entry.path().extension().is_some_and(|e| e == "part") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    /// Joins the download for `req.key`, starting it when none is under way.
    pub fn join(self: &Arc<Self>, req: FillRequest) -> Arc<Fill> {
        let (fill, joined) = self.inflight.join_or_start(req.key.clone(), || {
            let (tx, rx) = watch::channel(FillState::Connecting);
            let spool = self.spool_dir.join(format!("{}.{:016x}.part", req.key, rand::random::<u64>()));
            let fill = Arc::new(Fill { state: rx, spool: spool.clone() });
            let readers = Arc::downgrade(&fill);
            let this = Arc::clone(self);
            (fill, async move { this.run(req, tx, spool, readers).await })
        });
        if joined {
            metrics::counter!("larder_coalesced_waits_total").increment(1);
        }
        fill
    }

    async fn run(
        self: Arc<Self>,
        mut req: FillRequest,
        tx: watch::Sender<FillState>,
        spool: PathBuf,
        readers: Weak<Fill>,
    ) {
        let started = std::time::Instant::now();
        // A request that looked at the store just before another fill committed this file
        // finds it here, instead of downloading it again.
        if let Some(sha) = &req.expected_sha256
            && !self.store.is_record_content(sha)
            && let Ok(Some(blob)) = self.store.open_blob(sha).await
        {
            tx.send_replace(FillState::Done { sha256: sha.clone(), len: blob.len });
            return;
        }
        let mut slot = req.slot.take();
        let result =
            self.download(&req, &tx, &spool, &mut Readers { fill: readers, slot: &mut slot, unread: None }).await;
        match result {
            Ok((sha256, len)) => {
                tracing::info!(url = %upstream::guard::redact(&req.url), %sha256, bytes = len, ms = started.elapsed().as_millis() as u64, "stored file from upstream");
                tx.send_replace(FillState::Done { sha256: sha256.clone(), len });
                // Issue 6, after Done so that no client waits for it: the wheel's METADATA,
                // read from the spool while it still exists.
                if let Some((project, filename)) = &req.extract_metadata_for
                    && self.links.extract_from_file(&sha256, filename, &spool, self.archive_limits).await.is_some()
                {
                    let _ = self.relinked.send(project.clone());
                }
            }
            Err(e) => {
                tracing::warn!(url = %upstream::guard::redact(&req.url), error = %e, "download from upstream failed");
                let verified = match *tx.borrow() {
                    FillState::Verified { len } => Some(len),
                    _ => None,
                };
                tx.send_replace(match verified {
                    Some(len) => FillState::Unstored { len, error: Arc::new(e) },
                    None => FillState::Failed(Arc::new(e)),
                });
                // A failure is not remembered: the next request tries again.
            }
        }
    }

    async fn download(
        &self,
        req: &FillRequest,
        tx: &watch::Sender<FillState>,
        spool: &PathBuf,
        readers: &mut Readers<'_>,
    ) -> Result<(String, u64), Error> {
        let url = upstream::guard::redact(&req.url);
        // The permit is held for the whole download: it bounds upstream connections.
        let (resp, _permit) = req.upstream.fetch_file(&req.url).await?;
        // Without a Content-Length (chunked), the page's size is the length clients are
        // promised (HDR-2, ROUTE-06: pip's progress bar has a total); a body of another size
        // is then refused as truncated or too large.
        let total = resp.content_length().or(req.expected_size);
        // A hostile upstream must not fill the disk: the page's size, else Content-Length,
        // else the configured maximum, bounds what is written (issue 9).
        let (limit, why) = match (req.expected_size, total) {
            (Some(listed), Some(announced)) if listed != announced => {
                return Err(Error::TooLarge { url, limit: listed, why: "Content-Length differs from the page's size" });
            }
            (Some(listed), _) => (listed, "the page's size"),
            (None, Some(announced)) => (announced, "Content-Length"),
            (None, None) => (req.upstream.max_file_bytes(), "max_file_size"),
        };
        // An announced size is a promise, not a permission: max_file_size caps it too, and a
        // METADATA file is capped at what extraction accepts.
        let cap = req.max_size.unwrap_or(u64::MAX).min(req.upstream.max_file_bytes());
        let (limit, why) = if limit > cap { (cap, "the size limit for such files") } else { (limit, why) };
        let mut file = tokio::fs::File::create(spool).await?;
        tx.send_replace(FillState::Streaming { written: 0, total });
        let mut hasher = Sha256::new();
        let mut written = 0u64;
        let mut pending = BytesMut::with_capacity(SPOOL_CHUNK);
        let mut body = resp.bytes_stream();
        loop {
            let chunk = body.next().await.transpose().map_err(|e| Upstream::body_error(&req.url, e))?;
            if let Some(chunk) = &chunk {
                if written + (pending.len() + chunk.len()) as u64 > limit {
                    return Err(Error::TooLarge { url, limit, why });
                }
                hasher.update(chunk);
                pending.extend_from_slice(chunk);
            }
            if pending.len() >= SPOOL_CHUNK || (chunk.is_none() && !pending.is_empty()) {
                file.write_all(&pending).await?;
                file.flush().await?; // the bytes are in the file before readers are told
                written += pending.len() as u64;
                pending.clear();
                tx.send_replace(FillState::Streaming { written, total });
            }
            if chunk.is_none() {
                break;
            }
            if readers.unread(tx, &self.unread) {
                metrics::counter!("larder_fills_cancelled_total").increment(1);
                tracing::info!(url = %url, written, "stopped a download every client had left");
                return Err(Error::Cancelled { url });
            }
        }
        if let Some(total) = total
            && total != written
        {
            return Err(Error::Truncated { url, expected: total, got: written });
        }
        let actual = hex::encode(hasher.finalize());
        if let Some(expected) = &req.expected_sha256
            && *expected != actual
        {
            return Err(Error::HashMismatch { url, expected: expected.clone(), actual });
        }
        drop(file);
        // The bytes are right: let streaming clients finish now, not after the commit.
        tx.send_replace(FillState::Verified { len: written });
        // Hashed as it was written: the store adopts the spool instead of copying it.
        self.store.put_verified_blob_file(&actual, spool).await?;
        self.store.enforce().await;
        if let Some(alias) = &req.alias_record {
            self.store.put_record(alias, actual.clone().into_bytes()).await?;
        }
        metrics::counter!("larder_upstream_bytes_total", "upstream" => req.upstream.name().to_string())
            .increment(written);
        Ok((actual, written))
    }
}

/// Who still reads a download, and what it may go on with when nobody does.
struct Readers<'a> {
    /// The download's handle: the coalescer holds one; every client waiting on it another.
    fill: Weak<Fill>,
    slot: &'a mut Option<Slot>,
    /// Taken when the last reader left: this download goes on as background work.
    unread: Option<OwnedSemaphorePermit>,
}

impl Readers<'_> {
    /// True when nobody reads this download any more and it may not go on unread. A client
    /// streaming it holds a receiver; one waiting for it holds the handle; the coalescer holds
    /// one handle and the handle one receiver.
    fn unread(&mut self, tx: &watch::Sender<FillState>, budget: &Arc<Semaphore>) -> bool {
        if self.unread.is_some() || self.fill.strong_count() > 1 || tx.receiver_count() > 1 {
            return false;
        }
        // The client is gone: its place is free for its next download.
        self.slot.take();
        match Arc::clone(budget).try_acquire_owned() {
            Ok(permit) => {
                self.unread = Some(permit);
                false
            }
            Err(_) => true,
        }
    }
}

/// The spool file goes with the last handle: every client that joined this download can still
/// read it, also one that arrives after the end (readers keep their open file handles).
impl Drop for Fill {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.spool);
    }
}

impl Fill {
    /// Waits until the upstream answered (or failed).
    pub async fn started(&self) -> FillState {
        self.wait_until(|s| !matches!(s, FillState::Connecting)).await
    }

    /// Waits until the file is stored (or the download failed).
    pub async fn finished(&self) -> FillState {
        self.wait_until(|s| matches!(s, FillState::Done { .. } | FillState::Failed(_) | FillState::Unstored { .. }))
            .await
    }

    /// The first state that satisfies `ready` (or the last one, if the task is gone).
    async fn wait_until(&self, ready: impl FnMut(&FillState) -> bool) -> FillState {
        let mut rx = self.state.clone();
        let state = rx.wait_for(ready).await.map(|s| s.clone());
        state.unwrap_or_else(|_| rx.borrow().clone())
    }

    /// Streams the file from the spool as it is written. `None` when the spool is already gone
    /// (the download finished): then read the store.
    /// Bytes `start..=end` of the download, as soon as the spool has them (a Range request
    /// joining a download under way, issue 11). The upstream's bytes, not yet hash-checked
    /// unless the download is complete, like any passed-through range. `None` when the download
    /// failed or the spool cannot be read: the caller waits for the stored file instead.
    pub async fn range(&self, start: u64, end: u64) -> Option<Bytes> {
        let state = self
            .wait_until(|s| match s {
                FillState::Streaming { written, .. } => *written > end,
                FillState::Connecting => false,
                _ => true,
            })
            .await;
        let len = match state {
            FillState::Streaming { written, .. } => written,
            FillState::Verified { len } | FillState::Done { len, .. } | FillState::Unstored { len, .. } => len,
            FillState::Failed(_) | FillState::Connecting => return None,
        };
        if end >= len || end < start {
            return None;
        }
        let mut file = tokio::fs::File::open(&self.spool).await.ok()?;
        tokio::io::AsyncSeekExt::seek(&mut file, std::io::SeekFrom::Start(start)).await.ok()?;
        let mut buf = BytesMut::zeroed((end - start + 1) as usize);
        file.read_exact(&mut buf).await.ok()?;
        Some(buf.freeze())
    }

    pub async fn stream(self: &Arc<Self>) -> Option<ByteStream> {
        let file = tokio::fs::File::open(&self.spool).await.ok()?;
        let reader = SpoolReader { rx: self.state.clone(), file, pos: 0, buf_size: SPOOL_CHUNK };
        Some(Box::pin(futures_util::stream::unfold(Some(reader), |reader| async move {
            let mut reader = reader?;
            match reader.next_chunk().await {
                Ok(Some(bytes)) => Some((Ok(bytes), Some(reader))),
                Ok(None) => None,
                Err(e) => Some((Err(e), None)),
            }
        })))
    }
}

struct SpoolReader {
    rx: watch::Receiver<FillState>,
    file: tokio::fs::File,
    pos: u64,
    buf_size: usize,
}

impl SpoolReader {
    async fn next_chunk(&mut self) -> std::io::Result<Option<Bytes>> {
        loop {
            let state = self.rx.borrow_and_update().clone();
            let readable = match &state {
                FillState::Connecting => 0,
                // Hold back the last byte until the hash is checked.
                FillState::Streaming { written, total: Some(total) } => (*written).min(total.saturating_sub(1)),
                FillState::Streaming { written, total: None } => *written,
                FillState::Verified { len } | FillState::Done { len, .. } | FillState::Unstored { len, .. } => *len,
                FillState::Failed(e) => return Err(std::io::Error::other(e.to_string())),
            };
            if self.pos < readable {
                let want = ((readable - self.pos) as usize).min(self.buf_size);
                let mut buf = BytesMut::zeroed(want);
                self.file.read_exact(&mut buf).await?;
                self.pos += want as u64;
                return Ok(Some(buf.freeze()));
            }
            if matches!(state, FillState::Verified { .. } | FillState::Done { .. } | FillState::Unstored { .. }) {
                return Ok(None);
            }
            if self.rx.changed().await.is_err()
                && !matches!(
                    *self.rx.borrow(),
                    FillState::Done { .. } | FillState::Failed(_) | FillState::Unstored { .. }
                )
            {
                return Err(std::io::Error::other("download task ended unexpectedly"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A Range joining a download is answered while the download is still under way, as soon
    /// as the spool holds its bytes (issue 11); never from bytes not yet written, and not at
    /// all from a failed download.
    #[tokio::test]
    async fn a_range_is_read_from_the_spool_mid_download() {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join("x.part");
        let data: Vec<u8> = (0..100u8).collect();
        std::fs::write(&spool, &data[..50]).unwrap();
        let (tx, rx) = watch::channel(FillState::Streaming { written: 5, total: Some(100) });
        let fill = Arc::new(Fill { state: rx, spool });
        // Bytes 10..=19 are not written yet: no answer.
        let early = tokio::time::timeout(Duration::from_millis(100), fill.range(10, 19)).await;
        assert!(early.is_err(), "answered before the bytes were there");
        // Written up to 50, the download still under way: answered now, not at the end.
        tx.send_replace(FillState::Streaming { written: 50, total: Some(100) });
        let bytes = tokio::time::timeout(Duration::from_secs(5), fill.range(10, 19)).await.unwrap().unwrap();
        assert_eq!(bytes.as_ref(), &data[10..20]);
        // Beyond what a failed download wrote: nothing.
        tx.send_replace(FillState::Failed(Arc::new(Error::NoMetadata("test".into()))));
        assert!(fill.range(60, 69).await.is_none());
    }
}
