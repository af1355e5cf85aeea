//! The store's size limit, as a wrapper around any `Store` (sccache's `ReadOnly` shape):
//! least-recently-used eviction of what can be fetched again. It knows which blobs are
//! records' contents (eviction must keep the held ones), so it also answers whether a blob is
//! the store's own (`is_record_content`: never served as a file). Health is `health::Health`.
//!
//! Every read and write through the wrapper keeps recency and size; nothing above calls it for
//! that, except a layer that serves blobs from memory (`touch`). Evictable: blobs, and the
//! records `evictable_record` names (upstream pages, evicted whole with their contents).
//! Never evicted: pinned blobs (the engine pins private uploads and the metadata it extracted:
//! they exist nowhere else) and the contents of every other record. Recency is kept in memory:
//! at start-up everything counts as equally old.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;

use super::{Blob, Error, Records, Store};

/// One LRU item: a blob's sha256, or an evictable record's key.
#[derive(Default)]
struct Lru {
    /// item → (size, tick of last use)
    items: HashMap<String, (u64, u64)>,
    /// tick → item, oldest first
    order: BTreeMap<u64, String>,
    total: u64,
    tick: u64,
}

impl Lru {
    fn touch(&mut self, item: &str, size: u64) {
        self.tick += 1;
        let tick = self.tick;
        match self.items.get_mut(item) {
            Some((old_size, old)) => {
                self.order.remove(old);
                *old = tick;
                self.total = self.total - *old_size + size;
                *old_size = size;
            }
            None => {
                self.items.insert(item.to_string(), (size, tick));
                self.total += size;
            }
        }
        self.order.insert(tick, item.to_string());
    }

    fn touch_known(&mut self, item: &str) {
        if let Some(&(size, _)) = self.items.get(item) {
            self.touch(item, size);
        }
    }

    fn remove(&mut self, item: &str) {
        if let Some((size, tick)) = self.items.remove(item) {
            self.order.remove(&tick);
            self.total -= size;
        }
    }
}

/// Which records are evicted like files (the engine says: upstream pages).
pub type EvictableRecord = fn(&str) -> bool;

#[derive(Default)]
struct Contents {
    /// Record key → the sha256 of its contents.
    of: HashMap<String, String>,
    /// Contents held by records that are never evicted, with how many hold each.
    held: HashMap<String, usize>,
    /// Every record's contents, with how many records have it.
    any: HashMap<String, usize>,
}

impl Contents {
    fn add(&mut self, sha: &str) {
        *self.any.entry(sha.to_string()).or_default() += 1;
    }

    fn drop_one(&mut self, sha: &str) {
        if let Some(n) = self.any.get_mut(sha) {
            *n -= 1;
            if *n == 0 {
                self.any.remove(sha);
            }
        }
    }
}

pub struct Bounded {
    inner: Arc<dyn Store>,
    limit: u64,
    evictable_record: EvictableRecord,
    lru: Mutex<Lru>,
    contents: Mutex<Contents>,
    /// Pinned blobs; eviction chooses and deletes a victim while holding this, so that a pin
    /// (taken before an upload stores its blob) can never lose to a deletion under way.
    pinned: tokio::sync::Mutex<HashSet<String>>,
    /// Evictions run one at a time.
    running: tokio::sync::Mutex<()>,
}

impl Bounded {
    /// Wraps `inner`, which holds `records` (its record listing), with a `limit` in bytes.
    pub async fn new(
        inner: Arc<dyn Store>,
        limit: u64,
        records: &Records,
        evictable_record: EvictableRecord,
    ) -> Result<Bounded, Error> {
        let mut lru = Lru::default();
        let mut contents = Contents::default();
        for (key, (sha, size)) in &records.contents {
            contents.of.insert(key.clone(), sha.clone());
            contents.add(sha);
            if evictable_record(key) {
                lru.touch(key, *size);
            } else {
                *contents.held.entry(sha.clone()).or_default() += 1;
            }
        }
        // A shared bucket is not listed at start (issue 22: start-up must not depend on its
        // size, and a listing of millions of objects outlived its timeout); there the size
        // gauge counts what this replica has written and read since it started.
        if !inner.is_shared() {
            let record_contents: HashSet<&String> = contents.of.values().collect();
            for (sha, size) in inner.list_blobs().await? {
                if !record_contents.contains(&sha) {
                    lru.touch(&sha, size);
                }
            }
        }
        Ok(Bounded {
            inner,
            limit,
            evictable_record,
            lru: Mutex::new(lru),
            contents: Mutex::new(contents),
            pinned: Default::default(),
            running: Default::default(),
        })
    }

    /// Never evict this blob (until `unpin`).
    pub async fn pin(&self, sha: &str) {
        self.pinned.lock().await.insert(sha.to_string());
    }

    pub async fn unpin(&self, sha: &str) {
        self.pinned.lock().await.remove(sha);
    }

    /// Is this blob a record's contents? Such blobs are the store's own, never served as files,
    /// whatever a page lists (issue 9).
    pub fn is_record_content(&self, sha: &str) -> bool {
        self.contents.lock().expect("contents lock").any.contains_key(sha)
    }

    /// Records a use of a blob served from memory above the store.
    pub fn touch(&self, sha: &str, size: u64) {
        self.lru.lock().expect("lru lock").touch(sha, size);
    }

    /// Records a use of a blob served from memory above the store, if the store still has it
    /// (an evicted blob must not be counted again).
    pub fn touch_blob_known(&self, sha: &str) {
        self.lru.lock().expect("lru lock").touch_known(sha);
    }

    /// Records a use of an evictable record served from memory above the store.
    pub fn touch_record(&self, key: &str) {
        self.lru.lock().expect("lru lock").touch_known(key);
    }

    /// Bytes stored, as far as the wrapper counts them.
    pub fn total(&self) -> u64 {
        self.lru.lock().expect("lru lock").total
    }

    fn held(&self, sha: &str) -> bool {
        self.contents.lock().expect("contents lock").held.contains_key(sha)
    }

    /// Evicts least-recently-used items until the store fits its limit again.
    pub async fn enforce(&self) {
        let _one = self.running.lock().await;
        let mut evicted = 0usize;
        loop {
            let pinned = self.pinned.lock().await;
            let victim = {
                let lru = self.lru.lock().expect("lru lock");
                if lru.total <= self.limit {
                    break;
                }
                lru.order.values().find(|item| !pinned.contains(*item) && !self.held(item)).cloned()
            };
            let Some(item) = victim else {
                tracing::warn!(limit = self.limit, "store is over its size limit, but everything left must stay");
                break;
            };
            let removed = if (self.evictable_record)(&item) {
                self.remove_record(&item).await
            } else {
                self.inner.delete_blob(&item).await
            };
            drop(pinned);
            match removed {
                Ok(()) => {
                    self.lru.lock().expect("lru lock").remove(&item);
                    metrics::counter!("larder_evictions_total").increment(1);
                    evicted += 1;
                }
                Err(e) => {
                    // Out of the list, or it would stop every later pass at the front.
                    tracing::warn!(%item, error = %e, "cannot evict; no longer tracked");
                    self.lru.lock().expect("lru lock").remove(&item);
                }
            }
        }
        if evicted > 0 {
            tracing::info!(items = evicted, "evicted least-recently-used files and pages to stay under max_store_size");
        }
        metrics::gauge!("larder_store_bytes").set(self.total() as f64);
    }

    /// Removes an evictable record with its contents.
    async fn remove_record(&self, key: &str) -> Result<(), Error> {
        self.inner.delete_record(key).await?;
        let sha = {
            let mut contents = self.contents.lock().expect("contents lock");
            let sha = contents.of.remove(key);
            if let Some(sha) = &sha {
                contents.drop_one(sha);
            }
            sha
        };
        match sha {
            Some(sha) => self.inner.delete_blob(&sha).await,
            None => Ok(()),
        }
    }
}

impl Bounded {
    /// Keeps contents and recency for a record just written.
    async fn account_record(&self, key: &str, sha: String, size: u64) {
        let evictable = (self.evictable_record)(key);
        let old = {
            let mut contents = self.contents.lock().expect("contents lock");
            let old = contents.of.insert(key.to_string(), sha.clone());
            contents.add(&sha);
            if let Some(old) = &old {
                contents.drop_one(old);
            }
            if !evictable {
                *contents.held.entry(sha.clone()).or_default() += 1;
                if let Some(old) = &old
                    && let Some(n) = contents.held.get_mut(old)
                {
                    *n -= 1;
                    if *n == 0 {
                        contents.held.remove(old);
                    }
                }
            }
            old.filter(|old| *old != sha)
        };
        if evictable {
            self.lru.lock().expect("lru lock").touch(key, size);
            // The page's previous contents are garbage now (in cacache, where record contents
            // are blobs; an object store keeps records apart).
            if let Some(old) = old.filter(|_| !self.inner.is_shared()) {
                let _ = self.inner.delete_blob(&old).await;
            }
        }
    }
}

#[async_trait]
impl Store for Bounded {
    async fn open_blob(&self, sha256: &str) -> Result<Option<Blob>, Error> {
        let blob = self.inner.open_blob(sha256).await?;
        if let Some(b) = &blob {
            self.touch(sha256, b.len);
        }
        Ok(blob)
    }

    async fn has_blob(&self, sha256: &str) -> Result<bool, Error> {
        self.inner.has_blob(sha256).await
    }

    async fn put_blob_file(&self, sha256: &str, path: &Path) -> Result<(), Error> {
        self.inner.put_blob_file(sha256, path).await?;
        let size = tokio::fs::metadata(path).await.map(|m| m.len()).unwrap_or(0);
        self.touch(sha256, size);
        Ok(())
    }

    async fn put_verified_blob_file(&self, sha256: &str, path: &Path) -> Result<(), Error> {
        self.inner.put_verified_blob_file(sha256, path).await?;
        let size = tokio::fs::metadata(path).await.map(|m| m.len()).unwrap_or(0);
        self.touch(sha256, size);
        Ok(())
    }

    async fn put_blob_bytes(&self, sha256: &str, bytes: Bytes) -> Result<(), Error> {
        let size = bytes.len() as u64;
        self.inner.put_blob_bytes(sha256, bytes).await?;
        self.touch(sha256, size);
        Ok(())
    }

    async fn delete_blob(&self, sha256: &str) -> Result<(), Error> {
        self.inner.delete_blob(sha256).await?;
        self.lru.lock().expect("lru lock").remove(sha256);
        Ok(())
    }

    async fn list_blobs(&self) -> Result<Vec<(String, u64)>, Error> {
        self.inner.list_blobs().await
    }

    async fn get_record(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        if (self.evictable_record)(key) {
            self.lru.lock().expect("lru lock").touch_known(key);
        }
        self.inner.get_record(key).await
    }

    async fn put_record(&self, key: &str, value: Vec<u8>) -> Result<(), Error> {
        let (sha, size) = (crate::digest::sha256_hex(&value), value.len() as u64);
        self.inner.put_record(key, value).await?;
        self.account_record(key, sha, size).await;
        Ok(())
    }

    async fn get_record_versioned(&self, key: &str) -> Result<Option<(Vec<u8>, String)>, Error> {
        self.inner.get_record_versioned(key).await
    }

    async fn get_record_if_changed(&self, key: &str, known: Option<&str>) -> Result<super::RecordRead, Error> {
        self.inner.get_record_if_changed(key, known).await
    }

    async fn put_record_if(&self, key: &str, value: Vec<u8>, expected: Option<&str>) -> Result<Option<String>, Error> {
        let (sha, size) = (crate::digest::sha256_hex(&value), value.len() as u64);
        let won = self.inner.put_record_if(key, value, expected).await?;
        if won.is_some() {
            self.account_record(key, sha, size).await;
        }
        Ok(won)
    }

    async fn list_record_keys(&self, prefix: &str) -> Result<Vec<(String, Option<String>)>, Error> {
        self.inner.list_record_keys(prefix).await
    }

    fn is_shared(&self) -> bool {
        self.inner.is_shared()
    }

    async fn delete_record(&self, key: &str) -> Result<(), Error> {
        self.inner.delete_record(key).await?;
        self.lru.lock().expect("lru lock").remove(key);
        let mut contents = self.contents.lock().expect("contents lock");
        let removed = contents.of.remove(key);
        if let Some(sha) = &removed {
            contents.drop_one(sha);
        }
        if let Some(sha) = removed
            && let Some(n) = contents.held.get_mut(&sha)
        {
            *n -= 1;
            if *n == 0 {
                contents.held.remove(&sha);
            }
        }
        Ok(())
    }

    async fn list_records(&self) -> Result<Records, Error> {
        self.inner.list_records().await
    }

    fn location(&self) -> String {
        self.inner.location()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lru_order() {
        let mut lru = Lru::default();
        lru.touch("a", 10);
        lru.touch("b", 20);
        lru.touch("a", 10);
        assert_eq!(lru.total, 30);
        assert_eq!(lru.order.values().next().unwrap(), "b");
        lru.touch("a", 15);
        assert_eq!(lru.total, 35, "a page record rewritten with a new size");
        lru.remove("b");
        assert_eq!(lru.total, 15);
    }

    #[tokio::test]
    async fn evicts_oldest_first_and_never_pinned_or_held_contents() {
        let tmp = tempfile::tempdir().unwrap();
        let local: Arc<dyn Store> = Arc::new(super::super::LocalStore::open(tmp.path()).unwrap());
        let records = local.list_records().await.unwrap();
        let bounded = Bounded::new(local, 250, &records, |k| k.starts_with("page/")).await.unwrap();
        let blob = |i: u8| Bytes::from(vec![i; 100]);
        let sha = |i: u8| crate::digest::sha256_hex(&[i; 100]);
        bounded.pin(&sha(1)).await;
        for i in 1..=4 {
            bounded.put_blob_bytes(&sha(i), blob(i)).await.unwrap();
        }
        bounded.put_record("private/p/x", b"{}".to_vec()).await.unwrap();
        bounded.enforce().await;
        assert!(bounded.has_blob(&sha(1)).await.unwrap(), "pinned");
        assert!(!bounded.has_blob(&sha(2)).await.unwrap(), "oldest unpinned went first");
        assert!(bounded.has_blob(&sha(4)).await.unwrap(), "newest stays");
        assert!(bounded.get_record("private/p/x").await.unwrap().is_some(), "other records stay");
    }
}
