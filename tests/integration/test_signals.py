"""Graceful shutdown: SIGTERM/SIGINT stop accepting, in-flight exchanges finish, exit 0."""

import signal
import socket
import threading
import time

import pytest

from harness import ResponseReader, connect, simple_request, wait_for


def _refused(port):
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=1)
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
    s.close()
    return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_signal_lets_inflight_response_complete(ferry_factory, upstream, sig):
    f = ferry_factory(upstream.url)
    s = connect(f.port, timeout=15)
    result = {}

    def reader():
        try:
            result["r"] = ResponseReader(s, timeout=15).read_final()
        except Exception as e:  # noqa
            result["e"] = e

    try:
        s.sendall(simple_request("GET", "/slow/2.5"))
        upstream.wait_requests(1)  # the exchange is in flight
        t = threading.Thread(target=reader, daemon=True)
        t.start()
        f.signal(sig)
        # new connections are refused once ferry has processed the signal
        wait_for(lambda: _refused(f.port), 2.0, what="listening socket closed after signal")
        assert "r" not in result, "slow response finished before the refusal check"
        t.join(15)
        assert not t.is_alive()
    finally:
        s.close()
    assert "e" not in result, result.get("e")
    r = result["r"]
    assert r.status == 200 and r.body == b"slow response done\n"
    assert f.wait(15) == 0


def test_sigterm_with_idle_keepalive_connection_exits_promptly(ferry_factory, upstream):
    f = ferry_factory(upstream.url, "--drain-timeout", "30s")
    s = connect(f.port)
    try:
        s.sendall(simple_request("GET", "/x"))
        assert ResponseReader(s).read_final().status == 200
        t0 = time.monotonic()
        f.signal(signal.SIGTERM)
        rc = f.wait(15)
        elapsed = time.monotonic() - t0
    finally:
        s.close()
    assert rc == 0
    assert elapsed < 5, "idle keep-alive connection held shutdown for %.1fs" % elapsed


def test_drain_timeout_bounds_shutdown(ferry_factory, upstream):
    f = ferry_factory(upstream.url, "--drain-timeout", "1s")
    s = connect(f.port, timeout=15)
    try:
        s.sendall(simple_request("GET", "/slow/8"))
        upstream.wait_requests(1)
        t0 = time.monotonic()
        f.signal(signal.SIGTERM)
        rc = f.wait(15)
        elapsed = time.monotonic() - t0
    finally:
        s.close()
    assert rc == 0
    assert elapsed < 6, "drain-timeout 1s but shutdown took %.1fs" % elapsed


def test_sigterm_idle_ferry_exits_zero(ferry_factory, upstream):
    f = ferry_factory(upstream.url, workers=2)
    assert f.stop() == 0
    assert f.sanitizer_lines() == []
