"""TLS listeners: certificates by SNI, versions, ALPN, resumption, client certificates, plain HTTP
on a TLS port, stalled handshakes, large bodies, certificate reload. Real clients (python's ssl,
curl) against the real binary; certificates made per module (certs.py)."""

import os
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time

import pytest

from certs import CA
from harness import (Ferry, ResponseReader, UpstreamServer, chunk_stream, free_port,
                     pattern_bytes, sha256, wait_for, write_config)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("pki"))
    ca = CA(d)
    other = CA(d, "other CA")
    return {
        "dir": d,
        "ca": ca,
        "other": other,
        "local": ca.issue("localhost", "127.0.0.1", file="local"),
        "local_rsa": ca.issue("localhost", "127.0.0.1", kind="rsa", file="local-rsa"),
        "a": ca.issue("a.test", file="a"),
        "wild": ca.issue("*.wild.test", file="wild"),
        "alice": ca.issue(cn="alice", client=True, file="alice"),
        "mallory": other.issue(cn="mallory", client=True, file="mallory"),
    }


def client_ctx(pki, verify=True, **kw) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if verify:
        ctx.load_verify_locations(pki["ca"].pem)
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    for k, v in kw.items():
        setattr(ctx, k, v)
    return ctx


def tls_connect(port, ctx, sni="localhost", timeout=5.0) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    return ctx.wrap_socket(raw, server_hostname=sni)


def get(s, path="/", host="localhost", extra=""):
    s.sendall(("GET %s HTTP/1.1\r\nHost: %s\r\n%s\r\n" % (path, host, extra)).encode())
    return ResponseReader(s).read_response()


def peer_fingerprint(s: ssl.SSLSocket) -> str:
    import hashlib
    return hashlib.sha256(s.getpeercert(binary_form=True)).hexdigest()


def tls_config(port, upstream, tls_block, routes=None, top=""):
    routes = routes or "      - upstream: app\n"
    return write_config(top + """
listeners:
  - listen: 127.0.0.1:%d
    tls:
%s
    routes:
%s
upstreams:
  app:
    servers: [%s]
""" % (port, tls_block, routes, upstream.url))


def certs_block(*pems, extra=""):
    lines = ["      certificates:"]
    for p in pems:
        lines.append("        - { cert: %s, key: %s }" % (p.cert, p.key))
    return "\n".join(lines) + ("\n" + extra if extra else "")


@pytest.fixture
def tls_ferry(ferry_factory, upstream, pki):
    """Quick mode: --tls-cert/--tls-key make --listen a TLS listener."""
    return ferry_factory(upstream.url, "--tls-cert", pki["local"].cert, "--tls-key",
                         pki["local"].key)


# ---- basics -------------------------------------------------------------------------------


def test_quick_mode_tls_listener_serves_https(tls_ferry, upstream, pki):
    with tls_connect(tls_ferry.port, client_ctx(pki)) as s:
        r = get(s, "/headers")
        assert r.status == 200
        assert s.version() in ("TLSv1.3", "TLSv1.2")
        assert peer_fingerprint(s) == pki["local"].sha256
        # keep-alive over TLS
        assert get(s, "/size/10").body == pattern_bytes(10) or get(s, "/").status == 200
    req = upstream.requests[0]
    assert req.header("X-Forwarded-Proto") == "https"


def test_curl_https_through_ferry(tls_ferry, pki):
    out = subprocess.run(["curl", "-sS", "--cacert", pki["ca"].pem, "-o", "-", "-w",
                          "\\n%{http_code} %{http_version}",
                          "https://localhost:%d/hello" % tls_ferry.port],
                         capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stderr
    assert out.stdout.endswith("200 1.1")
    assert out.stdout.startswith("ok GET /hello")


def test_access_log_names_tls_version_and_cipher(ferry_factory, upstream, pki):
    f = ferry_factory(upstream.url, "--tls-cert", pki["local"].cert, "--tls-key",
                      pki["local"].key, "--access-log-format", "json")
    with tls_connect(f.port, client_ctx(pki, maximum_version=ssl.TLSVersion.TLSv1_3)) as s:
        assert get(s).status == 200
    import json
    line = json.loads(f.wait_access_log(1)[0])
    assert line["tls"] == "TLSv1.3"
    assert line["tls_cipher"].startswith("TLS_")
    assert line["sni"] == "localhost"


# ---- versions, ciphers, ALPN ----------------------------------------------------------------


def test_tls_1_1_is_refused_and_1_2_1_3_accepted(tls_ferry, pki):
    for v in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        ctx = client_ctx(pki, minimum_version=v, maximum_version=v)
        with tls_connect(tls_ferry.port, ctx) as s:
            assert s.version() == v.name.replace("_", ".").replace("TLSv1.", "TLSv1.")
    old = client_ctx(pki, minimum_version=ssl.TLSVersion.TLSv1_1,
                     maximum_version=ssl.TLSVersion.TLSv1_1)
    old.set_ciphers("DEFAULT:@SECLEVEL=0")
    with pytest.raises(ssl.SSLError):
        tls_connect(tls_ferry.port, old).close()
    tls_ferry.expect_log(r"TLS handshake failed")


def test_alpn_selects_http11(tls_ferry, pki):
    ctx = client_ctx(pki)
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    with tls_connect(tls_ferry.port, ctx) as s:
        assert s.selected_alpn_protocol() == "http/1.1"
        assert get(s).status == 200
    only_h2 = client_ctx(pki)
    only_h2.set_alpn_protocols(["h2"])
    # No overlap: RFC 7301 3.2's fatal no_application_protocol (as nginx since 1.21.4), not
    # HTTP/1.1 to a client that asked for something else.
    with pytest.raises(ssl.SSLError, match="NO_APPLICATION_PROTOCOL|no application protocol"):
        tls_connect(tls_ferry.port, only_h2).close()
    with tls_connect(tls_ferry.port, client_ctx(pki)) as s:  # no ALPN at all: HTTP/1.1
        assert s.selected_alpn_protocol() is None
        assert get(s).status == 200


def test_rsa_and_ecdsa_certificates_side_by_side(ferry_factory, upstream, pki):
    port = free_port()
    cfg = tls_config(port, upstream, certs_block(pki["local"], pki["local_rsa"]))
    f = ferry_factory(None, "-c", cfg, listen=None)
    assert f.port == port
    for cipher, want in (("ECDHE-ECDSA-AES128-GCM-SHA256", pki["local"]),
                         ("ECDHE-RSA-AES128-GCM-SHA256", pki["local_rsa"])):
        ctx = client_ctx(pki, maximum_version=ssl.TLSVersion.TLSv1_2)
        ctx.set_ciphers(cipher)
        with tls_connect(port, ctx) as s:
            assert peer_fingerprint(s) == want.sha256, cipher
            assert get(s).status == 200


# ---- SNI --------------------------------------------------------------------------------------


def test_sni_exact_wildcard_and_default(ferry_factory, upstream, pki):
    port = free_port()
    cfg = tls_config(port, upstream, certs_block(pki["local"], pki["a"], pki["wild"]))
    ferry_factory(None, "-c", cfg, listen=None)
    cases = [("a.test", pki["a"]), ("A.Test", pki["a"]), ("x.wild.test", pki["wild"]),
             ("wild.test", pki["local"]),  # a wildcard does not cover the apex
             ("deep.x.wild.test", pki["local"]),  # nor two labels
             ("unknown.test", pki["local"]), (None, pki["local"])]
    for sni, want in cases:
        ctx = client_ctx(pki, verify=False)
        raw = socket.create_connection(("127.0.0.1", port), timeout=5)
        with ctx.wrap_socket(raw, server_hostname=sni) as s:
            assert peer_fingerprint(s) == want.sha256, sni
    # And verified as a client would: the wildcard certificate for a name it covers.
    with tls_connect(port, client_ctx(pki), sni="api.wild.test") as s:
        assert get(s, host="api.wild.test").status == 200


# ---- resumption ---------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["TLSv1_2", "TLSv1_3"])
def test_resumption_across_workers(ferry_factory, upstream, pki, version):
    f = ferry_factory(upstream.url, "--tls-cert", pki["local"].cert, "--tls-key",
                      pki["local"].key, workers=2)
    v = getattr(ssl.TLSVersion, version)
    ctx = client_ctx(pki, minimum_version=v, maximum_version=v)
    with tls_connect(f.port, ctx) as s:
        assert get(s).status == 200  # TLS 1.3: the ticket arrives after the handshake
        sess = s.session
    assert sess is not None
    reused = 0
    for _ in range(12):  # SO_REUSEPORT spreads these over both workers
        raw = socket.create_connection(("127.0.0.1", f.port), timeout=5)
        with ctx.wrap_socket(raw, server_hostname="localhost", session=sess) as s:
            assert get(s).status == 200
            reused += s.session_reused
            if version == "TLSv1_3":
                sess = s.session  # a TLS 1.3 ticket is for one use; take the fresh one
    assert reused == 12


def test_session_cache_without_tickets(tls_ferry, pki):
    ctx = client_ctx(pki, maximum_version=ssl.TLSVersion.TLSv1_2)
    ctx.options |= ssl.OP_NO_TICKET  # session IDs: the server-side cache
    with tls_connect(tls_ferry.port, ctx) as s:
        assert get(s).status == 200
        sess = s.session
    raw = socket.create_connection(("127.0.0.1", tls_ferry.port), timeout=5)
    with ctx.wrap_socket(raw, server_hostname="localhost", session=sess) as s:
        assert s.session_reused
        assert get(s).status == 200


# ---- client certificates (mutual TLS) ---------------------------------------------------------

MTLS_ROUTES = """      - upstream: app
        request-headers:
          set:
            X-Client-Cert-Subject: $tls_client_subject
            X-Client-Cert-Fingerprint: $tls_client_fingerprint
            X-Client-Verify: $tls_client_verify
"""


def mtls_ferry(ferry_factory, upstream, pki, auth):
    port = free_port()
    block = certs_block(pki["local"], extra="      client-ca: %s\n      client-auth: %s"
                        % (pki["ca"].pem, auth))
    f = ferry_factory(None, "-c", tls_config(port, upstream, block, MTLS_ROUTES,
                                             top="access-log-format: json\n"), listen=None)
    return port, f


def with_cert(pki, who):
    ctx = client_ctx(pki)
    ctx.load_cert_chain(pki[who].cert, pki[who].key)
    return ctx


def test_mtls_required(ferry_factory, upstream, pki):
    port, f = mtls_ferry(ferry_factory, upstream, pki, "required")
    with tls_connect(port, with_cert(pki, "alice")) as s:
        r = get(s, "/headers")
        assert r.status == 200
    req = upstream.requests[-1]
    assert req.header("X-Client-Cert-Subject") == "O=ferry tests,CN=alice"
    assert req.header("X-Client-Cert-Fingerprint") == pki["alice"].sha256
    assert req.header("X-Client-Verify") == "SUCCESS"
    import json
    line = json.loads(f.wait_access_log(1)[0])
    assert line["client_cert"] == "O=ferry tests,CN=alice"
    assert line["client_cert_sha256"] == pki["alice"].sha256
    n = len(upstream.requests)
    for ctx in (client_ctx(pki), with_cert(pki, "mallory")):  # none, and an unknown CA's
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            with tls_connect(port, ctx) as s:
                get(s)  # TLS 1.3: the refusal arrives after the client's handshake ends
    assert len(upstream.requests) == n


def test_mtls_optional(ferry_factory, upstream, pki):
    port, _ = mtls_ferry(ferry_factory, upstream, pki, "optional")
    with tls_connect(port, client_ctx(pki)) as s:
        assert get(s).status == 200
    assert upstream.requests[-1].header("X-Client-Verify") == "NONE"
    assert upstream.requests[-1].header("X-Client-Cert-Subject") in (None, "")
    with tls_connect(port, with_cert(pki, "alice")) as s:
        assert get(s).status == 200
    assert upstream.requests[-1].header("X-Client-Cert-Subject") == "O=ferry tests,CN=alice"


# ---- failures that must end cleanly --------------------------------------------------------------


def test_plain_http_on_tls_port_gets_clear_text_400(tls_ferry):
    with socket.create_connection(("127.0.0.1", tls_ferry.port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while True:
            b = s.recv(4096)
            if not b:
                break
            data += b
    assert data.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"plain HTTP was sent to an HTTPS port" in data
    tls_ferry.expect_log(r"plain HTTP to a TLS port")


def test_stalled_handshake_times_out(ferry_factory, upstream, pki):
    f = ferry_factory(upstream.url, "--tls-cert", pki["local"].cert, "--tls-key",
                      pki["local"].key, "--header-timeout", "300ms")
    socks = []
    # One sends nothing, one half a ClientHello: both are closed by the timeout.
    a = socket.create_connection(("127.0.0.1", f.port), timeout=5)
    b = socket.create_connection(("127.0.0.1", f.port), timeout=5)
    b.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
    socks += [a, b]
    for s in socks:
        s.settimeout(5)
        assert s.recv(100) == b""  # closed by ferry, no bytes
        s.close()
    wait_for(lambda: f.stderr_text().count("did not complete within 300 ms") >= 2, 5,
             what="two handshake timeouts logged")
    # The worker is still fine.
    with tls_connect(f.port, client_ctx(pki)) as s:
        assert get(s).status == 200


def test_garbage_and_aborted_handshakes_are_logged(tls_ferry, pki):
    with socket.create_connection(("127.0.0.1", tls_ferry.port), timeout=5) as s:
        s.sendall(b"\x16\x03\x01\x00\x05hello")  # a record that is no ClientHello
        s.settimeout(5)
        try:
            while s.recv(100):
                pass
        except ConnectionResetError:
            pass
    with socket.create_connection(("127.0.0.1", tls_ferry.port), timeout=5) as s:
        s.sendall(b"\x00\x01binary")
        s.settimeout(5)
        try:
            assert s.recv(100) == b""  # closed, nothing said (the unread bytes may reset it)
        except ConnectionResetError:
            pass
    wait_for(lambda: "TLS handshake failed" in tls_ferry.stderr_text(), 5, what="log line")
    tls_ferry.expect_log(r"TLS handshake failed")
    with tls_connect(tls_ferry.port, client_ctx(pki)) as s:
        assert get(s).status == 200


# ---- certificate reload ------------------------------------------------------------------------


def test_certificate_reload_under_load(ferry_factory, upstream, pki, tmp_path):
    """SIGHUP swaps the certificate without a failed request; a broken replacement is refused
    (with the file and the reason) and the serving certificate stays."""
    live_cert, live_key = str(tmp_path / "live.pem"), str(tmp_path / "live.key")
    first = pki["local"]
    second = pki["ca"].issue("localhost", "127.0.0.1", file="second")
    shutil.copy(first.cert, live_cert)
    shutil.copy(first.key, live_key)
    port = free_port()
    cfg = tls_config(port, upstream, "      certificates:\n        - { cert: %s, key: %s }"
                     % (live_cert, live_key))
    f = ferry_factory(None, "-c", cfg, listen=None, workers=2)
    seen, failures, stop = set(), [], threading.Event()

    def load():
        ctx = client_ctx(pki)
        while not stop.is_set():
            try:
                with tls_connect(port, ctx) as s:  # a new handshake each time
                    if get(s).status != 200:
                        failures.append("status")
                    seen.add(peer_fingerprint(s))
            except Exception as e:  # noqa: BLE001 - any failure counts
                failures.append(repr(e))

    threads = [threading.Thread(target=load) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: first.sha256 in seen, 10, what="the first certificate served")
        # A key that does not match: refused, the first certificate keeps serving.
        shutil.copy(pki["a"].key, live_key)
        f.signal(signal.SIGHUP)
        wait_for(lambda: "does not match the certificate" in f.stderr_text(), 10,
                 what="the refused reload logged")
        f.expect_log(r"does not match the certificate")
        f.expect_log(r"reload")
        shutil.copy(second.cert, live_cert)
        shutil.copy(second.key, live_key)
        f.signal(signal.SIGHUP)
        wait_for(lambda: second.sha256 in seen, 10, what="the new certificate served")
        seen.clear()
        wait_for(lambda: len(seen) > 0, 10, what="requests after the reload")
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert failures == []
    assert seen == {second.sha256}


# ---- https redirect and HSTS ------------------------------------------------------------------


def test_plain_listener_redirects_to_https_and_hsts(ferry_factory, upstream, pki):
    plain, secure = free_port(), free_port()
    cfg = write_config("""
listeners:
  - listen: 127.0.0.1:%d
    routes:
      - redirect: { status: 308, location: "https://$host:%d$request_uri" }
  - listen: 127.0.0.1:%d
    tls:
      certificates: [{ cert: %s, key: %s }]
    routes:
      - upstream: app
        response-headers:
          set: { Strict-Transport-Security: "max-age=63072000; includeSubDomains" }
          always: true
upstreams:
  app:
    servers: [%s]
""" % (plain, secure, secure, pki["local"].cert, pki["local"].key, upstream.url))
    ferry_factory(None, "-c", cfg, listen=None)
    with socket.create_connection(("127.0.0.1", plain), timeout=5) as s:
        s.sendall(b"GET /a/b?c=1 HTTP/1.1\r\nHost: localhost\r\n\r\n")
        r = ResponseReader(s).read_response()
    assert r.status == 308
    assert r.header("Location") == "https://localhost:%d/a/b?c=1" % secure
    with tls_connect(secure, client_ctx(pki)) as s:
        r = get(s, "/a/b?c=1")
    assert r.status == 200
    assert r.header("Strict-Transport-Security").startswith("max-age=63072000")


# ---- the end of a connection tells a TLS client whether the body was whole -----------------------


def _strict_ctx(pki):
    ctx = client_ctx(pki)
    ctx.options &= ~ssl.OP_IGNORE_UNEXPECTED_EOF  # python sets it; a browser would not
    return ctx


def _read_to_close(s):
    """Reads until the server ends the connection: b"" after a close_notify; an SSL error
    ("unexpected eof", with suppress_ragged_eofs=False) when TCP ended without one."""
    data = b""
    while True:
        b = s.recv(65536)
        if not b:
            return data
        data += b


def test_close_notify_after_a_whole_close_delimited_body(ferry_factory, raw_upstream, pki):
    def handler(c):
        from harness import SockReader
        SockReader(c).read_request()
        c.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
    raw_upstream.handler = handler
    f = ferry_factory(raw_upstream.url, "--tls-cert", pki["local"].cert, "--tls-key",
                      pki["local"].key)
    raw = socket.create_connection(("127.0.0.1", f.port), timeout=5)
    with _strict_ctx(pki).wrap_socket(raw, server_hostname="localhost",
                                      suppress_ragged_eofs=False) as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")  # HTTP/1.0: the body ends with the connection
        data = _read_to_close(s)  # no SSLEOFError: ferry sent close_notify
    assert data.endswith(b"\r\n\r\nhello")


def test_no_close_notify_after_a_cut_body(ferry_factory, raw_upstream, pki):
    def handler(c):
        from harness import SockReader
        SockReader(c).read_request()
        c.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        c.close()  # the upstream dies mid-body
    raw_upstream.handler = handler
    f = ferry_factory(raw_upstream.url, "--tls-cert", pki["local"].cert, "--tls-key",
                      pki["local"].key, allowed_errors=[r"upstream"])
    raw = socket.create_connection(("127.0.0.1", f.port), timeout=5)
    with _strict_ctx(pki).wrap_socket(raw, server_hostname="localhost",
                                      suppress_ragged_eofs=False) as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        with pytest.raises(ssl.SSLError, match="(?i)unexpected eof|EOF occurred"):
            _read_to_close(s)  # a truncation the client can see


# ---- many TLS clients at once ---------------------------------------------------------------------


def test_300_concurrent_tls_clients(ferry_factory, pki):
    """300 handshakes in parallel over two workers, every exchange held open at the upstream
    until all 300 requests are in: each client gets its own response."""
    from concurrent.futures import ThreadPoolExecutor

    from test_concurrency import AsyncUpstream
    n = 300
    up = AsyncUpstream(hold_until=n).start()
    try:
        f = ferry_factory(up.url, "--tls-cert", pki["local"].cert, "--tls-key",
                          pki["local"].key, workers=2)
        ctx = client_ctx(pki)

        def one(i):
            with tls_connect(f.port, ctx, timeout=30) as s:
                s.sendall(b"GET /c%d HTTP/1.1\r\nHost: x\r\n\r\n" % i)
                r = ResponseReader(s, timeout=30).read_response()
                return r.status, r.body

        with ThreadPoolExecutor(n) as ex:
            res = list(ex.map(one, range(n)))
    finally:
        up.stop()
    bad = [(i, r) for i, r in enumerate(res) if r != (200, b"/c%d" % i)]
    assert not bad, bad[:3]
    assert up.max_concurrent_conns >= n * 0.9


def test_idle_timeout_ends_with_close_notify(ferry_factory, upstream, pki):
    f = ferry_factory(upstream.url, "--tls-cert", pki["local"].cert, "--tls-key",
                      pki["local"].key, "--idle-timeout", "200ms")
    raw = socket.create_connection(("127.0.0.1", f.port), timeout=5)
    with _strict_ctx(pki).wrap_socket(raw, server_hostname="localhost",
                                      suppress_ragged_eofs=False) as s:
        assert get(s).status == 200
        assert s.recv(100) == b""  # the idle timeout: a clean TLS close, not a bare FIN


def test_a_session_does_not_resume_where_client_certificates_are_required(ferry_factory,
                                                                           upstream, pki):
    """A session made on a listener without client certificates must not resume on one that
    requires them (it would skip the check), nor carry a client identity verified by one
    listener's CA to a listener trusting another (nginx's CVE-2014-3616)."""
    open_port, req_port = free_port(), free_port()
    cfg = write_config("""
listeners:
  - listen: 127.0.0.1:%d
    tls:
      certificates: [{ cert: %s, key: %s }]
    routes: [{ upstream: app }]
  - listen: 127.0.0.1:%d
    tls:
      certificates: [{ cert: %s, key: %s }]
      client-ca: %s
      client-auth: required
    routes: [{ upstream: app }]
upstreams:
  app: { servers: [%s] }
""" % (open_port, pki["local"].cert, pki["local"].key, req_port, pki["local"].cert,
       pki["local"].key, pki["ca"].pem, upstream.url))
    f = ferry_factory(None, "-c", cfg, listen=None)
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        ctx = client_ctx(pki, minimum_version=version, maximum_version=version)
        with tls_connect(open_port, ctx) as s:
            assert get(s).status == 200  # the response also brings TLS 1.3's ticket
            sess = s.session
        # the same listener resumes it (the check below is not a resumption that never works)
        raw = socket.create_connection(("127.0.0.1", open_port), timeout=5)
        with ctx.wrap_socket(raw, server_hostname="localhost", session=sess) as s:
            assert get(s).status == 200 and s.session_reused
        n = len(upstream.requests)
        raw = socket.create_connection(("127.0.0.1", req_port), timeout=5)
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            with ctx.wrap_socket(raw, server_hostname="localhost", session=sess) as s:
                get(s)  # TLS 1.3: the refusal arrives after the client's handshake ends
        assert len(upstream.requests) == n, "a resumed session skipped the client certificate"


def test_an_sni_with_control_bytes_ends_the_handshake(ferry_factory, upstream, pki):
    """RFC 6066 3: the SNI is a host name. One with CR LF would otherwise reach
    $tls_server_name, and from there header rules, the upstream and the logs."""
    port = free_port()
    routes = ("      - upstream: app\n        request-headers:\n"
              "          set: { X-SNI: \"$tls_server_name\" }\n")
    f = ferry_factory(None, "-c", tls_config(port, upstream, certs_block(pki["local"]), routes),
                      listen=None)
    p = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % port,
                        "-servername", "a.test\r\nX-Injected: yes", "-quiet"],
                       input=b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
                       capture_output=True, timeout=20)
    assert b"HTTP/1.1 200" not in p.stdout, p.stdout
    assert all(r.header("X-Injected") is None for r in upstream.requests)
    with tls_connect(port, client_ctx(pki)) as s:  # a real name goes through, as it is
        assert get(s).status == 200
    assert upstream.requests[-1].header("X-SNI") == "localhost"
