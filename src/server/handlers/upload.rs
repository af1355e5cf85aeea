//! The legacy upload API (`POST`/`PUT …/packages/pypi`, standards §13), as twine, uv, poetry
//! and pdm send it.
//!
//! The multipart body is parsed as a stream: the `content` part goes to a spool file while its
//! sha256, md5 and blake2b-256 are computed, so an upload never sits in memory. Then, in
//! Warehouse's order, the form, the digests, the filename and the metadata inside the file are
//! checked; only a file that passes everything is committed to the store and recorded. Any
//! failure (or a dropped connection) deletes the spool file: nothing half-written is visible.

use std::collections::HashMap;
use std::path::PathBuf;

use blake2::Blake2b;
use blake2::digest::consts::U32;
use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderMap, Response, StatusCode, header};
use hyper::body::Incoming;
use md5::Md5;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::archive::ArchiveLimits;
use crate::auth;
use crate::cache::pages::PageState;
use crate::cache::private::{Added, PrivateFile, Rejected};
use crate::index::filename::DistKind;
use crate::index::{ProjectName, filename};
use crate::metadata::{self, CoreMetadata};
use crate::server::error::HttpError;
use crate::server::{body::Body, respond, route::Scope};
use crate::state::AppState;

/// Text fields larger than this are refused (a long description is a few hundred KB).
const MAX_TEXT_FIELD: u64 = 8 * 1024 * 1024;
/// All text fields together, and how many there may be: twine sends about 30 (issue 9).
const MAX_FORM_TEXT: usize = 16 * 1024 * 1024;
const MAX_FIELDS: usize = 1000;
/// One part's header section (multer reads it whole, however long).
const MAX_PART_HEADERS: u64 = 16 * 1024;

type Blake2b256 = Blake2b<U32>;

/// The received `content` part, on disk.
struct Spooled {
    path: PathBuf,
    filename: String,
    size: u64,
    sha256: String,
    md5: String,
    blake2_256: String,
}

/// Removes the spool file however the upload ends.
struct SpoolGuard(PathBuf);

impl Drop for SpoolGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

pub async fn upload(
    state: &AppState,
    scope: &Scope,
    headers: &HeaderMap,
    body: Incoming,
) -> Result<Response<Body>, HttpError> {
    let project = auth::authorize_project_write(&state.config, headers, scope)?;
    let limit = state.config.max_upload_bytes;
    let too_large = || {
        HttpError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("upload is larger than the limit of {} MiB (max_upload_mib)", limit / (1024 * 1024)),
        )
    };
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let boundary = multer::parse_boundary(content_type).map_err(|_| {
        HttpError::bad_request("expected a multipart/form-data body with a boundary (the legacy upload API)")
    })?;

    let spool_path = state.config.data_dir.join("spool").join(format!("upload-{:016x}.part", rand::random::<u64>()));
    let _guard = SpoolGuard(spool_path.clone());
    let idle = state.config.connection_limits.idle_timeout;
    let (form, content) = read_form(body, &boundary, limit, idle, &spool_path).await.map_err(|e| match e {
        FormError::TooLarge => too_large(),
        FormError::Bad(m) => HttpError::bad_request(m),
        FormError::Stalled(m) => HttpError::new(StatusCode::REQUEST_TIMEOUT, m),
        FormError::Io(e) => HttpError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot spool the upload: {e}")),
    })?;

    let (name, file, md) = validate(&form, content, state.config.archive_limits).await?;
    check_shadowing(state, project, &name).await?;

    // PEP 658: always for wheels, for sdists only when their PKG-INFO is static (MD-05); the
    // bytes exactly as in the file (MD-04).
    let kind = filename::parse(&file.filename).map(|f| f.kind).ok();
    let servable = match kind {
        Some(DistKind::Wheel) => true,
        Some(DistKind::Sdist) => md.is_static_sdist_metadata(),
        None => false,
    };
    let metadata_sha256 = servable.then(|| crate::digest::sha256_hex(&md.raw));
    let record = PrivateFile {
        filename: file.filename.clone(),
        version: md.version.clone(),
        sha256: file.sha256.clone(),
        md5: file.md5.clone(),
        blake2_256: file.blake2_256.clone(),
        size: file.size,
        upload_time: humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string(),
        requires_python: md.requires_python.clone(),
        metadata_sha256: metadata_sha256.clone(),
        yanked: Default::default(),
    };
    // Nothing is stored before the upload is accepted: `add` checks, then calls this under its
    // lock, and removes what it created if the record cannot be written (issue 9).
    let store = &state.store;
    let store_blobs = || async {
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
    let outcome = state.private.add(project, &name, record, store_blobs).await;
    if matches!(outcome, Ok(Added::New))
        && let Some(evictor) = &state.evictor
    {
        evictor.touch(&file.sha256, file.size);
    }
    match outcome {
        Ok(Added::New) => {
            tracing::info!(project = %project, package = %name, file = %file.filename, sha256 = %file.sha256, "private upload stored");
            Ok(respond::text(StatusCode::OK, "OK"))
        }
        Ok(Added::Identical) => Ok(respond::text(StatusCode::OK, "OK (identical file already uploaded)")),
        // UPL-08: "File already exists" in reason phrase and body, what --skip-existing matches.
        Err(e @ Rejected::Exists { .. }) => {
            Err(HttpError::bad_request(e.to_string()).with_reason("File already exists"))
        }
        Err(Rejected::Store(e)) => Err(e.into()),
        Err(e) => Err(HttpError::bad_request(e.to_string())),
    }
}

enum FormError {
    TooLarge,
    Bad(String),
    Stalled(String),
    Io(std::io::Error),
}

impl From<multer::Error> for FormError {
    fn from(e: multer::Error) -> FormError {
        match e {
            multer::Error::StreamSizeExceeded { .. } | multer::Error::FieldSizeExceeded { .. } => FormError::TooLarge,
            multer::Error::StreamReadFailed(inner) => match inner.downcast::<std::io::Error>() {
                Ok(io) if io.kind() == std::io::ErrorKind::TimedOut => FormError::Stalled(io.to_string()),
                Ok(io) => FormError::Bad(format!("cannot read the upload: {io}")),
                Err(other) => FormError::Bad(format!("cannot read the upload: {other}")),
            },
            e => FormError::Bad(format!("malformed multipart body: {e}")),
        }
    }
}

/// Bounds the header section of every multipart part, which multer buffers whole: it watches
/// the raw stream for each delimiter (`\r\n--boundary`) and the blank line that ends the part's
/// headers after it.
struct PartHeaderLimit {
    delimiter: Vec<u8>,
    /// Stream offset where the current header section began; `None` inside a part's body.
    headers_since: Option<u64>,
    /// The tail of the previous chunk, so that a pattern split across chunks is found.
    carry: Vec<u8>,
    /// Bytes seen so far.
    offset: u64,
}

impl PartHeaderLimit {
    fn new(boundary: &str) -> PartHeaderLimit {
        let delimiter = format!("\r\n--{boundary}").into_bytes();
        PartHeaderLimit { delimiter, headers_since: Some(0), carry: Vec::new(), offset: 0 }
    }

    fn feed(&mut self, chunk: &[u8]) -> Result<(), std::io::Error> {
        let mut buf = std::mem::take(&mut self.carry);
        let base = self.offset - buf.len() as u64;
        buf.extend_from_slice(chunk);
        self.offset += chunk.len() as u64;
        let mut pos = 0;
        let too_long =
            || std::io::Error::other(format!("a multipart part's headers are longer than {MAX_PART_HEADERS} bytes"));
        loop {
            match self.headers_since {
                Some(start) => match memchr::memmem::find(&buf[pos..], b"\r\n\r\n") {
                    Some(i) if base + (pos + i) as u64 - start > MAX_PART_HEADERS => return Err(too_long()),
                    Some(i) => {
                        pos += i + 4;
                        self.headers_since = None;
                    }
                    None if self.offset - start > MAX_PART_HEADERS => return Err(too_long()),
                    None => break,
                },
                None => match memchr::memmem::find(&buf[pos..], &self.delimiter) {
                    Some(i) => {
                        pos += i + self.delimiter.len();
                        self.headers_since = Some(base + pos as u64);
                    }
                    None => break,
                },
            }
        }
        let keep = buf.len().saturating_sub(self.delimiter.len()).max(pos);
        self.carry = buf[keep..].to_vec();
        Ok(())
    }
}

/// Reads every field; the `content` file goes to `spool_path`.
async fn read_form(
    body: Incoming,
    boundary: &str,
    limit: u64,
    idle: std::time::Duration,
    spool_path: &PathBuf,
) -> Result<(HashMap<String, Vec<String>>, Option<Spooled>), FormError> {
    let constraints = multer::Constraints::new()
        .size_limit(multer::SizeLimit::new().whole_stream(limit).per_field(MAX_TEXT_FIELD).for_field("content", limit));
    let mut headers = PartHeaderLimit::new(boundary);
    let stream = crate::server::body::incoming_with_idle_timeout(body, idle)
        .map(move |chunk| chunk.and_then(|bytes| headers.feed(&bytes).map(|()| bytes)));
    let mut multipart = multer::Multipart::with_constraints(stream, boundary, constraints);
    let mut form: HashMap<String, Vec<String>> = HashMap::new();
    let (mut fields, mut text_bytes) = (0usize, 0usize);
    let mut content = None;
    while let Some(mut field) = multipart.next_field().await? {
        fields += 1;
        if fields > MAX_FIELDS {
            return Err(FormError::Bad(format!("the upload has more than {MAX_FIELDS} form fields")));
        }
        let name = field.name().unwrap_or_default().to_string();
        if name == "content" {
            if content.is_some() {
                return Err(FormError::Bad("the upload has more than one `content` part".into()));
            }
            let Some(filename) = field.file_name().map(str::to_string) else {
                return Err(FormError::Bad("the `content` part has no filename".into()));
            };
            if let Some(parent) = spool_path.parent() {
                tokio::fs::create_dir_all(parent).await.map_err(FormError::Io)?;
            }
            let mut file = tokio::fs::File::create(spool_path).await.map_err(FormError::Io)?;
            let (mut sha, mut md5, mut blake) = (Sha256::new(), Md5::new(), Blake2b256::new());
            let mut size = 0u64;
            while let Some(chunk) = field.chunk().await? {
                sha.update(&chunk);
                md5.update(&chunk);
                blake.update(&chunk);
                size += chunk.len() as u64;
                file.write_all(&chunk).await.map_err(FormError::Io)?;
            }
            file.flush().await.map_err(FormError::Io)?;
            content = Some(Spooled {
                path: spool_path.clone(),
                filename,
                size,
                sha256: hex::encode(sha.finalize()),
                md5: hex::encode(md5.finalize()),
                blake2_256: hex::encode(blake.finalize()),
            });
        } else if field.file_name().is_some() && name != "gpg_signature" {
            return Err(FormError::Bad(format!("`{name}`: Should not be a tuple.")));
        } else if name == "gpg_signature" {
            while field.chunk().await?.is_some() {} // ignored, as Warehouse does
        } else {
            let text = field.text().await?;
            text_bytes += text.len() + name.len();
            if text_bytes > MAX_FORM_TEXT {
                return Err(FormError::Bad(format!("the upload's text fields exceed {MAX_FORM_TEXT} bytes in all")));
            }
            form.entry(name).or_default().push(text);
        }
    }
    Ok((form, content))
}

fn field<'a>(form: &'a HashMap<String, Vec<String>>, name: &str) -> Option<&'a str> {
    form.get(name).and_then(|v| v.first()).map(|s| s.trim()).filter(|s| !s.is_empty())
}

/// Warehouse's checks, in its order (standards §13.4), with its wording where clients match on it.
async fn validate(
    form: &HashMap<String, Vec<String>>,
    content: Option<Spooled>,
    limits: ArchiveLimits,
) -> Result<(ProjectName, Spooled, CoreMetadata), HttpError> {
    fn bad(m: impl Into<String>) -> HttpError {
        HttpError::bad_request(m)
    }
    match field(form, ":action") {
        None | Some("file_upload") => {}
        Some("submit" | "submit_pkg_info") => {
            return Err(HttpError::new(
                StatusCode::GONE,
                "Project pre-registration is no longer required or supported, upload your files instead.",
            ));
        }
        Some("doc_upload") => {
            return Err(HttpError::new(StatusCode::GONE, "Uploading documentation is no longer supported."));
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
    Ok((name, file, md))
}

/// DC-4: a new private name must not shadow an upstream project unless the operator allows it.
async fn check_shadowing(state: &AppState, project: &str, name: &ProjectName) -> Result<(), HttpError> {
    if state.private.is_claimed(&[project.to_string()], name) || state.config.allow_shadowing.contains(name) {
        return Ok(());
    }
    if state.config.upstream.is_none() {
        return Ok(());
    }
    match state.pages.get(name).await {
        Ok((page, _)) if matches!(page.state, PageState::Found(_)) => Err(HttpError::new(
            StatusCode::FORBIDDEN,
            format!(
                "`{name}` exists upstream; a private upload would hide it for every user of this project. An operator can allow it with allow_shadowing (LARDER_ALLOW_SHADOWING)"
            ),
        )),
        Ok(_) => Ok(()),
        Err(e) => Err(HttpError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("cannot check whether `{name}` exists upstream ({e}); retry later, or allow shadowing it"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_all(chunks: &[&[u8]]) -> Result<(), std::io::Error> {
        let mut limit = PartHeaderLimit::new("B");
        chunks.iter().try_for_each(|c| limit.feed(c))
    }

    #[test]
    fn part_headers_are_bounded_wherever_the_chunks_split() {
        let body = [0u8; 100_000];
        let part = |headers: &str| {
            [b"--B\r\n".as_slice(), headers.as_bytes(), b"\r\n\r\n", &body, b"\r\n--B\r\nX: y\r\n\r\nv\r\n--B--\r\n"]
                .concat()
        };
        let normal = part("Content-Disposition: form-data; name=\"content\"; filename=\"x.whl\"");
        for split in [1, 2, 3, 4, 5, 7, 100, 8192, normal.len()] {
            let chunks: Vec<&[u8]> = normal.chunks(split).collect();
            assert!(feed_all(&chunks).is_ok(), "split {split}");
        }
        let endless = part(&format!("X-Long: {}", "a".repeat(MAX_PART_HEADERS as usize)));
        for split in [3, 4096, endless.len()] {
            let chunks: Vec<&[u8]> = endless.chunks(split).collect();
            assert!(feed_all(&chunks).is_err(), "split {split}");
        }
        // A body of any size with no delimiter in it is fine: only headers are bounded.
        assert!(feed_all(&[b"--B\r\nA: b\r\n\r\n", &[b'x'; 1 << 20]]).is_ok());
    }
}
