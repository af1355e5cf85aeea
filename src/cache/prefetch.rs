//! The metadata prefetcher: after a project page was fetched, it reads the METADATA of the
//! newest versions' wheels with HTTP range requests, in the background, with bounded
//! concurrency, so the next resolve of that project needs no wheel at all (issue 6).

use std::collections::HashSet;
use std::str::FromStr;
use std::sync::Arc;

use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::links::MetadataLinks;
use crate::index::{ProjectName, ProjectPage, RenderedPage};
use crate::metadata::{self, CoreMetadata};
use crate::upstream::Upstream;

#[derive(Clone, Debug)]
pub struct Settings {
    /// How many of a project's newest versions to cover.
    pub versions: usize,
    /// Range fetches under way at once, across all projects.
    pub concurrency: usize,
}

/// The prefetcher's loop: for each page announced, the newest wheels' METADATA by range
/// requests, with bounded concurrency; projects that gained links are reported on
/// `relinked`. Runs until the announcing side (the pages) is gone, or the engine stops it.
pub async fn run(
    mut announced: mpsc::Receiver<(ProjectName, Arc<RenderedPage>)>,
    upstream: Upstream,
    links: Arc<MetadataLinks>,
    settings: Settings,
    relinked: mpsc::UnboundedSender<ProjectName>,
) {
    let mut attempted: HashSet<String> = HashSet::new();
    while let Some((name, rendered)) = announced.recv().await {
        // Failed attempts are not retried soon, but the memory for them is bounded.
        if attempted.len() > 100_000 {
            attempted.clear();
        }
        let jobs: Vec<_> = newest_wheels_without_metadata(&rendered.page, settings.versions)
            .into_iter()
            .filter(|(sha, _, _)| links.get(sha).is_none() && attempted.insert(sha.clone()))
            .collect();
        if jobs.is_empty() {
            continue;
        }
        let stored = futures_util::stream::iter(jobs)
                .map(|(sha, url, size)| {
                    let (upstream, links, name) = (&upstream, &links, &name);
                    async move {
                        let result = upstream.fetch_wheel_metadata(&url, size).await;
                        let raw = match result.map_err(|e| e.to_string()).and_then(|raw| {
                            let md = CoreMetadata::parse(raw)?;
                            if metadata::names_match(&md.name, name.as_str()) { Ok(md.raw) } else { Err(format!("METADATA names `{}`", md.name)) }
                        }) {
                            Ok(raw) => raw,
                            Err(reason) => {
                                metrics::counter!("larder_metadata_prefetch_total", "result" => "failed").increment(1);
                                tracing::info!(url = %crate::upstream::guard::redact(&url), %reason, "metadata prefetch failed");
                                return false;
                            }
                        };
                        let ok = links.store(&sha, raw).await.is_ok();
                        metrics::counter!("larder_metadata_prefetch_total", "result" => if ok { "stored" } else { "failed" }).increment(1);
                        ok
                    }
                })
                .buffer_unordered(settings.concurrency.max(1))
                .filter(|ok| std::future::ready(*ok))
                .count()
                .await;
        if stored > 0 {
            tracing::info!(project = %name, wheels = stored, "prefetched core metadata with range requests");
            let _ = relinked.send(name.clone());
        }
    }
}

/// `(sha256, url, size)` of the wheels of the `versions` newest versions that have no metadata.
fn newest_wheels_without_metadata(page: &ProjectPage, versions: usize) -> Vec<(String, String, Option<u64>)> {
    let version_of = |filename: &str| {
        crate::index::filename::parse(filename).ok().and_then(|f| pep440_rs::Version::from_str(&f.version).ok())
    };
    let mut all: Vec<pep440_rs::Version> = page.files.iter().filter_map(|f| version_of(&f.filename)).collect();
    all.sort();
    all.dedup();
    let newest: Vec<_> = all.into_iter().rev().filter(|v| !v.any_prerelease()).take(versions).collect();
    page.files
        .iter()
        .filter(|f| f.filename.ends_with(".whl") && f.core_metadata.is_none() && !f.url.is_empty())
        .filter(|f| version_of(&f.filename).is_some_and(|v| newest.contains(&v)))
        .filter_map(|f| Some((f.sha256()?.to_string(), f.url.clone(), f.size)))
        .collect()
}
