//! `AppState`: everything a request handler needs, behind one cheap handle.

use std::sync::Arc;

use crate::cache::{Cache, Mode};
use crate::config::Config;
use crate::oidc::TrustedPublishing;
use crate::stats::Stats;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    /// The cache engine: every page, file and upload goes through it.
    pub cache: Arc<Cache>,
    /// Renders `/metrics`; `None` when no recorder is installed (library use, unit tests).
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// What the pages for people show about the cache at work.
    pub stats: Arc<Stats>,
    /// Set on SIGTERM: `/-/ready` answers 503 and HTTP/1 connections close after their
    /// response, while everything is still served (issue 27).
    pub draining: Arc<std::sync::atomic::AtomicBool>,
    /// Trusted publishing: OIDC tokens exchanged for short-lived upload tokens (issue 23).
    pub publishing: Arc<TrustedPublishing>,
}

impl AppState {
    /// The state of a server: the engine in `Serve` mode.
    pub async fn new(config: Config) -> anyhow::Result<AppState> {
        let config = Arc::new(config);
        let cache = Arc::new(Cache::open(config.clone(), Mode::Serve).await?);
        AppState::with_cache(config, cache)
    }

    /// The same around a given engine (tests build one on a failing store).
    pub fn with_cache(config: Arc<Config>, cache: Arc<Cache>) -> anyhow::Result<AppState> {
        let publishing = Arc::new(TrustedPublishing::new(
            config.oidc_audience.clone(),
            config.trusted_publishers.clone(),
            cache.shared_store(),
            Some(config.data_dir.join("oidc-used-jti")),
        )?);
        Ok(AppState { config, cache, metrics: None, stats: Arc::default(), draining: Arc::default(), publishing })
    }
}
