#!/usr/bin/env bash
# bench/ha.sh (`make bench-ha`): what --redis-min-replicas costs, and how long a failover takes
# (issue 14). A Redis master and one replica (both appendonly yes, appendfsync always) on core 1
# with the load generator, seckilld --threads 1 on core 0, as in bench/run.sh. For each of "no
# WAIT" and --redis-min-replicas 1: wrk at BENCH_CONNS (256) keep-alive connections on the
# winning path (every take wins) and on the mixed sale (1,000 units, 100,000 buyers), BENCH_REPEAT
# runs of BENCH_SECONDS each, the run with the median req/s reported, with seckilld's CPU per
# request. Then the failover: tests/e2e/test_ha.py's kill -9 case BENCH_FAILOVERS times, the
# median time from the kill to the first 201 on the promoted replica. Prints Markdown rows for
# BENCHMARKS.md (and writes them to bench/out/ha.md).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SECS=${BENCH_SECONDS:-5}
REPEAT=${BENCH_REPEAT:-3}
CONNS=${BENCH_CONNS:-256}
FAILOVERS=${BENCH_FAILOVERS:-5}
SECKILLD=${SECKILLD:-$ROOT/build/seckilld}
OUT=${BENCH_OUT:-$ROOT/bench/out}
HZ=$(getconf CLK_TCK)
mkdir -p "$OUT"
TMP=$(mktemp -d /tmp/seckill-bench-ha.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT
free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
log() { printf '[bench-ha %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }

redis() {   # redis NAME PORT [REPLICAOF_PORT]
  mkdir -p "$TMP/$1"
  taskset -c 1 redis-server --port "$2" --bind 127.0.0.1 --dir "$TMP/$1" --appendonly yes \
    --appendfsync always --save '' --repl-diskless-sync-delay 0 --logfile "$TMP/$1/log" \
    ${3:+--replicaof 127.0.0.1 $3} &
  PIDS+=($!)
  for _ in $(seq 100); do redis-cli -p "$2" PING >/dev/null 2>&1 && return; sleep 0.05; done
  log "redis $1 did not start"; exit 1
}

MP=$(free_port); RP=$(free_port)
redis master "$MP"
redis replica "$RP" "$MP"
until redis-cli -p "$RP" INFO replication | grep -q master_link_status:up; do sleep 0.1; done

# point VARIANT SCENARIO: sets ROW
point() {
  local variant=$1 scen=$2 best="" rows=()
  for run in $(seq "$REPEAT"); do
    redis-cli -p "$MP" FLUSHALL >/dev/null
    local args=(--store "redis://127.0.0.1:$MP" --threads 1 --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0)
    [ "$variant" = wait ] && args+=(--redis-min-replicas 1)
    taskset -c 0 "$SECKILLD" "${args[@]}" >"$TMP/sk.out" 2>"$TMP/sk.err" &
    local pid=$! pub adm
    for _ in $(seq 100); do grep -q 'listening admin' "$TMP/sk.out" 2>/dev/null && break; sleep 0.05; done
    pub=$(sed -n 's/listening public=.*:\([0-9]*\)$/\1/p' "$TMP/sk.out")
    adm=$(sed -n 's/listening admin=.*:\([0-9]*\)$/\1/p' "$TMP/sk.out")
    local body mode pool
    if [ "$scen" = winning ]; then body='{"stock": 1000000000000}'; mode=user; pool=0
    else body='{"stock": 1000, "per_user_limit": 1}'; mode=pool; pool=100000; fi
    until curl -sf -X PUT -H 'Content-Type: application/json' -d "$body" "http://127.0.0.1:$adm/v1/sales/b" >/dev/null; do sleep 0.1; done
    local t0 t1 out line
    t0=$(ticks "$pid")
    out=$(taskset -c 1 wrk -t1 -c"$CONNS" -d"${SECS}s" --timeout 10s -s "$ROOT/bench/wrk.lua" \
          "http://127.0.0.1:$pub" -- "$mode" /v1/sales/b/orders "$pool" "r$run" 1 2>&1)
    t1=$(ticks "$pid")
    local sold
    sold=$(redis-cli -p "$MP" HGET 'sk:{b}' sold)
    kill "$pid"; wait "$pid" 2>/dev/null || true
    line=$(grep '^BENCH ' <<<"$out")
    rows+=("$(awk -v l="$line" -v t="$((t1 - t0))" -v hz="$HZ" -v sold="$sold" 'BEGIN{
      n=split(l, f, " "); for (i=2;i<=n;i++){split(f[i], kv, "="); v[kv[1]]=kv[2]}
      s=v["duration_us"]/1e6; rps=v["requests"]/s; cpu=t/hz*1e6/v["requests"];
      printf "%.0f %.2f %.2f %.2f %s %d\n", rps, v["p50"]/1000, v["p99"]/1000, cpu, sold, v["status"]}')")
  done
  # the run with the median req/s
  ROW=$(printf '%s\n' "${rows[@]}" | sort -n | sed -n "$(( (REPEAT + 1) / 2 ))p")
  log "$variant $scen: $ROW (req/s p50 p99 cpu_us/req sold non2xx) of: $(printf '%s; ' "${rows[@]}")"
}

declare -A R
for scen in winning mixed; do
  for variant in nowait wait; do
    point "$variant" "$scen"
    R[$variant-$scen]=$ROW
  done
done
f() { awk -v r="$1" -v k="$2" 'BEGIN{split(r, a, " "); print a[k]}'; }
{
  echo "| scenario | --redis-min-replicas | conns | req/s | p50 ms | p99 ms | seckilld CPU us/req | sold |"
  echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
  for scen in winning mixed; do
    for variant in nowait wait; do
      r=${R[$variant-$scen]}
      printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "$scen" "$([ $variant = wait ] && echo 1 || echo 0)" \
        "$CONNS" "$(f "$r" 1)" "$(f "$r" 2)" "$(f "$r" 3)" "$(f "$r" 4)" "$(f "$r" 5)"
    done
  done
  awk -v a="$(f "${R[wait-winning]}" 1)" -v b="$(f "${R[nowait-winning]}" 1)" \
    'BEGIN{printf "\nwinning throughput with WAIT / without: %.2fx\n", a/b}'
} | tee "$OUT/ha.md"

for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
log "failover: $FAILOVERS runs of test_kill9_master_service_resumes"
: > "$TMP/times"
SK_HA_RUNS=$FAILOVERS SK_HA_TIMES=$TMP/times SECKILLD=$SECKILLD /usr/bin/python3 -m pytest -q \
  "$ROOT/tests/e2e/test_ha.py" -k service_resumes >&2
sort -n -k1 "$TMP/times" | awk '{k[NR]=$1; s[NR]=$2} END{m=int((NR+1)/2);
  printf "\nfailover (%d runs): kill -9 to the first 201 on the promoted replica, median %.2f s (%.2f-%.2f); from +switch-master: median %.2f s\n", NR, k[m], k[1], k[NR], s[m]}' \
  | tee -a "$OUT/ha.md"
