"""Bodies are streamed (not buffered whole) in both directions, and aborted
exchanges do not poison the upstream pool."""

import threading

import pytest

from harness import (ResponseReader, SockReader, connect, pattern_bytes, simple_request,
                     wait_closed)


@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_response_streamed_before_upstream_finishes(ferry_factory, raw_upstream, framing):
    """Upstream sends the head + first piece and then waits until the client has
    seen that piece; a buffering proxy deadlocks (bounded by timeouts)."""
    client_got_first = threading.Event()
    first, rest = b"A" * 1000, b"B" * 5000

    def handler(c):
        rd = SockReader(c)
        rd.read_request()
        if framing == "length":
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (len(first) + len(rest))
                      + first)
        else:
            c.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                      + b"%x\r\n" % len(first) + first + b"\r\n")
        if not client_got_first.wait(10):
            return
        if framing == "length":
            c.sendall(rest)
        else:
            c.sendall(b"%x\r\n" % len(rest) + rest + b"\r\n0\r\n\r\n")
        try:
            rd.read_head()
        except (EOFError, OSError):
            pass

    raw_upstream.handler = handler
    f = ferry_factory(raw_upstream.url)
    s = connect(f.port, timeout=10)
    try:
        s.sendall(simple_request("GET", "/stream"))
        rr = ResponseReader(s, timeout=5)
        head = rr.read_head()
        assert head.status == 200
        # wait (bounded) for the first piece of the body
        while first not in bytes(rr.buf):
            assert rr._fill(), "connection closed before first piece"
        client_got_first.set()
        rr.buf = bytearray(head.raw) + rr.buf
        r = rr.read_response()
        assert r.body == first + rest
    finally:
        client_got_first.set()
        s.close()


@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_request_body_streamed_before_client_finishes(ferry_factory, raw_upstream, framing):
    upstream_got_first = threading.Event()
    first, rest = b"a" * 1000, b"b" * 3000
    result = {}

    def handler(c):
        rd = SockReader(c)
        head = rd.read_head()
        got = bytearray()
        if framing == "length":
            for piece in rd.iter_exact(len(first) + len(rest)):
                got += piece
                if len(got) >= len(first):
                    upstream_got_first.set()
        else:
            for piece in rd.iter_chunked():
                got += piece
                if len(got) >= len(first):
                    upstream_got_first.set()
        result["body"] = bytes(got)
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        try:
            rd.read_head()
        except (EOFError, OSError):
            pass

    raw_upstream.handler = handler
    f = ferry_factory(raw_upstream.url)
    s = connect(f.port, timeout=10)
    try:
        if framing == "length":
            s.sendall(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                      % (len(first) + len(rest)) + first)
        else:
            s.sendall(b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                      + b"%x\r\n" % len(first) + first + b"\r\n")
        assert upstream_got_first.wait(5), "ferry buffered the request body instead of streaming"
        if framing == "length":
            s.sendall(rest)
        else:
            s.sendall(b"%x\r\n" % len(rest) + rest + b"\r\n0\r\n\r\n")
        r = ResponseReader(s).read_final()
        assert r.status == 200 and r.body == b"ok"
    finally:
        upstream_got_first.set()
        s.close()
    assert result["body"] == first + rest


def test_client_abort_mid_upload_does_not_poison_pool(ferry, upstream):
    s = connect(ferry.port)
    s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + b"z" * 1000)
    s.close()
    # a following request (fresh client connection) must work and the upstream must
    # receive it intact (not glued onto the aborted body)
    for i in range(3):
        c = connect(ferry.port)
        try:
            c.sendall(simple_request("POST", "/echo", body=b"after-%d" % i))
            r = ResponseReader(c).read_final()
        finally:
            c.close()
        assert r.status == 200 and r.body == b"after-%d" % i


def test_client_abort_mid_download_does_not_poison_pool(ferry, upstream):
    s = connect(ferry.port)
    s.sendall(simple_request("GET", "/size/%d" % (8 << 20)))
    rr = ResponseReader(s)
    assert rr.read_head().status == 200
    s.close()
    for i in range(3):
        c = connect(ferry.port)
        try:
            c.sendall(simple_request("GET", "/size/%d" % (10 + i)))
            r = ResponseReader(c).read_final()
        finally:
            c.close()
        assert r.status == 200 and r.body == pattern_bytes(10 + i)


def test_client_half_close_after_request_gets_all_or_nothing(ferry, upstream):
    """A client that sends its request and shuts down its write side has hung up as far as
    ferry can tell (issue 5, defect 10: like nginx, the exchange is abandoned while ferry still
    waits for the upstream). If the response had already started it is sent whole; never a part
    of one."""
    s = connect(ferry.port)
    try:
        s.sendall(simple_request("GET", "/size/100", headers=[("Connection", "close")]))
        s.shutdown(1)
        data = wait_closed(s)
    finally:
        s.close()
    if data:
        assert data.startswith(b"HTTP/1.1 200")
        assert data.endswith(pattern_bytes(100))
