//! `larder export` and `larder import`: the command-line side of `crate::bundle`.

use std::process::ExitCode;

use anyhow::Context;

use crate::audit::{self, Audit};
use crate::bundle::{self, Selection};
use crate::cache::links_in;
use crate::cache::records::{self, RecordKey};
use crate::cli::{ExportArgs, ImportArgs};
use crate::commands::warm::{Filters, collect_pins, select_files};
use crate::config::Config;
use crate::store;

pub async fn export(config: Config, args: ExportArgs) -> anyhow::Result<ExitCode> {
    let store = store::from_config(&config, &crate::commands::background()).await?;
    let selection = if !args.selection.is_empty() {
        let pins = collect_pins(&args.selection)?;
        let filters = Filters::from(&args.selection);
        let links = links_in(&store.list_records().await?);
        let mut sel = Selection::default();
        for pin in &pins {
            let key = RecordKey::Page(pin.name.clone()).to_string();
            let bytes = store
                .get_record(&key)
                .await?
                .with_context(|| format!("`{}` is not in the store; run larder warm first", pin.name))?;
            let stored = records::decode_page(&pin.name, &bytes).map_err(anyhow::Error::msg)?;
            let files = select_files(&stored.page.files, pin, &filters).map_err(|e| anyhow::anyhow!(e))?;
            for f in files {
                let sha = f.sha256().context("a file without sha256 cannot be exported")?.to_string();
                if let Some(md) = f.core_metadata.clone() {
                    sel.blobs.insert(md);
                } else if let Some(md) = links.get(&sha).cloned() {
                    sel.records.insert(RecordKey::WheelMeta { wheel: sha.clone(), metadata: md.clone() }.to_string());
                    sel.blobs.insert(md);
                }
                sel.blobs.insert(sha);
            }
            sel.records.insert(key);
        }
        sel.add_private(&store).await?;
        sel.add_advisories(&store).await?;
        sel
    } else {
        Selection::everything(&store).await?
    };
    let whole = args.selection.is_empty();
    let mut result = bundle::export(store.clone(), selection, &args.output).await;
    // The whole store, exported while a server runs on it: a blob listed a moment ago may be
    // gone (a page rewritten, a file evicted); list again (a pinned selection names only
    // what stays).
    for _ in 0..3 {
        match &result {
            Err(e) if whole && e.downcast_ref::<bundle::Vanished>().is_some() => {
                eprintln!("warning: {e}; exporting again");
                result = bundle::export(store.clone(), Selection::everything(&store).await?, &args.output).await;
            }
            _ => break,
        }
    }
    let summary = result?;
    println!(
        "exported {} files ({:.1} MB) and {} records to {}",
        summary.blobs,
        summary.bytes as f64 / 1e6,
        summary.records,
        args.output.display()
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn import(config: Config, args: ImportArgs) -> anyhow::Result<ExitCode> {
    let store = store::from_config(&config, &crate::commands::background()).await?;
    let audit = Audit::open(config.audit_log.as_ref(), store.is_shared().then(|| store.clone()))?;
    let result = bundle::import(store, &args.bundle, &bundle::staging_dir(&config.data_dir)).await;
    let event = audit::Event::new(audit::Action::Import, audit::Who::Operator { via: "larder import".into() });
    audit.record(match &result {
        Ok(s) => event.ended(
            audit::Outcome::Ok,
            Some(format!("{} files and {} records from {}", s.blobs, s.records, args.bundle.display())),
        ),
        Err(e) => event.ended(audit::Outcome::Refused, Some(format!("{}: {e:#}", args.bundle.display()))),
    });
    audit.flush().await;
    let summary = result?;
    println!(
        "imported {} files ({:.1} MB) and {} records from {}; restart a running Larder on this data dir to see new private packages",
        summary.blobs,
        summary.bytes as f64 / 1e6,
        summary.records,
        args.bundle.display()
    );
    Ok(ExitCode::SUCCESS)
}
