"""Active health checks (upstreams: health:): failover when a server's check fails (a bad status,
a timeout, a refused connection, a malformed answer), recovery after `rise` good checks, 503 +
Retry-After when every server is down, and the exact request the checker sends. Passive
ejection is off (max-fails: 0) so only the active checks take servers out. Every wait is on a
log line or a recorded request, never on time; the status-line parser and stop with probes in
flight are unit-tested (tests/unit/test_health.c)."""

import re
import socket
import threading

from harness import (RawUpstream, ResponseReader, SockReader, connect, free_port,
                     named_upstream, simple_request, wait_for, write_config)

WAIT = 10.0  # bound for "the checker should have acted by now" (ASan builds are slow)


def get(port, path="/", host="app.test"):
    s = connect(port)
    try:
        s.sendall(simple_request("GET", path, host=host))
        return ResponseReader(s).read_final()
    finally:
        s.close()


def who(r):
    return r.body.decode().split(" ", 1)[0]


def config(servers, health="{ path: /health, interval: 200ms, timeout: 100ms, rise: 2, fall: 2 }",
           extra=""):
    return """
listeners:
  - listen: 127.0.0.1:PORT
    routes: [ { upstream: app } ]
upstreams:
  app:
    servers: [ %s ]
    health: %s
    max-fails: 0
%s""" % (", ".join('"%s"' % s for s in servers), health, extra)


def start(factory, text, workers=1, allowed=()):
    port = free_port()
    path = write_config(text.replace("PORT", str(port)))
    return factory(None, "-c", path, listen=None, workers=workers, allowed_errors=list(allowed))


class Health:
    """A /health route on an UpstreamServer answering .status (settable at any time); records
    how many checks it answered."""

    def __init__(self, upstream, status=200):
        self.status = status
        self.count = 0
        self.cond = threading.Condition()
        upstream.route("/health", self._answer)

    def _answer(self, h, req):
        with self.cond:
            status = self.status
        try:
            h.send_simple(status, b"health\n")
        except OSError:
            pass  # ferry gave up on this check (a timeout): nothing to answer
        with self.cond:
            self.count += 1
            self.cond.notify_all()

    def set(self, status):
        with self.cond:
            self.status = status

    def wait_checks(self, n):
        """At least n more checks answered from now."""
        with self.cond:
            target = self.count + n
        wait_for(lambda: self.count >= target, WAIT, cond=self.cond,
                 what="%d health checks" % target)


def down_line(url):
    return re.compile(r"upstream group app: server %s is down \(health check /health: (.*); "
                      r"(\d+) in a row\)" % re.escape(url))


def up_line(url):
    return re.compile(r"upstream group app: server %s is up again \(health check passed (\d+) "
                      r"times?\)" % re.escape(url))


def wait_log(f, rx, count=1):
    """The count-th match of rx in ferry's log (bounded)."""
    return wait_for(lambda: (lambda m: m[count - 1] if len(m) >= count else None)(
        list(rx.finditer(f.stderr_text()))), WAIT,
        what=lambda: "log line %r (x%d); stderr:\n%s" % (rx.pattern, count, f.stderr_text()))


def spread(f, n=20):
    return [who(get(f.port, "/x")) for _ in range(n)]


def test_failing_check_takes_the_server_out_and_passing_checks_bring_it_back(ferry_factory):
    a, b = named_upstream("a"), named_upstream("b")
    ha, hb = Health(a), Health(b)
    try:
        # two workers: the down state set by the checker (worker 0) is seen by both
        f = start(ferry_factory, config([a.url, b.url]), workers=2)
        ha.wait_checks(1)
        hb.wait_checks(1)
        assert sorted(set(spread(f))) == ["a", "b"]

        ha.set(500)
        m = wait_log(f, down_line(a.url))
        assert m.group(1) == "status 500" and m.group(2) == "2"
        assert spread(f) == ["b"] * 20
        # later failures do not log again: one line per transition
        ha.wait_checks(3)
        assert len(down_line(a.url).findall(f.stderr_text())) == 1
        assert spread(f) == ["b"] * 20

        ha.set(200)
        m = wait_log(f, up_line(a.url))
        assert m.group(1) == "2"
        assert sorted(set(spread(f))) == ["a", "b"]
        assert not down_line(b.url).search(f.stderr_text())
        assert not a.bad and not b.bad
    finally:
        a.stop()
        b.stop()


def test_one_good_check_is_not_enough_to_rise(ferry_factory):
    """rise: 3 needs three passes in a row; a failure in between starts the count again."""
    a, b = named_upstream("a"), named_upstream("b")
    ha, _ = Health(a, 500), Health(b)
    try:
        f = start(ferry_factory, config(
            [a.url, b.url], "{ path: /health, interval: 200ms, timeout: 100ms, rise: 3, fall: 1 }"))
        wait_log(f, down_line(a.url))
        ha.set(200)
        ha.wait_checks(2)
        ha.set(500)
        ha.wait_checks(1)
        assert not up_line(a.url).search(f.stderr_text())
        assert spread(f, 10) == ["b"] * 10
        ha.set(200)
        m = wait_log(f, up_line(a.url))
        assert m.group(1) == "3"
    finally:
        a.stop()
        b.stop()


def test_check_that_does_not_answer_within_timeout_is_a_failure(ferry_factory):
    a, b = named_upstream("a"), named_upstream("b")
    closed = []
    cond = threading.Condition()

    def never_answer(h, req):
        # no answer: ferry must give up at the timeout and close this check's connection
        h.connection.settimeout(WAIT)
        try:
            eof = h.connection.recv(1) == b""
        except OSError:
            eof = False
        with cond:
            closed.append(eof)
            cond.notify_all()

    a.route("/health", never_answer)
    Health(b)
    try:
        f = start(ferry_factory, config([a.url, b.url]))
        m = wait_log(f, down_line(a.url))
        assert m.group(1) == "timed out after 100 ms"
        assert spread(f) == ["b"] * 20
        wait_for(lambda: len(closed) >= 2, WAIT, cond=cond, what="two timed-out checks closed")
        assert closed[:2] == [True, True]
    finally:
        a.stop()
        b.stop()


def test_refused_connection_is_a_failure(ferry_factory):
    a, b = named_upstream("a"), named_upstream("b")
    ha, _ = Health(a), Health(b)
    try:
        f = start(ferry_factory, config([a.url, b.url]))
        ha.wait_checks(1)
        a.stop()  # the port is closed from now on
        m = wait_log(f, down_line(a.url))
        assert m.group(1) == "connection refused"
        assert spread(f) == ["b"] * 20
    finally:
        a.stop()
        b.stop()


def test_server_down_from_the_start_is_taken_out(ferry_factory):
    dead = "http://127.0.0.1:%d" % free_port()
    b = named_upstream("b")
    Health(b)
    try:
        f = start(ferry_factory, config([dead, b.url]))
        wait_log(f, down_line(dead))
        assert spread(f) == ["b"] * 20
    finally:
        b.stop()


def test_status_outside_expect_is_a_failure(ferry_factory):
    """expect: [204] makes even a 200 a failure; 204 passes."""
    a, b = named_upstream("a"), named_upstream("b")
    ha, _ = Health(a, 200), Health(b, 204)
    try:
        f = start(ferry_factory, config(
            [a.url, b.url],
            "{ path: /health, interval: 200ms, timeout: 100ms, rise: 1, fall: 2, expect: [204] }"))
        m = wait_log(f, down_line(a.url))
        assert m.group(1) == "status 200"
        assert spread(f, 10) == ["b"] * 10
        ha.set(204)
        wait_log(f, up_line(a.url))
        assert not down_line(b.url).search(f.stderr_text())
    finally:
        a.stop()
        b.stop()


def test_malformed_answer_is_a_failure(ferry_factory):
    def not_http(conn):
        SockReader(conn).rxreq()
        conn.sendall(b"HTTP/1.1 2OO OK\r\nContent-Length: 0\r\n\r\n")
        conn.close()

    raw = RawUpstream(not_http).start()
    b = named_upstream("b")
    Health(b)
    try:
        f = start(ferry_factory, config([raw.url, b.url]))
        m = wait_log(f, down_line(raw.url))
        assert m.group(1) == "malformed status line"
        assert spread(f, 10) == ["b"] * 10
    finally:
        raw.stop()
        b.stop()


def test_every_server_down_gives_503_with_retry_after(ferry_factory):
    a, b = named_upstream("a"), named_upstream("b")
    ha, hb = Health(a, 500), Health(b, 503)
    try:
        f = start(ferry_factory, config([a.url, b.url]))
        wait_log(f, down_line(a.url))
        wait_log(f, down_line(b.url))
        before = len(a.requests) + len(b.requests)
        r = get(f.port, "/x")
        assert r.status == 503
        assert r.header("Retry-After")
        # the 503 came from ferry: no client request reached a server
        assert all(q.path == "/health" for q in (a.requests + b.requests)[before:])
        ha.set(200)
        wait_log(f, up_line(a.url))
        assert spread(f, 5) == ["a"] * 5
    finally:
        a.stop()
        b.stop()


def test_check_sends_exactly_the_documented_request(ferry_factory):
    """One connection per check carrying exactly GET path, Host (the server's host:port),
    User-Agent and Connection: close, and nothing after it."""
    seen = []
    lock = threading.Condition()

    def answer(conn):
        data = b""
        while b"\r\n\r\n" not in data:
            d = conn.recv(4096)
            if not d:
                break
            data += d
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n")
        conn.shutdown(socket.SHUT_WR)
        # ferry closes too: the rest of the connection is empty
        conn.settimeout(WAIT)
        rest = b""
        while True:
            d = conn.recv(4096)
            if not d:
                break
            rest += d
        conn.close()
        with lock:
            seen.append((data, rest))
            lock.notify_all()

    raw = RawUpstream(answer).start()
    try:
        start(ferry_factory, config(
            [raw.url], "{ path: /ready?probe=1, interval: 200ms, timeout: 150ms }"))
        wait_for(lambda: len(seen) >= 3, WAIT, cond=lock, what="3 health checks")
        want = (b"GET /ready?probe=1 HTTP/1.1\r\nHost: %s\r\nUser-Agent: ferry-health-check\r\n"
                b"Connection: close\r\n\r\n" % raw.authority.encode())
        for data, rest in seen[:3]:
            assert data == want
            assert rest == b""
        assert raw.conn_count >= 3
        assert not raw.errors
    finally:
        raw.stop()


def test_group_without_health_key_is_not_checked(ferry_factory):
    """Only groups with health: are checked: while the checked group's server gets three
    checks, the other group's server (which would have had its first by then) gets none."""
    a, other = named_upstream("a"), named_upstream("other")
    ha = Health(a)
    ho = Health(other)
    try:
        f = start(ferry_factory, """
listeners:
  - listen: 127.0.0.1:PORT
    routes: [ { match: { path-prefix: /other/ }, upstream: plain }, { upstream: app } ]
upstreams:
  app:
    servers: [ "%s" ]
    health: { path: /health, interval: 200ms, timeout: 100ms }
  plain:
    servers: [ "%s" ]
""" % (a.url, other.url))
        ha.wait_checks(3)
        assert ho.count == 0
        assert who(get(f.port, "/other/x")) == "other"
        assert all(q.path == "/other/x" for q in other.requests)
    finally:
        a.stop()
        other.stop()
