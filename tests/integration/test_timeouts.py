"""Timeouts other than the header/idle ones: body, send, connect, pool idle/max."""

import select
import socket
import threading
import time

import pytest

from harness import (ResponseReader, SockReader, connect, recv_until_close, simple_request,
                     wait_for)


def test_body_timeout_closes_connection(ferry_factory, upstream):
    f = ferry_factory(upstream.url, "--body-timeout", "1s")
    s = connect(f.port, timeout=10)
    try:
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)
        t0 = time.monotonic()
        data = recv_until_close(s, timeout=8)
        elapsed = time.monotonic() - t0
    finally:
        s.close()
    assert elapsed < 6, "body-timeout 1s, connection closed after %.1fs" % elapsed
    # either closed silently or with an error status; never a 2xx from upstream
    assert not data.startswith(b"HTTP/1.1 2"), data
    # ferry still works
    c = connect(f.port)
    try:
        c.sendall(simple_request("POST", "/echo", body=b"fine"))
        r = ResponseReader(c).read_final()
    finally:
        c.close()
    assert r.status == 200 and r.body == b"fine"


def test_send_timeout_gives_up_on_non_reading_client(ferry_factory, raw_upstream):
    upstream_write_failed = threading.Event()

    def handler(c):
        c.settimeout(60)
        SockReader(c, timeout=60).read_head()
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (1 << 34))
        chunk = b"q" * (1 << 16)
        try:
            while True:
                c.sendall(chunk)
        except OSError:
            upstream_write_failed.set()

    raw_upstream.handler = handler
    f = ferry_factory(raw_upstream.url, "--send-timeout", "1s")
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(10)
    s.connect(("127.0.0.1", f.port))
    try:
        s.sendall(simple_request("GET", "/huge"))
        # never read: ferry must give up (send timeout) and drop the exchange,
        # which also closes its upstream connection
        assert upstream_write_failed.wait(15), \
            "ferry kept the exchange alive although the client did not read"
    finally:
        s.close()


def _blackhole_listener():
    """A listener whose accept queue is full, so further SYNs are dropped and
    connect() hangs. Returns (listener, fillers) or None if this cannot be set up."""
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(0)
    port = lst.getsockname()[1]
    fillers = []
    for _ in range(8):
        c = socket.socket()
        c.setblocking(False)
        c.connect_ex(("127.0.0.1", port))
        fillers.append(c)
        _, w, _ = select.select([], [c], [], 0.3)
        if not w:
            return lst, fillers  # this connect hangs: queue is full
    for c in fillers:
        c.close()
    lst.close()
    return None


def test_connect_timeout_502(ferry_factory):
    bh = _blackhole_listener()
    if bh is None:
        pytest.skip("cannot create a SYN-dropping listener here")
    lst, fillers = bh
    try:
        port = lst.getsockname()[1]
        f = ferry_factory("http://127.0.0.1:%d" % port, "--connect-timeout", "1s",
                          "--upstream-timeout", "30s")
        s = connect(f.port, timeout=15)
        try:
            t0 = time.monotonic()
            s.sendall(simple_request("GET", "/x"))
            r = ResponseReader(s, timeout=15).read_final()
            elapsed = time.monotonic() - t0
        finally:
            s.close()
        assert r.status == 502, r.raw
        assert r.header("Content-Length") is not None
        assert elapsed < 8, "connect-timeout 1s but 502 after %.1fs" % elapsed
    finally:
        for c in fillers:
            c.close()
        lst.close()


def test_pool_idle_timeout_closes_idle_upstream_connections(ferry_factory, upstream):
    f = ferry_factory(upstream.url, "--pool-idle-timeout", "1s")
    s = connect(f.port)
    try:
        s.sendall(simple_request("GET", "/x"))
        assert ResponseReader(s).read_final().status == 200
    finally:
        s.close()
    upstream.wait_requests(1)
    wait_for(lambda: not upstream.open_conns, 8, interval=0.05,
             what="ferry to close its idle pooled upstream connection")
    # and the next request still works (new connection)
    s = connect(f.port)
    try:
        s.sendall(simple_request("GET", "/y"))
        assert ResponseReader(s).read_final().status == 200
    finally:
        s.close()
    assert upstream.conn_count == 2


def test_pool_max_idle_limits_kept_connections(ferry_factory, upstream):
    f = ferry_factory(upstream.url, "--pool-max-idle", "1")
    gate = threading.Event()
    arrived = threading.Semaphore(0)

    def held(h, req):
        arrived.release()
        gate.wait(10)
        h.send_simple(200, b"held")

    upstream.route("/held", held)
    socks = [connect(f.port, timeout=15) for _ in range(3)]
    try:
        for s in socks:
            s.sendall(simple_request("GET", "/held"))
        for _ in range(3):  # 3 upstream connections busy at once
            assert arrived.acquire(timeout=10)
        assert upstream.conn_count == 3
        gate.set()
        for s in socks:
            assert ResponseReader(s, timeout=10).read_final().body == b"held"
    finally:
        gate.set()
        for s in socks:
            s.close()
    wait_for(lambda: len(upstream.open_conns) == 1, 8, interval=0.05,
             what="only --pool-max-idle=1 idle upstream connection kept (open: %d)"
             % len(upstream.open_conns))
