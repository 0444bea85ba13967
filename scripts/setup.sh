#!/usr/bin/env bash
# Install the Debian 12 packages ferry needs to build and test, and har-validator (npm) into
# .cache/node for the HAR tests (chromium and libnss3-tools, for certutil, are for the browser
# through interception in tests/integration/test_chromium.py). Idempotent: when everything is
# already installed it only runs one dpkg-query and one file check, and exits.
set -euo pipefail

PACKAGES=(
    build-essential cmake pkg-config clang clang-format libclang-rt-14-dev
    node-llhttp libcriterion-dev
    libssl-dev libyaml-dev zlib1g-dev libbrotli-dev libzstd-dev libnghttp2-dev liblua5.4-dev
    libpcre2-dev libc-ares-dev libcrypt-dev
    python3-pytest python3-requests python3-h2 python3-trustme python3-websockets
    python3-brotli python3-zstandard
    curl wrk nginx haproxy procps iproute2
    chromium libnss3-tools
)

say() { echo "setup: $*"; }
die() { echo "setup: error: $*" >&2; exit 1; }

command -v dpkg-query >/dev/null 2>&1 || die "dpkg-query not found: this script supports Debian 12 only"

# One dpkg-query for all packages; installed ones print "name ii ".
declare -A installed=()
while read -r name status; do
    [[ "$status" == ii* ]] && installed["${name%%:*}"]=1
done < <(dpkg-query -W -f='${Package} ${db:Status-Abbrev}\n' "${PACKAGES[@]}" 2>/dev/null || true)

missing=()
for p in "${PACKAGES[@]}"; do
    [[ -n "${installed[$p]:-}" ]] || missing+=("$p")
done

SUDO=()
if [[ "$(id -u)" != 0 ]] && command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
fi
APT=("${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -y -q -o Dpkg::Use-Pty=0)

# Keep package maintainer scripts (nginx, haproxy) from starting daemons.
policy=/usr/sbin/policy-rc.d
created_policy=0
cleanup() { if ((created_policy)); then "${SUDO[@]}" rm -f "$policy"; fi; }
trap cleanup EXIT

# apt_install PKG...: apt-get update once, then install.
updated=0
apt_install() {
    if [[ "$(id -u)" != 0 && ${#SUDO[@]} == 0 ]]; then
        die "not root and sudo not available; as root run: apt-get install $*"
    fi
    if ((created_policy == 0)) && [[ ! -e "$policy" ]]; then
        if printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$policy" >/dev/null &&
            "${SUDO[@]}" chmod 755 "$policy"; then
            created_policy=1
            say "created $policy to keep services from starting during install"
        fi
    fi
    if ((updated == 0)); then
        say "apt-get update"
        "${APT[@]}" update >/dev/null ||
            die "apt-get update failed; install manually: apt-get install $*"
        updated=1
    fi
    say "apt-get install $*"
    "${APT[@]}" install --no-install-recommends "$@" >/dev/null ||
        die "apt-get install failed; install manually: apt-get install $*"
    say "installed $# package(s)"
}

if ((${#missing[@]} == 0)); then
    say "all ${#PACKAGES[@]} packages installed"
else
    say "missing: ${missing[*]}"
    apt_install "${missing[@]}"
fi

# har-validator (npm) checks `ferry har` output in tests/integration/test_har_replay.py. It goes
# into the project's own .cache/node (never a global install); node and npm come from Debian
# (nodejs, npm) when the machine has none.
NODE_DIR="$(cd "$(dirname "$0")/.." && pwd)/.cache/node"
HAR_VALIDATOR=har-validator@5.1.5
if [[ ! -f "$NODE_DIR/node_modules/har-validator/package.json" ]]; then
    node_missing=()
    command -v node >/dev/null 2>&1 || node_missing+=(nodejs)
    command -v npm >/dev/null 2>&1 || node_missing+=(npm)
    if ((${#node_missing[@]})); then
        apt_install "${node_missing[@]}"
    fi
    say "npm install $HAR_VALIDATOR into $NODE_DIR"
    mkdir -p "$NODE_DIR"
    npm install --prefix "$NODE_DIR" --no-audit --no-fund --loglevel=error "$HAR_VALIDATOR" \
        >/dev/null || die "npm install $HAR_VALIDATOR failed (into $NODE_DIR)"
fi
