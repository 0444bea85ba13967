#!/usr/bin/env python3
"""Tiny demo upstream for `make run`: echoes the request it received.

Usage: demo_upstream.py [PORT]   (default 9000, listens on 127.0.0.1)

Answers every method on every path with 200 text/plain whose body lists the method, the
path and every request header as received, so the headers ferry injects and the Host it
sends are visible to the client.
"""
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class EchoHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ferry-demo-upstream"

    def __getattr__(self, name):
        # BaseHTTPRequestHandler dispatches to do_<METHOD>; accept any method.
        if name.startswith("do_"):
            return self._echo
        raise AttributeError(name)

    def _read_body(self):
        te = self.headers.get("Transfer-Encoding", "")
        if "chunked" in te.lower():
            total = 0
            while True:
                line = self.rfile.readline(65537)
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return total
                total += len(self.rfile.read(size))
                self.rfile.readline(65537)  # CRLF after chunk data
        length = int(self.headers.get("Content-Length") or 0)
        remaining = length
        while remaining > 0:
            chunk = self.rfile.read(min(remaining, 65536))
            if not chunk:
                break
            remaining -= len(chunk)
        return length - remaining

    def _echo(self):
        try:
            body_len = self._read_body()
        except ValueError:
            self.send_error(400, "bad request body framing")
            return
        lines = [
            f"method: {self.command}",
            f"path: {self.path}",
            f"version: {self.request_version}",
            f"body-bytes: {body_len}",
            "headers:",
        ]
        lines += [f"  {k}: {v}" for k, v in self.headers.items()]
        payload = ("\n".join(lines) + "\n").encode("utf-8", "replace")
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 9000
    server = ThreadingHTTPServer(("127.0.0.1", port), EchoHandler)
    server.daemon_threads = True
    print(f"demo upstream listening on http://127.0.0.1:{port}/", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
