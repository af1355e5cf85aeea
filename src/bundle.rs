//! Bundles carry a store across an air gap: `larder export` writes one, `larder import` reads it.
//!
//! A bundle is a tar archive (zstd-compressed when its name ends in `.zst`):
//! `manifest.json` first (every blob's sha256 and size, every record's key, sha256 and size),
//! then `blobs/<sha256>` and `records/<n>`. Import stages and checks *everything* against the
//! manifest before anything enters the store, so a corrupt or truncated bundle imports nothing;
//! blobs are content-addressed and records are merged, so importing twice changes nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::cache::records::{self, PrivateRecord, RecordKey};
use crate::store::Store;

const FORMAT: &str = "larder-bundle";
const MAX_RECORD: u64 = 64 * 1024 * 1024;

#[derive(Serialize, Deserialize)]
pub(crate) struct Manifest {
    format: String,
    version: u32,
    created: String,
    blobs: Vec<BlobEntry>,
    records: Vec<RecordEntry>,
}

#[derive(Serialize, Deserialize)]
struct BlobEntry {
    sha256: String,
    size: u64,
}

#[derive(Serialize, Deserialize)]
struct RecordEntry {
    key: String,
    sha256: String,
    size: u64,
}

/// What goes into a bundle: record keys and blob sha256s.
#[derive(Default)]
pub struct Selection {
    pub records: BTreeSet<String>,
    pub blobs: BTreeSet<String>,
}

impl Selection {
    /// Everything in the store.
    pub async fn everything(store: &Arc<dyn Store>) -> anyhow::Result<Selection> {
        Ok(Selection {
            // The format stamp belongs to a store, not to its contents: the bundle has its own version.
            records: store.list_records().await?.keys.into_iter().filter(|k| k != crate::store::format::KEY).collect(),
            blobs: store.list_blobs().await?.into_iter().map(|(sha, _)| sha).collect(),
        })
    }

    /// Every private record (uploads and tombstones) with the blobs its files use.
    pub async fn add_private(&mut self, store: &Arc<dyn Store>) -> anyhow::Result<()> {
        let records = store.list_records().await?;
        for key in records.with_prefix(crate::cache::records::PRIVATE_PREFIX) {
            if let Some(bytes) = store.get_record(key).await? {
                let record: PrivateRecord =
                    serde_json::from_slice(&bytes).with_context(|| format!("record `{key}`"))?;
                for f in &record.files {
                    self.blobs.insert(f.sha256.clone());
                    self.blobs.extend(f.metadata_sha256.clone());
                }
                self.records.insert(key.to_string());
            }
        }
        Ok(())
    }

    /// The imported advisories (issue 25): an air-gapped site gets them with its packages.
    pub async fn add_advisories(&mut self, store: &Arc<dyn Store>) -> anyhow::Result<()> {
        if let Some(bytes) = store.get_record(crate::advisories::RECORD_KEY).await? {
            let pointer = crate::advisories::decode_pointer(&bytes).map_err(anyhow::Error::msg)?;
            self.blobs.insert(pointer.sha256);
            self.records.insert(crate::advisories::RECORD_KEY.to_string());
        }
        Ok(())
    }
}

/// A blob the selection named left the store before it was written (a running server
/// replaced a page's bodies, or evicted a file): the export is made again from a new listing.
#[derive(Debug, thiserror::Error)]
#[error("blob {0} left the store during the export (a running server changed it)")]
pub struct Vanished(pub String);

pub struct Summary {
    pub blobs: usize,
    pub records: usize,
    pub bytes: u64,
}

/// Writes the selection to `output` (atomically: a `.part` file renamed at the end).
pub async fn export(store: Arc<dyn Store>, selection: Selection, output: &Path) -> anyhow::Result<Summary> {
    let mut blobs = Vec::new();
    for sha in &selection.blobs {
        let blob = store.open_blob(sha).await?.ok_or_else(|| Vanished(sha.clone()))?;
        blobs.push(BlobEntry { sha256: sha.clone(), size: blob.len });
    }
    let mut records = Vec::new();
    let mut record_bodies = Vec::new();
    for key in &selection.records {
        let body = store.get_record(key).await?.with_context(|| format!("record `{key}` is not in the store"))?;
        records.push(RecordEntry {
            key: key.clone(),
            sha256: hex::encode(Sha256::digest(&body)),
            size: body.len() as u64,
        });
        record_bodies.push(body);
    }
    let manifest = Manifest {
        format: FORMAT.into(),
        version: 1,
        created: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        blobs,
        records,
    };
    let summary = Summary {
        blobs: manifest.blobs.len(),
        records: manifest.records.len(),
        bytes: manifest.blobs.iter().map(|b| b.size).sum(),
    };
    let part = output.with_extension("part");
    let file = std::fs::File::create(&part).with_context(|| format!("cannot create `{}`", part.display()))?;
    let compress = output.to_string_lossy().ends_with(".zst");
    let handle = tokio::runtime::Handle::current();
    let out = output.to_path_buf();
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let writer: Box<dyn Write> = if compress {
            Box::new(zstd::Encoder::new(file, 3)?.auto_finish())
        } else {
            Box::new(std::io::BufWriter::new(file))
        };
        let mut tar = tar::Builder::new(writer);
        let manifest_bytes = serde_json::to_vec_pretty(&manifest)?;
        append(&mut tar, "manifest.json", manifest_bytes.len() as u64, manifest_bytes.as_slice())?;
        for b in &manifest.blobs {
            let blob = handle.block_on(store.open_blob(&b.sha256))?.ok_or_else(|| Vanished(b.sha256.clone()))?;
            let stream = handle.block_on(blob.stream(0, b.size))?;
            let reader = tokio_util::io::SyncIoBridge::new_with_handle(
                tokio_util::io::StreamReader::new(stream),
                handle.clone(),
            );
            append(&mut tar, &format!("blobs/{}", b.sha256), b.size, reader)?;
        }
        for (i, (r, body)) in manifest.records.iter().zip(record_bodies).enumerate() {
            append(&mut tar, &format!("records/{i}"), r.size, body.as_slice())?;
        }
        tar.into_inner()?.flush()?;
        Ok(())
    })
    .await
    .expect("export does not panic")?;
    std::fs::rename(&part, &out)?;
    Ok(summary)
}

fn append<W: Write>(tar: &mut tar::Builder<W>, path: &str, size: u64, data: impl Read) -> std::io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_size(size);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_cksum();
    tar.append_data(&mut header, path, data)
}

/// Imports a bundle into `store`: check everything, then merge. `staging` is scratch space on
/// the same machine (removed afterwards).
pub async fn import(store: Arc<dyn Store>, bundle: &Path, staging: &Path) -> anyhow::Result<Summary> {
    std::fs::create_dir_all(staging)?;
    let result = import_staged(store, bundle, staging).await;
    let _ = std::fs::remove_dir_all(staging);
    result
}

async fn import_staged(store: Arc<dyn Store>, bundle: &Path, staging: &Path) -> anyhow::Result<Summary> {
    let (bundle, stage) = (bundle.to_path_buf(), staging.to_path_buf());
    let (manifest, records) = tokio::task::spawn_blocking(move || check_bundle(&bundle, &stage))
        .await
        .expect("checking a bundle does not panic")
        .context("the bundle is corrupt or incomplete; nothing was imported")?;
    // Everything checked: now it may become visible. On a shared store, private blobs are
    // marked first, as uploads mark them (issue 22): no replica serves one for an upstream
    // page naming its hash before it has listed the records below.
    if store.is_shared() {
        for (entry, body) in manifest.records.iter().zip(&records) {
            if !entry.key.starts_with(records::PRIVATE_PREFIX) {
                continue;
            }
            let Ok(records::RecordKey::Private { project, .. }) = records::RecordKey::parse(&entry.key) else {
                continue;
            };
            let record: PrivateRecord = serde_json::from_slice(body)?;
            for f in &record.files {
                for sha in std::iter::once(&f.sha256).chain(f.metadata_sha256.as_ref()) {
                    let marker = records::RecordKey::PrivateBlob(sha.clone()).to_string();
                    store.put_record(&marker, project.clone().into_bytes()).await?;
                }
            }
        }
    }
    let mut bytes = 0;
    for b in &manifest.blobs {
        store.put_blob_file(&b.sha256, &staging.join(&b.sha256)).await?;
        bytes += b.size;
    }
    for (entry, body) in manifest.records.iter().zip(records) {
        // A store's format stamp is no content (an older Larder's export may carry one):
        // importing it would re-stamp the store it lands in.
        if entry.key == crate::store::format::KEY {
            tracing::info!("the bundle carries a store format stamp; skipped (the store keeps its own)");
            continue;
        }
        merge_record(&store, &entry.key, body).await?;
    }
    Ok(Summary { blobs: manifest.blobs.len(), records: manifest.records.len(), bytes })
}

/// A bundle is outside input (issue 9): the manifest is checked before any entry is read,
/// and every path Larder creates is built from a checked sha256, never from the archive.
fn check_manifest(manifest: &Manifest) -> anyhow::Result<()> {
    if manifest.format != FORMAT || manifest.version != 1 {
        bail!("unsupported bundle format `{}` version {}", manifest.format, manifest.version);
    }
    let mut seen = BTreeSet::new();
    for b in &manifest.blobs {
        if !crate::index::is_sha256_hex(&b.sha256) {
            bail!(
                "the manifest lists blob `{}`, which is not a sha256 (64 lowercase hex digits)",
                b.sha256.escape_debug()
            );
        }
        if !seen.insert(b.sha256.as_str()) {
            bail!("the manifest lists blob {} twice", b.sha256);
        }
    }
    for r in &manifest.records {
        crate::cache::records::RecordKey::parse(&r.key).map_err(anyhow::Error::msg)?;
        if !crate::index::is_sha256_hex(&r.sha256) || r.size > MAX_RECORD {
            bail!("the manifest entry of record `{}` is malformed (sha256 or size)", r.key.escape_debug());
        }
    }
    Ok(())
}

/// Reads the whole bundle: blobs to `staging/<sha256>` (hashed on the way), records into
/// memory and validated; every entry must be a regular file that matches the manifest, and the
/// manifest must be complete.
pub(crate) fn check_bundle(bundle: &Path, staging: &Path) -> anyhow::Result<(Manifest, Vec<Vec<u8>>)> {
    let mut file = std::fs::File::open(bundle).with_context(|| format!("cannot open `{}`", bundle.display()))?;
    let mut magic = [0u8; 4];
    let n = file.read(&mut magic)?;
    let file = std::fs::File::open(bundle)?;
    let reader: Box<dyn Read> =
        if n == 4 && magic == [0x28, 0xb5, 0x2f, 0xfd] { Box::new(zstd::Decoder::new(file)?) } else { Box::new(file) };
    let mut archive = tar::Archive::new(reader);
    // Raw: GNU long names and pax headers are not read into memory on the archive's word;
    // Larder writes neither, so they are refused below like any entry that is not a file.
    let mut entries = archive.entries().context("not a tar archive")?.raw(true);
    let mut first = entries.next().context("the bundle is empty")??;
    if !first.header().entry_type().is_file() || first.path_bytes().as_ref() != b"manifest.json" {
        bail!("the bundle does not start with manifest.json; not a Larder bundle");
    }
    let mut text = Vec::new();
    (&mut first).take(MAX_RECORD).read_to_end(&mut text)?;
    let manifest: Manifest = serde_json::from_slice(&text).context("manifest.json does not parse")?;
    check_manifest(&manifest)?;
    let blob_sizes: HashMap<&str, u64> = manifest.blobs.iter().map(|b| (b.sha256.as_str(), b.size)).collect();
    let mut seen_blobs = BTreeSet::new();
    let mut records: BTreeMap<usize, Vec<u8>> = BTreeMap::new();
    for entry in entries {
        let mut entry = entry.context("the archive is damaged or truncated")?;
        let path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let kind = entry.header().entry_type();
        if !kind.is_file() {
            bail!("`{}` is a {kind:?} entry; a bundle holds regular files only", path.escape_debug());
        }
        if let Some(name) = path.strip_prefix("blobs/") {
            // The key from the manifest (checked hex), not the name from the archive, becomes the path.
            let (&sha, &size) = blob_sizes
                .get_key_value(name)
                .with_context(|| format!("`{}` is not in the manifest", path.escape_debug()))?;
            if !seen_blobs.insert(sha.to_string()) {
                bail!("`{path}` appears twice in the bundle");
            }
            let mut entry = (&mut entry).take(size + 1); // never more than the manifest says
            let mut out = std::fs::File::create(staging.join(sha))?;
            let mut hasher = Sha256::new();
            let mut buf = vec![0u8; 256 * 1024];
            let mut total = 0u64;
            loop {
                let n = entry.read(&mut buf).context("the archive is truncated")?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                out.write_all(&buf[..n])?;
                total += n as u64;
            }
            if total < size {
                bail!("the bundle is truncated: `{path}` has {total} of {size} bytes");
            }
            if total > size {
                bail!("`{path}` has more bytes than the {size} the manifest says");
            }
            let actual = hex::encode(hasher.finalize());
            if actual != sha {
                bail!("`{path}` does not match its sha256 (it hashes to {actual})");
            }
        } else if let Some(index) = path.strip_prefix("records/") {
            let i: usize = index.parse().with_context(|| format!("bad entry `{}`", path.escape_debug()))?;
            let expected = manifest.records.get(i).with_context(|| format!("`{path}` is not in the manifest"))?;
            let mut body = Vec::new();
            (&mut entry).take(expected.size + 1).read_to_end(&mut body).context("the archive is truncated")?;
            if body.len() as u64 != expected.size || hex::encode(Sha256::digest(&body)) != expected.sha256 {
                bail!("record `{}` does not match its size and sha256", expected.key);
            }
            // Parsed and validated before it is staged: a record is trusted by everything that reads it.
            let key = crate::cache::records::validate(&expected.key, &body).map_err(anyhow::Error::msg)?;
            // A private record may name only blobs the bundle carries: otherwise importing it
            // would give its project another project's private file already in this store.
            if let crate::cache::records::RecordKey::Private { name, .. } = &key {
                let record = crate::cache::records::decode_private(name, &body).map_err(anyhow::Error::msg)?;
                let named =
                    record.files.iter().flat_map(|f| std::iter::once(&f.sha256).chain(f.metadata_sha256.as_ref()));
                if let Some(sha) = named.into_iter().find(|sha| !blob_sizes.contains_key(sha.as_str())) {
                    bail!("record `{}` names blob {sha}, which the bundle does not carry", expected.key);
                }
            }
            // The advisories record too: naming a blob already here (a large cached wheel) would
            // make every replica read it as a set.
            if let crate::cache::records::RecordKey::Advisories = key {
                let pointer = crate::advisories::decode_pointer(&body).map_err(anyhow::Error::msg)?;
                if !blob_sizes.contains_key(pointer.sha256.as_str()) {
                    bail!("record `{}` names blob {}, which the bundle does not carry", expected.key, pointer.sha256);
                }
            }
            if records.insert(i, body).is_some() {
                bail!("`{path}` appears twice in the bundle");
            }
        } else {
            bail!("unexpected entry `{}`", path.escape_debug());
        }
    }
    let missing_blobs = manifest.blobs.len() - seen_blobs.len();
    let missing_records = manifest.records.len() - records.len();
    if missing_blobs + missing_records > 0 {
        bail!("the bundle is truncated: {missing_blobs} blobs and {missing_records} records are missing");
    }
    Ok((manifest, records.into_values().collect()))
}

/// Merges one record: private records unite their files (the local file wins a conflict) and
/// their tombstones; pages keep the newer copy; key-only links are simply written. Every write
/// is a compare-and-swap against the record as read (retried on conflict): a replica's upload
/// acknowledged during a live import into a shared bucket is never overwritten (issue 22).
async fn merge_record(store: &Arc<dyn Store>, key: &str, incoming: Vec<u8>) -> anyhow::Result<()> {
    // A page record's head names blobs as the page's bodies: a bundle's is not trusted (it
    // could name another project's private file); the page is rendered again from its model.
    let incoming = match RecordKey::parse(key) {
        Ok(RecordKey::Page(_)) => match incoming.iter().position(|&b| b == b'\n') {
            Some(end) => incoming[end + 1..].to_vec(),
            None => incoming,
        },
        _ => incoming,
    };
    for attempt in 0..20u64 {
        let current = store.get_record_versioned(key).await?;
        let merged = match &current {
            // A set of advisories is read (bounded) before any replica may load it.
            None if key == crate::advisories::RECORD_KEY => {
                crate::cache::advisory_store::check_pointer(&**store, &incoming).await?;
                incoming.clone()
            }
            None => incoming.clone(),
            Some((local, _)) => {
                let merged = match key == crate::advisories::RECORD_KEY {
                    true => crate::cache::advisory_store::merged_pointer(&**store, local, &incoming).await?,
                    false => merged_record(key, local, &incoming)?,
                };
                match merged {
                    Some(m) => m,
                    None => return Ok(()), // the local record stays as it is
                }
            }
        };
        let expected = current.as_ref().map(|(_, v)| v.as_str());
        if store.put_record_if(key, merged, expected).await?.is_some() {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(5 * (attempt + 1))).await;
    }
    anyhow::bail!("record `{key}` kept changing while it was imported; run the import again")
}

/// What `local` becomes with `incoming` merged in; `None`: unchanged.
fn merged_record(key: &str, local: &[u8], incoming: &[u8]) -> anyhow::Result<Option<Vec<u8>>> {
    if local == incoming {
        return Ok(None);
    }
    if key.starts_with(records::PRIVATE_PREFIX) {
        let mut mine: PrivateRecord = serde_json::from_slice(local)?;
        let theirs: PrivateRecord = serde_json::from_slice(incoming)?;
        let before = (mine.files.len(), mine.deleted.len(), mine.deleted_sha256.len());
        for f in theirs.files {
            if !mine.files.iter().any(|m| m.filename == f.filename) && !mine.deleted.contains(&f.filename) {
                mine.files.push(f);
            }
        }
        for d in theirs.deleted {
            if !mine.deleted.contains(&d) {
                mine.deleted.push(d);
            }
        }
        for sha in theirs.deleted_sha256 {
            if !mine.deleted_sha256.contains(&sha) {
                mine.deleted_sha256.push(sha);
            }
        }
        if (mine.files.len(), mine.deleted.len(), mine.deleted_sha256.len()) == before {
            return Ok(None);
        }
        return Ok(Some(serde_json::to_vec(&mine)?));
    }
    if let Ok(RecordKey::Page(name)) = RecordKey::parse(key) {
        let confirmed = |b: &[u8]| records::decode_page(&name, b).ok().map(|r| r.confirmed_unix);
        return Ok((confirmed(incoming) > confirmed(local)).then(|| incoming.to_vec()));
    }
    Ok(Some(incoming.to_vec()))
}

/// The staging directory for an import into `data_dir`.
pub fn staging_dir(data_dir: &Path) -> PathBuf {
    crate::config::spool_dir(data_dir).join(format!("import-{:016x}", rand::random::<u64>()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::records::PrivateFile;

    fn file(name: &str) -> PrivateFile {
        PrivateFile {
            filename: name.into(),
            version: "1.0".into(),
            sha256: "ab".repeat(32),
            md5: String::new(),
            blake2_256: String::new(),
            size: 1,
            upload_time: "2024-01-01T00:00:00Z".into(),
            requires_python: None,
            metadata_sha256: None,
            yanked: Default::default(),
            attestations: None,
        }
    }

    /// An import merges into what the store has now, by compare-and-swap: files uploaded
    /// meanwhile stay, tombstones win, and an unchanged record is not written again.
    #[tokio::test]
    async fn an_import_merges_private_records_without_losing_uploads() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(crate::store::LocalStore::open(dir.path()).unwrap());
        let key = "private/team/corp-lib";
        let local = PrivateRecord {
            files: vec![file("a.whl")],
            deleted: vec!["gone.whl".into()],
            changed_unix: 1,
            ..Default::default()
        };
        store.put_record(key, serde_json::to_vec(&local).unwrap()).await.unwrap();
        let incoming =
            PrivateRecord { files: vec![file("b.whl"), file("gone.whl")], changed_unix: 2, ..Default::default() };
        merge_record(&store, key, serde_json::to_vec(&incoming).unwrap()).await.unwrap();
        let now: PrivateRecord = serde_json::from_slice(&store.get_record(key).await.unwrap().unwrap()).unwrap();
        let names: Vec<_> = now.files.iter().map(|f| f.filename.as_str()).collect();
        assert_eq!(names, ["a.whl", "b.whl"], "the local upload stays; the deleted file does not come back");
        let before = store.get_record_versioned(key).await.unwrap().unwrap().1;
        merge_record(&store, key, serde_json::to_vec(&incoming).unwrap()).await.unwrap();
        assert_eq!(store.get_record_versioned(key).await.unwrap().unwrap().1, before, "nothing new: not rewritten");
    }
}
