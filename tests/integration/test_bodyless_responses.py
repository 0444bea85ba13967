"""HEAD, 204 and 304 responses carry no body and keep-alive continues after them."""

import pytest

from harness import ResponseReader, SockReader, connect, pattern_bytes, simple_request


def _check_next_ok(s, rd):
    s.sendall(simple_request("GET", "/size/9"))
    r = rd.read_final()
    assert r.status == 200 and r.body == pattern_bytes(9), r.raw


@pytest.mark.parametrize("path", ["/size/1000", "/chunked/1000", "/stream/1000"])
def test_head_has_no_body(ferry, upstream, path):
    s = connect(ferry.port)
    try:
        s.sendall(simple_request("HEAD", path))
        rd = ResponseReader(s)
        r = rd.read_final(head=True)
        assert r.status == 200
        if path != "/chunked/1000":
            assert r.header("Content-Length") == "1000"
        _check_next_ok(s, rd)  # would fail to parse if a body had been sent
    finally:
        s.close()
    assert upstream.requests[0].method == "HEAD"


@pytest.mark.parametrize("code", [204, 304])
def test_204_304_no_body_and_keepalive(ferry, upstream, code):
    s = connect(ferry.port)
    try:
        rd = ResponseReader(s)
        for _ in range(2):
            s.sendall(simple_request("GET", "/status/%d" % code))
            r = rd.read_final()
            assert r.status == code
            assert r.header("Transfer-Encoding") is None, \
                "%d must not be sent with Transfer-Encoding" % code
            if code == 204:
                assert r.header("Content-Length") in (None, "0")
            _check_next_ok(s, rd)
    finally:
        s.close()


def test_head_with_upstream_chunked_no_body(ferry_factory, raw_upstream):
    """HEAD answered by upstream with chunked headers (no body): ferry must not wait for one."""

    def handler(c):
        rd = SockReader(c)
        while True:
            try:
                m, t, h, b = rd.read_request()
            except (EOFError, OSError):
                return
            if m == "HEAD":
                c.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            else:
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    raw_upstream.handler = handler
    f = ferry_factory(raw_upstream.url)
    s = connect(f.port)
    try:
        rd = ResponseReader(s)
        s.sendall(simple_request("HEAD", "/h") + simple_request("GET", "/g"))
        r1 = rd.read_final(head=True)
        r2 = rd.read_final()
        assert r1.status == 200
        assert r2.status == 200 and r2.body == b"ok"
    finally:
        s.close()


def test_304_with_content_length_from_upstream(ferry_factory, raw_upstream):
    """A 304 may carry the Content-Length of the resource but never a body."""

    def handler(c):
        rd = SockReader(c)
        while True:
            try:
                m, t, h, b = rd.read_request()
            except (EOFError, OSError):
                return
            if t == "/cached":
                c.sendall(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 1234\r\nETag: \"x\"\r\n\r\n")
            else:
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    raw_upstream.handler = handler
    f = ferry_factory(raw_upstream.url)
    s = connect(f.port)
    try:
        rd = ResponseReader(s)
        s.sendall(simple_request("GET", "/cached", headers=[("If-None-Match", '"x"')]))
        r1 = rd.read_final()
        assert r1.status == 304 and r1.header("ETag") == '"x"'
        s.sendall(simple_request("GET", "/g"))
        r2 = rd.read_final()
        assert r2.status == 200 and r2.body == b"ok"
    finally:
        s.close()
