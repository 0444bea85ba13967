"""Methods and bodies: every method forwarded as received, bodies of 0 B, 1 B and
10 MB framed with Content-Length and chunked, in both directions (hash-checked)."""

import pytest

from harness import (ResponseReader, SockReader, connect, encode_chunked, pattern_bytes, sha256,
                     simple_request)

METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PURGE", "FOOBAR"]
TEN_MB = 10 * 1024 * 1024


def _exchange(port, req_bytes, head=False, timeout=15):
    s = connect(port, timeout=timeout)
    try:
        s.sendall(req_bytes)
        return ResponseReader(s, timeout=timeout).read_final(head=head)
    finally:
        s.close()


@pytest.mark.parametrize("method", METHODS)
def test_method_without_body(ferry, upstream, method):
    r = _exchange(ferry.port, simple_request(method, "/echo?m=%s" % method), head=method == "HEAD")
    assert r.status == 200, r.raw
    got = upstream.wait_requests(1)[-1]
    assert got.method == method
    assert got.path == "/echo?m=%s" % method, "target must be forwarded as received"
    assert got.version == "HTTP/1.1", "upstream request must be HTTP/1.1"
    assert got.body == b""
    te = got.header("Transfer-Encoding")
    assert te is None, "bodiless %s gained Transfer-Encoding: %r" % (method, te)
    assert got.header("Content-Length") in (None, "0")
    if method != "HEAD":
        assert r.header("X-Echo-Method") == method
        assert r.body == b""


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_method_with_body(ferry, upstream, method, framing):
    body = ("payload for %s\n" % method).encode() * 3
    req = simple_request(method, "/echo", body=body, chunked=framing == "chunked",
                         headers=[("Content-Type", "application/x-test")])
    r = _exchange(ferry.port, req, head=method == "HEAD")
    assert r.status == 200, r.raw
    got = upstream.wait_requests(1)[-1]
    assert got.method == method
    assert got.body == body
    if framing == "chunked":
        assert (got.header("Transfer-Encoding") or "").lower() == "chunked" or \
            got.header("Content-Length") == str(len(body))
    else:
        assert got.header("Content-Length") == str(len(body))
        assert got.header("Transfer-Encoding") is None
    if method == "HEAD":
        assert r.body == b""
        assert r.header("Content-Length") == str(len(body))
    else:
        assert r.body == body
        assert r.header("Content-Type") == "application/x-test"


@pytest.mark.parametrize("size", [0, 1, TEN_MB], ids=["0B", "1B", "10MB"])
@pytest.mark.parametrize("req_framing", ["length", "chunked"])
@pytest.mark.parametrize("resp_framing", ["length", "chunked"])
def test_upload_echo_sizes(ferry, upstream, size, req_framing, resp_framing):
    body = pattern_bytes(size, seed=size)
    path = "/echo" if resp_framing == "length" else "/echo-chunked"
    req = simple_request("POST", path, body=body, chunked=req_framing == "chunked")
    r = _exchange(ferry.port, req, timeout=30)
    assert r.status == 200
    got = upstream.wait_requests(1)[-1]
    assert len(got.body) == size
    assert sha256(got.body) == sha256(body), "request body corrupted on the way upstream"
    if req_framing == "chunked" and size > 0:
        assert (got.header("Transfer-Encoding") or "").lower() == "chunked", \
            "spec: chunked request bodies are re-framed as chunked"
    assert len(r.body) == size
    assert sha256(r.body) == sha256(body), "response body corrupted on the way back"
    if resp_framing == "length":
        assert r.framing == "length"
        assert r.header("Content-Length") == str(size), "Content-Length must be kept"
    else:
        assert r.framing == "chunked", "chunked upstream response must stay chunked for 1.1"
        assert r.header("Content-Length") is None


@pytest.mark.parametrize("size", [0, 1, TEN_MB], ids=["0B", "1B", "10MB"])
@pytest.mark.parametrize("kind", ["size", "chunked"])
def test_download_sizes(ferry, upstream, size, kind):
    r = _exchange(ferry.port, simple_request("GET", "/%s/%d" % (kind, size)), timeout=30)
    assert r.status == 200
    assert len(r.body) == size
    assert sha256(r.body) == r.header("X-Body-Sha256") == sha256(pattern_bytes(size))
    if kind == "size":
        assert r.header("Content-Length") == str(size)
    else:
        assert r.framing == "chunked"


def test_chunked_request_with_extensions_and_odd_chunk_sizes(ferry, upstream):
    """Chunk extensions are legal; many tiny chunks must be reassembled exactly."""
    body = pattern_bytes(5000, seed=7)
    parts = []
    i = 0
    n = 1
    while i < len(body):
        p = body[i:i + n]
        parts.append(b"%x;ext=1\r\n" % len(p) + p + b"\r\n")
        i += n
        n = n * 3 % 997 + 1
    payload = b"".join(parts) + b"0\r\n\r\n"
    head = (b"PUT /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    r = _exchange(ferry.port, head + payload)
    assert r.status == 200
    assert upstream.wait_requests(1)[-1].body == body
    assert r.body == body


def test_request_body_sent_in_small_pieces(ferry, upstream):
    """A body dribbled in many writes is forwarded completely."""
    body = pattern_bytes(20000, seed=3)
    s = connect(ferry.port, timeout=10)
    try:
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body))
        for i in range(0, len(body), 997):
            s.sendall(body[i:i + 997])
        r = ResponseReader(s, timeout=10).read_final()
    finally:
        s.close()
    assert r.status == 200
    assert r.body == body


def test_response_trailers_dropped_and_body_intact(ferry_factory, raw_upstream):
    def handler(c):
        rd = SockReader(c)
        rd.read_request()
        c.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Trail\r\n\r\n"
                  b"5\r\nhello\r\n6\r\n world\r\n0\r\nX-Trail: secret\r\n\r\n")
        try:
            rd.read_head()  # keep the connection until ferry closes it
        except (EOFError, OSError):
            pass

    raw_upstream.handler = handler
    f = ferry_factory(raw_upstream.url)
    r = _exchange(f.port, simple_request("GET", "/t"))
    assert r.status == 200
    assert r.body == b"hello world"
    assert r.framing == "chunked"
    assert r.trailers == [], "spec: trailers are dropped"
    assert r.header("Trailer") is None


def test_close_delimited_upstream_response_rechunked_for_http11(ferry_factory, raw_upstream):
    body = pattern_bytes(100000, seed=11)

    def handler(c):
        SockReader(c).read_request()
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                  b"Connection: close\r\n\r\n" + body)
        c.shutdown(2)

    raw_upstream.handler = handler
    f = ferry_factory(raw_upstream.url)
    r = _exchange(f.port, simple_request("GET", "/close-delimited"))
    assert r.status == 200
    assert r.framing == "chunked", "spec: close-delimited upstream body sent chunked to 1.1 client"
    assert r.body == body


def test_close_delimited_upstream_response_to_http10_client(ferry_factory, raw_upstream):
    body = pattern_bytes(50000, seed=12)

    def handler(c):
        SockReader(c).read_request()
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                  b"Connection: close\r\n\r\n" + body)
        c.shutdown(2)

    raw_upstream.handler = handler
    f = ferry_factory(raw_upstream.url)
    s = connect(f.port)
    try:
        s.sendall(b"GET /x HTTP/1.0\r\n\r\n")
        r = ResponseReader(s).read_final()
    finally:
        s.close()
    assert r.status == 200
    assert r.header("Transfer-Encoding") is None, "no chunked to an HTTP/1.0 client"
    assert r.body == body


def test_request_trailers_dropped_body_intact(ferry_factory, raw_upstream):
    seen = {}

    def handler(c):
        rd = SockReader(c)
        head = rd.read_head()
        raw = bytearray()
        # capture the raw chunked body including the trailer section
        while not raw.endswith(b"\r\n\r\n") or b"0\r\n" not in raw:
            if not rd.buf and not rd._fill():
                break
            raw += rd.buf
            rd.buf.clear()
        seen["head"], seen["raw"] = head, bytes(raw)
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        try:
            rd.read_head()
        except (EOFError, OSError):
            pass

    raw_upstream.handler = handler
    f = ferry_factory(raw_upstream.url)
    r = _exchange(f.port, b"POST /t HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                          b"Trailer: X-Checksum\r\n\r\n"
                          b"5\r\nhello\r\n0\r\nX-Checksum: abc\r\n\r\n")
    assert r.status == 200 and r.body == b"ok"
    assert b"x-checksum" not in seen["raw"].lower(), "trailer forwarded: %r" % seen["raw"]
    assert b"trailer:" not in seen["head"].lower()
    # decode what the upstream got
    from harness import parse_request_head  # noqa
    body = bytearray()
    data = seen["raw"]
    while True:
        line, _, data = data.partition(b"\r\n")
        n = int(line.split(b";")[0], 16)
        if n == 0:
            break
        body += data[:n]
        data = data[n + 2:]
    assert bytes(body) == b"hello"


def test_asterisk_form_options(ferry, upstream):
    r = _exchange(ferry.port, b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n")
    assert r.status == 200
    got = upstream.wait_requests(1)[-1]
    assert got.method == "OPTIONS" and got.path == "*"


def test_absolute_form_target_accepted(ferry, upstream):
    """RFC 9112 3.2.2: a server MUST accept the absolute-form."""
    r = _exchange(ferry.port, b"GET http://client.example/abs/path?q=1 HTTP/1.1\r\n"
                              b"Host: client.example\r\n\r\n")
    assert r.status == 200
    got = upstream.wait_requests(1)[-1]
    assert got.path in ("http://client.example/abs/path?q=1", "/abs/path?q=1")
