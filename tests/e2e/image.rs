//! The container image and the compose files, run for real (issue 28): the image that
//! `scripts/image` builds from this checkout's wheel, on the local Debian base; docker-compose.yml
//! and docker-compose.replicas.yml as written, with only their images and upstream swapped for
//! local ones by an override file.
//!
//! `docker run` tests use host networking, so Larder in the container reaches the mock upstream
//! on 127.0.0.1 and the test reaches Larder there. The compose projects run on their own bridge
//! network; the test only ever addresses their containers through `docker compose run`.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::util::docker::{self, Container, NGINX_IMAGE, PYTHON_IMAGE, Project, SEAWEEDFS_IMAGE, Volume, docker_ok};
use crate::util::upstream::{MockFile, MockUpstream};
use crate::util::{assert_ok, pip, sdist, sha256_hex, wheel};

const TOKEN: &str = "image-test-token";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `docker run` of the image on the host's network, its store on `volume`.
fn run_larder(volume: &Volume, port: u16, env: &[(&str, &str)]) -> Container {
    let listen = format!("LARDER_LISTEN=127.0.0.1:{port}");
    let mount = format!("{}:/var/lib/larder", volume.0);
    let mut args = vec!["--network", "host", "--stop-timeout", "40", "-v", &mount, "-e", &listen];
    let env: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    for e in &env {
        args.extend(["-e", e]);
    }
    let image = docker::image();
    args.push(&image);
    let c = Container::run(&args);
    c.wait_for(
        &format!("listening on http://127.0.0.1:{port}"),
        &format!("http://127.0.0.1:{port}/-/health"),
        Duration::from_secs(30),
    );
    c
}

#[test]
fn the_image_installs_with_pip_as_a_non_root_user_and_keeps_its_store_on_a_named_volume() {
    if !docker::available(&[&docker::image()]) {
        return;
    }
    let up = MockUpstream::start();
    let (app, app_bytes) = wheel("img-app", "1.0", &["img-lib"]);
    let (lib, lib_bytes) = wheel("img-lib", "2.0", &[]);
    up.add("img-app", MockFile::new(&app, app_bytes));
    up.add("img-lib", MockFile::new(&lib, lib_bytes));
    let volume = Volume::create();
    let port = free_port();
    let index = format!("http://127.0.0.1:{port}/simple/");
    let scratch = tempfile::tempdir().unwrap();

    let larder = run_larder(&volume, port, &[("LARDER_UPSTREAM", &up.simple_url())]);
    let target = scratch.path().join("t1");
    let out = pip(scratch.path(), &["install", "--index-url", &index, "--target", target.to_str().unwrap(), "img-app"]);
    assert_ok(&out, "pip install through the container");
    assert!(target.join("img_lib").is_dir() && target.join("img_app").is_dir());
    assert_eq!(up.count_full(&app), 1, "the file came through the container's fill, once");

    // Not root, by the image's own settings and in fact (PID 1's real and effective uid).
    assert_eq!(larder.inspect("{{.Config.User}}"), "10001");
    let status = docker_ok(&["exec", &larder.0, "cat", "/proc/1/status"]);
    let uids = status.lines().find(|l| l.starts_with("Uid:")).unwrap().split_whitespace().skip(1).collect::<Vec<_>>();
    assert_eq!(uids, ["10001"; 4], "{status}");
    // The store on the volume belongs to that user, so a fresh volume works without a chown.
    assert_eq!(docker_ok(&["exec", &larder.0, "stat", "-c", "%u", "/var/lib/larder"]), "10001");

    // A new container on the same volume, with the upstream gone: everything from the store.
    drop(larder);
    up.set_down(true);
    up.clear_requests();
    let larder = run_larder(&volume, port, &[("LARDER_UPSTREAM", &up.simple_url()), ("LARDER_OFFLINE", "1")]);
    let target = scratch.path().join("t2");
    let out = pip(scratch.path(), &["install", "--index-url", &index, "--target", target.to_str().unwrap(), "img-app"]);
    assert_ok(&out, "pip install from the volume after the container was replaced");
    assert!(target.join("img_lib").is_dir());
    assert!(up.requests().is_empty(), "nothing asked upstream: {:?}", up.requests());
    drop(larder);
}

#[test]
fn sigterm_stops_the_container_cleanly_within_its_grace_period() {
    if !docker::available(&[&docker::image()]) {
        return;
    }
    let up = MockUpstream::start();
    let volume = Volume::create();
    let port = free_port();
    let larder = run_larder(&volume, port, &[("LARDER_UPSTREAM", &up.simple_url())]);
    // `docker stop` sends the image's STOPSIGNAL to PID 1 (Larder itself, no shell in between),
    // then SIGKILL after the container's stop timeout (40 s, as compose's stop_grace_period).
    let started = Instant::now();
    docker_ok(&["stop", &larder.0]);
    let took = started.elapsed();
    let log = larder.logs();
    assert_eq!(larder.inspect("{{.State.ExitCode}}"), "0", "a clean exit, not SIGKILL's 137:\n{log}");
    assert!(log.contains("signal=\"SIGTERM\"") && log.contains("stopped"), "{log}");
    assert!(took >= Duration::from_secs(4), "it drained first (5 s by default): {took:?}");
    assert!(took < Duration::from_secs(40), "{took:?}");
}

/// A static PEP 503 upstream in `dir/upstream` for `python3 -m http.server`: one page per
/// project, each file linked with its sha256.
fn static_upstream(dir: &Path, files: &[(&str, (String, Vec<u8>))]) {
    for (project, (filename, bytes)) in files {
        let page_dir = dir.join("upstream/simple").join(project);
        std::fs::create_dir_all(&page_dir).unwrap();
        std::fs::create_dir_all(dir.join("upstream/files")).unwrap();
        std::fs::write(dir.join("upstream/files").join(filename), bytes).unwrap();
        let page = format!(
            "<!DOCTYPE html><html><body><a href=\"../../files/{filename}#sha256={}\">{filename}</a></body></html>\n",
            sha256_hex(bytes)
        );
        std::fs::write(page_dir.join("index.html"), page).unwrap();
    }
}

/// The override both compose tests add: the upstream as a container of the project.
const UPSTREAM_SERVICE: &str = "  upstream:
    image: larder-e2e/python:bookworm
    command: [\"python3\", \"-m\", \"http.server\", \"8000\", \"--directory\", \"/srv\"]
    # Python's http.server as PID 1 ignores SIGTERM; SIGINT stops it at once.
    stop_signal: SIGINT
    volumes:
      - ./upstream:/srv:ro
    healthcheck:
      test: [\"CMD\", \"python3\", \"-c\", \"import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/simple/')\"]
      interval: 1s
      retries: 30
";

#[test]
fn compose_up_runs_a_build_container_that_installs_through_the_sidecar() {
    if !docker::available(&[&docker::image(), PYTHON_IMAGE]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    static_upstream(
        dir.path(),
        &[("side-app", wheel("side-app", "1.0", &["side-lib"])), ("side-lib", wheel("side-lib", "1.1", &[]))],
    );
    std::fs::write(dir.path().join("requirements.txt"), "side-app==1.0\n").unwrap();
    let over = dir.path().join("compose.test.yml");
    std::fs::write(
        &over,
        format!(
            "services:\n{UPSTREAM_SERVICE}  larder:\n    depends_on:\n      upstream:\n        condition: service_healthy\n"
        ),
    )
    .unwrap();
    let mut project = Project::new(
        "docker-compose.yml",
        &over,
        dir.path(),
        &[
            ("LARDER_UPSTREAM", "http://upstream:8000/simple/"),
            ("PYTHON_IMAGE", PYTHON_IMAGE),
            ("LARDER_IMAGE", &docker::image()),
        ],
    );

    // As a pipeline runs it: the build container's exit code is the run's.
    let out = project.compose_ok(&["up", "--no-build", "--exit-code-from", "build"]);
    assert!(out.contains("Successfully installed side-app-1.0 side-lib-1.1"), "{out}");
    // The healthcheck gated the build container: it started only after Larder's first healthy
    // answer (both times UTC, RFC 3339).
    let larder_log = project.logs();
    let first_health = larder_log
        .lines()
        .find(|l| l.starts_with("larder-1") && l.contains("\"route\":\"health\"") && l.contains("\"status\":200"))
        .and_then(|l| l.split("\"timestamp\":\"").nth(1))
        .and_then(|t| t.split('"').next())
        .map(docker::sortable_time)
        .unwrap_or_else(|| panic!("no healthy answer logged:\n{larder_log}"));
    let started = docker_ok(&["inspect", "--format", "{{.State.StartedAt}}", &format!("{}-build-1", project.name)]);
    assert!(docker::sortable_time(&started) > first_health, "build started {started}, Larder healthy {first_health}");

    // The next pipeline run finds the named volume warm: offline, with the upstream's files gone.
    std::fs::remove_dir_all(dir.path().join("upstream/files")).unwrap();
    project.compose_ok(&["down"]);
    project.set_env("LARDER_OFFLINE", "1");
    let out = project.compose_ok(&["up", "--no-build", "--exit-code-from", "build"]);
    assert!(out.contains("Successfully installed side-app-1.0 side-lib-1.1"), "{out}");
}

#[test]
fn compose_replicas_an_upload_through_one_replica_installs_through_the_other() {
    if !docker::available(&[&docker::image(), PYTHON_IMAGE, NGINX_IMAGE, SEAWEEDFS_IMAGE]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    static_upstream(dir.path(), &[("rep-lib", wheel("rep-lib", "3.0", &[]))]);
    let (name, bytes) = sdist("rep-private", "0.1");
    std::fs::create_dir_all(dir.path().join("dist")).unwrap();
    std::fs::write(dir.path().join("dist").join(&name), bytes).unwrap();
    // The compose file's own configuration, where it looks for it (`./config`).
    std::fs::create_dir_all(dir.path().join("config")).unwrap();
    for file in ["seaweedfs-s3.json", "nginx-replicas.conf"] {
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("config").join(file);
        std::fs::copy(source, dir.path().join("config").join(file)).unwrap();
    }
    let over = dir.path().join("compose.test.yml");
    std::fs::write(
        &over,
        format!(
            "services:\n{UPSTREAM_SERVICE}  lb:\n    ports: !reset []\n  client:\n    image: {PYTHON_IMAGE}\n    profiles: [\"client\"]\n    volumes:\n      - ./dist:/dist:ro\n"
        ),
    )
    .unwrap();
    let project = Project::new(
        "docker-compose.replicas.yml",
        &over,
        dir.path(),
        &[
            ("LARDER_UPSTREAM", "http://upstream:8000/simple/"),
            ("LARDER_TOKEN", TOKEN),
            ("LARDER_IMAGE", &docker::image()),
            ("SEAWEEDFS_IMAGE", SEAWEEDFS_IMAGE),
            ("NGINX_IMAGE", NGINX_IMAGE),
        ],
    );
    project.compose_ok(&["up", "--no-build", "--detach", "--wait", "--wait-timeout", "120"]);

    let upload = format!(
        "twine upload --non-interactive --repository-url http://larder-a:3141/api/v4/projects/default/packages/pypi -u __token__ -p {TOKEN} /dist/{name}"
    );
    let out = project.compose_ok(&["run", "--rm", "client", "sh", "-c", &upload]);
    assert!(out.contains("larder-a:3141"), "{out}");
    // Through the other replica, and through the load balancer: the private sdist beside an
    // upstream wheel, each from the one bucket.
    for index in ["http://larder-b:3141/simple/", "http://lb:8080/simple/"] {
        let host = index.split('/').nth(2).unwrap().split(':').next().unwrap();
        let install = format!(
            "pip install --no-cache-dir --index-url {index} --trusted-host {host} --target /tmp/t rep-private==0.1 rep-lib==3.0"
        );
        let out = project.compose_ok(&["run", "--rm", "client", "sh", "-c", &install]);
        assert!(out.contains("Successfully installed rep-lib-3.0 rep-private-0.1"), "{index}:\n{out}");
    }
}
