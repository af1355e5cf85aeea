//! `files/<sha256>/<filename>` and its `.metadata`: the HTTP side. `Cache::file` and
//! `Cache::metadata` decide what may be served and where the bytes come from; this answers
//! with HDR-2's headers, HEAD, ETags and Range (HDR-3).

use std::sync::Arc;

use http::{HeaderMap, HeaderValue, Response, StatusCode, header};

use crate::cache::fill::{self, Fill, FillState};
use crate::cache::{FileAnswer, Outcome, Reader, Want};
use crate::index::{FileKey, filename};
use crate::server::error::HttpError;
use crate::server::{body, body::Body};
use crate::state::AppState;
use crate::store::Blob;

/// Files never change under their sha256 (HDR-2). A private project's files are for their
/// token holders only: no shared cache may keep them (issue 9).
const IMMUTABLE: &str = "public, max-age=365000000, immutable";
const IMMUTABLE_PRIVATE: &str = "private, max-age=365000000, immutable";

pub async fn file(
    state: &AppState,
    reader: &Reader,
    key: &str,
    name: &str,
    headers: &HeaderMap,
    head: bool,
) -> Result<Response<Body>, HttpError> {
    let key = FileKey::parse(key)
        .ok_or_else(|| HttpError::bad_request(format!("invalid sha256 `{key}`; expected 64 hex digits")))?;
    if let Some(dist_name) = name.strip_suffix(".provenance") {
        if !filename::is_safe(dist_name) {
            return Err(HttpError::bad_request(format!("invalid filename `{}`", name.escape_debug())));
        }
        return provenance(state, reader, &key, dist_name, headers, head).await;
    }
    let (dist_name, metadata) = match name.strip_suffix(".metadata") {
        Some(n) => (n, true),
        None => (name, false),
    };
    if !filename::is_safe(dist_name) {
        return Err(HttpError::bad_request(format!("invalid filename `{}`", name.escape_debug())));
    }
    // A Range or HEAD request on a miss is answered from the upstream without downloading the
    // whole file (issue 11: a resolver wants a wheel's tail, not the wheel). Conditional
    // requests take the whole-file path, which knows the stored file's validators.
    let conditional = headers.contains_key(header::IF_NONE_MATCH)
        || headers.contains_key(header::IF_MODIFIED_SINCE)
        || headers.contains_key(header::IF_RANGE);
    let want = if !metadata && !conditional && (head || headers.contains_key(header::RANGE)) {
        Want::Part
    } else {
        Want::Whole
    };
    let mut req = Request { state, headers, head, private: reader.private, modified: None };
    let mut answer = if metadata {
        state.cache.metadata(reader, &key, dist_name).await?
    } else {
        state.cache.file(reader, &key, dist_name, want).await?
    };
    if let FileAnswer::Upstream { url, sha256, size, upstream } = &answer {
        if let Some(mut resp) = req.serve_upstream(upstream, url, sha256.as_deref(), *size).await? {
            resp.extensions_mut().insert(Outcome::Miss);
            return Ok(resp);
        }
        // Not answerable by a passed-through range: download the file, as for a whole GET.
        answer = state.cache.file(reader, &key, dist_name, Want::Whole).await?;
    }
    let (mut resp, outcome) = match answer {
        FileAnswer::Stored { blob, sha256, outcome, modified } => {
            req.modified = modified;
            (req.serve_blob(blob, &sha256, outcome).await?, outcome)
        }
        FileAnswer::Filling { fill, sha256, modified } => {
            req.modified = modified;
            (req.serve_fill(fill, sha256.as_deref()).await?, Outcome::Miss)
        }
        FileAnswer::Upstream { .. } => {
            return Err(HttpError::new(StatusCode::INTERNAL_SERVER_ERROR, "a whole-file request was not downloaded"));
        }
    };
    resp.extensions_mut().insert(outcome); // for the request log and metrics
    Ok(resp)
}

/// `files/<sha256>/<file>.provenance` (PEP 740): the upstream's object, byte for byte, cached
/// like a page because it may change (PROV-03).
async fn provenance(
    state: &AppState,
    reader: &Reader,
    key: &FileKey,
    dist_name: &str,
    headers: &HeaderMap,
    head: bool,
) -> Result<Response<Body>, HttpError> {
    let (bytes, outcome) = state.cache.provenance(reader, key, dist_name).await?;
    let tag = format!("\"{}\"", &crate::digest::sha256_hex(&bytes)[..32]);
    let mut resp = if crate::server::respond::etag_matches(headers.get(header::IF_NONE_MATCH), &tag) {
        let mut r = Response::new(body::empty());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        let len = bytes.len() as u64;
        let mut r = Response::new(if head { body::empty() } else { body::full(bytes) });
        r.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        r
    };
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/vnd.pypi.integrity.v1+json"));
    h.insert(header::ETAG, HeaderValue::from_str(&tag).expect("hex"));
    let visibility = if reader.private { "private" } else { "public" };
    let cache_control = format!("max-age={}, {visibility}", state.config.index_ttl.as_secs());
    h.insert(header::CACHE_CONTROL, HeaderValue::from_str(&cache_control).expect("ascii"));
    h.insert("x-cache", HeaderValue::from_static(outcome.as_str()));
    resp.extensions_mut().insert(outcome);
    Ok(resp)
}

struct Request<'a> {
    state: &'a AppState,
    headers: &'a HeaderMap,
    head: bool,
    /// Reading this scope needs a token: no shared cache may keep its answers.
    private: bool,
    /// The file's upload time, when known: `Last-Modified` (HDR-2).
    modified: Option<u64>,
}

impl Request<'_> {
    /// HEAD or one Range of a file Larder does not have, from the upstream: the length by one
    /// HEAD (unless the page lists it), the bytes by one Range request, both coalesced and
    /// never stored. `None` when this cannot answer it (no usable single range, a range over
    /// `MAX_PASSTHROUGH_RANGE`, or an upstream without range support): the caller downloads
    /// the whole file instead.
    async fn serve_upstream(
        &self,
        upstream: &crate::upstream::Upstream,
        url: &str,
        sha: Option<&str>,
        size: Option<u64>,
    ) -> Result<Option<Response<Body>>, HttpError> {
        let len = match size {
            Some(n) => n,
            None => match self.state.cache.upstream_len(upstream, url).await {
                Ok(n) => n,
                Err(crate::cache::Error::Fill(e)) if matches!(&*e, fill::Error::Upstream(u) if !u.is_transient()) => {
                    return Ok(None);
                }
                Err(e) => return Err(e.into()),
            },
        };
        let mut resp = if self.head {
            let mut resp = Response::new(body::empty());
            resp.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(len));
            resp
        } else {
            let (start, end) = match parse_range(self.headers.get(header::RANGE).and_then(|v| v.to_str().ok()), len) {
                ByteRange::Part(start, end) if end - start < fill::MAX_PASSTHROUGH_RANGE => (start, end),
                ByteRange::Unsatisfiable => {
                    let mut resp = crate::server::respond::text(
                        StatusCode::RANGE_NOT_SATISFIABLE,
                        "requested range is outside the file",
                    );
                    let value = HeaderValue::from_str(&format!("bytes */{len}")).expect("ascii");
                    resp.headers_mut().insert(header::CONTENT_RANGE, value);
                    resp.headers_mut().insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
                    return Ok(Some(resp));
                }
                _ => return Ok(None),
            };
            let bytes = match self.state.cache.upstream_range(upstream, url, start, end).await {
                Ok(bytes) => bytes,
                // No range support, or an answer that does not fit: the whole file it is.
                Err(crate::cache::Error::Fill(e)) if matches!(&*e, fill::Error::Upstream(u) if !u.is_transient()) => {
                    return Ok(None);
                }
                Err(e) => return Err(e.into()),
            };
            let mut resp = Response::new(body::full(bytes));
            *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
            let h = resp.headers_mut();
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start + 1));
            let value = format!("bytes {start}-{end}/{len}");
            h.insert(header::CONTENT_RANGE, HeaderValue::from_str(&value).expect("ascii"));
            resp
        };
        if let Some(sha) = sha {
            resp.headers_mut().insert(header::ETAG, etag(sha));
        }
        file_headers(resp.headers_mut(), Outcome::Miss, self.private, self.modified);
        Ok(Some(resp))
    }

    /// Serves a download under way: streamed from the spool, or from the store once done.
    async fn serve_fill(&self, fill: Arc<Fill>, expected_sha: Option<&str>) -> Result<Response<Body>, HttpError> {
        let total = match fill.started().await {
            FillState::Failed(e) => return Err(HttpError::from(&*e)),
            FillState::Streaming { total, .. } => total,
            FillState::Verified { .. }
            | FillState::Done { .. }
            | FillState::Unstored { .. }
            | FillState::Connecting => None,
        };
        // HEAD needs only the headers: the length upstream announced and the hash the page
        // names (pip's lazy wheel and uv send HEAD first). The download goes on meanwhile.
        if self.head
            && let (Some(total), Some(sha)) = (total, expected_sha)
            && self.headers.get(header::IF_NONE_MATCH).is_none()
        {
            let mut resp = Response::new(body::empty());
            resp.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(total));
            resp.headers_mut().insert(header::ETAG, etag(sha));
            file_headers(resp.headers_mut(), Outcome::Miss, self.private, self.modified);
            return Ok(resp);
        }
        // One small Range: from the spool as soon as the download has those bytes (issue 11).
        if !self.head
            && let (Some(total), Some(range)) = (total, self.headers.get(header::RANGE).and_then(|v| v.to_str().ok()))
            && !self.headers.contains_key(header::IF_RANGE)
            && let ByteRange::Part(start, end) = parse_range(Some(range), total)
            && end - start < fill::MAX_PASSTHROUGH_RANGE
            && let Some(bytes) = fill.range(start, end).await
        {
            let mut resp = Response::new(body::full(bytes));
            *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
            let h = resp.headers_mut();
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start + 1));
            let value = format!("bytes {start}-{end}/{total}");
            h.insert(header::CONTENT_RANGE, HeaderValue::from_str(&value).expect("ascii"));
            if let Some(sha) = expected_sha {
                h.insert(header::ETAG, etag(sha));
            }
            file_headers(h, Outcome::Miss, self.private, self.modified);
            return Ok(resp);
        }
        // Other ranges need the whole verified file first (UP-11); so does a finished fill.
        let wants_whole = self.head || self.headers.contains_key(header::RANGE);
        if !wants_whole && let Some(stream) = fill.stream().await {
            let mut resp = Response::new(body::stream(stream));
            let h = resp.headers_mut();
            if let Some(total) = total {
                h.insert(header::CONTENT_LENGTH, HeaderValue::from(total));
            }
            if let Some(sha) = expected_sha {
                h.insert(header::ETAG, etag(sha));
            }
            file_headers(h, Outcome::Miss, self.private, self.modified);
            return Ok(resp);
        }
        match fill.finished().await {
            FillState::Done { sha256, .. } => {
                let blob = self.state.cache.stored(&sha256).await?.ok_or_else(|| {
                    HttpError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "the stored file vanished right after it was written",
                    )
                })?;
                self.serve_blob(blob, &sha256, Outcome::Miss).await
            }
            FillState::Failed(e) | FillState::Unstored { error: e, .. } => Err(HttpError::from(&*e)),
            _ => Err(HttpError::new(StatusCode::BAD_GATEWAY, "the download ended without a result; retry")),
        }
    }

    /// Serves a stored blob with HDR-2 headers, honouring If-None-Match and Range (HDR-3).
    async fn serve_blob(&self, blob: Blob, sha: &str, outcome: Outcome) -> Result<Response<Body>, HttpError> {
        let tag = format!("\"sha256-{sha}\"");
        if crate::server::respond::not_modified(self.headers, &tag, self.modified.unwrap_or(0)) {
            let mut resp = Response::new(body::empty());
            *resp.status_mut() = StatusCode::NOT_MODIFIED;
            resp.headers_mut().insert(header::ETAG, etag(sha));
            file_headers(resp.headers_mut(), outcome, self.private, self.modified);
            return Ok(resp);
        }
        let len = blob.len;
        let mut range = parse_range(self.headers.get(header::RANGE).and_then(|v| v.to_str().ok()), len);
        // If-Range: a range only applies to the representation the client already has.
        if let Some(if_range) = self.headers.get(header::IF_RANGE).and_then(|v| v.to_str().ok())
            && if_range.trim() != tag
        {
            range = ByteRange::Whole;
        }
        let (status, start, count) = match range {
            ByteRange::Whole => (StatusCode::OK, 0, len),
            ByteRange::Part(start, end) => (StatusCode::PARTIAL_CONTENT, start, end - start + 1),
            ByteRange::Unsatisfiable => {
                let mut resp = crate::server::respond::text(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    "requested range is outside the file",
                );
                resp.headers_mut()
                    .insert(header::CONTENT_RANGE, HeaderValue::from_str(&format!("bytes */{len}")).expect("ascii"));
                resp.headers_mut().insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
                return Ok(resp);
            }
        };
        let body = if self.head {
            body::empty()
        } else if let Some(bytes) = blob.bytes() {
            // In memory: one frame hyper can send together with the head.
            body::full(bytes.slice(start as usize..(start + count) as usize))
        } else {
            // The OS's words (paths, errno) go to the log only, like every store failure (issue 22).
            let stream = blob.stream(start, count).await.map_err(|source| {
                HttpError::from(crate::store::Error::Io { what: format!("the stored file {sha}"), source })
            })?;
            body::stream(stream)
        };
        let mut resp = Response::new(body);
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(count));
        if status == StatusCode::PARTIAL_CONTENT {
            let value = format!("bytes {start}-{}/{len}", start + count - 1);
            h.insert(header::CONTENT_RANGE, HeaderValue::from_str(&value).expect("ascii"));
        }
        h.insert(header::ETAG, etag(sha));
        file_headers(h, outcome, self.private, self.modified);
        Ok(resp)
    }
}

fn etag(sha: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("\"sha256-{sha}\"")).expect("hex is a valid header value")
}

/// HDR-2: octet-stream, ranges, immutable; never a Content-Encoding.
fn file_headers(h: &mut HeaderMap, outcome: Outcome, private: bool, modified: Option<u64>) {
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    if let Some(t) = modified.filter(|t| *t > 0) {
        h.insert(header::LAST_MODIFIED, crate::server::respond::last_modified(t));
    }
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if private {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static(IMMUTABLE_PRIVATE));
        h.insert(header::VARY, HeaderValue::from_static("Authorization"));
    } else {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static(IMMUTABLE));
    }
    h.insert("x-cache", HeaderValue::from_static(outcome.as_str()));
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ByteRange {
    Whole,
    /// Inclusive byte positions.
    Part(u64, u64),
    Unsatisfiable,
}

/// HDR-3: single and suffix ranges. Multi-range and malformed headers get the whole file
/// (RFC 9110 lets a server ignore Range).
pub(crate) fn parse_range(value: Option<&str>, len: u64) -> ByteRange {
    let Some(spec) = value.and_then(|v| v.trim().strip_prefix("bytes=")) else {
        return ByteRange::Whole;
    };
    if spec.contains(',') {
        return ByteRange::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return ByteRange::Whole;
    };
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        // Suffix: the last n bytes.
        let Ok(n) = last.parse::<u64>() else {
            return ByteRange::Whole;
        };
        if n == 0 || len == 0 {
            return ByteRange::Unsatisfiable;
        }
        return ByteRange::Part(len.saturating_sub(n), len - 1);
    }
    let Ok(start) = first.parse::<u64>() else {
        return ByteRange::Whole;
    };
    let end = if last.is_empty() {
        u64::MAX
    } else {
        match last.parse::<u64>() {
            Ok(e) if e >= start => e,
            _ => return ByteRange::Whole,
        }
    };
    if start >= len {
        return ByteRange::Unsatisfiable;
    }
    ByteRange::Part(start, end.min(len - 1))
}

#[cfg(test)]
mod tests {
    use super::{ByteRange::*, parse_range};

    #[test]
    fn hdr_3_ranges() {
        assert_eq!(parse_range(None, 10), Whole);
        assert_eq!(parse_range(Some("bytes=0-3"), 10), Part(0, 3));
        assert_eq!(parse_range(Some("bytes=5-"), 10), Part(5, 9));
        assert_eq!(parse_range(Some("bytes=-4"), 10), Part(6, 9));
        assert_eq!(parse_range(Some("bytes=-40"), 10), Part(0, 9));
        assert_eq!(parse_range(Some("bytes=8-100"), 10), Part(8, 9));
        assert_eq!(parse_range(Some("bytes=10-"), 10), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=-0"), 10), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=0-1,4-5"), 10), Whole);
        assert_eq!(parse_range(Some("bytes=5-2"), 10), Whole);
        assert_eq!(parse_range(Some("items=0-1"), 10), Whole);
    }
}
