#!/usr/bin/env python3
"""Checks which route of gen_routes.py's tables serves the benchmark's requests.

  route_check.py FERRY_BIN [GEN_ROUTES_PY]

Starts a throwaway upstream (a thread here), then ferry with `gen_routes.py --tag-routes` (every
route sets `X-Route: N`, N its 1-based place in the file), and sends the requests the harness
sends: GET /small, GET /large and POST /post with `Host: 127.0.0.1:PORT` (wrk's default Host)
and without a port. They must be answered by route 510 of the 1,000-route file (block 50's
`path-prefix: /`) and by route 1 of the single-route file; a host in no block must fall to the
catch-all, route 1,000. Exit 0 and one line per check, or 1.
"""
import http.server
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading

from benchlib import start_ferry


class Upstream(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def reply(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            self.rfile.read(n)
        body = b"ok"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = reply

    def log_message(self, *args):
        pass


def request(port, method, path, host, body=b""):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    req = "%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n" % (method, path, host)
    if body:
        req += "Content-Length: %d\r\n" % len(body)
    s.sendall(req.encode() + b"\r\n" + body)
    data = b""
    while True:
        d = s.recv(65536)
        if not d:
            break
        data += d
    s.close()
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    status = int(head.split()[1])
    m = re.search(r"(?im)^x-route:\s*(\d+)", head)
    return status, int(m.group(1)) if m else None


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ferry = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "..", "build", "ferry")
    gen = sys.argv[2] if len(sys.argv) > 2 else os.path.join(here, "gen_routes.py")
    up = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    threading.Thread(target=up.serve_forever, daemon=True).start()
    up_port = up.server_address[1]
    failed = 0
    with tempfile.TemporaryDirectory() as d:
        for single, want in ((False, 510), (True, 1)):
            cfg = os.path.join(d, "c.yaml")
            with open(cfg, "w") as f:
                subprocess.run([sys.executable, gen, "--listen-port", "0", "--upstream-port", str(up_port),
                                "--tag-routes"] + (["--single"] if single else []), stdout=f, check=True)
            p, port = start_ferry([ferry, "-c", cfg])
            try:
                if port is None:
                    print("route_check: ferry did not start")
                    return 1
                checks = [("GET", "/small", "127.0.0.1:%d" % port, b"", want),
                          ("GET", "/large", "127.0.0.1:%d" % port, b"", want),
                          ("POST", "/post", "127.0.0.1:%d" % port, b"p" * 4096, want),
                          ("GET", "/small", "127.0.0.1", b"", want),
                          ("GET", "/small", "elsewhere.test", b"", 1 if single else 1000)]
                name = "1-route" if single else "1000-route"
                for method, path, host, body, w in checks:
                    st, got = request(port, method, path, host, body)
                    ok = st == 200 and got == w
                    failed += not ok
                    print("route_check: %-10s %-4s %-6s Host %-16s -> HTTP %d, route %s (want %d) %s"
                          % (name, method, path, host, st, got, w, "ok" if ok else "WRONG"))
            finally:
                p.terminate()
                p.wait()
    up.shutdown()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
