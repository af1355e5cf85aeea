//! Responses: every status a handler answers with is chosen here or in `error` (the one
//! place a failure becomes a status). Handlers translate a request into an engine call and
//! its answer into one of these.

use http::{HeaderMap, HeaderValue, Response, StatusCode, header};

use super::body::{self, Body};
use super::error::HttpError;
use crate::byte_range::ByteRange;
use crate::cache::{FileBody, FileReply, Outcome};

/// A plain-text, one-line answer: errors, and anything a person reads in a terminal.
pub fn text(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    let mut message = message.into();
    message.push('\n');
    let mut resp = Response::new(body::full(message));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    // Messages echo names from the request: never let a browser sniff them into HTML.
    resp.headers_mut().insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    resp
}

/// A plain-text 200 (health checks, a command's report).
pub fn ok_text(message: impl Into<String>) -> Response<Body> {
    text(StatusCode::OK, message)
}

/// A JSON 200 (OSV's API, trusted publishing).
pub fn ok_json(text: String) -> Response<Body> {
    json(StatusCode::OK, text)
}

/// 503 with a reason, for a probe that says "not now" (readiness).
pub fn unavailable(message: impl Into<String>) -> Response<Body> {
    text(StatusCode::SERVICE_UNAVAILABLE, message)
}

/// 404 with a reason.
pub fn not_found(message: impl Into<String>) -> Response<Body> {
    text(StatusCode::NOT_FOUND, message)
}

/// 404 in the JSON shape an API's clients parse (OSV).
pub fn not_found_json(text: String) -> Response<Body> {
    json(StatusCode::NOT_FOUND, text)
}

/// A redirect for people (the UI's old addresses).
pub fn see_other(location: &'static str) -> Response<Body> {
    let mut resp = text(StatusCode::SEE_OTHER, format!("see {location}"));
    resp.headers_mut().insert(header::LOCATION, HeaderValue::from_static(location));
    resp
}

/// 405 with the methods the route takes.
pub fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut resp = text(StatusCode::METHOD_NOT_ALLOWED, format!("method not allowed; use {allow}"));
    resp.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allow));
    resp
}

/// 304: the client's copy is current. The caller adds the validators (HDR-1 repeats them).
pub fn unchanged() -> Response<Body> {
    let mut resp = Response::new(body::empty());
    *resp.status_mut() = StatusCode::NOT_MODIFIED;
    resp
}

/// The answer a client's `If-None-Match` / `If-Modified-Since` earns: `Some(304)` when its
/// copy is current.
pub fn if_current(headers: &HeaderMap, etag: &str, modified_unix: u64) -> Option<Response<Body>> {
    not_modified(headers, etag, modified_unix).then(unchanged)
}

/// Marks how an answer was produced; `service` sends it as `X-Cache` and counts it.
pub fn with_outcome(mut resp: Response<Body>, outcome: Outcome) -> Response<Body> {
    resp.extensions_mut().insert(outcome);
    resp
}

/// 406 (NEG-05): nothing acceptable; still with `Vary: Accept` (NEG-07).
pub fn not_acceptable(message: &str) -> Response<Body> {
    let mut resp = text(StatusCode::NOT_ACCEPTABLE, message);
    resp.headers_mut().insert(header::VARY, HeaderValue::from_static("Accept"));
    resp
}

/// A page for people (`/-/ui/`): 200, or 404 when `found` is false; never kept by a shared
/// cache, never framed, no script from elsewhere.
pub fn for_people(found: bool, content: Body, private: bool) -> Response<Body> {
    let mut resp = Response::new(content);
    if !found {
        *resp.status_mut() = StatusCode::NOT_FOUND;
    }
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    let cache_control = if private { "private, no-cache" } else { "no-cache" };
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache_control));
    h.insert(header::VARY, HeaderValue::from_static("Authorization"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"),
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    resp
}

/// A JSON answer (OSV's API, trusted publishing).
pub fn json(status: StatusCode, text: String) -> Response<Body> {
    let mut resp = Response::new(body::full(text));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// 404 for a project the upstream does not have (the simple API and the JSON API say the
/// same); clients may cache it for `not_found_ttl` only (UP-09: a new upstream project must
/// become visible soon).
pub fn project_not_found(name: &crate::index::ProjectName, not_found_ttl: std::time::Duration) -> Response<Body> {
    let mut resp = text(StatusCode::NOT_FOUND, format!("project `{name}` not found upstream"));
    let max_age = HeaderValue::from_str(&format!("max-age={}", not_found_ttl.as_secs())).expect("ascii");
    resp.headers_mut().insert(header::CACHE_CONTROL, max_age);
    resp
}

/// A permanent redirect; used only for URLs whose canonical form never changes (ROUTE-03).
pub fn moved_permanently(location: &str) -> Response<Body> {
    let mut resp = text(StatusCode::MOVED_PERMANENTLY, format!("moved to {location}"));
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

/// How a file read was asked: the request's headers, HEAD, and whether the scope is private.
pub struct FileAsk<'a> {
    pub headers: &'a HeaderMap,
    pub head: bool,
    /// Reading this scope needs a token: no shared cache may keep its answers.
    pub private: bool,
}

/// Files never change under their sha256 (HDR-2). A private project's files are for their
/// token holders only: no shared cache may keep them (issue 9).
const IMMUTABLE: &str = "public, max-age=365000000, immutable";
const IMMUTABLE_PRIVATE: &str = "private, max-age=365000000, immutable";

/// A file or its metadata (HDR-2's headers; validators, HEAD and Range per HDR-3).
pub async fn file(reply: FileReply, ask: &FileAsk<'_>) -> Result<Response<Body>, HttpError> {
    let FileReply { sha256, modified, outcome, body } = reply;
    let mut resp = match body {
        FileBody::Stored(blob) => {
            let sha = sha256.as_deref().unwrap_or_default();
            match stored_file(blob, sha, modified, ask).await? {
                Ok(resp) => resp,
                Err(unsatisfiable) => return Ok(with_outcome(unsatisfiable, outcome)),
            }
        }
        FileBody::Length(total) => sized(body::empty(), total),
        FileBody::Part { start, end, total, bytes } => partial(body::full(bytes), start, end, total),
        FileBody::Unsatisfiable { total } => return Ok(with_outcome(unsatisfiable(total), outcome)),
        FileBody::Streaming { stream, total: Some(total) } => sized(body::stream(stream), total),
        FileBody::Streaming { stream, total: None } => Response::new(body::stream(stream)),
    };
    if !resp.headers().contains_key(header::ETAG)
        && let Some(sha) = &sha256
    {
        resp.headers_mut().insert(header::ETAG, file_etag(sha));
    }
    file_headers(resp.headers_mut(), ask.private, modified);
    Ok(with_outcome(resp, outcome))
}

/// A stored file, honouring If-None-Match / If-Modified-Since, If-Range and Range (HDR-3);
/// `Ok(Err(416))` for a range past its end, which gets no file headers.
async fn stored_file(
    blob: crate::store::Blob,
    sha: &str,
    modified: Option<u64>,
    ask: &FileAsk<'_>,
) -> Result<Result<Response<Body>, Response<Body>>, HttpError> {
    let tag = format!("\"sha256-{sha}\"");
    if not_modified(ask.headers, &tag, modified.unwrap_or(0)) {
        return Ok(Ok(unchanged()));
    }
    let len = blob.len;
    let mut range = crate::byte_range::resolve(ask.headers.get(header::RANGE).and_then(|v| v.to_str().ok()), len);
    // If-Range: a range only applies to the representation the client already has.
    if let Some(if_range) = ask.headers.get(header::IF_RANGE).and_then(|v| v.to_str().ok())
        && if_range.trim() != tag
    {
        range = ByteRange::Whole;
    }
    let (start, count) = match range {
        ByteRange::Whole => (0, len),
        ByteRange::Part(start, end) => (start, end - start + 1),
        ByteRange::Unsatisfiable => return Ok(Err(unsatisfiable(len))),
    };
    let body = if ask.head {
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
    Ok(Ok(match range {
        ByteRange::Part(start, end) => partial(body, start, end, len),
        _ => sized(body, len),
    }))
}

/// 200 with its length.
fn sized(body: Body, len: u64) -> Response<Body> {
    let mut resp = Response::new(body);
    resp.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    resp
}

/// 206 for bytes `start..=end` of `total`.
fn partial(body: Body, start: u64, end: u64, total: u64) -> Response<Body> {
    let mut resp = sized(body, end - start + 1);
    *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
    let value = HeaderValue::from_str(&format!("bytes {start}-{end}/{total}")).expect("ascii");
    resp.headers_mut().insert(header::CONTENT_RANGE, value);
    resp
}

/// 416: the range starts past the end of the file.
fn unsatisfiable(total: u64) -> Response<Body> {
    let mut resp = text(StatusCode::RANGE_NOT_SATISFIABLE, "requested range is outside the file");
    let value = HeaderValue::from_str(&format!("bytes */{total}")).expect("ascii");
    resp.headers_mut().insert(header::CONTENT_RANGE, value);
    resp.headers_mut().insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    resp
}

fn file_etag(sha: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("\"sha256-{sha}\"")).expect("hex is a valid header value")
}

/// HDR-2: octet-stream, ranges, immutable; never a Content-Encoding.
fn file_headers(h: &mut HeaderMap, private: bool, modified: Option<u64>) {
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    if let Some(t) = modified.filter(|t| *t > 0) {
        h.insert(header::LAST_MODIFIED, last_modified(t));
    }
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if private {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static(IMMUTABLE_PRIVATE));
        h.insert(header::VARY, HeaderValue::from_static("Authorization"));
    } else {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static(IMMUTABLE));
    }
}

/// Does an `If-None-Match` header name this ETag? (`*` matches anything.)
pub fn etag_matches(if_none_match: Option<&HeaderValue>, etag: &str) -> bool {
    let Some(v) = if_none_match.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    v.split(',').map(str::trim).any(|t| t == "*" || t == etag || t.strip_prefix("W/") == Some(etag))
}

/// Is the client's copy current? `If-None-Match` when sent (RFC 9110 §13.2.2: it wins), else
/// `If-Modified-Since` against `modified_unix` (HDR-1, HDR-2). An unparsable date is ignored.
pub fn not_modified(headers: &http::HeaderMap, etag: &str, modified_unix: u64) -> bool {
    if let Some(inm) = headers.get(header::IF_NONE_MATCH) {
        return etag_matches(Some(inm), etag);
    }
    let Some(since) = headers.get(header::IF_MODIFIED_SINCE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let modified = std::time::UNIX_EPOCH.checked_add(std::time::Duration::from_secs(modified_unix));
    match (httpdate::parse_http_date(since), modified) {
        (Ok(t), Some(m)) => modified_unix > 0 && m <= t,
        _ => false,
    }
}

/// `Last-Modified` for a time in seconds since the epoch.
pub fn last_modified(modified_unix: u64) -> HeaderValue {
    // Times come from upstream pages and records: clamped to what an HTTP date can say.
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(modified_unix.min(253_402_300_799));
    HeaderValue::from_str(&httpdate::fmt_http_date(t)).expect("an HTTP date is ASCII")
}

/// This server's origin: `public_url` when configured (what an operator behind a proxy or a
/// shared cache should set), else as the client reached it: the Host header (checked), and
/// `https` when it serves TLS or a proxy in front says `X-Forwarded-Proto: https`.
pub fn origin(public_url: Option<&str>, tls: bool, headers: &http::HeaderMap) -> String {
    if let Some(url) = public_url {
        return url.to_string();
    }
    let forwarded_https = headers.get("x-forwarded-proto").is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
    let scheme = if tls || forwarded_https { "https" } else { "http" };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|h| {
            !h.is_empty() && h.len() <= 255 && h.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        })
        .unwrap_or("localhost");
    format!("{scheme}://{host}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_wins_over_if_modified_since() {
        let mut h = http::HeaderMap::new();
        let t = 1_700_000_000;
        h.insert(header::IF_MODIFIED_SINCE, last_modified(t));
        assert!(not_modified(&h, "\"a\"", t), "same second");
        assert!(not_modified(&h, "\"a\"", t - 5), "older");
        assert!(!not_modified(&h, "\"a\"", t + 1), "changed since");
        assert!(!not_modified(&h, "\"a\"", 0), "unknown time is never 'not modified'");
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"b\""));
        assert!(!not_modified(&h, "\"a\"", t), "a non-matching ETag wins over the date");
        h.insert(header::IF_MODIFIED_SINCE, HeaderValue::from_static("not a date"));
        h.remove(header::IF_NONE_MATCH);
        assert!(!not_modified(&h, "\"a\"", t));
    }

    #[test]
    fn origin_checks_the_host() {
        let mut h = http::HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("larder.internal:3141"));
        assert_eq!(origin(None, false, &h), "http://larder.internal:3141");
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        assert_eq!(origin(None, false, &h), "https://larder.internal:3141");
        h.insert(header::HOST, HeaderValue::from_static("evil\"><script>"));
        assert_eq!(origin(None, true, &h), "https://localhost");
        assert_eq!(origin(Some("https://pypi.corp/mirror"), false, &h), "https://pypi.corp/mirror");
        let _ = last_modified(u64::MAX);
    }

    /// A time past what `SystemTime` can hold reaches the date comparison only with an
    /// If-Modified-Since (and no If-None-Match): it must be "modified", never a panic.
    #[test]
    fn a_modified_time_past_the_calendar_does_not_overflow() {
        let mut h = http::HeaderMap::new();
        h.insert(header::IF_MODIFIED_SINCE, HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT"));
        assert!(!not_modified(&h, "\"a\"", u64::MAX));
        assert!(not_modified(&h, "\"a\"", 1), "the path is reached: an old time is not modified");
    }
}
