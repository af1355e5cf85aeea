//! Larder in this process: the engine on a store the test chooses (a failing one, say) and a
//! clock the test moves, behind the real HTTP server on a loopback port.

use std::sync::Arc;

use larder::cache::{Cache, Mode};
use larder::cli::Settings;
use larder::clock::Clock;
use larder::config::{Config, FileConfig};
use larder::state::AppState;
use larder::store::Store;

pub struct InProcess {
    pub base: String,
    pub clock: Clock,
    pub cache: Arc<Cache>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl InProcess {
    /// Serves with `settings` (data dir included) on `store`, or on the configured local store.
    pub fn start(settings: Settings, store: Option<Arc<dyn Store>>) -> InProcess {
        Self::start_inner(settings, store, None)
    }

    /// The same with one read+write token (what `LARDER_TOKEN` gives a process).
    pub fn start_with_token(settings: Settings, store: Option<Arc<dyn Store>>, token: &str) -> InProcess {
        Self::start_inner(settings, store, Some(token.to_string()))
    }

    fn start_inner(settings: Settings, store: Option<Arc<dyn Store>>, token: Option<String>) -> InProcess {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let config = Arc::new(Config::merge(FileConfig::default(), &settings, token).unwrap());
        let clock = Clock::system();
        let background = larder::store::Background::default();
        let (base, cache, tx) = runtime.block_on(async {
            let store = match store {
                Some(s) => s,
                None => larder::store::from_config(&config, &background).await.unwrap(),
            };
            let cache = Arc::new(
                Cache::with_store(config.clone(), store, Mode::Serve, clock.clone(), background).await.unwrap(),
            );
            let state = AppState::with_cache(config.clone(), cache.clone()).unwrap();
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            let stopped = async {
                let _ = rx.await;
            };
            tokio::spawn(larder::server::serve(listener, state, None, stopped, std::time::Duration::from_secs(10)));
            (format!("http://{addr}"), cache, tx)
        });
        InProcess { base, clock, cache, shutdown: Some(tx), runtime: Some(runtime) }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(rt) = self.runtime.take() {
            let cache = self.cache.clone();
            rt.block_on(async move { cache.shutdown().await });
            rt.shutdown_background();
        }
    }
}
