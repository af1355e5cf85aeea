//! Upgrades keep the store (issue 27 part 2): a golden data dir and bundle written by the last
//! Larder before the store format stamp (`tests/fixtures/store-v1`, made by
//! `scripts/golden-store`) are served, verified, exported and imported by today's binary
//! unchanged; a store stamped by a newer Larder is refused by every command, untouched; and
//! `larder verify` says what it would repair, then `--repair` does.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Output;

use larder::store::{LocalStore, Store};

use crate::util::{
    Larder, assert_ok, hashes_in, json_page, larder_cli_ending, larder_quiet, pip, pip_download, s, sha256_hex,
};

const PRIVATE_TOKEN: &str = "golden-token";

/// `larder <args>` that must end by itself (a `serve` that does not refuse would run on).
fn larder_ending(args: &[&str]) -> Output {
    larder_cli_ending(args, &[("LARDER_CONFIG", "/dev/null"), ("LARDER_LOG", "warn")])
}

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/store-v1")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A copy of the golden data dir (tests change what they are given, never the fixture).
fn golden_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixture().join("data"), dir.path());
    dir
}

/// A bundle's manifest: its record keys and blob sha256s.
fn manifest(bundle: &Path) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut archive = tar::Archive::new(std::fs::File::open(bundle).unwrap());
    let mut entry = archive.entries().unwrap().next().unwrap().unwrap();
    assert_eq!(entry.path().unwrap().to_str(), Some("manifest.json"));
    let mut text = String::new();
    entry.read_to_string(&mut text).unwrap();
    let m: serde_json::Value = serde_json::from_str(&text).unwrap();
    let keys = m["records"].as_array().unwrap().iter().map(|r| r["key"].as_str().unwrap().to_string()).collect();
    let blobs = m["blobs"].as_array().unwrap().iter().map(|b| b["sha256"].as_str().unwrap().to_string()).collect();
    (keys, blobs)
}

/// sha256 of every file under `dir`, by relative path.
fn tree_hashes(dir: &Path) -> std::collections::BTreeMap<PathBuf, String> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.insert(path.strip_prefix(dir).unwrap().to_path_buf(), sha256_hex(&std::fs::read(&path).unwrap()));
            }
        }
    }
    out
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// Everything the golden store holds, asked of a Larder serving it offline.
fn serves_the_golden_store(larder: &Larder) {
    let scratch = tempfile::tempdir().unwrap();
    let dest = scratch.path().join("dl");
    let out = pip_download(scratch.path(), &larder.index(), &dest, "gold-app");
    assert_ok(&out, "pip download gold-app from the golden store, offline");
    let got: BTreeSet<String> = hashes_in(&dest).into_keys().collect();
    assert_eq!(
        got,
        ["gold_app-1.0-py3-none-any.whl", "gold_extra-2.0-py3-none-any.whl", "gold_lib-1.0-py3-none-any.whl"]
            .map(String::from)
            .into()
    );
    // The yanked release and its reason, the sdist, and the metadata file, as the page said.
    let lib = json_page(&larder.url("/simple/gold-lib/"), None);
    let files = lib["files"].as_array().unwrap();
    let yanked = files.iter().find(|f| f["filename"] == "gold_lib-0.9-py3-none-any.whl").unwrap();
    assert_eq!(yanked["yanked"], "superseded by 1.0");
    let sdist = files.iter().find(|f| f["filename"] == "gold_lib-1.0.tar.gz").unwrap();
    let url = url::Url::parse(&larder.url("/simple/gold-lib/")).unwrap().join(sdist["url"].as_str().unwrap()).unwrap();
    let bytes = crate::util::http().get(url).send().unwrap().bytes().unwrap();
    assert_eq!(sha256_hex(&bytes), sdist["hashes"]["sha256"].as_str().unwrap());
    let app = json_page(&larder.url("/simple/gold-app/"), None);
    let wheel = &app["files"][0];
    let url = url::Url::parse(&larder.url("/simple/gold-app/")).unwrap().join(wheel["url"].as_str().unwrap()).unwrap();
    let metadata = crate::util::http().get(format!("{url}.metadata")).send().unwrap();
    assert_eq!(metadata.status(), 200);
    let metadata = metadata.bytes().unwrap();
    assert_eq!(sha256_hex(&metadata), wheel["core-metadata"]["sha256"].as_str().unwrap());
    assert!(String::from_utf8_lossy(&metadata).contains("Requires-Dist: gold-lib>=1.0"));
    // The private project: its uploads alone, one yanked, installable.
    let private = json_page(&larder.url("/simple/gold-private/"), Some(PRIVATE_TOKEN));
    let names: Vec<_> = private["files"].as_array().unwrap().iter().map(|f| f["filename"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["gold_private-0.1-py3-none-any.whl", "gold_private-0.2-py3-none-any.whl", "gold_private-0.2.tar.gz"]
    );
    assert_eq!(private["files"][0]["yanked"], "golden: a yanked upload");
    let target = scratch.path().join("t");
    let out = pip(scratch.path(), &["install", "--index-url", &larder.index(), "--target", s(&target), "gold-private"]);
    assert_ok(&out, "pip install gold-private from the golden store");
    assert!(target.join("gold_private-0.2.dist-info").is_dir(), "the unyanked release");
}

#[test]
fn a_data_dir_of_store_format_1_is_verified_served_and_exported_unchanged() {
    let data = golden_copy();
    let before = tree_hashes(data.path());
    let out = larder_quiet(&["verify", "--data-dir", s(data.path())]);
    assert_ok(&out, "verify of the golden data dir");
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    // 6 records and 50 blobs, as the golden bundle lists them; a report writes nothing, not
    // even the stamp.
    assert!(report.starts_with("checked 50 files") && report.contains(" and 6 records"), "{report}");
    assert_eq!(report.lines().count(), 1, "nothing to repair: {report}");
    assert_eq!(tree_hashes(data.path()), before, "verify without --repair changed the data dir");

    let larder_server = Larder::start_with_env(data.path(), &["--offline"], &[("LARDER_TOKEN", PRIVATE_TOKEN)]);
    serves_the_golden_store(&larder_server);
    drop(larder_server);

    // Opening it stamped it: format 1, by this Larder.
    let store = LocalStore::open(&data.path().join("store")).unwrap();
    let stamp_bytes = runtime().block_on(store.get_record("store-format")).unwrap().expect("stamped");
    let stamp: serde_json::Value = serde_json::from_slice(&stamp_bytes).unwrap();
    assert_eq!(stamp["format"], 1);

    // The export holds what the golden bundle holds, record for record and blob for blob.
    let out_dir = tempfile::tempdir().unwrap();
    let bundle = out_dir.path().join("again.tar");
    assert_ok(&larder_quiet(&["export", "--data-dir", s(data.path()), "--output", s(&bundle)]), "export");
    // The stamp is no record of a bundle; its contents file is listed with the blobs.
    let (golden_keys, mut golden_blobs) = manifest(&fixture().join("bundle.tar"));
    golden_blobs.insert(sha256_hex(&stamp_bytes));
    assert_eq!(manifest(&bundle), (golden_keys, golden_blobs));
    assert_ok(&larder_quiet(&["verify", "--data-dir", s(data.path())]), "verify after serving");
}

#[test]
fn the_golden_bundle_imports_into_a_new_store_and_serves() {
    let data = tempfile::tempdir().unwrap();
    let bundle = fixture().join("bundle.tar");
    assert_ok(&larder_quiet(&["import", "--data-dir", s(data.path()), s(&bundle)]), "import of the golden bundle");
    assert_ok(&larder_quiet(&["verify", "--data-dir", s(data.path())]), "verify after import");
    let larder_server = Larder::start_with_env(data.path(), &["--offline"], &[("LARDER_TOKEN", PRIVATE_TOKEN)]);
    serves_the_golden_store(&larder_server);
}

#[test]
fn a_bundle_carrying_a_format_stamp_imports_without_restamping_the_store() {
    // What an export by a Larder that knew stamps but not this rule would hold, or a crafted
    // bundle: the stamp of a newer format among the records.
    let golden = std::fs::read(fixture().join("bundle.tar")).unwrap();
    let mut entries: Vec<(String, Vec<u8>)> = Vec::new();
    for entry in tar::Archive::new(golden.as_slice()).entries().unwrap() {
        let mut entry = entry.unwrap();
        let mut body = Vec::new();
        entry.read_to_end(&mut body).unwrap();
        entries.push((entry.path().unwrap().to_str().unwrap().to_string(), body));
    }
    let stamp = br#"{"format":99,"written_by":"larder 99.0.0"}"#.to_vec();
    let mut manifest: serde_json::Value = serde_json::from_slice(&entries[0].1).unwrap();
    let records = manifest["records"].as_array_mut().unwrap();
    records.push(serde_json::json!({"key": "store-format", "sha256": sha256_hex(&stamp), "size": stamp.len()}));
    let index = records.len() - 1;
    entries[0].1 = serde_json::to_vec(&manifest).unwrap();
    entries.push((format!("records/{index}"), stamp));
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("stamped.tar");
    let mut tar = tar::Builder::new(std::fs::File::create(&bundle).unwrap());
    for (path, body) in &entries {
        let mut header = tar::Header::new_gnu();
        header.set_size(body.len() as u64);
        header.set_mode(0o644);
        tar.append_data(&mut header, path, body.as_slice()).unwrap();
    }
    tar.finish().unwrap();
    drop(tar);

    let data = dir.path().join("data");
    assert_ok(&larder_quiet(&["import", "--data-dir", s(&data), s(&bundle)]), "import of a bundle with a stamp");
    let store = LocalStore::open(&data.join("store")).unwrap();
    let stamp = runtime().block_on(store.get_record("store-format")).unwrap().unwrap();
    let stamp: serde_json::Value = serde_json::from_slice(&stamp).unwrap();
    assert_eq!(stamp["format"], 1, "the store keeps its own stamp: {stamp}");
    assert_ok(&larder_quiet(&["verify", "--data-dir", s(&data)]), "verify after import");
}

#[test]
fn a_store_stamped_by_a_newer_larder_is_refused_by_every_command_and_left_untouched() {
    let data = golden_copy();
    let newer = br#"{"format":2,"written_by":"larder 9.0.0"}"#.to_vec();
    let store = LocalStore::open(&data.path().join("store")).unwrap();
    runtime().block_on(store.put_record("store-format", newer.clone())).unwrap();
    let before = tree_hashes(&data.path().join("store"));
    let bundle = fixture().join("bundle.tar");
    let out_dir = tempfile::tempdir().unwrap();
    let export = out_dir.path().join("x.tar");
    let d = s(data.path());
    for args in [
        vec!["serve", "--data-dir", d, "--listen", "127.0.0.1:0", "--offline"],
        vec!["verify", "--data-dir", d],
        vec!["verify", "--data-dir", d, "--repair"],
        vec!["export", "--data-dir", d, "--output", s(&export)],
        vec!["import", "--data-dir", d, s(&bundle)],
        vec!["warm", "--data-dir", d, "--upstream", "http://127.0.0.1:9/simple/", "gold-app==1.0"],
    ] {
        let out = larder_ending(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} must refuse");
        assert!(
            err.contains("written by a newer Larder (larder 9.0.0, store format 2)")
                && err.contains("reads store formats up to 1"),
            "{args:?}: {err}"
        );
        let errors: Vec<_> = err.lines().filter(|l| l.starts_with("larder: error:")).collect();
        assert_eq!(errors.len(), 1, "one line: {err}");
        assert!(errors[0].contains("store format 2"), "{err}");
    }
    assert!(!export.exists(), "nothing exported");
    assert_eq!(runtime().block_on(store.get_record("store-format")).unwrap(), Some(newer));
    assert_eq!(tree_hashes(&data.path().join("store")), before, "the store untouched");
}

#[test]
fn verify_says_what_it_would_repair_and_repair_does_it() {
    let data = golden_copy();
    let store = LocalStore::open(&data.path().join("store")).unwrap();
    let rt = runtime();
    // Damage of every kind: a page record that no longer parses, a page whose rendered bodies
    // are lost, extracted METADATA lost, a private upload's file lost, the stamp garbled.
    rt.block_on(store.put_record("page/gold-extra", b"{not a page".to_vec())).unwrap();
    let app = rt.block_on(store.get_record("page/gold-app")).unwrap().unwrap();
    let head: serde_json::Value =
        serde_json::from_slice(&app[..app.iter().position(|&b| b == b'\n').unwrap()]).unwrap();
    let body = head["bodies"]["html"][0]["sha256"].as_str().unwrap().to_string();
    rt.block_on(store.delete_blob(&body)).unwrap();
    let links = rt.block_on(store.list_records()).unwrap();
    let link = links.keys.iter().find(|k| k.starts_with("wheel-meta/")).unwrap().clone();
    let metadata = link.rsplit('/').next().unwrap().to_string();
    rt.block_on(store.delete_blob(&metadata)).unwrap();
    let private = rt.block_on(store.get_record("private/default/gold-private")).unwrap().unwrap();
    let private: serde_json::Value = serde_json::from_slice(&private).unwrap();
    let upload = private["files"][1]["sha256"].as_str().unwrap().to_string();
    rt.block_on(store.delete_blob(&upload)).unwrap();
    rt.block_on(store.put_record("store-format", b"garbled".to_vec())).unwrap();
    let before = tree_hashes(&data.path().join("store"));

    // Without --repair: every problem and what would be done, nothing changed, exit 1.
    let out = larder_quiet(&["verify", "--data-dir", s(data.path())]);
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{report}");
    for expected in [
        "format stamp: the store-format record does not parse".to_string(),
        "unreadable record: page/gold-extra".to_string(),
        format!("record page/gold-app names blob {body}"),
        format!("record {link} names blob {metadata}"),
        format!(
            "record private/default/gold-private names blob {upload}, which the store does not have (gold_private-0.2-py3-none-any.whl in project default) (not repairable here: it exists nowhere else"
        ),
    ] {
        assert!(report.contains(&expected), "missing `{expected}` in:\n{report}");
    }
    assert_eq!(report.matches("(--repair: ").count(), 4, "{report}");
    assert_eq!(tree_hashes(&data.path().join("store")), before, "a report changes nothing");

    // --repair: all but the lost upload repaired; still exit 1 for that one.
    let out = larder_quiet(&["verify", "--data-dir", s(data.path()), "--repair"]);
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert_eq!(report.matches("(repaired: ").count(), 4, "{report}");
    let out = larder_quiet(&["verify", "--data-dir", s(data.path())]);
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(report.lines().count(), 2, "only the lost upload is left:\n{report}");
    assert!(report.contains("not repairable here"), "{report}");

    // What was repaired serves again: the page rendered from its model, METADATA extracted again.
    let larder_server = Larder::start_with_env(data.path(), &["--offline"], &[("LARDER_TOKEN", PRIVATE_TOKEN)]);
    let app = json_page(&larder_server.url("/simple/gold-app/"), None);
    let wheel = &app["files"][0];
    let html = crate::util::http().get(larder_server.url("/simple/gold-app/")).send().unwrap();
    assert_eq!(html.status(), 200);
    assert!(html.text().unwrap().contains("gold_app-1.0-py3-none-any.whl"));
    let scratch = tempfile::tempdir().unwrap();
    let out = pip_download(scratch.path(), &larder_server.index(), &scratch.path().join("dl"), "gold-lib==1.0");
    assert_ok(&out, "pip download after the repair");
    assert!(wheel["url"].as_str().is_some());
}
