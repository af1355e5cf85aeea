//! Every file size around every threshold Larder has (issue 9): 0 and 1 bytes, the fill's spool
//! chunk and the store's read window -1/=/+1, the small-file limit (1 MiB) -1/=/+1, the size
//! that crashed the first version's store writer (792,678 bytes), and a multi-MB file. Each is
//! served on a miss and on a hit, warmed, exported, imported and served offline, and every byte
//! matches its sha256.

use crate::util::upstream::{MockFile, MockUpstream};
use crate::util::{Larder, assert_ok, http, larder_cli, s, sha256_hex};

const KIB: usize = 1024;
const SIZES: &[usize] = &[
    0,
    1,
    256 * KIB - 1,
    256 * KIB,
    256 * KIB + 1,
    512 * KIB - 1,
    512 * KIB,
    512 * KIB + 1,
    792_678,
    1024 * KIB - 1,
    1024 * KIB,
    1024 * KIB + 1,
    5 * 1024 * KIB + 3,
];

/// `sizes-0.<i>.tar.gz` holding `SIZES[i]` bytes (the content is not read, only stored).
pub(crate) fn files() -> Vec<(String, Vec<u8>)> {
    SIZES
        .iter()
        .enumerate()
        .map(|(i, &n)| (format!("sizes-0.{i}.tar.gz"), (0..n).map(|j| ((j * 31 + i) % 251) as u8).collect()))
        .collect()
}

pub(crate) fn get_all(server: &Larder, files: &[(String, Vec<u8>)], expect_cache: &str) {
    for (name, bytes) in files {
        let resp = http().get(server.url(&format!("/files/{}/{name}", sha256_hex(bytes)))).send().unwrap();
        assert_eq!(resp.status(), 200, "{name}");
        assert_eq!(resp.headers()["x-cache"], expect_cache, "{name} ({} bytes)", bytes.len());
        let body = resp.bytes().unwrap();
        assert_eq!(body.len(), bytes.len(), "{name}");
        assert_eq!(sha256_hex(&body), sha256_hex(bytes), "{name}");
    }
}

#[test]
fn every_size_class_is_served_warmed_exported_and_imported() {
    let up = MockUpstream::start();
    let files = files();
    for (name, bytes) in &files {
        up.add("sizes", MockFile::new(name, bytes.clone()));
    }
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let env = [("LARDER_CONFIG", "/dev/null"), ("LARDER_LOG", "warn")];

    // serve: a miss stores the file, so the second request is a hit and the upstream is asked once.
    let served = w.join("served");
    {
        let server = Larder::start(&served, &["--upstream", &up.simple_url()]);
        get_all(&server, &files, "MISS");
        std::thread::sleep(std::time::Duration::from_millis(300)); // commits finish after the last byte
        get_all(&server, &files, "HIT");
        for (name, _) in &files {
            assert_eq!(up.count_full(&format!("GET /files/{name}")), 1, "{name} is fetched once, then stored");
        }
    }
    assert_ok(&larder_cli(&["verify", "--data-dir", s(&served)], &env), "verify after serve");

    // warm every version, export, import elsewhere, serve offline.
    let warmed = w.join("warmed");
    let pins: Vec<String> = (0..files.len()).map(|i| format!("sizes==0.{i}")).collect();
    let mut args = vec!["warm", "--data-dir", s(&warmed), "--upstream"];
    let up_url = up.simple_url();
    args.push(&up_url);
    args.extend(pins.iter().map(String::as_str));
    let out = larder_cli(&args, &env);
    assert_ok(&out, "warm");
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("{} files fetched", files.len())));
    let bundle = w.join("sizes.tar.zst");
    assert_ok(&larder_cli(&["export", "--data-dir", s(&warmed), "--output", s(&bundle)], &env), "export");
    let imported = w.join("imported");
    assert_ok(&larder_cli(&["import", "--data-dir", s(&imported), s(&bundle)], &env), "import");
    assert_ok(&larder_cli(&["verify", "--data-dir", s(&imported)], &env), "verify after import");
    up.set_down(true);
    let server = Larder::start(&imported, &["--offline"]);
    get_all(&server, &files, "HIT");
}
