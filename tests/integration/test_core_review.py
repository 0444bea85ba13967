"""Regression tests for the defects found by the core review (one test per defect, named after it).
"""

import socket
import time

import pytest

from harness import (
    RawUpstream, ResponseReader, SockReader, connect, recv_until_close, wait_for,
)

BUF = 16384  # FY_BUF_SIZE: the response head ferry writes for a client fits one buffer


def head_with_size(total, body=b"ok"):
    """An upstream response head of exactly `total` bytes (including the final CRLF)."""
    start = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-Pad: " % len(body)
    pad = total - len(start) - 4
    assert pad > 0
    h = start + b"a" * pad + b"\r\n\r\n"
    assert len(h) == total
    return h


def serve_fixed(head, body):
    def handler(c):
        rd = SockReader(c)
        while True:
            try:
                rd.read_request()
            except (EOFError, OSError):
                return
            c.sendall(head + body)
    return handler


def get(port, target="/", extra=b""):
    s = connect(port)
    s.sendall(b"GET " + target.encode() + b" HTTP/1.1\r\nHost: t\r\n" + extra + b"\r\n")
    r = ResponseReader(s).read_final()
    return s, r


# Via: 1.1 ferry is the one field ferry adds to this response.
VIA = len(b"Via: 1.1 ferry\r\n")


@pytest.mark.parametrize("rewritten,ok", [(BUF, True), (BUF + 1, False)])
def test_response_head_that_overflows_writer_is_502(ferry_factory, rewritten, ok):
    """Defect 1: a head that fits the reader but not the client writer once rewritten."""
    head = head_with_size(rewritten - VIA)
    up = RawUpstream(serve_fixed(head, b"ok")).start()
    try:
        f = ferry_factory(up.url)
        s, r = get(f.port)
        if ok:
            assert r.status == 200 and r.body == b"ok"
            assert r.raw.index(b"\r\n\r\n") + 4 == rewritten  # the boundary is exact
        else:
            assert r.status == 502
            assert "response head is larger than 16384 bytes" in f.stderr_text()
            # The connection stays usable: the error was a whole response.
            s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            assert ResponseReader(s).read_final().status == 502
        s.close()
    finally:
        up.stop()


def test_response_head_over_reader_limit_is_502_and_says_response(ferry_factory):
    head = head_with_size(BUF)  # one byte over the reader's 16383
    up = RawUpstream(serve_fixed(head, b"ok")).start()
    try:
        f = ferry_factory(up.url)
        s, r = get(f.port)
        assert r.status == 502
        s.close()
        err = f.stderr_text()
        assert "request header block" not in err
        assert "response head" in err or "response header block too large" in err
    finally:
        up.stop()


@pytest.mark.parametrize("size", [16 << 10, 64 << 10, 1000 << 10])
def test_large_request_head_forwarded_up_to_max_header_size(ferry_factory, upstream, size):
    """Defect 2: heads up to --max-header-size are forwarded (they got a 500 over ~16 KiB)."""
    f = ferry_factory(upstream.url, "--max-header-size", "1m")
    fields = []
    left = size - 200
    i = 0
    while left > 0:
        n = min(left, 60000)
        fields.append(b"X-Big-%d: %s\r\n" % (i, b"v" * n))
        left -= n + 12
        i += 1
    s = connect(f.port, timeout=10)
    s.sendall(b"GET /echo HTTP/1.1\r\nHost: t\r\n" + b"".join(fields) + b"\r\n")
    r = ResponseReader(s, timeout=10).read_final()
    assert r.status == 200
    got = upstream.last
    assert got.header("X-Big-0") == "v" * min(size - 200, 60000)
    assert len(got.header_names()) >= len(fields)
    s.close()


def test_request_head_over_max_header_size_is_431(ferry_factory, upstream):
    f = ferry_factory(upstream.url, "--max-header-size", "64k")
    s = connect(f.port)
    s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + b"v" * (70 << 10) + b"\r\n\r\n")
    r = ResponseReader(s).read_final()
    assert r.status == 431
    s.close()


@pytest.mark.parametrize("partial", [
    b"GARBAGE\r\n",
    b"GET / HTTP/1.1 extra\r\n",
    b"GET / HTTP/1.1\r\nHost: t\r\nNoColon\r\n",
    b"GET / HTTP/1.1\r\nHost : t\r\n",
])
def test_malformed_line_rejected_at_once(ferry_factory, upstream, partial):
    """Defect 3: answered with 400 as soon as the bad line is complete, not at the header
    timeout (set to 30 s here so a late answer fails the bounded read)."""
    f = ferry_factory(upstream.url, "--header-timeout", "30s")
    s = connect(f.port, timeout=5)
    t0 = time.monotonic()
    s.sendall(partial)  # the head is never finished
    r = ResponseReader(s, timeout=5).read_final()
    assert r.status == 400
    assert time.monotonic() - t0 < 5
    s.close()


def close_delimited_handler(c):
    rd = SockReader(c)
    rd.read_request()
    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil-close body")
    c.shutdown(socket.SHUT_WR)


def test_close_delimited_response_keeps_client_connection(ferry_factory):
    """Defect 4: the upstream's EOF ends a close-delimited body normally: no warning, and the
    client's keep-alive connection answers the next request."""
    up = RawUpstream(close_delimited_handler).start()
    try:
        f = ferry_factory(up.url, "--access-log", "stdout")
        s = connect(f.port)
        rd = ResponseReader(s)
        for i in range(3):
            s.sendall(b"GET /%d HTTP/1.1\r\nHost: t\r\n\r\n" % i)
            r = rd.read_final()
            assert r.status == 200 and r.body == b"until-close body"
            assert r.header("Transfer-Encoding") == "chunked"
            assert (r.header("Connection") or "").lower() != "close"
        s.close()
        f.wait_access_log(3)
        assert "warn" not in f.stderr_text(), f.stderr_text()
    finally:
        up.stop()


def test_close_delimited_response_to_http10_client_closes(ferry_factory):
    up = RawUpstream(close_delimited_handler).start()
    try:
        f = ferry_factory(up.url)
        s = connect(f.port)
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        raw = recv_until_close(s)
        assert raw.endswith(b"\r\n\r\nuntil-close body")
        s.close()
    finally:
        up.stop()


def test_rejected_requests_logged_with_what_was_read(ferry_factory, upstream):
    """Rejected while reading the head: the log shows the request line as read (not HTTP/1.0
    for everything), and a 413 line keeps User-Agent and Referer."""
    f = ferry_factory(upstream.url, "--access-log", "stdout", "--max-header-size", "2k",
                      "--max-body-size", "10")
    cases = [
        b"GET /big HTTP/1.1\r\nHost: t\r\nX-Big: " + b"v" * 3000 + b"\r\n\r\n",    # 431
        b"GET /" + b"x" * 9000 + b" HTTP/1.1\r\n\r\n",                           # 414
        b"POST /up HTTP/1.1\r\nHost: t\r\nUser-Agent: ua/1\r\nReferer: http://r/\r\n"
        b"Content-Length: 100\r\n\r\n",                                          # 413
    ]
    for data in cases:
        s = connect(f.port)
        s.sendall(data)
        ResponseReader(s).read_final()
        s.close()
    lines = f.wait_access_log(3)
    l431 = next(l for l in lines if '" 431 ' in l)
    assert '"GET /big HTTP/1.1" 431' in l431
    l414 = next(l for l in lines if '" 414 ' in l)
    assert '"-" 414' in l414 and "HTTP/1.0" not in l414
    l413 = next(l for l in lines if '" 413 ' in l)
    assert '"POST /up HTTP/1.1" 413' in l413
    assert '"http://r/" "ua/1"' in l413


class SlowUpstream:
    """Reads one request, then holds the connection without answering until ferry closes it;
    records when that happened."""

    def __init__(self):
        import threading
        self.got_request = threading.Event()
        self.closed_by_ferry = threading.Event()
        self.raw = RawUpstream(self.handler).start()

    def handler(self, c):
        rd = SockReader(c, timeout=30)
        rd.read_request()
        self.got_request.set()
        c.settimeout(30)
        try:
            while c.recv(4096):
                pass
        except OSError:
            pass
        self.closed_by_ferry.set()

    def stop(self):
        self.raw.stop()


@pytest.mark.parametrize("how", ["fin", "rst"])
def test_client_hangup_while_waiting_abandons_upstream(ferry_factory, how):
    """Defect 10: a client that hangs up while ferry waits for a slow upstream is noticed at
    once: the upstream request is abandoned (its connection closed) and the exchange is logged
    as 499, long before the 30 s upstream timeout."""
    up = SlowUpstream()
    try:
        f = ferry_factory(up.raw.url, "--access-log", "stdout", "--upstream-timeout", "30s")
        s = connect(f.port)
        s.sendall(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
        assert up.got_request.wait(5)
        if how == "fin":
            s.shutdown(socket.SHUT_WR)
        else:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            s.close()
        assert up.closed_by_ferry.wait(5), "ferry kept the upstream request after the hang-up"
        lines = f.wait_access_log(1, timeout=5)
        assert '"GET /slow HTTP/1.1" 499 ' in lines[0]
        if how == "fin":
            assert recv_until_close(s, timeout=5) == b""
            s.close()
    finally:
        up.stop()


def test_pipelined_request_before_fin_is_not_a_hangup(ferry_factory, upstream):
    """Unread bytes before the FIN (a pipelined request) mean the client is still there."""
    f = ferry_factory(upstream.url)
    s = connect(f.port)
    s.sendall(b"GET /slow?ms=300 HTTP/1.1\r\nHost: t\r\n\r\n"
              b"GET /status?code=204 HTTP/1.1\r\nHost: t\r\n\r\n")
    rd = ResponseReader(s)
    assert rd.read_final().status == 200
    s.close()


def test_h2c_upgrade_is_never_a_tunnel(ferry_factory):
    """Defect 11: Upgrade: h2c is not on the allowlist: the request is forwarded as a plain one,
    without Upgrade or HTTP2-Settings, and an upstream that switches anyway gets a 502."""
    seen = []

    def handler(c):
        rd = SockReader(c)
        method, target, headers, body = rd.read_request()
        seen.append(headers)
        c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
                  b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        try:
            c.recv(100)
        except OSError:
            pass

    up = RawUpstream(handler).start()
    try:
        f = ferry_factory(up.url)
        s = connect(f.port)
        s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: Upgrade, HTTP2-Settings\r\n"
                  b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n")
        r = ResponseReader(s).read_final()
        assert r.status == 502
        names = [k.lower() for k, _ in seen[0]]
        assert "upgrade" not in names and "http2-settings" not in names
        assert "connection" not in names
        s.close()
    finally:
        up.stop()


def test_websocket_upgrade_still_tunnels(ferry_factory):
    def handler(c):
        rd = SockReader(c)
        method, target, headers, body = rd.read_request()
        assert ("upgrade", "websocket") in [(k.lower(), v.lower()) for k, v in headers]
        c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                  b"Upgrade: websocket\r\n\r\nhello")

    up = RawUpstream(handler).start()
    try:
        f = ferry_factory(up.url)
        s = connect(f.port)
        s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: WebSocket\r\n\r\n")
        got = recv_until_close(s)
        assert got.startswith(b"HTTP/1.1 101 ") and got.endswith(b"\r\n\r\nhello")
        s.close()
    finally:
        up.stop()


@pytest.mark.parametrize("host,ok", [
    (b"example.com", True), (b"example.com:8080", True), (b"127.0.0.1:80", True),
    (b"[::1]:8080", True), (b"[v1.fe80::a+en1]", True), (b"ex%41mple.com", True),
    (b"example.com:80a", False), (b"example.com:123456", False), (b"example.com:99999", False),
    (b"[::1", False), (b"[not-ip]:80", False), (b"ex ample.com", False),
    (b"example.com:80:90", False), (b"ex%4", False), (b"a@b", False),
])
def test_host_is_an_rfc3986_authority(ferry_factory, upstream, host, ok):
    f = ferry_factory(upstream.url)
    s = connect(f.port)
    s.sendall(b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
    r = ResponseReader(s).read_final()
    assert (r.status == 200) == ok, (host, r.status)
    s.close()


def test_max_forwards_zero_answered_by_ferry(ferry_factory, upstream):
    """RFC 9110 7.6.2: OPTIONS and TRACE with Max-Forwards: 0 are answered by ferry itself;
    TRACE reflects the request (without credentials); the connection stays usable."""
    f = ferry_factory(upstream.url)
    s = connect(f.port)
    rd = ResponseReader(s)
    s.sendall(b"OPTIONS * HTTP/1.1\r\nHost: t\r\nMax-Forwards: 0\r\n\r\n")
    r = rd.read_final()
    assert r.status == 200 and "OPTIONS" in r.header("Allow")
    s.sendall(b"TRACE /t HTTP/1.1\r\nHost: t\r\nMax-Forwards: 0\r\nX-A: b\r\n"
              b"Cookie: secret=1\r\nAuthorization: Bearer xyz\r\n\r\n")
    r = rd.read_final()
    assert r.status == 200 and r.header("Content-Type") == "message/http"
    assert r.body.startswith(b"TRACE /t HTTP/1.1\r\n") and b"X-A: b\r\n" in r.body
    assert b"secret" not in r.body and b"xyz" not in r.body
    s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    assert rd.read_final().status == 200
    assert [r.method for r in upstream.wait_requests(1)] == ["GET"]
    s.close()


def test_max_forwards_decremented_upstream(ferry_factory, upstream):
    f = ferry_factory(upstream.url)
    s = connect(f.port)
    rd = ResponseReader(s)
    s.sendall(b"OPTIONS /x HTTP/1.1\r\nHost: t\r\nMax-Forwards: 5\r\n\r\n")
    assert rd.read_final().status == 200
    assert upstream.last.header("Max-Forwards") == "4"
    s.sendall(b"GET /x HTTP/1.1\r\nHost: t\r\nMax-Forwards: 0\r\n\r\n")  # other methods: as is
    assert rd.read_final().status == 200
    assert upstream.last.header("Max-Forwards") == "0"
    s.sendall(b"TRACE /x HTTP/1.1\r\nHost: t\r\nMax-Forwards: x1\r\n\r\n")
    assert rd.read_final().status == 400
    s.close()


def test_absolute_form_with_query_and_no_path(ferry_factory, upstream):
    """RFC 9112 3.2.1: "http://h?q" is forwarded as "/?q" with Host: h (it was a 400, while a
    comment claimed otherwise)."""
    f = ferry_factory(upstream.url, "--host", "preserve")
    s = connect(f.port)
    rd = ResponseReader(s)
    s.sendall(b"GET http://example.test:8080?a=1&b HTTP/1.1\r\nHost: other\r\n\r\n")
    assert rd.read_final().status == 200
    got = upstream.last
    assert got.path == "/?a=1&b"
    assert got.header("Host") == "example.test:8080"
    s.sendall(b"GET http://example.test HTTP/1.1\r\nHost: other\r\n\r\n")
    assert rd.read_final().status == 200
    assert upstream.last.path == "/"
    s.close()


@pytest.mark.parametrize("allow,tunnels", [("websocket", False), ("h2c,websocket", True),
                                           ("none", False)])
def test_upgrade_protocols_flag(ferry_factory, allow, tunnels):
    def handler(c):
        rd = SockReader(c)
        method, target, headers, body = rd.read_request()
        names = [k.lower() for k, _ in headers]
        if "upgrade" in names:
            c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                      b"Upgrade: h2c\r\n\r\nraw")
        else:
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nplain")

    up = RawUpstream(handler).start()
    try:
        f = ferry_factory(up.url, "--upgrade-protocols", allow)
        s = connect(f.port)
        s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n")
        if tunnels:
            got = recv_until_close(s)
            assert got.startswith(b"HTTP/1.1 101 ") and got.endswith(b"raw")
        else:
            r = ResponseReader(s).read_final()
            assert r.status == 200 and r.body == b"plain"
        s.close()
    finally:
        up.stop()


def test_header_timeout_logs_the_request_line_read(ferry_factory, upstream):
    f = ferry_factory(upstream.url, "--access-log", "stdout", "--header-timeout", "500ms")
    s = connect(f.port)
    s.sendall(b"GET /slowhead HTTP/1.1\r\nHost: t\r\n")  # the head never ends
    r = ResponseReader(s, timeout=5).read_final()
    assert r.status == 408
    s.close()
    lines = f.wait_access_log(1)
    assert '"GET /slowhead HTTP/1.1" 408 ' in lines[0], lines[0]


@pytest.mark.parametrize("abort", ["on", "off"])
def test_abort_on_client_close(ferry_factory, abort):
    """--abort-on-client-close: a client half-closes after its request while the upstream is
    still thinking. on (default): abandoned, 499, nothing sent. off: the upstream's answer is
    sent whole (HAProxy's default). The upstream answers only once the FIN reached ferry."""
    import threading
    from harness import close_wait_seen, late_answer_upstream
    answer = threading.Event()
    up = late_answer_upstream(answer)
    try:
        f = ferry_factory(up.url, "--abort-on-client-close", abort, "--access-log", "stdout")
        s = connect(f.port)
        s.sendall(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
        up.wait_connections(1)
        s.shutdown(socket.SHUT_WR)
        if abort == "on":
            lines = f.wait_access_log(1)  # abandoned at once, before the upstream answers
            assert '"GET /slow HTTP/1.1" 499 ' in lines[0]
            answer.set()
            assert recv_until_close(s, timeout=10) == b""
        else:
            # ferry holds the half-closed connection (CLOSE-WAIT) and waits for the upstream.
            wait_for(lambda: close_wait_seen(f.port, s.getsockname()[1]), 5,
                     what="the client's FIN at ferry")
            answer.set()
            got = recv_until_close(s, timeout=10)
            assert got.startswith(b"HTTP/1.1 200 ") and got.endswith(b"\r\n\r\nlate")
            assert '" 200 ' in f.wait_access_log(1)[0]
        s.close()
    finally:
        answer.set()
        up.stop()
