//! `larder advisories import`: OSV records into the store (issue 25).

use std::process::ExitCode;

use crate::audit::{self, Audit};
use crate::cli::AdvisoriesImportArgs;
use crate::config::Config;
use crate::store;

pub async fn import(config: Config, args: AdvisoriesImportArgs) -> anyhow::Result<ExitCode> {
    let store = store::from_config(&config, &crate::commands::background()).await?;
    let mut report = |name: &str, why: &crate::advisories::Invalid| {
        // Records for other ecosystems in a mixed export are not worth a line each.
        if !matches!(why, crate::advisories::Invalid::NotPypi) {
            eprintln!("skipped {name}: {why}");
        }
    };
    let audit = Audit::open(config.audit_log.as_ref(), store.is_shared().then(|| store.clone()))?;
    let result = crate::cache::advisory_store::import(&*store, &args.path, &mut report).await;
    let event =
        audit::Event::new(audit::Action::Import, audit::Who::Operator { via: "larder advisories import".into() });
    audit.record(match &result {
        Ok(d) => event.ended(
            audit::Outcome::Ok,
            Some(format!(
                "advisories from {}: {} added, {} updated, {} withdrawn",
                args.path.display(),
                d.added,
                d.updated,
                d.withdrawn
            )),
        ),
        Err(e) => event.ended(audit::Outcome::Refused, Some(format!("advisories from {}: {e:#}", args.path.display()))),
    });
    audit.flush().await;
    let done = result?;
    println!(
        "advisories: {} added, {} updated, {} unchanged, {} withdrawn, {} skipped; {} in the store",
        done.added, done.updated, done.unchanged, done.withdrawn, done.skipped, done.total
    );
    Ok(ExitCode::SUCCESS)
}
