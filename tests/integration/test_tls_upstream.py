"""https:// upstreams: verification against a CA file or the system store, each way it can fail
(502 and a log line that says why), the insecure mode, SNI and server-name, session reuse, and
TLS health checks. The upstream is the harness's UpstreamServer behind python's ssl."""

import ssl

import pytest

from certs import CA
from harness import UpstreamServer, free_port, wait_for, write_config


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("pki"))
    ca = CA(d)
    return {"ca": ca, "dir": d,
            "good": ca.issue("localhost", "127.0.0.1", file="good"),
            "expired": ca.issue("localhost", "127.0.0.1", days=-1, start_days=-5,
                                file="expired"),
            "other_name": ca.issue("other.test", file="other"),
            "unknown_ca": CA(d, "rogue CA").issue("localhost", "127.0.0.1", file="rogue"),
            "client": ca.issue(cn="ferry-client", client=True, file="client")}


def https_upstream(pem, client_ca=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pem.cert, pem.key)
    if client_ca:
        ctx.load_verify_locations(client_ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return UpstreamServer(tls=ctx).start()


@pytest.fixture
def up_factory():
    ups = []

    def make(pem, client_ca=None):
        u = https_upstream(pem, client_ca)
        ups.append(u)
        return u
    yield make
    for u in ups:
        u.stop()


def local_url(u, host="localhost"):
    return "https://%s:%d" % (host, u.port)


def get(port, path="/"):
    import socket
    from harness import ResponseReader
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(("GET %s HTTP/1.1\r\nHost: front\r\n\r\n" % path).encode())
        return ResponseReader(s, timeout=10).read_response()


def test_verified_https_upstream(ferry_factory, up_factory, pki):
    u = up_factory(pki["good"])
    f = ferry_factory(local_url(u), "--upstream-ca", pki["ca"].pem)
    for _ in range(3):
        r = get(f.port, "/hello")
        assert r.status == 200
        assert r.body.startswith(b"ok GET /hello")
    # Keep-alive towards the upstream: one connection carried the three requests.
    assert u.conn_count == 1


def test_session_reuse_on_new_upstream_connections(ferry_factory, up_factory, pki):
    u = up_factory(pki["good"])
    f = ferry_factory(local_url(u), "--upstream-ca", pki["ca"].pem, "--pool-max-idle", "0")
    for _ in range(4):
        assert get(f.port).status == 200
    assert u.conn_count == 4  # no pooling: a new connection, a new handshake, each time
    # The server side saw resumed sessions: python's ssl exposes them per server context.
    assert u.httpd.socket.context.session_stats()["hits"] >= 2


@pytest.mark.parametrize("kind,reason", [
    ("expired", "certificate has expired"),
    ("other_name", "hostname mismatch"),
    ("unknown_ca", "unable to get local issuer certificate"),
])
def test_verification_failure_is_502_with_reason(ferry_factory, up_factory, pki, kind, reason):
    u = up_factory(pki[kind])
    f = ferry_factory(local_url(u), "--upstream-ca", pki["ca"].pem,
                      allowed_errors=[r"TLS handshake with localhost failed"])
    r = get(f.port)
    assert r.status == 502
    wait_for(lambda: reason in f.stderr_text().lower(), 5, what="the reason logged: " + reason)
    assert u.requests == []


def test_system_store_does_not_trust_a_private_ca(ferry_factory, up_factory, pki):
    u = up_factory(pki["good"])
    f = ferry_factory(local_url(u), allowed_errors=[r"TLS handshake with localhost failed"])
    assert get(f.port).status == 502
    wait_for(lambda: "unable to get local issuer certificate" in f.stderr_text(), 5,
             what="the reason logged")


def test_insecure_skip_verify_works_and_says_so(ferry_factory, up_factory, pki):
    u = up_factory(pki["unknown_ca"])
    f = ferry_factory(local_url(u), "--insecure-skip-verify", "on")
    assert get(f.port).status == 200
    assert get(f.port).status == 200
    text = f.stderr_text()
    assert "not verified" in text or "insecure" in text
    # loudly: at startup, and on every new connection
    assert text.count("insecure-skip-verify") >= 2


def test_server_name_and_client_certificate_from_the_file(ferry_factory, up_factory, pki):
    # The upstream's certificate is for other.test; ferry dials 127.0.0.1 and verifies
    # other.test (server-name), and presents a client certificate the upstream requires.
    u = up_factory(pki["other_name"], client_ca=pki["ca"].pem)
    port = free_port()
    cfg = write_config("""
listeners:
  - listen: 127.0.0.1:%d
    routes:
      - upstream: secure
upstreams:
  secure:
    servers:
      - { url: "https://127.0.0.1:%d", server-name: other.test }
    tls:
      ca: %s
      cert: %s
      key: %s
""" % (port, u.port, pki["ca"].pem, pki["client"].cert, pki["client"].key))
    ferry_factory(None, "-c", cfg, listen=None)
    r = get(port)
    assert r.status == 200


def test_tls_health_check(ferry_factory, up_factory, pki):
    good = up_factory(pki["good"])
    bad = up_factory(pki["expired"])
    port = free_port()
    cfg = write_config("""
listeners:
  - listen: 127.0.0.1:%d
    routes:
      - upstream: app
upstreams:
  app:
    servers: ["https://localhost:%d", "https://localhost:%d"]
    tls: { ca: %s }
    health: { path: /health, interval: 200ms, timeout: 150ms, rise: 1, fall: 1 }
""" % (port, good.port, bad.port, pki["ca"].pem))
    f = ferry_factory(None, "-c", cfg, listen=None,
                      allowed_errors=[r"TLS handshake failed", r"is down", r"health"])
    wait_for(lambda: "certificate has expired" in f.stderr_text(), 10,
             what="the expired server marked down, with the reason")
    wait_for(lambda: any(r.path == "/health" for r in good.requests), 10,
             what="a TLS health probe reaching the good server")
    for _ in range(6):
        assert get(port).status == 200
    assert all(r.path == "/health" for r in bad.requests)
