#!/usr/bin/env bash
# bench/ha_tail.sh: where the mixed sale's tail comes from (issue 14). One run of bench/ha.sh's
# mixed scenario (a master and one replica, appendfsync always, on core 1 with wrk; seckilld
# --threads 1 on core 0; 256 connections for BENCH_SECONDS; 1,000 units, 100,000 buyers), with
# seckilld's access log on, then per outcome the server-side latency (the access log's, from the
# request to its answer), how many answers took over BENCH_SLOW_US (5,000) and where in the run
# they were (the sale's first phase, while its 1,000 units sell, or later, answered from the
# sold-out cache or by a call to Redis), the takes sent to Redis and in how many calls (/metrics),
# wrk's p99 and how busy the two cores were (others included).
#
#   bench/ha_tail.sh wait|nowait [SECKILLD]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
variant=${1:-wait}
SK=${2:-$ROOT/build/seckilld}
SECS=${BENCH_SECONDS:-5}
SLOW=${BENCH_SLOW_US:-5000}
T=$(mktemp -d /tmp/seckill-ha-tail.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$T"; }
trap cleanup EXIT
fp() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cores() { awk '$1=="cpu0"||$1=="cpu1" {b+=$2+$3+$4+$7+$8; t+=$2+$3+$4+$5+$6+$7+$8+$9} END{print b, t}' /proc/stat; }
MP=$(fp); RP=$(fp)
mkdir -p "$T/m" "$T/r"
taskset -c 1 redis-server --port "$MP" --bind 127.0.0.1 --dir "$T/m" --appendonly yes --appendfsync always --save '' \
  --repl-diskless-sync-delay 0 --logfile "$T/m/log" & PIDS+=($!)
for _ in $(seq 100); do redis-cli -p "$MP" PING >/dev/null 2>&1 && break; sleep 0.05; done
taskset -c 1 redis-server --port "$RP" --bind 127.0.0.1 --dir "$T/r" --appendonly yes --appendfsync always --save '' \
  --logfile "$T/r/log" --replicaof 127.0.0.1 "$MP" & PIDS+=($!)
for _ in $(seq 100); do redis-cli -p "$RP" PING >/dev/null 2>&1 && break; sleep 0.05; done
until redis-cli -p "$RP" INFO replication | grep -q master_link_status:up; do sleep 0.1; done
args=(--store "redis://127.0.0.1:$MP" --threads 1 --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --access-log "$T/access.log")
[ "$variant" = wait ] && args+=(--redis-min-replicas 1)
taskset -c 0 "$SK" "${args[@]}" >"$T/sk.out" 2>"$T/sk.err" & pid=$!; PIDS+=($pid)
for _ in $(seq 200); do grep -q 'listening admin' "$T/sk.out" 2>/dev/null && break; sleep 0.05; done
pub=$(sed -n 's/listening public=.*:\([0-9]*\)$/\1/p' "$T/sk.out")
adm=$(sed -n 's/listening admin=.*:\([0-9]*\)$/\1/p' "$T/sk.out")
for _ in $(seq 100); do
  curl -sf -X PUT -H 'Content-Type: application/json' -d '{"stock": 1000, "per_user_limit": 1}' \
    "http://127.0.0.1:$adm/v1/sales/b" >/dev/null && break
  sleep 0.1
done
c0=$(cores)
TIMEFORMAT='%U %S %R'
{ time taskset -c 1 wrk -t1 -c256 -d"${SECS}s" --timeout 10s -s "$ROOT/bench/wrk.lua" "http://127.0.0.1:$pub" -- \
  pool /v1/sales/b/orders 100000 t 1 >"$T/wrk.out" 2>&1; } 2>"$T/wrk.time"
c1=$(cores)
wrkpct=$(awk '{printf "%.0f", 100*($1+$2)/$3}' "$T/wrk.time")
curl -s "http://127.0.0.1:$adm/metrics" >"$T/metrics"
kill "$pid"; wait "$pid" 2>/dev/null || true   # flushes the access log
busy=$(awk -v a="$c0" -v b="$c1" 'BEGIN{split(a,x," "); split(b,y," "); printf "%.0f", 100*(y[1]-x[1])/(y[2]-x[2])}')
/usr/bin/python3 - "$T/access.log" "$T/metrics" "$T/wrk.out" "$SLOW" "$variant" "$busy" "$wrkpct" <<'PY'
import sys
log, metrics, wrk, slow, variant, busy, wrkpct = sys.argv[1:4] + [int(sys.argv[4])] + sys.argv[5:8]
rows = [l.split() for l in open(log) if "/orders" in l]
lat = [(f[5], int(f[6])) for f in rows]          # outcome, server-side microseconds, in answer order
def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(len(v) * p / 100))] if v else 0
m = {l.split()[0]: float(l.split()[1]) for l in open(metrics) if l.startswith("seckill_redis_take_batch_size_")}
w = dict(kv.split("=") for kv in open(wrk).read().split("BENCH ")[1].split())
last_won = max((i for i, x in enumerate(lat) if x[0] == "won"), default=0)
first = lat[:last_won + 1]
later = lat[last_won + 1:]
print(f"{variant}: {len(lat)} takes, wrk p99 {float(w['p99'])/1000:.2f} ms (wrk's CPU: {wrkpct}% of a core), "
      f"cores busy {busy}% (ours and others')")
print(f"  server-side p50 {pct([x[1] for x in lat], 50)} us, p99 {pct([x[1] for x in lat], 99)} us")
for name, part in (("while the units sell", first), ("after", later)):
    v = [x[1] for x in part]
    print(f"  {name}: {len(part)} answers, p99 {pct(v, 99)} us, over {slow} us: {sum(1 for x in v if x > slow)}")
for o in sorted({x[0] for x in lat}):
    v = [x[1] for x in lat if x[0] == o]
    print(f"  {o}: {len(v)}, p50 {pct(v, 50)} us, p99 {pct(v, 99)} us, max {max(v)} us")
print(f"  takes sent to Redis: {m.get('seckill_redis_take_batch_size_sum', 0):.0f} in "
      f"{m.get('seckill_redis_take_batch_size_count', 0):.0f} calls")
PY
