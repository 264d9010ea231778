#!/usr/bin/env bash
# Installs the Debian 12 packages seckill needs to build, test and run, from Debian's archive only.
# Idempotent: does nothing when everything is present. Uses sudo when not root.
# SK_DEPS_TEST=0 leaves out what only the tests need (make run, make deps, make bench);
# SK_DEPS_EXTRA adds packages (bench, fuzz).
set -euo pipefail
pkgs=(build-essential cmake pkg-config clang libclang-rt-14-dev
      libh2o-evloop-dev libssl-dev zlib1g-dev libhiredis-dev libsqlite3-dev sqlite3
      libjansson-dev libmimalloc-dev libcmocka-dev redis-server python3 python3-pytest python3-pytest-xdist curl apache2-utils wrk)
# The tests only: the dashboard's browser test drives Debian's chromium through Debian's
# chromium-driver with python3-selenium (docs/dashboard.md), and the systemd unit is checked with
# systemd-analyze (package systemd, absent from minimal roots and containers); the buyer-token
# tests make ES256 and EdDSA keys and sign with the openssl command line (package openssl, which
# minimal roots lack too); /metrics and the example alert rules are checked with promtool (package
# prometheus); every JSON reply of the e2e suite is validated against docs/openapi.yaml
# (python3-yaml, python3-jsonschema); the Debian package is built (debhelper, dpkg-dev, fakeroot),
# checked (lintian) and its man page read (man-db); the failover tests run three redis-sentinel
# (tests/e2e/test_ha.py). No test skips for want of them: a missing one fails.
if [ "${SK_DEPS_TEST:-1}" != 0 ]; then
  pkgs+=(chromium chromium-driver python3-selenium systemd openssl prometheus python3-yaml python3-jsonschema
         debhelper dpkg-dev fakeroot lintian man-db redis-sentinel)
fi
# shellcheck disable=SC2206
pkgs+=(${SK_DEPS_EXTRA:-})
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
sudo=()
[ "$(id -u)" -eq 0 ] || sudo=(sudo)
export DEBIAN_FRONTEND=noninteractive
if ((${#missing[@]})); then
  echo "deps: installing ${missing[*]}" >&2
  "${sudo[@]}" apt-get update -qq || true
  "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
