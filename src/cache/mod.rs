//! The cache engine: the one facade the HTTP handlers and the commands call.
//!
//! `Cache` owns project pages (`pages`), private uploads (`private`), metadata links (`links`),
//! the range prefetcher (`prefetch`), downloads from upstream (`fill`), the store with its size
//! limit, and every background task (one tracker; `shutdown` waits for them). Data flows down
//! (cache → store, upstream, index); news flows up as return values and events, never as calls
//! from a lower part into a higher one.
//!
//! - `Cache::page`, `page_body`: the simple API's pages as a scope sees them, private uploads
//!   masking the upstream (DC-1; `scope_policy.rs`); `names`: the project list.
//! - `Cache::read_file`: files and PEP 658 metadata (`files.rs`: what the reader may see, and
//!   where the bytes come from), `provenance`.
//! - `Cache::upload`, `yank`, `delete`: private packages (`upload.rs`).
//! - `Cache::upstream_page`, `warm_file`: what `larder warm` needs.

mod advisories;
pub(crate) mod advisory_store;
mod ahead;
mod bodies;
mod budget;
mod files;
mod fill;
mod links;
mod pages;
mod prefetch;
mod private;
mod provenance;
pub mod records;
mod retention;
mod scope_policy;
mod upload;

use std::collections::BTreeSet;
use std::sync::Arc;

use tokio::sync::mpsc;

pub use budget::{Busy, ClientKey};
pub use files::{FileBody, FileRead, FileReply};
pub use fill::Error as FillError;
pub(crate) use links::links_in;
pub use pages::Error as PageError;
pub use private::{Added, Unchecked, WriteError};
#[cfg(test)]
pub(crate) use upload::validate as validate_upload;
pub use upload::{Spooled, Upload};

use crate::clock::Clock;
use crate::config::Config;
use crate::index::rendered::Encoding;
use crate::index::{MediaType, PageModel, ProjectName};
use crate::store::Blob;
use crate::store::{self, Store, bounded::Bounded, health::Health};
use crate::upstream::Upstreams;
use fill::Fills;
use links::MetadataLinks;
use pages::{PageSettings, Pages};
use private::PrivateRecords;

/// Metadata reads by ranges the prefetcher runs at once, at most.
const PREFETCH_READS: usize = 8;

/// How an answer was produced; sent to clients as `X-Cache` and carried in the response's
/// extensions for logs and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Served from memory or the store without asking the upstream.
    Hit,
    /// The upstream confirmed the cached copy (304).
    Revalidated,
    /// Fetched from the upstream.
    Miss,
    /// The upstream failed and an older copy was served.
    Stale,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Hit => "HIT",
            Outcome::Revalidated => "REVALIDATED",
            Outcome::Miss => "MISS",
            Outcome::Stale => "STALE",
        }
    }
}

/// Who is reading, as the server's auth decided it: the projects whose private packages this
/// scope shows, and whether its answers are private (a token was needed).
#[derive(Clone, Debug, Default)]
pub struct Reader {
    pub projects: Vec<String>,
    pub private: bool,
    /// The scope's upstreams, cooldown and status (issue 14).
    pub rules: Arc<crate::policy::ScopeRules>,
    /// Whom the upstream downloads this read starts are counted against (issue 22); `None`
    /// for the operator's own commands, which are not limited.
    pub client: Option<budget::ClientKey>,
}

impl Reader {
    /// A public reader of one project, with its rules (commands read as the default project).
    pub fn of_project(config: &Config, id: &str) -> Reader {
        Reader { projects: vec![id.to_string()], private: false, rules: config.rules.for_project(id), client: None }
    }
}

/// Every way the engine can fail; `server::error` maps each to one status.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Nothing visible here by that name or key.
    #[error("{0}")]
    NotFound(String),
    /// On the block list (403).
    #[error("{0}")]
    Blocked(String),
    #[error(transparent)]
    Page(Arc<pages::Error>),
    #[error(transparent)]
    Fill(Arc<fill::Error>),
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error(transparent)]
    Write(#[from] private::WriteError),
    /// Replicas: a name the shared store could not be asked about (fail closed, issue 22).
    #[error(transparent)]
    Unchecked(#[from] private::Unchecked),
    /// The client has as many large downloads under way as it may start (issue 22).
    #[error(transparent)]
    Busy(#[from] budget::Busy),
    /// An upload that breaks the upload API's rules (Warehouse's wording where clients match it).
    #[error("{0}")]
    BadUpload(String),
    /// An upload action that no longer exists (410).
    #[error("{0}")]
    Gone(String),
    /// An upload that would hide an upstream project (DC-4).
    #[error("{0}")]
    Shadowing(String),
    /// A check that needs the upstream could not be made now.
    #[error("{0}")]
    Unavailable(String),
    /// A download that ended without a result (502: the upstream side failed to finish).
    #[error("{0}")]
    Incomplete(String),
    /// A broken promise inside Larder (500; the detail goes to the log only).
    #[error("{0}")]
    Internal(String),
}

/// The answer for a project page.
pub enum PageAnswer {
    Found {
        page: Arc<PageModel>,
        outcome: Outcome,
        private_upload: bool,
    },
    /// The upstream has no such project.
    NotFound,
}

/// What a client asked of a page: the media type negotiated, the codings it accepts, the
/// absolute `files/` base of its origin (for provenance links), and whether its copy is current.
pub struct PageWant<'a> {
    pub media: MediaType,
    pub accepted: [bool; 3],
    pub files_base: Option<&'a str>,
    /// `is_current(etag, modified_unix)`: the client's validators match (304).
    pub is_current: &'a (dyn Fn(&str, u64) -> bool + Sync),
    /// HEAD: headers only.
    pub head: bool,
}

/// A page body chosen for a client.
pub struct ServedPage {
    pub etag: String,
    pub encoding: Encoding,
    pub len: u64,
    pub modified_unix: u64,
    /// The bytes; `None` for HEAD and when the client's copy is current.
    pub body: Option<Blob>,
    pub not_modified: bool,
    pub outcome: Outcome,
    pub private_upload: bool,
}

pub enum PageReply {
    Found(ServedPage),
    /// The upstream has no such project.
    NotFound,
}

/// Whether the engine runs a server (background prefetch, size limit enforced at start) or a
/// one-shot command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Serve,
    Command,
}

pub struct Cache {
    config: Arc<Config>,
    store: Arc<dyn Store>,
    /// The same store, seen as what it is: the size limit's wrapper (pins, recency, eviction)…
    bounded: Arc<Bounded>,
    /// … over the health layer (failing reads and writes, for `/-/health` and `/-/ready`).
    health: Arc<Health>,
    pages: Arc<Pages>,
    private: Arc<PrivateRecords>,
    links: Arc<MetadataLinks>,
    /// `None` when no upstream is configured (or offline).
    fills: Option<Arc<Fills>>,
    /// Small files served recently, as shared bytes: a hit copies and reads nothing.
    hot_files: moka::future::Cache<String, bytes::Bytes>,
    /// The wheel tags clients ask for: the prefetcher reads those wheels' metadata first.
    demand: Arc<prefetch::Demand>,
    /// Every background task (page writes, downloads and their follow-ups, prefetches, the
    /// store's copies, the long-lived loops: mini-redis gives its purge task an owner the same
    /// way), and the signal that ends the loops at shutdown.
    background: store::Background,
    /// Which upstream owns which name (issue 14).
    upstreams: Arc<Upstreams>,
    /// Pages and metadata fetched ahead of the clients (a server with an upstream only).
    ahead: Option<Arc<ahead::Ahead>>,
    /// The block list in force (reloaded on SIGHUP).
    blocks: Arc<crate::policy::Blocks>,
    /// Imported OSV advisories and the `[advisories]` policy in force (issue 25).
    advisory_state: advisories::AdvisoryState,
    /// Cooldowns are measured on it.
    clock: Clock,
    /// PEP 740 provenance: what was checked, fetches under way, origins rendered for.
    provenance: provenance::Provenance,
    /// Every write is recorded here (issue 23).
    audit: Arc<crate::audit::Audit>,
}

impl Cache {
    /// Opens the store and builds the engine.
    pub async fn open(config: Arc<Config>, mode: Mode) -> anyhow::Result<Cache> {
        let background = store::Background::default();
        let store = store::from_config(&config, &background).await?;
        Cache::with_store(config, store, mode, Clock::system(), background).await
    }

    /// The same, on a given store and clock (tests inject a failing store and move time).
    /// `background`: what the store's own background work runs on; the engine's joins it.
    pub async fn with_store(
        config: Arc<Config>,
        store: Arc<dyn Store>,
        mode: Mode,
        clock: Clock,
        background: store::Background,
    ) -> anyhow::Result<Cache> {
        let tasks = background.tasks.clone();
        // Offline: no upstream client exists at all, so nothing can open a connection.
        let upstreams =
            Arc::new(Upstreams::new(&config.upstream_routes, config.default_upstream.as_ref(), config.offline)?);
        let has_upstream = upstreams.any_client();
        // One pass over the record index feeds everything below.
        let listed_at = std::time::Instant::now();
        let records = store.list_records().await?;
        // Always track the store's size (the `larder_store_bytes` gauge); evict only under a limit.
        let limit = config.max_store_bytes.unwrap_or(u64::MAX);
        let health = Arc::new(Health::new(store));
        let bounded = Arc::new(Bounded::new(health.clone(), limit, &records, records::is_page_key).await?);
        let store: Arc<dyn Store> = bounded.clone();
        // Pages of a server with an upstream advertise `.metadata` for every wheel (issue 11).
        let on_demand = mode == Mode::Serve && has_upstream;
        let links = Arc::new(MetadataLinks::from_records(bounded.clone(), &records, on_demand));
        let private = Arc::new(
            PrivateRecords::load(
                store.clone(),
                &records,
                listed_at,
                config.replica_lag,
                config.replica_absent_lag,
                tasks.clone(),
            )
            .await?,
        );
        // What exists nowhere else is never evicted: private uploads, metadata Larder extracted.
        for sha in private.blobs().into_iter().chain(links.targets()) {
            bounded.pin(&sha).await;
        }
        if mode == Mode::Serve {
            bounded.enforce().await; // the limit may have shrunk since the last run
        }
        // Pages announce what they fetched; the prefetcher reads metadata ahead and reports
        // the projects whose links changed, and one loop here re-renders them.
        let (announce_tx, announce_rx) = mpsc::channel(256);
        let (relink_tx, mut relink_rx) = mpsc::unbounded_channel::<ProjectName>();
        let settings = PageSettings {
            journal: Some(config.data_dir.join("pages-confirmed")),
            prefetch_versions: config.metadata_prefetch_versions,
            ttl: config.index_ttl,
            stale_if_error: config.stale_if_error,
            not_found_ttl: config.not_found_ttl,
            memory_bytes: config.page_cache_bytes,
            offline: config.offline,
            clock: clock.clone(),
        };
        let prefetching = mode == Mode::Serve && config.metadata_prefetch && has_upstream;
        let pages = Arc::new(Pages::new(
            upstreams.clone(),
            links.clone(),
            bounded.clone(),
            settings,
            &records,
            tasks.clone(),
            prefetching.then_some(announce_tx),
        ));
        let demand = Arc::new(prefetch::Demand::default());
        // Relinks come in bursts (a prefetch finds several wheels of one page): each page is
        // rendered again once per burst.
        let relinker = pages.clone();
        background.spawn(async move {
            while let Some(first) = relink_rx.recv().await {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                let mut names = BTreeSet::from([first]);
                while let Ok(n) = relink_rx.try_recv() {
                    names.insert(n);
                }
                for name in names {
                    relinker.relink(&name).await;
                }
            }
        });
        let hot_files = moka::future::Cache::builder()
            .max_capacity(config.file_cache_bytes)
            .weigher(|_k, v: &bytes::Bytes| v.len().try_into().unwrap_or(u32::MAX))
            .build();
        if mode == Mode::Serve {
            let journal = pages.clone();
            let files = hot_files.clone();
            background.spawn(async move {
                loop {
                    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                    journal.flush_journal().await;
                    // The memory caches evict as they are used: after a burst they would hold
                    // their excess until the next request (issue 21's memory target).
                    journal.tidy().await;
                    files.run_pending_tasks().await;
                    metrics::gauge!("larder_memory_cache_bytes", "cache" => "files").set(files.weighted_size() as f64);
                }
            });
        }
        let fills = match has_upstream {
            true => {
                let spool = config.spool_dir();
                let limits = config.archive_limits;
                let budgets = fill::FillBudgets {
                    per_client: config.max_downloads_per_client,
                    // A quarter of the file permits at most finish downloads nobody reads.
                    unread: config.max_upstream_connections / 4,
                };
                let fills =
                    Fills::new(bounded.clone(), spool, links.clone(), limits, tasks.clone(), relink_tx, budgets)?;
                if mode == Mode::Serve {
                    fills.clear_spool();
                }
                let fills = Arc::new(fills);
                if prefetching {
                    // Never more than a quarter of the file permits: the rest stay with the clients.
                    let reads = PREFETCH_READS.min(config.max_upstream_connections / 4).max(1);
                    let settings = prefetch::Settings { concurrency: reads };
                    let run = prefetch::run(announce_rx, fills.clone(), links.clone(), settings, demand.clone());
                    background.spawn(run);
                }
                Some(fills)
            }
            false => None,
        };
        let blocks = Arc::new(crate::policy::Blocks::new(config.block.clone()));
        let ahead = match (&fills, mode, config.fetch_ahead) {
            (Some(fills), Mode::Serve, true) => Some(Arc::new(ahead::Ahead {
                pages: pages.clone(),
                fills: fills.clone(),
                links: links.clone(),
                demand: demand.clone(),
                upstreams: upstreams.clone(),
                private: private.clone(),
                blocks: blocks.clone(),
                store: bounded.clone(),
                tasks: tasks.clone(),
                permits: Arc::new(tokio::sync::Semaphore::new(ahead::MAX_AHEAD)),
                walks: Arc::new(tokio::sync::Semaphore::new(ahead::MAX_WALKS)),
            })),
            _ => None,
        };
        let tasks_for_flights = tasks.clone();
        let shared = store.is_shared().then(|| store.clone());
        let audit = Arc::new(crate::audit::Audit::open(config.audit_log.as_ref(), shared)?);
        let advisory_state = advisories::AdvisoryState::new(config.advisories.clone());
        let cache = Cache {
            config,
            store,
            bounded,
            health,
            pages,
            private,
            links,
            fills,
            hot_files,
            demand,
            background,
            upstreams,
            ahead,
            blocks,
            advisory_state,
            clock,
            provenance: provenance::Provenance::new(tasks_for_flights),
            audit,
        };
        cache.reload_advisories().await;
        Ok(cache)
    }

    /// Writes the pages' freshness journal now (a stop whose background work ran out of time
    /// still keeps the cache warm for the next start).
    pub async fn flush_journal(&self) {
        self.pages.flush_journal().await;
    }

    /// Stops the long-lived loops (prefetcher, relinker, journal), then waits for every
    /// background task (page writes, downloads, metadata extraction). Commands call it before
    /// they exit; `serve` after it stopped accepting requests.
    pub async fn shutdown(&self) {
        // The loops first: the prefetcher would go on starting reads the wait below waits for.
        self.background.stop.cancel();
        self.background.tasks.close();
        self.background.tasks.wait().await;
        self.pages.flush_journal().await;
        self.audit.flush().await;
    }

    /// What is degraded, if anything: the store failing its writes (a full disk) or its reads.
    pub fn degraded(&self) -> Option<String> {
        self.health.degraded()
    }

    /// The store, when other processes write to it too (replicas on a bucket): what must be
    /// seen by every replica (minted upload tokens) is kept there.
    pub fn shared_store(&self) -> Option<Arc<dyn Store>> {
        self.store.is_shared().then(|| self.store.clone())
    }

    /// The audit log: every write is recorded there.
    pub fn audit(&self) -> &Arc<crate::audit::Audit> {
        &self.audit
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Where the store lives, for logs.
    pub fn location(&self) -> String {
        self.store.location()
    }

    /// Before a listing: learns the names other replicas claimed (a no-op on a local store).
    async fn refresh_listing(&self) {
        // A listing shows what is known when the store does not answer (it serves no files).
        let _ = self.private.refresh_names().await;
    }

    /// The private names of `reader`'s projects, claims other replicas made included.
    pub async fn private_names(&self, reader: &Reader) -> BTreeSet<ProjectName> {
        self.refresh_listing().await;
        self.private.names(&reader.projects)
    }

    /// Bytes in the store, and the size limit when there is one.
    pub fn store_usage(&self) -> (u64, Option<u64>) {
        (self.bounded.total(), self.config.max_store_bytes)
    }

    /// The names `reader` sees in the project list: those with stored upstream pages, and the
    /// private names of its projects (claims other replicas made included).
    pub async fn names(&self, reader: &Reader) -> BTreeSet<ProjectName> {
        self.refresh_listing().await;
        let (blocks, _) = self.blocks.current();
        let mut names: BTreeSet<ProjectName> = self
            .pages
            .known_names()
            .into_iter()
            .filter(|n| blocks.project(n).is_none() && self.owner_for(reader, n).is_ok())
            .collect();
        names.extend(self.private.names(&reader.projects));
        names
    }
}
