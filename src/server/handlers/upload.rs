//! The legacy upload API (`POST`/`PUT …/packages/pypi`, standards §13), as twine, uv, poetry
//! and pdm send it.
//!
//! The HTTP side: the multipart body is parsed as a stream, the `content` part goes to a spool
//! file while its sha256, md5 and blake2b-256 are computed, so an upload never sits in memory;
//! then `Cache::upload` checks and commits it. Any failure (or a dropped connection) deletes
//! the spool file: nothing half-written is visible.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;

use blake2::Blake2b;
use blake2::digest::consts::U32;
use futures_util::StreamExt;
use http::{HeaderMap, Response, header};
use hyper::body::Incoming;
use md5::Md5;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::audit;
use crate::auth::Writer;
use crate::cache::{Added, Spooled, Upload};
use crate::server::error::HttpError;
use crate::server::{body::Body, respond};
use crate::state::AppState;

/// Text fields larger than this are refused (a long description is a few hundred KB).
const MAX_TEXT_FIELD: u64 = 8 * 1024 * 1024;
/// All text fields together, and how many there may be: twine sends about 30 (issue 9).
const MAX_FORM_TEXT: usize = 16 * 1024 * 1024;
const MAX_FIELDS: usize = 1000;
/// One part's header section (multer reads it whole, however long).
const MAX_PART_HEADERS: u64 = 16 * 1024;

type Blake2b256 = Blake2b<U32>;

/// Removes the spool file however the upload ends.
struct SpoolGuard(PathBuf);

impl Drop for SpoolGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// At most this much of a refused body is read (and discarded) so the client gets its answer.
const DRAIN_LIMIT: u64 = 32 * 1024 * 1024;

/// Reads and discards a refused request's body: to its end, `DRAIN_LIMIT` bytes, or the first
/// pause longer than `idle`, whichever comes first. Nothing is kept.
async fn drain(mut body: Incoming, idle: std::time::Duration) {
    use http_body_util::BodyExt;
    let mut left = DRAIN_LIMIT;
    while left > 0 {
        match tokio::time::timeout(idle, body.frame()).await {
            Ok(Some(Ok(frame))) => {
                left = left.saturating_sub(frame.data_ref().map_or(0, |d| d.len() as u64));
            }
            _ => break,
        }
    }
}

/// Receives and commits an upload, and records it in the audit log whichever way it ends.
pub async fn upload(
    state: &AppState,
    writer: &Writer<'_>,
    peer: IpAddr,
    headers: &HeaderMap,
    body: Incoming,
) -> Result<Response<Body>, HttpError> {
    let mut received = None;
    let result = receive(state, writer.project, headers, body, &mut received).await;
    let (outcome, reason) = match &result {
        Ok(_) => (audit::Outcome::Ok, None),
        Err(e) => e.audit_outcome(),
    };
    let mut event = audit::Event::new(audit::Action::Upload, writer.who.clone())
        .project(writer.project)
        .peer(Some(peer))
        .ended(outcome, reason);
    if let Some((filename, sha256)) = &received {
        event = event.file(filename, Some(sha256));
    }
    state.cache.audit().record(event);
    result
}

/// The upload itself; `received` is set to the file's name and sha256 once it is spooled.
async fn receive(
    state: &AppState,
    project: &str,
    headers: &HeaderMap,
    body: Incoming,
    received: &mut Option<(String, String)>,
) -> Result<Response<Body>, HttpError> {
    let limit = state.config.max_upload_bytes;
    let too_large = || HttpError::upload_too_large(limit);
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if let Some(n) = declared.filter(|&n| n > limit) {
        // A client still sending its body would see a broken pipe, not this answer: read and
        // discard what it sends first, within bounds (twine then prints the 413's reason).
        if n - limit <= DRAIN_LIMIT {
            drain(body, state.config.connection_limits.idle_timeout).await;
        }
        return Err(too_large());
    }
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let boundary = multer::parse_boundary(content_type).map_err(|_| {
        HttpError::bad_request("expected a multipart/form-data body with a boundary (the legacy upload API)")
    })?;

    let spool_path = state.config.spool_dir().join(format!("upload-{:016x}.part", rand::random::<u64>()));
    let _guard = SpoolGuard(spool_path.clone());
    let idle = state.config.connection_limits.idle_timeout;
    let (form, file) = read_form(body, &boundary, limit, idle, &spool_path).await.map_err(|e| match e {
        FormError::TooLarge => too_large(),
        FormError::Bad(m) => HttpError::bad_request(m),
        FormError::Stalled(m) => HttpError::stalled(m),
        FormError::Io(e) => HttpError::spool_failed(e),
    })?;
    if let Some(f) = &file {
        *received = Some((f.filename.clone(), f.sha256.clone()));
    }
    match state.cache.upload(project, Upload { form, file }).await? {
        Added::New => Ok(respond::ok_text("OK")),
        Added::Identical => Ok(respond::ok_text("OK (identical file already uploaded)")),
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
pub(crate) struct PartHeaderLimit {
    delimiter: Vec<u8>,
    /// Stream offset where the current header section began; `None` inside a part's body.
    headers_since: Option<u64>,
    /// The tail of the previous chunk, so that a pattern split across chunks is found.
    carry: Vec<u8>,
    /// Bytes seen so far.
    offset: u64,
}

impl PartHeaderLimit {
    pub(crate) fn new(boundary: &str) -> PartHeaderLimit {
        let delimiter = format!("\r\n--{boundary}").into_bytes();
        PartHeaderLimit { delimiter, headers_since: Some(0), carry: Vec::new(), offset: 0 }
    }

    pub(crate) fn feed(&mut self, chunk: &[u8]) -> Result<(), std::io::Error> {
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
    let stream = incoming_with_idle_timeout(body, idle)
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

/// A request body as a stream of data chunks that fails with `TimedOut` when no bytes arrive
/// for `idle`: a client that stalls halfway through an upload does not hold it forever.
fn incoming_with_idle_timeout(
    body: hyper::body::Incoming,
    idle: std::time::Duration,
) -> impl futures_util::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send {
    futures_util::stream::unfold(Some(body), move |body| async move {
        let mut body = body?;
        loop {
            match tokio::time::timeout(idle, http_body_util::BodyExt::frame(&mut body)).await {
                Err(_) => {
                    let e = std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("no request body bytes for {}s (idle_timeout)", idle.as_secs()),
                    );
                    return Some((Err(e), None));
                }
                Ok(None) => return None,
                Ok(Some(Err(e))) => return Some((Err(std::io::Error::other(e)), None)),
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        return Some((Ok(data), Some(body)));
                    }
                }
            }
        }
    })
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
