//! Publishing for a platform team (issue 23): the audit log of every write, trusted
//! publishing from CI without long-lived tokens, retention and webhooks, each driven by the
//! real twine, uv and larder CLI.

use std::path::Path;

use crate::util::upstream::MockUpstream;
use crate::util::{Larder, assert_ok, http, larder_cli, twine, wheel};

const WRITE: &str = "ci-write-secret-1";
const READ: &str = "reader-secret-22";
const METRICS: &str = "metrics-secret-333";

fn upload_url(larder: &Larder, project: &str) -> String {
    larder.url(&format!("/api/v4/projects/{project}/packages/pypi"))
}

fn write_file(dir: &Path, (name, bytes): &(String, Vec<u8>)) -> String {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path.to_string_lossy().into_owned()
}

/// The audit log's lines, parsed.
fn audit_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {l}")))
        .collect()
}

fn twine_upload(scratch: &Path, url: &str, password: &str, file: &str) -> std::process::Output {
    twine(scratch, &["upload", "--repository-url", url, "-u", "__token__", "-p", password, file])
}

/// Issue 23 part 3: uploads (accepted, refused for a reason, refused for the token), yank,
/// un-yank, delete, a block-list reload that worked and one that did not: each is one JSON
/// line with who, from where, the result and the reason; no secret anywhere in the log; the
/// pages for people show it to the holder of the metrics token only.
#[test]
fn every_write_is_one_audit_line_with_who_and_why_and_never_a_secret() {
    let up = MockUpstream::start();
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("log/audit.jsonl");
    let config = dir.path().join("larder.toml");
    let write_config = |block: &str| {
        std::fs::write(
            &config,
            format!(
                r#"
audit_log = "{audit}"
metrics_token = "{METRICS}"
[[tokens]]
name = "ci"
secret = "{WRITE}"
scopes = ["write"]
projects = ["team"]
[[tokens]]
name = "reader"
secret = "{READ}"
scopes = ["read"]
{block}
"#,
                audit = audit.display()
            ),
        )
        .unwrap()
    };
    write_config("");
    let larder = Larder::start(
        &dir.path().join("data"),
        &["--upstream", &up.simple_url(), "--config", config.to_str().unwrap()],
    );
    let scratch = tempfile::tempdir().unwrap();
    let url = upload_url(&larder, "team");
    let whl = wheel("corp-audited", "1.0", &[]);
    let path = write_file(scratch.path(), &whl);
    let sha = crate::util::sha256_hex(&whl.1);
    assert_ok(&twine_upload(scratch.path(), &url, WRITE, &path), "twine upload");
    // The same filename with other bytes: refused for a reason (UPL-08).
    let other = scratch.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    let changed = (whl.0.clone(), wheel("corp-audited", "1.0", &["idna"]).1);
    let changed_path = write_file(&other, &changed);
    assert!(!twine_upload(scratch.path(), &url, WRITE, &changed_path).status.success());
    // A read token, and no token at all.
    assert!(!twine_upload(scratch.path(), &url, READ, &path).status.success());
    let resp = http().post(&url).send().unwrap();
    assert_eq!(resp.status(), 401);
    // Yank, un-yank, delete through the CLI.
    let env = [("LARDER_TOKEN", WRITE)];
    let manage = |op: &str, extra: &[&str]| {
        let mut args = vec![op, "--server", &larder.base, "--project", "team"];
        args.extend_from_slice(extra);
        args.push(&whl.0);
        assert_ok(&larder_cli(&args, &env), op);
    };
    manage("yank", &["--reason", "broken build"]);
    manage("unyank", &[]);
    manage("delete", &[]);
    // SIGHUP: a list that parses, then one that does not.
    let hup = || {
        std::process::Command::new("kill").args(["-HUP", &larder.pid().to_string()]).status().unwrap();
    };
    write_config("[[block]]\nname = \"evil-pkg\"\nreason = \"malware\"\n");
    hup();
    crate::util::wait_until(std::time::Duration::from_secs(10), || audit_lines(&audit).len() >= 8);
    write_config("[[block]]\nname = \"\"\nreason = \"x\"\n");
    hup();
    crate::util::wait_until(std::time::Duration::from_secs(10), || audit_lines(&audit).len() >= 9);

    let lines = audit_lines(&audit);
    let summary: Vec<(String, String, String)> = lines
        .iter()
        .map(|l| {
            let who = l["who"]["name"].as_str().or(l["who"]["via"].as_str()).unwrap_or("-");
            (l["action"].as_str().unwrap().into(), who.into(), l["result"].as_str().unwrap().into())
        })
        .collect();
    let expected: Vec<(&str, &str, &str)> = vec![
        ("upload", "ci", "ok"),
        ("upload", "ci", "refused"),
        ("upload", "reader", "refused"),
        ("upload", "-", "refused"),
        ("yank", "ci", "ok"),
        ("unyank", "ci", "ok"),
        ("delete", "ci", "ok"),
        ("block_list_reload", "SIGHUP", "ok"),
        ("block_list_reload", "SIGHUP", "refused"),
    ];
    let expected: Vec<(String, String, String)> =
        expected.into_iter().map(|(a, b, c)| (a.into(), b.into(), c.into())).collect();
    assert_eq!(summary, expected, "{lines:#?}");
    let first = &lines[0];
    assert_eq!(first["project"], "team");
    assert_eq!(first["filename"], whl.0.as_str());
    assert_eq!(first["sha256"], sha.as_str());
    assert_eq!(first["peer"], "127.0.0.1");
    assert!(first["time"].as_str().unwrap().ends_with('Z'));
    assert!(lines[1]["reason"].as_str().unwrap().contains("already exists"), "{}", lines[1]);
    assert!(lines[2]["reason"].as_str().unwrap().contains("no write access"), "{}", lines[2]);
    assert_eq!(lines[3]["who"]["kind"], "anonymous");
    assert_eq!(lines[4]["sha256"], sha.as_str());
    assert_eq!(lines[8]["reason"].as_str().map(|r| !r.is_empty()), Some(true));
    let raw = std::fs::read_to_string(&audit).unwrap();
    for secret in [WRITE, READ, METRICS] {
        assert!(!raw.contains(secret), "a secret in the audit log");
    }

    // The pages for people: the metrics token's holder only.
    let page = larder.url("/-/ui/audit");
    assert_eq!(http().get(&page).send().unwrap().status(), 401);
    assert_eq!(http().get(&page).bearer_auth(WRITE).send().unwrap().status(), 401);
    let resp = http().get(&page).bearer_auth(METRICS).send().unwrap();
    assert_eq!(resp.status(), 200);
    let html = resp.text().unwrap();
    assert!(html.contains(&whl.0) && html.contains("block_list_reload") && html.contains("token ci"), "{html}");
    assert!(html.find("block_list_reload").unwrap() < html.find("upload").unwrap(), "newest first");
}
