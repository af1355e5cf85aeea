//! The HTTP layer: the accept loop, and dispatch from a `Route` to its handler.
//! hyper stays here; handlers get plain values.

pub mod body;
pub mod error;
pub mod handlers;
mod idle;
pub mod respond;
pub mod route;
pub mod tls;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::auth::{self, Access};
use crate::server::error::HttpError;
use crate::state::AppState;
use body::Body;
use handlers::manage::Action;
use route::{Route, Scope};

/// How long a client may take, and how many may be connected (issue 9: slow clients must not
/// hold the server).
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    /// The whole request head (line and headers) must arrive within this; also bounds the TLS
    /// handshake.
    pub header_timeout: Duration,
    /// A connection with no request under way and no bytes moving for this long is closed.
    pub idle_timeout: Duration,
    /// Connections served at once; more wait in the listen backlog until one closes.
    pub max_connections: usize,
}

/// Serves connections on `listener` until `shutdown` completes, then lets open requests finish
/// (for at most ten seconds).
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) {
    let limits = state.config.connection_limits;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Without a timer hyper's header timeout does nothing (checked: a half request stayed open 45 s).
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
    builder.http2().timer(TokioTimer::new()).max_concurrent_streams(256);
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    tokio::pin!(shutdown);
    loop {
        // At the cap, stop accepting: new clients wait in the kernel's backlog, not in memory.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the connection semaphore is never closed"),
            _ = &mut shutdown => break,
        };
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: pause, don't die.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let activity = idle::Activity::new();
                let state = state.clone();
                let busy = activity.clone();
                let service = service_fn(move |req| {
                    let (state, busy) = (state.clone(), busy.clone());
                    async move {
                        let _request = busy.request();
                        Ok::<_, Infallible>(handle(state, req, peer).await)
                    }
                });
                let (builder, watcher, tls) = (builder.clone(), graceful.watcher(), tls.clone());
                tokio::spawn(async move {
                    let _slot = slot;
                    let stream = idle::Tracked::new(stream, activity.clone());
                    let served = async {
                        match tls {
                            None => watcher.watch(builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned()).await,
                            Some(acceptor) => {
                                // A client that never finishes the handshake does not hold a slot for long.
                                let stream = match tokio::time::timeout(limits.header_timeout, acceptor.accept(stream)).await {
                                    Ok(Ok(s)) => s,
                                    Ok(Err(e)) => {
                                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                        return Ok(());
                                    }
                                    Err(_) => {
                                        tracing::debug!(%peer, "TLS handshake timed out");
                                        return Ok(());
                                    }
                                };
                                watcher.watch(builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned()).await
                            }
                        }
                    };
                    let result = tokio::select! {
                        result = served => result,
                        _ = activity.idle_for(limits.idle_timeout) => {
                            tracing::debug!(%peer, "closing an idle connection");
                            Ok(())
                        }
                    };
                    if let Err(e) = result {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                });
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    tracing::info!("shutting down; waiting for open requests");
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(Duration::from_secs(10)) => tracing::warn!("open requests did not finish in 10 s; stopping anyway"),
    }
}

async fn handle(state: AppState, req: Request<Incoming>, peer: std::net::SocketAddr) -> Response<Body> {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let route = Route::parse(&path, &state.config.default_project);
    let route_name = route.name();
    let span = tracing::info_span!("request", %method, %path, route = route_name, project = route.scope_id(), %peer);
    let resp = dispatch(&state, route, req).instrument(span.clone()).await;
    let status = resp.status().as_u16();
    let cache = resp.headers().get("x-cache").and_then(|v| v.to_str().ok()).unwrap_or("-");
    span.in_scope(|| {
        tracing::info!(status, cache, ms = started.elapsed().as_secs_f64() * 1000.0, "served");
    });
    // Static label values: no allocation per request on the hot path.
    let cache = match cache {
        "HIT" => Some("HIT"),
        "MISS" => Some("MISS"),
        "STALE" => Some("STALE"),
        "REVALIDATED" => Some("REVALIDATED"),
        _ => None,
    };
    metrics::counter!("larder_requests_total", "route" => route_name, "status" => status_label(status)).increment(1);
    if let Some(cache) = cache {
        let kind = if route_name == "file" { "file" } else { "page" };
        metrics::counter!("larder_cache_total", "kind" => kind, "result" => cache).increment(1);
        if method != Method::HEAD
            && let Some(len) =
                resp.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        {
            let source = if cache == "MISS" { "upstream" } else { "cache" };
            metrics::counter!("larder_bytes_served_total", "source" => source).increment(len);
        }
    }
    resp
}

async fn dispatch(state: &AppState, route: Route, req: Request<Incoming>) -> Response<Body> {
    let head = req.method() == Method::HEAD;
    let result = route_request(state, route, req).await;
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

async fn route_request(state: &AppState, route: Route, req: Request<Incoming>) -> Result<Response<Body>, HttpError> {
    let (parts, body) = req.into_parts();
    let (method, headers) = (&parts.method, &parts.headers);
    let is_read = method == Method::GET || method == Method::HEAD;
    // Reads of a private project or group need a read token (UPL-04); public ones are anonymous.
    let read = |scope: &Scope| auth::authorize(&state.config, headers, scope, Access::Read).map(|_| ());
    match route {
        Route::Health if is_read => Ok(handlers::health::health()),
        Route::Metrics if is_read => {
            auth::authorize_metrics(&state.config, headers)?;
            Ok(handlers::health::metrics(state))
        }
        Route::SimpleRoot { scope, prefix } if is_read => {
            read(&scope)?;
            Ok(handlers::simple::root(state, &scope, &prefix, headers).await)
        }
        Route::SimpleDetail { scope, prefix, name, trailing_slash } if is_read => {
            read(&scope)?;
            handlers::simple::detail(state, &scope, &prefix, &name, trailing_slash, headers).await
        }
        Route::File { scope, key, filename } if is_read => {
            read(&scope)?;
            handlers::files::file(state, &scope, &key, &filename, headers, method == Method::HEAD).await
        }
        Route::File { scope, key, filename } if method == Method::DELETE => {
            handlers::manage::manage(state, &scope, &key, &filename, headers, Action::Delete).await
        }
        Route::Yank { scope, key, filename } if method == Method::POST || method == Method::PUT => {
            handlers::manage::manage(state, &scope, &key, &filename, headers, Action::Yank(body)).await
        }
        Route::Yank { scope, key, filename } if method == Method::DELETE => {
            handlers::manage::manage(state, &scope, &key, &filename, headers, Action::Unyank).await
        }
        // UPL-01: POST (every client) and PUT (GitLab's docs), never a redirect.
        Route::Upload { scope } if method == Method::POST || method == Method::PUT => {
            handlers::upload::upload(state, &scope, headers, body).await
        }
        Route::Upload { .. } => Ok(method_not_allowed("POST, PUT")),
        Route::Yank { .. } => Ok(method_not_allowed("POST, PUT, DELETE")),
        Route::File { .. } => Ok(method_not_allowed("GET, HEAD, DELETE")),
        Route::NotFound(reason) => Err(HttpError::not_found(reason)),
        Route::BadPath(reason) => Err(HttpError::bad_request(reason)),
        _ => Ok(method_not_allowed("GET, HEAD")),
    }
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
        410 => "410",
        413 => "413",
        416 => "416",
        500 => "500",
        502 => "502",
        503 => "503",
        504 => "504",
        _ => "other",
    }
}

fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut resp = respond::text(StatusCode::METHOD_NOT_ALLOWED, format!("method not allowed; use {allow}"));
    resp.headers_mut().insert(header::ALLOW, http::HeaderValue::from_static(allow));
    resp
}
