//! Attacks by clients: crafted uploads, slow and piled-up connections, hostile bodies, refused
//! uploads, private answers, the metrics token.

use std::io::Write;

use crate::util::upstream::{MockFile, MockUpstream};
use crate::util::{Larder, assert_ok, http, sha256_hex, wheel};

use super::{upload, upload_to};

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
