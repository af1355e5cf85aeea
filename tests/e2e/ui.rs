//! The pages for people (issue 15): what clients get never changes, privacy is the simple
//! API's, and a real headless Chromium (tests/browser/ui.py) loads, searches and screenshots
//! them. Screenshots land in target/ui-screenshots/.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::util::upstream::{MockFile, MockUpstream};
use crate::util::{Larder, assert_ok, http, multipart, pip_download, sha256_hex, twine, venv_bin, wheel};

const TOKEN: &str = "ui-writer-token";
const READ_TOKEN: &str = "ui-reader-token";
const BROWSER_ACCEPT: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8";
const PIP_ACCEPT: &str =
    "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01";

fn start(up: &MockUpstream, dir: &Path) -> Larder {
    let config = dir.join("larder.toml");
    std::fs::write(
        &config,
        format!(
            "[[tokens]]\nname = \"reader\"\nsecret = \"{READ_TOKEN}\"\nscopes = [\"read\"]\n\n[projects.secret]\nprivate = true\n"
        ),
    )
    .unwrap();
    let config = config.to_string_lossy().into_owned();
    Larder::start_with_env(
        &dir.join("data"),
        &["--upstream", &up.simple_url(), "--config", &config],
        &[("LARDER_TOKEN", TOKEN)],
    )
}

fn upload(scratch: &Path, larder: &Larder, project: Option<&str>, dist: (String, Vec<u8>)) {
    let path = scratch.join(&dist.0);
    std::fs::write(&path, &dist.1).unwrap();
    let url = match project {
        Some(p) => larder.url(&format!("/api/v4/projects/{p}/packages/pypi")),
        None => larder.url("/"),
    };
    let out =
        twine(scratch, &["upload", "--repository-url", &url, "-u", "__token__", "-p", TOKEN, path.to_str().unwrap()]);
    assert_ok(&out, "twine upload");
}

fn get(url: &str, accept: &str, token: Option<&str>) -> reqwest::blocking::Response {
    let req = http().get(url).header("accept", accept);
    let req = match token {
        Some(t) => req.basic_auth("reader", Some(t)),
        None => req,
    };
    req.send().unwrap()
}

/// A cached upstream project with two versions (its METADATA stored once pip downloaded the
/// wheel), a private package in the default project and one in the private project `secret`.
fn filled() -> (MockUpstream, tempfile::TempDir, Larder) {
    let up = MockUpstream::start();
    for v in ["1.0", "2.0"] {
        let (name, bytes) = wheel("toolbelt", v, &["idna>=2"]);
        up.add("toolbelt", MockFile::new(&name, bytes));
    }
    let (name, bytes) = wheel("idna", "3.0", &[]);
    up.add("idna", MockFile::new(&name, bytes));
    let dir = tempfile::tempdir().unwrap();
    let larder = start(&up, dir.path());
    let scratch = dir.path().join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    upload(&scratch, &larder, None, wheel("corp-widgets", "1.4", &[]));
    upload(&scratch, &larder, Some("secret"), wheel("hush-hush", "0.1", &[]));
    let dest = scratch.join("dl");
    assert_ok(&pip_download(&scratch, &larder.index(), &dest, "toolbelt==2.0"), "pip download");
    // The METADATA extracted from the downloaded wheel is linked to the page in the background.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let body = get(&larder.url("/-/ui/packages/toolbelt"), BROWSER_ACCEPT, None).text().unwrap();
        if body.contains("toolbelt, a package for tests") {
            break;
        }
        assert!(Instant::now() < deadline, "the summary never showed on the project page:\n{body}");
        std::thread::sleep(Duration::from_millis(100));
    }
    (up, dir, larder)
}

#[test]
fn clients_get_the_simple_api_exactly_as_before() {
    let (_up, _dir, larder) = filled();
    // NEG-08: pip's Accept on a project page is still PEP 691 JSON; `text/html` still PEP 503.
    let json = get(&larder.url("/simple/toolbelt/"), PIP_ACCEPT, None);
    assert_eq!(json.headers()["content-type"], "application/vnd.pypi.simple.v1+json");
    let html = get(&larder.url("/simple/toolbelt/"), "text/html", None);
    assert!(html.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(html.text().unwrap().contains("<a href=\"../../files/"));
    // A browser, even at the simple API, gets the simple API: the pages live at their own paths.
    let browser = get(&larder.url("/simple/toolbelt/"), BROWSER_ACCEPT, None);
    assert!(browser.text().unwrap().contains("../../files/"));
    // `/`: a browser goes to the home page; anything else still finds the upload endpoint.
    let no_redirect = reqwest::blocking::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let home = no_redirect.get(larder.url("/")).header("accept", BROWSER_ACCEPT).send().unwrap();
    assert_eq!(home.status(), 303);
    assert_eq!(home.headers()["location"], "/-/ui/");
    let pip_root = no_redirect.get(larder.url("/")).header("accept", PIP_ACCEPT).send().unwrap();
    assert_eq!(pip_root.status(), 405);
    // The pages themselves: HTML with a CSP, the assets with their types.
    let home = get(&larder.url("/-/ui/"), BROWSER_ACCEPT, None);
    assert_eq!(home.status(), 200);
    assert!(home.headers()["content-security-policy"].to_str().unwrap().contains("default-src 'self'"));
    let body = home.text().unwrap();
    assert!(body.contains("corp-widgets"), "the default project's private package is listed");
    assert!(!body.contains("hush-hush"), "another project's private package is not");
    assert!(body.contains(&format!("--index-url {}/simple/", larder.base)));
    let css = get(&larder.url("/-/ui/static/style.css"), "*/*", None);
    assert_eq!(css.headers()["content-type"], "text/css; charset=utf-8");
}

#[test]
fn a_private_project_needs_its_token_in_the_pages_too() {
    let (_up, _dir, larder) = filled();
    for path in
        ["/-/ui/projects/secret/", "/-/ui/projects/secret/packages/hush-hush", "/-/ui/projects/secret/search?q=hush"]
    {
        let anonymous = get(&larder.url(path), BROWSER_ACCEPT, None);
        assert_eq!(anonymous.status(), 401, "{path}");
        assert!(anonymous.headers()["www-authenticate"].to_str().unwrap().starts_with("Basic"), "{path}");
        assert!(!anonymous.text().unwrap().contains("hush"), "{path}");
        let wrong = get(&larder.url(path), BROWSER_ACCEPT, Some("not-the-token"));
        assert_eq!(wrong.status(), 401, "{path}");
        let reader = get(&larder.url(path), BROWSER_ACCEPT, Some(READ_TOKEN));
        assert_eq!(reader.status(), 200, "{path}");
        assert!(reader.text().unwrap().contains("hush-hush"), "{path}");
    }
    // From the public default project, the private name is not found, searched or counted.
    let search = get(&larder.url("/-/ui/search?q=hush&fragment=1"), BROWSER_ACCEPT, None).text().unwrap();
    assert!(search.contains("No project matches"), "{search}");
    let page = get(&larder.url("/-/ui/packages/hush-hush"), BROWSER_ACCEPT, None);
    assert_eq!(page.status(), 404);
    assert!(!page.text().unwrap().contains("0.1"));
    let home = get(&larder.url("/-/ui/"), BROWSER_ACCEPT, None).text().unwrap();
    assert!(!home.contains("hush"), "{home}");
    // Search finds cached upstream names and private names of the scope, and says how many.
    let found = get(&larder.url("/-/ui/search?q=TOOL&fragment=1"), BROWSER_ACCEPT, None).text().unwrap();
    assert!(found.contains("packages/toolbelt"), "{found}");
    let found = get(&larder.url("/-/ui/search?q=Corp__.W&fragment=1"), BROWSER_ACCEPT, None).text().unwrap();
    assert!(found.contains("packages/corp-widgets"), "PEP 503 runs of separators: {found}");
    let found = get(&larder.url("/-/ui/search?q=corp_w"), BROWSER_ACCEPT, None).text().unwrap();
    assert!(found.contains("packages/corp-widgets") && found.contains("<!DOCTYPE html>"), "{found}");
    // Names are canonical, as on the simple API (ROUTE-03).
    let no_redirect = reqwest::blocking::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let moved = no_redirect.get(larder.url("/-/ui/packages/Corp_Widgets")).send().unwrap();
    assert_eq!(moved.status(), 301);
    assert_eq!(moved.headers()["location"], "/-/ui/packages/corp-widgets");
    let moved = no_redirect.get(larder.url("/-/ui/packages/Corp_Widgets?all=1")).send().unwrap();
    assert_eq!(moved.headers()["location"], "/-/ui/packages/corp-widgets?all=1", "the query is kept");
    let moved = no_redirect.get(larder.url("/-/ui/projects/secret")).send().unwrap();
    assert_eq!(
        (moved.status().as_u16(), moved.headers()["location"].to_str().unwrap()),
        (301, "/-/ui/projects/secret/")
    );
    assert_eq!(get(&larder.url("/-/ui/packages/a%20b"), BROWSER_ACCEPT, None).status(), 400);
}

#[test]
fn the_project_page_shows_versions_files_and_metadata() {
    let (_up, _dir, larder) = filled();
    let body = get(&larder.url("/-/ui/packages/toolbelt"), BROWSER_ACCEPT, None).text().unwrap();
    let (v2, v1) = (body.find("<strong>2.0</strong>").unwrap(), body.find("<strong>1.0</strong>").unwrap());
    assert!(v2 < v1, "newest first");
    assert!(body.contains("<code>idna&gt;=2</code>"), "requires-dist from the stored METADATA");
    assert!(body.contains("from upstream"));
    assert!(body.contains(&format!("pip install --index-url {}/simple/ toolbelt", larder.base)));
    // Every file link is Larder's own, and downloads the file.
    let href = body.split("class=\"filename\" href=\"").nth(1).unwrap().split('"').next().unwrap();
    assert!(href.starts_with("/files/"), "{href}");
    assert_eq!(http().get(larder.url(href)).send().unwrap().status(), 200);
    let private = get(&larder.url("/-/ui/packages/corp-widgets"), BROWSER_ACCEPT, None).text().unwrap();
    assert!(private.contains("badge private"));
    assert!(private.contains("corp-widgets, a package for tests"), "a private wheel's METADATA is stored at upload");
    // Counted as requested (upstream names only), with hits and bytes from the same events.
    let home = get(&larder.url("/-/ui/"), BROWSER_ACCEPT, None).text().unwrap();
    assert!(home.contains("Most requested") && home.contains("packages/toolbelt"), "{home}");
    assert!(home.contains("last fetch"), "the upstream's health: {home}");
}

#[test]
fn a_real_browser_loads_searches_and_is_asked_for_credentials() {
    let (_up, _dir, larder) = filled();
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/ui-screenshots");
    std::fs::create_dir_all(&out).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/ui.py");
    let run = std::process::Command::new(venv_bin("python"))
        .arg(&script)
        .args([&larder.base, out.to_str().unwrap(), READ_TOKEN, "toolbelt", "corp-widgets", "secret", "hush-hush"])
        .output()
        .unwrap();
    assert_ok(&run, "tests/browser/ui.py (headless Chromium)");
    for shot in ["home.png", "project.png", "search.png", "home-dark-phone.png", "project-dark-phone.png"] {
        let len = std::fs::metadata(out.join(shot)).map(|m| m.len()).unwrap_or(0);
        assert!(len > 5_000, "{shot} is missing or blank ({len} bytes)");
    }
}

#[test]
fn writes_from_web_pages_are_refused_and_the_numbers_need_the_metrics_token() {
    let up = MockUpstream::start();
    let dir = tempfile::tempdir().unwrap();
    let larder = Larder::start_with_env(
        &dir.path().join("data"),
        &["--upstream", &up.simple_url()],
        &[("LARDER_TOKEN", TOKEN), ("LARDER_METRICS_TOKEN", "metrics-secret")],
    );
    // A web page's form post carrying the browser's cached token: refused, nothing stored.
    let (name, bytes) = wheel("csrf-target", "1.0", &[]);
    let sha = sha256_hex(&bytes);
    let fields = [
        (":action", "file_upload"),
        ("protocol_version", "1"),
        ("name", "csrf-target"),
        ("version", "1.0"),
        ("filetype", "bdist_wheel"),
        ("pyversion", "py3"),
        ("sha256_digest", sha.as_str()),
    ];
    for (header, value) in
        [("origin", "http://127.0.0.1:9"), ("sec-fetch-site", "cross-site"), ("sec-fetch-site", "same-site")]
    {
        let (content_type, body) = multipart(&fields, Some((&name, &bytes)));
        let resp = http()
            .post(larder.url("/"))
            .basic_auth("__token__", Some(TOKEN))
            .header("content-type", content_type)
            .header(header, value)
            .body(body)
            .send()
            .unwrap();
        assert_eq!(resp.status(), 403, "{header}: {value}");
        assert!(resp.text().unwrap().contains("not accepted from web pages"));
    }
    assert_eq!(get(&larder.url("/simple/csrf-target/"), PIP_ACCEPT, None).status(), 404, "nothing was stored");
    let (content_type, body) = multipart(&fields, Some((&name, &bytes)));
    let resp = http()
        .post(larder.url("/"))
        .basic_auth("__token__", Some(TOKEN))
        .header("content-type", content_type)
        .body(body)
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200, "the same upload from a client: {}", resp.text().unwrap());

    // The cache's numbers are /metrics' numbers: shown only with the metrics token.
    let home = get(&larder.url("/-/ui/"), BROWSER_ACCEPT, None).text().unwrap();
    assert!(!home.contains("Hit ratio") && home.contains("metrics token"), "{home}");
    let home =
        http().get(larder.url("/-/ui/")).header("accept", BROWSER_ACCEPT).bearer_auth("metrics-secret").send().unwrap();
    assert!(home.text().unwrap().contains("Hit ratio"));
}
