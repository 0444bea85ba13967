"""Upstream failures: refused -> 502, silent -> 504, broken framing -> 502,
death mid-body -> client connection closed with a visibly short body."""

import threading
import time

import pytest

from harness import (IncompleteResponse, ResponseReader, SockReader, connect, free_port,
                     pattern_bytes, simple_request, wait_closed)

ERR_ALLOWED = ("upstream", "connect", "refused", "timeout", "timed out", "502", "504")


def _one(port, req=None, timeout=10):
    s = connect(port, timeout=timeout)
    try:
        s.sendall(req or simple_request("GET", "/x"))
        return ResponseReader(s, timeout=timeout).read_final()
    finally:
        s.close()


def _check_error_response(r, status):
    assert r.status == status, r.raw
    cl = r.header("Content-Length")
    assert cl is not None, "error response must have Content-Length"
    assert int(cl) == len(r.body)
    assert r.header("Transfer-Encoding") is None


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


def test_silent_upstream_504(ferry_factory, raw_upstream):
    release = threading.Event()

    def handler(c):
        SockReader(c).read_head()
        release.wait(15)  # accept and read, never answer

    raw_upstream.handler = handler
    try:
        f = ferry_factory(raw_upstream.url, "--upstream-timeout", "1s")
        t0 = time.monotonic()
        r = _one(f.port, timeout=10)
        elapsed = time.monotonic() - t0
    finally:
        release.set()
    _check_error_response(r, 504)
    assert 0.9 <= elapsed < 6, "504 after %.2fs with --upstream-timeout 1s" % elapsed


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


def test_upstream_closes_without_response_502(ferry_factory, raw_upstream):
    def handler(c):
        SockReader(c).read_head()
        # close without a byte

    raw_upstream.handler = handler
    f = ferry_factory(raw_upstream.url)
    _check_error_response(_one(f.port), 502)


@pytest.mark.parametrize("resp", [
    b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\nhello",
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"GARBAGE\r\n\r\n",
    b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n",
], ids=["cl-abc", "cl-conflict", "cl-and-te", "garbage-status", "bad-status-code"])
def test_broken_upstream_framing_502(ferry_factory, raw_upstream, resp):
    def handler(c):
        SockReader(c).read_head()
        c.sendall(resp)
        try:
            SockReader(c, timeout=3).read_head()
        except (EOFError, OSError):
            pass

    raw_upstream.handler = handler
    f = ferry_factory(raw_upstream.url)
    _check_error_response(_one(f.port), 502)


def test_broken_upstream_connection_discarded(ferry_factory, raw_upstream):
    """After a broken-framing response, the next request uses a new upstream connection."""
    state = {"n": 0}

    def handler(c):
        rd = SockReader(c, timeout=5)
        while True:
            try:
                rd.read_head()
            except (EOFError, OSError):
                return
            state["n"] += 1
            if state["n"] == 1:
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: zz\r\n\r\n")
            else:
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    raw_upstream.handler = handler
    f = ferry_factory(raw_upstream.url)
    _check_error_response(_one(f.port), 502)
    r = _one(f.port)
    assert r.status == 200 and r.body == b"ok"
    assert raw_upstream.conn_count == 2


def test_upstream_dies_mid_body_content_length(ferry_factory, raw_upstream):
    full = 200000
    part = pattern_bytes(60000)

    def handler(c):
        SockReader(c).read_head()
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % full + part)
        c.shutdown(2)

    raw_upstream.handler = handler
    f = ferry_factory(raw_upstream.url)
    s = connect(f.port, timeout=10)
    try:
        s.sendall(simple_request("GET", "/x"))
        rd = ResponseReader(s, timeout=10)
        r = rd.read_response(allow_incomplete=True)
        assert r.status == 200
        assert r.header("Content-Length") == str(full)
        assert not r.complete, "client must never see a complete body"
        assert len(r.body) < full
        assert r.body == part[:len(r.body)]
        # connection is closed by ferry (bounded wait), not held open
        assert rd.at_eof() or wait_closed(s, timeout=5) == b""
    finally:
        s.close()


def test_upstream_dies_mid_body_chunked(ferry_factory, raw_upstream):
    def handler(c):
        SockReader(c).read_head()
        c.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                  b"a\r\n0123456789\r\n" + b"64\r\n" + b"x" * 40)
        c.shutdown(2)

    raw_upstream.handler = handler
    f = ferry_factory(raw_upstream.url)
    s = connect(f.port, timeout=10)
    try:
        s.sendall(simple_request("GET", "/x"))
        rd = ResponseReader(s, timeout=10)
        try:
            r = rd.read_response(allow_incomplete=True)
        except IncompleteResponse as e:  # EOF inside the head or a chunk line
            r = e.partial
        if r is not None:
            assert r.status == 200
            assert not r.complete, "no terminating 0-chunk may be sent: %r" % r.raw
        assert rd.at_eof() or wait_closed(s, timeout=5) == b""
        assert b"\r\n0\r\n\r\n" not in rd.buf
    finally:
        s.close()


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
