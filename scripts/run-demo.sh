#!/usr/bin/env bash
# Demo for `make run`: an echo upstream on 127.0.0.1:9000 and ferry on 127.0.0.1:8080.
# The banner is printed once ferry listens; if ferry cannot start (8080 taken...), its own
# message is shown and the demo exits with ferry's exit code. Ctrl-C stops both.
#
# Environment: FERRY_BIN (build/ferry), DEMO_LISTEN (127.0.0.1:8080), DEMO_UPSTREAM_PORT (9000).
set -euo pipefail
cd "$(dirname "$0")/.."

FERRY_BIN=${FERRY_BIN:-build/ferry}
UPSTREAM_PORT=${DEMO_UPSTREAM_PORT:-9000}
LISTEN=${DEMO_LISTEN:-127.0.0.1:8080}
export FERRY_DEMO_TOKEN="${FERRY_DEMO_TOKEN:-demo-secret-token}"

[[ -x "$FERRY_BIN" ]] || { echo "run-demo: $FERRY_BIN not found; run 'make' first" >&2; exit 1; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

if port_open "$UPSTREAM_PORT"; then
    echo "run-demo: port $UPSTREAM_PORT (the demo upstream) is already in use; stop what" \
        "listens there or set DEMO_UPSTREAM_PORT" >&2
    exit 1
fi

upstream_pid= ferry_pid= stopping=
ferry_err=$(mktemp "${TMPDIR:-/tmp}/ferry-demo.XXXXXX")
cleanup() {
    if [[ -n "$ferry_pid" ]]; then
        kill -TERM "$ferry_pid" 2>/dev/null || true
        wait "$ferry_pid" 2>/dev/null || true
    fi
    if [[ -n "$upstream_pid" ]]; then
        kill "$upstream_pid" 2>/dev/null || true
        wait "$upstream_pid" 2>/dev/null || true
    fi
    rm -f "$ferry_err"
}
trap cleanup EXIT
# Background jobs of a script ignore SIGINT, so Ctrl-C reaches ferry as a SIGTERM from here.
stop() {
    stopping=1
    if [[ -n "$ferry_pid" ]]; then kill -TERM "$ferry_pid" 2>/dev/null || true; fi
}
trap stop INT TERM

python3 scripts/demo_upstream.py "$UPSTREAM_PORT" &
upstream_pid=$!
for _ in $(seq 50); do # at most 5 s
    port_open "$UPSTREAM_PORT" && break
    kill -0 "$upstream_pid" 2>/dev/null || { echo "run-demo: upstream failed to start" >&2; exit 1; }
    sleep 0.1
done
port_open "$UPSTREAM_PORT" || { echo "run-demo: upstream not listening after 5 s" >&2; exit 1; }
[[ -z "$stopping" ]] || exit 0

# ferry's stderr goes to the terminal and to a file the readiness check reads.
"$FERRY_BIN" --listen "$LISTEN" \
    --upstream "http://127.0.0.1:$UPSTREAM_PORT" \
    --request-header 'X-Demo-Token: ${env:FERRY_DEMO_TOKEN}' \
    --response-header 'X-Proxied-By: ferry' \
    2> >(tee -a "$ferry_err" >&2) &
ferry_pid=$!

# Wait for ferry's "listening on" line, or for ferry to exit (its message is already shown).
for _ in $(seq 100); do # at most 10 s
    grep -q "listening on" "$ferry_err" && break
    if ! kill -0 "$ferry_pid" 2>/dev/null; then
        rc=0
        wait "$ferry_pid" || rc=$?
        ferry_pid=
        [[ -n "$stopping" ]] && exit 0
        if grep -q "Address already in use" "$ferry_err"; then
            echo "run-demo: $LISTEN is taken by another program (an earlier demo?); stop it or" \
                "run with DEMO_LISTEN=127.0.0.1:8081" >&2
        fi
        echo "run-demo: ferry did not start (exit code $rc)" >&2
        exit "$((rc ? rc : 1))"
    fi
    sleep 0.1
done
grep -q "listening on" "$ferry_err" || { echo "run-demo: ferry not listening after 10 s" >&2; exit 1; }

echo "------------------------------------------------------------"
echo " ferry on http://$LISTEN/ -> upstream http://127.0.0.1:$UPSTREAM_PORT"
echo " try: curl -i http://$LISTEN/"
echo " Ctrl-C to stop"
echo "------------------------------------------------------------"

# wait returns early when a trapped signal arrives; keep waiting until ferry has drained.
rc=0
while kill -0 "$ferry_pid" 2>/dev/null; do
    rc=0
    wait "$ferry_pid" || rc=$?
done
ferry_pid=
[[ -n "$stopping" ]] && rc=0
exit "$rc"
