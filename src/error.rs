//! The one place where a failure becomes an HTTP status (ROUTE-07, ROUTE-08).

use http::{Response, StatusCode};

use crate::server::{body::Body, respond};
use crate::{fill, pages, store, upstream};

/// A failure on its way to the client: a status and a one-line reason.
#[derive(Debug)]
pub struct HttpError {
    pub status: StatusCode,
    pub message: String,
}

impl HttpError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> HttpError {
        HttpError {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> HttpError {
        HttpError::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> HttpError {
        HttpError::new(StatusCode::NOT_FOUND, message)
    }

    pub fn into_response(self) -> Response<Body> {
        respond::text(self.status, self.message)
    }
}

impl From<&upstream::Error> for HttpError {
    fn from(e: &upstream::Error) -> HttpError {
        // Never 404 for an upstream failure: uv would move on to the next index (ROUTE-08).
        let status = if e.is_timeout() {
            StatusCode::GATEWAY_TIMEOUT
        } else {
            StatusCode::BAD_GATEWAY
        };
        HttpError::new(status, e.to_string())
    }
}

impl From<&pages::Error> for HttpError {
    fn from(e: &pages::Error) -> HttpError {
        match e {
            pages::Error::Upstream(u) => u.into(),
            pages::Error::NoUpstream(_) => HttpError::not_found(e.to_string()),
        }
    }
}

impl From<&fill::Error> for HttpError {
    fn from(e: &fill::Error) -> HttpError {
        match e {
            fill::Error::Upstream(u) => u.into(),
            fill::Error::HashMismatch { .. } | fill::Error::Truncated { .. } => {
                HttpError::new(StatusCode::BAD_GATEWAY, e.to_string())
            }
            fill::Error::Spool(_) | fill::Error::Store(_) => {
                HttpError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
            }
        }
    }
}

impl From<store::Error> for HttpError {
    fn from(e: store::Error) -> HttpError {
        tracing::error!(error = %e, "store failure");
        HttpError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
}
