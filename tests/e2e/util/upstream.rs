//! An in-process upstream index on loopback that speaks PEP 691 JSON (and PEP 503 HTML when
//! asked, or always in `html_only` mode), with hashes, metadata files, yanked files and upload
//! times. It records every request, and can be slowed down, broken, or made to lie about hashes.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

use super::{sha256_hex, wheel, wheel_metadata};

#[derive(Clone, Default)]
pub struct MockFile {
    pub filename: String,
    pub bytes: Vec<u8>,
    /// PEP 658 metadata to serve and advertise.
    pub metadata: Option<Vec<u8>>,
    /// `Some(None)`: yanked without a reason.
    pub yanked: Option<Option<String>>,
    pub requires_python: Option<String>,
    /// Advertise this sha256 instead of the real one (to test mismatches).
    pub advertised_sha256: Option<String>,
    /// List the file without any hash.
    pub no_hash: bool,
    /// Answer Range requests from these bytes instead (an upstream that lies to range readers).
    pub range_bytes: Option<Vec<u8>>,
    /// PEP 700 upload time; `None`: a fixed time in the past; `Some("")`: none listed.
    pub upload_time: Option<String>,
    /// A PEP 740 provenance object, served at `/integrity/<filename>/provenance` and linked.
    pub provenance: Option<Vec<u8>>,
}

impl MockFile {
    pub fn new(filename: &str, bytes: Vec<u8>) -> MockFile {
        MockFile { filename: filename.into(), bytes, ..Default::default() }
    }
}

/// Headers and body of an answer served as is.
pub type RawAnswer = (Vec<(&'static str, String)>, Vec<u8>);

#[derive(Default)]
pub struct MockState {
    pub projects: BTreeMap<String, Vec<MockFile>>,
    /// Every request: "METHOD path", plus the Authorization header if any.
    pub requests: Vec<String>,
    pub saw_authorization: bool,
    pub down: bool,
    pub html_only: bool,
    /// Ignore Range headers: every file answer is the whole file with 200 (a file host
    /// without range support).
    pub no_ranges: bool,
    /// Answer suffix ranges (`bytes=-N`) too, as nginx and object stores do.
    pub suffix_ranges: bool,
    /// Answer project pages as `text/plain` (not an index page).
    pub odd_content_type: bool,
    /// Delay before answering file and page requests.
    pub delay: Duration,
    /// Delay before answering file requests only (a slow file host).
    pub file_delay: Duration,
    /// Send whole-file bodies this many bytes at a time, pausing between pieces (a slow link).
    pub trickle: Option<(usize, Duration)>,
    /// Trickled bodies under way, and those whose reader hung up before the end.
    pub trickling: usize,
    pub trickles_abandoned: usize,
    /// Answer 401 unless the request carries exactly this Authorization header.
    pub require_authorization: Option<String>,
    /// path → Location: answer 302 (a redirect chain, or one to somewhere else).
    pub redirects: BTreeMap<String, String>,
    /// path → headers and body, served as is (hostile pages and files).
    pub raw: BTreeMap<String, RawAnswer>,
    /// The content coding of every project page sent (`zstd` when asked for, like a real
    /// index's CDN; else `gzip` when asked for; else `identity`).
    pub page_codings: Vec<String>,
    /// Requests being answered now, and the most seen at once.
    pub inflight: usize,
    pub max_inflight: usize,
    /// PEP 792 status (and reason) per project, in JSON and as HTML meta tags.
    pub status: BTreeMap<String, (String, Option<String>)>,
}

pub struct MockUpstream {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<MockState>>,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

impl MockUpstream {
    pub fn start() -> MockUpstream {
        let state = Arc::new(Mutex::new(MockState::default()));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (shutdown_tx, mut shutdown_rx) = tokio::sync::oneshot::channel::<()>();
        let st = state.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                loop {
                    tokio::select! {
                        accepted = listener.accept() => {
                            let (stream, _) = accepted.unwrap();
                            let st = st.clone();
                            tokio::spawn(async move {
                                let svc = hyper::service::service_fn(move |req| {
                                    let st = st.clone();
                                    async move {
                                        let resp = answer(st.clone(), req).await;
                                        Ok::<_, Infallible>(maybe_trickled(st, maybe_chunked(resp)))
                                    }
                                });
                                let _ = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                                    .await;
                            });
                        }
                        _ = &mut shutdown_rx => break,
                    }
                }
            });
        });
        let addr = addr_rx.recv().unwrap();
        MockUpstream { addr, state, _shutdown: shutdown_tx }
    }

    pub fn simple_url(&self) -> String {
        format!("http://{}/simple/", self.addr)
    }

    pub fn add(&self, project: &str, file: MockFile) {
        self.state.lock().unwrap().projects.entry(project.to_string()).or_default().push(file);
    }

    pub fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().requests.clone()
    }

    pub fn count(&self, needle: &str) -> usize {
        self.requests().iter().filter(|r| r.contains(needle)).count()
    }

    /// Like `count`, but only whole-file requests (the metadata prefetch sends ranges).
    pub fn count_full(&self, needle: &str) -> usize {
        self.requests().iter().filter(|r| r.contains(needle) && !r.contains(" range=")).count()
    }

    pub fn clear_requests(&self) {
        self.state.lock().unwrap().requests.clear();
    }

    pub fn set_down(&self, down: bool) {
        self.state.lock().unwrap().down = down;
    }

    pub fn set_delay(&self, delay: Duration) {
        self.state.lock().unwrap().delay = delay;
    }
}

type MockBody = http_body_util::Either<
    Full<Bytes>,
    http_body_util::StreamBody<
        futures_util::stream::Once<std::future::Ready<Result<hyper::body::Frame<Bytes>, Infallible>>>,
    >,
>;

type TrickleStream =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<hyper::body::Frame<Bytes>, Infallible>> + Send>>;

type TrickledBody = http_body_util::Either<MockBody, http_body_util::StreamBody<TrickleStream>>;

/// Counts a trickled body as under way until it is dropped; abandoned unless it ended.
struct Trickling {
    state: Arc<Mutex<MockState>>,
    finished: bool,
}

impl Drop for Trickling {
    fn drop(&mut self) {
        let mut st = self.state.lock().unwrap();
        st.trickling -= 1;
        if !self.finished {
            st.trickles_abandoned += 1;
        }
    }
}

/// With `trickle` set, a whole file (200 with a body) is sent piece by piece.
fn maybe_trickled(state: Arc<Mutex<MockState>>, resp: Response<MockBody>) -> Response<TrickledBody> {
    let trickle = state.lock().unwrap().trickle;
    let is_file = resp.headers().get("content-type").is_some_and(|v| v == "application/octet-stream");
    let (Some((piece, pause)), true, 200) = (trickle, is_file, resp.status().as_u16()) else {
        return resp.map(http_body_util::Either::Left);
    };
    let chunked = matches!(resp.body(), http_body_util::Either::Right(_));
    let (mut parts, body) = resp.into_parts();
    let bytes =
        futures_util::FutureExt::now_or_never(http_body_util::BodyExt::collect(body)).unwrap().unwrap().to_bytes();
    if !chunked {
        parts.headers.insert("content-length", bytes.len().into());
    }
    state.lock().unwrap().trickling += 1;
    let guard = Trickling { state, finished: false };
    let stream = futures_util::stream::unfold((bytes, guard), move |(mut rest, mut guard)| async move {
        if rest.is_empty() {
            return None;
        }
        tokio::time::sleep(pause).await;
        let next = rest.split_to(piece.min(rest.len()));
        // Sent whole once the last piece goes (hyper may not ask again after it).
        guard.finished = rest.is_empty();
        Some((Ok(hyper::body::Frame::data(next)), (rest, guard)))
    });
    let stream: TrickleStream = Box::pin(stream);
    Response::from_parts(parts, http_body_util::Either::Right(http_body_util::StreamBody::new(stream)))
}

/// A response marked `x-mock-chunked` is sent without Content-Length (chunked), like an
/// upstream that announces no size.
fn maybe_chunked(resp: Response<Full<Bytes>>) -> Response<MockBody> {
    let (mut parts, body) = resp.into_parts();
    if parts.headers.remove("x-mock-chunked").is_none() {
        return Response::from_parts(parts, http_body_util::Either::Left(body));
    }
    let bytes =
        futures_util::FutureExt::now_or_never(http_body_util::BodyExt::collect(body)).unwrap().unwrap().to_bytes();
    let frame = futures_util::stream::once(std::future::ready(Ok(hyper::body::Frame::data(bytes))));
    Response::from_parts(parts, http_body_util::Either::Right(http_body_util::StreamBody::new(frame)))
}

fn respond(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    Response::builder().status(status).header("content-type", content_type).body(Full::new(body.into())).unwrap()
}

/// Counts a request as in flight until dropped.
struct Inflight(Arc<Mutex<MockState>>);

impl Drop for Inflight {
    fn drop(&mut self) {
        self.0.lock().unwrap().inflight -= 1;
    }
}

async fn answer(state: Arc<Mutex<MockState>>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let _inflight = {
        let mut st = state.lock().unwrap();
        st.inflight += 1;
        st.max_inflight = st.max_inflight.max(st.inflight);
        Inflight(state.clone())
    };
    let path = req.uri().path().to_string();
    let range = req.headers().get("range").and_then(|v| v.to_str().ok()).map(str::to_string);
    let (down, delay, html_only, odd) = {
        let mut st = state.lock().unwrap();
        match &range {
            Some(r) => st.requests.push(format!("{} {} range={r}", req.method(), path)),
            None if req.headers().contains_key("if-none-match") => {
                st.requests.push(format!("{} {} conditional", req.method(), path))
            }
            None => st.requests.push(format!("{} {}", req.method(), path)),
        }
        if req.headers().contains_key("authorization") {
            st.saw_authorization = true;
        }
        (st.down, st.delay, st.html_only, st.odd_content_type)
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let file_delay = state.lock().unwrap().file_delay;
    if !file_delay.is_zero() && path.starts_with("/files/") {
        tokio::time::sleep(file_delay).await;
    }
    if down {
        return respond(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "down for maintenance");
    }
    let mut st = state.lock().unwrap();
    if let Some(expected) = &st.require_authorization
        && req.headers().get("authorization").and_then(|v| v.to_str().ok()) != Some(expected.as_str())
    {
        return respond(StatusCode::UNAUTHORIZED, "text/plain", "credentials needed");
    }
    if let Some(location) = st.redirects.get(&path) {
        let mut resp = respond(StatusCode::FOUND, "text/plain", "moved");
        resp.headers_mut().insert("location", location.parse().unwrap());
        return resp;
    }
    if let Some((headers, body)) = st.raw.get(&path) {
        let mut resp = Response::new(Full::new(Bytes::from(body.clone())));
        for (k, v) in headers {
            resp.headers_mut().insert(*k, v.parse().unwrap());
        }
        return resp;
    }
    if let Some(name) = path.strip_prefix("/simple/").and_then(|p| p.strip_suffix('/')) {
        let Some(files) = st.projects.get(name) else {
            return respond(StatusCode::NOT_FOUND, "text/plain", "no such project");
        };
        if odd {
            return respond(StatusCode::OK, "text/plain", "this is not an index page");
        }
        let accept = req.headers().get("accept").and_then(|v| v.to_str().ok()).unwrap_or("");
        let status = st.status.get(name);
        let (ctype, body) = if !html_only && accept.contains("application/vnd.pypi.simple.v1+json") {
            ("application/vnd.pypi.simple.v1+json", json_page(name, files, status))
        } else {
            ("text/html; charset=utf-8", html_page(files, status))
        };
        let etag = format!("\"{}\"", &sha256_hex(body.as_bytes())[..16]);
        if req.headers().get("if-none-match").and_then(|v| v.to_str().ok()) == Some(etag.as_str()) {
            return Response::builder().status(304).header("etag", etag).body(Full::new(Bytes::new())).unwrap();
        }
        let accept_encoding = req.headers().get("accept-encoding").and_then(|v| v.to_str().ok()).unwrap_or("");
        let (coding, body) = if accept_encoding.contains("zstd") {
            ("zstd", zstd::encode_all(body.as_bytes(), 3).unwrap())
        } else if accept_encoding.contains("gzip") {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            std::io::Write::write_all(&mut e, body.as_bytes()).unwrap();
            ("gzip", e.finish().unwrap())
        } else {
            ("identity", body.into_bytes())
        };
        st.page_codings.push(coding.to_string());
        let mut resp = respond(StatusCode::OK, ctype, body);
        resp.headers_mut().insert("etag", etag.parse().unwrap());
        if coding != "identity" {
            resp.headers_mut().insert("content-encoding", coding.parse().unwrap());
        }
        return resp;
    }
    if let Some(name) = path.strip_prefix("/integrity/").and_then(|p| p.strip_suffix("/provenance")) {
        for f in st.projects.values().flatten() {
            if f.filename == name
                && let Some(p) = &f.provenance
            {
                return respond(StatusCode::OK, "application/vnd.pypi.integrity.v1+json", p.clone());
            }
        }
    }
    if let Some(name) = path.strip_prefix("/files/") {
        for f in st.projects.values().flatten() {
            if f.filename == name {
                let bytes = if range.is_some() { f.range_bytes.as_ref().unwrap_or(&f.bytes) } else { &f.bytes };
                let range = if st.no_ranges { None } else { range.as_deref() };
                if st.suffix_ranges
                    && let Some(n) = range.and_then(|r| r.strip_prefix("bytes=-")).and_then(|n| n.parse::<usize>().ok())
                {
                    let a = bytes.len().saturating_sub(n);
                    let mut resp =
                        respond(StatusCode::PARTIAL_CONTENT, "application/octet-stream", bytes[a..].to_vec());
                    let value = format!("bytes {a}-{}/{}", bytes.len() - 1, bytes.len());
                    resp.headers_mut().insert("content-range", value.parse().unwrap());
                    return resp;
                }
                return file_response(bytes, range);
            }
            if let Some(md) = &f.metadata
                && name == format!("{}.metadata", f.filename)
            {
                return respond(StatusCode::OK, "application/octet-stream", md.clone());
            }
        }
    }
    respond(StatusCode::NOT_FOUND, "text/plain", "not found")
}

fn advertised(f: &MockFile) -> Option<String> {
    if f.no_hash { None } else { Some(f.advertised_sha256.clone().unwrap_or_else(|| sha256_hex(&f.bytes))) }
}

fn json_page(name: &str, files: &[MockFile], status: Option<&(String, Option<String>)>) -> String {
    let mut versions = std::collections::BTreeSet::new();
    let files: Vec<serde_json::Value> = files
        .iter()
        .map(|f| {
            versions.insert(f.filename.split('-').nth(1).unwrap_or("0").trim_end_matches(".tar.gz").to_string());
            let mut o = serde_json::json!({
                // Relative URLs: Larder must resolve them against the page URL.
                "filename": f.filename,
                "url": format!("../../files/{}", f.filename),
                "hashes": advertised(f).map(|h| serde_json::json!({"sha256": h})).unwrap_or(serde_json::json!({})),
                "requires-python": f.requires_python,
                "size": f.bytes.len(),
                "upload-time": f.upload_time.clone().unwrap_or_else(|| "2026-01-02T03:04:05.123456Z".into()),
                "yanked": match &f.yanked { None => serde_json::json!(false), Some(None) => serde_json::json!(true), Some(Some(r)) => serde_json::json!(r) },
            });
            if let Some(md) = &f.metadata {
                o["core-metadata"] = serde_json::json!({"sha256": sha256_hex(md)});
            }
            if f.upload_time.as_deref() == Some("") {
                o.as_object_mut().unwrap().remove("upload-time");
            }
            if f.provenance.is_some() {
                o["provenance"] = serde_json::json!(format!("/integrity/{}/provenance", f.filename));
            }
            o
        })
        .collect();
    let mut page =
        serde_json::json!({"meta": {"api-version": "1.4"}, "name": name, "versions": versions, "files": files});
    if let Some((status, reason)) = status {
        page["project-status"] = serde_json::json!({"status": status, "reason": reason});
    }
    page.to_string()
}

fn html_page(files: &[MockFile], status: Option<&(String, Option<String>)>) -> String {
    let mut out = String::from("<!DOCTYPE html><html><head>\n");
    if let Some((status, reason)) = status {
        out.push_str(&format!("<meta name=\"pypi:project-status\" content=\"{status}\">\n"));
        if let Some(r) = reason {
            out.push_str(&format!("<meta name=\"pypi:project-status-reason\" content=\"{r}\">\n"));
        }
    }
    out.push_str("</head><body>\n");
    for f in files {
        let frag = advertised(f).map(|h| format!("#sha256={h}")).unwrap_or_default();
        let mut attrs = String::new();
        if let Some(rp) = &f.requires_python {
            attrs.push_str(&format!(" data-requires-python=\"{}\"", rp.replace('>', "&gt;").replace('<', "&lt;")));
        }
        if let Some(y) = &f.yanked {
            attrs.push_str(&format!(" data-yanked=\"{}\"", y.clone().unwrap_or_default()));
        }
        if f.provenance.is_some() {
            attrs.push_str(&format!(" data-provenance=\"/integrity/{}/provenance\"", f.filename));
        }
        out.push_str(&format!("<a href=\"/files/{}{frag}\"{attrs}>{}</a><br/>\n", f.filename, f.filename));
    }
    out.push_str("</body></html>\n");
    out
}

/// A file, or one `bytes=a-b` range of it (explicit ranges only, like some file hosts).
fn file_response(bytes: &[u8], range: Option<&str>) -> Response<Full<Bytes>> {
    let Some((a, b)) = range.and_then(|r| r.strip_prefix("bytes=")).and_then(|r| r.split_once('-')) else {
        let mut resp = respond(StatusCode::OK, "application/octet-stream", bytes.to_vec());
        resp.headers_mut().insert("accept-ranges", "bytes".parse().unwrap());
        return resp;
    };
    let (Ok(a), Ok(b)) = (a.parse::<usize>(), b.parse::<usize>()) else {
        return respond(StatusCode::RANGE_NOT_SATISFIABLE, "text/plain", "explicit ranges only");
    };
    let b = b.min(bytes.len() - 1);
    let mut resp = respond(StatusCode::PARTIAL_CONTENT, "application/octet-stream", bytes[a..=b].to_vec());
    resp.headers_mut().insert("content-range", format!("bytes {a}-{b}/{}", bytes.len()).parse().unwrap());
    resp
}

/// The upstream most tests share: `app` 1.0 depends on `lib-core>=2`; `lib-core` has 2.1 and
/// 1.0; every wheel has its metadata file. Returns the sha256 of each file a resolve of `app`
/// fetches, by filename.
pub fn upstream_with_app() -> (MockUpstream, std::collections::BTreeMap<String, String>) {
    let up = MockUpstream::start();
    let mut expected = std::collections::BTreeMap::new();
    for (project, version, deps) in
        [("app", "1.0", vec!["lib-core>=2"]), ("lib-core", "2.1", vec![]), ("lib-core", "1.0", vec![])]
    {
        let (name, bytes) = wheel(project, version, &deps);
        if version != "1.0" || project == "app" {
            expected.insert(name.clone(), sha256_hex(&bytes));
        }
        up.add(project, MockFile { metadata: Some(wheel_metadata(&bytes)), ..MockFile::new(&name, bytes) });
    }
    (up, expected)
}
