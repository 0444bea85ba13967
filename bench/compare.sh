#!/usr/bin/env bash
# Runs the shared side-by-side harness (../shared/bench/compare) with ferry, nginx, haproxy and an
# nginx A/A pair (to show the machine's noise in the same run). ferry is copied first, so a rebuild
# during the run cannot change the binary being measured. Extra arguments go to compare, e.g.
#   bench/compare.sh --scenarios small,post --rounds 3
# Results: the table on stdout; raw data in bench/results/<date>.json when --json is not given.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
harness=${FERRY_BENCH_HARNESS:-$repo/../shared/bench/compare}
[ -x "$harness" ] || { echo "bench: harness not found at $harness (set FERRY_BENCH_HARNESS)" >&2; exit 1; }

make -C "$repo" --no-print-directory >/dev/null
bin=$(mktemp -d /tmp/ferry-bench.XXXXXX)/ferry
cp "$repo/build/ferry" "$bin"
mkdir -p "$here/results"
json=()
case " $* " in *" --json "*) ;; *) json=(--json "$here/results/$(date -u +%Y-%m-%d-%H%M).json") ;; esac

# ferry runs as the harness runs every proxy: one template, {workers} workers, same upstream.
# The access log is off, as in the nginx and haproxy peers. ferry-tls is its TLS template (the
# --scenarios tls runs): quick mode's --tls-cert/--tls-key make the listener a TLS one; the
# defaults (TLS 1.2/1.3, AEAD suites, X25519/P-256/P-384, server order, tickets + cache, 1 h)
# are what peers/tls-params.sh gives nginx and haproxy.
exec "$harness" --rounds 5 "${json[@]}" \
    nginx2='{bench_dir}/peers/nginx.sh {listen_port} {upstream_port} {workers} {tmpdir} {max_conns}' \
    nginx2-tls='{bench_dir}/peers/nginx.sh {listen_port} {upstream_port} {workers} {tmpdir} {max_conns} {tls_listen_port} {tls_cert} {tls_key}' \
    ferry="$bin --listen 127.0.0.1:{listen_port} --upstream http://127.0.0.1:{upstream_port} --workers {workers} --access-log off --max-connections {max_conns}" \
    ferry-tls="$bin --listen 127.0.0.1:{tls_listen_port} --tls-cert {tls_cert} --tls-key {tls_key} --upstream http://127.0.0.1:{upstream_port} --workers {workers} --access-log off --max-connections {max_conns}" \
    "$@"
