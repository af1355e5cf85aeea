//! Coalescing: concurrent callers asking for the same key share one piece of work.
//!
//! The one mechanism behind page refreshes (callers share the result, `run`) and file fills
//! (callers share a progress handle, `join_or_start`). The work runs as its own task on the
//! engine's task tracker, so a client that disconnects neither cancels it for the others nor
//! makes it run twice (the moka pitfall in crates-notes §3.3), and `Cache::shutdown` waits for
//! it. The key is freed when the work ends, however it ends: a panic included.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use tokio_util::task::TaskTracker;

/// The work panicked: every waiter gets this error, and the key is free for the next caller.
#[derive(Debug, thiserror::Error)]
#[error("internal error: {0}")]
pub struct Panicked(pub String);

pub struct Coalescer<K, V> {
    inflight: Mutex<HashMap<K, V>>,
    tasks: TaskTracker,
}

/// Frees a finished work's key.
struct Done<K: Hash + Eq, V> {
    coalescer: Arc<Coalescer<K, V>>,
    key: K,
}

impl<K: Hash + Eq, V> Drop for Done<K, V> {
    fn drop(&mut self) {
        if let Ok(mut map) = self.coalescer.inflight.lock() {
            map.remove(&self.key);
        }
    }
}

impl<K, V> Coalescer<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    pub fn new(tasks: TaskTracker) -> Arc<Coalescer<K, V>> {
        Arc::new(Coalescer { inflight: Mutex::new(HashMap::new()), tasks })
    }

    /// The handle of the work under way for `key`, if any; never starts one.
    pub fn get(&self, key: &K) -> Option<V> {
        self.inflight.lock().expect("coalescer lock").get(key).cloned()
    }

    /// The handle of the work under way for `key` (`true`: joined), or a new one: `start`
    /// returns the handle and the work, which is spawned and frees the key when it ends.
    pub fn join_or_start<F>(self: &Arc<Self>, key: K, start: impl FnOnce() -> (V, F)) -> (V, bool)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let mut map = self.inflight.lock().expect("coalescer lock");
        if let Some(handle) = map.get(&key) {
            return (handle.clone(), true);
        }
        let (handle, work) = start();
        map.insert(key.clone(), handle.clone());
        let done = Done { coalescer: Arc::clone(self), key };
        self.tasks.spawn(async move {
            let _done = done;
            work.await
        });
        (handle, false)
    }
}

pub(crate) type SharedResult<T, E> = Shared<BoxFuture<'static, Result<T, Arc<E>>>>;

impl<K, T, E> Coalescer<K, SharedResult<T, E>>
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
        let (shared, _) = self.join_or_start(key, || {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let result: BoxFuture<'static, Result<T, Arc<E>>> = async move {
                // The sender is dropped unsent only when the work panicked.
                rx.await.unwrap_or_else(|_| Err(Arc::new(E::from(Panicked("the work panicked".into())))))
            }
            .boxed();
            let work = work();
            let run = async move {
                let _ = tx.send(work.await.map_err(Arc::new));
            };
            (result.shared(), run)
        });
        shared.await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    type Flight = Arc<Coalescer<&'static str, SharedResult<u32, Panicked>>>;

    #[tokio::test]
    async fn concurrent_callers_share_one_run() {
        let flight: Flight = Coalescer::new(TaskTracker::new());
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

    #[tokio::test]
    async fn a_panic_is_an_error_and_frees_the_key() {
        let flight: Flight = Coalescer::new(TaskTracker::new());
        let first = flight.run("k", || async { panic!("boom") }).await;
        assert!(first.unwrap_err().to_string().contains("internal error"));
        assert_eq!(flight.run("k", || async { Ok(1) }).await.unwrap(), 1, "the key is not stuck");
    }

    #[tokio::test]
    async fn handles_are_shared_until_the_work_ends() {
        let coalescer: Arc<Coalescer<u8, Arc<u8>>> = Coalescer::new(TaskTracker::new());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (a, joined) = coalescer.join_or_start(1, || {
            (Arc::new(1), async move {
                let _ = rx.await;
            })
        });
        assert!(!joined);
        let (b, joined) = coalescer.join_or_start(1, || (Arc::new(2), async {}));
        assert!(joined && Arc::ptr_eq(&a, &b));
        tx.send(()).unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let (c, joined) = coalescer.join_or_start(1, || (Arc::new(3), async {}));
        assert!(!joined && *c == 3, "a new run after the first ended");
    }
}
