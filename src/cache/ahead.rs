//! Ahead of the client on a miss (issue 21): a resolver walks the dependency graph level by
//! level, so when a wheel's core metadata passes through Larder, the pages of its
//! requirements are fetched before the resolver asks for them, and for each page fetched that
//! way, the metadata of its newest wheel for the platforms clients ask for (one level more):
//! the upstream's PEP 658 file, or by range requests where it has none.
//!
//! Bounded: a few fetches at once (never more than `MAX_AHEAD`, so client page fetches keep
//! their permits; range reads take the upstream's file permits, as the prefetcher's do), at
//! most `MAX_NAMES` requirements per metadata file and `MAX_WALKS` walks waiting, two levels
//! deep, and only while clients are asking (it starts from what they fetch, never on its own).
//! Range reads happen here whatever `metadata_prefetch` says: `fetch_ahead` asks for them.
//! Names claimed by a private upload, blocked names and files, and requirements behind an
//! `extra` marker are skipped; private packages' metadata starts nothing (their requirements
//! may be internal names the upstream must not hear of).

use std::str::FromStr;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use super::fill::{FillRequest, FillState, Fills};
use super::pages::{Lookup, PageState, Pages};
use super::prefetch::Demand;
use super::private::PrivateRecords;
use crate::cache::Outcome;
use crate::index::ProjectName;
use crate::store::Store;
use crate::store::bounded::Bounded;
use crate::upstream::Upstreams;

/// Page and metadata fetches ahead of the clients at once.
pub(super) const MAX_AHEAD: usize = 6;
/// Requirements followed per metadata file.
const MAX_NAMES: usize = 64;
/// Walks (one per metadata file) waiting for fetch slots at once.
pub(super) const MAX_WALKS: usize = 32;
/// Levels followed from a metadata file a client fetched.
const MAX_DEPTH: u8 = 2;

pub struct Ahead {
    pub(super) pages: Arc<Pages>,
    pub(super) fills: Arc<Fills>,
    pub(super) links: Arc<super::links::MetadataLinks>,
    pub(super) demand: Arc<Demand>,
    pub(super) upstreams: Arc<Upstreams>,
    pub(super) private: Arc<PrivateRecords>,
    pub(super) blocks: Arc<crate::policy::Blocks>,
    pub(super) store: Arc<Bounded>,
    pub(super) tasks: TaskTracker,
    pub(super) permits: Arc<Semaphore>,
    pub(super) walks: Arc<Semaphore>,
}

/// The names a wheel's metadata requires, unconditionally or under environment markers (not
/// under extras: those are asked for only when a client wants the extra).
pub fn requirement_names(raw: &[u8]) -> Vec<ProjectName> {
    let mut out = Vec::new();
    for (key, value) in crate::metadata::headers(raw) {
        if key != "requires-dist" || out.len() >= MAX_NAMES {
            continue;
        }
        let (spec, marker) = value.split_once(';').unwrap_or((&value, ""));
        if marker.contains("extra") {
            continue;
        }
        let name: String =
            spec.trim().chars().take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')).collect();
        if let Ok(name) = ProjectName::parse(&name)
            && !out.contains(&name)
        {
            out.push(name);
        }
    }
    out
}

impl Ahead {
    /// Follows the requirements in `raw` (metadata a client was just served), in the background:
    /// `MAX_AHEAD` fetches at once across all walks, and at most `MAX_WALKS` walks waiting
    /// (past that, a metadata file starts nothing: background work yields to the clients).
    pub fn follow(self: &Arc<Self>, raw: Bytes, depth: u8) {
        if depth > MAX_DEPTH {
            return;
        }
        let names: Vec<ProjectName> = requirement_names(&raw)
            .into_iter()
            .filter(|name| {
                !self.private.is_claimed_anywhere(name)
                    && self.upstreams.client(name).is_some()
                    && self.blocks.current().0.project(name).is_none()
            })
            .collect();
        if names.is_empty() {
            return;
        }
        let Ok(walk) = self.walks.clone().try_acquire_owned() else { return };
        let this = Arc::clone(self);
        self.tasks.spawn(async move {
            for name in names {
                let Ok(permit) = this.permits.clone().acquire_owned().await else { return };
                let fetch = Arc::clone(&this);
                this.tasks.spawn(async move {
                    fetch.page_then_metadata(name, depth).await;
                    drop(permit);
                });
            }
            drop(walk);
        });
    }

    /// Follows a metadata download a client started, once it is stored.
    pub fn follow_fill(self: &Arc<Self>, fill: Arc<super::fill::Fill>, md_sha: String, depth: u8) {
        let this = Arc::clone(self);
        self.tasks.spawn(async move {
            if let FillState::Done { .. } = fill.finished().await
                && let Some(raw) = this.read_small(&md_sha).await
            {
                this.follow(raw, depth);
            }
        });
    }

    async fn read_small(&self, sha: &str) -> Option<Bytes> {
        let blob = self.store.open_blob(sha).await.ok()??;
        blob.bytes().cloned()
    }

    async fn page_then_metadata(self: &Arc<Self>, name: ProjectName, depth: u8) {
        metrics::counter!("larder_ahead_total", "kind" => "page").increment(1);
        let Ok(Lookup { page: cached, outcome }) = self.pages.get(&name).await else { return };
        // A page Larder had already: its newest metadata was most likely read before, too.
        if outcome == Outcome::Hit || depth >= MAX_DEPTH {
            return;
        }
        let PageState::Found(head) = &cached.state else { return };
        let Some(model) = self.pages.model(&name, head).await else { return };
        let Some(upstream) = self.upstreams.client(&name) else { return };
        // Never a blocked file's requirements (its version or sha256 named in the block list).
        let blocks = self.blocks.current();
        let wheel = newest_wanted_wheel(&model.page, &self.demand, |f| blocks.0.file(&name, f).is_none());
        drop(blocks);
        let Some(wheel) = wheel else { return };
        let Some(md) = wheel.core_metadata.clone() else {
            // An upstream without PEP 658 files: the metadata by range requests, the read the
            // prefetcher and a client asking meanwhile share (`metadata_by_ranges`).
            if self.links.on_demand(&wheel) {
                metrics::counter!("larder_ahead_total", "kind" => "metadata").increment(1);
                if let Ok(md) = self.fills.metadata_by_ranges(upstream, &name, &wheel).await
                    && let Some(raw) = self.read_small(&md).await
                {
                    self.follow(raw, depth + 1);
                }
            }
            return;
        };
        if let Some(raw) = self.read_small(&md).await {
            self.follow(raw, depth + 1);
            return;
        }
        metrics::counter!("larder_ahead_total", "kind" => "metadata").increment(1);
        let fill = self.fills.join(FillRequest::for_metadata(upstream, &wheel, &md));
        if let FillState::Done { .. } = fill.finished().await
            && let Some(raw) = self.read_small(&md).await
        {
            self.follow(raw, depth + 1);
        }
    }
}

/// The wheel of the newest final, non-yanked, `allowed` version that clients' platforms want.
fn newest_wanted_wheel(
    page: &crate::index::ProjectPage,
    demand: &Demand,
    allowed: impl Fn(&crate::index::DistFile) -> bool,
) -> Option<crate::index::DistFile> {
    let version_of = |filename: &str| {
        crate::index::filename::parse(filename).ok().and_then(|f| pep440_rs::Version::from_str(&f.version).ok())
    };
    page.files
        .iter()
        .filter(|f| crate::index::filename::is_wheel(&f.filename))
        .filter(|f| f.yanked == crate::index::Yanked::No && demand.wants(&f.filename) && allowed(f))
        .filter_map(|f| version_of(&f.filename).filter(|v| !v.any_prerelease()).map(|v| (v, f)))
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, f)| f.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requirements_are_read_as_a_resolver_would_start_them() {
        let raw = b"Metadata-Version: 2.1\nName: app\nVersion: 1.0\nRequires-Dist: numpy>=1.20\nRequires-Dist: Typing_Extensions ; python_version < \"3.11\"\nRequires-Dist: pytest ; extra == \"test\"\nRequires-Dist: numpy[extra]\n\nbody";
        let names: Vec<String> = requirement_names(raw).iter().map(|n| n.to_string()).collect();
        assert_eq!(names, ["numpy", "typing-extensions"]);
    }
}
