"""HTTPS interception (ferry --forward --intercept): curl and python requests through an
intercepted tunnel see certificates minted by ferry's CA and get the origin's answers; the
origin is verified (a rogue certificate is a 502 with the reason, inside the tunnel);
pass-through hosts keep their own certificate; IP-literal and SNI-less clients; plain HTTP and
other bytes in a tunnel; the certificate cache's bound; a WebSocket and a 1 GiB download through
an intercepted connection in bounded memory; captured exchanges with https URLs."""

import base64
import hashlib
import json
import os
import socket
import ssl
import subprocess
import threading

import pytest
import requests
from cryptography import x509

from certs import CA
from dns_server import DnsServer
from harness import (ResponseReader, SockReader, UpstreamServer, chunk_stream, free_port,
                     wait_for, write_config)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("pki"))
    ca = CA(d)
    return {"ca": ca, "dir": d,
            "good": ca.issue("localhost", "127.0.0.1", "a.test", "b.test", "c.test",
                             file="good"),
            "rogue": CA(d, "rogue CA").issue("localhost", "127.0.0.1", file="rogue")}


def tls_server_ctx(pem):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pem.cert, pem.key)
    return ctx


@pytest.fixture
def origin(pki):
    u = UpstreamServer(tls=tls_server_ctx(pki["good"])).start()
    yield u
    u.stop()


@pytest.fixture
def state(tmp_path):
    return str(tmp_path / "state")


def ferry_ca(state):
    return os.path.join(state, "ferry-ca.pem")


def start(ferry_factory, pki, state, origin_port, *extra, **kw):
    return ferry_factory(None, "--forward", "--intercept", "--state-dir", state,
                         "--upstream-ca", pki["ca"].pem, "--connect-ports",
                         "443,%d" % origin_port, *extra, **kw)


def open_tunnel(proxy_port, authority):
    s = socket.create_connection(("127.0.0.1", proxy_port), timeout=10)
    s.sendall(("CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (authority, authority)).encode())
    head = b""
    while b"\r\n\r\n" not in head:
        b = s.recv(1)
        assert b, "tunnel closed: %r" % head
        head += b
    assert head.startswith(b"HTTP/1.1 200"), head
    return s


def tls_in_tunnel(proxy_port, authority, cafile, sni, check_hostname=True):
    s = open_tunnel(proxy_port, authority)
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.check_hostname = check_hostname and sni is not None
    if sni is None:
        ctx.check_hostname = False
    return ctx.wrap_socket(s, server_hostname=sni)


def peer(t):
    return x509.load_der_x509_certificate(t.getpeercert(binary_form=True))


def get(t, path="/", host="localhost"):
    t.sendall(("GET %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (path, host)).encode())
    return ResponseReader(t, timeout=10).read_response()


def test_curl_through_interception(ferry_factory, pki, state, origin):
    f = start(ferry_factory, pki, state, origin.port)
    r = subprocess.run(["curl", "-sS", "--max-time", "10", "-x", "http://127.0.0.1:%d" % f.port,
                        "--cacert", ferry_ca(state), "-v",
                        "https://localhost:%d/hello?x=1" % origin.port],
                       capture_output=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"ok GET /hello?x=1\n"
    assert b"issuer: CN=ferry interception CA" in r.stderr
    assert origin.requests[-1].header("Host") == "localhost:%d" % origin.port
    lines = f.wait_access_log(2)
    assert any("GET https://localhost:%d/hello?x=1" % origin.port in l for l in lines), lines


def test_requests_keepalive_in_one_tunnel(ferry_factory, pki, state, origin):
    f = start(ferry_factory, pki, state, origin.port)
    proxies = {"https": "http://127.0.0.1:%d" % f.port}
    with requests.Session() as s:
        for i in range(3):
            r = s.get("https://localhost:%d/r%d" % (origin.port, i), proxies=proxies,
                      verify=ferry_ca(state), timeout=10)
            assert r.status_code == 200 and r.text == "ok GET /r%d\n" % i
    assert origin.conn_count == 1


def test_minted_certificate(ferry_factory, pki, state, origin):
    f = start(ferry_factory, pki, state, origin.port)
    with tls_in_tunnel(f.port, "localhost:%d" % origin.port, ferry_ca(state), "localhost") as t:
        c = peer(t)
        assert "ferry interception CA" in c.issuer.rfc4514_string()
        san = c.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.DNSName) == ["localhost"]
        assert get(t).status == 200
        assert t.version() in ("TLSv1.2", "TLSv1.3")


def test_ip_literal_gets_an_ip_san(ferry_factory, pki, state, origin):
    f = start(ferry_factory, pki, state, origin.port)
    r = requests.get("https://127.0.0.1:%d/ip" % origin.port,
                     proxies={"https": "http://127.0.0.1:%d" % f.port},
                     verify=ferry_ca(state), timeout=10)
    assert r.status_code == 200 and r.text == "ok GET /ip\n"


def test_sni_less_client_gets_the_connect_host(ferry_factory, pki, state, origin):
    f = start(ferry_factory, pki, state, origin.port)
    with tls_in_tunnel(f.port, "localhost:%d" % origin.port, ferry_ca(state), None) as t:
        c = peer(t)
        san = c.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.DNSName) == ["localhost"]
        r = get(t, "/nosni")
        assert r.status == 200 and r.body == b"ok GET /nosni\n"


def test_rogue_origin_is_502_with_the_reason(ferry_factory, pki, state):
    rogue = UpstreamServer(tls=tls_server_ctx(pki["rogue"])).start()
    try:
        f = start(ferry_factory, pki, state, rogue.port,
                  allowed_errors=[r"TLS handshake with localhost failed"])
        with tls_in_tunnel(f.port, "localhost:%d" % rogue.port, ferry_ca(state),
                           "localhost") as t:
            r = get(t)
        assert r.status == 502
        assert b"TLS handshake" in r.body
        wait_for(lambda: "unable to get local issuer certificate" in f.stderr_text(), 5,
                 what="the reason logged")
        assert rogue.requests == []
    finally:
        rogue.stop()


def test_pass_through_keeps_the_origins_certificate(ferry_factory, pki, state, origin):
    f = start(ferry_factory, pki, state, origin.port, "--pass-through", "localhost")
    with tls_in_tunnel(f.port, "localhost:%d" % origin.port, pki["ca"].pem, "localhost") as t:
        assert "ferry test CA" in peer(t).issuer.rfc4514_string()
        assert get(t, "/pt").body == b"ok GET /pt\n"
    # by SNI too: the CONNECT names an address, the client asks for localhost
    f2 = start(ferry_factory, pki, state, origin.port, "--pass-through", "*.test,localhost")
    with tls_in_tunnel(f2.port, "127.0.0.1:%d" % origin.port, pki["ca"].pem, "localhost") as t:
        assert "ferry test CA" in peer(t).issuer.rfc4514_string()


def test_plain_http_inside_a_tunnel(ferry_factory, pki, state):
    plain = UpstreamServer().start()
    try:
        f = start(ferry_factory, pki, state, plain.port)
        s = open_tunnel(f.port, "127.0.0.1:%d" % plain.port)
        with s:
            for i in range(2):
                r = get(s, "/plain%d" % i, host="127.0.0.1")
                assert r.status == 200 and r.body == b"ok GET /plain%d\n" % i
    finally:
        plain.stop()


def test_other_bytes_are_tunnelled(ferry_factory, pki, state, raw_upstream):
    def echo(c):
        data = c.recv(100)
        c.sendall(b"echo:" + data)
    raw_upstream.handler = echo
    f = start(ferry_factory, pki, state, raw_upstream.port)
    with open_tunnel(f.port, "127.0.0.1:%d" % raw_upstream.port) as s:
        s.sendall(b"\x00\x01binary protocol")
        got = b""
        while len(got) < 22:
            b = s.recv(100)
            if not b:
                break
            got += b
        assert got == b"echo:\x00\x01binary protocol"


def test_certificate_cache_is_bounded(ferry_factory, pki, state, origin):
    dns = DnsServer({"a.test": ["127.0.0.1"], "b.test": ["127.0.0.1"],
                     "c.test": ["127.0.0.1"]}).start()
    try:
        port = free_port()
        cfg = write_config("""
resolvers: %s
listeners:
  - listen: 127.0.0.1:%d
    forward:
      connect-ports: [%d]
      upstream-ca: %s
    intercept:
      state-dir: %s
      cert-cache-size: 2
""" % (dns.servers, port, origin.port, pki["ca"].pem, state))
        f = ferry_factory(None, "-c", cfg, listen=None)

        def serial(name):
            with tls_in_tunnel(f.port, "%s:%d" % (name, origin.port), ferry_ca(state),
                               name) as t:
                assert get(t, host=name).status == 200
                return peer(t).serial_number

        a1 = serial("a.test")
        assert serial("a.test") == a1  # cached
        serial("b.test")
        serial("c.test")                # a.test is the least recently used: out
        assert serial("a.test") != a1   # minted again
    finally:
        dns.stop()


def test_websocket_through_interception(ferry_factory, pki, state, raw_upstream):
    """Upgrade inside an intercepted (TLS) tunnel: the origin, also TLS, answers 101 and
    then echoes every byte; the client's frame comes back through both TLS hops."""
    ctx = tls_server_ctx(pki["good"])
    seen = {}

    def handler(c):
        t = ctx.wrap_socket(c, server_side=True)
        rd = SockReader(t, timeout=10)
        req = rd.rxreq()
        seen["upgrade"] = req.header("Upgrade")
        key = req.header("Sec-WebSocket-Key")
        accept = base64.b64encode(hashlib.sha1(
            (key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
        t.sendall(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                   "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n" % accept).encode())
        data = rd.buf or t.recv(100)
        t.sendall(data)

    raw_upstream.handler = handler
    f = start(ferry_factory, pki, state, raw_upstream.port)
    with tls_in_tunnel(f.port, "localhost:%d" % raw_upstream.port, ferry_ca(state),
                       "localhost") as t:
        t.sendall(b"GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
                  b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                  b"Sec-WebSocket-Version: 13\r\n\r\n")
        rr = ResponseReader(t, timeout=10)
        head = rr.read_head()
        assert head.status == 101
        frame = bytes([0x81, 0x82, 1, 2, 3, 4, ord("h") ^ 1, ord("i") ^ 3])
        t.sendall(frame)
        got = rr.buf
        while len(got) < len(frame):
            b = t.recv(100)
            assert b
            got += b
        assert got == frame
    assert seen["upgrade"] == "websocket"


def test_1gib_download_through_interception(ferry_factory, pki, state, raw_upstream):
    big = int(os.environ.get("FERRY_BIG_BYTES", str(1 << 30)))
    ctx = tls_server_ctx(pki["good"])
    sent = {}

    def handler(c):
        t = ctx.wrap_socket(c, server_side=True)
        rd = SockReader(t, timeout=60)
        rd.read_request()
        t.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % big)
        h = hashlib.sha256()
        for buf in chunk_stream(big, 1 << 18):
            h.update(buf)
            t.sendall(buf)
        sent["h"] = h.hexdigest()

    raw_upstream.handler = handler
    f = start(ferry_factory, pki, state, raw_upstream.port)
    from test_big_transfers import RssSampler, RSS_LIMIT_KB
    sampler = RssSampler(f)
    sampler.start()
    try:
        with tls_in_tunnel(f.port, "localhost:%d" % raw_upstream.port, ferry_ca(state),
                           "localhost") as t:
            t.sendall(b"GET /big HTTP/1.1\r\nHost: localhost\r\n\r\n")
            rr = ResponseReader(t, timeout=60)
            head = rr.read_head()
            assert head.status == 200
            rd = SockReader(t, timeout=60)
            rd.buf = rr.buf
            h = hashlib.sha256()
            total = 0
            for piece in rd.iter_exact(big):
                h.update(piece)
                total += len(piece)
    finally:
        sampler.stop()
    assert total == big
    wait_for(lambda: "h" in sent, 30, what="the origin finished")
    assert h.hexdigest() == sent["h"]
    assert sampler.max_kb < RSS_LIMIT_KB + f.tree_rss_kb(), sampler.max_kb


def test_capture_of_intercepted_exchanges(ferry_factory, pki, state, origin, tmp_path):
    flows = str(tmp_path / "flows.jsonl")
    port = free_port()
    cfg = write_config("""
listeners:
  - listen: 127.0.0.1:%d
    forward:
      connect-ports: [%d]
      upstream-ca: %s
    intercept:
      state-dir: %s
    capture: { file: %s, max-body: 4, redact: [Authorization, cookie] }
""" % (port, origin.port, pki["ca"].pem, state, flows))
    f = ferry_factory(None, "-c", cfg, listen=None)
    r = requests.post("https://localhost:%d/cap?q=1" % origin.port, data=b"body-bytes",
                      headers={"Authorization": "Bearer secret", "Cookie": "a=b"},
                      proxies={"https": "http://127.0.0.1:%d" % f.port},
                      verify=ferry_ca(state), timeout=10)
    assert r.status_code == 200
    f.stop()
    lines = [json.loads(l) for l in open(flows)]
    assert len(lines) == 1
    e = lines[0]
    assert e["request"]["method"] == "POST"
    assert e["request"]["url"] == "https://localhost:%d/cap?q=1" % origin.port
    hdrs = dict((k.lower(), v) for k, v in e["request"]["headers"])
    assert hdrs["authorization"] == "[redacted]" and hdrs["cookie"] == "[redacted]"
    assert e["request"]["body"]["size"] == 10 and e["request"]["body"]["captured"] == 4
    assert e["request"]["body"]["data"] == "body"
    assert e["response"]["status"] == 200
    assert e["response"]["body"]["data"] == "ok P"
    assert e["tls"]["sni"] == "localhost" and e["tls"]["version"].startswith("TLSv1.")
    assert e["server"]["port"] == origin.port
    assert len(e["id"]) == 32


def test_credentials_are_asked_once_per_tunnel(ferry_factory, pki, state, origin, tmp_path):
    """The CONNECT carries Proxy-Authorization; the requests inside the intercepted tunnel do
    not (clients never send it there), and are served."""
    h = subprocess.run(["openssl", "passwd", "-6", "pw"], capture_output=True, check=True)
    users = tmp_path / "users"
    users.write_text("bob:%s\n" % h.stdout.decode().strip())
    f = start(ferry_factory, pki, state, origin.port, "--htpasswd", str(users))
    proxy = "http://127.0.0.1:%d" % f.port
    url = "https://localhost:%d/auth" % origin.port
    with requests.Session() as s:
        for _ in range(2):
            r = s.get(url, proxies={"https": "http://bob:pw@127.0.0.1:%d" % f.port},
                      verify=ferry_ca(state), timeout=10)
            assert r.status_code == 200 and r.text == "ok GET /auth\n"
    r = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-x", proxy,
                        "--proxy-anyauth", "--proxy-user", "bob:pw", "--cacert", ferry_ca(state),
                        url], capture_output=True, timeout=20)
    assert r.stdout == b"200", r.stderr
    with pytest.raises(requests.exceptions.ProxyError):
        requests.get(url, proxies={"https": proxy}, verify=ferry_ca(state), timeout=10)


def test_a_failure_after_the_tunnel_was_answered_closes_it(ferry_factory, pki, state):
    """Interception answers 200 before it reads the first bytes. A tunnel relayed untouched
    (here: bytes that are neither TLS nor HTTP) whose destination then fails must close: an
    HTTP error written into it would be read as the destination's bytes."""
    dead = free_port()  # allowed by connect-ports, nothing listens
    f = start(ferry_factory, pki, state, dead)
    with open_tunnel(f.port, "127.0.0.1:%d" % dead) as s:
        s.sendall(b"\x00\x01binary protocol")
        try:
            got = s.recv(100)
        except ConnectionResetError:  # closed with the client's bytes unread
            got = b""
        assert got == b"", got  # nothing was written into the tunnel
    line = f.wait_access_log(2)[-1]
    assert " 502 0 " in line, line


def test_deny_rules_apply_to_the_sni(ferry_factory, pki, state, origin):
    """CONNECT to an allowed address with the SNI of a denied name would front for it: the
    requests inside get a 403 (inside TLS, readable by the user) as if the CONNECT had named
    it."""
    port = free_port()
    cfg = write_config("""
state-dir: %s
listeners:
  - listen: 127.0.0.1:%d
    forward:
      connect-ports: [%d]
      deny: [localhost]
      upstream-ca: %s
    intercept: on
""" % (state, port, origin.port, pki["ca"].pem))
    f = ferry_factory(None, "-c", cfg, listen=None)
    with tls_in_tunnel(f.port, "127.0.0.1:%d" % origin.port, ferry_ca(state), "localhost") as t:
        r = get(t, "/fronted")
    assert r.status == 403 and b"localhost" in r.body, r
    assert origin.requests == []
