"""Header manipulation: injection, removal, Host modes, forwarding fields, hop-by-hop."""

import pytest

# harness.run_ferry fails on sanitizer reports, assertion failures and error lines
from harness import ResponseReader, SockReader, connect, run_ferry, simple_request


def _get(port, path="/headers", headers=(), host="client.example:8080", method="GET",
         body=None, version="HTTP/1.1"):
    s = connect(port)
    try:
        s.sendall(simple_request(method, path, host=host, headers=headers, body=body,
                                 version=version))
        return ResponseReader(s).read_final(head=method == "HEAD")
    finally:
        s.close()


def _names(req):
    return req.header_names()


# ---------------------------------------------------------------- injection

def test_request_header_added(ferry_factory, upstream):
    f = ferry_factory(upstream.url, "--request-header", "X-Added: v1",
                      "--request-header", "X-Second: two words")
    assert _get(f.port).status == 200
    got = upstream.last
    assert got.header_all("X-Added") == ["v1"]
    assert got.header_all("X-Second") == ["two words"]


def test_request_header_replaces_client_value(ferry_factory, upstream):
    f = ferry_factory(upstream.url, "--request-header", "X-Added: forced")
    assert _get(f.port, headers=[("x-added", "from-client"), ("X-Added", "again")]).status == 200
    assert upstream.last.header_all("X-Added") == ["forced"]


def test_response_header_added_and_replaces(ferry_factory, upstream):
    def route(h, req):
        h.send_simple(200, b"x", headers=[("X-Resp", "original"), ("X-Keep", "k")])

    upstream.route("/resp", route)
    f = ferry_factory(upstream.url, "--response-header", "X-Resp: injected",
                      "--response-header", "X-New: n")
    r = _get(f.port, "/resp")
    assert r.status == 200
    assert r.header_all("X-Resp") == ["injected"]
    assert r.header_all("X-New") == ["n"]
    assert r.header("X-Keep") == "k"


def test_env_substitution_in_header_values(ferry_factory, upstream):
    f = ferry_factory(upstream.url,
                      "--request-header", "Authorization: Bearer ${env:FERRY_TEST_TOKEN}",
                      "--response-header", "X-Region: ${env:FERRY_TEST_REGION}-x",
                      env={"FERRY_TEST_TOKEN": "s3cr3t-token", "FERRY_TEST_REGION": "eu1"})
    r = _get(f.port)
    assert r.status == 200
    assert upstream.last.header_all("Authorization") == ["Bearer s3cr3t-token"]
    assert r.header("X-Region") == "eu1-x"


def test_env_substitution_unset_variable_is_startup_error(upstream):
    import os
    env = {k: v for k, v in os.environ.items()}
    env.pop("FERRY_SURELY_UNSET_VAR", None)
    p = run_ferry("--listen", "127.0.0.1:0", "--upstream", upstream.url, "--workers", "1",
                  "--request-header", "X-T: ${env:FERRY_SURELY_UNSET_VAR}", env=env)
    assert p.returncode == 2, p.stderr
    assert b"FERRY_SURELY_UNSET_VAR" in p.stderr
    assert b"listening on" not in p.stderr


def test_env_substitution_unset_variable_in_response_header(upstream):
    p = run_ferry("--listen", "127.0.0.1:0", "--upstream", upstream.url, "--workers", "1",
                  "--response-header", "X-T: a${env:FERRY_OTHER_UNSET_VAR}b")
    assert p.returncode == 2, p.stderr
    assert b"FERRY_OTHER_UNSET_VAR" in p.stderr


# ---------------------------------------------------------------- removal

def test_remove_request_header_case_insensitive(ferry_factory, upstream):
    f = ferry_factory(upstream.url, "--remove-request-header", "X-Secret",
                      "--remove-request-header", "cookie")
    r = _get(f.port, headers=[("x-secret", "1"), ("X-SECRET", "2"), ("Cookie", "a=b"),
                              ("X-Other", "stays")])
    assert r.status == 200
    names = _names(upstream.last)
    assert "x-secret" not in names
    assert "cookie" not in names
    assert upstream.last.header("X-Other") == "stays"


def test_remove_response_header(ferry_factory, upstream):
    def route(h, req):
        h.send_simple(200, b"x", headers=[("X-Internal", "leak"), ("Server-Timing", "db;dur=5"),
                                          ("X-Public", "ok")])

    upstream.route("/resp", route)
    f = ferry_factory(upstream.url, "--remove-response-header", "x-internal",
                      "--remove-response-header", "Server-Timing")
    r = _get(f.port, "/resp")
    assert r.status == 200
    assert "x-internal" not in r.header_names()
    assert "server-timing" not in r.header_names()
    assert r.header("X-Public") == "ok"
    assert r.body == b"x"


# ---------------------------------------------------------------- Host

def test_host_default_is_upstream_authority(ferry, upstream):
    assert _get(ferry.port, host="client.example:8080").status == 200
    assert upstream.last.header_all("Host") == [upstream.authority]


def test_host_upstream_explicit(ferry_factory, upstream):
    f = ferry_factory(upstream.url, "--host", "upstream")
    assert _get(f.port, host="client.example").status == 200
    assert upstream.last.header_all("Host") == [upstream.authority]


def test_host_preserve(ferry_factory, upstream):
    f = ferry_factory(upstream.url, "--host", "preserve")
    assert _get(f.port, host="client.example:8080").status == 200
    assert upstream.last.header_all("Host") == ["client.example:8080"]


def test_host_fixed_value(ferry_factory, upstream):
    f = ferry_factory(upstream.url, "--host", "backend.internal")
    assert _get(f.port, host="client.example:8080").status == 200
    assert upstream.last.header_all("Host") == ["backend.internal"]


def test_host_preserve_http10_without_host(ferry_factory, upstream):
    """HTTP/1.0 requests may lack Host; the upstream request (HTTP/1.1) must still carry one."""
    f = ferry_factory(upstream.url, "--host", "preserve")
    assert _get(f.port, host=None, version="HTTP/1.0").status == 200
    assert len(upstream.last.header_all("Host")) == 1


# ---------------------------------------------------------------- forwarding fields

def test_forwarding_fields_added(ferry, upstream):
    r = _get(ferry.port, host="orig.example:8443")
    assert r.status == 200
    got = upstream.last
    assert got.header_all("X-Forwarded-For") == ["127.0.0.1"]
    assert got.header_all("X-Forwarded-Proto") == ["http"]
    assert got.header_all("X-Forwarded-Host") == ["orig.example:8443"]
    assert got.header_all("Via") == ["1.1 ferry"]
    assert r.header_all("Via") == ["1.1 ferry"], "Via must be added to responses too"


def test_forwarding_fields_appended(ferry, upstream):
    def route(h, req):
        h.send_simple(200, b"x", headers=[("Via", "1.1 origin-cache")])

    upstream.route("/via", route)
    r = _get(ferry.port, "/via", headers=[("X-Forwarded-For", "203.0.113.7"),
                                          ("Via", "1.0 edge")])
    assert r.status == 200
    got = upstream.last
    assert [v.replace(" ", "") for v in got.header_all("X-Forwarded-For")] == \
        ["203.0.113.7,127.0.0.1"]
    assert got.header("X-Forwarded-For") == "203.0.113.7, 127.0.0.1"
    assert ",".join(got.header_all("Via")).replace(" ", "") == "1.0edge,1.1ferry"
    assert ",".join(r.header_all("Via")).replace(" ", "") == "1.1origin-cache,1.1ferry"


def test_forwarding_lists_spread_over_several_fields_joined_in_order(ferry, upstream):
    # RFC 9110 5.3: repeated fields are one list; every earlier hop must survive, in order.
    r = _get(ferry.port, "/headers", headers=[("X-Forwarded-For", "198.51.100.1"),
                                              ("Via", "1.0 a"),
                                              ("X-Forwarded-For", "203.0.113.7, 192.0.2.9"),
                                              ("Via", "1.1 b")])
    assert r.status == 200
    got = upstream.last
    assert got.header_all("X-Forwarded-For") == [
        "198.51.100.1, 203.0.113.7, 192.0.2.9, 127.0.0.1"]
    assert got.header_all("Via") == ["1.0 a, 1.1 b, 1.1 ferry"]


@pytest.mark.parametrize("flag,field", [
    ("--x-forwarded-for", "X-Forwarded-For"),
    ("--x-forwarded-proto", "X-Forwarded-Proto"),
    ("--x-forwarded-host", "X-Forwarded-Host"),
    ("--via", "Via"),
])
def test_forwarding_field_switched_off(ferry_factory, upstream, flag, field):
    f = ferry_factory(upstream.url, flag, "off")
    r = _get(f.port)
    assert r.status == 200
    got = upstream.last
    assert got.header(field) is None, "%s off but upstream saw %s" % (flag, field)
    others = {"X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "Via"} - {field}
    for o in others:
        assert got.header(o) is not None, "%s should still be added" % o
    if field == "Via":
        assert r.header("Via") is None
    else:
        assert r.header("Via") == "1.1 ferry"


# ---------------------------------------------------------------- hop-by-hop

REQ_HOP = [("Connection", "X-Foo, Keep-Alive, X-Bar"), ("X-Foo", "foo"), ("X-Bar", "bar"),
           ("Keep-Alive", "timeout=5"), ("TE", "trailers"), ("Trailer", "X-T"),
           ("Proxy-Connection", "keep-alive"), ("X-End-To-End", "stays")]


def test_hop_by_hop_request_fields_stripped(ferry, upstream):
    r = _get(ferry.port, headers=REQ_HOP)
    assert r.status == 200
    got = upstream.last
    names = _names(got)
    for n in ("x-foo", "x-bar", "keep-alive", "te", "trailer", "proxy-connection"):
        assert n not in names, "hop-by-hop %s forwarded upstream: %r" % (n, got.headers)
    for v in got.header_all("Connection"):
        assert "x-foo" not in v.lower() and "x-bar" not in v.lower()
    assert got.header("X-End-To-End") == "stays"


def test_connection_close_from_client_not_forwarded_as_is(ferry, upstream):
    """Connection: close is about the client connection; the client side closes."""
    s = connect(ferry.port)
    try:
        s.sendall(simple_request("GET", "/headers", headers=[("Connection", "close, X-Gone"),
                                                              ("X-Gone", "1")]))
        rd = ResponseReader(s)
        r = rd.read_final()
        assert r.status == 200
        from harness import wait_closed
        assert wait_closed(s) == b""
    finally:
        s.close()
    assert "x-gone" not in _names(upstream.last)


def test_hop_by_hop_response_fields_stripped(ferry, upstream):
    def route(h, req):
        h.send_simple(200, b"resp", headers=[
            ("Connection", "X-Up-Hop, Keep-Alive"), ("X-Up-Hop", "secret"),
            ("Keep-Alive", "timeout=99, max=5"), ("Proxy-Connection", "keep-alive"),
            ("Trailer", "X-T"), ("Upgrade", "h2c"), ("X-End-To-End", "stays")])

    upstream.route("/hop", route)
    s = connect(ferry.port)
    try:
        s.sendall(simple_request("GET", "/hop"))
        rd = ResponseReader(s)
        r = rd.read_final()
        assert r.status == 200 and r.body == b"resp"
        names = r.header_names()
        for n in ("x-up-hop", "keep-alive", "proxy-connection", "trailer", "upgrade"):
            assert n not in names, "hop-by-hop %s forwarded to client: %r" % (n, r.headers)
        for v in r.header_all("Connection"):
            assert "x-up-hop" not in v.lower()
        assert r.header("X-End-To-End") == "stays"
        # client connection still usable
        s.sendall(simple_request("GET", "/hop"))
        assert rd.read_final().status == 200
    finally:
        s.close()


def test_upstream_connection_close_not_propagated(ferry_factory, raw_upstream):
    """Upstream says Connection: close and closes: the client connection stays alive."""

    def handler(c):
        rd = SockReader(c)
        rd.read_request()
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc")

    raw_upstream.handler = handler
    f = ferry_factory(raw_upstream.url)
    s = connect(f.port)
    try:
        rd = ResponseReader(s)
        for _ in range(3):
            s.sendall(simple_request("GET", "/x"))
            r = rd.read_final()
            assert r.status == 200 and r.body == b"abc"
            assert "close" not in (r.header("Connection") or "").lower()
    finally:
        s.close()
    assert raw_upstream.conn_count == 3


def test_chunked_te_not_duplicated_with_content_length(ferry, upstream):
    """Re-framed responses never carry both Content-Length and Transfer-Encoding."""
    r = _get(ferry.port, "/chunked/1000")
    assert r.status == 200
    assert not (r.has_header("Content-Length") and r.has_header("Transfer-Encoding"))
    assert r.header_all("Transfer-Encoding") == ["chunked"]


# ---------------------------------------------------------------- preservation

def test_repeated_fields_preserved_in_order(ferry, upstream):
    def route(h, req):
        h.send_simple(200, b"x", headers=[("Set-Cookie", "a=1; Path=/"),
                                          ("Set-Cookie", "b=2, c=3; Expires=Wed, 21 Oct 2026 07:28:00 GMT"),
                                          ("Set-Cookie", "d=4")])

    upstream.route("/cookies", route)
    r = _get(ferry.port, "/cookies", headers=[("X-Multi", "one"), ("X-Multi", "two"),
                                               ("Accept", "text/html"), ("Accept", "*/*")])
    assert r.status == 200
    assert r.header_all("Set-Cookie") == ["a=1; Path=/",
                                          "b=2, c=3; Expires=Wed, 21 Oct 2026 07:28:00 GMT",
                                          "d=4"], "Set-Cookie must stay separate fields"
    got = upstream.last
    assert ",".join(got.header_all("X-Multi")).replace(" ", "") == "one,two"
    assert ",".join(got.header_all("Accept")).replace(" ", "") == "text/html,*/*"


def test_target_forwarded_byte_exact(ferry, upstream):
    target = "/a%20b/./c/../d;p=1?x=1&y=%2F&z=%zz&empty=#"
    target = target[:-1]  # no fragment on the wire
    assert _get(ferry.port, target).status == 200
    assert upstream.last.path == target


def test_header_values_forwarded_verbatim(ferry, upstream):
    vals = [("X-Spaces", "a  b   c"), ("X-Utf8ish", "caf\xe9"), ("X-Empty", ""),
            ("X-Quote", '"quoted, with comma"'), ("X-Long", "v" * 4000)]
    assert _get(ferry.port, headers=vals).status == 200
    got = upstream.last
    for k, v in vals:
        assert got.header(k) == v, (k, got.header(k))


def test_status_reason_and_custom_status_passed_through(ferry, upstream):
    def route(h, req):
        h.send_response_only(299, "Custom Reason")
        h.send_header("Content-Length", "2")
        h.end_headers()
        h.wfile.write(b"ok")

    upstream.route("/custom", route)
    r = _get(ferry.port, "/custom")
    assert r.status == 299 and r.body == b"ok"
    assert r.reason == "Custom Reason"
