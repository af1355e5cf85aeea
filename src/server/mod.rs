//! The HTTP layer: the accept loop, and dispatch from a `Route` to its handler.
//! hyper stays here; handlers get plain values.

pub mod body;
pub mod respond;
pub mod route;

use std::convert::Infallible;
use std::future::Future;
use std::time::{Duration, Instant};

use http::{Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tracing::Instrument;

use crate::handlers;
use crate::state::AppState;
use body::Body;
use route::Route;

/// Serves connections on `listener` until `shutdown` completes, then lets open requests finish
/// (for at most ten seconds).
pub async fn serve(listener: TcpListener, state: AppState, shutdown: impl Future<Output = ()>) {
    let builder = auto::Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
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
                let state = state.clone();
                let service = service_fn(move |req| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(handle(state, req, peer).await) }
                });
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                let conn = graceful.watch(conn.into_owned());
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
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

async fn handle(
    state: AppState,
    req: Request<Incoming>,
    peer: std::net::SocketAddr,
) -> Response<Body> {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let route = Route::parse(&path, &state.config.default_project);
    let span = tracing::info_span!("request", %method, %path, %peer);
    let resp = dispatch(&state, route, req).instrument(span.clone()).await;
    span.in_scope(|| {
        let cache = resp
            .headers()
            .get("x-cache")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-");
        tracing::info!(
            status = resp.status().as_u16(),
            cache,
            ms = started.elapsed().as_secs_f64() * 1000.0,
            "served"
        );
    });
    resp
}

async fn dispatch(state: &AppState, route: Route, req: Request<Incoming>) -> Response<Body> {
    let method = req.method();
    let is_read = method == Method::GET || method == Method::HEAD;
    let head = method == Method::HEAD;
    let result = match route {
        Route::Health if is_read => Ok(handlers::health::health()),
        Route::SimpleRoot { prefix, .. } if is_read => {
            Ok(handlers::simple::root(state, &prefix, req.headers()).await)
        }
        Route::SimpleDetail {
            prefix,
            name,
            trailing_slash,
            ..
        } if is_read => {
            handlers::simple::detail(state, &prefix, &name, trailing_slash, req.headers()).await
        }
        Route::File { key, filename, .. } if is_read => {
            handlers::files::file(state, &key, &filename, req.headers(), head).await
        }
        Route::Upload { .. } if method == Method::POST || method == Method::PUT => {
            Ok(respond::text(
                StatusCode::NOT_IMPLEMENTED,
                "uploads are not supported by this version of Larder yet",
            ))
        }
        Route::Upload { .. } => Ok(method_not_allowed("POST, PUT")),
        Route::NotFound(reason) => Ok(respond::text(StatusCode::NOT_FOUND, reason)),
        Route::BadPath(reason) => Ok(respond::text(StatusCode::BAD_REQUEST, reason)),
        _ => Ok(method_not_allowed("GET, HEAD")),
    };
    let mut resp = result.unwrap_or_else(|e| e.into_response());
    if head {
        // hyper sends no body for HEAD; keep the GET headers (ROUTE-06).
        *resp.body_mut() = body::empty();
    }
    resp
}

fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut resp = respond::text(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method not allowed; use {allow}"),
    );
    resp.headers_mut()
        .insert(header::ALLOW, http::HeaderValue::from_static(allow));
    resp
}
