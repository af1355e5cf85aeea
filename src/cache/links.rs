//! Core metadata (PEP 658) for upstream wheels that the upstream does not advertise it for.
//!
//! Whenever a wheel enters the store, its `*.dist-info/METADATA` is extracted once, stored as a
//! blob, and linked: wheel sha256 → metadata sha256. Links are records whose *key* carries both
//! hashes (`wheel-meta/<wheel>/<metadata>`), so loading them at start-up reads only the index.
//! Pages advertise a linked file's metadata, which the files route then serves from the store.
//! The prefetcher (`prefetch.rs`) adds links from range reads.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, RwLock};

use bytes::Bytes;

use crate::archive::ArchiveLimits;
use crate::cache::records::RecordKey;
use crate::index::{DistFile, ProjectPage};
use crate::metadata;
use crate::store::bounded::Bounded;
use crate::store::{Records, Store};

/// wheel sha256 → metadata sha256, from a record listing (the keys carry both hashes).
pub fn links_in(records: &Records) -> HashMap<String, String> {
    records
        .with_prefix(crate::cache::records::WHEEL_META_PREFIX)
        .filter_map(|k| match RecordKey::parse(k) {
            Ok(RecordKey::WheelMeta { wheel, metadata }) => Some((wheel, metadata)),
            _ => None,
        })
        .collect()
}

/// A wheel with a sha256, no metadata hash yet, and METADATA not known to be unreadable.
fn on_demand_with(unreadable: &HashSet<String>, file: &DistFile) -> bool {
    crate::index::filename::is_wheel(&file.filename)
        && file.core_metadata.is_none()
        && file.sha256().is_some_and(|sha| !unreadable.contains(sha))
}

pub struct MetadataLinks {
    /// The bounded store: extracted metadata is pinned there (it exists nowhere else).
    store: Arc<Bounded>,
    /// wheel sha256 → metadata sha256
    links: RwLock<HashMap<String, String>>,
    /// Every metadata sha256 that is a link target (eviction must keep these).
    targets: RwLock<HashSet<String>>,
    /// Pages advertise `.metadata` on demand (`true`) for wheels not linked yet: only with an
    /// upstream to read them from.
    on_demand: bool,
    /// Wheels whose METADATA could not be read, even from the whole hash-checked wheel: never
    /// advertised on demand again (MD-03: pip has no fallback for an advertised `.metadata`).
    unreadable: RwLock<HashSet<String>>,
}

/// At most this many unreadable wheels are remembered (then the set starts over).
const MAX_UNREADABLE: usize = 100_000;

impl MetadataLinks {
    /// Reads the links from the record listing (their keys carry both hashes).
    pub fn from_records(store: Arc<Bounded>, records: &Records, on_demand: bool) -> MetadataLinks {
        let links = links_in(records);
        let targets = links.values().cloned().collect();
        MetadataLinks {
            store,
            links: RwLock::new(links),
            targets: RwLock::new(targets),
            on_demand,
            unreadable: RwLock::default(),
        }
    }

    /// May this wheel's `.metadata` be read on demand (and so be advertised as `true`)?
    pub fn on_demand(&self, file: &DistFile) -> bool {
        self.on_demand && on_demand_with(&self.unreadable.read().expect("links lock"), file)
    }

    /// This wheel's METADATA cannot be read: stop advertising it on demand.
    pub fn mark_unreadable(&self, wheel_sha256: &str) {
        let mut unreadable = self.unreadable.write().expect("links lock");
        if unreadable.len() >= MAX_UNREADABLE {
            unreadable.clear();
        }
        unreadable.insert(wheel_sha256.to_string());
    }

    /// Every metadata sha256 that is a link target.
    pub fn targets(&self) -> Vec<String> {
        self.targets.read().expect("links lock").iter().cloned().collect()
    }

    /// Is `sha256` metadata Larder extracted (and pages advertise)?
    pub fn is_metadata(&self, sha256: &str) -> bool {
        self.targets.read().expect("links lock").contains(sha256)
    }

    pub fn get(&self, wheel_sha256: &str) -> Option<String> {
        self.links.read().expect("links lock").get(wheel_sha256).cloned()
    }

    /// Should the METADATA of this wheel be extracted once it is stored? When the upstream
    /// advertises none, and also when Larder linked one itself from a range read: that one was
    /// checked only by its CRC, so it is compared with the hash-checked wheel's (issue 9).
    pub fn should_extract(&self, file: &DistFile) -> bool {
        let Some(sha) = file.sha256() else { return false };
        crate::index::filename::is_wheel(&file.filename)
            && (file.core_metadata.is_none() || self.get(sha) == file.core_metadata)
    }

    /// Advertises linked metadata on the wheels of `page` that have none from upstream (or
    /// carry an older link of Larder's own, replaced since).
    pub fn apply(&self, page: &mut ProjectPage) {
        let links = self.links.read().expect("links lock");
        let targets = self.targets.read().expect("links lock");
        let ours = |md: &Option<String>| md.as_ref().is_none_or(|md| targets.contains(md));
        for f in
            page.files.iter_mut().filter(|f| ours(&f.core_metadata) && crate::index::filename::is_wheel(&f.filename))
        {
            if let Some(md) = f.sha256().and_then(|sha| links.get(sha)) {
                f.core_metadata = Some(md.clone());
            }
        }
        drop((links, targets));
        // One lock for the page, not one per file (a page may list 10,000).
        let unreadable = self.unreadable.read().expect("links lock");
        for f in page.files.iter_mut() {
            f.metadata_on_demand = self.on_demand && on_demand_with(&unreadable, f);
        }
    }

    /// Stores `raw` as the metadata of `wheel_sha256`. The blob is stored before the link, so a
    /// page never advertises bytes Larder cannot serve (MD-03).
    pub async fn store(&self, wheel_sha256: &str, raw: Vec<u8>) -> Result<String, crate::store::Error> {
        let md_sha = crate::digest::sha256_hex(&raw);
        self.store.pin(&md_sha).await;
        self.store.put_blob_bytes(&md_sha, Bytes::from(raw)).await?;
        let key = RecordKey::WheelMeta { wheel: wheel_sha256.to_string(), metadata: md_sha.clone() };
        self.store.put_record(&key.to_string(), Vec::new()).await?;
        self.targets.write().expect("links lock").insert(md_sha.clone());
        let old = self.links.write().expect("links lock").insert(wheel_sha256.to_string(), md_sha.clone());
        if let Some(old) = old.filter(|old| *old != md_sha) {
            // Replaced: the old link must not come back at the next start.
            let key = RecordKey::WheelMeta { wheel: wheel_sha256.to_string(), metadata: old };
            self.store.delete_record(&key.to_string()).await?;
        }
        Ok(md_sha)
    }

    /// Extracts and stores the METADATA of a complete, hash-checked wheel on local disk, and
    /// returns `Some` when the page must be re-rendered: the link changed (its sha256), or an
    /// unreadable wheel is no longer advertised on demand (empty). A link made
    /// earlier from range reads is compared: on a difference the wheel's own METADATA wins,
    /// which is logged and counted (`larder_metadata_mismatch_total`). A wheel whose METADATA
    /// cannot be read is served as usual, without metadata; that is logged once, here.
    pub async fn extract_from_file(
        &self,
        wheel_sha256: &str,
        filename: &str,
        path: &Path,
        limits: ArchiveLimits,
    ) -> Option<String> {
        let p = path.to_path_buf();
        let read = tokio::task::spawn_blocking(move || metadata::read_wheel_metadata(&p, &limits))
            .await
            .unwrap_or_else(|e| Err(format!("metadata extraction failed: {e}")));
        let linked = self.get(wheel_sha256);
        match read {
            Ok(md) if linked.as_deref() == Some(crate::digest::sha256_hex(&md.raw).as_str()) => None, // confirmed
            Ok(md) => match self.store(wheel_sha256, md.raw).await {
                Ok(sha) => {
                    if let Some(old) = linked {
                        metrics::counter!("larder_metadata_mismatch_total").increment(1);
                        tracing::warn!(%filename, range_read = %old, in_wheel = %sha, "METADATA read by ranges differs from the wheel's own; now serving the wheel's");
                    }
                    metrics::counter!("larder_metadata_extracted_total").increment(1);
                    Some(sha)
                }
                Err(e) => {
                    tracing::warn!(%filename, error = %e, "cannot store extracted metadata");
                    None
                }
            },
            Err(reason) => {
                tracing::warn!(%filename, %reason, "wheel has no readable METADATA; serving it without core metadata");
                self.mark_unreadable(wheel_sha256);
                // The page advertised it on demand: re-render it without.
                self.on_demand.then(String::new)
            }
        }
    }
}
