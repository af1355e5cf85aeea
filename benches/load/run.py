#!/usr/bin/env python3
"""Load benchmark driver: see run.sh. Prints a markdown table with Larder/nginx ratios."""
import argparse
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
JSON = "application/vnd.pypi.simple.v1+json"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_http(url, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except Exception:
            time.sleep(0.1)
    sys.exit(f"{url} did not come up")


def fetch(url, accept=None):
    req = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    return urllib.request.urlopen(req, timeout=120).read()


def fetch_encoded(url, accept, encoding):
    """The body as sent with this Accept-Encoding (not decoded)."""
    req = urllib.request.Request(url, headers={"Accept": accept, "Accept-Encoding": encoding})
    with urllib.request.urlopen(req) as resp:
        got = resp.headers.get("Content-Encoding", "identity")
        if got != encoding:
            sys.exit(f"{url}: asked for {encoding}, got {got}")
        return resp.read()


def rss_kb(pid, field="VmRSS"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def nginx_rss_kb(master_pid):
    out = subprocess.run(["pgrep", "-P", str(master_pid)], capture_output=True, text=True).stdout.split()
    return rss_kb(master_pid) + sum(rss_kb(int(p)) for p in out)


UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}
UNITS_MB = {"B": 1 / 1e6, "KB": 1 / 1e3, "MB": 1.0, "GB": 1e3}


def wrk(url, accept, duration, conns, threads, encoding=None):
    cmd = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{duration}", "--latency", url]
    if accept:
        cmd[1:1] = ["-H", f"Accept: {accept}"]
    if encoding:
        cmd[1:1] = ["-H", f"Accept-Encoding: {encoding}"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    m = re.search(r"Transfer/sec:\s+([\d.]+)(\w+)", out)
    mbs = float(m.group(1)) * UNITS_MB[m.group(2)]
    lat = {}
    for pct in ("50", "99"):
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(\w+)", out, re.M)
        lat[pct] = float(m.group(1)) * UNITS_MS[m.group(2)]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        sys.exit(f"wrk saw errors on {url}:\n{out}")
    return {"rps": rps, "mbs": mbs, "p50": lat["50"], "p99": lat["99"]}


def start_nginx(work, servers, procs):
    """nginx on loopback for a benchmark: the same tuning for every driver (2 workers, sendfile,
    no access log), with `servers` (nginx text inside `http {}`). Returns the process."""
    conf = os.path.join(work, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""
worker_processes 2;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    default_type application/octet-stream;
    types {{ text/html html; }}
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_requests 1000000;
    keepalive_timeout 65;
{servers}
}}
""")
    p = subprocess.Popen(["nginx", "-c", conf, "-p", work, "-g", "daemon off;"])
    procs.append(p)
    return p


def stop_all(procs, work=None):
    """Stops every process started (SIGTERM, then SIGKILL after 10 s) and removes `work`
    (when given)."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
    if work:
        shutil.rmtree(work, ignore_errors=True)


def median_of(runs, key):
    return statistics.median(r[key] for r in runs)


def timed(cmd, env):
    start = time.time()
    out = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if out.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{out.stderr}")
    return time.time() - start


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--venv", required=True)
    ap.add_argument("--larder", required=True)
    ap.add_argument("--rounds", type=int, default=int(os.environ.get("ROUNDS", 3)))
    ap.add_argument("--duration", default=os.environ.get("DURATION", "8s"))
    ap.add_argument("--conns", type=int, default=int(os.environ.get("CONNS", 32)))
    args = ap.parse_args()
    threads = 2
    work = tempfile.mkdtemp(prefix="larder-load.")
    os.chmod(work, 0o755)  # nginx workers run as an unprivileged user
    procs = []

    def cleanup(*_):
        stop_all(procs, work)

    signal.signal(signal.SIGINT, lambda *a: (cleanup(), sys.exit(130)))
    try:
        huge = not os.environ.get("SKIP_HUGE")
        print("==> generating the upstream tree", flush=True)
        up_dir = os.path.join(work, "up")
        subprocess.run([sys.executable, os.path.join(HERE, "make_upstream.py"), up_dir] + (["--huge"] if huge else []), check=True)
        static = os.path.join(work, "static")
        os.makedirs(static)

        up_port, static_port, larder_port = free_port(), free_port(), free_port()
        nginx = start_nginx(work, f"""
    server {{ listen 127.0.0.1:{up_port}; root {up_dir}; index index.html; }}
    server {{ listen 127.0.0.1:{static_port}; root {static}; gzip_static on; }}""", procs)
        upstream = f"http://127.0.0.1:{up_port}/simple/"
        wait_http(upstream + "bigproj/")

        def start_larder(data, extra=()):
            env = dict(os.environ, LARDER_LOG="warn", LARDER_CONFIG="/dev/null")
            p = subprocess.Popen(
                [args.larder, "serve", "--listen", f"127.0.0.1:{larder_port}", "--upstream", upstream,
                 "--data-dir", data, "--metadata-prefetch", "false", *extra],
                env=env)
            procs.append(p)
            wait_http(f"http://127.0.0.1:{larder_port}/-/health")
            return p

        larder = start_larder(os.path.join(work, "data"))
        time.sleep(0.5)
        idle_rss = rss_kb(larder.pid)
        base = f"http://127.0.0.1:{larder_port}"

        # Warm Larder and put the very same bytes into nginx's static root.
        html = fetch(base + "/simple/bigproj/", "text/html")
        js = fetch(base + "/simple/bigproj/", JSON)
        open(os.path.join(static, "page.html"), "wb").write(html)
        open(os.path.join(static, "page.json"), "wb").write(js)
        files = {}
        for fn in os.listdir(os.path.join(up_dir, "packages")):
            if fn.startswith("bigproj-"):
                m = re.search(rf'href="([^"#]*{re.escape(fn)})', html.decode())
                files[fn] = urllib.parse.urljoin(base + "/simple/bigproj/", m.group(1))
                data = fetch(files[fn])
                open(os.path.join(static, fn), "wb").write(data)
        small, big = "bigproj-1.0-py3-none-any.whl", "bigproj-1.1-py3-none-any.whl"
        rows = [
            (f"page HTML ({len(html) / 1e6:.2f} MB)", base + "/simple/bigproj/", f"http://127.0.0.1:{static_port}/page.html", "text/html"),
            (f"page JSON ({len(js) / 1e6:.2f} MB)", base + "/simple/bigproj/", f"http://127.0.0.1:{static_port}/page.json", JSON),
            ("file 100 KB", files[small], f"http://127.0.0.1:{static_port}/{small}", None),
            ("file 15 MB", files[big], f"http://127.0.0.1:{static_port}/{big}", None),
        ]
        only = os.environ.get("ONLY")  # a substring of the row labels to run, e.g. "15 MB"
        rows = [r for r in rows if not only or only in r[0]]
        results = []

        def measure(rows, larder):
            for label, larder_url, nginx_url, accept, *encoding in rows:
                encoding = encoding[0] if encoding else None
                runs = {"larder": [], "nginx": []}
                for r in range(args.rounds):
                    print(f"==> {label}: round {r + 1}/{args.rounds}", flush=True)
                    for who, url in (("larder", larder_url), ("nginx", nginx_url)):
                        runs[who].append(wrk(url, accept, args.duration, args.conns, threads, encoding))
                results.append((label, runs, rss_kb(larder.pid), nginx_rss_kb(nginx.pid)))

        measure(rows, larder)
        peak_rss = rss_kb(larder.pid, "VmHWM")

        # Pages served from disk (issue 21): the same data dir, a Larder whose page memory is
        # too small to hold these bodies, so each hit streams the stored body; identity and
        # gzip, against nginx serving the very bytes (`gzip_static` for the compressed rows).
        disk_rows = [
            ("page JSON from disk", JSON, "identity", "page.json"),
            ("page JSON from disk, gzip", JSON, "gzip", "page.json"),
            ("page HTML from disk, gzip", "text/html", "gzip", "page.html"),
        ]
        disk_rows = [r for r in disk_rows if not only or only in r[0]]
        if disk_rows:
            larder.terminate()
            larder.wait()
            larder = start_larder(os.path.join(work, "data"), ["--page-cache-mib", "1"])
            for label, accept, encoding, name in disk_rows:
                body = fetch_encoded(base + "/simple/bigproj/", accept, encoding)
                if encoding == "gzip":
                    with open(os.path.join(static, name + ".gz"), "wb") as f:
                        f.write(body)
            measure([(f"{label} ({len(fetch_encoded(base + '/simple/bigproj/', a, e)) / 1e6:.2f} MB)",
                      base + "/simple/bigproj/", f"http://127.0.0.1:{static_port}/{n}", a, e)
                     for label, a, e, n in disk_rows], larder)
            larder.terminate()
            larder.wait()
            larder = start_larder(os.path.join(work, "data"))

        # Client timings: a 20-package set with cold client caches. With UPSTREAM_DELAY_MS, the
        # "upstream" for these rows is a proxy adding that latency to each request, like an
        # index on another network (for both the direct runs and Larder's misses).
        delay_ms = int(os.environ.get("UPSTREAM_DELAY_MS", "0"))
        if delay_ms:
            proxy_port = free_port()
            procs.append(subprocess.Popen([sys.executable, os.path.join(HERE, "delay_proxy.py"), str(proxy_port), f"http://127.0.0.1:{up_port}", str(delay_ms)]))
            upstream = f"http://127.0.0.1:{proxy_port}/simple/"
            wait_http(upstream + "app/")
        venv_bin = os.path.join(args.venv, "bin")
        py = os.path.join(venv_bin, "python")

        def uv_install(index):
            env = dict(os.environ, UV_CACHE_DIR=tempfile.mkdtemp(dir=work), UV_NO_CONFIG="1", UV_PYTHON_DOWNLOADS="never")
            target = tempfile.mkdtemp(dir=work)
            return timed([os.path.join(venv_bin, "uv"), "pip", "install", "--python", py, "--target", target, "--index-url", index, "app"], env)

        def pip_download(index):
            env = dict(os.environ, PIP_CONFIG_FILE="/dev/null", PIP_NO_CACHE_DIR="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
            return timed([os.path.join(venv_bin, "pip"), "download", "--index-url", index, "-d", tempfile.mkdtemp(dir=work), "app"], env)

        def uv_compile(index):
            env = dict(os.environ, UV_CACHE_DIR=tempfile.mkdtemp(dir=work), UV_NO_CONFIG="1", UV_PYTHON_DOWNLOADS="never")
            req = os.path.join(work, "requirements.in")
            open(req, "w").write("app\n")
            return timed([os.path.join(venv_bin, "uv"), "pip", "compile", "--python", py, "--index-url", index, req], env)

        client_rows = []
        clients = [] if os.environ.get("SKIP_CLIENTS") else [("uv pip install (20 packages)", uv_install), ("pip download (20 packages)", pip_download), ("uv pip compile (20 packages)", uv_compile)]
        for label, fn in clients:
            direct, cold, warm = [], [], []
            for i in range(args.rounds):
                print(f"==> {label}: round {i + 1}/{args.rounds}", flush=True)
                direct.append(fn(upstream))
                # Cold: a Larder with an empty store each time.
                larder.send_signal(signal.SIGTERM)
                larder.wait()
                larder = start_larder(tempfile.mkdtemp(dir=work))
                lidx = base + "/simple/"
                cold.append(fn(lidx))
                warm.append(fn(lidx))
            client_rows.append((label, statistics.median(direct), statistics.median(cold), statistics.median(warm)))

        huge_row = None
        if huge:
            print("==> 1 GiB file: miss, then hit", flush=True)
            larder.send_signal(signal.SIGTERM)
            larder.wait()
            larder = start_larder(tempfile.mkdtemp(dir=work))
            page = fetch(base + "/simple/huge/", "text/html").decode()
            url = urllib.parse.urljoin(base + "/simple/huge/", re.search(r'href="([^"#]*)', page).group(1))
            before = rss_kb(larder.pid, "VmHWM")
            subprocess.run(["curl", "-sf", "-o", "/dev/null", url], check=True)
            after_miss = rss_kb(larder.pid, "VmHWM")
            subprocess.run(["curl", "-sf", "-o", "/dev/null", url], check=True)
            after_hit = rss_kb(larder.pid, "VmHWM")
            huge_row = (before, after_miss, after_hit)

        print()
        print(f"Machine: {os.cpu_count()} cores; wrk -t{threads} -c{args.conns} -d{args.duration}, {args.rounds} rounds alternating, medians.")
        print("Both servers log nothing per request (nginx access_log off, LARDER_LOG=warn).")
        print()
        print("| row | Larder req/s | nginx req/s | ratio | Larder MB/s | nginx MB/s | Larder p50 / p99 ms | nginx p50 / p99 ms | p99 ratio | Larder RSS | nginx RSS |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for label, runs, lrss, nrss in results:
            l, n = runs["larder"], runs["nginx"]
            lr, nr = median_of(l, "rps"), median_of(n, "rps")
            lp99, np99 = median_of(l, "p99"), median_of(n, "p99")
            print(f"| {label} | {lr:,.0f} | {nr:,.0f} | {lr / nr:.2f} | {median_of(l, 'mbs'):,.0f} | {median_of(n, 'mbs'):,.0f} | "
                  f"{median_of(l, 'p50'):.2f} / {lp99:.2f} | {median_of(n, 'p50'):.2f} / {np99:.2f} | {lp99 / np99:.2f} | "
                  f"{lrss / 1024:.1f} MB | {nrss / 1024:.1f} MB |")
        print()
        print(f"Larder RSS: idle {idle_rss / 1024:.1f} MB, peak under the loads above {peak_rss / 1024:.1f} MB.")
        print()
        if delay_ms:
            print(f"Client runs: the upstream answers each request {delay_ms} ms late (UPSTREAM_DELAY_MS).")
            print()
        print("| client run (median seconds) | straight to upstream | through Larder, cold | through Larder, warm | cold / upstream |")
        print("|---|---|---|---|---|")
        for label, d, c, w in client_rows:
            print(f"| {label} | {d:.2f} | {c:.2f} | {w:.2f} | {c / d:.2f} |")
        if huge_row:
            b, m, h = huge_row
            print()
            print(f"1 GiB file: peak RSS {b / 1024:.1f} MB before, {m / 1024:.1f} MB after the miss (+{(m - b) / 1024:.1f}), "
                  f"{h / 1024:.1f} MB after a hit (+{(h - m) / 1024:.1f}).")
    finally:
        cleanup()


if __name__ == "__main__":
    main()
