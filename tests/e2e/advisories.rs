//! Advisories from OSV (issue 25): records in OSV's schema imported with `larder advisories
//! import` (a directory and OSV's zip export; bad records reported and skipped), `MAL-`
//! records blocking what they name for pip and uv, vulnerabilities reported through OSV's API
//! to the real `uv audit --service-url`, a running server picking up a new import, and the
//! set travelling in a bundle.

use std::io::Write;
use std::path::Path;

use serde_json::{Value, json};

use crate::util::upstream::{MockFile, MockUpstream};
use crate::util::{Larder, assert_ok, http, json_page, larder_cli, pip, sha256_hex, uv, uv_install, wheel};

fn record(id: &str, modified: &str, affected: Value, aliases: &[&str]) -> Value {
    json!({
        "schema_version": "1.6.0", "id": id, "modified": modified, "aliases": aliases,
        "summary": format!("{id} summary"), "details": "details", "affected": affected,
    })
}

fn pypi(name: &str, events: Value) -> Value {
    json!([{"package": {"ecosystem": "PyPI", "name": name}, "ranges": [{"type": "ECOSYSTEM", "events": events}]}])
}

/// The test's OSV records: a malicious package, a vulnerability with a fix, a withdrawn one,
/// another ecosystem's, and three malformed ones.
fn write_records(dir: &Path) {
    let files = [
        (
            "MAL-2026-0001.json",
            record("MAL-2026-0001", "2026-11-01T00:00:00Z", pypi("Evil_Pkg", json!([{"introduced": "0"}])), &[])
                .to_string(),
        ),
        ("GHSA-aaaa-bbbb-cccc.json", {
            let mut r = record(
                "GHSA-aaaa-bbbb-cccc",
                "2026-11-02T10:00:00.5+00:00",
                pypi("goodlib", json!([{"introduced": "0"}, {"fixed": "2.0"}])),
                &["CVE-2026-1111"],
            );
            r["severity"] = json!([{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}]);
            r.to_string()
        }),
        (
            "PYSEC-2026-9.json",
            json!({"id": "PYSEC-2026-9", "modified": "2026-11-03T00:00:00Z", "withdrawn": "2026-11-03T00:00:00Z",
                   "affected": pypi("goodlib", json!([{"introduced": "0"}]))})
            .to_string(),
        ),
        (
            "npm.json",
            record(
                "MAL-2026-0002",
                "2026-11-01T00:00:00Z",
                json!([{"package": {"ecosystem": "npm", "name": "goodlib"}}]),
                &[],
            )
            .to_string(),
        ),
        ("broken.json", "{\"id\": ".to_string()),
        ("bad-id.json", record("../../etc", "2026-11-01T00:00:00Z", pypi("x", json!([])), &[]).to_string()),
        ("bad-time.json", record("X-1", "last tuesday", pypi("x", json!([])), &[]).to_string()),
    ];
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    for (i, (name, body)) in files.iter().enumerate() {
        let path = if i % 2 == 0 { dir.join(name) } else { dir.join("sub").join(name) };
        std::fs::write(path, body).unwrap();
    }
}

/// OSV's export for PyPI as OSV publishes it (`all.zip`): one record, MAL-2026-0003, naming
/// goodlib from 2.0 on.
fn osv_zip() -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    let mal = record("MAL-2026-0003", "2026-11-05T00:00:00Z", pypi("goodlib", json!([{"introduced": "2.0"}])), &[]);
    zip.start_file("MAL-2026-0003.json", options).unwrap();
    zip.write_all(mal.to_string().as_bytes()).unwrap();
    zip.finish().unwrap().into_inner()
}

/// A data dir under `dir` with the test's records imported.
fn data_with_records(dir: &Path) -> std::path::PathBuf {
    let (data, records) = (dir.join("data"), dir.join("osv"));
    write_records(&records);
    import(&data, &records);
    data
}

fn import(data: &Path, path: &Path) -> String {
    let out = larder_cli(&["advisories", "import", "--data-dir", data.to_str().unwrap(), path.to_str().unwrap()], &[]);
    assert_ok(&out, "larder advisories import");
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

fn upstream() -> (MockUpstream, String, String) {
    let up = MockUpstream::start();
    let (evil, evil_bytes) = wheel("evil-pkg", "1.0", &[]);
    up.add("evil-pkg", MockFile::new(&evil, evil_bytes.clone()));
    for v in ["1.0", "2.0"] {
        let (name, bytes) = wheel("goodlib", v, &[]);
        up.add("goodlib", MockFile::new(&name, bytes));
    }
    (up, format!("/files/{}/{evil}", sha256_hex(&evil_bytes)), evil)
}

fn post(larder: &Larder, path: &str, body: Value) -> (u16, Value) {
    let resp = http().post(larder.url(path)).json(&body).send().unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().unwrap_or(Value::Null))
}

/// A project using goodlib `version` from Larder's index, locked by hand (`uv audit --frozen`
/// reads the lock and asks the OSV service about every package in it).
fn audit_project(dir: &Path, larder: &Larder, version: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let pyproject = format!(
        "[project]\nname = \"demo\"\nversion = \"0.1.0\"\nrequires-python = \">=3.8\"\ndependencies = [\"goodlib=={version}\"]\n"
    );
    std::fs::write(dir.join("pyproject.toml"), pyproject).unwrap();
    let index = larder.url("/simple");
    let lock = format!(
        r#"version = 1
revision = 3
requires-python = ">=3.8"

[[package]]
name = "demo"
version = "0.1.0"
source = {{ virtual = "." }}
dependencies = [{{ name = "goodlib" }}]

[[package]]
name = "goodlib"
version = "{version}"
source = {{ registry = "{index}" }}
wheels = [{{ url = "{index}/../files/0000000000000000000000000000000000000000000000000000000000000000/goodlib-{version}-py3-none-any.whl", hash = "sha256:0000000000000000000000000000000000000000000000000000000000000000" }}]
"#
    );
    std::fs::write(dir.join("uv.lock"), lock).unwrap();
}

fn uv_audit(project: &Path, larder: &Larder) -> std::process::Output {
    let service = larder.url("/-/osv/");
    let dir = project.to_str().unwrap();
    uv(
        project,
        &[
            "audit",
            "--directory",
            dir,
            "--frozen",
            "--no-cache",
            "--preview-features",
            "audit-command",
            "--service-url",
            &service,
        ],
    )
}

#[test]
fn malicious_packages_are_blocked_and_uv_audit_reports_vulnerabilities_from_imported_osv_records() {
    let (up, evil_file, evil) = upstream();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let records = dir.path().join("osv");
    write_records(&records);
    let out = import(&data, &records);
    assert!(out.contains("2 added") && out.contains("4 skipped"), "{out}"); // 3 bad, 1 npm
    for bad in ["broken.json", "bad-id.json", "bad-time.json"] {
        assert!(out.contains(bad), "{bad} is reported: {out}");
    }
    assert!(import(&data, &records).contains("0 added, 0 updated, 2 unchanged"), "safe to run again");

    let larder = Larder::start(&data, &["--upstream", &up.simple_url(), "--metadata-prefetch", "false"]);
    // MAL-: gone from the page, 403 naming the advisory, and pip and uv cannot install it.
    let page = json_page(&larder.url("/simple/evil-pkg/"), None);
    assert_eq!(
        (&page["files"], &page["versions"]),
        (&json!([]), &json!([])),
        "gone from files and PEP 700 versions: {page}"
    );
    let resp = http().get(larder.url("/pypi/evil-pkg/json")).send().unwrap();
    let text = resp.text().unwrap();
    assert!(!text.contains(&evil), "PyPI's JSON API lists a blocked file: {text}");
    let resp = http().get(larder.url(&evil_file)).send().unwrap();
    assert_eq!(resp.status(), 403);
    let why = resp.text().unwrap();
    assert!(why.contains("MAL-2026-0001") && why.contains(&evil), "{why}");
    let scratch = tempfile::tempdir().unwrap();
    let target = scratch.path().join("t");
    let out = pip(
        scratch.path(),
        &["install", "--target", target.to_str().unwrap(), "--index-url", &larder.index(), "evil-pkg"],
    );
    assert!(!out.status.success(), "pip installed a malicious package");
    let out = uv_install(scratch.path(), &larder.index(), &scratch.path().join("u"), "evil-pkg");
    assert!(!out.status.success(), "uv installed a malicious package");
    // A vulnerability is reported, not blocked.
    let out = pip(
        scratch.path(),
        &["install", "--target", target.to_str().unwrap(), "--index-url", &larder.index(), "goodlib==1.0"],
    );
    assert_ok(&out, "pip install goodlib==1.0 (vulnerable, not blocked)");
    let metrics = http().get(larder.url("/metrics")).send().unwrap().text().unwrap();
    assert!(metrics.contains(r#"larder_blocked_total{kind="file",advisory="malicious"}"#), "{metrics}");
    // The project page for people lists the advisories of each version.
    let ui = http().get(larder.url("/-/ui/packages/goodlib")).send().unwrap().text().unwrap();
    assert!(ui.contains("GHSA-aaaa-bbbb-cccc</a> (vulnerability)") && ui.contains("1 advisory"), "{ui}");

    // OSV's API, as uv and other clients send it.
    let q = |name: &str, version: &str| json!({"package": {"name": name, "ecosystem": "PyPI"}, "version": version});
    let (status, batch) = post(
        &larder,
        "/-/osv/v1/querybatch",
        json!({"queries": [q("GoodLib", "1.0"), q("goodlib", "2.0"), q("evil.pkg", "3")]}),
    );
    assert_eq!(status, 200);
    assert_eq!(batch["results"][0]["vulns"][0]["id"], "GHSA-aaaa-bbbb-cccc", "{batch}");
    assert_eq!(batch["results"][1], json!({}), "fixed in 2.0: {batch}");
    assert_eq!(batch["results"][2]["vulns"][0]["id"], "MAL-2026-0001", "{batch}");
    let (status, one) = post(&larder, "/-/osv/v1/query", q("goodlib", "1.5"));
    assert_eq!((status, one["vulns"][0]["aliases"][0].as_str()), (200, Some("CVE-2026-1111")), "{one}");
    let record: Value = http().get(larder.url("/-/osv/v1/vulns/GHSA-aaaa-bbbb-cccc")).send().unwrap().json().unwrap();
    assert_eq!(record["affected"][0]["ranges"][0]["events"][1]["fixed"], "2.0");
    assert_eq!(http().get(larder.url("/-/osv/v1/vulns/PYSEC-2026-9")).send().unwrap().status(), 404, "withdrawn");
    let many: Vec<Value> = (0..1001).map(|_| q("goodlib", "1.0")).collect();
    assert_eq!(post(&larder, "/-/osv/v1/querybatch", json!({ "queries": many })).0, 400, "over 1000 queries");
    let far = json!({"package": {"name": "goodlib", "ecosystem": "PyPI"}, "page_token": usize::MAX.to_string()});
    assert_eq!(post(&larder, "/-/osv/v1/query", far), (200, json!({})), "a page past the end");
    for (body, what) in [(json!({"queries": "x"}), "not a list"), (json!({"commit": "abc"}), "by commit")] {
        let path = if body.get("queries").is_some() { "/-/osv/v1/querybatch" } else { "/-/osv/v1/query" };
        assert_eq!(post(&larder, path, body).0, 400, "{what}");
    }

    // The real uv audit, with Larder as its only OSV service.
    let project = dir.path().join("project");
    audit_project(&project, &larder, "1.0");
    let out = uv_audit(&project, &larder);
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("GHSA-aaaa-bbbb-cccc") && text.contains("Fixed in: 2.0"), "{text}");
    audit_project(&project, &larder, "2.0");
    let out = uv_audit(&project, &larder);
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("Found no known vulnerabilities"), "{text}");
}

/// An import while the server runs (from OSV's zip export this time) is picked up on SIGHUP
/// (else within 30 s), and a bundle carries the set to another store.
#[test]
fn a_new_import_reaches_a_running_server_and_a_bundle_carries_the_advisories() {
    let (up, _, _) = upstream();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let larder = Larder::start(&data, &["--upstream", &up.simple_url(), "--metadata-prefetch", "false"]);
    let (name, bytes) = wheel("goodlib", "2.0", &[]);
    let file = larder.url(&format!("/files/{}/{name}", sha256_hex(&bytes)));
    assert_eq!(http().get(&file).send().unwrap().status(), 200, "before any advisory");

    let zip_path = dir.path().join("all.zip");
    std::fs::write(&zip_path, osv_zip()).unwrap();
    assert!(import(&data, &zip_path).contains("1 added"));
    std::process::Command::new("kill").args(["-HUP", &larder.pid().to_string()]).status().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while http().get(&file).send().unwrap().status() != 403 {
        assert!(std::time::Instant::now() < deadline, "the running server did not pick up the import");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let (old, old_bytes) = wheel("goodlib", "1.0", &[]);
    let old_url = larder.url(&format!("/files/{}/{old}", sha256_hex(&old_bytes)));
    assert_eq!(http().get(&old_url).send().unwrap().status(), 200, "1.0 is before the malicious range");

    let bundle = dir.path().join("bundle.tar");
    assert_ok(
        &larder_cli(&["export", "--data-dir", data.to_str().unwrap(), "-o", bundle.to_str().unwrap()], &[]),
        "export",
    );
    let other = dir.path().join("other");
    // Imports are audited (issue 23): the bundle and the advisories, one line each.
    let audit = dir.path().join("audit.jsonl");
    let audit_env = [("LARDER_AUDIT_LOG", audit.to_str().unwrap())];
    assert_ok(
        &larder_cli(&["import", "--data-dir", other.to_str().unwrap(), bundle.to_str().unwrap()], &audit_env),
        "import",
    );
    let records = dir.path().join("osv-again");
    write_records(&records);
    let out = larder_cli(
        &["advisories", "import", "--data-dir", other.to_str().unwrap(), records.to_str().unwrap()],
        &audit_env,
    );
    assert_ok(&out, "advisories import, audited");
    let lines: Vec<serde_json::Value> =
        std::fs::read_to_string(&audit).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines.iter().all(|l| l["action"] == "import" && l["result"] == "ok" && l["who"]["kind"] == "operator"));
    assert_eq!(lines[0]["who"]["via"], "larder import");
    assert!(lines[1]["reason"].as_str().unwrap().starts_with("advisories from"), "{}", lines[1]);
    let second = Larder::start(&other, &["--offline"]);
    let (status, batch) = post(
        &second,
        "/-/osv/v1/querybatch",
        json!({"queries": [{"package": {"name": "goodlib", "ecosystem": "PyPI"}, "version": "2.1"}]}),
    );
    assert_eq!((status, batch["results"][0]["vulns"][0]["id"].as_str()), (200, Some("MAL-2026-0003")), "{batch}");
}

/// A private upload is never matched against upstream advisories of the same name: a team's
/// own `evil-pkg` (the name an upstream malicious package took) installs.
#[test]
fn a_private_upload_is_not_blocked_by_an_upstream_advisory_of_its_name() {
    let (up, _, _) = upstream();
    let dir = tempfile::tempdir().unwrap();
    let data = data_with_records(dir.path());
    let args = ["--upstream", &up.simple_url(), "--allow-shadowing", "evil-pkg", "--metadata-prefetch", "false"];
    let larder = Larder::start_with_env(&data, &args, &[("LARDER_TOKEN", "advisory-token-1")]);
    let (own, own_bytes) = wheel("evil-pkg", "7.0", &[]);
    let (ct, body) = crate::util::multipart(&[("name", "evil-pkg"), ("version", "7.0")], Some((&own, &own_bytes)));
    let resp = http()
        .post(larder.url("/api/v4/projects/default/packages/pypi"))
        .basic_auth("x", Some("advisory-token-1"))
        .header("content-type", ct)
        .body(body)
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().unwrap_or_default());
    let scratch = tempfile::tempdir().unwrap();
    let target = scratch.path().join("t");
    let out = pip(
        scratch.path(),
        &["install", "--target", target.to_str().unwrap(), "--index-url", &larder.index(), "evil-pkg"],
    );
    assert_ok(&out, "pip install of the private evil-pkg");
    assert!(target.join("evil_pkg-7.0.dist-info").exists());

    // `[advisories] match_private = true`: the same private upload is matched, and refused.
    drop(larder);
    let config = dir.path().join("larder.toml");
    std::fs::write(&config, "[advisories]\nmatch_private = true\n").unwrap();
    let args = [&args[..], &["--config", config.to_str().unwrap()]].concat();
    let larder = Larder::start_with_env(&data, &args, &[("LARDER_TOKEN", "advisory-token-1")]);
    let target = scratch.path().join("t2");
    let out = pip(
        scratch.path(),
        &["install", "--target", target.to_str().unwrap(), "--index-url", &larder.index(), "evil-pkg"],
    );
    assert!(!out.status.success(), "match_private: the private evil-pkg is blocked too");
}

/// `[advisories] block_severity` blocks vulnerabilities from a CVSS base score, a break-glass
/// entry lets one advisory through until it expires (and is logged when it does), an expired
/// one does nothing, and PyPI's JSON API lists the advisories of a release.
#[test]
fn block_severity_break_glass_and_the_json_api_list_of_vulnerabilities() {
    let (up, evil_file, _) = upstream();
    let dir = tempfile::tempdir().unwrap();
    let data = data_with_records(dir.path());
    let config = dir.path().join("larder.toml");
    std::fs::write(
        &config,
        r#"
[advisories]
block_severity = "high"

[[advisories.allow]]
id = "MAL-2026-0001"
reason = "vetted by the security team, SEC-1"
expires = "2099-01-01"

[[advisories.allow]]
id = "GHSA-aaaa-bbbb-cccc"
version = "==1.0"
reason = "an old exception"
expires = "2020-01-01"
"#,
    )
    .unwrap();
    let args = ["--upstream", &up.simple_url(), "--metadata-prefetch", "false", "--config", config.to_str().unwrap()];
    let larder = Larder::start(&data, &args);
    assert_eq!(http().get(larder.url(&evil_file)).send().unwrap().status(), 200, "let through by the break-glass");
    assert!(larder.log().contains("served under an [[advisories.allow]] break-glass entry"), "{}", larder.log());
    let (v1, v1_bytes) = wheel("goodlib", "1.0", &[]);
    let resp = http().get(larder.url(&format!("/files/{}/{v1}", sha256_hex(&v1_bytes)))).send().unwrap();
    assert_eq!(resp.status(), 403, "CVSS 9.8 at block_severity high; its break-glass expired");
    assert!(resp.text().unwrap().contains("CVSS 9.8"));
    let (v2, v2_bytes) = wheel("goodlib", "2.0", &[]);
    assert_eq!(http().get(larder.url(&format!("/files/{}/{v2}", sha256_hex(&v2_bytes)))).send().unwrap().status(), 200);
    let metrics = http().get(larder.url("/metrics")).send().unwrap().text().unwrap();
    let allowed = metrics.lines().find_map(|l| l.strip_prefix("larder_advisory_allowed_total ")?.parse::<u64>().ok());
    assert!(allowed.is_some_and(|n| n >= 1), "{metrics}");

    // PyPI's JSON API: the release's advisories, as warehouse lists them.
    let body: Value = http().get(larder.url("/pypi/evil-pkg/1.0/json")).send().unwrap().json().unwrap();
    assert_eq!(body["vulnerabilities"][0]["id"], "MAL-2026-0001", "{body}");
    let body: Value = http().get(larder.url("/pypi/goodlib/json")).send().unwrap().json().unwrap();
    assert_eq!(body["info"]["version"], "2.0");
    assert_eq!(body["vulnerabilities"], json!([]), "2.0 is fixed: {body}");

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[advisories]\nblock_severity = \"extreme\"\n").unwrap();
    let out = larder_cli(&["serve", "--data-dir", data.to_str().unwrap(), "--config", bad.to_str().unwrap()], &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("block_severity `extreme`"), "{out:?}");
}

/// `[advisories] url`: where there is a network, OSV's export is imported on a schedule (at
/// start, then every `refresh`; an import by any process within `refresh` counts).
#[test]
fn advisories_are_refreshed_from_a_configured_url() {
    let (up, _, _) = upstream();
    up.state
        .lock()
        .unwrap()
        .raw
        .insert("/osv/all.zip".into(), (vec![("content-type", "application/zip".into())], osv_zip()));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("larder.toml");
    let url = up.simple_url().replace("/simple/", "/osv/all.zip");
    std::fs::write(&config, format!("[advisories]\nurl = \"{url}\"\nrefresh = \"1h\"\n")).unwrap();
    let args = ["--upstream", &up.simple_url(), "--metadata-prefetch", "false", "--config", config.to_str().unwrap()];
    let data = dir.path().join("data");
    let larder = Larder::start(&data, &args);
    let (name, bytes) = wheel("goodlib", "2.0", &[]);
    let file = larder.url(&format!("/files/{}/{name}", sha256_hex(&bytes)));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while http().get(&file).send().unwrap().status() != 403 {
        assert!(std::time::Instant::now() < deadline, "not refreshed from the URL:\n{}", larder.log());
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(up.count("/osv/all.zip"), 1);
    // A restart within `refresh` does not download it again.
    let larder = larder.restart();
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(http().get(larder.url(&format!("/files/{}/{name}", sha256_hex(&bytes)))).send().unwrap().status(), 403);
    assert_eq!(up.count("/osv/all.zip"), 1, "imported less than `refresh` ago: not fetched again");
}

/// Quarantine from upstream (PEP 792, per release): a release the upstream drops from its
/// page (quarantined or removed) is withdrawn from Larder's page at the next revalidation,
/// and its file, though stored, is no longer served: no page in the scope lists it.
#[test]
fn a_release_the_upstream_withdraws_is_withdrawn_here_at_the_next_revalidation() {
    let (up, _, _) = upstream();
    let dir = tempfile::tempdir().unwrap();
    let args = ["--upstream", &up.simple_url(), "--metadata-prefetch", "false", "--index-ttl", "1s"];
    let larder = Larder::start(dir.path(), &args);
    let (v2, v2_bytes) = wheel("goodlib", "2.0", &[]);
    let file = larder.url(&format!("/files/{}/{v2}", sha256_hex(&v2_bytes)));
    assert_eq!(http().get(&file).send().unwrap().status(), 200, "stored");
    up.state.lock().unwrap().projects.get_mut("goodlib").unwrap().retain(|f| !f.filename.contains("-2.0-"));
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let page = json_page(&larder.url("/simple/goodlib/"), None);
    let names: Vec<&str> = page["files"].as_array().unwrap().iter().map(|f| f["filename"].as_str().unwrap()).collect();
    assert_eq!(names, ["goodlib-1.0-py3-none-any.whl"], "{page}");
    assert_eq!(page["versions"], json!(["1.0"]));
    assert_eq!(http().get(&file).send().unwrap().status(), 404, "a withdrawn release's stored file");
}
