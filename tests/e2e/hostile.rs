//! Hostile and unlucky clients (issue 10): huge headers and URIs, bad encodings, HTTP/1.0,
//! pipelining, `Expect: 100-continue` without a body, downloads aborted halfway, absurd
//! Ranges. Each gets the right 4xx or a closed connection; normal clients keep being served;
//! open files and spool files are measured before and after, and nothing leaks.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::util::upstream::{MockFile, MockUpstream};
use crate::util::{Larder, http, sha256_hex};

fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Sends `raw` on a fresh connection and returns what comes back until the server closes or
/// `wait` passes.
fn exchange(addr: &str, raw: &[u8], wait: Duration) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    let _ = s.write_all(raw);
    s.set_read_timeout(Some(wait)).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let started = Instant::now();
    while started.elapsed() < wait {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn status_of(answer: &str) -> u16 {
    answer.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

#[test]
fn hostile_requests_get_4xx_or_a_close_and_leak_nothing() {
    let up = MockUpstream::start();
    let big: Vec<u8> = (0..5 * 1024 * 1024).map(|i| (i % 249) as u8).collect();
    up.add("bulky", MockFile::new("bulky-1.0.tar.gz", big.clone()));
    let other: Vec<u8> = (0..3 * 1024 * 1024).map(|i| (i % 239) as u8).collect();
    up.add("bulky", MockFile::new("bulky-0.9.tar.gz", other.clone()));
    let dir = tempfile::tempdir().unwrap();
    let server = Larder::start(
        dir.path(),
        &[
            "--upstream",
            &up.simple_url(),
            "--idle-timeout",
            "2s",
            "--header-timeout",
            "3s",
            "--metadata-prefetch",
            "false",
        ],
    );
    let addr = server.base.trim_start_matches("http://").to_string();
    let big_url = server.url(&format!("/files/{}/bulky-1.0.tar.gz", sha256_hex(&big)));
    assert_eq!(http().get(&big_url).send().unwrap().bytes().unwrap().len(), big.len());
    std::thread::sleep(Duration::from_millis(300));
    let (fds_before, rss_before) = (open_files(server.pid()), rss_kib(server.pid()));

    for round in 0..3 {
        // A request head far over any limit.
        let huge_header = format!("GET /-/health HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(200_000));
        let answer = exchange(&addr, huge_header.as_bytes(), Duration::from_secs(2));
        assert!(answer.is_empty() || (400..500).contains(&status_of(&answer)), "huge header: {answer:.80}");
        let huge_uri = format!("GET /simple/{}/ HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(100_000));
        let answer = exchange(&addr, huge_uri.as_bytes(), Duration::from_secs(2));
        assert!(answer.is_empty() || (400..500).contains(&status_of(&answer)), "huge URI: {answer:.80}");
        // Bytes that are not UTF-8, raw and percent-encoded.
        for path in [&b"/simple/\xff\xfe/"[..], b"/simple/%ff%fe/", b"/files/%c3%28/x.whl", b"/simple/a%00b/"] {
            let mut req = b"GET ".to_vec();
            req.extend_from_slice(path);
            req.extend_from_slice(b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            let answer = exchange(&addr, &req, Duration::from_secs(2));
            let status = status_of(&answer);
            assert!(
                answer.is_empty() || (400..500).contains(&status),
                "{}: {answer:.80}",
                String::from_utf8_lossy(path)
            );
        }
        // HTTP/1.0, and two pipelined requests in one write.
        let answer = exchange(&addr, b"GET /-/health HTTP/1.0\r\n\r\n", Duration::from_secs(2));
        assert!(answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200"), "{answer:.80}");
        let pipelined =
            b"GET /-/health HTTP/1.1\r\nHost: x\r\n\r\nGET /-/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        let answer = exchange(&addr, pipelined, Duration::from_secs(2));
        assert_eq!(answer.matches("HTTP/1.1 200").count(), 2, "{answer}");
        // Expect: 100-continue, then no body: the connection is closed once idle, nothing kept.
        let expect = b"POST /legacy/ HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=B\r\nContent-Length: 100000\r\nExpect: 100-continue\r\nAuthorization: Bearer nobody-1\r\n\r\n";
        let started = Instant::now();
        let answer = exchange(&addr, expect, Duration::from_secs(8));
        assert!(started.elapsed() < Duration::from_secs(8), "held open: {answer:.80}");
        assert!(!answer.contains(" 500 "), "{answer:.80}");
        // Absurd Ranges: never a 5xx, and a 206 stays inside the file.
        for range in [
            "bytes=999999999999999999999-",
            "bytes=-99999999999999999999",
            "bytes=5-2",
            "bytes=0-0,0-0",
            "bytes=1-2-3",
            "bytes=--1",
            "bytes=18446744073709551615-",
        ] {
            let resp = http().get(&big_url).header("range", range).send().unwrap();
            assert!(resp.status().as_u16() < 500, "{range}: {}", resp.status());
            if resp.status() == 206 {
                assert!(resp.bytes().unwrap().len() <= big.len());
            }
        }
        // Downloads aborted at random points, hits and misses alike.
        for i in 0..20 {
            let (name, bytes) = if i % 2 == 0 { ("bulky-1.0.tar.gz", &big) } else { ("bulky-0.9.tar.gz", &other) };
            let url = server.url(&format!("/files/{}/{name}", sha256_hex(bytes)));
            let mut s = TcpStream::connect(&addr).unwrap();
            let path = url.trim_start_matches(&server.base);
            s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).unwrap();
            let mut buf = vec![0u8; 1000 + (i * 7919 + round * 104_729) % 200_000];
            let _ = s.read(&mut buf);
            drop(s);
        }
        // A normal client is served all along.
        assert_eq!(http().get(server.url("/-/health")).send().unwrap().status(), 200);
    }
    // Everything settles: the miss that was aborted is complete and stored, the connections
    // are gone, no spool file is left.
    std::thread::sleep(Duration::from_secs(3));
    let other_url = server.url(&format!("/files/{}/bulky-0.9.tar.gz", sha256_hex(&other)));
    assert_eq!(sha256_hex(&http().get(&other_url).send().unwrap().bytes().unwrap()), sha256_hex(&other));
    std::thread::sleep(Duration::from_millis(500));
    let (fds_after, rss_after) = (open_files(server.pid()), rss_kib(server.pid()));
    assert!(fds_after <= fds_before + 4, "open files: {fds_before} before, {fds_after} after");
    let spool: Vec<_> = std::fs::read_dir(dir.path().join("spool")).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(spool.is_empty(), "spool leftovers: {spool:?}");
    eprintln!("open files {fds_before} -> {fds_after}, RSS {rss_before} KiB -> {rss_after} KiB");
    assert!(rss_after < rss_before + 64 * 1024, "RSS grew from {rss_before} KiB to {rss_after} KiB");
}
