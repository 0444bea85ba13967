"""Misbehaving upstreams: closing without a response, broken framing, garbage, silence,
oversized heads, death mid-body, 1xx.

A scripted raw upstream (harness.RawUpstream) plays one behaviour per accepted
upstream connection. Broken connections are held open by the upstream, so a
ferry that wrongly returns them to its pool would send the next request on
them -- which the script records.
"""

import threading
import time
import types

import pytest

from harness import Client, RawUpstream, SockReader, expect_error_response, pattern_bytes, wait_for

GOOD_BODY = b"good\n"
GOOD = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n"
        b"Connection: close\r\n\r\n" + GOOD_BODY)


class Script:
    """Per-connection behaviour for the raw upstream.

    plan(*behaviours, default=...) sets what the 1st, 2nd, ... connection does.
    A behaviour is (payload, after) where after is "close", "hold" (keep the
    connection open until ferry closes it, recording anything ferry sends) or
    "silent" (send nothing, hold)."""

    def __init__(self, raw):
        self.raw = raw
        self.cond = threading.Condition()
        raw.handler = self._handle
        self.plan()

    def plan(self, *behaviours, default=(GOOD, "close")):
        with self.cond:
            self.behaviours = list(behaviours)
            self.default = default
            self.n = 0
            self.requests = {}   # conn index -> list of request heads
            self.extra = {}      # conn index -> bytes ferry sent after our response
            self.ferry_closed = set()

    def _handle(self, sock):
        with self.cond:
            i = self.n
            self.n += 1
            payload, after = (self.behaviours[i] if i < len(self.behaviours) else self.default)
            # bind this generation's state: a stale thread never touches a later plan
            requests, extra, ferry_closed = self.requests, self.extra, self.ferry_closed
            requests[i] = []
            extra[i] = b""
        rd = SockReader(sock, timeout=10)
        try:
            head = rd.read_head()
        except (EOFError, OSError):
            return
        with self.cond:
            requests[i].append(head)
            self.cond.notify_all()
        try:
            if payload:
                sock.sendall(payload)
        except OSError:  # ferry closed on us mid-send
            with self.cond:
                ferry_closed.add(i)
                self.cond.notify_all()
            return
        if after in ("hold", "silent"):
            # wait (bounded by the socket timeout) until ferry closes; record extras
            try:
                while True:
                    d = sock.recv(65536)
                    if not d:
                        break
                    with self.cond:
                        extra[i] += d
            except OSError:
                pass
            with self.cond:
                ferry_closed.add(i)
                self.cond.notify_all()

    def wait_ferry_closed(self, i, timeout=5.0):
        wait_for(lambda: i in self.ferry_closed, timeout, cond=self.cond,
                 what="ferry to close the broken upstream connection %d" % i)


@pytest.fixture(scope="module")
def env(module_ferry_factory):
    raw = RawUpstream().start()
    script = Script(raw)
    try:
        # a short drain bound keeps module teardown fast even when a test left
        # a half-open connection behind
        f = module_ferry_factory(raw.url, "--drain-timeout", "2s", "--upstream-timeout", "1s")
        yield types.SimpleNamespace(ferry=f, port=f.port, raw=raw, script=script)
    finally:
        raw.stop()
    errs = raw.assertion_errors()
    assert not errs, "raw upstream script failed: %r" % errs


REQ = b"GET /f HTTP/1.1\r\nHost: example.test\r\n\r\n"


def get_502(env, payload, after="hold", statuses=(502,)):
    """Upstream connection 0 answers `payload`; the client must get 502. Then a
    second client connection must be served by a NEW upstream connection while
    the broken one got nothing more and was closed by ferry."""
    env.script.plan((payload, after))
    with Client(env.port) as c:
        c.send(REQ)
        resp = c.rxresp()
    assert resp.status in statuses, "expected %s, got %r" % (statuses, resp)
    expect_error_response(resp, resp.status, upstream_port=env.raw.port)
    assert_broken_conn_discarded(env)
    return resp


def assert_broken_conn_discarded(env):
    with Client(env.port) as c:
        c.send(b"GET /next HTTP/1.1\r\nHost: example.test\r\n\r\n")
        resp = c.rxresp()
    assert resp.status == 200 and resp.body == GOOD_BODY, \
        "request after a broken upstream response failed: %r" % resp
    s = env.script
    with s.cond:
        conns = s.n
        reqs = {k: list(v) for k, v in s.requests.items()}
        extra = dict(s.extra)
    assert len(reqs.get(0, [])) == 1, reqs
    assert not extra.get(0), "ferry reused the broken upstream connection: %r" % extra[0][:300]
    assert conns >= 2 and any(b"GET /next " in h for h in reqs.get(conns - 1, [])), \
        "the next request did not go to a new upstream connection: %r" % reqs
    if s.behaviours and s.behaviours[0][1] in ("hold", "silent"):
        s.wait_ferry_closed(0)


# ---------------------------------------------------------------------------
# broken response heads -> 502
# ---------------------------------------------------------------------------

BAD_HEADS = {
    "cl-abc": b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\nhello",
    "cl-negative": b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\nhello",
    "cl-plus": b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello",
    "cl-two-different": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nhello",
    "cl-list-different": b"HTTP/1.1 200 OK\r\nContent-Length: 5, 7\r\n\r\nhello",
    "status-garbage": (b"FOO BAR\r\n\r\n", b"GARBAGE\r\n\r\n"),
    "status-not-numeric": b"HTTP/1.1 abc OK\r\nContent-Length: 0\r\n\r\n",
    "status-two-digits": b"HTTP/1.1 20 OK\r\nContent-Length: 0\r\n\r\n",
    "status-four-digits": b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n",
    "binary-garbage": b"\x00\x01\x02\xff garbage \xfe\r\n\r\n",
    "http09-body": b"<html>hello</html>\r\n\r\n",
    "header-without-colon": b"HTTP/1.1 200 OK\r\nNoColonHere\r\nContent-Length: 0\r\n\r\n",
}


@pytest.mark.parametrize("name", sorted(BAD_HEADS))
def test_broken_response_head_502(env, name):
    payloads = BAD_HEADS[name]
    for payload in payloads if isinstance(payloads, tuple) else (payloads,):
        get_502(env, payload)


def test_response_space_before_colon(env):
    """RFC 9112 5.1: a proxy must reject this or remove the whitespace."""
    env.script.plan((b"HTTP/1.1 200 OK\r\nContent-Length : 5\r\nConnection: close\r\n\r\nhello",
                     "hold"))
    with Client(env.port) as c:
        c.send(REQ)
        resp = c.rxresp()  # the harness's reader rejects malformed field names
    if resp.status == 502:
        expect_error_response(resp, 502, upstream_port=env.raw.port)
        assert_broken_conn_discarded(env)
    else:
        assert resp.status == 200 and resp.body == b"hello", resp


def test_garbage_then_close_502(env):
    """Garbage immediately followed by FIN (data and EOF arrive together).
    Repeated: a lost EOF shows up as an intermittent 504 after --upstream-timeout."""
    for _ in range(3):
        t0 = time.monotonic()
        get_502(env, b"this is not http at all\n", after="close")
        assert time.monotonic() - t0 < 0.8, "502 only after %.2fs" % (time.monotonic() - t0)


def test_upstream_closes_without_response_502(env):
    # every upstream connection closes at once: retries (if any) fail too
    env.script.plan(default=(b"", "close"))
    with Client(env.port) as c:
        c.send(REQ)
        resp = c.rxresp()
    expect_error_response(resp, 502, upstream_port=env.raw.port)
    env.script.plan()
    assert_broken_conn_next_ok(env)


def assert_broken_conn_next_ok(env):
    with Client(env.port) as c:
        c.send(b"GET /next HTTP/1.1\r\nHost: example.test\r\n\r\n")
        resp = c.rxresp()
    assert resp.status == 200 and resp.body == GOOD_BODY, resp


def test_upstream_silent_504(env):
    env.script.plan((b"", "silent"))
    t0 = time.monotonic()
    with Client(env.port) as c:
        c.send(REQ)
        resp = c.rxresp(timeout=6)
    dt = time.monotonic() - t0
    expect_error_response(resp, 504, upstream_port=env.raw.port)
    assert 0.9 <= dt <= 3.0, "504 after %.2fs with --upstream-timeout 1s" % dt
    assert_broken_conn_discarded(env)


def test_response_head_too_large_502(env):
    big = b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 200000 + b"\r\nContent-Length: 2\r\n\r\nok"
    get_502(env, big)


def test_response_too_many_fields_502(env):
    many = (b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-N%d: v\r\n" % i for i in range(10000))
            + b"Content-Length: 2\r\n\r\nok")
    get_502(env, many)


# ---------------------------------------------------------------------------
# both Content-Length and Transfer-Encoding in a response
# ---------------------------------------------------------------------------

def test_response_cl_and_te(env):
    """RFC 9112 6.3 lets a proxy either reject or let Transfer-Encoding win; ferry
    rejects (docs/security.md): 502, the connection discarded, whichever field
    comes first."""
    payloads = [
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n"
        b"Connection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n0\r\n\r\n",
    ]
    for payload in payloads:
        get_502(env, payload)


# ---------------------------------------------------------------------------
# broken body framing: 502 if the head was not sent yet, else close mid-body
# ---------------------------------------------------------------------------

CHUNK_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"

BAD_BODIES = {
    "chunk-size-nonhex": CHUNK_HEAD + b"zz\r\nhello\r\n0\r\n\r\n",
    "chunk-data-too-long": CHUNK_HEAD + b"5\r\nhelloXX\r\n0\r\n\r\n",
    "chunk-size-overflow": CHUNK_HEAD + b"5\r\nhello\r\nffffffffffffffffffff\r\nx\r\n0\r\n\r\n",
    "chunk-size-negative": CHUNK_HEAD + b"5\r\nhello\r\n-1\r\nx\r\n0\r\n\r\n",
}


def assert_failed_or_truncated(env, resp, c, forbidden=b""):
    if resp.status == 502:
        expect_error_response(resp, 502, upstream_port=env.raw.port)
        return
    assert resp.status == 200, resp
    assert not resp.complete, \
        "a broken upstream body was relayed as a COMPLETE response: %r" % resp
    if forbidden:
        assert forbidden not in resp.raw, resp.raw
    c.wait_closed(what="ferry (client connection after a broken upstream body)")


@pytest.mark.parametrize("name", sorted(BAD_BODIES))
def test_broken_response_body(env, name):
    env.script.plan((BAD_BODIES[name], "hold"))
    with Client(env.port) as c:
        c.send(REQ)
        resp = c.rxresp(allow_incomplete=True)
        assert_failed_or_truncated(env, resp, c, forbidden=b"XX")
    assert_broken_conn_discarded(env)


def _dies_mid_body(env, payload, sent, length=None, head_sent=False):
    """Upstream sends part of a body (`sent`) and closes. The client must see a
    response that never looks complete (or 502), and ferry must notice the EOF
    promptly: well before --upstream-timeout (1s) would fire. Repeated, because
    data and FIN arriving together is the racy case.

    A 200 carries the upstream's Content-Length (`length`) and a body that is a
    prefix of `sent`, never padded, and no terminating 0-chunk. head_sent=True:
    the body was well under way, so ferry (which streams) must already have sent
    the 200 head: 502 is not an option."""
    for _ in range(3):
        env.script.plan((payload, "close"))
        t0 = time.monotonic()
        with Client(env.port) as c:
            c.send(REQ)
            resp = c.rxresp(allow_incomplete=True)
            if head_sent:
                assert resp.status == 200, resp
            if resp.status == 200:
                if length is not None:
                    assert resp.header("Content-Length") == str(length), resp
                assert resp.body == sent[:len(resp.body)], \
                    "client got bytes the upstream never sent: %r" % resp.body[:200]
            assert_failed_or_truncated(env, resp, c, forbidden=b"\r\n0\r\n\r\n")
        dt = time.monotonic() - t0
        assert dt < 0.8, ("ferry needed %.2fs to notice the upstream closed mid-body "
                          "(--upstream-timeout 1s): the EOF was not seen" % dt)
        env.script.plan()
        assert_broken_conn_next_ok(env)


def test_upstream_dies_mid_body_content_length(env):
    _dies_mid_body(env, b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 10,
                   sent=b"x" * 10, length=100)
    part = pattern_bytes(60000)
    _dies_mid_body(env, b"HTTP/1.1 200 OK\r\nContent-Length: 200000\r\n\r\n" + part,
                   sent=part, length=200000, head_sent=True)


def test_upstream_dies_mid_body_chunked(env):
    _dies_mid_body(env, CHUNK_HEAD + b"5\r\nhello\r\n", sent=b"hello")
    # dies inside a chunk's data
    _dies_mid_body(env, CHUNK_HEAD + b"a\r\n0123456789\r\n64\r\n" + b"x" * 40,
                   sent=b"0123456789" + b"x" * 40, head_sent=True)


# ---------------------------------------------------------------------------
# 1xx interim responses
# ---------------------------------------------------------------------------

INTERIM = (b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
           b"HTTP/1.1 102 Processing\r\n\r\n")


def test_1xx_then_final_relayed(env):
    env.script.plan((INTERIM + GOOD, "close"))
    with Client(env.port) as c:
        c.send(REQ)
        interim, final = c.rxresp_interim()
    assert [r.status for r in interim] == [103, 102], interim
    assert interim[0].header("Link") == "</style.css>; rel=preload", interim[0]
    assert final.status == 200 and final.body == GOOD_BODY, final


def test_1xx_not_sent_to_http10_client(env):
    env.script.plan((INTERIM + GOOD, "close"))
    with Client(env.port) as c:
        c.send(b"GET /f HTTP/1.0\r\nHost: example.test\r\n\r\n")
        interim, final = c.rxresp_interim()
    assert interim == [], "1xx sent to an HTTP/1.0 client: %r" % interim
    assert final.status == 200 and final.body == GOOD_BODY, final


def test_too_many_interim_responses_502(env):
    """1xx responses are bounded like any input: each restarts the upstream timeout, so an
    endless stream of them would hold the exchange forever. Past 32, a 502."""
    env.script.plan((b"HTTP/1.1 102 Processing\r\n\r\n" * 40 + GOOD, "close"))
    with Client(env.port) as c:
        c.send(REQ)
        interim, final = c.rxresp_interim()
    assert len(interim) == 32, len(interim)
    assert final.status == 502, final


def test_interim_and_204_lose_content_length(env):
    """RFC 9110 8.6: no Content-Length on a 1xx or a 204. A lenient client honouring it on a 103
    would take bytes of the final response as the interim's body."""
    env.script.plan((b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\nContent-Length: 5\r\n\r\n" + GOOD,
                     "close"),
                    (b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n", "close"))
    with Client(env.port) as c:
        c.send(REQ)
        interim, final = c.rxresp_interim()
        assert [r.status for r in interim] == [103] and interim[0].header("Link") == "</a>"
        assert interim[0].header("Content-Length") is None, interim[0]
        assert final.status == 200 and final.body == GOOD_BODY, final
    with Client(env.port) as c:
        c.send(REQ)
        resp = c.rxresp()
    assert resp.status == 204 and resp.header("Content-Length") is None, resp


def test_invalid_reason_phrase_replaced(env):
    """reason-phrase is HTAB / SP / VCHAR / obs-text (RFC 9112 4): an upstream's phrase with
    control bytes (a terminal's escape sequences) reaches the client as the standard phrase."""
    env.script.plan((b"HTTP/1.1 200 \x1b]0;pwned\x07\x1b[31mRED\x7f\r\nContent-Length: 5\r\n"
                     b"Connection: close\r\n\r\n" + GOOD_BODY, "close"))
    with Client(env.port) as c:
        c.send(b"GET /f HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\n\r\n")
        data = c.wait_closed()
    assert data.startswith(b"HTTP/1.1 200 OK\r\n"), data
    assert b"\x1b" not in data and data.endswith(GOOD_BODY), data


def test_early_answer_then_reset_is_relayed(env):
    """An upstream answers a large upload early (413, Connection: close) and closes without
    reading the body, so its kernel resets the connection and ferry's next write fails. The 413
    is still queued in ferry's socket: the client gets it (RFC 9112 9.3 allows an early
    answer), not a 502, and its connection closes (the rest of its body was never read)."""
    body = 4 << 20
    early = (b"HTTP/1.1 413 Payload Too Large\r\nConnection: close\r\nContent-Length: 8\r\n\r\n"
             b"too-big!")
    for _ in range(2):
        env.script.plan((early, "close"))
        with Client(env.port) as c:
            def upload():
                try:
                    c.sock.sendall(b"POST /upload HTTP/1.1\r\nHost: example.test\r\n"
                                   b"Content-Length: %d\r\n\r\n" % body + b"a" * body)
                except OSError:
                    pass  # ferry closed the connection once the answer was sent
            t = threading.Thread(target=upload)
            t.start()
            t.join(10)
            resp = c.rxresp()
        assert resp.status == 413 and resp.body == b"too-big!", resp


@pytest.mark.parametrize("upgrade", [b"Upgrade: h2c\r\n", b""], ids=["other-protocol", "no-upgrade"])
def test_101_to_a_protocol_not_offered_502(env, upgrade):
    """RFC 9110 7.8: a server must not switch to a protocol the client did not offer, and a 101
    names the protocol (15.2.2). Such a switch is never tunnelled: it would also get around
    --upgrade-protocols (h2c smuggling)."""
    env.script.plan((b"HTTP/1.1 101 Switching Protocols\r\n" + upgrade +
                     b"Connection: Upgrade\r\n\r\nPRI * HTTP/2.0\r\n", "hold"))
    with Client(env.port) as c:
        c.send(b"GET /ws HTTP/1.1\r\nHost: example.test\r\nUpgrade: websocket\r\n"
               b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
               b"Sec-WebSocket-Version: 13\r\n\r\n")
        resp = c.rxresp()
    assert resp.status == 502, resp
    assert_broken_conn_discarded(env)
