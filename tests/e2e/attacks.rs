//! The attacker's review, round three (issue 22), each attack against a running Larder.

use std::time::{Duration, Instant};

use crate::util::upstream::{MockFile, MockUpstream};
use crate::util::{Larder, http, sha256_hex, wheel};

/// Item 1: a few anonymous GETs of slow files must not stall every miss and every expired
/// page. Red before: with `--max-upstream-connections 2`, two hung-up downloads held both
/// permits and the expired page and the new page waited behind them (30 s here).
#[test]
fn slow_downloads_never_hold_pages_back() {
    let up = MockUpstream::start();
    let big: Vec<u8> = (0..256 * 1024).map(|i| (i % 251) as u8).collect();
    up.add("big", MockFile::new("big-1.0.tar.gz", big.clone()));
    up.add("big", MockFile::new("big-1.1.tar.gz", [&big[..], b"1"].concat()));
    up.add("big", MockFile::new("big-1.2.tar.gz", [&big[..], b"2"].concat()));
    let (a, a_bytes) = wheel("page-a", "1.0", &[]);
    up.add("page-a", MockFile::new(&a, a_bytes));
    let (b, b_bytes) = wheel("page-b", "1.0", &[]);
    up.add("page-b", MockFile::new(&b, b_bytes));
    let dir = tempfile::tempdir().unwrap();
    let larder = Larder::start(
        &dir.path().join("data"),
        &["--upstream", &up.simple_url(), "--max-upstream-connections", "2", "--index-ttl", "1s"],
    );
    assert_eq!(http().get(larder.url("/simple/page-a/")).send().unwrap().status(), 200);
    assert_eq!(http().get(larder.url("/simple/big/")).send().unwrap().status(), 200);

    // The file host stalls; anonymous clients start downloads and hang up at once.
    up.state.lock().unwrap().file_delay = Duration::from_secs(30);
    let impatient = reqwest::blocking::Client::builder().timeout(Duration::from_millis(300)).build().unwrap();
    for (name, bytes) in [
        ("big-1.0.tar.gz", big.clone()),
        ("big-1.1.tar.gz", [&big[..], b"1"].concat()),
        ("big-1.2.tar.gz", [&big[..], b"2"].concat()),
    ] {
        let _ = impatient.get(larder.url(&format!("/files/{}/{name}", sha256_hex(&bytes)))).send();
    }
    std::thread::sleep(Duration::from_millis(1100)); // page-a is past its TTL

    let started = Instant::now();
    let resp = http().get(larder.url("/simple/page-a/")).send().unwrap();
    assert_eq!(resp.status(), 200);
    let expired = started.elapsed();
    let started = Instant::now();
    assert_eq!(http().get(larder.url("/simple/page-b/")).send().unwrap().status(), 200);
    let new = started.elapsed();
    assert!(
        expired < Duration::from_secs(5) && new < Duration::from_secs(5),
        "expired page {expired:?}, new page {new:?}"
    );
    up.state.lock().unwrap().file_delay = Duration::ZERO;
}

/// Item 2: a `[[block]] sha256` rule is not bypassed by the same file listed without a hash
/// (a `u-` key: its sha256 is only learned on download). Red before: the first download of
/// each such URL was served whole. Now such files are refused while sha256 rules exist
/// (`unhashed_files` unset), and gone from the page; `unhashed_files = "allow"` lists them.
#[test]
fn a_sha256_block_is_not_bypassed_by_an_unhashed_listing() {
    let up = MockUpstream::start();
    let (bad, bad_bytes) = wheel("sneaky", "1.0", &[]);
    up.add("sneaky", MockFile { no_hash: true, ..MockFile::new(&bad, bad_bytes.clone()) });
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("larder.toml");
    let write = |extra: &str| {
        std::fs::write(
            &config,
            format!("{extra}[[block]]\nsha256 = \"{}\"\nreason = \"known bad\"\n", sha256_hex(&bad_bytes)),
        )
        .unwrap()
    };
    write("");
    let url_digest = sha256_hex(format!("{}{bad}", up.simple_url().replace("/simple/", "/files/")).as_bytes());
    let file = format!("/files/u-{url_digest}/{bad}");
    let larder = Larder::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap(), "--upstream", &up.simple_url()],
    );
    let page = http()
        .get(larder.url("/simple/sneaky/"))
        .header("accept", "application/vnd.pypi.simple.v1+json")
        .send()
        .unwrap();
    let page: serde_json::Value = page.json().unwrap();
    assert_eq!(page["files"], serde_json::json!([]), "an unhashed file is not listed: {page}");
    for range in [None, Some("bytes=0-99")] {
        let mut req = http().get(larder.url(&file));
        if let Some(r) = range {
            req = req.header("range", r);
        }
        let resp = req.send().unwrap();
        assert_eq!(resp.status(), 403, "range {range:?}");
        assert!(resp.text().unwrap().contains("unhashed_files"), "the reason names the setting");
    }
    assert_eq!(http().head(larder.url(&file)).send().unwrap().status(), 403);
    assert_eq!(up.count(&format!("/files/{bad}")), 0, "never fetched");
    drop(larder);

    // Allowed explicitly: listed again (the operator chose to trust unhashed listings).
    write("unhashed_files = \"allow\"\n");
    let larder = Larder::start(
        &dir.path().join("data2"),
        &["--config", config.to_str().unwrap(), "--upstream", &up.simple_url()],
    );
    let page: serde_json::Value = http()
        .get(larder.url("/simple/sneaky/"))
        .header("accept", "application/vnd.pypi.simple.v1+json")
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(page["files"].as_array().unwrap().len(), 1, "{page}");
}

/// Item 5: one hostile page of many links costs its bytes, not tens of times them: the links
/// are counted as they are parsed, and past `max_page_files` the page is refused with a 502
/// that names the setting (HTML and JSON alike).
#[test]
fn a_page_of_too_many_links_is_refused_while_it_is_parsed() {
    let up = MockUpstream::start();
    let links: String =
        (0..5000).map(|i| format!("<a href=\"/files/bomb-{i}.tar.gz\">bomb-{i}.tar.gz</a>\n")).collect();
    let files: Vec<String> = (0..5000)
        .map(|i| format!(r#"{{"filename":"bomb-{i}.tar.gz","url":"/files/bomb-{i}.tar.gz","hashes":{{}}}}"#))
        .collect();
    let json = format!(r#"{{"meta":{{"api-version":"1.0"}},"name":"bomb-json","files":[{}]}}"#, files.join(","));
    {
        let mut st = up.state.lock().unwrap();
        st.raw.insert("/simple/bomb/".into(), (vec![("content-type", "text/html".into())], links.into_bytes()));
        st.raw.insert(
            "/simple/bomb-json/".into(),
            (vec![("content-type", "application/vnd.pypi.simple.v1+json".into())], json.into_bytes()),
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let larder = Larder::start(&dir.path().join("data"), &["--upstream", &up.simple_url(), "--max-page-files", "1000"]);
    for name in ["bomb", "bomb-json"] {
        let resp = http().get(larder.url(&format!("/simple/{name}/"))).send().unwrap();
        assert_eq!(resp.status(), 502, "{name}");
        let why = resp.text().unwrap();
        assert_eq!(why.trim_end().lines().count(), 1, "one line: {why}");
        assert!(why.contains("max_page_files"), "{why}");
    }
    // A page within the bound is served.
    drop(larder);
    let larder = Larder::start(&dir.path().join("data"), &["--upstream", &up.simple_url()]);
    assert_eq!(
        http().get(larder.url("/simple/bomb/")).send().unwrap().status(),
        200,
        "5,000 links are fine by default"
    );
}

/// Item 1, the rest: a download nobody reads any more is stopped (a few go on as background
/// work: with 4 upstream connections, one), so clients that hang up cannot keep the upstream
/// permits. Red before: all three hung-up downloads ran to the end on the upstream.
#[test]
fn downloads_every_client_left_are_stopped() {
    let up = MockUpstream::start();
    let files: Vec<(String, Vec<u8>)> = (0..4)
        .map(|i| (format!("slow-1.{i}.tar.gz"), (0..1024 * 1024).map(|b| ((b + i) % 253) as u8).collect()))
        .collect();
    for (name, bytes) in &files {
        up.add("slow", MockFile::new(name, bytes.clone()));
    }
    let dir = tempfile::tempdir().unwrap();
    let larder = Larder::start(
        &dir.path().join("data"),
        &["--upstream", &up.simple_url(), "--max-upstream-connections", "4", "--metadata-prefetch", "false"],
    );
    assert_eq!(http().get(larder.url("/simple/slow/")).send().unwrap().status(), 200);
    // 1 MiB in 16 KiB pieces every 40 ms: about 2.6 s per file.
    up.state.lock().unwrap().trickle = Some((16 * 1024, Duration::from_millis(40)));
    let impatient = reqwest::blocking::Client::builder().timeout(Duration::from_millis(300)).build().unwrap();
    for (name, bytes) in &files[..3] {
        let _ =
            impatient.get(larder.url(&format!("/files/{}/{name}", sha256_hex(bytes)))).send().and_then(|r| r.bytes());
    }
    std::thread::sleep(Duration::from_millis(800));
    {
        let st = up.state.lock().unwrap();
        assert!(st.trickling <= 1, "{} downloads nobody reads still run upstream", st.trickling);
        assert!(st.trickles_abandoned >= 2, "only {} were stopped", st.trickles_abandoned);
    }
    // A client that reads gets its whole file, hash-checked.
    let (name, bytes) = &files[3];
    let resp = http().get(larder.url(&format!("/files/{}/{name}", sha256_hex(bytes)))).send().unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(sha256_hex(&resp.bytes().unwrap()), sha256_hex(bytes));
    let metrics = http().get(larder.url("/metrics")).send().unwrap().text().unwrap();
    let cancelled = metrics
        .lines()
        .find_map(|l| l.strip_prefix("larder_fills_cancelled_total "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    assert!(cancelled >= 2, "cancelled {cancelled}\n{metrics}");
    // A stopped download stored nothing: the next request downloads it again, whole.
    up.state.lock().unwrap().trickle = None;
    for (name, bytes) in &files[..3] {
        let resp = http().get(larder.url(&format!("/files/{}/{name}", sha256_hex(bytes)))).send().unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(sha256_hex(&resp.bytes().unwrap()), sha256_hex(bytes));
    }
}

/// Item 1, the cap: one client may start `max_downloads_per_client` large downloads at once
/// (here files of unknown size: an HTML upstream lists none); more wait for its own to end,
/// while another client's start at once. Real clients are not hurt by it: uv installs a
/// closure of eight such wheels through a cap of 1. Red before: one address held every
/// upstream connection.
#[test]
fn one_client_cannot_start_more_large_downloads_than_its_share() {
    let up = MockUpstream::start();
    up.state.lock().unwrap().html_only = true;
    let mut files = Vec::new();
    for i in 0..3 {
        let (name, bytes) = wheel(&format!("heavy{i}"), "1.0", &[]);
        up.add(&format!("heavy{i}"), MockFile::new(&name, bytes.clone()));
        files.push((format!("heavy{i}"), name, bytes));
    }
    let other = wheel("other", "1.0", &[]);
    up.add("other", MockFile::new(&other.0, other.1.clone()));
    let dir = tempfile::tempdir().unwrap();
    let larder = Larder::start(
        &dir.path().join("data"),
        &["--upstream", &up.simple_url(), "--max-downloads-per-client", "2", "--metadata-prefetch", "false"],
    );
    for (project, _, _) in &files {
        assert_eq!(http().get(larder.url(&format!("/simple/{project}/"))).send().unwrap().status(), 200);
    }
    assert_eq!(http().get(larder.url("/simple/other/")).send().unwrap().status(), 200);
    // About 900 bytes in 32-byte pieces every 100 ms: about 3 s per wheel.
    up.state.lock().unwrap().trickle = Some((32, Duration::from_millis(100)));
    let me: Vec<_> = files
        .iter()
        .map(|(_, name, bytes)| {
            let url = larder.url(&format!("/files/{}/{name}", sha256_hex(bytes)));
            let want = sha256_hex(bytes);
            std::thread::spawn(move || {
                let resp = http().get(url).send().unwrap();
                assert_eq!(resp.status(), 200);
                assert_eq!(sha256_hex(&resp.bytes().unwrap()), want);
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(up.state.lock().unwrap().trickling, 2, "one client started more than its two");
    // Another address (loopback has all of 127/8) starts at once.
    let elsewhere = reqwest::blocking::Client::builder()
        .local_address(Some("127.0.0.2".parse().unwrap()))
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let started = Instant::now();
    let url = larder.url(&format!("/files/{}/{}", sha256_hex(&other.1), other.0));
    let resp = elsewhere.get(&url).send().unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(up.state.lock().unwrap().trickling, 3, "the other client's download did not start");
    assert_eq!(sha256_hex(&resp.bytes().unwrap()), sha256_hex(&other.1));
    assert!(started.elapsed() < Duration::from_secs(30));
    for t in me {
        t.join().unwrap();
    }
    drop(larder);

    // uv downloads in parallel; through a cap of 1 it waits, and every wheel arrives.
    let up = MockUpstream::start();
    up.state.lock().unwrap().html_only = true;
    let deps: Vec<String> = (0..8).map(|i| format!("part{i}")).collect();
    let dep_refs: Vec<&str> = deps.iter().map(String::as_str).collect();
    let (top, top_bytes) = wheel("closure", "1.0", &dep_refs);
    up.add("closure", MockFile::new(&top, top_bytes));
    for d in &deps {
        let (name, bytes) = wheel(d, "1.0", &[]);
        up.add(d, MockFile::new(&name, bytes));
    }
    up.state.lock().unwrap().trickle = Some((512, Duration::from_millis(20)));
    let larder =
        Larder::start(&dir.path().join("data2"), &["--upstream", &up.simple_url(), "--max-downloads-per-client", "1"]);
    let scratch = tempfile::tempdir().unwrap();
    let target = scratch.path().join("target");
    let out = crate::util::uv_install(scratch.path(), &larder.index(), &target, "closure");
    crate::util::assert_ok(&out, "uv pip install through a cap of one download per client");
    for d in &deps {
        assert!(target.join(d).exists() || target.join(format!("{d}-1.0.dist-info")).exists(), "{d} missing");
    }
}

/// Item 7: a page with provenance is rendered per origin (PEP 740 links are absolute), so a
/// client rotating its `Host` header made every request a new rendering of the whole page.
/// Now the first three origins get renderings of their own (kept); any other gets the shared
/// rendering without provenance links, a valid page all the same. Red before: every Host got
/// its own provenance links, each a fresh rendering.
#[test]
fn rotating_host_headers_cannot_make_every_page_request_a_new_rendering() {
    let up = MockUpstream::start();
    let provenance = br#"{"version":1,"attestation_bundles":[]}"#.to_vec();
    for i in 0..50 {
        let (name, bytes) = wheel("signed", &format!("1.{i}"), &[]);
        up.add("signed", MockFile { provenance: Some(provenance.clone()), ..MockFile::new(&name, bytes) });
    }
    let dir = tempfile::tempdir().unwrap();
    let larder = Larder::start(&dir.path().join("data"), &["--upstream", &up.simple_url()]);
    let page_for = |host: &str| -> serde_json::Value {
        http()
            .get(larder.url("/simple/signed/"))
            .header("host", host)
            .header("accept", "application/vnd.pypi.simple.v1+json")
            .send()
            .unwrap()
            .json()
            .unwrap()
    };
    for i in 0..3 {
        let page = page_for(&format!("mirror{i}.internal"));
        let link = page["files"][0]["provenance"].as_str().unwrap_or_default().to_string();
        assert!(link.starts_with(&format!("http://mirror{i}.internal/files/")), "origin {i}: {link}");
    }
    for i in 0..20 {
        let page = page_for(&format!("rotated{i}.example"));
        assert_eq!(page["files"].as_array().unwrap().len(), 50, "still the whole page");
        assert!(page["files"][0].get("provenance").is_none_or(|p| p.is_null()), "host {i} got its own links");
    }
    // The admitted origins keep theirs.
    let page = page_for("mirror1.internal");
    assert!(page["files"][0]["provenance"].as_str().unwrap().starts_with("http://mirror1.internal/files/"));
    let metrics = http().get(larder.url("/metrics")).send().unwrap().text().unwrap();
    assert!(metrics.contains("larder_provenance_origins_refused_total 20"), "{metrics}");
    assert!(larder.log().contains("set public_url"), "the operator is told what to do");
}

/// Item 10: `larder warm` never fetches the upstream's files for a name a project publishes
/// privately (a squatter's `internal-pkg 99.0` would land in the store and in every bundle
/// exported from it). The claim is in another project than the one warm reads as. Red
/// before: warm fetched the squatter's wheel.
#[test]
fn warm_never_fetches_an_upstream_copy_of_a_private_name() {
    const TOKEN: &str = "attacks-token-1";
    let up = MockUpstream::start();
    let (squat, squat_bytes) = wheel("internal-pkg", "99.0", &[]);
    up.add("internal-pkg", MockFile::new(&squat, squat_bytes));
    let (ours, ours_bytes) = wheel("internal-pkg", "1.0", &[]);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let larder = Larder::start_with_env(
        &data,
        &["--upstream", &up.simple_url(), "--allow-shadowing", "internal-pkg"],
        &[("LARDER_TOKEN", TOKEN)],
    );
    let scratch = tempfile::tempdir().unwrap();
    let path = scratch.path().join(&ours);
    std::fs::write(&path, &ours_bytes).unwrap();
    let url = larder.url("/api/v4/projects/team/packages/pypi");
    let out = crate::util::twine(
        scratch.path(),
        &["upload", "--repository-url", &url, "-u", "x", "-p", TOKEN, path.to_str().unwrap()],
    );
    crate::util::assert_ok(&out, "twine upload into project team");
    drop(larder);
    up.clear_requests();
    let out = crate::util::larder_cli(
        &["warm", "--data-dir", data.to_str().unwrap(), "--upstream", &up.simple_url(), "internal-pkg==99.0"],
        &[("LARDER_CONFIG", "/dev/null"), ("LARDER_LOG", "warn")],
    );
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "warm succeeded: {said}");
    assert!(said.contains("private uploads"), "{said}");
    assert_eq!(up.count("/files/"), 0, "fetched upstream files: {:?}", up.requests());
}

/// Item 10: HEAD of a page for people (a package's `?all=1`, a search, the home page) answers
/// its status and headers without rendering the page; a GET still renders it. Red before:
/// HEAD rendered the whole page to learn its Content-Length.
#[test]
fn head_of_a_page_for_people_renders_nothing() {
    let up = MockUpstream::start();
    for i in 0..30 {
        let (name, bytes) = wheel("many", &format!("1.{i}"), &[]);
        up.add("many", MockFile::new(&name, bytes));
    }
    let dir = tempfile::tempdir().unwrap();
    let larder = Larder::start(&dir.path().join("data"), &["--upstream", &up.simple_url()]);
    for (path, status) in [
        ("/-/ui/packages/many?all=1", 200),
        ("/-/ui/packages/no-such-thing", 404),
        ("/-/ui/search?q=man", 200),
        ("/-/ui/", 200),
    ] {
        let get = http().get(larder.url(path)).send().unwrap();
        assert_eq!(get.status(), status, "GET {path}");
        assert!(get.headers().get("content-length").is_some() || get.headers().get("transfer-encoding").is_some());
        let head = http().head(larder.url(path)).send().unwrap();
        assert_eq!(head.status(), status, "HEAD {path}");
        assert_eq!(head.headers()["content-type"], "text/html; charset=utf-8");
        assert!(head.headers().get("content-length").is_none(), "HEAD {path} was rendered: {:?}", head.headers());
    }
    // Redirects to the normalized name as GET does.
    let head = http().head(larder.url("/-/ui/packages/Many")).send().unwrap();
    assert_eq!(head.status(), 301);
}
