//! Replicas sharing one S3 bucket (issue 13), on a real S3 server (SeaweedFS) on loopback,
//! driven by the real pip, uv and twine: an upload on one replica is installable through
//! another on the very next request; racing uploads of one filename store exactly one; a
//! replica killed mid-upload or mid-fill leaves nothing half-visible; a new replica with an
//! empty disk serves everything; the bucket briefly unreachable gives a clear 503 (fail
//! closed: never the upstream's page for a name another replica may have claimed), and
//! recovers without a restart.

use std::path::Path;
use std::time::Duration;

use crate::util::s3::S3Server;
use crate::util::upstream::{MockFile, MockUpstream};
use crate::util::{
    Larder, assert_ok, filenames, http, larder_cli, multipart, pip, sha256_hex, twine, uv_install, wheel,
    wheel_metadata,
};

const TOKEN: &str = "replica-token-123";
const JSON: &str = "application/vnd.pypi.simple.v1+json";

/// A replica on `s3` (bucket prefix `prefix`), with its own empty data dir.
fn replica(s3: &S3Server, prefix: &str, dir: &Path, extra: &[&str]) -> Larder {
    let mut args: Vec<String> = s3.args(prefix);
    args.extend(extra.iter().map(|s| s.to_string()));
    s3.larder(&args, dir, TOKEN)
}

fn upload_url(larder: &Larder) -> String {
    larder.url("/api/v4/projects/default/packages/pypi")
}

fn twine_upload(scratch: &Path, larder: &Larder, filename: &str, bytes: &[u8]) -> std::process::Output {
    let path = scratch.join(filename);
    std::fs::write(&path, bytes).unwrap();
    twine(scratch, &["upload", "--repository-url", &upload_url(larder), "-u", "x", "-p", TOKEN, path.to_str().unwrap()])
}

fn page(larder: &Larder, name: &str) -> serde_json::Value {
    let resp = http().get(larder.url(&format!("/simple/{name}/"))).header("accept", JSON).send().unwrap();
    assert_eq!(resp.status(), 200, "{name} on {}", larder.base);
    resp.json().unwrap()
}

/// After the bucket comes back, a replica asks it again within the breaker's longest pause
/// (2 s): waits up to 5 s for a request that needs the bucket to stop answering 503.
fn wait_for_bucket(larder: &Larder) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while http().get(larder.url("/simple/wait-for-bucket/")).send().unwrap().status() == 503 {
        assert!(std::time::Instant::now() < deadline, "the bucket is back, the replica still answers 503");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn an_upload_on_one_replica_is_installable_through_another_at_once() {
    let s3 = S3Server::start();
    let up = MockUpstream::start();
    let (upstream_name, upstream_bytes) = wheel("shared-name", "1.0", &[]);
    up.add(
        "shared-name",
        MockFile { metadata: Some(wheel_metadata(&upstream_bytes)), ..MockFile::new(&upstream_name, upstream_bytes) },
    );
    let extra = ["--upstream", &up.simple_url(), "--allow-shadowing", "shared-name"];
    let (da, db, dc) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = replica(&s3, "agree", da.path(), &extra);
    let b = replica(&s3, "agree", db.path(), &extra);
    let scratch = tempfile::tempdir().unwrap();

    // B has the upstream's page of `shared-name` cached before anyone uploads it.
    assert_eq!(filenames(&page(&b, "shared-name")), ["shared_name-1.0-py3-none-any.whl"]);

    // A new name uploaded through A is installable through B on the very next request, and
    // its file downloads through B at once by its URL (a balancer may send the page request to
    // A and the download to B), although B checked that name a moment before the upload.
    let (tool, tool_bytes) = wheel("team-tool", "0.1", &[]);
    let tool_url_b = b.url(&format!("/files/{}/{tool}", sha256_hex(&tool_bytes)));
    assert_eq!(http().get(&tool_url_b).send().unwrap().status(), 404);
    assert_ok(&twine_upload(scratch.path(), &a, &tool, &tool_bytes), "twine upload to A");
    let got = http().get(&tool_url_b).send().unwrap();
    assert_eq!(got.status(), 200, "not yet known to B, so checked at once");
    assert_eq!(sha256_hex(&got.bytes().unwrap()), sha256_hex(&tool_bytes));
    let root: serde_json::Value = http().get(b.url("/simple/")).header("accept", JSON).send().unwrap().json().unwrap();
    assert!(root["projects"].as_array().unwrap().iter().any(|p| p["name"] == "team-tool"), "B's list has it: {root}");
    // B's periodic sync of every private record (which blobs are private) does not re-read a
    // record it already has: ETags from writes, reads and listings agree.
    for _ in 0..15 {
        assert_eq!(http().get(&tool_url_b).send().unwrap().status(), 200);
        std::thread::sleep(Duration::from_millis(200));
    }
    let rereads = b
        .log()
        .lines()
        .filter(|l| l.contains("private record changed in the store") && l.ends_with("key=private/default/team-tool"))
        .count();
    assert_eq!(rereads, 1, "B read the record once (when it learnt it), then never again unchanged:\n{}", b.log());
    let target = scratch.path().join("t1");
    assert_ok(&uv_install(scratch.path(), &b.index(), &target, "team-tool==0.1"), "uv install through B");

    // Uploading a name B served from upstream: from then on B serves it from the upload alone,
    // never from upstream again (also for a name in allow_shadowing).
    let (mine, mine_bytes) = wheel("shared-name", "2.0", &[]);
    assert_ok(&twine_upload(scratch.path(), &a, &mine, &mine_bytes), "twine upload of a shadowing name");
    assert_eq!(filenames(&page(&b, "shared-name")), std::slice::from_ref(&mine), "B masks the upstream at once");
    let out = pip(
        scratch.path(),
        &[
            "download",
            "--no-deps",
            "--index-url",
            &b.index(),
            "-d",
            scratch.path().join("dl").to_str().unwrap(),
            "shared-name",
        ],
    );
    assert_ok(&out, "pip download through B");
    assert!(scratch.path().join("dl").join(&mine).exists(), "pip got the private 2.0");
    assert_eq!(up.count("/simple/shared-name/"), 1, "B asked the upstream once, before the upload, never after");

    // A yank on A shows on B at once; a delete on A is gone from B at once.
    let env = [("LARDER_TOKEN", TOKEN)];
    assert_ok(&larder_cli(&["yank", "--server", &a.base, "--reason", "broken", &tool], &env), "yank on A");
    assert_eq!(page(&b, "team-tool")["files"][0]["yanked"], "broken");
    assert_ok(&larder_cli(&["delete", "--server", &a.base, &tool], &env), "delete on A");
    assert!(filenames(&page(&b, "team-tool")).is_empty());
    let file_url = b.url(&format!("/files/{}/{tool}", sha256_hex(&tool_bytes)));
    assert_eq!(http().get(&file_url).send().unwrap().status(), 404);

    // Stateless: a new replica with an empty disk serves everything from the bucket, and
    // killing the others loses nothing.
    drop(a);
    drop(b);
    let c = replica(&s3, "agree", dc.path(), &extra);
    let got = http().get(c.url(&format!("/files/{}/{mine}", sha256_hex(&mine_bytes)))).send().unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(sha256_hex(&got.bytes().unwrap()), sha256_hex(&mine_bytes));
    assert_eq!(filenames(&page(&c, "shared-name")), [mine]);
    assert!(filenames(&page(&c, "team-tool")).is_empty(), "the delete is remembered (tombstone)");
}

#[test]
fn racing_uploads_of_one_filename_store_exactly_one() {
    let s3 = S3Server::start();
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = replica(&s3, "race", da.path(), &[]);
    let b = replica(&s3, "race", db.path(), &[]);
    for round in 0..4 {
        let version = format!("1.{round}");
        // Two different builds under one filename (different file contents, same name).
        let (name, first) = wheel("racy", &version, &[]);
        let (_, mut second) = wheel("racy", &version, &["extra-dep"]);
        if second == first {
            second.push(0);
        }
        let post = |larder: &Larder, bytes: Vec<u8>, name: String| {
            let url = upload_url(larder);
            std::thread::spawn(move || {
                let project = name.split('-').next().unwrap().to_string();
                let fields = [("name", project.as_str()), ("version", &version_of(&name))];
                let (ct, body) = multipart(&fields, Some((&name, &bytes)));
                http()
                    .post(url)
                    .basic_auth("x", Some(TOKEN))
                    .header("content-type", ct)
                    .body(body)
                    .send()
                    .unwrap()
                    .status()
                    .as_u16()
            })
        };
        let (ta, tb) = (post(&a, first.clone(), name.clone()), post(&b, second.clone(), name.clone()));
        let mut statuses = [ta.join().unwrap(), tb.join().unwrap()];
        statuses.sort();
        assert_eq!(statuses, [200, 400], "round {round}: exactly one stored, the other `File already exists`");
        // Both replicas serve the one stored file.
        let listed: Vec<String> = [&a, &b]
            .iter()
            .map(|r| {
                page(r, "racy")["files"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .find(|f| f["filename"] == name.as_str())
                        .unwrap()["hashes"]["sha256"]
                        .as_str()
                        .unwrap()
                        .to_string()
            })
            .collect();
        assert_eq!(listed[0], listed[1]);
        assert!(listed[0] == sha256_hex(&first) || listed[0] == sha256_hex(&second));

        // Identical bytes from both at once: both 200 (a retried CI upload).
        let (name2, same) = wheel("twin", &version, &[]);
        let (ta, tb) = (post(&a, same.clone(), name2.clone()), post(&b, same.clone(), name2.clone()));
        assert_eq!([ta.join().unwrap(), tb.join().unwrap()], [200, 200], "round {round}");
    }
}

fn version_of(filename: &str) -> String {
    filename.split('-').nth(1).unwrap().to_string()
}

#[test]
fn a_replica_killed_mid_upload_or_mid_fill_leaves_nothing_half_visible() {
    let s3 = S3Server::start();
    let up = MockUpstream::start();
    // A large upstream file, sent slowly: the fill is under way when the replica dies.
    let big: Vec<u8> = (0..96 * 1024 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let big_sha = sha256_hex(&big);
    up.add("bigpkg", MockFile::new("bigpkg-1.0.tar.gz", big.clone()));
    let extra = ["--upstream", &up.simple_url()];
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = replica(&s3, "crash", da.path(), &extra);

    // Mid-upload: a 20 MB wheel's body is half sent when A is killed.
    let (name, bytes) = wheel("halfway", "1.0", &[]);
    let mut padded = bytes.clone();
    padded.extend(std::iter::repeat_n(0u8, 20 * 1024 * 1024));
    let (ct, body) = multipart(&[("name", "halfway"), ("version", "1.0")], Some((&name, &padded)));
    let addr = a.base.trim_start_matches("http://").to_string();
    let mut sock = std::net::TcpStream::connect(&addr).unwrap();
    use std::io::Write;
    let head = format!(
        "POST /api/v4/projects/default/packages/pypi HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {}\r\nContent-Type: {ct}\r\nContent-Length: {}\r\n\r\n",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, format!("x:{TOKEN}")),
        body.len()
    );
    sock.write_all(head.as_bytes()).unwrap();
    sock.write_all(&body[..body.len() / 2]).unwrap();
    std::thread::sleep(Duration::from_millis(300));

    // Mid-fill: a client starts downloading the big file through A; A dies just after the
    // upstream started sending it (96 MB: the spool and the bucket upload take far longer).
    let fill_url = a.url(&format!("/files/{big_sha}/bigpkg-1.0.tar.gz"));
    let partial = std::thread::spawn(move || {
        let resp = http().get(fill_url).send();
        resp.and_then(|r| r.bytes()).map(|b| b.len()).unwrap_or(0)
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while up.count_full("GET /files/bigpkg-1.0.tar.gz") == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(30));
    std::process::Command::new("kill").args(["-9", &a.pid().to_string()]).status().unwrap();
    let got_before_death = partial.join().unwrap();
    assert!(got_before_death < big.len(), "the download was cut by the kill");
    drop(sock);

    // B, on the same bucket with an empty disk: no trace of the half upload, and the big file
    // is fetched and stored whole, with the right bytes.
    let b = replica(&s3, "crash", db.path(), &extra);
    let resp = http().get(b.url("/simple/halfway/")).header("accept", JSON).send().unwrap();
    assert_eq!(resp.status(), 404, "the half upload is not visible");
    let got = http().get(b.url(&format!("/files/{big_sha}/bigpkg-1.0.tar.gz"))).send().unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.headers()["x-cache"], "MISS", "A's half fill left nothing in the bucket");
    assert_eq!(sha256_hex(&got.bytes().unwrap()), big_sha);
    // And the upload goes through on B.
    let scratch = tempfile::tempdir().unwrap();
    assert_ok(&twine_upload(scratch.path(), &b, &name, &bytes), "the upload again, on B");
    drop(a);
}

/// While the bucket does not answer, a replica fails closed (issue 22 item 4): a name it cannot
/// show unclaimed (within `replica_absent_lag`) gets a clear 503, even one it served a moment
/// ago from its local cache, since another replica may have claimed it meanwhile; a name
/// claimed here keeps being served from its record; uploads get a quick 503; and the same
/// process recovers when the bucket is back, without a restart.
#[test]
fn the_bucket_briefly_unreachable_gives_clear_503s_and_recovers_without_a_restart() {
    let mut s3 = S3Server::start();
    let up = MockUpstream::start();
    let (name, bytes) = wheel("steady", "1.0", &[]);
    up.add("steady", MockFile::new(&name, bytes.clone()));
    let dir = tempfile::tempdir().unwrap();
    let a = replica(&s3, "outage", dir.path(), &["--upstream", &up.simple_url()]);
    let file_url = a.url(&format!("/files/{}/{name}", sha256_hex(&bytes)));
    assert_eq!(http().get(&file_url).send().unwrap().status(), 200, "warm the local cache");
    assert_eq!(page(&a, "steady")["files"].as_array().unwrap().len(), 1);
    let scratch = tempfile::tempdir().unwrap();
    let (own, own_bytes) = wheel("outage-own", "1.0", &[]);
    assert_ok(&twine_upload(scratch.path(), &a, &own, &own_bytes), "a private upload before the outage");

    s3.stop();
    std::thread::sleep(Duration::from_millis(1100)); // past replica_absent_lag (1 s)
    for url in [a.url("/simple/steady/"), file_url.clone()] {
        let resp = http().get(&url).send().unwrap();
        assert_eq!(resp.status(), 503, "{url}: an unclaimed name the bucket cannot confirm");
        let text = resp.text().unwrap();
        assert!(text.contains("did not answer whether `steady`"), "{text}");
    }
    // A name claimed here is served from its record as last read: never from upstream anyway.
    assert_eq!(filenames(&page(&a, "outage-own")), [own]);
    // An upload cannot be acknowledged: a clear 503, quickly.
    let (tool, tool_bytes) = wheel("outage-tool", "0.1", &[]);
    let (ct, body) = multipart(&[("name", "outage-tool"), ("version", "0.1")], Some((&tool, &tool_bytes)));
    let started = std::time::Instant::now();
    let resp = http()
        .post(upload_url(&a))
        .basic_auth("x", Some(TOKEN))
        .header("content-type", ct.clone())
        .body(body.clone())
        .send()
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert!(resp.text().unwrap().contains("retry when the bucket is reachable"));
    assert!(started.elapsed() < Duration::from_secs(40), "{:?}", started.elapsed());

    // Back: the same process serves and takes uploads again, no restart.
    s3.restart();
    wait_for_bucket(&a);
    let hit = http().get(&file_url).send().unwrap();
    assert_eq!(hit.status(), 200);
    assert_eq!(sha256_hex(&hit.bytes().unwrap()), sha256_hex(&bytes));
    let resp =
        http().post(upload_url(&a)).basic_auth("x", Some(TOKEN)).header("content-type", ct).body(body).send().unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().unwrap_or_default());
    assert_eq!(filenames(&page(&a, "outage-tool")), [tool]);
}

/// Issue 22 item 4, the attack: a name is claimed through replica B while an attacker's
/// `internal-two 99.0` sits on the upstream; the bucket then stops answering. Replica A,
/// which never saw the claim, must not fall back to the upstream's page: 503 for the page,
/// the attacker's file and pip, and the private page once the bucket is back.
#[test]
fn a_replica_whose_bucket_fails_never_serves_the_upstream_for_a_name_claimed_elsewhere() {
    let mut s3 = S3Server::start();
    let up = MockUpstream::start();
    let (evil, evil_bytes) = wheel("internal-two", "99.0", &[]);
    up.add("internal-two", MockFile::new(&evil, evil_bytes.clone()));
    let extra = ["--upstream", &up.simple_url(), "--allow-shadowing", "internal-two", "--metadata-prefetch", "false"];
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = replica(&s3, "failclosed", da.path(), &extra);
    let b = replica(&s3, "failclosed", db.path(), &extra);
    let scratch = tempfile::tempdir().unwrap();
    let (own, own_bytes) = wheel("internal-two", "1.0", &[]);
    assert_ok(&twine_upload(scratch.path(), &b, &own, &own_bytes), "the claim, through B");

    s3.stop();
    std::thread::sleep(Duration::from_millis(1100)); // past A's start-up listing and any check
    let resp = http().get(a.url("/simple/internal-two/")).send().unwrap();
    assert_eq!(resp.status(), 503, "A fell back to the upstream's page for a name claimed through B");
    let evil_url = a.url(&format!("/files/{}/{evil}", sha256_hex(&evil_bytes)));
    assert_eq!(http().get(&evil_url).send().unwrap().status(), 503, "the attacker's file");
    let target = scratch.path().join("target");
    let out = pip(
        scratch.path(),
        &["install", "--target", target.to_str().unwrap(), "--index-url", &a.url("/simple/"), "internal-two"],
    );
    assert!(!out.status.success(), "pip installed something for a name it could not check");
    assert!(!target.join("internal_two-99.0.dist-info").exists(), "the attacker's release was installed");

    s3.restart();
    wait_for_bucket(&a);
    assert_eq!(filenames(&page(&a, "internal-two")), [own], "A, once the bucket answers: B's upload alone");
}

const READS: &str = r#"larder_replica_checks_total{result="read"}"#;
const LISTINGS: &str = r#"larder_replica_checks_total{result="listed"}"#;

/// Issue 22 item 4, negative caching: a name no replica claimed costs one bucket read per
/// request while reads are cheap (strict: a claim through another replica counts at once),
/// but a flood (here a group of 60 projects, 60 reads per page) cannot multiply bucket calls:
/// beyond 200 reads a second, answers up to `replica_absent_lag` old stand, and one listing
/// answers for many names.
#[test]
fn unclaimed_names_cost_bounded_bucket_reads_under_a_flood() {
    let s3 = S3Server::start();
    let up = MockUpstream::start();
    let (name, bytes) = wheel("plain", "1.0", &[]);
    up.add("plain", MockFile::new(&name, bytes));
    let dir = tempfile::tempdir().unwrap();
    let projects: Vec<String> = (0..60).map(|i| format!("\"p{i}\"")).collect();
    let config = dir.path().join("larder.toml");
    std::fs::write(&config, format!("[groups.many]\nprojects = [{}]\n", projects.join(", "))).unwrap();
    let extra = ["--upstream", &up.simple_url(), "--metadata-prefetch", "false", "--config", config.to_str().unwrap()];
    let larder = replica(&s3, "negative", &dir.path().join("data"), &extra);

    let before = larder.counter(READS);
    for _ in 0..20 {
        assert_eq!(filenames(&page(&larder, "plain")), std::slice::from_ref(&name));
    }
    let reads = larder.counter(READS) - before;
    assert!(reads >= 20, "{reads} bucket reads for 20 page requests: unclaimed names are checked every time");

    let (before, listings) = (larder.counter(READS), larder.counter(LISTINGS));
    let group = |n: usize| larder.url(&format!("/api/v4/groups/many/-/packages/pypi/simple/random-{n}/"));
    for n in 0..40 {
        let status = http().get(group(n)).send().unwrap().status();
        assert!(status == 200 || status == 404, "{status}");
    }
    let reads = larder.counter(READS) - before;
    assert!(reads < 1000, "{reads} bucket reads for 40 requests × 60 projects");
    assert!(larder.counter(LISTINGS) > listings, "one listing answers for many names");
}

#[test]
fn warm_export_import_and_verify_work_against_an_s3_store() {
    let s3 = S3Server::start();
    let up = MockUpstream::start();
    let (name, bytes) = wheel("portable", "1.0", &[]);
    up.add("portable", MockFile { metadata: Some(wheel_metadata(&bytes)), ..MockFile::new(&name, bytes.clone()) });
    let scratch = tempfile::tempdir().unwrap();
    let env_owned = s3.env();
    let env: Vec<(&str, &str)> = env_owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let with = |prefix: &str, dir: &Path, rest: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = rest.iter().map(|s| s.to_string()).collect();
        v.extend(["--data-dir".to_string(), dir.to_str().unwrap().to_string()]);
        v.extend(s3.args(prefix));
        v
    };
    let d1 = tempfile::tempdir().unwrap();
    let warm = with("connected", d1.path(), &["warm", "--upstream", &up.simple_url(), "portable==1.0"]);
    assert_ok(&larder_cli(&warm.iter().map(String::as_str).collect::<Vec<_>>(), &env), "larder warm into S3");
    let bundle = scratch.path().join("b.tar.zst");
    let export = with("connected", d1.path(), &["export", "-o", bundle.to_str().unwrap()]);
    assert_ok(&larder_cli(&export.iter().map(String::as_str).collect::<Vec<_>>(), &env), "larder export from S3");
    let d2 = tempfile::tempdir().unwrap();
    let import = with("airgap", d2.path(), &["import", bundle.to_str().unwrap()]);
    assert_ok(&larder_cli(&import.iter().map(String::as_str).collect::<Vec<_>>(), &env), "larder import into S3");
    let verify = with("airgap", d2.path(), &["verify"]);
    assert_ok(&larder_cli(&verify.iter().map(String::as_str).collect::<Vec<_>>(), &env), "larder verify on S3");
    // A replica on the imported prefix, offline, with an empty disk, serves it to uv.
    let d3 = tempfile::tempdir().unwrap();
    let r = replica(&s3, "airgap", d3.path(), &["--offline"]);
    let target = scratch.path().join("t");
    assert_ok(&uv_install(scratch.path(), &r.index(), &target, "portable==1.0"), "uv install from the imported bucket");
}

#[test]
fn every_size_class_is_stored_in_the_bucket_and_read_back_by_a_cold_replica() {
    let s3 = S3Server::start();
    let up = MockUpstream::start();
    // The local thresholds (crate::sizes), and the S3 store's part size (8 MiB) -1/=/+1.
    let mut files = crate::sizes::files();
    for (i, n) in [8 * 1024 * 1024 - 1, 8 * 1024 * 1024, 8 * 1024 * 1024 + 1].into_iter().enumerate() {
        files.push((format!("sizes-1.{i}.tar.gz"), (0..n).map(|j| ((j * 17 + i) % 253) as u8).collect()));
    }
    for (name, bytes) in &files {
        up.add("sizes", MockFile::new(name, bytes.clone()));
    }
    let extra = ["--upstream", &up.simple_url()];
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = replica(&s3, "sizes", da.path(), &extra);
    crate::sizes::get_all(&a, &files, "MISS");
    std::thread::sleep(Duration::from_millis(500)); // commits to the bucket finish after the last byte
    crate::sizes::get_all(&a, &files, "HIT");
    // B has an empty local cache: every file comes from the bucket, byte for byte, then from
    // its own disk; the upstream is never asked again.
    let b = replica(&s3, "sizes", db.path(), &extra);
    crate::sizes::get_all(&b, &files, "HIT");
    std::thread::sleep(Duration::from_millis(500)); // background copies of large blobs
    crate::sizes::get_all(&b, &files, "HIT");
    for (name, _) in &files {
        assert_eq!(up.count_full(&format!("GET /files/{name}")), 1, "{name} is fetched once, by A");
    }
}

/// The compose example (`docker-compose.replicas.yml`), as Compose resolves it: two replicas on
/// one bucket, each with its own local cache, an S3 server they wait for, a load balancer in
/// front whose config names both; and the S3 server's keys are the ones the replicas send.
#[test]
fn the_compose_example_runs_two_replicas_on_one_bucket_behind_a_balancer() {
    let python = crate::util::venv_bin("python");
    let out = std::process::Command::new(python)
        .args(["-c", "import compose, os; print(os.path.join(os.path.dirname(compose.__file__), 'docker-compose'))"])
        .output()
        .unwrap();
    let compose = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let root = env!("CARGO_MANIFEST_DIR");
    let out = std::process::Command::new(compose)
        .current_dir(root)
        .args(["-f", "docker-compose.replicas.yml", "config", "--format", "json"])
        .env("LARDER_UPSTREAM", "https://upstream.invalid/simple/")
        .output()
        .unwrap();
    assert_ok(&out, "docker compose config");
    let config: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let services = &config["services"];
    let (a, b) = (&services["larder-a"], &services["larder-b"]);
    assert_eq!(a["environment"]["LARDER_STORE"], b["environment"]["LARDER_STORE"], "one bucket");
    assert!(a["environment"]["LARDER_STORE"].as_str().unwrap().starts_with("s3://"));
    assert_ne!(a["volumes"][0]["source"], b["volumes"][0]["source"], "each its own local cache");
    for r in [a, b] {
        assert_eq!(r["depends_on"]["s3"]["condition"], "service_healthy");
    }
    let lb = std::fs::read_to_string(format!("{root}/config/nginx-replicas.conf")).unwrap();
    assert!(lb.contains("server larder-a:3141") && lb.contains("server larder-b:3141"));
    let keys: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{root}/config/seaweedfs-s3.json")).unwrap()).unwrap();
    let cred = &keys["identities"][0]["credentials"][0];
    assert_eq!(a["environment"]["AWS_ACCESS_KEY_ID"], cred["accessKey"]);
    assert_eq!(a["environment"]["AWS_SECRET_ACCESS_KEY"], cred["secretKey"]);
}

/// A copy damaged in the bucket (written behind Larder's back, same size) is never served as
/// a complete file by a replica reading it from there: small blobs are checked before they
/// are sent (an error status), large ones as they stream (the body is cut before its end).
#[test]
fn a_blob_damaged_in_the_bucket_is_never_served_whole() {
    let s3 = S3Server::start();
    let up = MockUpstream::start();
    let small: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let large: Vec<u8> = (0..3_000_000u32).map(|i| (i % 241) as u8).collect();
    for (name, bytes) in [("dmg-1.0.tar.gz", &small), ("dmg-2.0.tar.gz", &large)] {
        up.add("dmg", MockFile::new(name, bytes.clone()));
    }
    let extra = ["--upstream", &up.simple_url()];
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = replica(&s3, "damage", da.path(), &extra);
    for (name, bytes) in [("dmg-1.0.tar.gz", &small), ("dmg-2.0.tar.gz", &large)] {
        let got = http().get(a.url(&format!("/files/{}/{name}", sha256_hex(bytes)))).send().unwrap();
        assert_eq!(sha256_hex(&got.bytes().unwrap()), sha256_hex(bytes));
    }
    std::thread::sleep(Duration::from_millis(500));
    for bytes in [&small, &large] {
        let mut bad = bytes.to_vec();
        bad[bytes.len() / 2] ^= 0xff;
        s3.overwrite(&format!("damage/blobs/{}", sha256_hex(bytes)), bad);
    }
    let b = replica(&s3, "damage", db.path(), &extra);
    for (name, bytes) in [("dmg-1.0.tar.gz", &small), ("dmg-2.0.tar.gz", &large)] {
        let url = b.url(&format!("/files/{}/{name}", sha256_hex(bytes)));
        let complete_and_wrong = match http().get(&url).send() {
            Ok(resp) if resp.status() == 200 => match resp.bytes() {
                Ok(body) => body.len() == bytes.len() && sha256_hex(&body) != sha256_hex(bytes),
                Err(_) => false, // cut mid-body
            },
            _ => false,
        };
        assert!(!complete_and_wrong, "{name}: a damaged copy was served whole");
    }
    assert!(b.log().contains("does not match its sha256"), "{}", b.log());
}

/// Uploads a one-file wheel of `name` to project `team` through `larder`; its filename and sha256.
fn upload_to_team(larder: &Larder, name: &str) -> (String, String) {
    let (filename, bytes) = wheel(name, "1.0", &[]);
    let (ct, body) = multipart(&[("name", name), ("version", "1.0")], Some((&filename, &bytes)));
    let team = larder.url("/api/v4/projects/team/packages/pypi");
    let resp = http().post(team).basic_auth("x", Some(TOKEN)).header("content-type", ct).body(body).send().unwrap();
    assert_eq!(resp.status(), 200);
    (filename, sha256_hex(&bytes))
}

/// A hostile upstream page for `attacker` that lists one file under `sha` (someone's private
/// file), then a pause past any private-record sync made before.
fn attacker_page_naming(up: &MockUpstream, sha: &str) {
    let files = serde_json::json!([
        {"filename": "attacker-1.0.tar.gz", "url": "/files/attacker-1.0.tar.gz", "hashes": {"sha256": sha}},
    ]);
    let page = serde_json::json!({"meta": {"api-version": "1.0"}, "name": "attacker", "files": files}).to_string();
    up.state.lock().unwrap().raw.insert(
        "/simple/attacker/".into(),
        (vec![("content-type", "application/vnd.pypi.simple.v1+json".into())], page.into_bytes()),
    );
    std::thread::sleep(Duration::from_millis(1100));
}

/// A hostile upstream page naming another project's private file (uploaded through another
/// replica after this one started) gets nothing from this replica either: the private records
/// are synced (at most a second old) before an upstream answer may use a blob.
#[test]
fn an_upstream_page_cannot_name_a_private_file_uploaded_through_another_replica() {
    let s3 = S3Server::start();
    let up = MockUpstream::start();
    let extra = ["--upstream", &up.simple_url(), "--metadata-prefetch", "false"];
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = replica(&s3, "hostile", da.path(), &extra);
    let b = replica(&s3, "hostile", db.path(), &extra);
    let (_, private_sha) = upload_to_team(&a, "victim-tool");
    attacker_page_naming(&up, &private_sha);
    let file = http().get(b.url(&format!("/files/{private_sha}/attacker-1.0.tar.gz"))).send().unwrap();
    assert_eq!(file.status(), 404, "another project's private file, named by an upstream page");
    drop(a);
}

/// Issue 22, item 10: the same within the second a replica's listing of private records may
/// be old. B has just listed them and has the attacker's page; A takes an upload whose hash
/// that page names; B is asked at once. The upload's private-blob marker, written before its
/// blob, hides it. Red before: B served the private wheel whole (200) for up to a second.
#[test]
fn a_private_file_uploaded_through_another_replica_a_moment_ago_is_not_served_by_hash() {
    let s3 = S3Server::start();
    let up = MockUpstream::start();
    let extra = ["--upstream", &up.simple_url(), "--metadata-prefetch", "false"];
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = replica(&s3, "window", da.path(), &extra);
    let b = replica(&s3, "window", db.path(), &extra);
    let (_, bytes) = wheel("fresh-secret", "1.0", &[]);
    let private_sha = sha256_hex(&bytes);
    attacker_page_naming(&up, &private_sha);
    let by_hash = b.url(&format!("/files/{private_sha}/attacker-1.0.tar.gz"));
    // B reads the attacker's page and lists the private records (the blob is not there yet).
    assert_ne!(http().get(&by_hash).send().unwrap().status(), 200);
    let (_, uploaded_sha) = upload_to_team(&a, "fresh-secret");
    assert_eq!(uploaded_sha, private_sha);
    let resp = http().get(&by_hash).send().unwrap();
    assert_eq!(resp.status(), 404, "B served a private file uploaded through A a moment ago");
    // After B's next listing the answer is the same.
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(http().get(&by_hash).send().unwrap().status(), 404);
}

/// Issue 22, item 9: a deleted private file's blob stays in the bucket (another replica's
/// records may use it); an upstream page naming its sha must not make it public by hash.
#[test]
fn a_deleted_private_file_stays_hidden_from_upstream_pages_naming_its_sha() {
    let s3 = S3Server::start();
    let up = MockUpstream::start();
    let extra = ["--upstream", &up.simple_url(), "--metadata-prefetch", "false"];
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = replica(&s3, "tombstone", da.path(), &extra);
    let b = replica(&s3, "tombstone", db.path(), &extra);
    let (filename, private_sha) = upload_to_team(&a, "gone-tool");
    let file_url = a.url(&format!("/api/v4/projects/team/packages/pypi/files/{private_sha}/{filename}"));
    let resp = http().delete(&file_url).basic_auth("x", Some(TOKEN)).send().unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    attacker_page_naming(&up, &private_sha);
    for (replica, what) in [(&a, "the replica that deleted it"), (&b, "another replica")] {
        let file = http().get(replica.url(&format!("/files/{private_sha}/attacker-1.0.tar.gz"))).send().unwrap();
        assert_eq!(file.status(), 404, "{what} served a deleted private file named by an upstream page");
    }
}

/// Issue 27: two replicas on one bucket behind a balancer that probes `/-/ready`, under a
/// steady load of page and file hits (reqwest), pip installs and twine uploads, while each
/// replica in turn is stopped with SIGTERM and started again, twice over: no client request
/// fails and every acknowledged upload is there afterwards, on both replicas.
#[test]
fn a_rolling_restart_under_load_fails_no_request_and_loses_no_upload() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    let s3 = S3Server::start();
    let up = MockUpstream::start();
    let (lib, lib_bytes) = wheel("rolling-lib", "1.0", &[]);
    let (app, app_bytes) = wheel("rolling-app", "1.0", &["rolling-lib"]);
    up.add("rolling-lib", MockFile::new(&lib, lib_bytes));
    up.add("rolling-app", MockFile::new(&app, app_bytes.clone()));
    let extra = ["--upstream", &up.simple_url(), "--drain-delay", "1s", "--shutdown-timeout", "20s"];
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut replicas = vec![replica(&s3, "rolling", da.path(), &extra), replica(&s3, "rolling", db.path(), &extra)];
    let lb = Arc::new(crate::util::balancer::Balancer::start(&[&replicas[0].base, &replicas[1].base]));
    let file = format!("/files/{}/{app}", sha256_hex(&app_bytes));
    assert_eq!(http().get(lb.url(&file)).send().unwrap().status(), 200, "warm");

    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut load = Vec::new();
    for _ in 0..2 {
        let (lb, stop, failures, file) = (lb.clone(), stop.clone(), failures.clone(), file.clone());
        load.push(std::thread::spawn(move || {
            let client = http();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                for path in ["/simple/rolling-app/", file.as_str()] {
                    match client.get(lb.url(path)).send() {
                        Ok(r) if r.status() == 200 => n += 1,
                        Ok(r) => failures.lock().unwrap().push(format!(
                            "GET {path}: {} {}",
                            r.status(),
                            r.text().unwrap_or_default()
                        )),
                        Err(e) => failures.lock().unwrap().push(format!("GET {path}: {e}")),
                    }
                }
            }
            n
        }));
    }
    {
        let (lb, stop, failures) = (lb.clone(), stop.clone(), failures.clone());
        load.push(std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let scratch = tempfile::tempdir().unwrap();
                let target = scratch.path().join("t");
                let out = pip(
                    scratch.path(),
                    &[
                        "install",
                        "--target",
                        target.to_str().unwrap(),
                        "--index-url",
                        &lb.url("/simple/"),
                        "rolling-app",
                    ],
                );
                match out.status.success() {
                    true => n += 1,
                    false => failures.lock().unwrap().push(format!("pip: {}", String::from_utf8_lossy(&out.stderr))),
                }
            }
            n
        }));
    }
    {
        let (lb, stop, failures, acked) = (lb.clone(), stop.clone(), failures.clone(), acked.clone());
        load.push(std::thread::spawn(move || {
            let scratch = tempfile::tempdir().unwrap();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let (filename, bytes) = wheel("rolling-own", &format!("1.{n}"), &[]);
                let path = scratch.path().join(&filename);
                std::fs::write(&path, bytes).unwrap();
                let url = lb.url("/api/v4/projects/default/packages/pypi");
                let out = twine(
                    scratch.path(),
                    &["upload", "--repository-url", &url, "-u", "x", "-p", TOKEN, path.to_str().unwrap()],
                );
                match out.status.success() {
                    true => acked.lock().unwrap().push(filename),
                    false => failures.lock().unwrap().push(format!("twine: {}", String::from_utf8_lossy(&out.stdout))),
                }
                n += 1;
            }
            n
        }));
    }

    std::thread::sleep(Duration::from_secs(1));
    let mut logs = Vec::new();
    for _round in 0..2 {
        for i in 0..2 {
            let old = replicas.remove(i);
            let old_base = old.base.clone();
            let (new, log) = old.restart_gracefully(Duration::from_secs(30));
            logs.push(log);
            lb.replace(&old_base, &new.base);
            replicas.insert(i, new);
            std::thread::sleep(Duration::from_millis(1500));
        }
    }
    stop.store(true, Ordering::Relaxed);
    let done: Vec<usize> = load.into_iter().map(|t| t.join().unwrap()).collect();
    let failures = failures.lock().unwrap();
    let unusual: Vec<&str> = logs
        .iter()
        .flat_map(|l| l.lines())
        .filter(|l| {
            l.contains(" WARN ") || l.contains(" ERROR ") || (l.contains("served status=") && !l.contains("status=200"))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} failed client requests (done: {done:?}):\n{}\nearlier processes:\n{}",
        failures.len(),
        failures.join("\n"),
        unusual.join("\n")
    );
    assert!(done.iter().all(|&n| n > 0), "every kind of load ran: {done:?}");
    let mut acked = acked.lock().unwrap().clone();
    acked.sort();
    assert!(acked.len() >= 3, "{acked:?}");
    for r in &replicas {
        let mut listed = filenames(&page(r, "rolling-own"));
        listed.sort();
        assert_eq!(listed, acked, "every acknowledged upload, on {}", r.base);
    }
}

/// Found by the rolling-restart test: behind a balancer, pip reads a page from one replica
/// (which advertises `.metadata` for every wheel, issue 11) and the `.metadata` from another,
/// at any moment of the first replica's work on it.
#[test]
fn metadata_advertised_by_one_replica_is_served_by_another() {
    let s3 = S3Server::start();
    let up = MockUpstream::start();
    let extra = ["--upstream", &up.simple_url()];
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = replica(&s3, "spread", da.path(), &extra);
    let b = replica(&s3, "spread", db.path(), &extra);
    for i in 0..8 {
        let name = format!("spread-app{i}");
        let (app, app_bytes) = wheel(&name, "1.0", &["spread-lib"]);
        up.add(&name, MockFile::new(&app, app_bytes.clone()));
        let file = format!("/files/{}/{app}", sha256_hex(&app_bytes));
        let listed = page(&a, &name);
        assert_ne!(listed["files"][0]["core-metadata"], false, "{listed}");
        std::thread::sleep(Duration::from_millis(i * 40));
        let _ = page(&b, &name);
        for (r, what) in [(&b, "another replica"), (&a, "the same replica")] {
            let resp = http().get(r.url(&format!("{file}.metadata"))).send().unwrap();
            assert_eq!(resp.status(), 200, "{what}, {i}: {}", resp.text().unwrap_or_default());
            assert!(resp.text().unwrap().contains("Requires-Dist: spread-lib"));
        }
    }
}

/// Issue 25, quarantine from upstream: a release the upstream withdraws (PEP 792 quarantine,
/// or removal) leaves the pages of every replica at their next revalidation, and its stored
/// file is served by none of them.
#[test]
fn replicas_follow_a_release_the_upstream_withdraws() {
    let s3 = S3Server::start();
    let up = MockUpstream::start();
    for v in ["1.0", "2.0"] {
        let (name, bytes) = wheel("quarantined", v, &[]);
        up.add("quarantined", MockFile::new(&name, bytes));
    }
    let extra = ["--upstream", &up.simple_url(), "--metadata-prefetch", "false", "--index-ttl", "1s"];
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = replica(&s3, "quarantine", da.path(), &extra);
    let b = replica(&s3, "quarantine", db.path(), &extra);
    let (v2, v2_bytes) = wheel("quarantined", "2.0", &[]);
    let file = format!("/files/{}/{v2}", sha256_hex(&v2_bytes));
    for r in [&a, &b] {
        assert_eq!(filenames(&page(r, "quarantined")).len(), 2);
        assert_eq!(http().get(r.url(&file)).send().unwrap().status(), 200);
    }
    up.state.lock().unwrap().projects.get_mut("quarantined").unwrap().retain(|f| !f.filename.contains("-2.0-"));
    std::thread::sleep(Duration::from_millis(1500));
    for r in [&a, &b] {
        assert_eq!(filenames(&page(r, "quarantined")), ["quarantined-1.0-py3-none-any.whl"], "{}", r.base);
        assert_eq!(http().get(r.url(&file)).send().unwrap().status(), 404, "{}", r.base);
    }
}

/// Issue 25: advisories imported into the shared bucket reach every replica (here at once, on
/// SIGHUP; else within 30 s): a MAL- record blocks its package on both.
#[test]
fn advisories_imported_into_the_bucket_reach_every_replica() {
    let s3 = S3Server::start();
    let up = MockUpstream::start();
    let (name, bytes) = wheel("bad-actor", "1.0", &[]);
    up.add("bad-actor", MockFile::new(&name, bytes.clone()));
    let extra = ["--upstream", &up.simple_url(), "--metadata-prefetch", "false"];
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = replica(&s3, "osv", da.path(), &extra);
    let b = replica(&s3, "osv", db.path(), &extra);
    let file = format!("/files/{}/{name}", sha256_hex(&bytes));
    assert_eq!(http().get(a.url(&file)).send().unwrap().status(), 200);

    let scratch = tempfile::tempdir().unwrap();
    let record = serde_json::json!({"id": "MAL-2026-0100", "modified": "2026-11-01T00:00:00Z", "summary": "steals tokens",
        "affected": [{"package": {"ecosystem": "PyPI", "name": "bad-actor"}, "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}]}]}]});
    let path = scratch.path().join("MAL-2026-0100.json");
    std::fs::write(&path, record.to_string()).unwrap();
    let mut args: Vec<String> = vec!["advisories".into(), "import".into()];
    args.extend(s3.args("osv"));
    args.extend(["--data-dir".into(), scratch.path().join("cli").to_string_lossy().into_owned()]);
    args.push(path.to_string_lossy().into_owned());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let env = s3.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_ok(&larder_cli(&args, &env), "larder advisories import into the bucket");
    for r in [&a, &b] {
        std::process::Command::new("kill").args(["-HUP", &r.pid().to_string()]).status().unwrap();
    }
    for r in [&a, &b] {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while http().get(r.url(&file)).send().unwrap().status() != 403 {
            assert!(std::time::Instant::now() < deadline, "{} did not pick up the import:\n{}", r.base, r.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Issue 27: the bucket carries the store format too. Two replicas opening a new prefix at
/// once stamp it once; a stamp of a newer format makes every command on that bucket refuse.
#[test]
fn replicas_stamp_a_bucket_and_refuse_one_of_a_newer_format() {
    let s3 = S3Server::start();
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = std::thread::scope(|t| {
        let a = t.spawn(|| replica(&s3, "fmt", da.path(), &[]));
        let b = t.spawn(|| replica(&s3, "fmt", db.path(), &[]));
        (a.join().unwrap(), b.join().unwrap())
    });
    drop((a, b));
    let env_owned = s3.env();
    let env: Vec<(&str, &str)> = env_owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let with = |rest: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = rest.iter().map(|s| s.to_string()).collect();
        v.extend(["--data-dir".to_string(), da.path().to_str().unwrap().to_string()]);
        v.extend(s3.args("fmt"));
        v
    };
    let run = |rest: &[&str]| {
        let args = with(rest);
        crate::util::larder_cli_ending(&args.iter().map(String::as_str).collect::<Vec<_>>(), &env)
    };
    assert_ok(&run(&["verify"]), "verify of the stamped bucket");

    s3.overwrite("fmt/records/store-format", br#"{"format":2,"written_by":"larder 9.0.0"}"#.to_vec());
    for rest in [&["serve", "--listen", "127.0.0.1:0"][..], &["verify"], &["export", "-o", "/dev/null"]] {
        let out = run(rest);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{rest:?} must refuse");
        assert!(err.contains("written by a newer Larder (larder 9.0.0, store format 2)"), "{rest:?}: {err}");
        assert!(err.contains("s3://"), "the message names the bucket: {err}");
    }
}
