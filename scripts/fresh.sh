#!/usr/bin/env bash
# make fresh: the README's two commands on a Debian 12 that has nothing but what a new user
# starts with, so that a missing install step fails here and not on a user's machine.
#
#  1. bootstraps a minimal Debian 12 root with mmdebstrap (--variant=apt, plus git, make, sudo and
#     ca-certificates) from Debian's archive only: deb.debian.org bookworm, bookworm-updates and
#     bookworm-security (SK_FRESH_MIRROR / SK_FRESH_SECURITY to use another Debian mirror);
#  2. clones the current commit (HEAD, not the working tree) into it, as /root/seckill;
#  3. inside it (chroot, in private mount and PID namespaces: every mount and every process goes
#     when it ends, whatever happens) runs `make test` with SK_NO_SKIP=1 and fails unless ctest and
#     pytest both report everything passed and nothing skipped; then `scripts/smoke.sh`: `make run`
#     and the README's curl examples.
#
# Nothing is cached: the bootstrap takes about 20 s of the 4 to 5 minutes, and a root bootstrapped
# anew each time cannot drift from what a new user gets. The root is build-fresh/root, removed at
# the end (SK_FRESH_KEEP=1 keeps it for a look); make test's log stays in build-fresh/.
# Needs root (sudo is used otherwise). Cost: docs/testing.md.
set -euo pipefail

if [ "${1:-}" = --inside ]; then
  # ---- second stage: in the new mount and PID namespaces (see the end of this file)
  root=$2
  mounted=()
  unmount_all() {
    local i
    for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount -l "${mounted[i]}" || true; done
  }
  trap unmount_all EXIT
  mnt() { mount "$@"; mounted+=("${*: -1}"); }
  mnt -t proc proc "$root/proc"
  mnt --bind /sys "$root/sys"
  mnt --bind /dev "$root/dev"
  mnt --bind /dev/pts "$root/dev/pts"
  mnt -t tmpfs -o mode=1777,nosuid,nodev shm "$root/dev/shm"
  envs=(HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8
        TERM=dumb SK_NO_SKIP=1)
  for v in http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY; do
    [ -z "${!v:-}" ] || envs+=("$v=${!v}")
  done
  # shellcheck disable=SC2016  # expanded inside
  chroot "$root" /usr/bin/env -i "${envs[@]}" /bin/bash -euo pipefail -c '
    cd /root/seckill
    t0=$(date +%s)
    echo "fresh: make test (SK_NO_SKIP=1) in a fresh Debian $(cat /etc/debian_version)" >&2
    make test 2>&1 | tee /root/make-test.log
    t1=$(date +%s)
    # ctest: everything passed, nothing disabled or skipped
    grep -qE "^100% tests passed, 0 tests failed out of [0-9]+" /root/make-test.log ||
      { echo "fresh: FAIL: ctest did not report 100% passed" >&2; exit 1; }
    if grep -qE "\*\*\*(Skipped|Not Run)|tests did not run" /root/make-test.log; then
      echo "fresh: FAIL: ctest skipped tests" >&2; exit 1
    fi
    # pytest: "N passed in Ts" and nothing else (warnings aside): no skipped, xfailed, deselected
    summary=$(grep -E "^[0-9]+ (passed|failed|skipped|errors?|deselected|xfailed|xpassed)\b" /root/make-test.log | tail -n1)
    echo "fresh: pytest: $summary" >&2
    if ! [[ $summary =~ ^[0-9]+\ passed(,\ [0-9]+\ warnings?)?\ in\  ]] || [[ $summary == *skipped* ]]; then
      echo "fresh: FAIL: pytest summary is not all passed, 0 skipped: $summary" >&2; exit 1
    fi
    # the browser test ran without node: there is none here
    if command -v node >/dev/null; then echo "fresh: FAIL: node got installed" >&2; exit 1; fi
    bash scripts/smoke.sh
    t2=$(date +%s)
    echo "fresh: make test $((t1 - t0)) s, make run smoke test $((t2 - t1)) s" >&2
  '
  exit $?
fi

# ---- first stage, on the host
if [ "$(id -u)" -ne 0 ]; then
  exec sudo SK_FRESH_MIRROR="${SK_FRESH_MIRROR:-}" SK_FRESH_SECURITY="${SK_FRESH_SECURITY:-}" \
    SK_FRESH_KEEP="${SK_FRESH_KEEP:-}" bash "$0" "$@"
fi
repo=$(cd "$(dirname "$0")/.." && pwd)
out=$repo/build-fresh
root=$out/root
mirror=${SK_FRESH_MIRROR:-http://deb.debian.org/debian}
security=${SK_FRESH_SECURITY:-http://deb.debian.org/debian-security}
start=$(date +%s)
log() { echo "fresh: $*" >&2; }

commit=$(git -C "$repo" rev-parse HEAD)
log "testing commit $(git -C "$repo" log -1 --format='%h %s' HEAD)"
[ -z "$(git -C "$repo" status --porcelain --untracked-files=no)" ] ||
  log "note: the working tree has uncommitted changes; they are not tested (HEAD is)"

if ! command -v mmdebstrap >/dev/null; then
  log "installing mmdebstrap"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mmdebstrap ||
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mmdebstrap; }
fi

mkdir -p "$out"
exec 9>"$out/lock"
flock -n 9 || { log "another make fresh runs in $out"; exit 1; }

cleanup() {
  local rc=$?
  if [ -d "$root" ]; then
    if findmnt -rn -o TARGET | grep -qF "$root"; then
      log "something is still mounted under $root: not removing it"  # never rm -rf through a mount
    elif [ "${SK_FRESH_KEEP:-0}" != 0 ]; then
      log "kept $root (SK_FRESH_KEEP=1)"
    else
      rm -rf "$root" 2>/dev/null || { sleep 2; rm -rf "$root"; }  # processes just killed may linger
    fi
  fi
  log "$([ "$rc" = 0 ] && echo PASS || echo "FAIL (exit $rc)") in $(($(date +%s) - start)) s"
}
trap cleanup EXIT
# The long steps run in the background, so that a signal reaches this script at once: it kills
# the step and cleans up. SIGKILL: unshare blocks SIGTERM while it waits for its child; killed, it
# takes the PID namespace's init (--kill-child) and with it every process inside.
child=
on_signal() {
  [ -z "$child" ] || kill -KILL "$child" 2>/dev/null || true
  wait 2>/dev/null || true
  exit "$1"
}
trap 'on_signal 130' INT
trap 'on_signal 143' TERM
step() {
  local rc=0
  "$@" &
  child=$!
  wait "$child" || rc=$?
  child=
  return "$rc"
}
if [ -e "$root" ]; then  # left by a run that was killed, or kept
  findmnt -rn -o TARGET | grep -qF "$root" && { log "$root has mounts: unmount them first"; exit 1; }
  rm -rf "$root"
fi

# ---- 1. Debian 12 from Debian's archive only (mmdebstrap in its own mount and PID namespaces
# too, so that none of its mounts and processes can outlive it)
log "bootstrapping Debian 12 (mmdebstrap --variant=apt, from $mirror and $security)"
t=$(date +%s)
step unshare --mount --pid --fork --kill-child --mount-proc --propagation private -- mmdebstrap --quiet --variant=apt \
  --include=git,make,sudo,ca-certificates --aptopt='Acquire::Retries "3"' bookworm "$root" \
  "deb $mirror bookworm main" "deb $mirror bookworm-updates main" "deb $security bookworm-security main"
log "bootstrap: $(($(date +%s) - t)) s, $(du -sm "$root" | cut -f1) MB"
# As in any chroot, package scripts do not start services (redis-server's would take port 6379
# of the host's network); the tests start their own servers.
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod 0755 "$root/usr/sbin/policy-rc.d"
rm -f "$root/etc/resolv.conf"
cat /etc/resolv.conf >"$root/etc/resolv.conf"
grep -qs localhost "$root/etc/hosts" || printf '127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n' >>"$root/etc/hosts"

# ---- 2. the current commit, cloned as a user would
git clone -q "$repo" "$root/root/seckill"
git -C "$root/root/seckill" checkout -q --detach "$commit"

# ---- 3. make test and make run inside, in private mount and PID namespaces
rc=0
step unshare --mount --pid --fork --kill-child --propagation private -- bash "$0" --inside "$root" || rc=$?
cp "$root/root/make-test.log" "$out/make-test.log" 2>/dev/null || true
log "disk: the root took $(du -sm "$root" | cut -f1) MB after make test" \
  "($(du -sm "$root/var/cache/apt/archives" | cut -f1) MB of it the packages downloaded)"
exit "$rc"
