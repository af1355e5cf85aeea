//! Stopping like infrastructure (issue 27): on SIGTERM a server first drains (`/-/ready` 503,
//! everything still served, HTTP/1 connections closed after their response), then stops
//! accepting, lets open downloads finish within `shutdown_timeout`, and exits 0.

use std::io::Read;
use std::time::{Duration, Instant};

use crate::util::upstream::{MockFile, MockUpstream};
use crate::util::{Larder, http, sha256_hex, wheel};

fn signal(larder: &Larder, name: &str) {
    let status = std::process::Command::new("kill").args([name, &larder.pid().to_string()]).status().unwrap();
    assert!(status.success());
}

fn get(url: &str) -> (u16, String) {
    match http().get(url).send() {
        Ok(r) => (r.status().as_u16(), r.text().unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    }
}

/// The port no longer accepts connections.
fn refused(larder: &Larder) -> bool {
    let addr = larder.base.trim_start_matches("http://");
    std::net::TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(1)).is_err()
}

/// A 64 MiB file read slowly (about 3 s) is under way when SIGTERM comes: the server drains
/// for `drain_delay` (ready 503, health 200, new requests served), then refuses connections,
/// finishes the download whole, and exits 0.
#[test]
fn sigterm_drains_then_finishes_an_open_download_and_exits_0() {
    let up = MockUpstream::start();
    let big: Vec<u8> = (0..64u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let big_sha = sha256_hex(&big);
    up.add("big", MockFile::new("big-1.0.tar.gz", big.clone()));
    let (small, small_bytes) = wheel("small", "1.0", &[]);
    up.add("small", MockFile::new(&small, small_bytes));
    let dir = tempfile::tempdir().unwrap();
    let args = ["--upstream", &up.simple_url(), "--drain-delay", "1500ms", "--shutdown-timeout", "20s"];
    let mut larder = Larder::start(dir.path(), &args);
    let url = larder.url(&format!("/files/{big_sha}/big-1.0.tar.gz"));
    assert_eq!(http().get(&url).send().unwrap().bytes().unwrap().len(), big.len(), "warm the cache");

    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut resp = http().get(&url).send().unwrap();
        assert_eq!(resp.status(), 200);
        let (mut body, mut chunk) = (Vec::new(), vec![0u8; 1 << 20]);
        let mut first = true;
        loop {
            let n = match resp.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => panic!("the download was cut after {} bytes: {e}", body.len()),
            };
            body.extend_from_slice(&chunk[..n]);
            if first {
                started_tx.send(()).unwrap();
                first = false;
            }
            std::thread::sleep(Duration::from_millis(25 * n as u64 / (1 << 20)));
        }
        body
    });
    started_rx.recv().unwrap();
    let signalled = Instant::now();
    signal(&larder, "-TERM");
    std::thread::sleep(Duration::from_millis(200));
    let (status, text) = get(&larder.url("/-/ready"));
    assert_eq!((status, text.trim()), (503, "not ready: stopping (draining before shutdown)"));
    assert_eq!(get(&larder.url("/-/health")).0, 200, "liveness stays 200 while draining");
    let page = http().get(larder.url("/simple/small/")).send().unwrap();
    assert_eq!(page.status(), 200, "a new request while draining is served");
    assert_eq!(page.headers()["connection"], "close", "HTTP/1 clients reconnect elsewhere");

    std::thread::sleep(Duration::from_millis(1500).saturating_sub(signalled.elapsed()) + Duration::from_millis(500));
    assert!(refused(&larder), "after drain_delay no new connection is accepted");
    let body = reader.join().unwrap();
    assert_eq!(body.len(), big.len());
    assert_eq!(sha256_hex(&body), big_sha, "the download under way when SIGTERM came completed whole");
    let exit = larder.wait_exit(Duration::from_secs(25)).expect("exited within drain_delay + shutdown_timeout");
    assert!(exit.success(), "{exit:?}");
    assert!(signalled.elapsed() > Duration::from_millis(1500), "it drained first");
    let log = larder.log();
    assert!(log.contains("stopping: /-/ready answers 503") && log.contains("stopped"), "{log}");
}

/// A client that stops reading cannot hold a stop past `shutdown_timeout`; a second signal
/// skips what is left of `drain_delay`.
#[test]
fn shutdown_timeout_bounds_a_stop_and_a_second_signal_skips_the_drain() {
    let up = MockUpstream::start();
    let big: Vec<u8> = (0..32u32 << 20).map(|i| (i >> 7) as u8).collect();
    let big_sha = sha256_hex(&big);
    up.add("big", MockFile::new("big-1.0.tar.gz", big.clone()));
    let dir = tempfile::tempdir().unwrap();
    let args = ["--upstream", &up.simple_url(), "--drain-delay", "60s", "--shutdown-timeout", "2s"];
    let mut larder = Larder::start(dir.path(), &args);
    let url = larder.url(&format!("/files/{big_sha}/big-1.0.tar.gz"));
    assert_eq!(http().get(&url).send().unwrap().bytes().unwrap().len(), big.len(), "warm the cache");
    // Read a little, then nothing: the server's writes block once the socket buffers fill.
    let mut stalled = http().get(&url).send().unwrap();
    let mut first = vec![0u8; 64 << 10];
    stalled.read_exact(&mut first).unwrap();

    signal(&larder, "-TERM");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(get(&larder.url("/-/ready")).0, 503);
    let second = Instant::now();
    signal(&larder, "-TERM");
    let exit = larder.wait_exit(Duration::from_secs(15)).expect("a stalled client held the stop");
    assert!(exit.success(), "{exit:?}");
    let took = second.elapsed();
    assert!(took < Duration::from_secs(10), "stopped {took:?} after the second signal (timeout 2 s)");
    let mut rest = Vec::new();
    let _ = stalled.read_to_end(&mut rest);
    assert!((64 << 10) + rest.len() < big.len(), "the stalled download was cut, not completed");
    assert!(larder.log().contains("open requests did not finish within shutdown_timeout"), "{}", larder.log());
}
