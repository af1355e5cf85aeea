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
use std::time::Duration;

use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};

use crate::cache::fill::{FillRequest, FillState};
use crate::cache::pages::PageState;
use crate::cli::{SelectionArgs, WarmArgs};
use crate::config::Config;
use crate::index::{DistFile, filename};
use crate::lockfile::{self, Pin};
use crate::metadata;
use crate::state::AppState;

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
    anyhow::ensure!(config.upstream.is_some(), "warm needs an upstream (--upstream or LARDER_UPSTREAM)");
    let pins = collect_pins(&args.selection)?;
    let filters = Filters::from(&args.selection);
    let state = AppState::new(config).await?;

    // Pages first: they name the files.
    let mut failures: Vec<String> = Vec::new();
    let mut jobs: Vec<DistFile> = Vec::new();
    for pin in &pins {
        match state.pages.get(&pin.name).await {
            Ok((page, _)) => match &page.state {
                PageState::Found(r) => match select_files(&r.page.files, pin, &filters) {
                    Ok(files) => jobs.extend(files),
                    Err(e) => failures.push(e),
                },
                PageState::NotFound => failures.push(format!("{}: not found upstream", pin.name)),
            },
            Err(e) => failures.push(format!("{}: {e}", pin.name)),
        }
    }
    jobs.sort_by(|a, b| a.filename.cmp(&b.filename));
    jobs.dedup_by(|a, b| a.filename == b.filename);

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
        .map(|file| {
            let (state, bar, bytes) = (&state, &bar, bytes.clone());
            async move {
                let outcome = warm_file(state, &file).await;
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
    if let Some(fills) = &state.fills {
        fills.idle().await; // metadata extraction runs after each download is done
    }
    state.pages.flush().await;

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

/// Fetches one file (and its metadata), retrying transient upstream errors.
async fn warm_file(state: &AppState, file: &DistFile) -> Outcome {
    let Some(sha) = file.sha256() else {
        return Outcome::Failed("the index lists no sha256 for it; Larder cannot verify it".into());
    };
    let fills = state.fills.as_ref().expect("warm runs with an upstream");
    let mut outcome = Outcome::Present;
    if state.store.open_blob(sha).await.ok().flatten().is_none() {
        let project = filename::parse(&file.filename).map(|f| f.name).ok();
        let needs_metadata = state.pages.links().should_extract(file);
        let req = FillRequest {
            key: sha.to_string(),
            url: file.url.clone(),
            expected_sha256: Some(sha.to_string()),
            expected_size: file.size,
            alias_record: None,
            extract_metadata_for: project.filter(|_| needs_metadata).map(|p| (p, file.filename.clone())),
        };
        outcome = match fill_with_retries(fills, req).await {
            Ok(len) => Outcome::Fetched(len),
            Err(e) => return Outcome::Failed(e),
        };
    }
    if let Some(md) = &file.core_metadata
        && state.store.open_blob(md).await.ok().flatten().is_none()
    {
        let req = FillRequest {
            key: md.clone(),
            url: crate::upstream::metadata_url(&file.url),
            expected_sha256: Some(md.clone()),
            expected_size: None,
            alias_record: None,
            extract_metadata_for: None,
        };
        if let Err(e) = fill_with_retries(fills, req).await {
            return Outcome::Failed(format!("metadata: {e}"));
        }
    }
    outcome
}

async fn fill_with_retries(fills: &Arc<crate::cache::fill::Fills>, req: FillRequest) -> Result<u64, String> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match fills.join(req.clone()).finished().await {
            FillState::Done { len, .. } => return Ok(len),
            FillState::Failed(e) => {
                // A hash mismatch or a 404 will not heal; connection trouble and 5xx may.
                let transient = matches!(&*e, crate::cache::fill::Error::Upstream(u) if u.is_transient());
                if !transient || attempt >= 3 {
                    return Err(e.to_string());
                }
                tokio::time::sleep(Duration::from_millis(500 * attempt)).await;
            }
            _ => return Err("the download ended without a result".into()),
        }
    }
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
