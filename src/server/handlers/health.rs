//! `GET /-/health`: 200 once the server accepts requests (tests and compose wait on it), with
//! `ok` or what is degraded. `GET /-/ready`: 503 while the store cannot be written or the process is stopping, so that a
//! load balancer sends clients to another replica. `GET /metrics`: Prometheus text format.

use http::{HeaderValue, Response, header};

use crate::server::{body, body::Body, respond};
use crate::state::AppState;

pub fn health(state: &AppState) -> Response<Body> {
    match state.cache.degraded() {
        None => respond::ok_text("ok"),
        Some(why) => respond::ok_text(format!("degraded: {why}")),
    }
}

pub fn ready(state: &AppState) -> Response<Body> {
    if state.draining.load(std::sync::atomic::Ordering::Relaxed) {
        return respond::unavailable("not ready: stopping (draining before shutdown)");
    }
    match state.cache.degraded() {
        None => respond::ok_text("ready"),
        Some(why) => respond::unavailable(format!("not ready: {why}")),
    }
}

pub fn metrics(state: &AppState) -> Response<Body> {
    let Some(handle) = &state.metrics else {
        return respond::not_found("metrics are not enabled in this process");
    };
    let mut resp = Response::new(body::full(handle.render()));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    resp
}
