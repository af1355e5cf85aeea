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

/// Checks that must see everything done before the caller arrived (issue 13: an upload
/// acknowledged by another replica is visible on the very next request), batched: a caller
/// joins a check that started after it arrived (or at most `max_age` before), or waits for the
/// one under way to end and joins the next. One check per key is under way at a time, so a
/// hot key costs one check per round trip however many callers ask; each caller waits at most
/// two round trips. With `max_age` > 0, a finished check is reused while it is that young.
pub struct Batcher<K> {
    flights: Mutex<HashMap<K, Arc<Flight>>>,
    /// A check runs to its end even when its callers hang up: on the engine's tracker.
    tasks: TaskTracker,
}

struct Flight {
    started: std::time::Instant,
    done: Shared<BoxFuture<'static, ()>>,
}

/// Finished checks kept for reuse, at most (beyond, the old ones go).
const MAX_KEPT: usize = 10_000;

impl<K: Hash + Eq + Clone + Send + 'static> Batcher<K> {
    pub fn new(tasks: TaskTracker) -> Self {
        Batcher { flights: Mutex::new(HashMap::new()), tasks }
    }

    /// Whether a finished check for `key` is young enough (`max_age`) to stand: the caller
    /// need not wait at all (the hit path with a replica lag takes one lock and no task).
    pub fn is_fresh(&self, key: &K, max_age: std::time::Duration) -> bool {
        if max_age.is_zero() {
            return false;
        }
        let map = self.flights.lock().expect("batcher lock");
        map.get(key).is_some_and(|f| f.started.elapsed() <= max_age && f.done.peek().is_some())
    }

    /// Runs `check` (as its own task, so a caller that goes away cancels nothing) unless a
    /// check for `key` that started after `max_age` before this call can be joined.
    pub async fn run<F, Fut>(&self, key: K, max_age: std::time::Duration, check: F)
    where
        F: Fn() -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let now = std::time::Instant::now();
        let fresh_after = now.checked_sub(max_age).unwrap_or(now);
        loop {
            let current = self.flights.lock().expect("batcher lock").get(&key).cloned();
            match current {
                Some(f) if f.started >= fresh_after => return f.done.clone().await,
                Some(f) => {
                    // Started too early: it may have missed what the caller must see.
                    f.done.clone().await;
                    let mut map = self.flights.lock().expect("batcher lock");
                    if map.get(&key).is_some_and(|now| Arc::ptr_eq(now, &f)) {
                        map.remove(&key);
                    }
                }
                None => {
                    let flight = {
                        let mut map = self.flights.lock().expect("batcher lock");
                        if map.contains_key(&key) {
                            continue; // another caller started one just now: join it
                        }
                        if map.len() >= MAX_KEPT {
                            map.retain(|_, f| f.started >= fresh_after && f.done.peek().is_none());
                        }
                        // Stamped before the check starts: a caller arriving later never joins
                        // a check whose read may already have happened.
                        let started = std::time::Instant::now();
                        let task = self.tasks.spawn(check());
                        let done = async move {
                            let _ = task.await;
                        }
                        .boxed()
                        .shared();
                        let flight = Arc::new(Flight { started, done });
                        map.insert(key.clone(), flight.clone());
                        flight
                    };
                    flight.done.clone().await;
                    // Kept for reuse only when finished checks may be reused.
                    if max_age.is_zero() {
                        let mut map = self.flights.lock().expect("batcher lock");
                        if map.get(&key).is_some_and(|now| Arc::ptr_eq(now, &flight)) {
                            map.remove(&key);
                        }
                    }
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    type Flight = Arc<Coalescer<&'static str, SharedResult<u32, Panicked>>>;

    #[tokio::test]
    async fn a_batched_check_always_starts_after_the_caller_arrived() {
        use std::sync::atomic::AtomicU64;
        let batcher = Arc::new(Batcher::<&'static str>::new(TaskTracker::new()));
        let value = Arc::new(AtomicU64::new(0));
        let seen = Arc::new(AtomicU64::new(0));
        let checks = Arc::new(AtomicUsize::new(0));
        let check = {
            let (value, seen, checks) = (value.clone(), seen.clone(), checks.clone());
            move || {
                let (value, seen, checks) = (value.clone(), seen.clone(), checks.clone());
                async move {
                    checks.fetch_add(1, Ordering::SeqCst);
                    let v = value.load(Ordering::SeqCst); // read at the start, like a GET
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    seen.store(v, Ordering::SeqCst);
                }
            }
        };
        let first = {
            let (b, c) = (batcher.clone(), check.clone());
            tokio::spawn(async move { b.run("k", std::time::Duration::ZERO, c).await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        value.store(1, Ordering::SeqCst); // written (acknowledged) while the first check runs
        let mut late = Vec::new();
        for _ in 0..50 {
            let (b, c) = (batcher.clone(), check.clone());
            late.push(tokio::spawn(async move { b.run("k", std::time::Duration::ZERO, c).await }));
        }
        for h in late {
            h.await.unwrap();
        }
        assert_eq!(seen.load(Ordering::SeqCst), 1, "callers that came after the write saw it");
        assert_eq!(checks.load(Ordering::SeqCst), 2, "50 callers shared one check");
        first.await.unwrap();
        assert!(batcher.flights.lock().unwrap().is_empty(), "finished flights are removed");

        // With a max age, a finished check is reused while it is that young.
        let hour = std::time::Duration::from_secs(3600);
        batcher.run("k", hour, check.clone()).await;
        batcher.run("k", hour, check.clone()).await;
        assert_eq!(checks.load(Ordering::SeqCst), 3, "one more check, then reused");
        batcher.run("k", std::time::Duration::ZERO, check).await;
        assert_eq!(checks.load(Ordering::SeqCst), 4, "strict callers never reuse one");
    }

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
