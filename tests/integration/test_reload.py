"""Reload without dropping anything (issue 6): SIGHUP and `ferry -s reload` apply a new file to
new exchanges; exchanges in flight (a WebSocket, a slow download, keep-alive request loops)
finish untouched; an invalid file is refused and the old configuration keeps serving; listeners
that stay keep their socket, new ones open, removed ones close; many reloads leak nothing."""

import base64
import os
import signal
import socket
import struct
import threading

import pytest

from harness import (ResponseReader, UpstreamServer, connect, free_port, named_upstream,
                     pattern_bytes, run_ferry, sha256, simple_request, wait_for, write_config)

from test_websocket import WsEchoServer


def get(port, path="/", host="app.test"):
    s = connect(port)
    try:
        s.sendall(simple_request("GET", path, host=host))
        return ResponseReader(s).read_final()
    finally:
        s.close()


def rewrite(path, text):
    tmp = path + ".new"
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, path)  # atomically, as an editor or a deploy tool would


def reloads_done(f):
    return f.stderr_text().count("reload: generation")


def reload_outcomes(f):
    """Reloads that ended, either way."""
    t = f.stderr_text()
    return t.count("reload: generation") + t.count("reload refused: still serving")


def reload_and_wait(f, n_before=None):
    n = reload_outcomes(f) if n_before is None else n_before
    f.signal(signal.SIGHUP)
    wait_for(lambda: reload_outcomes(f) > n, 10, what="reload finished")


def config(port, body, extra_listeners="", pid="", servers=None, group=""):
    """A listener answering /ver with `body` and sending the rest to group app (the `app`
    fixture's server unless `servers` are given; `group` adds keys to it)."""
    urls = servers or ["http://127.0.0.1:%d" % UP_PORT[0]]
    return """
%s
listeners:
  - listen: 127.0.0.1:%d
    routes:
      - match: { path: /ver }
        respond: { status: 200, body: "%s" }
      - upstream: app
%s
upstreams:
  app:
    servers: [ %s ]
%s""" % (pid, port, body, extra_listeners, ", ".join('"%s"' % u for u in urls), group)


UP_PORT = [0]
SANITIZED = "asan" in os.environ.get("FERRY_BIN", "") or "tsan" in os.environ.get("FERRY_BIN", "")


@pytest.fixture
def app():
    u = named_upstream("app")
    UP_PORT[0] = u.port
    yield u
    u.stop()


def start(ferry_factory, text, **kw):
    path = write_config(text)
    f = ferry_factory(None, "-c", path, listen=None, **kw)
    return f, path


def test_sighup_applies_the_new_file(ferry_factory, app):
    port = free_port()
    f, path = start(ferry_factory, config(port, "v1"))
    assert get(port, "/ver").body == b"v1"
    rewrite(path, config(port, "v2"))
    reload_and_wait(f)
    assert get(port, "/ver").body == b"v2"
    assert "reload: generation 2 serving" in f.stderr_text()


def test_ferry_s_reload_uses_the_pid_file(ferry_factory, app, tmp_path):
    port = free_port()
    pid = "pid-file: %s" % (tmp_path / "ferry.pid")
    f, path = start(ferry_factory, config(port, "v1", pid=pid))
    wait_for(lambda: (tmp_path / "ferry.pid").exists(), 5, what="pid file")
    assert int((tmp_path / "ferry.pid").read_text()) == f.pid
    rewrite(path, config(port, "v2", pid=pid))
    n = reloads_done(f)
    p = run_ferry("-s", "reload", "-c", path)
    assert p.returncode == 0, p.stderr
    wait_for(lambda: reloads_done(f) > n, 10, what="reload finished")
    assert get(port, "/ver").body == b"v2"
    f.stop()
    assert not (tmp_path / "ferry.pid").exists()
    p = run_ferry("-s", "reload", "-c", path)
    assert p.returncode == 1 and b"pid file" in p.stderr


def test_invalid_file_is_refused_and_the_old_config_serves(ferry_factory, app):
    port = free_port()
    f, path = start(ferry_factory, config(port, "v1"),
                    allowed_errors=[r"reload refused"])
    rewrite(path, config(port, "v2").replace("respond:", "respnd:"))
    reload_and_wait(f)
    err = f.stderr_text()
    assert "reload refused" in err
    assert "%s:" % path in err          # the file's errors, with their positions
    assert "still serving generation 1" in err
    assert get(port, "/ver").body == b"v1"
    # fixed again: the next reload works
    rewrite(path, config(port, "v3"))
    reload_and_wait(f)
    assert get(port, "/ver").body == b"v3"


def test_listeners_added_kept_and_removed(ferry_factory, app):
    port, port2 = free_port(), free_port()
    f, path = start(ferry_factory, config(port, "one"))
    kept = connect(port)          # an idle keep-alive connection on a listener that stays
    kept.sendall(simple_request("GET", "/ver", host="a"))
    rd = ResponseReader(kept)
    assert rd.read_final().body == b"one"
    extra = """  - listen: 127.0.0.1:%d
    routes: [ { respond: { status: 200, body: "second" } } ]
""" % port2
    rewrite(path, config(port, "two", extra_listeners=extra))
    reload_and_wait(f)
    assert get(port2).body == b"second"
    kept.sendall(simple_request("GET", "/ver", host="a"))
    assert rd.read_final().body == b"two"   # same connection, the new generation's routes
    kept.close()
    rewrite(path, config(port2, "moved"))   # port goes away, port2 now has the first listener
    reload_and_wait(f)
    assert get(port2, "/ver").body == b"moved"
    with pytest.raises(OSError):
        s = socket.create_connection(("127.0.0.1", port), timeout=2)
        s.close()


def _ws_handshake(port, ws_port):
    s = connect(port)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(("GET /ws HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
               "Sec-WebSocket-Version: 13\r\n\r\n" % (ws_port, key)).encode())
    rd = ResponseReader(s)
    r = rd.read_head()
    assert r.status == 101, r
    return s, rd


def _ws_echo(s, rd, text):
    data = text.encode()
    mask = os.urandom(4)
    frame = bytes([0x81, 0x80 | len(data)]) + mask + bytes(b ^ mask[i % 4]
                                                          for i, b in enumerate(data))
    s.sendall(frame)
    head = rd._read_exact(2, bytearray())[0]
    assert head[0] == 0x81
    n = head[1] & 0x7f
    payload = rd._read_exact(n, bytearray())[0]
    return payload.decode()


def test_reload_under_load_drops_nothing(ferry_factory, app):
    ws = WsEchoServer().start()
    gate = threading.Event()
    big = pattern_bytes(4 << 20, seed=7)

    def slow_download(h, req):
        h.send_response_only(200)
        h.send_header("Content-Length", str(len(big)))
        h.end_headers()
        h.wfile.write(big[:len(big) // 2])
        h.wfile.flush()
        gate.wait(20)          # the download stays in flight across the reloads
        h.wfile.write(big[len(big) // 2:])
        h.wfile.flush()

    dl = UpstreamServer(default_route=slow_download).start()
    port = free_port()
    ws_route = """
      - match: { path: /ws }
        upstream: ws
      - match: { path: /download }
        upstream: dl
"""

    def cfg(body):
        return config(port, body).replace("      - upstream: app", ws_route +
                                          "      - upstream: app") + """
  ws:
    servers: [ "http://127.0.0.1:%d" ]
  dl:
    servers: [ "http://127.0.0.1:%d" ]
""" % (ws.port, dl.port)

    try:
        f, path = start(ferry_factory, cfg("v0"))
        ws_sock, ws_rd = _ws_handshake(port, ws.port)
        assert _ws_echo(ws_sock, ws_rd, "before") == "before"
        d = connect(port, timeout=30)
        d.sendall(simple_request("GET", "/download", host="a"))
        drd = ResponseReader(d, timeout=30)
        dhead = drd.read_head()
        assert dhead.status == 200

        failures, done, count = [], threading.Event(), [0]

        def hammer():
            s = connect(port)
            rd = ResponseReader(s)
            while not done.is_set():
                try:
                    s.sendall(simple_request("GET", "/x", host="a"))
                    r = rd.read_final()
                    if r.status != 200:
                        failures.append(r.status)
                    count[0] += 1
                    if r.header("Connection") == "close":
                        s.close()
                        s = connect(port)
                        rd = ResponseReader(s)
                except Exception as e:  # a dropped connection is a failure
                    failures.append(repr(e))
                    s.close()
                    s = connect(port)
                    rd = ResponseReader(s)
            s.close()

        threads = [threading.Thread(target=hammer) for _ in range(3)]
        for t in threads:
            t.start()
        for i in range(1, 21):
            rewrite(path, cfg("v%d" % i))
            reload_and_wait(f)
            assert get(port, "/ver").body == ("v%d" % i).encode()
            assert _ws_echo(ws_sock, ws_rd, "during %d" % i) == "during %d" % i
        done.set()
        for t in threads:
            t.join(10)
        assert failures == []
        assert count[0] > 20
        gate.set()
        body = bytearray(drd.buf)   # what the reader already holds past the head
        del drd.buf[:]
        while len(body) < len(big):
            chunk = d.recv(1 << 20)
            if not chunk:
                break
            body += chunk
        assert len(body) == len(big) and sha256(bytes(body)) == sha256(big)
        assert _ws_echo(ws_sock, ws_rd, "after") == "after"
        ws_sock.close()
        d.close()
    finally:
        gate.set()
        dl.stop()
        ws.stop()


def _fd_count(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def test_hundred_reloads_leak_nothing(ferry_factory, app):
    port = free_port()
    f, path = start(ferry_factory, config(port, "v0"))
    for i in range(5):                      # warm up allocator arenas and pools
        rewrite(path, config(port, "w%d" % i))
        reload_and_wait(f)
        get(port, "/")
    fds, rss = _fd_count(f.pid), f.rss_kb()
    for i in range(100):
        n = reload_outcomes(f)
        rewrite(path, config(port, "v%d" % i))
        reload_and_wait(f, n)
        if i % 10 == 0:
            assert get(port, "/").status == 200
    assert get(port, "/ver").body == b"v99"
    assert _fd_count(f.pid) <= fds + 1
    if not SANITIZED:  # ASan's quarantine holds freed memory; its leak check runs at exit
        assert f.rss_kb() < rss + 4096, (rss, f.rss_kb())


def test_health_state_carries_over_a_reload(ferry_factory):
    """A server the active checks took out stays out across a reload that keeps it (no flap back
    into rotation), and the checks go on with the new generation."""
    a, b = named_upstream("a"), named_upstream("b")
    status = {"a": 500}
    checks = []

    def health(h, req):
        checks.append(req.path)
        h.send_simple(status["a"], b"")

    a.route("/health", health)
    port = free_port()

    def cfg(body):
        return config(port, body, servers=[a.url, b.url],
                      group="    health: { path: /health, interval: 100ms, timeout: 90ms, "
                            "rise: 2, fall: 3 }\n    max-fails: 0\n")

    try:
        f, path = start(ferry_factory, cfg("v1"), allowed_errors=[r"is down"])
        wait_for(lambda: "server %s is down" % a.url in f.stderr_text(), 10, what="a down")
        rewrite(path, cfg("v2"))
        reload_and_wait(f)
        # A fresh state would be up for the three checks (fall: 3) it takes to go down again:
        # round-robin would send half of these to a.
        assert {get(port, "/x").body.split()[0] for _ in range(6)} == {b"b"}
        assert get(port, "/ver").body == b"v2"
        n = len(checks)
        wait_for(lambda: len(checks) >= n + 2, 10, what="checks after the reload")
        assert "is up again" not in f.stderr_text()
        status["a"] = 200
        wait_for(lambda: "server %s is up again" % a.url in f.stderr_text(), 10, what="a up")
    finally:
        a.stop()
        b.stop()


def test_removed_server_loses_its_idle_connections(ferry_factory):
    """A reload that drops a server closes the idle pooled connections to it (nothing will use
    them again) and keeps those of a server that stays."""
    a, b = named_upstream("a"), named_upstream("b")
    port = free_port()

    def cfg(servers):
        return """
listeners:
  - listen: 127.0.0.1:%d
    routes: [ { upstream: app } ]
upstreams:
  app:
    servers: [ %s ]
""" % (port, ", ".join('"%s"' % u.url for u in servers))

    try:
        f, path = start(ferry_factory, cfg([a, b]))
        for _ in range(4):
            get(port, "/x")                       # round-robin: a pooled connection to each
        wait_for(lambda: len(a.open_conns) == 1 and len(b.open_conns) == 1, 5,
                 what="one idle pooled connection per server")
        rewrite(path, cfg([b]))
        reload_and_wait(f)
        wait_for(lambda: len(a.open_conns) == 0, 5, what="a's idle connection closed")
        assert len(b.open_conns) == 1             # the server that stays keeps its pool
        conns = b.conn_count
        assert get(port, "/y").body.startswith(b"b ")
        assert b.conn_count == conns              # and reuses it
    finally:
        a.stop()
        b.stop()
