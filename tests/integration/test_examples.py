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
