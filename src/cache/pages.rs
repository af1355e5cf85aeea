//! Project pages: the in-memory cache in front of the store and the upstream.
//!
//! A request for a page is answered from memory while the page is fresh (`index_ttl`). After
//! that, one coalesced refresh revalidates it upstream (`If-None-Match`/`If-Modified-Since`,
//! UP-05); when the upstream fails, the old page is served, for up to `stale_if_error`
//! (ROUTE-08). Pages are kept on disk as records, so they survive a restart: a page loaded from
//! disk counts as stale and is revalidated on first use. Each page is rendered once per format
//! into shared `Bytes` with its ETag, so a hit copies nothing.

use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;

use crate::cache::Outcome;
use crate::cache::links::MetadataLinks;
use crate::cache::records::{self, PageRecord, RecordKey};
use crate::coalesce::Coalescer;
use crate::index::{self, DistFile, FileKey, ProjectName, ProjectPage, RenderedPage};
use crate::store::bounded::Bounded;
use crate::store::{Records, Store};
use crate::upstream::{self, PageFetch, Upstream, Upstreams, Validators};

/// A file miss looks at this many candidate projects at most (legacy sdist names such as
/// `foo-bar-1.0.tar.gz` may belong to `foo-bar` or `foo`).
const MAX_CANDIDATES: usize = 3;

/// While the upstream is failing, retry it at most this often per page.
const STALE_RETRY: Duration = Duration::from_secs(30);

#[derive(Clone, Debug)]
pub struct PageSettings {
    pub ttl: Duration,
    pub stale_if_error: Duration,
    pub not_found_ttl: Duration,
    pub memory_bytes: u64,
    /// Larder is offline on purpose (the error message says so).
    pub offline: bool,
    /// Freshness is measured on this clock (tests move it forward).
    pub clock: crate::clock::Clock,
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

pub enum PageState {
    Found(Arc<RenderedPage>),
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

fn record_key(name: &ProjectName) -> String {
    RecordKey::Page(name.clone()).to_string()
}

pub type Lookup = (Arc<CachedPage>, Outcome);

pub struct Pages {
    memory: moka::future::Cache<ProjectName, Arc<CachedPage>>,
    /// Metadata Larder extracted itself, advertised on the pages it renders (issue 6).
    links: Arc<MetadataLinks>,
    /// Where fetched pages are announced to the metadata prefetcher, when it runs.
    announce: Option<mpsc::Sender<Announced>>,
    flight: Arc<Coalescer<ProjectName, Refresh>>,
    /// The store, bounded: page records count toward its size limit and are evicted like files.
    store: Arc<Bounded>,
    upstreams: Arc<Upstreams>,
    settings: PageSettings,
    /// Names with a stored page, for the project list.
    known: RwLock<BTreeSet<ProjectName>>,
    /// The engine's task tracker: page writes run on it, so shutdown waits for them.
    tasks: TaskTracker,
    /// Page writes under way at once (each holds its page until it is on disk).
    writes: Arc<tokio::sync::Semaphore>,
}

/// A page fetched from an upstream, for the metadata prefetcher: it reads from that upstream.
pub type Announced = (ProjectName, Arc<RenderedPage>, Upstream);

/// How many page writes may wait for the disk at once.
const MAX_PAGE_WRITES: usize = 64;

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
        let memory = moka::future::Cache::builder()
            .max_capacity(settings.memory_bytes)
            .weigher(|k: &ProjectName, v: &Arc<CachedPage>| match &v.state {
                PageState::Found(r) => r.weight(),
                // Weighed by what it holds, so that many long not-found names fill the budget.
                PageState::NotFound => (k.as_str().len() + 128) as u32,
            })
            .build();
        Pages {
            memory,
            links,
            announce,
            flight: Coalescer::new(tasks.clone()),
            store,
            upstreams,
            settings,
            known: RwLock::new(known),
            tasks,
            writes: Arc::new(tokio::sync::Semaphore::new(MAX_PAGE_WRITES)),
        }
    }

    fn announce(&self, name: &ProjectName, page: &Arc<CachedPage>, upstream: &Upstream) {
        if let (Some(tx), PageState::Found(r)) = (&self.announce, &page.state) {
            // Background work: dropped when the queue is full.
            let _ = tx.try_send((name.clone(), r.clone(), upstream.clone()));
        }
    }

    /// Renders a page with the metadata links applied; `changed_unix` is its Last-Modified.
    fn render(&self, mut page: ProjectPage, changed_unix: u64) -> Arc<RenderedPage> {
        self.links.apply(&mut page);
        Arc::new(RenderedPage::new(page, changed_unix))
    }

    /// Re-renders a page in memory after new metadata links appeared for its files.
    pub async fn relink(&self, name: &ProjectName) {
        let Some(old) = self.memory.get(name).await else { return };
        let PageState::Found(r) = &old.state else { return };
        let entry = Arc::new(CachedPage {
            state: PageState::Found(self.render(r.page.clone(), old.changed_unix)),
            fresh_until: old.fresh_until,
            confirmed_unix: old.confirmed_unix,
            changed_unix: old.changed_unix,
            validators: old.validators.clone(),
            stale: old.stale,
        });
        self.memory.insert(name.clone(), entry).await;
    }

    /// Weighs a page in memory again (it keeps views that count toward the page budget).
    pub async fn reweigh(&self, name: &ProjectName) {
        if let Some(entry) = self.memory.get(name).await {
            self.memory.insert(name.clone(), entry).await;
        }
    }

    /// Names Larder has pages for.
    pub fn known_names(&self) -> Vec<ProjectName> {
        self.known.read().expect("known-names lock").iter().cloned().collect()
    }

    /// The page for `name`, from memory, disk or upstream.
    pub async fn get(self: &Arc<Self>, name: &ProjectName) -> Result<Lookup, Arc<Error>> {
        self.store.touch_record(&record_key(name));
        if let Some(p) = self.memory.get(name).await
            && self.settings.clock.now() < p.fresh_until
        {
            let status = if p.stale { Outcome::Stale } else { Outcome::Hit };
            return Ok((p, status));
        }
        let this = Arc::clone(self);
        let key = name.clone();
        self.flight.run(name.clone(), move || async move { this.refresh(key).await }).await
    }

    /// The page Larder already has that lists `filename` under `key`. Asks no upstream: memory
    /// first (however old), then the stored page record, which is then kept in memory. The
    /// file route serves a stored blob only when this says yes (issue 9).
    pub async fn listed_locally(&self, key: &FileKey, filename: &str) -> Option<(ProjectName, Arc<RenderedPage>)> {
        for candidate in index::filename::candidate_projects(filename).into_iter().take(MAX_CANDIDATES) {
            let Ok(name) = ProjectName::parse(&candidate) else { continue };
            let cached = match self.memory.get(&name).await {
                Some(p) => p,
                None => match self.load_record(&name).await {
                    Some(p) => {
                        self.memory.insert(name.clone(), p.clone()).await;
                        p
                    }
                    None => continue,
                },
            };
            if let PageState::Found(r) = &cached.state
                && r.file(key).is_some_and(|f| f.filename == filename)
            {
                return Some((name, r.clone()));
            }
        }
        None
    }

    /// Finds the file a `files/<key>/<filename>` URL names, trying the projects the filename
    /// most likely belongs to: at most `MAX_CANDIDATES` pages, so that one anonymous request
    /// cannot send dozens upstream (issue 9).
    pub async fn find_file(
        self: &Arc<Self>,
        key: &FileKey,
        filename: &str,
    ) -> Result<Option<(ProjectName, DistFile)>, Arc<Error>> {
        let mut last_err = None;
        for candidate in index::filename::candidate_projects(filename).into_iter().take(MAX_CANDIDATES) {
            let Ok(name) = ProjectName::parse(&candidate) else {
                continue;
            };
            match self.get(&name).await {
                Ok((cached, _)) => {
                    if let PageState::Found(r) = &cached.state
                        && let Some(f) = r.file(key).filter(|f| f.filename == filename)
                    {
                        return Ok(Some((name, f.clone())));
                    }
                }
                Err(e) => last_err = Some(e),
            }
        }
        match last_err {
            Some(e) => Err(e),
            None => Ok(None),
        }
    }

    async fn refresh(self: Arc<Self>, name: ProjectName) -> Result<Lookup, Error> {
        let now = self.settings.clock.now();
        let current = match self.memory.get(&name).await {
            Some(p) if now < p.fresh_until => return Ok((p, Outcome::Hit)),
            Some(p) => Some(p),
            None => self.load_record(&name).await,
        };
        let Some(upstream) = self.upstreams.client(&name) else {
            // Nothing to revalidate against: what is stored is what there is.
            return match current.as_deref() {
                Some(CachedPage { state: PageState::Found(r), confirmed_unix, changed_unix, validators, .. }) => {
                    // Fresh for a TTL, so that hits skip this path (offline pages never expire).
                    let entry = Arc::new(CachedPage {
                        state: PageState::Found(r.clone()),
                        fresh_until: now + self.settings.ttl,
                        confirmed_unix: *confirmed_unix,
                        changed_unix: *changed_unix,
                        validators: validators.clone(),
                        stale: false,
                    });
                    self.memory.insert(name, entry.clone()).await;
                    Ok((entry, Outcome::Hit))
                }
                _ if self.settings.offline => Err(Error::Offline(name)),
                _ => Err(Error::NoUpstream(name)),
            };
        };
        let found = current.as_ref().filter(|p| matches!(p.state, PageState::Found(_)));
        match upstream.fetch_page(&name, found.map(|p| &p.validators)).await {
            Ok(PageFetch::Modified(page, validators)) => {
                let mut rendered = self.render(page.clone(), self.settings.clock.unix());
                // Compared with links applied on both sides, as the cached copy has them.
                let unchanged = matches!(found.map(|p| &p.state), Some(PageState::Found(r)) if r.page == rendered.page);
                let changed_unix = match found {
                    Some(old) if unchanged => {
                        let PageState::Found(r) = &old.state else { unreachable!("filtered to Found") };
                        rendered = r.clone(); // same content: same Last-Modified, same views
                        old.changed_unix
                    }
                    _ => self.settings.clock.unix(),
                };
                let entry = Arc::new(CachedPage {
                    fresh_until: now + self.settings.ttl,
                    confirmed_unix: self.settings.clock.unix(),
                    changed_unix,
                    validators: validators.clone(),
                    stale: false,
                    state: PageState::Found(rendered),
                });
                // Write only real changes: cacache's index is append-only (crates-notes §9.2).
                // In the background: the client does not wait for the disk.
                if !unchanged {
                    self.known.write().expect("known-names lock").insert(name.clone());
                    // Bounded: when the disk is slower than the misses, a page is served from
                    // memory and not kept, rather than queue without limit (1,000-client load).
                    match self.writes.clone().try_acquire_owned() {
                        Ok(permit) => {
                            let record = PageRecord {
                                page,
                                validators,
                                confirmed_unix: entry.confirmed_unix,
                                changed_unix,
                                upstream: Some(upstream.name().to_string()).filter(|n| n != upstream::routes::DEFAULT),
                            };
                            let write = Arc::clone(&self).persist(name.clone(), record);
                            self.tasks.spawn(async move {
                                write.await;
                                drop(permit);
                            });
                        }
                        Err(_) => {
                            metrics::counter!("larder_page_writes_skipped_total").increment(1);
                            tracing::debug!(project = %name, "page writes are backed up; this page is not stored");
                        }
                    }
                }
                self.memory.insert(name.clone(), entry.clone()).await;
                self.announce(&name, &entry, upstream);
                Ok((entry, Outcome::Miss))
            }
            Ok(PageFetch::NotModified) if found.is_some() => {
                let old = found.expect("checked");
                let PageState::Found(r) = &old.state else { unreachable!("filtered to Found") };
                let entry = Arc::new(CachedPage {
                    state: PageState::Found(r.clone()),
                    fresh_until: now + self.settings.ttl,
                    confirmed_unix: self.settings.clock.unix(),
                    changed_unix: old.changed_unix,
                    validators: old.validators.clone(),
                    stale: false,
                });
                self.memory.insert(name.clone(), entry.clone()).await;
                self.announce(&name, &entry, upstream);
                Ok((entry, Outcome::Revalidated))
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
                    confirmed_unix: self.settings.clock.unix(),
                    changed_unix: self.settings.clock.unix(),
                    validators: Validators::default(),
                    stale: false,
                });
                self.memory.insert(name, entry.clone()).await;
                Ok((entry, Outcome::Miss))
            }
            Err(e) => {
                let limit = (self.settings.ttl + self.settings.stale_if_error).as_secs();
                match found {
                    Some(old) if self.settings.clock.unix().saturating_sub(old.confirmed_unix) <= limit => {
                        tracing::warn!(project = %name, error = %e, "upstream failed; serving the cached page stale");
                        let PageState::Found(r) = &old.state else { unreachable!("filtered to Found") };
                        let entry = Arc::new(CachedPage {
                            state: PageState::Found(r.clone()),
                            fresh_until: now + STALE_RETRY.min(self.settings.ttl),
                            confirmed_unix: old.confirmed_unix,
                            changed_unix: old.changed_unix,
                            validators: old.validators.clone(),
                            stale: true,
                        });
                        self.memory.insert(name, entry.clone()).await;
                        Ok((entry, Outcome::Stale))
                    }
                    _ => Err(e.into()),
                }
            }
        }
    }

    async fn load_record(&self, name: &ProjectName) -> Option<Arc<CachedPage>> {
        let bytes = match self.store.get_record(&record_key(name)).await {
            Ok(Some(b)) => b,
            Ok(None) => return None,
            Err(e) => {
                // A broken record is a miss: the upstream refills it.
                tracing::warn!(project = %name, error = %e, "cannot read the stored page; treating it as missing");
                return None;
            }
        };
        let record = match records::decode_page(name, &bytes) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(project = %name, error = %e, "stored page is not valid; treating it as missing");
                return None;
            }
        };
        // Routing changed since it was stored: the name's owner now is another upstream, whose
        // page this is not (issue 14: never serve one upstream's files under another's name).
        let owner = self.upstreams.owner(name).map(|r| r.name.as_str());
        let stored_from = record.upstream.as_deref().unwrap_or(upstream::routes::DEFAULT);
        if owner.is_some_and(|o| o != stored_from) {
            tracing::info!(project = %name, stored_from, owner = owner.unwrap_or_default(), "stored page is from another upstream than the name's owner; not used");
            return None;
        }
        let changed_unix = if record.changed_unix == 0 { record.confirmed_unix } else { record.changed_unix };
        Some(Arc::new(CachedPage {
            state: PageState::Found(self.render(record.page, changed_unix)),
            fresh_until: self.settings.clock.now(), // stale: revalidate on first use
            confirmed_unix: record.confirmed_unix,
            changed_unix,
            validators: record.validators,
            stale: false,
        }))
    }

    async fn persist(self: Arc<Self>, name: ProjectName, record: PageRecord) {
        let bytes = serde_json::to_vec(&record).expect("a page record serializes");
        if let Err(e) = self.store.put_record(&record_key(&name), bytes).await {
            tracing::warn!(project = %name, error = %e, "cannot store the page; it will not survive a restart");
            return;
        }
        self.store.enforce().await;
    }
}
