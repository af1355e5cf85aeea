//! The one place where a failure becomes an HTTP status (ROUTE-07, ROUTE-08).

use http::{HeaderName, HeaderValue, Response, StatusCode, header};

use crate::cache::{self, FillError, PageError, WriteError};
use crate::server::{body::Body, respond};
use crate::{auth, store, upstream};

/// A failure on its way to the client: a status and a one-line reason.
#[derive(Debug)]
pub struct HttpError {
    pub status: StatusCode,
    pub message: String,
    /// Extra headers (`WWW-Authenticate`), and an HTTP/1 reason phrase for clients that match
    /// on it (twine's `--skip-existing`, UPL-08).
    headers: Vec<(HeaderName, HeaderValue)>,
    reason: Option<&'static str>,
}

impl HttpError {
    fn new(status: StatusCode, message: impl Into<String>) -> HttpError {
        HttpError { status, message: message.into(), headers: Vec::new(), reason: None }
    }

    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> HttpError {
        self.headers.push((name, value));
        self
    }

    pub fn with_reason(mut self, reason: &'static str) -> HttpError {
        self.reason = Some(reason);
        self
    }

    pub fn bad_request(message: impl Into<String>) -> HttpError {
        HttpError::new(StatusCode::BAD_REQUEST, message)
    }

    /// 503: retry later.
    pub fn unavailable(message: impl Into<String>) -> HttpError {
        HttpError::new(StatusCode::SERVICE_UNAVAILABLE, message)
    }

    pub fn not_found(message: impl Into<String>) -> HttpError {
        HttpError::new(StatusCode::NOT_FOUND, message)
    }

    /// 403 with the reason.
    pub fn forbidden(message: impl Into<String>) -> HttpError {
        HttpError::new(StatusCode::FORBIDDEN, message)
    }

    /// A request body over what its route accepts (413).
    pub fn body_too_large(max: usize) -> HttpError {
        HttpError::new(StatusCode::PAYLOAD_TOO_LARGE, format!("the request body is larger than {max} bytes"))
    }

    /// An upload over `max_upload_mib` (413).
    pub fn upload_too_large(limit: u64) -> HttpError {
        let mib = limit / (1024 * 1024);
        HttpError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("upload is larger than the limit of {mib} MiB (max_upload_mib)"),
        )
    }

    /// A request body that stopped arriving (408).
    pub fn stalled(message: impl Into<String>) -> HttpError {
        HttpError::new(StatusCode::REQUEST_TIMEOUT, message)
    }

    /// Writing a received body to the spool failed: 507 when the disk is full (an operator
    /// must act), else 500 with the details in the log only.
    pub fn spool_failed(e: std::io::Error) -> HttpError {
        if e.kind() == std::io::ErrorKind::StorageFull {
            return HttpError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "Larder's disk is full; an operator must free space (or lower max_store_size)",
            );
        }
        tracing::error!(error = %e, "cannot spool an upload");
        HttpError::new(StatusCode::INTERNAL_SERVER_ERROR, "cannot spool the upload; the server log has the details")
    }

    /// How an audited write that failed with this ended: refused (4xx) or failed (5xx), with
    /// the reason the client was given.
    pub fn audit_outcome(&self) -> (crate::audit::Outcome, Option<String>) {
        let result = match self.status.is_client_error() {
            true => crate::audit::Outcome::Refused,
            false => crate::audit::Outcome::Failed,
        };
        (result, Some(self.message.clone()))
    }

    pub fn into_response(self) -> Response<Body> {
        let mut resp = respond::text(self.status, self.message);
        for (name, value) in self.headers {
            resp.headers_mut().insert(name, value);
        }
        if let Some(reason) = self.reason {
            resp.extensions_mut().insert(hyper::ext::ReasonPhrase::from_static(reason.as_bytes()));
        }
        resp
    }
}

impl From<auth::Denied> for HttpError {
    fn from(e: auth::Denied) -> HttpError {
        match e {
            auth::Denied::Unauthorized(m) => HttpError::new(StatusCode::UNAUTHORIZED, m)
                .with_header(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"Larder\"")),
            auth::Denied::Forbidden(m) => HttpError::new(StatusCode::FORBIDDEN, m),
            auth::Denied::Unavailable(m) => HttpError::new(StatusCode::SERVICE_UNAVAILABLE, m)
                .with_header(header::RETRY_AFTER, HeaderValue::from_static("2")),
            auth::Denied::NotFound(m) => HttpError::not_found(m),
        }
    }
}

impl From<&upstream::Error> for HttpError {
    fn from(e: &upstream::Error) -> HttpError {
        // The upstream asked for a pause: the client is told how long is left (issue 27).
        if let upstream::Error::Throttled { retry_after, .. } = e {
            let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            return HttpError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
                .with_header(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        // Never 404 for an upstream failure: uv would move on to the next index (ROUTE-08).
        let status = if e.is_timeout() { StatusCode::GATEWAY_TIMEOUT } else { StatusCode::BAD_GATEWAY };
        HttpError::new(status, e.to_string())
    }
}

impl From<&PageError> for HttpError {
    fn from(e: &PageError) -> HttpError {
        match e {
            PageError::Upstream(u) => u.into(),
            PageError::NoUpstream(_) | PageError::Offline(_) => HttpError::not_found(e.to_string()),
            PageError::Internal(_) => internal(e),
        }
    }
}

impl From<&FillError> for HttpError {
    fn from(e: &FillError) -> HttpError {
        match e {
            FillError::Upstream(u) => u.into(),
            FillError::HashMismatch { .. } | FillError::Truncated { .. } | FillError::TooLarge { .. } => {
                HttpError::new(StatusCode::BAD_GATEWAY, e.to_string())
            }
            // The download itself worked; it could not be kept. The next request retries.
            FillError::Internal(_) => internal(e),
            FillError::Shared(inner) => (&**inner).into(),
            FillError::NoMetadata(_) => HttpError::not_found(e.to_string()),
            FillError::Cancelled { .. } => HttpError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
                .with_header(header::RETRY_AFTER, HeaderValue::from_static("1")),
            FillError::Spool(_) | FillError::Store(_) => {
                tracing::error!(error = %e, "cannot store a download");
                HttpError::new(StatusCode::SERVICE_UNAVAILABLE, "Larder cannot store this file right now; retry later")
            }
        }
    }
}

/// The engine's failures, each to its status: the one place this is decided.
impl From<cache::Error> for HttpError {
    fn from(e: cache::Error) -> HttpError {
        match e {
            cache::Error::NotFound(m) => HttpError::not_found(m),
            cache::Error::Blocked(m) => HttpError::new(StatusCode::FORBIDDEN, m),
            cache::Error::Page(p) => (&*p).into(),
            cache::Error::Fill(f) => (&*f).into(),
            cache::Error::Store(s) => store_failure(&s),
            // UPL-08: "File already exists" in reason phrase and body, what --skip-existing matches.
            cache::Error::Write(e @ WriteError::Exists { .. }) => {
                HttpError::bad_request(e.to_string()).with_reason("File already exists")
            }
            cache::Error::Write(WriteError::Store(s)) => store_failure(&s),
            cache::Error::Write(e @ WriteError::Busy(_)) => {
                HttpError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
            }
            cache::Error::Write(e @ WriteError::NoSuchFile(_)) => HttpError::not_found(e.to_string()),
            cache::Error::Write(e) => HttpError::bad_request(e.to_string()),
            cache::Error::BadUpload(m) => HttpError::bad_request(m),
            cache::Error::Gone(m) => HttpError::new(StatusCode::GONE, m),
            cache::Error::Shadowing(m) => HttpError::new(StatusCode::FORBIDDEN, m),
            cache::Error::Unavailable(m) => HttpError::new(StatusCode::SERVICE_UNAVAILABLE, m),
            cache::Error::Internal(m) => internal(&m),
            cache::Error::Incomplete(m) => HttpError::new(StatusCode::BAD_GATEWAY, m),
            cache::Error::Unchecked(e) => HttpError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
            cache::Error::Busy(e) => HttpError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
                .with_header(header::RETRY_AFTER, HeaderValue::from_static("10")),
        }
    }
}

impl From<store::Error> for HttpError {
    fn from(e: store::Error) -> HttpError {
        store_failure(&e)
    }
}

/// A full store is 507 (nothing can be written until space is freed); any other store
/// failure is an internal error.
fn store_failure(e: &store::Error) -> HttpError {
    if e.is_unreachable() {
        // warn, not error: while the bucket fails, every request that needs it lands here
        // (the breaker logs the outage itself once).
        tracing::warn!(error = %e, "the shared store is unreachable");
        return HttpError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Larder's shared store (the bucket) is not reachable right now; retry shortly",
        )
        .with_header(header::RETRY_AFTER, HeaderValue::from_static("2"));
    }
    if e.is_full() {
        tracing::error!(error = %e, "the store is full");
        return HttpError::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "Larder's store is full; an operator must free space (or lower max_store_size)",
        );
    }
    internal(e)
}

/// A failure inside Larder: the detail (store paths, OS errors) goes to the log, never to the
/// client (issue 9).
fn internal(e: &dyn std::fmt::Display) -> HttpError {
    tracing::error!(error = %e, "internal failure");
    HttpError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal error in Larder's storage; the server log has the details",
    )
}

/// A refused trusted-publishing exchange, in the JSON shape PyPI answers with (uv and
/// gh-action-pypi-publish print its `description`s).
pub fn oidc_refused(e: &crate::oidc::MintError) -> Response<Body> {
    use crate::oidc::MintError;
    let (status, code) = match e {
        MintError::InvalidToken(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid-token"),
        MintError::NoPublisher(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid-publisher"),
        MintError::IssuerUnavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "issuer-unavailable"),
        MintError::Store(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        MintError::NotConfigured => (StatusCode::NOT_FOUND, "not-enabled"),
    };
    let body = serde_json::json!({
        "message": "Token request failed",
        "errors": [{"code": code, "description": e.to_string()}],
    });
    let mut resp = respond::json(status, body.to_string());
    if status == StatusCode::SERVICE_UNAVAILABLE {
        resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
    }
    resp
}
