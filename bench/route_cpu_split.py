#!/usr/bin/env python3
"""ferry's CPU per request with 1 and with 1,000 routes, split into user and system time.

  bench/route_cpu_split.py [--ferry BIN] [--rounds 10] [--duration 5] [--conns 50] [--path /small]

Routing is user-space work; the harness's `CPU s/10k` is user + system, and system time (the
kernel's TCP path) is most of it and most of its noise. This A/B pair shows the two apart:
ferry with gen_routes.py --single and with the 1,000-route file, alternated for --rounds rounds
(the order flips every round), each measurement a fresh ferry, 1 s of wrk warm-up, then
--duration s of wrk. utime and stime come from /proc/PID/stat before and after. Pinned like the
harness: ferry on CPU 1; wrk and the upstream (an nginx like the harness's: `return 200` with a
100-byte body, keep-alive) on CPU 0. Prints the per-round values, then the medians and the
median of the per-round ratios (1,000 / 1).

Needs wrk, nginx and taskset.
"""
import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TICK = os.sysconf("SC_CLK_TCK")
BODY = ("ferry-bench-small:" + "0123456789" * 10)[:100]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port, proc, what):
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("route_cpu_split: %s exited" % what)
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.02)
    raise SystemExit("route_cpu_split: %s does not listen on %d" % (what, port))


def cpu_ticks(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]), int(fields[12])     # utime, stime (fields 14, 15)


def wrk_requests(out):
    for line in out.splitlines():
        line = line.strip()
        if "requests in" in line:
            return int(line.split()[0])
    raise SystemExit("route_cpu_split: no wrk result:\n" + out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ferry", default=os.path.join(HERE, "..", "build", "ferry"))
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--conns", type=int, default=50)
    ap.add_argument("--path", default="/small")
    a = ap.parse_args()
    for tool in ("wrk", "nginx", "taskset"):
        if not shutil.which(tool):
            raise SystemExit("route_cpu_split: %s not found" % tool)

    with tempfile.TemporaryDirectory(prefix="ferry-cpusplit-") as d:
        bin_ = os.path.join(d, "ferry")
        shutil.copy(a.ferry, bin_)
        up = free_port()
        os.makedirs(os.path.join(d, "up"))
        with open(os.path.join(d, "up", "nginx.conf"), "w") as f:
            f.write("""worker_processes 1; daemon off; master_process off; pid %(d)s/up/nginx.pid;
error_log %(d)s/up/error.log warn;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 100000000; keepalive_timeout 600s;
  client_body_temp_path %(d)s/up; proxy_temp_path %(d)s/up; fastcgi_temp_path %(d)s/up;
  uwsgi_temp_path %(d)s/up; scgi_temp_path %(d)s/up;
  server { listen 127.0.0.1:%(p)d backlog=4096; location / { return 200 "%(b)s"; } } }
""" % dict(d=d, p=up, b=BODY))
        upstream = subprocess.Popen(["taskset", "-c", "0", "nginx", "-p", d + "/up/", "-c", d + "/up/nginx.conf",
                                     "-e", d + "/up/error.log"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_port(up, upstream, "upstream nginx")
            rows = {"1": [], "1000": []}
            for rnd in range(a.rounds):
                order = ["1", "1000"] if rnd % 2 == 0 else ["1000", "1"]
                for name in order:
                    port = free_port()
                    cfg = os.path.join(d, "routes-%s.yaml" % name)
                    with open(cfg, "w") as f:
                        subprocess.run([sys.executable, os.path.join(HERE, "gen_routes.py"), "--listen-port",
                                        str(port), "--upstream-port", str(up), "--max-connections", "2000"]
                                       + (["--single"] if name == "1" else []), stdout=f, check=True)
                    p = subprocess.Popen(["taskset", "-c", "1", bin_, "-c", cfg],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    try:
                        wait_port(port, p, "ferry")
                        url = "http://127.0.0.1:%d%s" % (port, a.path)
                        subprocess.run(["taskset", "-c", "0", "wrk", "-t1", "-c%d" % a.conns, "-d1s", url],
                                       capture_output=True, check=True)
                        u0, s0 = cpu_ticks(p.pid)
                        out = subprocess.run(["taskset", "-c", "0", "wrk", "-t1", "-c%d" % a.conns,
                                              "-d%ds" % a.duration, url], capture_output=True, text=True,
                                             check=True).stdout
                        u1, s1 = cpu_ticks(p.pid)
                    finally:
                        p.terminate()
                        p.wait()
                    n = wrk_requests(out)
                    r = dict(req=n, rps=n / a.duration, user=(u1 - u0) / TICK * 1e4 / n,
                             sys=(s1 - s0) / TICK * 1e4 / n)
                    rows[name].append(r)
                    print("round %2d  %4s routes  %8.0f req/s  user %.4f  sys %.4f  total %.4f s/10k"
                          % (rnd + 1, name, r["rps"], r["user"], r["sys"], r["user"] + r["sys"]))
                    sys.stdout.flush()
        finally:
            upstream.terminate()
            upstream.wait()

    def med(name, k):
        return statistics.median(r[k] if k != "total" else r["user"] + r["sys"] for r in rows[name])

    def ratio(k):
        v = lambda r: r[k] if k != "total" else r["user"] + r["sys"]
        rs = [v(b) / v(a_) for a_, b in zip(rows["1"], rows["1000"]) if v(a_) > 0]
        return statistics.median(rs), min(rs), max(rs)

    print()
    print("| figure | 1 route | 1,000 routes | ratio (median of rounds, lowest-highest) |")
    print("|---|---|---|---|")
    for k, label in (("user", "user CPU s/10k"), ("sys", "system CPU s/10k"), ("total", "CPU s/10k"),
                     ("rps", "req/s")):
        m, lo, hi = ratio(k)
        fmt = "%.0f" if k == "rps" else "%.4f"
        print("| %s | %s | %s | %.3f (%.2f-%.2f) |" % (label, fmt % med("1", k), fmt % med("1000", k), m, lo, hi))
    return 0


if __name__ == "__main__":
    sys.exit(main())
