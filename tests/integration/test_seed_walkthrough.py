"""The seed walkthrough (shared/seeds/001): python -m http.server upstream with an
index.html, ferry in front, curl gets the page; upstream stopped -> 502; upstream
back on the same port -> 200 again. Plus the keep-alive part of the walkthrough."""

import os
import subprocess
import sys
import tempfile

import pytest

from harness import (ResponseReader, connect, free_port, wait_closed, wait_for, _can_connect)

PAGE = b"<html><body>Hello!</body></html>\n"


class PyHttpServer:
    def __init__(self, port, directory):
        self.port = port
        self.directory = directory
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            ["/usr/bin/python3", "-m", "http.server", str(self.port), "--bind", "127.0.0.1",
             "--directory", self.directory],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        wait_for(lambda: self.proc.poll() is not None or _can_connect(self.port), 10,
                 what="python http.server accepting")
        assert self.proc.poll() is None, "http.server failed to start on %d" % self.port
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def _curl(url, *extra):
    p = subprocess.run(["curl", "-sS", "--max-time", "10", "-o", "-", "-w", "\n%{http_code}",
                        *extra, url], capture_output=True, timeout=20)
    out = p.stdout
    body, _, code = out.rpartition(b"\n")
    return p.returncode, int(code or b"0"), body, p.stderr


@pytest.fixture
def docroot():
    d = tempfile.mkdtemp(prefix="ferry-seed-")
    with open(os.path.join(d, "index.html"), "wb") as f:
        f.write(PAGE)
    return d


def test_seed_walkthrough_502_and_recovery(ferry_factory, docroot):
    port = free_port()
    srv = PyHttpServer(port, docroot).start()
    try:
        f = ferry_factory("http://127.0.0.1:%d" % port)
        for _ in range(2):  # "We can curl multiple times."
            rc, code, body, err = _curl(f.url("/"))
            assert rc == 0, err
            assert code == 200
            assert body == PAGE

        srv.stop()
        rc, code, body, err = _curl(f.url("/"), "-v")
        assert rc == 0, "curl must get a proper response (not a reset): %r" % err
        assert code == 502
        assert b"< Content-Length:" in err or b"< content-length:" in err.lower()

        srv = PyHttpServer(port, docroot).start()
        rc, code, body, err = _curl(f.url("/"))
        assert rc == 0, err
        assert code == 200 and body == PAGE
    finally:
        srv.stop()


def test_seed_walkthrough_keepalive_semantics(ferry_factory, docroot):
    """HTTP/1.0 upstream (SimpleHTTP closes after each response); the client side
    follows its own keep-alive rules regardless."""
    port = free_port()
    srv = PyHttpServer(port, docroot).start()
    try:
        f = ferry_factory("http://127.0.0.1:%d" % port)
        s = connect(f.port)
        try:
            rd = ResponseReader(s)
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            r = rd.read_final()
            assert r.status == 200 and r.body == PAGE
            s.sendall(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
            r = rd.read_final()
            assert r.status == 200 and r.body == PAGE
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            r = rd.read_final()
            assert r.status == 200 and r.body == PAGE
            assert rd.at_eof() or wait_closed(s) == b""
        finally:
            s.close()

        s = connect(f.port)
        try:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Close\r\n\r\n")
            rd = ResponseReader(s)
            r = rd.read_final()
            assert r.status == 200 and r.body == PAGE
            assert rd.at_eof() or wait_closed(s) == b""
        finally:
            s.close()

        # curl reuses the client connection for two URLs
        p = subprocess.run(["curl", "-sS", "-v", "--max-time", "10", "-o", "/dev/null",
                            "-o", "/dev/null", f.url("/"), f.url("/index.html")],
                           capture_output=True, timeout=20)
        assert p.returncode == 0, p.stderr
        assert b"Re-using existing connection" in p.stderr or b"Reusing existing" in p.stderr
    finally:
        srv.stop()
