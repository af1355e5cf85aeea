//! The simple API: the project list and project pages, negotiated between HTML and JSON.

use http::{HeaderMap, HeaderValue, Response, header};

use crate::cache::{PageReply, PageWant, Reader};
use crate::index::rendered::Encoding;
use crate::index::{MediaType, ProjectName, html, json};
use crate::server::error::HttpError;
use crate::server::{body, body::Body, respond};
use crate::state::AppState;

fn negotiate(headers: &HeaderMap) -> Option<MediaType> {
    MediaType::negotiate(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()))
}

/// NEG-05: nothing acceptable.
fn not_acceptable() -> Response<Body> {
    respond::not_acceptable(
        "none of the accepted types is served; ask for application/vnd.pypi.simple.v1+json or text/html",
    )
}

/// `…/simple/`: the projects Larder has pages for, private ones included.
pub async fn root(state: &AppState, reader: &Reader, prefix: &str, headers: &HeaderMap) -> Response<Body> {
    let Some(media) = negotiate(headers) else {
        return not_acceptable();
    };
    let names = state.cache.names(reader).await;
    let body = match media {
        MediaType::Json => json::render_root(names.iter()),
        _ => html::render_root(names.iter(), prefix).into_bytes(),
    };
    let mut resp = Response::new(body::full(body));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(media.content_type()));
    h.insert(header::VARY, vary(reader.private));
    let cache_control = if reader.private { "max-age=60, private" } else { "max-age=60, public" };
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache_control));
    resp
}

/// `…/simple/<name>/`: one project's page.
pub async fn detail(
    state: &AppState,
    reader: &Reader,
    prefix: &str,
    raw_name: &str,
    trailing_slash: bool,
    headers: &HeaderMap,
    head: bool,
) -> Result<Response<Body>, HttpError> {
    let name = ProjectName::parse(raw_name).map_err(|e| HttpError::bad_request(e.to_string()))?;
    // ROUTE-02 / ROUTE-03: one canonical URL per project, always with its slash.
    if !trailing_slash || name.as_str() != raw_name {
        return Ok(respond::moved_permanently(&format!("{prefix}{name}/")));
    }
    let Some(media) = negotiate(headers) else {
        return Ok(not_acceptable());
    };
    // PEP 740 wants provenance URLs absolute: pages that have any are rendered for the
    // origin and route the client used (once per origin; the rest share one rendering).
    let origin = respond::origin(state.config.public_url.as_deref(), state.config.tls.is_some(), headers);
    let files_base = format!("{origin}{}files/", prefix.strip_suffix("simple/").unwrap_or(prefix));
    let accepted = Encoding::accepted(headers.get(header::ACCEPT_ENCODING).and_then(|v| v.to_str().ok()));
    let is_current = |etag: &str, modified: u64| respond::not_modified(headers, etag, modified);
    let want = PageWant { media, accepted, files_base: Some(&files_base), is_current: &is_current, head };
    let served = match state.cache.page_body(reader, &name, &want).await? {
        PageReply::Found(served) => served,
        PageReply::NotFound => return Ok(respond::project_not_found(&name, state.config.not_found_ttl)),
    };
    if !served.private_upload && !reader.private {
        state.stats.requested(&name);
    }
    metrics::counter!("larder_page_bodies_total", "encoding" => served.encoding.label()).increment(1);
    // UP-06: an upload is visible at once, so clients revalidate private pages every time. A
    // private scope's answers are for its token holders: never kept by a shared cache.
    let cache_control = match (served.private_upload, reader.private) {
        (true, _) => "private, no-cache".to_string(),
        (false, private) => {
            let visibility = if private { "private" } else { "public" };
            format!("max-age={}, {visibility}", state.config.index_ttl.as_secs())
        }
    };
    let mut resp = if served.not_modified {
        respond::unchanged()
    } else {
        let stream = match served.body {
            Some(blob) => body::stream(blob.stream(0, served.len).await.map_err(|e| {
                tracing::warn!(project = %name, error = %e, "cannot read a stored page body");
                HttpError::unavailable("the page could not be read from the store; retry")
            })?),
            None => body::empty(),
        };
        let mut r = Response::new(stream);
        let h = r.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(media.content_type()));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(served.len));
        if let Some(coding) = served.encoding.header() {
            h.insert(header::CONTENT_ENCODING, HeaderValue::from_static(coding));
        }
        r
    };
    // HDR-1, repeated on 304.
    let h = resp.headers_mut();
    h.insert(header::ETAG, header_value(&served.etag));
    if served.modified_unix > 0 {
        h.insert(header::LAST_MODIFIED, respond::last_modified(served.modified_unix));
    }
    h.insert(header::VARY, vary(reader.private));
    h.insert(header::CACHE_CONTROL, header_value(&cache_control));
    Ok(respond::with_outcome(resp, served.outcome))
}

/// NEG-07's `Vary: Accept`, with `Accept-Encoding` (pages are compressed, issue 21), plus
/// `Authorization` where the answer depends on the token.
fn vary(private: bool) -> HeaderValue {
    HeaderValue::from_static(if private { "Accept, Accept-Encoding, Authorization" } else { "Accept, Accept-Encoding" })
}

fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).expect("Larder builds header values from ASCII")
}
