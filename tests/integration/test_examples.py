"""The ready configurations in examples/ run as documented: each file is loaded with its
addresses pointed at local servers (listen and server URLs replaced, nothing else touched) and
real requests check what its comments promise."""

import json
import os
import re

import pytest

from harness import (REPO_ROOT, ResponseReader, connect, free_port, named_upstream,
                     simple_request, write_config)

EXAMPLES = os.path.join(REPO_ROOT, "examples")


def request(port, method, path, host="example.test", headers=(), body=None):
    s = connect(port)
    try:
        s.sendall(simple_request(method, path, host=host, headers=headers, body=body))
        return ResponseReader(s).read_final()
    finally:
        s.close()


def localise(name, ups):
    """The example's text with every server URL mapped to a named local upstream (by the order
    the URLs first appear) and its listen address(es) on a free local port."""
    with open(os.path.join(EXAMPLES, name)) as f:
        text = f.read()
    urls = []
    for u in re.findall(r"http://10\.0\.[0-9.]+:\d+", text):
        if u not in urls:
            urls.append(u)
    for i, u in enumerate(urls):
        text = text.replace(u, ups(i).url)
    port = free_port()
    text = text.replace('listen: [0.0.0.0:8080, "[::1]:8080"]', "listen: 127.0.0.1:%d" % port)
    text = re.sub(r"listen: 0\.0\.0\.0:8080", "listen: 127.0.0.1:%d" % port, text)
    return text, port, urls


@pytest.fixture
def upstreams():
    made = {}

    def get(i):
        if i not in made:
            made[i] = named_upstream("s%d" % i)
        return made[i]
    yield get
    for u in made.values():
        u.stop()


def who(r):
    return r.body.decode().split(" ", 1)[0]


def test_gateway(ferry_factory, upstreams):
    text, port, urls = localise("gateway.yaml", upstreams)
    f = ferry_factory(None, "-c", write_config(text), listen=None, workers=1,
                      env={"API_TOKEN": "s3cr3t"})
    api = {upstreams(0), upstreams(1)}            # the first two URLs: the api group
    r = request(port, "GET", "/v1/orders/42", host="api.example.com",
                headers=(("Cookie", "session=x"),))
    assert r.status == 200 and r.body.decode().endswith("GET /orders/42")
    got = [u for u in api if u.requests][0].requests[-1]
    assert got.header("Authorization") == "Bearer s3cr3t" and got.header("Cookie") is None
    assert r.header("Access-Control-Allow-Origin") == "https://app.example.com"
    r = request(port, "GET", "/v2/orders", host="api.example.com")
    assert r.body.decode().endswith("GET /next/orders")
    r = request(port, "GET", "/u/alice", host="eu.api.example.com")
    assert r.status == 200 and r.body.decode().endswith("GET /users/alice")
    users = [upstreams(2), upstreams(3), upstreams(4)]
    assert [u.requests[-1].header("X-User-Name") for u in users if u.requests] == ["alice"]
    r = request(port, "POST", "/hooks/github", body=b"{}",
                headers=(("X-Hub-Signature-256", "sha256=00"),))
    assert r.status == 200 and who(r) == "s5"
    assert upstreams(5).requests[-1].header("Host") == "hooks.internal"
    r = request(port, "POST", "/hooks/github", body=b"{}")        # no signature: no route
    assert r.status == 404
    r = request(port, "GET", "/old-docs?x=1")
    assert r.status == 301 and r.header("Location") == "https://docs.example.com/old-docs?x=1"
    r = request(port, "GET", "/", host="www.example.com")
    assert r.status == 200 and who(r) in ("s6", "s7")
    assert r.header("Set-Cookie", "").startswith("ferry_srv=")
    r = request(port, "DELETE", "/nothing/here")
    assert r.status == 404 and r.header("Content-Type") == "application/json"
    assert json.loads(r.body) == {"error": "no route for DELETE /nothing/here"}
    assert r.header("Cache-Control") == "no-store"


def test_webapp(ferry_factory, upstreams):
    text, port, urls = localise("webapp.yaml", upstreams)
    f = ferry_factory(None, "-c", write_config(text), listen=None, workers=None)
    r = request(port, "GET", "/healthz")
    assert r.status == 200 and r.body == b"ok\n"
    r = request(port, "GET", "/static/app.js")
    assert who(r) in ("s3", "s4") and r.header("Cache-Control") == "public, max-age=86400"
    seen = {who(request(port, "GET", "/page")) for _ in range(8)}
    assert seen <= {"s0", "s1"} and seen           # the backup (s2) only when both are down
    r = request(port, "GET", "/page")
    assert r.header("X-Frame-Options") == "DENY" and r.header("Server") is None
    line = f.wait_access_log(1)[-1]
    assert json.loads(line)["request_id"]          # access-log-format: json


def test_https(ferry_factory, upstreams, tmp_path):
    """examples/https.yaml with certificates made for its names, in the layout it names."""
    import shutil
    import socket
    import ssl

    from certs import CA
    from harness import UpstreamServer

    d = tmp_path / "certs"
    d.mkdir()
    public, company, internal = CA(str(d), "public CA"), CA(str(d), "company CA"), \
        CA(str(d), "internal CA")
    for name in ("www.example.com", "api.example.com", "admin.example.com"):
        public.issue(name, file=name)
    shutil.copy(company.pem, d / "company-ca.pem")
    shutil.copy(internal.pem, d / "internal-ca.pem")
    api_cert = internal.issue("api.internal", file="api-internal")
    alice = company.issue(cn="alice", client=True, file="alice")
    up_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    up_ctx.load_cert_chain(api_cert.cert, api_cert.key)
    api = UpstreamServer(tls=up_ctx).start()
    try:
        text, _, _ = localise("https.yaml", upstreams)
        plain, secure, admin = free_port(), free_port(), free_port()
        text = (text.replace("listen: 0.0.0.0:80\n", "listen: 127.0.0.1:%d\n" % plain)
                .replace("listen: 0.0.0.0:443\n", "listen: 127.0.0.1:%d\n" % secure)
                .replace("listen: 0.0.0.0:8443\n", "listen: 127.0.0.1:%d\n" % admin)
                .replace("https://10.0.3.10:9443", "https://127.0.0.1:%d" % api.port))
        cfg = tmp_path / "https.yaml"
        cfg.write_text(text)
        ferry_factory(None, "-c", str(cfg), listen=None, workers=1)

        r = request(plain, "GET", "/a?b=1", host="www.example.com")
        assert r.status == 308 and r.header("Location") == "https://www.example.com/a?b=1"

        def tls_get(port, name, ctx):
            raw = socket.create_connection(("127.0.0.1", port), timeout=5)
            with ctx.wrap_socket(raw, server_hostname=name) as s:
                s.sendall(b"GET /x HTTP/1.1\r\nHost: %s\r\n\r\n" % name.encode())
                return ResponseReader(s).read_final()

        ctx = ssl.create_default_context(cafile=public.pem)
        r = tls_get(secure, "www.example.com", ctx)
        assert r.status == 200 and who(r) in ("s0", "s1")
        assert r.header("Strict-Transport-Security").startswith("max-age=63072000")
        r = tls_get(secure, "api.example.com", ctx)  # SNI picks the api certificate
        assert r.status == 200 and r.body.startswith(b"ok GET /x")
        assert api.requests[-1].header("X-Forwarded-Proto") == "https"

        with pytest.raises((ssl.SSLError, OSError)):
            tls_get(admin, "admin.example.com", ctx)  # no client certificate
        ctx.load_cert_chain(alice.cert, alice.key)
        r = tls_get(admin, "admin.example.com", ctx)
        assert r.status == 200 and who(r) == "s2"
        got = upstreams(2).requests[-1]
        assert got.header("X-Client-Cert-Subject") == "O=ferry tests,CN=alice"
        assert got.header("X-Client-Cert-Sha256") == alice.sha256
    finally:
        api.stop()


def test_forward(ferry_factory, tmp_path):
    """examples/forward.yaml from a scratch directory: the CA is made in its state-dir, an
    https request through the proxy is intercepted and captured with its secrets redacted, the
    mock route answers, the metadata address is refused."""
    import json
    import shutil
    import ssl as _ssl
    import requests
    from certs import CA
    from harness import UpstreamServer
    ca = CA(str(tmp_path))
    pem = ca.issue("localhost", "127.0.0.1")
    ctx = _ssl.SSLContext(_ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pem.cert, pem.key)
    origin = UpstreamServer(tls=ctx).start()
    try:
        shutil.copy(os.path.join(EXAMPLES, "forward.yaml"), tmp_path / "forward.yaml")
        port = free_port()
        text = (tmp_path / "forward.yaml").read_text()
        text = text.replace("127.0.0.1:3128", "127.0.0.1:%d" % port)
        text = text.replace("connect-ports: [443, 8443]",
                            "connect-ports: [443, 8443, %d]\n      upstream-ca: %s"
                            % (origin.port, ca.pem))
        (tmp_path / "forward.yaml").write_text(text)
        f = ferry_factory(None, "-c", str(tmp_path / "forward.yaml"), listen=None)
        proxies = {"http": "http://127.0.0.1:%d" % port, "https": "http://127.0.0.1:%d" % port}
        r = requests.get("https://localhost:%d/x" % origin.port, proxies=proxies,
                         verify=str(tmp_path / "ferry-state" / "ferry-ca.pem"),
                         headers={"Authorization": "Bearer t0ken"}, timeout=10)
        assert r.status_code == 200 and r.text == "ok GET /x\n"
        r = requests.get("http://mock.example/anything", proxies=proxies, timeout=10)
        assert r.json() == {"ok": True}
        r = requests.get("http://169.254.169.254/latest/meta-data", proxies=proxies, timeout=10)
        assert r.status_code == 403
        f.stop()
        assert "GET https://localhost:%d/x" % origin.port in f.stdout_text()
        flows = [json.loads(l) for l in open(tmp_path / "flows.jsonl")]
        hdrs = dict((k.lower(), v) for k, v in flows[0]["request"]["headers"])
        assert hdrs["authorization"] == "[redacted]"
    finally:
        origin.stop()
