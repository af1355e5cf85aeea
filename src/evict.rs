//! A size limit for the store: least-recently-used eviction of what can be fetched again.
//!
//! Evictable: files cached from upstream, and upstream page records (a page is fetched again
//! when it is next asked for, so anonymous clients cannot grow the store with pages forever;
//! issue 9). Never evicted: private uploads and their metadata (they exist nowhere else),
//! metadata that Larder extracted itself (pages advertise it, and the upstream cannot serve it
//! again), and the blobs that hold other records. Recency is kept in memory: at start-up
//! everything counts as equally old.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use crate::cache::links::MetadataLinks;
use crate::cache::private::Private;
use crate::cache::records::PAGE_PREFIX;
use crate::store::{Records, Store};

/// One LRU item: a blob's sha256, or a page record's key (`page/<name>`).
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

    fn remove(&mut self, item: &str) {
        if let Some((size, tick)) = self.items.remove(item) {
            self.order.remove(&tick);
            self.total -= size;
        }
    }
}

pub struct Evictor {
    limit: u64,
    lru: Mutex<Lru>,
    /// Blobs that must stay (the contents of records other than pages), fixed at start-up; new
    /// ones are protected through `private` and `links` as they are written.
    records: HashSet<String>,
    /// Page record key → the sha256 of its contents: evicted together with the record.
    pages: Mutex<HashMap<String, String>>,
    store: Arc<dyn Store>,
    private: Arc<Private>,
    links: Arc<MetadataLinks>,
    /// Evictions run one at a time.
    running: tokio::sync::Mutex<()>,
}

impl Evictor {
    pub async fn new(
        limit: u64,
        store: Arc<dyn Store>,
        private: Arc<Private>,
        links: Arc<MetadataLinks>,
        records: &Records,
    ) -> anyhow::Result<Evictor> {
        let mut lru = Lru::default();
        let mut pages = HashMap::new();
        for key in records.with_prefix(PAGE_PREFIX) {
            if let Some((sha, size)) = records.contents.get(key) {
                lru.touch(key, *size);
                pages.insert(key.to_string(), sha.clone());
            }
        }
        let page_blobs: HashSet<&String> = pages.values().collect();
        for (sha, size) in store.list_blobs().await? {
            if !page_blobs.contains(&sha) {
                lru.touch(&sha, size);
            }
        }
        let protected = records.blobs.iter().filter(|b| !page_blobs.contains(b)).cloned().collect();
        Ok(Evictor {
            limit,
            lru: Mutex::new(lru),
            records: protected,
            pages: Mutex::new(pages),
            store,
            private,
            links,
            running: Default::default(),
        })
    }

    /// Records a use (a hit, or a new blob).
    pub fn touch(&self, sha: &str, size: u64) {
        self.lru.lock().expect("lru lock").touch(sha, size);
    }

    /// Records a use of a page record (a page hit), when the page is stored.
    pub fn touch_page(&self, key: &str) {
        let mut lru = self.lru.lock().expect("lru lock");
        if let Some(&(size, _)) = lru.items.get(key) {
            lru.touch(key, size);
        }
    }

    /// A page record was written: `sha256` and `size` of its new contents. The previous
    /// contents of that record are garbage now and are removed.
    pub async fn page_written(&self, key: &str, sha256: &str, size: u64) {
        self.lru.lock().expect("lru lock").touch(key, size);
        let old = self.pages.lock().expect("pages lock").insert(key.to_string(), sha256.to_string());
        if let Some(old) = old.filter(|old| old != sha256) {
            let _ = self.store.delete_blob(&old).await;
        }
    }

    fn protected(&self, item: &str) -> bool {
        if item.starts_with(PAGE_PREFIX) {
            return false;
        }
        // A page record's contents are never an item of their own: they go with the record.
        self.records.contains(item) || self.private.is_private(item) || self.links.is_metadata(item)
    }

    /// Removes one item: a blob, or a page record with its contents.
    async fn remove(&self, item: &str) -> Result<(), crate::store::Error> {
        if item.starts_with(PAGE_PREFIX) {
            self.store.delete_record(item).await?;
            let sha = self.pages.lock().expect("pages lock").remove(item);
            if let Some(sha) = sha {
                self.store.delete_blob(&sha).await?;
            }
            Ok(())
        } else {
            self.store.delete_blob(item).await
        }
    }

    /// Evicts least-recently-used items until the store fits its limit again. Returns the
    /// evicted items (callers drop them from in-memory caches).
    pub async fn enforce(&self) -> Vec<String> {
        let _one = self.running.lock().await;
        let mut evicted = Vec::new();
        loop {
            // Choose and delete under the private lock: an upload cannot reference a blob
            // between the check that it is unprotected and its removal (issue 9).
            let _refs = self.private.lock().await;
            let victim = {
                let lru = self.lru.lock().expect("lru lock");
                if lru.total <= self.limit {
                    break;
                }
                lru.order.values().find(|item| !self.protected(item)).cloned()
            };
            let Some(item) = victim else {
                tracing::warn!(limit = self.limit, "store is over its size limit, but everything left is protected");
                break;
            };
            match self.remove(&item).await {
                Ok(()) => {
                    self.lru.lock().expect("lru lock").remove(&item);
                    metrics::counter!("larder_evictions_total").increment(1);
                    evicted.push(item);
                }
                Err(e) => {
                    tracing::warn!(%item, error = %e, "cannot evict");
                    break;
                }
            }
        }
        if !evicted.is_empty() {
            tracing::info!(
                items = evicted.len(),
                "evicted least-recently-used files and pages to stay under max_store_size"
            );
        }
        let total = self.lru.lock().expect("lru lock").total;
        metrics::gauge!("larder_store_bytes").set(total as f64);
        evicted
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
}
