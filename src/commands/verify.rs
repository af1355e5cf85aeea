//! `larder verify`: re-hash the whole store and check every record. The hit path does not
//! re-hash (it would cost what a static file server does not pay), so this is how bit rot, a
//! damaged record or a record naming a lost blob is found. Without `--repair` it says what it
//! would repair; with it, it does: what came from the upstream is dropped (fetched again),
//! what exists nowhere else is only reported, with what to do.

use std::collections::{HashMap, HashSet};
use std::process::ExitCode;

use futures_util::StreamExt;
use sha2::{Digest, Sha256};

use crate::cache::records::{self, RecordKey};
use crate::cli::VerifyArgs;
use crate::config::Config;
use crate::store::{self, Store, format};

/// How one problem is repaired.
enum Fix {
    /// Write the current format stamp.
    Restamp,
    DeleteBlob(String),
    DeleteRecord(String),
    /// Replace a record with these bytes.
    RewriteRecord(String, Vec<u8>),
    /// Not here: the data exists nowhere else; the text says what to do.
    Manual(&'static str),
}

struct Problem {
    what: String,
    fix: Fix,
}

impl Problem {
    fn describe(&self) -> &'static str {
        match &self.fix {
            Fix::Restamp => "the stamp is written again",
            Fix::DeleteBlob(_) => "removed; a cached file is fetched again on the next request",
            Fix::DeleteRecord(key) if key.starts_with(records::WHEEL_META_PREFIX) => {
                "dropped; the METADATA is extracted again from its wheel"
            }
            Fix::DeleteRecord(_) => "dropped; it came from the upstream and is fetched again (when online)",
            Fix::RewriteRecord(..) => "rewritten without the rendered bodies; the page is rendered again",
            Fix::Manual(how) => how,
        }
    }

    async fn apply(&self, store: &dyn Store) -> anyhow::Result<bool> {
        match &self.fix {
            Fix::Restamp => format::restamp(store).await?,
            Fix::DeleteBlob(sha) => store.delete_blob(sha).await?,
            Fix::DeleteRecord(key) => store.delete_record(key).await?,
            Fix::RewriteRecord(key, body) => store.put_record(key, body.clone()).await?,
            Fix::Manual(_) => return Ok(false),
        }
        Ok(true)
    }
}

pub async fn run(config: Config, args: VerifyArgs) -> anyhow::Result<ExitCode> {
    // Opened without the format check, which runs here: an unreadable stamp is a problem to
    // repair, not a reason to stop. A newer format is still refused before anything is read.
    let store = store::open(&config, &crate::commands::background()).await?;
    let mut problems = Vec::new();
    // A report writes nothing, not even the stamp; a repair stamps a store that has none.
    let probe = match args.repair {
        true => format::check(&*store).await.map(drop),
        false => format::read(&*store).await.map(drop),
    };
    match probe {
        Ok(()) => {}
        Err(format::Refused::Unreadable { reason, .. }) => {
            problems.push(Problem { what: format!("format stamp: {reason}"), fix: Fix::Restamp })
        }
        Err(e) => return Err(e.into()),
    }

    let (checked, bytes, corrupt) = hash_blobs(&*store).await?;
    let present: HashSet<String> =
        store.list_blobs().await?.into_iter().map(|(sha, _)| sha).filter(|sha| !corrupt.contains(sha)).collect();
    let records = store.list_records().await?;
    // Blobs that exist nowhere else: uploads, and the METADATA Larder extracted.
    let mut private_shas: HashSet<String> = crate::cache::links_in(&records).into_values().collect();
    // The stamp was checked above.
    for key in records.keys.iter().filter(|k| *k != format::KEY) {
        let body = match store.get_record(key).await {
            Ok(Some(body)) => body,
            Ok(None) => continue,
            // A bucket that does not answer is worth a retry; a local read error is damage.
            Err(e) if e.is_unreachable() => {
                problems.push(Problem {
                    what: format!("unreadable record: {}: {e}", key.escape_debug()),
                    fix: Fix::Manual("retry when the store answers"),
                });
                continue;
            }
            Err(e) => {
                problems.push(Problem {
                    what: format!("unreadable record: {}: {e}", key.escape_debug()),
                    fix: unreadable_fix(key),
                });
                continue;
            }
        };
        match records::validate(key, &body) {
            Ok(parsed) => check_references(key, &parsed, &body, &present, &mut private_shas, &mut problems),
            Err(e) => problems.push(Problem {
                what: format!("unreadable record: {}: {e}", key.escape_debug()),
                fix: unreadable_fix(key),
            }),
        }
    }
    // The local store keeps each record's contents as a content file too: a corrupt one is
    // the record's damage (its own line above), not a blob to delete.
    let record_contents: HashSet<&str> = records.contents.values().map(|(sha, _)| sha.as_str()).collect();
    // Corrupt blobs first in the report, as before.
    let mut report: Vec<Problem> = corrupt
        .iter()
        .map(|sha| {
            let fix = if record_contents.contains(sha.as_str()) {
                Fix::Manual("the contents of a record: see the record's own line")
            } else if store.is_shared() {
                // The copy read may be this replica's cache or the bucket's: deleting would
                // delete the bucket's, which may be the good one (and a private upload's only one).
                Fix::Manual(
                    "on a shared store the copy read may be the local cache's: empty this replica's cache \
                     (<data_dir>/cache) and verify again; a copy still corrupt is the bucket's",
                )
            } else {
                Fix::DeleteBlob(sha.clone())
            };
            let what = if private_shas.contains(sha) { "private upload: re-upload it" } else { "cached" };
            Problem { what: format!("corrupt: {sha} ({what})"), fix }
        })
        .collect();
    report.extend(problems);

    println!("checked {checked} files ({:.1} MB) and {} records", bytes as f64 / 1e6, records.keys.len());
    let mut left = 0;
    for p in &report {
        let apply = args.repair || (args.remove && matches!(p.fix, Fix::DeleteBlob(_)));
        if apply && p.apply(&*store).await? {
            match &p.fix {
                // `corrupt, removed: <sha>` as `larder verify --remove` has always begun it.
                Fix::DeleteBlob(sha) => println!("  corrupt, removed: {sha} (repaired: {})", p.describe()),
                _ => println!("  {} (repaired: {})", p.what, p.describe()),
            }
            continue;
        }
        left += 1;
        match p.fix {
            Fix::Manual(how) => println!("  {} (not repairable here: {how})", p.what),
            _ => println!("  {} (--repair: {})", p.what, p.describe()),
        }
    }
    Ok(if left == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// Re-hashes every blob: (blobs checked, bytes, the sha256s whose content does not match).
async fn hash_blobs(store: &dyn Store) -> anyhow::Result<(usize, u64, Vec<String>)> {
    let (mut checked, mut bytes, mut corrupt) = (0usize, 0u64, Vec::new());
    for (sha, len) in store.list_blobs().await? {
        let Some(blob) = store.open_blob(&sha).await? else { continue };
        let mut hasher = Sha256::new();
        let blob_len = blob.len;
        let mut stream = blob.stream(0, blob_len).await?;
        while let Some(chunk) = stream.next().await {
            hasher.update(&chunk?);
        }
        checked += 1;
        bytes += len;
        if hex::encode(hasher.finalize()) != sha {
            corrupt.push(sha);
        }
    }
    Ok((checked, bytes, corrupt))
}

/// What repairs a record that does not parse: what came from the upstream is dropped.
fn unreadable_fix(key: &str) -> Fix {
    match RecordKey::parse(key) {
        Ok(
            RecordKey::Page(_)
            | RecordKey::Provenance(_)
            | RecordKey::Alias(_)
            | RecordKey::WheelMeta { .. }
            | RecordKey::PrivateBlob(_),
        ) => Fix::DeleteRecord(key.to_string()),
        Ok(RecordKey::StoreFormat) => Fix::Restamp,
        Ok(RecordKey::Private { .. }) => Fix::Manual("it exists nowhere else: `larder import` a bundle that has it"),
        Ok(RecordKey::Advisories) => Fix::Manual("import the advisories again: `larder advisories import`"),
        Err(_) => Fix::Manual("not a kind of record this Larder knows; left as it is"),
    }
}

/// A record that parses may still name blobs the store lost.
fn check_references(
    key: &str,
    parsed: &RecordKey,
    body: &[u8],
    present: &HashSet<String>,
    private_shas: &mut HashSet<String>,
    problems: &mut Vec<Problem>,
) {
    let what =
        |missing: &str| format!("record {} names blob {missing}, which the store does not have", key.escape_debug());
    match parsed {
        RecordKey::Page(_) => {
            let Ok(Some(head)) = records::decode_page_head(body) else { return };
            let named = head.bodies.html.iter().chain(&head.bodies.json).map(|b| &b.sha256);
            if let Some(missing) = named.into_iter().find(|sha| !present.contains(*sha)) {
                let model = body.iter().position(|&b| b == b'\n').map_or(body, |end| &body[end + 1..]);
                problems
                    .push(Problem { what: what(missing), fix: Fix::RewriteRecord(key.to_string(), model.to_vec()) });
            }
        }
        RecordKey::Private { project, name } => {
            let Ok(record) = records::decode_private(name, body) else { return };
            let mut missing_files: HashMap<String, String> = HashMap::new();
            for f in &record.files {
                private_shas.insert(f.sha256.clone());
                private_shas.extend(f.metadata_sha256.clone());
                for sha in std::iter::once(&f.sha256).chain(&f.metadata_sha256) {
                    if !present.contains(sha) {
                        missing_files.insert(sha.clone(), format!("{} in project {project}", f.filename));
                    }
                }
            }
            for (sha, file) in missing_files {
                problems.push(Problem {
                    what: format!("{} ({file})", what(&sha)),
                    fix: Fix::Manual(
                        "it exists nowhere else: upload the file again, or `larder import` a bundle that has it",
                    ),
                });
            }
        }
        RecordKey::WheelMeta { metadata, .. } if !present.contains(metadata) => {
            problems.push(Problem { what: what(metadata), fix: Fix::DeleteRecord(key.to_string()) });
        }
        // An alias may name an evicted file: that is a miss, filled again, not damage.
        RecordKey::Advisories => {
            if let Ok(pointer) = crate::advisories::decode_pointer(body)
                && !present.contains(&pointer.sha256)
            {
                problems.push(Problem {
                    what: what(&pointer.sha256),
                    fix: Fix::Manual("import the advisories again: `larder advisories import`"),
                });
            }
        }
        _ => {}
    }
}
