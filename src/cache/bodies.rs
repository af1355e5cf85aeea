//! Page bodies in the store (issue 21): each rendering of an upstream page is written once per
//! change as immutable blobs (identity, gzip, zstd) and read back the way file hits are, hash
//! checked on the way from the disk into the small hot-body memory; and the journal of when
//! each page was last confirmed upstream, so that freshness survives eviction and restarts;
//! and the queue of page writes on their way there (`WriteQueue`).

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::index::ProjectName;
use crate::index::rendered::{Bodies, Body};
use crate::store::bounded::Bounded;
use crate::store::{Blob, Store};

#[derive(Clone)]
pub struct BodyStore {
    store: Arc<Bounded>,
    /// One page compressed at a time: background work takes one core at most, never both
    /// from the clients (issue 21: a cold resolve must not wait behind it).
    compressing: Arc<tokio::sync::Semaphore>,
    /// Small bodies read recently, checked against their sha256 when they came from the disk.
    hot: moka::future::Cache<String, Bytes>,
    /// Large bodies whose whole content this process has read from the disk and found to
    /// match: later reads stream them unchecked, as file hits are (hashing a 1.3 MB body on
    /// every hit halved page throughput). Damage is caught on the first read after a start.
    checked: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
}

/// Large bodies remembered as checked, at most (then the set starts again: they are checked
/// once more, never trusted unchecked).
const MAX_CHECKED: usize = 100_000;

impl BodyStore {
    pub fn new(store: Arc<Bounded>, hot_bytes: u64) -> BodyStore {
        let hot = moka::future::Cache::builder()
            .max_capacity(hot_bytes)
            .weigher(|_k, v: &Bytes| v.len().try_into().unwrap_or(u32::MAX))
            .build();
        BodyStore { store, hot, compressing: Arc::new(tokio::sync::Semaphore::new(1)), checked: Arc::default() }
    }

    /// Compresses `bodies` and writes every body still in memory as a blob; the result holds
    /// descriptors only.
    pub async fn put(&self, bodies: Arc<Bodies>) -> Result<Bodies, crate::store::Error> {
        let compressed = {
            let _turn = self.cpu_turn().await?;
            blocking("compressing a page", move || bodies.compressed()).await?
        };
        self.store_inline(&compressed).await
    }

    /// A turn at the CPU-heavy part of storing a page (compression, encoding its record): one
    /// page at a time, so background work takes one core at most, never both from the clients
    /// (issue 21: a cold resolve must not wait behind it). Hold it across `blocking`.
    pub async fn cpu_turn(&self) -> Result<tokio::sync::SemaphorePermit<'_>, crate::store::Error> {
        self.compressing.acquire().await.map_err(|e| io("compressing a page", std::io::Error::other(e)))
    }

    /// Writes every body of `bodies` still in memory as a blob (I/O: several pages at once).
    pub async fn store_inline(&self, bodies: &Bodies) -> Result<Bodies, crate::store::Error> {
        for body in bodies.inline() {
            let bytes = body.inline.clone().expect("inline");
            self.store.put_blob_bytes(&body.sha256, bytes).await?;
        }
        Ok(bodies.stored())
    }

    /// Evicts what the hot bodies are over their budget by (see `Pages::tidy`).
    pub async fn tidy(&self) {
        self.hot.run_pending_tasks().await;
        metrics::gauge!("larder_memory_cache_bytes", "cache" => "page_bodies").set(self.hot.weighted_size() as f64);
    }

    /// The bytes of `body`: from memory, or its blob, checked against its sha256 (a damaged or
    /// missing blob is `None`: the caller renders the page again, never serves it).
    pub async fn read(&self, body: &Body) -> Option<Blob> {
        if let Some(bytes) = &body.inline {
            return Some(Blob::in_memory(bytes.clone()));
        }
        if let Some(bytes) = self.hot.get(&body.sha256).await {
            self.store.touch_blob_known(&body.sha256);
            return Some(Blob::in_memory(bytes));
        }
        let blob = match self.store.open_blob(&body.sha256).await {
            Ok(Some(b)) if b.len == body.len => b,
            // The descriptor is wrong, not necessarily the blob: render again, delete nothing.
            Ok(Some(_)) => return None,
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!(sha256 = %body.sha256, error = %e, "cannot read a stored page body; rendering it again");
                return None;
            }
        };
        match blob.bytes() {
            Some(bytes) => {
                if crate::digest::sha256_hex(bytes) != body.sha256 {
                    return self.damaged(&body.sha256, "it does not match its sha256").await;
                }
                self.hot.insert(body.sha256.clone(), bytes.clone()).await;
                Some(blob)
            }
            // Large: checked as it streams (the last chunk waits for the hash), the first time.
            None => {
                let checked = self.checked.clone();
                if checked.lock().unwrap_or_else(|p| p.into_inner()).contains(&body.sha256) {
                    return Some(blob);
                }
                let sha = body.sha256.clone();
                let remember = Box::new(move || {
                    let mut set = checked.lock().unwrap_or_else(|p| p.into_inner());
                    if set.len() >= MAX_CHECKED {
                        set.clear();
                    }
                    set.insert(sha);
                });
                Some(blob.verified_then(&body.sha256, Some(remember)))
            }
        }
    }

    /// Removes a body no page names any more.
    pub async fn forget(&self, sha: &str) {
        self.hot.invalidate(sha).await;
        self.checked.lock().unwrap_or_else(|p| p.into_inner()).remove(sha);
        let _ = self.store.delete_blob(sha).await;
    }

    async fn damaged(&self, sha: &str, why: &str) -> Option<Blob> {
        self.checked.lock().unwrap_or_else(|p| p.into_inner()).remove(sha);
        metrics::counter!("larder_integrity_failures_total").increment(1);
        tracing::error!(sha256 = %sha, why, "a stored page body is damaged; it is removed and the page rendered again");
        let _ = self.store.delete_blob(sha).await;
        None
    }
}

/// Runs CPU work on the blocking pool (never on the request workers).
pub async fn blocking<T: Send + 'static>(
    what: &str,
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, crate::store::Error> {
    tokio::task::spawn_blocking(work).await.map_err(|e| io(what, std::io::Error::other(e)))?.map_err(|e| io(what, e))
}

fn io(what: &str, source: std::io::Error) -> crate::store::Error {
    crate::store::Error::Io { what: what.to_string(), source }
}

/// When each page was last confirmed upstream, kept in `<data_dir>/pages-confirmed` (one
/// `name unix` line each), rewritten whole at most every few seconds. Not in the record
/// store: its index is append-only, and a rewrite per revalidation would grow it without
/// bound (crates-notes §9.2). Lost lines only cost a revalidation.
pub struct Journal {
    path: Option<PathBuf>,
    times: std::sync::Mutex<HashMap<ProjectName, u64>>,
    dirty: AtomicBool,
}

impl Journal {
    /// Reads the journal at `path` (`None`: kept in memory only); bad lines are skipped.
    pub fn open(path: Option<PathBuf>) -> Journal {
        let mut times = HashMap::new();
        if let Some(text) = path.as_ref().and_then(|p| std::fs::read_to_string(p).ok()) {
            for line in text.lines() {
                let Some((name, t)) = line.split_once(' ') else { continue };
                if let (Ok(name), Ok(t)) = (ProjectName::parse(name), t.parse::<u64>()) {
                    times.insert(name, t);
                }
            }
        }
        Journal { path, times: std::sync::Mutex::new(times), dirty: AtomicBool::new(false) }
    }

    pub fn get(&self, name: &ProjectName) -> Option<u64> {
        self.times.lock().expect("journal lock").get(name).copied()
    }

    pub fn confirmed(&self, name: &ProjectName, unix: u64) {
        self.times.lock().expect("journal lock").insert(name.clone(), unix);
        self.dirty.store(true, Ordering::Relaxed);
    }

    /// Writes the journal when it changed, dropping times older than `oldest` (no use any
    /// more: such pages are revalidated whatever the journal says).
    pub async fn flush(&self, oldest: u64) {
        let Some(path) = self.path.clone() else { return };
        if !self.dirty.swap(false, Ordering::Relaxed) {
            return;
        }
        let text = {
            let mut times = self.times.lock().expect("journal lock");
            times.retain(|_, t| *t >= oldest);
            let mut text = String::with_capacity(times.len() * 32);
            for (name, t) in times.iter() {
                text.push_str(name.as_str());
                text.push(' ');
                text.push_str(&t.to_string());
                text.push('\n');
            }
            text
        };
        let result = tokio::task::spawn_blocking(move || {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, text)?;
            std::fs::rename(&tmp, &path)
        })
        .await;
        if let Ok(Err(e)) | Err(e) = result.map_err(std::io::Error::other) {
            tracing::warn!(error = %e, "cannot write the page freshness journal; pages will be revalidated after a restart");
            self.dirty.store(true, Ordering::Relaxed);
        }
    }
}

// The write queue. Page writes waiting for the disk (issue 21): one entry per page, however often it changes
// before it is written (a miss, then the relink after its metadata arrived, then its HTML),
// the newest state winning; bounded by the bytes the waiting pages hold, not by their number,
// so a cold resolve's hundred pages are all kept while a flood of misses cannot queue memory
// without limit. A few workers drain it, never two on one page at once (an older state
// finishing last would roll the page back); each runs on the engine's task tracker and stops
// when nothing is left for it, so shutdown waits for every write that was queued.

/// What `push` did with a job.
#[derive(Debug, PartialEq, Eq)]
pub enum Queued {
    /// Queued; `start_worker`: the caller starts one more worker to drain it.
    New { start_worker: bool },
    /// Merged into the job already waiting for this page.
    Merged,
    /// Over the byte budget: not queued (the page stays in memory only).
    Full,
}

pub struct WriteQueue<J> {
    inner: Mutex<Inner<J>>,
    budget: usize,
    max_workers: usize,
}

struct Inner<J> {
    jobs: HashMap<ProjectName, (J, usize)>,
    order: VecDeque<ProjectName>,
    bytes: usize,
    workers: usize,
    /// Pages a worker is writing now.
    writing: HashSet<ProjectName>,
}

impl<J> WriteQueue<J> {
    pub fn new(budget: usize, max_workers: usize) -> WriteQueue<J> {
        let inner =
            Inner { jobs: HashMap::new(), order: VecDeque::new(), bytes: 0, workers: 0, writing: HashSet::new() };
        WriteQueue { inner: Mutex::new(inner), budget, max_workers: max_workers.max(1) }
    }

    /// What the waiting writes weigh (for `/metrics`).
    pub fn bytes(&self) -> usize {
        self.inner.lock().expect("write queue lock").bytes
    }

    /// Queues `job` (weighing `weight` bytes) for `name`; a job already waiting for it is
    /// replaced by `merge(waiting, job)`, in its place in the queue.
    pub fn push(&self, name: ProjectName, job: J, weight: usize, merge: impl FnOnce(J, J) -> J) -> Queued {
        let mut inner = self.inner.lock().expect("write queue lock");
        if let Some((waiting, waiting_weight)) = inner.jobs.remove(&name) {
            let bytes = inner.bytes - waiting_weight + weight;
            inner.bytes = bytes;
            inner.jobs.insert(name, (merge(waiting, job), weight));
            return Queued::Merged;
        }
        // One job always fits, however big: a page that large must still be storable.
        if !inner.jobs.is_empty() && inner.bytes + weight > self.budget {
            return Queued::Full;
        }
        inner.bytes += weight;
        inner.jobs.insert(name.clone(), (job, weight));
        inner.order.push_back(name);
        let start_worker = inner.workers < self.max_workers;
        if start_worker {
            inner.workers += 1;
        }
        Queued::New { start_worker }
    }

    /// The next job for a worker that just wrote `finished` (`None` on its first call): the
    /// oldest one whose page no other worker is writing. `None` when there is none, and the
    /// worker then stops (counted off under the same lock, so a job pushed meanwhile starts a
    /// new one, and a job waiting behind another worker's page is taken by that worker).
    pub fn next(&self, finished: Option<&ProjectName>) -> Option<(ProjectName, J)> {
        let mut inner = self.inner.lock().expect("write queue lock");
        if let Some(name) = finished {
            inner.writing.remove(name);
        }
        let free = inner.order.iter().position(|n| !inner.writing.contains(n));
        let Some(name) = free.and_then(|i| inner.order.remove(i)) else {
            inner.workers -= 1;
            return None;
        };
        let (job, weight) = inner.jobs.remove(&name).expect("every queued name has its job");
        inner.bytes -= weight;
        inner.writing.insert(name.clone());
        Some((name, job))
    }

    /// Jobs waiting.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.inner.lock().expect("write queue lock").jobs.len()
    }
}

#[cfg(test)]
mod queue_tests {
    #[test]
    fn no_two_workers_write_one_page_at_once() {
        let q = WriteQueue::new(1000, 2);
        assert_eq!(q.push(n("a"), 1, 1, |_, b| b), Queued::New { start_worker: true });
        assert_eq!(q.next(None), Some((n("a"), 1)));
        // `a` changes while it is being written: queued again, not given to a second worker.
        assert_eq!(q.push(n("a"), 2, 1, |_, b| b), Queued::New { start_worker: true });
        assert_eq!(q.push(n("b"), 3, 1, |_, b| b), Queued::New { start_worker: false });
        assert_eq!(q.next(None), Some((n("b"), 3)));
        assert_eq!(q.next(Some(&n("b"))), None, "the second worker stops: `a` is the first one's");
        // The first worker finishes `a` and takes its newer state.
        assert_eq!(q.next(Some(&n("a"))), Some((n("a"), 2)));
        assert_eq!(q.next(Some(&n("a"))), None);
    }

    use super::*;

    fn n(s: &str) -> ProjectName {
        ProjectName::parse(s).unwrap()
    }

    #[test]
    fn a_page_changed_while_waiting_is_written_once_in_its_newest_state() {
        let q = WriteQueue::new(1000, 1);
        assert_eq!(q.push(n("a"), 1, 10, |_, b| b), Queued::New { start_worker: true });
        assert_eq!(q.push(n("b"), 2, 10, |_, b| b), Queued::New { start_worker: false });
        assert_eq!(q.push(n("a"), 3, 10, |a, b| a + b), Queued::Merged);
        assert_eq!(q.len(), 2);
        assert_eq!(q.next(None), Some((n("a"), 4)));
        assert_eq!(q.next(Some(&n("a"))), Some((n("b"), 2)));
        assert_eq!(q.next(Some(&n("b"))), None);
        // The worker stopped: the next job starts one again.
        assert_eq!(q.push(n("c"), 5, 10, |_, b| b), Queued::New { start_worker: true });
    }

    #[test]
    fn the_budget_bounds_bytes_but_one_job_always_fits() {
        let q = WriteQueue::new(100, 2);
        // Around the budget: one job larger than all of it, then exactly at it, then one over.
        assert_eq!(q.push(n("huge"), 0, 500, |_, b| b), Queued::New { start_worker: true });
        assert_eq!(q.push(n("next"), 0, 1, |_, b| b), Queued::Full);
        assert!(q.next(None).is_some());
        // The first worker is still writing `huge`: a second one may start.
        assert_eq!(q.push(n("a"), 0, 60, |_, b| b), Queued::New { start_worker: true });
        assert_eq!(q.push(n("b"), 0, 40, |_, b| b), Queued::New { start_worker: false });
        assert_eq!(q.push(n("c"), 0, 1, |_, b| b), Queued::Full);
        assert_eq!(q.push(n("c"), 0, 0, |_, b| b), Queued::New { start_worker: false });
        // A merge re-weighs the job it replaces.
        assert_eq!(q.push(n("a"), 0, 10, |_, b| b), Queued::Merged);
        assert_eq!(q.push(n("d"), 0, 50, |_, b| b), Queued::New { start_worker: false });
        assert_eq!(q.len(), 4);
    }
}
