//! `larder advisories import`: OSV records into the store (issue 25).

use std::process::ExitCode;

use crate::cli::AdvisoriesImportArgs;
use crate::config::Config;
use crate::store;

pub async fn import(config: Config, args: AdvisoriesImportArgs) -> anyhow::Result<ExitCode> {
    let store = store::from_config(&config).await?;
    let mut report = |name: &str, why: &crate::advisories::Invalid| {
        // Records for other ecosystems in a mixed export are not worth a line each.
        if !matches!(why, crate::advisories::Invalid::NotPypi) {
            eprintln!("skipped {name}: {why}");
        }
    };
    let done = crate::cache::advisory_store::import(&*store, &args.path, &mut report).await?;
    println!(
        "advisories: {} added, {} updated, {} unchanged, {} withdrawn, {} skipped; {} in the store",
        done.added, done.updated, done.unchanged, done.withdrawn, done.skipped, done.total
    );
    Ok(ExitCode::SUCCESS)
}
