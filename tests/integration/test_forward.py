"""The forward proxy (ferry --forward, a listener's forward: block): absolute-form requests to
any destination with curl -x and python requests, CONNECT tunnels and their port list, the
client ACL, Proxy-Authorization against an htpasswd file (407, then 200), destination deny and
allow rules by name and by address, forwarding loops, names resolved by the workers' resolver,
and what never leaves ferry (Proxy-Authorization, Proxy-Connection, X-Forwarded-*)."""

import socket
import ssl
import subprocess

import pytest
import requests

from certs import CA
from dns_server import DnsServer
from harness import ResponseReader, UpstreamServer, free_port, wait_for, write_config


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("pki"))
    ca = CA(d)
    return {"ca": ca, "dir": d,
            "good": ca.issue("localhost", "127.0.0.1", "a.test", "b.test", "c.test",
                             file="good")}


@pytest.fixture
def origin():
    u = UpstreamServer().start()
    yield u
    u.stop()


@pytest.fixture
def tls_origin(pki):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki["good"].cert, pki["good"].key)
    u = UpstreamServer(tls=ctx).start()
    yield u
    u.stop()


def proxy_get(proxy_port, url, headers=None, extra=b""):
    """A raw absolute-form GET through the proxy; the parsed response."""
    host = url.split("/")[2]
    lines = ["GET %s HTTP/1.1" % url, "Host: %s" % host]
    for k, v in (headers or {}).items():
        lines.append("%s: %s" % (k, v))
    with socket.create_connection(("127.0.0.1", proxy_port), timeout=10) as s:
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + extra)
        return ResponseReader(s, timeout=10).read_response()


def connect(proxy_port, authority, headers=None):
    """Opens a CONNECT tunnel; returns (socket, status, head bytes)."""
    s = socket.create_connection(("127.0.0.1", proxy_port), timeout=10)
    lines = ["CONNECT %s HTTP/1.1" % authority, "Host: %s" % authority]
    for k, v in (headers or {}).items():
        lines.append("%s: %s" % (k, v))
    s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        b = s.recv(1)
        if not b:
            break
        head += b
    status = int(head.split(b" ", 2)[1]) if head else 0
    return s, status, head


def curl(*args, timeout=20):
    return subprocess.run(["curl", "-sS", "--max-time", "10", *args], capture_output=True,
                          timeout=timeout)


def test_absolute_form_with_curl_and_what_never_leaves(ferry_factory, origin):
    f = ferry_factory(None, "--forward")
    r = curl("-x", "http://127.0.0.1:%d" % f.port, "-H", "Proxy-Connection: keep-alive",
             "http://127.0.0.1:%d/a/b?c=1" % origin.port)
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"ok GET /a/b?c=1\n"
    req = origin.requests[-1]
    assert req.path == "/a/b?c=1"  # origin-form towards the destination
    assert req.header("Host") == "127.0.0.1:%d" % origin.port
    names = req.header_names()
    assert "proxy-connection" not in names
    assert "x-forwarded-for" not in names and "x-forwarded-proto" not in names
    assert "1.1 ferry" in req.header("Via")
    line = f.wait_access_log(1)[-1]
    assert "http://127.0.0.1:%d/a/b?c=1" % origin.port in line


def test_python_requests_with_proxies_and_keepalive(ferry_factory, origin):
    f = ferry_factory(None, "--forward")
    proxies = {"http": "http://127.0.0.1:%d" % f.port}
    with requests.Session() as s:
        for i in range(3):
            r = s.get("http://127.0.0.1:%d/n%d" % (origin.port, i), proxies=proxies, timeout=10)
            assert r.status_code == 200 and r.text == "ok GET /n%d\n" % i
            assert "1.1 ferry" in r.headers["Via"]
    assert origin.conn_count == 1  # one pooled connection to the destination


def test_origin_form_is_400(ferry_factory):
    f = ferry_factory(None, "--forward")
    with socket.create_connection(("127.0.0.1", f.port), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: example.test\r\n\r\n")
        r = ResponseReader(s, timeout=10).read_response()
    assert r.status == 400
    assert b"absolute URL" in r.body


def test_request_to_itself_is_not_looped(ferry_factory):
    f = ferry_factory(None, "--forward")
    r = proxy_get(f.port, "http://127.0.0.1:%d/" % f.port)
    assert r.status == 403
    assert b"loop" in r.body
    assert len(f.wait_access_log(1)) == 1  # one exchange, not a chain of them


def test_connect_tunnel_allowed_and_refused_ports(ferry_factory, tls_origin, pki):
    f = ferry_factory(None, "--forward", "--connect-ports", "443,%d" % tls_origin.port)
    r = curl("-x", "http://127.0.0.1:%d" % f.port, "--cacert", pki["ca"].pem,
             "https://localhost:%d/t" % tls_origin.port)
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"ok GET /t\n"
    s, status, _ = connect(f.port, "localhost:%d" % (tls_origin.port + 1 if tls_origin.port
                                                      < 65535 else 1))
    s.close()
    assert status == 403
    f2 = ferry_factory(None, "--forward")  # the default: 443 only
    s, status, head = connect(f2.port, "localhost:%d" % tls_origin.port)
    s.close()
    assert status == 403
    assert tls_origin.requests == [] or len(tls_origin.requests) == 1


def test_connect_tunnel_carries_the_origins_own_certificate(ferry_factory, tls_origin, pki):
    f = ferry_factory(None, "--forward", "--connect-ports", str(tls_origin.port))
    s, status, head = connect(f.port, "localhost:%d" % tls_origin.port)
    assert status == 200, head
    ctx = ssl.create_default_context(cafile=pki["ca"].pem)
    with ctx.wrap_socket(s, server_hostname="localhost") as t:
        t.sendall(b"GET /x HTTP/1.1\r\nHost: localhost\r\n\r\n")
        r = ResponseReader(t, timeout=10).read_response()
        assert r.status == 200 and r.body == b"ok GET /x\n"


def test_client_acl(ferry_factory, origin):
    f = ferry_factory(None, "--forward", "--allow-clients", "10.0.0.0/8,192.168.0.0/16")
    r = proxy_get(f.port, "http://127.0.0.1:%d/" % origin.port)
    assert r.status == 403
    assert b"allow-clients" in r.body
    assert origin.requests == []


def test_proxy_auth_407_then_200(ferry_factory, origin, tmp_path):
    h = subprocess.run(["openssl", "passwd", "-6", "s3cret"], capture_output=True, check=True)
    pw = tmp_path / "users"
    pw.write_text("alice:%s\n" % h.stdout.decode().strip())
    f = ferry_factory(None, "--forward", "--htpasswd", str(pw))
    url = "http://127.0.0.1:%d/p" % origin.port
    r = proxy_get(f.port, url)
    assert r.status == 407
    assert r.header("Proxy-Authenticate").startswith("Basic realm=")
    r = curl("-x", "http://127.0.0.1:%d" % f.port, "--proxy-user", "alice:wrong", "-o",
             "/dev/null", "-w", "%{http_code}", url)
    assert r.stdout == b"407"
    r = curl("-x", "http://127.0.0.1:%d" % f.port, "--proxy-user", "alice:s3cret", url)
    assert r.returncode == 0 and r.stdout == b"ok GET /p\n", r.stderr
    assert "proxy-authorization" not in origin.requests[-1].header_names()
    proxies = {"http": "http://alice:s3cret@127.0.0.1:%d" % f.port}
    assert requests.get(url, proxies=proxies, timeout=10).status_code == 200


def test_destination_rules_by_name_and_address(ferry_factory, origin):
    dns = DnsServer({"app.test": ["127.0.0.1"], "inner.test": ["127.0.0.1"]}).start()
    try:
        port = free_port()
        cfg = write_config("""
resolvers: %s
listeners:
  - listen: 127.0.0.1:%d
    forward:
      deny: ["*.corp.test", "127.0.0.2"]
      allow: ["app.test", "inner.test:%d"]
""" % (dns.servers, port, origin.port))
        f = ferry_factory(None, "-c", cfg, listen=None)
        assert proxy_get(f.port, "http://app.test:%d/ok" % origin.port).status == 200
        assert proxy_get(f.port, "http://inner.test:%d/ok" % origin.port).status == 200
        r = proxy_get(f.port, "http://x.corp.test/")
        assert r.status == 403 and b"corp.test" in r.body
        r = proxy_get(f.port, "http://other.test:%d/" % origin.port)
        assert r.status == 403
        r = proxy_get(f.port, "http://127.0.0.2:%d/" % origin.port)
        assert r.status == 403
        # denied before resolving: no query for the refused names
        assert not any(q[0] in ("x.corp.test", "other.test") for q in dns.queries)
    finally:
        dns.stop()


def test_name_errors_are_502_and_cached(ferry_factory, origin):
    dns = DnsServer({"app.test": ["127.0.0.1"]}).start()
    try:
        f = ferry_factory(None, "--forward", "--resolvers", dns.servers,
                          allowed_errors=[r"cannot resolve nothing\.test"])
        assert proxy_get(f.port, "http://app.test:%d/" % origin.port).status == 200
        for _ in range(3):
            r = proxy_get(f.port, "http://nothing.test/")
            assert r.status == 502
            assert b"cannot resolve" in r.body
        # one lookup answered the three requests (negative cache), per type asked
        assert len([q for q in dns.queries if q[0] == "nothing.test"]) <= 2
    finally:
        dns.stop()


def test_absolute_https_url_is_fetched_over_verified_tls(ferry_factory, tls_origin, pki):
    """GET https://... sent to the proxy itself (not a CONNECT): ferry speaks TLS to the
    destination and verifies it (upstream-ca); without the CA it is a 502 that says why."""
    f = ferry_factory(None, "--forward", "--upstream-ca", pki["ca"].pem)
    r = proxy_get(f.port, "https://localhost:%d/s?x=1" % tls_origin.port)
    assert r.status == 200 and r.body == b"ok GET /s?x=1\n"
    assert "https://localhost:%d/s?x=1" % tls_origin.port in f.wait_access_log(1)[-1]
    f2 = ferry_factory(None, "--forward",
                       allowed_errors=[r"TLS handshake with localhost failed"])
    r = proxy_get(f2.port, "https://localhost:%d/s" % tls_origin.port)
    assert r.status == 502 and b"unable to get local issuer certificate" in r.body


def test_resolver_that_never_answers_is_504(ferry_factory):
    dns = DnsServer({}).start()
    dns.silent = True
    try:
        f = ferry_factory(None, "--forward", "--resolvers", dns.servers, "--connect-timeout",
                          "300ms", "--resolve-timeout", "5s",
                          allowed_errors=[r"resolving slow\.test took longer"])
        r = proxy_get(f.port, "http://slow.test/")
        assert r.status == 504
        assert b"resolving" in r.body
    finally:
        dns.stop()


def test_the_unspecified_address_is_not_a_destination(ferry_factory, origin):
    """Linux connects 0.0.0.0 and :: to this machine: with a deny rule for loopback, they would
    reach loopback services anyway (Squid's to_localhost lists them too). Refused, in every
    spelling, and as a CONNECT."""
    port = free_port()
    cfg = write_config("""
listeners:
  - listen: 127.0.0.1:%d
    forward:
      deny: ["127.0.0.0/8", "::1/128"]
      connect-ports: [%d]
""" % (port, origin.port))
    f = ferry_factory(None, "-c", cfg, listen=None)
    for host in ("0.0.0.0", "0", "0.0", "[::ffff:0.0.0.0]", "[::]"):
        r = proxy_get(f.port, "http://%s:%d/secret" % (host, origin.port))
        assert r.status == 403, (host, r)
    s, status, _ = connect(f.port, "0.0.0.0:%d" % origin.port)
    s.close()
    assert status == 403
    assert origin.requests == []
    # and no loop through it either, without any rule
    f2 = ferry_factory(None, "--forward")
    r = proxy_get(f2.port, "http://0.0.0.0:%d/loop" % f2.port)
    assert r.status == 403
    assert len(f2.wait_access_log(1)) == 1


def test_a_refused_connect_closes_the_connection(ferry_factory, origin):
    """A CONNECT's client may send tunnel bytes right away: after a refusal they must never be
    read as the next request."""
    port = free_port()
    cfg = write_config("""
listeners:
  - listen: 127.0.0.1:%d
    forward:
      deny: ["127.0.0.2"]
      connect-ports: [%d]
""" % (port, origin.port))
    f = ferry_factory(None, "-c", cfg, listen=None)
    with socket.create_connection(("127.0.0.1", f.port), timeout=10) as s:
        s.sendall(b"CONNECT 127.0.0.2:%d HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"GET http://127.0.0.1:%d/smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
                  % (origin.port, origin.port))
        rd = ResponseReader(s, timeout=10)
        r = rd.read_response()
        assert r.status == 403 and r.header("Connection") == "close", r
        assert s.recv(100) == b""
    assert origin.requests == []


@pytest.mark.parametrize("framing", [b"Content-Length: 5\r\n", b"Transfer-Encoding: chunked\r\n"])
def test_connect_with_content_is_400(ferry_factory, origin, framing):
    """A CONNECT has no content (RFC 9110 9.3.6): framing fields on one would make ferry and
    the destination disagree on where the tunnel starts."""
    f = ferry_factory(None, "--forward", "--connect-ports", str(origin.port))
    with socket.create_connection(("127.0.0.1", f.port), timeout=10) as s:
        s.sendall(b"CONNECT 127.0.0.1:%d HTTP/1.1\r\nHost: x\r\n%s\r\n" % (origin.port, framing))
        r = ResponseReader(s, timeout=10).read_response()
    assert r.status == 400, r


def test_options_with_an_empty_path_is_asterisk(ferry_factory, origin):
    """RFC 9112 3.2.4: OPTIONS http://h:p (no path) goes on as OPTIONS *; OPTIONS * sent to a
    forward proxy names no destination (400)."""
    f = ferry_factory(None, "--forward")
    with socket.create_connection(("127.0.0.1", f.port), timeout=10) as s:
        s.sendall(b"OPTIONS http://127.0.0.1:%d HTTP/1.1\r\nHost: x\r\n\r\n" % origin.port)
        r = ResponseReader(s, timeout=10).read_response()
    assert r.status == 200
    assert origin.requests[-1].method == "OPTIONS" and origin.requests[-1].path == "*"
    with socket.create_connection(("127.0.0.1", f.port), timeout=10) as s:
        s.sendall(b"OPTIONS * HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % origin.port)
        r = ResponseReader(s, timeout=10).read_response()
    assert r.status == 400, r
    assert len(origin.requests) == 1


def test_url_ports_and_ip_literals(ferry_factory, origin):
    """An empty port is the scheme's default (RFC 3986 3.2.3); port 0 and an IPvFuture literal
    are 400s that say what is wrong (not 'ask for an absolute URL', not a DNS lookup)."""
    f = ferry_factory(None, "--forward")
    r = proxy_get(f.port, "http://127.0.0.1:0/x")
    assert r.status == 400 and b"port" in r.body, r
    r = proxy_get(f.port, "http://[v1.abc]:%d/x" % origin.port)
    assert r.status == 400, r
    # "http://127.0.0.1:/x" is port 80: nothing listens there in the test machine's loopback,
    # or something does; either way ferry tries port 80 rather than refusing the URL
    r = proxy_get(f.port, "http://127.0.0.1:/x")
    assert r.status != 400, r
