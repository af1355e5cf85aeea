//! The HTTP layer: the accept loop (here), the service that turns a request into a `Route`,
//! decides access once and dispatches (`service`), the handlers (HTTP adapters over the cache
//! engine), and the one failure-to-status mapping (`error`). hyper stays in this module.

pub mod body;
pub mod error;
pub mod handlers;
mod idle;
pub mod respond;
pub mod route;
mod service;
pub mod tls;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::state::AppState;

/// The largest request head (line and headers) read from a client.
const MAX_REQUEST_HEAD: usize = 64 * 1024;

/// Serves connections on `listener` until `shutdown` completes, then stops accepting and lets
/// open requests finish for at most `finish_within`; returns when that time is up (what is
/// left of it is for background work).
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
    finish_within: Duration,
) -> tokio::time::Instant {
    let limits = state.config.connection_limits;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Without a timer hyper's header timeout does nothing (checked: a half request stayed open 45 s).
    // A request head over 64 KiB gets 431 (hyper's default buffer would take ~400 KiB).
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_timeout).max_buf_size(MAX_REQUEST_HEAD);
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
                        Ok::<_, Infallible>(service::handle(state, req, peer).await)
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
    let deadline = tokio::time::Instant::now() + finish_within;
    tracing::info!(
        connections = limits.max_connections.max(1).saturating_sub(slots.available_permits()),
        "no longer accepting; waiting for open requests"
    );
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep_until(deadline) => tracing::warn!(
            timeout = %humantime::format_duration(finish_within),
            "open requests did not finish within shutdown_timeout; stopping anyway"
        ),
    }
    deadline
}
