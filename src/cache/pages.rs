//! Upstream project pages: a small in-memory index of page heads in front of the store and
//! the upstream (issue 21).
//!
//! A page's head is what serving it needs: its validators, when it was confirmed upstream, the
//! descriptors of its rendered bodies (stored as blobs, served like files) and a compact file
//! index for the file route. Models (the files with their URLs) are loaded only when a miss,
//! a policy view or a re-render needs them, into a bounded cache of their own; bodies never
//! stay in memory once stored. A request is answered from the head while the page is fresh
//! (`index_ttl`), counted from when it was last confirmed, which the record and the freshness
//! journal keep across eviction and restarts. After that, one coalesced refresh revalidates it
//! upstream (`If-None-Match`/`If-Modified-Since`, UP-05); when the upstream fails, the old page
//! is served for up to `stale_if_error` (ROUTE-08).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;

use crate::cache::Outcome;
use crate::cache::bodies::{BodyStore, Journal, Queued, WriteQueue};
use crate::cache::links::MetadataLinks;
use crate::cache::prefetch::{self, Announced};
use crate::cache::records::{self, PageRecord, PageRecordHead, RecordKey};
use crate::coalesce::Coalescer;
use crate::index::rendered::{Bodies, Body, Listing, VariantKey, Variants};
use crate::index::{self, DistFile, FileKey, MediaType, PageModel, ProjectName, ProjectPage};
use crate::store::bounded::Bounded;
use crate::store::{Blob, Records, Store};
use crate::upstream::{self, PageFetch, Upstream, Upstreams, Validators};

/// While the upstream is failing, retry it at most this often per page.
const STALE_RETRY: Duration = Duration::from_secs(30);

#[derive(Clone, Debug)]
pub struct PageSettings {
    pub ttl: Duration,
    pub stale_if_error: Duration,
    pub not_found_ttl: Duration,
    /// Memory for page heads and models together (`page_cache_mib`).
    pub memory_bytes: u64,
    /// Larder is offline on purpose (the error message says so).
    pub offline: bool,
    /// Freshness is measured on this clock (tests move it forward).
    pub clock: crate::clock::Clock,
    /// Where the freshness journal lives (`None`: memory only).
    pub journal: Option<std::path::PathBuf>,
    /// How many newest versions' wheels the metadata prefetcher is told about.
    pub prefetch_versions: usize,
}

/// Why no page could be produced.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Upstream(#[from] upstream::Error),
    #[error("project `{0}` is not in the cache and no upstream is configured for it")]
    NoUpstream(ProjectName),
    #[error(
        "Larder is offline and project `{0}` is not in the cache; warm the cache (larder warm, larder import) before going offline"
    )]
    Offline(ProjectName),
    #[error(transparent)]
    Internal(#[from] crate::coalesce::Panicked),
}

/// What serving one upstream page needs, without its model.
pub struct PageHead {
    plain: RwLock<Arc<Bodies>>,
    /// Renderings depend on the client's origin (provenance links, PEP 740).
    pub provenance: bool,
    pub listing: Listing,
    /// Per-origin renderings and policy views, made on first use.
    pub variants: Variants,
    /// The model, held until the page is stored (the record may be older, or missing).
    pending: RwLock<Option<Arc<PageModel>>>,
    /// A write of this page is queued: the queue's budget counts its model and unstored
    /// bodies, so the head cache does not (heads are evicted only for what they alone hold).
    queued: AtomicBool,
    /// Which upstream state this head renders: a new one per page fetched from upstream in
    /// this process (0: read back from the store); heads derived from it (relinked, repaired,
    /// its HTML added) keep it. A write never replaces a newer state with an older one.
    epoch: u64,
    /// Bodies a replaced rendering stored after this head took its place (a relink while the
    /// first write ran): this head's write removes them with the rest of what it replaces.
    superseded: std::sync::Mutex<Vec<String>>,
}

impl PageHead {
    fn new(plain: Bodies, provenance: bool, listing: Listing, pending: Option<Arc<PageModel>>, epoch: u64) -> PageHead {
        PageHead {
            plain: RwLock::new(Arc::new(plain)),
            provenance,
            listing,
            variants: Variants::default(),
            pending: RwLock::new(pending),
            queued: AtomicBool::new(false),
            epoch,
            superseded: Default::default(),
        }
    }

    fn of_model(model: Arc<PageModel>, epoch: u64) -> PageHead {
        let plain = Bodies::render_json(&model.page, None, model.modified_unix);
        PageHead::new(plain, model.has_provenance(), model.listing(), Some(model), epoch)
    }

    /// The plain rendering (no policy view, relative links).
    pub fn plain(&self) -> Arc<Bodies> {
        self.plain.read().expect("page head lock").clone()
    }

    fn pending(&self) -> Option<Arc<PageModel>> {
        self.pending.read().expect("page head lock").clone()
    }

    fn weight(&self) -> usize {
        let unstored = match self.queued.load(Ordering::Relaxed) {
            true => 0,
            false => self.plain().weight() + self.pending().map_or(0, |m| m.weight() as usize),
        };
        256 + unstored + self.listing.weight() + self.variants.weight()
    }
}

pub enum PageState {
    Found(Arc<PageHead>),
    /// The upstream has no such project (cached briefly, UP-09).
    NotFound,
}

/// One cache entry.
pub struct CachedPage {
    pub state: PageState,
    /// Until when this entry is answered without asking the upstream.
    fresh_until: Instant,
    /// Wall-clock time the upstream last sent or confirmed this page; bounds stale serving.
    confirmed_unix: u64,
    /// Wall-clock time Larder last saw this page change (`Last-Modified`).
    changed_unix: u64,
    validators: Validators,
    /// Served because the upstream failed.
    stale: bool,
}

impl CachedPage {
    fn again(&self, fresh_until: Instant, confirmed_unix: u64, stale: bool) -> CachedPage {
        let state = match &self.state {
            PageState::Found(h) => PageState::Found(h.clone()),
            PageState::NotFound => PageState::NotFound,
        };
        CachedPage {
            state,
            fresh_until,
            confirmed_unix,
            changed_unix: self.changed_unix,
            validators: self.validators.clone(),
            stale,
        }
    }
}

fn record_key(name: &ProjectName) -> String {
    RecordKey::Page(name.clone()).to_string()
}

/// What `Pages::get` found: the page as cached now, and how it came to be (for `x-cache`,
/// the request log and the metrics).
#[derive(Clone)]
pub struct Lookup {
    pub page: Arc<CachedPage>,
    pub outcome: Outcome,
}

/// A file a stored page lists: the page, the file's upload time and its metadata's sha256.
pub struct Listed {
    pub name: ProjectName,
    pub uploaded: Option<u64>,
    pub metadata: Option<String>,
}

pub struct Pages {
    heads: moka::future::Cache<ProjectName, Arc<CachedPage>>,
    /// Models, each with the fingerprint of the page it renders to: a model is used only for
    /// the head it belongs to (a slow read of an older record must not serve a newer head).
    models: moka::future::Cache<ProjectName, (String, Arc<PageModel>)>,
    bodies: BodyStore,
    journal: Journal,
    /// Metadata Larder extracted itself, advertised on the pages it renders (issue 6).
    links: Arc<MetadataLinks>,
    /// Where fetched pages are announced to the metadata prefetcher, when it runs.
    announce: Option<mpsc::Sender<Announced>>,
    flight: Arc<Coalescer<ProjectName, Refresh>>,
    /// The store, bounded: page records and bodies count toward its size limit.
    store: Arc<Bounded>,
    upstreams: Arc<Upstreams>,
    settings: PageSettings,
    /// Names with a stored page, for the project list.
    known: RwLock<BTreeSet<ProjectName>>,
    /// The engine's task tracker: page writes run on it, so shutdown waits for them.
    tasks: TaskTracker,
    /// Pages waiting to be written (each holds its page until it is on disk), one job per page.
    writes: WriteQueue<PageWrite>,
    /// The next upstream state's epoch (`PageHead::epoch`).
    epochs: std::sync::atomic::AtomicU64,
    /// Policy-view renderings being written at once (never queued: they are made again).
    variant_writes: Arc<tokio::sync::Semaphore>,
}

/// Memory the pages waiting for the disk may hold at least (more with a larger page cache).
/// Sized by a cold resolve's first burst: a 552-project closure queues 150–180 MB of pages
/// (bodies and models) in its first two seconds, drained two seconds later; at 64 MiB it
/// skipped 43–53 of its 646 pages, which then went upstream again on the next resolve.
const MIN_WRITE_BUDGET: u64 = 256 * 1024 * 1024;
/// Page writes under way at once: their CPU work takes turns (`BodyStore::cpu_turn`), their
/// I/O runs side by side.
const PAGE_WRITERS: usize = 4;
/// Policy-view renderings written at once.
const MAX_VARIANT_WRITES: usize = 32;

/// One page waiting to be written: its head (bodies, listing), its model and its times.
struct PageWrite {
    head: Arc<PageHead>,
    model: Arc<PageModel>,
    validators: Validators,
    confirmed_unix: u64,
    changed_unix: u64,
    upstream: Option<String>,
    /// The stored bodies of the rendering this page had before (deleted once it is written).
    replaces: Vec<String>,
}

impl PageWrite {
    /// A job merged into the one already waiting for its page: the newer state, and every
    /// rendering either replaced.
    fn merge(waiting: PageWrite, pushed: PageWrite) -> PageWrite {
        // The newer upstream state wins; of one state, the later push (links, HTML added).
        let (mut kept, other) =
            if waiting.head.epoch > pushed.head.epoch { (waiting, pushed) } else { (pushed, waiting) };
        for sha in other.replaces {
            if !kept.replaces.contains(&sha) {
                kept.replaces.push(sha);
            }
        }
        kept
    }

    /// The bodies still in memory and the model (shared with the head until it is written).
    fn weight(&self) -> usize {
        self.head.plain().weight() + self.model.weight() as usize
    }
}

/// A page refresh under way, shared by every caller asking meanwhile.
type Refresh = futures_util::future::Shared<futures_util::future::BoxFuture<'static, Result<Lookup, Arc<Error>>>>;

impl Pages {
    #[allow(clippy::too_many_arguments)] // the engine wires each part in once, in Cache::open
    pub fn new(
        upstreams: Arc<Upstreams>,
        links: Arc<MetadataLinks>,
        store: Arc<Bounded>,
        settings: PageSettings,
        records: &Records,
        tasks: TaskTracker,
        announce: Option<mpsc::Sender<Announced>>,
    ) -> Pages {
        let known = records
            .with_prefix(records::PAGE_PREFIX)
            .filter_map(|k| match RecordKey::parse(k) {
                Ok(RecordKey::Page(name)) => Some(name),
                _ => None,
            })
            .collect();
        // The budget: half for heads (what decides every request), a quarter for models (what
        // misses and views need), a quarter for hot bodies.
        let quarter = (settings.memory_bytes / 4).max(1);
        let heads = moka::future::Cache::builder()
            .max_capacity(2 * quarter)
            .weigher(|k: &ProjectName, v: &Arc<CachedPage>| {
                let w = match &v.state {
                    PageState::Found(h) => h.weight(),
                    // Weighed by what it holds, so that many long not-found names fill the budget.
                    PageState::NotFound => k.as_str().len() + 128,
                };
                w.try_into().unwrap_or(u32::MAX)
            })
            .build();
        let models = moka::future::Cache::builder()
            .max_capacity(quarter)
            .weigher(|_k: &ProjectName, v: &(String, Arc<PageModel>)| v.1.weight())
            .build();
        Pages {
            heads,
            models,
            bodies: BodyStore::new(store.clone(), quarter),
            journal: Journal::open(settings.journal.clone()),
            links,
            announce,
            flight: Coalescer::new(tasks.clone()),
            store,
            upstreams,
            known: RwLock::new(known),
            writes: WriteQueue::new(
                settings.memory_bytes.saturating_mul(2).max(MIN_WRITE_BUDGET).try_into().unwrap_or(usize::MAX),
                PAGE_WRITERS,
            ),
            variant_writes: Arc::new(tokio::sync::Semaphore::new(MAX_VARIANT_WRITES)),
            epochs: std::sync::atomic::AtomicU64::new(1),
            settings,
            tasks,
        }
    }

    fn announce(&self, name: &ProjectName, model: &Arc<PageModel>, upstream: &Upstream) {
        if let Some(tx) = &self.announce {
            let files = prefetch::candidates(&model.page, self.settings.prefetch_versions);
            if !files.is_empty() {
                // Background work: dropped when the queue is full.
                let _ = tx.try_send((name.clone(), files, upstream.clone()));
            }
        }
    }

    /// The model of a page fetched now, with the metadata links applied.
    fn model_of(&self, mut page: ProjectPage, changed_unix: u64) -> Arc<PageModel> {
        self.links.apply(&mut page);
        Arc::new(PageModel::new(page, changed_unix))
    }

    /// Renders a page again after new metadata links appeared for its files.
    pub async fn relink(self: &Arc<Self>, name: &ProjectName) {
        // Its head may have left memory: the stored page must learn the links too, or every
        // later read of it would miss them (a `.metadata` hit would then need the model).
        let old = match self.heads.get(name).await {
            Some(old) => old,
            None => match self.load_record(name).await {
                Some(p) => self.heads.entry(name.clone()).or_insert(p).await.into_value(),
                None => return,
            },
        };
        let PageState::Found(head) = &old.state else { return };
        let Some(model) = self.model(name, head).await else { return };
        let model = self.model_of(model.page.clone(), old.changed_unix);
        let fresh = PageHead::of_model(model.clone(), head.epoch);
        if fresh.plain().fingerprint() == head.plain().fingerprint() {
            return;
        }
        self.install(name, &old, fresh, model).await;
    }

    /// Makes `head` the page's head (same times as `old`), and stores it in the background.
    /// Only while `old` is still the page's entry (a refresh may have replaced it meanwhile).
    async fn install(
        self: &Arc<Self>,
        name: &ProjectName,
        old: &Arc<CachedPage>,
        head: PageHead,
        model: Arc<PageModel>,
    ) {
        let head = Arc::new(head);
        let mut entry = old.again(old.fresh_until, old.confirmed_unix, old.stale);
        entry.state = PageState::Found(head.clone());
        let entry = Arc::new(entry);
        if !self.replace_entry(name, old, &entry).await {
            return;
        }
        let fingerprint = head.plain().fingerprint().unwrap_or_default().to_string();
        self.models.insert(name.clone(), (fingerprint, model.clone())).await;
        self.persist(name, &entry, head, model, Some(old));
        self.heads.insert(name.clone(), entry).await; // weighed again, its write queued
    }

    /// Makes `new` the page's entry only while `old` still is (compare-and-swap: a refresh
    /// that replaced it meanwhile is newer and wins).
    async fn replace_entry(&self, name: &ProjectName, old: &Arc<CachedPage>, new: &Arc<CachedPage>) -> bool {
        use moka::ops::compute::{CompResult, Op};
        let result = self
            .heads
            .entry(name.clone())
            .and_compute_with(|current| {
                let op = match current {
                    Some(e) if Arc::ptr_eq(e.value(), old) => Op::Put(new.clone()),
                    _ => Op::Nop,
                };
                std::future::ready(op)
            })
            .await;
        matches!(result, CompResult::ReplacedWith(_))
    }

    /// Names Larder has pages for.
    pub fn known_names(&self) -> Vec<ProjectName> {
        self.known.read().expect("known-names lock").iter().cloned().collect()
    }

    /// The page for `name`, from memory, disk or upstream.
    pub async fn get(self: &Arc<Self>, name: &ProjectName) -> Result<Lookup, Arc<Error>> {
        self.store.touch_record(&record_key(name));
        if let Some(p) = self.heads.get(name).await
            && self.settings.clock.now() < p.fresh_until
        {
            let status = if p.stale { Outcome::Stale } else { Outcome::Hit };
            return Ok(Lookup { page: p, outcome: status });
        }
        let this = Arc::clone(self);
        let key = name.clone();
        self.flight.run(name.clone(), move || async move { this.refresh(key).await }).await
    }

    /// The page's model: kept in memory, or read from its record.
    pub async fn model(&self, name: &ProjectName, head: &PageHead) -> Option<Arc<PageModel>> {
        if let Some(m) = head.pending() {
            return Some(m);
        }
        let fingerprint = head.plain().fingerprint().map(str::to_string).unwrap_or_default();
        if let Some((f, m)) = self.models.get(name).await
            && f == fingerprint
        {
            return Some(m);
        }
        let bytes = self.store.get_record(&record_key(name)).await.ok()??;
        // The record must be the head's own page (it may have changed since).
        let stored = records::decode_page_head(&bytes).ok()?.and_then(|h| Bodies::from_stored(&h.bodies));
        if stored.as_ref().and_then(Bodies::fingerprint) != Some(fingerprint.as_str()) {
            return None;
        }
        let (model, _) = self.record_model(name, &bytes)?;
        self.models.insert(name.clone(), (fingerprint, model.clone())).await;
        Some(model)
    }

    /// A page record's model (links applied) and the rest of the record; `None`, logged, when
    /// it does not decode (a broken record is a miss: the upstream refills it).
    fn record_model(&self, name: &ProjectName, bytes: &[u8]) -> Option<(Arc<PageModel>, PageRecord)> {
        // Hits never need this (the head answers them): counted, so a bench or test can tell.
        metrics::counter!("larder_page_model_reads_total").increment(1);
        let mut record = match records::decode_page(name, bytes) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(project = %name, error = %e, "stored page is not valid; treating it as missing");
                return None;
            }
        };
        if record.changed_unix == 0 {
            record.changed_unix = record.confirmed_unix; // records from before changed_unix
        }
        let page = std::mem::replace(
            &mut record.page,
            ProjectPage { name: name.clone(), files: Vec::new(), versions: None, status: None },
        );
        Some((self.model_of(page, record.changed_unix), record))
    }

    /// The plain rendering with its HTML body: rendered from the model the first time a
    /// client asks for HTML (most pages never need it: pip and uv read JSON), then kept on
    /// the head and stored with the page, so it is rendered once per change.
    pub async fn plain_with_html(self: &Arc<Self>, name: &ProjectName, head: &Arc<PageHead>) -> Option<Arc<Bodies>> {
        let plain = head.plain();
        if plain.has(MediaType::Html) {
            return Some(plain);
        }
        let model = self.model(name, head).await?;
        metrics::counter!("larder_page_html_renders_total").increment(1);
        let rendered = Arc::new(plain.with_html(&model.page, None));
        {
            let mut current = head.plain.write().expect("page head lock");
            if current.fingerprint() != rendered.fingerprint() {
                return Some(rendered); // the page changed meanwhile: served, not kept
            }
            if current.has(MediaType::Html) {
                return Some(current.clone());
            }
            // Only the HTML is added: the JSON may have been stored since `plain` was read.
            *current = Arc::new(current.with_html_of(&rendered));
        }
        if let Some(entry) = self.heads.get(name).await
            && matches!(&entry.state, PageState::Found(h) if Arc::ptr_eq(h, head))
        {
            self.persist(name, &entry, head.clone(), model, None);
            self.replace_entry(name, &entry, &entry).await; // weighed again with its HTML
        }
        Some(rendered)
    }

    /// The stored bytes of a body (`None`: missing or damaged; render the page again).
    pub async fn read_body(&self, body: &Body) -> Option<Blob> {
        self.bodies.read(body).await
    }

    /// Renders the plain page again from its model, after a body of `failed` could not be
    /// read. When the page has another head by now (it changed, and the write of the new
    /// rendering removed the old one's bodies), that head is the answer: nothing is rendered.
    pub async fn repair(self: &Arc<Self>, name: &ProjectName, failed: &Arc<PageHead>) -> Option<Arc<PageHead>> {
        let old = self.heads.get(name).await?;
        let PageState::Found(head) = &old.state else { return None };
        if !Arc::ptr_eq(head, failed) {
            return Some(head.clone());
        }
        let model = self.model(name, head).await?;
        let fresh = PageHead::of_model(model.clone(), head.epoch);
        self.install(name, &old, fresh, model).await;
        match &self.heads.get(name).await?.state {
            PageState::Found(h) => Some(h.clone()),
            PageState::NotFound => None,
        }
    }

    /// Keeps a variant rendering of a page, and stores its bodies in the background.
    /// Per-origin renderings (a Host header's choice, so anyone's) are kept in memory only,
    /// four per page at most, and weighed with the page; never written to the store.
    pub async fn keep_variant(
        &self,
        name: &ProjectName,
        head: &Arc<PageHead>,
        key: VariantKey,
        until: u64,
        bodies: Option<Bodies>,
    ) -> Option<Arc<Bodies>> {
        let bodies = bodies.map(Arc::new);
        head.variants.keep(key.clone(), until, bodies.clone());
        if let Some(entry) = self.heads.get(name).await {
            self.heads.insert(name.clone(), entry).await; // weighed again with its variants
        }
        let kept = bodies.clone()?;
        if key.files_base.is_some() {
            return Some(kept);
        }
        let Ok(permit) = self.variant_writes.clone().try_acquire_owned() else { return Some(kept) };
        let (head, store) = (head.clone(), self.bodies.clone());
        self.tasks.spawn(async move {
            match store.put(kept).await {
                Ok(stored) => head.variants.settle(&key, Arc::new(stored)),
                Err(e) => tracing::warn!(error = %e, "cannot store a page rendering; it stays in memory"),
            }
            drop(permit);
        });
        bodies
    }

    /// The model of a page Larder has, without asking the upstream.
    pub async fn stored_model(self: &Arc<Self>, name: &ProjectName) -> Option<Arc<PageModel>> {
        let cached = match self.heads.get(name).await {
            Some(p) => p,
            None => self.load_record(name).await?,
        };
        match &cached.state {
            PageState::Found(head) => self.model(name, head).await,
            PageState::NotFound => None,
        }
    }

    /// Drops a page from memory (its model could not be read: the next request refetches).
    pub async fn forget(&self, name: &ProjectName) {
        self.heads.invalidate(name).await;
        self.models.invalidate(name).await;
    }

    /// The page Larder already has that lists `filename` under `key`, and that file's upload
    /// time. Asks no upstream: the head in memory (however old), else the stored record's head.
    /// The file route serves a stored blob only when this says yes (issue 9).
    pub async fn listed_locally(self: &Arc<Self>, key: &FileKey, filename: &str) -> Option<Listed> {
        for candidate in index::filename::candidate_projects(filename) {
            let Ok(name) = ProjectName::parse(&candidate) else { continue };
            let cached = match self.heads.get(&name).await {
                Some(p) => p,
                // Never over a head a refresh installed meanwhile.
                None => match self.load_record(&name).await {
                    Some(p) => self.heads.entry(name.clone()).or_insert(p).await.into_value(),
                    None => continue,
                },
            };
            if let PageState::Found(head) = &cached.state
                && let Some(uploaded) = head.listing.find(key, filename)
            {
                let metadata = head.listing.metadata(key, filename);
                return Some(Listed { name, uploaded, metadata });
            }
        }
        None
    }

    /// Finds the file a `files/<key>/<filename>` URL names, trying the projects the filename
    /// most likely belongs to: at most `filename::MAX_CANDIDATES` pages, so that one anonymous request
    /// cannot send dozens upstream (issue 9).
    pub async fn find_file(
        self: &Arc<Self>,
        key: &FileKey,
        filename: &str,
    ) -> Result<Option<(ProjectName, DistFile)>, Arc<Error>> {
        let mut last_err = None;
        for candidate in index::filename::candidate_projects(filename) {
            let Ok(name) = ProjectName::parse(&candidate) else {
                continue;
            };
            // Twice: on a shared store another replica may have replaced the record since this
            // head was read (its model is then not the head's); the second read takes the
            // record as it is now (found by the rolling-restart test: a 404 for `.metadata`).
            for attempt in 0..2 {
                match self.get(&name).await {
                    Ok(Lookup { page: cached, .. }) => {
                        let PageState::Found(head) = &cached.state else { break };
                        if head.listing.find(key, filename).is_none() {
                            break;
                        }
                        match self.model(&name, head).await {
                            Some(model) => match model.file(key).filter(|f| f.filename == filename) {
                                Some(f) => return Ok(Some((name, f.clone()))),
                                None => break,
                            },
                            None if attempt == 0 => self.forget(&name).await,
                            None => break,
                        }
                    }
                    Err(e) => {
                        last_err = Some(e);
                        break;
                    }
                }
            }
        }
        match last_err {
            Some(e) => Err(e),
            None => Ok(None),
        }
    }

    /// Lets the memory caches evict what they are over their budget by: moka evicts as it is
    /// used, so after a cold resolve's burst they would hold the excess until the next one
    /// (issue 21's memory target). A loop calls it every few seconds.
    pub async fn tidy(&self) {
        self.heads.run_pending_tasks().await;
        self.models.run_pending_tasks().await;
        self.bodies.tidy().await;
        metrics::gauge!("larder_memory_cache_bytes", "cache" => "page_heads").set(self.heads.weighted_size() as f64);
        metrics::gauge!("larder_memory_cache_bytes", "cache" => "page_models").set(self.models.weighted_size() as f64);
        metrics::gauge!("larder_memory_cache_bytes", "cache" => "page_writes").set(self.writes.bytes() as f64);
    }

    /// Writes the freshness journal when it changed (a loop calls it every few seconds).
    pub async fn flush_journal(&self) {
        let keep = (self.settings.ttl + self.settings.stale_if_error).as_secs();
        self.journal.flush(self.settings.clock.unix().saturating_sub(keep)).await;
    }

    /// An entry fresh for what is left of the TTL since `confirmed_unix`.
    fn fresh_from(&self, confirmed_unix: u64) -> Instant {
        let age = Duration::from_secs(self.settings.clock.unix().saturating_sub(confirmed_unix));
        self.settings.clock.now() + self.settings.ttl.saturating_sub(age)
    }

    async fn refresh(self: Arc<Self>, name: ProjectName) -> Result<Lookup, Error> {
        let now = self.settings.clock.now();
        let current = match self.heads.get(&name).await {
            Some(p) if now < p.fresh_until => return Ok(Lookup { page: p, outcome: Outcome::Hit }),
            Some(p) => Some(p),
            None => match self.load_record(&name).await {
                // Read back within its TTL (after eviction or a restart): a hit.
                Some(p) if now < p.fresh_until => {
                    let p = self.heads.entry(name.clone()).or_insert(p).await.into_value();
                    return Ok(Lookup { page: p, outcome: Outcome::Hit });
                }
                other => other,
            },
        };
        let Some(upstream) = self.upstreams.client(&name) else {
            // Nothing to revalidate against: what is stored is what there is.
            return match current.as_deref() {
                Some(old @ CachedPage { state: PageState::Found(_), .. }) => {
                    // Fresh for a TTL, so that hits skip this path (offline pages never expire).
                    let entry = Arc::new(old.again(now + self.settings.ttl, old.confirmed_unix, false));
                    self.heads.insert(name, entry.clone()).await;
                    Ok(Lookup { page: entry, outcome: Outcome::Hit })
                }
                _ if self.settings.offline => Err(Error::Offline(name)),
                _ => Err(Error::NoUpstream(name)),
            };
        };
        let found = current.as_ref().filter(|p| matches!(p.state, PageState::Found(_)));
        let unix = self.settings.clock.unix();
        match upstream.fetch_page(&name, found.map(|p| &p.validators)).await {
            Ok(PageFetch::Modified(page, validators)) => {
                let model = self.model_of(page, unix);
                let head = PageHead::of_model(model.clone(), self.epochs.fetch_add(1, Ordering::Relaxed));
                let old_head = found.and_then(|p| match &p.state {
                    PageState::Found(h) => Some(h.clone()),
                    PageState::NotFound => None,
                });
                // Same bytes as the cached copy: same head, same Last-Modified, same views.
                if let (Some(old), Some(old_head)) = (found, old_head)
                    && old_head.plain().fingerprint() == head.plain().fingerprint()
                {
                    let mut entry = old.again(now + self.settings.ttl, unix, false);
                    entry.validators = validators;
                    let entry = Arc::new(entry);
                    self.journal.confirmed(&name, unix);
                    self.heads.insert(name.clone(), entry.clone()).await;
                    self.announce(&name, &model, upstream);
                    return Ok(Lookup { page: entry, outcome: Outcome::Revalidated });
                }
                let head = Arc::new(head);
                let entry = Arc::new(CachedPage {
                    state: PageState::Found(head.clone()),
                    fresh_until: now + self.settings.ttl,
                    confirmed_unix: unix,
                    changed_unix: unix,
                    validators,
                    stale: false,
                });
                self.known.write().expect("known-names lock").insert(name.clone());
                // The journal learns this confirmation once the record is written (`write`):
                // never an old record with a new time.
                let fingerprint = head.plain().fingerprint().unwrap_or_default().to_string();
                self.models.insert(name.clone(), (fingerprint, model.clone())).await;
                self.persist(&name, &entry, head, model.clone(), found.map(|p| &**p));
                self.heads.insert(name.clone(), entry.clone()).await;
                self.announce(&name, &model, upstream);
                Ok(Lookup { page: entry, outcome: Outcome::Miss })
            }
            Ok(PageFetch::NotModified) if found.is_some() => {
                let old = found.expect("checked");
                let entry = Arc::new(old.again(now + self.settings.ttl, unix, false));
                self.journal.confirmed(&name, unix);
                self.heads.insert(name.clone(), entry.clone()).await;
                Ok(Lookup { page: entry, outcome: Outcome::Revalidated })
            }
            Ok(PageFetch::NotModified) => Err(upstream::Error::BadPage {
                url: format!("{}{name}/", upstream.base()),
                reason: "304 Not Modified to an unconditional request".into(),
            }
            .into()),
            Ok(PageFetch::NotFound) => {
                let entry = Arc::new(CachedPage {
                    state: PageState::NotFound,
                    fresh_until: now + self.settings.not_found_ttl,
                    confirmed_unix: unix,
                    changed_unix: unix,
                    validators: Validators::default(),
                    stale: false,
                });
                self.heads.insert(name, entry.clone()).await;
                Ok(Lookup { page: entry, outcome: Outcome::Miss })
            }
            Err(e) => {
                let limit = (self.settings.ttl + self.settings.stale_if_error).as_secs();
                match found {
                    Some(old) if unix.saturating_sub(old.confirmed_unix) <= limit => {
                        tracing::warn!(project = %name, error = %e, "upstream failed; serving the cached page stale");
                        let entry =
                            Arc::new(old.again(now + STALE_RETRY.min(self.settings.ttl), old.confirmed_unix, true));
                        self.heads.insert(name, entry.clone()).await;
                        Ok(Lookup { page: entry, outcome: Outcome::Stale })
                    }
                    _ => Err(e.into()),
                }
            }
        }
    }

    /// A page's head from its record: no model is parsed (a record from before heads is
    /// upgraded: rendered once and written again).
    async fn load_record(self: &Arc<Self>, name: &ProjectName) -> Option<Arc<CachedPage>> {
        let bytes = match self.store.get_record(&record_key(name)).await {
            Ok(Some(b)) => b,
            Ok(None) => return None,
            Err(e) => {
                // A broken record is a miss: the upstream refills it.
                tracing::warn!(project = %name, error = %e, "cannot read the stored page; treating it as missing");
                return None;
            }
        };
        let stored = match records::decode_page_head(&bytes) {
            Ok(Some(head)) => Some(head),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(project = %name, error = %e, "stored page is not valid; treating it as missing");
                return None;
            }
        };
        let (head, confirmed, changed, validators, upstream_name, upgrade) = match stored {
            Some(h) => {
                let bodies = Bodies::from_stored(&h.bodies)?;
                let listing = Listing::from_hex(&h.listing, &h.metadata_listing).ok()?;
                let head = PageHead::new(bodies, h.provenance, listing, None, 0);
                (head, h.confirmed_unix, h.changed_unix, h.validators, h.upstream, None)
            }
            None => {
                let (model, r) = self.record_model(name, &bytes)?;
                let head = PageHead::of_model(model.clone(), 0);
                (head, r.confirmed_unix, r.changed_unix, r.validators, r.upstream, Some(model))
            }
        };
        // Routing changed since it was stored: the name's owner now is another upstream, whose
        // page this is not (issue 14: never serve one upstream's files under another's name).
        let owner = self.upstreams.owner(name).map(|r| r.name.as_str());
        let stored_from = upstream_name.as_deref().unwrap_or(upstream::routes::DEFAULT);
        if owner.is_some_and(|o| o != stored_from) {
            tracing::info!(project = %name, stored_from, owner = owner.unwrap_or_default(), "stored page is from another upstream than the name's owner; not used");
            return None;
        }
        let confirmed = confirmed.max(self.journal.get(name).unwrap_or(0));
        let head = Arc::new(head);
        let entry = Arc::new(CachedPage {
            state: PageState::Found(head.clone()),
            fresh_until: self.fresh_from(confirmed),
            confirmed_unix: confirmed,
            changed_unix: changed,
            validators,
            stale: false,
        });
        if let Some(model) = upgrade {
            self.persist(name, &entry, head, model, None);
        }
        Some(entry)
    }

    /// Stores a page in the background: its bodies as blobs, then its record (head line and
    /// model); then the head in memory drops the bytes and the model. Queued once per page
    /// (`WriteQueue`): when the disk is slower than the misses, past the queue's byte budget a
    /// page stays in memory and is not kept, rather than queue without limit (1,000-client load).
    /// `replaces`: the entry whose rendering this one replaces (its stored bodies go).
    fn persist(
        self: &Arc<Self>,
        name: &ProjectName,
        entry: &CachedPage,
        head: Arc<PageHead>,
        model: Arc<PageModel>,
        replaces: Option<&CachedPage>,
    ) {
        let replaces = match replaces.map(|r| &r.state) {
            Some(PageState::Found(old)) if !Arc::ptr_eq(old, &head) => old.plain().stored_shas(),
            _ => Vec::new(),
        };
        let upstream = self.upstreams.owner(name).map(|r| r.name.clone()).filter(|n| n != upstream::routes::DEFAULT);
        head.queued.store(true, Ordering::Relaxed);
        let job = PageWrite {
            head: head.clone(),
            model,
            validators: entry.validators.clone(),
            confirmed_unix: entry.confirmed_unix,
            changed_unix: entry.changed_unix,
            upstream,
            replaces,
        };
        let weight = job.weight();
        match self.writes.push(name.clone(), job, weight, PageWrite::merge) {
            Queued::Full => {
                head.queued.store(false, Ordering::Relaxed);
                metrics::counter!("larder_page_writes_skipped_total").increment(1);
                tracing::debug!(project = %name, "page writes are backed up; this page is not stored");
            }
            Queued::Merged | Queued::New { start_worker: false } => {}
            Queued::New { start_worker: true } => {
                let this = Arc::clone(self);
                self.tasks.spawn(async move {
                    let mut finished = None;
                    while let Some((name, job)) = this.writes.next(finished.as_ref()) {
                        // A bug in one page's write must not leave the page (and this worker)
                        // counted as busy forever: the queue would stall.
                        let write = std::panic::AssertUnwindSafe(this.write(&name, job));
                        if futures_util::FutureExt::catch_unwind(write).await.is_err() {
                            tracing::error!(project = %name, "writing the page panicked; it is not stored");
                        }
                        finished = Some(name);
                    }
                });
            }
        }
    }

    /// A head whose write failed holds its bodies and model in memory: the head cache weighs
    /// them again (it weighs an entry only when it is inserted).
    async fn unqueue(&self, name: &ProjectName, head: &Arc<PageHead>) {
        head.queued.store(false, Ordering::Relaxed);
        if let Some(entry) = self.heads.get(name).await
            && matches!(&entry.state, PageState::Found(h) if Arc::ptr_eq(h, head))
        {
            self.replace_entry(name, &entry, &entry).await;
        }
    }

    async fn write(&self, name: &ProjectName, job: PageWrite) {
        let PageWrite { head, model, validators, confirmed_unix, changed_unix, upstream, mut replaces } = job;
        // A newer state is in memory (its own write follows): never roll the record back.
        if let Some(current) = self.heads.get(name).await
            && matches!(&current.state, PageState::Found(h) if h.epoch > head.epoch)
        {
            head.queued.store(false, Ordering::Relaxed);
            return;
        }
        let plain = head.plain();
        let record_head = PageRecordHead {
            confirmed_unix,
            changed_unix,
            validators,
            upstream,
            bodies: Default::default(),
            listing: head.listing.to_hex(),
            metadata_listing: head.listing.metadata_hex(),
            provenance: head.provenance,
        };
        // The CPU work (compression, the record's JSON) one page at a time; the I/O after it
        // runs beside other pages' writes.
        let encoded = match self.bodies.cpu_turn().await {
            Ok(_turn) => {
                let plain = plain.clone();
                crate::cache::bodies::blocking("encoding a page", move || {
                    let compressed = plain.compressed()?;
                    let record_head = PageRecordHead { bodies: compressed.to_stored(), ..record_head };
                    let bytes = records::encode_page(&record_head, &model.page);
                    Ok((compressed, record_head, bytes))
                })
                .await
            }
            Err(e) => Err(e),
        };
        let stored = match encoded {
            Ok((compressed, record_head, bytes)) => {
                self.bodies.store_inline(&compressed).await.map(|stored| (stored, record_head, bytes))
            }
            Err(e) => Err(e),
        };
        let (stored, record_head, bytes) = match stored {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(project = %name, error = %e, "cannot store the page's bodies; it will not survive a restart");
                self.unqueue(name, &head).await;
                return;
            }
        };
        if let Err(e) = self.store.put_record(&record_key(name), bytes).await {
            tracing::warn!(project = %name, error = %e, "cannot store the page; it will not survive a restart");
            self.unqueue(name, &head).await;
            return;
        }
        self.journal.confirmed(name, confirmed_unix);
        // The bodies of the rendering this one replaced are garbage now (on a shared store
        // another replica may still serve them: eviction removes them there).
        replaces.append(&mut head.superseded.lock().expect("page head lock"));
        if !self.store.is_shared() {
            let kept: BTreeSet<&str> =
                record_head.bodies.json.iter().chain(&record_head.bodies.html).map(|b| b.sha256.as_str()).collect();
            for sha in replaces.iter().filter(|sha| !kept.contains(sha.as_str())) {
                self.bodies.forget(sha).await;
            }
        }
        // Already replaced in memory by a rendering of the same or a newer state: its write
        // removes what this one stored.
        if let Some(current) = self.heads.get(name).await
            && let PageState::Found(newer) = &current.state
            && !Arc::ptr_eq(newer, &head)
            && newer.epoch >= head.epoch
        {
            let mut list = newer.superseded.lock().expect("page head lock");
            list.extend(record_head.bodies.json.iter().chain(&record_head.bodies.html).map(|b| b.sha256.clone()));
        }
        // In memory, the bytes give way to the stored blobs, unless the rendering changed
        // meanwhile (its HTML added: the write queued for that stores it).
        {
            let mut current = head.plain.write().expect("page head lock");
            if Arc::ptr_eq(&current, &plain) {
                *current = Arc::new(stored);
            }
        }
        *head.pending.write().expect("page head lock") = None;
        self.store.enforce().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(epoch: u64, replaces: &[&str]) -> PageWrite {
        let page =
            ProjectPage { name: ProjectName::parse("p").unwrap(), files: Vec::new(), versions: None, status: None };
        let model = Arc::new(PageModel::new(page, 0));
        PageWrite {
            head: Arc::new(PageHead::of_model(model.clone(), epoch)),
            model,
            validators: Validators::default(),
            confirmed_unix: 0,
            changed_unix: 0,
            upstream: None,
            replaces: replaces.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// A write derived from an older upstream state (a relink or an HTML rendering of the page
    /// as it was) never replaces a newer state waiting for the disk; of one state, the later
    /// push wins (it carries the links or the HTML). Every replaced rendering is kept to delete.
    #[test]
    fn a_merged_write_keeps_the_newest_state() {
        let merged = PageWrite::merge(job(2, &["a"]), job(1, &["b"]));
        assert_eq!((merged.head.epoch, merged.replaces.clone()), (2, vec!["a".to_string(), "b".to_string()]));
        let merged = PageWrite::merge(job(1, &["a"]), job(2, &[]));
        assert_eq!(merged.head.epoch, 2);
        let (waiting, pushed) = (job(3, &[]), job(3, &["a"]));
        let pushed_head = pushed.head.clone();
        let merged = PageWrite::merge(waiting, pushed);
        assert!(Arc::ptr_eq(&merged.head, &pushed_head), "same state: the later push");
    }
}
