//! Installing Larder the way its users install their tools (issue 16): the binary wheel that
//! `./scripts/test` builds with maturin, put into fresh environments by pip and by
//! `uv tool install`, then run: `--version`, `serve`, and pip installing through it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::util::upstream::upstream_with_app;
use crate::util::{assert_ok, pip, venv_bin};

fn built_wheel() -> PathBuf {
    let wheel = std::env::var_os("LARDER_E2E_WHEEL")
        .map(PathBuf::from)
        .expect("LARDER_E2E_WHEEL is not set: run ./scripts/test, which builds the wheel with maturin");
    assert!(wheel.is_file(), "{} is missing: run ./scripts/test", wheel.display());
    wheel
}

fn run(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().expect("run");
    eprintln!("$ {cmd:?}\n{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    out
}

/// Starts `larder serve` from `binary`; returns the child and its base URL.
fn serve(binary: &Path, data: &Path, upstream: &str) -> (std::process::Child, String) {
    let mut child = Command::new(binary)
        .args(["serve", "--listen", "127.0.0.1:0", "--upstream", upstream, "--data-dir"])
        .arg(data)
        .env("LARDER_CONFIG", "/dev/null")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(i) = line.find("listening on http") {
                let _ = tx.send(line[i + "listening on ".len()..].trim().to_string());
            }
        }
    });
    let base = rx.recv_timeout(Duration::from_secs(30)).expect("the installed larder did not start");
    (child, base)
}

#[test]
fn the_wheel_installs_with_pip_and_uv_tool_and_serves() {
    let wheel = built_wheel();
    let name = wheel.file_name().unwrap().to_string_lossy().into_owned();
    let version = env!("CARGO_PKG_VERSION");
    assert!(name.starts_with(&format!("larder-{version}-py3-none-")), "version from Cargo.toml: {name}");
    assert!(name.contains("manylinux"), "a platform tag from maturin's audit: {name}");

    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    // pip, into a fresh venv, from the file alone.
    let venv = w.join("venv");
    assert_ok(&run(Command::new(venv_bin("python")).args(["-m", "venv"]).arg(&venv)), "python -m venv");
    let pip_install = run(Command::new(venv.join("bin/pip"))
        .args(["install", "--no-index", "--disable-pip-version-check"])
        .arg(&wheel));
    assert_ok(&pip_install, "pip install the wheel");
    let installed = venv.join("bin/larder");
    let out = run(Command::new(&installed).arg("--version"));
    assert_ok(&out, "larder --version");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("larder {version}"));

    // The installed binary serves, and pip installs through it.
    let (up, _) = upstream_with_app();
    let (mut child, base) = serve(&installed, &w.join("data"), &up.simple_url());
    let target = w.join("target");
    let out =
        pip(w, &["install", "--index-url", &format!("{base}/simple/"), "--target", target.to_str().unwrap(), "app"]);
    let _ = child.kill();
    let _ = child.wait();
    assert_ok(&out, "pip install through the installed larder");
    assert!(target.join("app").join("__init__.py").is_file() && target.join("lib_core").is_dir());

    // uv tool install, as `uvx` and `uv tool install` users get it.
    let (tools, bin) = (w.join("uv-tools"), w.join("uv-bin"));
    let mut cmd = Command::new(venv_bin("uv"));
    cmd.args(["tool", "install", "--offline", "--python"])
        .arg(venv_bin("python"))
        .arg(&wheel)
        .env("UV_TOOL_DIR", &tools)
        .env("UV_TOOL_BIN_DIR", &bin)
        .env("UV_CACHE_DIR", w.join("uv-cache"))
        .env("UV_NO_CONFIG", "1")
        .env("UV_PYTHON_DOWNLOADS", "never");
    assert_ok(&run(&mut cmd), "uv tool install the wheel");
    let out = run(Command::new(bin.join("larder")).arg("--version"));
    assert_ok(&out, "larder --version from uv's tool bin");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("larder {version}"));
}

#[test]
fn completions_and_the_man_page_come_from_the_command_line_definitions() {
    let larder = env!("CARGO_BIN_EXE_larder");
    for (shell, marker, flag) in [
        ("bash", "_larder()", "--upstream"),
        ("zsh", "#compdef larder", "--upstream"),
        ("fish", "complete -c larder", "-l upstream"),
    ] {
        let out = run(Command::new(larder).args(["completions", shell]));
        assert_ok(&out, shell);
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(script.contains(marker) && script.contains("serve") && script.contains(flag), "{shell}");
    }
    // `larder completions bash | head -1`: a reader that goes away is not an error, nor a panic.
    let out = Command::new("sh").arg("-c").arg(format!("{larder} completions bash | head -1")).output().unwrap();
    assert!(out.status.success() && !String::from_utf8_lossy(&out.stderr).contains("panicked"));
    let out = run(Command::new(larder).arg("man"));
    assert_ok(&out, "larder man");
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(page.starts_with(".ie") || page.contains(".TH larder 1"), "roff");
    assert!(page.contains(".TH larder 1") && page.contains("serve"));
    let out = run(Command::new(larder).args(["completions", "tcsh"]));
    assert!(!out.status.success(), "an unknown shell is refused with a clear error");
}
