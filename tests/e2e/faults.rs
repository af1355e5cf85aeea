//! A bucket and an upstream that fail in the ways real ones do (issue 27 part 3), through a
//! fault-injecting proxy (util/fault_proxy.rs): latency, 500 / 503 SlowDown, resets, responses
//! that stall or end mid-body, 429 with Retry-After. Under a steady load from several clients:
//! what the local cache holds keeps being served, what needs the failing side answers 503
//! within a bounded time, retries back off (the proxy counts what reached it), nothing half
//! written becomes visible, no acknowledged upload is lost, and service comes back by itself.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::util::fault_proxy::{Fault, FaultProxy};
use crate::util::s3::S3Server;
use crate::util::upstream::{MockFile, MockUpstream};
use crate::util::{Larder, http, multipart, sha256_hex, wheel};

const TOKEN: &str = "fault-token-123";
const JSON: &str = "application/vnd.pypi.simple.v1+json";

/// A replica whose bucket is reached through `proxy`.
fn replica_behind(s3: &S3Server, proxy: &FaultProxy, dir: &Path, extra: &[&str]) -> Larder {
    let mut args = vec!["--store".to_string(), "s3://larder/faults".into(), "--s3-endpoint".into(), proxy.url()];
    args.extend(extra.iter().map(|s| s.to_string()));
    s3.larder(&args, dir, TOKEN)
}

fn upload(larder: &Larder, project: &str, filename: &str, bytes: &[u8]) -> reqwest::blocking::Response {
    let version = filename.split('-').nth(1).unwrap().to_string();
    let (ct, body) = multipart(&[("name", project), ("version", &version)], Some((filename, bytes)));
    http()
        .post(larder.url("/api/v4/projects/default/packages/pypi"))
        .basic_auth("x", Some(TOKEN))
        .header("content-type", ct)
        .body(body)
        .timeout(Duration::from_secs(120))
        .send()
        .unwrap()
}

fn page_files(larder: &Larder, name: &str) -> (u16, Vec<String>) {
    let resp = http().get(larder.url(&format!("/simple/{name}/"))).header("accept", JSON).send().unwrap();
    let status = resp.status().as_u16();
    if status != 200 {
        return (status, Vec::new());
    }
    let page: serde_json::Value = resp.json().unwrap();
    (status, page["files"].as_array().unwrap().iter().map(|f| f["filename"].as_str().unwrap().to_string()).collect())
}

/// What one client saw during a fault: (url, status, seconds) per request.
type Seen = Vec<(String, u16, f64)>;

/// `clients` threads asking for `urls` round-robin until `stop`.
fn load(urls: Vec<String>, clients: usize, stop: Arc<AtomicBool>) -> Vec<std::thread::JoinHandle<Seen>> {
    (0..clients)
        .map(|c| {
            let (urls, stop) = (urls.clone(), stop.clone());
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(120)).build().unwrap();
                let mut seen = Vec::new();
                let mut i = c;
                while !stop.load(Ordering::SeqCst) {
                    let url = &urls[i % urls.len()];
                    i += 1;
                    let started = Instant::now();
                    let status = match client.get(url).header("accept", JSON).send() {
                        Ok(r) => {
                            let s = r.status().as_u16();
                            let _ = r.bytes();
                            s
                        }
                        Err(_) => 0,
                    };
                    seen.push((url.clone(), status, started.elapsed().as_secs_f64()));
                }
                seen
            })
        })
        .collect()
}

/// The bucket misbehaves five ways in turn, under load. Hits on what this replica claimed and
/// holds locally stay 200; everything else is 200 or a quick, clear 503; each fault's retries
/// stay within a small multiple of the requests that needed the bucket; an upload is either
/// acknowledged (and then found, whole, by a fresh replica reading the bucket directly) or
/// refused with 503 and never half-visible; and once the fault ends, all is 200 again by itself.
#[test]
fn a_failing_bucket_keeps_local_hits_fails_fast_and_recovers_by_itself() {
    let s3 = S3Server::start();
    let proxy = FaultProxy::start(s3.endpoint().trim_start_matches("http://").parse().unwrap());
    let up = MockUpstream::start();
    let (up_name, up_bytes) = wheel("steady", "1.0", &[]);
    up.add("steady", MockFile::new(&up_name, up_bytes.clone()));
    let dir = tempfile::tempdir().unwrap();
    let larder = replica_behind(&s3, &proxy, dir.path(), &["--upstream", &up.simple_url()]);

    // Before any fault: a private package (claimed here), an upstream page and file (cached).
    let (own, own_bytes) = wheel("flaky-own", "1.0", &[]);
    assert_eq!(upload(&larder, "flaky-own", &own, &own_bytes).status(), 200);
    let own_file = larder.url(&format!("/files/{}/{own}", sha256_hex(&own_bytes)));
    let up_file = larder.url(&format!("/files/{}/{up_name}", sha256_hex(&up_bytes)));
    for url in [&own_file, &up_file] {
        assert_eq!(http().get(url.as_str()).send().unwrap().status(), 200, "{url}: warm");
    }
    let own_page = larder.url("/simple/flaky-own/");
    let urls = vec![own_page.clone(), own_file.clone(), larder.url("/simple/steady/"), up_file.clone()];

    let mut acknowledged = vec![(own.clone(), own_bytes.clone())];
    let faults = [
        ("latency", Fault::Latency(Duration::from_millis(300))),
        ("503 SlowDown", Fault::slow_down()),
        ("500", Fault::internal_error()),
        ("reset", Fault::Reset),
        ("stall mid-body", Fault::Stall(200)),
    ];
    let mut report = String::new();
    for (i, (label, fault)) in faults.into_iter().enumerate() {
        let before = proxy.requests();
        proxy.set(fault.clone());
        let stop = Arc::new(AtomicBool::new(false));
        let clients = load(urls.clone(), 4, stop.clone());
        // An upload while the bucket fails: acknowledged (200) or refused (503), never lost.
        let (name, bytes) = wheel(&format!("flaky-up{i}"), "1.0", &[]);
        let started = Instant::now();
        let resp = upload(&larder, &format!("flaky-up{i}"), &name, &bytes);
        let (status, upload_secs) = (resp.status().as_u16(), started.elapsed().as_secs_f64());
        let text = resp.text().unwrap_or_default();
        assert!(status == 200 || status == 503, "{label}: upload answered {status}: {text}");
        if status == 200 {
            acknowledged.push((name.clone(), bytes.clone()));
        } else {
            assert!(text.contains("bucket"), "{label}: a 503 that says why: {text}\n{report}");
        }
        std::thread::sleep(Duration::from_secs(2));
        stop.store(true, Ordering::SeqCst);
        let seen: Seen = clients.into_iter().flat_map(|c| c.join().unwrap()).collect();
        let reached = proxy.requests() - before;
        let slowest = seen.iter().map(|s| s.2).fold(0.0, f64::max);
        let refused = seen.iter().filter(|s| s.1 == 503).count();
        report.push_str(&format!(
            "{label}: {} requests, {refused} 503, slowest {slowest:.1} s; upload {status} in {upload_secs:.1} s; {reached} reached the bucket\n",
            seen.len()
        ));
        for (url, status, secs) in &seen {
            assert!(*status == 200 || *status == 503, "{label}: {url} answered {status}\n{report}");
            // Bounded: the bucket's per-operation timeout (10 s) and a stalled stream's (30 s).
            assert!(*secs < 35.0, "{label}: {url} took {secs:.1} s\n{report}");
            if url == &own_page || url == &own_file {
                assert_eq!(
                    *status, 200,
                    "{label}: {url}: claimed here, served from its record and the local cache\n{report}"
                );
            }
        }
        // Backed off: while the bucket fails, the breaker lets through a probe now and then
        // (pauses of 0.25 s doubling to 2 s), whatever the load: without it, every client
        // request cost up to three bucket requests (object_store's retries) and, on a stall,
        // waited out one 10 s timeout after another (120 s).
        if !matches!(fault, Fault::Latency(_)) {
            assert!(reached <= 60, "{label}: {reached} bucket requests for {} client requests\n{report}", seen.len());
            // Fail fast: past the first operations' timeouts, a 503 comes at once.
            let mut refusals: Vec<f64> = seen.iter().filter(|s| s.1 == 503).map(|s| s.2).collect();
            refusals.sort_by(f64::total_cmp);
            let median = refusals.get(refusals.len() / 2).copied().unwrap_or(0.0);
            assert!(median < 1.0, "{label}: the median 503 took {median:.1} s\n{report}");
        }

        // Back to normal: every URL answers 200 again within a few seconds, no restart.
        proxy.set(Fault::None);
        let deadline = Instant::now() + Duration::from_secs(20);
        for url in &urls {
            loop {
                let status = http().get(url.as_str()).header("accept", JSON).send().unwrap().status();
                if status == 200 {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{label}: {url} still answers {status} after the fault ended\n{report}"
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        // A refused upload leaves nothing visible; retried now, it is acknowledged.
        if status == 503 {
            assert_eq!(page_files(&larder, &format!("flaky-up{i}")).1, Vec::<String>::new(), "{label}");
            assert_eq!(upload(&larder, &format!("flaky-up{i}"), &name, &bytes).status(), 200, "{label}: retried");
            acknowledged.push((name, bytes));
        }
    }
    eprintln!("{report}");

    // Nothing acknowledged is lost: a fresh replica, reading the bucket directly, serves every
    // acknowledged upload whole.
    let fresh_dir = tempfile::tempdir().unwrap();
    let mut args = s3.args("faults");
    args.extend(["--upstream".to_string(), up.simple_url()]);
    let fresh = s3.larder(&args, fresh_dir.path(), TOKEN);
    for (filename, bytes) in &acknowledged {
        let project = filename.split('-').next().unwrap().replace('_', "-");
        assert_eq!(page_files(&fresh, &project), (200, vec![filename.clone()]), "{filename}\n{report}");
        let body = http().get(fresh.url(&format!("/files/{}/{filename}", sha256_hex(bytes)))).send().unwrap();
        assert_eq!(body.status(), 200, "{filename}");
        assert_eq!(sha256_hex(&body.bytes().unwrap()), sha256_hex(bytes), "{filename}");
    }
}

/// The upstream index misbehaves: a latency spike past `upstream_timeout`, pages and files cut
/// mid-body, and 429 with Retry-After. Cached pages are served stale meanwhile; what has no
/// stale copy gets a clear 5xx; a cut file is never stored (the next download is whole); and
/// after a 429, nothing is sent to that upstream until Retry-After has passed: clients get 503
/// with the time left.
#[test]
fn a_failing_upstream_serves_stale_honours_retry_after_and_stores_nothing_corrupt() {
    let up = MockUpstream::start();
    let (name, bytes) = wheel("wobbly", "1.0", &[]);
    up.add("wobbly", MockFile::new(&name, bytes.clone()));
    let (other, other_bytes) = wheel("other", "1.0", &[]);
    up.add("other", MockFile::new(&other, other_bytes.clone()));
    let proxy = FaultProxy::start(up.addr);
    let upstream = format!("{}/simple/", proxy.url());
    let dir = tempfile::tempdir().unwrap();
    let larder = Larder::start(dir.path(), &["--upstream", &upstream, "--index-ttl", "1s", "--upstream-timeout", "2s"]);
    assert_eq!(page_files(&larder, "wobbly"), (200, vec![name.clone()]));
    let file_url = larder.url(&format!("/files/{}/{name}", sha256_hex(&bytes)));
    let stale_page = |label: &str| {
        std::thread::sleep(Duration::from_millis(1100)); // past index_ttl: the next read revalidates
        let resp = http().get(larder.url("/simple/wobbly/")).header("accept", JSON).send().unwrap();
        assert_eq!(resp.status(), 200, "{label}: the cached page, stale");
        assert_eq!(resp.headers()["x-cache"], "STALE", "{label}");
        let page: serde_json::Value = resp.json().unwrap();
        assert_eq!(page["files"][0]["filename"], name.as_str(), "{label}");
    };

    // A latency spike longer than upstream_timeout: the stale page, in about that time.
    proxy.set(Fault::Latency(Duration::from_secs(8)));
    let started = Instant::now();
    stale_page("latency");
    // 1.1 s of the helper's sleep + the 2 s timeout, well under the spike's 8 s.
    assert!(started.elapsed() < Duration::from_secs(6), "{:?}", started.elapsed());

    // Answers cut mid-body: the stale page (the upstream's changed one never arrives whole);
    // the file (not cached yet) fails, and is not kept.
    let (newer, newer_bytes) = wheel("wobbly", "2.0", &[]);
    up.add("wobbly", MockFile::new(&newer, newer_bytes));
    proxy.set(Fault::Cut(100));
    stale_page("cut page");
    let resp = http().get(&file_url).send();
    let whole =
        resp.ok().filter(|r| r.status() == 200).and_then(|r| r.bytes().ok()).is_some_and(|b| b[..] == bytes[..]);
    assert!(!whole, "a cut download cannot arrive whole");
    proxy.set(Fault::None);
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(page_files(&larder, "wobbly").1, [name.clone(), newer], "the changed page, whole, once it arrives");
    let body = http().get(&file_url).send().unwrap();
    assert_eq!(body.status(), 200);
    assert_eq!(sha256_hex(&body.bytes().unwrap()), sha256_hex(&bytes), "the next download is whole");

    // 429 with Retry-After: 8. The page that asked serves stale; after that, nothing reaches the
    // upstream for 8 s (the proxy answers normally again at once, so only the pause can explain
    // a 503): a page Larder has no copy of gets 503 with the time left.
    proxy.set(Fault::too_many_requests(8));
    stale_page("429");
    let asked = Instant::now();
    proxy.set(Fault::None);
    let before = proxy.requests();
    for _ in 0..5 {
        let resp = http().get(larder.url("/simple/other/")).header("accept", JSON).send().unwrap();
        assert_eq!(resp.status(), 503);
        let wait: u64 = resp.headers()["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=8).contains(&wait), "Retry-After {wait}");
        assert!(resp.text().unwrap().contains("asked Larder to wait"));
    }
    assert_eq!(proxy.requests(), before, "nothing is sent upstream during the pause");
    assert!(asked.elapsed() < Duration::from_secs(8), "the checks above ran within the pause");
    std::thread::sleep(Duration::from_secs(8).saturating_sub(asked.elapsed()) + Duration::from_millis(200));
    assert_eq!(page_files(&larder, "other"), (200, vec![other]), "after the pause, the upstream is asked again");
    let m = http().get(larder.url("/metrics")).send().unwrap().text().unwrap();
    assert!(m.contains("larder_upstream_throttled_total"), "counted in /metrics");
}
