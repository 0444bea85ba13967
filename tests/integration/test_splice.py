"""Large response bodies through splice(2) (docs/internals/splice.md).

The same exchanges through a ferry with `--splice on` and one with `--splice off` give the same
bytes: Content-Length bodies around the threshold (--splice-min-size, 64 KiB by default) and far
above it, close-delimited bodies, keep-alive and pipelined exchanges. A spliced body never reads
past its end: a response the upstream sends unasked after it never reaches a client. A stalled
client stops the upstream (the pipe fills, reads stop), ferry's memory stays flat and the send
timeout fires; an upstream that dies mid-body, or sends fewer bytes than its Content-Length,
gives the client a cut connection, never a hang or a complete-looking body.

Whether the pipe path was taken is visible only in ferry's fd table (/proc/PID/fd: pipes), which
the tests look at where they must prove it ran; everything else is behaviour.
"""

import hashlib
import os
import socket
import threading
import time

import ssl

import pytest

from certs import CA
from harness import (RawUpstream, ResponseReader, SockReader, UpstreamServer, chunk_stream,
                     connect, ferry_bin, pattern_bytes, simple_request, wait_for)

THRESHOLD = 64 * 1024
BIG = int(os.environ.get("FERRY_BIG_BYTES", str(1 << 30)))
RSS_LIMIT_KB = 64 * 1024

_bodies = {}


def body_of(n, seed=0):
    key = (n, seed)
    if key not in _bodies:
        _bodies[key] = pattern_bytes(n, seed)
    return _bodies[key]


def pipe_fds(f):
    """The pipes open in ferry (its splice pipes: pooled or in use)."""
    n = 0
    d = "/proc/%d/fd" % f.pid
    for name in os.listdir(d):
        try:
            if os.readlink(os.path.join(d, name)).startswith("pipe:"):
                n += 1
        except FileNotFoundError:
            pass
    return n


def _is_asan_build():
    try:
        with open(ferry_bin(), "rb") as fh:
            return b"__asan_init" in fh.read()
    except OSError:
        return False


def bulk_handler(c):
    """A keep-alive upstream: GET /cl/N answers N bytes with Content-Length, /close/N answers N
    bytes delimited by closing the connection, /seed/S/N is /cl/N with another pattern."""
    rd = SockReader(c, timeout=30)
    while True:
        try:
            req = rd.rxreq()
        except EOFError:
            return
        parts = req.path.strip("/").split("/")
        if parts[0] == "close":
            n = int(parts[1])
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                      b"Connection: close\r\n\r\n" + body_of(n))
            return
        seed = int(parts[1]) if parts[0] == "seed" else 0
        n = int(parts[-1])
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
        if req.method == "HEAD":
            c.sendall(head + b"Content-Length: %d\r\n\r\n" % n)
            continue
        c.sendall(head + b"Content-Length: %d\r\n\r\n" % n + body_of(n, seed))


@pytest.fixture(scope="module")
def bulk():
    u = RawUpstream(bulk_handler).start()
    try:
        yield u
    finally:
        u.stop()
    errs = u.assertion_errors()
    assert not errs, "upstream handler failed: %r" % errs


@pytest.fixture(scope="module")
def ferries(module_ferry_factory, bulk):
    """{"on": ferry with --splice on, "off": with --splice off}, same upstream."""
    return {mode: module_ferry_factory(bulk.url, "--splice", mode) for mode in ("on", "off")}


def fetch(port, targets, version="HTTP/1.1", pipelined=False, heads=()):
    """GET each target on one keep-alive connection (all sent at once if pipelined); returns
    the responses (raw bytes, decoded body, framing)."""
    s = connect(port, timeout=30)
    try:
        rd = ResponseReader(s, timeout=30)
        reqs = [simple_request("HEAD" if i in heads else "GET", t, version=version,
                               headers=[("Connection", "keep-alive")] if version == "HTTP/1.0"
                               else ())
                for i, t in enumerate(targets)]
        out = []
        if pipelined:
            s.sendall(b"".join(reqs))
        for i, r in enumerate(reqs):
            if not pipelined:
                s.sendall(r)
            out.append(rd.read_final(head=i in heads))
        return out
    finally:
        s.close()


# ---- identical bytes, splice on and off ----

SIZES = [1, 1000, THRESHOLD - 1, THRESHOLD, THRESHOLD + 1, 1 << 20, (3 << 20) + 7]


@pytest.mark.parametrize("version", ["HTTP/1.1", "HTTP/1.0"])
@pytest.mark.parametrize("size", SIZES)
def test_content_length_bodies_identical_with_splice_on_and_off(ferries, size, version):
    raws = {}
    for mode, f in ferries.items():
        # twice on one connection: the second exchange runs on the pooled upstream connection
        rs = fetch(f.port, ["/cl/%d" % size] * 2, version=version)
        for r in rs:
            assert r.status == 200 and r.framing == "length"
            assert r.header("Content-Length") == str(size)
            assert r.body == body_of(size), "%s: body differs from the upstream's" % mode
        raws[mode] = [r.raw for r in rs]
    assert raws["on"] == raws["off"]


@pytest.mark.parametrize("version", ["HTTP/1.1", "HTTP/1.0"])
@pytest.mark.parametrize("size", [1000, 1 << 20, (5 << 20) + 3])
def test_close_delimited_bodies_identical_with_splice_on_and_off(ferries, size, version):
    got = {}
    for mode, f in ferries.items():
        s = connect(f.port, timeout=30)
        try:
            s.sendall(simple_request("GET", "/close/%d" % size, version=version))
            r = ResponseReader(s, timeout=30).read_final()
        finally:
            s.close()
        assert r.status == 200
        # HTTP/1.1 clients get it re-chunked (strictly parsed), HTTP/1.0 clients until close
        assert r.framing == ("chunked" if version == "HTTP/1.1" else "close")
        assert r.complete and r.body == body_of(size), "%s: body differs" % mode
        got[mode] = r
    if version == "HTTP/1.0":
        assert got["on"].raw == got["off"].raw
    # chunk sizes follow the reads (or the pipe's contents), so only the decoded bytes compare


def test_pipelined_and_keepalive_exchanges_get_their_own_bodies(ferries):
    targets = ["/seed/1/%d" % (1 << 20), "/seed/2/%d" % (THRESHOLD + 5), "/seed/3/10",
               "/seed/4/%d" % (2 << 20), "/seed/5/%d" % (1 << 20)]
    want = [body_of(int(t.split("/")[-1]), int(t.split("/")[2])) for t in targets]
    for mode, f in ferries.items():
        for pipelined in (False, True):
            rs = fetch(f.port, targets, pipelined=pipelined)
            assert [r.body == w for r, w in zip(rs, want)] == [True] * len(targets), \
                "%s pipelined=%s: a response carries another's body" % (mode, pipelined)


def test_head_of_a_large_body_then_a_get_on_the_same_connection(ferries):
    for mode, f in ferries.items():
        rs = fetch(f.port, ["/cl/%d" % (1 << 20), "/cl/%d" % (1 << 20)], heads=(0,))
        assert rs[0].status == 200 and rs[0].body == b""
        assert rs[0].header("Content-Length") == str(1 << 20)
        assert rs[1].body == body_of(1 << 20), mode


def test_access_log_counts_spliced_bytes(ferries):
    n = (2 << 20) + 1
    for mode, f in ferries.items():
        fetch(f.port, ["/seed/7/%d" % n])
        lines = wait_for(lambda: [l for l in f.access_log_lines() if "/seed/7/%d " % n in l], 5,
                         what="the access log line")
        assert '"GET /seed/7/%d HTTP/1.1" 200 %d ' % (n, n) in lines[0], (mode, lines)


def test_splice_min_size_is_the_threshold(ferry_factory, bulk):
    f = ferry_factory(bulk.url, "--splice-min-size", "1m")
    base = pipe_fds(f)
    for n in ((1 << 20) - 1, 1 << 20):
        assert fetch(f.port, ["/cl/%d" % n])[0].body == body_of(n)
        if n < (1 << 20):
            assert pipe_fds(f) == base, "a body under --splice-min-size was spliced"
    if not _is_asan_build():  # with FY_NO_FREELIST a pipe is closed after each use
        assert pipe_fds(f) > base, "a body of --splice-min-size bytes was not spliced"


def test_pipes_are_reused_not_leaked(ferries):
    f = ferries["on"]
    for _ in range(3):
        fetch(f.port, ["/cl/%d" % (1 << 20)] * 10)
    # one pipe (two fds) per exchange in flight, at most 16 kept per worker
    assert pipe_fds(f) <= 2 * 16 + 2


def test_upstream_sendfile_body_fills_the_pipe_by_slots_not_bytes(ferry_factory, raw_upstream,
                                                                   tmp_path):
    """A body sent with sendfile(2), like nginx serves a static file, arrives as page fragments,
    and after the head's read the first one is partial: 64 slots then hold less than the pipe's
    byte capacity, and a splice comes back short although the socket is not drained. Taken for
    "drained", the rest of the body, already in the socket, waited for an edge that never came
    (regression: stalled until the upstream timeout)."""
    n = 1 << 20
    data = body_of(n, 31)
    path = tmp_path / "body"
    path.write_bytes(data)

    def handler(c):
        rd = SockReader(c, timeout=10)
        with open(path, "rb") as fh:
            while True:
                try:
                    rd.rxreq()
                except EOFError:
                    return
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % n)
                fh.seek(0)
                c.sendfile(fh)

    raw_upstream.handler = handler
    f = ferry_factory(raw_upstream.url, "--upstream-timeout", "30s")
    for _ in range(5):
        t0 = time.monotonic()
        r = fetch(f.port, ["/sendfile"] * 2)
        assert [x.body == data for x in r] == [True, True]
        assert time.monotonic() - t0 < 5, "the body stalled"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    ca = CA(str(tmp_path_factory.mktemp("pki")))
    return {"ca": ca, "local": ca.issue("localhost", "127.0.0.1", file="local")}


def test_tls_on_either_side_takes_the_copy_path(ferry_factory, bulk, pki):
    """TLS bytes must pass through user space: a TLS client or an https upstream gets the
    same large bodies, copied (no pipe is ever opened)."""
    n = 3 << 20
    f = ferry_factory(bulk.url, "--tls-cert", pki["local"].cert, "--tls-key", pki["local"].key)
    base = pipe_fds(f)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(pki["ca"].pem)
    raw = socket.create_connection(("127.0.0.1", f.port), timeout=10)
    with ctx.wrap_socket(raw, server_hostname="localhost") as s:
        rd = ResponseReader(s, timeout=10)
        for _ in range(2):
            s.sendall(simple_request("GET", "/cl/%d" % n))
            assert rd.read_final().body == body_of(n)
    assert pipe_fds(f) == base, "a TLS client's body went through a pipe"

    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(pki["local"].cert, pki["local"].key)
    u = UpstreamServer(tls=sctx).start()
    try:
        f2 = ferry_factory("https://localhost:%d" % u.port, "--upstream-ca", pki["ca"].pem)
        base = pipe_fds(f2)
        rs = fetch(f2.port, ["/size/%d" % n] * 2)
        assert [r.body == body_of(n) for r in rs] == [True, True]
        assert pipe_fds(f2) == base, "an https upstream's body went through a pipe"
    finally:
        u.stop()


# ---- no byte of one exchange in another ----

def test_unasked_response_after_a_spliced_body_never_reaches_a_client(ferry_factory, raw_upstream):
    """The upstream answers the first request with two large responses back to back. The
    spliced first body stops at its end, so the second response stays in the upstream socket:
    the connection must be dropped, not reused, even by a request pipelined right behind."""
    a, b, c = body_of(1 << 20, 11), body_of(1 << 20, 12), body_of(THRESHOLD * 2, 13)

    def handler(conn):
        rd = SockReader(conn, timeout=10)
        while True:
            try:
                req = rd.rxreq()
            except EOFError:
                return
            if req.path == "/1":
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(a) + a +
                             b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(b) + b)
            else:
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(c) + c)

    raw_upstream.handler = handler
    for mode in ("on", "off"):
        f = ferry_factory(raw_upstream.url, "--splice", mode)
        for pipelined in (True, False, True):
            rs = fetch(f.port, ["/1", "/2"], pipelined=pipelined)
            assert rs[0].body == a
            assert rs[1].body != b, "%s: the unasked response reached the next request" % mode
            assert rs[1].body == c


# ---- backpressure, timeouts, failures ----

def _stall_upstream(total, sent, finished):
    def handler(c):
        SockReader(c).read_head()
        c.settimeout(30)
        try:
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % total)
            for piece in chunk_stream(total, 1 << 16):
                c.sendall(piece)
                sent["n"] += len(piece)
        except OSError:
            sent["cut"] = True
        finished.set()
    return handler


def _wait_stable(sent, secs=0.5, timeout=20):
    last, since, deadline = -1, time.monotonic(), time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = sent["n"]
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since > secs:
            return now
        time.sleep(0.05)
    raise AssertionError("the upstream never stopped sending")


def test_stalled_client_stalls_the_upstream_and_the_send_timeout_fires(ferry_factory,
                                                                        raw_upstream):
    total = 256 << 20
    sent, finished = {"n": 0}, threading.Event()
    raw_upstream.handler = _stall_upstream(total, sent, finished)
    # long enough for the checks below to run while the client is still stalled
    f = ferry_factory(raw_upstream.url, "--send-timeout", "4s")
    base_pipes = pipe_fds(f)
    rss_before = f.tree_rss_kb()
    s = connect(f.port, timeout=30)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
    try:
        s.sendall(simple_request("GET", "/flood"))
        n = _wait_stable(sent)
        # socket buffers alone may take ~40 MB here (tcp_rmem autotunes up to 32 MB)
        assert 0 < n < 64 << 20, "the upstream got %d bytes out to a stalled client" % n
        pipes = pipe_fds(f)
        assert pipes >= base_pipes + 2, "the body is not going through a pipe (%d fds)" % pipes
        grown = f.tree_rss_kb() - rss_before
        assert grown < 16 * 1024, "ferry buffered the stalled response (RSS +%d kB)" % grown
        # Not reading at all: after --send-timeout ferry cuts the client and the upstream.
        assert finished.wait(15), "the upstream connection was not closed after the timeout"
        assert sent.get("cut"), "the upstream finished sending to a stalled client"
        got, deadline = 0, time.monotonic() + 10
        s.settimeout(10)
        while time.monotonic() < deadline:
            try:
                d = s.recv(1 << 20)
            except ConnectionResetError:
                break
            if not d:
                break
            got += len(d)
        assert got < total, "a timed-out client got the whole body"
    finally:
        s.close()
    assert "stopped reading the response" in f.stderr_text()
    wait_for(lambda: pipe_fds(f) <= base_pipes + 2 * 16, 5, what="pipes closed")


def test_slow_client_gets_every_byte(ferry_factory, raw_upstream):
    """A client that reads in small steps with pauses: the pipe fills and drains many times."""
    total = 8 << 20
    sent, finished = {"n": 0}, threading.Event()
    raw_upstream.handler = _stall_upstream(total, sent, finished)
    f = ferry_factory(raw_upstream.url)
    s = connect(f.port, timeout=30)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 << 10)
    try:
        s.sendall(simple_request("GET", "/slow"))
        rd = SockReader(s, timeout=30)
        head = rd.read_head()
        assert head.startswith(b"HTTP/1.1 200 ")
        h = hashlib.sha256()
        got = 0
        for piece in rd.iter_exact(total):
            h.update(piece)
            got += len(piece)
            if got % (1 << 20) < len(piece):
                time.sleep(0.05)
    finally:
        s.close()
    want = hashlib.sha256()
    for piece in chunk_stream(total, 1 << 16):
        want.update(piece)
    assert got == total and h.hexdigest() == want.hexdigest()


@pytest.mark.parametrize("how", ["close", "reset"])
@pytest.mark.parametrize("mode", ["on", "off"])
def test_upstream_dies_mid_body_client_sees_a_cut(ferry_factory, raw_upstream, mode, how):
    total, sent_n = 16 << 20, 3 << 20

    def handler(c):
        SockReader(c).read_head()
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % total)
        for piece in chunk_stream(sent_n, 1 << 16):
            c.sendall(piece)
        time.sleep(0.2)
        if how == "reset":
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        c.close()

    raw_upstream.handler = handler
    f = ferry_factory(raw_upstream.url, "--splice", mode)
    s = connect(f.port, timeout=10)
    try:
        s.sendall(simple_request("GET", "/dies"))
        t0 = time.monotonic()
        r = ResponseReader(s, timeout=10).read_final(allow_incomplete=True)
        assert time.monotonic() - t0 < 8, "the client waited for a body that will never come"
        assert r.status == 200 and not r.complete
        want = b"".join(chunk_stream(sent_n, 1 << 16))
        assert len(r.body) <= sent_n and r.body == want[:len(r.body)]
    finally:
        s.close()
    wait_for(lambda: "upstream failed while sending the response body" in f.stderr_text(), 5,
             what="the warning about the upstream")


@pytest.mark.parametrize("mode", ["on", "off"])
def test_content_length_lies_short_client_sees_a_cut(ferry_factory, raw_upstream, mode):
    """The upstream promises 2 MiB, sends 1 MiB and closes: the client's connection is cut
    right after the bytes that came (never padded, never a complete-looking body)."""
    data = body_of(1 << 20, 21)

    def handler(c):
        SockReader(c).read_head()
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (2 << 20) + data)
        c.shutdown(socket.SHUT_WR)
        time.sleep(0.5)

    raw_upstream.handler = handler
    f = ferry_factory(raw_upstream.url, "--splice", mode)
    s = connect(f.port, timeout=10)
    try:
        s.sendall(simple_request("GET", "/short"))
        r = ResponseReader(s, timeout=10).read_final(allow_incomplete=True)
        assert r.status == 200 and not r.complete
        assert r.body == data
    finally:
        s.close()
    wait_for(lambda: "upstream failed while sending the response body" in f.stderr_text(), 5,
             what="the warning about the upstream")


# ---- 1 GiB in bounded memory ----

@pytest.mark.slow
def test_1gb_spliced_download_in_bounded_memory(ferry_factory, raw_upstream):
    sent_hash = {}

    def handler(c):
        SockReader(c, timeout=60).read_head()
        c.settimeout(60)
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % BIG)
        h = hashlib.sha256()
        for piece in chunk_stream(BIG, 1 << 18):
            h.update(piece)
            c.sendall(piece)
        sent_hash["h"] = h.hexdigest()

    raw_upstream.handler = handler
    env = None
    if _is_asan_build():
        env = {"ASAN_OPTIONS": (os.environ.get("ASAN_OPTIONS", "") +
                                ":quarantine_size_mb=8:thread_local_quarantine_size_kb=64")
               .lstrip(":")}
    f = ferry_factory(raw_upstream.url, "--splice", "on", env=env)
    limit = RSS_LIMIT_KB + (f.tree_rss_kb() if env else 0)
    peak = [0]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            try:
                peak[0] = max(peak[0], f.tree_rss_kb())
            except (OSError, ValueError):
                pass
            stop.wait(0.02)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    s = connect(f.port, timeout=60)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        s.sendall(simple_request("GET", "/big"))
        rr = ResponseReader(s, timeout=60)
        head = rr.read_head()
        assert head.status == 200 and head.header("Content-Length") == str(BIG)
        rd = SockReader(s, timeout=60)
        rd.buf = rr.buf
        h = hashlib.sha256()
        total = 0
        for piece in rd.iter_exact(BIG):
            h.update(piece)
            total += len(piece)
    finally:
        stop.set()
        t.join(5)
        s.close()
    assert total == BIG and h.hexdigest() == sent_hash.get("h")
    print("ferry peak RSS %d kB (limit %d kB)" % (peak[0], limit))
    assert peak[0] < limit, "ferry RSS peaked at %d kB" % peak[0]
