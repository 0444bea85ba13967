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
