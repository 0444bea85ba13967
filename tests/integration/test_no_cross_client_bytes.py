"""A client never receives a byte of another exchange.

Regression tests for the use-after-free where an exchange ended (and its upstream connection, with
the input buffer holding the response body, was released) while the client's output queue still
pointed into that buffer. The buffer went back to the free list, another exchange filled it, and
the first client was later sent the other exchange's bytes.

Every test puts a "victim" client in that state: its socket is full (it does not read, with a tiny
receive buffer) while ferry holds response body spans for it, then something ends its exchange.
Other clients then move plenty of differently patterned data through ferry, and finally the victim
reads everything it is sent. Every body byte it gets must be its own: a prefix of its response.
In the sanitizer build (free lists bypassed) the old bug is also a heap-use-after-free report.
"""

import socket
import threading
import time

import pytest

from harness import (
    RawUpstream, ResponseReader, SockReader, connect, pattern_bytes, recv_until_close,
    wait_for,
)

VICTIM_SEED = 1
VICTIM_BODY = 8 << 20      # far more than every socket buffer on the path
OTHER_SEED = 100
OTHER_BODY = 256 << 10
OTHER_REQUESTS = 12


class Scripted:
    """Upstream behaviour per request target. Counts what it has sent so a test can wait until
    ferry stopped taking the victim's bytes (all buffers on the way are full)."""

    def __init__(self):
        self.sent = 0
        self.lock = threading.Lock()
        self.reset_now = threading.Event()
        self.victim_conn = None

    def _count(self, n):
        with self.lock:
            self.sent += n

    def stream(self, c, data):
        view = memoryview(data)
        off = 0
        while off < len(view):
            if self.reset_now.is_set():
                return False
            try:
                n = c.send(view[off:off + 16384])
            except socket.timeout:
                continue
            except OSError:
                return False
            off += n
            self._count(n)
        return True

    def handler(self, c):
        c.settimeout(0.2)
        rd = SockReader(c, timeout=10)
        head = rd.read_head()
        target = head.split(b" ", 2)[1]
        if target.startswith(b"/victim"):
            self.victim(c, target)
            return
        # Other clients: keep-alive, one patterned body per request.
        while True:
            k = int(target.rsplit(b"/", 1)[1])
            body = pattern_bytes(OTHER_BODY, seed=OTHER_SEED + k)
            c.settimeout(10)
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            try:
                head = rd.read_head()
            except (EOFError, OSError):
                return
            target = head.split(b" ", 2)[1]

    def victim(self, c, target):
        self.victim_conn = c
        body = pattern_bytes(VICTIM_BODY, seed=VICTIM_SEED)
        if target.startswith(b"/victim-tunnel"):
            head = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                    b"Connection: Upgrade\r\n\r\n")
        else:
            # Answers at once, without reading the request body.
            head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body)
        c.sendall(head)
        self.stream(c, body)
        if self.reset_now.is_set() and target.startswith(b"/victim-tunnel-reset"):
            # RST instead of FIN: ferry's next write to this connection fails.
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            c.close()
            return
        # Hold the connection until ferry closes it.
        c.settimeout(30)
        try:
            while c.recv(65536):
                pass
        except OSError:
            pass


def wait_victim_stalled(up):
    """Waits until the upstream has sent a good part of the victim's body and then made no
    progress for a while: ferry holds spans for a client whose socket is full."""
    wait_for(lambda: up.sent >= 256 << 10, 10, what="the upstream to send the victim's body")
    last = [-1, time.monotonic()]

    def stalled():
        now = time.monotonic()
        if up.sent != last[0]:
            last[0], last[1] = up.sent, now
            return False
        return now - last[1] >= 0.3

    wait_for(stalled, 10, interval=0.05, what="ferry to stop reading the victim's response")


def victim_socket(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(10)
    s.connect(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def run_other_clients(port):
    """Moves differently patterned bodies through ferry (reusing freed buffers)."""
    s = connect(port, timeout=10)
    try:
        rd = ResponseReader(s, timeout=10)
        for k in range(OTHER_REQUESTS):
            s.sendall(b"GET /other/%d HTTP/1.1\r\nHost: o\r\n\r\n" % k)
            r = rd.read_final()
            assert r.status == 200
            assert r.body == pattern_bytes(OTHER_BODY, seed=OTHER_SEED + k)
    finally:
        s.close()


def assert_only_own_bytes(got, head_end_marker=b"\r\n\r\n"):
    i = got.find(head_end_marker)
    assert i > 0, "victim got no response head: %r" % got[:200]
    body = got[i + 4:]
    want = pattern_bytes(len(body), seed=VICTIM_SEED) if body else b""
    assert len(body) <= VICTIM_BODY
    if body != want:
        bad = next(j for j in range(len(body)) if body[j] != want[j])
        pytest.fail("victim received %d body bytes; byte %d on is not its own (another "
                    "exchange's data leaked to this client): %r"
                    % (len(body), bad, body[bad:bad + 48]))
    return body


@pytest.fixture
def scripted():
    sc = Scripted()
    up = RawUpstream(sc.handler).start()
    sc.raw = up
    try:
        yield sc
    finally:
        sc.reset_now.set()
        up.stop()


def finish_and_check(f, victim):
    run_other_clients(f.port)
    got = recv_until_close(victim, timeout=30)
    victim.close()
    return assert_only_own_bytes(got)


def test_malformed_chunked_body_after_head_sent_leaks_nothing(ferry_factory, scripted):
    f = ferry_factory(scripted.raw.url, "--access-log", "stdout")
    v = victim_socket(f.port)
    v.sendall(b"POST /victim HTTP/1.1\r\nHost: v\r\nTransfer-Encoding: chunked\r\n\r\n"
              b"5\r\nhello\r\n")
    wait_victim_stalled(scripted)
    v.sendall(b"zz\r\n")  # not a chunk size: the body turns malformed after the head was sent
    f.wait_access_log(1, timeout=10)
    finish_and_check(f, v)


def test_client_half_close_mid_body_after_head_sent_leaks_nothing(ferry_factory, scripted):
    f = ferry_factory(scripted.raw.url, "--access-log", "stdout")
    v = victim_socket(f.port)
    v.sendall(b"POST /victim HTTP/1.1\r\nHost: v\r\nContent-Length: 100\r\n\r\n0123456789")
    wait_victim_stalled(scripted)
    v.shutdown(socket.SHUT_WR)  # the body ends early; the client can still read
    f.wait_access_log(1, timeout=10)
    finish_and_check(f, v)


def test_tunnel_timeout_while_client_not_reading_leaks_nothing(ferry_factory, scripted):
    f = ferry_factory(scripted.raw.url, "--access-log", "stdout", "--upstream-timeout", "1s")
    v = victim_socket(f.port)
    v.sendall(b"GET /victim-tunnel HTTP/1.1\r\nHost: v\r\nConnection: Upgrade\r\n"
              b"Upgrade: websocket\r\n\r\n")
    wait_victim_stalled(scripted)
    f.wait_access_log(1, timeout=10)  # the tunnel timed out and the exchange ended
    finish_and_check(f, v)


def test_tunnel_upstream_reset_while_client_not_reading_leaks_nothing(ferry_factory, scripted):
    f = ferry_factory(scripted.raw.url, "--access-log", "stdout")
    v = victim_socket(f.port)
    v.sendall(b"GET /victim-tunnel-reset HTTP/1.1\r\nHost: v\r\nConnection: Upgrade\r\n"
              b"Upgrade: websocket\r\n\r\n")
    wait_victim_stalled(scripted)
    scripted.reset_now.set()
    scripted.raw.wait_done(1, timeout=10)
    # Bytes from the client make ferry write to the reset connection: the tunnel's error exit.
    v.sendall(b"x" * 1000)
    f.wait_access_log(1, timeout=10)
    finish_and_check(f, v)
