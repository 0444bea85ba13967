"""Lua hooks (lua:, --lua) through the real binary: each hook and the examples, body filters on
identity, gzip, brotli and zstd upstream bodies (decoded for the script, encoded again for the
client), error handling (file:line in the log, 500 or pass), budgets, a zip bomb refused, ferry -t
reporting a script's FILE:LINE, and a reload of a changed script under load."""

import base64
import gzip
import json
import os
import signal
import threading
import time
import zlib

import brotli
import pytest
import requests
import zstandard

from harness import (SockReader, UpstreamServer, connect, free_port, run_ferry, simple_request,
                     wait_for, write_config, ResponseReader)
from test_compress import HTML, decode, get, serve

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "lua")
TAG = b'<script src="/__ferry/inject.js"></script>'


def example(name):
    return os.path.abspath(os.path.join(EXAMPLES, name))


def script(tmp_path, text, name="hooks.lua"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def encode(coding, body):
    if coding == "gzip":
        return gzip.compress(body)
    if coding == "br":
        return brotli.compress(body)
    if coding == "zstd":
        return zstandard.ZstdCompressor().compress(body)
    if coding == "deflate":
        return zlib.compress(body)
    return body


# ---- the examples ----

@pytest.mark.parametrize("upstream_coding", [None, "gzip", "br", "zstd", "deflate"])
@pytest.mark.parametrize("client_ae", [None, "gzip", "br, zstd"])
def test_inject_script_through_any_upstream_coding(ferry_factory, raw_upstream, upstream_coding,
                                                   client_ae):
    fields = [("Content-Type", "text/html; charset=utf-8"), ("ETag", '"e1"')]
    if upstream_coding:
        fields.append(("Content-Encoding", upstream_coding))
    serve(raw_upstream, fields, encode(upstream_coding, HTML), chunked=upstream_coding == "br")
    f = ferry_factory(raw_upstream.url, "--lua", example("inject_script.lua"))
    r = get(f.port, "/page", ae=client_ae)
    assert r.status == 200
    got_coding = r.header("Content-Encoding")
    if upstream_coding is None:
        assert got_coding is None, "an identity body stays identity (no compress: configured)"
    elif client_ae is None:
        assert got_coding is None, "a client that accepts nothing gets it decoded"
    else:
        assert got_coding in [c.strip() for c in client_ae.split(",")]
    body = decode(got_coding, r.body)
    assert body == HTML.replace(b"</body>", TAG + b"</body>", 1)
    assert r.header("Content-Length") is None
    assert r.header("ETag") == 'W/"e1"'


def test_inject_script_leaves_other_types_alone(ferry_factory, raw_upstream):
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40
    serve(raw_upstream, [("Content-Type", "image/png")], png)
    f = ferry_factory(raw_upstream.url, "--lua", example("inject_script.lua"))
    r = get(f.port, "/a.png", ae="gzip")
    assert r.body == png and r.header("Content-Length") == str(len(png))
    serve(raw_upstream, [("Content-Type", "application/json"), ("Content-Encoding", "gzip")],
          gzip.compress(b'{"a": "</body>"}'))
    r = get(f.port, "/a.json", ae="gzip")
    assert r.header("Content-Encoding") == "gzip"
    assert gzip.decompress(r.body) == b'{"a": "</body>"}'


def test_inject_script_serves_its_script(ferry_factory, raw_upstream):
    serve(raw_upstream, [("Content-Type", "text/plain")], b"from the origin")
    f = ferry_factory(raw_upstream.url, "--lua", example("inject_script.lua"))
    r = requests.get("http://127.0.0.1:%d/__ferry/inject.js" % f.port, timeout=10)
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/javascript"
    assert "ferry-injected" in r.text


def test_inject_with_compress_encodes_an_identity_upstream(ferry_factory, raw_upstream):
    serve(raw_upstream, [("Content-Type", "text/html")], HTML)
    f = ferry_factory(raw_upstream.url, "--lua", example("inject_script.lua"), "--compress")
    r = get(f.port, "/", ae="gzip")
    assert r.header("Content-Encoding") == "gzip"
    assert gzip.decompress(r.body) == HTML.replace(b"</body>", TAG + b"</body>", 1)


def test_redact_json(ferry_factory, raw_upstream):
    doc = {"user": "ada", "password": "hunter2", "keys": [{"api_key": "k1", "name": "x"}],
           "nested": {"Token": "t", "ok": True}}
    serve(raw_upstream, [("Content-Type", "application/json"), ("Content-Encoding", "gzip")],
          gzip.compress(json.dumps(doc).encode()), chunked=True)
    f = ferry_factory(raw_upstream.url, "--lua", example("redact_json.lua"))
    r = get(f.port, "/me", ae="gzip")
    got = json.loads(decode(r.header("Content-Encoding"), r.body))
    assert got == {"user": "ada", "password": "[redacted]",
                   "keys": [{"api_key": "[redacted]", "name": "x"}],
                   "nested": {"Token": "[redacted]", "ok": True}}


def test_mock_endpoint(ferry_factory, upstream):
    f = ferry_factory(upstream.url, "--lua", example("mock.lua"))
    r = requests.get("http://127.0.0.1:%d/mock/users" % f.port, timeout=10)
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/json"
    assert r.json()["count"] == 2
    assert not [q for q in upstream.requests if q.path.startswith("/mock")]
    r = requests.get("http://127.0.0.1:%d/other" % f.port, timeout=10)
    assert r.text.strip() == "ok GET /other"


def _jwt(claims):
    enc = lambda d: base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()
    return "%s.%s.sig" % (enc({"alg": "HS256"}), enc(claims))


def test_jwt_claim_to_header(ferry_factory, upstream):
    f = ferry_factory(upstream.url, "--lua", example("jwt_header.lua"))
    requests.get("http://127.0.0.1:%d/a" % f.port, timeout=10,
                 headers={"Authorization": "Bearer " + _jwt({"sub": "user-42"}),
                          "X-User": "forged"})
    assert upstream.last.header("X-User") == "user-42"
    requests.get("http://127.0.0.1:%d/b" % f.port, timeout=10, headers={"X-User": "forged"})
    assert upstream.last.header("X-User") is None


def test_log_enriched_with_a_request_field(ferry_factory, upstream):
    f = ferry_factory(upstream.url, "--lua", example("log_user_from_query.lua"))
    requests.get("http://127.0.0.1:%d/p?user=ada&x=1" % f.port, timeout=10)
    wait_for(lambda: "user=ada" in f.stderr_text(), 5)
    line = [l for l in f.stderr_text().splitlines() if "user=ada" in l][0]
    assert "GET /p?user=ada&x=1 200" in line and "log_user_from_query.lua:" in line


# ---- each hook and the API, through the binary ----

HOOKS = r'''
function on_request(req)
    req.ctx.seen = req.method .. " " .. req.path
    req.headers:set("X-From-Lua", req.scheme .. "://" .. req.host)
    req.headers:remove("X-Drop")
    if req.path == "/old" then req.path = "/new?moved=1" end
    if req.path == "/teapot" then
        return req:respond(418, {["X-Mine"] = "1", ["Content-Type"] = "text/x-tea"}, "short and stout")
    end
end
function on_response(req, resp)
    resp.headers:add("X-Ctx", req.ctx.seen)
    resp.headers:set("X-Status-Was", tostring(resp.status))
    if req.path == "/status/404" then resp.status = 200 end
end
function on_log(req, resp, info)
    ferry.log("logged " .. req.ctx.seen .. " " .. info.status .. " " .. (resp and resp.headers:get("X-Ctx") or "-"))
end
'''


def test_every_hook(ferry_factory, upstream, tmp_path):
    f = ferry_factory(upstream.url, "--lua", script(tmp_path, HOOKS))
    base = "http://127.0.0.1:%d" % f.port
    r = requests.get(base + "/x", headers={"X-Drop": "1", "Host": "example.test:8080"}, timeout=10)
    assert r.status_code == 200
    seen = upstream.last
    assert seen.header("X-From-Lua") == "http://example.test"
    assert seen.header("X-Drop") is None
    assert r.headers["X-Ctx"] == "GET /x" and r.headers["X-Status-Was"] == "200"
    r = requests.get(base + "/old", timeout=10)
    assert upstream.last.path == "/new?moved=1"
    r = requests.get(base + "/teapot", timeout=10)
    assert r.status_code == 418 and r.text == "short and stout"
    assert r.headers["X-Mine"] == "1" and r.headers["Content-Type"] == "text/x-tea"
    assert not [q for q in upstream.requests if q.path == "/teapot"]
    r = requests.get(base + "/status/404", timeout=10)
    assert r.status_code == 200 and r.headers["X-Status-Was"] == "404"
    wait_for(lambda: "logged GET /status/404 200 GET /status/404" in f.stderr_text(), 5)
    assert "logged GET /x 200 GET /x" in f.stderr_text()


def test_path_change_before_routing_picks_the_route(ferry_factory, tmp_path):
    a, b = UpstreamServer().start(), UpstreamServer().start()
    try:
        s = script(tmp_path, 'function on_request(req) if req.path == "/go-b" then '
                             'req.path = "/b/here" end end')
        cfg = write_config("""
listeners:
  - listen: 127.0.0.1:%d
    lua: %s
    routes:
      - match: { path-prefix: /b/ }
        upstream: b
      - upstream: a
upstreams:
  a: { servers: [%s] }
  b: { servers: [%s] }
""" % (free_port(), s, a.url, b.url))
        f = ferry_factory(None, "-c", cfg, listen=None)
        requests.get("http://127.0.0.1:%d/go-b" % f.port, timeout=10)
        assert b.last.path == "/b/here" and not a.requests
        wait_for(lambda: f.access_log_lines(), 5)
        assert "/go-b" in f.access_log_lines()[-1], "the log keeps the target as received"
    finally:
        a.stop()
        b.stop()


def test_route_script_replaces_the_listener_script(ferry_factory, upstream, tmp_path):
    ls = script(tmp_path, 'function on_request(req) req.headers:set("X-L", "1") end\n'
                          'function on_response(req, resp) resp.headers:set("X-LR", "1") end',
                "listener.lua")
    rs = script(tmp_path, 'function on_request(req) req.headers:set("X-R", "1") end\n'
                          'function on_response(req, resp) resp.headers:set("X-RR", "1") end',
                "route.lua")
    cfg = write_config("""
listeners:
  - listen: 127.0.0.1:%d
    lua: { file: %s }
    routes:
      - match: { path-prefix: /r/ }
        upstream: app
        lua: %s
      - upstream: app
upstreams:
  app: { servers: [%s] }
""" % (free_port(), ls, rs, upstream.url))
    f = ferry_factory(None, "-c", cfg, listen=None)
    base = "http://127.0.0.1:%d" % f.port
    r = requests.get(base + "/r/x", timeout=10)
    assert upstream.last.header("X-L") == "1" and upstream.last.header("X-R") == "1"
    assert r.headers.get("X-RR") == "1" and "X-LR" not in r.headers
    r = requests.get(base + "/other", timeout=10)
    assert upstream.last.header("X-R") is None and r.headers.get("X-LR") == "1"


# ---- errors and limits ----

@pytest.mark.parametrize("on_error,status", [("fail", 500), ("pass", 200)])
def test_script_error_fails_or_passes(ferry_factory, upstream, tmp_path, on_error, status):
    s = script(tmp_path, "function on_request(req)\n  local t = nil\n  return t.field\nend\n",
               "broken.lua")
    cfg = write_config("""
listeners:
  - listen: 127.0.0.1:%d
    lua: { file: %s, on-error: %s }
    routes:
      - upstream: app
upstreams:
  app: { servers: [%s] }
""" % (free_port(), s, on_error, upstream.url))
    f = ferry_factory(None, "-c", cfg, listen=None)
    for _ in range(3):  # the state keeps working after an error
        r = requests.get("http://127.0.0.1:%d/x" % f.port, timeout=10)
        assert r.status_code == status
    wait_for(lambda: "broken.lua:3:" in f.stderr_text(), 5)


def test_budget_overrun_is_500_and_the_next_request_works(ferry_factory, upstream, tmp_path):
    s = script(tmp_path, 'function on_request(req)\n  if req.path == "/spin" then\n'
                         '    while true do end\n  end\nend\n', "spin.lua")
    f = ferry_factory(upstream.url, "--lua", s)
    base = "http://127.0.0.1:%d" % f.port
    t0 = time.monotonic()
    assert requests.get(base + "/spin", timeout=20).status_code == 500
    assert time.monotonic() - t0 < 10, "the budget stops the loop"
    assert requests.get(base + "/ok", timeout=10).status_code == 200
    assert "instruction budget" in f.stderr_text() and "spin.lua:3:" in f.stderr_text()


def test_memory_cap(ferry_factory, upstream, tmp_path):
    s = script(tmp_path, 'local keep = {}\nfunction on_request(req)\n'
                         '  if req.path == "/hog" then\n'
                         '    for i = 1, 1e9 do keep[i] = string.rep("x", 1000) .. i end\n'
                         '  end\nend\n', "hog.lua")
    cfg = write_config("""
listeners:
  - listen: 127.0.0.1:%d
    lua: { file: %s, max-memory: 8m, max-instructions: 100000000 }
    routes:
      - upstream: app
upstreams:
  app: { servers: [%s] }
""" % (free_port(), s, upstream.url))
    f = ferry_factory(None, "-c", cfg, listen=None)
    base = "http://127.0.0.1:%d" % f.port
    assert requests.get(base + "/hog", timeout=20).status_code == 500
    assert "not enough memory" in f.stderr_text()
    assert requests.get(base + "/fine", timeout=10).status_code == 200


def test_a_body_filter_error_cuts_the_response(ferry_factory, raw_upstream, tmp_path):
    s = script(tmp_path, 'function on_response(req, resp)\n'
                         '  resp:filter_body(function(chunk, last)\n'
                         '    if last then error("boom") end\n    return chunk\n  end)\nend\n',
               "cut.lua")
    serve(raw_upstream, [("Content-Type", "text/html")], HTML, chunked=True)
    f = ferry_factory(raw_upstream.url, "--lua", s)
    sock = connect(f.port, timeout=10)
    sock.sendall(simple_request("GET", "/", headers=[]))
    data = b""
    while True:
        d = sock.recv(65536)
        if not d:
            break
        data += d
    sock.close()
    assert not data.endswith(b"0\r\n\r\n"), "the client must not see a complete body"
    wait_for(lambda: "cut.lua:3: boom" in f.stderr_text(), 5)


def test_zip_bomb_is_refused(ferry_factory, raw_upstream, tmp_path):
    bomb = gzip.compress(b"\0" * (200 << 20), 9)  # 200 MiB of zeros in about 200 KB
    s = script(tmp_path, 'function on_response(req, resp)\n'
                         '  resp:filter_body(function(chunk, last) return chunk end)\nend\n',
               "filter.lua")
    serve(raw_upstream, [("Content-Type", "text/html"), ("Content-Encoding", "gzip")], bomb)
    f = ferry_factory(raw_upstream.url, "--lua", s)
    sock = connect(f.port, timeout=20)
    sock.sendall(simple_request("GET", "/bomb", headers=[("Accept-Encoding", "identity")]))
    got = 0
    t0 = time.monotonic()
    while True:
        d = sock.recv(1 << 20)
        if not d:
            break
        got += len(d)
    sock.close()
    assert got < 4 << 20, "ferry stopped decoding (got %d bytes)" % got
    assert time.monotonic() - t0 < 10
    wait_for(lambda: "ratio" in f.stderr_text(), 5)
    assert f.tree_rss_kb() < 128 * 1024


# ---- ferry -t and reload ----

def test_check_reports_the_scripts_file_and_line(tmp_path):
    bad = script(tmp_path, "function on_request(req)\n  if then\nend\n", "bad.lua")
    p = run_ferry("-t", "--upstream", "http://127.0.0.1:9", "--lua", bad)
    assert p.returncode != 0
    assert "bad.lua:2:" in p.stderr.decode()
    cfg = write_config("""
listeners:
  - listen: 127.0.0.1:0
    routes:
      - upstream: app
        lua: %s
upstreams:
  app: { servers: [http://127.0.0.1:9] }
""" % bad)
    p = run_ferry("-t", "-c", cfg)
    err = p.stderr.decode()
    assert p.returncode != 0 and "ferry.yaml:6" in err and "bad.lua:2:" in err, err
    good = script(tmp_path, "function on_log(req, resp, info) end\n", "good.lua")
    assert run_ferry("-t", "--upstream", "http://127.0.0.1:9", "--lua", good).returncode == 0


def test_reload_loads_the_changed_script_under_load(ferry_factory, upstream, tmp_path):
    path = tmp_path / "v.lua"
    path.write_text('function on_response(req, resp) resp.headers:set("X-V", "1") end\n')
    cfg = write_config("""
listeners:
  - listen: 127.0.0.1:%d
    lua: %s
    routes:
      - upstream: app
upstreams:
  app: { servers: [%s] }
""" % (free_port(), path, upstream.url))
    f = ferry_factory(None, "-c", cfg, listen=None)
    url = "http://127.0.0.1:%d/x" % f.port
    seen, errors, stop = set(), [], threading.Event()

    def load():
        with requests.Session() as s:
            while not stop.is_set():
                try:
                    r = s.get(url, timeout=10)
                    if r.status_code != 200:
                        errors.append(r.status_code)
                    seen.add(r.headers.get("X-V"))
                except requests.RequestException as e:
                    errors.append(repr(e))

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: "1" in seen, 5)
        path.write_text('function on_response(req, resp) resp.headers:set("X-V", "2") end\n')
        f.signal(signal.SIGHUP)
        wait_for(lambda: "2" in seen, 10)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert not errors, errors[:5]
    assert seen <= {"1", "2"}


# ---- request bodies ----

def test_request_body_filter_rewrites_what_goes_upstream(ferry_factory, upstream, tmp_path):
    s = script(tmp_path, 'function on_request(req)\n'
                         '  req:filter_body(function(chunk, last) return chunk:upper() end)\nend\n',
               "upper.lua")
    f = ferry_factory(upstream.url, "--lua", s)
    body = b"hello request body " * 5000  # about 95 KB, several batches
    r = requests.post("http://127.0.0.1:%d/echo" % f.port, data=body, timeout=10)
    assert r.status_code == 200
    got = upstream.last
    assert got.body == body.upper()
    assert (got.header("Transfer-Encoding") or "").lower() == "chunked"
    assert got.header("Content-Length") is None
    # a request without a body is untouched
    requests.get("http://127.0.0.1:%d/x" % f.port, timeout=10)
    assert upstream.last.header("Transfer-Encoding") is None


def test_log_json_field_example(ferry_factory, upstream):
    f = ferry_factory(upstream.url, "--lua", example("log_json_field.lua"))
    doc = {"operationName": "GetUser", "query": "query GetUser { me { id } }",
           "variables": {"pad": "x" * 40000}}
    raw = json.dumps(doc).encode()
    r = requests.post("http://127.0.0.1:%d/graphql" % f.port, data=raw, timeout=10,
                      headers={"Content-Type": "application/json"})
    assert r.status_code == 200
    assert upstream.last.body == raw, "the body reaches the upstream unchanged"
    wait_for(lambda: "op=GetUser" in f.stderr_text(), 5)
    line = [l for l in f.stderr_text().splitlines() if "op=GetUser" in l][0]
    assert "POST /graphql 200" in line
    requests.post("http://127.0.0.1:%d/form" % f.port, data=b"a=1", timeout=10,
                  headers={"Content-Type": "application/x-www-form-urlencoded"})
    wait_for(lambda: "POST /form 200" in f.stderr_text(), 5)
    assert "POST /form 200" in f.stderr_text() and upstream.last.body == b"a=1"


@pytest.mark.parametrize("name", sorted(n for n in os.listdir(EXAMPLES) if n.endswith(".lua")))
def test_every_example_passes_the_check(name):
    p = run_ferry("-t", "--upstream", "http://127.0.0.1:9", "--lua", example(name))
    assert p.returncode == 0, p.stderr.decode()


@pytest.mark.parametrize("chunked", [False, True])
def test_an_empty_body_through_a_filter_and_the_compressor(ferry_factory, raw_upstream, chunked):
    serve(raw_upstream, [("Content-Type", "text/html")], b"", chunked=chunked)
    f = ferry_factory(raw_upstream.url, "--lua", example("inject_script.lua"), "--compress")
    for _ in range(2):  # and the connection goes on
        r = get(f.port, "/", ae="gzip")
        assert r.status == 200
        assert decode(r.header("Content-Encoding"), r.body) == b""


def test_method_cannot_become_head_or_connect(ferry_factory, upstream, tmp_path):
    """A client that sent GET waits for a body; the upstream's answer to HEAD has none (RFC 9112
    6.3). Turning a request into HEAD or CONNECT is a script error (500), logged; HEAD made GET
    is allowed (the body is not relayed)."""
    s = script(tmp_path, 'function on_request(req)\n'
                         '  if req.path == "/head" then req.method = "HEAD" end\n'
                         '  if req.path == "/connect" then req.method = "CONNECT" end\n'
                         '  if req.path == "/get" then req.method = "GET" end\nend\n', "m.lua")
    f = ferry_factory(upstream.url, "--lua", s)
    base = "http://127.0.0.1:%d" % f.port
    t0 = time.monotonic()
    assert requests.get(base + "/head", timeout=10).status_code == 500
    assert requests.get(base + "/connect", timeout=10).status_code == 500
    assert time.monotonic() - t0 < 5, "answered at once, not after the upstream timeout"
    r = requests.head(base + "/get", timeout=10)
    assert r.status_code == 200 and upstream.requests[-1].method == "GET"
    wait_for(lambda: "m.lua:2:" in f.stderr_text() and "m.lua:3:" in f.stderr_text(), 5)


def test_a_206_is_not_filtered(ferry_factory, raw_upstream):
    """A part of a (possibly encoded) representation cannot be decoded alone, and a changed
    length would no longer match its Content-Range: a 206 goes out as the upstream sent it."""
    part = gzip.compress(HTML)[:500]
    serve(raw_upstream, [("Content-Type", "text/html"), ("Content-Encoding", "gzip"),
                         ("Content-Range", "bytes 0-499/%d" % len(gzip.compress(HTML)))],
          part, status=206)
    f = ferry_factory(raw_upstream.url, "--lua", example("inject_script.lua"))
    r = get(f.port, ae="gzip", headers=[("Range", "bytes=0-499")])
    assert r.status == 206 and r.body == part, r


def test_respond_204_and_304_have_no_body_and_no_length(ferry_factory, upstream, tmp_path):
    """RFC 9110 8.6: no Content-Length in a 204; a 304's would describe the representation, not
    the empty message. A body given to req:respond for them is dropped."""
    s = script(tmp_path, 'function on_request(req)\n'
                         '  if req.path == "/204" then return req:respond(204, {}, "dropped") end\n'
                         '  return req:respond(304, {ETag = \'"x"\'}, "dropped")\nend\n', "r.lua")
    f = ferry_factory(upstream.url, "--lua", s)
    sock = connect(f.port, timeout=10)
    for path, status in (("/204", 204), ("/304", 304), ("/204", 204)):
        sock.sendall(simple_request("GET", path, headers=[]))
        r = ResponseReader(sock, timeout=10).read_response()
        assert r.status == status and r.header("Content-Length") is None and r.body == b"", r
    sock.close()


def test_script_errors_cannot_forge_log_lines(ferry_factory, upstream, tmp_path):
    """An error message is the script's text: its newlines and escapes do not reach the log as
    such (a forged line, a terminal escape)."""
    s = script(tmp_path, 'function on_request(req)\n'
                         '  error("x\\nwarn ferry: forged line \\27[31m")\nend\n'
                         'function on_log(req, resp, info) error("in on_log") end\n', "f.lua")
    f = ferry_factory(upstream.url, "--lua", s)
    assert requests.get("http://127.0.0.1:%d/" % f.port, timeout=10).status_code == 500
    wait_for(lambda: "in on_log" in f.stderr_text(), 5)
    err = f.stderr_text()
    assert "\nwarn ferry: forged line" not in err and "\x1b" not in err, err
    line = [x for x in err.splitlines() if "in on_log" in x][0]
    assert "client 127.0.0.1" in line and "request " in line, line


def test_a_filter_failing_before_any_body_is_a_proper_error(ferry_factory, raw_upstream,
                                                            tmp_path):
    """The head leaves with the first body bytes: a body that fails in the chain before any of it
    went out (a corrupt gzip body to decode, a script's error on the first chunk) is answered
    with 502 (the upstream's fault) or 500 (the script's), logged, instead of a connection
    closed under a 200."""
    s = script(tmp_path, 'function on_response(req, resp)\n'
                         '  resp:filter_body(function(chunk, last)\n'
                         '    if req.path == "/err" then error("boom") end\n'
                         '    return chunk\n  end)\nend\n', "first.lua")
    f = ferry_factory(raw_upstream.url, "--lua", s)
    serve(raw_upstream, [("Content-Type", "text/html"), ("Content-Encoding", "gzip")],
          b"\x1f\x8b\x08\x00garbage that is not deflate" * 4)
    r = get(f.port, "/corrupt", ae="gzip")
    assert r.status == 502, r
    serve(raw_upstream, [("Content-Type", "text/html")], HTML)
    r = get(f.port, "/err")
    assert r.status == 500, r
    wait_for(lambda: "answering with an error instead" in f.stderr_text(), 5)
    lines = f.wait_access_log(2)
    assert '"GET /corrupt HTTP/1.1" 502' in lines[0] and '"GET /err HTTP/1.1" 500' in lines[1]
