//! Crash consistency (issue 10): `kill -9` at 60 points in time during uploads, fills from
//! upstream, `larder import`, page writes, evictions, yanks and deletes. After each crash:
//! `larder verify` exits 0, every private file a page lists is served with its sha256, no spool
//! file is left once the server is back, and the same client retry succeeds.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::util::upstream::{MockFile, MockUpstream};
use crate::util::{Larder, assert_ok, http, larder_cli, multipart, sha256_hex, wheel};

const TOKEN: &str = "crash-token-1";
const KILL_POINTS: usize = 60;

fn upload(server: &Larder, name: &str, file: &(String, Vec<u8>)) -> Option<u16> {
    let (ct, body) = multipart(&[("name", name), ("version", "1.0")], Some((&file.0, &file.1)));
    let resp = http().post(server.url("/legacy/")).bearer_auth(TOKEN).header("content-type", ct).body(body).send();
    resp.ok().map(|r| r.status().as_u16())
}

/// The invariants after a crash, with the server stopped: the store verifies, then with it
/// running again: every private file listed is served intact and no spool file is left.
fn check(data: &Path, server: &Larder, private_names: &[String]) {
    let out = larder_cli(
        &["verify", "--data-dir", data.to_str().unwrap()],
        &[("LARDER_CONFIG", "/dev/null"), ("LARDER_LOG", "warn")],
    );
    assert_ok(&out, "larder verify after a crash");
    for name in private_names {
        let resp = http()
            .get(server.url(&format!("/simple/{name}/")))
            .header("accept", "application/vnd.pypi.simple.v1+json")
            .send()
            .unwrap();
        if resp.status() != 200 {
            continue; // never uploaded before the crash
        }
        let page: serde_json::Value = resp.json().unwrap();
        for f in page["files"].as_array().unwrap() {
            let sha = f["hashes"]["sha256"].as_str().unwrap();
            let url = server.url(&format!("/files/{sha}/{}", f["filename"].as_str().unwrap()));
            let body = http().get(url).send().unwrap().bytes().unwrap();
            assert_eq!(sha256_hex(&body), sha, "{name}: a listed file is not served intact");
        }
    }
    let spool: Vec<_> = std::fs::read_dir(data.join("spool"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".part"))
        .collect();
    assert!(spool.is_empty(), "spool leftovers after restart: {spool:?}");
}

#[test]
fn kill_9_at_sixty_points_leaves_nothing_half_visible() {
    let up = MockUpstream::start();
    let mut upstream_files = Vec::new();
    for i in 0..12 {
        let bytes: Vec<u8> = (0..(1 + i % 3) * 1024 * 1024 + i * 977).map(|j| ((j * 13 + i) % 251) as u8).collect();
        let name = format!("crashy-{i}.0.tar.gz");
        up.add("crashy", MockFile::new(&name, bytes.clone()));
        upstream_files.push((name, bytes));
    }
    for i in 0..KILL_POINTS {
        let (n, b) = wheel(&format!("paged-{i}"), "1.0", &[]);
        up.add(&format!("paged-{i}"), MockFile::new(&n, b));
    }
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    // A bundle to import, made from a separate store.
    let source = work.path().join("source");
    let env = [("LARDER_CONFIG", "/dev/null"), ("LARDER_LOG", "warn")];
    assert_ok(
        &larder_cli(
            &[
                "warm",
                "--data-dir",
                source.to_str().unwrap(),
                "--upstream",
                &up.simple_url(),
                "crashy==3.0",
                "crashy==4.0",
            ],
            &env,
        ),
        "warm",
    );
    let bundle = work.path().join("bundle.tar");
    assert_ok(
        &larder_cli(&["export", "--data-dir", source.to_str().unwrap(), "--output", bundle.to_str().unwrap()], &env),
        "export",
    );

    let args = ["--upstream", up.simple_url().leak(), "--max-store-size", "8MiB", "--metadata-prefetch", "false"];
    let mut private_names = Vec::new();
    for point in 0..KILL_POINTS {
        // Deterministic spread of kill delays, 0-40 ms into each operation.
        let delay = Duration::from_millis(((point * 7919) % 41) as u64);
        let kind = point % 6;
        if kind == 2 {
            // `larder import`, killed as a process.
            let mut child = Command::new(env!("CARGO_BIN_EXE_larder"))
                .args(["import", "--data-dir", data.to_str().unwrap(), bundle.to_str().unwrap()])
                .envs(env)
                .spawn()
                .unwrap();
            std::thread::sleep(delay);
            let _ = child.kill();
            let _ = child.wait();
            let server = Larder::start_with_env(&data, &args, &[("LARDER_TOKEN", TOKEN)]);
            drop(server);
            let server = Larder::start_with_env(&data, &args, &[("LARDER_TOKEN", TOKEN)]);
            check(&data, &server, &private_names);
            drop(server);
            assert_ok(
                &larder_cli(&["import", "--data-dir", data.to_str().unwrap(), bundle.to_str().unwrap()], &env),
                "import again",
            );
            continue;
        }
        let server = Larder::start_with_env(&data, &args, &[("LARDER_TOKEN", TOKEN)]);
        let name = format!("crash-up-{point}");
        let private = wheel(&name, "1.0", &[]);
        let (file, bytes) = &upstream_files[point % upstream_files.len()];
        let file_url = server.url(&format!("/files/{}/{file}", sha256_hex(bytes)));
        let page_url = server.url(&format!("/simple/paged-{point}/"));
        // The operation, in the background; the kill, after `delay`.
        let op = {
            let (server_url, file_url, page_url, name, private) =
                (server.url("/legacy/"), file_url.clone(), page_url.clone(), name.clone(), private.clone());
            std::thread::spawn(move || {
                let _ = match kind {
                    0 => {
                        let (ct, body) =
                            multipart(&[("name", &name), ("version", "1.0")], Some((&private.0, &private.1)));
                        http()
                            .post(server_url)
                            .bearer_auth(TOKEN)
                            .header("content-type", ct)
                            .body(body)
                            .send()
                            .map(|_| ())
                    }
                    1 | 4 => http().get(&file_url).send().and_then(|r| r.bytes()).map(|_| ()),
                    3 => http().get(&page_url).send().map(|_| ()),
                    _ => Ok(()),
                };
            })
        };
        if kind == 5 {
            // Yank, then delete, a private file uploaded just before.
            assert_eq!(upload(&server, &name, &private), Some(200));
            private_names.push(name.clone());
            let sha = sha256_hex(&private.1);
            let yank = server.url(&format!("/files/{sha}/{}/yank", private.0));
            let del = server.url(&format!("/files/{sha}/{}", private.0));
            let t = std::thread::spawn(move || {
                let _ = http().post(yank).bearer_auth(TOKEN).body("crash test").send();
                let _ = http().delete(del).bearer_auth(TOKEN).send();
            });
            std::thread::sleep(delay);
            drop(server); // SIGKILL
            let _ = t.join();
        } else {
            std::thread::sleep(delay);
            drop(server); // SIGKILL
        }
        let _ = op.join();
        if kind == 0 {
            private_names.push(name.clone());
        }
        let server = Larder::start_with_env(&data, &args, &[("LARDER_TOKEN", TOKEN)]);
        check(&data, &server, &private_names);
        // The same client retry succeeds.
        match kind {
            0 => assert_eq!(upload(&server, &name, &private), Some(200), "upload retry"),
            1 | 4 => {
                let body = http()
                    .get(file_url.replace(&file_url[..file_url.find("/files").unwrap()], &server.base))
                    .send()
                    .unwrap()
                    .bytes()
                    .unwrap();
                assert_eq!(sha256_hex(&body), sha256_hex(bytes), "fill retry");
            }
            3 => assert_eq!(
                http()
                    .get(page_url.replace(&page_url[..page_url.find("/simple").unwrap()], &server.base))
                    .send()
                    .unwrap()
                    .status(),
                200
            ),
            _ => {
                let del = server.url(&format!("/files/{}/{}", sha256_hex(&private.1), private.0));
                let status = http().delete(del).bearer_auth(TOKEN).send().unwrap().status().as_u16();
                assert!(status == 200 || status == 404, "delete retry: {status}");
            }
        }
        drop(server);
    }
}
