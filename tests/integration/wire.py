"""Low-level wire helpers for the strict-parsing / limits / upstream-fault tests.

Everything here works on raw sockets with exact bytes and bounded waits.
No sleeping for synchronisation: every wait is a select()/recv() with a deadline.
"""

import re
import select
import socket
import time

# Generous bound for "ferry should have answered by now" (ASan builds are slow).
RESPONSE_TIMEOUT = 5.0
# Bound for "ferry should close the connection after an error response".
CLOSE_TIMEOUT = 3.0
# An error response body is expected to be small.
MAX_ERROR_BODY = 1024


class ConnectionClosedEarly(AssertionError):
    """The peer closed (FIN or RST) before a complete response arrived."""

    def __init__(self, msg, received=b""):
        super().__init__("%s; received so far: %r" % (msg, bytes(received[:600])))
        self.received = bytes(received)


class Response:
    def __init__(self, version, status, reason, headers, body, raw, complete=True):
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers  # list of (name, value) as str, name as received
        self.body = body
        self.raw = raw  # all raw bytes of this response (head + body framing)
        self.complete = complete

    def get(self, name, default=None):
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return default

    def get_all(self, name):
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]

    def has(self, name):
        return bool(self.get_all(name))

    def __repr__(self):
        return "<Response %s %r headers=%r body=%r>" % (
            self.status, self.reason, self.headers, self.body[:200])


class Conn:
    """A raw client connection with a receive buffer and deadline-bound reads."""

    def __init__(self, port, host="127.0.0.1", timeout=RESPONSE_TIMEOUT):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.eof = False
        self.reset = False
        self.timeout = timeout

    # -- plumbing ---------------------------------------------------------
    def send(self, data):
        """Send bytes; returns False if the peer already closed/reset."""
        try:
            self.sock.sendall(data)
            return True
        except (BrokenPipeError, ConnectionResetError):
            return False

    def _fill(self, deadline):
        """Read more bytes into buf. Returns False on EOF/RST, raises on timeout."""
        if self.eof:
            return False
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("timed out waiting for data; buffered: %r"
                               % bytes(self.buf[:600]))
        r, _, _ = select.select([self.sock], [], [], remaining)
        if not r:
            raise TimeoutError("timed out waiting for data; buffered: %r"
                               % bytes(self.buf[:600]))
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError:
            self.eof = True
            self.reset = True
            return False
        if not chunk:
            self.eof = True
            return False
        self.buf += chunk
        return True

    def _read_line(self, deadline, limit=1 << 20):
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                line = bytes(self.buf[:i + 1])
                del self.buf[:i + 1]
                return line
            if len(self.buf) > limit:
                raise AssertionError("line too long from peer: %r" % bytes(self.buf[:200]))
            if not self._fill(deadline):
                raise ConnectionClosedEarly("connection closed while reading a line", self.buf)

    def _read_exact(self, n, deadline, sofar):
        while len(self.buf) < n:
            if not self._fill(deadline):
                return None
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    # -- responses --------------------------------------------------------
    def read_response(self, method="GET", timeout=None, allow_incomplete=False,
                      skip_interim=True):
        """Read one response. 1xx interim responses are skipped unless
        skip_interim=False, in which case they are returned one at a time.

        With allow_incomplete=True, a body cut short by connection close is
        returned with complete=False instead of raising.
        """
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            resp = self._read_one(method, deadline, allow_incomplete)
            if skip_interim and 100 <= resp.status < 200 and resp.status != 101:
                continue
            return resp

    def read_interim_and_final(self, method="GET", timeout=None):
        """Return (list_of_interim_responses, final_response)."""
        deadline = time.monotonic() + (timeout or self.timeout)
        interim = []
        while True:
            resp = self._read_one(method, deadline, False)
            if 100 <= resp.status < 200 and resp.status != 101:
                interim.append(resp)
                continue
            return interim, resp

    def _read_one(self, method, deadline, allow_incomplete):
        raw = bytearray()
        if not self.buf and self.eof:
            raise ConnectionClosedEarly("connection closed before any response bytes")
        try:
            status_line = self._read_line(deadline)
        except ConnectionClosedEarly as e:
            raise ConnectionClosedEarly(
                "connection closed before a complete status line"
                + (" (reset)" if self.reset else ""), e.received)
        raw += status_line
        m = re.match(rb"^(HTTP/\d\.\d) (\d{3})(?: (.*))?\r\n$", status_line)
        if not m:
            raise AssertionError("malformed status line from ferry: %r" % status_line)
        version = m.group(1).decode()
        status = int(m.group(2))
        reason = (m.group(3) or b"").decode("latin-1")
        headers = []
        while True:
            line = self._read_line(deadline)
            raw += line
            if line == b"\r\n":
                break
            if not line.endswith(b"\r\n"):
                raise AssertionError("header line without CRLF from ferry: %r" % line)
            if line[:1] in (b" ", b"\t"):
                raise AssertionError("obs-fold in ferry output: %r" % line)
            name, sep, value = line[:-2].partition(b":")
            if not sep or not re.match(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$", name):
                raise AssertionError("malformed header line from ferry: %r" % line)
            headers.append((name.decode("latin-1"), value.strip(b" \t").decode("latin-1")))
        resp = Response(version, status, reason, headers, b"", bytes(raw))
        lower = [(k.lower(), v) for k, v in headers]
        te = [v for k, v in lower if k == "transfer-encoding"]
        cl = [v for k, v in lower if k == "content-length"]

        if method == "HEAD" or 100 <= status < 200 or status in (204, 304):
            return resp
        if te:
            assert not cl, "ferry sent both Transfer-Encoding and Content-Length: %r" % headers
            assert [t.strip().lower() for t in ",".join(te).split(",")] == ["chunked"], \
                "unexpected Transfer-Encoding from ferry: %r" % te
            body = bytearray()
            while True:
                try:
                    line = self._read_line(deadline)
                except ConnectionClosedEarly:
                    if allow_incomplete:
                        resp.body, resp.complete = bytes(body), False
                        return resp
                    raise ConnectionClosedEarly("closed inside chunked body", raw)
                raw += line
                m = re.match(rb"^([0-9A-Fa-f]+)(;[^\r\n]*)?\r\n$", line)
                if not m:
                    if allow_incomplete:
                        resp.body, resp.complete = bytes(body), False
                        resp.bad_framing = line
                        return resp
                    raise AssertionError("bad chunk line from ferry: %r" % line)
                size = int(m.group(1), 16)
                if size == 0:
                    # trailers until empty line
                    while True:
                        try:
                            line = self._read_line(deadline)
                        except ConnectionClosedEarly:
                            if allow_incomplete:
                                resp.body, resp.complete = bytes(body), False
                                return resp
                            raise
                        raw += line
                        if line == b"\r\n":
                            break
                    resp.body, resp.raw = bytes(body), bytes(raw)
                    return resp
                data = self._read_exact(size + 2, deadline, raw)
                if data is None:
                    body += self.buf
                    if allow_incomplete:
                        resp.body, resp.complete = bytes(body), False
                        return resp
                    raise ConnectionClosedEarly("closed inside chunk data", raw + self.buf)
                raw += data
                if data[-2:] != b"\r\n":
                    raise AssertionError("chunk data not followed by CRLF from ferry: %r" % data[-10:])
                body += data[:-2]
        if cl:
            assert len(cl) == 1, "multiple Content-Length from ferry: %r" % cl
            assert re.match(r"^\d+$", cl[0]), "bad Content-Length from ferry: %r" % cl
            n = int(cl[0])
            data = self._read_exact(n, deadline, raw)
            if data is None:
                got = bytes(self.buf)
                self.buf.clear()
                if allow_incomplete:
                    resp.body, resp.complete = got, False
                    return resp
                raise ConnectionClosedEarly("closed after %d of %d body bytes" % (len(got), n), raw + got)
            resp.body = data
            resp.raw = bytes(raw + data)
            return resp
        # close-delimited
        while self._fill(deadline):
            pass
        resp.body = bytes(self.buf)
        self.buf.clear()
        resp.raw = bytes(raw) + resp.body
        resp.close_delimited = True
        return resp

    def wait_closed(self, timeout=CLOSE_TIMEOUT):
        """Wait (bounded) for the peer to close. Returns (closed, extra_bytes)."""
        deadline = time.monotonic() + timeout
        extra = bytes(self.buf)
        self.buf.clear()
        while not self.eof:
            try:
                if not self._fill(deadline):
                    break
            except TimeoutError:
                return False, extra + bytes(self.buf)
            extra += bytes(self.buf)
            self.buf.clear()
        return True, extra

    def assert_closed(self, timeout=CLOSE_TIMEOUT, what="ferry"):
        closed, extra = self.wait_closed(timeout)
        assert not extra, "%s sent unexpected extra bytes after the response: %r" % (what, extra[:300])
        assert closed, "%s did not close the connection within %.1fs" % (what, timeout)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


LEAK_PATTERNS = [
    rb"/work/", rb"/tmp/", rb"/home/", rb"/usr/", rb"src/", rb"\.c:\d", rb"\.c\b", rb"\.h\b",
    rb"errno", rb"0x[0-9a-fA-F]{6,}", rb"AddressSanitizer", rb"\bfd\s*=?\s*\d",
]


def assert_error_response(resp, status, upstream_port=None, extra_forbidden=()):
    """Check the common shape of a ferry-generated error response."""
    assert resp.status == status, "expected %d, got %r" % (status, resp)
    cl = resp.get_all("Content-Length")
    assert len(cl) == 1, "error response must carry exactly one Content-Length: %r" % resp.headers
    assert not resp.has("Transfer-Encoding"), "error response must not be chunked: %r" % resp.headers
    assert int(cl[0]) == len(resp.body)
    assert 0 < len(resp.body) <= MAX_ERROR_BODY, "error body should be small and non-empty: %r" % resp.body
    ctype = resp.get("Content-Type", "")
    assert ctype.lower().startswith("text/plain"), "error body should be text/plain, got %r" % ctype
    body = resp.body
    for pat in LEAK_PATTERNS:
        assert not re.search(pat, body), "error body leaks internal details (%r): %r" % (pat, body)
    assert b"127.0.0.1" not in body and b"localhost" not in body.lower(), \
        "error body leaks an address: %r" % body
    if upstream_port is not None:
        assert str(upstream_port).encode() not in body, "error body leaks upstream port: %r" % body
    for s in extra_forbidden:
        assert s not in body, "error body leaks %r: %r" % (s, body)


def exchange(port, data, method="GET", timeout=RESPONSE_TIMEOUT):
    """Open a connection, send data, read one response; returns (conn, resp)."""
    c = Conn(port, timeout=timeout)
    c.send(data)
    try:
        resp = c.read_response(method=method)
    except BaseException:
        c.close()
        raise
    return c, resp


def assert_rejected(port, data, status, upstream_port=None):
    """Send data on a fresh connection; expect an error response then close."""
    c = Conn(port)
    try:
        c.send(data)
        resp = c.read_response()
        assert_error_response(resp, status, upstream_port=upstream_port)
        c.assert_closed()
        return resp
    finally:
        c.close()


def wait_until(pred, timeout, interval=0.01):
    """Poll pred() until true or timeout (bounded). Returns last value."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() >= deadline:
            return v
        # short select-based pause; used only for polling external state
        select.select([], [], [], interval)


# --------------------------------------------------------------------------
# byte-recording upstream (built on harness.RawUpstream)
# --------------------------------------------------------------------------

import threading  # noqa: E402

from harness import Ferry, FerryError, RawUpstream  # noqa: E402


class UpRequest:
    def __init__(self, method, target, version, headers, body, conn_id, raw):
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers
        self.body = body
        self.conn_id = conn_id
        self.raw = raw

    def header_all(self, name):
        n = name.lower()
        return [v for k, v in self.headers if k.lower() == n]

    def header(self, name, default=None):
        v = self.header_all(name)
        return v[0] if v else default

    def __repr__(self):
        return "<UpRequest %s %s conn=%d body=%r>" % (self.method, self.target, self.conn_id,
                                                      self.body[:80])


class _UpConn:
    def __init__(self, sock, conn_id, owner):
        self.sock = sock
        self.conn_id = conn_id
        self.owner = owner
        self.buf = bytearray()
        self.cur = bytearray()  # raw bytes of the request being parsed

    def _fill(self):
        try:
            d = self.sock.recv(1 << 18)
        except (ConnectionResetError, OSError):
            d = b""
        if not d:
            return False
        with self.owner.cond:
            self.owner.received[self.conn_id] += d
            self.owner.cond.notify_all()
        self.buf += d
        return True

    def _line(self):
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                line = bytes(self.buf[:i + 1])
                del self.buf[:i + 1]
                self.cur += line
                return line
            if len(self.buf) > (1 << 20) or not self._fill():
                raise EOFError

    def _exact(self, n):
        while len(self.buf) < n:
            if not self._fill():
                raise EOFError
        d = bytes(self.buf[:n])
        del self.buf[:n]
        self.cur += d
        return d

    def serve(self):
        while True:
            self.cur = bytearray()
            try:
                line = self._line()
                m = re.match(rb"^([!#$%&'*+\-.^_`|~0-9A-Za-z]+) (\S+) (HTTP/1\.[01])\r\n$", line)
                if not m:
                    self.owner.note_bad(self.conn_id, "bad request line %r" % line)
                    return
                headers = []
                while True:
                    h = self._line()
                    if h == b"\r\n":
                        break
                    k, sep, v = h[:-2].partition(b":")
                    if not h.endswith(b"\r\n") or not sep:
                        self.owner.note_bad(self.conn_id, "bad header line %r" % h)
                        return
                    headers.append((k.decode("latin-1"), v.strip().decode("latin-1")))
                lower = {}
                for k, v in headers:
                    lower.setdefault(k.lower(), []).append(v)
                body = bytearray()
                if "transfer-encoding" in lower:
                    if lower["transfer-encoding"] != ["chunked"] or "content-length" in lower:
                        self.owner.note_bad(self.conn_id, "bad framing from ferry %r" % headers)
                        return
                    while True:
                        cl = self._line()
                        mm = re.match(rb"^([0-9a-fA-F]+)(;[^\r\n]*)?\r\n$", cl)
                        if not mm:
                            self.owner.note_bad(self.conn_id, "bad chunk line %r" % cl)
                            return
                        n = int(mm.group(1), 16)
                        if n == 0:
                            while self._line() != b"\r\n":
                                pass
                            break
                        body += self._exact(n)
                        if self._exact(2) != b"\r\n":
                            self.owner.note_bad(self.conn_id, "chunk without CRLF")
                            return
                elif "content-length" in lower:
                    vals = lower["content-length"]
                    if len(vals) != 1 or not re.match(r"^\d+$", vals[0]):
                        self.owner.note_bad(self.conn_id, "bad CL from ferry %r" % vals)
                        return
                    body += self._exact(int(vals[0]))
            except EOFError:
                return
            req = UpRequest(m.group(1).decode(), m.group(2).decode("latin-1"),
                            m.group(3).decode(), headers, bytes(body), self.conn_id,
                            bytes(self.cur))
            with self.owner.cond:
                self.owner.requests.append(req)
                self.owner.consumed[self.conn_id] += len(self.cur)
                self.owner.cond.notify_all()
            payload = ("ok %s %s len=%d\n" % (req.method, req.target, len(req.body))).encode("latin-1")
            resp = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n"
                    % len(payload)) + (b"" if req.method == "HEAD" else payload)
            try:
                self.sock.sendall(resp)
            except OSError:
                return


class RecordingUpstream:
    """HTTP/1.1 keep-alive upstream that records every byte it receives.

    .requests      complete, well-framed requests (UpRequest) since the last reset()
    .received      conn_id -> all bytes received on that connection
    .leftover()    bytes received but not part of a complete request
    """

    def __init__(self):
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.requests = []
        self.received = {}
        self.consumed = {}
        self.bad = []
        self.closed = set()
        self._ids = 0
        self.raw = RawUpstream(self._handle)
        self.port = self.raw.port
        self.url = self.raw.url
        self.authority = self.raw.authority

    def start(self):
        self.raw.start()
        return self

    def stop(self):
        self.raw.stop()

    def _handle(self, sock):
        sock.settimeout(300)
        with self.cond:
            self._ids += 1
            cid = self._ids
            self.received[cid] = bytearray()
            self.consumed[cid] = 0
        try:
            _UpConn(sock, cid, self).serve()
        finally:
            with self.cond:
                self.closed.add(cid)
                self.cond.notify_all()

    def wait_closed(self, cid, timeout=CLOSE_TIMEOUT):
        """Bounded wait until upstream connection `cid` was closed by ferry."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while cid not in self.closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(left)
            return True

    def note_bad(self, cid, msg):
        with self.cond:
            self.bad.append((cid, msg))
            self.cond.notify_all()

    def reset(self):
        """Forget recorded requests; bytes received so far are forgiven."""
        with self.cond:
            self.requests.clear()
            self.bad.clear()
            for cid in self.received:
                self.consumed[cid] = len(self.received[cid])

    @property
    def conn_count(self):
        return self.raw.conn_count

    def leftover(self):
        """Bytes received on any connection that are not part of a complete request."""
        with self.lock:
            out = {}
            for cid, data in self.received.items():
                if len(data) > self.consumed[cid]:
                    out[cid] = bytes(data[self.consumed[cid]:])
            return out

    def wait_requests(self, n, timeout=RESPONSE_TIMEOUT):
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.requests) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("upstream saw %d requests, expected %d: %r"
                                       % (len(self.requests), n, self.requests))
                self.cond.wait(left)
            return list(self.requests)

    def snapshot(self):
        with self.lock:
            return list(self.requests)


CANARY = b"GET /__canary HTTP/1.1\r\nHost: canary.test\r\n\r\n"


def assert_upstream_saw(ferry_port, up, expected_targets=(), partial_ok=False):
    """Synchronise with a canary request on a new client connection, then assert
    that the upstream received exactly `expected_targets` (in order) as complete
    requests before the canary, and not a single other byte.

    partial_ok=True (errors detected inside a request *body*, which a streaming
    proxy may only see after it forwarded the head): an incomplete request may
    have reached the upstream, but that upstream connection must then have been
    closed by ferry (never completed, never reused).
    """
    with Conn(ferry_port) as c:
        c.send(CANARY)
        r = c.read_response()
        assert r.status == 200, "canary request failed: %r" % r
    reqs = up.wait_requests(len(expected_targets) + 1)
    targets = [q.target for q in reqs]
    assert targets == list(expected_targets) + ["/__canary"], \
        "upstream saw %r, expected %r (+ canary)" % (reqs, list(expected_targets))
    assert not up.bad, "ferry sent malformed data upstream: %r" % up.bad
    left = up.leftover()
    if partial_ok:
        for cid, data in left.items():
            assert up.wait_closed(cid), (
                "a partial rejected request reached upstream connection %d and ferry did "
                "not close that connection: %r" % (cid, data[:300]))
    else:
        assert not left, "bytes of a rejected request reached the upstream: %r" % left
    return reqs[:-1]


# --------------------------------------------------------------------------
# module-scoped ferry instances
# --------------------------------------------------------------------------

class FerryPool:
    """Start ferries that live for a whole test module; teardown checks exit
    code 0 and the absence of sanitizer reports (like conftest's ferry_factory)."""

    def __init__(self):
        self.instances = []

    def start(self, upstream_url, *args, workers=1, drain_timeout="2s"):
        # a short drain bound keeps module teardown fast even when a test left
        # a half-open connection behind
        if drain_timeout:
            args = ("--drain-timeout", drain_timeout) + tuple(args)
        f = Ferry(upstream_url, *args, workers=workers)
        self.instances.append(f)
        f.start()
        return f

    def teardown(self):
        problems = []
        for f in self.instances:
            if f.proc is None:
                continue
            try:
                rc = f.stop()
            except FerryError as e:
                problems.append(str(e))
                continue
            if rc != 0:
                problems.append("ferry exited with %r; argv=%r\nstderr:\n%s"
                                % (rc, f.argv(), f.stderr_text()[-4000:]))
            if f.sanitizer_lines():
                problems.append("sanitizer output from ferry:\n" + f.stderr_text()[-8000:])
        return problems
