//! Request coalescing: concurrent callers asking for the same key share one run of the work.
//!
//! The work is spawned as its own task, so a client that disconnects neither cancels it for the
//! others nor makes it run twice (the moka pitfall in crates-notes §3.3). moka's `get_with` is
//! not used for this because Larder needs stale-while-error answers and file fills that do not
//! live in an in-memory cache.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};

type SharedResult<T, E> = Shared<BoxFuture<'static, Result<T, Arc<E>>>>;

/// The work panicked: every waiter gets this error, and the key is free for the next caller.
#[derive(Debug, thiserror::Error)]
#[error("internal error: {0}")]
pub struct Panicked(pub String);

/// Removes a finished run's key, however the run ended.
struct Done<K: Hash + Eq, T, E> {
    flight: Arc<SingleFlight<K, T, E>>,
    key: K,
}

impl<K: Hash + Eq, T, E> Drop for Done<K, T, E> {
    fn drop(&mut self) {
        if let Ok(mut map) = self.flight.inflight.lock() {
            map.remove(&self.key);
        }
    }
}

pub struct SingleFlight<K, T, E> {
    inflight: Mutex<HashMap<K, SharedResult<T, E>>>,
}

impl<K, T, E> Default for SingleFlight<K, T, E> {
    fn default() -> Self {
        SingleFlight { inflight: Mutex::new(HashMap::new()) }
    }
}

impl<K, T, E> SingleFlight<K, T, E>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
    E: From<Panicked> + Send + Sync + 'static,
{
    /// Runs `work` unless a run for `key` is already under way, and returns that run's result.
    pub async fn run<F>(self: &Arc<Self>, key: K, work: impl FnOnce() -> F) -> Result<T, Arc<E>>
    where
        F: Future<Output = Result<T, E>> + Send + 'static,
    {
        let shared = {
            let mut map = self.inflight.lock().expect("single-flight map lock");
            if let Some(existing) = map.get(&key) {
                existing.clone()
            } else {
                let task = tokio::spawn(work());
                let done = Done { flight: Arc::clone(self), key: key.clone() };
                let fut: BoxFuture<'static, Result<T, Arc<E>>> = async move {
                    let _done = done;
                    match task.await {
                        Ok(result) => result.map_err(Arc::new),
                        Err(e) => Err(Arc::new(E::from(Panicked(e.to_string())))),
                    }
                }
                .boxed();
                let shared = fut.shared();
                map.insert(key, shared.clone());
                // Drive it even if every caller goes away.
                tokio::spawn(shared.clone());
                shared
            }
        };
        shared.await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn a_panic_is_an_error_and_frees_the_key() {
        let flight: Arc<SingleFlight<&'static str, u32, Panicked>> = Arc::default();
        let first = flight.run("k", || async { panic!("boom") }).await;
        assert!(first.unwrap_err().to_string().contains("internal error"));
        assert_eq!(flight.run("k", || async { Ok(1) }).await.unwrap(), 1, "the key is not stuck");
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_run() {
        let flight: Arc<SingleFlight<&'static str, u32, Panicked>> = Arc::default();
        let runs = Arc::new(AtomicUsize::new(0));
        let mut handles = Vec::new();
        for _ in 0..16 {
            let flight = flight.clone();
            let runs = runs.clone();
            handles.push(tokio::spawn(async move {
                flight
                    .run("k", || async move {
                        runs.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        Ok(7)
                    })
                    .await
            }));
        }
        for h in handles {
            assert_eq!(h.await.unwrap().unwrap(), 7);
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }
}
