"""1 GiB streamed upload and download through ferry while its RSS stays < 64 MB, over plain TCP
and over TLS (the client side).

Data is generated on the fly (chunk_stream) and hashed on both sides; nothing
holds the whole body in memory. Raw sockets on both sides for speed.
FERRY_BIG_BYTES overrides the size (default 1 GiB)."""

import hashlib
import os
import socket
import threading

import ssl

import pytest

from certs import CA
from harness import (ResponseReader, SockReader, chunk_stream, connect, ferry_bin)

BIG = int(os.environ.get("FERRY_BIG_BYTES", str(1 << 30)))
RSS_LIMIT_KB = 64 * 1024
CHUNK = 1 << 18


def _is_asan_build() -> bool:
    try:
        with open(ferry_bin(), "rb") as f:
            return b"__asan_init" in f.read()
    except OSError:
        return False


class RssSampler(threading.Thread):
    def __init__(self, ferry):
        super().__init__(daemon=True)
        self.ferry = ferry
        self.max_kb = 0
        self.samples = 0
        self.stop_ev = threading.Event()

    def run(self):
        while not self.stop_ev.is_set():
            try:
                self.max_kb = max(self.max_kb, self.ferry.tree_rss_kb())
                self.samples += 1
            except (OSError, ValueError):
                pass
            self.stop_ev.wait(0.02)

    def stop(self):
        self.stop_ev.set()
        self.join(5)


@pytest.fixture(scope="module")
def server_cert(tmp_path_factory):
    ca = CA(str(tmp_path_factory.mktemp("pki")))
    return ca, ca.issue("localhost")


def _client(port, transport, server_cert):
    """A connected client socket: plain, or TLS verified against the test CA."""
    s = connect(port, timeout=60)
    if transport == "tls":
        ctx = ssl.create_default_context(cafile=server_cert[0].pem)
        s = ctx.wrap_socket(s, server_hostname="localhost")
    return s


def _start_ferry(ferry_factory, url, transport="plain", server_cert=None):
    args = []
    if transport == "tls":
        args = ["--tls-cert", server_cert[1].cert, "--tls-key", server_cert[1].key]
    env = None
    if _is_asan_build():
        # keep ASan's quarantine of freed memory from being counted as ferry's buffering
        env = {"ASAN_OPTIONS": (os.environ.get("ASAN_OPTIONS", "") +
                                ":quarantine_size_mb=8:thread_local_quarantine_size_kb=64").lstrip(":")}
    f = ferry_factory(url, *args, env=env)
    baseline = f.tree_rss_kb()
    limit = RSS_LIMIT_KB + (baseline if env else 0)
    return f, limit


def _recv_body_hash(rd: SockReader, n=None, chunked=False):
    h = hashlib.sha256()
    total = 0
    it = rd.iter_chunked() if chunked else rd.iter_exact(n)
    for piece in it:
        h.update(piece)
        total += len(piece)
    return h.hexdigest(), total


def _send_stream(sock, total, chunked, hasher):
    for buf in chunk_stream(total, CHUNK):
        hasher.update(buf)
        if chunked:
            sock.sendall(b"%x\r\n" % len(buf) + buf + b"\r\n")
        else:
            sock.sendall(buf)
    if chunked:
        sock.sendall(b"0\r\n\r\n")


SIZES = [("length", "plain"), ("chunked", "plain"), ("length", "tls")]


@pytest.mark.slow
@pytest.mark.parametrize("framing,transport", SIZES)
def test_1gb_download(ferry_factory, raw_upstream, framing, transport, server_cert):
    sent_hash = {}
    sent_ev = threading.Event()

    def handler(c):
        rd = SockReader(c, timeout=60)
        rd.read_request()
        c.settimeout(60)
        if framing == "length":
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                      b"Content-Length: %d\r\n\r\n" % BIG)
        else:
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                      b"Transfer-Encoding: chunked\r\n\r\n")
        h = hashlib.sha256()
        _send_stream(c, BIG, framing == "chunked", h)
        sent_hash["h"] = h.hexdigest()
        sent_ev.set()
        try:
            rd.read_head()
        except (EOFError, OSError):
            pass

    raw_upstream.handler = handler
    f, limit = _start_ferry(ferry_factory, raw_upstream.url, transport, server_cert)
    sampler = RssSampler(f)
    sampler.start()
    s = _client(f.port, transport, server_cert)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        s.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        rr = ResponseReader(s, timeout=60)
        head = rr.read_head()
        assert head.status == 200
        rd = SockReader(s, timeout=60)
        rd.buf = rr.buf  # hand over anything already buffered
        if framing == "length":
            assert head.header("Content-Length") == str(BIG)
            got, total = _recv_body_hash(rd, n=BIG)
        else:
            assert (head.header("Transfer-Encoding") or "").lower() == "chunked"
            got, total = _recv_body_hash(rd, chunked=True)
    finally:
        sampler.stop()
        s.close()
    assert sent_ev.wait(30), "upstream never finished sending"
    assert total == BIG
    assert got == sent_hash["h"], "downloaded bytes differ from what upstream sent"
    assert sampler.samples > 0
    print("ferry peak RSS %d kB over %d samples (limit %d kB)" % (sampler.max_kb, sampler.samples, limit))
    assert sampler.max_kb < limit, "ferry RSS peaked at %d kB (limit %d kB)" % (sampler.max_kb, limit)


@pytest.mark.slow
@pytest.mark.parametrize("framing,transport", SIZES)
def test_1gb_upload(ferry_factory, raw_upstream, framing, transport, server_cert):
    recv = {}

    def handler(c):
        rd = SockReader(c, timeout=60)
        head = rd.read_head()
        lower = head.lower()
        if b"transfer-encoding: chunked" in lower:
            recv["framing"] = "chunked"
            recv["hash"], recv["n"] = _recv_body_hash(rd, chunked=True)
        else:
            recv["framing"] = "length"
            recv["hash"], recv["n"] = _recv_body_hash(rd, n=BIG)
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        try:
            rd.read_head()
        except (EOFError, OSError):
            pass

    raw_upstream.handler = handler
    f, limit = _start_ferry(ferry_factory, raw_upstream.url, transport, server_cert)
    sampler = RssSampler(f)
    sampler.start()
    s = _client(f.port, transport, server_cert)
    h = hashlib.sha256()
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        if framing == "length":
            s.sendall(b"PUT /big HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % BIG)
        else:
            s.sendall(b"PUT /big HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        _send_stream(s, BIG, framing == "chunked", h)
        r = ResponseReader(s, timeout=60).read_final()
    finally:
        sampler.stop()
        s.close()
    assert r.status == 200 and r.body == b"ok"
    assert recv["n"] == BIG
    assert recv["hash"] == h.hexdigest(), "uploaded bytes differ at the upstream"
    if framing == "chunked":
        assert recv["framing"] == "chunked"
    assert sampler.samples > 0
    print("ferry peak RSS %d kB over %d samples (limit %d kB)" % (sampler.max_kb, sampler.samples, limit))
    assert sampler.max_kb < limit, "ferry RSS peaked at %d kB (limit %d kB)" % (sampler.max_kb, limit)
