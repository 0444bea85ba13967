"""Signals besides the graceful drain: SIGUSR1 reopens the access log (logrotate), SIGHUP is
ignored with a warning, and a second SIGTERM/SIGINT during the drain stops at once.

Every step synchronises on a log line, an accepted connection or a response; no fixed sleeps.
"""

import os
import signal
import socket
import time

import pytest

from harness import ResponseReader, connect, simple_request, wait_for


def _stderr_has(f, text, timeout=5.0):
    return wait_for(lambda: text in f.stderr_text(), timeout, what="%r in ferry's stderr" % text)


def _file_lines(path):
    try:
        with open(path, "rb") as fh:
            return [l for l in fh.read().decode("utf-8", "replace").splitlines() if l.strip()]
    except FileNotFoundError:
        return []


def _get(sock, target):
    sock.sendall(simple_request("GET", target))
    r = ResponseReader(sock).read_final()
    assert r.status == 200
    return r


def test_sigusr1_reopens_access_log_after_rotation(ferry_factory, upstream, tmp_path):
    log = str(tmp_path / "access.log")
    rotated = log + ".1"
    f = ferry_factory(upstream.url, "--access-log", log)
    s = connect(f.port)
    try:
        _get(s, "/before-1")
        # The second exchange on the same connection starts only after the first one was logged,
        # so /before-1 is in the worker's buffer (or already written) when the signal arrives.
        _get(s, "/before-2")
        os.rename(log, rotated)
        f.signal(signal.SIGUSR1)
        _stderr_has(f, "reopened access log")
        # Lines buffered at the time of the signal were written out to the old file first.
        assert any("/before-1" in l for l in _file_lines(rotated)), _file_lines(rotated)
        _get(s, "/after")
    finally:
        s.close()
    wait_for(lambda: any("/after" in l for l in _file_lines(log)), 5,
             what="the post-rotation line in the new file")
    assert f.stop() == 0
    old, new = _file_lines(rotated), _file_lines(log)
    assert not any("/after" in l for l in old), old
    # Nothing lost, nothing written twice.
    for target in ("/before-1", "/before-2", "/after"):
        assert sum(target + " " in l for l in old + new) == 1, (target, old, new)
    f.assert_no_unexpected_errors()


def test_sigusr1_with_unreopenable_path_keeps_old_file(ferry_factory, upstream, tmp_path):
    d = tmp_path / "logs"
    d.mkdir()
    log = str(d / "access.log")
    f = ferry_factory(upstream.url, "--access-log", log)
    os.rename(str(d), str(tmp_path / "gone"))  # the path's directory disappears
    f.signal(signal.SIGUSR1)
    _stderr_has(f, "cannot reopen access log")
    s = connect(f.port)
    try:
        _get(s, "/still-logged")
    finally:
        s.close()
    assert f.stop() == 0
    assert any("/still-logged" in l for l in _file_lines(str(tmp_path / "gone" / "access.log")))


def test_sigusr1_without_log_file_is_harmless(ferry_factory, upstream):
    f = ferry_factory(upstream.url)  # access log on stdout
    f.signal(signal.SIGUSR1)
    _stderr_has(f, "nothing to reopen")
    s = connect(f.port)
    try:
        _get(s, "/x")
    finally:
        s.close()
    assert f.stop() == 0


def test_sighup_reloads_the_command_line(ferry_factory, upstream):
    """Quick mode reloads too: the same command line gives the next generation."""
    f = ferry_factory(upstream.url, workers=2)
    f.signal(signal.SIGHUP)
    _stderr_has(f, "reload: generation 2 serving")
    assert f.running
    s = connect(f.port)
    try:
        _get(s, "/after-hup")
    finally:
        s.close()
    assert f.stop() == 0


def _stuck_upstream(conn):
    """Reads the request and never answers, until ferry closes the connection."""
    conn.settimeout(30)
    while True:
        try:
            if not conn.recv(65536):
                return
        except (socket.timeout, ConnectionResetError, OSError):
            return


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_second_signal_during_drain_stops_at_once(ferry_factory, raw_upstream, sig):
    """Also the regression test for sessions cut at worker exit (defect 8): the in-flight
    exchange is finished and logged (499) although the loop has stopped, and under ASan no
    session leaks."""
    raw_upstream.handler = _stuck_upstream
    f = ferry_factory(raw_upstream.url, "--drain-timeout", "60s", "--upstream-timeout", "60s")
    s = connect(f.port, timeout=20)
    try:
        s.sendall(simple_request("GET", "/stuck"))
        raw_upstream.wait_connections(1)
        f.signal(sig)
        _stderr_has(f, "draining")
        assert f.running, "ferry must drain, not stop, on the first signal"
        t0 = time.monotonic()
        f.signal(sig)
        rc = f.wait(15)
        elapsed = time.monotonic() - t0
        s.settimeout(5)
        try:
            got = s.recv(65536)
        except ConnectionResetError:
            got = b""
        assert got == b"", "the cut exchange must not get a response: %r" % got
    finally:
        s.close()
    assert rc == 0
    assert elapsed < 5, "second signal took %.1fs to stop ferry" % elapsed
    err = f.stderr_text()
    assert "stopping now" in err
    assert "closing 1 connection(s) still in progress" in err
    lines = f.access_log_lines()
    assert len(lines) == 1 and '"GET /stuck HTTP/1.1" 499' in lines[0], lines
    assert f.sanitizer_lines() == []


def test_drain_still_finishes_normally_after_sighup(ferry_factory, upstream):
    """SIGHUP does not count as a stop signal: one SIGTERM later still drains gracefully."""
    f = ferry_factory(upstream.url)
    f.signal(signal.SIGHUP)
    _stderr_has(f, "reload: generation 2 serving")
    s = connect(f.port, timeout=15)
    try:
        s.sendall(simple_request("GET", "/slow/0.5"))
        upstream.wait_requests(1)
        f.signal(signal.SIGTERM)
        r = ResponseReader(s, timeout=15).read_final()
    finally:
        s.close()
    assert r.status == 200 and r.body == b"slow response done\n"
    assert f.wait(15) == 0
    assert "stopping now" not in f.stderr_text()


def test_sigint_works_when_started_with_it_ignored(upstream, tmp_path):
    """A shell script's `ferry &` starts ferry with SIGINT ignored (as nohup does SIGHUP);
    ferry takes back the signals it handles, so Ctrl-C / kill -INT still drains it."""
    import subprocess

    from harness import ferry_bin

    err = tmp_path / "stderr"
    with open(str(err), "wb") as e:
        p = subprocess.Popen(
            [ferry_bin(), "--listen", "127.0.0.1:0", "--upstream", upstream.url, "--workers", "1",
             "--access-log", "off"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=e,
            preexec_fn=lambda: (signal.signal(signal.SIGINT, signal.SIG_IGN),
                                signal.signal(signal.SIGHUP, signal.SIG_IGN)))
    try:
        wait_for(lambda: "listening on" in err.read_text(), 10, what="ferry listening")
        p.send_signal(signal.SIGHUP)
        wait_for(lambda: "reload: generation 2 serving" in err.read_text(), 5, what="SIGHUP reload")
        p.send_signal(signal.SIGINT)
        assert p.wait(15) == 0, err.read_text()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(5)
    assert "received SIGINT: draining" in err.read_text()
