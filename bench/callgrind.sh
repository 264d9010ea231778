#!/usr/bin/env bash
# bench/callgrind.sh: user-space instructions per request of seckilld, counted by callgrind, for a
# scenario served over keep-alive (ab -k, 64 connections). Unlike CPU time on a shared virtual
# machine, the count does not drift from one run to the next, so it measures a change to our own
# code exactly (it leaves out the kernel, which is most of the cost; see BENCHMARKS.md).
# The server runs twice under callgrind, serving N1 and then N2 requests; the difference of the two
# totals divided by N2 - N1 is the cost of one request, start-up and shutdown cancelling out.
#
# Usage: bench/callgrind.sh [sold-out|winning] [N1] [N2]   (defaults: sold-out 10000 30000)
# Env:   SECKILLD=path (default build/seckilld), CG_KEEP=dir (keep the callgrind outputs there,
#        for callgrind_annotate)
# Needs: valgrind, ab (apache2-utils), curl.
set -euo pipefail
scenario=${1:-sold-out}
n1=${2:-10000}
n2=${3:-30000}
bin=${SECKILLD:-build/seckilld}
case $scenario in
  sold-out) stock=0 ;;
  winning)  stock=1000000000000000 ;;
  *) echo "usage: $0 [sold-out|winning] [N1] [N2]" >&2; exit 2 ;;
esac
for c in valgrind ab curl; do command -v "$c" >/dev/null || { echo "$0: needs $c" >&2; exit 1; }; done
dir=$(mktemp -d /tmp/seckill-callgrind.XXXXXX)
vpid=
trap '[ -n "$vpid" ] && kill "$vpid" 2>/dev/null; rm -rf "$dir"' EXIT

# run N: total instructions of a seckilld that served N takes
run() {
  local n=$1 d=$dir/$1 pub admin
  mkdir -p "$d"
  valgrind --tool=callgrind --callgrind-out-file="$d/callgrind.out" "$bin" --listen 127.0.0.1:0 \
    --admin-listen 127.0.0.1:0 --store "sqlite:$d/cg.db" --threads 1 --log-file "$d/seckilld.log" \
    >"$d/stdout" 2>"$d/stderr" &
  vpid=$!
  for _ in $(seq 300); do grep -q '^listening admin=' "$d/stdout" 2>/dev/null && break; sleep 0.1; done
  pub=$(sed -n 's/^listening public=//p' "$d/stdout")
  admin=$(sed -n 's/^listening admin=//p' "$d/stdout")
  [ -n "$admin" ] || { echo "$0: seckilld did not start under valgrind" >&2; cat "$d/stderr" >&2; exit 1; }
  curl -sf -o /dev/null -X PUT -H 'Content-Type: application/json' --data "{\"stock\": $stock}" \
    "http://$admin/v1/sales/cg"
  printf '{"user":"u-0-123456"}' >"$d/body.json"
  ab -q -k -n "$n" -c 64 -p "$d/body.json" -T application/json "http://$pub/v1/sales/cg/orders" \
    >"$d/ab.out" 2>&1
  grep -q "Complete requests: *$n\$" "$d/ab.out" || { echo "$0: ab did not complete $n requests" >&2; exit 1; }
  kill -TERM "$vpid"
  wait "$vpid" || true
  vpid=
  [ -n "${CG_KEEP:-}" ] && mkdir -p "$CG_KEEP" && cp "$d/callgrind.out" "$CG_KEEP/callgrind.$scenario.$n.out"
  sed -n 's/^summary: *\([0-9]*\).*/\1/p' "$d/callgrind.out"
}

t1=$(run "$n1")
t2=$(run "$n2")
echo "scenario=$scenario requests=$n1,$n2 instructions=$t1,$t2 per_request=$(( (t2 - t1) / (n2 - n1) ))"
