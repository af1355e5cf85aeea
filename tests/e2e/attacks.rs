//! The attacker's review, round three (issue 22), each attack against a running Larder.

use std::time::{Duration, Instant};

use crate::util::upstream::{MockFile, MockUpstream};
use crate::util::{Larder, http, sha256_hex, wheel};

/// Item 1: a few anonymous GETs of slow files must not stall every miss and every expired
/// page. Red before: with `--max-upstream-connections 2`, two hung-up downloads held both
/// permits and the expired page and the new page waited behind them (30 s here).
#[test]
fn slow_downloads_never_hold_pages_back() {
    let up = MockUpstream::start();
    let big: Vec<u8> = (0..256 * 1024).map(|i| (i % 251) as u8).collect();
    up.add("big", MockFile::new("big-1.0.tar.gz", big.clone()));
    up.add("big", MockFile::new("big-1.1.tar.gz", [&big[..], b"1"].concat()));
    up.add("big", MockFile::new("big-1.2.tar.gz", [&big[..], b"2"].concat()));
    let (a, a_bytes) = wheel("page-a", "1.0", &[]);
    up.add("page-a", MockFile::new(&a, a_bytes));
    let (b, b_bytes) = wheel("page-b", "1.0", &[]);
    up.add("page-b", MockFile::new(&b, b_bytes));
    let dir = tempfile::tempdir().unwrap();
    let larder = Larder::start(
        &dir.path().join("data"),
        &["--upstream", &up.simple_url(), "--max-upstream-connections", "2", "--index-ttl", "1s"],
    );
    assert_eq!(http().get(larder.url("/simple/page-a/")).send().unwrap().status(), 200);
    assert_eq!(http().get(larder.url("/simple/big/")).send().unwrap().status(), 200);

    // The file host stalls; anonymous clients start downloads and hang up at once.
    up.state.lock().unwrap().file_delay = Duration::from_secs(30);
    let impatient = reqwest::blocking::Client::builder().timeout(Duration::from_millis(300)).build().unwrap();
    for (name, bytes) in [
        ("big-1.0.tar.gz", big.clone()),
        ("big-1.1.tar.gz", [&big[..], b"1"].concat()),
        ("big-1.2.tar.gz", [&big[..], b"2"].concat()),
    ] {
        let _ = impatient.get(larder.url(&format!("/files/{}/{name}", sha256_hex(&bytes)))).send();
    }
    std::thread::sleep(Duration::from_millis(1100)); // page-a is past its TTL

    let started = Instant::now();
    let resp = http().get(larder.url("/simple/page-a/")).send().unwrap();
    assert_eq!(resp.status(), 200);
    let expired = started.elapsed();
    let started = Instant::now();
    assert_eq!(http().get(larder.url("/simple/page-b/")).send().unwrap().status(), 200);
    let new = started.elapsed();
    assert!(
        expired < Duration::from_secs(5) && new < Duration::from_secs(5),
        "expired page {expired:?}, new page {new:?}"
    );
    up.state.lock().unwrap().file_delay = Duration::ZERO;
}

/// Item 2: a `[[block]] sha256` rule is not bypassed by the same file listed without a hash
/// (a `u-` key: its sha256 is only learned on download). Red before: the first download of
/// each such URL was served whole. Now such files are refused while sha256 rules exist
/// (`unhashed_files` unset), and gone from the page; `unhashed_files = "allow"` lists them.
#[test]
fn a_sha256_block_is_not_bypassed_by_an_unhashed_listing() {
    let up = MockUpstream::start();
    let (bad, bad_bytes) = wheel("sneaky", "1.0", &[]);
    up.add("sneaky", MockFile { no_hash: true, ..MockFile::new(&bad, bad_bytes.clone()) });
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("larder.toml");
    let write = |extra: &str| {
        std::fs::write(
            &config,
            format!("{extra}[[block]]\nsha256 = \"{}\"\nreason = \"known bad\"\n", sha256_hex(&bad_bytes)),
        )
        .unwrap()
    };
    write("");
    let url_digest = sha256_hex(format!("{}{bad}", up.simple_url().replace("/simple/", "/files/")).as_bytes());
    let file = format!("/files/u-{url_digest}/{bad}");
    let larder = Larder::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap(), "--upstream", &up.simple_url()],
    );
    let page = http()
        .get(larder.url("/simple/sneaky/"))
        .header("accept", "application/vnd.pypi.simple.v1+json")
        .send()
        .unwrap();
    let page: serde_json::Value = page.json().unwrap();
    assert_eq!(page["files"], serde_json::json!([]), "an unhashed file is not listed: {page}");
    for range in [None, Some("bytes=0-99")] {
        let mut req = http().get(larder.url(&file));
        if let Some(r) = range {
            req = req.header("range", r);
        }
        let resp = req.send().unwrap();
        assert_eq!(resp.status(), 403, "range {range:?}");
        assert!(resp.text().unwrap().contains("unhashed_files"), "the reason names the setting");
    }
    assert_eq!(http().head(larder.url(&file)).send().unwrap().status(), 403);
    assert_eq!(up.count(&format!("/files/{bad}")), 0, "never fetched");
    drop(larder);

    // Allowed explicitly: listed again (the operator chose to trust unhashed listings).
    write("unhashed_files = \"allow\"\n");
    let larder = Larder::start(
        &dir.path().join("data2"),
        &["--config", config.to_str().unwrap(), "--upstream", &up.simple_url()],
    );
    let page: serde_json::Value = http()
        .get(larder.url("/simple/sneaky/"))
        .header("accept", "application/vnd.pypi.simple.v1+json")
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(page["files"].as_array().unwrap().len(), 1, "{page}");
}

/// Item 5: one hostile page of many links costs its bytes, not tens of times them: the links
/// are counted as they are parsed, and past `max_page_files` the page is refused with a 502
/// that names the setting (HTML and JSON alike).
#[test]
fn a_page_of_too_many_links_is_refused_while_it_is_parsed() {
    let up = MockUpstream::start();
    let links: String =
        (0..5000).map(|i| format!("<a href=\"/files/bomb-{i}.tar.gz\">bomb-{i}.tar.gz</a>\n")).collect();
    let files: Vec<String> = (0..5000)
        .map(|i| format!(r#"{{"filename":"bomb-{i}.tar.gz","url":"/files/bomb-{i}.tar.gz","hashes":{{}}}}"#))
        .collect();
    let json = format!(r#"{{"meta":{{"api-version":"1.0"}},"name":"bomb-json","files":[{}]}}"#, files.join(","));
    {
        let mut st = up.state.lock().unwrap();
        st.raw.insert("/simple/bomb/".into(), (vec![("content-type", "text/html".into())], links.into_bytes()));
        st.raw.insert(
            "/simple/bomb-json/".into(),
            (vec![("content-type", "application/vnd.pypi.simple.v1+json".into())], json.into_bytes()),
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let larder = Larder::start(&dir.path().join("data"), &["--upstream", &up.simple_url(), "--max-page-files", "1000"]);
    for name in ["bomb", "bomb-json"] {
        let resp = http().get(larder.url(&format!("/simple/{name}/"))).send().unwrap();
        assert_eq!(resp.status(), 502, "{name}");
        let why = resp.text().unwrap();
        assert_eq!(why.trim_end().lines().count(), 1, "one line: {why}");
        assert!(why.contains("max_page_files"), "{why}");
    }
    // A page within the bound is served.
    drop(larder);
    let larder = Larder::start(&dir.path().join("data"), &["--upstream", &up.simple_url()]);
    assert_eq!(
        http().get(larder.url("/simple/bomb/")).send().unwrap().status(),
        200,
        "5,000 links are fine by default"
    );
}
