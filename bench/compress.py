#!/usr/bin/env python3
"""Response compression and Lua hook benchmark: ferry --compress against nginx's gzip filter on
a 100 KiB HTML page, ferry's brotli and zstd on the same page, the cost of a no-op Lua hook on
every phase, and examples/lua/inject_script.lua rewriting a page its origin gzips; in one run,
every proxy pinned to the same CPU.

  bench/compress.py [--ferry BIN] [--rounds 5] [--duration 10] [--warmup 2]
                    [--cases nginx-gzip,ferry-gzip,ferry-br,ferry-zstd,plain-small,lua-noop,
                             plain-gz,lua-inject]
                    [--page-conns 16] [--small-conns 50] [--out bench/results/DATE-compress]

Needs: nginx (with gzip_static, as Debian's), wrk, curl built with brotli and zstd (Debian's is:
the verification decodes br and zstd with it), taskset. Runs as an ordinary user; as root it
works too (nginx's workers then run as nobody, so the scratch directory is made world-readable).

What runs:
  * The origin: nginx, one worker, plain HTTP, `gzip off`, on the load CPU. It serves
      /page.html     the page: 102,400 bytes (100 KiB) of HTML generated here with a seeded RNG
                     (make_page: a head with a style block and a nav, headings and paragraphs of
                     words drawn from a fixed list of 253, and tables of orders whose rows have
                     ids, links, dates, quantities, prices and notes), so that it compresses as
                     real markup does (about 5.5x with gzip -6), not as repeated bytes
      /small         100 bytes (as bench/intercept.py's), for the Lua hook cost
      /gz/page.html  the same page gzip-compressed ahead of time (page.html.gz, level 6, next to
                     it, `gzip_static on`), so the origin only sends a file and its CPU does not
                     decide the inject case's throughput. `gzip_proxied any` at the origin:
                     ferry adds Via to its requests, and nginx's gzip_static ignores proxied
                     requests without it.
  * The cases, each a fresh proxy process (one worker, access log off) on the proxy CPU:
      nginx-gzip  nginx as a reverse proxy, one worker, the proxy settings of the harness's
                  peer (../shared/bench/peers/nginx.sh: upstream keep-alive, 16k buffers, no
                  temp files, keepalive_requests lifted) plus `gzip on; gzip_comp_level 6;
                  gzip_types text/html; gzip_min_length 1000; gzip_proxied any;`
      ferry-gzip  ferry -c FILE, one listener with `compress: { gzip: { level: 6 } }` (naming
                  a coding enables only it: --compress alone would enable all three)
      ferry-br    the same with `compress: { brotli: { level: 4 } }`
      ferry-zstd  the same with `compress: { zstd: { level: 3 } }`
                  These four: GET /page.html, Accept-Encoding gzip (br, zstd for the last two),
                  --page-conns connections (16).
      plain-small ferry --upstream http://ORIGIN (nothing else): GET /small, --small-conns (50)
      lua-noop    the same with --lua noop.lua: on_request, on_response and on_log defined, each
                  doing nothing; the cost of running the hooks at all
      plain-gz    ferry --upstream http://ORIGIN: GET /gz/page.html, Accept-Encoding gzip; the
                  origin's gzip body passes through untouched (about 18 KiB, below the
                  splice-min-size, so copied, not spliced)
      lua-inject  the same with --lua examples/lua/inject_script.lua: ferry decodes the gzip
                  body, runs the script's filter over it (the tag before </body>) and gzips it
                  again (level 6, the client's Accept-Encoding picking the coding)
                  These two: --page-conns connections.
    The load is wrk (one thread, keep-alive, the fixed number of connections above) on the load
    CPU, with a script that sets the path and Accept-Encoding and prints wrk's summary (requests,
    bytes, errors) exactly.

Verification (the run stops with an error when any fails: a benchmark of the wrong thing is
worse than none). Each proxy, once started, answers one request made with curl before its
warm-up: the compressing cases must answer 200 with Content-Encoding of the asked coding and a
body that decodes (Python's gzip for gzip, curl --compressed for all three) to the page byte
for byte; their encoded size is the size in the table. plain-small and lua-noop must answer the
100 bytes unencoded; plain-gz must pass the origin's .gz bytes through as they are; lua-inject
must answer gzip whose decoding is the page with `<script src="/__ferry/inject.js"></script>`
inserted before its </body>. Then, after each measurement, wrk's bytes per response must be the
curl response's size plus at most a response head and chunk framing (2 KiB, plus 2% for the
responses cut off at the end): so every response wrk counted was the verified one (compressed,
not the identity page; not an error page), not only the first.

Pinning (why): the machine has 2 CPUs. The proxy alone gets CPU 1 (taskset), so its CPU time
is not mixed with anything else and its throughput is what one core of it does; wrk, the
origin and this script share CPU 0. When CPU 0 is the busy one (cpu0 % near 100), the row
measures the load side, not the proxy: the small-response cases and plain-gz are there; gzip
and brotli (about 1.5 ms of proxy CPU per response) are far from it, zstd (0.3 ms) can come
close.

CPU: utime+stime (and the reaped children's) of every process in the proxy's session (nginx's
master and worker; ferry), read from /proc/PID/stat at the start and the end of the measured
wrk run (bench/intercept.py's Window), divided by the responses completed: CPU ms per request;
and divided by the uncompressed bytes those responses carried, in MiB (requests * 102,400 /
1,048,576): CPU ms per MiB of page, the figure that compares compressors whatever their speed.

Rounds: every selected case once per round, the order rotated by one every round, so that drift
on the shared machine hits all of them alike; --rounds rounds (5) of --duration seconds (10)
after --warmup seconds (2) of wrk on the same proxy process. The tables give medians with the
lowest and highest round; the ratios are medians of per-round ratios (both sides from the same
round). Bars: ferry-gzip / nginx-gzip CPU per MiB <= 1.0; lua-noop / plain-small req/s >= 0.90;
lua-inject / plain-gz req/s >= 0.70. Output: RESULTS.json (every measurement, the verification,
the page's size and digest) and RESULTS.md (the tables), RESULTS being --out; the tables are
printed as well.

Time: about rounds * cases * (warmup + duration + 0.5 s) (the 0.5 s: starting, verifying and
stopping a proxy): the defaults take 5 * 8 * 12.5 s, about 8.5 minutes; a smoke run
(--rounds 1 --duration 2) about 35 seconds.

Reading the results: the small-response cases (plain-small, lua-noop) and plain-gz are bound by
CPU 0 (wrk and the origin) on a 2-CPU machine, so their req/s is the load side's and their
ratio of req/s hides most of the proxy's difference: their CPU per request is the figure that
shows it. lua-inject decodes and encodes again at gzip 6, so it costs at least what ferry-gzip
costs per response, and plain-gz only passes 18 KiB through.
"""
import argparse
import datetime
import gzip
import hashlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
# The CPU accounting, the process handling and the table helpers are intercept.py's, so that the
# two benchmarks count the same way.
from intercept import BODY, Window, fmt, free_port, med_range, ratios, stop, wait_port  # noqa: E402

PAGE_SIZE = 100 * 1024
MIB = 1024 * 1024
TAG = '<script src="/__ferry/inject.js"></script>'
INJECT_LUA = os.path.join(REPO, "examples", "lua", "inject_script.lua")
NOOP_LUA = """-- bench/compress.py: every hook defined, none doing anything
function on_request(req) end
function on_response(req, resp) end
function on_log(req, info) end
"""

# name: (proxy kind, path, Accept-Encoding, coding the client must get, connections option)
CASES = {
    "nginx-gzip": ("nginx", "/page.html", "gzip", "gzip", "page_conns"),
    "ferry-gzip": ("ferry-compress", "/page.html", "gzip", "gzip", "page_conns"),
    "ferry-br": ("ferry-compress", "/page.html", "br", "br", "page_conns"),
    "ferry-zstd": ("ferry-compress", "/page.html", "zstd", "zstd", "page_conns"),
    "plain-small": ("ferry", "/small", None, None, "small_conns"),
    "lua-noop": ("ferry-lua", "/small", None, None, "small_conns"),
    "plain-gz": ("ferry", "/gz/page.html", "gzip", "gzip", "page_conns"),
    "lua-inject": ("ferry-lua", "/gz/page.html", "gzip", "gzip", "page_conns"),
}
COMPRESS_CONF = {"ferry-gzip": "gzip: { level: 6 }", "ferry-br": "brotli: { level: 4 }",
                 "ferry-zstd": "zstd: { level: 3 }"}
COMPRESSING = ("nginx-gzip", "ferry-gzip", "ferry-br", "ferry-zstd")


def log(msg):
    print("compress: " + msg, file=sys.stderr, flush=True)


class Failed(Exception):
    """A verification or a measurement went wrong: the run stops."""


# ---------------------------------------------------------------------------------------------
# the page

WORDS = """account active address agent album amber anchor answer april archive arrow autumn
balance banner basket battery beacon berry binder bishop blanket border bottle branch breeze
bridge bronze bubble budget buffer button cabinet camera candle canvas carbon cargo carpet
castle cedar cellar census center channel chapter charter circle citrus client climate cluster
coastal cobalt collar column comet common copper corner cotton county course crystal cursor
custom dancer danger dealer debate decade delta desert design device diesel digital dinner
domain donkey double dragon drawer driver eagle editor effort elbow element ember engine
estate evening export fabric falcon family farmer feather figure filter finance flavor flight
forest format fossil fountain frame freight galaxy garden garlic gather gentle glacier global
golden gravel harbor harvest health helmet herald hollow honey horizon hunter island ivory
jacket jungle kernel kettle ladder lantern laptop leader legend lemon letter level linen
liquid lobster locker magnet mammal manner marble margin market meadow medal member mentor
mirror module monkey mortar motion museum napkin native nectar needle network nickel noble
number oasis object ocean office orange orbit output oxygen paddle palace panel parcel pepper
period pilot planet pocket portal powder prairie prism public puzzle quarry rabbit radar
random record region remote ribbon river rocket saddle salmon sample satin scarlet schedule
season secret select sensor shadow signal silver simple socket spirit spring square stable
station stone string studio summer sunset supply symbol system tablet target temple thunder
timber tunnel turtle update valley vector velvet venture vessel violet vision volume voyage
walnut window winter wizard yellow zenith""".split()


def make_page(size=PAGE_SIZE, seed=20240917):
    """size bytes of HTML: the same bytes on every run (a seeded RNG, a fixed word list)."""
    rng = random.Random(seed)

    def w(n):
        return " ".join(rng.choice(WORDS) for _ in range(n))

    head = ('<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            '<title>Order archive - %s</title>\n<link rel="stylesheet" href="/static/site.css">\n'
            '<style>\n  body { font-family: system-ui, sans-serif; margin: 0 auto; max-width: 72rem; }\n'
            '  table.orders td.num { text-align: right; font-variant-numeric: tabular-nums; }\n'
            '  tr.odd { background: #f6f6f4; }\n</style>\n</head>\n<body>\n<header class="site">\n'
            '<nav>\n' % w(3).title())
    head += "".join('  <a href="/%s/">%s</a>\n' % (x, x.title()) for x in rng.sample(WORDS, 8))
    head += '</nav>\n</header>\n<main>\n<h1>%s</h1>\n' % w(4).title()
    tail = '</main>\n<footer class="site">\n<p>%s</p>\n</footer>\n</body>\n</html>\n' % w(12)
    close = '</tbody>\n</table>\n'
    parts, n, i = [head], len(head) + len(tail), 0
    while True:
        if i % 40 == 0:  # a new section: heading, paragraphs, a table
            s = close if i else ""
            s += '<h2>%s</h2>\n' % w(3).title()
            s += "".join('<p>%s.</p>\n' % w(rng.randint(25, 60)).capitalize()
                         for _ in range(rng.randint(1, 3)))
            s += ('<table class="orders">\n<thead><tr><th>Order</th><th>Item</th><th>Date</th>'
                  '<th>Qty</th><th>Price</th><th>Status</th><th>Note</th></tr></thead>\n<tbody>\n')
        else:
            oid = rng.randint(100000, 999999)
            status = rng.choice(("shipped", "pending", "returned", "cancelled"))
            s = ('<tr%s><td class="id"><a href="/orders/%d">#%d</a></td><td><a href="/items/%s">'
                 '%s</a></td><td>2024-%02d-%02d</td><td class="num">%d</td><td class="num">$%d.%02d'
                 '</td><td><span class="status status-%s">%s</span></td><td>%s</td></tr>\n') % (
                ' class="odd"' if i % 2 else "", oid, oid, rng.choice(WORDS), w(rng.randint(2, 4)),
                rng.randint(1, 12), rng.randint(1, 28), rng.randint(1, 40), rng.randint(1, 999),
                rng.randint(0, 99), status, status, w(rng.randint(3, 10)))
        if n + len(s) + len(close) + 24 > size:
            break
        parts.append(s)
        n += len(s)
        i += 1
    parts.append(close)
    n += len(close)
    pad = size - n  # >= 24: a comment of words makes the size exact
    parts.append("<!-- %s -->\n" % w(pad)[:pad - 10])
    parts.append(tail)
    out = "".join(parts).encode()
    assert len(out) == size and out.count(b"</body>") == 1, len(out)
    return out


# ---------------------------------------------------------------------------------------------
# origin and proxies

def nginx_popen(d, name, conf_text, cpus):
    conf = "%s/%s.conf" % (d, name)
    os.makedirs("%s/%s-tmp" % (d, name), exist_ok=True)
    with open(conf, "w") as f:
        f.write(conf_text)
    lf = open("%s/%s.log" % (d, name), "ab")
    return subprocess.Popen(["taskset", "-c", cpus, A.nginx, "-p", d + "/", "-c", conf,
                             "-e", "%s/%s-error.log" % (d, name)],
                            stdin=subprocess.DEVNULL, stdout=lf, stderr=lf, start_new_session=True)


NGINX_COMMON = """
daemon off;
master_process on;
worker_processes 1;
pid %(d)s/%(name)s.pid;
error_log %(d)s/%(name)s-error.log warn;
worker_rlimit_nofile 65536;
events { worker_connections 16384; }
http {
    access_log off;
    server_tokens off;
    tcp_nodelay on;
    keepalive_requests 100000000;
    keepalive_timeout 600s;
    client_body_temp_path %(d)s/%(name)s-tmp/client_body;
    proxy_temp_path %(d)s/%(name)s-tmp/proxy;
    fastcgi_temp_path %(d)s/%(name)s-tmp/fastcgi;
    uwsgi_temp_path %(d)s/%(name)s-tmp/uwsgi;
    scgi_temp_path %(d)s/%(name)s-tmp/scgi;
    types { text/html html; }
    default_type application/octet-stream;
%(body)s
}
"""


def start_origin(d, page):
    www = d + "/www"
    os.makedirs(www + "/gz", exist_ok=True)
    for path, data in (("/page.html", page), ("/gz/page.html", page), ("/small", BODY.encode())):
        with open(www + path, "wb") as f:
            f.write(data)
    gz = gzip.compress(page, compresslevel=6, mtime=0)
    with open(www + "/gz/page.html.gz", "wb") as f:
        f.write(gz)
    port = free_port()
    body = """
    gzip off;
    gzip_proxied any;   # gzip_static skips requests with Via (ferry sends one) without it
    server {
        listen 127.0.0.1:%d backlog=4096;
        root %s;
        location /gz/ { gzip_static on; }
    }""" % (port, www)
    p = nginx_popen(d, "origin", NGINX_COMMON % {"d": d, "name": "origin", "body": body},
                    A.load_cpus)
    wait_port(port, p, "the origin nginx")
    return p, port, gz


def start_nginx_gzip(d, origin_port):
    port = free_port()
    body = """
    upstream origin {
        server 127.0.0.1:%(up)d;
        keepalive 1024;
        keepalive_requests 100000000;
        keepalive_timeout 600s;
    }
    server {
        listen 127.0.0.1:%(port)d backlog=4096;
        gzip on;
        gzip_comp_level 6;
        gzip_types text/html;
        gzip_min_length 1000;
        gzip_proxied any;
        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffer_size 16k;
            proxy_buffers 8 16k;
            proxy_busy_buffers_size 32k;
            proxy_max_temp_file_size 0;
        }
    }""" % {"up": origin_port, "port": port}
    p = nginx_popen(d, "proxy", NGINX_COMMON % {"d": d, "name": "proxy", "body": body},
                    A.proxy_cpus)
    wait_port(port, p, "nginx (gzip proxy)")
    return p, port


def start_ferry(d, case, origin_port):
    kind = CASES[case][0]
    port = free_port()
    origin = "http://127.0.0.1:%d" % origin_port
    if kind == "ferry-compress":
        conf = "%s/%s.yaml" % (d, case)
        with open(conf, "w") as f:
            f.write("workers: 1\naccess-log: \"off\"\nlisteners:\n  - listen: 127.0.0.1:%d\n"
                    "    compress: { %s }\n    routes:\n      - upstream: origin\n"
                    "upstreams:\n  origin:\n    servers: [%s]\n" % (port, COMPRESS_CONF[case], origin))
        argv = [A.ferry, "-c", conf]
    else:
        argv = [A.ferry, "--upstream", origin, "--listen", "127.0.0.1:%d" % port,
                "--workers", "1", "--access-log", "off"]
        if case == "lua-noop":
            argv += ["--lua", d + "/noop.lua"]
        elif case == "lua-inject":
            argv += ["--lua", INJECT_LUA]
    lf = open("%s/%s.log" % (d, case), "ab")
    p = subprocess.Popen(["taskset", "-c", A.proxy_cpus] + argv, stdin=subprocess.DEVNULL,
                         stdout=lf, stderr=lf, start_new_session=True)
    wait_port(port, p, "ferry (%s)" % case)
    return p, port


# ---------------------------------------------------------------------------------------------
# verification

def curl(url, ae, decode=False):
    """(status, {lower-case name: value}, body) of one GET; with decode, curl decodes the body
    (--compressed, the Accept-Encoding header still the one given)."""
    hdr = "%s/curl-head" % D
    argv = ["curl", "-sS", "--max-time", "10", "-D", hdr, "-o", "-", url]
    if ae:
        argv += ["-H", "Accept-Encoding: " + ae]
    if decode:
        argv.append("--compressed")
    body = subprocess.run(argv, check=True, stdout=subprocess.PIPE).stdout
    status, fields = None, {}
    with open(hdr, encoding="latin-1") as f:
        for line in f:
            line = line.rstrip("\r\n")
            if line.startswith("HTTP/"):
                status, fields = int(line.split()[1]), {}
            elif ":" in line:
                k, v = line.split(":", 1)
                fields[k.strip().lower()] = v.strip()
    return status, fields, body


def verify(case, port, page, gz):
    """Checks what the proxy answers; returns what the JSON keeps of it (the encoded size)."""
    _, path, ae, coding, _ = CASES[case]
    url = "http://127.0.0.1:%d%s" % (port, path)
    status, h, raw = curl(url, ae)
    enc = h.get("content-encoding")
    what = "%s: GET %s (Accept-Encoding: %s)" % (case, path, ae or "none")
    if status != 200:
        raise Failed("%s answered %s" % (what, status))
    if enc != coding:
        raise Failed("%s: Content-Encoding is %r, not %r: the proxy does not %s" % (
            what, enc, coding, "compress" if coding else "pass the body unencoded"))
    if path == "/small":
        if raw != BODY.encode():
            raise Failed("%s: the body is not the origin's 100 bytes" % what)
        return {"encoded_bytes": len(raw), "content_encoding": None}
    if coding == "gzip":
        try:
            decoded = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise Failed("%s: the body is not valid gzip: %s" % (what, e))
    else:
        decoded = None
    _, h2, viacurl = curl(url, ae, decode=True)
    if h2.get("content-encoding") != coding:
        raise Failed("%s: a second response has Content-Encoding %r" % (what, h2.get("content-encoding")))
    if decoded is not None and viacurl != decoded:
        raise Failed("%s: curl and Python decode the body differently" % what)
    decoded = viacurl
    if case == "lua-inject":
        want = page.replace(b"</body>", TAG.encode() + b"</body>", 1)
        if (TAG + "</body>").encode() not in decoded:
            raise Failed("%s: the decoded body has no %s</body>" % (what, TAG))
        if decoded != want:
            raise Failed("%s: the decoded body is not the page with the tag inserted (%d bytes, "
                         "%d expected)" % (what, len(decoded), len(want)))
    else:
        if decoded != page:
            raise Failed("%s: the decoded body (%d bytes) is not the page (%d bytes)" % (
                what, len(decoded), len(page)))
        if case == "plain-gz" and raw != gz:
            raise Failed("%s: the origin's gzip bytes did not pass through unchanged" % what)
    return {"encoded_bytes": len(raw), "decoded_bytes": len(decoded), "content_encoding": enc,
            "vary": h.get("vary"), "content_length": h.get("content-length"),
            "transfer_encoding": h.get("transfer-encoding")}


# ---------------------------------------------------------------------------------------------
# measurement

WRK_LUA = """wrk.method = "GET"
wrk.path = "%(path)s"
%(ae)s
done = function(summary, latency, requests)
    local e = summary.errors
    io.write(string.format("WRK %%d %%d %%d %%d %%d %%d %%d %%d\\n", summary.requests,
        summary.bytes, summary.duration, e.connect, e.read, e.write, e.status, e.timeout))
end
"""


def wrk(port, case, seconds, conns):
    _, path, ae, _, _ = CASES[case]
    script = "%s/wrk-%s.lua" % (D, case)
    with open(script, "w") as f:
        f.write(WRK_LUA % {"path": path, "ae": 'wrk.headers["Accept-Encoding"] = "%s"' % ae if ae else ""})
    argv = ["taskset", "-c", A.load_cpus, "wrk", "-t1", "-c%d" % conns,
            "-d%ds" % max(1, round(seconds)), "-s", script, "http://127.0.0.1:%d/" % port]
    out = subprocess.run(argv, check=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True).stdout
    for line in out.splitlines():
        if line.startswith("WRK "):
            v = [int(x) for x in line.split()[1:]]
            return {"requests": v[0], "bytes": v[1], "wrk_us": v[2],
                    "errors": {"connect": v[3], "read": v[4], "write": v[5], "status": v[6],
                               "timeout": v[7]}}
    raise Failed("wrk printed no summary for %s:\n%s" % (case, out))


def measure(case, origin_port, page, gz):
    conns = getattr(A, CASES[case][4])
    if CASES[case][0] == "nginx":
        p, port = start_nginx_gzip(D, origin_port)
    else:
        p, port = start_ferry(D, case, origin_port)
    try:
        check = verify(case, port, page, gz)
        if A.warmup > 0:
            wrk(port, case, A.warmup, conns)
        w = Window(p.pid)
        w.start()
        res = wrk(port, case, A.duration, conns)
        w.stop()
        if p.poll() is not None:
            raise Failed("%s exited during the measurement" % case)
        reqs = res["requests"]
        if not reqs:
            raise Failed("%s: wrk completed no request" % case)
        nerr = sum(res["errors"].values())
        if res["errors"]["status"]:
            raise Failed("%s: %d responses were not 2xx/3xx" % (case, res["errors"]["status"]))
        bpr = res["bytes"] / reqs
        if path_is_page(case):
            lo, hi = check["encoded_bytes"], (check["encoded_bytes"] + 2048) * 1.02
            if not lo <= bpr <= hi:
                raise Failed("%s: wrk read %.0f bytes per response, the verified response has %d "
                             "(+ its head): wrk's responses are not the verified one" % (
                                 case, bpr, check["encoded_bytes"]))
        res.update(w.result(reqs))
        secs = w.t1 - w.t0
        res.update({"case": case, "conns": conns, "seconds": secs, "rps": reqs / secs,
                    "bytes_per_response": bpr, "error_count": nerr,
                    "encoded_bytes": check["encoded_bytes"], "verified": check})
        if path_is_page(case):
            res["cpu_ms_per_mib"] = 1000.0 * res["proxy_cpu_s"] / (reqs * PAGE_SIZE / MIB)
        return res
    finally:
        stop(p)


def path_is_page(case):
    return CASES[case][1] != "/small"


# ---------------------------------------------------------------------------------------------
# tables

def median(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def tables(results):
    meta, rows = results["meta"], results["measurements"]
    cases = meta["cases"]
    lines = ["Run %s, %d round(s) of %s s (+%s s warm-up); proxy on CPU %s, wrk and the origin on "
             "CPU %s; load average at the start %s. Page: %s bytes of HTML (gzip -6 at the origin: "
             "%s bytes)." % (meta["started"], meta["rounds"], meta["duration"], meta["warmup"],
                             meta["proxy_cpus"], meta["load_cpus"], meta["loadavg"],
                             fmt(meta["page_bytes"]), fmt(meta["page_gzip6_bytes"])), ""]

    def col(case, key, nd):
        return med_range([r[case][key] for r in rows if case in r], nd)

    def common(case):
        rs = [r[case] for r in rows if case in r]
        return (fmt(median(x["proxy_cpu_pct"] for x in rs)), fmt(median(x["cpu0_pct"] for x in rs)),
                fmt(median(x["cpu1_pct"] for x in rs)), "%d" % sum(x["error_count"] for x in rs))

    comp = [c for c in COMPRESSING if c in cases]
    if comp:
        lines.append("100 KiB HTML page, %d connections:" % meta["page_conns"])
        lines.append("")
        lines.append("| case | coding | encoded bytes | ratio | req/s | CPU ms/request | CPU ms/MiB "
                     "| proxy CPU % | cpu0 % | cpu1 % | errors |")
        lines.append("|---|---|---|---|---|---|---|---|---|---|---|")
        levels = {"nginx-gzip": "gzip 6", "ferry-gzip": "gzip 6", "ferry-br": "br 4",
                  "ferry-zstd": "zstd 3"}
        for c in comp:
            enc = median(r[c]["encoded_bytes"] for r in rows if c in r)
            lines.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                c, levels[c], fmt(enc), "%.2fx" % (PAGE_SIZE / enc), col(c, "rps", 0),
                col(c, "cpu_ms_per_req", 3), col(c, "cpu_ms_per_mib", 2), *common(c)))
        lines.append("")
        if "nginx-gzip" in comp and "ferry-gzip" in comp:
            cm = ratios(rows, "ferry-gzip", "nginx-gzip", "cpu_ms_per_mib")
            q = ratios(rows, "ferry-gzip", "nginx-gzip", "rps")
            lines.append("ferry-gzip / nginx-gzip: CPU per MiB %s (bar <= 1.0: %s), req/s %s." % (
                med_range(cm, 3), "met" if cm and statistics.median(cm) <= 1.0 else "not met",
                med_range(q, 2)))
        for c in ("ferry-br", "ferry-zstd"):
            if c in comp and "ferry-gzip" in comp:
                lines.append("%s / ferry-gzip: CPU per MiB %s, req/s %s, encoded size %s." % (
                    c, med_range(ratios(rows, c, "ferry-gzip", "cpu_ms_per_mib"), 3),
                    med_range(ratios(rows, c, "ferry-gzip", "rps"), 2),
                    med_range(ratios(rows, c, "ferry-gzip", "encoded_bytes"), 3)))
        lines.append("")
    lua = [c for c in ("plain-small", "lua-noop", "plain-gz", "lua-inject") if c in cases]
    if lua:
        lines.append("Lua hooks (small: GET /small, %d connections; gz: GET /gz/page.html, the "
                     "origin's gzip, %d connections):" % (meta["small_conns"], meta["page_conns"]))
        lines.append("")
        lines.append("| case | response bytes | req/s | CPU ms/request | proxy CPU % | cpu0 % "
                     "| cpu1 % | errors |")
        lines.append("|---|---|---|---|---|---|---|---|")
        for c in lua:
            lines.append("| %s | %s | %s | %s | %s | %s | %s | %s |" % (
                c, fmt(median(r[c]["encoded_bytes"] for r in rows if c in r)), col(c, "rps", 0),
                col(c, "cpu_ms_per_req", 4), *common(c)))
        lines.append("")
        for a, b, bar in (("lua-noop", "plain-small", 0.90), ("lua-inject", "plain-gz", 0.70)):
            if a in lua and b in lua:
                q = ratios(rows, a, b, "rps")
                cr = ratios(rows, a, b, "cpu_ms_per_req")
                lines.append("%s / %s: req/s %s (bar >= %.2f: %s), CPU per request %s." % (
                    a, b, med_range(q, 3), bar,
                    "met" if q and statistics.median(q) >= bar else "not met", med_range(cr, 2)))
        lines.append("")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------

def main():
    global A, D
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ferry", default=os.path.join(REPO, "build", "ferry"))
    ap.add_argument("--nginx", default=shutil.which("nginx") or "/usr/sbin/nginx")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--duration", type=float, default=10)
    ap.add_argument("--warmup", type=float, default=2)
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--page-conns", type=int, default=16, help="wrk connections for the page")
    ap.add_argument("--small-conns", type=int, default=50, help="wrk connections for /small")
    ap.add_argument("--proxy-cpus", default="1")
    ap.add_argument("--load-cpus", default="0")
    ap.add_argument("--out", default=None, help="results path without extension")
    ap.add_argument("--keep-tmp", action="store_true")
    A = ap.parse_args()
    A.ferry = os.path.abspath(A.ferry)
    cases = [c for c in A.cases.split(",") if c]
    for c in cases:
        if c not in CASES:
            raise SystemExit("compress: unknown case %s (known: %s)" % (c, ", ".join(CASES)))
    missing = [t for t in ("wrk", "curl", "taskset") if not shutil.which(t)]
    if not os.access(A.nginx, os.X_OK):
        missing.append("nginx")
    if missing:
        raise SystemExit("compress: missing tools: %s" % " ".join(missing))
    features = subprocess.run(["curl", "--version"], stdout=subprocess.PIPE, text=True).stdout
    for lib in ("brotli", "zstd"):
        if lib not in features and any(CASES[c][3] == ("br" if lib == "brotli" else lib) for c in cases):
            raise SystemExit("compress: curl cannot decode %s (the verification needs it)" % lib)
    if not os.access(A.ferry, os.X_OK):
        raise SystemExit("compress: no ferry at %s (make, or --ferry BIN)" % A.ferry)
    if "lua-inject" in cases and not os.path.exists(INJECT_LUA):
        raise SystemExit("compress: no %s" % INJECT_LUA)
    os.sched_setaffinity(0, {int(c) for c in A.load_cpus.split(",")})
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d-%H%M")
    out = A.out or os.path.join(HERE, "results", stamp + "-compress")

    D = tempfile.mkdtemp(prefix="ferry-compress-bench.")
    os.chmod(D, 0o755)  # nginx started as root serves the files as nobody
    with open(D + "/noop.lua", "w") as f:
        f.write(NOOP_LUA)
    page = make_page()
    results = {"meta": {"started": stamp + " UTC", "rounds": A.rounds, "duration": A.duration,
                        "warmup": A.warmup, "cases": cases, "page_conns": A.page_conns,
                        "small_conns": A.small_conns, "proxy_cpus": A.proxy_cpus,
                        "load_cpus": A.load_cpus, "ferry": A.ferry, "nginx": A.nginx,
                        "page_bytes": len(page), "page_sha256": hashlib.sha256(page).hexdigest(),
                        "loadavg": open("/proc/loadavg").read().split()[0]},
               "measurements": []}
    origin = None
    try:
        log("origin and files in %s" % D)
        origin, origin_port, gz = start_origin(D, page)
        results["meta"]["page_gzip6_bytes"] = len(gz)
        for rnd in range(A.rounds):
            k = rnd % len(cases)
            row = {}
            for case in cases[k:] + cases[:k]:
                r = measure(case, origin_port, page, gz)
                row[case] = r
                log("round %d %s: %s req/s, %s ms CPU/request%s, %s bytes/response, cpu0 %s%%, "
                    "%d errors" % (rnd + 1, case, fmt(r["rps"]), fmt(r["cpu_ms_per_req"], 4),
                                   (", %s ms CPU/MiB" % fmt(r["cpu_ms_per_mib"], 2))
                                   if "cpu_ms_per_mib" in r else "",
                                   fmt(r["bytes_per_response"]), fmt(r["cpu0_pct"]),
                                   r["error_count"]))
            results["measurements"].append(row)
        md = tables(results)
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(out + ".json", "w") as f:
            json.dump(results, f, indent=1)
        with open(out + ".md", "w") as f:
            f.write(md + "\n")
        print(md)
        log("wrote %s.json and %s.md" % (out, out))
    except (Failed, RuntimeError, subprocess.CalledProcessError) as e:
        msg = str(e)
        if isinstance(e, subprocess.CalledProcessError) and e.stdout:
            msg += "\n" + (e.stdout if isinstance(e.stdout, str) else e.stdout.decode(errors="replace"))
        log("FAILED: " + msg)
        log("the proxies' logs are in %s (kept)" % D)
        A.keep_tmp = True
        sys.exit(1)
    finally:
        stop(origin)
        if A.keep_tmp:
            log("kept %s" % D)
        else:
            shutil.rmtree(D, ignore_errors=True)


if __name__ == "__main__":
    main()
