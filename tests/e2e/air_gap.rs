//! The air gap (issue 4): warm from real lock files made by uv, export a bundle, import it on
//! the other side, serve it offline to pip and uv; tampered and truncated bundles are refused.

use std::path::Path;

use crate::util::upstream::{MockFile, MockUpstream, upstream_with_app};
use crate::util::{
    Larder, assert_ok, hashes_in, http, larder_quiet, pip_download, s, sha256_hex, uv, uv_install, venv_bin, wheel,
};

/// Lock files as uv writes them, resolved against the upstream itself.
fn make_locks(up: &MockUpstream, dir: &Path) {
    let python = venv_bin("python");
    let reqs = dir.join("requirements.in");
    std::fs::write(&reqs, "app\n").unwrap();
    let index = up.simple_url();
    for (out, format) in [("requirements.txt", "requirements.txt"), ("pylock.toml", "pylock.toml")] {
        let out_path = dir.join(out);
        let mut args = vec![
            "pip",
            "compile",
            "--python",
            s(&python),
            "--index-url",
            &index,
            "--format",
            format,
            "-o",
            s(&out_path),
            s(&reqs),
        ];
        if format == "requirements.txt" {
            args.push("--generate-hashes");
        }
        assert_ok(&uv(dir, &args), "uv pip compile");
    }
    let project = dir.join("project");
    std::fs::create_dir_all(&project).unwrap();
    std::fs::write(
        project.join("pyproject.toml"),
        "[project]\nname = \"demo\"\nversion = \"0.1\"\nrequires-python = \">=3.8\"\ndependencies = [\"app\"]\n",
    )
    .unwrap();
    let out = uv(dir, &["lock", "--directory", s(&project), "--python", s(&python), "--default-index", &index]);
    assert_ok(&out, "uv lock");
    std::fs::copy(project.join("uv.lock"), dir.join("uv.lock")).unwrap();
}

#[test]
fn warm_export_import_and_serve_offline() {
    let (up, expected) = upstream_with_app();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    make_locks(&up, w);
    let requirements = std::fs::read_to_string(w.join("requirements.txt")).unwrap();
    assert!(requirements.contains("--hash=sha256:"), "a hashed requirements file");

    // Warm from each kind of input.
    let (a, up_url) = (w.join("a"), up.simple_url());
    let out = larder_quiet(&["warm", "--data-dir", s(&a), "--upstream", &up_url, "-r", s(&w.join("requirements.txt"))]);
    assert_ok(&out, "warm -r");
    let summary = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(summary.contains("2 files fetched") && summary.contains("0 failed"), "{summary}");
    let again =
        larder_quiet(&["warm", "--data-dir", s(&a), "--upstream", &up_url, "-r", s(&w.join("requirements.txt"))]);
    assert!(String::from_utf8_lossy(&again.stdout).contains("2 already present"), "warm twice is harmless");
    for lock in ["uv.lock", "pylock.toml"] {
        let dir = w.join(format!("warm-{lock}"));
        let out = larder_quiet(&["warm", "--data-dir", s(&dir), "--upstream", &up_url, "--lock", s(&w.join(lock))]);
        assert_ok(&out, lock);
        assert!(String::from_utf8_lossy(&out.stdout).contains("2 files fetched"), "{lock}");
    }
    // A pin that cannot be satisfied: non-zero exit and the reason in the summary.
    let out = larder_quiet(&["warm", "--data-dir", s(&w.join("bad")), "--upstream", &up_url, "app==9.9"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("app==9.9: no such version"));

    // Export the whole store, and a selection by lock file.
    let bundle = w.join("bundle.tar.zst");
    assert_ok(&larder_quiet(&["export", "--data-dir", s(&a), "--output", s(&bundle)]), "export");
    let selected = w.join("selected.tar");
    assert_ok(
        &larder_quiet(&["export", "--data-dir", s(&a), "--output", s(&selected), "--lock", s(&w.join("uv.lock"))]),
        "export --lock",
    );

    // The other side of the gap: no upstream at all.
    up.set_down(true);
    let b = w.join("b");
    assert_ok(&larder_quiet(&["import", "--data-dir", s(&b), s(&bundle)]), "import");
    assert_ok(&larder_quiet(&["import", "--data-dir", s(&b), s(&bundle)]), "import twice");
    let c = w.join("c");
    assert_ok(&larder_quiet(&["import", "--data-dir", s(&c), s(&selected)]), "import the selection");
    for data in [&b, &c] {
        let server = Larder::start(data, &["--offline"]);
        let scratch = tempfile::tempdir().unwrap();
        let dl = scratch.path().join("dl");
        assert_ok(&pip_download(scratch.path(), &server.index(), &dl, "app"), "pip offline");
        assert_eq!(hashes_in(&dl), expected);
        let target = scratch.path().join("t");
        let out = uv_install(scratch.path(), &server.index(), &target, "app");
        assert_ok(&out, "uv offline");
        assert!(target.join("lib_core").join("__init__.py").is_file());
    }
}

#[test]
fn tampered_and_truncated_bundles_are_refused() {
    let (up, _) = upstream_with_app();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let a = w.join("a");
    assert_ok(
        &larder_quiet(&["warm", "--data-dir", s(&a), "--upstream", &up.simple_url(), "app==1.0", "lib-core==2.1"]),
        "warm",
    );
    let bundle = w.join("b.tar");
    assert_ok(&larder_quiet(&["export", "--data-dir", s(&a), "--output", s(&bundle)]), "export");
    let bytes = std::fs::read(&bundle).unwrap();

    // Flip one byte inside a wheel's body (found by its zip signature).
    let at = bytes.windows(4).position(|w| w == b"PK\x03\x04").unwrap() + 40;
    let mut tampered = bytes.clone();
    tampered[at] ^= 0xff;
    let bad = w.join("tampered.tar");
    std::fs::write(&bad, &tampered).unwrap();
    let truncated = w.join("truncated.tar");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();

    for (path, reason) in [(&bad, "does not match its sha256"), (&truncated, "truncated")] {
        let target = w.join(format!("into-{}", path.file_name().unwrap().to_string_lossy()));
        let out = larder_quiet(&["import", "--data-dir", s(&target), s(path)]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("nothing was imported") && err.contains(reason), "{err}");
        // Nothing of it is visible.
        let server = Larder::start(&target, &["--offline"]);
        assert_eq!(http().get(server.url("/simple/app/")).send().unwrap().status(), 404);
        assert_eq!(std::fs::read_dir(target.join("spool")).map(|d| d.count()).unwrap_or(0), 0, "staging removed");
    }
}

#[test]
fn metrics_count_a_miss_and_a_hit() {
    let (up, _) = upstream_with_app();
    let dir = tempfile::tempdir().unwrap();
    let server = Larder::start(dir.path(), &["--upstream", &up.simple_url(), "--metadata-prefetch", "false"]);
    let (name, bytes) = wheel("lib-core", "2.1", &[]);
    let url = server.url(&format!("/files/{}/{name}", sha256_hex(&bytes)));
    assert_eq!(http().get(server.url("/simple/lib-core/")).send().unwrap().status(), 200);
    for _ in 0..2 {
        assert_eq!(http().get(&url).send().unwrap().bytes().unwrap().len(), bytes.len());
    }
    let metrics = http().get(server.url("/metrics")).send().unwrap().text().unwrap();
    for line in [
        r#"larder_cache_total{kind="file",result="MISS"} 1"#,
        r#"larder_cache_total{kind="file",result="HIT"} 1"#,
        r#"larder_cache_total{kind="page",result="MISS"} "#,
        r#"larder_requests_total{route="file",status="200"} 2"#,
        r#"larder_upstream_requests_total{kind="file",upstream="default"} 1"#,
        r#"larder_bytes_served_total{source="cache"}"#,
        "larder_store_bytes ",
        "larder_upstream_seconds_bucket",
    ] {
        assert!(metrics.contains(line), "missing `{line}` in:\n{metrics}");
    }
}

#[test]
fn verify_finds_and_removes_a_file_corrupted_on_disk() {
    let (up, _) = upstream_with_app();
    let work = tempfile::tempdir().unwrap();
    let a = work.path().join("a");
    assert_ok(&larder_quiet(&["warm", "--data-dir", s(&a), "--upstream", &up.simple_url(), "lib-core==2.1"]), "warm");
    assert_ok(&larder_quiet(&["verify", "--data-dir", s(&a)]), "a clean store verifies");

    let (name, bytes) = wheel("lib-core", "2.1", &[]);
    let sha = sha256_hex(&bytes);
    let path = a.join("store/content-v2/sha256").join(&sha[..2]).join(&sha[2..4]).join(&sha[4..]);
    let mut on_disk = std::fs::read(&path).unwrap();
    on_disk[10] ^= 0x55;
    std::fs::write(&path, on_disk).unwrap();

    let out = larder_quiet(&["verify", "--data-dir", s(&a)]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("corrupt: {sha}")));
    let out = larder_quiet(&["verify", "--data-dir", s(&a), "--remove"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("corrupt, removed: {sha}")));
    assert_ok(&larder_quiet(&["verify", "--data-dir", s(&a)]), "after --remove the store verifies");
    // The next request fetches it again, correctly.
    let server = Larder::start(&a, &["--upstream", &up.simple_url()]);
    let body = http().get(server.url(&format!("/files/{sha}/{name}"))).send().unwrap().bytes().unwrap();
    assert_eq!(sha256_hex(&body), sha);
}

#[test]
fn eviction_keeps_the_store_under_its_limit_and_never_drops_private_uploads() {
    let up = MockUpstream::start();
    let mut files = Vec::new();
    for i in 1..=5 {
        // 300 KiB each, distinct bytes (not zips: no metadata is extracted).
        let bytes: Vec<u8> = (0..300 * 1024).map(|j| ((j * 7 + i * 13) % 251) as u8).collect();
        let name = format!("big-{i}.0-py3-none-any.whl");
        up.add("big", MockFile::new(&name, bytes.clone()));
        files.push((name, bytes));
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Larder::start_with_env(
        &data,
        &["--upstream", &up.simple_url(), "--max-store-size", "700KiB", "--metadata-prefetch", "false"],
        &[("LARDER_TOKEN", "evict-token-1")],
    );
    // A private upload, which must survive any eviction.
    let (pname, pbytes) = wheel("keep-me", "1.0", &[]);
    let (ct, body) = crate::util::multipart(&[("name", "keep-me"), ("version", "1.0")], Some((&pname, &pbytes)));
    let resp = http()
        .post(server.url("/legacy/"))
        .basic_auth("x", Some("evict-token-1"))
        .header("content-type", ct)
        .body(body)
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);

    let url = |(name, bytes): &(String, Vec<u8>)| server.url(&format!("/files/{}/{name}", sha256_hex(bytes)));
    let on_disk = |bytes: &[u8]| {
        let sha = sha256_hex(bytes);
        data.join("store/content-v2/sha256").join(&sha[..2]).join(&sha[2..4]).join(&sha[4..]).exists()
    };
    for f in &files {
        assert_eq!(http().get(url(f)).send().unwrap().bytes().unwrap().len(), f.1.len());
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let present: Vec<bool> = files.iter().map(|(_, b)| on_disk(b)).collect();
    assert_eq!(present, vec![false, false, false, true, true], "the least recently used went first");
    assert!(on_disk(&pbytes), "private uploads are never evicted");
    let private_url = server.url(&format!("/files/{}/{pname}", sha256_hex(&pbytes)));
    assert_eq!(http().get(private_url).send().unwrap().bytes().unwrap().as_ref(), pbytes.as_slice());
    // An evicted file is simply fetched again.
    assert_eq!(sha256_hex(&http().get(url(&files[0])).send().unwrap().bytes().unwrap()), sha256_hex(&files[0].1));
    let metrics = http().get(server.url("/metrics")).send().unwrap().text().unwrap();
    assert!(metrics.contains("larder_evictions_total"), "{metrics}");
}
