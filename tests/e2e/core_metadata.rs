//! Core metadata for every wheel (issue 6), behind an upstream that advertises none: extracted
//! when a wheel is cached, prefetched with range requests, and used by pip and uv.

use std::time::{Duration, Instant};

use crate::util::upstream::{MockFile, MockUpstream};
use crate::util::{Larder, assert_ok, http, pip_download, sha256_hex, uv, venv_bin, wheel, wheel_metadata};

const JSON: &str = "application/vnd.pypi.simple.v1+json";

fn page(larder: &Larder, name: &str) -> serde_json::Value {
    http().get(larder.url(&format!("/simple/{name}/"))).header("accept", JSON).send().unwrap().json().unwrap()
}

fn file<'a>(page: &'a serde_json::Value, filename: &str) -> &'a serde_json::Value {
    page["files"].as_array().unwrap().iter().find(|f| f["filename"] == filename).unwrap()
}

/// `app` → `lib-core`, `lib-extra`; no metadata advertised upstream.
fn upstream_without_metadata() -> (MockUpstream, Vec<(String, Vec<u8>)>) {
    let up = MockUpstream::start();
    let mut wheels = Vec::new();
    for (project, version, deps) in
        [("app", "1.0", vec!["lib-core>=2", "lib-extra"]), ("lib-core", "2.1", vec![]), ("lib-extra", "0.3", vec![])]
    {
        let w = wheel(project, version, &deps);
        up.add(project, MockFile::new(&w.0, w.1.clone()));
        wheels.push(w);
    }
    (up, wheels)
}

/// `uv pip compile` of `app` (from `upstream_without_metadata`) through `larder`, with a cold
/// cache; checks that it resolved the whole tree.
fn uv_compile_app(scratch: &std::path::Path, larder: &Larder) {
    let reqs = scratch.join("requirements.in");
    std::fs::write(&reqs, "app\n").unwrap();
    let python = venv_bin("python");
    let args = [
        "pip",
        "compile",
        "--python",
        python.to_str().unwrap(),
        "--index-url",
        &larder.index(),
        reqs.to_str().unwrap(),
    ];
    let out = uv(scratch, &args);
    assert_ok(&out, "uv pip compile");
    let resolved = String::from_utf8_lossy(&out.stdout);
    assert!(resolved.contains("lib-core==2.1") && resolved.contains("lib-extra==0.3"), "{resolved}");
}

/// Counts the wheel bodies (not `.metadata`) Larder served, from its request log: GET lines
/// whose `path=` field ends in `.whl`. (An earlier version matched `.whl peer=`, which stopped
/// occurring when the span gained fields, so it always counted 0; the warm-up below now
/// checks that this counts what it should.)
fn wheel_downloads(log: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("served") && l.contains("method=GET"))
        .filter(|l| l.split([' ', '{', '}']).any(|w| w.starts_with("path=") && w.ends_with(".whl")))
        .count()
}

#[test]
fn extracted_metadata_is_advertised_and_uv_compile_downloads_no_wheels() {
    let (up, wheels) = upstream_without_metadata();
    let dir = tempfile::tempdir().unwrap();
    let larder = Larder::start(dir.path(), &["--upstream", &up.simple_url(), "--metadata-prefetch", "false"]);
    let scratch = tempfile::tempdir().unwrap();
    let dl = scratch.path().join("dl");
    assert_ok(&pip_download(scratch.path(), &larder.index(), &dl, "app"), "warm-up");
    assert_eq!(wheel_downloads(&larder.log()), 3, "the counter sees the warm-up's three wheel downloads");

    // Every cached wheel now advertises metadata whose bytes are the wheel's METADATA (it is
    // extracted just after each download completes).
    for (filename, bytes) in &wheels {
        let project = filename.split('-').next().unwrap().replace('_', "-");
        let deadline = Instant::now() + Duration::from_secs(5);
        let p = loop {
            let p = page(&larder, &project);
            if file(&p, filename).get("core-metadata").is_some() || Instant::now() > deadline {
                break p;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let md_sha = file(&p, filename)["core-metadata"]["sha256"].as_str().expect("metadata advertised").to_string();
        let html = http().get(larder.url(&format!("/simple/{project}/"))).send().unwrap().text().unwrap();
        assert!(html.contains(&format!(r#"data-core-metadata="sha256={md_sha}""#)), "HTML too");
        let url = larder.url(&format!("/files/{}/{filename}.metadata", sha256_hex(bytes)));
        let served = http().get(url).send().unwrap().bytes().unwrap();
        assert_eq!(sha256_hex(&served), md_sha);
        assert_eq!(served.as_ref(), wheel_metadata(bytes).as_slice());
    }
    assert_eq!(up.count(".metadata"), 0, "the upstream has no metadata files and is never asked for them");

    // A cold uv resolves through the warm Larder without a single wheel body.
    let before = wheel_downloads(&larder.log());
    uv_compile_app(scratch.path(), &larder);
    assert_eq!(wheel_downloads(&larder.log()) - before, 0, "uv read .metadata only");
    // And pip, with a fresh cache, fetches .metadata too.
    let log_before = larder.log().len();
    let dl2 = scratch.path().join("dl2");
    assert_ok(&pip_download(scratch.path(), &larder.index(), &dl2, "app"), "pip again");
    assert!(larder.log()[log_before..].contains(".whl.metadata"), "pip used PEP 658 through Larder");
}

#[test]
fn prefetch_fills_the_newest_versions_with_range_requests_only() {
    let up = MockUpstream::start();
    let mut files = Vec::new();
    for v in ["1.0", "2.0", "3.0", "4.0"] {
        let w = wheel("many-versions", v, &[]);
        up.add("many-versions", MockFile::new(&w.0, w.1.clone()));
        files.push(w);
    }
    let dir = tempfile::tempdir().unwrap();
    let larder = Larder::start(dir.path(), &["--upstream", &up.simple_url(), "--metadata-prefetch-versions", "2"]);
    let first = page(&larder, "many-versions");
    // Not delayed by the prefetch: advertised on demand (`true`, issue 11), no hash yet.
    assert_eq!(file(&first, &files[3].0)["core-metadata"], serde_json::Value::Bool(true), "{first}");

    let deadline = Instant::now() + Duration::from_secs(15);
    let p = loop {
        let p = page(&larder, "many-versions");
        let hashed = |name: &str| file(&p, name)["core-metadata"].get("sha256").is_some();
        if hashed(&files[2].0) && hashed(&files[3].0) {
            break p;
        }
        assert!(Instant::now() < deadline, "metadata was not prefetched: {:?}", up.requests());
        std::thread::sleep(Duration::from_millis(100));
    };
    for (name, bytes) in &files[2..] {
        let md_sha = file(&p, name)["core-metadata"]["sha256"].as_str().unwrap();
        assert_eq!(md_sha, sha256_hex(&wheel_metadata(bytes)));
        let requests: Vec<String> = up.requests().into_iter().filter(|r| r.contains(name.as_str())).collect();
        assert!(!requests.is_empty());
        assert!(requests.iter().all(|r| r.contains(" range=bytes=")), "range requests only: {requests:?}");
    }
    for (name, _) in &files[..2] {
        // Older versions are left alone: advertised on demand only, not read ahead.
        assert_eq!(file(&p, name)["core-metadata"], serde_json::Value::Bool(true), "older versions are left alone");
        assert_eq!(up.count(name), 0);
    }
    // The prefetched metadata is served, and the wheel was never downloaded whole.
    let url = larder.url(&format!("/files/{}/{}.metadata", sha256_hex(&files[3].1), files[3].0));
    assert_eq!(http().get(url).send().unwrap().bytes().unwrap().as_ref(), wheel_metadata(&files[3].1).as_slice());
    let metrics = http().get(larder.url("/metrics")).send().unwrap().text().unwrap();
    assert!(metrics.contains("larder_metadata_prefetch_total{result=\"stored\"} 2"), "{metrics}");
}

#[test]
fn a_corrupt_wheel_gets_no_metadata_and_no_error_page() {
    let up = MockUpstream::start();
    let bytes = b"this is not a zip file at all".to_vec();
    let name = "broken-1.0-py3-none-any.whl";
    up.add("broken", MockFile::new(name, bytes.clone()));
    let dir = tempfile::tempdir().unwrap();
    let larder = Larder::start(dir.path(), &["--upstream", &up.simple_url()]);
    let _ = page(&larder, "broken");
    let url = larder.url(&format!("/files/{}/{name}", sha256_hex(&bytes)));
    let resp = http().get(&url).send().unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().unwrap().as_ref(), bytes.as_slice());
    std::thread::sleep(Duration::from_millis(300));
    let p = page(&larder, "broken");
    assert_eq!(p["files"][0]["filename"], name);
    assert!(p["files"][0].get("core-metadata").is_none());
    assert_eq!(http().get(format!("{url}.metadata")).send().unwrap().status(), 404);
    assert!(larder.log().contains("wheel has no readable METADATA"), "logged once");
    assert_eq!(larder.log().matches("wheel has no readable METADATA").count(), 1);
}

/// Issue 11: a cold Larder, no metadata anywhere, no prefetch. uv reads each wheel's METADATA
/// with HEAD and Range requests; Larder passes them to the upstream and downloads no wheel
/// whole for a resolve. The same range asked by many clients at once is one upstream request.
#[test]
fn cold_ranges_pass_through_and_uv_compile_downloads_no_wheels() {
    let (up, wheels) = upstream_without_metadata();
    let dir = tempfile::tempdir().unwrap();
    let larder = Larder::start(dir.path(), &["--upstream", &up.simple_url(), "--metadata-prefetch", "false"]);
    let scratch = tempfile::tempdir().unwrap();
    uv_compile_app(scratch.path(), &larder);
    let whole = |r: &&String| r.starts_with("GET ") && r.contains(".whl") && !r.contains(" range=");
    assert_eq!(up.requests().iter().filter(whole).count(), 0, "no wheel downloaded whole: {:?}", up.requests());
    assert!(up.requests().iter().any(|r| r.contains(".whl range=")), "uv's ranges went upstream");
    assert!(!larder.log().contains("stored file from upstream"), "nothing was downloaded into the store");

    // Sixteen clients asking for the same range of a slow upstream: one upstream request.
    let (filename, bytes) = &wheels[1];
    let url = larder.url(&format!("/files/{}/{filename}", sha256_hex(bytes)));
    up.clear_requests();
    up.set_delay(Duration::from_millis(300));
    let answers: Vec<Vec<u8>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..16)
            .map(|_| {
                s.spawn(|| http().get(&url).header("range", "bytes=10-19").send().unwrap().bytes().unwrap().to_vec())
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    up.set_delay(Duration::ZERO);
    assert!(answers.iter().all(|a| a.as_slice() == &bytes[10..20]));
    assert_eq!(up.count("range=bytes=10-19"), 1, "{:?}", up.requests());
    // A range too large to pass through downloads the file whole (and serves it from the store).
    let resp = http().get(&url).header("range", format!("bytes=0-{}", bytes.len() - 1)).send().unwrap();
    assert_eq!(resp.status(), 206);
    assert_eq!(resp.bytes().unwrap().as_ref(), bytes.as_slice());
}

/// Issue 11: every wheel advertises `.metadata` (`true` until its hash is known) and Larder
/// serves it on demand, also from an upstream without range support (then from the whole,
/// hash-checked wheel). pip (CLI-pip-4: `"true"` means no hash) and uv (CLI-uv-5: a truthy
/// `core-metadata` means `GET .metadata`) resolve with it; the hash is advertised afterwards.
#[test]
fn every_wheel_advertises_metadata_served_on_demand_even_without_upstream_ranges() {
    let (up, wheels) = upstream_without_metadata();
    up.state.lock().unwrap().no_ranges = true;
    let (sd, sd_bytes) = crate::util::sdist("lib-extra", "0.2");
    up.add("lib-extra", MockFile::new(&sd, sd_bytes));
    let dir = tempfile::tempdir().unwrap();
    let larder = Larder::start(dir.path(), &["--upstream", &up.simple_url(), "--metadata-prefetch", "false"]);
    let p = page(&larder, "lib-extra");
    assert_eq!(file(&p, &wheels[2].0)["core-metadata"], serde_json::Value::Bool(true), "{p}");
    assert!(file(&p, &sd).get("core-metadata").is_none(), "never for an sdist (MD-05)");
    let html = http().get(larder.url("/simple/lib-extra/")).send().unwrap().text().unwrap();
    assert!(html.contains(r#"data-dist-info-metadata="true" data-core-metadata="true""#), "{html}");
    assert_eq!(html.matches("data-core-metadata").count(), 1, "{html}");

    // pip resolves the whole tree from `.metadata` alone (a dry run downloads no wheel).
    let scratch = tempfile::tempdir().unwrap();
    let report = scratch.path().join("report.json");
    let out = crate::util::pip(
        scratch.path(),
        &[
            "install",
            "--dry-run",
            "--ignore-installed",
            "--report",
            report.to_str().unwrap(),
            "--index-url",
            &larder.index(),
            "app",
        ],
    );
    assert_ok(&out, "pip install --dry-run");
    let report = std::fs::read_to_string(&report).unwrap();
    assert!(report.contains("lib-core") && report.contains("lib-extra"), "{report}");
    let log = larder.log();
    assert!(log.contains(".whl.metadata"), "pip asked for .metadata");
    assert!(log.contains("cannot read METADATA by ranges; downloading the wheel"), "the fallback ran");
    // Every wheel was read once, whole and hash-checked, by Larder; now the hash is advertised.
    for (filename, bytes) in &wheels {
        assert_eq!(up.count_full(&format!("GET /files/{filename}")), 1, "{:?}", up.requests());
        let project = filename.split('-').next().unwrap().replace('_', "-");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let p = page(&larder, &project);
            if let Some(sha) = file(&p, filename)["core-metadata"].get("sha256").and_then(|v| v.as_str()) {
                assert_eq!(sha, sha256_hex(&wheel_metadata(bytes)));
                break;
            }
            assert!(Instant::now() < deadline, "the hash was never advertised: {p}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Issue 11: with an HTML upstream (no sizes on its pages) that answers suffix ranges, a
/// small wheel's METADATA on demand costs one upstream request: the tail, by a suffix range,
/// holds the central directory and the member; no HEAD first.
#[test]
fn metadata_on_demand_from_an_html_upstream_is_one_suffix_range() {
    let (up, wheels) = upstream_without_metadata();
    {
        let mut st = up.state.lock().unwrap();
        st.html_only = true;
        st.suffix_ranges = true;
    }
    let dir = tempfile::tempdir().unwrap();
    let larder = Larder::start(dir.path(), &["--upstream", &up.simple_url(), "--metadata-prefetch", "false"]);
    let (filename, bytes) = &wheels[1];
    let _ = http().get(larder.url("/simple/lib-core/")).send().unwrap();
    up.clear_requests();
    let url = larder.url(&format!("/files/{}/{filename}.metadata", sha256_hex(bytes)));
    let resp = http().get(url).send().unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().unwrap().as_ref(), wheel_metadata(bytes).as_slice());
    let asked: Vec<String> = up.requests().into_iter().filter(|r| r.contains(filename.as_str())).collect();
    assert_eq!(asked, vec![format!("GET /files/{filename} range=bytes=-32768")], "one suffix range, no HEAD");
}
