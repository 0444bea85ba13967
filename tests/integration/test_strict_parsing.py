"""Strict request parsing and request-smuggling defences.

Every rejected request must get an error status line with Content-Length, the
connection must be closed afterwards, and nothing of the request may reach the
upstream. The upstream used here records every byte it receives (harness.UpstreamServer), and
each check synchronises with a canary request instead of sleeping.
"""

import types

import pytest

from harness import (Client, UpstreamServer, expect_error_response, expect_upstream_saw,
                     route_ok_len, wait_for)

H = b"Host: example.test\r\n"


@pytest.fixture(scope="module")
def env(module_ferry_factory):
    up = UpstreamServer(default_route=route_ok_len).start()
    try:
        # a short drain bound keeps module teardown fast even when a test left
        # a half-open connection behind
        f = module_ferry_factory(up.url, "--drain-timeout", "2s")
        yield types.SimpleNamespace(ferry=f, up=up, port=f.port)
    finally:
        up.stop()


@pytest.fixture(autouse=True)
def _reset(env):
    env.up.reset()
    yield


def reject(env, data, statuses=(400,), expected_targets=(), partial_ok=False):
    """Send `data` on a new connection. Responses for `expected_targets` (valid
    pipelined requests in front of the bad one) must be 200; then an error
    response with a status in `statuses`, then close; the upstream must have
    seen only `expected_targets`."""
    with Client(env.port) as c:
        c.send(data)
        for t in expected_targets:
            ok = c.rxresp()
            assert ok.status == 200, "valid request %s before the bad one: %r" % (t, ok)
        resp = c.rxresp()
        assert resp.status in statuses, "expected %s for %r, got %r" % (statuses, data, resp)
        expect_error_response(resp, resp.status, upstream_port=env.up.port)
        c.expect_close()
    expect_upstream_saw(env.port, env.up, expected_targets, partial_ok=partial_ok)
    return resp


def post(headers, body=b"", target=b"/x", version=b"HTTP/1.1", host=H):
    return b"POST " + target + b" " + version + b"\r\n" + host + headers + b"\r\n" + body


def get(headers=b"", target=b"/x", version=b"HTTP/1.1", host=H):
    return b"GET " + target + b" " + version + b"\r\n" + host + headers + b"\r\n"


# ---------------------------------------------------------------------------
# bad requests detected in the head: NOTHING may reach the upstream
# ---------------------------------------------------------------------------

HEAD_400 = {
    # Content-Length + Transfer-Encoding together (both orders)
    "cl-then-te": post(b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n"),
    "te-then-cl": post(b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", b"0\r\n\r\n"),
    "te-then-cl-zero": post(b"Transfer-Encoding: chunked\r\nContent-Length: 0\r\n", b"0\r\n\r\n"),
    # malformed Content-Length
    "cl-abc": post(b"Content-Length: abc\r\n"),
    "cl-negative": post(b"Content-Length: -1\r\n"),
    "cl-plus": post(b"Content-Length: +5\r\n", b"hello"),
    "cl-inner-space": post(b"Content-Length: 1 2\r\n", b"x" * 12),
    "cl-comma-list": post(b"Content-Length: 1,2\r\n", b"xx"),
    "cl-hex": post(b"Content-Length: 0x5\r\n", b"hello"),
    "cl-empty": post(b"Content-Length: \r\n"),
    "cl-two-different": post(b"Content-Length: 5\r\nContent-Length: 6\r\n", b"hello!"),
    "cl-two-identical": post(b"Content-Length: 5\r\nContent-Length: 5\r\n", b"hello"),
    "cl-list-identical": post(b"Content-Length: 5, 5\r\n", b"hello"),
    "cl-overflow": post(b"Content-Length: 184467440737095516160\r\n", b"hello"),
    # Transfer-Encoding other than exactly "chunked"
    "te-gzip-chunked": post(b"Transfer-Encoding: gzip, chunked\r\n", b"0\r\n\r\n"),
    "te-chunked-chunked": post(b"Transfer-Encoding: chunked, chunked\r\n", b"0\r\n\r\n"),
    "te-two-fields": post(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
                          b"0\r\n\r\n"),
    "te-xchunked": post(b"Transfer-Encoding: xchunked\r\n", b"0\r\n\r\n"),
    "te-chunked-vtab": post(b"Transfer-Encoding: chunked\x0b\r\n", b"0\r\n\r\n"),
    "te-identity": post(b"Transfer-Encoding: identity\r\n", b"0\r\n\r\n"),
    "te-empty": post(b"Transfer-Encoding: \r\n", b"0\r\n\r\n"),
    "te-in-http10": post(b"Transfer-Encoding: chunked\r\n", b"5\r\nhello\r\n0\r\n\r\n",
                         version=b"HTTP/1.0"),
    # obs-fold
    "obs-fold-space": get(b"X-Foo: bar\r\n baz\r\n"),
    "obs-fold-tab": get(b"X-Foo: bar\r\n\tbaz\r\n"),
    "obs-fold-te": post(b"Transfer-Encoding:\r\n chunked\r\n", b"0\r\n\r\n"),
    "first-field-indented": b"GET /x HTTP/1.1\r\n Host: example.test\r\n\r\n",
    # whitespace between field name and colon
    "space-before-colon": get(b"X-Foo : bar\r\n"),
    "tab-before-colon": get(b"X-Foo\t: bar\r\n"),
    "space-before-colon-te": post(b"Transfer-Encoding : chunked\r\n", b"0\r\n\r\n"),
    "space-before-colon-cl": post(b"Content-Length : 5\r\n", b"hello"),
    # bare LF / bare CR
    "bare-lf-request-line": b"GET /x HTTP/1.1\nHost: example.test\r\n\r\n",
    "bare-lf-header": b"GET /x HTTP/1.1\r\nHost: example.test\nX-A: b\r\n\r\n",
    "bare-lf-everywhere": b"GET /x HTTP/1.1\nHost: example.test\n\n",
    "bare-lf-end-of-head": b"GET /x HTTP/1.1\r\nHost: example.test\r\n\n",
    "bare-cr-request-line": b"GET /x HTTP/1.1\rHost: example.test\r\n\r\n",
    "bare-cr-in-value": get(b"X-A: b\rc\r\n"),
    "bare-cr-end-of-field": get(b"X-A: b\r\rX-B: c\r\n"),
    # Host
    "missing-host-http11": b"GET /x HTTP/1.1\r\nX-A: b\r\n\r\n",
    "two-hosts-different": get(b"Host: other.test\r\n"),
    "two-hosts-same": get(b"Host: example.test\r\n"),
    # invalid field names / values
    "name-with-space": get(b"Fo o: x\r\n"),
    "name-with-nul": get(b"Foo\x00: x\r\n"),
    "name-with-paren": get(b"Fo(o: x\r\n"),
    "name-with-del": get(b"Foo\x7f: x\r\n"),
    "name-empty": get(b": x\r\n"),
    "no-colon": get(b"JustAName\r\n"),
    "value-with-nul": get(b"X-A: b\x00c\r\n"),
    # invalid methods / request lines
    "method-paren": b"GE(T /x HTTP/1.1\r\n" + H + b"\r\n",
    "method-nul": b"G\x00T /x HTTP/1.1\r\n" + H + b"\r\n",
    "method-at": b"G@T /x HTTP/1.1\r\n" + H + b"\r\n",
    "method-empty": b" /x HTTP/1.1\r\n" + H + b"\r\n",
    "version-garbage": b"GET /x HTTX/1.1\r\n" + H + b"\r\n",
    "target-with-space": b"GET /a b HTTP/1.1\r\n" + H + b"\r\n",
    "target-with-nul": b"GET /a\x00b HTTP/1.1\r\n" + H + b"\r\n",
    "double-space-after-method": b"GET  /x HTTP/1.1\r\n" + H + b"\r\n",
    "space-after-version": b"GET /x HTTP/1.1 \r\n" + H + b"\r\n",
    "host-with-space": b"GET /x HTTP/1.1\r\nHost: a b\r\n\r\n",
    "host-with-slash": b"GET /x HTTP/1.1\r\nHost: a/b\r\n\r\n",
    "host-with-at": b"GET /x HTTP/1.1\r\nHost: user@a\r\n\r\n",
    "target-with-fragment": b"GET /x#frag HTTP/1.1\r\n" + H + b"\r\n",
    # percent-encoding that does not decode: the connection closes like any other 400
    "bad-percent-escape": get(target=b"/a%zz"),
    # Max-Forwards is one number: two fields are a list of two (RFC 9110 5.3)
    "max-forwards-two-fields": b"TRACE /t HTTP/1.1\r\n" + H + b"Max-Forwards: 5\r\n"
                               b"Max-Forwards: 0\r\n\r\n",
    "max-forwards-list": b"OPTIONS /t HTTP/1.1\r\n" + H + b"Max-Forwards: 5, 0\r\n\r\n",
}


@pytest.mark.parametrize("name", sorted(HEAD_400))
def test_bad_head_rejected(env, name):
    data = HEAD_400[name]
    statuses = (400,)
    if name == "cl-overflow":
        statuses = (400, 413)  # an absurd length may also be refused as too large
    reject(env, data, statuses=statuses)


# ---------------------------------------------------------------------------
# bad chunked framing in the request body
# ---------------------------------------------------------------------------

TE = b"Transfer-Encoding: chunked\r\n"

BODY_400 = {
    "chunk-size-nonhex": b"zz\r\nhello\r\n0\r\n\r\n",
    "chunk-size-0x": b"0x5\r\nhello\r\n0\r\n\r\n",
    "chunk-size-overflow": b"ffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
    "chunk-size-overflow-17": b"10000000000000005\r\nhello\r\n0\r\n\r\n",
    "chunk-size-negative": b"-5\r\nhello\r\n0\r\n\r\n",
    "chunk-size-empty": b"\r\nhello\r\n0\r\n\r\n",
    "chunk-size-space-inside": b"1 0\r\n" + b"x" * 16 + b"\r\n0\r\n\r\n",
    "chunk-data-too-long": b"5\r\nhelloXX\r\n0\r\n\r\n",
    "chunk-ext-bare-lf": b"5;ext=1\nhello\r\n0\r\n\r\n",
    "chunk-size-bare-lf": b"5\nhello\r\n0\r\n\r\n",
    "chunk-data-bare-lf": b"5\r\nhello\n0\r\n\r\n",
    "chunk-size-bare-cr": b"5\rhello\r\n0\r\n\r\n",
    "last-chunk-bare-lf": b"5\r\nhello\r\n0\n\r\n",
}


@pytest.mark.parametrize("name", sorted(BODY_400))
def test_bad_chunked_body_rejected(env, name):
    """The error is inside the body: a streaming proxy may already have sent
    the head upstream, but the upstream must never see a complete request and
    that upstream connection must be closed, not reused."""
    reject(env, post(TE, BODY_400[name]), partial_ok=True)


# ---------------------------------------------------------------------------
# classic smuggling sequences
# ---------------------------------------------------------------------------

HIDDEN = b"GET /admin HTTP/1.1\r\nHost: example.test\r\n\r\n"


def test_cl_te_smuggling(env):
    body = b"0\r\n\r\n" + HIDDEN
    data = post(b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n" % len(body), body)
    reject(env, data)


def test_te_cl_smuggling(env):
    hidden = b"GPOST /admin HTTP/1.1\r\nHost: example.test\r\nContent-Length: 15\r\n\r\nx=1"
    body = b"%x\r\n" % len(hidden) + hidden + b"\r\n0\r\n\r\n"
    data = post(b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n", body)
    reject(env, data)


def test_te_obfuscated_smuggling(env):
    body = b"0\r\n\r\n" + HIDDEN
    data = post(b"Content-Length: %d\r\nTransfer-Encoding: xchunked\r\n" % len(body), body)
    reject(env, data)


@pytest.mark.parametrize("bad", ["cl-te", "te-cl", "two-cl", "obs-fold-te", "bare-lf"])
def test_smuggling_after_valid_request(env, bad):
    """A valid request followed (pipelined) by a smuggling attempt: the first is
    answered normally, then 400 + close, and only the first reached upstream."""
    first = get(target=b"/first")
    body = b"0\r\n\r\n" + HIDDEN
    attack = {
        "cl-te": post(b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n" % len(body), body),
        "te-cl": post(b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n", body),
        "two-cl": post(b"Content-Length: 0\r\nContent-Length: %d\r\n" % len(HIDDEN), HIDDEN),
        "obs-fold-te": post(b"X-A: b\r\n Transfer-Encoding: chunked\r\n", body),
        "bare-lf": b"POST /x HTTP/1.1\r\nHost: example.test\nTransfer-Encoding: chunked\r\n"
                   b"Content-Length: 0\r\n\r\n" + body,
    }[bad]
    reject(env, first + attack, expected_targets=("/first",))


# ---------------------------------------------------------------------------
# things that must be ACCEPTED, with exact framing
# ---------------------------------------------------------------------------

def exchange_ok(env, data, n):
    with Client(env.port) as c:
        c.send(data)
        resps = [c.rxresp() for _ in range(n)]
    for r in resps:
        assert r.status == 200, r
    return resps


def test_te_chunked_case_insensitive(env):
    data = post(b"Transfer-Encoding: Chunked\r\n", b"5\r\nhello\r\n0\r\n\r\n", target=b"/ci")
    exchange_ok(env, data, 1)
    (req,) = expect_upstream_saw(env.port, env.up, ["/ci"])
    assert req.body == b"hello"


def test_http10_without_host_accepted(env):
    exchange_ok(env, b"GET /old HTTP/1.0\r\n\r\n", 1)
    expect_upstream_saw(env.port, env.up, ["/old"])


def test_absolute_form_accepted(env):
    data = b"GET http://example.test/abs?q=1 HTTP/1.1\r\nHost: example.test\r\n\r\n"
    exchange_ok(env, data, 1)
    (req,) = env.up.wait_requests(1)
    assert req.path in ("/abs?q=1", "http://example.test/abs?q=1"), req.path


VALID_CHUNKED = {
    "ext-name-only": (b"5;flag\r\nhello\r\n0\r\n\r\n", b"hello"),
    "ext-name-value": (b"5;name=value\r\nhello\r\n0\r\n\r\n", b"hello"),
    "ext-quoted-value": (b'5;name="a b"\r\nhello\r\n0\r\n\r\n', b"hello"),
    "ext-two-valued": (b"5;a=b;c=d\r\nhello\r\n0\r\n\r\n", b"hello"),
    "ext-valued-then-name": (b"5;name=value;flag\r\nhello\r\n0\r\n\r\n", b"hello"),
    "upper-hex": (b"A\r\n0123456789\r\n0\r\n\r\n", b"0123456789"),
    "leading-zeros": (b"0003\r\nabc\r\n0000\r\n\r\n", b"abc"),
    "trailer": (b"3\r\nabc\r\n0\r\nX-Trailer: t\r\n\r\n", b"abc"),
    "many-chunks": (b"1\r\na\r\n1\r\nb\r\n2\r\ncd\r\n0\r\n\r\n", b"abcd"),
}


@pytest.mark.parametrize("name", sorted(VALID_CHUNKED))
def test_chunked_valid_variants_accepted(env, name):
    """RFC 9112 7.1: chunk extensions (any number, with or without values),
    upper-case hex, leading zeros and trailers are valid and must be accepted."""
    body, expected = VALID_CHUNKED[name]
    exchange_ok(env, post(TE, body, target=b"/variants"), 1)
    (req,) = expect_upstream_saw(env.port, env.up, ["/variants"])
    assert req.body == expected


def test_chunked_body_then_pipelined_request(env):
    """A request that looks hidden after the last chunk is just the next
    pipelined request: upstream sees exactly what the framing says."""
    body = b"5\r\nhello\r\n0\r\n\r\n"
    data = post(TE, body, target=b"/a") + get(target=b"/b")
    resps = exchange_ok(env, data, 2)
    assert resps[0].body.startswith(b"ok POST /a len=5"), resps[0]
    assert resps[1].body.startswith(b"ok GET /b"), resps[1]
    a, b = expect_upstream_saw(env.port, env.up, ["/a", "/b"])
    assert (a.method, a.body) == ("POST", b"hello")
    assert (b.method, b.body) == ("GET", b"")


def test_request_inside_content_length_body_is_data(env):
    """Bytes that look like a request inside a Content-Length body are body."""
    data = post(b"Content-Length: %d\r\n" % len(HIDDEN), HIDDEN, target=b"/a") + get(target=b"/b")
    resps = exchange_ok(env, data, 2)
    assert resps[0].body.startswith(b"ok POST /a len=%d" % len(HIDDEN))
    a, b = expect_upstream_saw(env.port, env.up, ["/a", "/b"])
    assert a.body == HIDDEN
    assert b.method == "GET"


def test_request_inside_chunk_is_data(env):
    body = b"%x\r\n" % len(HIDDEN) + HIDDEN + b"\r\n0\r\n\r\n"
    resps = exchange_ok(env, post(TE, body, target=b"/a"), 1)
    assert resps[0].body.startswith(b"ok POST /a len=%d" % len(HIDDEN))
    (a,) = expect_upstream_saw(env.port, env.up, ["/a"])
    assert a.body == HIDDEN


def test_keepalive_survives_many_valid_requests(env):
    """Sanity: the strict parser does not reject ordinary traffic; one client
    connection carries several requests with different framings."""
    data = (get(target=b"/1")
            + post(b"Content-Length: 3\r\n", b"abc", target=b"/2")
            + post(TE, b"3\r\nxyz\r\n0\r\n\r\n", target=b"/3")
            + b"HEAD /4 HTTP/1.1\r\nHost: example.test\r\nX-Weird-But-Valid: a\tb \x80\xff\r\n\r\n"
            + b"PURGE /5 HTTP/1.1\r\nHost: example.test\r\n\r\n")
    with Client(env.port) as c:
        c.send(data)
        for i in range(5):
            r = c.rxresp(head=i == 3)
            assert r.status == 200, (i, r)
    reqs = expect_upstream_saw(env.port, env.up, ["/1", "/2", "/3", "/4", "/5"])
    assert [q.body for q in reqs] == [b"", b"abc", b"xyz", b"", b""]
    assert [q.method for q in reqs] == ["GET", "POST", "POST", "HEAD", "PURGE"]


@pytest.mark.parametrize("version", [b"HTTP/0.9", b"HTTP/2.0", b"HTTP/3.0", b"HTTP/9.9"])
def test_other_major_versions_are_505(env, version):
    """A well-formed HTTP-version of another major version is 505 (RFC 9110 15.6.6), not 400."""
    reject(env, get(version=version), statuses=(505,))


def test_http10_upgrade_is_ignored(env):
    """RFC 9110 7.8: a server must ignore Upgrade in an HTTP/1.0 request (its client could not
    take the 101: no 1xx to HTTP/1.0). It goes upstream as a plain request."""
    with Client(env.port) as c:
        c.send(b"GET /ws HTTP/1.0\r\n" + H + b"Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
        resp = c.rxresp()
    assert resp.status == 200, resp
    req = env.up.wait_requests(1)[-1]
    assert "upgrade" not in req.header_names(), req


def test_405_for_connect_names_what_is_allowed(env):
    """RFC 9110 15.5.6: a 405 carries Allow."""
    with Client(env.port) as c:
        c.send(b"CONNECT example.test:443 HTTP/1.1\r\n" + H + b"\r\n")
        resp = c.rxresp()
        c.expect_close()
    assert resp.status == 405 and "GET" in (resp.header("Allow") or ""), resp


def test_refused_lines_are_logged_as_sent(env):
    """A line llhttp refuses (here: a target that is neither origin- nor absolute-form) is in
    the access log as the client sent it, and so is a head the client abandoned half-way."""
    with Client(env.port) as c:
        c.send(b"GET a.example:443 HTTP/1.1\r\n" + H + b"\r\n")
        assert c.rxresp().status == 400
    with Client(env.port) as c:
        c.send(b"GET /half-way HTTP/1.1\r\n" + H)
        c.sock.shutdown(1)  # FIN: the head will never be complete
        c.expect_close()
    want = ('"GET a.example:443 HTTP/1.1" 400', '"GET /half-way HTTP/1.1" 400 0')
    wait_for(lambda: all(any(w in line for line in env.ferry.access_log_lines()) for w in want),
             5, what="the two refused requests in the access log")
