#!/usr/bin/env python3
"""Cold and warm resolves through Larder vs straight to the upstream (issue 11).

usage: BENCH_SOURCE_INDEX=https://<upstream>/simple/ .venv-e2e/bin/python benches/resolve/run.py

Setup (once, into target/bench-resolve/tree; BENCH_SOURCE_INDEX is read only here): `pip
download` the wheels of a real closure (REQS, default `jupyter pandas scikit-learn requests
fastapi sqlalchemy`), fetch each project's page from the source index, and write a static tree
whose pages list every version's files (sha256, requires-python, yanks) and carry no metadata;
only the downloaded wheels exist as files. nginx serves the tree; a latency proxy that passes
Range (range_proxy.py, DELAY_MS, default 20 ms per request) stands in front of it as the upstream.

Then, with cold client caches each time (ROUNDS rounds, default 3, medians), times `uv pip compile` and `pip install --dry-run
--report`: straight to the upstream, through a cold Larder (an empty store), and through the
same Larder warm; and counts the upstream bytes each run pulled (the proxy's counter). Prints a
Markdown table for benches/README.md. Everything after setup talks only to 127.0.0.1.
LARDER_ARGS adds arguments to `larder serve` (e.g. `--metadata-prefetch false`).
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "load"))
from run import free_port, rss_kb, start_nginx, stop_all, wait_http  # noqa: E402
ROOT = os.path.dirname(os.path.dirname(HERE))
WORK = os.path.join(ROOT, "target", "bench-resolve")
TREE = os.path.join(WORK, "tree")
VENV_BIN = os.path.dirname(sys.executable)
LARDER = os.environ.get("LARDER_BIN", os.path.join(ROOT, "target", "release", "larder"))
REQS = os.environ.get("REQS", "jupyter pandas scikit-learn requests fastapi sqlalchemy").split()
DELAY_MS = int(os.environ.get("DELAY_MS", "20"))
ROUNDS = int(os.environ.get("ROUNDS", "3"))
JSON = "application/vnd.pypi.simple.v1+json"


def normalize(name):
    import re
    return re.sub(r"[-_.]+", "-", name).lower()


def setup():
    source = os.environ.get("BENCH_SOURCE_INDEX")
    if not source:
        raise SystemExit("set BENCH_SOURCE_INDEX to an index to copy the closure from (read at setup only)")
    wheels = os.path.join(WORK, "wheels")
    os.makedirs(wheels, exist_ok=True)
    print(f"==> pip download {' '.join(REQS)} (binary wheels only)", flush=True)
    subprocess.run([os.path.join(VENV_BIN, "pip"), "download", "--quiet", "--only-binary", ":all:", "--dest", wheels,
                    "--index-url", source] + REQS, check=True)
    have = set(os.listdir(wheels))
    projects = sorted({normalize(f.split("-")[0]) for f in have})
    print(f"==> {len(have)} wheels of {len(projects)} projects, {sum(os.path.getsize(os.path.join(wheels, f)) for f in have) / 1e6:.0f} MB; copying their pages", flush=True)
    files_dir = os.path.join(TREE, "files")
    os.makedirs(files_dir, exist_ok=True)
    for f in have:
        dst = os.path.join(files_dir, f)
        if not os.path.exists(dst):
            os.link(os.path.join(wheels, f), dst)
    root = ["<!DOCTYPE html><html><body>"]
    for p in projects:
        req = urllib.request.Request(source.rstrip("/") + f"/{p}/", headers={"Accept": JSON})
        page = json.load(urllib.request.urlopen(req, timeout=60))
        lines = ["<!DOCTYPE html><html><body>"]
        for f in page["files"]:
            sha = f.get("hashes", {}).get("sha256")
            if not sha:
                continue
            attrs = ""
            if f.get("requires-python"):
                rp = f["requires-python"].replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
                attrs += f' data-requires-python="{rp}"'
            if f.get("yanked"):
                attrs += ' data-yanked=""'
            lines.append(f'<a href="../../files/{f["filename"]}#sha256={sha}"{attrs}>{f["filename"]}</a><br>')
        lines.append("</body></html>")
        os.makedirs(os.path.join(TREE, "simple", p), exist_ok=True)
        with open(os.path.join(TREE, "simple", p, "index.html"), "w") as out:
            out.write("\n".join(lines))
        root.append(f'<a href="{p}/">{p}</a><br>')
    with open(os.path.join(TREE, "simple", "index.html"), "w") as out:
        out.write("\n".join(root + ["</body></html>"]))
    with open(os.path.join(WORK, "reqs.in"), "w") as out:
        out.write("\n".join(REQS) + "\n")


def rss_mb(pid):
    return rss_kb(pid) / 1024


def main():
    if not os.path.exists(os.path.join(WORK, "reqs.in")):
        setup()
    reqs = os.path.join(WORK, "reqs.in")
    run = tempfile.mkdtemp(prefix="larder-resolve.")
    os.chmod(run, 0o755)
    for d in (WORK, TREE):
        os.chmod(d, 0o755)
    procs = []

    signal.signal(signal.SIGINT, lambda *a: (stop_all(procs), sys.exit(130)))
    try:
        nginx_port, proxy_port = free_port(), free_port()
        start_nginx(run, f"    server {{ listen 127.0.0.1:{nginx_port}; root {TREE}; index index.html; }}", procs)
        procs.append(subprocess.Popen([sys.executable, os.path.join(HERE, "range_proxy.py"), str(proxy_port),
                                       f"http://127.0.0.1:{nginx_port}", str(DELAY_MS)]))
        upstream = f"http://127.0.0.1:{proxy_port}/simple/"
        wait_http(upstream)

        def sent():
            return int(urllib.request.urlopen(f"http://127.0.0.1:{proxy_port}/__bytes").read())

        python = sys.executable

        def client(kind, index):
            cache = tempfile.mkdtemp(prefix="cache.", dir=run)
            env = {**os.environ, "UV_CACHE_DIR": cache, "PIP_CACHE_DIR": cache, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
            if kind == "uv":
                cmd = [os.path.join(VENV_BIN, "uv"), "pip", "compile", "--quiet", "--python", python, "--index-url", index, reqs]
            else:
                cmd = [os.path.join(VENV_BIN, "pip"), "install", "--quiet", "--dry-run", "--ignore-installed",
                       "--report", os.path.join(cache, "report.json"), "--index-url", index, "-r", reqs]
            before = sent()
            t = time.perf_counter()
            out = subprocess.run(cmd, env=env, capture_output=True, text=True)
            took = time.perf_counter() - t
            if out.returncode != 0:
                raise SystemExit(f"{kind} against {index} failed:\n{out.stderr[-2000:]}")
            shutil.rmtree(cache, ignore_errors=True)
            return took, sent() - before

        def once(kind):
            direct, direct_bytes = client(kind, upstream)
            port = free_port()
            data = tempfile.mkdtemp(prefix=f"larder-{kind}.", dir=run)  # an empty store every round
            larder = subprocess.Popen([LARDER, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", data,
                                       "--upstream", upstream] + os.environ.get("LARDER_ARGS", "").split(),
                                      env={**os.environ, "LARDER_LOG": "warn", "LARDER_CONFIG": "/dev/null"})
            procs.append(larder)
            index = f"http://127.0.0.1:{port}/simple/"
            wait_http(f"http://127.0.0.1:{port}/-/health")
            fresh_rss = rss_mb(larder.pid)
            cold, cold_bytes = client(kind, index)
            # The prefetcher's background reads finish, and freed memory goes back to the system
            # (jemalloc returns dirty pages after ~10 s).
            time.sleep(float(os.environ.get("RSS_WAIT", "12")))
            cold_rss = rss_mb(larder.pid)
            warm, warm_bytes = client(kind, index)
            store = subprocess.run(["du", "-sm", data], capture_output=True, text=True).stdout.split()[0]
            larder.terminate()
            larder.wait()
            shutil.rmtree(data, ignore_errors=True)
            return (direct, cold, warm, direct_bytes, cold_bytes, warm_bytes, fresh_rss, cold_rss, store)

        rows = []
        for kind, label in (("uv", "uv pip compile"), ("pip", "pip install --dry-run --report")):
            runs = [once(kind) for _ in range(ROUNDS)]
            median = lambda i: sorted(r[i] for r in runs)[len(runs) // 2]  # noqa: E731
            rows.append((label,) + tuple(median(i) for i in range(8)) + (runs[-1][8],))

        wheels = len(os.listdir(os.path.join(TREE, "files")))
        print(f"\n{len(REQS)} requirements ({' '.join(REQS)}), {wheels} wheels in the tree; upstream latency {DELAY_MS} ms per request; medians of {ROUNDS} rounds.\n")
        print("| run | direct s | cold Larder s | warm Larder s | cold / direct | warm / direct | upstream MB direct | upstream MB cold | cold bytes / direct | Larder RSS fresh → after cold | store MB |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for label, d, c, w, db, cb, wb, fr, cr, st in rows:
            print(f"| {label} | {d:.2f} | {c:.2f} | {w:.2f} | {c / d:.2f} | {w / d:.2f} | {db / 1e6:.1f} | {cb / 1e6:.1f} | "
                  f"{cb / max(db, 1):.2f} | {fr:.1f} → {cr:.1f} MB | {st} |")
    finally:
        stop_all(procs)
        shutil.rmtree(run, ignore_errors=True)


if __name__ == "__main__":
    main()
