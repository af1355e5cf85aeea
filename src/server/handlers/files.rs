//! `files/<sha256>/<filename>`, its `.metadata` and `.provenance`: the HTTP side. The engine
//! (`Cache::read_file`) decides what may be served and where the bytes come from; `respond`
//! answers with HDR-2's headers, HEAD, ETags and Range (HDR-3).

use http::{HeaderMap, HeaderValue, Response, header};

use crate::byte_range::RangeHeader;
use crate::cache::{FileRead, Reader};
use crate::index::{FileKey, filename};
use crate::server::error::HttpError;
use crate::server::respond::{self, FileAsk};
use crate::server::{body, body::Body};
use crate::state::AppState;

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
    let bad_name = || HttpError::bad_request(format!("invalid filename `{}`", name.escape_debug()));
    if let Some(dist_name) = name.strip_suffix(".provenance") {
        if !filename::is_safe(dist_name) {
            return Err(bad_name());
        }
        return provenance(state, reader, &key, dist_name, headers, head).await;
    }
    let (dist_name, metadata) = match name.strip_suffix(".metadata") {
        Some(n) => (n, true),
        None => (name, false),
    };
    if !filename::is_safe(dist_name) {
        return Err(bad_name());
    }
    let read = FileRead {
        key: &key,
        dist_name,
        metadata,
        head,
        range: RangeHeader::of(headers.get(header::RANGE)),
        if_none_match: headers.contains_key(header::IF_NONE_MATCH),
        if_modified_since: headers.contains_key(header::IF_MODIFIED_SINCE),
        if_range: headers.contains_key(header::IF_RANGE),
    };
    let reply = state.cache.read_file(reader, &read).await?;
    respond::file(reply, &FileAsk { headers, head, private: reader.private }).await
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
    let mut resp = respond::if_current(headers, &tag, 0).unwrap_or_else(|| {
        let len = bytes.len() as u64;
        let mut r = Response::new(if head { body::empty() } else { body::full(bytes) });
        r.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        r
    });
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/vnd.pypi.integrity.v1+json"));
    h.insert(header::ETAG, HeaderValue::from_str(&tag).expect("hex"));
    let visibility = if reader.private { "private" } else { "public" };
    let cache_control = format!("max-age={}, {visibility}", state.config.index_ttl.as_secs());
    h.insert(header::CACHE_CONTROL, HeaderValue::from_str(&cache_control).expect("ascii"));
    Ok(respond::with_outcome(resp, outcome))
}
