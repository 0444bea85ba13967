#!/usr/bin/env bash
# Routing benchmark (issue 6): ferry with 1,000 routes against ferry with one route, ferry in quick
# mode, nginx and haproxy, in one run of the shared harness (../shared/bench/compare).
#
#   ferry         quick mode, exactly as bench/compare.sh runs it (--listen/--upstream)
#   ferry-1route  -c FILE: one listener, one catch-all route, one group (gen_routes.py --single)
#   ferry-1000    -c FILE: 1,000 routes (100 path-regex) over 100 groups (gen_routes.py); the
#                 benchmark requests hit route 510 of 1,000 (see gen_routes.py for why)
#
# Each ferry-1route / ferry-1000 start writes its file into the measurement's {tmpdir} with the
# ports the harness gives, then execs ferry (so ferry is the session leader and no shell stays in
# the measured set). ferry and gen_routes.py are copied first, so a rebuild during the run cannot
# change what is measured. Before the run, both files are checked with `ferry -t` and a tagged
# copy of the 1,000-route file shows which route the harness's requests hit.
#
#   bench/routes.sh                      # small, conns, post; 5 rounds of 5 s (~15 min)
#   bench/routes.sh --rounds 3           # extra arguments go to compare (later ones win)
#   ROUTES_AB=1 bench/routes.sh --rounds 15 --scenarios small,conns --proxies nginx
#                                        # only ferry-1route and ferry-1000 (+ --proxies): the
#                                        # A/B pair with more rounds for the same time
# Results: the table on stdout; raw data in bench/results/<date>-routes.json.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
harness=${FERRY_BENCH_HARNESS:-$repo/../shared/bench/compare}
[ -x "$harness" ] || { echo "routes: harness not found at $harness (set FERRY_BENCH_HARNESS)" >&2; exit 1; }

make -C "$repo" --no-print-directory >/dev/null
dir=$(mktemp -d /tmp/ferry-routes.XXXXXX)
bin=$dir/ferry
gen=$dir/gen_routes.py
cp "$repo/build/ferry" "$bin"
cp "$here/gen_routes.py" "$gen"
mkdir -p "$here/results"

# The files load, and the benchmark requests land where gen_routes.py says.
python3 "$gen" --listen-port 8080 --upstream-port 8081 --max-connections 11000 > "$dir/check-1000.yaml"
python3 "$gen" --listen-port 8080 --upstream-port 8081 --max-connections 11000 --single > "$dir/check-1.yaml"
"$bin" -t -c "$dir/check-1000.yaml" >&2
"$bin" -t -c "$dir/check-1.yaml" >&2
python3 "$here/route_check.py" "$bin" "$gen" >&2

json=()
suffix=routes; [ "${ROUTES_AB:-0}" = 1 ] && suffix=routes-ab
case " $* " in *" --json "*) ;; *) json=(--json "$here/results/$(date -u +%Y-%m-%d-%H%M)-$suffix.json") ;; esac

quick=(ferry="$bin --listen 127.0.0.1:{listen_port} --upstream http://127.0.0.1:{upstream_port} --workers {workers} --access-log off --max-connections {max_conns}")
[ "${ROUTES_AB:-0}" = 1 ] && quick=()
gen_args='--listen-port {listen_port} --upstream-port {upstream_port} --workers {workers} --max-connections {max_conns}'
# The access log is off, as in the peers and in bench/compare.sh.
exec "$harness" --rounds 5 --duration 5 --scenarios small,conns,post --proxies nginx,haproxy "${json[@]}" \
    "${quick[@]}" \
    ferry-1route="python3 $gen $gen_args --single > {tmpdir}/routes.yaml && exec $bin -c {tmpdir}/routes.yaml" \
    ferry-1000="python3 $gen $gen_args > {tmpdir}/routes.yaml && exec $bin -c {tmpdir}/routes.yaml" \
    "$@"
