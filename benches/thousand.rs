//! 1,000 concurrent clients for a minute (issue 10), against a data dir of realistic size:
//! `./benches/load/thousand.sh` builds in release mode and runs this. Not a timed test.
//!
//! Generates (once, cached in `target/bench-thousand/`) a store with 10,000 project pages and
//! 50,000 files, starts an upstream in this process that answers misses after 20 ms, starts
//! the release `larder serve` on the data dir (start-up time measured), then runs 1,000
//! connections mixing warm page hits (JSON, HTML), file hits (100 KB, 15 MB), page hits loaded
//! from disk, misses to the slow upstream, and uploads. Reports req/s, p50/p99 and errors per
//! kind, Larder's RSS over time (peak) and open files. Knobs: DURATION (60), CONNS (1000),
//! ONLY (one kind alone, by its row number from 0).
//!
//! SOAK=1 (issue 27's hour): the same mix, made to run for an hour on a bounded data dir. Misses
//! cycle over 100,000 names with a 2-minute `index_ttl`, so after the first pass each one is a
//! revalidation the upstream answers (304, after its 20 ms) instead of a new project; uploads cycle
//! over 2,000 packages, so after the first 2,000 each is an identical re-upload (200, parsed and
//! hashed, nothing added). Samples RSS, open files, threads and `larder_tasks_alive` every 10 s
//! and reports each one's slope per hour after the first five minutes.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use larder::cache::records::{PageRecord, RecordKey};
use larder::index::{DistFile, ProjectName, ProjectPage, Yanked};
use larder::store::{LocalStore, Store};
use larder::upstream::Validators;

const PAGES: usize = 10_000;
const FILES_PER_PAGE: usize = 5;
const TOKEN: &str = "thousand-token-1";

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn blob(seed: usize, len: usize) -> Vec<u8> {
    (0..len).map(|i| ((i * 31 + seed * 7) % 251) as u8).collect()
}

fn sha(b: &[u8]) -> String {
    larder::digest::sha256_hex(b)
}

fn dist(name: &str, bytes: &[u8], upstream: &str) -> DistFile {
    DistFile {
        provenance: None,
        metadata_on_demand: false,
        filename: name.to_string(),
        url: format!("{upstream}files/{name}"),
        hashes: [("sha256".to_string(), sha(bytes))].into(),
        requires_python: Some(">=3.8".into()),
        yanked: Yanked::No,
        core_metadata: None,
        size: Some(bytes.len() as u64),
        upload_time: Some("2026-01-01T00:00:00Z".into()),
    }
}

/// The data dir: 10,000 pages of 5 files each (50,000 blobs of 1-4 KiB), plus a `hot` project
/// with a 100 KB and a 15 MB file. The pages name `upstream` as their origin.
async fn generate(dir: &Path, upstream: &str) {
    let store = LocalStore::open(&dir.join("store")).unwrap();
    let started = Instant::now();
    for p in 0..PAGES {
        let name = format!("gen-{p}");
        let mut files = Vec::new();
        for f in 0..FILES_PER_PAGE {
            let bytes = blob(p * FILES_PER_PAGE + f, 1024 + (p * 13 + f * 7) % 3072);
            let filename = format!("gen_{p}-1.{f}.tar.gz");
            store.put_blob_bytes(&sha(&bytes), Bytes::from(bytes.clone())).await.unwrap();
            files.push(dist(&filename, &bytes, upstream));
        }
        put_page(&store, &name, files).await;
        if p % 1000 == 999 {
            eprintln!("    generated {} pages in {:.0?}", p + 1, started.elapsed());
        }
    }
    let (small, big) = (blob(1, 100_000), blob(2, 15 * 1024 * 1024));
    store.put_blob_bytes(&sha(&small), Bytes::from(small.clone())).await.unwrap();
    let tmp = dir.join("big.tmp");
    std::fs::write(&tmp, &big).unwrap();
    store.put_blob_file(&sha(&big), &tmp).await.unwrap();
    std::fs::remove_file(tmp).unwrap();
    put_page(&store, "hot", vec![dist("hot-1.0.tar.gz", &small, upstream), dist("hot-2.0.tar.gz", &big, upstream)])
        .await;
}

async fn put_page(store: &LocalStore, name: &str, files: Vec<DistFile>) {
    let name = ProjectName::parse(name).unwrap();
    let mut page = ProjectPage { name: name.clone(), files, versions: None, status: None };
    page.sort();
    // The bench upstream answers 304 to this ETag: pages loaded from disk revalidate cheaply.
    let validators = Validators { etag: Some("\"gen\"".into()), last_modified: None };
    let record = PageRecord { page, validators, confirmed_unix: 4_000_000_000, changed_unix: 0, upstream: None };
    store.put_record(&RecordKey::Page(name).to_string(), serde_json::to_vec(&record).unwrap()).await.unwrap();
}

/// The upstream: 304 for generated pages, and after 20 ms a one-file page and its file for
/// every `miss-N`.
async fn upstream(listener: tokio::net::TcpListener) {
    loop {
        let (stream, _) = listener.accept().await.unwrap();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                let path = req.uri().path().to_string();
                let base = format!("http://{}/", req.headers().get("host").and_then(|h| h.to_str().ok()).unwrap_or(""));
                let answer = |status: u16, ctype: &str, body: Vec<u8>| {
                    hyper::Response::builder()
                        .status(status)
                        .header("content-type", ctype)
                        .body(Full::new(Bytes::from(body)))
                        .unwrap()
                };
                if req.headers().get("if-none-match").is_some_and(|v| v == "\"gen\"") {
                    return Ok::<_, Infallible>(answer(304, "text/plain", Vec::new()));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
                // A miss page revalidated (SOAK's second pass over its names): unchanged.
                if req.headers().get("if-none-match").is_some_and(|v| v == "\"miss\"") {
                    return Ok(answer(304, "text/plain", Vec::new()));
                }
                if let Some(n) = path.strip_prefix("/simple/miss-").and_then(|p| p.strip_suffix('/')) {
                    let n: usize = n.parse().unwrap_or(0);
                    let bytes = blob(1_000_000 + n, 50_000);
                    let page = serde_json::json!({"meta": {"api-version": "1.0"}, "name": format!("miss-{n}"), "files": [{
                        "filename": format!("miss_{n}-1.0.tar.gz"), "url": format!("{base}files/miss_{n}-1.0.tar.gz"),
                        "hashes": {"sha256": sha(&bytes)}, "size": bytes.len()}]});
                    let mut page = answer(200, "application/vnd.pypi.simple.v1+json", page.to_string().into_bytes());
                    page.headers_mut().insert("etag", hyper::header::HeaderValue::from_static("\"miss\""));
                    return Ok(page);
                }
                if let Some(n) = path.strip_prefix("/files/miss_").and_then(|p| p.strip_suffix("-1.0.tar.gz")) {
                    return Ok(answer(
                        200,
                        "application/octet-stream",
                        blob(1_000_000 + n.parse::<usize>().unwrap_or(0), 50_000),
                    ));
                }
                Ok(answer(404, "text/plain", b"no such project".to_vec()))
            });
            let _ = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .await;
        });
    }
}

#[derive(Clone, Copy)]
struct Sample {
    rss_kib: u64,
    fds: u64,
    threads: u64,
    tasks: u64,
}

/// `larder_tasks_alive` from /metrics (0 when it cannot be read).
async fn tasks_alive(client: &reqwest::Client, url: &str) -> u64 {
    let Ok(r) = client.get(url).send().await else { return 0 };
    let text = r.text().await.unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("larder_tasks_alive "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0) as u64
}

/// Least-squares slope of (seconds, value) points, per hour.
fn slope_per_hour(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let (mx, my) = (points.iter().map(|p| p.0).sum::<f64>() / n, points.iter().map(|p| p.1).sum::<f64>() / n);
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    if sxx == 0.0 { 0.0 } else { sxy / sxx * 3600.0 }
}

#[derive(Default)]
struct Stats {
    latencies: Vec<f64>,
    errors: u64,
}

fn multipart(n: u64) -> (String, Vec<u8>) {
    let name = format!("up-{n}");
    let filename = format!("up_{n}-1.0.tar.gz");
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()));
    let pkg_info = format!("Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n");
    let mut h = tar::Header::new_gnu();
    h.set_size(pkg_info.len() as u64);
    h.set_mode(0o644);
    tar.append_data(&mut h, format!("up_{n}-1.0/PKG-INFO"), pkg_info.as_bytes()).unwrap();
    let file = tar.into_inner().unwrap().finish().unwrap();
    let b = "thousand-boundary";
    let mut body = Vec::new();
    for (k, v) in [("name", name.as_str()), ("version", "1.0")] {
        body.extend_from_slice(
            format!("--{b}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n").as_bytes(),
        );
    }
    body.extend_from_slice(
        format!("--{b}\r\nContent-Disposition: form-data; name=\"content\"; filename=\"{filename}\"\r\n\r\n")
            .as_bytes(),
    );
    body.extend_from_slice(&file);
    body.extend_from_slice(format!("\r\n--{b}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={b}"), body)
}

fn proc_status(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let duration = Duration::from_secs(env_or("DURATION", 60));
    let conns = env_or("CONNS", 1000) as usize;
    let soak = std::env::var_os("SOAK").is_some_and(|v| v != "0");
    // SOAK: names cycle (see the module doc) so an hour's data dir stays bounded.
    let (miss_names, upload_names) = if soak { (100_000, 2_000) } else { (u64::MAX, u64::MAX) };
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-thousand");
    // LARDER_BIN runs another binary (a profiler's wrapper, say).
    let larder = std::env::var_os("LARDER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/release/larder"));
    assert!(larder.is_file(), "build it first: cargo build --release (thousand.sh does)");
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let up = format!("http://{}/simple/", listener.local_addr().unwrap());
        tokio::spawn(upstream(listener));
        // A fresh data dir each run (the generated part is reused when the upstream port is not
        // baked into it: the pages name the upstream, so regenerate every run).
        let data = root.join("data");
        let _ = std::fs::remove_dir_all(&data);
        std::fs::create_dir_all(&data).unwrap();
        eprintln!("==> generating {PAGES} pages and {} files", PAGES * FILES_PER_PAGE);
        generate(&data, &up.replace("/simple/", "/")).await;

        eprintln!("==> starting larder");
        let started = Instant::now();
        let mut child = std::process::Command::new(&larder)
            .args(["serve", "--listen", "127.0.0.1:0", "--upstream", &up, "--metadata-prefetch", "false"])
            .args(["--index-ttl", if soak { "2m" } else { "1h" }, "--data-dir"])
            .arg(&data)
            .env("LARDER_CONFIG", "/dev/null")
            .env("LARDER_LOG", "warn,larder::commands::serve=info")
            .env("LARDER_TOKEN", TOKEN)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let base = loop {
            let line = lines.next().expect("larder exited").unwrap();
            if let Some(i) = line.find("listening on http") {
                break line[i + "listening on ".len()..].trim().to_string();
            }
        };
        let startup = started.elapsed();
        std::thread::spawn(move || for _ in lines {});
        let pid = child.id();

        let client = reqwest::Client::builder().pool_max_idle_per_host(conns).build().unwrap();
        let (miss, upload) = if soak {
            ("miss, then revalidation (20 ms upstream)", "upload, then identical re-upload")
        } else {
            ("miss (20 ms upstream)", "upload")
        };
        let kinds = ["page JSON (hot)", "page HTML (hot)", "page from disk", "file 100 KB", "file 15 MB", miss, upload];
        let stats: Arc<Vec<Mutex<Stats>>> = Arc::new(kinds.iter().map(|_| Mutex::new(Stats::default())).collect());
        let counter = Arc::new(AtomicU64::new(0));
        let (small, big) = (blob(1, 100_000), blob(2, 15 * 1024 * 1024));
        let urls = Arc::new((
            format!("{base}/simple/hot/"),
            format!("{base}/files/{}/hot-1.0.tar.gz", sha(&small)),
            format!("{base}/files/{}/hot-2.0.tar.gz", sha(&big)),
        ));
        let deadline = Instant::now() + duration;
        // ONLY=<kind index> runs one kind alone (to find what memory grows with).
        let only: Option<usize> = std::env::var("ONLY").ok().and_then(|v| v.parse().ok());
        let sampler = {
            let rss = Arc::new(Mutex::new(Vec::new()));
            let r = rss.clone();
            let metrics = format!("{base}/metrics");
            let every = Duration::from_secs(if soak { 10 } else { 1 });
            let t = tokio::spawn(async move {
                let scraper = reqwest::Client::new();
                while Instant::now() < deadline {
                    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0);
                    let tasks = tasks_alive(&scraper, &metrics).await;
                    let s = Sample { rss_kib: proc_status(pid, "VmRSS:"), fds: fds as u64, threads: proc_status(pid, "Threads:"), tasks };
                    r.lock().unwrap().push((started.elapsed().as_secs_f64(), s));
                    tokio::time::sleep(every).await;
                }
            });
            (rss, t)
        };
        eprintln!("==> {conns} connections for {duration:?}");
        let mut tasks = Vec::new();
        for c in 0..conns {
            let (client, stats, counter, urls, base) = (client.clone(), stats.clone(), counter.clone(), urls.clone(), base.clone());
            tasks.push(tokio::spawn(async move {
                let mut i = c as u64;
                while Instant::now() < deadline {
                    i = i.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    let roll = (i >> 33) % 1000;
                    let kind = match roll {
                        0..300 => 0,
                        300..500 => 1,
                        500..600 => 2,
                        600..850 => 3,
                        850..858 => 4,
                        858..960 => 5,
                        _ => 6,
                    };
                    let kind = only.unwrap_or(kind);
                    let n = counter.fetch_add(1, Ordering::Relaxed);
                    let req = match kind {
                        0 => client.get(&urls.0).header("accept", "application/vnd.pypi.simple.v1+json"),
                        1 => client.get(&urls.0).header("accept", "text/html"),
                        2 => client.get(format!("{base}/simple/gen-{}/", n as usize % PAGES)).header("accept", "application/vnd.pypi.simple.v1+json"),
                        3 => client.get(&urls.1),
                        4 => client.get(&urls.2),
                        5 => client
                            .get(format!("{base}/simple/miss-{}/", n % miss_names))
                            .header("accept", "application/vnd.pypi.simple.v1+json"),
                        _ => {
                            let (ct, body) = multipart(n % upload_names);
                            client.post(format!("{base}/legacy/")).bearer_auth(TOKEN).header("content-type", ct).body(body)
                        }
                    };
                    let t = Instant::now();
                    let ok = match req.send().await {
                        Ok(r) => {
                            let status = r.status();
                            let body = r.bytes().await;
                            status.is_success() && body.is_ok()
                        }
                        Err(_) => false,
                    };
                    let mut s = stats[kind].lock().unwrap();
                    s.latencies.push(t.elapsed().as_secs_f64() * 1000.0);
                    if !ok {
                        s.errors += 1;
                    }
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
        let _ = sampler.1.await;
        let samples = sampler.0.lock().unwrap().clone();
        let _ = child.kill();
        let _ = child.wait();

        let mut out = String::new();
        let secs = duration.as_secs_f64();
        out.push_str(&format!("\n{conns} connections, {secs:.0} s; data dir: {PAGES} pages, {} files (+2 hot files)\n\n", PAGES * FILES_PER_PAGE));
        out.push_str("| kind | requests | req/s | p50 ms | p99 ms | errors |\n|---|---|---|---|---|---|\n");
        let mut total_errors = 0;
        for (k, s) in kinds.iter().zip(stats.iter()) {
            let mut s = s.lock().unwrap();
            s.latencies.sort_by(|a, b| a.partial_cmp(b).unwrap());
            let q = |p: f64| s.latencies.get(((s.latencies.len() as f64 * p) as usize).min(s.latencies.len().saturating_sub(1))).copied().unwrap_or(0.0);
            total_errors += s.errors;
            out.push_str(&format!("| {k} | {} | {:.0} | {:.1} | {:.1} | {} |\n", s.latencies.len(), s.latencies.len() as f64 / secs, q(0.5), q(0.99), s.errors));
        }
        let peak = samples.iter().map(|s| s.1.rss_kib).max().unwrap_or(0);
        // One value per 10 s (per minute in a soak) for the eye; the slopes say whether it is flat.
        let step = if soak { 6 } else { 10 };
        let rss: BTreeMap<usize, u64> =
            samples.iter().enumerate().filter(|(i, _)| i % step == 0).map(|(i, s)| (i, s.1.rss_kib / 1024)).collect();
        let fds = samples.iter().map(|s| s.1.fds).max().unwrap_or(0);
        let threads = samples.iter().map(|s| s.1.threads).max().unwrap_or(0);
        let tasks = samples.iter().map(|s| s.1.tasks).max().unwrap_or(0);
        out.push_str(&format!(
            "\nstart-up with this data dir: {:.2} s; errors: {total_errors}; peak RSS {:.1} MiB; RSS every {} s (MiB): {:?}; most open files: {fds}; most threads: {threads}; most tasks: {tasks}\n",
            startup.as_secs_f64(),
            peak as f64 / 1024.0,
            step * if soak { 10 } else { 1 },
            rss.values().collect::<Vec<_>>()
        ));
        if soak {
            // Fitted after the first five minutes (caches and connections filled by then).
            let settled: Vec<&(f64, Sample)> = samples.iter().filter(|s| s.0 >= 300.0).collect();
            let slope = |f: &dyn Fn(&Sample) -> f64| slope_per_hour(&settled.iter().map(|s| (s.0, f(&s.1))).collect::<Vec<_>>());
            out.push_str(&format!(
                "slopes after the first 5 min, per hour: RSS {:+.1} MiB, open files {:+.0}, threads {:+.0}, tasks {:+.0}\n",
                slope(&|s| s.rss_kib as f64 / 1024.0),
                slope(&|s| s.fds as f64),
                slope(&|s| s.threads as f64),
                // A failed scrape reads 0 tasks: left out of this one fit.
                slope_per_hour(&settled.iter().filter(|s| s.1.tasks > 0).map(|s| (s.0, s.1.tasks as f64)).collect::<Vec<_>>()),
            ));
        }
        print!("{out}");
        std::io::stdout().flush().unwrap();
    });
}
