//! PyPI's JSON API (issue 24): `…/pypi/<name>/json` and `…/pypi/<name>/<version>/json` for
//! every scope, in warehouse's shape, under the simple API's access rules and policies, read by
//! a Dependabot-style reader and the `pypi-json` client library.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::util::upstream::{MockFile, MockUpstream};
use crate::util::{Larder, assert_ok, http, sha256_hex, twine, venv_bin, wheel, wheel_metadata};

const TOKEN: &str = "json-api-token-1";
const READ_TOKEN: &str = "json-api-reader-2";

fn ago(secs: u64) -> String {
    humantime::format_rfc3339_micros(SystemTime::now() - Duration::from_secs(secs)).to_string()
}

fn config(dir: &Path, extra: &str) -> String {
    let path = dir.join("larder.toml");
    let text = format!(
        r#"{extra}
[[tokens]]
name = "reader"
secret = "{READ_TOKEN}"
scopes = ["read"]

[projects.secret]
private = true

[groups.platform]
projects = ["team"]
"#
    );
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

fn start(up: &MockUpstream, dir: &Path, extra_config: &str) -> Larder {
    let config = config(dir, extra_config);
    let args = ["--upstream", &up.simple_url(), "--config", &config, "--metadata-prefetch", "false"];
    Larder::start_with_env(&dir.join("data"), &args, &[("LARDER_TOKEN", TOKEN)])
}

/// `demo`: 1.0 (metadata advertised), 2.0 (none advertised: read by ranges), 3.0 yanked,
/// 4.0a1 a pre-release. Returns each wheel's sha256 by version.
fn demo_upstream() -> (MockUpstream, std::collections::BTreeMap<&'static str, String>) {
    let up = MockUpstream::start();
    let mut shas = std::collections::BTreeMap::new();
    for (version, advertise, yanked) in
        [("1.0", true, None), ("2.0", false, None), ("3.0", true, Some(Some("broken".into()))), ("4.0a1", true, None)]
    {
        let (name, bytes) = wheel("demo", version, &["idna>=2"]);
        shas.insert(version, sha256_hex(&bytes));
        let metadata = advertise.then(|| wheel_metadata(&bytes));
        up.add("demo", MockFile { metadata, yanked, upload_time: Some(ago(86_400)), ..MockFile::new(&name, bytes) });
    }
    (up, shas)
}

fn get_json(url: &str, token: Option<&str>) -> (u16, Value) {
    let mut req = http().get(url);
    if let Some(t) = token {
        req = req.basic_auth("x", Some(t));
    }
    let resp = req.send().unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

fn location(url: &str) -> (u16, String) {
    let resp = http().get(url).send().unwrap();
    let loc = resp.headers().get("location").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    (resp.status().as_u16(), loc)
}

/// Runs tests/consumers/json_api_readers.py with the venv's Python; its JSON output.
fn reader(args: &[&str]) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/consumers/json_api_readers.py");
    let out = Command::new(venv_bin("python")).arg(script).args(args).output().unwrap();
    assert_ok(&out, &format!("json_api_readers.py {args:?}"));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn an_upstream_project_in_warehouses_shape_on_every_route() {
    let (up, shas) = demo_upstream();
    let dir = tempfile::tempdir().unwrap();
    let larder = start(&up, dir.path(), "");

    let resp = http().get(larder.url("/pypi/demo/json")).send().unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert_eq!(resp.headers()["access-control-allow-origin"], "*");
    assert!(resp.headers()["cache-control"].to_str().unwrap().contains("public"));
    let etag = resp.headers()["etag"].to_str().unwrap().to_string();
    let v: Value = resp.json().unwrap();
    // info.version: the newest non-yanked final release (3.0 is yanked, 4.0a1 a pre-release).
    assert_eq!(v["info"]["version"], "2.0");
    assert_eq!(v["info"]["name"], "demo");
    assert_eq!(v["info"]["yanked"], false);
    // 2.0's metadata is advertised by nobody: read by ranges, as `.metadata` is, never whole.
    assert_eq!(v["info"]["summary"], "demo, a package for tests");
    assert_eq!(v["info"]["requires_dist"], serde_json::json!(["idna>=2"]));
    assert_eq!(up.count_full("demo-2.0-py3-none-any.whl"), 0, "{:?}", up.requests());
    let versions: Vec<&str> = v["releases"].as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(versions, ["1.0", "2.0", "3.0", "4.0a1"]);
    let yanked = &v["releases"]["3.0"][0];
    assert_eq!((yanked["yanked"].clone(), yanked["yanked_reason"].clone()), (Value::Bool(true), "broken".into()));
    assert_eq!(v["urls"], v["releases"]["2.0"]);
    for (version, sha) in &shas {
        let f = &v["releases"][version][0];
        assert_eq!(f["digests"]["sha256"], sha.as_str());
        assert_eq!(f["packagetype"], "bdist_wheel");
        assert_eq!(f["python_version"], "py3");
        assert!(f["upload_time"].as_str().unwrap().len() == 19, "{f}");
        assert!(f["upload_time_iso_8601"].as_str().unwrap().ends_with('Z'), "{f}");
        // Every URL goes through Larder, and its bytes match the digest.
        let url = f["url"].as_str().unwrap();
        assert!(url.starts_with(&format!("{}/files/{sha}/", larder.base)), "{url}");
        assert_eq!(sha256_hex(&http().get(url).send().unwrap().bytes().unwrap()), *sha);
    }

    // Revalidation: the same bytes, the same ETag; HEAD has the headers and no body.
    let again = http().get(larder.url("/pypi/demo/json")).header("if-none-match", &etag).send().unwrap();
    assert_eq!(again.status(), 304);
    let head = http().head(larder.url("/pypi/demo/json")).send().unwrap();
    assert_eq!(head.status(), 200);
    assert!(head.headers()["content-length"].to_str().unwrap().parse::<u64>().unwrap() > 100);

    // The version route: one release, no `releases` (warehouse's shape since 2023).
    let (status, one) = get_json(&larder.url("/pypi/demo/1.0/json"), None);
    assert_eq!(status, 200, "{one}");
    assert_eq!(one["info"]["version"], "1.0");
    assert!(one.get("releases").is_none());
    assert_eq!(one["urls"].as_array().unwrap().len(), 1);
    let (status, yanked) = get_json(&larder.url("/pypi/demo/3.0/json"), None);
    assert_eq!((status, yanked["info"]["yanked"].clone()), (200, Value::Bool(true)));
    assert_eq!(yanked["info"]["yanked_reason"], "broken");

    // Canonical URLs: names normalized, versions as listed, no trailing slash.
    assert_eq!(location(&larder.url("/pypi/Demo/json")), (301, "/pypi/demo/json".into()));
    assert_eq!(location(&larder.url("/pypi/demo/json/")), (301, "/pypi/demo/json".into()));
    assert_eq!(location(&larder.url("/pypi/demo/1.0.0/json")), (301, "/pypi/demo/1.0/json".into()));
    let (status, why) = get_json(&larder.url("/pypi/demo/9.9/json"), None);
    assert_eq!(status, 404, "{why}");
    let (status, why) = get_json(&larder.url("/pypi/no-such-project/json"), None);
    assert_eq!(status, 404);
    assert!(why.as_str().unwrap().contains("not found upstream"), "{why}");
    let (status, _) = get_json(&larder.url("/pypi/demo/1.0/2.0/json"), None);
    assert_eq!(status, 404);
    let (status, _) = get_json(&larder.url("/pypi/bad%20name!/json"), None);
    assert_eq!(status, 400);

    // The GitLab layout: what Dependabot's rewrite makes of a project's or a group's index URL.
    let project = "/api/v4/projects/team/packages/pypi";
    let (status, v) = get_json(&larder.url(&format!("{project}/pypi/demo/json")), None);
    assert_eq!(status, 200, "{v}");
    let url = v["urls"][0]["url"].as_str().unwrap();
    assert!(url.starts_with(&larder.url(&format!("{project}/files/"))), "{url}");
    let group = "/api/v4/groups/platform/-/packages/pypi";
    let (status, v) = get_json(&larder.url(&format!("{group}/pypi/demo/2.0/json")), None);
    assert_eq!(status, 200, "{v}");
    assert!(v["urls"][0]["url"].as_str().unwrap().starts_with(&larder.url(&format!("{group}/files/"))));
    assert_eq!(location(&larder.url(&format!("{project}/pypi/DEMO/json"))), (301, format!("{project}/pypi/demo/json")));
}

#[test]
fn a_private_upload_needs_a_read_token_and_held_back_or_blocked_files_are_absent() {
    let up = MockUpstream::start();
    for (version, age) in [("0.5", 90 * 86_400), ("1.0", 30 * 86_400), ("2.0", 3600)] {
        let (name, bytes) = wheel("lib", version, &[]);
        let metadata = Some(wheel_metadata(&bytes));
        up.add("lib", MockFile { metadata, upload_time: Some(ago(age)), ..MockFile::new(&name, bytes) });
    }
    let dir = tempfile::tempdir().unwrap();
    let policy = "min_release_age = \"7d\"\n[[block]]\nname = \"lib\"\nversion = \"==0.5\"\nreason = \"bad\"\n";
    let larder = start(&up, dir.path(), policy);

    // 2.0 is in its cooldown, 0.5 is blocked: neither is in the JSON, nor reachable by version.
    let (status, v) = get_json(&larder.url("/pypi/lib/json"), None);
    assert_eq!(status, 200, "{v}");
    let versions: Vec<&str> = v["releases"].as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(versions, ["1.0"]);
    assert_eq!(v["info"]["version"], "1.0");
    for held in ["2.0", "0.5"] {
        let (status, why) = get_json(&larder.url(&format!("/pypi/lib/{held}/json")), None);
        assert_eq!(status, 404, "{held}: {why}");
    }

    // A private project's upload: its JSON needs a read token, and is never kept by a shared cache.
    let scratch = tempfile::tempdir().unwrap();
    let (name, bytes) = wheel("hidden-pkg", "1.0", &["lib>=1"]);
    let path = scratch.path().join(&name);
    std::fs::write(&path, &bytes).unwrap();
    let upload = larder.url("/api/v4/projects/secret/packages/pypi");
    let out =
        twine(scratch.path(), &["upload", "--repository-url", &upload, "-u", "x", "-p", TOKEN, path.to_str().unwrap()]);
    assert_ok(&out, "twine upload");
    let url = larder.url("/api/v4/projects/secret/packages/pypi/pypi/hidden-pkg/json");
    assert_eq!(http().get(&url).send().unwrap().status(), 401);
    let resp = http().get(&url).basic_auth("x", Some(READ_TOKEN)).send().unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["cache-control"], "private, no-cache");
    assert!(resp.headers().get("access-control-allow-origin").is_none());
    let v: Value = resp.json().unwrap();
    assert_eq!(v["info"]["summary"], "hidden-pkg, a package for tests");
    assert_eq!(v["info"]["requires_dist"], serde_json::json!(["lib>=1"]));
    let f = &v["urls"][0];
    assert_eq!(f["digests"]["sha256"], sha256_hex(&bytes));
    assert_eq!(f["size"], bytes.len());
    assert!(f["upload_time_iso_8601"].as_str().unwrap().ends_with('Z'));
    // Another project does not see it, and the upstream was never asked for it.
    let (status, _) = get_json(&larder.url("/pypi/hidden-pkg/json"), None);
    assert_eq!(status, 404);
}

#[test]
fn dependabots_reader_and_the_pypi_json_library_read_it() {
    let (up, shas) = demo_upstream();
    let dir = tempfile::tempdir().unwrap();
    let larder = start(&up, dir.path(), "");

    // Dependabot's cooldown: the index URL as configured, the name as written in requirements.
    for index in [larder.index(), larder.url("/api/v4/projects/team/packages/pypi/simple")] {
        let seen = reader(&["dependabot", &index, "Demo"]);
        let releases = seen["releases"].as_object().unwrap();
        assert_eq!(releases.len(), 4, "{seen}");
        for r in releases.values() {
            assert!(r["released_at"].is_string(), "the cooldown has dates: {seen}");
        }
        assert_eq!(seen["releases"]["3.0"]["yanked"], true);
        assert_eq!(seen["releases"]["2.0"]["package_type"], "bdist_wheel");
    }

    let endpoint = larder.url("/pypi/");
    let seen = reader(&["pypi-json", &endpoint, "demo"]);
    assert_eq!(seen["version"], "2.0", "{seen}");
    assert_eq!(seen["latest"], "4.0a1", "the library's own choice: the highest version");
    assert_eq!(seen["digests"]["1.0"][0], shas["1.0"].as_str());
    let seen = reader(&["pypi-json", &endpoint, "demo", "1.0"]);
    assert_eq!(seen["version"], "1.0", "{seen}");
    assert!(seen["urls"][0].as_str().unwrap().starts_with(&larder.base));
}
