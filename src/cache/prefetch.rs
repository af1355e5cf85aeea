//! The metadata prefetcher: after a project page was fetched, it reads the METADATA of the
//! newest versions' wheels with HTTP range requests, in the background, with bounded
//! concurrency, so the next resolve of that project needs no wheel at all (issue 6). Of those
//! wheels, it reads the ones for the platforms and Pythons clients have been asking for
//! (`Demand`, issue 11): a resolver on linux x86_64 and CPython 3.12 never wants the Windows
//! or CPython 3.9 wheels' metadata.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use super::fill::Fills;
use super::links::MetadataLinks;
use crate::index::{ProjectName, ProjectPage};

/// A page fetched from an upstream, for the prefetcher: the wheels whose metadata it may read
/// (`candidates`), from that upstream.
pub type Announced = (ProjectName, Vec<crate::index::DistFile>, crate::upstream::Upstream);

#[derive(Clone, Debug)]
pub struct Settings {
    /// Range fetches under way at once, across all projects.
    pub concurrency: usize,
}

/// The prefetcher's loop: for each page announced, the newest wheels' METADATA by range
/// requests (`Fills::metadata_by_ranges`, shared with clients asking meanwhile), pages read
/// side by side with `concurrency` reads at once across all of them: a cold resolve announces
/// a page every few milliseconds, and one page at a time fell behind the client (issue 21).
/// Stored links are reported to the relinker by `metadata_by_ranges`. Runs until the
/// announcing side (the pages) is gone, or the engine stops it (its reads go with it).
pub async fn run(
    mut announced: mpsc::Receiver<Announced>,
    fills: Arc<Fills>,
    links: Arc<MetadataLinks>,
    settings: Settings,
    demand: Arc<Demand>,
) {
    let mut attempted: HashSet<String> = HashSet::new();
    let permits = Arc::new(tokio::sync::Semaphore::new(settings.concurrency.max(1)));
    let mut reads = tokio::task::JoinSet::new();
    // Each page comes with the upstream it was fetched from: its wheels are read from there.
    while let Some((name, files, upstream)) = announced.recv().await {
        while reads.try_join_next().is_some() {}
        // Failed attempts are not retried soon, but the memory for them is bounded.
        if attempted.len() > 100_000 {
            attempted.clear();
        }
        for file in wanted(&files, &demand) {
            let Some(sha) = file.sha256() else { continue };
            if links.get(sha).is_some() || !attempted.insert(sha.to_string()) {
                continue;
            }
            // Waits here when the reads are all busy: the channel then fills, and pages
            // announced past it are dropped (background work yields).
            let Ok(permit) = permits.clone().acquire_owned().await else { return };
            let (fills, upstream, name) = (fills.clone(), upstream.clone(), name.clone());
            reads.spawn(async move {
                let result = fills.metadata_by_ranges(&upstream, &name, &file).await;
                drop(permit);
                let label = match &result {
                    Ok(_) => "stored",
                    Err(e) => {
                        let url = crate::upstream::guard::redact(&file.url);
                        tracing::info!(project = %name, %url, reason = %e, "metadata prefetch failed");
                        "failed"
                    }
                };
                metrics::counter!("larder_metadata_prefetch_total", "result" => label).increment(1);
            });
        }
    }
}

/// At most this many distinct tags are counted (then counting starts over): a bounded memory
/// of what clients asked for.
const MAX_TAGS: usize = 512;

/// The wheel tags of the files and `.metadata` clients asked for: which platforms and Pythons
/// the resolvers behind this Larder run.
#[derive(Default)]
pub struct Demand {
    platforms: Mutex<HashMap<String, u64>>,
    pythons: Mutex<HashMap<String, u64>>,
}

/// A platform tag as a resolver's machine sees it: the OS family and architecture, without
/// the libc or macOS version (a machine that takes `manylinux2014_x86_64` takes
/// `manylinux_2_28_x86_64` too, given a recent glibc: close enough to choose what to read ahead).
fn machine(platform: &str) -> String {
    let arch_of = |rest: &str, family: &str| {
        let arch = rest.rsplit('_').next().unwrap_or(rest);
        let arch = if rest.ends_with("x86_64") { "x86_64" } else { arch };
        format!("{family}-{arch}")
    };
    if let Some(rest) = platform.strip_prefix("manylinux").or_else(|| platform.strip_prefix("linux")) {
        arch_of(rest, "linux")
    } else if let Some(rest) = platform.strip_prefix("musllinux") {
        arch_of(rest, "musllinux")
    } else if let Some(rest) = platform.strip_prefix("macosx") {
        arch_of(rest, "macos")
    } else {
        platform.to_string()
    }
}

impl Demand {
    /// A client asked for this file or its metadata.
    pub fn saw(&self, filename: &str) {
        let Some(tags) = crate::index::filename::parse(filename).ok().and_then(|f| f.tags) else { return };
        let platforms: Vec<String> = tags.platform.split('.').map(machine).collect();
        let pythons: Vec<String> = tags.python.split('.').map(str::to_string).collect();
        for (map, keys) in [(&self.platforms, platforms), (&self.pythons, pythons)] {
            let mut map = map.lock().expect("demand lock");
            if map.len() >= MAX_TAGS {
                map.clear();
            }
            for key in keys {
                match map.get_mut(&key) {
                    Some(n) => *n += 1,
                    None => {
                        map.insert(key, 1);
                    }
                }
            }
        }
    }

    /// Would a resolver seen so far want this wheel? Pure wheels (`any`, `py*`) always; a
    /// binary wheel when one of its platforms was asked for and one of its Pythons (or any
    /// CPython, for `abi3`). Before any request, every wheel.
    pub fn wants(&self, filename: &str) -> bool {
        let Some(tags) = crate::index::filename::parse(filename).ok().and_then(|f| f.tags) else { return false };
        let platforms = self.platforms.lock().expect("demand lock");
        let pythons = self.pythons.lock().expect("demand lock");
        let platform_ok =
            platforms.is_empty() || tags.platform.split('.').any(|p| p == "any" || platforms.contains_key(&machine(p)));
        let python_ok = pythons.is_empty()
            || tags.python.split('.').any(|p| p.starts_with("py") || pythons.contains_key(p))
            || (tags.abi == "abi3" && pythons.keys().any(|p| p.starts_with("cp")));
        platform_ok && python_ok
    }
}

/// `(sha256, url, size)` of the wheels of the `versions` newest versions that have no metadata
/// and that the clients seen so far would want.
/// The wheels of `page`'s newest `versions` final releases that lack known metadata: what a
/// page announces to the prefetcher (only these, never the whole page: the queue must not
/// hold big models in memory while the prefetcher works).
pub fn candidates(page: &ProjectPage, versions: usize) -> Vec<crate::index::DistFile> {
    let version_of = |filename: &str| {
        crate::index::filename::parse(filename).ok().and_then(|f| pep440_rs::Version::from_str(&f.version).ok())
    };
    let mut all: Vec<pep440_rs::Version> = page.files.iter().filter_map(|f| version_of(&f.filename)).collect();
    all.sort();
    all.dedup();
    let newest: Vec<_> = all.into_iter().rev().filter(|v| !v.any_prerelease()).take(versions).collect();
    page.files
        .iter()
        .filter(|f| crate::index::filename::is_wheel(&f.filename) && f.core_metadata.is_none() && !f.url.is_empty())
        .filter(|f| f.sha256().is_some() && version_of(&f.filename).is_some_and(|v| newest.contains(&v)))
        .cloned()
        .collect()
}

fn wanted(files: &[crate::index::DistFile], demand: &Demand) -> Vec<crate::index::DistFile> {
    files.iter().filter(|f| demand.wants(&f.filename) && f.sha256().is_some()).cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demand_follows_what_clients_asked_for() {
        let demand = Demand::default();
        let linux = "numpy-2.0-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl";
        let windows = "numpy-2.0-cp312-cp312-win_amd64.whl";
        let old_python = "numpy-2.0-cp39-cp39-manylinux_2_17_x86_64.whl";
        let abi3 = "cryptography-44.0-cp39-abi3-manylinux_2_28_x86_64.whl";
        let pure = "idna-3.10-py3-none-any.whl";
        assert!(demand.wants(windows) && demand.wants(old_python), "nothing asked yet: every wheel");
        demand.saw("other-1.0-cp312-cp312-manylinux2014_x86_64.whl");
        assert!(demand.wants(linux), "one of its platform aliases was asked for");
        assert!(!demand.wants(windows));
        assert!(!demand.wants(old_python));
        assert!(demand.wants(abi3), "abi3 serves every later CPython; another glibc, same machine");
        assert!(!demand.wants("numpy-2.0-cp312-cp312-manylinux_2_17_aarch64.whl"), "another architecture");
        assert!(!demand.wants("numpy-2.0-cp312-cp312-musllinux_1_2_x86_64.whl"), "another libc");
        assert_eq!(machine("macosx_11_0_arm64"), "macos-arm64");
        assert_eq!(machine("manylinux_2_17_x86_64"), machine("linux_x86_64"));
        assert!(demand.wants(pure));
        assert!(!demand.wants("pkg-1.0.tar.gz"), "sdists have no wheel METADATA");
        demand.saw(windows);
        assert!(demand.wants(windows));
    }
}
