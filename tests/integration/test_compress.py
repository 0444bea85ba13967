"""Response compression (compress:, --compress): every coding checked with a real decoder
(python zlib, brotli, zstandard, and curl --compressed), Accept-Encoding negotiation, the rules
for what is never compressed, Vary and ETag, framing for HTTP/1.1 and HTTP/1.0 clients,
keep-alive after a compressed body, the flush when the upstream pauses (server-sent events), and
1 GiB through the compressor in bounded memory."""

import hashlib
import os
import subprocess
import threading
import time
import zlib

import brotli
import pytest
import zstandard

from harness import (ResponseReader, SockReader, connect, free_port, run_ferry, simple_request,
                     write_config)

HTML = (b"<!doctype html><html><head><title>ferry</title></head><body>\n"
        + b"".join(b"<p class=\"row\">row %d of the table, some text that repeats</p>\n" % i
                   for i in range(2000))
        + b"</body></html>\n")


def decode(coding, body):
    if coding == "gzip":
        return zlib.decompress(body, 16 + zlib.MAX_WBITS)
    if coding == "br":
        return brotli.decompress(body)
    if coding == "zstd":
        return zstandard.ZstdDecompressor().decompressobj().decompress(body)
    assert coding in (None, "identity"), coding
    return body


def serve(raw_upstream, head_fields, body, status=200, chunked=False):
    """The raw upstream answers every request with this response, also on connections ferry
    keeps open from an earlier serve() (the response is looked up per request)."""
    raw_upstream.response = (head_fields, body, status, chunked)

    def handler(c):
        rd = SockReader(c, timeout=10)
        while True:
            try:
                req = rd.rxreq()
            except (EOFError, OSError):
                return
            fields, body, status, chunked = raw_upstream.response
            fields = "".join("%s: %s\r\n" % kv for kv in fields).encode()
            no_body = req.method == "HEAD" or status in (204, 304)
            if chunked:
                data = b"HTTP/1.1 %d X\r\n%sTransfer-Encoding: chunked\r\n\r\n" % (status, fields)
                if not no_body:
                    data += (b"%x\r\n%s\r\n" % (len(body), body) if body else b"") + b"0\r\n\r\n"
            else:
                data = b"HTTP/1.1 %d X\r\n%s" % (status, fields)
                if status != 304:
                    data += b"Content-Length: %d\r\n" % len(body)
                data += b"\r\n"
                if not no_body:
                    data += body
            c.sendall(data)

    raw_upstream.handler = handler


def get(port, path="/", ae=None, method="GET", version="HTTP/1.1", headers=(), sock=None):
    hdrs = list(headers)
    if ae is not None:
        hdrs.append(("Accept-Encoding", ae))
    s = sock or connect(port, timeout=10)
    s.sendall(simple_request(method, path, headers=hdrs, version=version))
    r = ResponseReader(s, timeout=10).read_response(head=method == "HEAD")
    if sock is None:
        s.close()
    return r


@pytest.mark.parametrize("coding", ["gzip", "br", "zstd"])
@pytest.mark.parametrize("chunked", [False, True])
def test_each_coding_decodes_to_the_upstream_body(ferry_factory, raw_upstream, coding, chunked):
    serve(raw_upstream, [("Content-Type", "text/html; charset=utf-8"), ("ETag", '"v1"')], HTML,
          chunked=chunked)
    f = ferry_factory(raw_upstream.url, "--compress")
    r = get(f.port, ae=coding)
    assert r.status == 200
    assert r.header("Content-Encoding") == coding
    assert r.header("Content-Length") is None
    assert (r.header("Transfer-Encoding") or "").lower() == "chunked"
    assert "accept-encoding" in (r.header("Vary") or "").lower()
    assert r.header("ETag") == 'W/"v1"'
    assert decode(coding, r.body) == HTML
    assert len(r.body) < len(HTML) / 4


@pytest.mark.parametrize("coding", ["gzip", "br", "zstd"])
def test_curl_decodes_what_ferry_compressed(ferry_factory, raw_upstream, coding, tmp_path):
    serve(raw_upstream, [("Content-Type", "application/json")], b'{"k": "%s"}' % (b"v" * 50000))
    f = ferry_factory(raw_upstream.url, "--compress")
    out = tmp_path / "body"
    p = subprocess.run(["curl", "-sS", "--compressed", "-H", "Accept-Encoding: " + coding,
                        "-D", "-", "-o", str(out), "http://127.0.0.1:%d/" % f.port],
                       capture_output=True, timeout=30)
    assert p.returncode == 0, p.stderr
    assert ("content-encoding: %s" % coding) in p.stdout.decode().lower()
    assert out.read_bytes() == b'{"k": "%s"}' % (b"v" * 50000)


# Accept-Encoding -> the coding ferry picks with the default preference (zstd, br, gzip).
NEGOTIATION = [
    (None, None),
    ("", None),
    ("gzip", "gzip"),
    ("x-gzip", "gzip"),
    ("GZIP", "gzip"),
    ("br", "br"),
    ("zstd", "zstd"),
    ("gzip, deflate, br, zstd", "zstd"),      # Chrome's: a tie, the server's preference
    ("gzip, deflate, br", "br"),               # Firefox's, older Chrome
    ("br;q=0.9, gzip", "gzip"),
    ("gzip;q=0.5, br;q=0.4", "gzip"),
    ("zstd;q=0, br;q=0.1, gzip;q=0.1", "br"),
    ("*", "zstd"),
    ("*;q=0.5, gzip", "gzip"),
    ("gzip;q=0, *", "zstd"),
    ("*;q=0", None),
    ("identity", None),
    ("deflate", None),                         # not offered by ferry
    ("compress, deflate", None),
    ("gzip;q=2", None),                        # an invalid q: the element is ignored
    ("gzip;q=0.1234", None),
    ("  gzip  ;  q=1.000  ", "gzip"),
    ("br;q=0.001", "br"),
    ("gzip;q=0.000", None),
]


@pytest.mark.parametrize("ae,expected", NEGOTIATION)
def test_accept_encoding_negotiation(ferry_factory, raw_upstream, ae, expected):
    serve(raw_upstream, [("Content-Type", "text/plain")], HTML)
    f = ferry_factory(raw_upstream.url, "--compress")
    r = get(f.port, ae=ae)
    assert r.status == 200
    assert r.header("Content-Encoding") == expected
    assert "accept-encoding" in (r.header("Vary") or "").lower()
    assert decode(expected, r.body) == HTML
    if expected is None:
        assert r.header("Content-Length") == str(len(HTML))


NOT_COMPRESSED = [
    ("already encoded", [("Content-Type", "text/html"), ("Content-Encoding", "gzip")], 200, None),
    ("no-transform", [("Content-Type", "text/html"), ("Cache-Control", "public, no-transform")],
     200, None),
    ("image", [("Content-Type", "image/png")], 200, None),
    ("no content type", [], 200, None),
    ("partial content", [("Content-Type", "text/html"), ("Content-Range", "bytes 0-9/100")], 206,
     None),
]


@pytest.mark.parametrize("name,fields,status,_", NOT_COMPRESSED, ids=[n[0] for n in NOT_COMPRESSED])
def test_never_compressed(ferry_factory, raw_upstream, name, fields, status, _):
    body = HTML if name != "already encoded" else zlib.compress(HTML)
    serve(raw_upstream, fields, body, status=status)
    f = ferry_factory(raw_upstream.url, "--compress")
    r = get(f.port, ae="gzip, br, zstd")
    assert r.status == status
    assert r.body == body, "the body must reach the client byte for byte"
    assert r.header("Content-Length") == str(len(body))
    if name == "already encoded":
        assert r.header("Content-Encoding") == "gzip"
    else:
        assert r.header("Content-Encoding") is None


def test_small_body_below_min_size_is_sent_as_is(ferry_factory, raw_upstream):
    serve(raw_upstream, [("Content-Type", "text/html")], b"<p>tiny</p>")
    f = ferry_factory(raw_upstream.url, "--compress")
    r = get(f.port, ae="gzip")
    assert r.header("Content-Encoding") is None
    assert r.body == b"<p>tiny</p>"


def test_head_and_304_are_not_encoded(ferry_factory, raw_upstream):
    serve(raw_upstream, [("Content-Type", "text/html")], HTML)
    f = ferry_factory(raw_upstream.url, "--compress")
    r = get(f.port, ae="gzip", method="HEAD")
    assert r.status == 200 and r.header("Content-Encoding") is None
    serve(raw_upstream, [("Content-Type", "text/html"), ("ETag", '"v1"')], b"", status=304)
    r = get(f.port, ae="gzip")
    assert r.status == 304 and r.header("Content-Encoding") is None
    assert r.header("ETag") == '"v1"'


def test_vary_kept_and_extended(ferry_factory, raw_upstream):
    serve(raw_upstream, [("Content-Type", "text/html"), ("Vary", "Cookie"), ("ETag", 'W/"w"'),
                         ("Accept-Ranges", "bytes")], HTML)
    f = ferry_factory(raw_upstream.url, "--compress")
    r = get(f.port, ae="gzip")
    assert r.header("Content-Encoding") == "gzip"
    varies = ",".join(r.header_all("Vary")).lower().replace(" ", "").split(",")
    assert "cookie" in varies and varies.count("accept-encoding") == 1
    assert r.header("ETag") == 'W/"w"', "a weak ETag stays as it is"
    assert r.header("Accept-Ranges") is None


def test_http10_client_gets_a_close_delimited_compressed_body(ferry_factory, raw_upstream):
    serve(raw_upstream, [("Content-Type", "text/css")], HTML)
    f = ferry_factory(raw_upstream.url, "--compress")
    s = connect(f.port, timeout=10)
    s.sendall(simple_request("GET", "/", headers=[("Accept-Encoding", "gzip")],
                             version="HTTP/1.0"))
    data = b""
    while True:
        d = s.recv(65536)
        if not d:
            break
        data += d
    s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"content-encoding: gzip" in head.lower()
    assert b"content-length" not in head.lower() and b"transfer-encoding" not in head.lower()
    assert decode("gzip", body) == HTML


def test_keep_alive_after_compressed_responses(ferry_factory, raw_upstream):
    serve(raw_upstream, [("Content-Type", "text/html")], HTML, chunked=True)
    f = ferry_factory(raw_upstream.url, "--compress")
    s = connect(f.port, timeout=10)
    try:
        for coding in ["gzip", "br", "zstd", None, "gzip"]:
            r = get(f.port, ae=coding, sock=s)
            assert r.status == 200
            assert r.header("Content-Encoding") == coding
            assert decode(coding, r.body) == HTML
    finally:
        s.close()


def test_events_flow_while_the_upstream_pauses(ferry_factory, raw_upstream):
    """Server-sent events: each event reaches the client (decodable) before the upstream sends
    the next one, which it only does once the client saw the previous one."""
    seen = [threading.Event() for _ in range(3)]

    def handler(c):
        rd = SockReader(c, timeout=10)
        rd.rxreq()
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n")
        for i in range(3):
            ev = b"data: event %d\n\n" % i
            c.sendall(b"%x\r\n%s\r\n" % (len(ev), ev))
            if not seen[i].wait(10):
                return
        c.sendall(b"0\r\n\r\n")

    raw_upstream.handler = handler
    f = ferry_factory(raw_upstream.url, "--compress")
    s = connect(f.port, timeout=10)
    s.sendall(simple_request("GET", "/events", headers=[("Accept-Encoding", "gzip")]))
    rd = SockReader(s, timeout=10)
    head = rd.read_head()
    assert b"content-encoding: gzip" in head.lower()
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    text = b""
    for piece in rd.iter_chunked():
        text += d.decompress(piece)
        for i in range(3):
            if b"data: event %d\n\n" % i in text:
                seen[i].set()
    s.close()
    assert text == b"".join(b"data: event %d\n\n" % i for i in range(3))


def test_config_file_route_overrides_listener(ferry_factory, raw_upstream, tmp_path):
    serve(raw_upstream, [("Content-Type", "application/json")], b"[" + b"1," * 5000 + b"1]")
    cfg = write_config("""
listeners:
  - listen: 127.0.0.1:%d
    compress:
      types: [application/json]
      min-size: 100
      gzip: { level: 9 }
      brotli: { level: 5 }
      prefer: [gzip, br]
    routes:
      - match: { path-prefix: /plain/ }
        upstream: app
        compress: off
      - upstream: app
upstreams:
  app: { servers: [%s] }
""" % (free_port(), raw_upstream.url))
    f = ferry_factory(None, "-c", cfg, listen=None)
    r = get(f.port, "/x", ae="zstd, br, gzip")
    assert r.header("Content-Encoding") == "gzip", "prefer: gzip first, zstd not enabled"
    r = get(f.port, "/x", ae="zstd, br")
    assert r.header("Content-Encoding") == "br"
    r = get(f.port, "/x", ae="zstd")
    assert r.header("Content-Encoding") is None
    r = get(f.port, "/plain/x", ae="gzip")
    assert r.header("Content-Encoding") is None and r.header("Vary") is None


@pytest.mark.parametrize("snippet,message", [
    ("compress: maybe", "compress"),
    ("compress: { gzip: { level: 10 } }", "gzip level"),
    ("compress: { brotli: { level: 12 } }", "brotli level"),
    ("compress: { types: [html] }", "types expects media types"),
    ("compress: { prefer: [lzma] }", "prefer expects codings"),
    ("compress: { min-size: lots }", "min-size expects a size"),
    ("compress: { gzip: off, brotli: off, zstd: off }", "every coding is off"),
    ("compress: { level: 3 }", "level"),
])
def test_config_errors_name_the_line(snippet, message):
    cfg = write_config("""
listeners:
  - listen: 127.0.0.1:0
    %s
    routes:
      - respond: 200
""" % snippet)
    p = run_ferry("-t", "-c", cfg)
    err = p.stderr.decode()
    assert p.returncode != 0
    assert "ferry.yaml:4" in err, err
    assert message in err, err


BIG = int(os.environ.get("FERRY_BIG_BYTES", str(1 << 30)))


@pytest.mark.slow
def test_1gb_through_the_compressor_in_bounded_memory(ferry_factory, raw_upstream):
    from test_big_transfers import RSS_LIMIT_KB, RssSampler, _is_asan_build
    piece = (b"".join(b"line %08d of a log file that compresses well\n" % i
                      for i in range(4096)))
    sent = hashlib.sha256()

    def handler(c):
        rd = SockReader(c, timeout=60)
        rd.rxreq()
        c.settimeout(60)
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n"
                  % BIG)
        left = BIG
        while left:
            p = piece[:left]
            sent.update(p)
            c.sendall(p)
            left -= len(p)

    raw_upstream.handler = handler
    env = None
    if _is_asan_build():
        # keep ASan's quarantine of freed memory from being counted as ferry's buffering
        env = {"ASAN_OPTIONS": (os.environ.get("ASAN_OPTIONS", "") +
                                ":quarantine_size_mb=8:thread_local_quarantine_size_kb=64").lstrip(":")}
    # gzip at its default level 6: the compressor, not the client, sets the pace.
    f = ferry_factory(raw_upstream.url, "--compress", env=env)
    limit = RSS_LIMIT_KB + (f.tree_rss_kb() if env else 0)
    sampler = RssSampler(f)
    sampler.start()
    s = connect(f.port, timeout=60)
    got = hashlib.sha256()
    total = 0
    try:
        s.sendall(simple_request("GET", "/big", headers=[("Accept-Encoding", "gzip")]))
        rd = SockReader(s, timeout=60)
        head = rd.read_head()
        assert b"content-encoding: gzip" in head.lower()
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        for p in rd.iter_chunked():
            out = d.decompress(p)
            got.update(out)
            total += len(out)
        tail = d.flush()
        got.update(tail)
        total += len(tail)
    finally:
        sampler.stop()
        s.close()
    assert total == BIG
    assert got.hexdigest() == sent.hexdigest()
    print("ferry peak RSS %d kB (limit %d kB)" % (sampler.max_kb, limit))
    assert sampler.max_kb < limit


def test_negotiation_uses_the_clients_accept_encoding(ferry_factory, raw_upstream):
    """A rule that takes Accept-Encoding off the request (so the upstream sends plain bytes)
    does not stop ferry from compressing for the client that asked."""
    serve(raw_upstream, [("Content-Type", "text/html")], HTML)
    f = ferry_factory(raw_upstream.url, "--compress", "--remove-request-header", "Accept-Encoding")
    r = get(f.port, ae="br")
    assert r.header("Content-Encoding") == "br"
    assert decode("br", r.body) == HTML


def test_forward_proxy_compresses_too(ferry_factory, raw_upstream):
    """--compress on a forward proxy: an absolute-form request through it gets the same
    compression as a reverse-proxied one (curl -x --compressed decodes it)."""
    serve(raw_upstream, [("Content-Type", "text/html")], HTML)
    f = ferry_factory(None, "--forward", "--compress")
    s = connect(f.port, timeout=10)
    s.sendall(simple_request("GET", "http://127.0.0.1:%d/page" % raw_upstream.port,
                             host="127.0.0.1:%d" % raw_upstream.port,
                             headers=[("Accept-Encoding", "gzip")]))
    r = ResponseReader(s, timeout=10).read_response()
    s.close()
    assert r.status == 200 and r.header("Content-Encoding") == "gzip"
    assert decode("gzip", r.body) == HTML


def test_close_delimited_upstream_body_is_compressed(ferry_factory, raw_upstream):
    """An upstream body that ends when the upstream closes (no length, no chunks) is
    compressed and ends cleanly; the client's connection stays usable."""
    def handler(c):
        rd = SockReader(c, timeout=10)
        rd.rxreq()
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nConnection: close\r\n\r\n" + HTML)
        c.close()

    raw_upstream.handler = handler
    f = ferry_factory(raw_upstream.url, "--compress")
    s = connect(f.port, timeout=10)
    try:
        for _ in range(2):
            r = get(f.port, "/", ae="gzip", sock=s)
            assert r.status == 200 and r.header("Content-Encoding") == "gzip"
            assert decode("gzip", r.body) == HTML
    finally:
        s.close()


def test_a_client_that_does_not_read_holds_back_the_upstream(ferry_factory, raw_upstream):
    """Backpressure through the compressor: while the client reads nothing, ferry stops
    reading from the upstream once its buffers and the sockets' are full."""
    import base64
    import os as _os
    import socket as _socket
    import threading as _threading
    chunk = base64.b64encode(_os.urandom(48 << 10))  # 64 KiB of text that barely compresses
    total = 256 << 20
    sent = [0]
    stop = _threading.Event()

    def handler(c):
        rd = SockReader(c, timeout=10)
        rd.rxreq()
        c.settimeout(10)
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n"
                  % total)
        try:
            while sent[0] < total and not stop.is_set():
                c.sendall(chunk)
                sent[0] += len(chunk)
        except OSError:
            pass

    raw_upstream.handler = handler
    f = ferry_factory(raw_upstream.url, "--compress")
    s = _socket.socket()
    s.setsockopt(_socket.SOL_SOCKET, _socket.SO_RCVBUF, 64 << 10)
    s.connect(("127.0.0.1", f.port))
    try:
        s.sendall(simple_request("GET", "/big", headers=[("Accept-Encoding", "gzip")]))
        # wait until the upstream is stuck: what it sent stops growing
        last, still = -1, 0
        deadline = time.monotonic() + 20
        while still < 10 and time.monotonic() < deadline:
            time.sleep(0.05)
            still = still + 1 if sent[0] == last else 0
            last = sent[0]
        print("upstream sent %d bytes before it blocked" % sent[0])
        assert sent[0] < 48 << 20, "the upstream sent %d bytes to a client that reads nothing" % sent[0]
        assert f.tree_rss_kb() < 64 * 1024
    finally:
        stop.set()
        s.close()


def test_a_304_matches_the_compressed_200(ferry_factory, raw_upstream):
    """A 304 stands for the 200 the client has (RFC 9110 15.4.5): a client revalidating the
    compressed response (If-None-Match: W/"v1", the weakened tag) gets W/"v1" and the Vary the
    200 carried; a client revalidating the identity one ("v1") gets the tag as it is."""
    serve(raw_upstream, [("Content-Type", "text/html"), ("ETag", '"v1"')], HTML)
    f = ferry_factory(raw_upstream.url, "--compress")
    r = get(f.port, ae="gzip")
    assert r.header("ETag") == 'W/"v1"' and r.header("Content-Encoding") == "gzip"
    serve(raw_upstream, [("ETag", '"v1"')], b"", status=304)
    r = get(f.port, ae="gzip", headers=[("If-None-Match", 'W/"v1"')])
    assert r.status == 304 and r.header("ETag") == 'W/"v1"', r
    assert "accept-encoding" in (r.header("Vary") or "").lower(), r
    r = get(f.port, headers=[("If-None-Match", '"v1"')])
    assert r.status == 304 and r.header("ETag") == '"v1"', r
