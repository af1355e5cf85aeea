#!/usr/bin/env python3
"""A latency proxy that forwards Range (stdlib only): every request waits DELAY_MS, then is
passed to UPSTREAM_BASE with its Range header, and the answer (200, 206, 404, ...) comes back
as it is. It counts the body bytes it sent; `GET /__bytes` answers the running total.

usage: range_proxy.py LISTEN_PORT UPSTREAM_BASE DELAY_MS
"""
import http.server
import sys
import threading
import time
import urllib.error
import urllib.request

PORT, UPSTREAM, DELAY = int(sys.argv[1]), sys.argv[2].rstrip("/"), int(sys.argv[3]) / 1000.0
HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-authorization", "host"}
SENT = [0]
LOCK = threading.Lock()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _forward(self, method):
        if self.path == "/__bytes":
            body = str(SENT[0]).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        time.sleep(DELAY)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
        req = urllib.request.Request(UPSTREAM + self.path, headers=headers, method=method)
        try:
            resp = urllib.request.urlopen(req, timeout=120)
            status, body, resp_headers = resp.status, resp.read(), resp.headers
        except urllib.error.HTTPError as e:
            status, body, resp_headers = e.code, e.read(), e.headers
        self.send_response(status)
        for k, v in resp_headers.items():
            if k.lower() not in HOP and k.lower() != "content-length":
                self.send_header(k, v)
        length = resp_headers.get("Content-Length") if method == "HEAD" else str(len(body))
        if length is not None:
            self.send_header("Content-Length", length)
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(body)
            with LOCK:
                SENT[0] += len(body)

    def do_GET(self):
        self._forward("GET")

    def do_HEAD(self):
        self._forward("HEAD")


http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
