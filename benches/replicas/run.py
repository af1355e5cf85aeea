#!/usr/bin/env python3
"""Replicas on one S3 bucket (issue 13): see run.sh. On loopback, with a real S3 server
(SeaweedFS's `weed` from the test venv), measures

  1. warm hits (a 1 MB JSON page, a 100 KB and a 15 MB file) on one S3-backed replica vs nginx
     serving the same bytes: strict (the default: every request checks the bucket, batched),
     pages strict with known files lagging 1 s, and everything lagging 1 s;
  2. a blob served from the bucket on a local-cache miss (a fresh replica each round), MB/s;
  3. upload-to-visible latency across replicas: upload to A, poll B until listed (p50/p99);
  4. throughput through one nginx load balancer in front of two replicas vs one.

Prints markdown tables; knobs: ROUNDS (3), DURATION (5s), CONNS (32), UPLOADS (100), LAG.
"""
import argparse
import hashlib
import io
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
LOAD = os.path.join(HERE, "..", "load")
sys.path.insert(0, LOAD)
from run import fetch, free_port, median_of, rss_kb, start_nginx, stop_all, wait_http, wrk  # noqa: E402

JSON = "application/vnd.pypi.simple.v1+json"
TOKEN = "bench-token-123"
KEY, SECRET, BUCKET = "bench", "bench-secret", "larder"


def free(port):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def start_weed(venv, work, procs):
    """A SeaweedFS `weed mini` on loopback, every port chosen free (gRPC ports are +10000)."""
    for base in range(21000, 29000, 20):
        if all(free(base + i) and free(base + i + 10000) for i in range(10)):
            break
    cfg = os.path.join(work, "s3.json")
    json.dump({"identities": [{"name": "b", "credentials": [{"accessKey": KEY, "secretKey": SECRET}],
                               "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}, open(cfg, "w"))
    data = os.path.join(work, "weed")
    os.makedirs(data)
    ports = {"master.port": base, "master.port.grpc": base + 10000, "volume.port": base + 1,
             "volume.port.grpc": base + 10001, "filer.port": base + 2, "filer.port.grpc": base + 10002,
             "s3.port": base + 3, "admin.port": base + 4, "admin.port.grpc": base + 10004, "debug.port": base + 5}
    cmd = [os.path.join(venv, "bin", "weed"), "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
           "-master.telemetry=false", "-webdav=false", "-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
           f"-s3.config={cfg}", f"-bucket={BUCKET}"] + [f"-{k}={v}" for k, v in ports.items()]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "weed.log"), "w"))
    procs.append(p)
    endpoint = f"http://127.0.0.1:{base + 3}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            urllib.request.urlopen(endpoint + "/healthz", timeout=2).read()
            break
        except Exception:
            time.sleep(0.2)
    time.sleep(2)  # the bucket is created just after the gateway answers
    return endpoint


def wheel(name, version):
    """A minimal valid wheel, as Larder's upload checks want it."""
    dist = f"{name.replace('-', '_')}-{version}"
    files = {
        f"{name.replace('-', '_')}/__init__.py": b"",
        f"{dist}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{dist}.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: bench\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(f"{p},,\n" for p in files) + f"{dist}.dist-info/RECORD,,\n"
    files[f"{dist}.dist-info/RECORD"] = record.encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for p, b in files.items():
            z.writestr(p, b)
    return f"{dist}-py3-none-any.whl", buf.getvalue()


def upload(base, name, version):
    filename, data = wheel(name, version)
    boundary = "benchboundary"
    parts = []
    for k, v in ((":action", "file_upload"), ("name", name), ("version", version),
                 ("sha256_digest", hashlib.sha256(data).hexdigest())):
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode())
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="content"; filename="{filename}"\r\n'
                 f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    import base64
    req = urllib.request.Request(base + "/api/v4/projects/default/packages/pypi", data=b"".join(parts), method="POST",
                                 headers={"Content-Type": f"multipart/form-data; boundary={boundary}",
                                          "Authorization": "Basic " + base64.b64encode(f"x:{TOKEN}".encode()).decode()})
    urllib.request.urlopen(req, timeout=60).read()
    return filename


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--venv", required=True)
    ap.add_argument("--larder", required=True)
    ap.add_argument("--rounds", type=int, default=int(os.environ.get("ROUNDS", 3)))
    ap.add_argument("--duration", default=os.environ.get("DURATION", "5s"))
    ap.add_argument("--conns", type=int, default=int(os.environ.get("CONNS", 32)))
    ap.add_argument("--uploads", type=int, default=int(os.environ.get("UPLOADS", 100)))
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="larder-replicas.")
    os.chmod(work, 0o755)
    procs = []

    def cleanup(*_):
        stop_all(procs, work)

    signal.signal(signal.SIGINT, lambda *a: (cleanup(), sys.exit(130)))
    try:
        print("==> S3 server, upstream tree, nginx", flush=True)
        endpoint = start_weed(args.venv, work, procs)
        up_dir = os.path.join(work, "up")
        subprocess.run([sys.executable, os.path.join(LOAD, "make_upstream.py"), up_dir], check=True)
        static = os.path.join(work, "static")
        os.makedirs(static)
        up_port, static_port, lb2_port, lb1_port = free_port(), free_port(), free_port(), free_port()
        ports = {name: free_port() for name in ("a", "b", "s0")}

        proxy = 'proxy_http_version 1.1; proxy_set_header Connection ""; proxy_set_header Host $http_host; proxy_buffering off;'
        start_nginx(work, f"""
    server {{ listen 127.0.0.1:{up_port}; root {up_dir}; index index.html; }}
    server {{ listen 127.0.0.1:{static_port}; root {static}; }}
    upstream two {{ server 127.0.0.1:{ports['a']}; server 127.0.0.1:{ports['b']}; keepalive 64; }}
    upstream one {{ server 127.0.0.1:{ports['a']}; keepalive 64; }}
    server {{ listen 127.0.0.1:{lb2_port}; location / {{ proxy_pass http://two; {proxy} }} }}
    server {{ listen 127.0.0.1:{lb1_port}; location / {{ proxy_pass http://one; {proxy} }} }}""", procs)
        upstream = f"http://127.0.0.1:{up_port}/simple/"
        wait_http(upstream + "bigproj/")

        def start(port_name, lag="0s", data=None, file_lag=None):
            data = data or tempfile.mkdtemp(dir=work)
            env = dict(os.environ, LARDER_LOG="warn", LARDER_CONFIG="/dev/null", AWS_ACCESS_KEY_ID=KEY,
                       AWS_SECRET_ACCESS_KEY=SECRET, LARDER_TOKEN=TOKEN)
            p = subprocess.Popen([args.larder, "serve", "--listen", f"127.0.0.1:{ports[port_name]}", "--upstream", upstream,
                                  "--data-dir", data, "--metadata-prefetch", "false", "--store", f"s3://{BUCKET}/bench",
                                  "--s3-endpoint", endpoint, "--replica-lag", lag]
                                 + (["--replica-file-lag", file_lag] if file_lag else []), env=env)
            procs.append(p)
            wait_http(f"http://127.0.0.1:{ports[port_name]}/-/health")
            return p, f"http://127.0.0.1:{ports[port_name]}"

        def stop(p):
            p.send_signal(signal.SIGTERM)
            p.wait()

        # Warm through A: pages and files go to the bucket; the very bytes go to nginx's root.
        a, a_base = start("a")
        js = fetch(a_base + "/simple/bigproj/", JSON)
        html = fetch(a_base + "/simple/bigproj/", "text/html").decode()
        open(os.path.join(static, "page.json"), "wb").write(js)
        files = {}
        for fn in ("bigproj-1.0-py3-none-any.whl", "bigproj-1.1-py3-none-any.whl"):
            m = re.search(rf'href="([^"#]*{re.escape(fn)})', html)
            files[fn] = urllib.parse.urljoin(a_base + "/simple/bigproj/", m.group(1))
            open(os.path.join(static, fn), "wb").write(fetch(files[fn]))
        time.sleep(1)
        small, big = "bigproj-1.0-py3-none-any.whl", "bigproj-1.1-py3-none-any.whl"
        path = lambda url: url[len(a_base):]  # noqa: E731

        # 1. Warm hits, one replica vs nginx, strict and with a 1 s lag.
        rows = [
            (f"page JSON ({len(js) / 1e6:.2f} MB)", "/simple/bigproj/", f"http://127.0.0.1:{static_port}/page.json", JSON),
            ("file 100 KB", path(files[small]), f"http://127.0.0.1:{static_port}/{small}", None),
            ("file 15 MB", path(files[big]), f"http://127.0.0.1:{static_port}/{big}", None),
        ]
        only = os.environ.get("ONLY")  # a substring of the hit row labels to run, e.g. "100 KB"
        rows = [r for r in rows if not only or only in r[0]]
        hit_results = []
        # strict (the default): every request checks the bucket; files 1s: pages strict, known
        # files may lag 1 s; lag 1s: both may lag 1 s.
        for mode, lag, file_lag in (("strict", "0s", None), ("files 1s", "0s", "1s"), ("lag 1s", "1s", "1s")):
            stop(a)
            a, a_base = start("a", lag, data=None, file_lag=file_lag)
            for _, p, _, accept in rows:  # fill this replica's local cache and memory
                fetch(a_base + p, accept)
            time.sleep(1)
            fetch(a_base + rows[-1][1])
            for label, p, nginx_url, accept in rows:
                runs = {"larder": [], "nginx": []}
                for r in range(args.rounds):
                    print(f"==> hits, {mode}, {label}: round {r + 1}/{args.rounds}", flush=True)
                    runs["larder"].append(wrk(a_base + p, accept, args.duration, args.conns, 2))
                    runs["nginx"].append(wrk(nginx_url, accept, args.duration, args.conns, 2))
                hit_results.append((f"{label}, {mode}", runs, rss_kb(a.pid)))

        # 2. A blob from the bucket on a local-cache miss: a fresh replica each round.
        bucket_mbs = []
        for r in range(args.rounds):
            print(f"==> 15 MB from the bucket, round {r + 1}/{args.rounds}", flush=True)
            c, c_base = start("s0")
            t = time.time()
            body = fetch(c_base + path(files[big]))
            bucket_mbs.append(len(body) / 1e6 / (time.time() - t))
            stop(c)

        # 3. Upload to A, visible through B: time from A's 200 to B listing it.
        stop(a)
        a, a_base = start("a")
        b, b_base = start("b")
        latencies = []
        for i in range(args.uploads):
            name = f"visible-{i}"
            filename = upload(a_base, name, "1.0")
            acked = time.time()
            while True:
                page = json.loads(fetch(b_base + f"/simple/{name}/", JSON))
                if any(f["filename"] == filename for f in page["files"]):
                    break
            latencies.append((time.time() - acked) * 1000)
        latencies.sort()
        p50 = statistics.median(latencies)
        p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]

        # 4. Two replicas behind one nginx vs one (both through the same balancer).
        for _, p, _, accept in rows:
            fetch(b_base + p, accept)
        lb_results = []
        for label, p, _, accept in [r for r in rows if "15 MB" not in r[0]]:
            runs = {"two": [], "one": []}
            for r in range(args.rounds):
                print(f"==> balancer, {label}: round {r + 1}/{args.rounds}", flush=True)
                runs["two"].append(wrk(f"http://127.0.0.1:{lb2_port}{p}", accept, args.duration, args.conns, 2))
                runs["one"].append(wrk(f"http://127.0.0.1:{lb1_port}{p}", accept, args.duration, args.conns, 2))
            lb_results.append((label, runs))

        print()
        print(f"Machine: {os.cpu_count()} cores; S3 server (SeaweedFS), nginx, wrk and Larder on the same machine;")
        print(f"wrk -t2 -c{args.conns} -d{args.duration}, {args.rounds} rounds alternating, medians.")
        print()
        print("| warm hits | Larder req/s | nginx req/s | ratio | Larder p50 / p99 ms | nginx p50 / p99 ms | Larder RSS |")
        print("|---|---|---|---|---|---|---|")
        for label, runs, rss in hit_results:
            lr, nr = median_of(runs["larder"], "rps"), median_of(runs["nginx"], "rps")
            print(f"| {label} | {lr:,.0f} | {nr:,.0f} | {lr / nr:.2f} | {median_of(runs['larder'], 'p50'):.2f} / "
                  f"{median_of(runs['larder'], 'p99'):.2f} | {median_of(runs['nginx'], 'p50'):.2f} / "
                  f"{median_of(runs['nginx'], 'p99'):.2f} | {rss / 1024:.1f} MB |")
        print()
        print(f"15 MB blob from the bucket on a local-cache miss: {statistics.median(bucket_mbs):.0f} MB/s (median of {len(bucket_mbs)}).")
        print(f"Upload to A, listed by B ({len(latencies)} uploads, default settings): p50 {p50:.1f} ms, p99 {p99:.1f} ms.")
        print()
        print("| balancer in front of | two replicas req/s | one replica req/s | ratio |")
        print("|---|---|---|---|")
        for label, runs in lb_results:
            two, one = median_of(runs["two"], "rps"), median_of(runs["one"], "rps")
            print(f"| {label} | {two:,.0f} | {one:,.0f} | {two / one:.2f} |")
    finally:
        cleanup()


if __name__ == "__main__":
    main()
