#!/usr/bin/env bash
# bench/ha.sh (`make bench-ha`): what --redis-min-replicas costs, and how long a failover takes
# (issue 14). A Redis master and one replica (both appendonly yes, appendfsync always) on core 1
# with the load generator, seckilld --threads 1 on core 0, as in bench/run.sh. wrk at BENCH_CONNS
# (256) keep-alive connections for BENCH_SECONDS on the winning path (every take wins) and on the
# mixed sale (1,000 units, 100,000 buyers), without WAIT and with --redis-min-replicas 1, the two
# back to back (in alternating order) BENCH_REPEAT times: the machine is shared, so a pair sees
# about the same load and the ratio is taken per pair. Each run records req/s, p50/p99, the CPU
# per request of seckilld, of the master and of the replica, the takes per script call, Redis's
# own time per take in EVALSHA (INFO commandstats), and how busy the two cores were with other
# processes (and the hypervisor's steal) meanwhile. Reported: the median of each and its range.
# Then the failover: tests/e2e/test_ha.py's kill -9 cases BENCH_FAILOVERS times each (without
# --redis-min-replicas, one replica; with --redis-min-replicas 1, two replicas), the median time
# from the kill to the first 201 on the promoted replica and from the +switch-master to it.
# Prints Markdown for BENCHMARKS.md (and writes it, with every run, to bench/out/ha*.md).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SECS=${BENCH_SECONDS:-5}
REPEAT=${BENCH_REPEAT:-5}
CONNS=${BENCH_CONNS:-256}
FAILOVERS=${BENCH_FAILOVERS:-5}
SCENARIOS=${BENCH_SCENARIOS:-winning mixed}
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
# voluntary context switches of all of a process's threads: how often its loops went to sleep
sleeps() { cat /proc/"$1"/task/*/status | awk '/^voluntary_ctxt_switches/{s+=$2} END{print s}'; }
# jiffies of cores 0 and 1 together: "busy steal total" (busy without steal)
cores() { awk '$1=="cpu0"||$1=="cpu1" {b+=$2+$3+$4+$7+$8; s+=$9; t+=$2+$3+$4+$5+$6+$7+$8+$9} END{print b, s, t}' /proc/stat; }

# Before each pair, wait (at most BENCH_WAIT_PAIR seconds, default 30) for the two cores to be
# under 20% busy with others, as bench/run.sh does; the pair runs anyway after that, and its
# "others' load" column says how busy they were.
WAIT_PAIR=${BENCH_WAIT_PAIR:-30}
wait_idle() {
  local waited=0 a b
  while (( waited < WAIT_PAIR )); do
    read -r a _ b < <(cores); sleep 1
    local c d; read -r c _ d < <(cores)
    (( d > b && 100 * (c - a) / (d - b) <= 20 )) && return 0
    waited=$((waited + 1))
  done
  log "the cores stayed busy with other processes for ${WAIT_PAIR} s: running anyway"
}

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
redis master "$MP"; MPID=${PIDS[-1]}
redis replica "$RP" "$MP"; RPID=${PIDS[-1]}
until redis-cli -p "$RP" INFO replication | grep -q master_link_status:up; do sleep 0.1; done

RUNS=$OUT/ha-runs.txt
echo "# scen variant run rps p50_ms p99_ms sk_us master_us replica_us batch evalsha_us_per_take others_pct steal_pct non2xx sold sleeps_per_req" >"$RUNS"

# run VARIANT SCENARIO N: one wrk run, a line in $RUNS
run() {
  local variant=$1 scen=$2 n=$3
  redis-cli -p "$MP" FLUSHALL >/dev/null
  redis-cli -p "$MP" CONFIG RESETSTAT >/dev/null
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
  [ -n "$adm" ] || { log "seckilld did not start: $(tail -3 "$TMP/sk.err")"; exit 1; }
  local put=0
  for _ in $(seq 100); do
    curl -sf -X PUT -H 'Content-Type: application/json' -d "$body" "http://127.0.0.1:$adm/v1/sales/b" >/dev/null && { put=1; break; }
    sleep 0.1
  done
  [ "$put" = 1 ] || { log "cannot PUT the sale"; exit 1; }
  local s0 s1 m0 m1 r0 r1 c0 c1 z0 z1 wrkcpu line
  s0=$(ticks "$pid"); m0=$(ticks "$MPID"); r0=$(ticks "$RPID"); c0=$(cores); z0=$(sleeps "$pid")
  TIMEFORMAT='%U %S'
  { time taskset -c 1 wrk -t1 -c"$CONNS" -d"${SECS}s" --timeout 10s -s "$ROOT/bench/wrk.lua" \
      "http://127.0.0.1:$pub" -- "$mode" /v1/sales/b/orders "$pool" "r$n$variant" 1 >"$TMP/wrk.out" 2>&1; } 2>"$TMP/wrk.time"
  s1=$(ticks "$pid"); m1=$(ticks "$MPID"); r1=$(ticks "$RPID"); c1=$(cores); z1=$(sleeps "$pid")
  wrkcpu=$(awk '{print ($1+$2)*'"$HZ"'}' "$TMP/wrk.time")
  local metrics stats sold
  metrics=$(curl -s "http://127.0.0.1:$adm/metrics")
  stats=$(redis-cli -p "$MP" INFO commandstats | tr -d '\r')
  sold=$(redis-cli -p "$MP" HGET 'sk:{b}' sold)
  kill "$pid"; wait "$pid" 2>/dev/null || true
  line=$(grep '^BENCH ' "$TMP/wrk.out")
  local bsum bcnt evalus
  bsum=$(awk '$1=="seckill_redis_take_batch_size_sum"{print $2}' <<<"$metrics")
  bcnt=$(awk '$1=="seckill_redis_take_batch_size_count"{print $2}' <<<"$metrics")
  evalus=$(sed -n 's/^cmdstat_evalsha:calls=[0-9]*,usec=\([0-9]*\),.*/\1/p' <<<"$stats")
  awk -v l="$line" -v sk="$((s1 - s0))" -v m="$((m1 - m0))" -v r="$((r1 - r0))" -v hz="$HZ" -v sold="${sold:-0}" \
      -v bs="${bsum:-0}" -v bc="${bcnt:-0}" -v ev="${evalus:-0}" -v w="$wrkcpu" -v c0="$c0" -v c1="$c1" \
      -v z="$((z1 - z0))" -v head="$scen $variant $n" 'BEGIN{
    n=split(l, f, " "); for (i=2;i<=n;i++){split(f[i], kv, "="); v[kv[1]]=kv[2]}
    split(c0, a, " "); split(c1, b, " "); tot=b[3]-a[3]
    others=(b[1]-a[1]) - sk - m - r - w; if (others < 0) others=0
    q=v["requests"]; s=v["duration_us"]/1e6
    printf "%s %.0f %.2f %.2f %.2f %.2f %.2f %.1f %.2f %.0f %.0f %d %s %.3f\n", head, q/s, v["p50"]/1000, v["p99"]/1000,
      sk/hz*1e6/q, m/hz*1e6/q, r/hz*1e6/q, (bc>0 ? bs/bc : 0), (bs>0 ? ev/bs : 0),
      (tot>0 ? 100*others/tot : 0), (tot>0 ? 100*(b[2]-a[2])/tot : 0), v["status"]+v["timeout"], sold, z/q}' >>"$RUNS"
  log "$(tail -1 "$RUNS")"
}

log "$REPEAT pairs per scenario ($SCENARIOS), ${SECS} s each, $CONNS connections"
for n in $(seq "$REPEAT"); do
  for scen in $SCENARIOS; do
    wait_idle
    if (( n % 2 )); then run nowait "$scen" "$n"; run wait "$scen" "$n"
    else run wait "$scen" "$n"; run nowait "$scen" "$n"; fi
  done
done

# median [range] of column C over the runs of one scenario and variant
stat() {   # stat SCEN VARIANT COLUMN FORMAT
  awk -v s="$1" -v v="$2" -v c="$3" '$1==s && $2==v {print $c}' "$RUNS" | sort -g |
    awk -v fmt="$4" '{x[NR]=$1} END{if (!NR) exit; m=(NR%2)?x[(NR+1)/2]:(x[NR/2]+x[NR/2+1])/2;
      printf fmt " (" fmt "-" fmt ")", m, x[1], x[NR]}'
}
# the per-pair ratio wait/nowait of column C: median (range); with MAX, only the pairs where other
# processes took at most MAX% of the two cores during both runs
QUIET=${BENCH_QUIET_PCT:-25}
ratio() {   # ratio SCEN COLUMN [MAX]
  awk -v s="$1" -v c="$2" -v max="${3:-100}" '$1==s {x[$3 " " $2]=$c; o[$3 " " $2]=$12; r[$3]=1}
    END{for (k in r) if (x[k " nowait"] > 0 && x[k " wait"] != "" && o[k " nowait"] <= max && o[k " wait"] <= max)
      print x[k " wait"]/x[k " nowait"]}' "$RUNS" |
    sort -g | awk '{x[NR]=$1} END{if (!NR) {printf "no such pair"; exit}
      m=(NR%2)?x[(NR+1)/2]:(x[NR/2]+x[NR/2+1])/2; printf "%.2fx (%.2f-%.2f, %d pairs)", m, x[1], x[NR], NR}'
}
{
  echo "Medians over $REPEAT runs, the range in parentheses; CPU in microseconds per request."
  echo
  echo "| scenario | --redis-min-replicas | req/s | p99 ms | seckilld CPU | master CPU | replica CPU | takes per call | EVALSHA us per take | seckilld sleeps per request | others' load % | steal % |"
  echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
  for scen in $SCENARIOS; do
    for variant in nowait wait; do
      printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$scen" "$([ $variant = wait ] && echo 1 || echo 0)" \
        "$(stat "$scen" $variant 4 %.0f)" "$(stat "$scen" $variant 6 %.2f)" "$(stat "$scen" $variant 7 %.2f)" \
        "$(stat "$scen" $variant 8 %.2f)" "$(stat "$scen" $variant 9 %.2f)" "$(stat "$scen" $variant 10 %.1f)" \
        "$(stat "$scen" $variant 11 %.2f)" "$(stat "$scen" $variant 16 %.3f)" "$(stat "$scen" $variant 12 %.0f)" "$(stat "$scen" $variant 13 %.0f)"
    done
  done
  echo
  for scen in $SCENARIOS; do
    echo "$scen, with WAIT / without, per pair: req/s $(ratio "$scen" 4), seckilld CPU per request $(ratio "$scen" 7), master CPU per request $(ratio "$scen" 8)"
    echo
    echo "$scen, the pairs with others under ${QUIET}% in both runs: req/s $(ratio "$scen" 4 "$QUIET"), p99 $(ratio "$scen" 6 "$QUIET"), seckilld CPU per request $(ratio "$scen" 7 "$QUIET")"
    echo
  done
} | tee "$OUT/ha.md"

for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
[ "$FAILOVERS" -gt 0 ] || exit 0
log "failover: $FAILOVERS runs of each kill -9 case"
: >"$TMP/times"
SK_NO_SKIP=1 SK_HA_RUNS=$FAILOVERS SK_HA_TIMES=$TMP/times SECKILLD=$SECKILLD /usr/bin/python3 -m pytest -q \
  "$ROOT/tests/e2e/test_ha.py" -k "service_resumes or two_replicas" >&2
cp "$TMP/times" "$OUT/ha-failover.txt"
# median (range) of column C of the times of one case
med() { awk -v t="$1" -v c="$2" '$1==t {print $c}' "$TMP/times" | sort -g |
  awk '{x[NR]=$1} END{if (!NR) exit; m=(NR%2)?x[(NR+1)/2]:(x[NR/2]+x[NR/2+1])/2; printf "%.2f s (%.2f-%.2f)", m, x[1], x[NR]}'; }
for tag in min-replicas-0 min-replicas-1; do
  n=$(awk -v t="$tag" '$1==t' "$TMP/times" | wc -l)
  printf 'failover, %s (%s runs): kill -9 to the first 201 on the promoted replica, median %s; from the +switch-master, median %s\n\n' \
    "$tag" "$n" "$(med "$tag" 2)" "$(med "$tag" 3)"
done | tee -a "$OUT/ha.md"
