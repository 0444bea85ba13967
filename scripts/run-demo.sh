#!/usr/bin/env bash
# Demo for `make run`: an echo upstream on 127.0.0.1:9000 and ferry on 127.0.0.1:8080.
# Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."

FERRY_BIN=${FERRY_BIN:-build/ferry}
UPSTREAM_PORT=9000
LISTEN=127.0.0.1:8080
export FERRY_DEMO_TOKEN="${FERRY_DEMO_TOKEN:-demo-secret-token}"

[[ -x "$FERRY_BIN" ]] || { echo "run-demo: $FERRY_BIN not found; run 'make' first" >&2; exit 1; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

if port_open "$UPSTREAM_PORT"; then
    echo "run-demo: port $UPSTREAM_PORT is already in use" >&2
    exit 1
fi

python3 scripts/demo_upstream.py "$UPSTREAM_PORT" &
upstream_pid=$!
cleanup() {
    kill "$upstream_pid" 2>/dev/null || true
    wait "$upstream_pid" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for _ in $(seq 50); do # at most 5 s
    port_open "$UPSTREAM_PORT" && break
    kill -0 "$upstream_pid" 2>/dev/null || { echo "run-demo: upstream failed to start" >&2; exit 1; }
    sleep 0.1
done
port_open "$UPSTREAM_PORT" || { echo "run-demo: upstream not listening after 5 s" >&2; exit 1; }

echo "------------------------------------------------------------"
echo " ferry on http://$LISTEN/ -> upstream http://127.0.0.1:$UPSTREAM_PORT"
echo " try: curl -i http://$LISTEN/"
echo " Ctrl-C to stop"
echo "------------------------------------------------------------"

"$FERRY_BIN" --listen "$LISTEN" \
    --upstream "http://127.0.0.1:$UPSTREAM_PORT" \
    --request-header 'X-Demo-Token: ${env:FERRY_DEMO_TOKEN}' \
    --response-header 'X-Proxied-By: ferry'
