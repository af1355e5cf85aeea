//! `GET /-/health`: 200 once the server accepts requests (tests and compose wait on it), with
//! `ok` or what is degraded. `GET /-/ready`: 503 while the store cannot be written or the process is stopping, so that a
//! load balancer sends clients to another replica. `GET /metrics`: Prometheus text format.

use http::{HeaderValue, Response, StatusCode, header};

use crate::server::{body, body::Body, respond};
use crate::state::AppState;

pub fn health(state: &AppState) -> Response<Body> {
    match state.cache.degraded() {
        None => respond::text(StatusCode::OK, "ok"),
        Some(why) => respond::text(StatusCode::OK, format!("degraded: {why}")),
    }
}

pub fn ready(state: &AppState) -> Response<Body> {
    if state.draining.load(std::sync::atomic::Ordering::Relaxed) {
        return respond::text(StatusCode::SERVICE_UNAVAILABLE, "not ready: stopping (draining before shutdown)");
    }
    match state.cache.degraded() {
        None => respond::text(StatusCode::OK, "ready"),
        Some(why) => respond::text(StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}")),
    }
}

pub fn metrics(state: &AppState) -> Response<Body> {
    let Some(handle) = &state.metrics else {
        return respond::text(StatusCode::NOT_FOUND, "metrics are not enabled in this process");
    };
    let mut resp = Response::new(body::full(handle.render()));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    resp
}
