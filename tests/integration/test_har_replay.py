"""`ferry har` and `ferry replay` on capture files written by hand in the schema of
docs/capture.md: the HAR output passes har-validator (npm, installed by scripts/setup.sh into
.cache/node) and carries each field; replay sends the captured requests again to a counting
origin (--to, --filter by method and by regex, https with --upstream-ca) and reports the status
and whether the body changed."""

import json
import os
import re
import ssl
import subprocess

import pytest

from certs import CA
from harness import REPO_ROOT, UpstreamServer, run_ferry

NODE_MODULES = os.path.join(REPO_ROOT, ".cache", "node", "node_modules")

VALIDATE_JS = r"""
const v = require('har-validator');
const har = JSON.parse(require('fs').readFileSync(process.argv[1], 'utf8'));
v.har(har).then(() => console.log('valid'))
  .catch(e => { console.log(JSON.stringify(e.errors || String(e))); process.exit(1); });
"""


def body(data=b"", size=None, captured=None):
    """A capture body object: utf8 when the bytes are valid UTF-8, else base64."""
    import base64
    try:
        text, enc = data.decode("utf-8"), "utf8"
    except UnicodeDecodeError:
        text, enc = base64.b64encode(data).decode("ascii"), "base64"
    return {"size": len(data) if size is None else size,
            "captured": len(data) if captured is None else captured,
            "encoding": enc, "data": text}


def record(rid, method, url, req_headers=(), req_body=b"", status=200, reason="OK",
           resp_headers=(), resp_body=b"", response=True, error=None, tls=None,
           start="2026-12-02T13:20:03.123456Z", server=("93.184.216.34", 443), timings=None,
           req_size=None, req_captured=None):
    return {
        "id": rid,
        "start": start,
        "client": {"ip": "127.0.0.1", "port": 50312},
        "server": {"ip": server[0], "port": server[1]} if server else None,
        "tls": tls,
        "request": {"method": method, "url": url, "http_version": "HTTP/1.1",
                    "headers": [list(h) for h in req_headers],
                    "body": body(req_body, req_size, req_captured)},
        "response": {"status": status, "reason": reason, "http_version": "HTTP/1.1",
                     "headers": [list(h) for h in resp_headers],
                     "body": body(resp_body)} if response else None,
        "timings": timings or {"dns": -1, "connect": 0.42, "ssl": 1.3, "send": 0.01,
                               "wait": 2.2, "receive": 0.5, "total": 4.6},
        "error": error,
    }


def write_jsonl(path, records, extra_lines=()):
    with open(path, "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
        for line in extra_lines:
            f.write(line + "\n")
    return str(path)


def validate_har(path):
    if not os.path.exists(os.path.join(NODE_MODULES, "har-validator", "package.json")):
        pytest.fail("har-validator is not installed in %s: run scripts/setup.sh" % NODE_MODULES)
    env = dict(os.environ, NODE_PATH=NODE_MODULES)
    p = subprocess.run(["node", "-e", VALIDATE_JS, str(path)], capture_output=True, env=env,
                       timeout=60)
    assert p.returncode == 0 and p.stdout.strip() == b"valid", \
        "har-validator: %s %s" % (p.stdout.decode(), p.stderr.decode())


# ---- ferry har ----------------------------------------------------------------------------

def sample_records():
    return [
        record("4f2c0000000000000000000000000001", "GET", "https://example.com/a?b=1&c=x%20y",
               req_headers=[("Host", "example.com"), ("Accept", "*/*"),
                            ("Cookie", "sid=abc; theme=dark")],
               status=302, reason="Found",
               resp_headers=[("Content-Type", "text/html"), ("Location", "/b"),
                             ("Set-Cookie", "sid=new; Path=/; Domain=example.com; Secure; "
                                            "HttpOnly")],
               resp_body=b"<!doctype html>moved",
               tls={"version": "TLSv1.3", "cipher": "TLS_AES_128_GCM_SHA256",
                    "sni": "example.com"}),
        record("4f2c0000000000000000000000000002", "POST", "http://example.com/upload",
               req_headers=[("Host", "example.com"),
                            ("Content-Type", "application/octet-stream")],
               req_body=b"\x00\xff\x10\x80", resp_headers=[("Content-Type", "image/png")],
               resp_body=b"\x89PNG\r\n\x1a\n\x00\x00", server=("2001:db8::1", 80),
               start="2026-12-02T13:20:04.5Z"),
        record("4f2c0000000000000000000000000003", "GET", "http://example.com/slow",
               response=False, error="the upstream server did not answer in time",
               server=None,
               timings={"dns": -1, "connect": -1, "ssl": -1, "send": -1, "wait": -1,
                        "receive": -1, "total": 10000.5}),
    ]


def test_har_output_is_valid_har_with_every_field(tmp_path):
    src = write_jsonl(tmp_path / "flows.jsonl", sample_records())
    p = run_ferry("har", src)
    assert p.returncode == 0, p.stderr
    out = tmp_path / "flows.har"
    out.write_bytes(p.stdout)
    validate_har(out)

    log = json.loads(p.stdout)["log"]
    assert log["version"] == "1.2"
    assert log["creator"]["name"] == "ferry"
    assert re.fullmatch(r"\d+\.\d+\.\d+", log["creator"]["version"])
    e1, e2, e3 = log["entries"]

    assert e1["startedDateTime"] == "2026-12-02T13:20:03.123Z"
    assert e1["time"] == pytest.approx(4.6)
    rq = e1["request"]
    assert rq["method"] == "GET"
    assert rq["url"] == "https://example.com/a?b=1&c=x%20y"
    assert rq["httpVersion"] == "HTTP/1.1"
    assert {"name": "Accept", "value": "*/*"} in rq["headers"]
    assert rq["cookies"] == [{"name": "sid", "value": "abc"}, {"name": "theme", "value": "dark"}]
    assert rq["queryString"] == [{"name": "b", "value": "1"}, {"name": "c", "value": "x%20y"}]
    assert "postData" not in rq
    assert rq["headersSize"] == -1 and rq["bodySize"] == 0
    rs = e1["response"]
    assert rs["status"] == 302 and rs["statusText"] == "Found"
    assert rs["redirectURL"] == "/b"
    assert rs["cookies"] == [{"name": "sid", "value": "new", "path": "/",
                              "domain": "example.com", "httpOnly": True, "secure": True}]
    assert rs["content"] == {"size": 20, "mimeType": "text/html",
                             "text": "<!doctype html>moved"}
    assert rs["bodySize"] == 20
    assert e1["cache"] == {}
    t = e1["timings"]
    assert t["dns"] == -1
    assert t["ssl"] == pytest.approx(1.3)
    assert t["connect"] == pytest.approx(0.42 + 1.3), "connect includes ssl (HAR 1.2)"
    assert (t["send"], t["wait"], t["receive"]) == (pytest.approx(0.01), pytest.approx(2.2),
                                                    pytest.approx(0.5))
    parts = t["blocked"] + t["connect"] + t["send"] + t["wait"] + t["receive"]
    assert parts == pytest.approx(e1["time"])
    assert e1["serverIPAddress"] == "93.184.216.34"
    assert e1["_id"] == "4f2c0000000000000000000000000001"
    assert e1["_tls"]["version"] == "TLSv1.3"
    for e in log["entries"]:
        for k in e:
            assert k in ("startedDateTime", "time", "request", "response", "cache", "timings",
                         "serverIPAddress", "connection", "comment") or k.startswith("_"), k

    assert e2["startedDateTime"] == "2026-12-02T13:20:04.500Z"
    pd = e2["request"]["postData"]
    assert pd == {"mimeType": "application/octet-stream", "text": "AP8QgA==",
                  "_encoding": "base64"}
    assert e2["request"]["bodySize"] == 4
    c = e2["response"]["content"]
    assert c["encoding"] == "base64" and c["mimeType"] == "image/png" and c["size"] == 10
    assert e2["serverIPAddress"] == "2001:db8::1"

    assert e3["response"]["status"] == 0
    assert e3["response"]["_error"] == "the upstream server did not answer in time"
    assert e3["_error"] == "the upstream server did not answer in time"
    assert "serverIPAddress" not in e3
    t = e3["timings"]
    assert min(t["send"], t["wait"], t["receive"]) >= 0, "HAR forbids -1 there"
    assert e3["time"] == pytest.approx(10000.5)


def test_har_bad_lines_are_reported_with_file_and_line_and_skipped(tmp_path):
    recs = sample_records()[:1]
    src = write_jsonl(tmp_path / "flows.jsonl", recs,
                      extra_lines=['{"id": "x", "request": {"method": "GET" "url": 1}}', "",
                                   "[1, 2]", json.dumps(sample_records()[1])])
    out = tmp_path / "o.har"
    p = run_ferry("har", src, "-o", str(out))
    assert p.returncode == 0, p.stderr
    assert p.stdout == b""
    err = p.stderr.decode()
    assert "%s:2:41: expected ',' or '}'" % src in err, err
    assert "%s:4:1: expected an object" % src in err, err
    assert "2 bad lines skipped, 2 entries written" in err, err
    validate_har(out)
    assert len(json.loads(out.read_text())["log"]["entries"]) == 2


def test_har_usage_and_missing_file(tmp_path):
    p = run_ferry("har")
    assert p.returncode == 1 and b"usage: ferry har" in p.stderr
    p = run_ferry("har", str(tmp_path / "none.jsonl"))
    assert p.returncode == 1
    assert ("cannot read %s" % (tmp_path / "none.jsonl")).encode() in p.stderr


def test_har_of_an_empty_capture_is_valid(tmp_path):
    src = write_jsonl(tmp_path / "empty.jsonl", [])
    p = run_ferry("har", src)
    assert p.returncode == 0
    (tmp_path / "e.har").write_bytes(p.stdout)
    validate_har(tmp_path / "e.har")
    assert json.loads(p.stdout)["log"]["entries"] == []


# ---- ferry replay -------------------------------------------------------------------------

def counting_origin(tls=None):
    """An origin that answers /count with how many requests it has seen, and the rest with
    the harness's routes (/echo echoes the body; anything else "ok METHOD PATH")."""
    u = UpstreamServer(tls=tls)

    def count(h, req):
        h.send_simple(200, b"count %d\n" % len(u.requests))

    u.route("/count", count)
    return u.start()


@pytest.fixture
def origin():
    u = counting_origin()
    try:
        yield u
    finally:
        u.stop()


def replay_records():
    return [
        record("1", "GET", "http://shop.test/a",
               req_headers=[("Host", "shop.test"), ("Accept", "*/*"), ("Connection", "keep-alive"),
                            ("Keep-Alive", "timeout=5"), ("Proxy-Authorization", "Basic x"),
                            ("TE", "trailers"), ("Upgrade", "h2c"), ("X-Trace", "t1")],
               resp_body=b"ok GET /a\n"),
        record("2", "POST", "http://shop.test/echo",
               req_headers=[("Host", "shop.test"), ("Content-Type", "text/plain"),
                            ("Transfer-Encoding", "chunked")],
               req_body=b"hello there", resp_body=b"hello there"),
        record("3", "GET", "http://shop.test/count", resp_body=b"count 0\n"),
        record("4", "PUT", "http://shop.test/big", req_body=b"x" * 10, req_size=5000,
               req_captured=10, resp_body=b""),
        record("5", "DELETE", "http://shop.test/items/7", status=204, reason="No Content"),
    ]


def lines_of(p):
    return p.stdout.decode().splitlines()


def test_replay_to_another_origin_strips_hop_by_hop_and_reports_changes(tmp_path, origin):
    src = write_jsonl(tmp_path / "flows.jsonl", replay_records())
    p = run_ferry("replay", src, "--to", origin.url)
    assert p.returncode == 0, p.stdout + p.stderr
    out = lines_of(p)
    assert len(out) == 6, out
    assert re.match(r"^GET +http://shop\.test/a +captured 200 +now 200 +body same$", out[0]), out
    assert re.match(r"^POST +http://shop\.test/echo +captured 200 +now 200 +body same$", out[1])
    # /count answers "count 3" now (the third request the origin saw): 8 -> 8 bytes, other text
    assert re.search(r"captured 200 +now 200 +body differs \(8 -> 8 bytes\)$", out[2]), out[2]
    assert "skipped: the request body was not captured whole (10 of 5000 bytes)" in out[3]
    assert re.search(r"DELETE +http://shop\.test/items/7 +captured 204 +now 200 +body differs"
                     r" \(0 -> \d+ bytes\)$", out[4]), out[4]
    assert out[5] == ("4 sent: 2 same, 1 with another status, 2 with another body; 1 skipped, "
                      "0 failed")
    # columns line up: every "captured" starts at the same place
    assert len({line.index("captured") for line in out[:5]}) == 1

    reqs = origin.wait_requests(4)
    assert [(r.method, r.path) for r in reqs] == [
        ("GET", "/a"), ("POST", "/echo"), ("GET", "/count"), ("DELETE", "/items/7")]
    a = reqs[0]
    assert a.header("Host") == origin.authority, "Host names --to's authority"
    assert a.header("X-Trace") == "t1" and a.header("Accept") == "*/*"
    for hop in ("Keep-Alive", "Proxy-Authorization", "TE", "Upgrade", "Transfer-Encoding"):
        assert a.header(hop) is None, hop
    e = reqs[1]
    assert e.body == b"hello there"
    assert e.header("Content-Length") == "11" and e.header("Transfer-Encoding") is None
    assert e.header("Content-Type") == "text/plain"


def test_replay_filter_by_method_and_by_regex(tmp_path, origin):
    src = write_jsonl(tmp_path / "flows.jsonl", replay_records())
    p = run_ferry("replay", src, "--to", origin.url, "--filter", "POST")
    assert p.returncode == 0, p.stderr
    assert [r.method for r in origin.wait_requests(1)] == ["POST"]
    assert lines_of(p)[-1].startswith("1 sent: 1 same")

    p = run_ferry("replay", src, "--to", origin.url, "--filter", r"/(a|items/\d+)$")
    assert p.returncode == 0, p.stderr
    reqs = origin.wait_requests(3)
    assert [(r.method, r.path) for r in reqs[1:]] == [("GET", "/a"), ("DELETE", "/items/7")]
    assert len(lines_of(p)) == 3

    p = run_ferry("replay", src, "--filter", "([")
    assert p.returncode == 1
    assert b"--filter ([: " in p.stderr


def test_replay_to_its_own_url_and_a_failed_send_exits_2(tmp_path, origin):
    recs = [record("1", "GET", origin.url + "/own", resp_body=b"ok GET /own\n"),
            record("2", "GET", "http://127.0.0.1:9/closed", resp_body=b"")]
    src = write_jsonl(tmp_path / "flows.jsonl", recs, extra_lines=["{oops"])
    p = run_ferry("replay", src, "--timeout", "3s")
    assert p.returncode == 2, p.stdout + p.stderr
    out = lines_of(p)
    assert re.search(r"/own +captured 200 +now 200 +body same$", out[0]), out
    assert re.search(r"now - +failed: cannot connect to 127\.0\.0\.1:9: Connection refused",
                     out[1]), out
    assert out[2].endswith("1 failed")
    assert ("%s:3:2: expected a string (the name of a member) (line skipped)" % src).encode() \
        in p.stderr
    assert origin.wait_requests(1)[0].header("Host") == origin.authority


def test_replay_https_verified_with_upstream_ca(tmp_path):
    ca = CA(str(tmp_path))
    pem = ca.issue("localhost", "127.0.0.1")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pem.cert, pem.key)
    u = counting_origin(tls=ctx)
    try:
        https = "https://localhost:%d" % u.port
        recs = [record("1", "POST", https + "/echo", req_body=b"secret", resp_body=b"secret"),
                record("2", "GET", "http://shop.test/x", resp_body=b"ok GET /x\n")]
        src = write_jsonl(tmp_path / "flows.jsonl", recs)
        # the first goes to its own https URL; --to moves the second there too
        p = run_ferry("replay", src, "--upstream-ca", ca.pem, "--filter", "POST")
        assert p.returncode == 0, p.stdout + p.stderr
        assert re.search(r"captured 200 +now 200 +body same$", lines_of(p)[0])
        p = run_ferry("replay", src, "--upstream-ca", ca.pem, "--to", https, "--filter", "GET")
        assert p.returncode == 0, p.stdout + p.stderr
        reqs = u.wait_requests(2)
        assert reqs[0].body == b"secret"
        assert reqs[1].header("Host") == "localhost:%d" % u.port

        # without the CA, the system store does not know the test CA: verification fails
        p = run_ferry("replay", src, "--filter", "POST", "--timeout", "3s")
        assert p.returncode == 2
        assert b"failed: TLS to localhost:" in p.stdout and b"certificate verify failed" \
            in p.stdout, p.stdout
        p = run_ferry("replay", src, "--filter", "POST", "--insecure-skip-verify")
        assert p.returncode == 0, p.stdout
    finally:
        u.stop()


def test_replay_usage_errors(tmp_path):
    assert run_ferry("replay").returncode == 1
    assert run_ferry("replay", str(tmp_path / "missing.jsonl")).returncode == 1
    src = write_jsonl(tmp_path / "f.jsonl", [])
    p = run_ferry("replay", src, "--to", "ftp://x")
    assert p.returncode == 1 and b"--to: not an http:// or https:// URL" in p.stderr
    p = run_ferry("replay", src, "--timeout", "soon")
    assert p.returncode == 1 and b"--timeout expects a duration" in p.stderr
    p = run_ferry("replay", src)
    assert p.returncode == 0 and lines_of(p) == [
        "0 sent: 0 same, 0 with another status, 0 with another body; 0 skipped, 0 failed"]


def test_har_content_is_the_decoded_body(tmp_path):
    """HAR's content is the body as the page got it: a gzip, br or zstd body captured whole is
    decoded (content.size the decoded length, bodySize the encoded one, compression the bytes
    saved); a truncated capture or a corrupt body stays as it was captured."""
    import gzip
    import brotli
    import zstandard
    page = b"<html><body>" + b"<p>hello har</p>" * 500 + b"</body></html>"
    png = bytes(range(256)) * 8
    recs = [
        record("a" * 32, "GET", "https://x.test/g", resp_body=gzip.compress(page),
               resp_headers=[("Content-Type", "text/html"), ("Content-Encoding", "gzip")]),
        record("b" * 32, "GET", "https://x.test/b", resp_body=brotli.compress(page),
               resp_headers=[("Content-Type", "text/html"), ("Content-Encoding", "br")]),
        record("c" * 32, "GET", "https://x.test/z",
               resp_body=zstandard.ZstdCompressor().compress(png),
               resp_headers=[("Content-Type", "image/png"), ("Content-Encoding", "zstd")]),
        record("d" * 32, "GET", "https://x.test/bad", resp_body=b"not gzip at all",
               resp_headers=[("Content-Type", "text/plain"), ("Content-Encoding", "gzip")]),
    ]
    src = write_jsonl(tmp_path / "flows.jsonl", recs)
    out = str(tmp_path / "flows.har")
    assert run_ferry("har", src, "-o", out).returncode == 0
    validate_har(out)
    with open(out) as f:
        entries = json.load(f)["log"]["entries"]
    g, b, z, bad = (e["response"] for e in entries)
    for r in (g, b):
        assert r["content"]["text"] == page.decode()
        assert r["content"]["size"] == len(page)
        assert r["content"]["compression"] == len(page) - r["bodySize"]
    assert z["content"]["encoding"] == "base64"
    import base64
    assert base64.b64decode(z["content"]["text"]) == png
    assert bad["content"]["text"] == "not gzip at all" and bad["content"]["size"] == 15
    assert "compression" not in bad["content"]


def test_replay_never_sends_what_a_request_cannot_hold(tmp_path, origin):
    """A capture file is input: a method, URL, Host or field with CR LF (or other control
    bytes) is skipped or left out, never written onto the wire as extra lines."""
    src = write_jsonl(tmp_path / "evil.jsonl", [
        record("1", "GET /x HTTP/1.1\r\nX-Inj-M: 1\r\n\r\nGET", "http://shop.test/m"),
        record("2", "GET", "http://shop.test/a b\r\nX-Inj-U: 1"),
        record("3", "GET", "http://shop.test/h", req_headers=[("Host", "evil.test\r\nX-Inj-H: 1")]),
        record("4", "GET", "http://shop.test/f", req_headers=[("X-Nul", "a\x00b"),
                                                             ("Bad Name", "v"), ("X-Ok", "yes")]),
    ])
    p = run_ferry("replay", src, "--to", origin.url)
    out = p.stdout.decode()
    assert out.count("skipped") >= 3, out
    assert "\r" not in out and "X-Inj" not in out, out
    assert all(not any(k.lower().startswith("x-inj") for k in r.header_names())
               for r in origin.requests), origin.requests
    sent = [r for r in origin.requests if r.path == "/f"]
    assert len(sent) == 1 and sent[0].header("X-Ok") == "yes", origin.requests
    assert "x-nul" not in sent[0].header_names() and "bad name" not in sent[0].header_names()


def test_replay_of_options_asterisk_and_an_empty_path(tmp_path, origin):
    """ferry captures OPTIONS * as a URL without a path; replay sends it as OPTIONS * again
    (RFC 9112 3.2.4), and a URL with a query but no path as /?q."""
    src = write_jsonl(tmp_path / "o.jsonl", [record("1", "OPTIONS", "http://shop.test"),
                                             record("2", "GET", "http://shop.test?q=1")])
    p = run_ferry("replay", src, "--to", origin.url)
    assert p.returncode == 0, p.stdout + p.stderr
    assert [(r.method, r.path) for r in origin.requests] == [("OPTIONS", "*"), ("GET", "/?q=1")]


def test_har_and_replay_refuse_numbers_out_of_range_and_unreadable_input(tmp_path, origin):
    """1e300 is valid JSON but no size or status: the record is treated as malformed (no
    undefined conversion). A directory is a read error, not a loop."""
    rec = record("1", "GET", "http://shop.test/a", status=200)
    rec["response"]["status"] = 1e20
    rec["request"]["body"]["size"] = 1e300
    src = write_jsonl(tmp_path / "n.jsonl", [rec])
    p = run_ferry("har", src)
    assert p.returncode in (0, 1) and b"runtime error" not in p.stderr, p.stderr
    p = run_ferry("replay", src, "--to", origin.url)
    assert b"runtime error" not in p.stderr, p.stderr
    p = run_ferry("replay", str(tmp_path), "--to", origin.url, timeout=20)
    assert p.returncode == 1 and b"Is a directory" in p.stderr, (p.returncode, p.stderr)
