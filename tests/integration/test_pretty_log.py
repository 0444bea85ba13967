"""The readable exchange log (--log-format pretty, access-log-format: pretty): one aligned line
per exchange with time, client, method, status, the whole URL, content type, size and duration;
-v adds both heads, -vv the bodies (text shown, binary summarised, cut at 4k); colour only on a
terminal; the same on reverse-proxy and forward listeners."""

import os
import pty
import re
import select
import socket
import subprocess

import requests

from harness import ResponseReader, UpstreamServer, ferry_bin, free_port, wait_for

LINE = re.compile(r"^(\d\d:\d\d:\d\d\.\d{3}) (\S+)\s+(\S+)\s+(\d{3})  (\S+)  (.*)$")


def route_binary(h, req):
    h.send_simple(200, bytes(range(256)) * 4, content_type="application/octet-stream")


def lines_of(f, n):
    wait_for(lambda: len([l for l in f.stdout_text().splitlines() if LINE.match(l)]) >= n, 5,
             what="%d log lines" % n)
    return f.stdout_text().splitlines()


def test_one_aligned_line_per_exchange(ferry_factory, upstream):
    f = ferry_factory(upstream.url, "--log-format", "pretty")
    requests.get("http://127.0.0.1:%d/a/b?c=1" % f.port, timeout=10)
    requests.get("http://127.0.0.1:%d/missing-route-is-fine" % f.port, timeout=10)
    out = [l for l in lines_of(f, 2) if LINE.match(l)]
    m = LINE.match(out[0])
    assert m.group(2).startswith("127.0.0.1:")
    assert m.group(3) == "GET" and m.group(4) == "200"
    assert m.group(5) == "http://127.0.0.1:%d/a/b?c=1" % f.port
    assert re.match(r"text/plain \d+b \d+(us|ms)$", m.group(6)), m.group(6)
    # aligned: the method and status columns start at the same place on every line
    assert len({l.index(" GET ") for l in out}) == 1
    assert "\x1b[" not in f.stdout_text()  # not a terminal: no colour


def test_v_shows_heads_and_vv_bodies(ferry_factory, upstream):
    f = ferry_factory(upstream.url, "--log-format", "pretty", "-vv")
    requests.post("http://127.0.0.1:%d/post" % f.port, data=b"hello\nworld",
                  headers={"X-Test": "yes"}, timeout=10)
    text = "\n".join(lines_of(f, 1))
    assert "    > POST http://127.0.0.1:%d/post HTTP/1.1" % f.port in text
    assert "    > X-Test: yes" in text
    assert "    > hello\n    > world" in text
    assert "    < HTTP/1.1 200" in text
    assert "    < ok POST /post" in text


def test_v_without_bodies(ferry_factory, upstream):
    f = ferry_factory(upstream.url, "--log-format", "pretty", "-v")
    requests.post("http://127.0.0.1:%d/p" % f.port, data=b"secret-body", timeout=10)
    text = "\n".join(lines_of(f, 1))
    assert "    > POST" in text and "    < HTTP/1.1 200" in text
    assert "secret-body" not in text


def test_binary_body_is_summarised(ferry_factory):
    up = UpstreamServer(default_route=route_binary).start()
    try:
        f = ferry_factory(up.url, "--log-format", "pretty", "-vv")
        r = requests.get("http://127.0.0.1:%d/bin" % f.port, timeout=10)
        assert len(r.content) == 1024
        text = "\n".join(lines_of(f, 1))
        assert "[binary body: 1024 bytes, application/octet-stream]" in text
        assert "\x00" not in text and "\x1b" not in text
    finally:
        up.stop()


def test_forward_listener_pretty_line(ferry_factory, upstream):
    f = ferry_factory(None, "--forward", "--log-format", "pretty")
    r = requests.get("http://127.0.0.1:%d/fw" % upstream.port,
                     proxies={"http": "http://127.0.0.1:%d" % f.port}, timeout=10)
    assert r.status_code == 200
    out = [l for l in lines_of(f, 1) if LINE.match(l)]
    assert LINE.match(out[0]).group(5) == "http://127.0.0.1:%d/fw" % upstream.port


def test_colour_on_a_terminal(upstream):
    port = free_port()
    master, slave = pty.openpty()
    p = subprocess.Popen([ferry_bin(), "--listen", "127.0.0.1:%d" % port, "--upstream",
                          upstream.url, "--workers", "1", "--log-format", "pretty"],
                         stdout=slave, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                         env={k: v for k, v in os.environ.items() if k != "NO_COLOR"})
    os.close(slave)
    try:
        def up():
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return True
            except OSError:
                return False
        wait_for(up, 10, what="ferry listening")
        requests.get("http://127.0.0.1:%d/tty" % port, timeout=10)
        got = b""
        while b"/tty" not in got:
            r, _, _ = select.select([master], [], [], 5)
            assert r, "no log line on the terminal: %r" % got
            got += os.read(master, 4096)
        assert b"\x1b[32m200" in got  # a 2xx status in green
    finally:
        p.terminate()
        p.wait(10)
        os.close(master)
