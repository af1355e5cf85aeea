//! Pages served like files (issue 21): bodies stored once per change as blobs, compressed
//! (gzip for pip, zstd for uv), fresh across eviction and restarts, and never served damaged.

use std::io::Read;
use std::time::{Duration, Instant};

use crate::util::upstream::upstream_with_app;
use crate::util::{Larder, assert_ok, hashes_in, pip_download, uv_install};

/// A client that sends exactly the headers given: no automatic Accept-Encoding, no decoding.
fn raw() -> reqwest::blocking::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::blocking::Client::builder()
        .no_gzip()
        .no_zstd()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn get(url: &str, accept_encoding: Option<&str>) -> reqwest::blocking::Response {
    let mut req = raw().get(url).header("accept", "application/vnd.pypi.simple.v1+json");
    if let Some(ae) = accept_encoding {
        req = req.header("accept-encoding", ae);
    }
    req.send().unwrap()
}

fn coding(resp: &reqwest::blocking::Response) -> String {
    resp.headers().get("content-encoding").map(|v| v.to_str().unwrap().to_string()).unwrap_or("identity".into())
}

/// Waits until the page's compressed bodies are stored (they are made in the background).
fn wait_compressed(url: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while coding(&get(url, Some("zstd"))) != "zstd" {
        assert!(Instant::now() < deadline, "the page was never compressed");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn decode(coding: &str, body: &[u8]) -> Vec<u8> {
    match coding {
        "gzip" => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(body).read_to_end(&mut out).unwrap();
            out
        }
        "zstd" => zstd::decode_all(body).unwrap(),
        _ => body.to_vec(),
    }
}

#[test]
fn each_coding_has_its_body_etag_304_and_head() {
    let (up, _) = upstream_with_app();
    let dir = tempfile::tempdir().unwrap();
    let larder = Larder::start(&dir.path().join("data"), &["--upstream", &up.simple_url()]);
    let url = larder.url("/simple/app/");
    let first = get(&url, Some("gzip, deflate, zstd"));
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["vary"], "Accept, Accept-Encoding");
    wait_compressed(&url);

    let identity = get(&url, None).bytes().unwrap().to_vec();
    let mut etags = std::collections::HashSet::new();
    for (ae, want) in [
        (None, "identity"),
        (Some("identity"), "identity"),
        (Some("gzip, deflate, br"), "gzip"),   // pip
        (Some("gzip, deflate, zstd"), "zstd"), // uv
        (Some("zstd;q=0, gzip"), "gzip"),
        (Some("br"), "identity"),
    ] {
        let resp = get(&url, ae);
        assert_eq!((resp.status().as_u16(), coding(&resp)), (200, want.to_string()), "Accept-Encoding {ae:?}");
        let etag = resp.headers()["etag"].to_str().unwrap().to_string();
        assert!(!etag.starts_with("W/"), "strong ETag per coding");
        let len: usize = resp.headers()["content-length"].to_str().unwrap().parse().unwrap();
        let body = resp.bytes().unwrap();
        assert_eq!(body.len(), len);
        assert_eq!(decode(want, &body), identity, "{want} decodes to the identity body");
        if want != "identity" {
            assert!(body.len() < identity.len(), "{want} is smaller");
        }
        // HEAD: the GET's length for this coding.
        let mut head = raw().head(&url).header("accept", "application/vnd.pypi.simple.v1+json");
        if let Some(ae) = ae {
            head = head.header("accept-encoding", ae);
        }
        let head = head.send().unwrap();
        assert_eq!(head.headers()["content-length"], len.to_string().as_str(), "HEAD {want}");
        assert_eq!(head.headers()["etag"], etag.as_str());
        // 304 for this coding's ETag, naming it again.
        let mut again =
            raw().get(&url).header("accept", "application/vnd.pypi.simple.v1+json").header("if-none-match", &etag);
        if let Some(ae) = ae {
            again = again.header("accept-encoding", ae);
        }
        let again = again.send().unwrap();
        assert_eq!(again.status(), 304, "{want}");
        assert_eq!(again.headers()["etag"], etag.as_str());
        etags.insert(etag);
    }
    assert_eq!(etags.len(), 3, "one ETag per coding: {etags:?}");
    assert_eq!(up.count("GET /simple/app/"), 1, "one upstream fetch for every coding");
}

#[test]
fn pip_and_uv_resolve_from_stored_pages_after_eviction_and_restart() {
    let (up, expected) = upstream_with_app();
    let dir = tempfile::tempdir().unwrap();
    // No memory for pages at all: every page comes back from the store.
    let larder = Larder::start_with_env(
        &dir.path().join("data"),
        &["--upstream", &up.simple_url(), "--index-ttl", "600s"],
        &[("LARDER_PAGE_CACHE_MIB", "0")],
    );
    let scratch = tempfile::tempdir().unwrap();
    assert_ok(&uv_install(scratch.path(), &larder.index(), &scratch.path().join("t1"), "app==1.0"), "uv, cold");
    let pages = || up.count("GET /simple/");
    let cold = pages();
    assert!(cold >= 2, "app and its dependency: {:?}", up.requests());
    let dl = scratch.path().join("dl");
    assert_ok(&pip_download(scratch.path(), &larder.index(), &dl, "app==1.0"), "pip, warm");
    assert_eq!(hashes_in(&dl), expected);
    assert_ok(&uv_install(scratch.path(), &larder.index(), &scratch.path().join("t2"), "app==1.0"), "uv, warm");
    assert_eq!(pages(), cold, "within index_ttl, pages read back from the store are hits: {:?}", up.requests());

    std::thread::sleep(Duration::from_millis(2500)); // the page writes and the journal are on disk
    let larder = larder.restart();
    let dl2 = scratch.path().join("dl2");
    assert_ok(&pip_download(scratch.path(), &larder.index(), &dl2, "app==1.0"), "pip after a restart");
    assert_eq!(hashes_in(&dl2), expected);
    assert_ok(
        &uv_install(scratch.path(), &larder.index(), &scratch.path().join("t3"), "app==1.0"),
        "uv after a restart",
    );
    assert_eq!(pages(), cold, "a restart keeps the cache warm: {:?}", up.requests());
    let metrics = reqwest::blocking::get(larder.url("/metrics")).unwrap().text().unwrap();
    for coding in ["gzip", "zstd"] {
        assert!(
            metrics.contains(&format!("larder_page_bodies_total{{encoding=\"{coding}\"}}")),
            "{coding} served:\n{metrics}"
        );
    }
}

#[test]
fn past_the_ttl_one_conditional_request_per_page_and_the_journal_survives_a_restart() {
    let (up, _) = upstream_with_app();
    let dir = tempfile::tempdir().unwrap();
    // No metadata prefetch: its relinks rewrite page records (with a fresh time), and this
    // test is about the journal alone.
    let larder = Larder::start(
        &dir.path().join("data"),
        &["--upstream", &up.simple_url(), "--index-ttl", "5s", "--metadata-prefetch", "false"],
    );
    // A new uv cache for every resolve: uv's own cache must not answer for Larder.
    let uv_fresh = |larder: &Larder, what: &str| {
        let scratch = tempfile::tempdir().unwrap();
        assert_ok(&uv_install(scratch.path(), &larder.index(), &scratch.path().join("t"), "app==1.0"), what);
    };
    uv_fresh(&larder, "uv, cold");
    let cold = up.count("GET /simple/");
    std::thread::sleep(Duration::from_millis(5200));
    up.clear_requests();
    uv_fresh(&larder, "uv past the TTL");
    let asked: Vec<String> = up.requests().into_iter().filter(|r| r.contains("/simple/")).collect();
    assert_eq!(asked.len(), cold, "one request per page: {asked:?}");
    assert!(asked.iter().all(|r| r.ends_with(" conditional")), "each one conditional: {asked:?}");
    // Revalidated just now: a restart (kill -9, after the journal's flush) keeps them fresh.
    std::thread::sleep(Duration::from_millis(2200));
    up.clear_requests();
    let larder = larder.restart();
    uv_fresh(&larder, "uv after a restart");
    assert_eq!(up.count("/simple/"), 0, "fresh from the journal: {:?}", up.requests());
}

/// The blob of the identity body an ETag names (its sha256 starts with the ETag's digest).
fn body_blob(data: &std::path::Path, etag: &str) -> Option<std::path::PathBuf> {
    let prefix = etag.trim_matches('"').split('-').next().unwrap().to_string();
    let content = data.join("store/content-v2/sha256").join(&prefix[..2]).join(&prefix[2..4]);
    std::fs::read_dir(&content)
        .ok()?
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_str().unwrap().starts_with(&prefix[4..]))
}

/// A page that changed upstream is stored anew, and the bodies of its old rendering leave the
/// store with it (issue 21: the data dir holds each page once, not once per change).
#[test]
fn a_changed_page_leaves_no_old_bodies_behind() {
    let (up, _) = upstream_with_app();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let larder = Larder::start(&data, &["--upstream", &up.simple_url(), "--index-ttl", "1s"]);
    let url = larder.url("/simple/app/");
    wait_compressed(&url);
    let etag = get(&url, None).headers()["etag"].to_str().unwrap().to_string();
    let old = body_blob(&data, &etag).expect("the page body is a blob in the store");

    // With its metadata: no relink follows (it would rewrite the page once more).
    let (name, bytes) = crate::util::wheel("app", "2.0", &[]);
    let metadata = Some(crate::util::wheel_metadata(&bytes));
    up.add("app", crate::util::upstream::MockFile { metadata, ..crate::util::upstream::MockFile::new(&name, bytes) });
    std::thread::sleep(Duration::from_millis(1100));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let resp = get(&url, Some("zstd"));
        let changed = resp.headers()["etag"].to_str().unwrap().split('-').next() != etag.split('-').next();
        if changed && coding(&resp) == "zstd" && !old.exists() {
            break;
        }
        assert!(Instant::now() < deadline, "the old rendering's body stayed in the store: {old:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let fresh = get(&url, None).headers()["etag"].to_str().unwrap().to_string();
    assert!(body_blob(&data, &fresh).is_some(), "the new body is stored");
}

#[test]
fn a_damaged_page_body_is_never_served() {
    let (up, _) = upstream_with_app();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let larder = Larder::start(&data, &["--upstream", &up.simple_url()]);
    let url = larder.url("/simple/app/");
    assert_eq!(get(&url, None).status(), 200);
    wait_compressed(&url);
    let resp = get(&url, None);
    let etag = resp.headers()["etag"].to_str().unwrap().to_string();
    let identity = resp.bytes().unwrap().to_vec();
    let blob = body_blob(&data, &etag).expect("the page body is a blob in the store");
    let mut damaged = std::fs::read(&blob).unwrap();
    damaged[10] ^= 0x20;
    std::fs::write(&blob, &damaged).unwrap();

    // A new process (nothing in memory) reads it from the disk, finds it damaged, and renders
    // the page again from its record.
    std::thread::sleep(Duration::from_millis(300));
    let larder = larder.restart();
    let url = larder.url("/simple/app/");
    let resp = get(&url, None);
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().unwrap().to_vec(), identity, "the right bytes, never the damaged ones");
    assert!(larder.log().contains("damaged"), "the operator sees it: {}", larder.log());
    assert_eq!(up.count("GET /simple/app/"), 1, "rendered again from the stored model, no upstream request");
    // And it is stored again, whole.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(std::fs::read(&blob).unwrap(), identity);
}

/// Item 4: once a wheel's metadata passes through Larder, its requirements' pages (and their
/// newest wheels' metadata) are fetched before the client asks; bounded per metadata file and
/// in concurrency, and nothing more once the client stops asking.
#[test]
fn requirements_are_fetched_ahead_of_the_client_within_a_budget() {
    use crate::util::upstream::{MockFile, MockUpstream};
    use crate::util::{sha256_hex, wheel, wheel_metadata};
    let up = MockUpstream::start();
    let deps: Vec<String> = (0..100).map(|i| format!("dep-{i}")).collect();
    let dep_refs: Vec<&str> = deps.iter().map(String::as_str).collect();
    let (app, app_bytes) = wheel("app", "1.0", &dep_refs);
    up.add("app", MockFile { metadata: Some(wheel_metadata(&app_bytes)), ..MockFile::new(&app, app_bytes.clone()) });
    for d in &deps {
        let (name, bytes) = wheel(d, "1.0", &[]);
        up.add(d, MockFile { metadata: Some(wheel_metadata(&bytes)), ..MockFile::new(&name, bytes) });
    }
    let dir = tempfile::tempdir().unwrap();
    let larder = Larder::start(&dir.path().join("data"), &["--upstream", &up.simple_url(), "--fetch-ahead", "true"]);
    assert_eq!(get(&larder.url("/simple/app/"), None).status(), 200);
    let md = raw().get(larder.url(&format!("/files/{}/{app}.metadata", sha256_hex(&app_bytes)))).send().unwrap();
    assert_eq!(md.status(), 200);
    let pages = || up.requests().iter().filter(|r| r.starts_with("GET /simple/dep-")).count();
    let deadline = Instant::now() + Duration::from_secs(10);
    while pages() == 0 {
        assert!(Instant::now() < deadline, "no requirement page was fetched ahead: {:?}", up.requests());
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(1500));
    let ahead = pages();
    assert!(ahead > 6 && ahead <= 64, "more than one batch, at most 64 requirements per metadata file: {ahead}");
    assert!(up.state.lock().unwrap().max_inflight <= 6 + 2, "bounded concurrency");
    assert!(up.count(".whl.metadata") > 1, "the newest wheels' metadata too: {:?}", up.requests());
    // A requirement fetched ahead is a hit when the client asks.
    let first = up.requests().iter().find(|r| r.starts_with("GET /simple/dep-")).unwrap().clone();
    let name = first.trim_start_matches("GET /simple/").trim_end_matches('/').to_string();
    let resp = get(&larder.url(&format!("/simple/{name}/")), None);
    assert_eq!(resp.headers()["x-cache"], "HIT");
    // Nobody asks any more: nothing more goes upstream.
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(pages(), ahead, "the walk stops with the clients");
}

/// Item 4 against an upstream without PEP 658 files (the one the field bench reads): the
/// requirements' newest wheels' metadata is read by range requests, and their own
/// requirements' pages are fetched ahead too, two levels below what the client asked for
/// (red when the walk stopped at pages without a `core-metadata` hash).
#[test]
fn the_walk_ahead_reads_metadata_by_ranges_where_the_upstream_has_no_metadata_files() {
    use crate::util::upstream::{MockFile, MockUpstream};
    use crate::util::{sha256_hex, wheel};
    let up = MockUpstream::start();
    let (app, app_bytes) = wheel("app", "1.0", &["dep-0", "dep-1"]);
    up.add("app", MockFile::new(&app, app_bytes.clone()));
    for i in 0..2 {
        let sub = format!("sub-{i}");
        let (name, bytes) = wheel(&format!("dep-{i}"), "1.0", &[sub.as_str()]);
        up.add(&format!("dep-{i}"), MockFile::new(&name, bytes));
        let (name, bytes) = wheel(&sub, "1.0", &[]);
        up.add(&sub, MockFile::new(&name, bytes));
    }
    let dir = tempfile::tempdir().unwrap();
    // dep-1's only version is blocked: the walk never reads it, nor follows its requirements.
    let config = crate::util::write_config(
        dir.path(),
        &format!(
            "upstream = \"{}\"\n[[block]]\nname = \"dep-1\"\nversion = \"==1.0\"\nreason = \"test\"\n",
            up.simple_url()
        ),
    );
    // The range prefetcher off: every metadata read below is the walk's own.
    let args = ["--config", &config, "--fetch-ahead", "true", "--metadata-prefetch", "false"];
    let larder = Larder::start(&dir.path().join("data"), &args);
    assert_eq!(get(&larder.url("/simple/app/"), None).status(), 200);
    let md = raw().get(larder.url(&format!("/files/{}/{app}.metadata", sha256_hex(&app_bytes)))).send().unwrap();
    assert_eq!(md.status(), 200, "read by ranges on demand");
    let deadline = Instant::now() + Duration::from_secs(10);
    while up.count("GET /simple/sub-0/") < 1 {
        assert!(Instant::now() < deadline, "the second level was not fetched ahead: {:?}", up.requests());
        std::thread::sleep(Duration::from_millis(50));
    }
    let dep_reads = up.requests().iter().filter(|r| r.contains("/dep_0") && r.contains(" range=")).count();
    assert!(dep_reads >= 1, "the requirements' wheels were read by ranges: {:?}", up.requests());
    assert_eq!(up.count_full(".whl"), 0, "no wheel downloaded whole: {:?}", up.requests());
    // Two levels deep, no more: the second level's wheels are not read.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(up.count("/sub_"), 0, "past the depth limit: {:?}", up.requests());
    assert_eq!(up.count("/dep_1"), 0, "a blocked version is not read ahead: {:?}", up.requests());
    assert_eq!(up.count("GET /simple/sub-1/"), 0, "nor its requirements followed: {:?}", up.requests());
}

/// pip and uv read JSON, so a page's HTML is rendered only when a client asks for it, once
/// per page change: then kept, compressed and stored with the page (issue 21: the data dir
/// holds no HTML nobody reads, and no HTML client pays a rendering per request).
#[test]
fn html_is_rendered_once_when_first_asked_for_then_served_from_the_store() {
    let (up, expected) = upstream_with_app();
    let dir = tempfile::tempdir().unwrap();
    let larder = Larder::start(&dir.path().join("data"), &["--upstream", &up.simple_url()]);
    const RENDERS: &str = "larder_page_html_renders_total";
    let scratch = tempfile::tempdir().unwrap();
    assert_ok(&uv_install(scratch.path(), &larder.index(), &scratch.path().join("t"), "app==1.0"), "uv");
    wait_compressed(&larder.url("/simple/app/"));
    assert_eq!(larder.counter(RENDERS), 0, "JSON clients never make HTML");

    let html = |larder: &Larder, ae: &str| {
        let resp = raw()
            .get(larder.url("/simple/app/"))
            .header("accept", "text/html")
            .header("accept-encoding", ae)
            .send()
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
        let coding = coding(&resp);
        (coding.clone(), decode(&coding, &resp.bytes().unwrap()))
    };
    let (_, first) = html(&larder, "gzip");
    assert!(String::from_utf8_lossy(&first).contains("app-1.0-py3-none-any.whl"));
    for _ in 0..5 {
        assert_eq!(html(&larder, "identity").1, first);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while html(&larder, "gzip").0 != "gzip" {
        assert!(Instant::now() < deadline, "the HTML was never compressed");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(larder.counter(RENDERS), 1, "rendered once, however many clients asked");

    // Stored: a new process serves it, compressed, with nothing rendered and nothing fetched.
    std::thread::sleep(Duration::from_millis(500));
    let pages = up.count("GET /simple/");
    let larder = larder.restart();
    assert_eq!(html(&larder, "gzip"), ("gzip".to_string(), first));
    assert_eq!(larder.counter(RENDERS), 0);
    // pip reads the same store.
    let dl = scratch.path().join("dl");
    assert_ok(&pip_download(scratch.path(), &larder.index(), &dl, "app==1.0"), "pip");
    assert_eq!(hashes_in(&dl), expected);
    assert_eq!(up.count("GET /simple/"), pages, "{:?}", up.requests());
}

/// A warm resolve is answered from the pages' heads alone: no page model is read back from
/// the store, even for `.metadata` Larder extracted itself (the upstream has no PEP 658
/// files). Found in the field: a big page's head counted its model while the page waited to
/// be written, so heads left memory; the metadata extracted after that never reached the
/// stored page, which kept advertising it as "on demand", and each `.metadata` hit then parsed
/// the whole page (45 ms for a 15,000-file page). Here: nine pages of 2,000 files, 1 MiB
/// for pages.
#[test]
fn a_warm_resolve_reads_no_page_model_even_for_extracted_metadata() {
    use crate::util::upstream::{MockFile, MockUpstream};
    let up = MockUpstream::start();
    let libs: Vec<String> = (0..8).map(|n| format!("lib-{n}")).collect();
    let mut projects = vec![("app".to_string(), libs.iter().map(|l| l.as_str()).collect::<Vec<_>>())];
    projects.extend(libs.iter().map(|l| (l.clone(), vec![])));
    for (project, deps) in &projects {
        let (name, bytes) = crate::util::wheel(project, "1.0", deps);
        up.add(project, MockFile::new(&name, bytes));
        let dist = project.replace('-', "_");
        for n in 0..2000 {
            up.add(project, MockFile::new(&format!("{dist}-0.0.{n}.tar.gz"), format!("old {n}").into_bytes()));
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let larder = Larder::start_with_env(
        &dir.path().join("data"),
        &["--upstream", &up.simple_url()],
        &[("LARDER_PAGE_CACHE_MIB", "1")],
    );
    let uv_fresh = |what: &str| {
        let scratch = tempfile::tempdir().unwrap();
        assert_ok(&uv_install(scratch.path(), &larder.index(), &scratch.path().join("t"), "app==1.0"), what);
    };
    uv_fresh("uv, cold");
    // The extracted links re-render the pages (in the background): wait for the HTML-free
    // JSON to advertise a hash for every wheel.
    let deadline = Instant::now() + Duration::from_secs(10);
    for page in std::iter::once("app").chain(libs.iter().map(|l| l.as_str())) {
        while !String::from_utf8_lossy(&get(&larder.url(&format!("/simple/{page}/")), None).bytes().unwrap())
            .contains("\"core-metadata\":{\"sha256\"")
        {
            assert!(Instant::now() < deadline, "{page}: the extracted metadata was never advertised");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    std::thread::sleep(Duration::from_millis(500)); // the page writes
    const MODELS: &str = "larder_page_model_reads_total";
    let before = larder.counter(MODELS);
    up.clear_requests();
    uv_fresh("uv, warm");
    assert_eq!(larder.counter(MODELS), before, "a warm resolve needs no page model");
    assert_eq!(up.requests(), Vec::<String>::new(), "nothing asked upstream");
}

/// Upstream pages are asked for compressed (zstd, as a real index's CDN sends it) and read
/// back exactly (issue 21, item 3).
#[test]
fn upstream_pages_are_fetched_compressed() {
    let (up, expected) = upstream_with_app();
    let dir = tempfile::tempdir().unwrap();
    let larder = Larder::start(&dir.path().join("data"), &["--upstream", &up.simple_url()]);
    let scratch = tempfile::tempdir().unwrap();
    let dl = scratch.path().join("dl");
    assert_ok(&pip_download(scratch.path(), &larder.index(), &dl, "app==1.0"), "pip");
    assert_eq!(hashes_in(&dl), expected);
    let codings = up.state.lock().unwrap().page_codings.clone();
    assert!(!codings.is_empty() && codings.iter().all(|c| c == "zstd"), "{codings:?}");
}

/// What RSS is made of is on /metrics: each memory cache's bytes (kept within its budget by a
/// loop, not only when the next request comes: moka evicts as it is used, and after a cold
/// resolve's burst the excess stayed in RSS) and the allocator's data held vs resident.
#[test]
fn memory_gauges_show_the_caches_and_the_allocator() {
    let (up, _) = upstream_with_app();
    let dir = tempfile::tempdir().unwrap();
    let larder = Larder::start(&dir.path().join("data"), &["--upstream", &up.simple_url()]);
    assert_eq!(get(&larder.url("/simple/app/"), None).status(), 200);
    let gauge = |text: &str, name: &str| -> Option<f64> {
        text.lines().find(|l| l.starts_with(name)).and_then(|l| l.rsplit(' ').next()?.parse().ok())
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = raw().get(larder.url("/metrics")).send().unwrap().text().unwrap();
        let heads = gauge(&text, "larder_memory_cache_bytes{cache=\"page_heads\"}");
        let allocated = gauge(&text, "larder_memory_allocated_bytes");
        let resident = gauge(&text, "larder_memory_resident_bytes");
        if let (Some(heads), Some(allocated), Some(resident)) = (heads, allocated, resident)
            && heads > 0.0
        {
            assert!(allocated > heads && resident >= allocated, "{heads} {allocated} {resident}");
            assert!(gauge(&text, "larder_memory_cache_bytes{cache=\"page_models\"}").is_some());
            assert!(gauge(&text, "larder_memory_cache_bytes{cache=\"page_bodies\"}").is_some());
            assert!(gauge(&text, "larder_memory_cache_bytes{cache=\"files\"}").is_some());
            break;
        }
        assert!(Instant::now() < deadline, "no memory gauges with the page's head counted:\n{text}");
        std::thread::sleep(Duration::from_millis(200));
    }
}
