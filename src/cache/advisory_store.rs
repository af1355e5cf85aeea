//! The set of advisories in the store (issue 25; the model is `crate::advisories`): read within bounds, merged, imported from
//! OSV's export (a file, a directory, or a URL on a schedule).

use std::io::Read;
use std::path::Path;

use anyhow::Context;

use crate::advisories::{Db, Imported, Invalid, MAX_EXPORT_BYTES, MAX_RECORD_BYTES, MAX_RECORDS};
pub use crate::advisories::{Pointer, RECORD_KEY, decode_pointer};
use crate::store::Store;

/// The set in the store (empty when none was imported), and the pointer record's version.
pub async fn load(store: &dyn Store) -> anyhow::Result<(Db, Option<String>)> {
    let Some((bytes, version)) = store.get_record_versioned(RECORD_KEY).await? else {
        return Ok((Db::default(), None));
    };
    let pointer = decode_pointer(&bytes).map_err(anyhow::Error::msg)?;
    Ok((read_set(store, &pointer.sha256).await?, Some(version)))
}

async fn read_set(store: &dyn Store, sha256: &str) -> anyhow::Result<Db> {
    let blob = store
        .open_blob(sha256)
        .await?
        .ok_or_else(|| anyhow::anyhow!("the advisories blob {sha256} is missing from the store"))?;
    // The compressed set is a fraction of its limit; a pointer at some large blob (a hostile
    // bundle naming a cached wheel) is refused before it is read.
    anyhow::ensure!(blob.len <= MAX_EXPORT_BYTES, "blob {sha256} is too large to be a set of advisories");
    let compressed = blob.read_to_bytes(MAX_EXPORT_BYTES).await?;
    anyhow::ensure!(crate::digest::sha256_hex(&compressed) == sha256, "the advisories blob is damaged");
    let mut db = tokio::task::spawn_blocking(move || Db::decode(&compressed)).await??;
    db.sha256 = Some(sha256.to_string());
    Ok(db)
}

/// `larder import` of a bundle carrying advisories into a store that has some: the two sets
/// merged (a newer `modified` wins), written as a new blob; the new record's body, or `None`
/// when the local set already has everything.
pub async fn merged_pointer(store: &dyn Store, local: &[u8], incoming: &[u8]) -> anyhow::Result<Option<Vec<u8>>> {
    let (mine, theirs) =
        (decode_pointer(local).map_err(anyhow::Error::msg)?, decode_pointer(incoming).map_err(anyhow::Error::msg)?);
    if mine.sha256 == theirs.sha256 {
        return Ok(None);
    }
    let mut db = read_set(store, &mine.sha256).await?;
    let other = read_set(store, &theirs.sha256).await?;
    let mut tally = Imported::default();
    for a in other.by_id.values() {
        let _ = db.merge(a.raw.get().as_bytes(), &mut tally);
    }
    if tally.added + tally.updated == 0 {
        return Ok(None);
    }
    Ok(Some(write_set(store, &db).await?))
}

/// Writes `db` as a blob; the body of the record that names it.
async fn write_set(store: &dyn Store, db: &Db) -> anyhow::Result<Vec<u8>> {
    let compressed = db.encode()?;
    let sha = crate::digest::sha256_hex(&compressed);
    store.put_blob_bytes(&sha, bytes::Bytes::from(compressed)).await?;
    let pointer = Pointer { sha256: sha, records: db.len(), imported_unix: crate::clock::Clock::system().unix() };
    Ok(serde_json::to_vec(&pointer)?)
}

/// Checks that a pointer names a readable set (within the limits) in `store`.
pub async fn check_pointer(store: &dyn Store, body: &[u8]) -> anyhow::Result<()> {
    let pointer = decode_pointer(body).map_err(anyhow::Error::msg)?;
    read_set(store, &pointer.sha256).await.map(drop).context("the bundle's advisories")
}

/// The pointer record's version now (a cheap check for a new import).
pub async fn version(store: &dyn Store) -> anyhow::Result<Option<String>> {
    Ok(store.get_record_versioned(RECORD_KEY).await?.map(|(_, v)| v))
}

/// Imports an OSV export (`all.zip`), one JSON record, or a directory of them into the store,
/// merged with what is there. Bad records are reported (to `report`) and skipped.
pub async fn import(
    store: &dyn Store,
    path: &Path,
    report: &mut (dyn FnMut(&str, &Invalid) + Send),
) -> anyhow::Result<Imported> {
    let path = path.to_path_buf();
    let entries = tokio::task::spawn_blocking(move || read_export(&path)).await??;
    for _attempt in 0..20 {
        let (mut db, expected) = match load(store).await {
            Ok(loaded) => loaded,
            // The stored set is gone or damaged: this import replaces it (said, not silent).
            Err(e) => {
                eprintln!("warning: the stored advisories cannot be read ({e:#}); this import replaces them");
                (Db::default(), version(store).await?)
            }
        };
        let mut tally = Imported::default();
        for (name, bytes) in &entries {
            if let Err(e) = db.merge(bytes, &mut tally) {
                tally.skipped += 1;
                report(name, &e);
            }
        }
        tally.total = db.len();
        if tally.added + tally.updated + tally.withdrawn == 0 && expected.is_some() {
            return Ok(tally);
        }
        let pointer = write_set(store, &db).await?;
        if store.put_record_if(RECORD_KEY, pointer, expected.as_deref()).await?.is_some() {
            return Ok(tally);
        }
        // Another import landed meanwhile: merge into its set.
    }
    anyhow::bail!("the advisories kept changing while this import ran; run it again")
}

/// Downloads OSV's export from `url` into `spool` (bounded by the export limit) and imports
/// it, unless another process imported less than `refresh` ago (replicas share the work).
pub async fn refresh_from(
    store: &dyn Store,
    url: &url::Url,
    refresh: std::time::Duration,
    spool: &Path,
) -> anyhow::Result<Option<Imported>> {
    if let Some(bytes) = store.get_record(RECORD_KEY).await?
        && let Ok(p) = decode_pointer(&bytes)
        && crate::clock::Clock::system().unix().saturating_sub(p.imported_unix) < refresh.as_secs()
    {
        return Ok(None);
    }
    let client = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(30))
        .timeout(std::time::Duration::from_secs(600))
        .build()?;
    let mut resp = client.get(url.clone()).send().await?.error_for_status()?;
    std::fs::create_dir_all(spool)?;
    let part = spool.join(format!("advisories.{:016x}.part", rand::random::<u64>()));
    let written = async {
        use tokio::io::AsyncWriteExt;
        let mut out = tokio::fs::File::create(&part).await?;
        let mut total = 0u64;
        while let Some(chunk) = resp.chunk().await? {
            total += chunk.len() as u64;
            anyhow::ensure!(total <= MAX_EXPORT_BYTES, "the export at {url} is larger than {MAX_EXPORT_BYTES} bytes");
            out.write_all(&chunk).await?;
        }
        out.flush().await?;
        Ok(())
    }
    .await;
    let result = match written {
        Ok(()) => {
            import(store, &part, &mut |name, why| tracing::debug!(record = %name, %why, "skipped an OSV record")).await
        }
        Err(e) => Err(e),
    };
    let _ = tokio::fs::remove_file(&part).await;
    result.map(Some)
}

/// Every JSON file of an export: a zip, a directory (recursively), or one file.
fn read_export(path: &Path) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    let mut total = 0u64;
    let mut take = |name: String, size: u64, read: &mut dyn Read, out: &mut Vec<(String, Vec<u8>)>| {
        if size > MAX_RECORD_BYTES {
            anyhow::bail!("`{name}` is {size} bytes, more than an OSV record may be ({MAX_RECORD_BYTES})");
        }
        anyhow::ensure!(out.len() < MAX_RECORDS, "the export has more than {MAX_RECORDS} records");
        let mut bytes = Vec::new();
        read.take(MAX_RECORD_BYTES + 1).read_to_end(&mut bytes)?;
        anyhow::ensure!(bytes.len() as u64 <= MAX_RECORD_BYTES, "`{name}` is larger than its size says");
        // Counted as read, not as declared (a zip entry may lie about its size).
        total += bytes.len() as u64;
        anyhow::ensure!(total <= MAX_EXPORT_BYTES, "the export unpacks to more than {MAX_EXPORT_BYTES} bytes");
        out.push((name, bytes));
        Ok(())
    };
    let meta = std::fs::metadata(path).map_err(|e| anyhow::anyhow!("cannot read `{}`: {e}", path.display()))?;
    if meta.is_dir() {
        let mut stack = vec![path.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let mut names: Vec<_> = std::fs::read_dir(&dir)?.collect::<Result<_, _>>()?;
            names.sort_by_key(|e| e.path());
            for e in names {
                let p = e.path();
                let ft = e.file_type()?;
                if ft.is_dir() {
                    stack.push(p);
                } else if ft.is_file() && p.extension().is_some_and(|x| x == "json") {
                    let size = e.metadata()?.len();
                    take(p.display().to_string(), size, &mut std::fs::File::open(&p)?, &mut out)?;
                }
            }
        }
        return Ok(out);
    }
    let mut file = std::fs::File::open(path)?;
    let mut magic = [0u8; 4];
    let is_zip = file.read_exact(&mut magic).is_ok() && magic == *b"PK\x03\x04";
    if !is_zip {
        take(path.display().to_string(), meta.len(), &mut std::fs::File::open(path)?, &mut out)?;
        return Ok(out);
    }
    let mut zip = zip::ZipArchive::new(std::fs::File::open(path)?)
        .map_err(|e| anyhow::anyhow!("`{}` is not a readable zip: {e}", path.display()))?;
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i).map_err(|e| anyhow::anyhow!("zip entry {i}: {e}"))?;
        let name = entry.name().map(|n| n.to_string()).unwrap_or_default();
        if !entry.is_file() || !name.ends_with(".json") {
            continue;
        }
        let size = entry.size();
        take(name, size, &mut entry, &mut out)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_pointer_at_a_blob_that_is_not_a_set_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::LocalStore::open(dir.path()).unwrap();
        let wheel = vec![7u8; 100_000];
        let sha = crate::digest::sha256_hex(&wheel);
        store.put_blob_bytes(&sha, bytes::Bytes::from(wheel)).await.unwrap();
        let pointer = serde_json::json!({"sha256": sha, "records": 1, "imported_unix": 0}).to_string();
        assert!(check_pointer(&store, pointer.as_bytes()).await.is_err());
        let missing = serde_json::json!({"sha256": "0".repeat(64), "records": 1, "imported_unix": 0}).to_string();
        assert!(check_pointer(&store, missing.as_bytes()).await.is_err());
    }
}
