//! Private packages with the real twine, uv publish, pip and uv: uploads, masking of the
//! upstream (DC-1 … DC-4), duplicates (UPL-08), bad uploads, tokens, yank and delete, restart.

use std::path::Path;

use crate::util::upstream::{MockFile, MockUpstream};
use crate::util::{
    Larder, assert_ok, hashes_in, http, json_page, larder_cli, multipart, pip, pip_download, sdist,
    sdist_with_metadata_version, sha256_hex, twine, twine_6_1, uv, uv_install, wheel,
};

const TOKEN: &str = "sidecar-token-123";
const READ_TOKEN: &str = "read-only-token-456";

fn project_url(larder: &Larder, project: &str) -> String {
    larder.url(&format!("/api/v4/projects/{project}/packages/pypi"))
}

fn index_url(larder: &Larder, project: &str) -> String {
    format!("{}/simple/", project_url(larder, project))
}

fn write_config(dir: &Path) -> String {
    let path = dir.join("larder.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[[tokens]]
name = "reader"
secret = "{READ_TOKEN}"
scopes = ["read"]

[projects.secret]
private = true

[groups.platform]
projects = ["team"]
"#
        ),
    )
    .unwrap();
    path.to_string_lossy().into_owned()
}

fn start(up: &MockUpstream, dir: &Path, extra: &[&str]) -> Larder {
    let config = write_config(dir);
    let mut args = vec!["--upstream", up.simple_url().leak(), "--config", config.leak()];
    args.extend_from_slice(extra);
    Larder::start_with_env(&dir.join("data"), &args, &[("LARDER_TOKEN", TOKEN)])
}

/// One HTTP/1.1 request over a plain socket, with the token; the whole answer as text (status
/// line with its reason phrase included, which no HTTP client library exposes).
fn raw_http(larder: &Larder, method: &str, path: &str, content_type: &str, body: &[u8]) -> String {
    use base64::Engine;
    use std::io::{Read, Write};
    let addr = larder.base.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("x:{TOKEN}"));
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Basic {auth}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

fn write(dir: &Path, (name, bytes): &(String, Vec<u8>)) -> String {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path.to_string_lossy().into_owned()
}

#[test]
fn twine_and_uv_publish_then_pip_and_uv_install() {
    let up = MockUpstream::start();
    let dir = tempfile::tempdir().unwrap();
    let larder = start(&up, dir.path(), &[]);
    let scratch = tempfile::tempdir().unwrap();
    let dists = scratch.path().join("dists");
    std::fs::create_dir_all(&dists).unwrap();

    let whl = wheel("corp-utils", "1.0", &[]);
    let sd = sdist("corp-utils", "1.0");
    let app = wheel("corp-app", "2.0", &["corp-utils>=1"]);
    let (whl_path, sd_path, app_path) = (write(&dists, &whl), write(&dists, &sd), write(&dists, &app));
    let upload_url = project_url(&larder, "team");
    let out = twine(
        scratch.path(),
        &["upload", "--repository-url", &upload_url, "-u", "__token__", "-p", TOKEN, &whl_path, &sd_path],
    );
    assert_ok(&out, "twine upload");
    let out = uv(scratch.path(), &["publish", "--publish-url", &upload_url, "--token", TOKEN, &app_path]);
    assert_ok(&out, "uv publish");
    // The first upload of a name asked the upstream whether it exists (DC-4); from now on the
    // names are claimed and the upstream never hears of them again.
    up.clear_requests();

    // Visible at once (UP-06), with metadata for the wheel only (MD-05).
    let page: serde_json::Value = json_page(&format!("{}corp-utils/", index_url(&larder, "team")), None);
    assert_eq!(page["meta"]["api-version"], "1.1");
    let files = page["files"].as_array().unwrap();
    assert_eq!(files.len(), 2);
    let wheel_entry = files.iter().find(|f| f["filename"] == whl.0.as_str()).unwrap();
    assert_eq!(wheel_entry["hashes"]["sha256"], sha256_hex(&whl.1));
    assert!(wheel_entry["core-metadata"]["sha256"].is_string());
    assert!(wheel_entry["upload-time"].is_string());
    assert!(files.iter().find(|f| f["filename"] == sd.0.as_str()).unwrap().get("core-metadata").is_none());

    // pip and uv install through the project's index; the hashes are the uploaded ones.
    let index = index_url(&larder, "team");
    let dl = scratch.path().join("dl");
    assert_ok(&pip_download(scratch.path(), &index, &dl, "corp-app"), "pip download");
    let got = hashes_in(&dl);
    assert_eq!(got[&app.0], sha256_hex(&app.1));
    assert_eq!(got[&whl.0], sha256_hex(&whl.1));
    let target = scratch.path().join("t");
    let out = uv_install(scratch.path(), &index, &target, "corp-app");
    assert_ok(&out, "uv pip install");
    assert!(target.join("corp_utils").join("__init__.py").is_file());
    // The sdist builds and installs with pip.
    let sd_target = scratch.path().join("sd");
    let out = pip(
        scratch.path(),
        &[
            "install",
            "--no-build-isolation",
            "--no-binary",
            ":all:",
            "--index-url",
            &index,
            "--target",
            sd_target.to_str().unwrap(),
            "corp-utils==1.0",
        ],
    );
    assert_ok(&out, "pip install of the private sdist");
    assert!(sd_target.join("corp_utils").join("__init__.py").is_file());
    assert_eq!(up.count("/simple/corp-"), 0, "private names never reach the upstream: {:?}", up.requests());

    // The project list and the group view include the private names.
    let root = http().get(index_url(&larder, "team")).send().unwrap().text().unwrap();
    assert!(root.contains("corp-app/") && root.contains("corp-utils/"), "{root}");
    let group = http().get(larder.url("/api/v4/groups/platform/-/packages/pypi/simple/corp-utils/")).send().unwrap();
    assert_eq!(group.status(), 200);
    assert!(group.text().unwrap().contains(&whl.0));
    // Groups are read-only: no delete through them, even with a write token.
    let group_file = format!("/api/v4/groups/platform/-/packages/pypi/files/{}/{}", sha256_hex(&whl.1), whl.0);
    let resp = http().delete(larder.url(&group_file)).basic_auth("x", Some(TOKEN)).send().unwrap();
    assert_eq!(resp.status(), 404);
    assert!(resp.text().unwrap().contains("groups are read-only"));
    // Tokens are never logged.
    assert!(!larder.log().contains(TOKEN), "a token leaked into the log");

    // Restart: everything is still there.
    let larder = larder.restart();
    let dl2 = scratch.path().join("dl2");
    let index = index_url(&larder, "team");
    assert_ok(&pip_download(scratch.path(), &index, &dl2, "corp-app"), "after restart");
    assert_eq!(hashes_in(&dl2), got);
}

#[test]
fn dc_private_name_masks_the_upstream_completely() {
    let up = MockUpstream::start();
    for v in ["1.0", "2.0"] {
        let (name, bytes) = wheel("shadowed", v, &[]);
        up.add("shadowed", MockFile::new(&name, bytes));
    }
    let public = wheel("shadowed", "2.0", &[]);
    let dir = tempfile::tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();

    // DC-4: by default the upload is refused, with a reason.
    let larder = start(&up, dir.path(), &[]);
    let private = wheel("shadowed", "0.5", &[]);
    let path = write(scratch.path(), &private);
    let out = twine(
        scratch.path(),
        &["upload", "--repository-url", &project_url(&larder, "team"), "-u", "x", "-p", TOKEN, &path],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("403") || String::from_utf8_lossy(&out.stdout).contains("403")
    );
    drop(larder);

    // Allowed by the operator: the private upload hides every upstream version.
    let larder = start(&up, dir.path(), &["--allow-shadowing", "shadowed"]);
    let out = twine(
        scratch.path(),
        &["upload", "--repository-url", &project_url(&larder, "team"), "-u", "x", "-p", TOKEN, &path],
    );
    assert_ok(&out, "twine upload (shadowing allowed)");
    up.clear_requests();
    let index = index_url(&larder, "team");
    let dl = scratch.path().join("dl");
    let out = pip_download(scratch.path(), &index, &dl, "shadowed==2.0");
    assert!(!out.status.success(), "pip must not find the upstream-only version");
    assert_ok(&pip_download(scratch.path(), &index, &dl, "shadowed"), "pip download");
    assert_eq!(hashes_in(&dl).keys().collect::<Vec<_>>(), vec![&private.0]);
    // DC-2: the upstream file is not reachable through the project either, even by URL.
    let url = format!("{}/files/{}/{}", project_url(&larder, "team"), sha256_hex(&public.1), public.0);
    assert_eq!(http().get(&url).send().unwrap().status(), 404);
    // DC-3: any spelling of the name.
    let page = http().get(format!("{index}Shadowed/")).send().unwrap();
    assert_eq!(page.status(), 301);
    assert_eq!(up.count("shadowed"), 0, "{:?}", up.requests());
    // Masking is per project: another project still pulls through.
    let other = http().get(format!("{}shadowed/", index_url(&larder, "other"))).send().unwrap().text().unwrap();
    assert!(other.contains("shadowed-2.0-py3-none-any.whl"));

    // DC-1: after deleting the last file the name stays private (tombstone).
    let out =
        larder_cli(&["delete", "--server", &larder.base, "--project", "team", &private.0], &[("LARDER_TOKEN", TOKEN)]);
    assert_ok(&out, "larder delete");
    up.clear_requests();
    let page: serde_json::Value = json_page(&format!("{index}shadowed/"), None);
    assert_eq!(page["files"], serde_json::json!([]));
    assert_eq!(up.count("shadowed"), 0);
    // The deleted file's bytes are gone too.
    let url = format!("{}/files/{}/{}", project_url(&larder, "team"), sha256_hex(&private.1), private.0);
    assert_eq!(http().get(&url).send().unwrap().status(), 404);
}

#[test]
fn upl_08_duplicates_with_and_without_skip_existing() {
    let up = MockUpstream::start();
    let dir = tempfile::tempdir().unwrap();
    let larder = start(&up, dir.path(), &[]);
    let scratch = tempfile::tempdir().unwrap();
    let url = project_url(&larder, "team");
    let first = wheel("dup-pkg", "1.0", &[]);
    let path = write(scratch.path(), &first);
    assert_ok(
        &twine(scratch.path(), &["upload", "--repository-url", &url, "-u", "x", "-p", TOKEN, &path]),
        "first upload",
    );
    // The identical file again: 200 (CI retries).
    assert_ok(
        &twine(scratch.path(), &["upload", "--repository-url", &url, "-u", "x", "-p", TOKEN, &path]),
        "identical re-upload",
    );

    // Different bytes under the same filename.
    let other_dir = scratch.path().join("other");
    std::fs::create_dir_all(&other_dir).unwrap();
    let different = wheel("dup-pkg", "1.0", &["something-else"]);
    assert_eq!(different.0, first.0);
    let other_path = write(&other_dir, &different);
    let out = twine(scratch.path(), &["upload", "--repository-url", &url, "-u", "x", "-p", TOKEN, &other_path]);
    assert!(!out.status.success());
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("File already exists"), "{text}");
    // twine 7 refuses --skip-existing for non-PyPI URLs; twine 6.1 (like poetry and pdm) sends it.
    let out = twine_6_1(
        scratch.path(),
        &["upload", "--skip-existing", "--repository-url", &url, "-u", "x", "-p", TOKEN, &other_path],
    );
    assert_ok(&out, "twine 6.1 --skip-existing");
    assert!(String::from_utf8_lossy(&out.stdout).contains("Skipping"), "twine recognised the duplicate");
    // uv's equivalent: --check-url compares the hash on the index page (UPL-08).
    let index = index_url(&larder, "team");
    let out = uv(scratch.path(), &["publish", "--publish-url", &url, "--check-url", &index, "--token", TOKEN, &path]);
    assert_ok(&out, "uv publish --check-url of the identical file");

    // The reason phrase itself, as sent on the wire, for clients that read it (UPL-08). (An
    // earlier version checked `canonical_reason()`, which is computed from the status code.)
    let (ct, body) = multipart(&[("name", "dup-pkg"), ("version", "1.0")], Some((&different.0, &different.1)));
    let answer = raw_http(&larder, "POST", "/api/v4/projects/team/packages/pypi", &ct, &body);
    assert!(answer.starts_with("HTTP/1.1 400 File already exists\r\n"), "{answer}");
    assert!(answer.contains("\r\n\r\nFile already exists"), "and in the body: {answer}");
    // The stored file is still the first one.
    let got = http().get(format!("{url}/files/{}/{}", sha256_hex(&first.1), first.0)).send().unwrap().bytes().unwrap();
    assert_eq!(sha256_hex(&got), sha256_hex(&first.1));
}

#[test]
fn bad_uploads_get_a_clear_4xx_and_change_nothing() {
    let up = MockUpstream::start();
    let (pub_name, pub_bytes) = wheel("public-pkg", "1.0", &[]);
    up.add("public-pkg", MockFile::new(&pub_name, pub_bytes));
    let dir = tempfile::tempdir().unwrap();
    let larder = start(&up, dir.path(), &["--max-upload-mib", "1"]);
    let url = project_url(&larder, "team");
    let good = wheel("good-pkg", "1.0", &[]);
    let sha = sha256_hex(&good.1);
    let post = |fields: &[(&str, &str)], file: Option<(&str, &[u8])>, token: Option<&str>| {
        let (ct, body) = multipart(fields, file);
        let mut req = http().post(&url).header("content-type", ct).body(body);
        if let Some(t) = token {
            req = req.basic_auth("__token__", Some(t));
        }
        let resp = req.send().unwrap();
        let status = resp.status().as_u16();
        let auth = resp.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_string());
        (status, resp.text().unwrap(), auth)
    };
    let base = [("name", "good-pkg"), ("version", "1.0"), (":action", "file_upload"), ("protocol_version", "1")];
    let file = Some((good.0.as_str(), good.1.as_slice()));

    let (status, _, auth) = post(&base, file, None);
    assert_eq!(status, 401, "no token");
    assert_eq!(auth.as_deref(), Some("Basic realm=\"Larder\""));
    assert_eq!(post(&base, file, Some("wrong-token-000")).0, 401, "unknown token");
    let (status, text, _) = post(&base, file, Some(READ_TOKEN));
    assert_eq!(status, 403, "read-only token: {text}");

    let zeros = "0".repeat(64);
    let public_copy = wheel("public-pkg", "1.0", &[]).1;
    /// Form fields, file part, expected status, expected reason.
    type Case<'a> = (Vec<(&'a str, &'a str)>, Option<(&'a str, &'a [u8])>, u16, &'a str);
    let cases: Vec<Case> = vec![
        ([&base[..], &[("sha256_digest", zeros.as_str())]].concat(), file, 400, "does not match"),
        ([&base[..], &[("sha256_digest", "xyz")]].concat(), file, 400, "Invalid value for sha256_digest"),
        (vec![("name", "other-pkg"), ("version", "1.0")], file, 400, "Start filename"),
        (vec![("name", "good-pkg"), ("version", "2.0")], file, 400, "Version in filename"),
        (vec![("name", "good pkg"), ("version", "1.0")], file, 400, "invalid value for Name"),
        (base.to_vec(), None, 400, "does not have a file"),
        (base.to_vec(), Some(("good_pkg-1.0-py3-none-any.whl", b"not a zip")), 400, "Invalid distribution file"),
        (base.to_vec(), Some(("good_pkg-1.0.exe", b"x")), 400, "Invalid file extension"),
        ([&base[..], &[("filetype", "bdist_egg")]].concat(), file, 400, "Use a known file type"),
        (
            vec![("name", "public-pkg"), ("version", "1.0")],
            Some((pub_name.as_str(), public_copy.as_slice())),
            403,
            "exists upstream",
        ),
    ];
    for (fields, file, want, reason) in &cases {
        let (status, text, _) = post(fields, *file, Some(TOKEN));
        assert_eq!(status, *want, "{fields:?}: {text}");
        assert!(text.contains(reason), "{fields:?}: {text}");
        assert_eq!(text.trim_end().lines().count(), 1, "one line: {text}");
    }
    // Malformed multipart.
    let resp = http()
        .post(&url)
        .basic_auth("x", Some(TOKEN))
        .header("content-type", "multipart/form-data; boundary=abc")
        .body("--abc\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\ngood")
        .send()
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert!(resp.text().unwrap().contains("multipart"));
    let resp = http()
        .post(&url)
        .basic_auth("x", Some(TOKEN))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .unwrap();
    assert_eq!(resp.status(), 400);
    // Oversized: 413, whether declared up front or streamed.
    let big = vec![7u8; 2 * 1024 * 1024];
    let (status, text, _) = post(&base, Some((good.0.as_str(), &big)), Some(TOKEN));
    assert_eq!(status, 413, "{text}");

    // Nothing of any of that is visible.
    assert_eq!(http().get(format!("{url}/simple/good-pkg/")).send().unwrap().status(), 404);
    assert_eq!(http().get(format!("{url}/files/{sha}/{}", good.0)).send().unwrap().status(), 404);
    let spool = larder.data_dir.join("spool");
    assert_eq!(std::fs::read_dir(&spool).map(|d| d.count()).unwrap_or(0), 0, "no spool files left");

    // And the good upload still works afterwards.
    let (status, text, _) = post(&[&base[..], &[("sha256_digest", sha.as_str())]].concat(), file, Some(TOKEN));
    assert_eq!(status, 200, "{text}");
}

#[test]
fn private_projects_need_a_read_token_and_yanks_show_in_both_formats() {
    let up = MockUpstream::start();
    let dir = tempfile::tempdir().unwrap();
    let larder = start(&up, dir.path(), &[]);
    let scratch = tempfile::tempdir().unwrap();
    let url = project_url(&larder, "secret");
    let pkg = wheel("hidden-pkg", "1.0", &[]);
    let path = write(scratch.path(), &pkg);
    assert_ok(&twine(scratch.path(), &["upload", "--repository-url", &url, "-u", "x", "-p", TOKEN, &path]), "upload");

    let page_url = format!("{url}/simple/hidden-pkg/");
    let resp = http().get(&page_url).send().unwrap();
    assert_eq!(resp.status(), 401, "never a silent fall-through to upstream");
    assert!(resp.headers().contains_key("www-authenticate"));
    assert_eq!(http().get(&page_url).basic_auth("x", Some(READ_TOKEN)).send().unwrap().status(), 200);
    assert_eq!(http().get(&page_url).bearer_auth(READ_TOKEN).send().unwrap().status(), 200, "Bearer works too");
    let file_url = format!("{url}/files/{}/{}", sha256_hex(&pkg.1), pkg.0);
    assert_eq!(http().get(&file_url).send().unwrap().status(), 401);
    // Another project cannot read it by hash either.
    let other = format!("{}/files/{}/{}", project_url(&larder, "team"), sha256_hex(&pkg.1), pkg.0);
    assert_eq!(http().get(&other).send().unwrap().status(), 404);
    // pip with credentials in the index URL.
    let index = index_url(&larder, "secret").replace("http://", &format!("http://x:{READ_TOKEN}@"));
    let dl = scratch.path().join("dl");
    assert_ok(&pip_download(scratch.path(), &index, &dl, "hidden-pkg"), "pip with a read token");

    // Yank with a reason, through the CLI.
    let env = [("LARDER_TOKEN", TOKEN)];
    let out = larder_cli(
        &["yank", "--server", &larder.base, "--project", "secret", "--reason", "broken & bad", &pkg.0],
        &env,
    );
    assert_ok(&out, "larder yank");
    let json: serde_json::Value = json_page(&page_url, Some(READ_TOKEN));
    assert_eq!(json["files"][0]["yanked"], "broken & bad");
    let html = http().get(&page_url).basic_auth("x", Some(READ_TOKEN)).send().unwrap().text().unwrap();
    assert!(html.contains(r#"data-yanked="broken &amp; bad""#), "{html}");
    assert_ok(&larder_cli(&["unyank", "--server", &larder.base, "--project", "secret", &pkg.0], &env), "larder unyank");
    let json: serde_json::Value = json_page(&page_url, Some(READ_TOKEN));
    assert_eq!(json["files"][0]["yanked"], false);
    // A yank without a token is refused.
    let resp = http().post(format!("{file_url}/yank")).send().unwrap();
    assert_eq!(resp.status(), 401);
}

#[test]
fn legacy_alias_static_sdist_metadata_and_dropped_uploads() {
    use std::io::Write;
    let up = MockUpstream::start();
    let dir = tempfile::tempdir().unwrap();
    let larder = start(&up, dir.path(), &[]);
    let scratch = tempfile::tempdir().unwrap();

    // The default project's short upload URL, as `twine upload --repository-url …/legacy/`.
    let sd = sdist_with_metadata_version("static-meta", "1.0", "2.4");
    let path = write(scratch.path(), &sd);
    assert_ok(
        &twine(scratch.path(), &["upload", "--repository-url", &larder.url("/legacy/"), "-u", "x", "-p", TOKEN, &path]),
        "upload to /legacy/",
    );
    let page: serde_json::Value = json_page(&larder.url("/simple/static-meta/"), None);
    let md_sha = page["files"][0]["core-metadata"]["sha256"].as_str().expect("MD-05: static sdist metadata is served");
    let md = http()
        .get(larder.url(&format!("/files/{}/{}.metadata", sha256_hex(&sd.1), sd.0)))
        .send()
        .unwrap()
        .bytes()
        .unwrap();
    assert_eq!(sha256_hex(&md), md_sha, "MD-04: the hash names the served bytes");

    // PUT, as GitLab's API page documents, works like POST.
    let put = wheel("put-pkg", "1.0", &[]);
    let (ct, body) = multipart(&[("name", "put-pkg"), ("version", "1.0")], Some((&put.0, &put.1)));
    let url = project_url(&larder, "team");
    let resp = http().put(&url).basic_auth("x", Some(TOKEN)).header("content-type", ct).body(body).send().unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(http().get(format!("{url}/simple/put-pkg/")).send().unwrap().status(), 200);

    // A connection dropped mid-upload leaves nothing behind.
    let whl = wheel("dropped-pkg", "1.0", &[]);
    let (ct, body) = multipart(&[("name", "dropped-pkg"), ("version", "1.0")], Some((&whl.0, &whl.1)));
    let addr = larder.base.trim_start_matches("http://");
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    let auth = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, format!("x:{TOKEN}"));
    write!(conn, "POST /legacy/ HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Basic {auth}\r\nContent-Type: {ct}\r\nContent-Length: {}\r\n\r\n", body.len()).unwrap();
    conn.write_all(&body[..body.len() - 200]).unwrap();
    drop(conn);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(http().get(larder.url("/simple/dropped-pkg/")).send().unwrap().status(), 404);
    let spool = larder.data_dir.join("spool");
    assert_eq!(std::fs::read_dir(&spool).map(|d| d.count()).unwrap_or(0), 0, "no spool files left");
}

/// Issue 23 part 2: PEP 740 attestations sent with an upload (the real `twine --attestations`)
/// are accepted and kept with the file as sent; a malformed `attestations` field is a 400
/// naming it, and stores nothing; none is served as provenance (Larder verifies none, PROV-05).
#[test]
fn attestations_are_accepted_kept_with_the_file_and_never_served_as_provenance() {
    let up = MockUpstream::start();
    let dir = tempfile::tempdir().unwrap();
    let larder = start(&up, dir.path(), &[]);
    let scratch = tempfile::tempdir().unwrap();
    let whl = wheel("corp-attested", "1.0", &[]);
    let path = write(scratch.path(), &whl);
    let attestation = serde_json::json!({"version": 1, "verification_material": {"certificate": "Zm9v"},
        "envelope": {"statement": "YmFy", "signature": "YmF6"}});
    let attestation_path = format!("{path}.publish.attestation");
    std::fs::write(&attestation_path, attestation.to_string()).unwrap();
    let upload_url = project_url(&larder, "team");
    let out = twine(
        scratch.path(),
        &[
            "upload",
            "--attestations",
            "--repository-url",
            &upload_url,
            "-u",
            "__token__",
            "-p",
            TOKEN,
            &path,
            &attestation_path,
        ],
    );
    assert_ok(&out, "twine upload --attestations");

    // Kept with the file, as sent.
    let store = larder::store::LocalStore::open(&dir.path().join("data").join("store")).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let record = rt.block_on(larder::store::Store::get_record(&store, "private/team/corp-attested")).unwrap().unwrap();
    let record: serde_json::Value = serde_json::from_slice(&record).unwrap();
    assert_eq!(record["files"][0]["attestations"], serde_json::json!([attestation]), "{record}");
    // Not served as provenance: the page has no provenance link for it.
    let page = json_page(&format!("{}corp-attested/", index_url(&larder, "team")), None);
    assert!(page["files"][0].get("provenance").is_none_or(|p| p.is_null()), "{page}");

    // Malformed: a 400 that names the field; nothing stored.
    let other = wheel("corp-attested", "1.1", &[]);
    let oversized = format!("[{{\"pad\": \"{}\"}}]", "x".repeat(65 * 1024));
    for (bad, why) in [
        ("{\"not\": \"a list\"}", "not a JSON array"),
        ("[1, 2]", "JSON object"),
        ("[{", "not JSON"),
        (oversized.as_str(), "more than 64 KiB"),
    ] {
        let (ct, body) = multipart(
            &[("name", "corp-attested"), ("version", "1.1"), ("attestations", bad)],
            Some((&other.0, &other.1)),
        );
        let resp = http()
            .post(&upload_url)
            .basic_auth("__token__", Some(TOKEN))
            .header("content-type", ct)
            .body(body)
            .send()
            .unwrap();
        assert_eq!(resp.status(), 400, "{why}");
        let text = resp.text().unwrap();
        assert!(text.contains("Invalid attestations supplied during upload") && text.contains(why), "{why}: {text}");
    }
    let page = json_page(&format!("{}corp-attested/", index_url(&larder, "team")), None);
    assert_eq!(page["files"].as_array().unwrap().len(), 1, "{page}");
}
