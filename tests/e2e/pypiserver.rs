//! pypiserver as a real, HTML-only upstream: Larder parses its pages with lol_html and serves
//! pip and uv from them.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{Larder, assert_ok, hashes_in, http, pip_download, sha256_hex, uv_install, venv_bin, wheel};

struct PypiServer(Child, u16);

impl Drop for PypiServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn start_pypiserver(packages: &std::path::Path) -> PypiServer {
    let port = free_port();
    let child = Command::new(venv_bin("pypi-server"))
        .args(["run", "-i", "127.0.0.1", "-p", &port.to_string(), "-a", ".", "-P", ".", "--disable-fallback"])
        .arg(packages)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start pypiserver");
    let server = PypiServer(child, port);
    let deadline = Instant::now() + Duration::from_secs(30);
    while http().get(format!("http://127.0.0.1:{port}/simple/")).send().is_err() {
        assert!(Instant::now() < deadline, "pypiserver did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    server
}

#[test]
fn pip_and_uv_through_larder_with_pypiserver_upstream() {
    let packages = tempfile::tempdir().unwrap();
    let mut expected = std::collections::BTreeMap::new();
    for (project, version, deps) in [("web-app", "0.3", vec!["Util_Lib"]), ("util-lib", "1.2", vec![])] {
        let (name, bytes) = wheel(project, version, &deps);
        expected.insert(name.clone(), sha256_hex(&bytes));
        std::fs::write(packages.path().join(&name), bytes).unwrap();
    }
    let server = start_pypiserver(packages.path());
    let dir = tempfile::tempdir().unwrap();
    let larder = Larder::start(dir.path(), &["--upstream", &format!("http://127.0.0.1:{}/simple/", server.1)]);

    let page = http()
        .get(larder.url("/simple/web-app/"))
        .header("accept", "application/vnd.pypi.simple.v1+json")
        .send()
        .unwrap();
    assert_eq!(page.status(), 200);
    let page: serde_json::Value = page.json().unwrap();
    assert_eq!(page["meta"]["api-version"], "1.0", "JSON-10: no sizes from an HTML upstream");
    assert!(page["files"][0]["hashes"]["sha256"].is_string(), "hash taken from pypiserver's #sha256= fragment");

    let scratch = tempfile::tempdir().unwrap();
    let dl = scratch.path().join("dl");
    assert_ok(&pip_download(scratch.path(), &larder.index(), &dl, "web-app"), "pip download");
    assert_eq!(hashes_in(&dl), expected);

    // Stop the upstream: uv still installs everything from Larder.
    drop(server);
    let target = scratch.path().join("t");
    let out = uv_install(scratch.path(), &larder.index(), &target, "web-app");
    assert_ok(&out, "uv pip install from the cache");
    assert!(target.join("util_lib").join("__init__.py").is_file());
}
