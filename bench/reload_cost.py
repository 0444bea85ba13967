#!/usr/bin/env python3
"""Reload cost (issue 6): the time from SIGHUP to the new configuration serving, with and without
10,000 idle keep-alive connections open.

  bench/reload_cost.py [--ferry BIN] [--reloads 20] [--idle 10000] [--routes 1,1000]
                       [--workers 1] [--no-pin] [--json FILE]

For each route table (gen_routes.py: --single for 1, the 1,000-route file for 1000) and each
idle count (0 and --idle), a fresh ferry is started with the table plus a first route
`match: { path: /__version }` that ferry answers itself with the body "generation K", a pid-file
and idle-timeout 1h. A local upstream (a Python thread) serves the other routes. Then:

 1. N idle clients: N keep-alive connections, each makes one request (GET /small, which goes
    through the upstream) and then sits idle, as in the harness's idle scenario.
 2. --reloads times: the file is rewritten (only the /__version body changes: "generation K"),
    the clock starts, SIGHUP goes to the pid in the pid-file, and one keep-alive connection (opened
    before the signal) sends GET /__version back to back until the body is the new one. That
    time is "SIGHUP to new body". The slowest of those requests is "slowest request during a
    reload": the old generation keeps serving while the main thread loads the file, and this
    shows whether it is held up (with --workers 1 and ferry pinned to one CPU, the main
    thread's parse shares that CPU with the worker). ferry's own figure is parsed from its log line
    `reload: generation N serving (...) X ms after the signal` (whole ms; its clock starts when
    the main thread begins the reload). A fresh connection must then see the new body too.
 3. Afterwards: every idle connection must still be open (none readable: no EOF, no reset), and
    a request on each must get 200 with the newest body (the next request of a connection that
    was idle through the reloads uses the new configuration).

Pinned by default as the harness pins: ferry on CPU 1, this script and the upstream on CPU 0.
Prints one table; --json writes every measurement.
"""
import argparse
import http.server
import json
import os
import re
import resource
import select
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SMALL = b"s" * 100


class Upstream(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        # one write: a head and a body in two would meet Nagle and a delayed ACK (40 ms)
        self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(SMALL), SMALL))

    def log_message(self, *args):
        pass


def read_response(sock, buf=b""):
    """One response with Content-Length from sock; returns (status, body, leftover)."""
    while b"\r\n\r\n" not in buf:
        d = sock.recv(65536)
        if not d:
            raise ConnectionError("closed before the response head")
        buf += d
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    n = 0
    for line in lines[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            n = int(v.strip())
    while len(rest) < n:
        d = sock.recv(65536)
        if not d:
            raise ConnectionError("closed inside the body")
        rest += d
    return status, rest[:n], rest[n:]


def get(sock, path, host):
    sock.sendall(("GET %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (path, host)).encode())
    st, body, _ = read_response(sock)
    return st, body


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Case:
    def __init__(self, a, routes, idle, up_port, tmp):
        self.a, self.routes, self.idle, self.up_port = a, routes, idle, up_port
        self.dir = tempfile.mkdtemp(prefix="reload-%s-%d-" % (routes, idle), dir=tmp)
        self.cfg = os.path.join(self.dir, "ferry.yaml")
        self.pidf = os.path.join(self.dir, "ferry.pid")
        self.logf = os.path.join(self.dir, "ferry.log")
        self.port = free_port()
        self.host = "127.0.0.1:%d" % self.port

    def write(self, gen):
        argv = [sys.executable, os.path.join(HERE, "gen_routes.py"), "--listen-port", str(self.port),
                "--upstream-port", str(self.up_port), "--workers", str(self.a.workers),
                "--max-connections", str(self.idle + 1000), "--version-body", "generation %d" % gen,
                "--pid-file", self.pidf, "--idle-timeout", "1h"]
        if self.routes == 1:
            argv.append("--single")
        tmp = self.cfg + ".new"
        with open(tmp, "w") as f:
            subprocess.run(argv, stdout=f, check=True)
        os.rename(tmp, self.cfg)

    def say(self, msg):
        sys.stderr.write("[reload_cost %s] %d routes, %d idle: %s\n" % (time.strftime("%H:%M:%S"), self.routes,
                                                                      self.idle, msg))
        sys.stderr.flush()

    def log_text(self):
        with open(self.logf, errors="replace") as f:
            return f.read()

    def run(self):
        self.write(0)
        pre = ["taskset", "-c", self.a.proxy_cpus] if self.a.pin else []
        logfh = open(self.logf, "w")
        p = subprocess.Popen(pre + [self.a.ferry, "-c", self.cfg], stdout=subprocess.DEVNULL, stderr=logfh)
        idle = []
        try:
            deadline = time.monotonic() + 10
            while not os.path.exists(self.pidf):
                if p.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("reload_cost: ferry did not start:\n" + self.log_text())
                time.sleep(0.02)
            pid = int(open(self.pidf).read().split()[0])
            poll = socket.create_connection(("127.0.0.1", self.port))
            st, body = get(poll, "/__version", self.host)
            assert st == 200 and body == b"generation 0", (st, body)

            # 1. idle clients
            t = time.monotonic()
            for _ in range(self.idle):
                s = socket.create_connection(("127.0.0.1", self.port), timeout=10)
                idle.append(s)
            bad = 0
            for s in idle:
                st, _ = get(s, "/small", self.host)
                bad += st != 200
            if bad:
                raise SystemExit("reload_cost: %d idle clients got no 200" % bad)
            setup_s = time.monotonic() - t
            self.say("%d idle connections open after one request each (%.1f s)" % (self.idle, setup_s))
            time.sleep(1.0)
            rss0 = rss_kib(pid)

            # 2. reloads
            rows = []
            for k in range(1, self.a.reloads + 1):
                self.write(k)
                want = b"generation %d" % k
                nlog = len(re.findall(r"reload: generation \d+ serving", self.log_text()))
                polls = 0
                t0 = time.monotonic()
                os.kill(pid, signal.SIGHUP)
                worst = 0.0
                while True:
                    tq = time.monotonic()
                    st, body = get(poll, "/__version", self.host)
                    worst = max(worst, time.monotonic() - tq)
                    polls += 1
                    if body == want:
                        break
                    if body != b"generation %d" % (k - 1) or time.monotonic() - t0 > 30:
                        raise SystemExit("reload_cost: reload %d: got %d %r\n%s" % (k, st, body, self.log_text()[-2000:]))
                t1 = time.monotonic()
                fresh = socket.create_connection(("127.0.0.1", self.port))
                st, body = get(fresh, "/__version", self.host)
                fresh.close()
                if body != want:
                    raise SystemExit("reload_cost: reload %d: a new connection got %r" % (k, body))
                logged = None
                deadline = time.monotonic() + 10
                while logged is None and time.monotonic() < deadline:
                    m = re.findall(r"reload: generation (\d+) serving \(([^)]*)\) (\d+) ms after the signal",
                                   self.log_text())
                    if len(m) > nlog:
                        logged = int(m[-1][2])
                        what = m[-1][1]
                    else:
                        time.sleep(0.01)
                rows.append(dict(reload=k, sighup_to_new_ms=(t1 - t0) * 1000.0, polls=polls, logged_ms=logged,
                                 slowest_poll_ms=worst * 1000.0))
                time.sleep(0.2)
            rss1 = rss_kib(pid)
            self.say("%d reloads done" % len(rows))

            # 3. the idle connections survived, and their next request sees the newest table
            pl = select.poll()
            for s in idle:
                pl.register(s.fileno(), select.POLLIN | select.POLLHUP | select.POLLERR)
            gone = len(pl.poll(0))
            still_open = len(idle) - gone
            newest = b"generation %d" % self.a.reloads
            ok_after = 0
            for s in idle:
                try:
                    st, body = get(s, "/__version", self.host)
                    ok_after += st == 200 and body == newest
                except OSError:
                    pass
            errors = [l for l in self.log_text().splitlines() if " error " in l or "refused" in l or "warn" in l]
            alive = p.poll() is None
            self.say("idle connections checked: %d open, %d answered" % (still_open, ok_after))
        finally:
            for s in idle:
                s.close()
            p.terminate()
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            logfh.close()
        ext = [r["sighup_to_new_ms"] for r in rows]
        own = [r["logged_ms"] for r in rows if r["logged_ms"] is not None]
        return dict(routes=self.routes, idle=self.idle, reloads=len(rows), setup_s=setup_s, logged_what=what,
                    ext_median_ms=statistics.median(ext), ext_max_ms=max(ext),
                    log_median_ms=statistics.median(own) if own else None, log_max_ms=max(own) if own else None,
                    polls_median=statistics.median(r["polls"] for r in rows),
                    slowest_poll_median_ms=statistics.median(r["slowest_poll_ms"] for r in rows),
                    slowest_poll_max_ms=max(r["slowest_poll_ms"] for r in rows),
                    still_open=still_open, ok_after=ok_after, rss_before_kib=rss0, rss_after_kib=rss1,
                    alive=alive, log_problems=errors, rows=rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ferry", default=os.path.join(HERE, "..", "build", "ferry"))
    ap.add_argument("--reloads", type=int, default=20)
    ap.add_argument("--idle", type=int, default=10000)
    ap.add_argument("--routes", default="1,1000", help="route tables to run: 1 and/or 1000")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--no-pin", dest="pin", action="store_false")
    ap.add_argument("--proxy-cpus", default="1")
    ap.add_argument("--load-cpus", default="0")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = a.idle + 2000
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < need:
        raise SystemExit("reload_cost: the fd limit (%d) is too low for %d connections" % (hard, a.idle))
    if a.pin:
        os.sched_setaffinity(0, {int(c) for c in a.load_cpus.split(",")})

    up = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    up.daemon_threads = True
    threading.Thread(target=up.serve_forever, daemon=True).start()
    results = []
    with tempfile.TemporaryDirectory(prefix="ferry-reload-") as tmp:
        for routes in [int(r) for r in a.routes.split(",")]:
            for idle in sorted({0, a.idle}):
                r = Case(a, routes, idle, up.server_address[1], tmp).run()
                results.append(r)
                sys.stderr.write("reload_cost: %d routes, %d idle: SIGHUP->new body median %.1f ms max %.1f ms; "
                                 "ferry's log median %s max %s ms; %d/%d idle open, %d answered after\n"
                                 % (routes, idle, r["ext_median_ms"], r["ext_max_ms"], r["log_median_ms"],
                                    r["log_max_ms"], r["still_open"], idle, r["ok_after"]))
    up.shutdown()

    print("ferry %s, %d worker(s), %d reloads per row%s" % (a.ferry, a.workers, a.reloads,
          ", pinned (ferry on CPU %s, client and upstream on CPU %s)" % (a.proxy_cpus, a.load_cpus) if a.pin else ""))
    print("| routes | idle conns | SIGHUP to new body, median / max ms | ferry's log, median / max ms "
          "| slowest request during a reload, median / max ms "
          "| idle conns open after | answered after | RSS before / after reloads MiB |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print("| %d | %d | %.1f / %.1f | %s / %s | %.1f / %.1f | %d / %d | %d | %.1f / %.1f |"
              % (r["routes"], r["idle"], r["ext_median_ms"], r["ext_max_ms"], r["log_median_ms"], r["log_max_ms"],
                 r["slowest_poll_median_ms"], r["slowest_poll_max_ms"],
                 r["still_open"], r["idle"], r["ok_after"], r["rss_before_kib"] / 1024.0, r["rss_after_kib"] / 1024.0))
    for r in results:
        if r["log_problems"] or not r["alive"] or r["still_open"] != r["idle"] or r["ok_after"] != r["idle"]:
            print("NOTE %d routes, %d idle: alive=%s; log: %s" % (r["routes"], r["idle"], r["alive"],
                                                                 "; ".join(r["log_problems"][:5])))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(dict(argv=sys.argv, results=results), f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
