//! `larder export` and `larder import`: the command-line side of `crate::bundle`.

use std::process::ExitCode;

use anyhow::Context;
use serde::Deserialize;

use crate::bundle::{self, Selection};
use crate::cli::{ExportArgs, ImportArgs};
use crate::commands::warm::{Filters, collect_pins, select_files};
use crate::config::Config;
use crate::core_metadata::MetadataLinks;
use crate::index::ProjectPage;
use crate::store;

/// The part of a stored page record export needs.
#[derive(Deserialize)]
struct StoredPage {
    page: ProjectPage,
}

pub async fn export(config: Config, args: ExportArgs) -> anyhow::Result<ExitCode> {
    let store = store::from_config(&config)?;
    let selection = if !args.selection.is_empty() {
        let pins = collect_pins(&args.selection)?;
        let filters = Filters::from(&args.selection);
        let links = MetadataLinks::from_records(store.clone(), &store.list_records().await?);
        let mut sel = Selection::default();
        for pin in &pins {
            let key = format!("page/{}", pin.name);
            let bytes = store
                .get_record(&key)
                .await?
                .with_context(|| format!("`{}` is not in the store; run larder warm first", pin.name))?;
            let stored: StoredPage = serde_json::from_slice(&bytes).with_context(|| format!("record `{key}`"))?;
            let files = select_files(&stored.page.files, pin, &filters).map_err(|e| anyhow::anyhow!(e))?;
            for f in files {
                let sha = f.sha256().context("a file without sha256 cannot be exported")?.to_string();
                if let Some(md) = f.core_metadata.clone() {
                    sel.blobs.insert(md);
                } else if let Some(md) = links.get(&sha) {
                    sel.records.insert(format!("wheel-meta/{sha}/{md}"));
                    sel.blobs.insert(md);
                }
                sel.blobs.insert(sha);
            }
            sel.records.insert(key);
        }
        sel.add_private(&store).await?;
        sel
    } else {
        Selection::everything(&store).await?
    };
    let summary = bundle::export(store, selection, &args.output).await?;
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
    let store = store::from_config(&config)?;
    let summary = bundle::import(store, &args.bundle, &bundle::staging_dir(&config.data_dir)).await?;
    println!(
        "imported {} files ({:.1} MB) and {} records from {}; restart a running Larder on this data dir to see new private packages",
        summary.blobs,
        summary.bytes as f64 / 1e6,
        summary.records,
        args.bundle.display()
    );
    Ok(ExitCode::SUCCESS)
}
