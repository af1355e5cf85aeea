"""Page weight and render time of the project page for a 4,000-file project (issue 15).

Run with the test venv's python (it needs selenium; chromium and chromedriver from Debian):
    cargo build --release && .venv-e2e/bin/python benches/ui/project_page.py
Starts a loopback upstream whose JSON page lists 4,000 files (1,000 versions, 4 files each),
a release Larder in front of it, warms the page, then measures:
  - the page's bytes (HTML, and gzip-compressed for comparison),
  - server time for the page over 50 requests (p50 / p99), from curl-like timing in Python,
  - browser time in headless Chromium: navigation start to DOMContentLoaded and to load (median of 5).
Measures the default page (newest 30 versions) and `?all=1`; prints a Markdown table.
"""

import gzip
import http.server
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LARDER = os.environ.get("LARDER_BIN", os.path.join(ROOT, "target/release/larder"))
FILES = 4000


def page_json(base):
    files = []
    for i in range(FILES):
        version = f"{i // 4 // 100}.{i // 4 % 100}.0"
        tags = ["py3-none-any.whl", "cp312-cp312-manylinux_2_17_x86_64.whl",
                "cp312-cp312-win_amd64.whl", "tar.gz"][i % 4]
        name = f"bigproject-{version}.tar.gz" if tags == "tar.gz" else f"bigproject-{version}-{tags}"
        files.append({
            "filename": name,
            "url": f"{base}/files/{name}",
            "hashes": {"sha256": f"{i:064x}"},
            "requires-python": ">=3.9",
            "size": 100_000 + i,
            "upload-time": "2025-01-02T03:04:05.000000Z",
        })
    return json.dumps({"meta": {"api-version": "1.1"}, "name": "bigproject", "files": files,
                       "versions": sorted({f["filename"].split("-")[1].removesuffix(".tar.gz") for f in files})}).encode()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    up_port = free_port()
    base = f"http://127.0.0.1:{up_port}"
    body = page_json(base)

    class Upstream(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path.rstrip("/") == "/simple/bigproject":
                self.send_response(200)
                self.send_header("content-type", "application/vnd.pypi.simple.v1+json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            else:
                self.send_error(404)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", up_port), Upstream)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    port = free_port()
    data = tempfile.mkdtemp(prefix="larder-ui-bench-")
    larder = subprocess.Popen(
        [LARDER, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", data,
         "--upstream", f"{base}/simple/", "--metadata-prefetch", "false"],
        env={**os.environ, "LARDER_LOG": "warn", "LARDER_CONFIG": "/dev/null"})
    url = f"http://127.0.0.1:{port}/-/ui/packages/bigproject"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/-/health", timeout=1)
                break
            except OSError:
                time.sleep(0.05)
        urllib.request.urlopen(url).read()  # warms the page cache
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
        options = webdriver.ChromeOptions()
        options.binary_location = "/usr/bin/chromium"
        for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
            options.add_argument(arg)
        driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
        print("| page | bytes | server p50 / p99 | browser DOMContentLoaded | browser load |")
        print("|---|---|---|---|---|")
        try:
            for label, page in ((f"{FILES:,} files, default (newest 30 versions)", url),
                                (f"{FILES:,} files, ?all=1", url + "?all=1")):
                html = urllib.request.urlopen(page).read()
                times = []
                for _ in range(50):
                    t = time.perf_counter()
                    urllib.request.urlopen(page).read()
                    times.append((time.perf_counter() - t) * 1000)
                times.sort()
                server_p50, server_p99 = statistics.median(times), times[int(len(times) * 0.99) - 1]
                dcl, load = [], []
                for _ in range(5):
                    driver.get(page)
                    timing = driver.execute_script(
                        "const t = performance.getEntriesByType('navigation')[0];"
                        "return [t.domContentLoadedEventEnd, t.loadEventEnd];")
                    dcl.append(timing[0])
                    load.append(timing[1])
                print(f"| {label} | {len(html) / 1024:,.0f} KiB ({len(gzip.compress(html)) / 1024:,.0f} KiB gzipped) "
                      f"| {server_p50:.1f} / {server_p99:.1f} ms | {statistics.median(dcl):.0f} ms "
                      f"| {statistics.median(load):.0f} ms |")
        finally:
            driver.quit()
    finally:
        larder.terminate()
        larder.wait()
        server.shutdown()


if __name__ == "__main__":
    sys.exit(main())
