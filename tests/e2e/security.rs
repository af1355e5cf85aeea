//! Attacks on a running Larder (issue 9), one test per hole: each reproduces the attack the way
//! the security review found it, and checks that it now fails safely.

use std::io::Write;
use std::path::Path;

use crate::util::upstream::{MockFile, MockUpstream};
use crate::util::{Larder, assert_ok, http, larder_quiet, s, sha256_hex, wheel};

/// A tar entry written with its name bytes exactly as given (tar::Builder refuses `..` and
/// absolute paths, which is the point of the attack).
fn raw_entry(tar: &mut tar::Builder<impl Write>, name: &[u8], kind: tar::EntryType, data: &[u8]) {
    let mut header = tar::Header::new_old();
    header.as_old_mut().name[..name.len()].copy_from_slice(name);
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_entry_type(kind);
    if kind == tar::EntryType::Symlink {
        header.set_link_name("/etc/passwd").unwrap();
    }
    header.set_cksum();
    tar.append(&header, data).unwrap();
}

/// One tar entry: name bytes, type, data.
type Entry = (Vec<u8>, tar::EntryType, Vec<u8>);

/// A bundle with this manifest and these entries, in order after `manifest.json`.
fn bundle(path: &Path, manifest: serde_json::Value, entries: &[(&[u8], tar::EntryType, &[u8])]) {
    let mut tar = tar::Builder::new(std::fs::File::create(path).unwrap());
    let text = serde_json::to_vec(&manifest).unwrap();
    raw_entry(&mut tar, b"manifest.json", tar::EntryType::Regular, &text);
    for (name, kind, data) in entries {
        raw_entry(&mut tar, name, *kind, data);
    }
    tar.finish().unwrap();
}

fn manifest(blobs: serde_json::Value, records: serde_json::Value) -> serde_json::Value {
    serde_json::json!({"format": "larder-bundle", "version": 1, "created": "now", "blobs": blobs, "records": records})
}

fn record_entry(key: &str, body: &[u8]) -> serde_json::Value {
    serde_json::json!({"key": key, "sha256": sha256_hex(body), "size": body.len()})
}

#[test]
fn import_never_writes_outside_its_staging_dir_nor_imports_unchecked_records() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let victim = w.join("victim");
    std::fs::create_dir_all(&victim).unwrap();
    let escape_abs = victim.join("pwned-absolute");
    let abs = escape_abs.to_str().unwrap().to_string();
    let data = b"attacker bytes";
    let sha = sha256_hex(data);
    let hex_alias = "ab".repeat(32);
    let page_body = |md: &str| {
        serde_json::json!({"page": {"name": "demo", "files": [{"filename": "demo-1.0-py3-none-any.whl",
            "url": "http://127.0.0.1:9/demo-1.0-py3-none-any.whl", "hashes": {"sha256": sha}, "core_metadata": md}]},
            "validators": {}, "confirmed_unix": 1})
        .to_string()
    };
    let evil_page = page_body("\"><script>alert(1)</script>");
    // A private record that claims someone else's file by hash, without carrying its bytes.
    let claim = serde_json::json!({"files": [{"filename": "demo-1.0-py3-none-any.whl", "version": "1.0",
        "sha256": "cd".repeat(32), "md5": "0".repeat(32), "blake2_256": "0".repeat(64), "size": 1,
        "upload_time": "t", "requires_python": null, "metadata_sha256": null}]})
    .to_string();
    let cases: Vec<(&str, serde_json::Value, Vec<Entry>)> = vec![
        // The review's reproduction: a blob "sha256" that is an absolute path.
        (
            "absolute blob path",
            manifest(serde_json::json!([{"sha256": abs, "size": data.len()}]), serde_json::json!([])),
            vec![(format!("blobs/{abs}").into_bytes(), tar::EntryType::Regular, data.to_vec())],
        ),
        (
            "dot-dot blob path",
            manifest(
                serde_json::json!([{"sha256": "../../victim/pwned-dotdot", "size": data.len()}]),
                serde_json::json!([]),
            ),
            vec![(b"blobs/../../victim/pwned-dotdot".to_vec(), tar::EntryType::Regular, data.to_vec())],
        ),
        (
            "symlink entry",
            manifest(serde_json::json!([{"sha256": sha, "size": 0}]), serde_json::json!([])),
            vec![(format!("blobs/{sha}").into_bytes(), tar::EntryType::Symlink, Vec::new())],
        ),
        (
            "more bytes than the manifest says",
            manifest(serde_json::json!([{"sha256": sha, "size": 4}]), serde_json::json!([])),
            vec![(format!("blobs/{sha}").into_bytes(), tar::EntryType::Regular, data.to_vec())],
        ),
        (
            "alias record whose body is a path",
            manifest(
                serde_json::json!([]),
                serde_json::json!([record_entry(&format!("alias/u-{hex_alias}"), b"../../../../etc/passwd")]),
            ),
            vec![(b"records/0".to_vec(), tar::EntryType::Regular, b"../../../../etc/passwd".to_vec())],
        ),
        (
            "alias record shorter than 4 bytes",
            manifest(serde_json::json!([]), serde_json::json!([record_entry(&format!("alias/u-{hex_alias}"), b"ab")])),
            vec![(b"records/0".to_vec(), tar::EntryType::Regular, b"ab".to_vec())],
        ),
        (
            "page record with markup for a metadata hash",
            manifest(serde_json::json!([]), serde_json::json!([record_entry("page/demo", evil_page.as_bytes())])),
            vec![(b"records/0".to_vec(), tar::EntryType::Regular, evil_page.as_bytes().to_vec())],
        ),
        (
            "private record that does not parse",
            manifest(serde_json::json!([]), serde_json::json!([record_entry("private/default/demo", b"{nope")])),
            vec![(b"records/0".to_vec(), tar::EntryType::Regular, b"{nope".to_vec())],
        ),
        (
            "private record naming a blob the bundle does not carry",
            manifest(
                serde_json::json!([]),
                serde_json::json!([record_entry("private/default/demo", claim.as_bytes())]),
            ),
            vec![(b"records/0".to_vec(), tar::EntryType::Regular, claim.as_bytes().to_vec())],
        ),
        (
            "record key outside the known kinds",
            manifest(serde_json::json!([]), serde_json::json!([record_entry("../../etc/x", b"")])),
            vec![(b"records/0".to_vec(), tar::EntryType::Regular, Vec::new())],
        ),
    ];
    for (i, (what, manifest, entries)) in cases.into_iter().enumerate() {
        let path = w.join(format!("evil-{i}.tar"));
        let entries: Vec<(&[u8], tar::EntryType, &[u8])> =
            entries.iter().map(|(n, k, d)| (n.as_slice(), *k, d.as_slice())).collect();
        bundle(&path, manifest, &entries);
        let data_dir = w.join(format!("data-{i}"));
        let out = larder_quiet(&["import", "--data-dir", s(&data_dir), s(&path)]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{what}: import must fail\n{err}");
        assert!(err.contains("nothing was imported"), "{what}: {err}");
        assert!(!err.contains("panicked"), "{what}: {err}");
        assert_eq!(std::fs::read_dir(&victim).unwrap().count(), 0, "{what}: a file was created outside staging");
        let leftovers = std::fs::read_dir(data_dir.join("spool")).map(|d| d.count()).unwrap_or(0);
        assert_eq!(leftovers, 0, "{what}: staging is removed");
        let store = data_dir.join("store");
        // Opening the store stamped its format (issue 27); nothing else is there.
        let keys: Vec<String> = cacache::index::ls(&store).filter_map(Result::ok).map(|m| m.key).collect();
        assert!(keys.iter().all(|k| k == "store-format"), "{what}: no record was imported: {keys:?}");
    }
}

#[test]
fn a_damaged_private_record_is_skipped_at_start_up_and_its_name_stays_private() {
    let up = MockUpstream::start();
    let (name, bytes) = wheel("claimed", "1.0", &[]);
    up.add("claimed", MockFile::new(&name, bytes));
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    cacache::write_sync(&store, "private/default/claimed", b"{not json").unwrap();
    cacache::write_sync(&store, format!("alias/u-{}", "ab".repeat(32)), b"ab").unwrap();
    let server = Larder::start(dir.path(), &["--upstream", &up.simple_url()]);
    assert!(server.log().contains("private record is damaged"), "{}", server.log());
    let resp = http().get(server.url("/simple/claimed/")).send().unwrap();
    assert_eq!(resp.status(), 200, "the name is still claimed: served from its (empty) private record");
    assert!(!resp.text().unwrap().contains(".whl"));
    assert_eq!(up.count("/simple/claimed/"), 0, "a damaged private record never hands its name to the upstream");
    // A short alias body once panicked `content_path`; now it is a miss like any other.
    let resp = http().get(server.url(&format!("/files/u-{}/x-1.0.tar.gz", "ab".repeat(32)))).send().unwrap();
    assert_eq!(resp.status(), 404);
    let out = larder_quiet(&["verify", "--data-dir", s(dir.path())]);
    assert!(!out.status.success());
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains("unreadable record: private/default/claimed"), "{report}");
    assert!(report.contains("unreadable record: alias/u-"), "{report}");
}

#[test]
fn a_good_bundle_still_imports() {
    // The hardening refuses attacks, not Larder's own bundles (also covered in air_gap and sizes).
    let up = MockUpstream::start();
    let (name, bytes) = wheel("good", "1.0", &[]);
    up.add("good", MockFile::new(&name, bytes));
    let work = tempfile::tempdir().unwrap();
    let a = work.path().join("a");
    assert_ok(&larder_quiet(&["warm", "--data-dir", s(&a), "--upstream", &up.simple_url(), "good==1.0"]), "warm");
    let b = work.path().join("b.tar");
    assert_ok(&larder_quiet(&["export", "--data-dir", s(&a), "--output", s(&b)]), "export");
    assert_ok(&larder_quiet(&["import", "--data-dir", s(&work.path().join("c")), s(&b)]), "import");
}

/// Every file under the data dir, concatenated: to look for a secret anywhere on disk.
fn everything_on_disk(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.extend(std::fs::read(&p).unwrap_or_default());
            }
        }
    }
    out
}

#[test]
fn upstream_credentials_never_reach_clients_logs_or_disk() {
    use base64::Engine;
    let secret = "s3cret-upstream-pw";
    // The review's reproduction: an unreachable upstream with credentials in its URL.
    let dir = tempfile::tempdir().unwrap();
    let server = Larder::start(dir.path(), &["--upstream", &format!("http://u:{secret}@127.0.0.1:9/simple/")]);
    let resp = http().get(server.url("/simple/x/")).send().unwrap();
    assert_eq!(resp.status(), 502);
    let body = resp.text().unwrap();
    assert!(body.contains("127.0.0.1:9"), "the error still names the upstream: {body}");
    assert!(!body.contains(secret), "502 body: {body}");
    assert!(!server.log().contains(secret), "log:\n{}", server.log());

    // A private upstream that needs them: from the URL, and from the separate settings.
    let up = MockUpstream::start();
    let (name, bytes) = wheel("behind-auth", "1.0", &[]);
    up.add("behind-auth", MockFile::new(&name, bytes.clone()));
    let basic = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("u:{secret}")));
    up.state.lock().unwrap().require_authorization = Some(basic);
    let in_url = up.simple_url().replace("http://", &format!("http://u:{secret}@"));
    let env_dir = tempfile::tempdir().unwrap();
    let servers = [
        Larder::start(dir.path(), &["--upstream", &in_url]),
        Larder::start_with_env(
            env_dir.path(),
            &["--upstream", &up.simple_url(), "--upstream-username", "u"],
            &[("LARDER_UPSTREAM_PASSWORD", secret)],
        ),
    ];
    for server in &servers {
        let resp = http().get(server.url(&format!("/files/{}/{name}", sha256_hex(&bytes)))).send().unwrap();
        assert_eq!(resp.status(), 200, "pages and files are fetched with the credentials");
        assert_eq!(sha256_hex(&resp.bytes().unwrap()), sha256_hex(&bytes));
        assert!(!server.log().contains(secret));
    }
    drop(servers);
    for d in [dir.path(), env_dir.path()] {
        let disk = everything_on_disk(d);
        assert!(!disk.windows(secret.len()).any(|w| w == secret.as_bytes()), "the secret is stored on disk");
    }
}

#[test]
fn a_hostile_upstream_cannot_point_larder_at_internal_addresses_or_fill_its_disk() {
    let up = MockUpstream::start();
    let work = tempfile::tempdir().unwrap();
    // A page listing files on the cloud metadata service and the internal network, a redirect
    // there, a file bigger than its listed size, and one with no size at all.
    let (ok_name, ok_bytes) = wheel("hostile", "1.0", &[]);
    let big: Vec<u8> = vec![7u8; 300 * 1024];
    let big_sha = sha256_hex(&big);
    let unsized_big: Vec<u8> = vec![8u8; 300 * 1024];
    let unsized_sha = sha256_hex(&unsized_big);
    let files = serde_json::json!([
        {"filename": "hostile-0.1.tar.gz", "url": "http://169.254.169.254/latest/meta-data/x.tar.gz", "hashes": {"sha256": "ab".repeat(32)}},
        {"filename": "hostile-0.2.tar.gz", "url": "http://10.0.0.1/x.tar.gz", "hashes": {"sha256": "cd".repeat(32)}},
        {"filename": "hostile-0.3.tar.gz", "url": "/redirect/x.tar.gz", "hashes": {"sha256": "ef".repeat(32)}},
        {"filename": "hostile-0.4.tar.gz", "url": "/big/hostile-0.4.tar.gz", "hashes": {"sha256": big_sha}, "size": 1000},
        {"filename": "hostile-0.5.tar.gz", "url": "/chunked/hostile-0.5.tar.gz", "hashes": {"sha256": unsized_sha}},
        {"filename": ok_name, "url": format!("/files/{ok_name}"), "hashes": {"sha256": sha256_hex(&ok_bytes)}},
    ]);
    let page = serde_json::json!({"meta": {"api-version": "1.0"}, "name": "hostile", "files": files}).to_string();
    {
        let mut st = up.state.lock().unwrap();
        let json = vec![("content-type", "application/vnd.pypi.simple.v1+json".to_string())];
        st.raw.insert("/simple/hostile/".into(), (json.clone(), page.into_bytes()));
        st.redirects.insert("/redirect/x.tar.gz".into(), "http://169.254.169.254/latest/meta-data/".into());
        let octets = vec![("content-type", "application/octet-stream".to_string())];
        st.raw.insert("/big/hostile-0.4.tar.gz".into(), (octets.clone(), big.clone()));
        let chunked = vec![("content-type", "application/octet-stream".to_string()), ("x-mock-chunked", "1".into())];
        st.raw.insert("/chunked/hostile-0.5.tar.gz".into(), (chunked, unsized_big.clone()));
        // A gzip bomb: 64 MiB of zeros, about 64 KiB on the wire.
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let zeros = vec![b' '; 1024 * 1024];
        for _ in 0..64 {
            gz.write_all(&zeros).unwrap();
        }
        let bomb = gz.finish().unwrap();
        assert!(bomb.len() < 1024 * 1024);
        let mut headers = json;
        headers.push(("content-encoding", "gzip".to_string()));
        st.raw.insert("/simple/bomb/".into(), (headers, bomb));
    }
    up.add("hostile", MockFile::new(&ok_name, ok_bytes.clone()));
    let server = Larder::start(
        work.path(),
        &["--upstream", &up.simple_url(), "--max-page-size", "8MiB", "--max-file-size", "100KiB"],
    );
    let get = |file: &str, sha: &str| http().get(server.url(&format!("/files/{sha}/{file}"))).send().unwrap();
    for (file, sha) in [("hostile-0.1.tar.gz", "ab".repeat(32)), ("hostile-0.2.tar.gz", "cd".repeat(32))] {
        let resp = get(file, &sha);
        assert_eq!(resp.status(), 502, "{file}");
        assert!(resp.text().unwrap().contains("internal address"), "{file}");
    }
    let resp = get("hostile-0.3.tar.gz", &"ef".repeat(32));
    assert_eq!(resp.status(), 502, "a redirect to the metadata service");
    assert!(resp.text().unwrap().contains("internal address"));
    for (file, sha) in [("hostile-0.4.tar.gz", &big_sha), ("hostile-0.5.tar.gz", &unsized_sha)] {
        // A 502, or a body cut short (the limit may be hit while streaming): never the bytes.
        let outcome = http()
            .get(server.url(&format!("/files/{sha}/{file}")))
            .send()
            .and_then(|r| Ok((r.status(), r.bytes()?.len())));
        if let Ok((status, len)) = outcome {
            assert_eq!(status, 502, "{file}: more bytes than allowed ({len} bytes sent)");
        }
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    let stored =
        work.path().join("store/content-v2/sha256").join(&big_sha[..2]).join(&big_sha[2..4]).join(&big_sha[4..]);
    assert!(!stored.exists(), "nothing past the limit is stored");
    assert_eq!(std::fs::read_dir(work.path().join("spool")).unwrap().count(), 0, "no spool leftovers");
    // The page bomb is refused at the limit, not decompressed into memory.
    let resp = http().get(server.url("/simple/bomb/")).send().unwrap();
    assert_eq!(resp.status(), 502);
    assert!(resp.text().unwrap().contains("max_page_size"));
    // The well-behaved file on the same page still works.
    assert_eq!(get(&ok_name, &sha256_hex(&ok_bytes)).status(), 200);
}

#[test]
fn upstream_concurrency_is_bounded_for_any_number_of_anonymous_clients() {
    let up = MockUpstream::start();
    for i in 0..12 {
        let (name, bytes) = wheel(&format!("many-{i}"), "1.0", &[]);
        up.add(&format!("many-{i}"), MockFile::new(&name, bytes));
    }
    up.set_delay(std::time::Duration::from_millis(200));
    let dir = tempfile::tempdir().unwrap();
    let server = Larder::start(
        dir.path(),
        &["--upstream", &up.simple_url(), "--max-upstream-connections", "2", "--metadata-prefetch", "false"],
    );
    std::thread::scope(|scope| {
        for i in 0..12 {
            let url = server.url(&format!("/simple/many-{i}/"));
            scope.spawn(move || assert_eq!(http().get(url).send().unwrap().status(), 200));
        }
    });
    assert!(up.state.lock().unwrap().max_inflight <= 2, "at most 2 upstream requests at once");
    // A file miss with a long legacy sdist name tries a few candidate projects, not dozens.
    up.clear_requests();
    let long = format!("{}-1.0.tar.gz", (0..30).map(|i| format!("w{i}")).collect::<Vec<_>>().join("-"));
    let resp = http().get(server.url(&format!("/files/{}/{long}", "ab".repeat(32)))).send().unwrap();
    assert_eq!(resp.status(), 404);
    assert!(up.count("GET /simple/") <= 3, "{:?}", up.requests());
    // Names have a length limit.
    let resp = http().get(server.url(&format!("/simple/{}/", "a".repeat(300)))).send().unwrap();
    assert_eq!(resp.status(), 400);
}

/// POSTs a legacy upload of `(filename, bytes)` for `name` 1.0 with `token`.
fn upload(server: &Larder, token: &str, name: &str, file: (&str, &[u8])) -> reqwest::blocking::Response {
    upload_to(&server.url("/legacy/"), token, name, file)
}

/// The same to any upload URL (a GitLab-style project's).
fn upload_to(url: &str, token: &str, name: &str, file: (&str, &[u8])) -> reqwest::blocking::Response {
    let (ct, body) = crate::util::multipart(&[("name", name), ("version", "1.0")], Some(file));
    http().post(url).basic_auth("x", Some(token)).header("content-type", ct).body(body).send().unwrap()
}

#[test]
fn one_crafted_upload_cannot_exhaust_memory() {
    // An sdist whose first tar record is a GNU long name declaring 16 GiB, followed by 64 MiB
    // of zeros: a few dozen KiB on the wire.
    let mut tar = Vec::new();
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::GNULongName);
    h.set_size(16 << 30);
    h.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"././@LongLink");
    h.set_cksum();
    tar.extend_from_slice(h.as_bytes());
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&tar).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..64 {
        gz.write_all(&zeros).unwrap();
    }
    let bomb = gz.finish().unwrap();
    assert!(bomb.len() < 512 * 1024);

    let dir = tempfile::tempdir().unwrap();
    let server =
        Larder::start_with_env(dir.path(), &["--max-archive-members", "1000"], &[("LARDER_TOKEN", "bomb-token-1")]);
    let resp = upload(&server, "bomb-token-1", "bomb", ("bomb-1.0.tar.gz", &bomb));
    assert_eq!(resp.status(), 400);
    let text = resp.text().unwrap();
    assert!(text.contains("at most 65536"), "{text}");
    // A zip sdist whose end record claims 65,279 members (more than the 1,000 allowed here).
    let mut zip = vec![0u8; 64];
    zip.extend_from_slice(&[0x50, 0x4b, 0x05, 0x06, 0, 0, 0, 0, 0xff, 0xfe, 0xff, 0xfe, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    let resp = upload(&server, "bomb-token-1", "bomb", ("bomb-1.0.zip", &zip));
    assert_eq!(resp.status(), 400);
    assert!(resp.text().unwrap().contains("max_archive_members"));
    assert_eq!(http().get(server.url("/-/health")).send().unwrap().status(), 200, "the server is still up");
    assert_eq!(std::fs::read_dir(dir.path().join("spool")).unwrap().count(), 0, "no spool leftovers");
}

/// Raises this test process's open-file limit (thousands of client sockets).
fn raise_fd_limit() {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain syscalls on a stack value.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
}

/// Has the server closed this connection (EOF, reset, or a final error answer)?
fn closed_by_server(stream: &mut std::net::TcpStream) -> bool {
    use std::io::Read;
    stream.set_read_timeout(Some(std::time::Duration::from_millis(50))).unwrap();
    let mut buf = [0u8; 256];
    match stream.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => true, // a 408 before the close
        Err(e) => !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
    }
}

#[test]
fn slow_clients_do_not_hold_the_server() {
    use std::net::TcpStream;
    use std::time::{Duration, Instant};
    raise_fd_limit();
    let dir = tempfile::tempdir().unwrap();
    let server = Larder::start_with_env(
        dir.path(),
        &["--header-timeout", "3s", "--idle-timeout", "2s"],
        &[("LARDER_TOKEN", "slow-token-1")],
    );
    let addr = server.base.trim_start_matches("http://").to_string();
    let health = || {
        let started = Instant::now();
        let status = http().get(server.url("/-/health")).send().map(|r| r.status().as_u16());
        (status.ok(), started.elapsed())
    };

    // 2,000 connections that send half a request head, then one byte a second.
    let mut slow: Vec<TcpStream> = (0..2000)
        .map(|_| {
            let mut s = TcpStream::connect(&addr).unwrap();
            s.write_all(b"GET /-/health HTTP/1.1\r\nHost: x\r\n").unwrap();
            s
        })
        .collect();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(5) {
        let (status, took) = health();
        assert_eq!(status, Some(200), "a normal client is served meanwhile");
        assert!(took < Duration::from_secs(2), "and promptly: {took:?}");
        for s in &mut slow {
            let _ = s.write_all(b"X");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let closed = slow.iter_mut().map(closed_by_server).filter(|&c| c).count();
    assert!(closed >= 1990, "the header timeout closed {closed} of 2000 slow connections");
    drop(slow);

    // An idle keep-alive connection is closed after idle_timeout.
    let mut idle = TcpStream::connect(&addr).unwrap();
    idle.write_all(b"GET /-/health HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(3500));
    {
        use std::io::Read;
        idle.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let mut all = Vec::new();
        let _ = idle.read_to_end(&mut all);
        assert!(String::from_utf8_lossy(&all).starts_with("HTTP/1.1 200"), "answered, then closed when idle");
    }

    // An upload that stalls halfway gets 408 and leaves nothing behind.
    let (ct, body) =
        crate::util::multipart(&[("name", "stall"), ("version", "1.0")], Some(("stall-1.0.tar.gz", &[7u8; 4096])));
    let mut up = TcpStream::connect(&addr).unwrap();
    let head = format!(
        "POST /legacy/ HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer slow-token-1\r\nContent-Type: {ct}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    up.write_all(head.as_bytes()).unwrap();
    up.write_all(&body[..body.len() / 2]).unwrap();
    let started = Instant::now();
    let mut answer = String::new();
    {
        use std::io::Read;
        up.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 1024];
        let n = up.read(&mut buf).unwrap_or(0);
        answer.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(std::fs::read_dir(dir.path().join("spool")).unwrap().count(), 0, "no spool leftovers");
}

#[test]
fn at_the_connection_cap_new_clients_wait_until_slow_ones_time_out() {
    use std::net::TcpStream;
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let server = Larder::start(dir.path(), &["--header-timeout", "2s", "--max-connections", "50"]);
    let addr = server.base.trim_start_matches("http://").to_string();
    let slow: Vec<TcpStream> = (0..200)
        .map(|_| {
            let mut s = TcpStream::connect(&addr).unwrap();
            let _ = s.write_all(b"GET / HTTP/1.1\r\n");
            s
        })
        .collect();
    let started = Instant::now();
    let resp = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
        .get(server.url("/-/health"))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "served after the slow ones timed out: {:?}",
        started.elapsed()
    );
    drop(slow);
}

#[test]
fn hostile_request_bodies_get_a_clear_400() {
    let dir = tempfile::tempdir().unwrap();
    let server = Larder::start_with_env(dir.path(), &[], &[("LARDER_TOKEN", "body-token-1")]);
    let post = |body: Vec<u8>| {
        http()
            .post(server.url("/legacy/"))
            .basic_auth("x", Some("body-token-1"))
            .header("content-type", "multipart/form-data; boundary=B")
            .body(body)
            .send()
            .unwrap()
    };
    // A part whose header section never ends.
    let mut endless = b"--B\r\nContent-Disposition: form-data; name=\"x\"\r\nX-Pad: ".to_vec();
    endless.extend(std::iter::repeat_n(b'a', 1 << 20));
    let resp = post(endless);
    assert_eq!(resp.status(), 400);
    assert!(resp.text().unwrap().contains("headers are longer than"));
    // Thousands of small text fields.
    let mut many = Vec::new();
    for i in 0..2000 {
        many.extend_from_slice(format!("--B\r\nContent-Disposition: form-data; name=\"f{i}\"\r\n\r\nv\r\n").as_bytes());
    }
    many.extend_from_slice(b"--B--\r\n");
    let resp = post(many);
    assert_eq!(resp.status(), 400);
    assert!(resp.text().unwrap().contains("more than 1000 form fields"));
    // A yank reason of 10 MB is refused without being read whole.
    let (name, bytes) = wheel("yanky", "1.0", &[]);
    assert_eq!(upload(&server, "body-token-1", "yanky", (&name, &bytes)).status(), 200);
    let resp = http()
        .post(server.url(&format!("/files/{}/{name}/yank", sha256_hex(&bytes))))
        .basic_auth("x", Some("body-token-1"))
        .body(vec![b'r'; 10 << 20])
        .send();
    if let Ok(resp) = resp {
        // The server may also close the connection before the client finished sending.
        assert_eq!(resp.status(), 400);
    }
}

#[test]
fn a_refused_upload_leaves_nothing_and_unlisted_blobs_are_never_served() {
    let up = MockUpstream::start();
    let dir = tempfile::tempdir().unwrap();
    let server = Larder::start_with_env(
        dir.path(),
        &["--upstream", &up.simple_url(), "--metadata-prefetch", "false"],
        &[("LARDER_TOKEN", "refuse-token-1")],
    );
    let scratch = tempfile::tempdir().unwrap();
    let (name, first) = wheel("refused", "1.0", &[]);
    let path = scratch.path().join(&name);
    std::fs::write(&path, &first).unwrap();
    let out = crate::util::twine(
        scratch.path(),
        &[
            "upload",
            "--repository-url",
            &server.url("/legacy/"),
            "-u",
            "__token__",
            "-p",
            "refuse-token-1",
            path.to_str().unwrap(),
        ],
    );
    assert_ok(&out, "twine upload");
    // Different bytes under the same filename: refused, and not a byte of it is kept.
    let (_, second) = wheel("refused", "1.0", &["other-dep"]);
    let resp = upload(&server, "refuse-token-1", "refused", (&name, &second));
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.headers().get("content-type").unwrap(), "text/plain; charset=utf-8");
    let sha = sha256_hex(&second);
    let on_disk = dir.path().join("store/content-v2/sha256").join(&sha[..2]).join(&sha[2..4]).join(&sha[4..]);
    assert!(!on_disk.exists(), "the refused file was stored");
    let resp = http().get(server.url(&format!("/files/{sha}/{name}"))).send().unwrap();
    assert_eq!(resp.status(), 404, "and it is not served by its hash");

    // An upstream wheel without upstream metadata: Larder extracts it and writes a link record
    // (an empty body, the well-known empty blob) and a page record.
    let (uname, ubytes) = wheel("public-thing", "1.0", &[]);
    up.add("public-thing", MockFile::new(&uname, ubytes.clone()));
    let resp = http().get(server.url(&format!("/files/{}/{uname}", sha256_hex(&ubytes)))).send().unwrap();
    assert_eq!(resp.status(), 200);
    std::thread::sleep(std::time::Duration::from_millis(500));
    // Every record's contents is a blob in the store; none is served, under any filename.
    let records: Vec<String> =
        cacache::index::ls(&dir.path().join("store")).filter_map(Result::ok).map(|e| e.integrity.to_hex().1).collect();
    assert!(records.contains(&sha256_hex(b"")), "a link record exists");
    for record_sha in records {
        for fname in ["x-1.0.tar.gz", "public_thing-1.0-py3-none-any.whl", "refused-1.0-py3-none-any.whl"] {
            let resp = http().get(server.url(&format!("/files/{record_sha}/{fname}"))).send().unwrap();
            assert_eq!(resp.status(), 404, "record blob {record_sha} served as {fname}");
        }
    }
}

const PRIVACY_CONFIG: &str = r#"
[[tokens]]
name = "reader"
secret = "privacy-read-1"
scopes = ["read"]

[projects.secret]
private = true

[groups.leaky]
projects = ["secret", "open"]
private = false
"#;

#[test]
fn private_answers_are_never_public_and_a_group_cannot_expose_a_private_project() {
    let up = MockUpstream::start();
    let (uname, ubytes) = wheel("common", "1.0", &[]);
    up.add("common", MockFile::new(&uname, ubytes));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("larder.toml");
    std::fs::write(&config, PRIVACY_CONFIG).unwrap();
    let server = Larder::start_with_env(
        &dir.path().join("data"),
        &["--upstream", &up.simple_url(), "--config", config.to_str().unwrap()],
        &[("LARDER_TOKEN", "privacy-write-1")],
    );
    let project = |p: &str| server.url(&format!("/api/v4/projects/{p}/packages/pypi"));
    let (name, bytes) = wheel("hidden-pkg", "1.0", &[]);
    assert_eq!(upload_to(&project("secret"), "privacy-write-1", "hidden-pkg", (&name, &bytes)).status(), 200);

    // `private = false` on a group does not open its private member.
    let resp = http().get(server.url("/api/v4/groups/leaky/-/packages/pypi/simple/hidden-pkg/")).send().unwrap();
    assert_eq!(resp.status(), 401);
    let resp = http()
        .get(server.url(&format!("/api/v4/groups/leaky/-/packages/pypi/files/{}/{name}", sha256_hex(&bytes))))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 401);

    let get = |url: String| http().get(url).basic_auth("x", Some("privacy-read-1")).send().unwrap();
    for (what, url) in [
        ("private file", format!("{}/files/{}/{name}", project("secret"), sha256_hex(&bytes))),
        ("private page", format!("{}/simple/hidden-pkg/", project("secret"))),
        ("root listing", format!("{}/simple/", project("secret"))),
        ("upstream page in a private project", format!("{}/simple/common/", project("secret"))),
        (
            "upstream file in a private project",
            format!("{}/files/{}/{uname}", project("secret"), sha256_hex(&wheel("common", "1.0", &[]).1)),
        ),
    ] {
        let resp = get(url);
        assert_eq!(resp.status(), 200, "{what}");
        let cc = resp.headers()["cache-control"].to_str().unwrap().to_string();
        assert!(cc.contains("private") && !cc.contains("public"), "{what}: {cc}");
        let vary = resp.headers()["vary"].to_str().unwrap().to_string();
        assert!(vary.contains("Authorization"), "{what}: Vary {vary}");
    }
    // A public project's answers stay shareable.
    let resp = http().get(format!("{}/simple/common/", project("open"))).send().unwrap();
    assert!(resp.headers()["cache-control"].to_str().unwrap().contains("public"));
}

/// A wheel stored uncompressed, so that two wheels whose METADATA differ in one byte have the
/// same length and layout (an upstream can then lie to range readers only).
fn stored_wheel(name: &str, summary: &str) -> (String, Vec<u8>) {
    let filename = format!("{name}-1.0-py3-none-any.whl");
    let info = format!("{name}-1.0.dist-info");
    let mut buf = std::io::Cursor::new(Vec::new());
    {
        let mut zip = zip::ZipWriter::new(&mut buf);
        let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
        zip.start_file(format!("{name}/__init__.py"), opts).unwrap();
        zip.write_all(b"x = 1\n").unwrap();
        zip.start_file(format!("{info}/METADATA"), opts).unwrap();
        zip.write_all(format!("Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\nSummary: {summary}\n").as_bytes())
            .unwrap();
        zip.start_file(format!("{info}/WHEEL"), opts).unwrap();
        zip.write_all(b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n").unwrap();
        zip.finish().unwrap();
    }
    (filename, buf.into_inner())
}

#[test]
fn range_read_metadata_is_checked_against_the_wheel_once_stored() {
    let up = MockUpstream::start();
    let (name, real) = stored_wheel("lying", "the real one");
    let (_, fake) = stored_wheel("lying", "a forged one");
    assert_eq!(real.len(), fake.len());
    up.add("lying", MockFile { range_bytes: Some(fake.clone()), ..MockFile::new(&name, real.clone()) });
    let dir = tempfile::tempdir().unwrap();
    let server = Larder::start(dir.path(), &["--upstream", &up.simple_url()]);
    let page_md = || {
        let page = crate::util::json_page(&server.url("/simple/lying/"), None);
        page["files"][0]["core-metadata"]["sha256"].as_str().map(str::to_string)
    };
    let mut linked = None;
    for _ in 0..50 {
        linked = page_md();
        if linked.is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let fake_md = crate::util::wheel_metadata(&fake);
    assert_eq!(linked, Some(sha256_hex(&fake_md)), "the prefetcher linked what the ranges said");
    // The whole wheel is downloaded and hash-checked: its own METADATA replaces the forged one.
    let sha = sha256_hex(&real);
    assert_eq!(http().get(server.url(&format!("/files/{sha}/{name}"))).send().unwrap().status(), 200);
    let real_md = crate::util::wheel_metadata(&real);
    let mut now = None;
    for _ in 0..50 {
        now = page_md();
        if now == Some(sha256_hex(&real_md)) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(now, Some(sha256_hex(&real_md)));
    let md = http().get(server.url(&format!("/files/{sha}/{name}.metadata"))).send().unwrap().bytes().unwrap();
    assert_eq!(md.as_ref(), real_md.as_slice());
    let metrics = http().get(server.url("/metrics")).send().unwrap().text().unwrap();
    assert!(metrics.contains("larder_metadata_mismatch_total 1"), "{metrics}");
    assert!(server.log().contains("differs from the wheel's own"));
    // And it stays replaced after a restart.
    let server = server.restart();
    let page = crate::util::json_page(&server.url("/simple/lying/"), None);
    assert_eq!(page["files"][0]["core-metadata"]["sha256"], sha256_hex(&real_md));
}

#[test]
fn an_upstream_page_cannot_name_another_projects_private_file() {
    let up = MockUpstream::start();
    let dir = tempfile::tempdir().unwrap();
    let server = Larder::start_with_env(
        dir.path(),
        &["--upstream", &up.simple_url(), "--metadata-prefetch", "false", "--allow-shadowing", "victim"],
        &[("LARDER_TOKEN", "named-token-1")],
    );
    let (pname, pbytes) = wheel("victim", "1.0", &[]);
    let team = server.url("/api/v4/projects/team/packages/pypi");
    assert_eq!(upload_to(&team, "named-token-1", "victim", (&pname, &pbytes)).status(), 200);
    let private_sha = sha256_hex(&pbytes);
    let private_md = sha256_hex(&crate::util::wheel_metadata(&pbytes));
    // The private record's own contents, as stored.
    let record_sha = cacache::index::ls(&dir.path().join("store"))
        .filter_map(Result::ok)
        .find(|e| e.key.starts_with("private/"))
        .map(|e| e.integrity.to_hex().1)
        .unwrap();
    // A hostile upstream lists the private file's hash as a file and as metadata of its own.
    let files = serde_json::json!([
        {"filename": "attacker-1.0-py3-none-any.whl", "url": "/files/attacker-1.0-py3-none-any.whl",
         "hashes": {"sha256": "ab".repeat(32)}, "core-metadata": {"sha256": private_sha}},
        {"filename": "attacker-1.0.tar.gz", "url": "/files/attacker-1.0.tar.gz", "hashes": {"sha256": private_md}},
        {"filename": "attacker-2.0.tar.gz", "url": "/files/attacker-2.0.tar.gz", "hashes": {"sha256": record_sha}},
    ]);
    let page = serde_json::json!({"meta": {"api-version": "1.0"}, "name": "attacker", "files": files}).to_string();
    up.state.lock().unwrap().raw.insert(
        "/simple/attacker/".into(),
        (vec![("content-type", "application/vnd.pypi.simple.v1+json".into())], page.into_bytes()),
    );
    let meta = http()
        .get(server.url(&format!("/files/{}/attacker-1.0-py3-none-any.whl.metadata", "ab".repeat(32))))
        .send()
        .unwrap();
    assert_eq!(meta.status(), 404, "metadata naming a private file of another project");
    let file = http().get(server.url(&format!("/files/{private_md}/attacker-1.0.tar.gz"))).send().unwrap();
    assert_eq!(file.status(), 404, "a file naming a private file's metadata");
    let record = http().get(server.url(&format!("/files/{record_sha}/attacker-2.0.tar.gz"))).send().unwrap();
    assert_ne!(record.status(), 200, "a file naming the store's own record");
}

#[test]
fn upstream_pages_are_evicted_under_the_size_limit_like_files() {
    let up = MockUpstream::start();
    for i in 0..40 {
        let (name, bytes) = wheel(&format!("paged-{i}"), "1.0", &[]);
        up.add(&format!("paged-{i}"), MockFile::new(&name, bytes));
    }
    let dir = tempfile::tempdir().unwrap();
    let server = Larder::start(
        dir.path(),
        &[
            "--upstream",
            &up.simple_url(),
            "--max-store-size",
            "8KiB",
            "--metadata-prefetch",
            "false",
            "--index-ttl",
            "0s",
        ],
    );
    for i in 0..40 {
        assert_eq!(http().get(server.url(&format!("/simple/paged-{i}/"))).send().unwrap().status(), 200);
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    let pages = cacache::index::ls(&dir.path().join("store"))
        .filter_map(Result::ok)
        .filter(|e| e.key.starts_with("page/"))
        .count();
    assert!(pages < 30, "{pages} of 40 page records kept under an 8 KiB limit");
    let on_disk: u64 = walk_size(&dir.path().join("store/content-v2"));
    assert!(on_disk <= 8 * 1024, "{on_disk} bytes of content under an 8 KiB limit");
    // An evicted page is simply fetched again.
    assert_eq!(http().get(server.url("/simple/paged-0/")).send().unwrap().status(), 200);
}

fn walk_size(dir: &Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        total += if p.is_dir() { walk_size(&p) } else { p.metadata().map(|m| m.len()).unwrap_or(0) };
    }
    total
}

#[test]
fn metrics_can_require_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let server = Larder::start_with_env(dir.path(), &[], &[("LARDER_METRICS_TOKEN", "scrape-token-1")]);
    let resp = http().get(server.url("/metrics")).send().unwrap();
    assert_eq!(resp.status(), 401);
    let resp = http().get(server.url("/metrics")).bearer_auth("wrong-token").send().unwrap();
    assert_eq!(resp.status(), 401);
    let resp = http().get(server.url("/metrics")).bearer_auth("scrape-token-1").send().unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.text().unwrap().contains("larder_"));
    assert!(!server.log().contains("scrape-token-1"), "the token is never logged");
}
