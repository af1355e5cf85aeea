#!/usr/bin/env python3
"""An HTTP proxy that adds a fixed latency to every request (stdlib only), so the load
benchmark can time clients against an upstream that is not on the same machine.

usage: delay_proxy.py LISTEN_PORT UPSTREAM_BASE DELAY_MS
"""
import http.server
import sys
import time
import urllib.error
import urllib.request

PORT, UPSTREAM, DELAY = int(sys.argv[1]), sys.argv[2].rstrip("/"), int(sys.argv[3]) / 1000.0
HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-authorization"}
# Range is not forwarded: the proxy answers whole files, like an upstream without range support.
DROP = {"range", "if-range"}


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _forward(self, method):
        time.sleep(DELAY)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP | DROP and k.lower() != "host"}
        req = urllib.request.Request(UPSTREAM + self.path, headers=headers, method=method)
        try:
            resp = urllib.request.urlopen(req, timeout=60)
            status, body, resp_headers = resp.status, resp.read(), resp.headers
        except urllib.error.HTTPError as e:
            status, body, resp_headers = e.code, e.read(), e.headers
        self.send_response(status)
        for k, v in resp_headers.items():
            if k.lower() not in HOP and k.lower() not in ("content-length", "accept-ranges"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(body)

    def do_GET(self):
        self._forward("GET")

    def do_HEAD(self):
        self._forward("HEAD")


http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
