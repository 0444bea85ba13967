"""Expect: 100-continue and 1xx relaying."""

from harness import ResponseReader, SockReader, connect


def test_expect_100_continue(ferry, upstream):
    body = b"hello after continue"
    s = connect(ferry.port, timeout=10)
    try:
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n"
                  b"Expect: 100-continue\r\n\r\n" % len(body))
        rd = ResponseReader(s, timeout=10)
        first = rd.read_response()  # must arrive before we send any body byte
        assert first.status == 100, "expected 100 Continue first, got %r" % first.raw
        assert first.body == b""
        s.sendall(body)
        final = rd.read_final()
        assert final.status == 200
        assert final.body == body
        # connection still usable
        s.sendall(b"GET /size/3 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert rd.read_final().status == 200
    finally:
        s.close()
    got = upstream.wait_requests(2)[0]
    assert got.body == body


def test_expect_100_continue_chunked_body(ferry, upstream):
    s = connect(ferry.port, timeout=10)
    try:
        s.sendall(b"PUT /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                  b"Expect: 100-continue\r\n\r\n")
        rd = ResponseReader(s, timeout=10)
        first = rd.read_response()
        assert first.status == 100, first.raw
        s.sendall(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
        final = rd.read_final()
        assert final.status == 200 and final.body == b"abcde"
    finally:
        s.close()


def test_expect_final_status_without_body(ferry_factory, raw_upstream):
    """Upstream rejects with 417/413 instead of 100: client gets the final status
    and does not need to send the body."""

    def handler(c):
        rd = SockReader(c)
        rd.read_head()  # (ferry may forward the Expect or answer 100 itself)
        c.sendall(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 4\r\nConnection: close\r\n\r\nnope")
        try:  # linger until ferry closes (avoid an RST racing the response)
            while c.recv(65536):
                pass
        except OSError:
            pass

    raw_upstream.handler = handler
    f = ferry_factory(raw_upstream.url)
    s = connect(f.port, timeout=10)
    try:
        s.sendall(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n"
                  b"Expect: 100-continue\r\n\r\n")
        r = ResponseReader(s, timeout=10).read_final()
        assert r.status == 413 and r.body == b"nope"
    finally:
        s.close()


def test_interim_1xx_relayed(ferry_factory, raw_upstream):
    def handler(c):
        rd = SockReader(c)
        rd.read_head()
        c.sendall(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
                  b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal")
        try:
            rd.read_head()
        except (EOFError, OSError):
            pass

    raw_upstream.handler = handler
    f = ferry_factory(raw_upstream.url)
    s = connect(f.port)
    try:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        rd = ResponseReader(s)
        r1 = rd.read_response()
        assert r1.status == 103
        assert r1.header("Link") == "</style.css>; rel=preload"
        r2 = rd.read_response()
        assert r2.status == 200 and r2.body == b"final"
    finally:
        s.close()
