"""Backpressure: a client that stops reading stops ferry from reading the upstream, so the
upstream's sends block and nothing piles up in ferry's memory."""

import hashlib
import threading
import time

from harness import SockReader, chunk_stream, connect, simple_request

TOTAL = 256 << 20  # far more than all the socket buffers on the path


def test_stalled_client_stalls_upstream_not_ferry_memory(ferry_factory, raw_upstream):
    sent = {"n": 0, "hash": hashlib.sha256(), "done": False}
    finished = threading.Event()

    def handler(c):
        SockReader(c).read_head()
        c.settimeout(30)
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % TOTAL)
        for piece in chunk_stream(TOTAL, 1 << 16):
            c.sendall(piece)
            sent["hash"].update(piece)
            sent["n"] += len(piece)
        sent["done"] = True
        finished.set()

    raw_upstream.handler = handler
    f = ferry_factory(raw_upstream.url)
    rss_before = f.tree_rss_kb()
    s = connect(f.port, timeout=30)
    try:
        s.sendall(simple_request("GET", "/flood"))
        # Do not read. Wait (bounded) until the upstream's progress stops: it is blocked.
        last, stable_since, deadline = -1, time.monotonic(), time.monotonic() + 20
        while time.monotonic() < deadline:
            now = sent["n"]
            if now != last:
                last, stable_since = now, time.monotonic()
            elif time.monotonic() - stable_since > 0.5:
                break
            time.sleep(0.05)
        assert not sent["done"], "the upstream finished: nothing held it back"
        assert 0 < sent["n"] < 64 << 20, "upstream got %d bytes out to a stalled client" % sent["n"]
        assert f.tree_rss_kb() - rss_before < 16 * 1024, "ferry buffered the stalled response"
        # Now read everything: the body is complete and intact.
        buf = b""
        while b"\r\n\r\n" not in buf:
            d = s.recv(65536)
            assert d, "connection closed before the response head"
            buf += d
        head, _, body = buf.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ")
        assert b"content-length: %d" % TOTAL in head.lower()
        h = hashlib.sha256(body)
        got = len(body)
        while got < TOTAL:
            d = s.recv(1 << 20)
            assert d, "connection closed after %d bytes" % got
            h.update(d)
            got += len(d)
        assert got == TOTAL
    finally:
        s.close()
    assert finished.wait(10)
    assert h.hexdigest() == sent["hash"].hexdigest()
