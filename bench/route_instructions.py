#!/usr/bin/env python3
"""Instructions ferry executes per keep-alive request with 1 and with 1,000 routes (callgrind).

  bench/route_instructions.py [FERRY_BIN]        (N1, N2 from the environment: 500, 2500)

The routing cost as a count that does not depend on the machine's noise: the same binary and
inputs give the same number. Like bench/instructions.sh, each case runs ferry under callgrind
twice, with N1 and N2 requests on one keep-alive connection, and prints
(I(N2) - I(N1)) / (N2 - N1), the steady-state cost per request without startup. The upstream
(100 B responses) and the client are threads of this script, outside the measurement; the
request is wrk's: `GET /small HTTP/1.1` with only `Host: 127.0.0.1:PORT`.

Cases: quick mode (--upstream, as bench/compare.sh), gen_routes.py --single, and the
1,000-route file with the benchmark's request (route 510), with a Host in no block (the
catch-all, route 1,000), and with /x.php (route 505: block 50's regex matches).
Needs valgrind.
"""
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading

from benchlib import start_ferry

HERE = os.path.dirname(os.path.abspath(__file__))
N1 = int(os.environ.get("N1", 500))
N2 = int(os.environ.get("N2", 2500))
BODY = b"x" * 100
RESP = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nContent-Type: text/plain\r\n\r\n" + BODY


def upstream():
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(16)

    def serve(c):
        buf = b""
        while True:
            d = c.recv(65536)
            if not d:
                return
            buf += d
            while b"\r\n\r\n" in buf:
                _, buf = buf.split(b"\r\n\r\n", 1)
                c.sendall(RESP)

    def accept():
        while True:
            c, _ = ls.accept()
            threading.Thread(target=serve, args=(c,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return ls.getsockname()[1]


def total(argv, n, path, host, out):
    p, port = start_ferry(["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out] + argv)
    if port is None:
        raise SystemExit("route_instructions: ferry did not start: %s" % argv)
    s = socket.create_connection(("127.0.0.1", port))
    req = ("GET %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (path, host.replace("PORT", str(port)))).encode()
    for _ in range(n):
        s.sendall(req)
        got = b""
        while not got.endswith(BODY):
            d = s.recv(65536)
            if not d:
                raise SystemExit("route_instructions: connection closed (%s %s)" % (path, host))
            got += d
        if not got.startswith(b"HTTP/1.1 200"):
            raise SystemExit("route_instructions: %r" % got[:60])
    s.close()
    p.terminate()
    p.wait()
    a = subprocess.run(["callgrind_annotate", out], capture_output=True, text=True).stdout
    for line in a.splitlines():
        if "PROGRAM TOTALS" in line:
            return int(line.split()[0].replace(",", ""))
    raise SystemExit("route_instructions: no totals in %s" % out)


def main():
    ferry = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "..", "build", "ferry")
    if not shutil.which("valgrind"):
        raise SystemExit("route_instructions: valgrind not found (apt-get install valgrind)")
    up = upstream()
    with tempfile.TemporaryDirectory() as d:
        files = {}
        for name, extra in (("1", ["--single"]), ("1000", [])):
            files[name] = os.path.join(d, "routes-%s.yaml" % name)
            with open(files[name], "w") as f:
                subprocess.run([sys.executable, os.path.join(HERE, "gen_routes.py"), "--listen-port", "0",
                                "--upstream-port", str(up)] + extra, stdout=f, check=True)
        quick = [ferry, "--listen", "127.0.0.1:0", "--upstream", "http://127.0.0.1:%d" % up,
                 "--workers", "1", "--access-log", "off"]
        cases = [
            ("quick mode (--upstream)", quick, "/small", "127.0.0.1:PORT"),
            ("1 route (file)", [ferry, "-c", files["1"]], "/small", "127.0.0.1:PORT"),
            ("1,000 routes: route 510 (benchmark)", [ferry, "-c", files["1000"]], "/small", "127.0.0.1:PORT"),
            ("1,000 routes: catch-all, route 1,000", [ferry, "-c", files["1000"]], "/small", "elsewhere.test"),
            ("1,000 routes: regex hit, route 505", [ferry, "-c", files["1000"]], "/x.php", "127.0.0.1:PORT"),
        ]
        print("%-40s %14s %10s" % ("case", "instr/request", "vs 1 route"))
        base = None
        for label, argv, path, host in cases:
            out = os.path.join(d, "cg.out")
            a = total(argv, N1, path, host, out)
            b = total(argv, N2, path, host, out)
            per = (b - a) // (N2 - N1)
            if label.startswith("1 route"):
                base = per
            rel = "%+.1f %%" % (100.0 * (per - base) / base) if base else ""
            print("%-40s %14d %10s" % (label, per, rel))
            sys.stdout.flush()


if __name__ == "__main__":
    main()
