#!/usr/bin/env python3
"""A real resolve against a real index, as a user feels it (issue 21).

usage: BENCH_UPSTREAM=https://<upstream>/simple/ .venv-e2e/bin/python benches/resolve/field.py

`uv pip compile` of REQS (default `jupyter pandas scikit-learn requests fastapi sqlalchemy`)
with a cold uv cache each time, ROUNDS alternated rounds (default 3), medians:

- direct: uv straight to BENCH_UPSTREAM;
- cold: through a Larder with an empty data dir and default settings;
- warm: the same Larder again, seconds later;
- restart: the same data dir after the Larder process was killed and started again;
- floor: nginx serving the very bytes the warm Larder served (its pages, gzip-compressed as
  `gzip_static` files, and the `.metadata` files), copied into a static tree on loopback;
- peryx (the Rust peer, `pip install peryx`) cold, warm and after a restart, the same way: a
  cached index of BENCH_UPSTREAM with the upstream's file host in `trusted_hosts` (its SSRF
  guard refuses hosts that resolve to non-public addresses otherwise). PERYX_BIN names its
  binary; else it is installed into target/peryx-venv. PERYX=0 leaves it out.

Also Larder's RSS after each phase, its data dir's size, and the upstream requests it sent.
BENCH_UPSTREAM is never written in the repository; it comes from the environment.
"""
import gzip
import os
import re
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
VENV_BIN = os.path.dirname(sys.executable)
LARDER = os.environ.get("LARDER_BIN", os.path.join(ROOT, "target", "release", "larder"))
REQS = os.environ.get("REQS", "jupyter pandas scikit-learn requests fastapi sqlalchemy").split()
ROUNDS = int(os.environ.get("ROUNDS", "3"))
JSON = "application/vnd.pypi.simple.v1+json"


def rss_mb(pid):
    return rss_kb(pid) / 1024


def peryx_bin():
    """peryx's binary: PERYX_BIN, or installed once into target/peryx-venv."""
    if os.environ.get("PERYX_BIN"):
        return os.environ["PERYX_BIN"]
    venv = os.path.join(ROOT, "target", "peryx-venv")
    binary = os.path.join(venv, "bin", "peryx")
    if not os.path.exists(binary):
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
        subprocess.run([os.path.join(venv, "bin", "pip"), "install", "--quiet", "peryx"], check=True)
    return binary


def file_host(upstream):
    """The host the upstream's file URLs point at (peryx must be told to trust it)."""
    import json
    import urllib.parse
    req = urllib.request.Request(upstream.rstrip("/") + "/idna/", headers={"Accept": JSON})
    files = json.load(urllib.request.urlopen(req))["files"]
    return urllib.parse.urlparse(urllib.parse.urljoin(upstream, files[0]["url"])).hostname


def main():
    upstream = os.environ.get("BENCH_UPSTREAM")
    if not upstream:
        raise SystemExit("set BENCH_UPSTREAM to the index to resolve against (https://<upstream>/simple/)")
    work = tempfile.mkdtemp(prefix="larder-field.")
    os.chmod(work, 0o755)
    reqs = os.path.join(work, "reqs.in")
    with open(reqs, "w") as f:
        f.write("\n".join(REQS) + "\n")
    procs = []

    signal.signal(signal.SIGINT, lambda *a: (stop_all(procs), sys.exit(130)))

    def uv(index):
        cache = tempfile.mkdtemp(prefix="uv-cache.", dir=work)
        env = {**os.environ, "UV_CACHE_DIR": cache, "UV_NO_CONFIG": "1"}
        cmd = [os.path.join(VENV_BIN, "uv"), "pip", "compile", "--quiet", "--python", sys.executable,
               "--index-url", index, reqs]
        t = time.perf_counter()
        out = subprocess.run(cmd, env=env, capture_output=True, text=True)
        took = time.perf_counter() - t
        shutil.rmtree(cache, ignore_errors=True)
        if out.returncode != 0:
            raise SystemExit(f"uv against {index} failed:\n{out.stderr[-2000:]}")
        return took

    def larder(data, log):
        port = free_port()
        p = subprocess.Popen([LARDER, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", data,
                              "--upstream", upstream],
                             env={**os.environ, "LARDER_LOG": "info", "LARDER_CONFIG": "/dev/null"},
                             stderr=open(log, "a"), stdout=subprocess.DEVNULL)
        procs.append(p)
        wait_http(f"http://127.0.0.1:{port}/-/health")
        return p, f"http://127.0.0.1:{port}"

    peryx = peryx_bin() if os.environ.get("PERYX", "1") != "0" else None
    peryx_config = os.path.join(work, "peryx.toml")
    if peryx:
        with open(peryx_config, "w") as f:
            f.write(f"""[[index]]
ecosystem = "pypi"
name = "pypi"

[[index.upstream]]
name = "primary"
url = "{upstream}"
trusted_hosts = ["{file_host(upstream)}"]
""")

    def start_peryx(data, log):
        port = free_port()
        p = subprocess.Popen([peryx, "serve", "--config", peryx_config, "--data-dir", data, "--port", str(port)],
                             stdout=open(log, "a"), stderr=subprocess.STDOUT)
        procs.append(p)
        wait_http(f"http://127.0.0.1:{port}/pypi/simple/")
        return p, f"http://127.0.0.1:{port}/pypi/simple/"

    def peryx_round(r):
        """peryx cold, warm, and after a restart; seconds and RSS after each."""
        data = tempfile.mkdtemp(prefix="peryx-data.", dir=work)
        log = os.path.join(work, f"peryx-{r}.log")
        p, index = start_peryx(data, log)
        out = {"peryx_cold": uv(index)}
        time.sleep(float(os.environ.get("RSS_WAIT", "12")))
        out["peryx_cold_rss"] = rss_mb(p.pid)
        out["peryx_warm"] = uv(index)
        time.sleep(float(os.environ.get("RSS_WAIT", "12")))
        out["peryx_warm_rss"] = rss_mb(p.pid)
        p.terminate()
        p.wait()
        p, index = start_peryx(data, log)
        out["peryx_restart"] = uv(index)
        time.sleep(float(os.environ.get("RSS_WAIT", "12")))
        out["peryx_restart_rss"] = rss_mb(p.pid)
        p.terminate()
        p.wait()
        return out

    def heap_mb(base):
        """Larder's allocator: (allocated, resident) MB, to tell data held from memory not returned."""
        text = urllib.request.urlopen(base + "/metrics").read().decode()
        got = dict(re.findall(r"^larder_memory_(allocated|resident)_bytes (\S+)$", text, re.M))
        return tuple(round(float(got.get(k, 0)) / 2**20) for k in ("allocated", "resident"))

    def misses(log, since):
        with open(log) as f:
            f.seek(since)
            return sum(1 for line in f if 'cache="MISS"' in line or 'cache="REVALIDATED"' in line)

    def floor_tree(base, log, since, tree):
        """The bytes the warm run was served, as static files nginx serves the same way."""
        paths = set()
        with open(log) as f:
            f.seek(since)
            for line in f:
                m = re.search(r"path=(\S+) route=\"(simple_detail|file)\"", line)
                if m and "status=200" in line:
                    paths.add(m.group(1))
        for path in paths:
            req = urllib.request.Request(base + path, headers={"Accept": JSON, "Accept-Encoding": "identity"})
            body = urllib.request.urlopen(req).read()
            if path.endswith("/"):
                dest = os.path.join(tree, path.strip("/"), "index.json")
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                with open(dest, "wb") as f:
                    f.write(body)
                with open(dest + ".gz", "wb") as f:
                    f.write(gzip.compress(body, 6))
            else:
                dest = os.path.join(tree, path.strip("/"))
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                with open(dest, "wb") as f:
                    f.write(body)
        return len(paths)

    rows = []
    try:
        for r in range(ROUNDS):
            direct = uv(upstream)
            data = tempfile.mkdtemp(prefix="data.", dir=work)
            log = os.path.join(work, f"larder-{r}.log")
            open(log, "w").close()
            p, base = larder(data, log)
            cold = uv(base + "/simple/")
            cold_misses = misses(log, 0)
            # Background writes end, and jemalloc returns freed pages (its decay is ~10 s).
            time.sleep(float(os.environ.get("RSS_WAIT", "12")))
            cold_rss = rss_mb(p.pid)
            cold_heap = heap_mb(base)
            mark = os.path.getsize(log)
            warm = uv(base + "/simple/")
            warm_misses = misses(log, mark)
            time.sleep(float(os.environ.get("RSS_WAIT", "12")))
            warm_rss = rss_mb(p.pid)
            warm_heap = heap_mb(base)
            tree = os.path.join(work, f"tree-{r}")
            served = floor_tree(base, log, mark, tree)
            time.sleep(2.5)  # the freshness journal is written every 2 s
            p.kill()
            p.wait()
            p, base = larder(data, log)
            mark = os.path.getsize(log)
            restart = uv(base + "/simple/")
            restart_misses = misses(log, mark)
            time.sleep(float(os.environ.get("RSS_WAIT", "12")))
            restart_rss = rss_mb(p.pid)
            restart_heap = heap_mb(base)
            p.terminate()
            p.wait()
            store_mb = int(subprocess.run(["du", "-sm", data], capture_output=True, text=True).stdout.split()[0])
            nginx_port = free_port()
            ng = os.path.join(work, f"nginx-{r}")
            os.makedirs(ng)
            os.chmod(tree, 0o755)
            start_nginx(ng, f"""    server {{ listen 127.0.0.1:{nginx_port}; root {tree};
        location /simple/ {{ types {{ }} default_type {JSON}; index index.json; gzip_static on; }} }}""", procs)
            first = sorted(os.listdir(os.path.join(tree, "simple")))[0]
            wait_http(f"http://127.0.0.1:{nginx_port}/simple/{first}/")
            floor = uv(f"http://127.0.0.1:{nginx_port}/simple/")
            procs[-1].terminate()
            procs[-1].wait()
            rows.append(dict(direct=direct, cold=cold, warm=warm, restart=restart, floor=floor,
                             cold_misses=cold_misses, warm_misses=warm_misses, restart_misses=restart_misses,
                             cold_rss=cold_rss, warm_rss=warm_rss, restart_rss=restart_rss, store=store_mb,
                             cold_heap=cold_heap, warm_heap=warm_heap, restart_heap=restart_heap,
                             served=served, **(peryx_round(r) if peryx else {})))
            print(rows[-1], flush=True)
    finally:
        stop_all(procs)
    med = lambda k: sorted(r[k] for r in rows)[len(rows) // 2]  # noqa: E731
    print(f"\n`uv pip compile {' '.join(REQS)}`, cold uv cache, medians of {ROUNDS} rounds; "
          f"{med('served')} pages and metadata files served warm.\n")
    print("| run | seconds | × direct | × floor | upstream requests (MISS/REVALIDATED) | Larder RSS MB |")
    print("|---|---|---|---|---|---|")
    d, fl = med("direct"), med("floor")
    print(f"| straight to the index | {d:.2f} | 1.00 | {d / fl:.2f} | | |")
    for label, k, m, rss in (("cold Larder", "cold", "cold_misses", "cold_rss"),
                             ("warm Larder", "warm", "warm_misses", "warm_rss"),
                             ("warm after a restart", "restart", "restart_misses", "restart_rss")):
        print(f"| {label} | {med(k):.2f} | {med(k) / d:.2f} | {med(k) / fl:.2f} | {med(m)} | {med(rss):.0f} |")
    print(f"| nginx floor (the warm run's bytes) | {fl:.2f} | {fl / d:.2f} | 1.00 | | |")
    if peryx:
        for label, k in (("cold peryx", "peryx_cold"), ("warm peryx", "peryx_warm"),
                         ("peryx after a restart", "peryx_restart")):
            print(f"| {label} | {med(k):.2f} | {med(k) / d:.2f} | {med(k) / fl:.2f} | | {med(k + '_rss'):.0f} |")
    print(f"\ndata dir after the resolve: {med('store')} MB")
    heaps = ", ".join(f"{k} {med(k + '_heap')[0]} / {med(k + '_heap')[1]}" for k in ("cold", "warm", "restart"))
    print(f"Larder's allocator, allocated / resident MB (medians by allocated): {heaps}")
    if not os.environ.get("KEEP"):
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
