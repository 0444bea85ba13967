"""Upstream failures: refused -> 502, --upstream-timeout in milliseconds -> 504, a
close-delimited body ends normally when the upstream closes, and ferry keeps serving after
upstream errors. Closing without a response, broken heads, silence and death mid-body are in
test_upstream_faults.py."""

import threading
import time

from harness import (ResponseReader, SockReader, connect, expect_error_response, free_port,
                     simple_request)


def _one(port, req=None, timeout=10):
    s = connect(port, timeout=timeout)
    try:
        s.sendall(req or simple_request("GET", "/x"))
        return ResponseReader(s, timeout=timeout).read_final()
    finally:
        s.close()


def _check_error_response(r, status):
    assert r.status == status, r.raw
    expect_error_response(r, status)


def test_upstream_down_502(ferry_factory):
    f = ferry_factory("http://127.0.0.1:%d" % free_port())
    r = _one(f.port)
    _check_error_response(r, 502)
    # ferry keeps serving (and keeps answering 502)
    _check_error_response(_one(f.port, simple_request("POST", "/y", body=b"abc")), 502)


def test_upstream_down_502_keeps_client_connection_usable(ferry_factory):
    f = ferry_factory("http://127.0.0.1:%d" % free_port())
    s = connect(f.port)
    try:
        rd = ResponseReader(s)
        for _ in range(2):
            s.sendall(simple_request("GET", "/x"))
            r = rd.read_final()
            _check_error_response(r, 502)
            if "close" in (r.header("Connection") or "").lower():
                break
    finally:
        s.close()


def test_silent_upstream_504_ms_syntax(ferry_factory, raw_upstream):
    release = threading.Event()

    def handler(c):
        SockReader(c).read_head()
        release.wait(15)

    raw_upstream.handler = handler
    try:
        f = ferry_factory(raw_upstream.url, "--upstream-timeout", "500ms")
        t0 = time.monotonic()
        r = _one(f.port)
        elapsed = time.monotonic() - t0
    finally:
        release.set()
    _check_error_response(r, 504)
    assert 0.4 <= elapsed < 5


def test_upstream_dies_mid_body_close_delimited(ferry_factory, raw_upstream):
    """Counterpart: a close-delimited upstream body IS complete when the upstream
    closes, so the client gets all of it (re-framed with a terminating 0-chunk)."""

    def handler(c):
        SockReader(c).read_head()
        c.sendall(b"HTTP/1.1 200 OK\r\n\r\n" + b"y" * 5000)
        c.shutdown(2)

    raw_upstream.handler = handler
    f = ferry_factory(raw_upstream.url)
    r = _one(f.port)
    assert r.status == 200 and r.body == b"y" * 5000


def test_ferry_survives_after_upstream_errors(ferry_factory, raw_upstream):
    calls = {"n": 0}

    def handler(c):
        rd = SockReader(c, timeout=5)
        try:
            rd.read_head()
        except (EOFError, OSError):
            return
        calls["n"] += 1
        if calls["n"] % 2:
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort")
            c.shutdown(2)
        else:
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")

    raw_upstream.handler = handler
    f = ferry_factory(raw_upstream.url)
    for i in range(6):
        s = connect(f.port)
        try:
            s.sendall(simple_request("GET", "/n%d" % i))
            r = ResponseReader(s).read_final(allow_incomplete=True)
            if i % 2 == 0:
                assert not r.complete
            else:
                assert r.status == 200 and r.body == b"ok"
        finally:
            s.close()
    assert f.running
