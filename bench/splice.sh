#!/usr/bin/env bash
# The splice measurement (issue 7): ferry with --splice on and with --splice off side by side,
# next to nginx, an nginx A/A pair, haproxy and ferry's default, in the `large` scenario (GET
# 1 MiB, 10 keep-alive connections), 5 rounds. Extra arguments go to compare (--rounds 3, ...).
# The results and their reading: docs/benchmarks.md, "Splice (issue 7)".
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
make -C "$repo" --no-print-directory >/dev/null
bin=$(mktemp -d /tmp/ferry-splice-bench.XXXXXX)/ferry
cp "$repo/build/ferry" "$bin"
t='--listen 127.0.0.1:{listen_port} --upstream http://127.0.0.1:{upstream_port} --workers {workers} --access-log off --max-connections {max_conns}'
# The templates must come before the options: compare takes its NAME=TEMPLATE arguments as one
# run of positional arguments, after compare.sh's own.
exec "$here/compare.sh" ferry-splice="$bin $t --splice on" ferry-copy="$bin $t --splice off" \
    --scenarios large --rounds 5 --proxies nginx,haproxy "$@"
