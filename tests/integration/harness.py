"""The one test harness for ferry's integration tests (VTest vocabulary: client, server, expect).

Every wait is bounded and synchronises on readiness (the "listening on" line, an accepted
connection, a recorded request), never on sleeping. Every reader is strict: bytes from ferry
(responses to clients, requests to upstreams) that break HTTP/1.1 framing fail the test.

ferry process
  Ferry                  one ferry process: start/stop/signal, logs, RSS, expect_log(),
                         check_log(), assert_no_unexpected_errors()
  FerryFactory           starts ferries; teardown() stops them and reports bad exit codes and
                         unexpected log lines (conftest's ferry_factory, module_ferry_factory)
  check_ferry_logs()     check_log() on every ferry spawned (conftest's ferry_log_check)
  run_ferry(*args)       run ferry to completion (CLI tests); fails on crash and error lines
  ferry_bin(), free_port()
client (talks to ferry)
  Client                 a raw client connection: send/txreq, rxresp, rxresp_interim,
                         wait_closed, expect_close
  connect(port)          a plain client socket with a timeout
  ResponseReader         the strict response parser (under Client, raw_request, ...)
  Response               one parsed response (.status .headers .body .header() ...)
  IncompleteResponse     the peer closed before a complete response (an AssertionError)
  raw_request, recv_until_close, wait_closed, is_open_after, parse_responses,
  simple_request, encode_chunked
server (plays the upstream)
  UpstreamServer         threaded HTTP/1.1 keep-alive upstream with routes; records every
                         request (UpstreamRequest) and every byte it receives
  RawUpstream            scriptable TCP upstream: handler(conn) per accepted connection
  SockReader             buffered server-side reader; rxreq() is the strict request parser
  FramingError           ferry sent a malformed request upstream (an AssertionError)
  route_ok_len, parse_request_head
expect
  expect_error_response  the shape of an error response ferry generated itself
  expect_upstream_saw    exactly these requests, and not one other byte, reached the upstream
  wait_for               the poller: pred() until truthy, TimeoutError after `timeout`
data
  pattern_bytes, chunk_stream, sha256
"""

import hashlib
import http.client
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

START_TIMEOUT = float(os.environ.get("FERRY_START_TIMEOUT", "10"))
STOP_TIMEOUT = float(os.environ.get("FERRY_STOP_TIMEOUT", "20"))
# Bound for "ferry should have answered by now" (ASan builds are slow).
RESPONSE_TIMEOUT = 5.0
# Bound for "ferry should close the connection after an error response".
CLOSE_TIMEOUT = 3.0
# An error response body ferry generates is small.
MAX_ERROR_BODY = 1024

SANITIZER_MARKERS = ("AddressSanitizer", "runtime error:", "LeakSanitizer",
                     "ThreadSanitizer", "UndefinedBehaviorSanitizer", "MemorySanitizer")

_LISTEN_RE = re.compile(r"listening on 127\.0\.0\.1:(\d+)")
_ERROR_LINE = re.compile(r"^error ferry: ", re.I)
_WARN_LINE = re.compile(r"^warn ferry: ", re.I)
_TOKEN = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_CHUNK_LINE = re.compile(rb"^([0-9A-Fa-f]+)(;[^\r\n]*)?\r\n$")


def ferry_bin() -> str:
    b = os.environ.get("FERRY_BIN", os.path.join(REPO_ROOT, "build", "ferry"))
    if not os.path.isabs(b):
        # relative paths are relative to the invocation dir, fall back to repo root
        cand = os.path.abspath(b)
        if not os.path.exists(cand):
            cand = os.path.join(REPO_ROOT, b)
        b = cand
    return b


class FerryError(AssertionError):
    pass


def wait_for(pred: Callable[[], object], timeout: float, interval: float = 0.01,
             what="condition", cond: Optional[threading.Condition] = None):
    """The one poller: call pred() until it returns something truthy (returned) and raise
    TimeoutError after `timeout` seconds. With `cond`, pred() runs with cond held and the wait
    sleeps on cond (woken by notify) instead of polling every `interval`. `what` (a string or
    a callable returning one, evaluated on timeout) names what was awaited."""
    deadline = time.monotonic() + timeout

    def fail():
        w = what() if callable(what) else what
        raise TimeoutError("timed out after %.1fs waiting for %s" % (timeout, w))

    if cond is None:
        while True:
            v = pred()
            if v:
                return v
            if time.monotonic() >= deadline:
                fail()
            time.sleep(interval)
    with cond:
        while True:
            v = pred()
            if v:
                return v
            left = deadline - time.monotonic()
            if left <= 0:
                fail()
            cond.wait(left)


# --------------------------------------------------------------------------
# ferry's log
# --------------------------------------------------------------------------

def log_line_kind(line: str) -> Optional[str]:
    """'crash' (sanitizer report, assertion failure), 'error', 'warn' or None."""
    if any(m in line for m in SANITIZER_MARKERS) or "assertion failed" in line:
        return "crash"
    s = line.strip()
    if _ERROR_LINE.match(s):
        return "error"
    if _WARN_LINE.match(s):
        return "warn"
    return None


def unexpected_log_lines(lines, expected=(), forbid_warnings=False) -> List[str]:
    """The lines of `lines` that are errors or crash reports (and warnings, with
    forbid_warnings) not matched by `expected`, a sequence of (compiled regex, crash_ok)."""
    bad = []
    for line in lines:
        kind = log_line_kind(line)
        if kind is None or (kind == "warn" and not forbid_warnings):
            continue
        if any(rx.search(line) and (crash_ok or kind != "crash") for rx, crash_ok in expected):
            continue
        bad.append(line)
    return bad


def _compile_expected(patterns, crash=False):
    return [(re.compile(p), crash) for p in patterns]


# --------------------------------------------------------------------------
# ferry process
# --------------------------------------------------------------------------

_SPAWNED = []  # every Ferry spawned in this process whose log is not fully checked yet


def spawned_ferries() -> list:
    return list(_SPAWNED)


class Ferry:
    """A ferry process.

    Ferry(upstream_url, *extra_args, workers=1, env=None, allowed_errors=())
    .start() waits for "listening on 127.0.0.1:PORT" and sets .port/.addr.
    Its stderr is checked for unexpected error lines (see check_log) by FerryFactory and, for
    every ferry however it was started, after each test by conftest's ferry_log_check fixture.
    """

    def __init__(self, upstream_url: Optional[str], *extra_args, workers: int = 1,
                 env: Optional[dict] = None, log_level: str = "info",
                 listen: str = "127.0.0.1:0", allowed_errors=()):
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
        self.expected_log = _compile_expected(allowed_errors)
        self._checked_lines = 0
        self._tmpdir = tempfile.mkdtemp(prefix="ferry-test-")
        self.stderr_path = os.path.join(self._tmpdir, "stderr.log")
        self.stdout_path = os.path.join(self._tmpdir, "stdout.log")

    # -- lifecycle --------------------------------------------------------
    def argv(self) -> List[str]:
        # listen=None: the addresses come from a configuration file's listeners
        a = [ferry_bin()] + (["--listen", self.listen] if self.listen is not None else [])
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
        _SPAWNED.append(self)
        return self

    def start(self, timeout: float = START_TIMEOUT):
        if self.proc is None:
            self.spawn()

        def listening():
            m = _LISTEN_RE.search(self.stderr_text())
            if m:
                return m
            rc = self.proc.poll()
            if rc is not None:
                self.returncode = rc
                self._close_files()
                raise FerryError("ferry exited with %s before listening; argv=%r\nstderr:\n%s"
                                 % (rc, self.argv(), self.stderr_text()))
            return None

        try:
            m = wait_for(listening, timeout, what="'listening on'")
        except TimeoutError:
            self.kill()
            raise FerryError("ferry did not print 'listening on' within %.1fs; argv=%r\n"
                             "stderr:\n%s" % (timeout, self.argv(), self.stderr_text()))
        self.port = int(m.group(1))
        self.addr = "127.0.0.1:%d" % self.port
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

    # -- the error-log check ----------------------------------------------
    def expect_log(self, pattern: str, crash: bool = False):
        """Declare that stderr lines matching regex `pattern` (re.search) are expected: they
        do not fail the log check. Only error-level lines are exempted unless crash=True, so a
        pattern never hides a sanitizer report or an assertion failure by accident. Declared
        during a test on a ferry shared by a module, it lasts until the end of that test."""
        self.expected_log.append((re.compile(pattern), crash))
        return self

    def _log_lines(self, complete_only: bool) -> List[str]:
        text = self.stderr_text()
        lines = text.split("\n")
        # the last element is "" after a final newline, or a line still being written
        if complete_only or lines[-1] == "":
            lines = lines[:-1]
        return lines

    def check_log(self) -> List[str]:
        """Unexpected lines (errors, sanitizer reports, assertion failures; warnings are
        normal) written since the previous check_log(). While ferry runs, a line still being
        written waits for the next check."""
        lines = self._log_lines(complete_only=self.running)
        new = lines[self._checked_lines:]
        self._checked_lines = len(lines)
        return unexpected_log_lines(new, self.expected_log)

    def log_problem(self, bad_lines: List[str]) -> str:
        return ("unexpected error lines in ferry's stderr (declare expected ones with "
                "f.expect_log(regex) or allowed_errors=); argv=%r\n%s\n--- full stderr ---\n%s"
                % (self.argv(), "\n".join(bad_lines), self.stderr_text()[-8000:]))

    def assert_no_unexpected_errors(self, allowed=()):
        """Opt-in, stricter than the automatic check: the whole stderr may hold no error line,
        crash report or WARNING, except lines matching a regex in `allowed` (or, for error and
        warning lines, one declared with expect_log)."""
        expected = self.expected_log + _compile_expected(allowed, crash=True)
        bad = unexpected_log_lines(self._log_lines(complete_only=False), expected,
                                   forbid_warnings=True)
        if bad:
            raise FerryError(self.log_problem(bad))


def check_ferry_logs() -> List[str]:
    """check_log() on every ferry spawned so far; ferries that exited are forgotten once
    checked. Returns one problem text per ferry with unexpected lines."""
    problems = []
    for f in list(_SPAWNED):
        bad = f.check_log()
        if bad:
            problems.append(f.log_problem(bad))
        if not f.running:
            _SPAWNED.remove(f)
    return problems


class FerryFactory:
    """Starts ferries; close() stops each one (bounded), then fails (FerryError) if one did
    not exit with 0 (unless check_exit=False) or if its stderr holds unexpected error lines.
    Used as the ferry_factory fixture (one test) and module_ferry_factory (one module)."""

    def __init__(self):
        self.instances = []

    def __call__(self, upstream_url, *extra_args, workers=1, env=None, start=True,
                 check_exit=True, allowed_errors=(), **kw) -> Ferry:
        """Create (and by default start) a Ferry. allowed_errors: regexes of error lines this
        ferry is expected to log (see Ferry.expect_log)."""
        f = Ferry(upstream_url, *extra_args, workers=workers, env=env,
                  allowed_errors=allowed_errors, **kw)
        f._check_exit = check_exit
        self.instances.append(f)
        if start:
            f.start()
        return f

    def teardown(self) -> List[str]:
        """Stop every ferry; returns the problems found (and forgets the ferries)."""
        problems = []
        instances, self.instances = self.instances, []
        for f in instances:
            if f.proc is None or f.port is None:
                # never started, or failed to start (start() already raised)
                f.kill()
            else:
                try:
                    rc = f.stop()
                except FerryError as e:
                    problems.append(str(e))
                    continue
                if f._check_exit and rc != 0:
                    problems.append("ferry exited with %r (expected 0); argv=%r\nstderr:\n%s"
                                    % (rc, f.argv(), f.stderr_text()[-4000:]))
            if f.proc is not None:
                bad = f.check_log()
                if bad:
                    problems.append(f.log_problem(bad))
        return problems

    def close(self):
        problems = self.teardown()
        if problems:
            raise FerryError("\n\n".join(problems))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


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


def run_ferry(*args, timeout: float = 10, env: Optional[dict] = None,
              allowed_errors=()) -> subprocess.CompletedProcess:
    """Run ferry with exactly these args until it exits (bounded). Raises FerryError if its
    stderr holds a sanitizer report, an assertion failure or an error-level line not matched
    by a regex in allowed_errors (startup failures print "ferry: ...", which is not one)."""
    e = dict(os.environ)
    if env:
        e.update(env)
    p = subprocess.run([ferry_bin()] + [str(a) for a in args], stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=timeout, env=e)
    err = p.stderr.decode("utf-8", "replace")
    bad = unexpected_log_lines(err.splitlines(), _compile_expected(allowed_errors))
    if bad:
        raise FerryError("unexpected error lines from ferry %s:\n%s\n--- full stderr ---\n%s"
                         % (" ".join(str(a) for a in args), "\n".join(bad), err))
    return p


def close_wait_seen(ferry_port: int, client_port: int) -> bool:
    """The kernel has the client's FIN on ferry's side of the connection (CLOSE-WAIT)."""
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            parts = line.split()
            local, remote, state = parts[1], parts[2], parts[3]
            if (int(local.split(":")[1], 16) == ferry_port and
                    int(remote.split(":")[1], 16) == client_port and state == "08"):
                return True
    return False


def late_answer_upstream(answer: "threading.Event") -> "RawUpstream":
    """A started RawUpstream that reads a request, answers 200 "late" only once `answer` is set,
    then reads until ferry closes."""
    def handler(c):
        SockReader(c).read_request()
        if not answer.wait(10):
            return
        try:
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nlate")
            c.settimeout(10)
            while c.recv(4096):
                pass
        except OSError:
            pass
    return RawUpstream(handler).start()


def write_config(text: str, name: str = "ferry.yaml") -> str:
    """Writes a configuration file into a new temporary directory; returns its path."""
    d = tempfile.mkdtemp(prefix="ferry-conf-")
    path = os.path.join(d, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def named_upstream(name: str, port: int = 0) -> "UpstreamServer":
    """A started UpstreamServer whose default answer names it: 200 "NAME METHOD PATH"."""
    def answer(h, req):
        h.send_simple(200, ("%s %s %s" % (name, req.method, req.path)).encode())
    return UpstreamServer(port=port, default_route=answer).start()


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
# client: responses from ferry
# --------------------------------------------------------------------------

def connect(port: int, timeout: float = 5.0, host: str = "127.0.0.1") -> socket.socket:
    s = socket.create_connection((host, port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.settimeout(timeout)
    return s


class IncompleteResponse(AssertionError):
    """The connection closed (FIN or RST) before a complete response arrived. .partial is the
    response parsed so far (None if not even the head arrived), .received the raw bytes."""

    def __init__(self, msg, partial=None, received=b""):
        super().__init__("%s; received so far: %r" % (msg, bytes(received[:600])))
        self.partial = partial
        self.received = bytes(received)


class HeaderLookup:
    """Case-insensitive field lookups over a `headers` list of (name, value) pairs."""

    def header(self, name: str, default=None):
        n = name.lower()
        for k, v in self.headers:
            if k.lower() == n:
                return v
        return default

    def header_all(self, name: str) -> List[str]:
        n = name.lower()
        return [v for k, v in self.headers if k.lower() == n]


@dataclass
class Response(HeaderLookup):
    version: str = ""
    status: int = 0
    reason: str = ""
    headers: List[Tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    raw: bytes = b""           # every byte of this response (head and body framing)
    framing: str = ""          # "length", "chunked", "close", "none"
    complete: bool = True      # False: cut short by the peer closing (allow_incomplete)
    trailers: List[Tuple[str, str]] = field(default_factory=list)
    chunk_sizes: List[int] = field(default_factory=list)
    bad_framing: bytes = b""   # the malformed chunk line that ended an allow_incomplete body


    def has_header(self, name: str) -> bool:
        return self.header(name) is not None

    def header_names(self) -> List[str]:
        return [k.lower() for k, _ in self.headers]

    def json(self):
        return json.loads(self.body.decode())

    def __repr__(self):
        return "<Response %s %r headers=%r body=%r%s>" % (
            self.status, self.reason, self.headers, self.body[:200],
            "" if self.complete else " INCOMPLETE")


class ResponseReader:
    """The strict HTTP/1.x response parser, reading from a socket one response at a time (so
    pipelined responses can be split). A status line, header line or framing that breaks
    RFC 9112 is an AssertionError: ferry must never send one. Every read waits at most
    `timeout` seconds of inactivity (TimeoutError), and never past a call's `deadline`
    (time.monotonic() value) when one is given."""

    def __init__(self, sock: socket.socket, timeout: float = 5.0):
        self.sock = sock
        self.timeout = timeout
        self.buf = bytearray()
        self.eof = False
        self.reset = False

    def _fill(self, deadline: Optional[float] = None) -> bool:
        """Read more bytes into buf. False on EOF or RST; TimeoutError when nothing came."""
        if self.eof:
            return False
        wait = self.timeout
        if deadline is not None:
            wait = deadline - time.monotonic()
            if self.timeout is not None:
                wait = min(wait, self.timeout)
            if wait <= 0:
                raise TimeoutError("no data from peer before the deadline (buffered %r)"
                                   % bytes(self.buf[:600]))
        self.sock.settimeout(wait)
        try:
            d = self.sock.recv(1 << 18)
        except socket.timeout:
            raise TimeoutError("no data from peer within %.1fs (buffered %r)"
                               % (wait, bytes(self.buf[:600])))
        except ConnectionResetError:
            self.reset = True
            d = b""
        if not d:
            self.eof = True
            return False
        self.buf += d
        return True

    def _readline(self, deadline=None, limit: int = 1 << 20) -> bytes:
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                line = bytes(self.buf[: i + 1])
                del self.buf[: i + 1]
                return line
            if len(self.buf) > limit:
                raise AssertionError("line too long from ferry: %r" % bytes(self.buf[:200]))
            if not self._fill(deadline):
                raise IncompleteResponse("connection closed while reading a line%s"
                                         % (" (reset)" if self.reset else ""),
                                         received=self.buf)

    def _read_exact(self, n: int, raw: bytearray, deadline=None) -> Tuple[bytes, bool]:
        out = bytearray()
        while len(out) < n:
            if not self.buf:
                if not self._fill(deadline):
                    raw += out
                    return bytes(out), False
            take = min(n - len(out), len(self.buf))
            out += self.buf[:take]
            del self.buf[:take]
        raw += out
        return bytes(out), True

    def at_eof(self) -> bool:
        """True if the peer has closed and nothing is buffered."""
        return self.eof and not self.buf

    def read_head(self, deadline=None) -> Response:
        r = Response()
        raw = bytearray()
        if not self.buf and self.eof:
            raise IncompleteResponse("connection closed before any response bytes")
        try:
            line = self._readline(deadline)
        except IncompleteResponse as e:
            raise IncompleteResponse("connection closed before a complete status line%s"
                                     % (" (reset)" if self.reset else ""), received=e.received)
        raw += line
        m = re.match(rb"^(HTTP/\d\.\d) (\d{3})(?: (.*))?\r\n$", line)
        if not m:
            raise AssertionError("malformed status line from ferry: %r" % line)
        r.version = m.group(1).decode()
        r.status = int(m.group(2))
        r.reason = (m.group(3) or b"").decode("latin-1")
        while True:
            try:
                line = self._readline(deadline)
            except IncompleteResponse as e:
                raise IncompleteResponse("connection closed inside the response head",
                                         received=raw + e.received)
            raw += line
            if line == b"\r\n":
                break
            r.headers.append(_parse_field(line, "ferry"))
        r.raw = bytes(raw)
        return r

    def read_response(self, head: bool = False, allow_incomplete: bool = False,
                      max_body: int = 1 << 31, deadline: Optional[float] = None) -> Response:
        """Read the next response (1xx interim responses included). head=True: the response
        to a HEAD request (no body). allow_incomplete=True: a body cut short by the peer
        closing (or a malformed chunk line) gives .complete=False instead of raising."""
        r = self.read_head(deadline)
        raw = bytearray(r.raw)
        te = r.header_all("Transfer-Encoding")
        cl = r.header_all("Content-Length")
        assert not (te and cl), "ferry sent both Transfer-Encoding and Content-Length: %r" % r
        if te:
            assert [t.strip().lower() for t in ",".join(te).split(",")] == ["chunked"], \
                "unexpected Transfer-Encoding from ferry: %r" % te
        if cl:
            assert len(cl) == 1, "multiple Content-Length from ferry: %r" % cl
            assert re.match(r"^\d+$", cl[0]), "bad Content-Length from ferry: %r" % cl
        if head or 100 <= r.status < 200 or r.status in (204, 304):
            r.framing = "none"
        elif te:
            r.framing = "chunked"
        elif cl:
            r.framing = "length"
        else:
            r.framing = "close"

        if r.framing == "length":
            r.body, r.complete = self._read_exact(int(cl[0]), raw, deadline)
        elif r.framing == "chunked":
            r.body = self._read_chunked(r, raw, max_body, allow_incomplete, deadline)
        elif r.framing == "close":
            while self._fill(deadline):
                pass
            r.body = bytes(self.buf)
            self.buf.clear()
            raw += r.body
        r.raw = bytes(raw)
        if not r.complete and not allow_incomplete:
            raise IncompleteResponse("connection closed inside the %s body (got %d bytes)"
                                     % (r.framing, len(r.body)), partial=r, received=r.raw)
        return r

    def _read_chunked(self, r: Response, raw: bytearray, max_body: int, allow_incomplete: bool,
                      deadline) -> bytes:
        body = bytearray()
        r.complete = False
        try:
            while True:
                line = self._readline(deadline)
                raw += line
                m = _CHUNK_LINE.match(line)
                if not m:
                    if allow_incomplete:
                        r.bad_framing = line
                        return bytes(body)
                    raise AssertionError("bad chunk line from ferry: %r" % line)
                size = int(m.group(1), 16)
                if size == 0:
                    while True:
                        tl = self._readline(deadline)
                        raw += tl
                        if tl == b"\r\n":
                            break
                        r.trailers.append(_parse_field(tl, "ferry"))
                    r.complete = True
                    return bytes(body)
                r.chunk_sizes.append(size)
                data, ok = self._read_exact(size, raw, deadline)
                body += data
                if not ok:
                    return bytes(body)
                crlf, ok = self._read_exact(2, raw, deadline)
                if not ok:
                    return bytes(body)
                if crlf != b"\r\n":
                    raise AssertionError("chunk data not followed by CRLF from ferry: %r"
                                         % (data[-10:] + crlf))
                if len(body) > max_body:
                    raise AssertionError("body too large")
        except IncompleteResponse:
            return bytes(body)

    def read_final(self, head: bool = False, allow_incomplete: bool = False,
                   deadline: Optional[float] = None) -> Response:
        """Read responses, skipping 1xx interim ones (except 101), return the final one."""
        while True:
            r = self.read_response(head=head, allow_incomplete=allow_incomplete,
                                   deadline=deadline)
            if 100 <= r.status < 200 and r.status != 101:
                continue
            return r

    def read_until_close(self, timeout: float, limit: int = 1 << 30) -> bytes:
        """Everything (buffered or arriving) until the peer closes; TimeoutError if it does not
        close within `timeout`."""
        deadline = time.monotonic() + timeout
        try:
            while self._fill(deadline):
                if len(self.buf) > limit:
                    raise AssertionError("too much data")
        except TimeoutError:
            raise TimeoutError("peer did not close within %.1fs; got %d bytes: %r"
                               % (timeout, len(self.buf), bytes(self.buf[:300])))
        out = bytes(self.buf)
        self.buf.clear()
        return out


def _parse_field(line: bytes, who: str) -> Tuple[str, str]:
    """One header (or trailer) line sent by ferry, strictly: CRLF, token name, colon, no
    obs-fold, no CR/LF/NUL in the value."""
    if not line.endswith(b"\r\n"):
        raise AssertionError("header line without CRLF from %s: %r" % (who, line))
    if line[:1] in (b" ", b"\t"):
        raise AssertionError("obs-fold from %s: %r" % (who, line))
    name, sep, value = line[:-2].partition(b":")
    if not sep or not _TOKEN.match(name):
        raise AssertionError("malformed header line from %s: %r" % (who, line))
    if re.search(rb"[\r\n\x00]", value):
        raise AssertionError("CR, LF or NUL in a header value from %s: %r" % (who, line))
    return name.decode("latin-1"), value.strip(b" \t").decode("latin-1")


class _Bytes:
    """A socket stand-in that returns the bytes it was given, then EOF (for the readers)."""

    def __init__(self, d: bytes):
        self.d = d

    def settimeout(self, t):
        pass

    def recv(self, n):
        d, self.d = self.d[:n], self.d[n:]
        return d


def parse_responses(data: bytes, heads: Tuple[bool, ...] = ()) -> List[Response]:
    """Split a byte string holding several responses (heads[i]: response i answers a HEAD)."""
    rd = ResponseReader(_Bytes(data))
    out = []
    while rd.buf or not rd.eof:
        if not rd.buf and not rd._fill():
            break
        i = len(out)
        out.append(rd.read_response(head=heads[i] if i < len(heads) else False))
    return out


def recv_until_close(sock: socket.socket, timeout: float = 5.0, limit: int = 1 << 30) -> bytes:
    """Read until EOF (or ECONNRESET) bounded by an overall timeout (raises TimeoutError)."""
    return ResponseReader(sock).read_until_close(timeout, limit)


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


class Client:
    """A raw client connection to ferry (VTest's client): exact bytes out, strict responses
    in, every wait bounded. Use as a context manager; .sock and .reader are the socket and
    its ResponseReader."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = RESPONSE_TIMEOUT):
        self.sock = connect(port, timeout=timeout, host=host)
        self.reader = ResponseReader(self.sock, timeout=timeout)
        self.timeout = timeout

    def send(self, data: bytes) -> bool:
        """Send bytes; False if the peer already closed or reset the connection."""
        try:
            self.sock.sendall(data)
            return True
        except (BrokenPipeError, ConnectionResetError):
            return False

    def txreq(self, method: str = "GET", target: str = "/", **kw) -> bool:
        """send(simple_request(method, target, **kw))."""
        return self.send(simple_request(method, target, **kw))

    def rxresp(self, head: bool = False, timeout: Optional[float] = None,
               allow_incomplete: bool = False) -> Response:
        """The next final response (1xx interim ones skipped, except 101), all of it within
        `timeout` (default: the client's). head=True: the response to a HEAD request."""
        deadline = time.monotonic() + (timeout or self.timeout)
        return self.reader.read_final(head=head, allow_incomplete=allow_incomplete,
                                      deadline=deadline)

    def rxresp_interim(self, timeout: Optional[float] = None):
        """(list of 1xx interim responses, final response)."""
        deadline = time.monotonic() + (timeout or self.timeout)
        interim = []
        while True:
            r = self.reader.read_response(deadline=deadline)
            if 100 <= r.status < 200 and r.status != 101:
                interim.append(r)
                continue
            return interim, r

    def wait_closed(self, timeout: float = CLOSE_TIMEOUT, what: str = "ferry") -> bytes:
        """Wait until the peer closes; returns the bytes that arrived meanwhile. TimeoutError
        (naming `what`) if the connection is still open after `timeout`."""
        try:
            return self.reader.read_until_close(timeout)
        except TimeoutError as e:
            raise TimeoutError("%s did not close the connection within %.1fs (%s)"
                               % (what, timeout, e))

    def expect_close(self, timeout: float = CLOSE_TIMEOUT, what: str = "ferry"):
        """The peer closes within `timeout` without sending another byte."""
        extra = self.wait_closed(timeout, what)
        assert not extra, "%s sent unexpected extra bytes after the response: %r" % (
            what, extra[:300])

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


# --------------------------------------------------------------------------
# expect: checks shared by many tests
# --------------------------------------------------------------------------

LEAK_PATTERNS = [
    rb"/work/", rb"/tmp/", rb"/home/", rb"/usr/", rb"src/", rb"\.c:\d", rb"\.c\b", rb"\.h\b",
    rb"errno", rb"0x[0-9a-fA-F]{6,}", rb"AddressSanitizer", rb"\bfd\s*=?\s*\d",
]


def expect_error_response(resp: Response, status: int, upstream_port=None, extra_forbidden=()):
    """The shape of a response ferry generated itself: this status, exactly one
    Content-Length, not chunked, a small non-empty text/plain body leaking no internals."""
    assert resp.status == status, "expected %d, got %r" % (status, resp)
    cl = resp.header_all("Content-Length")
    assert len(cl) == 1, "error response must carry exactly one Content-Length: %r" % resp.headers
    assert not resp.has_header("Transfer-Encoding"), \
        "error response must not be chunked: %r" % resp.headers
    assert int(cl[0]) == len(resp.body)
    assert 0 < len(resp.body) <= MAX_ERROR_BODY, \
        "error body should be small and non-empty: %r" % resp.body
    ctype = resp.header("Content-Type", "")
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


CANARY = b"GET /__canary HTTP/1.1\r\nHost: canary.test\r\n\r\n"


def expect_upstream_saw(ferry_port: int, up: "UpstreamServer", expected_paths=(),
                        partial_ok: bool = False) -> List["UpstreamRequest"]:
    """Synchronise with a canary request on a new client connection, then check that the
    upstream received exactly `expected_paths` (in order) as complete, well-framed requests
    before the canary, and not a single other byte. Returns those requests.

    partial_ok=True (errors detected inside a request *body*, which a streaming proxy may only
    see after it forwarded the head): an incomplete request may have reached the upstream,
    but that upstream connection must then have been closed by ferry (never completed, never
    reused)."""
    with Client(ferry_port) as c:
        c.send(CANARY)
        r = c.rxresp()
        assert r.status == 200, "canary request failed: %r" % r
    reqs = up.wait_requests(len(expected_paths) + 1)
    paths = [q.path for q in reqs]
    assert paths == list(expected_paths) + ["/__canary"], \
        "upstream saw %r, expected %r (+ canary)" % (reqs, list(expected_paths))
    assert not up.bad, "ferry sent malformed data upstream: %r" % up.bad
    left = up.leftover()
    if partial_ok:
        for cid, data in left.items():
            up.wait_conn_closed(cid, what="ferry to close upstream connection %d, which a "
                                "partial rejected request reached: %r" % (cid, data[:300]))
    else:
        assert not left, "bytes of a rejected request reached the upstream: %r" % left
    return reqs[:-1]


# --------------------------------------------------------------------------
# server: requests from ferry
# --------------------------------------------------------------------------

class FramingError(AssertionError):
    """ferry sent an upstream request that breaks HTTP/1.1 framing."""


@dataclass
class UpstreamRequest(HeaderLookup):
    """One request as an upstream received it from ferry."""
    method: str
    path: str                  # the request-target as sent
    version: str
    headers: List[Tuple[str, str]]
    body: bytes = b""
    conn_id: int = 0           # which upstream connection (1, 2, ... per server)
    raw: bytes = b""           # every byte of the request (head and body framing)
    raw_head: bytes = b""      # the request line


    def header_names(self) -> List[str]:
        return [k.lower() for k, _ in self.headers]

    def __repr__(self):
        return "<UpstreamRequest %s %s conn=%d body=%r>" % (self.method, self.path,
                                                            self.conn_id, self.body[:80])


def parse_request_head(head: bytes):
    """(method, target, [(name, value)]) of a request head ferry sent (as read with
    SockReader.read_head), parsed strictly by SockReader.rxreq_head."""
    r = SockReader(_Bytes(head), timeout=None).rxreq_head()
    return r.method, r.path, r.headers


class SockReader:
    """Buffered reader for the server side of a raw socket (RawUpstream handlers, and under
    UpstreamServer). rxreq() is the strict parser of the requests ferry sends upstream; the
    other readers take bytes as they come. EOFError when the peer closes first.
    on_data(bytes) sees every byte received."""

    def __init__(self, sock: socket.socket, timeout: Optional[float] = 10.0, on_data=None):
        self.sock = sock
        self.sock.settimeout(timeout)
        self.buf = bytearray()
        self.on_data = on_data
        self.consumed = 0      # bytes handed out (read from buf) so far
        self._cur = None       # raw bytes of the request rxreq() is reading

    def _fill(self) -> bool:
        try:
            d = self.sock.recv(1 << 18)
        except ConnectionResetError:
            d = b""
        if not d:
            return False
        if self.on_data is not None:
            self.on_data(d)
        self.buf += d
        return True

    def _take(self, n: int) -> bytes:
        d = bytes(self.buf[:n])
        del self.buf[:n]
        self.consumed += len(d)
        if self._cur is not None:
            self._cur += d
        return d

    def readline(self, limit: int = 1 << 20) -> bytes:
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                return self._take(i + 1)
            if len(self.buf) > limit:
                raise FramingError("line longer than %d bytes from ferry: %r"
                                   % (limit, bytes(self.buf[:200])))
            if not self._fill():
                raise EOFError("EOF in line %r" % bytes(self.buf))

    def read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._fill():
                raise EOFError("EOF after %d of %d bytes" % (len(self.buf), n))
        return self._take(n)

    def read_head(self) -> bytes:
        """Read up to and including the blank line; returns the head bytes."""
        while True:
            i = self.buf.find(b"\r\n\r\n")
            if i >= 0:
                return self._take(i + 4)
            if not self._fill():
                raise EOFError("EOF in head %r" % bytes(self.buf))

    def rxreq_head(self) -> UpstreamRequest:
        """The head of the next request, strictly (FramingError): a request line
        "token SP target SP HTTP/1.x", header lines as _parse_field wants them, at most one
        Content-Length of digits, Transfer-Encoding only as exactly "chunked" and never with
        a Content-Length. Follow with rxreq_body()."""
        self._cur = bytearray()
        line = self.readline()
        m = re.match(rb"^([!#$%&'*+\-.^_`|~0-9A-Za-z]+) (\S+) (HTTP/1\.[01])\r\n$", line)
        if not m:
            raise FramingError("bad request line from ferry: %r" % line)
        headers = []
        while True:
            h = self.readline()
            if h == b"\r\n":
                break
            try:
                headers.append(_parse_field(h, "ferry (upstream request)"))
            except AssertionError as e:
                raise FramingError(str(e))
        req = UpstreamRequest(m.group(1).decode(), m.group(2).decode("latin-1"),
                              m.group(3).decode(), headers, raw_head=line)
        te = req.header_all("Transfer-Encoding")
        cl = req.header_all("Content-Length")
        if te and (te != ["chunked"] or cl):
            raise FramingError("bad framing from ferry: %r" % headers)
        if cl and (len(cl) != 1 or not re.match(r"^\d+$", cl[0])):
            raise FramingError("bad Content-Length from ferry: %r" % cl)
        return req

    def rxreq_body(self, req: UpstreamRequest) -> bytes:
        """The body of the request whose head rxreq_head() returned (strict chunked
        framing); sets req.body and req.raw."""
        if req.header("Transfer-Encoding") is not None:
            body = b"".join(self.iter_chunked())
        elif req.header("Content-Length") is not None:
            body = self.read_exact(int(req.header("Content-Length")))
        else:
            body = b""
        req.body = body
        req.raw = bytes(self._cur)
        self._cur = None
        return body

    def rxreq(self) -> UpstreamRequest:
        """The next request from ferry, head and body (see rxreq_head)."""
        req = self.rxreq_head()
        self.rxreq_body(req)
        return req

    def read_request(self):
        """rxreq() as a tuple: (method, target, headers [list of pairs], body bytes)."""
        r = self.rxreq()
        return r.method, r.path, r.headers, r.body

    def iter_chunked(self):
        """Yield the chunk payloads of a chunked body, strictly (FramingError); consumes the
        trailer section."""
        while True:
            line = self.readline()
            m = _CHUNK_LINE.match(line)
            if not m:
                raise FramingError("bad chunk line from ferry: %r" % line)
            size = int(m.group(1), 16)
            if size == 0:
                while True:
                    t = self.readline()
                    if t == b"\r\n":
                        return
                    try:
                        _parse_field(t, "ferry (trailer)")
                    except AssertionError as e:
                        raise FramingError(str(e))
            # hand out buffered data directly where possible to avoid copies
            left = size
            while left:
                if not self.buf and not self._fill():
                    raise EOFError("EOF in chunk")
                piece = self._take(min(left, len(self.buf)))
                left -= len(piece)
                yield piece
            if self.read_exact(2) != b"\r\n":
                raise FramingError("chunk data not followed by CRLF from ferry")

    def iter_exact(self, n: int):
        """Yield the next n bytes in pieces (big transfers: straight from the socket once the
        buffer is drained, without copying through it)."""
        left = n
        while left:
            if self.buf:
                piece = self._take(min(left, len(self.buf)))
            else:
                try:
                    piece = self.sock.recv(min(left, 1 << 20))
                except ConnectionResetError:
                    piece = b""
                if not piece:
                    raise EOFError("EOF with %d bytes left" % left)
                if self.on_data is not None:
                    self.on_data(piece)
                self.consumed += len(piece)
                if self._cur is not None:
                    self._cur += piece
            left -= len(piece)
            yield piece


# --------------------------------------------------------------------------
# server: the in-process HTTP upstream
# --------------------------------------------------------------------------

class _UpstreamHandler(http.server.BaseHTTPRequestHandler):
    """One upstream connection of an UpstreamServer. Requests are read with the strict
    SockReader.rxreq (not http.server's parser); responses are written with http.server's
    send_response_only / send_header / end_headers / wfile, or the helpers below."""
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # avoid Nagle/delayed-ACK 40 ms stalls
    server_version = "test-upstream"
    sys_version = ""

    def log_message(self, fmt, *args):  # quiet
        pass

    def setup(self):
        super().setup()
        self.conn_id = self.server.owner._conn_opened(self.connection)

    def finish(self):
        try:
            super().finish()
        finally:
            self.server.owner._conn_closed(self.conn_id, self.connection)

    def handle(self):
        owner = self.server.owner
        cid = self.conn_id
        rd = SockReader(self.connection, timeout=None,
                        on_data=lambda d: owner._on_data(cid, d))
        self.close_connection = False
        while not self.close_connection:
            try:
                req = rd.rxreq_head()
                self.command, self.path, self.request_version = req.method, req.path, req.version
                self.raw_requestline = req.raw_head
                self.requestline = req.raw_head.decode("latin-1").rstrip("\r\n")
                self.headers = http.client.HTTPMessage()
                for k, v in req.headers:
                    self.headers[k] = v
                if ((req.header("Expect") or "").lower() == "100-continue"
                        and req.version == "HTTP/1.1"):
                    # what http.server does: answer 100 before reading the body
                    self.send_response_only(100)
                    self.end_headers()
                rd.rxreq_body(req)
            except FramingError as e:
                owner.note_bad(cid, str(e))
                return
            except (EOFError, OSError):
                return
            req.conn_id = cid
            tokens = [t.strip().lower() for t in ",".join(req.header_all("Connection")).split(",")]
            self.close_connection = ("close" in tokens
                                     or (req.version == "HTTP/1.0" and "keep-alive" not in tokens))
            owner._record(req, cid, rd.consumed)
            owner._route_for(req.path)(self, req)
            self.wfile.flush()
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


def route_ok_len(h, req):
    """A route answering 200 "ok METHOD TARGET len=BODYLEN"."""
    h.send_simple(200, ("ok %s %s len=%d\n" % (req.method, req.path, len(req.body)))
                  .encode("latin-1"))


class _TCPServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024
    block_on_close = False


class UpstreamServer:
    """Threaded HTTP/1.1 keep-alive upstream on 127.0.0.1:PORT (VTest's server).

    Every request ferry sends is parsed strictly (SockReader.rxreq); a malformed one is
    recorded in .bad, its connection closed, and fails the `upstream` fixture.
    .requests     UpstreamRequest list (method, path, headers, body, conn_id, raw)
    .conn_count   number of TCP connections accepted so far
    .received     conn_id -> every byte received on that connection
    .leftover()   bytes received that are not part of a complete request
    .route(path, fn)  fn(handler, req); path ending in "/" is a prefix
    Built-in routes: /echo, /echo-chunked, /size/N, /chunked/N, /headers, /status/N,
                     /slow/S, /stream/N; anything else -> default_route, by default
                     200 "ok METHOD PATH".
    """

    def __init__(self, port: int = 0, default_route=None, host: str = "127.0.0.1", tls=None):
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.requests: List[UpstreamRequest] = []
        self.conn_count = 0
        self.open_conns = set()
        self.closed_conns = set()
        self.received = {}
        self.consumed = {}
        self.bad = []
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
        self.default_route = default_route or _route_default
        self.httpd = _TCPServer((host, port), _UpstreamHandler)
        self.httpd.owner = self
        self.port = self.httpd.server_address[1]
        self.url = "http://%s:%d" % (host, self.port)
        if tls is not None:
            # tls: an ssl.SSLContext (server side). The handshake runs in accept(): one that
            # fails (ferry refused our certificate) is dropped there, as socketserver does with
            # any OSError.
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
            self.url = "https://%s:%d" % (host, self.port)
        self.authority = "%s:%d" % (host, self.port)
        self._thread = None

    def route(self, path: str, fn):
        self.routes.insert(0, (path, fn))

    def _route_for(self, target: str):
        path_only = target.split("?", 1)[0]
        for prefix, fn in self.routes:
            if path_only == prefix or (prefix.endswith("/") and path_only.startswith(prefix)):
                return fn
        return self.default_route

    # -- called by the connection threads ---------------------------------
    def _conn_opened(self, sock) -> int:
        with self.cond:
            self.conn_count += 1
            cid = self.conn_count
            self.open_conns.add(sock)
            self.received[cid] = bytearray()
            self.consumed[cid] = 0
            return cid

    def _conn_closed(self, cid, sock):
        with self.cond:
            self.open_conns.discard(sock)
            self.closed_conns.add(cid)
            self.cond.notify_all()

    def _on_data(self, cid, d):
        with self.cond:
            self.received[cid] += d
            self.cond.notify_all()

    def _record(self, req, cid, consumed):
        with self.cond:
            self.requests.append(req)
            self.consumed[cid] = max(self.consumed[cid], consumed)
            self.cond.notify_all()

    def note_bad(self, cid, msg):
        with self.cond:
            self.bad.append((cid, msg))
            self.cond.notify_all()

    # -- lifecycle ----------------------------------------------------------
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

    # -- observation --------------------------------------------------------
    def wait_requests(self, n: int, timeout: float = 5.0) -> List[UpstreamRequest]:
        """At least n requests recorded (bounded); returns all of them."""
        wait_for(lambda: len(self.requests) >= n, timeout, cond=self.cond,
                 what=lambda: "%d upstream requests (got %d: %r)"
                 % (n, len(self.requests), self.requests))
        with self.lock:
            return list(self.requests)

    def wait_conn_closed(self, cid: int, timeout: float = CLOSE_TIMEOUT, what=None):
        """Upstream connection `cid` was closed (by ferry, unless .bad says otherwise)."""
        wait_for(lambda: cid in self.closed_conns, timeout, cond=self.cond,
                 what=what or "ferry to close upstream connection %d" % cid)

    @property
    def last(self) -> UpstreamRequest:
        with self.lock:
            return self.requests[-1]

    def leftover(self) -> dict:
        """conn_id -> bytes received that are not part of a complete request."""
        with self.lock:
            return {cid: bytes(data[self.consumed[cid]:])
                    for cid, data in self.received.items() if len(data) > self.consumed[cid]}

    def reset(self):
        """Forget recorded requests and malformed ones; bytes received so far are forgiven."""
        with self.lock:
            self.requests.clear()
            self.bad.clear()
            for cid, data in self.received.items():
                self.consumed[cid] = len(data)


# --------------------------------------------------------------------------
# server: the raw scriptable upstream
# --------------------------------------------------------------------------

class RawUpstream:
    """Raw TCP server on 127.0.0.1:PORT. For each accepted connection, runs
    handler(conn) in a thread (conn is a socket with a 10 s timeout; wrap in
    SockReader for buffered reads). Set the handler with .handler = fn or
    RawUpstream(fn). Exceptions from handlers are collected in .errors; an
    AssertionError among them (a failed assert, or a malformed request from ferry
    seen by SockReader.rxreq) fails the raw_upstream fixture.
    .conn_count counts accepted connections."""

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
        wait_for(lambda: self.conn_count >= n, timeout, cond=self.cond,
                 what=lambda: "%d raw upstream connections (accepted %d)" % (n, self.conn_count))
        return self.conn_count

    def wait_done(self, n: int, timeout: float = 10.0):
        wait_for(lambda: self.done_count >= n, timeout, cond=self.cond,
                 what=lambda: "%d raw upstream handlers to finish (finished %d)"
                 % (n, self.done_count))

    def assertion_errors(self) -> List[BaseException]:
        with self.lock:
            return [e for e in self.errors if isinstance(e, AssertionError)]

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
