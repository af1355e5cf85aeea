//! A size limit for the store: least-recently-used eviction of files cached from upstream.
//!
//! Never evicted: private uploads and their metadata (they exist nowhere else), metadata that
//! Larder extracted itself (pages advertise it, and the upstream cannot serve it again), and
//! the blobs that hold records. Everything else can be fetched again, so it may go.
//! Recency is kept in memory: at start-up every blob counts as equally old.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use crate::core_metadata::MetadataLinks;
use crate::private::Private;
use crate::store::{Records, Store};

#[derive(Default)]
struct Lru {
    /// sha256 → (size, tick of last use)
    blobs: HashMap<String, (u64, u64)>,
    /// tick → sha256, oldest first
    order: BTreeMap<u64, String>,
    total: u64,
    tick: u64,
}

impl Lru {
    fn touch(&mut self, sha: &str, size: u64) {
        self.tick += 1;
        let tick = self.tick;
        match self.blobs.get_mut(sha) {
            Some((_, old)) => {
                self.order.remove(old);
                *old = tick;
            }
            None => {
                self.blobs.insert(sha.to_string(), (size, tick));
                self.total += size;
            }
        }
        self.order.insert(tick, sha.to_string());
    }

    fn remove(&mut self, sha: &str) {
        if let Some((size, tick)) = self.blobs.remove(sha) {
            self.order.remove(&tick);
            self.total -= size;
        }
    }
}

pub struct Evictor {
    limit: u64,
    lru: Mutex<Lru>,
    /// Blobs that must stay (records' contents), fixed at start-up; new records are protected
    /// through `protected` below as they are written by private uploads and links.
    records: HashSet<String>,
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
        for (sha, size) in store.list_blobs().await? {
            lru.touch(&sha, size);
        }
        let records = records.blobs.clone();
        Ok(Evictor { limit, lru: Mutex::new(lru), records, store, private, links, running: Default::default() })
    }

    /// Records a use (a hit, or a new blob).
    pub fn touch(&self, sha: &str, size: u64) {
        self.lru.lock().expect("lru lock").touch(sha, size);
    }

    fn protected(&self, sha: &str) -> bool {
        self.records.contains(sha) || self.private.is_private(sha) || self.links.is_metadata(sha)
    }

    /// Evicts least-recently-used blobs until the store fits its limit again. Returns the
    /// evicted sha256s (callers drop them from in-memory caches).
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
                lru.order.values().find(|sha| !self.protected(sha)).cloned()
            };
            let Some(sha) = victim else {
                tracing::warn!(limit = self.limit, "store is over its size limit, but everything left is protected");
                break;
            };
            match self.store.delete_blob(&sha).await {
                Ok(()) => {
                    self.lru.lock().expect("lru lock").remove(&sha);
                    metrics::counter!("larder_evictions_total").increment(1);
                    evicted.push(sha);
                }
                Err(e) => {
                    tracing::warn!(%sha, error = %e, "cannot evict");
                    break;
                }
            }
        }
        if !evicted.is_empty() {
            tracing::info!(files = evicted.len(), "evicted least-recently-used files to stay under max_store_size");
        }
        let total = self.lru.lock().expect("lru lock").total;
        metrics::gauge!("larder_store_bytes").set(total as f64);
        evicted
    }
}

/// Parses a size such as `500MiB`, `2 GiB`, `100KB` or `1048576`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
    let (number, unit) = (s[..split].trim(), s[split..].trim());
    let n: f64 = number.parse().map_err(|_| format!("invalid size `{s}`; write e.g. 500MiB or 20GB"))?;
    let factor: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "kib" => 1 << 10,
        "m" | "mb" => 1000 * 1000,
        "mib" => 1 << 20,
        "g" | "gb" => 1000 * 1000 * 1000,
        "gib" => 1 << 30,
        "t" | "tb" => 1000u64.pow(4),
        "tib" => 1 << 40,
        _ => return Err(format!("unknown unit in `{s}`; use B, KiB, MiB, GiB, TiB (or KB, MB, GB, TB)")),
    };
    Ok((n * factor as f64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("500MiB").unwrap(), 500 << 20);
        assert_eq!(parse_size("2 GB").unwrap(), 2_000_000_000);
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("5 parsecs").is_err());
    }

    #[test]
    fn lru_order() {
        let mut lru = Lru::default();
        lru.touch("a", 10);
        lru.touch("b", 20);
        lru.touch("a", 10);
        assert_eq!(lru.total, 30);
        assert_eq!(lru.order.values().next().unwrap(), "b");
        lru.remove("b");
        assert_eq!(lru.total, 10);
    }
}
