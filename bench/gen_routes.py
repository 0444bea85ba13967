#!/usr/bin/env python3
"""Writes a ferry configuration for the routing benchmarks (issue 6) on stdout.

  gen_routes.py --listen-port P --upstream-port U [--workers N] [--max-connections M] [--single]
                [--version-body TEXT] [--pid-file PATH] [--idle-timeout T] [--tag-routes] [--stats]

Default: the 1,000-route table. One listener on 127.0.0.1:P, 100 upstream groups g0..g99, each
one server http://127.0.0.1:U (the harness's upstream), and 1,000 routes:

  * 100 host blocks, h0.example.test .. h99.example.test, in file order. Block b holds the
    routes below for its host (all forward to group g<b>, the canary to g<b+1>):
        0  path-prefix /api/v1/users/  (+ path-rewrite strip-prefix /api/v1)
        1  path-prefix /api/v1/
        2  path-prefix /api/v2/, methods GET POST PUT DELETE
        3  path /healthz
        4  path-regex  (one of REGEXES; 100 regex routes in all)
        5  path-prefix /static/
        6  path-prefix /, headers X-Canary: "1"      (canary: a candidate for every path)
        7  path /login, methods POST
        8  path-prefix /search                       (shares "/s" with /small in the trie)
        9  path-prefix /                             (the host's default)
    The last block has no route 8, so the blocks hold 999 routes.
  * Route 1,000: a catch-all (`upstream: g0`, no match).

The benchmark requests: wrk and the harness send `Host: 127.0.0.1:PORT` (the port is dropped
before matching) and GET /small, /large or POST /post. Block 50 (routes 501-510 of the file,
indexes 500-509) names two hosts, `h50.example.test` and `127.0.0.1` (an alias, as in
`server_name a b`), so the benchmark requests are served by route 510 (index 509: block 50's
`path-prefix: /`), in the middle of the table, after a host-hash lookup (1 of 101 exact
hosts), a trie walk (`/` then `/s`, where `/search` branches off) and three candidates: the
canary (header test fails), the default (matches) and the block's regex (index 504 < 509, so
it must run and fail before 509 can win). The catch-all (index 999) is skipped by index.
A linear scan would test 509 routes before the match; ferry's index tests 3.

--single: the A/B partner: the same listener and top-level keys, one route `upstream: g0` (no
match), one group g0.

--tag-routes makes every route set `X-Route: N` (N its 1-based place in the file) on its
responses, to check which route serves a request (bench/routes.sh does, before measuring).

--version-body TEXT adds, as the first route, `match: { path: /__version }` answered by ferry
itself (respond 200, body TEXT): bench/reload_cost.py rewrites it to see when a reload serves.

Groups are set like the group quick mode builds (`--upstream`): retries 0, max-fails 0 (no
passive ejection), so `ferry --upstream`, the 1-route file and the 1,000-route file differ only
in their routes. Top-level keys mirror bench/compare.sh's quick-mode command line: workers,
access-log off, max-connections.
"""
import argparse
import json
import sys

NBLOCKS = 100
BENCH_BLOCK = 50
BENCH_HOST = "127.0.0.1"
# Patterns of the kind real configurations carry. Block b gets REGEXES[b % len]; block 50
# (50 % 8 = 2) gets an unanchored one, which PCRE2 has to try along the whole path.
REGEXES = [
    "^/u/([0-9]+)/profile$",
    "^/(en|de|fr|es)/products/([a-z0-9-]+)$",
    "\\.(php|aspx?|jsp|cgi)$",
    "^/v[0-9]+/items/([0-9]+)(/.*)?$",
    "^/files/(.+)\\.(jpg|png|gif|webp)$",
    "^/blog/([0-9]{4})/([0-9]{2})/([a-z0-9-]+)$",
    "/(wp-admin|wp-login|xmlrpc)",
    "^/orders/([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$",
]


def q(s):
    """A YAML double-quoted scalar (JSON strings are valid YAML ones for this ASCII text)."""
    return json.dumps(s)


def hosts_of(b):
    h = ["h%d.example.test" % b]
    if b == BENCH_BLOCK:
        h.append(BENCH_HOST)
    return "[" + ", ".join(q(x) for x in h) + "]"


def block_routes(b):
    """The routes of host block b, as YAML lines."""
    H = hosts_of(b)
    g = "g%d" % b
    canary = "g%d" % ((b + 1) % NBLOCKS)
    r = [
        ["- match: { host: %s, path-prefix: /api/v1/users/ }" % H,
         "  upstream: %s" % g,
         "  path-rewrite: { strip-prefix: /api/v1 }"],
        ["- match: { host: %s, path-prefix: /api/v1/ }" % H, "  upstream: %s" % g],
        ["- match: { host: %s, path-prefix: /api/v2/, methods: [GET, POST, PUT, DELETE] }" % H,
         "  upstream: %s" % g],
        ["- match: { host: %s, path: /healthz }" % H, "  upstream: %s" % g],
        ["- match: { host: %s, path-regex: %s }" % (H, q(REGEXES[b % len(REGEXES)])),
         "  upstream: %s" % g],
        ["- match: { host: %s, path-prefix: /static/ }" % H, "  upstream: %s" % g],
        ["- match: { host: %s, path-prefix: /, headers: { X-Canary: \"1\" } }" % H,
         "  upstream: %s" % canary],
        ["- match: { host: %s, path: /login, methods: POST }" % H, "  upstream: %s" % g],
        ["- match: { host: %s, path-prefix: /search }" % H, "  upstream: %s" % g],
        ["- match: { host: %s, path-prefix: / }" % H, "  upstream: %s" % g],
    ]
    if b == NBLOCKS - 1:
        del r[8]        # 999 block routes + the catch-all = 1,000
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--listen-port", type=int, required=True)
    ap.add_argument("--upstream-port", type=int, required=True)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--max-connections", type=int, default=None)
    ap.add_argument("--single", action="store_true", help="one catch-all route, one group")
    ap.add_argument("--version-body", default=None)
    ap.add_argument("--pid-file", default=None)
    ap.add_argument("--idle-timeout", default=None)
    ap.add_argument("--tag-routes", action="store_true",
                    help="every route sets X-Route: its number in the file (1-based), to check which "
                         "route a request hits; not for measuring")
    ap.add_argument("--stats", action="store_true", help="print the counts on stderr")
    a = ap.parse_args()

    out = ["# generated by bench/gen_routes.py %s" % " ".join(sys.argv[1:]),
           "workers: %d" % a.workers,
           "access-log: off"]
    if a.max_connections:
        out.append("max-connections: %d" % a.max_connections)
    if a.pid_file:
        out.append("pid-file: %s" % q(a.pid_file))
    if a.idle_timeout:
        out.append("idle-timeout: %s" % a.idle_timeout)
    out += ["listeners:",
            "  - listen: 127.0.0.1:%d" % a.listen_port,
            "    routes:"]
    routes = []
    if a.version_body is not None:
        routes.append(["- match: { path: /__version }",
                       "  respond: { status: 200, body: %s }" % q(a.version_body)])
    ngroups = 1 if a.single else NBLOCKS
    if not a.single:
        for b in range(NBLOCKS):
            routes += block_routes(b)
    routes.append(["- upstream: g0"])
    for i, r in enumerate(routes):
        if a.tag_routes and not any("respond:" in line for line in r):
            r = r + ["  response-headers: { set: { X-Route: \"%d\" } }" % (i + 1)]
        out += ["      " + line for line in r]
    out.append("upstreams:")
    for g in range(ngroups):
        out += ["  g%d:" % g,
                "    servers: [http://127.0.0.1:%d]" % a.upstream_port,
                "    retries: 0",
                "    max-fails: 0"]
    sys.stdout.write("\n".join(out) + "\n")
    if a.stats:
        nregex = sum(1 for r in routes if "path-regex" in r[0])
        sys.stderr.write("gen_routes: %d routes (%d path-regex), %d upstream groups\n"
                         % (len(routes), nregex, ngroups))


if __name__ == "__main__":
    main()
