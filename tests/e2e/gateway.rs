//! The supply-chain gateway (issue 14), driven by the real pip, uv and twine: names routed to
//! one upstream each (never merged), the release cooldown, block lists reloaded by SIGHUP,
//! PEP 740 provenance and PEP 792 status passed through, and Last-Modified validators.

use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::util::upstream::{MockFile, MockUpstream};
use crate::util::{
    Larder, assert_ok, filenames, http, multipart, pip, sha256_hex, twine, uv, venv_bin, wheel, wheel_metadata,
    write_config,
};

const JSON: &str = "application/vnd.pypi.simple.v1+json";
const TOKEN: &str = "gateway-token-123";

fn json_page(url: &str) -> serde_json::Value {
    let resp = http().get(url).header("accept", JSON).send().unwrap();
    assert_eq!(resp.status(), 200, "{url}");
    resp.json().unwrap()
}

/// A wheel with its metadata advertised, uploaded at `upload_time` (PEP 700 form).
fn add_wheel(up: &MockUpstream, project: &str, version: &str, deps: &[&str], upload_time: Option<String>) -> String {
    let (name, bytes) = wheel(project, version, deps);
    let sha = sha256_hex(&bytes);
    up.add(project, MockFile { metadata: Some(wheel_metadata(&bytes)), upload_time, ..MockFile::new(&name, bytes) });
    sha
}

fn ago(secs: u64) -> String {
    humantime::format_rfc3339_micros(SystemTime::now() - Duration::from_secs(secs)).to_string()
}

/// `uv pip compile` of `requirement` through `index`; the resolved lines.
fn uv_compile(scratch: &Path, index: &str, requirement: &str) -> std::process::Output {
    let reqs = scratch.join("requirements.in");
    std::fs::write(&reqs, format!("{requirement}\n")).unwrap();
    let python = venv_bin("python");
    uv(
        scratch,
        &[
            "pip",
            "compile",
            "--no-cache",
            "--python",
            python.to_str().unwrap(),
            "--index-url",
            index,
            reqs.to_str().unwrap(),
        ],
    )
}

/// pip's resolution of `requirement` through `index` (no install): name → version.
fn pip_resolve(scratch: &Path, index: &str, requirement: &str) -> Result<Vec<(String, String)>, String> {
    let report = scratch.join("report.json");
    let out = pip(
        scratch,
        &[
            "install",
            "--dry-run",
            "--no-cache-dir",
            "--ignore-installed",
            "--index-url",
            index,
            "--report",
            report.to_str().unwrap(),
            requirement,
        ],
    );
    if !out.status.success() {
        return Err(format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)));
    }
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    Ok(report["install"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            let md = &i["metadata"];
            (md["name"].as_str().unwrap().to_string(), md["version"].as_str().unwrap().to_string())
        })
        .collect())
}

#[test]
fn each_name_comes_from_its_own_upstream_and_is_never_merged() {
    // The default upstream has `app` and a look-alike `corp-tools` 9.9 (the dependency-confusion
    // bait); the vendor index has the real `corp-tools` 1.0 and `corp-extra`.
    let default = MockUpstream::start();
    add_wheel(&default, "app", "1.0", &["corp-tools"], None);
    let bait = add_wheel(&default, "corp-tools", "9.9", &[], None);
    let vendor = MockUpstream::start();
    vendor.state.lock().unwrap().require_authorization = Some("Basic dmVuZG9yOnMzY3JldA==".into()); // vendor:s3cret
    let real = add_wheel(&vendor, "corp-tools", "1.0", &[], None);
    add_wheel(&vendor, "corp-extra", "0.1", &[], None);
    // A third index owns `gpu-*`; the default has a `gpu-kernels` too.
    let gpu = MockUpstream::start();
    add_wheel(&gpu, "gpu-kernels", "3.0", &[], None);
    add_wheel(&default, "gpu-kernels", "99.0", &[], None);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            r#"upstream = "{default}"
[[upstreams]]
name = "vendor"
url = "{vendor}"
username = "vendor"
password_env = "VENDOR_PASSWORD"
projects = ["corp-*"]

[[upstreams]]
name = "gpu"
url = "{gpu}"
projects = ["GPU_*"]

[projects.isolated]
upstreams = ["vendor"]

[projects.sealed]
upstreams = []
"#,
            default = default.simple_url(),
            vendor = vendor.simple_url(),
            gpu = gpu.simple_url()
        ),
    );
    let larder = Larder::start_with_env(dir.path(), &["--config", &config], &[("VENDOR_PASSWORD", "s3cret")]);
    let scratch = tempfile::tempdir().unwrap();

    // pip and uv, with Larder as their only index, get `corp-tools` from the vendor only.
    let resolved = pip_resolve(scratch.path(), &larder.index(), "app").unwrap();
    assert!(resolved.contains(&("corp-tools".into(), "1.0".into())), "{resolved:?}");
    let out = uv_compile(scratch.path(), &larder.index(), "app");
    assert_ok(&out, "uv pip compile");
    let lines = String::from_utf8_lossy(&out.stdout);
    assert!(lines.contains("corp-tools==1.0") && !lines.contains("9.9"), "{lines}");
    let page = json_page(&larder.url("/simple/corp-tools/"));
    assert_eq!(filenames(&page), ["corp_tools-1.0-py3-none-any.whl"], "never merged with the default's 9.9");
    assert_eq!(default.count("/simple/corp-tools/"), 0, "the default upstream is never asked for a routed name");
    assert!(!default.state.lock().unwrap().saw_authorization, "the vendor's credentials go to the vendor only");
    let out = uv_compile(scratch.path(), &larder.index(), "gpu-kernels");
    assert_ok(&out, "uv pip compile gpu-kernels");
    assert!(String::from_utf8_lossy(&out.stdout).contains("gpu-kernels==3.0"));
    assert_eq!(default.count("/simple/gpu-kernels/"), 0);
    assert_eq!(vendor.count("/simple/gpu-kernels/"), 0);

    // Files follow the same routing: the bait's file is not served under the routed name,
    // even by its hash; the real one is.
    let bait_url = larder.url(&format!("/files/{bait}/corp_tools-9.9-py3-none-any.whl"));
    assert_eq!(http().get(&bait_url).send().unwrap().status(), 404);
    let real_url = larder.url(&format!("/files/{real}/corp_tools-1.0-py3-none-any.whl"));
    assert_eq!(http().get(&real_url).send().unwrap().status(), 200);

    // A project narrowed to the vendor does not see the default's names, and one with no
    // upstreams sees none; both say why.
    let isolated = larder.url("/api/v4/projects/isolated/packages/pypi/simple/");
    let resp = http().get(format!("{isolated}app/")).send().unwrap();
    assert_eq!(resp.status(), 404);
    assert!(resp.text().unwrap().contains("upstream `default`, which this project does not use"));
    assert_eq!(filenames(&json_page(&format!("{isolated}corp-extra/"))), ["corp_extra-0.1-py3-none-any.whl"]);
    let sealed = larder.url("/api/v4/projects/sealed/packages/pypi/simple/corp-extra/");
    let resp = http().get(sealed).send().unwrap();
    assert_eq!(resp.status(), 404);
    assert!(resp.text().unwrap().contains("private packages only"));

    // /metrics labels upstream traffic by upstream.
    let metrics = http().get(larder.url("/metrics")).send().unwrap().text().unwrap();
    assert!(metrics.contains(r#"upstream="vendor""#) && metrics.contains(r#"upstream="default""#), "{metrics}");
}

#[test]
fn a_cooldown_hides_fresh_releases_from_pip_and_uv_but_not_private_uploads() {
    let up = MockUpstream::start();
    add_wheel(&up, "app", "1.0", &["lib-core>=1"], Some(ago(30 * 86_400)));
    add_wheel(&up, "lib-core", "1.0", &[], Some(ago(30 * 86_400)));
    let fresh = add_wheel(&up, "lib-core", "2.0", &[], Some(ago(3600)));
    add_wheel(&up, "quick", "1.0", &[], Some(ago(3600)));
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        r#"min_release_age = "7d"
min_release_age_exempt = ["quick"]
allow_shadowing = []
"#,
    );
    let larder = Larder::start_with_env(
        dir.path(),
        &["--config", &config, "--upstream", &up.simple_url()],
        &[("LARDER_TOKEN", TOKEN)],
    );
    let scratch = tempfile::tempdir().unwrap();

    let out = uv_compile(scratch.path(), &larder.index(), "app");
    assert_ok(&out, "uv pip compile");
    let lines = String::from_utf8_lossy(&out.stdout);
    assert!(lines.contains("lib-core==1.0"), "the fresh 2.0 is held back: {lines}");
    let resolved = pip_resolve(scratch.path(), &larder.index(), "app").unwrap();
    assert!(resolved.contains(&("lib-core".into(), "1.0".into())), "{resolved:?}");
    // Asking for the fresh release by name fails: it does not exist here yet.
    assert!(!uv_compile(scratch.path(), &larder.index(), "lib-core==2.0").status.success());

    let page = json_page(&larder.url("/simple/lib-core/"));
    assert_eq!(filenames(&page), ["lib_core-1.0-py3-none-any.whl"]);
    assert_eq!(page["versions"], serde_json::json!(["1.0"]), "PEP 700 versions follow the files");
    let url = larder.url(&format!("/files/{fresh}/lib_core-2.0-py3-none-any.whl"));
    let resp = http().get(&url).send().unwrap();
    assert_eq!(resp.status(), 404);
    let why = resp.text().unwrap();
    assert!(why.contains("min_release_age") && why.contains("until"), "{why}");
    assert_eq!(up.count("lib_core-2.0-py3-none-any.whl"), 0, "a held-back file is never fetched");
    // An exempt name is not held back.
    assert_eq!(filenames(&json_page(&larder.url("/simple/quick/"))), ["quick-1.0-py3-none-any.whl"]);

    // Private uploads are never delayed: uploaded now, installable now.
    let (name, bytes) = wheel("team-tool", "0.1", &[]);
    let path = scratch.path().join(&name);
    std::fs::write(&path, &bytes).unwrap();
    let upload = larder.url("/api/v4/projects/default/packages/pypi");
    let out =
        twine(scratch.path(), &["upload", "--repository-url", &upload, "-u", "x", "-p", TOKEN, path.to_str().unwrap()]);
    assert_ok(&out, "twine upload");
    let resolved = pip_resolve(scratch.path(), &larder.index(), "team-tool").unwrap();
    assert_eq!(resolved, [("team-tool".to_string(), "0.1".to_string())]);
}

#[test]
fn blocked_versions_and_names_are_refused_and_the_list_reloads_on_sighup() {
    let up = MockUpstream::start();
    add_wheel(&up, "app", "1.0", &["lib-core>=2"], None);
    add_wheel(&up, "lib-core", "2.0", &[], None);
    let bad = add_wheel(&up, "lib-core", "2.1", &[], None);
    add_wheel(&up, "evil", "1.0", &[], None);
    let dir = tempfile::tempdir().unwrap();
    let blocks = r#"
[[block]]
name = "lib-core"
version = "==2.1"
reason = "CVE-2026-12345: remote code execution"

[[block]]
name = "evil"
reason = "typosquat of a popular package"
"#;
    let config = write_config(dir.path(), &format!("upstream = \"{}\"\n{blocks}", up.simple_url()));
    let larder = Larder::start(dir.path(), &["--config", &config]);
    let scratch = tempfile::tempdir().unwrap();

    // The resolvers skip the blocked version.
    let out = uv_compile(scratch.path(), &larder.index(), "app");
    assert_ok(&out, "uv pip compile");
    assert!(String::from_utf8_lossy(&out.stdout).contains("lib-core==2.0"));
    let resolved = pip_resolve(scratch.path(), &larder.index(), "app").unwrap();
    assert!(resolved.contains(&("lib-core".into(), "2.0".into())), "{resolved:?}");
    // Its file URL refuses, with the reason.
    let url = larder.url(&format!("/files/{bad}/lib_core-2.1-py3-none-any.whl"));
    let resp = http().get(&url).send().unwrap();
    assert_eq!(resp.status(), 403);
    assert!(resp.text().unwrap().contains("CVE-2026-12345"));
    assert_eq!(http().get(format!("{url}.metadata")).send().unwrap().status(), 403, "its metadata too");
    // A blocked name: its page is not found, with the reason; pip fails on it.
    let resp = http().get(larder.url("/simple/evil/")).send().unwrap();
    assert_eq!(resp.status(), 404);
    assert!(resp.text().unwrap().contains("typosquat"));
    assert!(pip_resolve(scratch.path(), &larder.index(), "evil").is_err());
    let metrics = http().get(larder.url("/metrics")).send().unwrap().text().unwrap();
    assert!(metrics.contains(r#"larder_blocked_total{kind="file"}"#), "{metrics}");
    assert!(metrics.contains("larder_block_rules 2"), "{metrics}");

    // A list that does not parse is refused on reload; the one in force stays.
    let hup = || {
        std::process::Command::new("kill").args(["-HUP", &larder.pid().to_string()]).status().unwrap();
        std::thread::sleep(Duration::from_millis(500));
    };
    write_config(dir.path(), &format!("upstream = \"{}\"\n[[block]]\nname = \"evil\"\n", up.simple_url()));
    hup();
    assert!(larder.log().contains("block list not reloaded"), "{}", larder.log());
    assert_eq!(http().get(&url).send().unwrap().status(), 403);
    // Unblocking 2.1 and blocking 2.0 instead takes effect without a restart.
    write_config(
        dir.path(),
        &format!(
            "upstream = \"{}\"\n[[block]]\nname = \"lib-core\"\nversion = \"<2.1\"\nreason = \"too old\"\n",
            up.simple_url()
        ),
    );
    hup();
    assert!(larder.log().contains("block list reloaded"), "{}", larder.log());
    assert_eq!(http().get(&url).send().unwrap().status(), 200);
    assert_eq!(filenames(&json_page(&larder.url("/simple/lib-core/"))), ["lib_core-2.1-py3-none-any.whl"]);
    assert_eq!(http().get(larder.url("/simple/evil/")).send().unwrap().status(), 200);
    let out = uv_compile(scratch.path(), &larder.index(), "app");
    assert_ok(&out, "uv pip compile after the reload");
    assert!(String::from_utf8_lossy(&out.stdout).contains("lib-core==2.1"));
}

#[test]
fn provenance_and_project_status_are_passed_through() {
    let up = MockUpstream::start();
    let (name, bytes) = wheel("signed", "1.0", &[]);
    let sha = sha256_hex(&bytes);
    let provenance = br#"{"version":1,"attestation_bundles":[{"publisher":{"kind":"GitHub","repository":"o/r"},"attestations":[]}]}"#.to_vec();
    up.add("signed", MockFile { provenance: Some(provenance.clone()), ..MockFile::new(&name, bytes) });
    add_wheel(&up, "old-lib", "1.0", &[], None);
    add_wheel(&up, "bad-lib", "1.0", &[], None);
    {
        let mut st = up.state.lock().unwrap();
        st.status.insert("old-lib".into(), ("deprecated".into(), Some("use new-lib".into())));
        st.status.insert("bad-lib".into(), ("quarantined".into(), None));
    }
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "[projects.legacy]\nstatus = \"archived\"\nstatus_reason = \"moved to team\"\n[projects.old]\nstatus = \"deprecated\"\n",
    );
    let larder = Larder::start_with_env(
        dir.path(),
        &["--config", &config, "--upstream", &up.simple_url()],
        &[("LARDER_TOKEN", TOKEN)],
    );

    // PEP 740: an absolute URL on Larder (PROV-02), api-version 1.3 (PROV-04), in both formats.
    let page = json_page(&larder.url("/simple/signed/"));
    assert_eq!(page["meta"]["api-version"], "1.3");
    let expected = larder.url(&format!("/files/{sha}/{name}.provenance"));
    assert_eq!(page["files"][0]["provenance"], serde_json::json!(expected));
    let scoped = json_page(&larder.url("/api/v4/projects/default/packages/pypi/simple/signed/"));
    let scoped_url = larder.url(&format!("/api/v4/projects/default/packages/pypi/files/{sha}/{name}.provenance"));
    assert_eq!(scoped["files"][0]["provenance"], serde_json::json!(scoped_url), "the route the client used");
    let html = http().get(larder.url("/simple/signed/")).header("accept", "text/html").send().unwrap().text().unwrap();
    assert!(html.contains(&format!("data-provenance=\"{expected}\"")), "{html}");
    for _ in 0..2 {
        let resp = http().get(&expected).send().unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "application/vnd.pypi.integrity.v1+json");
        assert!(resp.headers()["cache-control"].to_str().unwrap().starts_with("max-age=600"), "mutable (PROV-03)");
        assert_eq!(sha256_hex(&resp.bytes().unwrap()), sha256_hex(&provenance), "byte for byte");
    }
    assert_eq!(up.count("/provenance"), 1, "fetched once, then served from the store");
    // The wheel itself still matches its hash (PROV-01).
    let whl = http().get(larder.url(&format!("/files/{sha}/{name}"))).send().unwrap().bytes().unwrap();
    assert_eq!(sha256_hex(&whl), sha);

    // PEP 792: status and reason passed through (JSON-09, HTML-10); quarantined: no files.
    let page = json_page(&larder.url("/simple/old-lib/"));
    assert_eq!(page["meta"]["api-version"], "1.4");
    assert_eq!(page["project-status"], serde_json::json!({"status": "deprecated", "reason": "use new-lib"}));
    let html = http().get(larder.url("/simple/old-lib/")).header("accept", "text/html").send().unwrap().text().unwrap();
    assert!(html.contains(r#"<meta name="pypi:project-status" content="deprecated">"#), "{html}");
    let page = json_page(&larder.url("/simple/bad-lib/"));
    assert_eq!(page["project-status"]["status"], "quarantined");
    assert!(filenames(&page).is_empty(), "a quarantined project offers no files (YK-04)");

    // An archived private project refuses uploads (YK-04), with the reason.
    let scratch = tempfile::tempdir().unwrap();
    let (wname, wbytes) = wheel("legacy-tool", "0.1", &[]);
    let path = scratch.path().join(&wname);
    std::fs::write(&path, &wbytes).unwrap();
    let upload = larder.url("/api/v4/projects/legacy/packages/pypi");
    let out =
        twine(scratch.path(), &["upload", "--repository-url", &upload, "-u", "x", "-p", TOKEN, path.to_str().unwrap()]);
    assert!(!out.status.success());
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(said.contains("403"), "{said}");
    let (ct, body) = multipart(&[("name", "legacy-tool"), ("version", "0.1")], Some((&wname, &wbytes)));
    let resp = http().post(&upload).basic_auth("x", Some(TOKEN)).header("content-type", ct).body(body).send().unwrap();
    assert_eq!(resp.status(), 403);
    assert!(resp.text().unwrap().contains("archived and takes no uploads: moved to team"));

    // A deprecated private project takes uploads, and its pages say it is deprecated.
    let (oname, obytes) = wheel("old-tool", "0.1", &[]);
    let (ct, body) = multipart(&[("name", "old-tool"), ("version", "0.1")], Some((&oname, &obytes)));
    let old = larder.url("/api/v4/projects/old/packages/pypi");
    let resp = http().post(&old).basic_auth("x", Some(TOKEN)).header("content-type", ct).body(body).send().unwrap();
    assert_eq!(resp.status(), 200);
    let page = json_page(&format!("{old}/simple/old-tool/"));
    assert_eq!(page["project-status"]["status"], "deprecated");
    assert_eq!(page["meta"]["api-version"], "1.4");
}

#[test]
fn pages_and_files_answer_if_modified_since() {
    let up = MockUpstream::start();
    let uploaded = "2026-03-04T05:06:07Z";
    let sha = add_wheel(&up, "dated", "1.0", &[], Some(uploaded.into()));
    let dir = tempfile::tempdir().unwrap();
    let larder = Larder::start(dir.path(), &["--upstream", &up.simple_url()]);
    let page_url = larder.url("/simple/dated/");
    let resp = http().get(&page_url).header("accept", JSON).send().unwrap();
    let last_modified = resp.headers()["last-modified"].to_str().unwrap().to_string();
    let since = |url: &str, date: &str| {
        http().get(url).header("accept", JSON).header("if-modified-since", date).send().unwrap().status()
    };
    assert_eq!(since(&page_url, &last_modified), 304, "HDR-1");
    assert_eq!(since(&page_url, "Mon, 01 Jan 2024 00:00:00 GMT"), 200);

    let file_url = larder.url(&format!("/files/{sha}/dated-1.0-py3-none-any.whl"));
    let resp = http().get(&file_url).send().unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["last-modified"], "Wed, 04 Mar 2026 05:06:07 GMT", "the upload time (HDR-2)");
    assert_eq!(since(&file_url, "Wed, 04 Mar 2026 05:06:07 GMT"), 304);
    assert_eq!(since(&file_url, "Tue, 03 Mar 2026 00:00:00 GMT"), 200);
    // An ETag that does not match wins over a date that would (RFC 9110 §13.2.2).
    let resp = http()
        .get(&file_url)
        .header("if-none-match", "\"other\"")
        .header("if-modified-since", "Wed, 04 Mar 2026 05:06:07 GMT")
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[test]
fn a_release_comes_out_of_its_cooldown_on_time_with_a_new_etag() {
    let up = MockUpstream::start();
    add_wheel(&up, "timed", "1.0", &[], Some(ago(30 * 86_400)));
    let fresh = add_wheel(&up, "timed", "2.0", &[], Some(ago(6 * 86_400)));
    let dir = tempfile::tempdir().unwrap();
    let settings = larder::cli::Settings {
        data_dir: Some(dir.path().to_path_buf()),
        upstream: Some(up.simple_url().parse().unwrap()),
        min_release_age: Some(Duration::from_secs(7 * 86_400)),
        index_ttl: Some(Duration::from_secs(30 * 86_400)), // the page itself stays fresh throughout
        metadata_prefetch: Some(false),
        ..Default::default()
    };
    let larder = crate::util::inprocess::InProcess::start(settings, None);
    let get = || http().get(larder.url("/simple/timed/")).header("accept", JSON).send().unwrap();
    let file_url = larder.url(&format!("/files/{fresh}/timed-2.0-py3-none-any.whl"));

    let before = get();
    let (etag, modified) = (before.headers()["etag"].clone(), before.headers()["last-modified"].clone());
    let page: serde_json::Value = before.json().unwrap();
    assert_eq!(filenames(&page), ["timed-1.0-py3-none-any.whl"]);
    assert_eq!(http().get(&file_url).send().unwrap().status(), 404);

    // A day later 2.0 is seven days old: on the page, with a new ETag and a later
    // Last-Modified, so that clients holding the old page see the change (HDR-1).
    larder.clock.advance(Duration::from_secs(86_400 + 60));
    let after = get();
    assert_ne!(after.headers()["etag"], etag);
    let parse = |v: &reqwest::header::HeaderValue| httpdate::parse_http_date(v.to_str().unwrap()).unwrap();
    assert!(parse(&after.headers()["last-modified"]) > parse(&modified));
    let page: serde_json::Value = after.json().unwrap();
    assert_eq!(filenames(&page), ["timed-1.0-py3-none-any.whl", "timed-2.0-py3-none-any.whl"]);
    assert_eq!(http().get(&file_url).send().unwrap().status(), 200);
    let conditional = http().get(larder.url("/simple/timed/")).header("accept", JSON).header("if-none-match", etag);
    assert_eq!(conditional.send().unwrap().status(), 200, "the old ETag no longer matches");
    assert_eq!(up.count("/simple/timed/"), 1, "all of it from the one page fetched");
}

/// Issue 22, item 3 (DC-4): with only `[[upstreams]]` and no default upstream, an upload must
/// still not claim a name an upstream owns; the router is asked, not the default upstream.
/// Red before: the check looked at `upstream` alone and twine's upload of `corp-tools` got 200.
#[test]
fn uploads_cannot_shadow_a_routed_upstream_without_a_default_one() {
    let vendor = MockUpstream::start();
    add_wheel(&vendor, "corp-tools", "1.0", &[], None);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!("[[upstreams]]\nname = \"vendor\"\nurl = \"{}\"\nprojects = [\"corp-*\"]\n", vendor.simple_url()),
    );
    let larder = Larder::start_with_env(dir.path(), &["--config", &config], &[("LARDER_TOKEN", TOKEN)]);
    let scratch = tempfile::tempdir().unwrap();
    let upload_url = larder.url("/api/v4/projects/team/packages/pypi");
    let upload = |name: &str| {
        let (filename, bytes) = wheel(name, "9.9", &[]);
        let path = scratch.path().join(&filename);
        std::fs::write(&path, bytes).unwrap();
        twine(
            scratch.path(),
            &["upload", "--repository-url", &upload_url, "-u", "__token__", "-p", TOKEN, path.to_str().unwrap()],
        )
    };
    let out = upload("corp-tools");
    assert!(!out.status.success(), "a routed upstream's name is not claimed by an upload");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(said.contains("403"), "{said}");
    // A name no upstream owns is free to claim.
    assert_ok(&upload("corp-free-but-unlisted-elsewhere"), "an upload of a name the vendor lacks");
    assert_ok(&upload("mine"), "an upload of a name no upstream owns");
}

/// Issue 22, item 11: a cooldown is not switched off by an upstream without upload times (an
/// HTML index) nor by one writing RFC 3339 offsets. Red before: the default was "show", and
/// `+00:00` did not parse, so both files counted as old enough.
#[test]
fn a_cooldown_holds_back_files_without_a_readable_upload_time() {
    let json = MockUpstream::start();
    add_wheel(&json, "offset-lib", "1.0", &[], Some(ago(30 * 86_400).replace('Z', "+00:00")));
    add_wheel(&json, "offset-lib", "2.0", &[], Some(ago(3600).replace('Z', "+00:00")));
    let html = MockUpstream::start();
    html.state.lock().unwrap().html_only = true;
    add_wheel(&html, "timeless", "1.0", &[], None);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "min_release_age = \"7d\"\n[[upstreams]]\nname = \"html\"\nurl = \"{}\"\nprojects = [\"timeless\"]\n",
            html.simple_url()
        ),
    );
    let larder = Larder::start(dir.path(), &["--config", &config, "--upstream", &json.simple_url()]);
    let scratch = tempfile::tempdir().unwrap();
    let out = uv_compile(scratch.path(), &larder.index(), "offset-lib");
    assert_ok(&out, "uv pip compile offset-lib");
    let lines = String::from_utf8_lossy(&out.stdout);
    assert!(lines.contains("offset-lib==1.0"), "the fresh 2.0 (+00:00) is held back: {lines}");
    assert!(filenames(&json_page(&larder.url("/simple/timeless/"))).is_empty(), "no upload time: hidden");
    assert!(!uv_compile(scratch.path(), &larder.index(), "timeless").status.success(), "uv cannot install it");
    assert!(pip_resolve(scratch.path(), &larder.index(), "timeless").is_err(), "nor pip");
}
