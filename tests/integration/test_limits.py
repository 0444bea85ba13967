"""Size limits, header/idle timeouts and the connection limit.

Rejected requests: error status with Content-Length, connection closed, and
nothing reached the upstream (byte-recording upstream + canary, see
harness.expect_upstream_saw).
Timing tests measure with bounded waits; nothing sleeps to synchronise.
"""

import re
import select
import socket
import time
import types

import pytest

from harness import (Client, IncompleteResponse, parse_responses, UpstreamServer, expect_error_response,
                     expect_upstream_saw, route_ok_len)


@pytest.fixture(scope="module")
def env(module_ferry_factory):
    up = UpstreamServer(default_route=route_ok_len).start()
    try:
        # a short drain bound keeps module teardown fast even when a test left
        # a half-open connection behind
        # "small": tightened limits + 1 s header timeout
        small = module_ferry_factory(up.url, "--drain-timeout", "2s", "--max-request-line", "1k",
                                     "--max-header-size", "4k", "--max-headers", "10",
                                     "--max-body-size", "1k", "--header-timeout", "1s")
        # "dflt": default limits, 1 s idle timeout
        dflt = module_ferry_factory(up.url, "--drain-timeout", "2s", "--idle-timeout", "1s")
        yield types.SimpleNamespace(up=up, small=small, dflt=dflt)
    finally:
        up.stop()


@pytest.fixture(autouse=True)
def _reset(env):
    env.up.reset()
    yield


def reject(port, up, data, status):
    with Client(port) as c:
        c.send(data)
        resp = c.rxresp()
        expect_error_response(resp, status, upstream_port=up.port)
        c.expect_close()
    expect_upstream_saw(port, up, [])
    return resp


def accept(port, up, data, target):
    with Client(port) as c:
        c.send(data)
        resp = c.rxresp()
        assert resp.status == 200, resp
    return expect_upstream_saw(port, up, [target])


def request_line_of(total_len):
    """'GET /aaa... HTTP/1.1' of exactly total_len bytes (without CRLF)."""
    fixed = len(b"GET / HTTP/1.1")
    return b"GET /" + b"a" * (total_len - fixed) + b" HTTP/1.1"


H = b"Host: example.test\r\n"


# ---------------------------------------------------------------------------
# request line
# ---------------------------------------------------------------------------

def test_request_line_default_limit_414(env):
    line = request_line_of(9000)
    reject(env.dflt.port, env.up, line + b"\r\n" + H + b"\r\n", 414)


def test_request_line_under_default_limit_ok(env):
    line = request_line_of(8000)
    accept(env.dflt.port, env.up, line + b"\r\n" + H + b"\r\n", line.split(b" ")[1].decode())


def test_request_line_configured_limit_414(env):
    line = request_line_of(1500)
    reject(env.small.port, env.up, line + b"\r\n" + H + b"\r\n", 414)


def test_request_line_under_configured_limit_ok(env):
    line = request_line_of(900)
    accept(env.small.port, env.up, line + b"\r\n" + H + b"\r\n", line.split(b" ")[1].decode())


# ---------------------------------------------------------------------------
# head size / field count
# ---------------------------------------------------------------------------

def fields(n, size):
    return b"".join(b"X-F%d: %s\r\n" % (i, b"v" * size) for i in range(n))


def test_head_too_large_431(env):
    # 8 fields of ~710 bytes: every line < 1k, 9 fields <= 10, but head > 4k
    data = b"GET /big HTTP/1.1\r\n" + H + fields(8, 700) + b"\r\n"
    assert len(data) > 5000
    reject(env.small.port, env.up, data, 431)


def test_head_below_size_limit_ok(env):
    data = b"GET /fits HTTP/1.1\r\n" + H + fields(4, 700) + b"\r\n"
    assert len(data) < 3500
    accept(env.small.port, env.up, data, "/fits")


def test_head_too_large_default_431(env):
    data = b"GET /big HTTP/1.1\r\n" + H + fields(4, 5000) + b"\r\n"
    assert 16 * 1024 < len(data) < 24 * 1024
    reject(env.dflt.port, env.up, data, 431)


def test_too_many_fields_431(env):
    # Host + 10 more = 11 fields > --max-headers 10
    data = b"GET /many HTTP/1.1\r\n" + H + fields(10, 3) + b"\r\n"
    reject(env.small.port, env.up, data, 431)


def test_max_fields_exactly_ok(env):
    # Host + 9 more = 10 fields == --max-headers 10
    data = b"GET /ten HTTP/1.1\r\n" + H + fields(9, 3) + b"\r\n"
    accept(env.small.port, env.up, data, "/ten")


# ---------------------------------------------------------------------------
# body size
# ---------------------------------------------------------------------------

def test_content_length_body_too_large_413(env):
    body = b"b" * 2048
    data = b"POST /body HTTP/1.1\r\n" + H + b"Content-Length: 2048\r\n\r\n" + body
    reject(env.small.port, env.up, data, 413)


def test_content_length_body_at_limit_ok(env):
    body = bytes(range(256)) * 4
    data = b"POST /body HTTP/1.1\r\n" + H + b"Content-Length: 1024\r\n\r\n" + body
    (req,) = accept(env.small.port, env.up, data, "/body")
    assert req.body == body


def test_chunked_body_at_limit_ok(env):
    body = b"c" * 1024
    data = (b"POST /cbody HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
            b"200\r\n" + body[:512] + b"\r\n200\r\n" + body[512:] + b"\r\n0\r\n\r\n")
    (req,) = accept(env.small.port, env.up, data, "/cbody")
    assert req.body == body


def _chunked_body_len(raw):
    """Sum of chunk data bytes in a (possibly truncated) raw request."""
    i = raw.find(b"\r\n\r\n")
    if i < 0:
        return 0
    rest = raw[i + 4:]
    total = 0
    while rest:
        m = re.match(rb"^([0-9a-fA-F]+)[^\r\n]*\r\n", rest)
        if not m:
            break
        n = int(m.group(1), 16)
        rest = rest[m.end():]
        take = min(n, len(rest))
        total += take
        rest = rest[take + 2:]
        if n == 0:
            break
    return total


def test_chunked_body_too_large(env):
    """Chunked body over --max-body-size: 413 or connection close; the upstream
    never gets a complete request nor more than 1024 body bytes."""
    data = (b"POST /cbig HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
            b"258\r\n" + b"d" * 600 + b"\r\n258\r\n" + b"e" * 600 + b"\r\n0\r\n\r\n")
    with Client(env.small.port) as c:
        c.send(data)
        try:
            resp = c.rxresp()
        except IncompleteResponse as e:  # closed without a response is acceptable
            assert "closed" in str(e), e
            resp = None
        if resp is not None:
            expect_error_response(resp, 413, upstream_port=env.up.port)
        c.expect_close()
    # leftovers are allowed only as an incomplete request on a connection ferry closed
    expect_upstream_saw(env.small.port, env.up, [], partial_ok=True)
    with env.up.lock:
        raws = {cid: bytes(d) for cid, d in env.up.received.items()}
    for cid, raw in raws.items():
        i = raw.find(b"POST /cbig ")
        if i >= 0:
            forwarded = _chunked_body_len(raw[i:])
            assert forwarded <= 1024, "%d body bytes beyond the limit reached upstream" % forwarded


# ---------------------------------------------------------------------------
# header timeout (slowloris) and idle keep-alive timeout
# ---------------------------------------------------------------------------

def test_slowloris_408(env):
    """--header-timeout 1s: a head trickling one byte every 200 ms gets 408 and
    the connection is closed within ~1-2.5 s."""
    c = Client(env.small.port)
    t0 = time.monotonic()
    try:
        c.send(b"GET /slow HTTP/1.1\r\nHost: example.test\r\nX-Slow: ")
        deadline = t0 + 4.0
        got_data = False
        while time.monotonic() < deadline:
            # pace the trickle; wake up early as soon as ferry says something
            r, _, _ = select.select([c.sock], [], [], 0.2)
            if r:
                got_data = True
                break
            if not c.send(b"a"):
                break
        t_answer = time.monotonic() - t0
        assert got_data, "ferry neither answered nor closed within 4 s of a slowloris head"
        resp = c.rxresp()
        expect_error_response(resp, 408, upstream_port=env.up.port)
        c.expect_close(timeout=1.0)
        t_closed = time.monotonic() - t0
    finally:
        c.close()
    assert 0.8 <= t_answer <= 2.5, "408 after %.2fs (header timeout 1s)" % t_answer
    assert t_closed <= 2.7, "closed after %.2fs" % t_closed
    expect_upstream_saw(env.small.port, env.up, [])


def test_complete_head_in_pieces_within_timeout_ok(env):
    """A head that arrives in pieces but completes in time is served."""
    with Client(env.small.port) as c:
        for piece in (b"GET /pie", b"ces HTTP/1.1\r\nHo", b"st: example.test\r\n", b"\r\n"):
            assert c.send(piece)
        resp = c.rxresp()
        assert resp.status == 200, resp
    expect_upstream_saw(env.small.port, env.up, ["/pieces"])


def test_idle_keepalive_timeout(env):
    """--idle-timeout 1s: after a complete exchange the idle connection is
    closed silently (no bytes) after roughly a second."""
    with Client(env.dflt.port) as c:
        c.send(b"GET /idle HTTP/1.1\r\nHost: example.test\r\n\r\n")
        resp = c.rxresp()
        assert resp.status == 200, resp
        t0 = time.monotonic()
        extra = c.wait_closed(timeout=4.0, what="ferry (idle keep-alive connection, "
                              "--idle-timeout 1s)")
        dt = time.monotonic() - t0
    assert not extra, "ferry sent bytes on an idle keep-alive connection: %r" % extra
    assert 0.5 <= dt <= 2.5, "idle connection closed after %.2fs (--idle-timeout 1s)" % dt


def test_keepalive_second_request_before_idle_timeout(env):
    """The idle timer does not kill an active connection: two exchanges on one
    connection both succeed."""
    with Client(env.dflt.port) as c:
        for t in (b"/k1", b"/k2"):
            c.send(b"GET " + t + b" HTTP/1.1\r\nHost: example.test\r\n\r\n")
            assert c.rxresp().status == 200
    expect_upstream_saw(env.dflt.port, env.up, ["/k1", "/k2"])


@pytest.mark.parametrize("partial", [
    b"GET /p HTTP/1.1\r\nHost: example.test\r\n",
    b"POST /p HTTP/1.1\r\nHost: example.test\r\nContent-Length: 10\r\n\r\nabc",
    b"POST /p HTTP/1.1\r\nHost: example.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
], ids=["head", "cl-body", "chunked-body"])
def test_client_eof_mid_request_closes_promptly(env, partial):
    """Client sends part of a request and half-closes (data and FIN arrive
    together). ferry must notice the EOF and close promptly, not wait for
    --header-timeout (1s) and answer 408. Repeated: the lost-EOF case is racy."""
    for _ in range(3):
        c = Client(env.small.port)
        try:
            t0 = time.monotonic()
            c.sock.sendall(partial)
            c.sock.shutdown(socket.SHUT_WR)
            extra = c.wait_closed(timeout=1.2, what="ferry (after the client's EOF)")
            dt = time.monotonic() - t0
        finally:
            c.close()
        assert dt < 0.8, ("ferry took %.2fs to close after the client's EOF (header timeout 1s); "
                          "it answered %r" % (dt, extra[:40]))
        assert not extra.startswith(b"HTTP/1.1 408"), extra[:60]
    env.up.reset()
    expect_upstream_saw(env.small.port, env.up, [], partial_ok=True)


def test_client_half_close_after_request(env):
    """A complete request followed by the client's FIN: a hang-up while ferry waits for the
    upstream abandons the exchange (like nginx); once the response has started it is sent whole.
    Either way ferry closes at once and never sends part of a response."""
    for i in range(3):
        c = Client(env.small.port)
        try:
            t0 = time.monotonic()
            c.sock.sendall(b"GET /hc%d HTTP/1.1\r\nHost: example.test\r\n\r\n" % i)
            c.sock.shutdown(socket.SHUT_WR)
            got = c.wait_closed(timeout=1.2, what="ferry (half-closed client)")
            dt = time.monotonic() - t0
        finally:
            c.close()
        if got:
            # The upstream was fast enough to answer before the hang-up was seen: then the whole
            # response came, never a part of one.
            resps = parse_responses(got)
            assert len(resps) == 1 and resps[0].status == 200, got[:200]
        assert dt < 0.8, \
            "connection of a half-closed client still open %.2fs after its request" % dt


# ---------------------------------------------------------------------------
# --max-connections
# ---------------------------------------------------------------------------

def _outcome(c, deadline):
    """'served', 'refused' (closed/reset/503) or 'pending' (no answer yet)."""
    try:
        left = deadline - time.monotonic()
        if left <= 0:
            r, _, _ = select.select([c.sock], [], [], 0)
            if not r:
                return "pending", None
        resp = c.rxresp(timeout=max(0.05, left))
    except TimeoutError:
        return "pending", None
    except IncompleteResponse:  # closed or reset without a response
        return "refused", None
    except OSError:
        return "refused", None
    if resp.status == 200:
        return "served", resp
    assert resp.status == 503, "unexpected answer over the connection limit: %r" % resp
    expect_error_response(resp, 503)
    return "refused", resp


def test_max_connections(env, ferry_factory):
    f = ferry_factory(env.up.url, "--drain-timeout", "2s", "--max-connections", "5")
    conns = []
    try:
        # 10 concurrent idle connections (connect succeeds at TCP level even
        # when ferry will not serve them: the kernel completes the handshake)
        for _ in range(10):
            try:
                conns.append(Client(f.port, timeout=3))
            except OSError:
                conns.append(None)  # refused outright is fine
        live = [c for c in conns if c is not None]
        for i, c in enumerate(live):
            c.send(b"GET /mc%d HTTP/1.1\r\nHost: example.test\r\n\r\n" % i)
        deadline = time.monotonic() + 1.5
        outcomes = [_outcome(c, deadline) for c in live]
        served = [c for c, (o, _) in zip(live, outcomes) if o == "served"]
        kinds = [o for o, _ in outcomes]
        assert len(served) <= 5, "more than --max-connections 5 served: %r" % kinds
        assert len(served) >= 4, "only %d of 5 allowed connections served: %r" % (len(served), kinds)
        # ferry keeps serving the connections it holds
        for c in served:
            c.send(b"GET /again HTTP/1.1\r\nHost: example.test\r\n\r\n")
            assert c.rxresp().status == 200
        # free every slot; new connections are served again (bounded retry while
        # ferry notices the closes)
        for c in live:
            c.close()
        conns = []
        deadline = time.monotonic() + 5
        ok = False
        last = None
        while time.monotonic() < deadline and not ok:
            try:
                with Client(f.port, timeout=2) as c:
                    c.send(b"GET /after HTTP/1.1\r\nHost: example.test\r\n\r\n")
                    last = c.rxresp(timeout=2)
                    ok = last.status == 200
            except (AssertionError, OSError, TimeoutError) as e:
                last = e
        assert ok, "ferry did not serve new connections after the limit freed up: %r" % (last,)
        # and several at once again
        again = [Client(f.port) for _ in range(4)]
        try:
            for c in again:
                c.send(b"GET /after2 HTTP/1.1\r\nHost: example.test\r\n\r\n")
            for c in again:
                assert c.rxresp().status == 200
        finally:
            for c in again:
                c.close()
    finally:
        for c in conns:
            if c is not None:
                c.close()


def test_out_of_descriptors_then_accepting_resumes(ferry_factory):
    """Once ferry runs out of file descriptors, the connections waiting in the kernel's accept
    queue raise no new event (the listener is edge-triggered): accepting must resume on its
    own as descriptors come back, not only when yet another client connects."""
    import os
    import resource
    up = UpstreamServer(default_route=route_ok_len).start()
    try:
        f = ferry_factory(up.url, allowed_errors=[r"cannot accept", r"Too many open files"])
        nfd = len(os.listdir("/proc/%d/fd" % f.proc.pid))
        resource.prlimit(f.proc.pid, resource.RLIMIT_NOFILE, (nfd + 16, nfd + 16))
        socks = [socket.create_connection(("127.0.0.1", f.port), timeout=10) for _ in range(60)]
        for s in socks:
            s.sendall(b"GET /x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        answered, deadline = 0, time.monotonic() + 20
        pending = list(socks)
        while pending and time.monotonic() < deadline:
            ready, _, _ = select.select(pending, [], [], 1)
            for s in ready:
                try:
                    data = s.recv(100)
                except OSError:
                    data = b""
                answered += data.startswith(b"HTTP/1.1 ")
                pending.remove(s)
                s.close()  # gives ferry its descriptor back
        for s in pending:
            s.close()
        assert not pending, "%d clients never answered after descriptors came back" % len(pending)
        assert answered == 60
        f.expect_log(r"cannot accept: Too many open files")
    finally:
        up.stop()
