//! The upstream index client: fetches project pages (PEP 691 JSON first, HTML otherwise) and
//! distribution files. It never sees a client's request, so no client header (notably
//! `Authorization`, UP-08) can reach the upstream.

pub mod html;
mod ranges;

use std::time::Duration;

use reqwest::{StatusCode, header};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::index::{ProjectName, ProjectPage, json};

/// What we ask the upstream for (UP-01): JSON first, because only JSON carries sizes, upload
/// times and versions.
const PAGE_ACCEPT: &str =
    "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01";

/// The upstream's cache validators for a page, kept to revalidate it (UP-05).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Validators {
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

/// The outcome of asking the upstream for a project page.
pub enum PageFetch {
    Modified(ProjectPage, Validators),
    NotModified,
    NotFound,
}

/// Why an upstream request failed. Every variant names the URL.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("upstream timed out on {url}")]
    Timeout { url: String },
    #[error("could not reach upstream at {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("upstream answered {status} for {url}")]
    Status { url: String, status: StatusCode },
    #[error("upstream sent a page Larder cannot read from {url}: {reason}")]
    BadPage { url: String, reason: String },
}

impl Error {
    pub(crate) fn from_reqwest(url: &str, e: reqwest::Error) -> Error {
        if e.is_timeout() {
            Error::Timeout { url: url.to_string() }
        } else {
            // The chain carries the useful part ("connection refused", a TLS error, ...).
            let mut reason = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                reason = format!("{reason}: {s}");
                source = s.source();
            }
            Error::Connect { url: url.to_string(), reason }
        }
    }

    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout { .. })
    }

    /// Worth retrying: the connection failed, timed out, or the upstream answered 5xx/429.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Timeout { .. } | Error::Connect { .. } => true,
            Error::Status { status, .. } => status.is_server_error() || status.as_u16() == 429,
            Error::BadPage { .. } => false,
        }
    }
}

/// An upstream simple index and the two HTTP clients that talk to it.
#[derive(Clone)]
pub struct Upstream {
    base: Url,
    /// Pages: gzip on; reqwest decompresses.
    pages: reqwest::Client,
    /// Files: gzip off, so the bytes are exactly the bytes the hash names (crates-notes §3.2).
    files: reqwest::Client,
}

impl Upstream {
    /// `base` is the simple-API root, e.g. `https://<upstream>/simple/`.
    pub fn new(mut base: Url, timeout: Duration) -> anyhow::Result<Upstream> {
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let user_agent = concat!("larder/", env!("CARGO_PKG_VERSION"));
        let pages =
            reqwest::Client::builder().user_agent(user_agent).connect_timeout(timeout).timeout(timeout).build()?;
        let files = reqwest::Client::builder()
            .user_agent(user_agent)
            .no_gzip()
            .connect_timeout(timeout)
            // Large files take long; a stall, not the total time, is the failure.
            .read_timeout(timeout)
            .build()?;
        Ok(Upstream { base, pages, files })
    }

    pub fn base(&self) -> &Url {
        &self.base
    }

    /// Fetches `<base>/<name>/`, conditionally when `validators` are given.
    pub async fn fetch_page(&self, name: &ProjectName, validators: Option<&Validators>) -> Result<PageFetch, Error> {
        let url = self.base.join(&format!("{name}/")).expect("a normalized name is a valid path segment");
        let mut req = self.pages.get(url.clone()).header(header::ACCEPT, PAGE_ACCEPT);
        if let Some(v) = validators {
            if let Some(etag) = &v.etag {
                req = req.header(header::IF_NONE_MATCH, etag);
            }
            if let Some(lm) = &v.last_modified {
                req = req.header(header::IF_MODIFIED_SINCE, lm);
            }
        }
        let started = std::time::Instant::now();
        let resp = req.send().await.map_err(|e| Error::from_reqwest(url.as_str(), e));
        record("page", started);
        let resp = resp?;
        match resp.status() {
            StatusCode::NOT_MODIFIED => return Ok(PageFetch::NotModified),
            StatusCode::NOT_FOUND | StatusCode::GONE => return Ok(PageFetch::NotFound),
            s if s.is_success() => {}
            status => {
                return Err(Error::Status { url: url.to_string(), status });
            }
        }
        // Relative links resolve against the final URL, after redirects (ROUTE-02).
        let final_url = resp.url().clone();
        let header_str =
            |h| resp.headers().get(h).and_then(|v: &header::HeaderValue| v.to_str().ok()).map(str::to_string);
        let validators =
            Validators { etag: header_str(header::ETAG), last_modified: header_str(header::LAST_MODIFIED) };
        let content_type = header_str(header::CONTENT_TYPE).unwrap_or_default().to_ascii_lowercase();
        let body = resp.bytes().await.map_err(|e| Error::from_reqwest(url.as_str(), e))?;
        let bad = |reason: String| Error::BadPage { url: final_url.to_string(), reason };
        let page = if content_type.starts_with("application/vnd.pypi.simple.v1+json") {
            json::parse_project(&body, name, &final_url).map_err(|e| bad(e.to_string()))?
        } else if content_type.starts_with("text/html")
            || content_type.starts_with("application/vnd.pypi.simple.v1+html")
        {
            html::parse_project(&body, name, &final_url).map_err(|e| bad(e.to_string()))?
        } else {
            return Err(bad(format!("unsupported Content-Type `{content_type}`; expected JSON or HTML")));
        };
        Ok(PageFetch::Modified(page, validators))
    }

    /// Starts downloading a file; the caller streams the body.
    pub async fn fetch_file(&self, url: &str) -> Result<reqwest::Response, Error> {
        let started = std::time::Instant::now();
        let resp = self.files.get(url).header(header::ACCEPT_ENCODING, "identity").send().await;
        record("file", started);
        let resp = resp.map_err(|e| Error::from_reqwest(url, e))?;
        if !resp.status().is_success() {
            return Err(Error::Status { url: url.to_string(), status: resp.status() });
        }
        Ok(resp)
    }

    /// Reads a wheel's METADATA with range requests only (no whole-wheel download).
    pub async fn fetch_wheel_metadata(&self, url: &str, size: Option<u64>) -> Result<Vec<u8>, Error> {
        ranges::fetch_wheel_metadata(&self.files, url, size).await
    }

    /// Maps a streaming error from `fetch_file`'s body.
    pub fn body_error(url: &str, e: reqwest::Error) -> Error {
        Error::from_reqwest(url, e)
    }
}

/// Counts an upstream request and its time to headers.
pub(crate) fn record(kind: &'static str, started: std::time::Instant) {
    metrics::counter!("larder_upstream_requests_total", "kind" => kind).increment(1);
    metrics::histogram!("larder_upstream_seconds", "kind" => kind).record(started.elapsed().as_secs_f64());
}
