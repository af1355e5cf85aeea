//! Small response builders shared by the handlers.

use http::{HeaderValue, Response, StatusCode, header};

use super::body::{self, Body};

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
