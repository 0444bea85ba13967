"""Access log: one line per exchange with method, target, status, upstream."""

import json
import os
import re
import tempfile

import pytest

from harness import ResponseReader, connect, free_port, simple_request

COMBINED_RE = re.compile(
    r'^(?P<client>\S+) - - \[(?P<time>\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4})\] '
    r'"(?P<method>\S+) (?P<target>\S+) (?P<proto>HTTP/1\.[01])" (?P<status>\d{3}) (?P<bytes>\d+) '
    r'"(?P<referer>[^"]*)" "(?P<ua>[^"]*)" in=(?P<in>\d+) up=(?P<up>\S+) '
    r'ut=(?P<ut>[\d.-]+) rt=(?P<rt>[\d.]+) id=(?P<id>[0-9a-f]{32}|-)$')


def _do(port, reqs):
    s = connect(port)
    try:
        rd = ResponseReader(s)
        out = []
        for method, target, body, hdrs in reqs:
            s.sendall(simple_request(method, target, body=body, headers=hdrs))
            out.append(rd.read_final(head=method == "HEAD"))
        return out
    finally:
        s.close()


REQS = [
    ("GET", "/size/123?q=1", None, [("User-Agent", "ferry-test/1.0"), ("Referer", "http://r/")]),
    ("POST", "/echo", b"hello", [("User-Agent", "ua2")]),
    ("GET", "/status/404", None, []),
    ("PURGE", "/cache/item", None, []),
]


def test_combined_format(ferry_factory, upstream):
    f = ferry_factory(upstream.url)
    _do(f.port, REQS)
    assert f.stop() == 0
    lines = f.access_log_lines()
    assert len(lines) == len(REQS), lines
    parsed = []
    for line in lines:
        m = COMBINED_RE.match(line)
        assert m, "access log line does not match combined format: %r" % line
        parsed.append(m.groupdict())
    p0, p1, p2, p3 = parsed
    assert (p0["method"], p0["target"], p0["status"], p0["bytes"]) == ("GET", "/size/123?q=1", "200", "123")
    assert p0["ua"] == "ferry-test/1.0" and p0["referer"] == "http://r/"
    assert p0["client"] == "127.0.0.1"
    assert p0["up"] == upstream.authority and p0["in"] == "0"
    assert (p1["method"], p1["target"], p1["status"], p1["bytes"], p1["in"]) == \
        ("POST", "/echo", "200", "5", "5")
    assert p1["ua"] == "ua2" and p1["referer"] == "-"
    assert (p2["method"], p2["status"]) == ("GET", "404")
    assert (p3["method"], p3["target"]) == ("PURGE", "/cache/item")


def test_json_format(ferry_factory, upstream):
    f = ferry_factory(upstream.url, "--access-log-format", "json")
    _do(f.port, REQS)
    assert f.stop() == 0
    lines = f.access_log_lines()
    assert len(lines) == len(REQS), lines
    recs = [json.loads(l) for l in lines]
    for r in recs:
        for k in ("time", "client", "method", "target", "protocol", "status", "bytes_in",
                  "bytes_out", "upstream", "upstream_time", "total_time"):
            assert k in r, "json access log missing %s: %r" % (k, r)
        assert r["client"].startswith("127.0.0.1:")
        assert r["protocol"] == "HTTP/1.1"
        assert isinstance(r["status"], int)
        assert r["upstream"] == upstream.authority
        assert re.match(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}", r["time"])
        assert r["total_time"] >= 0 and r["upstream_time"] >= 0
    assert [(r["method"], r["target"], r["status"]) for r in recs] == [
        ("GET", "/size/123?q=1", 200), ("POST", "/echo", 200), ("GET", "/status/404", 404),
        ("PURGE", "/cache/item", 200)]
    assert (recs[0]["bytes_in"], recs[0]["bytes_out"]) == (0, 123)
    assert (recs[1]["bytes_in"], recs[1]["bytes_out"]) == (5, 5)


def test_access_log_for_502_and_error(ferry_factory):
    f = ferry_factory("http://127.0.0.1:%d" % free_port(), "--access-log-format", "json")
    (r,) = _do(f.port, [("GET", "/down", None, [])])
    assert r.status == 502
    assert f.stop() == 0
    recs = [json.loads(l) for l in f.access_log_lines()]
    assert len(recs) == 1
    assert recs[0]["status"] == 502 and recs[0]["target"] == "/down"
    assert recs[0]["bytes_out"] == len(r.body), \
        "bytes_out must count the error body ferry sent (%d bytes)" % len(r.body)


def test_access_log_combined_bytes_for_generated_error(ferry_factory):
    f = ferry_factory("http://127.0.0.1:%d" % free_port())
    (r,) = _do(f.port, [("GET", "/down", None, [])])
    assert f.stop() == 0
    m = COMBINED_RE.match(f.access_log_lines()[0])
    assert m and m.group("status") == "502"
    assert int(m.group("bytes")) == len(r.body)


def test_access_log_to_file(ferry_factory, upstream):
    path = os.path.join(tempfile.mkdtemp(prefix="ferry-al-"), "access.log")
    f = ferry_factory(upstream.url, "--access-log", path)
    _do(f.port, REQS[:2])
    assert f.stop() == 0
    with open(path) as fh:
        lines = [l for l in fh.read().splitlines() if l.strip()]
    assert len(lines) == 2
    assert all(COMBINED_RE.match(l) for l in lines), lines
    assert f.access_log_lines() == [], "with --access-log PATH nothing goes to stdout"


def test_access_log_off(ferry_factory, upstream):
    f = ferry_factory(upstream.url, "--access-log", "off")
    _do(f.port, REQS[:2])
    assert f.stop() == 0
    assert f.access_log_lines() == []


def test_access_log_flushed_while_running(ferry_factory, upstream):
    """Lines appear within ~1 s even without exit (bounded poll)."""
    f = ferry_factory(upstream.url)
    _do(f.port, REQS[:1])
    lines = f.wait_access_log(1, timeout=5)
    assert COMBINED_RE.match(lines[0])


def test_access_log_one_line_per_pipelined_exchange(ferry_factory, upstream):
    f = ferry_factory(upstream.url, "--access-log-format", "json", workers=2)
    s = connect(f.port)
    try:
        s.sendall(b"".join(simple_request("GET", "/p%d" % i) for i in range(5)))
        rd = ResponseReader(s)
        for _ in range(5):
            rd.read_final()
    finally:
        s.close()
    assert f.stop() == 0
    recs = [json.loads(l) for l in f.access_log_lines()]
    assert [r["target"] for r in recs] == ["/p%d" % i for i in range(5)]
