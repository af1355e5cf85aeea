//! Private packages: what was uploaded to each project, and the names it claims.
//!
//! A name with a private upload in a project is *claimed* there: its page lists only the
//! private files and Larder never asks the upstream for it again, also after its files are
//! deleted (the record stays, as a tombstone; DC-1). Records live in the store
//! (`private/<project>/<name>`) and all of them are held in memory, so a read never touches
//! the disk; a page is rendered on its first read (uploads alone render nothing: the 1,000-client
//! load made thousands of records that were never read, and their renderings were most of it).
//! Writes are serialized by one lock: uploads are rare, correctness is not.
//!
//! On a store other processes write too (S3, issue 13), every write is a compare-and-swap on
//! the record as the store has it (retried on conflict; nothing relies on this process's
//! lock), and every read first checks the records it is about against the store (`refresh`,
//! batched): an upload another replica acknowledged is seen on the very next request.
//!
//! Those checks fail closed (issue 22): a name this replica cannot show to be unclaimed as of
//! `replica_lag` (or `replica_absent_lag`, for names no replica has claimed) is answered with a
//! 503 while the bucket does not answer, never from the upstream. A claimed name keeps being
//! served from its record as last read (its private files, never the upstream's).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

use crate::cache::records::{PrivateFile, PrivateRecord, RecordKey};
use crate::index::PageModel;
use crate::index::rendered::Bodies;
use crate::index::{ProjectName, Yanked};
use crate::store::{RecordRead, Records, Store};

struct Entry {
    record: PrivateRecord,
    /// The record's version in the store (its ETag on S3), for conditional reads.
    version: Option<String>,
    rendered: std::sync::OnceLock<Arc<PageModel>>,
    /// Its bodies in every coding, made on first read (private pages stay in memory: they are
    /// never blobs another page could name).
    bodies: std::sync::OnceLock<Arc<Bodies>>,
}

impl Entry {
    fn rendered(&self, name: &ProjectName) -> Arc<PageModel> {
        self.rendered
            .get_or_init(|| Arc::new(PageModel::new(self.record.to_page(name), self.record.changed_unix)))
            .clone()
    }

    fn bodies(&self, name: &ProjectName) -> Arc<Bodies> {
        self.bodies.get_or_init(|| Arc::new(bodies_of(&self.rendered(name)))).clone()
    }
}

fn bodies_of(model: &PageModel) -> Bodies {
    let plain = Bodies::render(&model.page, None, model.modified_unix);
    plain.compressed().unwrap_or(plain)
}

#[derive(Default)]
struct Index {
    /// project id → name → entry
    projects: HashMap<String, BTreeMap<ProjectName, Arc<Entry>>>,
    /// sha256 of every private file and metadata file → the projects holding it, with how many
    /// of their files use it.
    owners: HashMap<String, HashMap<String, usize>>,
    /// sha256s of deleted private files (records keep them): hidden from every scope, since
    /// a shared bucket may still hold the bytes (issue 22).
    tombstones: std::collections::HashSet<String>,
}

fn blobs_of(record: &PrivateRecord) -> impl Iterator<Item = &String> {
    record.files.iter().flat_map(|f| std::iter::once(&f.sha256).chain(f.metadata_sha256.as_ref()))
}

impl Index {
    /// Replaces one record; the owners change by that record alone (rebuilding them for every
    /// upload made uploads quadratic and held the index lock: found by the 1,000-client load).
    fn insert(&mut self, project: &str, name: ProjectName, record: PrivateRecord, version: Option<String>) {
        for sha in blobs_of(&record) {
            *self.owners.entry(sha.clone()).or_default().entry(project.to_string()).or_default() += 1;
        }
        self.tombstones.extend(record.deleted_sha256.iter().cloned());
        let old = self.projects.entry(project.to_string()).or_default().insert(
            name,
            Arc::new(Entry { record, version, rendered: Default::default(), bodies: Default::default() }),
        );
        for sha in old.iter().flat_map(|e| blobs_of(&e.record)) {
            if let Some(projects) = self.owners.get_mut(sha) {
                if let Some(n) = projects.get_mut(project) {
                    *n -= 1;
                    if *n == 0 {
                        projects.remove(project);
                    }
                }
                if projects.is_empty() {
                    self.owners.remove(sha);
                }
            }
        }
    }
}

/// Who may see a stored blob.
pub enum Visibility {
    /// Not a private file: an upstream file anyone may fetch.
    Public,
    /// A private file of one of the scope's projects.
    InScope,
    /// A private file of other projects only: not found from here.
    Hidden,
}

/// The outcome of adding a file.
pub enum Added {
    New,
    /// The identical file was already there (UPL-08: 200, so retries are harmless).
    Identical,
}

/// Why a write to a private record did not happen: refused by the upload rules (exists,
/// reused, no such file) or failed (the record kept changing, the store failed).
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// A different file under an existing filename (UPL-08).
    #[error("File already exists ('{filename}', with sha256 hash '{sha256}').")]
    Exists { filename: String, sha256: String },
    #[error(
        "This filename was previously used by a file that has since been deleted; use a different version ('{0}')."
    )]
    Reused(String),
    #[error("no private file `{0}` in this project")]
    NoSuchFile(String),
    /// Other writers kept changing the record (a storm of uploads to one name).
    #[error("too many concurrent changes to the record of `{0}`; retry")]
    Busy(String),
    #[error(transparent)]
    Store(#[from] crate::store::Error),
}

/// Every project's private records in memory (uploads, claimed names, tombstones), kept in
/// step with the store.
pub struct PrivateRecords {
    store: Arc<dyn Store>,
    index: RwLock<Index>,
    /// Serializes writes on a store of its own. `None` on a shared store: its conditional
    /// writes order the writers, and one slow upload must not hold up every other write of
    /// this replica.
    write_lock: Option<tokio::sync::Mutex<()>>,
    /// `Some` on a store other processes write too (S3, issue 13): what this replica knows of
    /// their writes, and how recently.
    replicas: Option<Replicas>,
}

/// A replica's view of the records other replicas write: every branch that differs on a
/// shared store asks for this, and finds it only there.
struct Replicas {
    /// Record checks against the store, batched per record key (`"*"`: the list).
    checks: crate::coalesce::Batcher<String>,
    /// How old a check may be and still count for pages and listings (`replica_lag`; zero:
    /// strict).
    max_lag: std::time::Duration,
    /// How long a check that found no record may keep showing a name unclaimed once the
    /// budget of reads is spent (negative caching under a flood of requests).
    absent_lag: std::time::Duration,
    /// When each record key was last checked against the store successfully (the check's
    /// start: what it read is at least that new). Keys not in the index were absent then.
    confirmed: std::sync::Mutex<HashMap<String, std::time::Instant>>,
    /// When the last complete listing (every changed record re-read) started.
    listed: std::sync::Mutex<Option<std::time::Instant>>,
    /// Reads for unclaimed names: within it, every request checks; beyond, the absent lag.
    budget: Budget,
    /// The batcher key of the whole listing.
    all_key: String,
    /// Replicas: blobs found stored with no private-blob marker, so never a private upload's
    /// (markers are written before their blobs). Bounded: cleared when full.
    public_blobs: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl Replicas {
    /// Whether a successful check (of this key, or a complete listing) that started no more
    /// than `window` before `asked` found `key` absent. The caller knows it is not claimed.
    fn shown_unclaimed(&self, key: &str, asked: std::time::Instant, window: std::time::Duration) -> bool {
        let since = asked.checked_sub(window);
        let counts = |at: std::time::Instant| since.is_none_or(|since| at >= since);
        let listed = *self.listed.lock().expect("listing stamp lock");
        listed.is_some_and(counts)
            || self.confirmed.lock().expect("confirmations lock").get(key).is_some_and(|at| counts(*at))
    }

    fn confirm(&self, key: &str, started: std::time::Instant) {
        let mut confirmed = self.confirmed.lock().expect("confirmations lock");
        if confirmed.len() >= MAX_CONFIRMED {
            let keep = self.absent_lag.max(self.max_lag).max(std::time::Duration::from_secs(1));
            confirmed.retain(|_, at| at.elapsed() <= keep);
            if confirmed.len() >= MAX_CONFIRMED {
                confirmed.clear();
            }
        }
        let at = confirmed.entry(key.to_string()).or_insert(started);
        *at = (*at).max(started);
    }
}

/// The most blobs remembered as public before the set starts again.
const MAX_PUBLIC_BLOBS: usize = 200_000;

/// A name whose private records could not be checked against the shared store, and that
/// this replica cannot show to be unclaimed recently enough: answered with 503 (fail closed).
#[derive(Debug, thiserror::Error)]
pub enum Unchecked {
    #[error(
        "the shared store did not answer whether `{0}` has private uploads made through another replica; \
         retry when the bucket is reachable"
    )]
    Name(ProjectName),
    #[error(
        "the shared store did not answer which files are private uploads of other replicas; \
         retry when the bucket is reachable"
    )]
    Listing,
}

/// Confirmations kept at most (beyond, the oldest go: a flood of random names costs memory once).
const MAX_CONFIRMED: usize = 50_000;

/// Per-name bucket reads a second for names no replica has claimed (with a burst as large).
/// Beyond it, such names are answered from listings (at most one per `replica_absent_lag`):
/// a flood of random names then costs the bucket about that, not a read each.
const UNCLAIMED_READS_PER_SECOND: f64 = 200.0;

/// A token bucket: `take(n)` succeeds while `n` reads fit the rate.
struct Budget {
    state: std::sync::Mutex<(f64, std::time::Instant)>,
    rate: f64,
}

impl Budget {
    fn new(rate: f64) -> Budget {
        Budget { state: std::sync::Mutex::new((rate, std::time::Instant::now())), rate }
    }

    fn take(&self, n: usize) -> bool {
        let mut state = self.state.lock().expect("budget lock");
        let (tokens, last) = &mut *state;
        *tokens = (*tokens + last.elapsed().as_secs_f64() * self.rate).min(self.rate);
        *last = std::time::Instant::now();
        let n = n as f64;
        if *tokens >= n {
            *tokens -= n;
            return true;
        }
        false
    }
}

/// Conflicting writers on one record retry this often at most before giving up with 503.
const MAX_CAS_ATTEMPTS: usize = 20;

fn record_key(project: &str, name: &ProjectName) -> String {
    RecordKey::Private { project: project.to_string(), name: name.clone() }.to_string()
}

impl PrivateRecords {
    /// Loads every private record from the store. A record that is not valid is reported and
    /// skipped, never fatal; its name stays claimed, with no files (fail closed: a damaged
    /// record must not hand the name to the upstream, DC-1).
    pub async fn load(
        store: Arc<dyn Store>,
        records: &Records,
        listed_at: std::time::Instant,
        max_lag: std::time::Duration,
        absent_lag: std::time::Duration,
        tasks: tokio_util::task::TaskTracker,
    ) -> anyhow::Result<PrivateRecords> {
        // `records` is a complete listing that started at `listed_at`: it shows every other
        // name unclaimed as of then.
        let mut complete = true;
        let mut index = Index::default();
        for key in records.with_prefix(crate::cache::records::PRIVATE_PREFIX) {
            let Ok(RecordKey::Private { project, name }) = RecordKey::parse(key) else {
                tracing::error!(key = %key.escape_debug(), "skipping a private record with an invalid key");
                metrics::counter!("larder_bad_records_total").increment(1);
                continue;
            };
            let (record, version) = match store.get_record_versioned(key).await {
                Ok(Some((bytes, version))) => (decode(key, &name, &bytes), Some(version)),
                Ok(None) => continue,
                // Unreadable now: the name stays claimed with no files (fail closed), as for a
                // damaged record; a later check against the store reads it again.
                Err(e) => {
                    tracing::error!(%key, error = %e, "cannot read a private record; its name stays private with no files");
                    metrics::counter!("larder_bad_records_total").increment(1);
                    complete = false;
                    (PrivateRecord::default(), None)
                }
            };
            index.insert(&project, name, record, version);
        }
        let replicas = store.is_shared().then(|| Replicas {
            checks: crate::coalesce::Batcher::new(tasks),
            max_lag,
            absent_lag,
            confirmed: Default::default(),
            listed: std::sync::Mutex::new(complete.then_some(listed_at)),
            budget: Budget::new(UNCLAIMED_READS_PER_SECOND),
            all_key: "*".to_string(),
            public_blobs: Default::default(),
        });
        let write_lock = replicas.is_none().then(|| tokio::sync::Mutex::new(()));
        Ok(PrivateRecords { store, index: RwLock::new(index), write_lock, replicas })
    }

    /// Whether other processes write private records too (an S3 store).
    pub fn is_shared(&self) -> bool {
        self.replicas.is_some()
    }

    /// Brings what this process knows of `names` in `projects` up to date with the store,
    /// when the store is shared; a no-op otherwise. `lag`: how old a check may be and still
    /// count. `Err` (fail closed): a name not claimed here whose check failed, and that no
    /// successful check shows unclaimed within `lag` (`replica_absent_lag` if longer). A claimed
    /// name whose check fails stays served from its record as last read.
    pub async fn refresh(
        self: &Arc<Self>,
        projects: &[String],
        names: &[ProjectName],
        lag: std::time::Duration,
    ) -> Result<(), Unchecked> {
        let Some(replicas) = &self.replicas else { return Ok(()) };
        let asked = std::time::Instant::now();
        let absent_window = lag.max(replicas.absent_lag);
        let keys: Vec<(String, ProjectName, String)> =
            projects.iter().flat_map(|p| names.iter().map(move |n| (p.clone(), n.clone(), record_key(p, n)))).collect();
        let claimed = |p: &String, n: &ProjectName| self.is_claimed(std::slice::from_ref(p), n);
        let mut stale: Vec<&(String, ProjectName, String)> = keys
            .iter()
            .filter(|(p, n, key)| match claimed(p, n) {
                true => !replicas.checks.is_fresh(key, lag),
                false => !replicas.shown_unclaimed(key, asked, lag),
            })
            .collect();
        // Unclaimed names cost a bucket read each while the budget lasts (strict: a claim made
        // through another replica counts on the next request here). Beyond it (a flood of
        // random names, a group of many projects), a listing at most `replica_absent_lag` old
        // answers for all of them (`0s`: every name is read, whatever it costs).
        let unclaimed = stale.iter().filter(|(p, n, _)| !claimed(p, n)).count();
        if unclaimed > 0 && absent_window >= std::time::Duration::from_secs(1) && !replicas.budget.take(unclaimed) {
            metrics::counter!("larder_replica_checks_total", "result" => "over_budget").increment(1);
            stale.retain(|(p, n, key)| claimed(p, n) || !replicas.shown_unclaimed(key, asked, absent_window));
            if stale.iter().any(|(p, n, _)| !claimed(p, n)) {
                self.list_all(replicas, absent_window).await;
                stale.retain(|(p, n, key)| claimed(p, n) || !replicas.shown_unclaimed(key, asked, absent_window));
            }
        }
        futures_util::future::join_all(stale.into_iter().map(|(project, name, key)| {
            let this = Arc::clone(self);
            async move {
                let check = || {
                    let (this, project, name) = (this.clone(), project.clone(), name.clone());
                    async move {
                        this.reload(&project, &name).await;
                    }
                };
                replicas.checks.run(key.clone(), lag, check).await;
            }
        }))
        .await;
        for (project, name, key) in &keys {
            if !claimed(project, name) && !replicas.shown_unclaimed(key, asked, absent_window) {
                metrics::counter!("larder_replica_checks_total", "result" => "unchecked").increment(1);
                return Err(Unchecked::Name(name.clone()));
            }
        }
        Ok(())
    }

    /// Re-reads one record if it changed in the store; whether the store answered.
    async fn reload(&self, project: &str, name: &ProjectName) -> bool {
        let key = record_key(project, name);
        let started = std::time::Instant::now();
        let known = {
            let index = self.index.read().expect("private index lock");
            index.projects.get(project).and_then(|n| n.get(name)).and_then(|e| e.version.clone())
        };
        let read = self.store.get_record_if_changed(&key, known.as_deref()).await;
        metrics::counter!("larder_replica_checks_total", "result" => if read.is_ok() { "read" } else { "failed" })
            .increment(1);
        match read {
            Ok(RecordRead::Unchanged) => {}
            Ok(RecordRead::Changed(Some((bytes, version)))) => {
                let record = decode(&key, name, &bytes);
                let mut index = self.index.write().expect("private index lock");
                // Only over what this read started from: a write or another read that landed
                // meanwhile knows a version at least as new.
                let now = index.projects.get(project).and_then(|n| n.get(name)).and_then(|e| e.version.clone());
                if now == known {
                    tracing::debug!(%key, "private record changed in the store; reloaded");
                    index.insert(project, name.clone(), record, Some(version));
                }
            }
            // Records are never removed (deleted files leave tombstones): keep what is known.
            Ok(RecordRead::Changed(None)) => {}
            Err(e) => {
                metrics::counter!("larder_store_errors_total", "op" => "check").increment(1);
                tracing::warn!(%key, error = %e, "cannot check a private record against the store");
                return false;
            }
        }
        if let Some(replicas) = &self.replicas {
            replicas.confirm(&key, started);
        }
        true
    }

    /// Brings every private record up to date with the store (at most once a second): names
    /// other processes claimed since start-up (for listings), and records they changed, so
    /// that which blobs are private (and whose) is known before an upstream page may name one.
    /// `Err` (fail closed): no complete listing within that second, the store not answering.
    pub async fn refresh_names(self: &Arc<Self>) -> Result<(), Unchecked> {
        let Some(replicas) = &self.replicas else { return Ok(()) };
        // A listing walks every private record: at most once a second, whatever replica_lag.
        let window = replicas.max_lag.max(std::time::Duration::from_secs(1));
        let asked = std::time::Instant::now();
        let fresh = |at: Option<std::time::Instant>| {
            at.is_some_and(|at| asked.checked_sub(window).is_none_or(|since| at >= since))
        };
        if fresh(*replicas.listed.lock().expect("listing stamp lock")) {
            return Ok(()); // the common case on a file hit: two locks, no task
        }
        self.list_all(replicas, window).await;
        match fresh(*replicas.listed.lock().expect("listing stamp lock")) {
            true => Ok(()),
            false => Err(Unchecked::Listing),
        }
    }

    /// One listing of every private record (joined when one started within `max_age`), each
    /// changed one re-read; stamps `listed` when all of it succeeded.
    async fn list_all(self: &Arc<Self>, replicas: &Replicas, max_age: std::time::Duration) {
        let this = Arc::clone(self);
        let check = || {
            let this = this.clone();
            async move {
                let started = std::time::Instant::now();
                let keys = match this.store.list_record_keys(crate::cache::records::PRIVATE_PREFIX).await {
                    Ok(k) => k,
                    Err(e) => {
                        metrics::counter!("larder_replica_checks_total", "result" => "failed").increment(1);
                        tracing::warn!(error = %e, "cannot list private records");
                        return;
                    }
                };
                metrics::counter!("larder_replica_checks_total", "result" => "listed").increment(1);
                let bare = |v: &str| v.trim_matches('"').to_string();
                let mut complete = true;
                for (key, listed) in &keys {
                    let Ok(RecordKey::Private { project, name }) = RecordKey::parse(key) else { continue };
                    let known = {
                        let index = this.index.read().expect("private index lock");
                        index.projects.get(&project).and_then(|n| n.get(&name)).map(|e| e.version.clone())
                    };
                    let changed = match (&known, listed) {
                        (None, _) => true,                              // a name claimed elsewhere
                        (Some(Some(k)), Some(l)) => bare(k) != bare(l), // changed elsewhere
                        (Some(None), _) => true,                        // version unknown
                        (Some(Some(_)), None) => false,
                    };
                    if changed {
                        complete &= this.reload(&project, &name).await;
                    }
                }
                // A listed record that could not be read may be a claim unknown here: then the
                // listing shows nothing unclaimed.
                if let (true, Some(replicas)) = (complete, &this.replicas) {
                    let mut listed = replicas.listed.lock().expect("listing stamp lock");
                    *listed = Some(listed.map_or(started, |at| at.max(started)));
                }
            }
        };
        replicas.checks.run(replicas.all_key.clone(), max_age, check).await;
    }

    /// Is `name` claimed in any project at all?
    pub fn is_claimed_anywhere(&self, name: &ProjectName) -> bool {
        let index = self.index.read().expect("private index lock");
        index.projects.values().any(|names| names.contains_key(name))
    }

    /// Is `name` claimed by any of `projects`?
    pub fn is_claimed(&self, projects: &[String], name: &ProjectName) -> bool {
        let index = self.index.read().expect("private index lock");
        projects.iter().any(|p| index.projects.get(p).is_some_and(|names| names.contains_key(name)))
    }

    /// The page for a claimed name: one project's files, or the union over a group's projects.
    pub fn page(&self, projects: &[String], name: &ProjectName) -> Option<Arc<PageModel>> {
        let index = self.index.read().expect("private index lock");
        let entries: Vec<&Arc<Entry>> = projects.iter().filter_map(|p| index.projects.get(p)?.get(name)).collect();
        match entries.as_slice() {
            [] => None,
            [one] => Some(one.rendered(name)),
            many => {
                let mut record = PrivateRecord::default();
                for e in many {
                    record.files.extend(e.record.files.iter().cloned());
                    record.changed_unix = record.changed_unix.max(e.record.changed_unix);
                }
                Some(Arc::new(PageModel::new(record.to_page(name), record.changed_unix)))
            }
        }
    }

    /// The page of a claimed name with its bodies.
    pub fn page_with_bodies(&self, projects: &[String], name: &ProjectName) -> Option<(Arc<PageModel>, Arc<Bodies>)> {
        let index = self.index.read().expect("private index lock");
        let entries: Vec<&Arc<Entry>> = projects.iter().filter_map(|p| index.projects.get(p)?.get(name)).collect();
        match entries.as_slice() {
            [] => None,
            [one] => Some((one.rendered(name), one.bodies(name))),
            _ => {
                drop(entries);
                drop(index);
                // A group's union, made per request: identity only (no compression on a worker).
                let model = self.page(projects, name)?;
                let bodies = Arc::new(Bodies::render(&model.page, None, model.modified_unix));
                Some((model, bodies))
            }
        }
    }

    /// The claimed name (and its page) that distribution `filename` belongs to in `projects`,
    /// trying the names the filename can belong to (FN-5).
    pub fn claimed_by_file(&self, projects: &[String], filename: &str) -> Option<(ProjectName, Arc<PageModel>)> {
        crate::index::filename::candidate_projects(filename)
            .iter()
            .filter_map(|n| ProjectName::parse(n).ok())
            .find_map(|n| self.page(projects, &n).map(|page| (n, page)))
    }

    /// Every name claimed by `projects`.
    pub fn names(&self, projects: &[String]) -> BTreeSet<ProjectName> {
        let index = self.index.read().expect("private index lock");
        projects.iter().filter_map(|p| index.projects.get(p)).flat_map(|names| names.keys().cloned()).collect()
    }

    /// Each claimed name of `project` with its files as this process knows them (retention).
    pub fn files_of(&self, project: &str) -> Vec<(ProjectName, Vec<PrivateFile>)> {
        let index = self.index.read().expect("private index lock");
        index
            .projects
            .get(project)
            .map(|names| names.iter().map(|(n, e)| (n.clone(), e.record.files.clone())).collect())
            .unwrap_or_default()
    }

    /// Every blob a private file uses (files and their metadata).
    pub fn blobs(&self) -> Vec<String> {
        self.index.read().expect("private index lock").owners.keys().cloned().collect()
    }

    pub fn visibility(&self, sha256: &str, projects: &[String]) -> Visibility {
        let index = self.index.read().expect("private index lock");
        match index.owners.get(sha256) {
            None if index.tombstones.contains(sha256) => Visibility::Hidden,
            None => Visibility::Public,
            Some(owners) if projects.iter().any(|p| owners.contains_key(p)) => Visibility::InScope,
            Some(_) => Visibility::Hidden,
        }
    }

    /// `visibility`, and on a shared store also for a blob this replica knows nothing about:
    /// another replica may have stored it as a private upload since the last listing (issue
    /// 22, item 10). Its private-blob marker says so; a blob stored without one is public
    /// for good (markers precede blobs). A store that does not answer fails closed.
    pub async fn visibility_checked(
        &self,
        sha256: &str,
        projects: &[String],
    ) -> Result<Visibility, crate::store::Error> {
        let known = self.visibility(sha256, projects);
        let Some(replicas) = &self.replicas else { return Ok(known) };
        if !matches!(known, Visibility::Public) || !crate::index::is_sha256_hex(sha256) {
            return Ok(known);
        }
        if replicas.public_blobs.lock().expect("public blobs lock").contains(sha256) {
            return Ok(known);
        }
        let marker = RecordKey::PrivateBlob(sha256.to_string()).to_string();
        if self.store.get_record(&marker).await?.is_some() {
            metrics::counter!("larder_private_blob_markers_total", "result" => "hidden").increment(1);
            return Ok(Visibility::Hidden);
        }
        if self.store.has_blob(sha256).await? {
            let mut public = replicas.public_blobs.lock().expect("public blobs lock");
            if public.len() >= MAX_PUBLIC_BLOBS {
                public.clear();
            }
            public.insert(sha256.to_string());
        }
        Ok(known)
    }

    /// On a shared store, marks the blobs of `file` private before they are stored, so that
    /// no replica serves them for an upstream page naming their hash.
    async fn mark_private(&self, project: &str, file: &PrivateFile) -> Result<(), crate::store::Error> {
        if !self.is_shared() {
            return Ok(());
        }
        for sha in std::iter::once(&file.sha256).chain(file.metadata_sha256.as_ref()) {
            self.store
                .put_record(&RecordKey::PrivateBlob(sha.clone()).to_string(), project.as_bytes().to_vec())
                .await?;
        }
        Ok(())
    }

    /// Adds an uploaded file. Under the lock, the file is checked first (`Exists`, `Reused`,
    /// `Identical`); only an accepted file's bytes are stored, by `store_blobs`, which returns
    /// the blobs it created. If the record cannot be written, those blobs are removed again:
    /// a refused upload leaves nothing in the store (issue 9).
    pub async fn add<F, Fut>(
        &self,
        project: &str,
        name: &ProjectName,
        file: PrivateFile,
        store_blobs: F,
    ) -> Result<Added, WriteError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Vec<String>, crate::store::Error>>,
    {
        let _guard = self.lock().await;
        let mut store_blobs = Some(store_blobs);
        let mut created: Vec<String> = Vec::new();
        // Compare-and-swap on the record as stored: of two writers (two replicas) of one new
        // filename, exactly one wins; the other reads the winner's record and answers as if
        // it had come second (UPL-08).
        for attempt in 0..MAX_CAS_ATTEMPTS {
            if attempt > 0 {
                Self::backoff(attempt).await;
            }
            let (mut record, version) = self.current(project, name).await?;
            let refused = match record.files.iter().find(|f| f.filename == file.filename) {
                Some(existing) if existing.sha256 == file.sha256 => Some(Ok(Added::Identical)),
                Some(existing) => {
                    Some(Err(WriteError::Exists { filename: file.filename.clone(), sha256: existing.sha256.clone() }))
                }
                None if record.deleted.contains(&file.filename) => Some(Err(WriteError::Reused(file.filename.clone()))),
                None => None,
            };
            if let Some(answer) = refused {
                // Bytes stored for a losing attempt that nothing lists are removed again.
                self.forget(&created).await;
                return answer;
            }
            if let Some(store_blobs) = store_blobs.take() {
                self.mark_private(project, &file).await?;
                created = store_blobs().await?;
            }
            record.files.push(file.clone());
            match self.save_if(project, name, record, version).await {
                Ok(true) => return Ok(Added::New),
                Ok(false) => continue,
                Err(e) => {
                    self.forget(&created).await;
                    return Err(e);
                }
            }
        }
        self.forget(&created).await;
        Err(WriteError::Busy(file.filename))
    }

    /// Removes blobs an upload stored and no record came to list (on a store of its own
    /// only: on a shared one another replica may have stored the same bytes meanwhile).
    async fn forget(&self, created: &[String]) {
        if self.is_shared() {
            return;
        }
        for sha in created {
            let _ = self.store.delete_blob(sha).await;
        }
    }

    /// Sets or clears a file's yank (PEP 592).
    pub async fn set_yanked(
        &self,
        project: &str,
        name: &ProjectName,
        filename: &str,
        yanked: Yanked,
    ) -> Result<(), WriteError> {
        let _guard = self.lock().await;
        for attempt in 0..MAX_CAS_ATTEMPTS {
            if attempt > 0 {
                Self::backoff(attempt).await;
            }
            let (mut record, version) = self.current(project, name).await?;
            let i = record.position(filename).ok_or_else(|| WriteError::NoSuchFile(filename.into()))?;
            record.files[i].yanked = yanked.clone();
            if self.save_if(project, name, record, version).await? {
                return Ok(());
            }
        }
        Err(WriteError::Busy(filename.into()))
    }

    /// Deletes a file; the name stays claimed. Returns the sha256s no private file uses any
    /// more, with the lock still held: the caller removes them from the store (unless
    /// something else still references them) before any upload can reference them again.
    pub async fn delete(
        &self,
        project: &str,
        name: &ProjectName,
        filename: &str,
    ) -> Result<(Vec<String>, Option<tokio::sync::MutexGuard<'_, ()>>), WriteError> {
        let guard = self.lock().await;
        for attempt in 0..MAX_CAS_ATTEMPTS {
            if attempt > 0 {
                Self::backoff(attempt).await;
            }
            let (mut record, version) = self.current(project, name).await?;
            let position = record.position(filename).ok_or_else(|| WriteError::NoSuchFile(filename.into()))?;
            let file = record.files.remove(position);
            record.deleted.push(file.filename.clone());
            if !record.deleted_sha256.contains(&file.sha256) {
                record.deleted_sha256.push(file.sha256.clone());
            }
            if !self.save_if(project, name, record, version).await? {
                continue;
            }
            // On a shared store another replica's records may use the same bytes: its blobs
            // stay (the bucket's lifecycle rules are the operator's).
            if self.is_shared() {
                return Ok((Vec::new(), guard));
            }
            let index = self.index.read().expect("private index lock");
            let unused = std::iter::once(file.sha256)
                .chain(file.metadata_sha256)
                .filter(|sha| !index.owners.contains_key(sha))
                .collect();
            return Ok((unused, guard));
        }
        Err(WriteError::Busy(filename.into()))
    }

    /// This process's write lock, on a store of its own. A shared store is never locked here:
    /// its conditional writes order the writers, and one slow upload must not hold up every
    /// other write of this replica.
    async fn lock(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match &self.write_lock {
            Some(lock) => Some(lock.lock().await),
            None => None,
        }
    }

    /// A short random pause before retrying a lost compare-and-swap, so that writers that
    /// collided do not collide again in step.
    async fn backoff(attempt: usize) {
        let ms = 5 * (attempt as u64 + 1) + rand::random::<u64>() % 20;
        tokio::time::sleep(std::time::Duration::from_millis(ms.min(200))).await;
    }

    /// The record as the store has it now, with its version (a damaged one reads as empty:
    /// the name stays claimed, and the next write repairs it).
    async fn current(&self, project: &str, name: &ProjectName) -> Result<(PrivateRecord, Option<String>), WriteError> {
        let key = record_key(project, name);
        Ok(match self.store.get_record_versioned(&key).await? {
            Some((bytes, version)) => (decode(&key, name, &bytes), Some(version)),
            None => (PrivateRecord::default(), None),
        })
    }

    /// Writes the record if the store still has it at `expected`; publishes it here when it
    /// did. `Ok(false)`: another writer came first.
    async fn save_if(
        &self,
        project: &str,
        name: &ProjectName,
        mut record: PrivateRecord,
        expected: Option<String>,
    ) -> Result<bool, WriteError> {
        // Last-Modified of its page (HDR-1): uploads, yanks and deletes all change it.
        record.changed_unix = crate::clock::Clock::system().unix();
        let bytes = serde_json::to_vec(&record).expect("a private record serializes");
        let key = record_key(project, name);
        let Some(version) = self.store.put_record_if(&key, bytes, expected.as_deref()).await? else {
            metrics::counter!("larder_record_conflicts_total").increment(1);
            tracing::info!(%key, "another writer changed the record first; retrying");
            return Ok(false);
        };
        // Known by the version this write produced (none said: the next check re-reads it).
        let version = Some(version).filter(|v| !v.is_empty());
        self.index.write().expect("private index lock").insert(project, name.clone(), record, version);
        Ok(true)
    }
}

/// A stored private record of `name`; a damaged one is reported and read as empty: its name
/// stays private with no files (fail closed: a damaged record must not hand the name to the
/// upstream, DC-1).
fn decode(key: &str, name: &ProjectName, bytes: &[u8]) -> PrivateRecord {
    crate::cache::records::decode_private(name, bytes).unwrap_or_else(|reason| {
        tracing::error!(%key, %reason, "private record is damaged; its name stays private with no files (re-upload, or import a good copy)");
        metrics::counter!("larder_bad_records_total").increment(1);
        PrivateRecord::default()
    })
}
