//! `larder warm`: fill the store from what users already have (pinned requirements, lock
//! files, name==version), so that an air-gapped Larder (`--offline`) can serve it later.
//!
//! By default every file of each pinned version is fetched (all platforms and Pythons, so one
//! warm serves every builder), with its metadata; `--platform` / `--python-version` narrow that.
//! Downloads run concurrently (bounded), transient upstream errors are retried, every hash is
//! checked (against the lock file's too), and the summary lists what failed and why.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;

use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};

use crate::cache::{Cache, Mode, PageAnswer, Reader};
use crate::cli::{SelectionArgs, WarmArgs};
use crate::config::Config;
use crate::index::{DistFile, ProjectName, filename};
use crate::lockfile::{self, Pin};
use crate::metadata;

/// Which wheels to keep; empty lists keep everything.
#[derive(Debug, Default, Clone)]
pub struct Filters {
    pub platforms: Vec<String>,
    pub python_versions: Vec<String>,
}

impl Filters {
    fn keeps(&self, name: &str) -> bool {
        // sdists (and what does not parse) always
        let Some(tags) = filename::parse(name).ok().and_then(|f| f.tags) else { return true };
        let (python, abi, platform) = (tags.python.as_str(), tags.abi.as_str(), tags.platform.as_str());
        let platform_ok = self.platforms.is_empty()
            || platform.split('.').any(|p| p == "any" || self.platforms.iter().any(|want| want == p));
        let python_ok = self.python_versions.is_empty()
            || self.python_versions.iter().any(|v| {
                let (major, minor) = v.split_once('.').unwrap_or((v, ""));
                let nodot = format!("{major}{minor}");
                python.split('.').any(|t| {
                    t == format!("py{major}")
                        || t == format!("py{nodot}")
                        || t == format!("cp{nodot}")
                        // abi3 wheels serve every later CPython
                        || (abi == "abi3" && t.strip_prefix(&format!("cp{major}")).and_then(|m| m.parse::<u32>().ok()).zip(minor.parse::<u32>().ok()).is_some_and(|(m, want)| m <= want))
                })
            });
        platform_ok && python_ok
    }
}

/// The files of `pin` on `page`: its version, narrowed by `filters`, and when the lock names
/// hashes, exactly those (a lock hash missing from the page is an error).
pub fn select_files(files: &[DistFile], pin: &Pin, filters: &Filters) -> Result<Vec<DistFile>, String> {
    let of_version: Vec<&DistFile> = files
        .iter()
        .filter(|f| filename::parse(&f.filename).is_ok_and(|p| metadata::same_version(&p.version, &pin.version)))
        .collect();
    if of_version.is_empty() {
        return Err(format!("{}=={}: no such version on the index", pin.name, pin.version));
    }
    if !pin.hashes.is_empty() {
        let listed: Vec<&str> = of_version.iter().filter_map(|f| f.sha256()).collect();
        if !pin.hashes.iter().any(|h| listed.contains(&h.as_str())) {
            return Err(format!("{}=={}: none of the lock file's hashes is on the index page", pin.name, pin.version));
        }
    }
    let chosen: Vec<DistFile> = of_version
        .into_iter()
        .filter(|f| pin.hashes.is_empty() || f.sha256().is_some_and(|s| pin.hashes.contains(s)))
        .filter(|f| filters.keeps(&f.filename))
        .cloned()
        .collect();
    if chosen.is_empty() {
        return Err(format!("{}=={}: no file matches the platform/python filters", pin.name, pin.version));
    }
    Ok(chosen)
}

impl From<&SelectionArgs> for Filters {
    fn from(s: &SelectionArgs) -> Filters {
        Filters { platforms: s.platform.clone(), python_versions: s.python_version.clone() }
    }
}

/// All pins named by the arguments.
pub fn collect_pins(selection: &SelectionArgs) -> anyhow::Result<Vec<Pin>> {
    let mut pins = Vec::new();
    for path in selection.requirements.iter().chain(&selection.lock) {
        pins.extend(lockfile::read(path)?);
    }
    for arg in &selection.pins {
        pins.push(lockfile::parse_pin(arg)?);
    }
    anyhow::ensure!(!pins.is_empty(), "nothing to warm: give -r FILE, --lock FILE or NAME==VERSION");
    Ok(pins)
}

enum Outcome {
    Fetched(u64),
    Present,
    Failed(String),
}

pub async fn run(config: Config, args: WarmArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(!config.offline, "warm fills the cache from the upstream; it cannot run --offline");
    anyhow::ensure!(
        config.default_upstream.is_some() || !config.upstream_routes.is_empty(),
        "warm needs an upstream (--upstream or LARDER_UPSTREAM, or [[upstreams]])"
    );
    let pins = collect_pins(&args.selection)?;
    let filters = Filters::from(&args.selection);
    // A command's engine: no size-limit pass at start, no background prefetch.
    let cache = Cache::open(Arc::new(config), Mode::Command).await?;

    // Pages first: they name the files.
    let mut failures: Vec<String> = Vec::new();
    // Read as the default project reads: its upstreams, cooldown and block list (issue 14).
    let reader = Reader::of_project(cache.config(), &cache.config().default_project);
    let mut jobs: Vec<(ProjectName, DistFile)> = Vec::new();
    for pin in &pins {
        match cache.page_to_warm(&reader, &pin.name).await {
            Ok(PageAnswer::Found { page, .. }) => match select_files(&page.page.files, pin, &filters) {
                Ok(files) => jobs.extend(files.into_iter().map(|f| (pin.name.clone(), f))),
                Err(e) => failures.push(e),
            },
            Ok(PageAnswer::NotFound) => failures.push(format!("{}: not found upstream", pin.name)),
            Err(e) => failures.push(format!("{}: {e}", pin.name)),
        }
    }
    jobs.sort_by(|a, b| a.1.filename.cmp(&b.1.filename));
    jobs.dedup_by(|a, b| a.1.filename == b.1.filename);

    let bar = if std::io::stderr().is_terminal() {
        let bar = ProgressBar::new(jobs.len() as u64);
        bar.set_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} files, {msg} {elapsed}").expect("a valid template"),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let bytes = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let results: Vec<(String, Outcome)> = futures_util::stream::iter(jobs)
        .map(|(project, file)| {
            let (cache, bar, bytes) = (&cache, &bar, bytes.clone());
            async move {
                let outcome = match cache.warm_file(&project, &file).await {
                    Ok(Some(n)) => Outcome::Fetched(n),
                    Ok(None) => Outcome::Present,
                    Err(e) => Outcome::Failed(e),
                };
                if let Outcome::Fetched(n) = outcome {
                    let total = bytes.fetch_add(n, std::sync::atomic::Ordering::Relaxed) + n;
                    bar.set_message(format!("{:.1} MB", total as f64 / 1e6));
                }
                match &outcome {
                    Outcome::Fetched(n) => tracing::info!(file = %file.filename, bytes = n, "fetched"),
                    Outcome::Present => tracing::info!(file = %file.filename, "already present"),
                    Outcome::Failed(e) => tracing::warn!(file = %file.filename, error = %e, "failed"),
                }
                bar.inc(1);
                (file.filename.clone(), outcome)
            }
        })
        .buffer_unordered(args.jobs.max(1))
        .collect()
        .await;
    bar.finish_and_clear();
    cache.shutdown().await; // page writes and metadata extraction run after each download

    let fetched = results.iter().filter(|(_, o)| matches!(o, Outcome::Fetched(_))).count();
    let present = results.iter().filter(|(_, o)| matches!(o, Outcome::Present)).count();
    for (file, outcome) in &results {
        if let Outcome::Failed(e) = outcome {
            failures.push(format!("{file}: {e}"));
        }
    }
    println!(
        "warmed {} releases: {fetched} files fetched ({:.1} MB), {present} already present, {} failed",
        pins.len(),
        bytes.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1e6,
        failures.len()
    );
    for f in &failures {
        println!("  failed: {f}");
    }
    Ok(if failures.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters() {
        let f = Filters { platforms: vec!["manylinux_2_17_x86_64".into()], python_versions: vec!["3.12".into()] };
        assert!(f.keeps("x-1.0.tar.gz"));
        assert!(f.keeps("x-1.0-py3-none-any.whl"));
        assert!(f.keeps("x-1.0-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"));
        assert!(f.keeps("x-1.0-cp38-abi3-manylinux_2_17_x86_64.whl"));
        assert!(!f.keeps("x-1.0-cp311-cp311-manylinux_2_17_x86_64.whl"));
        assert!(!f.keeps("x-1.0-cp312-cp312-win_amd64.whl"));
    }
}
