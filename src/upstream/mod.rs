//! The upstream index client: fetches project pages (PEP 691 JSON first, HTML otherwise) and
//! distribution files. It never sees a client's request, so no client header (notably
//! `Authorization`, UP-08) can reach the upstream.

pub mod guard;
pub mod html;
pub(crate) mod ranges;
pub mod routes;
pub mod throttle;

use std::sync::Arc;
use std::time::Duration;

use reqwest::{StatusCode, header};
use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use url::Url;

use crate::index::{ProjectName, ProjectPage, json};
use guard::{AddressPolicy, redact};
pub use routes::{Route, RouteConfig, Upstreams};

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

/// HTTP Basic credentials for the upstream. Never printed: not in `Debug`, not in URLs.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials(<redacted>)")
    }
}

/// Everything the upstream client is configured with.
#[derive(Clone, Debug)]
pub struct UpstreamSettings {
    /// The simple-API root, without userinfo (credentials are kept apart).
    pub base: Url,
    pub credentials: Option<Credentials>,
    pub timeout: Duration,
    /// Requests (and downloads) under way at once, across all clients.
    pub max_connections: usize,
    /// Largest page body accepted, after decompression.
    pub max_page_bytes: u64,
    /// Most files a page may list.
    pub max_page_files: usize,
    /// Largest file accepted when the page and headers announce no size.
    pub max_file_bytes: u64,
}

/// Why an upstream request failed. Every variant names the URL, always without userinfo.
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
    #[error("upstream sent more than {limit} bytes for {url}; {what}")]
    TooLarge { url: String, limit: u64, what: &'static str },
    #[error("refused to fetch {url}: {reason}")]
    Refused { url: String, reason: String },
    #[error("upstream asked Larder to wait (429 / Retry-After) before more requests to {url}; retry in {}s", .retry_after.as_secs().max(1))]
    Throttled { url: String, retry_after: Duration },
}

impl Error {
    pub(crate) fn from_reqwest(url: &str, e: reqwest::Error) -> Error {
        let url = redact(url);
        if e.is_timeout() {
            return Error::Timeout { url };
        }
        // The chain carries the useful part ("connection refused", a TLS error, ...); the URL
        // inside reqwest's message is dropped (it is named once, redacted).
        let e = e.without_url();
        let mut reason = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            reason = format!("{reason}: {s}");
            source = s.source();
        }
        Error::Connect { url, reason }
    }

    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout { .. })
    }

    /// Worth retrying: the connection failed, timed out, or the upstream answered 5xx/429.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Timeout { .. } | Error::Connect { .. } => true,
            Error::Status { status, .. } => status.is_server_error() || status.as_u16() == 429,
            Error::Throttled { .. } => true,
            Error::BadPage { .. } | Error::TooLarge { .. } | Error::Refused { .. } => false,
        }
    }
}

/// An upstream simple index and the two HTTP clients that talk to it.
/// The longest a page request waits for a permit before the stale page is served instead.
const PAGE_PERMIT_WAIT: Duration = Duration::from_secs(5);
/// The longest a file request waits for one (then 504: retry).
const FILE_PERMIT_WAIT: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub struct Upstream {
    /// The `[[upstreams]]` name (`default` for `upstream = …`): metrics and logs say which.
    name: Arc<str>,
    base: Url,
    /// Pages: asked for zstd or gzip (issue 21); reqwest decompresses (the decompressed size is capped).
    pages: reqwest::Client,
    /// Files: no decoding, so the bytes are exactly the bytes the hash names (crates-notes §3.2).
    files: reqwest::Client,
    credentials: Option<Credentials>,
    policy: AddressPolicy,
    /// One permit per file request under way (downloads, ranges, metadata): anonymous clients
    /// cannot multiply upstream traffic past this (issue 9).
    permits: Arc<Semaphore>,
    /// Pages and revalidations have permits of their own: they never wait behind downloads,
    /// however many slow ones anonymous clients started (issue 22).
    page_permits: Arc<Semaphore>,
    /// How long a request waits for a permit before it fails as a timeout (a page then falls
    /// back to its stale copy).
    permit_wait: Duration,
    max_page_bytes: u64,
    max_page_files: usize,
    max_file_bytes: u64,
    /// Origins that asked for a pause (429 Retry-After): nothing is sent to them until it ends.
    throttle: Arc<throttle::Throttle>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream").field("name", &self.name).field("base", &self.base.as_str()).finish()
    }
}

impl Upstream {
    pub fn new(settings: UpstreamSettings, name: &str) -> anyhow::Result<Upstream> {
        let mut base = settings.base;
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let policy = AddressPolicy::new(&base);
        let throttle: Arc<throttle::Throttle> = Arc::default();
        let user_agent = concat!("larder/", env!("CARGO_PKG_VERSION"));
        let timeout = settings.timeout;
        let client = || {
            reqwest::Client::builder()
                .user_agent(user_agent)
                .connect_timeout(timeout)
                .redirect(policy.redirect_policy(throttle.clone()))
                .dns_resolver(Arc::new(guard::GuardedResolver(policy.clone())))
        };
        let pages = client().timeout(timeout).build()?;
        // Large files take long; a stall, not the total time, is the failure.
        let files = client().no_gzip().no_zstd().read_timeout(timeout).build()?;
        Ok(Upstream {
            name: name.into(),
            base,
            pages,
            files,
            credentials: settings.credentials,
            policy,
            permits: Arc::new(Semaphore::new(settings.max_connections.max(1))),
            page_permits: Arc::new(Semaphore::new(settings.max_connections.max(1))),
            permit_wait: timeout.min(PAGE_PERMIT_WAIT),
            max_page_bytes: settings.max_page_bytes,
            max_page_files: settings.max_page_files,
            max_file_bytes: settings.max_file_bytes,
            throttle,
        })
    }

    pub fn base(&self) -> &Url {
        &self.base
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The largest file accepted when nothing announces its size.
    pub fn max_file_bytes(&self) -> u64 {
        self.max_file_bytes
    }

    /// Waits for a free slot for a file request, for a bounded time.
    async fn permit(&self, url: &str) -> Result<OwnedSemaphorePermit, Error> {
        self.acquire(&self.permits, self.permit_wait.max(FILE_PERMIT_WAIT), url).await
    }

    /// Waits for a free slot for a page request (its own pool), for a bounded time.
    async fn page_permit(&self, url: &str) -> Result<OwnedSemaphorePermit, Error> {
        self.acquire(&self.page_permits, self.permit_wait, url).await
    }

    /// A permit, unless `url`'s origin asked for a pause: checked before the wait (no queueing
    /// for a request that cannot be sent) and after it (the pause may have begun meanwhile).
    async fn acquire(&self, pool: &Arc<Semaphore>, wait: Duration, url: &str) -> Result<OwnedSemaphorePermit, Error> {
        self.unless_throttled(url)?;
        let permit = match tokio::time::timeout(wait, pool.clone().acquire_owned()).await {
            Ok(permit) => permit.expect("the upstream semaphores are never closed"),
            Err(_) => {
                metrics::counter!("larder_upstream_permit_timeouts_total").increment(1);
                return Err(Error::Timeout { url: redact(url) });
            }
        };
        self.unless_throttled(url)?;
        Ok(permit)
    }

    /// Fails as throttled while `url`'s origin is paused.
    fn unless_throttled(&self, url: &str) -> Result<(), Error> {
        let Some(retry_after) = Url::parse(url).ok().and_then(|u| self.throttle.remaining(&u)) else { return Ok(()) };
        metrics::counter!("larder_upstream_throttled_total", "upstream" => self.name.to_string()).increment(1);
        Err(Error::Throttled { url: redact(url), retry_after })
    }

    fn get(&self, client: &reqwest::Client, url: &str) -> Result<reqwest::RequestBuilder, Error> {
        self.request(client, reqwest::Method::GET, url)
    }

    /// A request to `url` after the address policy allowed it, with the upstream's credentials
    /// when `url` is on the upstream's own origin (never sent to another host, as pip does).
    fn request(
        &self,
        client: &reqwest::Client,
        method: reqwest::Method,
        url: &str,
    ) -> Result<reqwest::RequestBuilder, Error> {
        let parsed = Url::parse(url).map_err(|e| Error::Refused { url: redact(url), reason: e.to_string() })?;
        self.policy.check_url(&parsed).map_err(|reason| Error::Refused { url: redact(url), reason })?;
        self.unless_throttled(url)?;
        let same_origin = parsed.origin() == self.base.origin();
        let mut req = client.request(method, parsed);
        if let Some(c) = self.credentials.as_ref().filter(|_| same_origin) {
            req = req.basic_auth(&c.username, Some(&c.password));
        }
        Ok(req)
    }

    /// Reads a response for "slow down" (429, or 503 with Retry-After): its origin is paused, and
    /// the request fails as throttled. Every response from upstream passes here.
    fn pause_if_asked(&self, url: &str, resp: reqwest::Response) -> Result<reqwest::Response, Error> {
        match self.throttle.note(resp.url(), resp.status(), resp.headers()) {
            None => Ok(resp),
            Some(retry_after) => {
                tracing::warn!(upstream = %self.name, url = %redact(url), status = %resp.status(), ?retry_after, "upstream asked to slow down: pausing requests to it");
                Err(Error::Throttled { url: redact(url), retry_after })
            }
        }
    }

    /// Fetches `<base>/<name>/`, conditionally when `validators` are given.
    pub async fn fetch_page(&self, name: &ProjectName, validators: Option<&Validators>) -> Result<PageFetch, Error> {
        let url = self.base.join(&format!("{name}/")).expect("a normalized name is a valid path segment");
        let mut req = self.get(&self.pages, url.as_str())?.header(header::ACCEPT, PAGE_ACCEPT);
        if let Some(v) = validators {
            if let Some(etag) = &v.etag {
                req = req.header(header::IF_NONE_MATCH, etag);
            }
            if let Some(lm) = &v.last_modified {
                req = req.header(header::IF_MODIFIED_SINCE, lm);
            }
        }
        let _permit = self.page_permit(url.as_str()).await?;
        let started = std::time::Instant::now();
        let resp = req.send().await.map_err(|e| Error::from_reqwest(url.as_str(), e));
        record(&self.name, "page", started);
        let mut resp = self.pause_if_asked(url.as_str(), resp?)?;
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
        // Read in pieces and count the decompressed bytes: a gzip bomb stops at the limit.
        let too_large =
            || Error::TooLarge { url: redact(url.as_str()), limit: self.max_page_bytes, what: "raise max_page_size" };
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| Error::from_reqwest(url.as_str(), e))? {
            if (body.len() + chunk.len()) as u64 > self.max_page_bytes {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        let bad = |reason: String| Error::BadPage { url: redact(final_url.as_str()), reason };
        let page = if content_type.starts_with("application/vnd.pypi.simple.v1+json") {
            json::parse_project(&body, name, &final_url, self.max_page_files).map_err(bad)?
        } else if content_type.starts_with("text/html")
            || content_type.starts_with("application/vnd.pypi.simple.v1+html")
        {
            html::parse_project(&body, name, &final_url, self.max_page_files).map_err(bad)?
        } else {
            return Err(bad(format!("unsupported Content-Type `{content_type}`; expected JSON or HTML")));
        };
        Ok(PageFetch::Modified(page, validators))
    }

    /// Fetches a PEP 740 provenance object (JSON, at most 1 MiB), unchanged.
    pub async fn fetch_provenance(&self, url: &str) -> Result<bytes::Bytes, Error> {
        const MAX_PROVENANCE: u64 = 1024 * 1024;
        let req = self
            .get(&self.pages, url)?
            .header(header::ACCEPT, "application/vnd.pypi.integrity.v1+json, application/json;q=0.9");
        // Per file, as anonymous as a download: the file pool, never the pages' own.
        let _permit = self.permit(url).await?;
        let started = std::time::Instant::now();
        let resp = req.send().await.map_err(|e| Error::from_reqwest(url, e));
        record(&self.name, "provenance", started);
        let mut resp = self.pause_if_asked(url, resp?)?;
        if !resp.status().is_success() {
            return Err(Error::Status { url: redact(url), status: resp.status() });
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| Error::from_reqwest(url, e))? {
            if (body.len() + chunk.len()) as u64 > MAX_PROVENANCE {
                return Err(Error::TooLarge { url: redact(url), limit: MAX_PROVENANCE, what: "a provenance object" });
            }
            body.extend_from_slice(&chunk);
        }
        if !matches!(serde_json::from_slice::<serde_json::Value>(&body), Ok(serde_json::Value::Object(_))) {
            return Err(Error::BadPage { url: redact(url), reason: "the provenance is not a JSON object".into() });
        }
        Ok(body.into())
    }

    /// Starts downloading a file; the caller streams the body, holding the permit until done.
    pub async fn fetch_file(&self, url: &str) -> Result<(reqwest::Response, OwnedSemaphorePermit), Error> {
        let req = self.get(&self.files, url)?.header(header::ACCEPT_ENCODING, "identity");
        let permit = self.permit(url).await?;
        let started = std::time::Instant::now();
        let resp = req.send().await;
        record(&self.name, "file", started);
        let resp = self.pause_if_asked(url, resp.map_err(|e| Error::from_reqwest(url, e))?)?;
        if !resp.status().is_success() {
            return Err(Error::Status { url: redact(url), status: resp.status() });
        }
        Ok((resp, permit))
    }

    /// Reads a wheel's METADATA with range requests only (no whole-wheel download).
    pub async fn fetch_wheel_metadata(&self, url: &str, size: Option<u64>) -> Result<Vec<u8>, Error> {
        let _permit = self.permit(url).await?;
        ranges::fetch_wheel_metadata(self, url, size).await
    }

    /// A file's length, by a HEAD request.
    pub async fn file_len(&self, url: &str) -> Result<u64, Error> {
        let _permit = self.permit(url).await?;
        ranges::file_size(self, url).await
    }

    /// One byte range of a file (inclusive); an upstream without range support is an error.
    pub async fn file_range(&self, url: &str, start: u64, end: u64) -> Result<bytes::Bytes, Error> {
        let _permit = self.permit(url).await?;
        ranges::get_range(self, url, start, end).await
    }

    /// Maps a streaming error from `fetch_file`'s body.
    pub fn body_error(url: &str, e: reqwest::Error) -> Error {
        Error::from_reqwest(url, e)
    }
}

/// The PEP 658 metadata URL of a file URL: `.metadata` appended to the path, before any query.
pub fn metadata_url(file_url: &str) -> String {
    match Url::parse(file_url) {
        Ok(mut u) => {
            let path = format!("{}.metadata", u.path());
            u.set_path(&path);
            u.into()
        }
        Err(_) => format!("{file_url}.metadata"),
    }
}

/// Counts an upstream request and its time to headers, labelled by upstream (issue 14).
pub(crate) fn record(upstream: &str, kind: &'static str, started: std::time::Instant) {
    let upstream = upstream.to_string();
    metrics::counter!("larder_upstream_requests_total", "kind" => kind, "upstream" => upstream.clone()).increment(1);
    metrics::histogram!("larder_upstream_seconds", "kind" => kind, "upstream" => upstream)
        .record(started.elapsed().as_secs_f64());
}

#[cfg(test)]
mod tests {
    #[test]
    fn metadata_urls_keep_the_query_after_the_path() {
        assert_eq!(super::metadata_url("https://h/f/x-1.0.whl"), "https://h/f/x-1.0.whl.metadata");
        assert_eq!(super::metadata_url("https://h/f/x-1.0.whl?sig=abc"), "https://h/f/x-1.0.whl.metadata?sig=abc");
    }
}
