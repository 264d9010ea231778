#!/usr/bin/env bash
# Installs the Debian 12 packages seckill needs to build, test and run. Idempotent: does nothing
# when everything is present. Uses sudo when not root. SK_DEPS_EXTRA adds packages (bench, fuzz).
set -euo pipefail
pkgs=(build-essential cmake pkg-config clang libclang-rt-14-dev
      libh2o-evloop-dev libssl-dev zlib1g-dev libhiredis-dev libsqlite3-dev sqlite3
      libjansson-dev libcmocka-dev redis-server python3 python3-pytest curl apache2-utils wrk)
# shellcheck disable=SC2206
pkgs+=(${SK_DEPS_EXTRA:-})
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
((${#missing[@]})) || exit 0
echo "deps: installing ${missing[*]}" >&2
sudo=()
[ "$(id -u)" -eq 0 ] || sudo=(sudo)
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq || true
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
