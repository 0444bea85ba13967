"""Capture on reverse-proxy listeners and routes (capture: in a file, --capture): one JSON line
per exchange, read back field by field; a route's capture instead of the listener's; bodies cut
at max-body while the client still gets all of them (large bodies too, which then cannot be
spliced); ferry's own errors with their reason; a real capture converted by `ferry har` passes
har-validator; `ferry replay` of a real capture; -t reports a capture file that cannot be
opened at its line."""

import json
import requests

from harness import UpstreamServer, free_port, run_ferry, write_config
from test_har_replay import validate_har


def route_big(h, req):
    h.send_simple(200, (bytes(range(255, -1, -1)) * 1200)[:300000],
                  content_type="application/octet-stream")


def read_lines(path):
    with open(path) as f:
        return [json.loads(l) for l in f if l.strip()]


def test_listener_and_route_capture(ferry_factory, tmp_path):
    up = UpstreamServer(default_route=None).start()
    up.routes.insert(0, ("/big", route_big))
    try:
        a, b = str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")
        port = free_port()
        cfg = write_config("""
listeners:
  - listen: 127.0.0.1:%d
    capture: { file: %s, max-body: 16, redact: [Cookie] }
    routes:
      - match: { path-prefix: /special }
        upstream: app
        capture: %s
      - upstream: app
upstreams:
  app: { servers: [%s] }
""" % (port, a, b, up.url))
        f = ferry_factory(None, "-c", cfg, listen=None)
        base = "http://127.0.0.1:%d" % f.port
        r = requests.post(base + "/one?x=1", data=b"0123456789abcdefghij",
                          headers={"Cookie": "s=1", "X-Keep": "k"}, timeout=10)
        assert r.status_code == 200
        big = requests.get(base + "/big", timeout=10)
        assert len(big.content) == 300000  # the client got it all
        assert requests.get(base + "/special/x", timeout=10).status_code == 200
        f.stop()
        la, lb = read_lines(a), read_lines(b)
        assert [e["request"]["url"] for e in la] == [base + "/one?x=1", base + "/big"]
        assert [e["request"]["url"] for e in lb] == [base + "/special/x"]
        one = la[0]
        hdrs = dict((k.lower(), v) for k, v in one["request"]["headers"])
        assert hdrs["cookie"] == "[redacted]" and hdrs["x-keep"] == "k"
        assert one["request"]["body"] == {"size": 20, "captured": 16, "encoding": "utf8",
                                          "data": "0123456789abcdef"}
        assert one["response"]["status"] == 200
        assert one["server"]["port"] == up.port and one["tls"] is None
        assert one["timings"]["total"] >= 0 and one["error"] is None
        bigl = la[1]["response"]["body"]
        assert bigl["size"] == 300000 and bigl["captured"] == 16
        assert bigl["encoding"] == "base64"
        # b's route keeps whole bodies (the default max-body is 1m)
        assert lb[0]["response"]["body"]["data"] == "ok GET /special/x\n"
    finally:
        up.stop()


def test_quick_capture_errors_and_har(ferry_factory, tmp_path):
    flows = str(tmp_path / "q.jsonl")
    f = ferry_factory("http://127.0.0.1:1", "--capture", flows,
                      allowed_errors=[r"cannot connect"])
    r = requests.get("http://127.0.0.1:%d/down" % f.port, timeout=10)
    assert r.status_code == 502
    f.stop()
    (e,) = read_lines(flows)
    assert e["response"]["status"] == 502
    assert "could not connect" in e["error"]
    har = tmp_path / "q.har"
    p = run_ferry("har", flows, "-o", str(har))
    assert p.returncode == 0, p.stderr
    validate_har(har)
    entries = json.load(open(har))["log"]["entries"]
    assert entries[0]["response"]["status"] == 502


def test_replay_of_a_real_capture(ferry_factory, upstream, tmp_path):
    flows = str(tmp_path / "r.jsonl")
    f = ferry_factory(upstream.url, "--capture", flows)
    for p in ("/r1", "/r2"):
        assert requests.get("http://127.0.0.1:%d%s" % (f.port, p), timeout=10).ok
    f.stop()
    n = len(upstream.requests)
    p = run_ferry("replay", flows, "--to", upstream.url)
    assert p.returncode == 0, p.stderr
    assert len(upstream.requests) == n + 2
    out = p.stdout.decode()
    assert out.count("body same") == 2, out


def test_check_reports_an_unwritable_capture_file(tmp_path):
    cfg = write_config("""
listeners:
  - listen: 127.0.0.1:0
    capture: /nonexistent-dir/x.jsonl
    routes: [{ respond: { status: 200 } }]
""")
    p = run_ferry("-t", "-c", cfg)
    assert p.returncode == 1
    err = p.stderr.decode()
    assert ":4:" in err and "/nonexistent-dir" in err
