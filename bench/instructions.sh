#!/usr/bin/env bash
# Instructions ferry executes per keep-alive request, counted by callgrind (repeatable: the same
# binary and inputs give the same count, whatever else the machine does). Runs each given binary
# twice, with N1 and N2 requests on one connection, and prints (I(N2) - I(N1)) / (N2 - N1): the
# steady-state cost, without startup. Usage:
#   bench/instructions.sh build/ferry [/path/to/other/ferry ...]
# Needs valgrind and python3. The upstream and client are a small Python script (below), outside
# the measurement.
set -euo pipefail
N1=${N1:-500}
N2=${N2:-2500}
[ $# -ge 1 ] || { echo "usage: $0 FERRY_BIN [FERRY_BIN...]" >&2; exit 2; }
command -v valgrind >/dev/null || { echo "instructions: valgrind not found (apt-get install valgrind)" >&2; exit 1; }
tmp=$(mktemp -d /tmp/ferry-instr.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

cat > "$tmp/drive.py" <<'PY'
import socket, subprocess, sys, threading, re, time, os
ferry, n, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
body = b"x" * 100
resp = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nContent-Type: text/plain\r\n\r\n" + body
ls = socket.socket(); ls.bind(("127.0.0.1", 0)); ls.listen(8)
up_port = ls.getsockname()[1]
def serve(c):
    buf = b""
    while True:
        d = c.recv(65536)
        if not d:
            return
        buf += d
        while b"\r\n\r\n" in buf:
            _, buf = buf.split(b"\r\n\r\n", 1)
            c.sendall(resp)
def accept():
    while True:
        c, _ = ls.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()
threading.Thread(target=accept, daemon=True).start()
p = subprocess.Popen(["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out,
                      ferry, "--listen", "127.0.0.1:0", "--upstream", "http://127.0.0.1:%d" % up_port,
                      "--workers", "1", "--access-log", "off"],
                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
port = None
for line in p.stderr:
    m = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
    if m:
        port = int(m.group(1)); break
s = socket.create_connection(("127.0.0.1", port))
req = b"GET /x HTTP/1.1\r\nHost: bench\r\nUser-Agent: instructions\r\nAccept: */*\r\n\r\n"
for i in range(n):
    s.sendall(req)
    got = b""
    while not got.endswith(body):
        got += s.recv(65536)
s.close()
p.terminate()
p.wait()
PY

total() { # binary n
    python3 "$tmp/drive.py" "$1" "$2" "$tmp/cg.out"
    callgrind_annotate "$tmp/cg.out" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); t = $1} END {print t}'
}

printf '%-40s %12s\n' binary "instr/request"
for bin in "$@"; do
    a=$(total "$bin" "$N1")
    b=$(total "$bin" "$N2")
    printf '%-40s %12d\n' "$bin" $(( (b - a) / (N2 - N1) ))
done
