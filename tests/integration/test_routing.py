"""Routes from the configuration file (issue 6): first match wins in file order, host (exact and
*.wildcard) x path (exact, prefix, regex) x method x header x query conditions checked request
by request; path rewrites; redirects with captures; fixed responses; header rules with
variables; `always` response rules on ferry's own errors; X-Request-Id."""

import re

import pytest

from harness import (ResponseReader, connect, free_port, named_upstream, simple_request,
                     write_config)


def request(port, method, path, host="example.test", headers=(), body=None):
    s = connect(port)
    try:
        s.sendall(simple_request(method, path, host=host, headers=headers, body=body))
        return ResponseReader(s).read_final(head=method == "HEAD")
    finally:
        s.close()


CONFIG = """
listeners:
  - listen: 127.0.0.1:{port}
    routes:
      - match: {{ host: api.example.com, path-prefix: /v1/ }}
        upstream: api
        path-rewrite: {{ strip-prefix: /v1 }}
        request-headers:
          set: {{ Authorization: "Bearer ${{env:FERRY_TEST_TOKEN}}", X-Client: "$client_ip" }}
          add: {{ X-Added: "yes" }}
          remove: [Cookie]
        response-headers:
          set: {{ Access-Control-Allow-Origin: "https://app.example.com" }}
          always: true
      - match: {{ host: "*.example.com", path: /exact }}
        respond: {{ status: 200, body: "wildcard exact $host\\n" }}
      - match: {{ path-regex: "^/users/([0-9]+)$", methods: [GET, HEAD] }}
        redirect: {{ status: 301, location: "/u/$1" }}
      - match: {{ path-prefix: /h, headers: {{ X-Env: staging }} }}
        respond: {{ status: 200, body: "staging\\n" }}
      - match: {{ path-prefix: /h, headers: {{ X-Env: {{ regex: "^prod" }} }} }}
        respond: {{ status: 200, body: "prod\\n" }}
      - match: {{ path-prefix: /h, headers: {{ X-Any: true }} }}
        respond: {{ status: 200, body: "present\\n" }}
      - match: {{ path-prefix: /q, query: {{ debug: "1" }} }}
        respond: {{ status: 200, body: "debug\\n" }}
      - match: {{ path-prefix: /web/ }}
        upstream: web
        path-rewrite: {{ replace-prefix: /web/, with: /site/ }}
      - match: {{ path-regex: "^/re/(\\\\w+)/(\\\\w+)$" }}
        upstream: web
        path-rewrite: {{ regex: "^/re/(\\\\w+)/(\\\\w+)$", replacement: "/swapped/$2/$1" }}
      - match: {{ path: /post, methods: [POST] }}
        upstream: api
      - match: {{ host: dead.example.com }}
        upstream: dead
        response-headers:
          set: {{ Access-Control-Allow-Origin: "*" }}
          always: true
      - match: {{ path: /go }}
        redirect: {{ status: 302, location: "https://$host/landing?from=$path" }}
      - match: {{ path-regex: "^/out/(.*)$" }}
        redirect: {{ status: 302, location: "/$1" }}
      - respond: {{ status: 404, body: "no route\\n" }}
upstreams:
  api:
    servers: [ "http://127.0.0.1:{api}" ]
  web:
    servers: [ "http://127.0.0.1:{web}" ]
  dead:
    servers: [ "http://127.0.0.1:{dead}" ]
    retries: 0
"""


@pytest.fixture(scope="module")
def env(module_ferry_factory):
    api = named_upstream("api")
    web = named_upstream("web")
    port = free_port()
    path = write_config(CONFIG.format(port=port, api=api.port, web=web.port, dead=free_port()))
    f = module_ferry_factory(None, "-c", path, listen=None,
                             env={"FERRY_TEST_TOKEN": "s3cret"},
                             allowed_errors=[r"cannot connect"])
    assert f.port == port

    class Env:
        pass
    e = Env()
    e.port, e.api, e.web, e.ferry = port, api, web, f
    yield e
    api.stop()
    web.stop()


# (method, path, host, headers) -> (status, body text or None, upstream name or None)
PRECEDENCE = [
    # host + prefix beats everything below; the rewrite strips /v1
    ("GET", "/v1/users", "api.example.com", (), 200, "api GET /users", "api"),
    ("GET", "/v1/users?x=1", "API.Example.com:80", (), 200, "api GET /users?x=1", "api"),
    # same path on another host falls through to the catch-all
    ("GET", "/v1/users", "other.test", (), 404, "no route\n", None),
    # wildcard host + exact path
    ("GET", "/exact", "a.example.com", (), 200, "wildcard exact a.example.com\n", None),
    ("GET", "/exact", "a.b.example.com", (), 200, "wildcard exact a.b.example.com\n", None),
    ("GET", "/exact", "example.com", (), 404, "no route\n", None),       # not the apex
    ("GET", "/exact/more", "a.example.com", (), 404, "no route\n", None),  # exact means exact
    # regex + method
    ("GET", "/users/42", "x.test", (), 301, "", None),
    ("POST", "/users/42", "x.test", (), 404, "no route\n", None),
    ("GET", "/users/abc", "x.test", (), 404, "no route\n", None),
    # headers: equals, regex, present; first match wins
    ("GET", "/h", "x.test", (("X-Env", "staging"),), 200, "staging\n", None),
    ("GET", "/h", "x.test", (("X-Env", "production"),), 200, "prod\n", None),
    ("GET", "/h", "x.test", (("X-Env", "dev"), ("X-Any", "")), 200, "present\n", None),
    ("GET", "/h", "x.test", (("X-Env", "staging"), ("X-Any", "1")), 200, "staging\n", None),
    ("GET", "/h", "x.test", (), 404, "no route\n", None),
    # query
    ("GET", "/q?debug=1", "x.test", (), 200, "debug\n", None),
    ("GET", "/q?a=b&debug=1", "x.test", (), 200, "debug\n", None),
    ("GET", "/q?debug=2", "x.test", (), 404, "no route\n", None),
    # prefix + replace-prefix; normalised paths match (dot segments, encoded unreserved)
    ("GET", "/web/index.html", "x.test", (), 200, "web GET /site/index.html", "web"),
    ("GET", "/x/../web/a", "x.test", (), 200, "web GET /site/a", "web"),
    ("GET", "/%77eb/a", "x.test", (), 200, "web GET /site/a", "web"),
    # empty segments merge, as nginx's merge_slashes: "//web" cannot slip past a /web route
    ("GET", "//web//a", "x.test", (), 200, "web GET /site/a", "web"),
    # a trailing dot names the same host (and a port still goes)
    ("GET", "/v1/users", "api.example.com.", (), 200, "api GET /users", "api"),
    ("GET", "/v1/users", "API.example.com.:80", (), 200, "api GET /users", "api"),
    ("GET", "/exact", "a.example.com.", (), 200, "wildcard exact a.example.com\n", None),
    ("GET", "/web", "x.test", (), 404, "no route\n", None),
    # regex rewrite with captures
    ("GET", "/re/one/two", "x.test", (), 200, "web GET /swapped/two/one", "web"),
    # method condition on an exact path
    ("POST", "/post", "x.test", (), 200, "api POST /post", "api"),
    ("GET", "/post", "x.test", (), 404, "no route\n", None),
]


@pytest.mark.parametrize("method,path,host,headers,status,body,up", PRECEDENCE,
                         ids=["%s %s %s" % (m, p, h) for m, p, h, *_ in PRECEDENCE])
def test_route_precedence(env, method, path, host, headers, status, body, up):
    before = {"api": len(env.api.requests), "web": len(env.web.requests)}
    r = request(env.port, method, path, host=host, headers=headers,
                body=b"x" if method == "POST" else None)
    assert r.status == status, r
    if body is not None:
        assert r.body.decode() == body
    after = {"api": len(env.api.requests), "web": len(env.web.requests)}
    for name in ("api", "web"):
        assert after[name] - before[name] == (1 if name == up else 0), (name, r)


def test_redirect_with_capture(env):
    r = request(env.port, "GET", "/users/42")
    assert r.status == 301
    assert r.header("Location") == "/u/42"
    assert r.header("Content-Length") == "0"
    r = request(env.port, "HEAD", "/users/7")
    assert r.status == 301 and r.header("Location") == "/u/7"


@pytest.mark.parametrize("path", ["/out//evil.example/x", "/out/\\evil.example/x",
                                  "/out/%2F%2Fevil.example/x"])
def test_a_local_redirect_stays_local(env, path):
    """A location written as a path on this site ("/$1") never renders to "//host" or "/\\host"
    (a network-path reference: browsers read '\\' as '/'), whatever the capture holds."""
    r = request(env.port, "GET", path)
    assert r.status == 302, r
    loc = r.header("Location")
    assert loc.startswith("/") and loc[1:2] not in ("/", "\\"), loc


def test_redirect_variables(env):
    r = request(env.port, "GET", "/go?x=1", host="shop.test:8080")
    assert r.status == 302 and r.reason == "Found"
    assert r.header("Location") == "https://shop.test/landing?from=/go"


def test_fixed_response_keeps_the_connection(env):
    s = connect(env.port)
    try:
        rd = ResponseReader(s)
        for _ in range(3):
            s.sendall(simple_request("GET", "/nowhere", host="x.test"))
            r = rd.read_final()
            assert r.status == 404 and r.body == b"no route\n"
            assert r.header("Content-Type").startswith("text/plain")
            assert r.header("Date")
    finally:
        s.close()


def test_request_header_rules(env):
    r = request(env.port, "GET", "/v1/check", host="api.example.com",
                headers=(("Cookie", "a=b"), ("X-Added", "client")))
    assert r.status == 200
    got = env.api.requests[-1]
    assert got.header("Authorization") == "Bearer s3cret"
    assert got.header("X-Client") == "127.0.0.1"
    assert got.header("Cookie") is None
    assert got.header_all("X-Added") == ["client", "yes"]
    assert re.fullmatch(r"[0-9a-f]{32}", got.header("X-Request-Id"))
    assert r.header("Access-Control-Allow-Origin") == "https://app.example.com"


def test_request_ids_differ_and_are_logged(env):
    ids = set()
    for _ in range(5):
        request(env.port, "GET", "/v1/id", host="api.example.com")
        ids.add(env.api.requests[-1].header("X-Request-Id"))
    assert len(ids) == 5
    last = env.api.requests[-1].header("X-Request-Id")
    lines = env.ferry.wait_access_log(1)
    assert any(("id=" + last) in l for l in env.ferry.access_log_lines()), lines[-3:]


def test_client_request_id_not_trusted_by_default(env):
    request(env.port, "GET", "/v1/id", host="api.example.com",
            headers=(("X-Request-Id", "client-chosen"),))
    assert env.api.requests[-1].header("X-Request-Id") != "client-chosen"


def test_always_rules_reach_ferry_errors(env):
    r = request(env.port, "GET", "/", host="dead.example.com")
    assert r.status == 502
    assert r.header("Access-Control-Allow-Origin") == "*"


def test_malformed_escape_is_400(env):
    r = request(env.port, "GET", "/web/%zz", host="x.test")
    assert r.status == 400


@pytest.mark.parametrize("route_abort", ["on", "off"])
def test_abort_on_client_close_per_route(ferry_factory, route_abort):
    """The route's abort-on-client-close overrides the global one (here the opposite)."""
    import socket
    import threading
    from harness import close_wait_seen, late_answer_upstream, recv_until_close, wait_for
    answer = threading.Event()
    up = late_answer_upstream(answer)
    try:
        port = free_port()
        path = write_config("""
abort-on-client-close: %s
access-log: stdout
listeners:
  - listen: 127.0.0.1:%d
    routes:
      - upstream: app
        abort-on-client-close: %s
upstreams:
  app: { servers: [ "%s" ] }
""" % ("off" if route_abort == "on" else "on", port, route_abort, up.url))
        f = ferry_factory(None, "-c", path, listen=None)
        s = connect(port)
        s.sendall(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
        up.wait_connections(1)
        s.shutdown(socket.SHUT_WR)
        if route_abort == "on":
            assert '"GET /slow HTTP/1.1" 499 ' in f.wait_access_log(1)[0]
            answer.set()
            assert recv_until_close(s, timeout=10) == b""
        else:
            wait_for(lambda: close_wait_seen(port, s.getsockname()[1]), 5,
                     what="the client's FIN at ferry")
            answer.set()
            got = recv_until_close(s, timeout=10)
            assert got.startswith(b"HTTP/1.1 200 ") and got.endswith(b"\r\n\r\nlate")
        s.close()
    finally:
        answer.set()
        up.stop()


def test_trusted_request_id_is_kept(ferry_factory):
    up = named_upstream("api")
    try:
        port = free_port()
        path = write_config("""
trust-request-id: on
listeners:
  - listen: 127.0.0.1:%d
    routes: [ { upstream: app } ]
upstreams:
  app: { servers: [ "%s" ] }
""" % (port, up.url))
        ferry_factory(None, "-c", path, listen=None)
        request(port, "GET", "/", headers=(("X-Request-Id", "edge-42"),))
        assert up.requests[-1].header("X-Request-Id") == "edge-42"
        # not sane (a quote would break log lines): replaced
        request(port, "GET", "/", headers=(("X-Request-Id", 'a"b'),))
        assert re.fullmatch(r"[0-9a-f]{32}", up.requests[-1].header("X-Request-Id"))
    finally:
        up.stop()


def test_replace_prefix_alone_replaces_the_routes_prefix(ferry_factory):
    up = named_upstream("api")
    try:
        port = free_port()
        path = write_config("""
listeners:
  - listen: 127.0.0.1:%d
    routes:
      - match: { path-prefix: /old/ }
        upstream: app
        path-rewrite: { replace-prefix: /new/ }
upstreams:
  app: { servers: [ "%s" ] }
""" % (port, up.url))
        ferry_factory(None, "-c", path, listen=None)
        assert request(port, "GET", "/old/a/b?q=1").body == b"api GET /new/a/b?q=1"
    finally:
        up.stop()


def test_replace_prefix_alone_needs_a_path_prefix():
    from harness import run_ferry
    path = write_config("""
listeners:
  - listen: 127.0.0.1:0
    routes:
      - upstream: app
        path-rewrite: { replace-prefix: /new/ }
upstreams:
  app: { servers: [ "http://127.0.0.1:9" ] }
""")
    p = run_ferry("-t", "-c", path)
    assert p.returncode == 1
    assert b"replaces the route's path-prefix, and this route has none" in p.stderr
