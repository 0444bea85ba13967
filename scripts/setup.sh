#!/usr/bin/env bash
# Install the Debian 12 packages ferry needs to build and test. Idempotent: when everything
# is already installed it only runs one dpkg-query and exits.
set -euo pipefail

PACKAGES=(
    build-essential cmake pkg-config clang clang-format libclang-rt-14-dev
    node-llhttp libcriterion-dev
    libssl-dev libyaml-dev zlib1g-dev libbrotli-dev libzstd-dev libnghttp2-dev liblua5.4-dev
    libpcre2-dev libc-ares-dev libcrypt-dev
    python3-pytest python3-requests python3-h2 python3-trustme python3-websockets
    curl wrk nginx haproxy procps iproute2
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

if ((${#missing[@]} == 0)); then
    say "all ${#PACKAGES[@]} packages installed"
    exit 0
fi
say "missing: ${missing[*]}"

SUDO=()
if [[ "$(id -u)" != 0 ]]; then
    command -v sudo >/dev/null 2>&1 ||
        die "not root and sudo not available; as root run: apt-get install ${missing[*]}"
    SUDO=(sudo)
fi
APT=("${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -y -q -o Dpkg::Use-Pty=0)

# Keep package maintainer scripts (nginx, haproxy) from starting daemons.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [[ ! -e "$policy" ]]; then
    if printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$policy" >/dev/null &&
        "${SUDO[@]}" chmod 755 "$policy"; then
        created_policy=1
        say "created $policy to keep services from starting during install"
    fi
fi
cleanup() { if ((created_policy)); then "${SUDO[@]}" rm -f "$policy"; fi; }
trap cleanup EXIT

say "apt-get update"
"${APT[@]}" update >/dev/null ||
    die "apt-get update failed; install manually: apt-get install ${missing[*]}"

say "apt-get install ${missing[*]}"
"${APT[@]}" install --no-install-recommends "${missing[@]}" >/dev/null ||
    die "apt-get install failed; install manually: apt-get install ${missing[*]}"

say "installed ${#missing[@]} package(s)"
