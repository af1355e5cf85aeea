//! `files/<sha256>/<filename>` and its `.metadata`: served from the store, filled from upstream
//! on a miss. Every answer carries HDR-2's headers; Range follows HDR-3.

use std::sync::Arc;

use http::{HeaderMap, HeaderValue, Response, StatusCode, header};

use crate::auth;
use crate::cache::fill::{Fill, FillRequest, FillState};
use crate::cache::private::Visibility;
use crate::index::RenderedPage;
use crate::index::{FileKey, ProjectName, filename};
use crate::server::error::HttpError;
use crate::server::{body, body::Body, route::Scope};
use crate::state::AppState;
use crate::store::Blob;

/// Files never change under their sha256 (HDR-2). A private project's files are for their
/// token holders only: no shared cache may keep them (issue 9).
const IMMUTABLE: &str = "public, max-age=365000000, immutable";
const IMMUTABLE_PRIVATE: &str = "private, max-age=365000000, immutable";

pub async fn file(
    state: &AppState,
    scope: &Scope,
    key: &str,
    name: &str,
    headers: &HeaderMap,
    head: bool,
) -> Result<Response<Body>, HttpError> {
    let key = FileKey::parse(key)
        .ok_or_else(|| HttpError::bad_request(format!("invalid sha256 `{key}`; expected 64 hex digits")))?;
    let (dist_name, metadata) = match name.strip_suffix(".metadata") {
        Some(n) => (n, true),
        None => (name, false),
    };
    if !filename::is_safe(dist_name) {
        return Err(HttpError::bad_request(format!("invalid filename `{}`", name.escape_debug())));
    }
    let private = auth::read_is_private(&state.config, scope);
    let req = Request { state, headers, head, projects: auth::scope_projects(&state.config, scope), private };
    if metadata {
        return req.metadata(&key, dist_name).await;
    }

    // The file route serves only what a page visible here lists (issue 9): a blob that no page
    // lists (a record's contents, an upload that was refused) is not served, even by its hash.
    // DC-2: a name claimed by a private upload is served from its private files alone.
    if let Some(page) = req.claimed_name(dist_name) {
        let sha = page
            .file(&key)
            .filter(|f| f.filename == dist_name)
            .and_then(|f| f.sha256().map(str::to_string))
            .ok_or_else(|| not_listed(dist_name, &key))?;
        return match req.serve_stored(&sha, "HIT").await? {
            Some(resp) => Ok(resp),
            None => Err(HttpError::not_found(format!(
                "`{dist_name}` is a private file missing from the store; upload it again"
            ))),
        };
    }
    let sha = match &key {
        FileKey::Sha256(sha) => Some(sha.clone()),
        // The alias body becomes a path: only a valid sha256 is used (issue 9).
        FileKey::UrlDigest(digest) => state
            .store
            .get_record(&alias_record(digest))
            .await?
            .and_then(|v| crate::cache::records::decode_alias(&v).ok()),
    };
    if let Some(sha) = &sha {
        // Another project's private file is not found from here, even if an upstream page lists it.
        if matches!(state.private.visibility(sha, &req.projects), Visibility::Hidden) {
            return Err(not_listed(dist_name, &key));
        }
        // Hit: an upstream page Larder has lists it; no upstream request.
        if state.pages.is_listed_locally(&key, dist_name).await
            && let Some(resp) = req.serve_stored(sha, "HIT").await?
        {
            return Ok(resp);
        }
    }

    // Miss: find the file on its project's page, then fill.
    let Some(fills) = &state.fills else {
        let why = if state.config.offline { "Larder is offline" } else { "no upstream is configured" };
        return Err(HttpError::not_found(format!("{why} and `{dist_name}` is not in the cache")));
    };
    let (project, dist) = state
        .pages
        .find_file(&key, dist_name)
        .await
        .map_err(|e| HttpError::from(&*e))?
        .ok_or_else(|| not_listed(dist_name, &key))?;
    if let Some(sha) = dist.sha256() {
        if matches!(state.private.visibility(sha, &req.projects), Visibility::Hidden) {
            return Err(not_listed(dist_name, &key));
        }
        // Listed only now (the page was refreshed), and already stored.
        if let Some(resp) = req.serve_stored(sha, "HIT").await? {
            return Ok(resp);
        }
    }
    let fill = fills.join(FillRequest {
        key: key.to_string(),
        url: dist.url.clone(),
        expected_sha256: dist.sha256().map(str::to_string),
        expected_size: dist.size,
        alias_record: match &key {
            FileKey::UrlDigest(digest) => Some(alias_record(digest)),
            FileKey::Sha256(_) => None,
        },
        extract_metadata_for: state.pages.links().should_extract(&dist).then(|| (project, dist.filename.clone())),
    });
    req.serve_fill(fill, dist.sha256()).await
}

fn not_listed(dist_name: &str, key: &FileKey) -> HttpError {
    HttpError::not_found(format!("`{dist_name}` with key `{key}` is not listed on its project's page"))
}

fn alias_record(url_digest: &str) -> String {
    crate::cache::records::RecordKey::Alias(url_digest.to_string()).to_string()
}

struct Request<'a> {
    state: &'a AppState,
    headers: &'a HeaderMap,
    head: bool,
    /// The projects whose private files this scope shows.
    projects: Vec<String>,
    /// Reading this scope needs a token: no shared cache may keep its answers.
    private: bool,
}

impl Request<'_> {
    /// Serves a stored blob (from the hot-file memory when small), or `None` when it is not stored.
    async fn serve_stored(&self, sha: &str, cache: &'static str) -> Result<Option<Response<Body>>, HttpError> {
        let state = self.state;
        if let Some(bytes) = state.hot_files.get(sha).await {
            if let Some(evictor) = &state.evictor {
                evictor.touch(sha, bytes.len() as u64);
            }
            return self.serve_blob(Blob::in_memory(bytes), sha, cache).await.map(Some);
        }
        let Some(blob) = state.store.open_blob(sha).await? else { return Ok(None) };
        if let Some(evictor) = &state.evictor {
            evictor.touch(sha, blob.len);
        }
        if let Some(bytes) = blob.bytes() {
            state.hot_files.insert(sha.to_string(), bytes.clone()).await;
        }
        self.serve_blob(blob, sha, cache).await.map(Some)
    }

    /// The private page of the project `dist_name` belongs to, when that name is claimed here.
    fn claimed_name(&self, dist_name: &str) -> Option<Arc<RenderedPage>> {
        filename::candidate_projects(dist_name)
            .iter()
            .filter_map(|n| ProjectName::parse(n).ok())
            .find_map(|n| self.state.private.page(&self.projects, &n))
    }

    /// PEP 658 metadata: served only with the hash the page advertised (MD-03, MD-04).
    async fn metadata(&self, key: &FileKey, dist_name: &str) -> Result<Response<Body>, HttpError> {
        let no_metadata = || HttpError::not_found(format!("no core metadata is known for `{dist_name}`"));
        if !matches!(key, FileKey::Sha256(_)) {
            return Err(no_metadata());
        }
        if let Some(page) = self.claimed_name(dist_name) {
            let md_sha = page.file(key).filter(|f| f.filename == dist_name).and_then(|f| f.core_metadata.clone());
            let md_sha = md_sha.ok_or_else(no_metadata)?;
            let blob = self.state.store.open_blob(&md_sha).await?.ok_or_else(no_metadata)?;
            return self.serve_blob(blob, &md_sha, "HIT").await;
        }
        let (_, dist) = self
            .state
            .pages
            .find_file(key, dist_name)
            .await
            .map_err(|e| HttpError::from(&*e))?
            .ok_or_else(no_metadata)?;
        let md_sha = dist.core_metadata.clone().ok_or_else(no_metadata)?;
        // An upstream page may name any hash as its metadata: never another project's private file.
        if matches!(self.state.private.visibility(&md_sha, &self.projects), Visibility::Hidden) {
            return Err(no_metadata());
        }
        if let Some(blob) = self.state.store.open_blob(&md_sha).await? {
            return self.serve_blob(blob, &md_sha, "HIT").await;
        }
        let fills = self.state.fills.as_ref().ok_or_else(no_metadata)?;
        // MD-08: the upstream serves metadata next to the file; its hash is checked on fill.
        let fill = fills.join(FillRequest {
            key: md_sha.clone(),
            url: crate::upstream::metadata_url(&dist.url),
            expected_sha256: Some(md_sha.clone()),
            expected_size: None,
            alias_record: None,
            extract_metadata_for: None,
        });
        self.serve_fill(fill, Some(&md_sha)).await
    }

    /// Serves a download under way: streamed from the spool, or from the store once done.
    async fn serve_fill(&self, fill: Arc<Fill>, expected_sha: Option<&str>) -> Result<Response<Body>, HttpError> {
        let total = match fill.started().await {
            FillState::Failed(e) => return Err(HttpError::from(&*e)),
            FillState::Streaming { total, .. } => total,
            FillState::Verified { .. } | FillState::Done { .. } | FillState::Connecting => None,
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
            file_headers(resp.headers_mut(), "MISS", self.private);
            return Ok(resp);
        }
        // Range needs the whole verified file first (UP-11); so does a finished fill.
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
            file_headers(h, "MISS", self.private);
            return Ok(resp);
        }
        match fill.finished().await {
            FillState::Done { sha256, .. } => {
                let blob = self.state.store.open_blob(&sha256).await?.ok_or_else(|| {
                    HttpError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "the stored file vanished right after it was written",
                    )
                })?;
                self.serve_blob(blob, &sha256, "MISS").await
            }
            FillState::Failed(e) => Err(HttpError::from(&*e)),
            _ => Err(HttpError::new(StatusCode::BAD_GATEWAY, "the download ended without a result; retry")),
        }
    }

    /// Serves a stored blob with HDR-2 headers, honouring If-None-Match and Range (HDR-3).
    async fn serve_blob(&self, blob: Blob, sha: &str, cache: &'static str) -> Result<Response<Body>, HttpError> {
        let tag = format!("\"sha256-{sha}\"");
        if crate::server::respond::etag_matches(self.headers.get(header::IF_NONE_MATCH), &tag) {
            let mut resp = Response::new(body::empty());
            *resp.status_mut() = StatusCode::NOT_MODIFIED;
            resp.headers_mut().insert(header::ETAG, etag(sha));
            file_headers(resp.headers_mut(), cache, self.private);
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
            let stream = blob.stream(start, count).await.map_err(|e| {
                HttpError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot read stored file: {e}"))
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
        file_headers(h, cache, self.private);
        Ok(resp)
    }
}

fn etag(sha: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("\"sha256-{sha}\"")).expect("hex is a valid header value")
}

/// HDR-2: octet-stream, ranges, immutable; never a Content-Encoding.
fn file_headers(h: &mut HeaderMap, cache: &'static str, private: bool) {
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if private {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static(IMMUTABLE_PRIVATE));
        h.insert(header::VARY, HeaderValue::from_static("Authorization"));
    } else {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static(IMMUTABLE));
    }
    h.insert("x-cache", HeaderValue::from_static(cache));
}

#[derive(Debug, PartialEq, Eq)]
enum ByteRange {
    Whole,
    /// Inclusive byte positions.
    Part(u64, u64),
    Unsatisfiable,
}

/// HDR-3: single and suffix ranges. Multi-range and malformed headers get the whole file
/// (RFC 9110 lets a server ignore Range).
fn parse_range(value: Option<&str>, len: u64) -> ByteRange {
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
