//! Attacks through air-gap bundles: paths out of the staging dir, unchecked records, damaged
//! private records.

use std::io::Write;
use std::path::Path;

use crate::util::upstream::{MockFile, MockUpstream};
use crate::util::{Larder, assert_ok, http, larder_quiet, s, sha256_hex, wheel};

/// A tar entry written with its name bytes exactly as given (tar::Builder refuses `..` and
/// absolute paths, which is the point of the attack).
fn raw_entry(tar: &mut tar::Builder<impl Write>, name: &[u8], kind: tar::EntryType, data: &[u8]) {
    let mut header = tar::Header::new_old();
    header.as_old_mut().name[..name.len()].copy_from_slice(name);
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_entry_type(kind);
    if kind == tar::EntryType::Symlink {
        header.set_link_name("/etc/passwd").unwrap();
    }
    header.set_cksum();
    tar.append(&header, data).unwrap();
}

/// One tar entry: name bytes, type, data.
type Entry = (Vec<u8>, tar::EntryType, Vec<u8>);

/// A bundle with this manifest and these entries, in order after `manifest.json`.
fn bundle(path: &Path, manifest: serde_json::Value, entries: &[(&[u8], tar::EntryType, &[u8])]) {
    let mut tar = tar::Builder::new(std::fs::File::create(path).unwrap());
    let text = serde_json::to_vec(&manifest).unwrap();
    raw_entry(&mut tar, b"manifest.json", tar::EntryType::Regular, &text);
    for (name, kind, data) in entries {
        raw_entry(&mut tar, name, *kind, data);
    }
    tar.finish().unwrap();
}

fn manifest(blobs: serde_json::Value, records: serde_json::Value) -> serde_json::Value {
    serde_json::json!({"format": "larder-bundle", "version": 1, "created": "now", "blobs": blobs, "records": records})
}

fn record_entry(key: &str, body: &[u8]) -> serde_json::Value {
    serde_json::json!({"key": key, "sha256": sha256_hex(body), "size": body.len()})
}

#[test]
fn import_never_writes_outside_its_staging_dir_nor_imports_unchecked_records() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let victim = w.join("victim");
    std::fs::create_dir_all(&victim).unwrap();
    let escape_abs = victim.join("pwned-absolute");
    let abs = escape_abs.to_str().unwrap().to_string();
    let data = b"attacker bytes";
    let sha = sha256_hex(data);
    let hex_alias = "ab".repeat(32);
    let page_body = |md: &str| {
        serde_json::json!({"page": {"name": "demo", "files": [{"filename": "demo-1.0-py3-none-any.whl",
            "url": "http://127.0.0.1:9/demo-1.0-py3-none-any.whl", "hashes": {"sha256": sha}, "core_metadata": md}]},
            "validators": {}, "confirmed_unix": 1})
        .to_string()
    };
    let evil_page = page_body("\"><script>alert(1)</script>");
    // A private record that claims someone else's file by hash, without carrying its bytes.
    let claim = serde_json::json!({"files": [{"filename": "demo-1.0-py3-none-any.whl", "version": "1.0",
        "sha256": "cd".repeat(32), "md5": "0".repeat(32), "blake2_256": "0".repeat(64), "size": 1,
        "upload_time": "t", "requires_python": null, "metadata_sha256": null}]})
    .to_string();
    let cases: Vec<(&str, serde_json::Value, Vec<Entry>)> = vec![
        // The review's reproduction: a blob "sha256" that is an absolute path.
        (
            "absolute blob path",
            manifest(serde_json::json!([{"sha256": abs, "size": data.len()}]), serde_json::json!([])),
            vec![(format!("blobs/{abs}").into_bytes(), tar::EntryType::Regular, data.to_vec())],
        ),
        (
            "dot-dot blob path",
            manifest(
                serde_json::json!([{"sha256": "../../victim/pwned-dotdot", "size": data.len()}]),
                serde_json::json!([]),
            ),
            vec![(b"blobs/../../victim/pwned-dotdot".to_vec(), tar::EntryType::Regular, data.to_vec())],
        ),
        (
            "symlink entry",
            manifest(serde_json::json!([{"sha256": sha, "size": 0}]), serde_json::json!([])),
            vec![(format!("blobs/{sha}").into_bytes(), tar::EntryType::Symlink, Vec::new())],
        ),
        (
            "more bytes than the manifest says",
            manifest(serde_json::json!([{"sha256": sha, "size": 4}]), serde_json::json!([])),
            vec![(format!("blobs/{sha}").into_bytes(), tar::EntryType::Regular, data.to_vec())],
        ),
        (
            "alias record whose body is a path",
            manifest(
                serde_json::json!([]),
                serde_json::json!([record_entry(&format!("alias/u-{hex_alias}"), b"../../../../etc/passwd")]),
            ),
            vec![(b"records/0".to_vec(), tar::EntryType::Regular, b"../../../../etc/passwd".to_vec())],
        ),
        (
            "alias record shorter than 4 bytes",
            manifest(serde_json::json!([]), serde_json::json!([record_entry(&format!("alias/u-{hex_alias}"), b"ab")])),
            vec![(b"records/0".to_vec(), tar::EntryType::Regular, b"ab".to_vec())],
        ),
        (
            "page record with markup for a metadata hash",
            manifest(serde_json::json!([]), serde_json::json!([record_entry("page/demo", evil_page.as_bytes())])),
            vec![(b"records/0".to_vec(), tar::EntryType::Regular, evil_page.as_bytes().to_vec())],
        ),
        (
            "private record that does not parse",
            manifest(serde_json::json!([]), serde_json::json!([record_entry("private/default/demo", b"{nope")])),
            vec![(b"records/0".to_vec(), tar::EntryType::Regular, b"{nope".to_vec())],
        ),
        (
            "private record naming a blob the bundle does not carry",
            manifest(
                serde_json::json!([]),
                serde_json::json!([record_entry("private/default/demo", claim.as_bytes())]),
            ),
            vec![(b"records/0".to_vec(), tar::EntryType::Regular, claim.as_bytes().to_vec())],
        ),
        (
            "record key outside the known kinds",
            manifest(serde_json::json!([]), serde_json::json!([record_entry("../../etc/x", b"")])),
            vec![(b"records/0".to_vec(), tar::EntryType::Regular, Vec::new())],
        ),
    ];
    for (i, (what, manifest, entries)) in cases.into_iter().enumerate() {
        let path = w.join(format!("evil-{i}.tar"));
        let entries: Vec<(&[u8], tar::EntryType, &[u8])> =
            entries.iter().map(|(n, k, d)| (n.as_slice(), *k, d.as_slice())).collect();
        bundle(&path, manifest, &entries);
        let data_dir = w.join(format!("data-{i}"));
        let out = larder_quiet(&["import", "--data-dir", s(&data_dir), s(&path)]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{what}: import must fail\n{err}");
        assert!(err.contains("nothing was imported"), "{what}: {err}");
        assert!(!err.contains("panicked"), "{what}: {err}");
        assert_eq!(std::fs::read_dir(&victim).unwrap().count(), 0, "{what}: a file was created outside staging");
        let leftovers = std::fs::read_dir(data_dir.join("spool")).map(|d| d.count()).unwrap_or(0);
        assert_eq!(leftovers, 0, "{what}: staging is removed");
        let store = data_dir.join("store");
        // Opening the store stamped its format (issue 27); nothing else is there.
        let keys: Vec<String> = cacache::index::ls(&store).filter_map(Result::ok).map(|m| m.key).collect();
        assert!(keys.iter().all(|k| k == "store-format"), "{what}: no record was imported: {keys:?}");
    }
}

#[test]
fn a_damaged_private_record_is_skipped_at_start_up_and_its_name_stays_private() {
    let up = MockUpstream::start();
    let (name, bytes) = wheel("claimed", "1.0", &[]);
    up.add("claimed", MockFile::new(&name, bytes));
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    cacache::write_sync(&store, "private/default/claimed", b"{not json").unwrap();
    cacache::write_sync(&store, format!("alias/u-{}", "ab".repeat(32)), b"ab").unwrap();
    let server = Larder::start(dir.path(), &["--upstream", &up.simple_url()]);
    assert!(server.log().contains("private record is damaged"), "{}", server.log());
    let resp = http().get(server.url("/simple/claimed/")).send().unwrap();
    assert_eq!(resp.status(), 200, "the name is still claimed: served from its (empty) private record");
    assert!(!resp.text().unwrap().contains(".whl"));
    assert_eq!(up.count("/simple/claimed/"), 0, "a damaged private record never hands its name to the upstream");
    // A short alias body once panicked `content_path`; now it is a miss like any other.
    let resp = http().get(server.url(&format!("/files/u-{}/x-1.0.tar.gz", "ab".repeat(32)))).send().unwrap();
    assert_eq!(resp.status(), 404);
    let out = larder_quiet(&["verify", "--data-dir", s(dir.path())]);
    assert!(!out.status.success());
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains("unreadable record: private/default/claimed"), "{report}");
    assert!(report.contains("unreadable record: alias/u-"), "{report}");
}

#[test]
fn a_good_bundle_still_imports() {
    // The hardening refuses attacks, not Larder's own bundles (also covered in air_gap and sizes).
    let up = MockUpstream::start();
    let (name, bytes) = wheel("good", "1.0", &[]);
    up.add("good", MockFile::new(&name, bytes));
    let work = tempfile::tempdir().unwrap();
    let a = work.path().join("a");
    assert_ok(&larder_quiet(&["warm", "--data-dir", s(&a), "--upstream", &up.simple_url(), "good==1.0"]), "warm");
    let b = work.path().join("b.tar");
    assert_ok(&larder_quiet(&["export", "--data-dir", s(&a), "--output", s(&b)]), "export");
    assert_ok(&larder_quiet(&["import", "--data-dir", s(&work.path().join("c")), s(&b)]), "import");
}
