"""Keep-alive on both sides: client connection reuse per HTTP/1.0/1.1 rules and
upstream connection pooling."""

import pytest

from harness import (ResponseReader, connect, is_open_after, pattern_bytes, simple_request,
                     wait_closed)


def test_sequential_requests_one_client_and_one_upstream_connection(ferry, upstream):
    n = 10
    s = connect(ferry.port)
    try:
        rd = ResponseReader(s)
        for i in range(n):
            s.sendall(simple_request("GET", "/size/%d" % (100 + i)))
            r = rd.read_final()
            assert r.status == 200 and len(r.body) == 100 + i
            assert "close" not in (r.header("Connection") or "").lower()
    finally:
        s.close()
    reqs = upstream.wait_requests(n)
    assert len(reqs) == n
    assert len({q.conn_id for q in reqs}) == 1, "upstream connection not reused"
    assert upstream.conn_count == 1
    assert ferry.stop() == 0
    ferry.assert_no_unexpected_errors()


def test_upstream_pool_shared_across_client_connections(ferry, upstream):
    n = 5
    for i in range(n):
        s = connect(ferry.port)
        try:
            s.sendall(simple_request("GET", "/x%d" % i))
            assert ResponseReader(s).read_final().status == 200
        finally:
            s.close()
    reqs = upstream.wait_requests(n)
    assert len({q.conn_id for q in reqs}) == 1, \
        "per-worker pool should reuse the idle upstream connection (%d used)" \
        % len({q.conn_id for q in reqs})


def test_keepalive_with_request_bodies_and_mixed_framing(ferry, upstream):
    s = connect(ferry.port)
    try:
        rd = ResponseReader(s)
        for i, chunked in enumerate([False, True, False, True]):
            body = b"b%d" % i * (i * 1000 + 1)
            s.sendall(simple_request("POST", "/echo", body=body, chunked=chunked))
            r = rd.read_final()
            assert r.status == 200 and r.body == body
            s.sendall(simple_request("GET", "/chunked/%d" % (i * 5000)))
            r = rd.read_final()
            assert r.status == 200 and len(r.body) == i * 5000
    finally:
        s.close()
    assert len({q.conn_id for q in upstream.wait_requests(8)}) == 1


def test_http10_without_keepalive_closes(ferry, upstream):
    s = connect(ferry.port)
    try:
        s.sendall(b"GET /size/10 HTTP/1.0\r\nHost: x\r\n\r\n")
        rd = ResponseReader(s)
        r = rd.read_final()
        assert r.status == 200 and len(r.body) == 10
        assert rd.at_eof() or wait_closed(s) == b""
    finally:
        s.close()


def test_http10_chunked_upstream_sent_close_delimited(ferry, upstream):
    s = connect(ferry.port)
    try:
        s.sendall(b"GET /chunked/70000 HTTP/1.0\r\nHost: x\r\n\r\n")
        rd = ResponseReader(s)
        r = rd.read_final()
        assert r.status == 200
        assert r.header("Transfer-Encoding") is None, "no chunked framing to an HTTP/1.0 client"
        assert r.body == pattern_bytes(70000)
        assert rd.at_eof() or wait_closed(s) == b""
    finally:
        s.close()


def test_http10_with_keepalive_stays_open(ferry, upstream):
    s = connect(ferry.port)
    try:
        rd = ResponseReader(s)
        for i in range(3):
            s.sendall(b"GET /size/%d HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n" % (10 + i))
            r = rd.read_final()
            assert r.status == 200 and len(r.body) == 10 + i
            assert r.framing == "length", "1.0 keep-alive needs a Content-Length framed response"
            assert "keep-alive" in (r.header("Connection") or "").lower(), \
                "HTTP/1.0 keep-alive response must say Connection: keep-alive"
        # a chunked upstream response to a 1.0 keep-alive client cannot be chunked
        s.sendall(b"GET /chunked/100 HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n")
        r = rd.read_final()
        assert r.status == 200 and len(r.body) == 100
        assert r.header("Transfer-Encoding") is None
    finally:
        s.close()


def test_http10_keepalive_case_insensitive(ferry, upstream):
    s = connect(ferry.port)
    try:
        rd = ResponseReader(s)
        s.sendall(b"GET /a HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
        assert rd.read_final().status == 200
        s.sendall(b"GET /b HTTP/1.0\r\n\r\n")
        assert rd.read_final().status == 200
        assert rd.at_eof() or wait_closed(s) == b""
    finally:
        s.close()


@pytest.mark.parametrize("value", ["close", "Close", "keep-alive, close"])
def test_connection_close_honoured(ferry, upstream, value):
    s = connect(ferry.port)
    try:
        s.sendall(simple_request("GET", "/size/5", headers=[("Connection", value)]))
        rd = ResponseReader(s)
        r = rd.read_final()
        assert r.status == 200 and len(r.body) == 5
        assert rd.at_eof() or wait_closed(s) == b""
    finally:
        s.close()


def test_connection_close_not_pipelined_further(ferry, upstream):
    """A request after one with Connection: close on the same send is not answered."""
    s = connect(ferry.port)
    try:
        s.sendall(simple_request("GET", "/first", headers=[("Connection", "close")]) +
                  simple_request("GET", "/second"))
        data = wait_closed(s)
    finally:
        s.close()
    assert data.count(b"HTTP/1.1 200") == 1, data
    assert all(q.path != "/second" for q in upstream.requests)


def test_http11_stays_open_without_connection_header(ferry, upstream):
    s = connect(ferry.port)
    try:
        s.sendall(simple_request("GET", "/x"))
        assert ResponseReader(s).read_final().status == 200
        assert is_open_after(s, 0.3), "HTTP/1.1 connection closed without reason"
    finally:
        s.close()


def test_idle_timeout_closes_silently(ferry_factory, upstream):
    f = ferry_factory(upstream.url, "--idle-timeout", "1s")
    s = connect(f.port)
    try:
        s.sendall(simple_request("GET", "/x"))
        rd = ResponseReader(s)
        assert rd.read_final().status == 200
        # closed silently (no 408 or other bytes) within a bounded time
        assert wait_closed(s, timeout=6) == b""
    finally:
        s.close()


def test_pooled_upstream_connection_closed_by_upstream_is_handled(ferry, upstream):
    """The upstream closes its idle keep-alive connection; the next request must
    still succeed (ferry notices the dead pooled connection)."""
    s = _send(ferry.port, "/a")
    try:
        assert ResponseReader(s).read_final().status == 200
    finally:
        s.close()
    upstream.wait_requests(1)
    # upstream drops every open connection (like an upstream idle timeout)
    import socket as _s
    with upstream.lock:
        conns = list(upstream.open_conns)
    for c in conns:
        try:
            c.shutdown(_s.SHUT_RDWR)
        except OSError:
            pass
    for i in range(3):
        s = _send(ferry.port, "/b%d" % i)
        try:
            r = ResponseReader(s).read_final()
        finally:
            s.close()
        assert r.status == 200, "request after upstream closed pooled conn: %r" % r.raw


def _send(port, path):
    s = connect(port)
    s.sendall(simple_request("GET", path))
    return s
