//! Files over HTTP: HDR-2 headers, HEAD, Range (HDR-3), ETags, metadata (MD-*), and files listed
//! without a hash (UP-03).

use crate::util::upstream::{MockFile, MockUpstream};
use crate::util::{Larder, http, json_page, sha256_hex, wheel, wheel_metadata};

fn file_url(larder: &Larder, sha: &str, name: &str) -> String {
    larder.url(&format!("/files/{sha}/{name}"))
}

#[test]
fn hdr_2_3_head_and_ranges_on_miss_and_hit() {
    let up = MockUpstream::start();
    let (name, bytes) = wheel("ranged", "1.0", &[]);
    up.add("ranged", MockFile::new(&name, bytes.clone()));
    let dir = tempfile::tempdir().unwrap();
    let larder = Larder::start(dir.path(), &["--upstream", &up.simple_url()]);
    let sha = sha256_hex(&bytes);
    let url = file_url(&larder, &sha, &name);
    let len = bytes.len() as u64;

    // HEAD on a miss answers from what upstream announced, with the same headers as a hit.
    let (other, other_bytes) = wheel("ranged", "0.9", &[]);
    up.add("ranged", MockFile::new(&other, other_bytes.clone()));
    let _ = http().get(larder.url("/simple/ranged/")).send().unwrap();
    let head_url = file_url(&larder, &sha256_hex(&other_bytes), &other);
    let resp = http().head(&head_url).send().unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-length"], other_bytes.len().to_string());
    assert_eq!(resp.headers()["accept-ranges"], "bytes");
    assert_eq!(resp.headers()["etag"], format!("\"sha256-{}\"", sha256_hex(&other_bytes)));

    // A Range request on a miss is passed to the upstream as one Range request; nothing is
    // downloaded whole for it (issue 11: a resolver wants the tail, not the wheel).
    let resp = http().get(&url).header("range", "bytes=0-9").send().unwrap();
    assert_eq!(resp.status(), 206);
    assert_eq!(resp.headers()["content-range"], format!("bytes 0-9/{len}"));
    assert_eq!(resp.headers()["x-cache"], "MISS");
    assert_eq!(resp.bytes().unwrap().as_ref(), &bytes[..10]);
    let resp = http().get(&url).header("range", "bytes=-22").send().unwrap();
    assert_eq!(resp.bytes().unwrap().as_ref(), &bytes[bytes.len() - 22..]);
    assert_eq!(up.count_full(&name), 0, "{:?}", up.requests());
    // (The metadata prefetcher reads ranges of its own; these two are the clients'.)
    for range in ["bytes=0-9".to_string(), format!("bytes={}-{}", len - 22, len - 1)] {
        let asked = |r: &&String| r.contains(&name) && r.ends_with(&format!(" range={range}"));
        assert_eq!(up.requests().iter().filter(asked).count(), 1, "{range}: {:?}", up.requests());
    }
    // A whole GET downloads and stores it (the one whole download); from now on it is a hit.
    assert_eq!(http().get(&url).send().unwrap().bytes().unwrap().as_ref(), &bytes[..]);
    assert_eq!(up.count_full(&name), 1);

    // HEAD: the GET headers, no body (ROUTE-06).
    let resp = http().head(&url).send().unwrap();
    assert_eq!(resp.status(), 200);
    let h = resp.headers();
    assert_eq!(h["content-length"], len.to_string());
    assert_eq!(h["accept-ranges"], "bytes");
    assert_eq!(h["content-type"], "application/octet-stream");
    assert_eq!(h["etag"], format!("\"sha256-{sha}\""));
    assert_eq!(h["cache-control"], "public, max-age=365000000, immutable");
    assert_eq!(h["x-cache"], "HIT");
    assert!(h.contains_key("date"));
    assert!(!h.contains_key("content-encoding"), "HDR-2: never a Content-Encoding");

    // Suffix range, as pip's lazy wheel and uv ask for the zip's central directory.
    let resp = http().get(&url).header("range", "bytes=-22").send().unwrap();
    assert_eq!(resp.status(), 206);
    assert_eq!(resp.headers()["content-range"], format!("bytes {}-{}/{len}", len - 22, len - 1));
    assert_eq!(resp.bytes().unwrap().as_ref(), &bytes[bytes.len() - 22..]);

    // Open-ended and out-of-bounds ranges.
    let resp = http().get(&url).header("range", format!("bytes={}-", len - 5)).send().unwrap();
    assert_eq!(resp.bytes().unwrap().as_ref(), &bytes[bytes.len() - 5..]);
    let resp = http().get(&url).header("range", format!("bytes={len}-")).send().unwrap();
    assert_eq!(resp.status(), 416);
    assert_eq!(resp.headers()["content-range"], format!("bytes */{len}"));

    // If-Range with another validator: the whole file.
    let resp = http().get(&url).header("range", "bytes=0-9").header("if-range", "\"other\"").send().unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().unwrap().len() as u64, len);

    // If-None-Match on the strong ETag.
    let resp = http().get(&url).header("if-none-match", format!("\"sha256-{sha}\"")).send().unwrap();
    assert_eq!(resp.status(), 304);

    // The full body matches its sha256.
    let body = http().get(&url).send().unwrap().bytes().unwrap();
    assert_eq!(sha256_hex(&body), sha);
    assert_eq!(up.count_full(&format!("GET /files/{name}")), 1, "filled once");
}

#[test]
fn md_08_metadata_is_fetched_checked_and_served() {
    let up = MockUpstream::start();
    let (name, bytes) = wheel("meta-pkg", "2.0", &["dep-a>=1"]);
    let metadata = wheel_metadata(&bytes);
    up.add("meta-pkg", MockFile { metadata: Some(metadata.clone()), ..MockFile::new(&name, bytes.clone()) });
    let (plain, plain_bytes) = wheel("meta-pkg", "1.0", &[]);
    up.add("meta-pkg", MockFile::new(&plain, plain_bytes.clone()));
    let dir = tempfile::tempdir().unwrap();
    // Without Larder's own metadata prefetch: this is about the upstream's metadata files.
    let larder = Larder::start(dir.path(), &["--upstream", &up.simple_url(), "--metadata-prefetch", "false"]);
    let _ = http().get(larder.url("/simple/meta-pkg/")).send().unwrap();

    let url = format!("{}.metadata", file_url(&larder, &sha256_hex(&bytes), &name));
    for _ in 0..2 {
        let resp = http().get(&url).send().unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.bytes().unwrap().as_ref(), metadata.as_slice());
    }
    assert_eq!(up.count(&format!("GET /files/{name}.metadata")), 1);
    assert_eq!(up.count(&format!("GET /files/{name}")), 1, "the wheel itself is not downloaded");

    // A wheel the upstream has no metadata for is advertised `true` and served on demand
    // (issue 11): its own METADATA, read by ranges; from then on the page carries the hash.
    let md_url = format!("{}.metadata", file_url(&larder, &sha256_hex(&plain_bytes), &plain));
    let resp = http().get(&md_url).send().unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().unwrap().as_ref(), wheel_metadata(&plain_bytes).as_slice());
    assert_eq!(up.count_full(&format!("GET /files/{plain}")), 0, "read by ranges, not downloaded");
    assert!(up.count(&format!("GET /files/{plain} range=")) >= 1);
    // An sdist never gets metadata advertised (MD-05), and its `.metadata` is 404.
    let (sd, sd_bytes) = crate::util::sdist("meta-pkg", "0.5");
    up.add("meta-pkg", MockFile::new(&sd, sd_bytes.clone()));
    let resp = http().get(format!("{}.metadata", file_url(&larder, &sha256_hex(&sd_bytes), &sd))).send().unwrap();
    assert_eq!(resp.status(), 404);
}

#[test]
fn up_03_files_listed_without_hash_are_downloadable() {
    let up = MockUpstream::start();
    let (name, bytes) = wheel("nohash", "1.0", &[]);
    up.add("nohash", MockFile { no_hash: true, ..MockFile::new(&name, bytes.clone()) });
    let dir = tempfile::tempdir().unwrap();
    let larder = Larder::start(dir.path(), &["--upstream", &up.simple_url()]);
    let page: serde_json::Value = json_page(&larder.url("/simple/nohash/"), None);
    let href = page["files"][0]["url"].as_str().unwrap();
    assert!(href.starts_with("../../files/u-"), "{href}");
    let url = larder.url(&format!("/simple/nohash/{href}"));
    for expected_cache in ["MISS", "HIT"] {
        let resp = http().get(&url).send().unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-cache"], expected_cache);
        assert_eq!(resp.bytes().unwrap().as_ref(), bytes.as_slice());
    }
    assert_eq!(up.count(&format!("GET /files/{name}")), 1);
}

/// Issue 11: a Range request for a file whose download is under way is answered from that
/// download (its spool), not by another upstream request, and with the right bytes.
#[test]
fn a_range_joins_the_download_under_way() {
    let up = MockUpstream::start();
    let bytes: Vec<u8> = (0..3 * 1024 * 1024 + 7).map(|i| (i * 31 % 251) as u8).collect();
    let name = "joined-1.0.tar.gz";
    up.add("joined", MockFile::new(name, bytes.clone()));
    let dir = tempfile::tempdir().unwrap();
    let larder = Larder::start(dir.path(), &["--upstream", &up.simple_url(), "--metadata-prefetch", "false"]);
    let url = file_url(&larder, &sha256_hex(&bytes), name);
    let _ = http().get(larder.url("/simple/joined/")).send().unwrap();
    up.clear_requests();
    up.set_delay(std::time::Duration::from_millis(400));
    std::thread::scope(|s| {
        let whole = s.spawn(|| http().get(&url).send().unwrap().bytes().unwrap().to_vec());
        std::thread::sleep(std::time::Duration::from_millis(150)); // the download has started
        let resp = http().get(&url).header("range", "bytes=2000000-2000099").send().unwrap();
        assert_eq!(resp.status(), 206);
        assert_eq!(resp.headers()["content-range"], format!("bytes 2000000-2000099/{}", bytes.len()));
        assert_eq!(resp.bytes().unwrap().as_ref(), &bytes[2_000_000..2_000_100]);
        assert_eq!(whole.join().unwrap(), bytes);
    });
    up.set_delay(std::time::Duration::ZERO);
    assert_eq!(up.requests().iter().filter(|r| r.contains(name)).count(), 1, "one download: {:?}", up.requests());
}

/// A HEAD, and one small Range, on a file still downloading are answered from what the
/// download has, with validators too (uv sends If-None-Match, a proxy in front If-Modified-Since):
/// only If-None-Match makes a HEAD wait for the stored file, only If-Range a Range (issue 26's
/// review: a refactor made any validator wait for the whole file).
#[test]
fn validators_do_not_make_head_and_ranges_wait_for_a_download_under_way() {
    use std::time::Duration;
    let up = MockUpstream::start();
    let name = "slowfile-1.0.tar.gz";
    let bytes: Vec<u8> = (0..1024 * 1024).map(|b| (b % 251) as u8).collect();
    up.add("slowfile", MockFile::new(name, bytes.clone()));
    let dir = tempfile::tempdir().unwrap();
    let larder = Larder::start(dir.path(), &["--upstream", &up.simple_url(), "--metadata-prefetch", "false"]);
    assert_eq!(http().get(larder.url("/simple/slowfile/")).send().unwrap().status(), 200);
    // 1 MiB in 16 KiB pieces every 40 ms: about 2.6 s.
    up.state.lock().unwrap().trickle = Some((16 * 1024, Duration::from_millis(40)));
    let url = file_url(&larder, &sha256_hex(&bytes), name);
    let whole = {
        let url = url.clone();
        std::thread::spawn(move || http().get(&url).send().unwrap().bytes().unwrap())
    };
    crate::util::wait_until(Duration::from_secs(5), || up.state.lock().unwrap().trickling == 1);
    std::thread::sleep(Duration::from_millis(200));
    let still_downloading = || up.state.lock().unwrap().trickling == 1;

    let head = http().head(&url).header("if-modified-since", "Sun, 06 Nov 1994 08:49:37 GMT").send().unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["content-length"], bytes.len().to_string());
    assert!(still_downloading(), "the HEAD waited for the whole download");

    let part = http().get(&url).header("range", "bytes=0-99").header("if-none-match", "\"other\"").send().unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(part.bytes().unwrap().as_ref(), &bytes[..100]);
    assert!(still_downloading(), "the Range waited for the whole download");

    assert_eq!(sha256_hex(&whole.join().unwrap()), sha256_hex(&bytes));
    up.state.lock().unwrap().trickle = None;
}
