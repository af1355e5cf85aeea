//! Private packages: an upload through the legacy upload API (standards §13), yanks and
//! deletes. The HTTP side (`server::handlers::upload`) streams the multipart body to a spool
//! file; this checks it in Warehouse's order and commits it.

use std::collections::HashMap;
use std::path::PathBuf;

use bytes::Bytes;

use super::private::{Added, WriteError};
use super::records::PrivateFile;
use super::{Cache, Error};
use crate::archive::ArchiveLimits;
use crate::index::filename::{self, DistKind};
use crate::index::{FileKey, ProjectName, Yanked};
use crate::metadata::{self, CoreMetadata};

/// The received `content` part, on disk, with the digests computed on the way.
pub struct Spooled {
    pub path: PathBuf,
    pub filename: String,
    pub size: u64,
    pub sha256: String,
    pub md5: String,
    pub blake2_256: String,
}

/// An upload as received: the form's text fields, and the file when one was sent.
pub struct Upload {
    pub form: HashMap<String, Vec<String>>,
    pub file: Option<Spooled>,
}

impl Cache {
    /// DC-4: a new private name must not shadow an upstream project unless the operator allows it.
    async fn check_shadowing(&self, project: &str, name: &ProjectName) -> Result<(), Error> {
        // Replicas: a name claimed through another one counts as claimed here (issue 13).
        self.private.refresh(&[project.to_string()], std::slice::from_ref(name), self.config.replica_lag).await?;
        if self.private.is_claimed(&[project.to_string()], name) || self.config.allow_shadowing.contains(name) {
            return Ok(());
        }
        // The router says who owns the name: the default upstream or an `[[upstreams]]` entry
        // (issue 22: with only `[[upstreams]]`, asking for the default one skipped the check).
        if self.upstreams.owner(name).is_none() {
            return Ok(());
        }
        match self.pages.get(name).await.map(|found| matches!(found.page.state, super::pages::PageState::Found(_))) {
            Ok(true) => Err(Error::Shadowing(format!(
                "`{name}` exists upstream; a private upload would hide it for every user of this project. An operator can allow it with allow_shadowing (LARDER_ALLOW_SHADOWING)"
            ))),
            Ok(false) => Ok(()),
            Err(e) => Err(Error::Unavailable(format!(
                "cannot check whether `{name}` exists upstream ({e}); retry later, or allow shadowing it"
            ))),
        }
    }

    /// Accepts an upload into `project`: Warehouse's checks in its order (standards §13.4),
    /// the shadowing rule (DC-4), then the commit, where nothing is stored before the file is
    /// accepted (issue 9).
    pub async fn upload(&self, project: &str, upload: Upload) -> Result<Added, Error> {
        // YK-04: an archived project takes no uploads (PEP 792).
        if let Some(status) = self.config.rules.for_project(project).status.as_ref().filter(|s| s.is_archived()) {
            let why = status.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default();
            return Err(Error::Blocked(format!("project `{project}` is archived and takes no uploads{why}")));
        }
        let Validated { name, file, kind, md } =
            validate(&upload.form, upload.file, self.config.archive_limits).await?;
        let attestations = attestations(&upload.form)?;
        self.check_shadowing(project, &name).await?;
        // PEP 658: always for wheels, for sdists only when their PKG-INFO is static (MD-05); the
        // bytes exactly as in the file (MD-04).
        let servable = match kind {
            DistKind::Wheel => true,
            DistKind::Sdist => md.is_static_sdist_metadata(),
        };
        let metadata_sha256 = servable.then(|| crate::digest::sha256_hex(&md.raw));
        let record = PrivateFile {
            filename: file.filename.clone(),
            version: md.version.clone(),
            sha256: file.sha256.clone(),
            md5: file.md5.clone(),
            blake2_256: file.blake2_256.clone(),
            size: file.size,
            upload_time: humantime::format_rfc3339_micros(self.clock.system_time()).to_string(),
            requires_python: md.requires_python.clone(),
            metadata_sha256: metadata_sha256.clone(),
            yanked: Default::default(),
            attestations,
        };
        // `add` checks, then calls this under its lock, and removes what it created if the
        // record cannot be written.
        let (store, bounded) = (&self.store, &self.bounded);
        let store_blobs = || async {
            // Pinned before they are stored: eviction can never take them in between.
            bounded.pin(&file.sha256).await;
            if let Some(sha) = &metadata_sha256 {
                bounded.pin(sha).await;
            }
            let mut created = Vec::new();
            if !store.has_blob(&file.sha256).await? {
                store.put_blob_file(&file.sha256, &file.path).await?;
                created.push(file.sha256.clone());
            }
            if let Some(sha) = &metadata_sha256
                && !store.has_blob(sha).await?
            {
                store.put_blob_bytes(sha, Bytes::from(md.raw.clone())).await?;
                created.push(sha.clone());
            }
            Ok(created)
        };
        // A pin taken for an upload that then failed stays: unpinning here could race with
        // another upload of the same bytes (pins are not counted). It only keeps a blob that
        // nothing lists from eviction.
        let added = self.private.add(project, &name, record, store_blobs).await?;
        if matches!(added, Added::New) {
            tracing::info!(project = %project, package = %name, file = %file.filename, sha256 = %file.sha256, "private upload stored");
        }
        Ok(added)
    }

    /// The claimed name in `project` that `file` (listed under `sha`) belongs to.
    fn private_file(&self, project: &str, sha: &str, file: &str) -> Result<ProjectName, Error> {
        let not_found =
            || Error::NotFound(format!("no private file `{file}` with sha256 `{sha}` in project `{project}`"));
        let (name, page) = self.private.claimed_by_file(&[project.to_string()], file).ok_or_else(not_found)?;
        if page.file(&FileKey::Sha256(sha.to_string())).is_none_or(|f| f.filename != file) {
            return Err(not_found());
        }
        Ok(name)
    }

    /// Sets or clears a private file's yank (PEP 592).
    pub async fn yank(&self, project: &str, sha: &str, file: &str, yanked: Yanked) -> Result<(), Error> {
        self.refresh_claims(&[project.to_string()], file, true).await?;
        let name = self.private_file(project, sha, file)?;
        self.private.set_yanked(project, &name, file, yanked).await.map_err(|e| match e {
            WriteError::NoSuchFile(_) => Error::NotFound(format!("no private file `{file}` in project `{project}`")),
            e => e.into(),
        })
    }

    /// Deletes a private file; its name stays claimed (DC-1). Blobs are shared: metadata Larder
    /// extracted for an upstream wheel stays, and the lock keeps uploads out meanwhile.
    pub async fn delete(&self, project: &str, sha: &str, file: &str) -> Result<(), Error> {
        self.refresh_claims(&[project.to_string()], file, true).await?;
        let name = self.private_file(project, sha, file)?;
        let (unused, _lock) = self.private.delete(project, &name, file).await.map_err(|e| match e {
            WriteError::NoSuchFile(_) => Error::NotFound(format!("no private file `{file}` in project `{project}`")),
            e => e.into(),
        })?;
        for sha in unused {
            if self.links.is_metadata(&sha) {
                continue;
            }
            self.bounded.unpin(&sha).await;
            self.hot_files.invalidate(&sha).await;
            self.store.delete_blob(&sha).await?;
        }
        tracing::info!(%project, package = %name, %file, "private file deleted");
        Ok(())
    }
}

/// The most bytes of attestations kept with one file (a sigstore-backed PEP 740 attestation is
/// a few KiB; a client sends one or two).
const MAX_ATTESTATIONS: usize = 64 * 1024;

/// PEP 740's `attestations` field (UPL-06): a JSON array of attestation objects, kept as sent.
/// Only its shape is checked; Larder verifies no signature (README, PROV-05).
fn attestations(form: &HashMap<String, Vec<String>>) -> Result<Option<serde_json::Value>, Error> {
    let Some(raw) = field(form, "attestations") else { return Ok(None) };
    let bad = |why: &str| Error::BadUpload(format!("Invalid attestations supplied during upload: {why}"));
    if raw.len() > MAX_ATTESTATIONS {
        return Err(bad(&format!("more than {} KiB", MAX_ATTESTATIONS / 1024)));
    }
    let value: serde_json::Value = serde_json::from_str(raw).map_err(|e| bad(&format!("not JSON ({e})")))?;
    let Some(list) = value.as_array() else { return Err(bad("not a JSON array")) };
    if !list.iter().all(serde_json::Value::is_object) {
        return Err(bad("each attestation must be a JSON object"));
    }
    Ok((!list.is_empty()).then_some(value))
}

fn field<'a>(form: &'a HashMap<String, Vec<String>>, name: &str) -> Option<&'a str> {
    form.get(name).and_then(|v| v.first()).map(|s| s.trim()).filter(|s| !s.is_empty())
}

/// An upload that passed `validate`: its project name, the file, what kind of distribution
/// its (once parsed) filename says it is, and the core metadata read from inside it.
pub(crate) struct Validated {
    pub name: ProjectName,
    pub file: Spooled,
    pub kind: DistKind,
    pub md: CoreMetadata,
}

/// Warehouse's checks, in its order (standards §13.4), with its wording where clients match on it.
pub(crate) async fn validate(
    form: &HashMap<String, Vec<String>>,
    content: Option<Spooled>,
    limits: ArchiveLimits,
) -> Result<Validated, Error> {
    fn bad(m: impl Into<String>) -> Error {
        Error::BadUpload(m.into())
    }
    match field(form, ":action") {
        None | Some("file_upload") => {}
        Some("submit" | "submit_pkg_info") => {
            return Err(Error::Gone(
                "Project pre-registration is no longer required or supported, upload your files instead.".into(),
            ));
        }
        Some("doc_upload") => {
            return Err(Error::Gone("Uploading documentation is no longer supported.".into()));
        }
        Some(other) => return Err(bad(format!("unknown :action `{other}`; expected file_upload"))),
    }
    if let Some(v) = field(form, "protocol_version")
        && v != "1"
    {
        return Err(bad("Unknown protocol version."));
    }
    let raw_name = field(form, "name").ok_or_else(|| bad("the form has no `name` field"))?;
    let name = ProjectName::parse(raw_name).map_err(|_| {
        bad(format!("'{raw_name}' is an invalid value for Name. Error: Start and end with a letter or numeral containing only ASCII numeric and '.', '_' and '-'."))
    })?;
    let version = field(form, "version").ok_or_else(|| bad("the form has no `version` field"))?;
    if !metadata::is_valid_version(version) {
        return Err(bad(format!("'{version}' is an invalid value for Version; use a PEP 440 version")));
    }
    let file = content.ok_or_else(|| bad("Upload payload does not have a file."))?;
    if !filename::is_safe(&file.filename) {
        return Err(bad("Cannot upload a file with '/' or '\\' or control characters in the name."));
    }
    let parsed = filename::parse(&file.filename).map_err(bad)?;
    match (field(form, "filetype"), parsed.kind) {
        (None, _) | (Some("bdist_wheel"), DistKind::Wheel) | (Some("sdist"), DistKind::Sdist) => {}
        (Some("bdist_wheel" | "sdist"), _) => {
            return Err(bad(format!("Invalid file extension: `{}` does not match filetype", file.filename)));
        }
        (Some(_), _) => return Err(bad("Invalid value for filetype. Error: Use a known file type.")),
    }
    // UPL-07: every supplied digest is checked against what Larder computed.
    let digests = [
        ("sha256_digest", &file.sha256, 64),
        ("md5_digest", &file.md5, 32),
        ("blake2_256_digest", &file.blake2_256, 64),
    ];
    for (key, actual, len) in digests {
        if let Some(given) = field(form, key) {
            if given.len() != len || !given.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad(format!("Invalid value for {key}. Error: Use a valid, hex-encoded digest.")));
            }
            if !given.eq_ignore_ascii_case(actual) {
                return Err(bad("The digest supplied does not match a digest calculated from the uploaded file."));
            }
        }
    }
    // EX-5: filename, form and METADATA agree.
    if parsed.name != name {
        return Err(bad(format!("Start filename for '{name}' with '{}'.", name.as_str().replace('-', "_"))));
    }
    if !metadata::same_version(&parsed.version, version) {
        return Err(bad(format!("Version in filename should be '{version}' not '{}'.", parsed.version)));
    }
    let (path, fname, kind) = (file.path.clone(), file.filename.clone(), parsed.kind);
    let md = tokio::task::spawn_blocking(move || match kind {
        DistKind::Wheel => metadata::read_wheel_metadata(&path, &limits),
        DistKind::Sdist => metadata::read_sdist_metadata(&path, &fname, &limits),
    })
    .await
    .unwrap_or_else(|e| Err(format!("Invalid distribution file: cannot be read ({e})")))
    .map_err(bad)?;
    if !metadata::names_match(&md.name, name.as_str()) {
        return Err(bad(format!("the metadata inside `{}` names `{}`, not `{name}`", file.filename, md.name)));
    }
    if !metadata::same_version(&md.version, version) {
        return Err(bad(format!(
            "the metadata inside `{}` has version `{}`, not `{version}`",
            file.filename, md.version
        )));
    }
    Ok(Validated { name, file, kind, md })
}
