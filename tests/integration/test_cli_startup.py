"""Startup validation of the real binary: values that would make every request invalid are refused
with one clear line (exit 2), `--listen :PORT` serves every interface, and `--help` tells the
truth about the configuration file."""

import re
import socket

import pytest

from harness import SANITIZER_MARKERS, Ferry, connect, run_ferry, simple_request, wait_for
from harness import ResponseReader

UP = "http://127.0.0.1:9"


def _refused(args, fragment):
    p = run_ferry(*args, timeout=10)
    err = p.stderr.decode(errors="replace")
    assert not any(m in err for m in SANITIZER_MARKERS), err
    assert p.returncode == 2, (p.returncode, err)
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1, "expected one line on stderr, got %r" % lines
    assert fragment in lines[0], (fragment, lines[0])
    assert "listening on" not in err


@pytest.mark.parametrize("args,fragment", [
    (["--upstream", "http://:9100"], "missing host"),
    (["--upstream", "http://::1:9100"], "write http://[::1]:9100"),
    (["--upstream", "http://127.0.0.1:0"], "port 0"),
    (["--upstream", "http://no-such-host.invalid:80"], "cannot resolve 'no-such-host.invalid': "),
    (["--upstream", UP, "--host", ""], "--host expects upstream, preserve or a host name"),
    (["--upstream", UP, "--listen", "::1:8080"], "write [::1]:8080"),
    (["--upstream", UP, "--listen", "127.0.0.1:http"], "port must be a number"),
    (["--upstream", UP, "--remove-request-header", "Host"], "Host is managed by --host"),
    (["--upstream", UP, "--request-header", "Host: other.example"], "use --host VALUE"),
], ids=lambda v: v if isinstance(v, str) else " ".join(v))
def test_startup_refuses_unusable_values(args, fragment):
    _refused(args, fragment)


def test_resolution_failure_gives_the_resolver_reason():
    p = run_ferry("--upstream", "http://no-such-host.invalid:80", timeout=10)
    line = p.stderr.decode(errors="replace").strip()
    reason = line.split("cannot resolve 'no-such-host.invalid': ", 1)[1]
    assert reason and reason != "cannot resolve host", line


def test_help_describes_the_configuration_file():
    # Before the file existed, --help said there was none; now it says how to use it.
    p = run_ferry("--help")
    assert p.returncode == 0
    out = p.stdout.decode()
    assert "no configuration file" not in out.lower()
    for fragment in ("ferry -c FILE", "ferry -t -c FILE", "--print-config",
                     "top-level key", "docs/config.md", ":PORT = every interface"):
        assert fragment in out, fragment


def _wait_listening(f):
    m = wait_for(lambda: re.search(r"listening on (\S+):(\d+),", f.stderr_text()), 10,
                 what="ferry's listening line")
    return m.group(1), int(m.group(2))


def _ipv6_loopback_works():
    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        s.bind(("::1", 0))
        s.close()
        return True
    except OSError:
        return False


def test_listen_port_only_serves_every_interface(ferry_factory, upstream):
    f = ferry_factory(upstream.url, listen=":0", start=False)
    f.spawn()
    host, port = _wait_listening(f)
    assert host in ("[::]", "0.0.0.0"), host
    # IPv4 clients of a dual-stack socket are shown as IPv4, in X-Forwarded-For and in the log.
    s = connect(port)
    try:
        s.sendall(simple_request("GET", "/v4"))
        assert ResponseReader(s).read_final().status == 200
    finally:
        s.close()
    assert upstream.wait_requests(1)[-1].header("X-Forwarded-For") == "127.0.0.1"
    if host == "[::]" and _ipv6_loopback_works():
        s6 = socket.create_connection(("::1", port), timeout=5)
        try:
            s6.sendall(simple_request("GET", "/v6"))
            assert ResponseReader(s6).read_final().status == 200
        finally:
            s6.close()
        assert upstream.wait_requests(2)[-1].header("X-Forwarded-For") == "::1"
    lines = wait_for(lambda: (lambda l: l if len(l) >= 1 else None)(f.access_log_lines()), 5,
                     what="access log")
    assert lines[0].startswith("127.0.0.1 - - "), lines
    f.port = port  # lets the fixture stop and check it
    assert f.stop() == 0
