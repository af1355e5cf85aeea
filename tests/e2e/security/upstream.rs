//! Attacks by (or on) the upstream: credentials, internal addresses, a full disk, lying
//! range reads, pages naming private files, concurrency, eviction.

use std::io::Write;
use std::path::Path;

use crate::util::upstream::{MockFile, MockUpstream};
use crate::util::{Larder, http, sha256_hex, wheel};

use super::upload_to;

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
