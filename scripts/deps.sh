#!/usr/bin/env bash
# Installs the Debian 12 packages seckill needs to build, test and run. Idempotent: does nothing
# when everything is present. Uses sudo when not root. SK_DEPS_EXTRA adds packages (bench, fuzz).
# Also (optional, see below) what the dashboard's browser test needs: chromium, node, playwright-core.
set -euo pipefail
pkgs=(build-essential cmake pkg-config clang libclang-rt-14-dev
      libh2o-evloop-dev libssl-dev zlib1g-dev libhiredis-dev libsqlite3-dev sqlite3
      libjansson-dev libmimalloc-dev libcmocka-dev redis-server python3 python3-pytest curl apache2-utils wrk)
# shellcheck disable=SC2206
pkgs+=(${SK_DEPS_EXTRA:-})
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
sudo=()
[ "$(id -u)" -eq 0 ] || sudo=(sudo)
export DEBIAN_FRONTEND=noninteractive
updated=0
if ((${#missing[@]})); then
  echo "deps: installing ${missing[*]}" >&2
  "${sudo[@]}" apt-get update -qq || true
  updated=1
  "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The dashboard's browser test (tests/e2e/test_dashboard.py, docs/dashboard.md): Debian's chromium,
# Node.js with npm (any node >= 20 already here is used as is), and playwright-core from the npm
# registry as pinned by tests/e2e/browser/package-lock.json. Optional: where they cannot be had the
# test skips and says why, so a failure here only warns. SK_DEPS_BROWSER=0 skips this part.
if [ "${SK_DEPS_BROWSER:-1}" != 0 ]; then
  browser=()
  [ -x /usr/bin/chromium ] || browser+=(chromium)
  command -v node >/dev/null || browser+=(nodejs)
  command -v npm >/dev/null || browser+=(npm)
  if ((${#browser[@]})); then
    echo "deps: installing ${browser[*]} (dashboard browser test)" >&2
    ((updated)) || "${sudo[@]}" apt-get update -qq || true
    "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${browser[@]}" ||
      echo "deps: warning: could not install ${browser[*]}; the browser test will be skipped" >&2
  fi
  web="$(cd "$(dirname "$0")/.." && pwd)/tests/e2e/browser"
  if command -v npm >/dev/null &&
     ! [ "$web/node_modules/.package-lock.json" -nt "$web/package-lock.json" ]; then
    echo "deps: npm ci in tests/e2e/browser (playwright-core)" >&2
    (cd "$web" && npm ci --no-audit --no-fund --loglevel=error) ||
      echo "deps: warning: npm ci failed; the browser test will be skipped" >&2
  fi
fi
