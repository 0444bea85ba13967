"""Server names resolved with c-ares and the resolvers: setting, against the test DNS server
(dns_server.py): a name reaches its upstream, an unknown name and a dead resolver fail the check
with FILE:LINE:COL and the resolver's reason, a name with two addresses loads, and the command
line's --resolvers wins over the file's. Re-resolution while running is unit-tested
(tests/unit/test_resolver.c)."""

import os
import time

import pytest

from dns_server import DnsServer, build_answer, parse_query
from harness import connect, free_port, named_upstream, run_ferry, simple_request, \
    ResponseReader, write_config


@pytest.fixture
def dns():
    d = DnsServer().start()
    try:
        yield d
    finally:
        d.stop()


def get(port, path="/"):
    s = connect(port)
    try:
        s.sendall(simple_request("GET", path, host="front.test"))
        return ResponseReader(s).read_final()
    finally:
        s.close()


# resolvers: comes after upstreams: on purpose: the names are resolved once the file is read.
CONFIG = """listeners:
  - listen: 127.0.0.1:%(listen)d
    routes: [ { upstream: app } ]
upstreams:
  app:
    servers: [ "http://%(name)s:%(port)d" ]
resolvers: "%(resolvers)s"
resolve-timeout: %(timeout)s
"""


def config(name, port, resolvers, timeout="2s"):
    return write_config(CONFIG % {"listen": free_port(), "name": name, "port": port,
                                  "resolvers": resolvers, "timeout": timeout})


def test_dns_server_wire_format():
    # A query for app.test A, as a stub resolver sends it (RD set, one question).
    q = bytes.fromhex("1234 0100 0001 0000 0000 0000".replace(" ", "")) + \
        b"\x03app\x04test\x00" + b"\x00\x01\x00\x01"
    qid, flags, name, qtype, question = parse_query(q)
    assert (qid, name, qtype) == (0x1234, "app.test", 1)
    r = build_answer(qid, flags, question, qtype, ["127.0.0.1", "::1"])
    assert r[:12] == bytes.fromhex("123481800001000100000000")
    assert r[12:12 + len(question)] == question
    assert r[-16:] == bytes.fromhex("c00c00010001000000000004") + bytes([127, 0, 0, 1])


def test_server_name_is_resolved_by_the_configured_resolvers(ferry_factory, dns):
    up = named_upstream("app")
    try:
        dns.set("app.test", ["127.0.0.1"])
        path = config("app.test", up.port, dns.servers)
        f = ferry_factory(None, "-c", path, listen=None)
        for _ in range(3):
            r = get(f.port)
            assert r.status == 200, r
            assert r.body == b"app GET /"
        assert ("app.test", 1) in dns.queries and ("app.test", 28) in dns.queries
        # Default Host is the URL's authority as written, name included.
        assert up.requests[0].header("Host") == "app.test:%d" % up.port
    finally:
        up.stop()


def test_name_with_two_addresses_loads_and_uses_the_first(ferry_factory, dns):
    up = named_upstream("app")  # on 127.0.0.1, the first address (IPv4 sorted)
    try:
        dns.set("two.test", ["127.0.0.2", "127.0.0.1"])
        path = config("two.test", up.port, dns.servers)
        p = run_ferry("-t", "-c", path)
        assert p.returncode == 0, p.stderr
        f = ferry_factory(None, "-c", path, listen=None)
        assert get(f.port).status == 200
    finally:
        up.stop()


def test_unknown_name_fails_the_check_at_its_url(dns):
    path = config("nope.test", 8080, dns.servers)
    p = run_ferry("-t", "-c", path)
    assert p.returncode == 1, p.stderr
    lines = p.stderr.decode().splitlines()
    assert lines == ["%s:6:16: server 'http://nope.test:8080': cannot resolve nope.test: no such "
                     "name (asked %s)" % (path, dns.servers)], lines


def test_unknown_name_fails_the_start_too(dns):
    path = config("nope.test", 8080, dns.servers)
    p = run_ferry("-c", path)
    assert p.returncode == 1, p.stderr
    assert b"cannot resolve nope.test: no such name" in p.stderr
    assert b"listening on" not in p.stderr


def test_dead_resolver_times_out_within_resolve_timeout(dns):
    dns.silent = True
    path = config("app.test", 8080, dns.servers, timeout="300ms")
    t0 = time.monotonic()
    p = run_ferry("-t", "-c", path)
    took = time.monotonic() - t0
    assert p.returncode == 1, p.stderr
    assert ("cannot resolve app.test: no answer (timed out after 300ms) (asked %s)"
            % dns.servers) in p.stderr.decode()
    assert dns.queries, "the resolver was asked"
    assert took < 5, took


def test_command_line_resolvers_win_over_the_file(dns):
    dns.set("app.test", ["127.0.0.1"])
    # The file's resolver answers nothing; the command line's knows the name.
    dead = DnsServer().start()
    dead.silent = True
    try:
        path = config("app.test", 8080, dead.servers, timeout="300ms")
        p = run_ferry("-t", "-c", path, "--resolvers", dns.servers)
        assert p.returncode == 0, p.stderr
        assert not dead.queries
        p = run_ferry("--print-config", "-c", path, "--resolvers", dns.servers)
        out = p.stdout.decode()
        assert "resolvers: %s\n" % dns.servers in out, out
        assert "resolve-timeout: 300ms\n" in out
        assert "resolve-interval: 30s\n" in out
    finally:
        dead.stop()


def test_bad_resolvers_value_is_reported_at_its_position(dns):
    path = config("app.test", 8080, "dns.local")
    p = run_ferry("-t", "-c", path)
    assert p.returncode == 1
    assert p.stderr.decode().splitlines()[0] == (
        "%s:7:12: resolvers: 'dns.local' is not an IP address (write DNS servers as IP[:PORT], "
        "[IPv6]:PORT)" % path)


def test_ip_literal_servers_never_ask_dns(dns):
    up = named_upstream("app")
    try:
        path = config("127.0.0.1", up.port, dns.servers)
        assert run_ferry("-t", "-c", path).returncode == 0
        assert dns.queries == []
    finally:
        up.stop()


def test_script_mode_serves_until_stopped(tmp_path):
    import subprocess
    import sys
    port = free_port()
    here = os.path.dirname(os.path.abspath(__file__))
    p = subprocess.Popen([sys.executable, os.path.join(here, "dns_server.py"), "--port",
                          str(port), "x.test=10.0.0.1"], stdout=subprocess.PIPE)
    try:
        assert p.stdout.readline().decode().strip() == "dns server on 127.0.0.1:%d" % port
    finally:
        p.terminate()
        p.wait(5)


def test_changed_answer_moves_traffic_without_a_restart(dns, ferry_factory):
    """app.test points at 127.0.0.1 (upstream a); the test DNS server then answers 127.0.0.2,
    where upstream b listens on the same port (all of 127.0.0.0/8 is loopback on Linux): the
    next re-resolution round reloads the configuration and requests reach b."""
    from harness import UpstreamServer, wait_for
    a = named_upstream("a")

    def answer_b(h, req):
        h.send_simple(200, ("b %s %s" % (req.method, req.path)).encode())

    b = UpstreamServer(port=a.port, default_route=answer_b, host="127.0.0.2").start()
    try:
        dns.set("app.test", ["127.0.0.1"])
        listen = free_port()
        path = write_config("""listeners:
  - listen: 127.0.0.1:%d
    routes: [ { upstream: app } ]
upstreams:
  app:
    servers: [ "http://app.test:%d" ]
resolvers: "%s"
resolve-interval: 200ms
""" % (listen, a.port, dns.servers))
        f = ferry_factory(None, "-c", path, listen=None)
        assert get(listen).body.startswith(b"a ")
        dns.set("app.test", ["127.0.0.2"])
        wait_for(lambda: "resolves to other addresses" in f.stderr_text(), 10,
                 what="re-resolution noticed")
        wait_for(lambda: get(listen).body.startswith(b"b "), 10, what="traffic on b")
        assert "reload: generation 2 serving" in f.stderr_text()
    finally:
        a.stop()
        b.stop()


def test_refused_address_tries_the_next_one(dns, ferry_factory):
    """A name with two addresses, the first refusing: requests reach the second without an
    error (and without counting as another server)."""
    from harness import UpstreamServer
    b = UpstreamServer(port=0, host="127.0.0.2",
                       default_route=lambda h, req: h.send_simple(200, b"second")).start()
    try:
        dns.set("two.test", ["127.0.0.1", "127.0.0.2"])   # nothing listens on 127.0.0.1:port
        listen = free_port()
        path = write_config("""listeners:
  - listen: 127.0.0.1:%d
    routes: [ { upstream: app } ]
upstreams:
  app:
    servers: [ "http://two.test:%d" ]
    retries: 0
resolvers: "%s"
""" % (listen, b.port, dns.servers))
        f = ferry_factory(None, "-c", path, listen=None)
        for _ in range(3):
            r = get(listen)
            assert r.status == 200 and r.body == b"second"
        assert "trying the server's next address" in f.stderr_text()
    finally:
        b.stop()
