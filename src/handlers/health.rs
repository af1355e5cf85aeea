//! `GET /-/health`: 200 once the server accepts requests (tests and compose wait on it).

use http::{Response, StatusCode};

use crate::server::{body::Body, respond};

pub fn health() -> Response<Body> {
    respond::text(StatusCode::OK, "ok")
}
