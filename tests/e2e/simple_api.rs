//! Project pages over HTTP: negotiation for each client's Accept header (NEG-*), HDR-1 headers,
//! 304s, redirects (ROUTE-02/03), bad input, and upstream failures (ROUTE-07/08).

use std::time::Duration;

use crate::util::upstream::{MockFile, MockUpstream};
use crate::util::{Larder, http, sha256_hex, wheel};

const PIP_ACCEPT: &str =
    "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01";
const UV_ACCEPT: &str =
    "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01";
const POETRY_ACCEPT: &str = "application/vnd.pypi.simple.v1+json, */*;q=0.1";
const BROWSER_ACCEPT: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";

fn setup() -> (MockUpstream, Larder, tempfile::TempDir) {
    let up = MockUpstream::start();
    let (name, bytes) = wheel("demo-pkg", "1.0", &[]);
    let metadata = crate::util::wheel_metadata(&bytes);
    up.add(
        "demo-pkg",
        MockFile { metadata: Some(metadata), requires_python: Some(">=3.8".into()), ..MockFile::new(&name, bytes) },
    );
    let (old, old_bytes) = wheel("demo-pkg", "0.9", &[]);
    up.add("demo-pkg", MockFile { yanked: Some(None), ..MockFile::new(&old, old_bytes) });
    let (older, older_bytes) = wheel("demo-pkg", "0.8", &[]);
    up.add("demo-pkg", MockFile { yanked: Some(Some("broken & bad".into())), ..MockFile::new(&older, older_bytes) });
    let dir = tempfile::tempdir().unwrap();
    // No metadata prefetch: it would change pages (and ETags) while a test looks at them.
    let larder = Larder::start(
        dir.path(),
        &["--upstream", &up.simple_url(), "--upstream-timeout", "2s", "--metadata-prefetch", "false"],
    );
    (up, larder, dir)
}

#[test]
fn neg_each_clients_accept_header_gets_its_format() {
    let (_up, larder, _dir) = setup();
    let url = larder.url("/simple/demo-pkg/");
    let cases = [
        (Some(PIP_ACCEPT), "application/vnd.pypi.simple.v1+json"),
        (Some(UV_ACCEPT), "application/vnd.pypi.simple.v1+json"),
        (Some(POETRY_ACCEPT), "application/vnd.pypi.simple.v1+json"),
        (Some("*/*"), "text/html; charset=utf-8"),
        (None, "text/html; charset=utf-8"),
        (Some(BROWSER_ACCEPT), "text/html; charset=utf-8"),
        (Some("application/vnd.pypi.simple.v1+html"), "application/vnd.pypi.simple.v1+html; charset=utf-8"),
    ];
    let mut etags = std::collections::HashSet::new();
    for (accept, want) in cases {
        // One coding throughout: ETags differ per coding too (issue 21).
        let mut req = http().get(&url).header("accept-encoding", "identity");
        if let Some(a) = accept {
            req = req.header("accept", a);
        }
        let resp = req.send().unwrap();
        assert_eq!(resp.status(), 200, "Accept: {accept:?}");
        let h = resp.headers();
        assert_eq!(h["content-type"], want, "NEG-08 for Accept: {accept:?}");
        assert_eq!(h["vary"], "Accept, Accept-Encoding", "NEG-07; pages are compressed (issue 21)");
        assert!(h.contains_key("date"), "HDR-1: pip caches only with Date");
        let etag = h["etag"].to_str().unwrap().to_string();
        assert!(!etag.starts_with("W/"), "HDR-1: strong ETag");
        etags.insert((want, etag));
    }
    let distinct: std::collections::HashSet<_> = etags.iter().map(|(_, e)| e.clone()).collect();
    assert_eq!(distinct.len(), 3, "one ETag per representation: {etags:?}");

    // ROUTE-06: HEAD answers with GET's headers and no body.
    let get = http().get(&url).header("accept", PIP_ACCEPT).header("accept-encoding", "identity").send().unwrap();
    let head = http().head(&url).header("accept", PIP_ACCEPT).header("accept-encoding", "identity").send().unwrap();
    assert_eq!(head.status(), 200);
    for h in ["content-type", "content-length", "etag", "vary"] {
        assert_eq!(head.headers()[h], get.headers()[h], "HEAD {h}");
    }
    assert!(head.bytes().unwrap().is_empty());

    let resp = http().get(&url).header("accept", "application/json").send().unwrap();
    assert_eq!(resp.status(), 406, "NEG-05");
    assert_eq!(resp.headers()["vary"], "Accept");
}

#[test]
fn pages_carry_yanks_metadata_and_pep700_fields() {
    let (up, larder, _dir) = setup();
    let url = larder.url("/simple/demo-pkg/");
    let json: serde_json::Value = http().get(&url).header("accept", UV_ACCEPT).send().unwrap().json().unwrap();
    assert_eq!(json["meta"]["api-version"], "1.1");
    assert_eq!(json["name"], "demo-pkg");
    assert_eq!(json["versions"], serde_json::json!(["0.8", "0.9", "1.0"]));
    let files = json["files"].as_array().unwrap();
    let by_name = |v: &str| files.iter().find(|f| f["filename"].as_str().unwrap().contains(v)).unwrap().clone();
    let current = by_name("-1.0-");
    let sha = current["hashes"]["sha256"].as_str().unwrap();
    assert_eq!(
        current["url"],
        format!("../../files/{sha}/demo_pkg-1.0-py3-none-any.whl"),
        "UP-02: only the URL is rewritten"
    );
    assert_eq!(current["requires-python"], ">=3.8");
    assert_eq!(current["upload-time"], "2026-01-02T03:04:05.123456Z");
    assert!(current["size"].as_u64().unwrap() > 0);
    assert!(current["core-metadata"]["sha256"].as_str().is_some());
    assert!(current.get("dist-info-metadata").is_none(), "JSON-06");
    assert_eq!(by_name("-0.9-")["yanked"], true, "JSON-07");
    assert_eq!(by_name("-0.8-")["yanked"], "broken & bad");

    let html = http().get(&url).send().unwrap().text().unwrap();
    assert!(html.contains(r#"<meta name="pypi:repository-version" content="1.1">"#), "HTML-02");
    assert!(html.contains(r#"data-yanked="""#), "HTML-06");
    assert!(html.contains(r#"data-yanked="broken &amp; bad""#), "HTML-05");
    assert!(html.contains(r#"data-requires-python="&gt;=3.8""#));
    let md = current["core-metadata"]["sha256"].as_str().unwrap();
    assert!(
        html.contains(&format!(r#"data-dist-info-metadata="sha256={md}" data-core-metadata="sha256={md}""#)),
        "HTML-07"
    );
    assert!(
        html.contains(&format!(r##"href="../../files/{sha}/demo_pkg-1.0-py3-none-any.whl#sha256={sha}""##)),
        "HTML-04"
    );

    // The same page under the GitLab project and group routes.
    for path in
        ["/api/v4/projects/7/packages/pypi/simple/demo-pkg/", "/api/v4/groups/3/-/packages/pypi/simple/demo-pkg/"]
    {
        let resp = http().get(larder.url(path)).send().unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        assert!(resp.text().unwrap().contains("demo_pkg-1.0-py3-none-any.whl"));
    }
    assert_eq!(up.count("GET /simple/demo-pkg/"), 1, "one upstream fetch serves every route and format");

    // The project list names what Larder has.
    let root = http().get(larder.url("/simple/")).send().unwrap().text().unwrap();
    assert!(root.contains(r#"<a href="/simple/demo-pkg/">demo-pkg</a>"#), "{root}");
    let root =
        http().get(larder.url("/api/v4/projects/7/packages/pypi/simple")).header("accept", PIP_ACCEPT).send().unwrap();
    assert_eq!(root.headers()["content-type"], "application/vnd.pypi.simple.v1+json");
    let root: serde_json::Value = root.json().unwrap();
    assert_eq!(root["projects"], serde_json::json!([{"name": "demo-pkg"}]));
}

#[test]
fn hdr_1_if_none_match_gives_304_with_validators() {
    let (_up, larder, _dir) = setup();
    let url = larder.url("/simple/demo-pkg/");
    let first = http().get(&url).header("accept", PIP_ACCEPT).send().unwrap();
    let etag = first.headers()["etag"].clone();
    let again = http().get(&url).header("accept", PIP_ACCEPT).header("if-none-match", etag.clone()).send().unwrap();
    assert_eq!(again.status(), 304);
    assert_eq!(again.headers()["etag"], etag);
    assert_eq!(again.headers()["vary"], "Accept, Accept-Encoding");
    assert!(again.headers().contains_key("cache-control"));
    assert!(again.headers().contains_key("date"));
    // The HTML ETag does not validate the JSON representation.
    let html_etag = http().get(&url).send().unwrap().headers()["etag"].clone();
    let other = http().get(&url).header("accept", PIP_ACCEPT).header("if-none-match", html_etag).send().unwrap();
    assert_eq!(other.status(), 200);
}

#[test]
fn route_02_03_redirects_to_the_canonical_url() {
    let (_up, larder, _dir) = setup();
    for (path, location) in [
        ("/simple/demo-pkg", "/simple/demo-pkg/"),
        ("/simple/Demo_Pkg/", "/simple/demo-pkg/"),
        ("/simple/DEMO.pkg", "/simple/demo-pkg/"),
        ("/api/v4/projects/9/packages/pypi/simple/Demo.Pkg/", "/api/v4/projects/9/packages/pypi/simple/demo-pkg/"),
    ] {
        let resp = http().get(larder.url(path)).send().unwrap();
        assert_eq!(resp.status(), 301, "{path}");
        assert_eq!(resp.headers()["location"], location, "{path}");
    }
}

#[test]
fn bad_input_gets_a_clear_4xx() {
    let (_up, larder, _dir) = setup();
    let sha = sha256_hex(b"x");
    let cases = [
        ("/simple/-bad-/", 400, "invalid project name"),
        ("/simple/a%20b/", 400, "invalid project name"),
        ("/files/not-a-sha/x-1.0.tar.gz", 400, "invalid sha256"),
        (&*format!("/files/{}/x-1.0.tar.gz", &sha[..63]), 400, "invalid sha256"),
        (&*format!("/files/{sha}/..%2F..%2Fetc%2Fpasswd"), 400, "invalid filename"),
        (&*format!("/files/{sha}/a%5Cb.whl"), 400, "invalid filename"),
        ("/nope", 404, "unknown route"),
        ("/api/v4/projects/1/packages/npm/x", 404, "unknown route"),
    ];
    for (path, status, reason) in cases {
        let resp = http().get(larder.url(path)).send().unwrap();
        assert_eq!(resp.status().as_u16(), status, "{path}");
        let body = resp.text().unwrap();
        assert!(body.contains(reason), "{path}: {body}");
        assert_eq!(body.trim_end().lines().count(), 1, "one-line reason: {body}");
    }
    let resp = http().delete(larder.url("/simple/demo-pkg/")).send().unwrap();
    assert_eq!(resp.status(), 405);
}

#[test]
fn route_07_08_upstream_404_is_404_and_failure_is_5xx() {
    let (up, larder, _dir) = setup();
    let resp = http().get(larder.url("/simple/no-such-project/")).send().unwrap();
    assert_eq!(resp.status(), 404);
    assert!(resp.headers()["cache-control"].to_str().unwrap().contains("max-age=60"), "UP-09");

    up.set_down(true);
    let resp = http().get(larder.url("/simple/other-project/")).send().unwrap();
    assert_eq!(resp.status(), 502, "ROUTE-08: never 404 when the upstream fails");
    assert!(resp.text().unwrap().contains("503"));

    // An upstream that answers something that is not an index page: 502 with the reason.
    up.set_down(false);
    up.add("odd", MockFile::new("odd-1.0.tar.gz", b"x".to_vec()));
    up.state.lock().unwrap().odd_content_type = true;
    let resp = http().get(larder.url("/simple/odd/")).send().unwrap();
    assert_eq!(resp.status(), 502);
    assert!(resp.text().unwrap().contains("expected JSON or HTML"));
    up.state.lock().unwrap().odd_content_type = false;

    up.set_delay(Duration::from_secs(4));
    let resp = http().get(larder.url("/simple/slow-project/")).send().unwrap();
    assert_eq!(resp.status(), 504, "a timeout is a 504");
}

#[test]
fn up_08_client_authorization_never_reaches_upstream() {
    let (up, larder, _dir) = setup();
    let resp = http().get(larder.url("/simple/demo-pkg/")).basic_auth("user", Some("secret")).send().unwrap();
    assert_eq!(resp.status(), 200);
    assert!(up.count("/simple/demo-pkg/") >= 1);
    assert!(!up.state.lock().unwrap().saw_authorization);
}
