//! The harness: start Larder, build wheels, run pip and uv.

pub mod balancer;
pub mod docker;
pub mod fault_proxy;
pub mod faulty;
pub mod http_stub;
pub mod inprocess;
pub mod s3;
pub mod upstream;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// The venv with pip, uv, twine and pypiserver.
/// Polls `done` every 50 ms until it holds; panics after `within`.
pub fn wait_until(within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + within;
    while !done() {
        assert!(std::time::Instant::now() < deadline, "not done within {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn venv_bin(name: &str) -> PathBuf {
    let venv = std::env::var_os("LARDER_E2E_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-e2e"));
    let bin = venv.join("bin").join(name);
    assert!(bin.exists(), "{} is missing: run ./scripts/test, which installs the test clients", bin.display());
    bin
}

/// A running `larder serve`, stopped on drop.
pub struct Larder {
    child: Child,
    pub base: String,
    pub data_dir: PathBuf,
    log: Arc<Mutex<String>>,
    args: Vec<String>,
    envs: Vec<(String, String)>,
}

impl Larder {
    /// Starts Larder on a free port with `args` (e.g. `--upstream URL`), storing in `data_dir`.
    pub fn start(data_dir: &Path, args: &[&str]) -> Larder {
        Self::start_with_env(data_dir, args, &[])
    }

    /// The same, with extra environment variables (`LARDER_TOKEN`, ...).
    pub fn start_with_env(data_dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> Larder {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let envs = envs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Self::spawn(data_dir, args, envs)
    }

    fn spawn(data_dir: &Path, args: Vec<String>, envs: Vec<(String, String)>) -> Larder {
        let mut child = Command::new(env!("CARGO_BIN_EXE_larder"))
            .arg("serve")
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(&args)
            .env("LARDER_CONFIG", "/dev/null")
            .env("LARDER_LOG", "info,larder=debug")
            .env_remove("LARDER_UPSTREAM")
            .env_remove("LARDER_TOKEN")
            .envs(envs.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start larder");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let log2 = log.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(i) = line.find("listening on http")
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(line[i + "listening on ".len()..].trim().to_string());
                }
                log2.lock().unwrap().push_str(&line);
                log2.lock().unwrap().push('\n');
            }
        });
        let base = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(b) => b,
            Err(_) => panic!("larder did not start; its log:\n{}", log.lock().unwrap()),
        };
        Larder { child, base, data_dir: data_dir.to_path_buf(), log, args, envs }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The default project's index URL, for pip and uv.
    pub fn index(&self) -> String {
        self.url("/simple/")
    }

    /// The server's process id (to count its open files and memory).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The value of one line of `/metrics` (a name with its labels), 0 when absent.
    pub fn counter(&self, line: &str) -> u64 {
        let metrics = http().get(self.url("/metrics")).send().unwrap().text().unwrap();
        metrics.lines().find_map(|l| l.strip_prefix(line)?.trim().parse().ok()).unwrap_or(0)
    }

    /// Stops this process and starts a new one on the same data dir (a new port).
    pub fn restart(mut self) -> Larder {
        self.stop();
        let (dir, args, envs) = (self.data_dir.clone(), std::mem::take(&mut self.args), std::mem::take(&mut self.envs));
        Self::spawn(&dir, args, envs)
    }

    /// Stops this process as an orchestrator does (SIGTERM; it drains and exits 0) and starts
    /// a new one on the same data dir (a new port); with the old process's whole log.
    pub fn restart_gracefully(mut self, within: Duration) -> (Larder, String) {
        let status = Command::new("kill").args(["-TERM", &self.pid().to_string()]).status().unwrap();
        assert!(status.success());
        let exit = self.wait_exit(within).unwrap_or_else(|| panic!("no exit within {within:?}:\n{}", self.log()));
        assert!(exit.success(), "{exit:?}:\n{}", self.log());
        std::thread::sleep(Duration::from_millis(100)); // the log reader's last lines
        let (dir, args, envs) = (self.data_dir.clone(), std::mem::take(&mut self.args), std::mem::take(&mut self.envs));
        (Self::spawn(&dir, args, envs), self.log())
    }

    /// Waits for the process to exit by itself (after a signal the test sent); `None` if it
    /// is still running after `within`.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + within;
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Larder {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!("---- larder log ----\n{}", self.log());
        }
    }
}

/// A minimal, installable wheel: a module, METADATA, WHEEL and a correct RECORD.
pub fn wheel(name: &str, version: &str, requires: &[&str]) -> (String, Vec<u8>) {
    use base64::Engine;
    let dist = name.replace('-', "_");
    let filename = format!("{dist}-{version}-py3-none-any.whl");
    let info = format!("{dist}-{version}.dist-info");
    let mut metadata =
        format!("Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nSummary: {name}, a package for tests\n");
    for r in requires {
        metadata.push_str(&format!("Requires-Dist: {r}\n"));
    }
    let files = vec![
        (format!("{dist}/__init__.py"), format!("VERSION = {version:?}\n")),
        (format!("{info}/METADATA"), metadata),
        (
            format!("{info}/WHEEL"),
            "Wheel-Version: 1.0\nGenerator: larder-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n".to_string(),
        ),
    ];
    let mut record = String::new();
    let mut buf = std::io::Cursor::new(Vec::new());
    {
        let mut zip = zip::ZipWriter::new(&mut buf);
        let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
        for (path, content) in &files {
            zip.start_file(path.as_str(), opts).unwrap();
            zip.write_all(content.as_bytes()).unwrap();
            let digest = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(content.as_bytes()));
            record.push_str(&format!("{path},sha256={digest},{}\n", content.len()));
        }
        record.push_str(&format!("{info}/RECORD,,\n"));
        zip.start_file(format!("{info}/RECORD"), opts).unwrap();
        zip.write_all(record.as_bytes()).unwrap();
        zip.finish().unwrap();
    }
    (filename, buf.into_inner())
}

/// The METADATA inside a wheel built by `wheel`.
pub fn wheel_metadata(bytes: &[u8]) -> Vec<u8> {
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
    let name =
        zip.file_names().filter_map(Result::ok).find(|n| n.ends_with(".dist-info/METADATA")).unwrap().to_string();
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut zip.by_name(&name).unwrap(), &mut out).unwrap();
    out
}

fn client_env(cmd: &mut Command, scratch: &Path) {
    cmd.env("PIP_CONFIG_FILE", "/dev/null")
        .env("PIP_NO_CACHE_DIR", "1")
        .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
        .env("PIP_NO_INPUT", "1")
        .env("UV_CACHE_DIR", scratch.join("uv-cache"))
        .env("UV_NO_CONFIG", "1")
        .env("UV_PYTHON_DOWNLOADS", "never")
        .env("UV_NO_PROGRESS", "1")
        .env_remove("PIP_INDEX_URL")
        .env_remove("UV_INDEX_URL")
        .env_remove("UV_DEFAULT_INDEX")
        .env_remove("UV_EXTRA_INDEX_URL")
        .env_remove("PIP_EXTRA_INDEX_URL")
        // Hermetic: no wheels from elsewhere, no machine-wide CA overrides.
        .env_remove("PIP_FIND_LINKS")
        .env_remove("PIP_CERT")
        .env_remove("REQUESTS_CA_BUNDLE")
        .env_remove("CURL_CA_BUNDLE")
        .env_remove("SSL_CERT_FILE")
        .env_remove("SSL_CERT_DIR");
}

/// A client from the venv (`uv`, `twine`, `pip`, …) with the hermetic environment; add
/// arguments and environment, then `run` it.
pub fn client(name: &str, scratch: &Path) -> Command {
    let mut cmd = Command::new(venv_bin(name));
    client_env(&mut cmd, scratch);
    cmd
}

/// A certificate authority and a leaf for localhost / 127.0.0.1, written as PEM files into
/// `dir`: (CA, leaf chain, leaf key). OpenSSL, under pip and twine, wants a CA as anchor.
pub fn test_tls(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "Larder test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap()).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let mut leaf_params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    leaf_params.distinguished_name.push(rcgen::DnType::CommonName, "localhost");
    let leaf = leaf_params.signed_by(&leaf_key, &ca).unwrap();
    let (ca_pem, cert_pem, key_pem) = (dir.join("ca.pem"), dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&ca_pem, ca.pem()).unwrap();
    std::fs::write(&cert_pem, leaf.pem()).unwrap();
    std::fs::write(&key_pem, leaf_key.serialize_pem()).unwrap();
    (ca_pem, cert_pem, key_pem)
}

pub fn run(mut cmd: Command) -> Output {
    let started = Instant::now();
    let out = cmd.output().expect("run client");
    eprintln!(
        "$ {:?} ({:.1}s)\n{}{}",
        cmd,
        started.elapsed().as_secs_f64(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `pip <args>` with no config, no cache and no other index.
pub fn pip(scratch: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(venv_bin("pip"));
    cmd.args(args);
    client_env(&mut cmd, scratch);
    run(cmd)
}

/// `twine <args>`, never interactive.
pub fn twine(scratch: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(venv_bin("twine"));
    cmd.args(args).env("TWINE_NON_INTERACTIVE", "1").env_remove("TWINE_USERNAME").env_remove("TWINE_PASSWORD");
    client_env(&mut cmd, scratch);
    run(cmd)
}

/// twine 6.1, the last release that sends `--skip-existing` to any index (scripts/test installs
/// it beside the current one).
pub fn twine_6_1(scratch: &Path, args: &[&str]) -> Output {
    let lib = venv_bin("python").parent().unwrap().parent().unwrap().join("twine-6.1");
    assert!(lib.is_dir(), "{} is missing: run ./scripts/test", lib.display());
    let mut cmd = Command::new(venv_bin("python"));
    cmd.args(["-m", "twine"]).args(args).env("PYTHONPATH", lib).env("TWINE_NON_INTERACTIVE", "1");
    client_env(&mut cmd, scratch);
    run(cmd)
}

/// A `larder <args>` command (not `serve`), e.g. `yank`.
pub fn larder_cli(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_larder"));
    cmd.args(args).envs(envs.iter().copied());
    run(cmd)
}

/// `larder <args>` with no config file and quiet logs (the air-gap, upgrade and attack tests).
pub fn larder_quiet(args: &[&str]) -> Output {
    larder_cli(args, &[("LARDER_CONFIG", "/dev/null"), ("LARDER_LOG", "warn")])
}

/// A path as the `&str` a command line takes.
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The filenames a PEP 691 JSON page lists, in its order.
pub fn filenames(page: &serde_json::Value) -> Vec<String> {
    page["files"].as_array().unwrap().iter().map(|f| f["filename"].as_str().unwrap().to_string()).collect()
}

/// Writes `text` as `dir/larder.toml`; its path, for `--config`.
pub fn write_config(dir: &Path, text: &str) -> String {
    let path = dir.join("larder.toml");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

/// The same for a command that must end by itself within 30 s: one that would run on (a
/// `serve` that should have refused) is killed, and the test fails instead of hanging.
pub fn larder_cli_ending(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_larder"))
        .args(args)
        .envs(envs.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("larder {args:?} did not stop within 30 s: {:?}", child.wait_with_output().unwrap());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// An sdist: `name-version/PKG-INFO`, a `setup.py`, and the module.
pub fn sdist(name: &str, version: &str) -> (String, Vec<u8>) {
    sdist_with_metadata_version(name, version, "2.1")
}

pub fn sdist_with_metadata_version(name: &str, version: &str, metadata_version: &str) -> (String, Vec<u8>) {
    let dist = name.replace('-', "_");
    let filename = format!("{dist}-{version}.tar.gz");
    let top = format!("{dist}-{version}");
    let pkg_info = format!("Metadata-Version: {metadata_version}\nName: {name}\nVersion: {version}\n");
    let setup =
        format!("from setuptools import setup\nsetup(name={name:?}, version={version:?}, packages=[{dist:?}])\n");
    let files = [
        (format!("{top}/PKG-INFO"), pkg_info),
        (format!("{top}/setup.py"), setup),
        (format!("{top}/{dist}/__init__.py"), format!("VERSION = {version:?}\n")),
    ];
    let mut out = Vec::new();
    {
        let gz = flate2::write::GzEncoder::new(&mut out, flate2::Compression::default());
        let mut tar = tar::Builder::new(gz);
        for (path, content) in &files {
            let mut header = tar::Header::new_gnu();
            header.set_size(content.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            tar.append_data(&mut header, path, content.as_bytes()).unwrap();
        }
        tar.into_inner().unwrap().finish().unwrap();
    }
    (filename, out)
}

/// A multipart/form-data body the way twine builds one.
pub fn multipart(fields: &[(&str, &str)], file: Option<(&str, &[u8])>) -> (String, Vec<u8>) {
    let boundary = "larder-test-boundary-4d3c2b1a";
    let mut body = Vec::new();
    for (k, v) in fields {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n").as_bytes(),
        );
    }
    if let Some((filename, bytes)) = file {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"content\"; filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// `uv <args>` with a cache dir inside `scratch`.
pub fn uv(scratch: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(venv_bin("uv"));
    cmd.args(args);
    client_env(&mut cmd, scratch);
    run(cmd)
}

/// `uv pip install --target TARGET REQUIREMENT` with the venv's Python and only `index`.
pub fn uv_install(scratch: &Path, index: &str, target: &Path, requirement: &str) -> Output {
    let python = venv_bin("python");
    let (python, target) = (python.to_str().unwrap(), target.to_str().unwrap());
    uv(scratch, &["pip", "install", "--python", python, "--target", target, "--index-url", index, requirement])
}

/// `pip download -d DEST REQUIREMENT` with only `index`.
pub fn pip_download(scratch: &Path, index: &str, dest: &Path, requirement: &str) -> Output {
    pip(scratch, &["download", "--index-url", index, "-d", dest.to_str().unwrap(), requirement])
}

/// A PEP 691 JSON page, optionally with a token.
pub fn json_page(url: &str, token: Option<&str>) -> serde_json::Value {
    let mut req = http().get(url).header("accept", "application/vnd.pypi.simple.v1+json");
    if let Some(t) = token {
        req = req.basic_auth("x", Some(t));
    }
    req.send().unwrap().json().unwrap()
}

pub fn assert_ok(out: &Output, what: &str) {
    assert!(out.status.success(), "{what} failed:\n{}", String::from_utf8_lossy(&out.stderr));
}

/// A blocking HTTP client for direct checks.
pub fn http() -> reqwest::blocking::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::blocking::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

/// sha256 of every file in `dir`, by filename.
pub fn hashes_in(dir: &Path) -> std::collections::BTreeMap<String, String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), sha256_hex(&std::fs::read(&p).unwrap())))
        .collect()
}
