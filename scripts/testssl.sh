#!/usr/bin/env bash
# Runs testssl.sh (Debian package testssl.sh) against a ferry TLS listener with default settings,
# in front of the demo upstream, and prints every finding at LOW or above. The certificate is a
# fresh ECDSA P-256 one for localhost from a throw-away CA (tests/integration/certs.py), so the
# findings about its chain and revocation are expected; see docs/security.md#tls.
#   scripts/testssl.sh                       # default settings
#   scripts/testssl.sh --response-header 'Strict-Transport-Security: max-age=63072000'
# Extra arguments go to ferry.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
command -v testssl >/dev/null || { echo "testssl: not installed (apt-get install testssl.sh)" >&2; exit 1; }
make -C "$repo" --no-print-directory >/dev/null
dir=$(mktemp -d /tmp/ferry-testssl.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$dir"; }
trap cleanup EXIT
(cd "$repo/tests/integration" && /usr/bin/python3 -c "
import certs
certs.CA('$dir').issue('localhost', '127.0.0.1', file='site', days=365)")
/usr/bin/python3 "$repo/scripts/demo_upstream.py" 18480 >/dev/null 2>&1 &
pids+=($!)
"$repo/build/ferry" --listen 127.0.0.1:18443 --tls-cert "$dir/site.pem" --tls-key "$dir/site.key" \
    --upstream http://127.0.0.1:18480 --access-log off --log-level warn "$@" 2>"$dir/ferry.log" &
pids+=($!)
for _ in $(seq 50); do curl -sk -o /dev/null https://127.0.0.1:18443/ && break; sleep 0.1; done
testssl --quiet --color 0 --jsonfile "$dir/result.json" 127.0.0.1:18443 >"$dir/testssl.txt" || true
/usr/bin/python3 - "$dir/result.json" <<'PY'
import json, sys
order = ["CRITICAL", "HIGH", "MEDIUM", "LOW"]
found = [f for f in json.load(open(sys.argv[1])) if f["severity"] in order]
for f in sorted(found, key=lambda f: order.index(f["severity"])):
    print("%-8s %-22s %s" % (f["severity"], f["id"], f["finding"]))
print("%d finding(s) at LOW or above" % len(found))
PY
