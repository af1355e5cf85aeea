//! `larder verify`: re-hash the whole store. The hit path does not re-hash (it would cost what
//! a static file server does not pay), so this is how bit rot is found.

use std::process::ExitCode;

use futures_util::StreamExt;
use sha2::{Digest, Sha256};

use crate::cache::records::{self, RecordKey};
use crate::cli::VerifyArgs;
use crate::config::Config;
use crate::store;

pub async fn run(config: Config, args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let store = store::from_config(&config).await?;
    let mut private_shas = std::collections::HashSet::new();
    let mut bad_records = Vec::new();
    let records = store.list_records().await?;
    // Extracted METADATA exists nowhere else either: not "fetched again".
    private_shas.extend(crate::cache::links::links_in(&records).into_values());
    let keys = records.keys;
    // Every record is validated as a bundle's would be (issue 9).
    for key in &keys {
        match store.get_record(key).await {
            Ok(Some(bytes)) => match records::validate(key, &bytes) {
                Ok(RecordKey::Private { name, .. }) => {
                    let record = records::decode_private(&name, &bytes).expect("validated");
                    private_shas.extend(
                        record.files.into_iter().flat_map(|f| std::iter::once(f.sha256).chain(f.metadata_sha256)),
                    );
                }
                Ok(_) => {}
                Err(e) => bad_records.push(format!("{}: {e}", key.escape_debug())),
            },
            Ok(None) => {}
            Err(e) => bad_records.push(format!("{}: {e}", key.escape_debug())),
        }
    }
    let blobs = store.list_blobs().await?;
    let (mut checked, mut bytes, mut corrupt) = (0usize, 0u64, Vec::new());
    for (sha, len) in &blobs {
        let Some(blob) = store.open_blob(sha).await? else { continue };
        let mut hasher = Sha256::new();
        let blob_len = blob.len;
        let mut stream = blob.stream(0, blob_len).await?;
        while let Some(chunk) = stream.next().await {
            hasher.update(&chunk?);
        }
        checked += 1;
        bytes += len;
        if hex::encode(hasher.finalize()) != *sha {
            corrupt.push(sha.clone());
        }
    }
    println!("checked {checked} files ({:.1} MB) and {} records", bytes as f64 / 1e6, keys.len());
    for sha in &corrupt {
        let what = if private_shas.contains(sha) {
            "private upload: re-upload it"
        } else {
            "cached: it is fetched again on the next request"
        };
        if args.remove {
            store.delete_blob(sha).await?;
            println!("  corrupt, removed: {sha} ({what})");
        } else {
            println!("  corrupt: {sha} ({what}; --remove deletes it)");
        }
    }
    for r in &bad_records {
        println!("  unreadable record: {r}");
    }
    Ok(if corrupt.is_empty() && bad_records.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
