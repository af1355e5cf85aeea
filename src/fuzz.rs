//! Property-based fuzzing of every parser that reads bytes from outside (issue 10), on the
//! stable toolchain inside `cargo test`: upload forms and multipart framing, METADATA / PKG-INFO
//! extraction from wheels and sdists (and the range reader's central-directory parser),
//! upstream HTML and JSON pages (and render → parse round trips), names, filenames, versions,
//! `Accept`, `Range`, routes, records and bundles. The property everywhere: no panic, no
//! unbounded allocation, an error that says what is wrong. Inputs are arbitrary bytes and
//! mutations of real seeds (a wheel, an sdist, a bundle, a page).
//!
//! Memory: the test binary's allocator refuses any single allocation over `MAX_ALLOCATION`,
//! which aborts the run — a parser that trusts a declared size cannot pass. Case counts are
//! set so that the whole suite stays under a minute; `PROPTEST_CASES=100000` runs it longer.
//! Crashes found are kept as named regression tests at the end of this file.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;

use proptest::prelude::*;

use crate::index::{DistFile, MediaType, ProjectName, ProjectPage, Yanked, filename};

/// Far above anything a legitimate input needs (the largest buffers are 16 MiB metadata caps).
const MAX_ALLOCATION: usize = 256 << 20;

struct Capped;

unsafe impl GlobalAlloc for Capped {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > MAX_ALLOCATION {
            return std::ptr::null_mut(); // -> handle_alloc_error: the run aborts, loudly
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > MAX_ALLOCATION {
            return std::ptr::null_mut();
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Capped = Capped;

fn cases(n: u32) -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(n),
        ..ProptestConfig::default()
    }
}

/// Bytes of `seed` with some positions overwritten, some cut, some inserted.
fn mutated(seed: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let len = seed.len().max(1);
    (prop::collection::vec((0..len, any::<u8>()), 0..8), 0..=len, prop::collection::vec(any::<u8>(), 0..16)).prop_map(
        move |(flips, cut, insert)| {
            let mut out = seed.clone();
            for (i, b) in flips {
                if i < out.len() {
                    out[i] = b;
                }
            }
            out.truncate(cut.max(out.len() / 2));
            let at = out.len() / 3;
            out.splice(at..at, insert);
            out
        },
    )
}

fn wheel_seed() -> Vec<u8> {
    let mut buf = std::io::Cursor::new(Vec::new());
    {
        let mut zip = zip::ZipWriter::new(&mut buf);
        let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
        zip.start_file("seed/__init__.py", opts).unwrap();
        zip.write_all(b"x = 1\n").unwrap();
        zip.start_file("seed-1.0.dist-info/METADATA", opts).unwrap();
        zip.write_all(b"Metadata-Version: 2.1\nName: seed\nVersion: 1.0\nRequires-Dist: a\n").unwrap();
        zip.finish().unwrap();
    }
    buf.into_inner()
}

fn sdist_seed() -> Vec<u8> {
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()));
    for (path, data) in [("seed-1.0/setup.py", &b"print()"[..]), ("seed-1.0/PKG-INFO", b"Name: seed\nVersion: 1.0\n")] {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        tar.append_data(&mut h, path, data).unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap()
}

fn limits() -> crate::archive::ArchiveLimits {
    crate::archive::ArchiveLimits::default()
}

/// A page model with hostile but valid-looking strings where the renderers must escape.
fn page_strategy() -> impl Strategy<Value = ProjectPage> {
    let text = "[ -~<>&\"'éß\u{2028}]{0,24}";
    let file = (
        "[a-z][a-z0-9_]{0,8}-[0-9]\\.[0-9]{1,2}(\\.tar\\.gz|-py3-none-any\\.whl|\\.zip)",
        prop::option::of("[0-9a-f]{64}"),
        prop::option::of(text),
        prop::option::of(prop::option::of(text.prop_filter("non-empty", |s| !s.is_empty()))),
        prop::option::of("[0-9a-f]{64}"),
        prop::option::of(0u64..1 << 40),
    )
        .prop_map(|(name, sha, rp, yank, md, size)| DistFile {
            metadata_on_demand: false,
            provenance: None,
            url: format!("https://up.example/files/{name}"),
            hashes: sha.into_iter().map(|s| ("sha256".to_string(), s)).collect(),
            requires_python: rp.filter(|s| !s.is_empty()),
            yanked: match yank {
                None => Yanked::No,
                Some(r) => Yanked::Yes(r),
            },
            core_metadata: md,
            size,
            upload_time: None,
            filename: name,
        });
    prop::collection::vec(file, 0..12).prop_map(|files| {
        let mut page = ProjectPage { name: ProjectName::parse("demo").unwrap(), files, versions: None, status: None };
        page.sort();
        page
    })
}

/// Filename, sha256, requires-python, yank, core-metadata sha256.
type Essentials = (String, Option<String>, Option<String>, Yanked, Option<String>);

/// What survives a trip through a rendering: the fields both formats carry.
fn essentials(page: &ProjectPage) -> Vec<Essentials> {
    page.files
        .iter()
        .map(|f| {
            (
                f.filename.clone(),
                f.sha256().map(str::to_string),
                f.requires_python.clone(),
                f.yanked.clone(),
                f.core_metadata.clone(),
            )
        })
        .collect()
}

proptest! {
    #![proptest_config(cases(3000))]

    #[test]
    fn names_parse_or_refuse_and_normalizing_is_stable(raw in ".{0,300}") {
        if let Ok(name) = ProjectName::parse(&raw) {
            prop_assert_eq!(ProjectName::parse(name.as_str()).unwrap(), name.clone());
            prop_assert!(name.as_str().len() <= crate::index::name::MAX_LEN);
        }
    }

    #[test]
    fn filenames_parse_or_refuse(raw in ".{0,200}") {
        let _ = filename::parse(&raw);
        let _ = filename::candidate_projects(&raw);
        if filename::is_safe(&raw) {
            prop_assert!(!raw.contains('/') && !raw.contains('\\'));
        }
        let _ = crate::metadata::is_valid_version(&raw);
    }

    #[test]
    fn accept_headers_negotiate_or_refuse(raw in "[ -~]{0,200}") {
        let _ = MediaType::negotiate(Some(&raw));
    }

    #[test]
    fn ranges_are_inside_the_file(raw in "(bytes=)?[0-9 ,\\-]{0,40}", len in 0u64..1 << 50) {
        use crate::byte_range::{ByteRange, resolve};
        if let ByteRange::Part(start, end) = resolve(Some(&raw), len) {
            prop_assert!(start <= end && end < len, "{raw} on {len}: {start}-{end}");
        }
    }

    #[test]
    fn routes_parse_any_path(raw in "/[ -~]{0,120}") {
        let _ = crate::server::route::Route::parse(&raw, "default");
    }

    #[test]
    fn metadata_headers_parse_or_refuse(raw in prop::collection::vec(any::<u8>(), 0..2048)) {
        let _ = crate::metadata::CoreMetadata::parse(raw);
    }

    #[test]
    fn records_validate_or_refuse(key in "[a-z/u\\-0-9.]{0,80}", body in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = crate::cache::records::validate(&key, &body);
    }

    #[test]
    fn multipart_part_headers_are_bounded_for_any_chunking(
        body in prop::collection::vec(any::<u8>(), 0..4096),
        cuts in prop::collection::vec(0usize..4096, 0..8),
    ) {
        let mut limit = crate::server::handlers::upload::PartHeaderLimit::new("B");
        let mut cuts = cuts;
        cuts.push(body.len());
        cuts.sort();
        let mut at = 0;
        for c in cuts {
            let c = c.min(body.len());
            if c > at {
                let _ = limit.feed(&body[at..c]);
                at = c;
            }
        }
    }

    #[test]
    fn range_reader_central_directories_parse_or_refuse(cd in prop::collection::vec(any::<u8>(), 0..1024)) {
        let _ = crate::upstream::ranges::find_metadata(&cd, "http://up/x.whl");
    }
}

proptest! {
    #![proptest_config(cases(600))]

    #[test]
    fn upstream_pages_parse_or_refuse(body in prop::collection::vec(any::<u8>(), 0..2048)) {
        let name = ProjectName::parse("demo").unwrap();
        let base = url::Url::parse("https://up.example/simple/demo/").unwrap();
        let _ = crate::upstream::html::parse_project(&body, &name, &base, usize::MAX);
        let _ = crate::index::json::parse_project(&body, &name, &base, usize::MAX);
    }

    #[test]
    fn html_like_pages_parse_or_refuse(body in "(<a href=\"[ -~]{0,40}\"( data-[a-z-]{1,20}=\"[ -~]{0,20}\")*>[ -~]{0,10}</a>|<base href=\"[ -~]{0,30}\">|[ -~]{0,20}){0,20}") {
        let name = ProjectName::parse("demo").unwrap();
        let base = url::Url::parse("https://up.example/simple/demo/").unwrap();
        if let Ok(page) = crate::upstream::html::parse_project(body.as_bytes(), &name, &base, usize::MAX) {
            for f in &page.files {
                prop_assert!(crate::cache::records::validate_dist_file(f).is_ok(), "{f:?}");
            }
        }
    }

    /// parse → render → parse is stable in both formats, every string is escaped (the HTML
    /// parses back to the same values), and no link leaves Larder.
    #[test]
    fn pages_round_trip_through_both_renderings(page in page_strategy()) {
        let name = page.name.clone();
        let base = url::Url::parse("https://larder.example/simple/demo/").unwrap();
        let html = crate::index::html::render_project(&page, Some("https://h/files/"));
        let from_html = crate::upstream::html::parse_project(html.as_bytes(), &name, &base, usize::MAX).unwrap();
        prop_assert_eq!(essentials(&from_html), essentials(&page));
        let json = crate::index::json::render_project(&page, Some("https://h/files/"));
        let from_json = crate::index::json::parse_project(&json, &name, &base, usize::MAX).unwrap();
        prop_assert_eq!(essentials(&from_json), essentials(&page));
        for f in from_html.files.iter().chain(&from_json.files) {
            prop_assert!(f.url.starts_with("https://larder.example/files/"), "a link leaves Larder: {}", f.url);
        }
    }

    #[test]
    fn wheels_yield_metadata_or_a_reason(bytes in mutated(wheel_seed())) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.whl");
        std::fs::write(&path, &bytes).unwrap();
        let _ = crate::metadata::read_wheel_metadata(&path, &limits());
    }

    #[test]
    fn sdists_yield_metadata_or_a_reason(bytes in mutated(sdist_seed())) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.tar.gz");
        std::fs::write(&path, &bytes).unwrap();
        let _ = crate::metadata::read_sdist_metadata(&path, "seed-1.0.tar.gz", &limits());
        let zip = dir.path().join("x.zip");
        std::fs::write(&zip, wheel_seed()).unwrap();
        let _ = crate::metadata::read_sdist_metadata(&zip, "seed-1.0.zip", &limits());
    }

    #[test]
    fn raw_archives_are_refused_with_a_reason(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        let _ = crate::archive::tar_member(&bytes[..], &limits(), |p| p.ends_with("PKG-INFO"), 1024);
        let _ = crate::archive::tar_member(flate2::read::GzDecoder::new(&bytes[..]), &limits(), |_| true, 1024);
        let _ = crate::archive::check_zip(&mut std::io::Cursor::new(&bytes), &limits());
    }

    #[test]
    fn upload_forms_are_checked_in_order_never_panicking(
        fields in prop::collection::vec(
            (prop::sample::select(vec![":action", "protocol_version", "name", "version", "filetype", "sha256_digest", "md5_digest", "blake2_256_digest", "metadata_version", "x"]), "[ -~]{0,40}"),
            0..12,
        ),
        with_file in any::<bool>(),
        content in mutated(wheel_seed()),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut form: std::collections::HashMap<String, Vec<String>> = std::collections::HashMap::new();
        for (k, v) in fields {
            form.entry(k.to_string()).or_default().push(v);
        }
        let file = with_file.then(|| {
            let path = dir.path().join("upload.part");
            std::fs::write(&path, &content).unwrap();
            crate::cache::Spooled {
                path,
                filename: "seed-1.0-py3-none-any.whl".into(),
                size: content.len() as u64,
                sha256: crate::digest::sha256_hex(&content),
                md5: "0".repeat(32),
                blake2_256: "0".repeat(64),
            }
        });
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let _ = rt.block_on(crate::cache::validate_upload(&form, file, limits()));
    }
}

proptest! {
    #![proptest_config(cases(200))]

    #[test]
    fn bundles_import_whole_or_not_at_all(bytes in mutated(bundle_seed())) {
        let dir = tempfile::tempdir().unwrap();
        let bundle = dir.path().join("b.tar");
        std::fs::write(&bundle, &bytes).unwrap();
        let staging = dir.path().join("staging");
        std::fs::create_dir_all(&staging).unwrap();
        let _ = crate::bundle::check_bundle(&bundle, &staging);
        // Whatever happened, nothing was written outside the staging dir.
        let outside: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().map(|e| e.file_name()).collect();
        prop_assert_eq!(outside.len(), 2, "{:?}", outside);
    }
}

fn bundle_seed() -> Vec<u8> {
    let blob = b"some wheel bytes".to_vec();
    let sha = crate::digest::sha256_hex(&blob);
    let manifest = serde_json::json!({
        "format": "larder-bundle", "version": 1, "created": "now",
        "blobs": [{"sha256": sha, "size": blob.len()}],
        "records": [{"key": format!("alias/u-{}", "ab".repeat(32)), "sha256": crate::digest::sha256_hex(sha.as_bytes()), "size": 64}],
    });
    let mut tar = tar::Builder::new(Vec::new());
    let mut add = |path: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        tar.append_data(&mut h, path, data).unwrap();
    };
    add("manifest.json", &serde_json::to_vec(&manifest).unwrap());
    add(&format!("blobs/{sha}"), &blob);
    add("records/0", sha.as_bytes());
    tar.into_inner().unwrap()
}

// Regressions found by the fuzzer, kept as plain tests.

/// An upstream anchor with a non-http URL (`a:/0`) was kept on the page, so the stored page
/// failed its own validation at the next start; such entries are now dropped (UP-07).
#[test]
fn regression_non_http_file_urls_are_dropped() {
    let name = ProjectName::parse("demo").unwrap();
    let base = url::Url::parse("https://up.example/simple/demo/").unwrap();
    let page = crate::upstream::html::parse_project(
        br#"<a href="a:/0"></a><a href="javascript:x">y</a>"#,
        &name,
        &base,
        usize::MAX,
    );
    assert!(page.unwrap().files.is_empty());
    let json = br#"{"files":[{"filename":"demo-1.0.tar.gz","url":"file:///etc/passwd","hashes":{}}]}"#;
    assert!(crate::index::json::parse_project(json, &name, &base, usize::MAX).unwrap().files.is_empty());
}
