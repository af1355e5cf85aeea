//! Benchmarks of the hot pieces (divan): `cargo bench`.
//!
//! - rendering a 10,000-file project page to HTML and JSON (with ETags), as after every
//!   upstream fetch; issue 5 wants well under 50 ms;
//! - negotiating pip's Accept header, on every page request;
//! - parsing a 10,000-file upstream page, HTML (lol_html) and JSON;
//! - serving a stored file from the local store (open, then read it all).

use std::collections::BTreeMap;

use larder::index::rendered::Bodies;
use larder::index::{DistFile, MediaType, ProjectName, ProjectPage, Yanked};
use larder::store::{LocalStore, Store};

fn main() {
    divan::main();
}

const FILES: usize = 10_000;

fn sha(i: usize) -> String {
    larder::digest::sha256_hex(i.to_string().as_bytes())
}

fn big_page() -> ProjectPage {
    let files = (0..FILES)
        .map(|i| DistFile {
            metadata_on_demand: false,
            provenance: None,
            filename: format!("numpy-1.{i}-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"),
            url: format!("https://files.example/packages/aa/bb/numpy-1.{i}.whl"),
            hashes: BTreeMap::from([("sha256".to_string(), sha(i))]),
            requires_python: Some(">=3.9".into()),
            yanked: if i % 100 == 0 { Yanked::Yes(Some("bad".into())) } else { Yanked::No },
            core_metadata: Some(sha(i + 1)),
            size: Some(15_000_000),
            upload_time: Some("2026-01-02T03:04:05.123456Z".into()),
        })
        .collect();
    ProjectPage {
        name: ProjectName::parse("numpy").unwrap(),
        files,
        versions: Some((0..FILES).map(|i| format!("1.{i}")).collect()),
        status: None,
    }
}

#[divan::bench]
fn render_10k_file_page(bencher: divan::Bencher) {
    let page = big_page();
    bencher.with_inputs(|| page.clone()).bench_values(|p| Bodies::render(&p, None, 0));
}

/// What a page change costs once in the background (issue 21): gzip and zstd of both bodies.
#[divan::bench]
fn compress_10k_file_page(bencher: divan::Bencher) {
    let bodies = Bodies::render(&big_page(), None, 0);
    bencher.bench(|| bodies.compressed().unwrap());
}

#[divan::bench]
fn negotiate_pip_accept() -> Option<MediaType> {
    MediaType::negotiate(divan::black_box(Some(
        "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01",
    )))
}

fn upstream_html() -> String {
    let mut out = String::from("<!DOCTYPE html><html><body>\n");
    for i in 0..FILES {
        out.push_str(&format!(
            "<a href=\"https://files.example/packages/aa/bb/numpy-1.{i}-cp312-cp312-manylinux_2_17_x86_64.whl#sha256={}\" data-requires-python=\"&gt;=3.9\" data-core-metadata=\"sha256={}\">numpy-1.{i}-cp312-cp312-manylinux_2_17_x86_64.whl</a><br/>\n",
            sha(i),
            sha(i + 1)
        ));
    }
    out.push_str("</body></html>\n");
    out
}

#[divan::bench]
fn parse_upstream_html_10k(bencher: divan::Bencher) {
    let html = upstream_html();
    let name = ProjectName::parse("numpy").unwrap();
    let url = url::Url::parse("https://up.example/simple/numpy/").unwrap();
    bencher.counter(divan::counter::BytesCount::new(html.len())).bench(|| {
        larder::upstream::html::parse_project(divan::black_box(html.as_bytes()), &name, &url, usize::MAX).unwrap()
    });
}

#[divan::bench]
fn parse_upstream_json_10k(bencher: divan::Bencher) {
    let page = big_page();
    // An upstream JSON page has the same shape as Larder's own rendering.
    let json = larder::index::json::render_project(&page, None);
    let name = page.name.clone();
    let url = url::Url::parse("https://up.example/simple/numpy/").unwrap();
    bencher
        .counter(divan::counter::BytesCount::new(json.len()))
        .bench(|| larder::index::json::parse_project(divan::black_box(&json), &name, &url, usize::MAX).unwrap());
}

fn serve_from_store(bencher: divan::Bencher, size: usize) {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path()).unwrap();
    let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let sha = larder::digest::sha256_hex(&data);
    let spool = dir.path().join("spool");
    std::fs::write(&spool, &data).unwrap();
    rt.block_on(store.put_blob_file(&sha, &spool)).unwrap();
    bencher.counter(divan::counter::BytesCount::new(size)).bench(|| {
        rt.block_on(async {
            use futures_util::StreamExt;
            let blob = store.open_blob(&sha).await.unwrap().unwrap();
            let len = blob.len;
            let mut stream = blob.stream(0, len).await.unwrap();
            let mut total = 0;
            while let Some(chunk) = stream.next().await {
                total += chunk.unwrap().len();
            }
            total
        })
    });
}

#[divan::bench]
fn store_serve_100kb(bencher: divan::Bencher) {
    serve_from_store(bencher, 100 * 1024);
}

#[divan::bench(sample_count = 20)]
fn store_serve_15mb(bencher: divan::Bencher) {
    serve_from_store(bencher, 15 * 1024 * 1024);
}
