"""Shared test harness for ferry integration tests.

Everything here synchronises on readiness (the "listening on" line, accepting
sockets, events/queues) and every wait is bounded by a timeout.

Main pieces:
  Ferry                 -- start/stop a ferry process, read its logs
  run_ferry(*args)      -- run ferry to completion (CLI tests)
  UpstreamServer        -- threaded HTTP/1.1 keep-alive upstream recording requests
  RawUpstream           -- scriptable raw TCP server (handler(conn) per connection)
  raw_request(...)      -- send raw bytes, get raw response bytes
  ResponseReader        -- minimal HTTP/1.1 response parser on a raw socket
  connect(port)         -- plain client socket with timeout
  wait_closed(sock)     -- bounded wait for the peer to close
  pattern_bytes / chunk_stream -- deterministic data generation
"""

import hashlib
import http.server
import json
import os
import re
import select
import signal as _signal
import socket
import socketserver
import struct
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Tuple

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def ferry_bin() -> str:
    b = os.environ.get("FERRY_BIN", os.path.join(REPO_ROOT, "build", "ferry"))
    if not os.path.isabs(b):
        # relative paths are relative to the invocation dir, fall back to repo root
        cand = os.path.abspath(b)
        if not os.path.exists(cand):
            cand = os.path.join(REPO_ROOT, b)
        b = cand
    return b


START_TIMEOUT = float(os.environ.get("FERRY_START_TIMEOUT", "10"))
STOP_TIMEOUT = float(os.environ.get("FERRY_STOP_TIMEOUT", "20"))

SANITIZER_MARKERS = ("AddressSanitizer", "runtime error:", "LeakSanitizer",
                     "ThreadSanitizer", "UndefinedBehaviorSanitizer", "MemorySanitizer")

_LISTEN_RE = re.compile(r"listening on 127\.0\.0\.1:(\d+)")


class FerryError(AssertionError):
    pass


def wait_for(pred: Callable[[], object], timeout: float, interval: float = 0.01,
             what: str = "condition"):
    """Poll pred() until truthy (returned) or raise after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise TimeoutError("timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(interval)


# --------------------------------------------------------------------------
# ferry process
# --------------------------------------------------------------------------

class Ferry:
    """A ferry process.

    Ferry(upstream_url, *extra_args, workers=1, env=None)
    .start() waits for "listening on 127.0.0.1:PORT" and sets .port/.addr.
    """

    def __init__(self, upstream_url: Optional[str], *extra_args, workers: int = 1,
                 env: Optional[dict] = None, log_level: str = "info",
                 listen: str = "127.0.0.1:0"):
        self.upstream_url = upstream_url
        self.extra_args = [str(a) for a in extra_args]
        self.workers = workers
        self.env = env
        self.log_level = log_level
        self.listen = listen
        self.proc: Optional[subprocess.Popen] = None
        self.port: Optional[int] = None
        self.addr: Optional[str] = None
        self.returncode: Optional[int] = None
        self._tmpdir = tempfile.mkdtemp(prefix="ferry-test-")
        self.stderr_path = os.path.join(self._tmpdir, "stderr.log")
        self.stdout_path = os.path.join(self._tmpdir, "stdout.log")

    # -- lifecycle --------------------------------------------------------
    def argv(self) -> List[str]:
        a = [ferry_bin(), "--listen", self.listen]
        if self.upstream_url is not None:
            a += ["--upstream", self.upstream_url]
        if self.workers is not None:
            a += ["--workers", str(self.workers)]
        if self.log_level is not None:
            a += ["--log-level", self.log_level]
        return a + self.extra_args

    def spawn(self):
        """Start the process without waiting for readiness."""
        b = ferry_bin()
        if not os.path.exists(b):
            raise FerryError("ferry binary not found at %s (set FERRY_BIN)" % b)
        env = dict(os.environ)
        if self.env:
            env.update(self.env)
        self._err_f = open(self.stderr_path, "wb")
        self._out_f = open(self.stdout_path, "wb")
        self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL,
                                     stdout=self._out_f, stderr=self._err_f, env=env)
        return self

    def start(self, timeout: float = START_TIMEOUT):
        if self.proc is None:
            self.spawn()
        deadline = time.monotonic() + timeout
        while True:
            m = _LISTEN_RE.search(self.stderr_text())
            if m:
                self.port = int(m.group(1))
                self.addr = "127.0.0.1:%d" % self.port
                break
            rc = self.proc.poll()
            if rc is not None:
                self.returncode = rc
                self._close_files()
                raise FerryError("ferry exited with %s before listening; argv=%r\nstderr:\n%s"
                                 % (rc, self.argv(), self.stderr_text()))
            if time.monotonic() >= deadline:
                self.kill()
                raise FerryError("ferry did not print 'listening on' within %.1fs; argv=%r\n"
                                 "stderr:\n%s" % (timeout, self.argv(), self.stderr_text()))
            time.sleep(0.01)
        # make sure the socket really accepts (readiness, not time)
        wait_for(lambda: _can_connect(self.port), 5, what="ferry port accepting")
        return self

    def signal(self, sig=_signal.SIGTERM):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait(self, timeout: float = STOP_TIMEOUT) -> int:
        try:
            self.returncode = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise FerryError("ferry did not exit within %.1fs after signal\nstderr:\n%s"
                             % (timeout, self.stderr_text()))
        self._close_files()
        return self.returncode

    def stop(self, timeout: float = STOP_TIMEOUT, sig=_signal.SIGTERM) -> int:
        """SIGTERM and wait (bounded). Returns the exit code. Idempotent."""
        if self.proc is None:
            return self.returncode
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.wait(timeout)

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        if self.proc is not None:
            self.returncode = self.proc.returncode
        self._close_files()

    def _close_files(self):
        for f in (getattr(self, "_err_f", None), getattr(self, "_out_f", None)):
            if f is not None and not f.closed:
                f.close()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def __enter__(self):
        if self.port is None:
            self.start()
        return self

    def __exit__(self, *exc):
        if self.running:
            self.stop()
        return False

    # -- observation ------------------------------------------------------
    def url(self, path: str = "/") -> str:
        if not path.startswith("/"):
            path = "/" + path
        return "http://%s%s" % (self.addr, path)

    def stderr_text(self) -> str:
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def stdout_text(self) -> str:
        try:
            with open(self.stdout_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def access_log_lines(self) -> List[str]:
        return [l for l in self.stdout_text().splitlines() if l.strip()]

    def wait_access_log(self, n: int, timeout: float = 5.0) -> List[str]:
        """Poll (bounded) until at least n access-log lines are present."""
        try:
            return wait_for(lambda: (lambda l: l if len(l) >= n else None)(self.access_log_lines()),
                            timeout, interval=0.02, what="%d access log lines" % n)
        except TimeoutError:
            raise FerryError("expected >= %d access log lines, got:\n%s"
                             % (n, "\n".join(self.access_log_lines())))

    def rss_kb(self) -> int:
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def tree_rss_kb(self) -> int:
        """VmRSS of the ferry process plus its children (worker processes)."""
        total = 0
        for pid in [self.proc.pid] + _child_pids(self.proc.pid):
            try:
                with open("/proc/%d/status" % pid) as f:
                    for line in f:
                        if line.startswith("VmRSS:"):
                            total += int(line.split()[1])
            except (FileNotFoundError, ProcessLookupError):
                pass
        return total

    def max_single_rss_kb(self) -> int:
        best = 0
        for pid in [self.proc.pid] + _child_pids(self.proc.pid):
            try:
                with open("/proc/%d/status" % pid) as f:
                    for line in f:
                        if line.startswith("VmRSS:"):
                            best = max(best, int(line.split()[1]))
            except (FileNotFoundError, ProcessLookupError):
                pass
        return best

    def sanitizer_lines(self) -> List[str]:
        return [l for l in self.stderr_text().splitlines()
                if any(m in l for m in SANITIZER_MARKERS)]

    def assert_no_unexpected_errors(self, allowed=()):
        bad = []
        for line in self.stderr_text().splitlines():
            s = line.strip()
            is_err = (s.lower().startswith("error") or any(m in s for m in SANITIZER_MARKERS))
            if is_err and not any(a in s for a in allowed):
                bad.append(line)
        if bad:
            raise FerryError("unexpected error lines in ferry stderr:\n" + "\n".join(bad)
                             + "\n--- full stderr ---\n" + self.stderr_text())


def _child_pids(pid: int) -> List[int]:
    """All descendants of pid (recursive)."""
    out = []
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            tids = os.listdir("/proc/%d/task" % p)
        except FileNotFoundError:
            continue
        for tid in tids:
            try:
                with open("/proc/%d/task/%s/children" % (p, tid)) as f:
                    kids = [int(x) for x in f.read().split()]
            except (FileNotFoundError, ProcessLookupError):
                continue
            out += kids
            todo += kids
    return out


def _can_connect(port: int) -> bool:
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=1)
        s.close()
        return True
    except OSError:
        return False


def run_ferry(*args, timeout: float = 10, env: Optional[dict] = None) -> subprocess.CompletedProcess:
    """Run ferry with exactly these args until it exits (bounded)."""
    e = dict(os.environ)
    if env:
        e.update(env)
    return subprocess.run([ferry_bin()] + [str(a) for a in args], stdin=subprocess.DEVNULL,
                          capture_output=True, timeout=timeout, env=e)


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


# --------------------------------------------------------------------------
# deterministic data
# --------------------------------------------------------------------------

_BLOCK = hashlib.shake_256(b"ferry-test-data").digest(1 << 16)  # 64 KiB


def pattern_bytes(n: int, seed: int = 0) -> bytes:
    """n deterministic bytes (not a trivially repeating sequence at small scale)."""
    if n <= 0:
        return b""
    out = bytearray()
    i = 0
    while len(out) < n:
        out += struct.pack("<QQ", seed, i) + _BLOCK[16:]
        i += 1
    return bytes(out[:n])


def chunk_stream(total: int, chunk: int = 1 << 18, seed: int = 0):
    """Yield `total` bytes in pieces of `chunk` bytes; each 64KiB block tagged with its index
    so reordering/duplication is detected by hashing. Never holds more than one chunk."""
    assert chunk % (1 << 16) == 0
    per = chunk >> 16
    tail = _BLOCK[16:]
    sent = 0
    idx = 0
    while sent < total:
        parts = []
        for _ in range(per):
            parts.append(struct.pack("<QQ", seed, idx))
            parts.append(tail)
            idx += 1
        buf = b"".join(parts)
        if sent + len(buf) > total:
            buf = buf[: total - sent]
        sent += len(buf)
        yield buf


def sha256(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


# --------------------------------------------------------------------------
# raw client helpers
# --------------------------------------------------------------------------

def connect(port: int, timeout: float = 5.0, host: str = "127.0.0.1") -> socket.socket:
    s = socket.create_connection((host, port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.settimeout(timeout)
    return s


def recv_until_close(sock: socket.socket, timeout: float = 5.0, limit: int = 1 << 30) -> bytes:
    """Read until EOF (or ECONNRESET) bounded by an overall timeout (raises TimeoutError)."""
    deadline = time.monotonic() + timeout
    buf = bytearray()
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("peer did not close within %.1fs; got %d bytes: %r"
                               % (timeout, len(buf), bytes(buf[:300])))
        sock.settimeout(left)
        try:
            d = sock.recv(1 << 16)
        except socket.timeout:
            continue
        except ConnectionResetError:
            break
        if not d:
            break
        buf += d
        if len(buf) > limit:
            raise AssertionError("too much data")
    return bytes(buf)


def wait_closed(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """Bounded wait until the peer closes; returns any bytes that arrived meanwhile."""
    return recv_until_close(sock, timeout)


def is_open_after(sock: socket.socket, timeout: float = 0.3) -> bool:
    """True if the peer has NOT closed within `timeout` (and sent nothing).
    Only used as a negative check (the peer must stay open); a positive result is
    never used to synchronise."""
    r, _, _ = select.select([sock], [], [], timeout)
    if not r:
        return True
    try:
        d = sock.recv(1, socket.MSG_PEEK)
    except ConnectionResetError:
        return False
    return bool(d)


def raw_request(port: int, data: bytes, read_until_close: bool = True, timeout: float = 5.0,
                head: bool = False, shutdown_write: bool = False) -> bytes:
    """Send raw bytes to 127.0.0.1:port and return the raw response bytes.
    read_until_close=True: everything until the server closes (bounded by timeout).
    read_until_close=False: exactly one (final) response as parsed by ResponseReader."""
    s = connect(port, timeout)
    try:
        s.sendall(data)
        if shutdown_write:
            s.shutdown(socket.SHUT_WR)
        if read_until_close:
            return recv_until_close(s, timeout)
        rd = ResponseReader(s, timeout=timeout)
        return rd.read_final(head=head).raw
    finally:
        s.close()


class IncompleteResponse(Exception):
    def __init__(self, msg, partial=None):
        super().__init__(msg)
        self.partial = partial


@dataclass
class Response:
    version: str = ""
    status: int = 0
    reason: str = ""
    headers: List[Tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    raw: bytes = b""
    framing: str = ""          # "length", "chunked", "close", "none"
    complete: bool = True
    trailers: List[Tuple[str, str]] = field(default_factory=list)
    chunk_sizes: List[int] = field(default_factory=list)

    def header(self, name: str, default=None):
        n = name.lower()
        for k, v in self.headers:
            if k.lower() == n:
                return v
        return default

    def header_all(self, name: str) -> List[str]:
        n = name.lower()
        return [v for k, v in self.headers if k.lower() == n]

    def has_header(self, name: str) -> bool:
        return self.header(name) is not None

    def header_names(self) -> List[str]:
        return [k.lower() for k, _ in self.headers]

    def json(self):
        return json.loads(self.body.decode())


class ResponseReader:
    """Parses HTTP/1.x responses from a socket, one at a time (so pipelined
    responses can be split). Every read is bounded by `timeout` seconds of
    inactivity; overall bound by `deadline` if given."""

    def __init__(self, sock: socket.socket, timeout: float = 5.0):
        self.sock = sock
        self.timeout = timeout
        self.buf = bytearray()
        self.eof = False

    def _fill(self) -> bool:
        if self.eof:
            return False
        self.sock.settimeout(self.timeout)
        try:
            d = self.sock.recv(1 << 18)
        except socket.timeout:
            raise TimeoutError("no data from peer within %.1fs (buffered %r)"
                               % (self.timeout, bytes(self.buf[:200])))
        except ConnectionResetError:
            d = b""
        if not d:
            self.eof = True
            return False
        self.buf += d
        return True

    def _readline(self) -> bytes:
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                line = bytes(self.buf[: i + 1])
                del self.buf[: i + 1]
                return line
            if not self._fill():
                raise IncompleteResponse("EOF while reading line: %r" % bytes(self.buf))

    def _read_exact(self, n: int, raw: bytearray) -> Tuple[bytes, bool]:
        out = bytearray()
        while len(out) < n:
            if not self.buf:
                if not self._fill():
                    return bytes(out), False
            take = min(n - len(out), len(self.buf))
            out += self.buf[:take]
            del self.buf[:take]
        raw += out
        return bytes(out), True

    def at_eof(self) -> bool:
        """True if the peer has closed and nothing is buffered (non-blocking-ish check)."""
        return self.eof and not self.buf

    def read_head(self) -> Response:
        r = Response()
        raw = bytearray()
        line = self._readline()
        raw += line
        parts = line.rstrip(b"\r\n").decode("latin-1").split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/"):
            raise AssertionError("bad status line %r" % line)
        r.version = parts[0]
        r.status = int(parts[1])
        r.reason = parts[2] if len(parts) > 2 else ""
        while True:
            line = self._readline()
            raw += line
            if line in (b"\r\n", b"\n"):
                break
            k, _, v = line.rstrip(b"\r\n").decode("latin-1").partition(":")
            r.headers.append((k, v.strip()))
        r.raw = bytes(raw)
        return r

    def read_response(self, head: bool = False, allow_incomplete: bool = False,
                      max_body: int = 1 << 31) -> Response:
        """Read the next response (including 1xx interim responses)."""
        r = self.read_head()
        raw = bytearray(r.raw)
        te = (r.header("Transfer-Encoding") or "").lower()
        cl = r.header("Content-Length")
        if head or 100 <= r.status < 200 or r.status in (204, 304):
            r.framing = "none"
        elif te:
            r.framing = "chunked" if te.endswith("chunked") else "close"
        elif cl is not None:
            r.framing = "length"
        else:
            r.framing = "close"

        if r.framing == "length":
            n = int(cl)
            body, ok = self._read_exact(n, raw)
            r.body = body
            r.complete = ok
        elif r.framing == "chunked":
            body = bytearray()
            r.complete = False
            try:
                while True:
                    line = self._readline()
                    raw += line
                    size = int(line.split(b";")[0].strip(), 16)
                    if size == 0:
                        while True:
                            tl = self._readline()
                            raw += tl
                            if tl in (b"\r\n", b"\n"):
                                break
                            k, _, v = tl.rstrip(b"\r\n").decode("latin-1").partition(":")
                            r.trailers.append((k, v.strip()))
                        r.complete = True
                        break
                    r.chunk_sizes.append(size)
                    data, ok = self._read_exact(size, raw)
                    body += data
                    if not ok:
                        break
                    crlf = self._readline()
                    raw += crlf
                    if crlf not in (b"\r\n", b"\n"):
                        raise AssertionError("bad chunk terminator %r" % crlf)
                    if len(body) > max_body:
                        raise AssertionError("body too large")
            except IncompleteResponse:
                pass
            r.body = bytes(body)
        elif r.framing == "close":
            body = bytearray()
            while True:
                if self.buf:
                    body += self.buf
                    self.buf.clear()
                if not self._fill():
                    break
            raw += body
            r.body = bytes(body)
        r.raw = bytes(raw)
        if not r.complete and not allow_incomplete:
            raise IncompleteResponse("incomplete %s body (got %d bytes)" % (r.framing, len(r.body)),
                                     partial=r)
        return r

    def read_final(self, head: bool = False, allow_incomplete: bool = False) -> Response:
        """Read responses, skipping 1xx interim ones (except 101), return the final one."""
        while True:
            r = self.read_response(head=head, allow_incomplete=allow_incomplete)
            if 100 <= r.status < 200 and r.status != 101:
                continue
            return r


def parse_responses(data: bytes, heads: Tuple[bool, ...] = ()) -> List[Response]:
    """Split a byte string containing several responses."""

    class _Fake:
        def __init__(self, d):
            self.d = d

        def settimeout(self, t):
            pass

        def recv(self, n):
            d, self.d = self.d[:n], self.d[n:]
            return d

    rd = ResponseReader(_Fake(data))
    out = []
    i = 0
    while rd.buf or not rd.eof:
        if not rd.buf and not rd._fill():
            break
        out.append(rd.read_response(head=heads[i] if i < len(heads) else False))
        i += 1
    return out


def simple_request(method: str, target: str, host: str = "example.test", headers=(),
                   body: Optional[bytes] = None, version: str = "HTTP/1.1",
                   chunked: bool = False) -> bytes:
    lines = ["%s %s %s" % (method, target, version)]
    if host is not None:
        lines.append("Host: %s" % host)
    for k, v in headers:
        lines.append("%s: %s" % (k, v))
    payload = b""
    if body is not None:
        if chunked:
            lines.append("Transfer-Encoding: chunked")
            payload = encode_chunked(body)
        else:
            lines.append("Content-Length: %d" % len(body))
            payload = body
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload


def encode_chunked(body: bytes, piece: int = 1 << 16) -> bytes:
    out = bytearray()
    for i in range(0, len(body), piece):
        p = body[i:i + piece]
        out += b"%x\r\n" % len(p) + p + b"\r\n"
    out += b"0\r\n\r\n"
    return bytes(out)


# --------------------------------------------------------------------------
# buffered reader for server-side raw sockets
# --------------------------------------------------------------------------

class SockReader:
    """Buffered reader for the server side of a raw socket (RawUpstream handlers)."""

    def __init__(self, sock: socket.socket, timeout: float = 10.0):
        self.sock = sock
        self.sock.settimeout(timeout)
        self.buf = bytearray()

    def _fill(self) -> bool:
        try:
            d = self.sock.recv(1 << 18)
        except ConnectionResetError:
            d = b""
        if not d:
            return False
        self.buf += d
        return True

    def readline(self) -> bytes:
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                line = bytes(self.buf[: i + 1])
                del self.buf[: i + 1]
                return line
            if not self._fill():
                raise EOFError("EOF in line %r" % bytes(self.buf))

    def read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._fill():
                raise EOFError("EOF after %d of %d bytes" % (len(self.buf), n))
        d = bytes(self.buf[:n])
        del self.buf[:n]
        return d

    def read_head(self) -> bytes:
        """Read up to and including the blank line; returns the head bytes."""
        while True:
            i = self.buf.find(b"\r\n\r\n")
            if i >= 0:
                h = bytes(self.buf[: i + 4])
                del self.buf[: i + 4]
                return h
            if not self._fill():
                raise EOFError("EOF in head %r" % bytes(self.buf))

    def read_request(self):
        """Read one request; returns (method, target, headers[list of pairs], body bytes)."""
        head = self.read_head()
        method, target, headers = parse_request_head(head)
        hd = {k.lower(): v for k, v in headers}
        if "chunked" in hd.get("transfer-encoding", "").lower():
            body = bytearray()
            for piece in self.iter_chunked():
                body += piece
            body = bytes(body)
        elif "content-length" in hd:
            body = self.read_exact(int(hd["content-length"]))
        else:
            body = b""
        return method, target, headers, body

    def iter_chunked(self):
        """Yield chunk payloads of a chunked body (consumes the trailer section)."""
        while True:
            line = self.readline()
            size = int(line.split(b";")[0].strip(), 16)
            if size == 0:
                while self.readline() not in (b"\r\n", b"\n"):
                    pass
                return
            # hand out buffered data directly where possible to avoid copies
            left = size
            while left:
                if not self.buf and not self._fill():
                    raise EOFError("EOF in chunk")
                take = min(left, len(self.buf))
                yield bytes(self.buf[:take])
                del self.buf[:take]
                left -= take
            if self.readline() not in (b"\r\n", b"\n"):
                raise ValueError("bad chunk terminator")

    def iter_exact(self, n: int):
        left = n
        if self.buf:
            take = min(left, len(self.buf))
            yield bytes(self.buf[:take])
            del self.buf[:take]
            left -= take
        while left:
            d = self.sock.recv(min(left, 1 << 20))
            if not d:
                raise EOFError("EOF with %d bytes left" % left)
            left -= len(d)
            yield d


def parse_request_head(head: bytes):
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers = []
    for l in lines[1:]:
        if not l:
            continue
        k, _, v = l.partition(":")
        headers.append((k, v.strip()))
    return method, target, headers


# --------------------------------------------------------------------------
# in-process HTTP upstream
# --------------------------------------------------------------------------

@dataclass
class RecordedRequest:
    method: str
    path: str
    version: str
    headers: List[Tuple[str, str]]
    body: bytes
    conn_id: int
    raw_head: bytes = b""

    def header(self, name: str, default=None):
        n = name.lower()
        for k, v in self.headers:
            if k.lower() == n:
                return v
        return default

    def header_all(self, name: str) -> List[str]:
        n = name.lower()
        return [v for k, v in self.headers if k.lower() == n]

    def header_names(self) -> List[str]:
        return [k.lower() for k, _ in self.headers]


class _UpstreamHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # avoid Nagle/delayed-ACK 40 ms stalls
    server_version = "test-upstream"
    sys_version = ""

    def log_message(self, fmt, *args):  # quiet
        pass

    def setup(self):
        super().setup()
        with self.server.owner.lock:
            self.server.owner.conn_count += 1
            self.conn_id = self.server.owner.conn_count
            self.server.owner.open_conns.add(self.connection)

    def finish(self):
        try:
            super().finish()
        finally:
            with self.server.owner.lock:
                self.server.owner.open_conns.discard(self.connection)

    def __getattr__(self, name):
        if name.startswith("do_"):
            return self._dispatch
        raise AttributeError(name)

    def _read_body(self) -> bytes:
        te = self.headers.get("Transfer-Encoding", "")
        if "chunked" in te.lower():
            out = bytearray()
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    raise EOFError("eof in chunked body")
                size = int(line.split(b";")[0].strip(), 16)
                if size == 0:
                    while True:
                        t = self.rfile.readline(65537)
                        if t in (b"\r\n", b"\n", b""):
                            break
                    break
                out += self.rfile.read(size)
                self.rfile.readline(3)
            return bytes(out)
        cl = self.headers.get("Content-Length")
        if cl is not None:
            return self.rfile.read(int(cl))
        return b""

    def _dispatch(self):
        owner = self.server.owner
        body = self._read_body()
        req = RecordedRequest(method=self.command, path=self.path, version=self.request_version,
                              headers=list(self.headers.items()), body=body,
                              conn_id=self.conn_id, raw_head=self.raw_requestline)
        with owner.lock:
            owner.requests.append(req)
            owner.cond.notify_all()
        path_only = self.path.split("?", 1)[0]
        handler = None
        for prefix, fn in owner.routes:
            if path_only == prefix or (prefix.endswith("/") and path_only.startswith(prefix)):
                handler = fn
                break
        if handler is None:
            handler = owner.default_route
        handler(self, req)
        if owner.close_after_response:
            self.close_connection = True

    # helpers for route handlers -------------------------------------------
    def send_simple(self, status: int, body: bytes = b"", headers=(), content_type="text/plain"):
        self.send_response_only(status)
        self.send_header("Date", self.date_time_string())
        no_body = self.command == "HEAD" or status in (204, 304) or 100 <= status < 200
        has_ct = any(k.lower() == "content-type" for k, _ in headers)
        if content_type and not has_ct and status not in (204, 304):
            self.send_header("Content-Type", content_type)
        for k, v in headers:
            self.send_header(k, v)
        if status not in (204, 304) and not (100 <= status < 200):
            if not any(k.lower() == "content-length" for k, _ in headers):
                self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not no_body and body:
            self.wfile.write(body)
        self.wfile.flush()

    def send_chunked(self, pieces, status=200, headers=(), trailers=None):
        self.send_response_only(status)
        self.send_header("Date", self.date_time_string())
        self.send_header("Content-Type", "application/octet-stream")
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if self.command == "HEAD":
            self.wfile.flush()
            return
        for p in pieces:
            if p:
                self.wfile.write(b"%x\r\n" % len(p) + p + b"\r\n")
                self.wfile.flush()
        self.wfile.write(b"0\r\n")
        for k, v in (trailers or []):
            self.wfile.write(("%s: %s\r\n" % (k, v)).encode())
        self.wfile.write(b"\r\n")
        self.wfile.flush()


def _arg(path: str, prefix: str) -> str:
    return path.split("?", 1)[0][len(prefix):]


def _route_echo(h, req):
    ct = req.header("Content-Type") or "application/octet-stream"
    h.send_simple(200, req.body, headers=[("X-Echo-Method", req.method),
                                          ("X-Body-Sha256", sha256(req.body))], content_type=ct)


def _route_echo_chunked(h, req):
    b = req.body
    h.send_chunked([b[i:i + 65536] for i in range(0, len(b), 65536)],
                   headers=[("X-Body-Sha256", sha256(b))])


def _route_size(h, req):
    n = int(_arg(req.path, "/size/"))
    data = pattern_bytes(n)
    h.send_simple(200, data, headers=[("X-Body-Sha256", sha256(data))],
                  content_type="application/octet-stream")


def _route_chunked(h, req):
    n = int(_arg(req.path, "/chunked/"))
    data = pattern_bytes(n)
    h.send_chunked([data[i:i + 65536] for i in range(0, len(data), 65536)],
                   headers=[("X-Body-Sha256", sha256(data))])


def _route_headers(h, req):
    body = json.dumps({"method": req.method, "path": req.path, "version": req.version,
                       "headers": req.headers, "body_len": len(req.body),
                       "conn_id": req.conn_id}).encode()
    h.send_simple(200, body, content_type="application/json")


def _route_status(h, req):
    code = int(_arg(req.path, "/status/"))
    h.send_simple(code, ("status %d\n" % code).encode())


def _route_slow(h, req):
    secs = float(_arg(req.path, "/slow/"))
    time.sleep(secs)  # upstream behaviour: answer late
    h.send_simple(200, b"slow response done\n")


def _route_stream(h, req):
    n = int(_arg(req.path, "/stream/"))
    data = pattern_bytes(n)
    pieces = 10
    step = max(1, (n + pieces - 1) // pieces)
    h.send_response_only(200)
    h.send_header("Content-Length", str(n))
    h.send_header("Content-Type", "application/octet-stream")
    h.send_header("X-Body-Sha256", sha256(data))
    h.end_headers()
    h.wfile.flush()
    if h.command == "HEAD":
        return
    for i in range(0, n, step):
        h.wfile.write(data[i:i + step])
        h.wfile.flush()
        time.sleep(0.05)  # upstream behaviour: trickle


def _route_default(h, req):
    h.send_simple(200, ("ok %s %s\n" % (req.method, req.path)).encode())


class _TCPServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024
    block_on_close = False


class UpstreamServer:
    """Threaded HTTP/1.1 keep-alive upstream on 127.0.0.1:PORT.

    .requests     list of RecordedRequest (method, path, headers, body, conn_id)
    .conn_count   number of TCP connections accepted so far
    .route(path, fn)  fn(handler, req); path ending in "/" is a prefix
    Built-in routes: /echo, /echo-chunked, /size/N, /chunked/N, /headers, /status/N,
                     /slow/S, /stream/N; anything else -> 200 "ok METHOD PATH".
    """

    def __init__(self, port: int = 0):
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.requests: List[RecordedRequest] = []
        self.conn_count = 0
        self.open_conns = set()
        self.close_after_response = False
        self.routes = [
            ("/echo", _route_echo),
            ("/echo-chunked", _route_echo_chunked),
            ("/size/", _route_size),
            ("/chunked/", _route_chunked),
            ("/headers", _route_headers),
            ("/status/", _route_status),
            ("/slow/", _route_slow),
            ("/stream/", _route_stream),
        ]
        self.default_route = _route_default
        self.httpd = _TCPServer(("127.0.0.1", port), _UpstreamHandler)
        self.httpd.owner = self
        self.port = self.httpd.server_address[1]
        self.url = "http://127.0.0.1:%d" % self.port
        self.authority = "127.0.0.1:%d" % self.port
        self._thread = None

    def route(self, path: str, fn):
        self.routes.insert(0, (path, fn))

    def start(self):
        self._thread = threading.Thread(target=self.httpd.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        with self.lock:
            conns = list(self.open_conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread:
            self._thread.join(5)

    def wait_requests(self, n: int, timeout: float = 5.0) -> List[RecordedRequest]:
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.requests) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("upstream got %d requests, expected %d"
                                       % (len(self.requests), n))
                self.cond.wait(left)
            return list(self.requests)

    @property
    def last(self) -> RecordedRequest:
        with self.lock:
            return self.requests[-1]

    def reset(self):
        with self.lock:
            self.requests.clear()


# --------------------------------------------------------------------------
# raw scriptable upstream
# --------------------------------------------------------------------------

class RawUpstream:
    """Raw TCP server on 127.0.0.1:PORT. For each accepted connection, runs
    handler(conn) in a thread (conn is a socket with a 10 s timeout; wrap in
    SockReader for buffered reads). Set the handler with .handler = fn or
    RawUpstream(fn). Exceptions from handlers are collected in .errors.
    .conn_count counts accepted connections; .accepted is a queue-like event list."""

    def __init__(self, handler=None, port: int = 0, backlog: int = 1024):
        self.handler = handler
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(backlog)
        self.port = self.sock.getsockname()[1]
        self.url = "http://127.0.0.1:%d" % self.port
        self.authority = "127.0.0.1:%d" % self.port
        self.conn_count = 0
        self.errors: List[BaseException] = []
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.conns = []
        self.done_count = 0
        self._stop = False
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)

    def start(self):
        self._thread.start()
        return self

    def _accept_loop(self):
        while not self._stop:
            try:
                r, _, _ = select.select([self.sock], [], [], 0.05)
            except (OSError, ValueError):
                return
            if not r:
                continue
            try:
                c, _ = self.sock.accept()
            except OSError:
                continue
            c.settimeout(10)
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.cond:
                self.conn_count += 1
                self.conns.append(c)
                self.cond.notify_all()
            threading.Thread(target=self._run, args=(c,), daemon=True).start()

    def _run(self, c):
        try:
            if self.handler is not None:
                self.handler(c)
        except BaseException as e:  # noqa
            with self.lock:
                self.errors.append(e)
        finally:
            try:
                c.close()
            except OSError:
                pass
            with self.cond:
                self.done_count += 1
                self.cond.notify_all()

    def wait_connections(self, n: int, timeout: float = 5.0) -> int:
        deadline = time.monotonic() + timeout
        with self.cond:
            while self.conn_count < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("raw upstream accepted %d connections, expected %d"
                                       % (self.conn_count, n))
                self.cond.wait(left)
            return self.conn_count

    def wait_done(self, n: int, timeout: float = 10.0):
        deadline = time.monotonic() + timeout
        with self.cond:
            while self.done_count < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("raw upstream handlers finished %d, expected %d"
                                       % (self.done_count, n))
                self.cond.wait(left)

    def stop(self):
        self._stop = True
        try:
            self.sock.close()
        except OSError:
            pass
        with self.lock:
            conns = list(self.conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(5)
