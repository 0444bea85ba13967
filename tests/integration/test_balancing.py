"""Upstream groups end to end (issue 6): balancing over real servers, retries on another server
(never a POST the upstream may have processed), the retry budget, backup servers, passive
ejection and return, sticky cookies, and 503 + Retry-After when no server is left. The
algorithms' exact distributions are unit-tested (tests/unit/test_lb.c); these check that ferry
uses them as configured."""

import collections
import socket
import threading

import pytest

from harness import (RawUpstream, ResponseReader, SockReader, connect, free_port,
                     named_upstream, simple_request, wait_for, write_config)


def get(port, path="/", method="GET", headers=(), body=None, host="app.test"):
    s = connect(port)
    try:
        s.sendall(simple_request(method, path, host=host, headers=headers, body=body))
        return ResponseReader(s).read_final()
    finally:
        s.close()


def who(r):
    return r.body.decode().split(" ", 1)[0]


# One listener whose only route goes to group `app`; a test appends the group's keys.
APP = """
listeners:
  - listen: 127.0.0.1:PORT
    routes: [ { upstream: app } ]
upstreams:
  app:
"""


def start(factory, text, allowed=()):
    port = free_port()
    path = write_config(text.replace("PORT", str(port)))
    f = factory(None, "-c", path, listen=None, allowed_errors=list(allowed))
    return f


def test_weighted_round_robin_follows_the_weights(ferry_factory):
    a, b, c = named_upstream("a"), named_upstream("b"), named_upstream("c")
    try:
        f = start(ferry_factory, APP + """    servers:
      - { url: %s, weight: 3 }
      - { url: %s, weight: 2 }
      - %s
""" % (a.url, b.url, c.url))
        counts = collections.Counter(who(get(f.port)) for _ in range(60))
        assert counts == {"a": 30, "b": 20, "c": 10}, counts
    finally:
        for u in (a, b, c):
            u.stop()


def test_refused_connection_is_retried_on_another_server(ferry_factory):
    a = named_upstream("a")
    dead = free_port()
    try:
        f = start(ferry_factory, APP + """    servers: [ "http://127.0.0.1:%d", "%s" ]
    retries: 1
    max-fails: 0
""" % (dead, a.url))
        for _ in range(10):
            r = get(f.port, "/x", method="POST", body=b"payload")
            assert r.status == 200 and who(r) == "a"   # a refused connect saw nothing: retry
        assert len(a.requests) == 10
    finally:
        a.stop()


def test_post_the_upstream_read_is_never_sent_twice(ferry_factory):
    """The first server reads the whole request, then dies: a POST is not retried (502), a GET
    is retried on the other server."""
    got = collections.Counter()
    lock = threading.Lock()

    def die_after_reading(conn):
        rd = SockReader(conn)
        req = rd.rxreq()
        with lock:
            got[req.method] += 1
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        conn.close()

    raw = RawUpstream(die_after_reading).start()
    b = named_upstream("b")
    try:
        f = start(ferry_factory, APP + """    balance: round-robin
    servers: [ "%s", "%s" ]
    retries: 1
    max-fails: 0
""" % (raw.url, b.url), allowed=[r"upstream failed"])
        posts = [get(f.port, "/p", method="POST", body=b"once") for _ in range(4)]
        gets = [get(f.port, "/g") for _ in range(4)]
        # round-robin alternates: half of each went to the dying server first
        assert sorted(r.status for r in posts) == [200, 200, 502, 502]
        assert all(r.status == 200 for r in gets)
        assert got["POST"] == 2          # each POST reached the dying server at most once
        assert sum(1 for q in b.requests if q.method == "POST") == 2
    finally:
        raw.stop()
        b.stop()


def test_backup_only_when_primaries_are_down(ferry_factory):
    a, bk = named_upstream("a"), named_upstream("backup")
    try:
        f = start(ferry_factory, APP + """    servers:
      - %s
      - { url: %s, backup: true }
    max-fails: 1
    fail-timeout: 30s
""" % (a.url, bk.url), allowed=[r"upstream group app"])
        assert {who(get(f.port)) for _ in range(5)} == {"a"}
        a.stop()
        # the refused connect ejects a and goes to the backup
        assert who(get(f.port)) == "backup"
        assert {who(get(f.port)) for _ in range(5)} == {"backup"}
        wait_for(lambda: "upstream group app" in f.stderr_text(), 5, what="ejection logged")
    finally:
        bk.stop()


def test_all_servers_down_is_503_with_retry_after(ferry_factory):
    f = start(ferry_factory, APP + """    servers: [ "http://127.0.0.1:%d", "http://127.0.0.1:%d" ]
    retries: 1
    max-fails: 1
    fail-timeout: 60s
""" % (free_port(), free_port()), allowed=[r"upstream group app", r"cannot connect",
                                           r"no server"])
    r = get(f.port)
    assert r.status == 502                     # both refused: nothing answered
    r = get(f.port)
    assert r.status == 503                     # both ejected now: none left to try
    assert r.header("Retry-After")


def test_passive_ejection_and_return(ferry_factory):
    """A refused server is ejected (logged), its share goes to the other one without a client
    error, and once the ejection expires it is picked again."""
    a, b = named_upstream("a"), named_upstream("b")
    port_a = a.port
    a2 = None
    try:
        f = start(ferry_factory, APP + """    servers: [ "%s", "%s" ]
    max-fails: 1
    fail-timeout: 1s
""" % (a.url, b.url), allowed=[r"upstream group app"])
        a.stop()
        assert [get(f.port).status for _ in range(6)] == [200] * 6
        wait_for(lambda: "upstream group app" in f.stderr_text(), 5, what="ejection logged")
        a2 = named_upstream("a", port_a)
        wait_for(lambda: who(get(f.port)) == "a", 10, interval=0.1, what="a back in rotation")
    finally:
        b.stop()
        if a2:
            a2.stop()


def test_sticky_cookie_keeps_a_client_on_one_server(ferry_factory):
    a, b = named_upstream("a"), named_upstream("b")
    try:
        f = start(ferry_factory, APP + """    balance: { sticky: { cookie: srv } }
    servers: [ "%s", "%s" ]
""" % (a.url, b.url))
        r = get(f.port)
        cookie = r.header("Set-Cookie")
        assert cookie and cookie.startswith("srv=") and "HttpOnly" in cookie
        first = who(r)
        value = cookie.split(";", 1)[0]
        for _ in range(6):
            r = get(f.port, headers=(("Cookie", value),))
            assert who(r) == first
            assert r.header("Set-Cookie") is None   # already on the right server
    finally:
        a.stop()
        b.stop()


def test_hash_on_header_is_stable(ferry_factory):
    ups = [named_upstream("s%d" % i) for i in range(4)]
    try:
        f = start(ferry_factory, APP + """    balance: { hash: "header:X-User" }
    servers: [ %s ]
""" % ", ".join('"%s"' % u.url for u in ups))
        seen = {}
        for user in ("alice", "bob", "carol", "dave", "erin", "frank"):
            names = {who(get(f.port, headers=(("X-User", user),))) for _ in range(3)}
            assert len(names) == 1, (user, names)
            seen[user] = names.pop()
        assert len(set(seen.values())) >= 2    # keys spread over servers
    finally:
        for u in ups:
            u.stop()


def test_least_conn_avoids_a_busy_server(ferry_factory):
    """Server a holds requests open; least-conn sends the next ones to b."""
    release = threading.Event()
    held = []

    def slow(h, req):
        held.append(req)
        release.wait(10)
        h.send_simple(200, b"a slow")

    from harness import UpstreamServer
    a = UpstreamServer(default_route=slow).start()
    b = named_upstream("b")
    try:
        f = start(ferry_factory, APP + """    balance: least-conn
    servers: [ "%s", "%s" ]
""" % (a.url, b.url))
        socks = []
        for _ in range(2):
            s = connect(f.port)
            s.sendall(simple_request("GET", "/hold", host="app.test"))
            socks.append(s)
        wait_for(lambda: len(held) + len(b.requests) >= 2, 5, what="two requests upstream")
        assert len(held) == 1
        names = [who(get(f.port)) for _ in range(5)]
        assert names == ["b"] * 5
        release.set()
        for s in socks:
            ResponseReader(s).read_final()
            s.close()
    finally:
        release.set()
        a.stop()
        b.stop()


def test_max_conns_queue_then_503(ferry_factory):
    """One server with max-conns 1: a second request waits in the queue and is served once the
    first ends; a third finds the queue (max-queue 1) full: 503; a waiting request gets 503 when
    queue-timeout passes."""
    release = threading.Event()
    entered = []

    def hold(h, req):
        entered.append(req.path)
        if req.path == "/hold":
            release.wait(10)
        h.send_simple(200, ("a " + req.path).encode())

    from harness import UpstreamServer
    a = UpstreamServer(default_route=hold).start()
    try:
        f = start(ferry_factory, APP + """    servers: [ { url: "%s", max-conns: 1 } ]
    max-queue: 1
    queue-timeout: 2s
""" % a.url, allowed=[r"max-conns"])
        first = connect(f.port)
        first.sendall(simple_request("GET", "/hold", host="app.test"))
        wait_for(lambda: entered == ["/hold"], 5, what="the first request upstream")
        second = connect(f.port)
        second.sendall(simple_request("GET", "/second", host="app.test"))
        wait_for(lambda: "waiting (1 in this worker's queue)" in f.stderr_text(), 5,
                 what="the second request queued")
        # the queue holds one: a third is refused at once
        assert get(f.port, "/third").status == 503
        assert entered == ["/hold"]          # nothing passed max-conns
        release.set()
        assert ResponseReader(first).read_final().body == b"a /hold"
        r = ResponseReader(second).read_final()
        assert r.status == 200 and r.body == b"a /second"
        first.close()
        second.close()
    finally:
        release.set()
        a.stop()


def test_queue_timeout_is_503_with_retry_after(ferry_factory):
    release = threading.Event()

    def hold(h, req):
        release.wait(10)
        h.send_simple(200, b"a")

    from harness import UpstreamServer
    a = UpstreamServer(default_route=hold).start()
    try:
        f = start(ferry_factory, APP + """    servers: [ { url: "%s", max-conns: 1 } ]
    queue-timeout: 300ms
""" % a.url, allowed=[r"max-conns"])
        first = connect(f.port)
        first.sendall(simple_request("GET", "/hold", host="app.test"))
        wait_for(lambda: a.conn_count >= 1, 5, what="first request upstream")
        r = get(f.port, "/waits")
        assert r.status == 503 and r.header("Retry-After")
        assert "waited 300 ms" in f.stderr_text()
        release.set()
        ResponseReader(first).read_final()
        first.close()
    finally:
        release.set()
        a.stop()


def test_retry_budget_caps_retries_during_an_outage(ferry_factory):
    """Half the servers refuse and passive ejection is off: each request that picked the dead
    one may retry on the live one, but only within the worker's budget (a fifth of its recent
    requests, at least 10): the rest get 502 instead of doubling the load."""
    a = named_upstream("a")
    try:
        f = start(ferry_factory, APP + """    servers: [ "http://127.0.0.1:%d", "%s" ]
    retries: 1
    max-fails: 0
""" % (free_port(), a.url), allowed=[r"cannot connect"])
        s = connect(f.port)
        rd = ResponseReader(s)
        statuses = []
        for _ in range(200):
            s.sendall(simple_request("GET", "/x", host="app.test"))
            r = rd.read_final()
            statuses.append(r.status)
            if r.header("Connection") == "close":
                s.close()
                s = connect(f.port)
                rd = ResponseReader(s)
        s.close()
        retried = f.stderr_text().count("retrying on another server")
        ok, bad = statuses.count(200), statuses.count(502)
        assert ok + bad == 200
        assert ok == 100 + retried            # every retry that was allowed succeeded
        assert 10 <= retried <= 200 // 5 + 10, retried
        assert bad == 100 - retried and bad >= 40
    finally:
        a.stop()
