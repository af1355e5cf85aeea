//! Pull-through with the real pip and uv against the in-process JSON upstream.

use std::time::Duration;

use crate::util::upstream::{MockFile, MockUpstream, upstream_with_app};
use crate::util::{Larder, assert_ok, hashes_in, http, pip, pip_download, sha256_hex, uv_install, venv_bin, wheel};

#[test]
fn pip_and_uv_install_through_larder_then_hit_only_the_cache() {
    let (up, expected) = upstream_with_app();
    let dir = tempfile::tempdir().unwrap();
    let larder = Larder::start(&dir.path().join("data"), &["--upstream", &up.simple_url()]);
    let scratch = tempfile::tempdir().unwrap();

    // pip download: the files' hashes match the upstream's.
    let dl = scratch.path().join("dl");
    let out = pip_download(scratch.path(), &larder.index(), &dl, "app==1.0");
    assert_ok(&out, "pip download");
    assert_eq!(hashes_in(&dl), expected);
    let cold = up.requests();
    assert!(cold.iter().any(|r| r.contains(".metadata")), "pip used PEP 658 metadata through Larder: {cold:?}");

    // pip install into a target dir.
    let target = scratch.path().join("pip-target");
    let out =
        pip(scratch.path(), &["install", "--index-url", &larder.index(), "--target", target.to_str().unwrap(), "app"]);
    assert_ok(&out, "pip install");
    assert!(target.join("app").join("__init__.py").is_file());
    assert!(target.join("lib_core").join("__init__.py").is_file());

    // uv pip install with a cold uv cache.
    let uv_target = scratch.path().join("uv-target");
    let out = uv_install(scratch.path(), &larder.index(), &uv_target, "app==1.0");
    assert_ok(&out, "uv pip install");
    assert!(uv_target.join("lib_core").join("__init__.py").is_file());

    // Everything again, with fresh client caches: the upstream sees nothing.
    up.clear_requests();
    let dl2 = scratch.path().join("dl2");
    assert_ok(&pip_download(scratch.path(), &larder.index(), &dl2, "app==1.0"), "pip download (warm)");
    assert_eq!(hashes_in(&dl2), expected);
    let uv2 = scratch.path().join("uv-target2");
    std::fs::remove_dir_all(scratch.path().join("uv-cache")).unwrap();
    let out = uv_install(scratch.path(), &larder.index(), &uv2, "app==1.0");
    assert_ok(&out, "uv pip install (warm)");
    assert_eq!(up.requests(), Vec::<String>::new(), "a warm install makes zero upstream requests");
}

#[test]
fn concurrent_clients_cause_one_upstream_request() {
    let up = MockUpstream::start();
    let (name, bytes) = wheel("popular", "1.0", &[]);
    up.add("popular", MockFile::new(&name, bytes.clone()));
    let dir = tempfile::tempdir().unwrap();
    let larder = Larder::start(dir.path(), &["--upstream", &up.simple_url()]);
    up.set_delay(Duration::from_millis(500));
    let sha = sha256_hex(&bytes);

    let page_url = larder.url("/simple/popular/");
    let file_url = larder.url(&format!("/files/{sha}/{name}"));
    let threads: Vec<_> = (0..12)
        .map(|i| {
            let (page_url, file_url) = (page_url.clone(), file_url.clone());
            std::thread::spawn(move || {
                if i % 2 == 0 {
                    let r = http().get(&page_url).send().unwrap();
                    assert_eq!(r.status(), 200);
                    r.bytes().unwrap().to_vec()
                } else {
                    let r = http().get(&file_url).send().unwrap();
                    assert_eq!(r.status(), 200);
                    r.bytes().unwrap().to_vec()
                }
            })
        })
        .collect();
    for (i, t) in threads.into_iter().enumerate() {
        let body = t.join().unwrap();
        if i % 2 == 1 {
            assert_eq!(sha256_hex(&body), sha, "every concurrent client gets the right bytes");
        }
    }
    assert_eq!(up.count("GET /simple/popular/"), 1, "{:?}", up.requests());
    assert_eq!(up.count_full(&format!("GET /files/{name}")), 1, "{:?}", up.requests());
    let metrics = http().get(larder.url("/metrics")).send().unwrap().text().unwrap();
    let waits: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("larder_coalesced_waits_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(waits >= 1, "coalesced waits are counted: {metrics}");
}

#[test]
fn up_04_hash_mismatch_stores_nothing_and_the_client_sees_an_error() {
    let up = MockUpstream::start();
    let (name, bytes) = wheel("tampered", "1.0", &[]);
    let claimed = sha256_hex(b"what the page promised");
    up.add("tampered", MockFile { advertised_sha256: Some(claimed.clone()), ..MockFile::new(&name, bytes) });
    let dir = tempfile::tempdir().unwrap();
    let larder = Larder::start(dir.path(), &["--upstream", &up.simple_url()]);
    let url = larder.url(&format!("/files/{claimed}/{name}"));
    for attempt in 1..=2 {
        match http().get(&url).send() {
            Ok(resp) if resp.status().is_success() => {
                assert!(resp.bytes().is_err(), "attempt {attempt}: a mismatching body must not complete");
            }
            Ok(resp) => assert_eq!(resp.status(), 502, "attempt {attempt}"),
            Err(_) => {}
        }
        assert_eq!(
            up.count_full(&format!("GET /files/{name}")),
            attempt,
            "nothing was stored, so each attempt asks again"
        );
    }
    let scratch = tempfile::tempdir().unwrap();
    let dl = scratch.path().join("dl");
    let out = pip_download(scratch.path(), &larder.index(), &dl, "tampered");
    assert!(!out.status.success(), "pip must not get a corrupt file");
    assert!(!dl.exists() || hashes_in(&dl).is_empty());
}

#[test]
fn route_08_stale_pages_when_upstream_is_down_and_restart_keeps_the_cache() {
    let (up, expected) = upstream_with_app();
    let dir = tempfile::tempdir().unwrap();
    let larder = Larder::start(&dir.path().join("data"), &["--upstream", &up.simple_url(), "--index-ttl", "1s"]);
    let scratch = tempfile::tempdir().unwrap();
    let dl = scratch.path().join("dl");
    assert_ok(&pip_download(scratch.path(), &larder.index(), &dl, "app==1.0"), "warm-up");

    up.set_down(true);
    std::thread::sleep(Duration::from_millis(1100)); // past index_ttl
    let resp = http().get(larder.url("/simple/app/")).send().unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-cache"], "STALE");
    assert!(larder.log().contains("serving the cached page stale"), "the operator sees it in the log");
    let dl2 = scratch.path().join("dl2");
    assert_ok(&pip_download(scratch.path(), &larder.index(), &dl2, "app==1.0"), "pip with upstream down");
    assert_eq!(hashes_in(&dl2), expected);

    // A restart keeps pages and files; the upstream is still down.
    let larder = larder.restart();
    let dl3 = scratch.path().join("dl3");
    assert_ok(&pip_download(scratch.path(), &larder.index(), &dl3, "app==1.0"), "pip after restart");
    assert_eq!(hashes_in(&dl3), expected);
    let out = uv_install(scratch.path(), &larder.index(), &scratch.path().join("t"), "app==1.0");
    assert_ok(&out, "uv after restart");
}

#[test]
fn offline_serves_the_cache_and_never_connects() {
    let (up, expected) = upstream_with_app();
    let dir = tempfile::tempdir().unwrap();
    let larder = Larder::start(&dir.path().join("data"), &["--upstream", &up.simple_url(), "--index-ttl", "1s"]);
    let scratch = tempfile::tempdir().unwrap();
    let dl = scratch.path().join("dl");
    assert_ok(&pip_download(scratch.path(), &larder.index(), &dl, "app==1.0"), "warm-up");
    drop(larder);

    // Offline, with the upstream still configured and reachable: not one request reaches it.
    std::thread::sleep(Duration::from_millis(1100)); // every cached page is past its TTL
    up.clear_requests();
    let larder = Larder::start_with_env(
        &dir.path().join("data"),
        &["--upstream", &up.simple_url(), "--index-ttl", "1s"],
        &[("LARDER_OFFLINE", "1")],
    );
    let dl2 = scratch.path().join("dl2");
    assert_ok(&pip_download(scratch.path(), &larder.index(), &dl2, "app==1.0"), "pip offline");
    assert_eq!(hashes_in(&dl2), expected);
    let out = uv_install(scratch.path(), &larder.index(), &scratch.path().join("t"), "app==1.0");
    assert_ok(&out, "uv offline");
    let resp = http().get(larder.url("/simple/never-cached/")).send().unwrap();
    assert_eq!(resp.status(), 404);
    assert!(resp.text().unwrap().contains("offline"), "the reason says Larder is offline");
    let resp = http().get(larder.url(&format!("/files/{}/never_cached-1.0.tar.gz", sha256_hex(b"x")))).send().unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(up.requests(), Vec::<String>::new(), "offline never connects upstream");
    assert!(larder.log().contains("offline"));
}

#[test]
fn serve_over_tls_to_pip_and_uv() {
    let (up, expected) = upstream_with_app();
    let dir = tempfile::tempdir().unwrap();
    let (ca_pem, cert_pem, key_pem) = crate::util::test_tls(dir.path());
    let larder = Larder::start(
        &dir.path().join("data"),
        &[
            "--upstream",
            &up.simple_url(),
            "--tls-cert",
            cert_pem.to_str().unwrap(),
            "--tls-key",
            key_pem.to_str().unwrap(),
        ],
    );
    assert!(larder.base.starts_with("https://127.0.0.1:"), "{}", larder.base);

    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::blocking::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(&ca_pem).unwrap()).unwrap())
        .build()
        .unwrap();
    let resp = client.get(larder.url("/simple/app/")).send().unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), reqwest::Version::HTTP_2, "ALPN negotiates h2");

    let scratch = tempfile::tempdir().unwrap();
    let dl = scratch.path().join("dl");
    let out = pip(
        scratch.path(),
        &[
            "download",
            "--cert",
            ca_pem.to_str().unwrap(),
            "--index-url",
            &larder.index(),
            "-d",
            dl.to_str().unwrap(),
            "app==1.0",
        ],
    );
    assert_ok(&out, "pip over https");
    assert_eq!(hashes_in(&dl), expected);
    let python = venv_bin("python");
    let mut cmd = std::process::Command::new(venv_bin("uv"));
    cmd.args([
        "pip",
        "install",
        "--python",
        python.to_str().unwrap(),
        "--target",
        scratch.path().join("t").to_str().unwrap(),
        "--index-url",
        &larder.index(),
        "app==1.0",
    ])
    .env("SSL_CERT_FILE", &ca_pem)
    .env("UV_CACHE_DIR", scratch.path().join("uv-cache"))
    .env("UV_NO_CONFIG", "1")
    .env("UV_PYTHON_DOWNLOADS", "never");
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "uv over https: {}", String::from_utf8_lossy(&out.stderr));
}
