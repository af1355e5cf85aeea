//! One request: a span, `Route::parse`, access decided once (`auth`), dispatch to the handler,
//! then the request log line and metrics from the typed cache outcome the handler left in the
//! response's extensions.

use std::time::Instant;

use http::{Method, Request, Response, header};
use hyper::body::Incoming;
use tracing::Instrument;

use super::body::{self, Body};
use super::error::HttpError;
use super::handlers::{self, manage::Action};
use super::respond;
use super::route::Route;
use crate::audit;
use crate::auth;
use crate::cache::Outcome;
use crate::state::AppState;

pub async fn handle(state: AppState, req: Request<Incoming>, peer: std::net::SocketAddr) -> Response<Body> {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let route = Route::parse(&path, &state.config.default_project);
    let route_name = route.name();
    let http1 = req.version() < http::Version::HTTP_2;
    let span = tracing::info_span!("request", %method, %path, route = route_name, project = route.scope_id(), %peer);
    let mut resp = dispatch(&state, route, req, peer.ip()).instrument(span.clone()).await;
    if http1 && state.draining.load(std::sync::atomic::Ordering::Relaxed) {
        // Stopping: this client's next request opens a new connection, which the balancer
        // sends to another replica. (HTTP/2 connections get GOAWAY only when the drain ends
        // and the graceful stop begins; their clients reconnect then.)
        resp.headers_mut().insert(header::CONNECTION, http::HeaderValue::from_static("close"));
    }
    let status = resp.status().as_u16();
    let outcome = resp.extensions().get::<Outcome>().copied();
    if let Some(outcome) = outcome {
        resp.headers_mut().insert("x-cache", http::HeaderValue::from_static(outcome.as_str()));
    }
    span.in_scope(|| {
        let cache = outcome.map_or("-", Outcome::as_str);
        tracing::info!(status, cache, ms = started.elapsed().as_secs_f64() * 1000.0, "served");
    });
    // Static label values: no allocation per request on the hot path.
    metrics::counter!("larder_requests_total", "route" => route_name, "status" => status_label(status)).increment(1);
    if matches!(route_name, "simple_detail" | "pypi_json" | "file") && matches!(status, 502 | 504) {
        state.stats.upstream_failed(status);
    }
    if let Some(outcome) = outcome {
        let len = resp.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        state.stats.answered(outcome, status, if method == Method::HEAD { None } else { len });
        let kind = if route_name == "file" { "file" } else { "page" };
        metrics::counter!("larder_cache_total", "kind" => kind, "result" => outcome.as_str()).increment(1);
        if method != Method::HEAD
            && let Some(len) = len
        {
            let source = if outcome == Outcome::Miss { "upstream" } else { "cache" };
            metrics::counter!("larder_bytes_served_total", "source" => source).increment(len);
        }
    }
    resp
}

async fn dispatch(state: &AppState, route: Route, req: Request<Incoming>, peer: std::net::IpAddr) -> Response<Body> {
    let head = req.method() == Method::HEAD;
    let result = route_request(state, route, req, peer).await;
    let mut resp = result.unwrap_or_else(|e| e.into_response());
    if head {
        // ROUTE-06: HEAD carries GET's headers, Content-Length included, and no body.
        if !resp.headers().contains_key(header::CONTENT_LENGTH)
            && let Some(len) = hyper::body::Body::size_hint(resp.body()).exact()
        {
            resp.headers_mut().insert(header::CONTENT_LENGTH, http::HeaderValue::from(len));
        }
        *resp.body_mut() = body::empty();
    }
    resp
}

/// Decides access once for the route and method, then calls its handler with the answer: a
/// `Reader` for reads (UPL-04: a private scope needs a read token), a project for writes.
async fn route_request(
    state: &AppState,
    route: Route,
    req: Request<Incoming>,
    peer: std::net::IpAddr,
) -> Result<Response<Body>, HttpError> {
    let (parts, body) = req.into_parts();
    let (method, headers, config) = (&parts.method, &parts.headers, &state.config);
    let is_read = method == Method::GET || method == Method::HEAD;
    let is_post = method == Method::POST || method == Method::PUT;
    // A browser holding a token (typed into the pages' Basic prompt) would send it along with
    // any web page's form post: writes are refused from web pages. twine, uv, poetry, pdm and
    // larder's CLI send no Origin and no Sec-Fetch-Site.
    if !is_read && from_a_web_page(headers) {
        return Err(HttpError::forbidden(
            "uploads and changes are not accepted from web pages; use twine, uv or `larder yank/delete`",
        ));
    }
    match route {
        Route::Health if is_read => Ok(handlers::health::health(state)),
        Route::Ready if is_read => Ok(handlers::health::ready(state)),
        // Advisories are read like the default project's pages (a private index keeps them private).
        Route::Osv(call) if is_read || method == Method::POST => {
            auth::reader(config, headers, &crate::scope::Scope::Project(config.default_project.clone()), peer)?;
            handlers::osv::osv(state, call, body).await
        }
        Route::Oidc(call) if is_read || method == Method::POST => {
            handlers::oidc::oidc(state, call, headers, body, peer).await
        }
        Route::Metrics if is_read => {
            auth::metrics(config, headers)?;
            Ok(handlers::health::metrics(state))
        }
        Route::SimpleRoot { scope, prefix } if is_read => {
            let reader = auth::reader(config, headers, &scope, peer)?;
            Ok(handlers::simple::root(state, &reader, &prefix, headers).await)
        }
        Route::SimpleDetail { scope, prefix, name, trailing_slash } if is_read => {
            let reader = auth::reader(config, headers, &scope, peer)?;
            handlers::simple::detail(state, &reader, &prefix, &name, trailing_slash, headers, method == Method::HEAD)
                .await
        }
        Route::PypiJson { scope, base, prefix, name, version, canonical } if is_read => {
            let reader = auth::reader(config, headers, &scope, peer)?;
            let ask = handlers::pypi_json::Ask {
                scope: &scope,
                base: &base,
                prefix: &prefix,
                name: &name,
                version: version.as_deref(),
                canonical,
            };
            handlers::pypi_json::json(state, &reader, ask, headers).await
        }
        Route::File { scope, key, filename } if is_read => {
            let reader = auth::reader(config, headers, &scope, peer)?;
            handlers::files::file(state, &reader, &key, &filename, headers, method == Method::HEAD).await
        }
        Route::File { scope, key, filename } if method == Method::DELETE => {
            let writer = write_access(state, headers, &scope, audit::Action::Delete, Some(&filename), peer).await?;
            handlers::manage::manage(state, &writer, peer, &key, &filename, Action::Delete).await
        }
        Route::Yank { scope, key, filename } if is_post => {
            let writer = write_access(state, headers, &scope, audit::Action::Yank, Some(&filename), peer).await?;
            handlers::manage::manage(state, &writer, peer, &key, &filename, Action::Yank(body)).await
        }
        Route::Yank { scope, key, filename } if method == Method::DELETE => {
            let writer = write_access(state, headers, &scope, audit::Action::Unyank, Some(&filename), peer).await?;
            handlers::manage::manage(state, &writer, peer, &key, &filename, Action::Unyank).await
        }
        // UPL-01: POST (every client) and PUT (GitLab's docs), never a redirect.
        Route::Upload { scope } if is_post => {
            let writer = write_access(state, headers, &scope, audit::Action::Upload, None, peer).await?;
            handlers::upload::upload(state, &writer, peer, headers, body).await
        }
        Route::Retention { scope } if method == Method::POST => {
            let writer = write_access(state, headers, &scope, audit::Action::Retention, None, peer).await?;
            handlers::manage::retention(state, &writer, peer, dry_run(parts.uri.query())?).await
        }
        Route::Ui { scope, view } if is_read => {
            let reader = auth::reader(config, headers, &scope, peer)?;
            handlers::ui::view(state, &reader, &scope, view, headers, parts.uri.query(), method == Method::HEAD).await
        }
        Route::UiAsset(name) if is_read => Ok(handlers::ui::asset(name)),
        Route::UiAudit if is_read => {
            auth::audit_reader(config, headers)?;
            Ok(handlers::ui::audit(state).await)
        }
        Route::UiSlash if is_read => Ok(respond::moved_permanently(&format!("{}/", parts.uri.path()))),
        // A person opening the server's address gets the pages for people.
        Route::Upload { .. } if is_read && handlers::ui::is_browser(headers) => Ok(handlers::ui::to_home()),
        Route::Upload { .. } => Ok(method_not_allowed("POST, PUT")),
        Route::Yank { .. } => Ok(method_not_allowed("POST, PUT, DELETE")),
        Route::Retention { .. } => Ok(method_not_allowed("POST")),
        Route::File { .. } => Ok(method_not_allowed("GET, HEAD, DELETE")),
        Route::NotFound(reason) => Err(HttpError::not_found(reason)),
        Route::BadPath(reason) => Err(HttpError::bad_request(reason)),
        _ => Ok(method_not_allowed("GET, HEAD")),
    }
}

/// May this request write to `scope`? A refusal is audited too (issue 23): who tried, from
/// where, and why not.
async fn write_access<'a>(
    state: &AppState,
    headers: &http::HeaderMap,
    scope: &'a crate::scope::Scope,
    action: audit::Action,
    filename: Option<&str>,
    peer: std::net::IpAddr,
) -> Result<auth::Writer<'a>, HttpError> {
    let allowed = match auth::minted_secret(headers) {
        Some(secret) => auth::minted_writer(&state.publishing, &secret, scope, action == audit::Action::Upload).await,
        None => auth::writer(&state.config, headers, scope),
    };
    allowed.map_err(|denied| {
        let mut event = audit::Event::new(action, auth::claimed_writer(&state.config, headers))
            .project(scope.id())
            .peer(Some(peer))
            .ended(audit::Outcome::Refused, Some(denied.to_string()));
        if let Some(f) = filename {
            event = event.file(f, None);
        }
        state.cache.audit().record(event);
        denied.into()
    })
}

/// `?dry_run=true|false` (or 1/0); anything else is refused rather than taken as "no".
fn dry_run(query: Option<&str>) -> Result<bool, HttpError> {
    let mut dry = false;
    for kv in query.unwrap_or("").split('&').filter(|kv| !kv.is_empty()) {
        dry = match kv.split_once('=') {
            Some(("dry_run", "true" | "1")) => true,
            Some(("dry_run", "false" | "0")) => false,
            _ => {
                return Err(HttpError::bad_request(format!(
                    "unknown query `{kv}`; the only one is dry_run=true|false"
                )));
            }
        };
    }
    Ok(dry)
}

/// Was this request sent by a web page? Browsers add `Origin` to cross-origin and to every
/// POST/PUT/DELETE, and `Sec-Fetch-Site` to everything they fetch ("none": typed by the user).
fn from_a_web_page(headers: &http::HeaderMap) -> bool {
    headers.contains_key(header::ORIGIN) || headers.get("sec-fetch-site").is_some_and(|v| v.as_bytes() != b"none")
}

/// The statuses Larder answers with, as static label values.
fn status_label(status: u16) -> &'static str {
    match status {
        200 => "200",
        206 => "206",
        301 => "301",
        304 => "304",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        405 => "405",
        406 => "406",
        408 => "408",
        410 => "410",
        413 => "413",
        416 => "416",
        431 => "431",
        500 => "500",
        502 => "502",
        503 => "503",
        504 => "504",
        507 => "507",
        _ => "other",
    }
}

fn method_not_allowed(allow: &'static str) -> Response<Body> {
    respond::method_not_allowed(allow)
}
