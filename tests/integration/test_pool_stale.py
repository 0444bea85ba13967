"""Pooled upstream connections that the upstream has closed: detected while idle, and when the
close races with a new request, retried on a fresh connection only if the upstream cannot have
acted on the request (idempotent method, no body taken from the client, nothing answered)."""

import threading

from harness import ResponseReader, SockReader, connect, simple_request, wait_for


def _get(port, method="GET", target="/x", body=None):
    s = connect(port, timeout=10)
    try:
        s.sendall(simple_request(method, target, body=body))
        return ResponseReader(s, timeout=10).read_final()
    finally:
        s.close()


def test_idle_close_detected_and_new_connection_used(ferry_factory, raw_upstream):
    closed = threading.Event()

    def handler(c):
        rd = SockReader(c)
        try:
            rd.read_request()
        except (EOFError, OSError):
            return
        if raw_upstream.conn_count == 1:
            # First connection: answer keep-alive, then close it while it idles in the pool.
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            c.close()
            closed.set()
            return
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nnew")

    raw_upstream.handler = handler
    f = ferry_factory(raw_upstream.url)
    r1 = _get(f.port)
    assert r1.status == 200 and r1.body == b"ok"
    assert closed.wait(5)
    r2 = _get(f.port)
    assert r2.status == 200 and r2.body == b"new"
    assert raw_upstream.conn_count == 2


def _racing_upstream(raw_upstream, seen):
    """Answers the first request keep-alive; on that connection the next request is read and
    the connection closed without an answer (the upstream's keep-alive timer fired). Fresh
    connections answer normally."""

    def handler(c):
        rd = SockReader(c)
        first_conn = raw_upstream.conn_count == 1
        n = 0
        while True:
            try:
                m, t, h, b = rd.read_request()
            except (EOFError, OSError):
                return
            seen.append((first_conn, m, t))
            n += 1
            if first_conn and n == 2:
                return  # close without answering
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    raw_upstream.handler = handler


def test_race_on_reused_connection_retried_for_idempotent_request(ferry_factory, raw_upstream):
    seen = []
    _racing_upstream(raw_upstream, seen)
    f = ferry_factory(raw_upstream.url)
    assert _get(f.port).status == 200
    r = _get(f.port, "GET", "/again")
    assert r.status == 200 and r.body == b"ok"
    # Sent once on the stale connection, once on a fresh one.
    assert [(fc, t) for fc, m, t in seen if t == "/again"] == [(True, "/again"), (False, "/again")]
    assert raw_upstream.conn_count == 2


def test_race_on_reused_connection_not_retried_for_post(ferry_factory, raw_upstream):
    seen = []
    _racing_upstream(raw_upstream, seen)
    f = ferry_factory(raw_upstream.url)
    assert _get(f.port).status == 200
    r = _get(f.port, "POST", "/pay", body=b"amount=1")
    assert r.status == 502
    # The upstream may have acted on it: never sent a second time.
    assert [t for fc, m, t in seen if t == "/pay"] == ["/pay"]
    wait_for(lambda: "502" in "".join(f.access_log_lines()) or None, 5)
