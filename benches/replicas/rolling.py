#!/usr/bin/env python3
"""Rolling restarts under load (issue 27 part 1): see rolling.sh. On loopback:

  1. two replicas on one S3 bucket (SeaweedFS) behind nginx; wrk hammers a page and a file
     through nginx, a thread uploads with twine-style POSTs, another runs `pip download` of the
     bench's `app` closure; meanwhile each replica in turn gets SIGTERM and is started again,
     twice over. Reports wrk's requests, errors and p50/p99, uploads acknowledged and found
     afterwards on both replicas, pip runs.
  2. the single-node sidecar: SIGTERM during a 1 GiB download (a miss, read at a limited rate so
     it spans the stop); the download must complete with the right sha256, and Larder exit 0.

Knobs: SKIP_HUGE=1 (skip 2), RESTARTS (2 rounds), RATE (curl's rate for 2, default 150M).
"""
import argparse
import hashlib
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
# benches/replicas/run.py (the S3 server, uploads); loading it puts benches/load on the path,
# whose run.py is then `run` (nginx, fetch, ports).
_spec = importlib.util.spec_from_file_location("replicas_run", os.path.join(HERE, "run.py"))
replicas_run = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(replicas_run)
LOAD = replicas_run.LOAD
from run import UNITS_MS, fetch, free_port, start_nginx, stop_all, wait_http  # noqa: E402

JSON = "application/vnd.pypi.simple.v1+json"


def wrk_counting(url, accept, seconds, conns, out):
    """wrk for `seconds`, errors counted rather than fatal; the parsed numbers go into `out`."""
    cmd = ["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--latency", url]
    if accept:
        cmd[1:1] = ["-H", f"Accept: {accept}"]
    text = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    requests = int(re.search(r"(\d+) requests in", text).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    lat = {}
    for pct in ("50", "99"):
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(\w+)", text, re.M)
        lat[pct] = float(m.group(1)) * UNITS_MS[m.group(2)]
    out.update(requests=requests, non2xx=int(non2xx.group(1)) if non2xx else 0,
               socket=sum(int(x) for x in sock.groups()) if sock else 0, p50=lat["50"], p99=lat["99"], raw=text)


def main():
    start_weed, upload = replicas_run.start_weed, replicas_run.upload
    KEY, SECRET, BUCKET, TOKEN = replicas_run.KEY, replicas_run.SECRET, replicas_run.BUCKET, replicas_run.TOKEN
    ap = argparse.ArgumentParser()
    ap.add_argument("--venv", required=True)
    ap.add_argument("--larder", required=True)
    args = ap.parse_args()
    restarts = int(os.environ.get("RESTARTS", 2))
    work = tempfile.mkdtemp(prefix="larder-rolling.")
    os.chmod(work, 0o755)
    procs = []
    signal.signal(signal.SIGINT, lambda *a: (stop_all(procs, work), sys.exit(130)))
    try:
        print("==> S3 server, upstream tree, nginx", flush=True)
        endpoint = start_weed(args.venv, work, procs)
        up_dir = os.path.join(work, "up")
        huge = not os.environ.get("SKIP_HUGE")
        subprocess.run([sys.executable, os.path.join(LOAD, "make_upstream.py"), up_dir] + (["--huge"] if huge else []),
                       check=True)
        up_port, lb_port = free_port(), free_port()
        ports = {"a": free_port(), "b": free_port()}
        # Passive checks only (open-source nginx): a stopped replica refuses connections and nginx
        # passes the request on; during the drain it still serves (HTTP/1 with Connection: close).
        start_nginx(work, f"""
    server {{ listen 127.0.0.1:{up_port}; root {up_dir}; index index.html; }}
    upstream two {{ server 127.0.0.1:{ports['a']} max_fails=1 fail_timeout=2s; server 127.0.0.1:{ports['b']} max_fails=1 fail_timeout=2s; keepalive 64; }}
    server {{ listen 127.0.0.1:{lb_port}; location / {{ proxy_pass http://two; proxy_http_version 1.1;
        proxy_set_header Connection ""; proxy_set_header Host $http_host; proxy_buffering off;
        proxy_next_upstream error timeout http_502 http_503; client_max_body_size 100m; }} }}""", procs)
        upstream = f"http://127.0.0.1:{up_port}/simple/"
        wait_http(upstream + "bigproj/")
        lb = f"http://127.0.0.1:{lb_port}"
        data = {name: tempfile.mkdtemp(dir=work) for name in ports}

        def start(name):
            env = dict(os.environ, LARDER_LOG="warn", LARDER_CONFIG="/dev/null", AWS_ACCESS_KEY_ID=KEY,
                       AWS_SECRET_ACCESS_KEY=SECRET, LARDER_TOKEN=TOKEN)
            p = subprocess.Popen([args.larder, "serve", "--listen", f"127.0.0.1:{ports[name]}", "--upstream", upstream,
                                  "--data-dir", data[name], "--store", f"s3://{BUCKET}/rolling", "--s3-endpoint", endpoint,
                                  "--drain-delay", "3s"], env=env)
            procs.append(p)
            wait_http(f"http://127.0.0.1:{ports[name]}/-/ready")
            return p

        replicas = {name: start(name) for name in ports}
        # Warm both through the balancer: a page and two files.
        html = fetch(lb + "/simple/bigproj/", "text/html").decode()
        file_url = urllib.parse.urljoin(lb + "/simple/bigproj/",
                                        re.search(r'href="([^"#]*bigproj-1.0-py3-none-any.whl)', html).group(1))
        for _ in range(4):
            fetch(lb + "/simple/bigproj/", JSON)
            fetch(file_url)

        # 1. The load, and the restarts under it.
        seconds = 12 + restarts * 2 * 9
        results = {"page": {}, "file": {}}
        threads = [threading.Thread(target=wrk_counting, args=(lb + "/simple/bigproj/", JSON, seconds, 16, results["page"])),
                   threading.Thread(target=wrk_counting, args=(file_url, None, seconds, 16, results["file"]))]
        stop = threading.Event()
        acked, failed_uploads = [], []

        def uploader():
            i = 0
            while not stop.is_set():
                name = f"rolling-{i}"
                try:
                    acked.append((name, upload(lb, name, "1.0")))
                except Exception as e:  # noqa: BLE001 (any failure is a failed client request)
                    failed_uploads.append((name, str(e)))
                i += 1
                time.sleep(0.2)

        pip_runs = {"ok": 0, "failed": 0}

        def pipper():
            pip = os.path.join(args.venv, "bin", "pip")
            while not stop.is_set():
                dest = tempfile.mkdtemp(dir=work)
                r = subprocess.run([pip, "download", "--no-cache-dir", "--disable-pip-version-check", "-q",
                                    "--index-url", lb + "/simple/", "-d", dest, "app"],
                                   capture_output=True, text=True, env=dict(os.environ, PIP_CONFIG_FILE="/dev/null"))
                pip_runs["ok" if r.returncode == 0 else "failed"] += 1

        threads += [threading.Thread(target=uploader), threading.Thread(target=pipper)]
        for t in threads:
            t.start()
        time.sleep(4)
        for r in range(restarts):
            for name in ports:
                print(f"==> round {r + 1}/{restarts}: SIGTERM to replica {name}, then start it again", flush=True)
                p = replicas[name]
                p.send_signal(signal.SIGTERM)
                code = p.wait()
                assert code == 0, f"replica {name} exited {code}"
                replicas[name] = start(name)
                time.sleep(2)
        for t in threads[:2]:
            t.join()
        stop.set()
        for t in threads[2:]:
            t.join()

        # Every acknowledged upload is listed, whole, by both replicas.
        lost = []
        for name, filename in acked:
            for rname in ports:
                page = json.loads(fetch(f"http://127.0.0.1:{ports[rname]}/simple/{name}/", JSON))
                if filename not in [f["filename"] for f in page["files"]]:
                    lost.append((rname, filename))
        for p in replicas.values():
            p.send_signal(signal.SIGTERM)
            p.wait()

        # 2. SIGTERM during a 1 GiB download from the single-node sidecar.
        huge_row = None
        if huge:
            print("==> SIGTERM during a 1 GiB download", flush=True)
            port = free_port()
            single = subprocess.Popen([args.larder, "serve", "--listen", f"127.0.0.1:{port}", "--upstream", upstream,
                                       "--data-dir", tempfile.mkdtemp(dir=work)],
                                      env=dict(os.environ, LARDER_LOG="warn", LARDER_CONFIG="/dev/null"))
            procs.append(single)
            base = f"http://127.0.0.1:{port}"
            wait_http(base + "/-/ready")
            page = fetch(base + "/simple/huge/", JSON)
            f = json.loads(page)["files"][0]
            url = urllib.parse.urljoin(base + "/simple/huge/", f["url"])
            out = os.path.join(work, "huge.bin")
            rate = os.environ.get("RATE", "150M")
            started = time.time()
            curl = subprocess.Popen(["curl", "-sS", "--fail", "--limit-rate", rate, "-o", out, url])
            time.sleep(1.5)
            single.send_signal(signal.SIGTERM)
            code = single.wait()
            curl_code = curl.wait()
            secs = time.time() - started
            h = hashlib.sha256()
            with open(out, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
            ok = curl_code == 0 and h.hexdigest() == f["hashes"]["sha256"]
            huge_row = (ok, code, secs, os.path.getsize(out))

        print()
        print(f"Machine: {os.cpu_count()} cores; SeaweedFS, nginx, wrk, pip and two Larder replicas on one machine.")
        print(f"Load for {seconds} s through nginx (wrk -t1 -c16 on a page and on a file, uploads every 0.2 s, pip download")
        print(f"of a 20-package closure in a loop); each replica SIGTERMed and started again, {restarts} rounds (drain_delay 3s).")
        print()
        print("| load | requests | failed | p50 ms | p99 ms |")
        print("|---|---|---|---|---|")
        for label, key in (("page JSON hits (wrk)", "page"), ("100 KB file hits (wrk)", "file")):
            r = results[key]
            print(f"| {label} | {r['requests']:,} | {r['non2xx'] + r['socket']} | {r['p50']:.1f} | {r['p99']:.1f} |")
        print(f"| uploads | {len(acked) + len(failed_uploads)} | {len(failed_uploads)} | | |")
        print(f"| pip download runs | {pip_runs['ok'] + pip_runs['failed']} | {pip_runs['failed']} | | |")
        print()
        print(f"Acknowledged uploads: {len(acked)}; missing afterwards on a replica: {len(lost)}.")
        if failed_uploads:
            print(f"Failed uploads: {failed_uploads[:3]}")
        if huge_row:
            ok, code, secs, size = huge_row
            print(f"1 GiB download across SIGTERM: {'complete, sha256 matches' if ok else 'FAILED'} "
                  f"({size / 2**30:.2f} GiB in {secs:.1f} s); Larder exited {code}.")
        bad = (results["page"]["non2xx"] + results["page"]["socket"] + results["file"]["non2xx"] + results["file"]["socket"]
               + len(failed_uploads) + len(lost) + pip_runs["failed"] + (0 if not huge_row or (huge_row[0] and huge_row[1] == 0) else 1))
        sys.exit(1 if bad else 0)
    finally:
        stop_all(procs, work)


if __name__ == "__main__":
    main()
