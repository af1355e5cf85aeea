//! `AppState`: everything a request handler needs, behind one cheap handle.

use std::sync::Arc;

use crate::cache::fill::Fills;
use crate::cache::links::{MetadataLinks, PrefetchSettings, spawn_prefetcher};
use crate::cache::pages::{PageSettings, Pages};
use crate::cache::private::Private;
use crate::config::Config;
use crate::evict::Evictor;
use crate::store::{self, Store};
use crate::upstream::Upstream;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Arc<dyn Store>,
    pub pages: Arc<Pages>,
    pub private: Arc<Private>,
    /// `None` when no upstream is configured.
    pub fills: Option<Arc<Fills>>,
    /// The store size limit, when one is set.
    pub evictor: Option<Arc<Evictor>>,
    /// Small files served recently, as shared bytes: a hit copies and reads nothing.
    pub hot_files: moka::future::Cache<String, bytes::Bytes>,
    /// Renders `/metrics`; `None` when no recorder is installed (library use, unit tests).
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
}

impl AppState {
    pub async fn new(config: Config) -> anyhow::Result<AppState> {
        let store = store::from_config(&config)?;
        // Offline: no upstream client exists at all, so nothing can open a connection.
        let upstream = match config.upstream_settings() {
            Some(settings) if !config.offline => Some(Upstream::new(settings)?),
            _ => None,
        };
        let settings = PageSettings {
            ttl: config.index_ttl,
            stale_if_error: config.stale_if_error,
            not_found_ttl: config.not_found_ttl,
            memory_bytes: config.page_cache_bytes,
            offline: config.offline,
        };
        // One pass over the record index feeds everything below.
        let records = store.list_records().await?;
        let links = Arc::new(MetadataLinks::from_records(store.clone(), &records));
        let private = Arc::new(Private::load(store.clone(), &records).await?);
        // Always track the store's size (the `larder_store_bytes` gauge); evict only under a limit.
        let limit = config.max_store_bytes.unwrap_or(u64::MAX);
        let evictor = Arc::new(Evictor::new(limit, store.clone(), private.clone(), links.clone(), &records).await?);
        evictor.enforce().await; // also: the limit may have shrunk since the last run
        let pages =
            Arc::new(Pages::new(store.clone(), upstream.clone(), links.clone(), evictor.clone(), settings, &records));
        let evictor = Some(evictor);
        let fills = match upstream {
            Some(up) => {
                if config.metadata_prefetch {
                    let settings = PrefetchSettings { versions: config.metadata_prefetch_versions, concurrency: 4 };
                    pages.set_prefetcher(spawn_prefetcher(pages.clone(), up.clone(), links.clone(), settings));
                }
                let spool = config.data_dir.join("spool");
                let limits = config.archive_limits;
                Some(Arc::new(Fills::new(store.clone(), up, spool, links, pages.clone(), evictor.clone(), limits)?))
            }
            None => None,
        };
        let hot_files = moka::future::Cache::builder()
            .max_capacity(config.file_cache_bytes)
            .weigher(|_k, v: &bytes::Bytes| v.len().try_into().unwrap_or(u32::MAX))
            .build();
        Ok(AppState { config: Arc::new(config), store, pages, private, fills, evictor, hot_files, metrics: None })
    }
}
