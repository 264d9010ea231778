#!/usr/bin/env bash
# bench/run.sh (`make bench`): seckilld next to nginx and to the Python app it replaces, in one run,
# on this machine. Every server runs on core 0 (taskset -c 0), the load generator (wrk or ab) on
# core 1 (taskset -c 1); the Redis instances that the Python app and seckilld's Redis store talk to
# run on core 1 too (one server on one core against one Redis on the other, as issue 3 puts it),
# and their CPU is reported apart. Everything listens on 127.0.0.1, on ports picked at run time.
#
# For every point it records requests/s, p50/p99/p99.9 latency, errors, the server's CPU time per
# request (utime+stime from /proc/PID/stat, summed over all of the server's processes), and checks
# the outcome (statuses, exact counts) where there is one to check. Results: bench/out/results.csv,
# bench/out/*.png (copied to docs/bench/), and the generated section of BENCHMARKS.md.
#
# Environment (all optional):
#   BENCH_SECONDS=5           seconds per run of a point
#   BENCH_REPEAT=3            runs per point: the point reports the run with the median server CPU
#                             per request, and the range over all its runs (1 for a quick run)
#   BENCH_CONNS="64 256 1024" connection counts
#   BENCH_TARGETS="nginx python sqlite redis redis-1"   what to measure (redis-1: the Redis store
#                             with coalescing off, SECKILL_REDIS_BATCH=1, winning path only)
#   BENCH_CLIENTS="wrk ab"    keep-alive (wrk) and/or a new connection per request (ab)
#   BENCH_SCENARIOS="sold-out winning mixed"    seckilld scenarios
#   BENCH_SERVER_CPU=0 BENCH_CLIENT_CPU=1       the two cores
#   BENCH_WAIT_IDLE=300       at the start, wait at most this long for other processes to leave the
#                             cores idle; before each point at most BENCH_WAIT_POINT=20 seconds
#   BENCH_RETRIES=2           repeat a point (at most this often) when other processes took more
#                             than BENCH_MAX_OTHER=10 percent of the server's core (user time) during it
#   BENCH_UPDATE_DOCS=1       0: leave BENCHMARKS.md and docs/bench/ alone (results in bench/out only)
#   BENCH_OUT=bench/out       where results go
#   SECKILLD=path             the binary (default: build/seckilld, built with `make` first); the run
#                             uses a copy, so a rebuild in another shell does not disturb it
#   SECKILLD_REV=text         what to call that binary in BENCHMARKS.md (default: the git revision)
set -euo pipefail
{ # the whole script is read before it runs, so that editing it during a run cannot break the run

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
B=$ROOT/bench
OUT=${BENCH_OUT:-$B/out}
SECS=${BENCH_SECONDS:-5}
REPEAT=${BENCH_REPEAT:-3}
CONNS=${BENCH_CONNS:-64 256 1024}
TARGETS=${BENCH_TARGETS:-nginx python sqlite redis redis-1}
CLIENTS=${BENCH_CLIENTS:-wrk ab}
SCENARIOS=${BENCH_SCENARIOS:-sold-out winning mixed}
SCPU=${BENCH_SERVER_CPU:-0}
LCPU=${BENCH_CLIENT_CPU:-1}
WAIT_IDLE=${BENCH_WAIT_IDLE:-300}
WAIT_POINT=${BENCH_WAIT_POINT:-20}
RETRIES=${BENCH_RETRIES:-2}
MAX_OTHER=${BENCH_MAX_OTHER:-10}
UPDATE_DOCS=${BENCH_UPDATE_DOCS:-1}
WRK_THREADS=1                 # one core for the load generator: one wrk thread
MIXED_STOCK=1000
MIXED_BUYERS=100000
WIN_STOCK=1000000000000000    # "huge": every take in a run wins
PY=/usr/bin/python3           # Debian's Python (flask, gevent, redis-py, gunicorn), not the PATH's
HZ=$(getconf CLK_TCK)
unset PYTHONPATH PYTHONHOME

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
has() { [[ " $1 " == *" $2 "* ]]; }

# ---------------------------------------------------------------- set-up
SK_DEPS_TEST=0 SK_DEPS_EXTRA="nginx gunicorn python3-flask python3-gevent python3-redis gnuplot-nox ${SK_DEPS_EXTRA:-}" \
  bash "$ROOT/scripts/deps.sh"
for c in nginx wrk ab taskset redis-server redis-cli gnuplot curl /usr/bin/gunicorn; do
  command -v "$c" >/dev/null || die "$c is missing"
done
if [ -z "${SECKILLD:-}" ]; then
  make -C "$ROOT" --no-print-directory all >&2
  SECKILLD=$ROOT/build/seckilld
fi
[ -x "$SECKILLD" ] || die "no seckilld at $SECKILLD"
SECKILLD_SRC=$(realpath "$SECKILLD")
(( $(nproc) > SCPU && $(nproc) > LCPU )) || die "needs cores $SCPU and $LCPU"
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

mkdir -p "$OUT"
: > "$OUT/commands.txt"
TMP=$(mktemp -d /tmp/seckill-bench.XXXXXX)   # root-owned; on the same disk as the work tree
PIDS=()
NGX_PORT=""; NGX_WORKER=""; PAIR_US=""   # the nginx kept up as the paired reference (point)
PAIR_TARGETS="seckilld-sqlite seckilld-redis"   # the rows whose ratio to nginx is a target

stop_pid() {   # stop_pid PID: TERM, wait up to 10 s, then KILL; forget it
  local p=$1 i
  kill -TERM "$p" 2>/dev/null || true
  for i in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$p" 2>/dev/null || true
  wait "$p" 2>/dev/null || true
  local keep=() q
  for q in "${PIDS[@]}"; do [ "$q" = "$p" ] || keep+=("$q"); done
  PIDS=("${keep[@]}")
}
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  sleep 0.5
  for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP
# run a copy, so that a rebuild during the run (make test in another shell) changes nothing
cp "$SECKILLD_SRC" "$TMP/seckilld"; SECKILLD=$TMP/seckilld

free_port() {
  "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
wait_http() {   # wait_http URL PID: until URL answers (any status), at most 15 s
  local i
  for i in $(seq 150); do
    curl -s -o /dev/null --max-time 1 "$1" && return 0
    kill -0 "$2" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

# CPU ticks of the given processes: "utime+stime utime"; for a process listed with a trailing "+",
# its reaped children's (cutime, cstime) too, so that a gunicorn worker replaced during a run counts.
ticks() {
  local t=0 u=0 p a b
  for p in "$@"; do
    if [[ $p == *+ ]]; then
      read -r a b < <(sed 's/.*) //' "/proc/${p%+}/stat" 2>/dev/null | awk '{print $12+$13+$14+$15, $12+$14}')
    else
      read -r a b < <(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12+$13, $12}')
    fi
    t=$((t + ${a:-0})); u=$((u + ${b:-0}))
  done
  echo "$t $u"
}
# jiffies of one core, from /proc/stat: "busy total user" (user: user+nice, no kernel time)
corestat() { awk -v c="cpu$1" '$1==c {print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9, $2+$3}' /proc/stat; }
pct() { awk -v b0="$1" -v t0="$2" -v b1="$3" -v t1="$4" 'BEGIN{d=t1-t0; printf "%.0f", (d>0 ? 100*(b1-b0)/d : 0)}'; }

# Other processes on the machine (a test suite, a fuzzer) would distort every number: wait, bounded,
# for both cores to be nearly idle, and say so if they never were.
BACKGROUND_NOTE=""
wait_idle() {   # wait_idle MAX-SECONDS [quiet]
  local limit=$1 quiet=${2:-} waited=0 a b c d b0 b1 x
  while :; do
    read -r a b x < <(corestat "$SCPU"); read -r c d x < <(corestat "$LCPU")
    sleep 1
    read -r b0 b1 x < <(corestat "$SCPU"); local s; s=$(pct "$a" "$b" "$b0" "$b1")
    read -r b0 b1 x < <(corestat "$LCPU"); local l; l=$(pct "$c" "$d" "$b0" "$b1")
    if (( s <= 10 && l <= 10 )); then return 0; fi
    if (( waited >= limit )); then
      if [ -z "$quiet" ]; then
        BACKGROUND_NOTE="other processes kept the cores busy before the run (core $SCPU ${s}%, core $LCPU ${l}%): $(busiest)"
        log "warning: $BACKGROUND_NOTE"
      fi
      return 0
    fi
    (( waited % 10 )) || log "waiting for idle cores (core $SCPU ${s}%, core $LCPU ${l}% busy: $(busiest))"
    waited=$((waited + 1))
  done
}

# the processes that used the most CPU in the last half second (not since they started)
busiest() { top -b -d 0.5 -n 2 -w 200 | awk '/^top -/{n++} n==2 && $1 ~ /^[0-9]+$/ && $9+0 > 1 {printf "%s(%s) %s%%; ", $12, $1, $9; if (++k==3) exit}'; }

kv() { sed -n "s/.* $2=\([^ ]*\).*/\1/p" <<<" $1"; }

# ---------------------------------------------------------------- load generators
# Each sets R_requests R_rps R_p50 R_p99 R_p999 (ms) R_errors R_non2xx R_secs.
run_wrk() {   # run_wrk PORT CONNS MODE PATH POOL TAG
  local port=$1 conns=$2 mode=$3 path=$4 pool=$5 tag=$6 out line
  local cmd=(taskset -c "$LCPU" wrk -t"$WRK_THREADS" -c"$conns" -d"${SECS}s" --timeout 10s
             -s "$B/wrk.lua" "http://127.0.0.1:$port" -- "$mode" "$path" "$pool" "$tag" "$WRK_THREADS")
  echo "$CUR_LABEL|${cmd[*]}" >> "$OUT/commands.txt"
  out=$("${cmd[@]}" 2>&1) || true
  line=$(grep '^BENCH ' <<<"$out" || true)
  if [ -z "$line" ]; then log "wrk failed: $out"; R_requests=0; R_rps=0; R_p50=; R_p99=; R_p999=; R_errors=-1; R_non2xx=0; R_secs=0; return; fi
  R_requests=$(kv "$line" requests)
  R_secs=$(awk -v d="$(kv "$line" duration_us)" 'BEGIN{printf "%.3f", d/1e6}')
  R_rps=$(awk -v n="$R_requests" -v s="$R_secs" 'BEGIN{printf "%.0f", (s>0 ? n/s : 0)}')
  R_p50=$(awk -v v="$(kv "$line" p50)" 'BEGIN{printf "%.3f", v/1000}')
  R_p99=$(awk -v v="$(kv "$line" p99)" 'BEGIN{printf "%.3f", v/1000}')
  R_p999=$(awk -v v="$(kv "$line" p999)" 'BEGIN{printf "%.3f", v/1000}')
  R_errors=$(( $(kv "$line" connect) + $(kv "$line" read) + $(kv "$line" write) + $(kv "$line" timeout) ))
  R_non2xx=$(kv "$line" status)
}

run_ab() {   # run_ab URL CONNS BODYFILE|- [NREQUESTS]: time-bounded unless NREQUESTS is given
  local url=$1 conns=$2 body=$3 n=${4:-} args out f
  if [ -n "$n" ]; then args=(-t $((SECS * 10 + 60)) -n "$n"); else args=(-t "$SECS" -n $((SECS * 60000))); fi
  args+=(-q -r -s 30 -c "$conns" -g "$TMP/ab.tsv")
  [ "$body" = - ] || args+=(-p "$body" -T application/json)
  rm -f "$TMP/ab.tsv"
  echo "$CUR_LABEL|taskset -c $LCPU ab ${args[*]} $url" >> "$OUT/commands.txt"
  out=$(taskset -c "$LCPU" ab "${args[@]}" "$url" 2>&1) || true
  R_requests=$(awk '/^Complete requests:/ {print $3}' <<<"$out")
  if [ -z "$R_requests" ]; then log "ab failed: $(tail -3 <<<"$out")"; R_requests=0; R_rps=0; R_p50=; R_p99=; R_p999=; R_errors=-1; R_non2xx=0; R_secs=0; return; fi
  R_secs=$(awk '/^Time taken for tests:/ {print $5}' <<<"$out")
  R_rps=$(awk '/^Requests per second:/ {printf "%.0f", $4}' <<<"$out")
  # "Failed requests" also counts bodies whose length differs from the first one (Length), which
  # seckilld's varying order ids cause: only Connect, Receive and Exceptions are errors.
  f=$(grep -o '(Connect: [0-9]*, Receive: [0-9]*, Length: [0-9]*, Exceptions: [0-9]*)' <<<"$out" || true)
  if [ -n "$f" ]; then R_errors=$(sed 's/[^0-9 ]//g' <<<"$f" | awk '{print $1+$2+$4}'); else R_errors=0; fi
  R_non2xx=$(awk '/^Non-2xx responses:/ {print $3}' <<<"$out"); R_non2xx=${R_non2xx:-0}
  # latency per request from -g (whole milliseconds: ab's resolution), column ttime
  read -r R_p50 R_p99 R_p999 < <(tail -n +2 "$TMP/ab.tsv" | cut -f5 | sort -n | awk '
    {v[NR]=$1} END {if (NR==0) {print "- - -"; exit}
      split("50 99 99.9", p, " "); s="";
      for (i=1;i<=3;i++) {k=int(NR*p[i]/100+0.999999); if (k<1) k=1; if (k>NR) k=NR; s=s sprintf("%.3f ", v[k])}
      print s}')
}

# ---------------------------------------------------------------- results
CSV=$OUT/points.csv
echo "target,scenario,client,conns,seconds,requests,rps,p50_ms,p99_ms,p999_ms,errors,unexpected,server_cpu_us_per_req,store_cpu_us_per_req,server_core_busy_pct,client_core_busy_pct,server_util_pct,other_pct,tries,pair_nginx_us,pair_ratio,check,note,runs,cpu_range,ratio_range" > "$CSV"
util_of() { awk -v t="$1" -v s="$R_secs" -v hz="$HZ" 'BEGIN{ if (s>0) printf "%.0f", 100*t/hz/s; else print 0 }'; }
row() { # target scenario client conns tries; the rest from M_* and ROW_*
  local us sus util
  us=$(awk -v t="$M_server" -v n="$R_requests" -v hz="$HZ" 'BEGIN{ if (n>0) printf "%.2f", t*1e6/hz/n }')
  sus=""
  [ -n "$M_store" ] && sus=$(awk -v t="$M_store" -v n="$R_requests" -v hz="$HZ" 'BEGIN{ if (n>0) printf "%.2f", t*1e6/hz/n }')
  util=$(util_of "$M_server")
  local ratio=""
  [ -n "$PAIR_US" ] && ratio=$(awk -v a="$us" -v b="$PAIR_US" 'BEGIN{ if (b>0) printf "%.2f", a/b }')
  echo "$1,$2,$3,$4,$R_secs,$R_requests,$R_rps,$R_p50,$R_p99,$R_p999,$R_errors,$ROW_unexpected,$us,$sus,$M_c0,$M_c1,$util,$M_other,$5,$PAIR_US,$ratio,\"$ROW_check\",\"$ROW_note\"" >> "$ROWS"
  log "$1 $2 $3 c=$4: ${R_rps} req/s p50=${R_p50} p99=${R_p99} p99.9=${R_p999} ms, errors=${R_errors}, cpu=${us} us/req${sus:+ (redis ${sus})}${ratio:+ (${ratio}x nginx just before: ${PAIR_US})}, util=${util}%, core busy ${M_c0}%, others ${M_other}% [${ROW_check}]"
}
# point TARGET SCENARIO CLIENT CONNS FUNC: runs the point REPEAT times and keeps the median run (a
# run whose check failed is kept instead: it must be seen). Each run: FUNC CLIENT CONNS RUN sets
# up, calls measure and sets ROW_check ROW_unexpected ROW_note. Before it, wait (bounded) for quiet
# cores and, for seckilld, measure nginx with the same client and connections (the paired
# reference: the machine's speed drifts by 20% over minutes, so a ratio is only fair between
# runs made one after the other); after it, repeat it when other processes took more than
# MAX_OTHER percent of the server's core. The median is by the ratio to that nginx run when there
# is one, else by the CPU per request.
point() {
  local try other r pick range rrange key=13
  ROWS=$TMP/rows; : > "$ROWS"
  for r in $(seq "$REPEAT"); do
    try=1
    while :; do
      sleep 1   # let the connections of the previous point drain
      wait_idle "$WAIT_POINT" quiet
      PAIR_US=""
      has "$PAIR_TARGETS" "$1" && [ -n "$NGX_PORT" ] && pair_nginx "$3" "$4"
      CUR_LABEL="$1|$2|$3|$4|$r.$try"
      "$5" "$3" "$4" "r${r}t${try}"
      other=$M_other
      if (( other > MAX_OTHER && try <= RETRIES )); then
        log "$1 $2 $3 c=$4: other processes took ${other}% of core $SCPU ($(busiest)): again"
        try=$((try + 1)); continue
      fi
      (( other > MAX_OTHER )) && ROW_check="$ROW_check; noisy: other processes took ${other}% of core $SCPU"
      row "$1" "$2" "$3" "$4" "$try"
      break
    done
  done
  # columns 1-21 hold no quoted commas: 13 is the CPU per request, 21 the ratio to the paired nginx
  [ -n "$(cut -d, -f21 "$ROWS" | head -1)" ] && key=21
  range=$(span 13); rrange=""
  [ "$key" = 21 ] && rrange=$(span 21)
  pick=$(grep -m1 ',"FAIL' "$ROWS" || sort -t, -k${key},${key}g "$ROWS" | sed -n "$(( (REPEAT + 1) / 2 ))p")
  echo "$pick,$REPEAT,$range,$rrange" >> "$CSV"
}
span() { cut -d, -f"$1" "$ROWS" | sort -g | awk 'NR==1 {lo=$1} {hi=$1} END {print lo "-" hi}'; }   # span COLUMN: min-max over the runs
# pair_nginx CLIENT CONNS: one nginx run like those of its own rows; sets PAIR_US (CPU us/req)
pair_nginx() {
  local saved=("${SERVER_PIDS[@]}") saved_store=("${STORE_PIDS[@]}") label=$CUR_LABEL
  SERVER_PIDS=("$NGX_WORKER"); STORE_PIDS=()
  CUR_LABEL="nginx-pair|static|$1|$2|-"
  if [ "$1" = wrk ]; then measure wrk "$NGX_PORT" "$2" get / 0 n; else measure ab "http://127.0.0.1:$NGX_PORT/" "$2" -; fi
  PAIR_US=$(awk -v t="$M_server" -v n="$R_requests" -v hz="$HZ" 'BEGIN{ if (n>0) printf "%.2f", t*1e6/hz/n }')
  SERVER_PIDS=("${saved[@]}"); STORE_PIDS=("${saved_store[@]}"); CUR_LABEL=$label
  sleep 1
}
skip_row() { echo "$1,$2,$3,$4,,,,,,,,,,,,,,,,,,\"skipped\",\"$5\",0,," >> "$CSV"; }

# One measured point: snapshot CPU of SERVER_PIDS (and STORE_PIDS) and both cores around the load.
# measure CLIENT CONNS PORT-or-URL ... ; result in R_* and M_server M_store (ticks), M_c0 M_c1 (busy
# percent of each core) and M_other: the user-mode time that other processes took on the server's
# core, in percent of it (the core's user time less the server's; kernel time, which includes the
# benchmark's own loopback and fsync work, is left out).
measure() {
  local client=$1; shift
  local s0 su0 s1 su1 r0 r1 x a0 a1 au0 c0 c1 cu0 b0 b1 bu1 d0 d1 du1
  read -r s0 su0 < <(ticks "${SERVER_PIDS[@]}"); r0=""
  [ ${#STORE_PIDS[@]} -gt 0 ] && read -r r0 x < <(ticks "${STORE_PIDS[@]}")
  read -r a0 a1 au0 < <(corestat "$SCPU"); read -r c0 c1 cu0 < <(corestat "$LCPU")
  if [ "$client" = wrk ]; then run_wrk "$@"; else run_ab "$@"; fi
  read -r s1 su1 < <(ticks "${SERVER_PIDS[@]}"); r1=""
  [ ${#STORE_PIDS[@]} -gt 0 ] && read -r r1 x < <(ticks "${STORE_PIDS[@]}")
  read -r b0 b1 bu1 < <(corestat "$SCPU"); read -r d0 d1 du1 < <(corestat "$LCPU")
  M_server=$((s1 - s0)); M_store=""; [ -n "$r0" ] && M_store=$((r1 - r0))
  M_c0=$(pct "$a0" "$a1" "$b0" "$b1"); M_c1=$(pct "$c0" "$c1" "$d0" "$d1")
  M_other=$(pct "$((au0 + su1))" "$a1" "$((bu1 + su0))" "$b1")
  if [[ $M_other == -* ]]; then M_other=0; fi   # the ticks of the two readings do not line up exactly
}

# ---------------------------------------------------------------- the machine
{
  echo "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "nproc=$(nproc)"
  echo "cpu=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
  echo "kernel=$(uname -sr)"
  echo "mem=$(awk '/^MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
  if [ -n "${SECKILLD_REV:-}" ]; then echo "git=$SECKILLD_REV"
  else echo "git=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo none)$(git -C "$ROOT" diff --quiet HEAD -- src 2>/dev/null || echo ' (src/ has uncommitted changes)')"; fi
  echo "seckilld=$("$SECKILLD" --version 2>&1 | head -1)"
  echo "seckilld_binary=${SECKILLD_SRC#$ROOT/}"
  echo "nginx=$(nginx -v 2>&1 | sed 's/.*: //')"
  echo "wrk=$(wrk -v 2>&1 | awk 'NR==1 {print $2}')"
  echo "ab=$(ab -V | awk 'NR==1 {print $5}' | tr -d ',')"
  echo "gunicorn=$(/usr/bin/gunicorn --version 2>&1 | sed 's/.*version //; s/)//')"
  echo "python=$("$PY" -c 'import sys, flask, gevent, redis; print("Python %s, Flask %s, gevent %s, redis-py %s" % (sys.version.split()[0], flask.__version__, gevent.__version__, redis.__version__))' 2>&1)"
  echo "redis=$(redis-server --version | sed 's/.* v=\([^ ]*\).*/\1/')"
  echo "sqlite=$(sqlite3 --version 2>/dev/null | awk '{print $1}')"
  echo "seconds=$SECS"
  echo "repeat=$REPEAT"
  echo "conns=$CONNS"
  echo "tmpfs=$(df -PT "$TMP" | awk 'NR==2 {print $2 " on " $1}')"
} > "$OUT/machine.env"

log "seconds per point: $SECS; connections: $CONNS; targets: $TARGETS; clients: $CLIENTS"
wait_idle "$WAIT_IDLE"

# ---------------------------------------------------------------- nginx
if has "$TARGETS" nginx; then
  d=$TMP/nginx; mkdir -p "$d"; port=$(free_port)
  sed -e "s#@DIR@#$d#g" -e "s#@PORT@#$port#g" "$B/nginx.conf" > "$d/nginx.conf"
  echo "nginx|server|taskset -c $SCPU nginx -e $d/error.log -c $d/nginx.conf" >> "$OUT/commands.txt"
  taskset -c "$SCPU" nginx -e "$d/error.log" -c "$d/nginx.conf" & master=$!; PIDS+=("$master")
  wait_http "http://127.0.0.1:$port/" "$master" || die "nginx did not start: $(cat "$d/error.log")"
  worker=$(pgrep -P "$master" | head -1)
  log "nginx $(nginx -v 2>&1 | sed 's/.*\///') master $master worker $worker on 127.0.0.1:$port"
  SERVER_PIDS=("$worker"); STORE_PIDS=()
  pt_nginx() {
    if [ "$1" = wrk ]; then measure wrk "$port" "$2" get / 0 n; else measure ab "http://127.0.0.1:$port/" "$2" -; fi
    ROW_check=ok; ROW_unexpected=$R_non2xx; ROW_note="GET / -> return 200"
    [ "$R_non2xx" = 0 ] && [ "$R_errors" = 0 ] || ROW_check="FAIL: non-2xx $R_non2xx, errors $R_errors"
  }
  for client in $CLIENTS; do for c in $CONNS; do point nginx static "$client" "$c" pt_nginx; done; done
  # it stays up (idle) as the paired reference of every seckilld run; cleanup stops it
  NGX_PORT=$port; NGX_WORKER=$worker
fi

# ---------------------------------------------------------------- the original Python app
if has "$TARGETS" python; then
  d=$TMP/python; mkdir -p "$d"; rport=$(free_port)
  # its Redis as production ran it (no persistence needed for a counter), on the client core
  taskset -c "$LCPU" redis-server --bind 127.0.0.1 --port "$rport" --save "" --appendonly no \
    --dir "$d" --logfile "$d/redis.log" --daemonize no & rpid=$!; PIDS+=("$rpid")
  for i in $(seq 50); do redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.1; done
  port=$(free_port)
  echo "python|server|taskset -c $LCPU redis-server --bind 127.0.0.1 --port $rport --save '' --appendonly no --dir $d" >> "$OUT/commands.txt"
  echo "python|server|cd bench/original_app && REDIS_HOST=127.0.0.1 REDIS_PORT=$rport taskset -c $SCPU /usr/bin/gunicorn -k gevent -w 4 -b 127.0.0.1:$port --log-file $d/gunicorn.log app:app" >> "$OUT/commands.txt"
  (cd "$B/original_app" && REDIS_HOST=127.0.0.1 REDIS_PORT=$rport exec taskset -c "$SCPU" \
     /usr/bin/gunicorn -k gevent -w 4 -b "127.0.0.1:$port" --log-file "$d/gunicorn.log" app:app) &
  gpid=$!; PIDS+=("$gpid")
  wait_http "http://127.0.0.1:$port/limit" "$gpid" || die "gunicorn did not start: $(tail -5 "$d/gunicorn.log")"
  sleep 1   # all four workers up
  workers=$(pgrep -P "$gpid" | tr '\n' ' ')
  log "gunicorn master $gpid workers $workers on 127.0.0.1:$port, redis $rpid on $rport"
  SERVER_PIDS=("$gpid+"); for w in $workers; do SERVER_PIDS+=("$w"); done
  STORE_PIDS=("$rpid")
  pt_python() {
    local w n
    SERVER_PIDS=("$gpid+"); for w in $(pgrep -P "$gpid"); do SERVER_PIDS+=("$w"); done
    redis-cli -p "$rport" del limit >/dev/null
    if [ "$1" = wrk ]; then measure wrk "$port" "$2" get /limit 0 n; else measure ab "http://127.0.0.1:$port/limit" "$2" -; fi
    for w in $(pgrep -P "$gpid"); do has "${SERVER_PIDS[*]}" "$w" || log "note: gunicorn started worker $w during the run"; done
    n=$(redis-cli -p "$rport" get limit); n=${n:-95}
    ROW_check="ok: $((n - 95)) takes counted in Redis, 5 won"; ROW_unexpected=$R_non2xx
    ROW_note="GET /limit (EXISTS, SETNX, INCRBY): 5 units, then sold out"
    [ "$R_non2xx" = 0 ] && [ "$R_errors" = 0 ] || ROW_check="FAIL: non-2xx $R_non2xx, errors $R_errors; $((n - 95)) takes counted in Redis"
  }
  for client in $CLIENTS; do for c in $CONNS; do point python limit "$client" "$c" pt_python; done; done
  stop_pid "$gpid"; stop_pid "$rpid"
fi

# ---------------------------------------------------------------- seckilld
ADMIN=""
metric() {   # metric FILE ROUTE STATUS
  awk -v k="seckill_requests_total{route=\"$2\",status=\"$3\"}" '$1==k {print $2; f=1} END {if (!f) print 0}' "$1"
}
take_statuses() {   # take_statuses FILE: "201=N 409=M ..." for the take route
  sed -n 's/^seckill_requests_total{route="take",status="\([0-9]*\)"} \([0-9]*\)$/\1 \2/p' "$1"
}
outcome() { awk -v k="seckill_takes_total{outcome=\"$2\"}" '$1==k {print $2; f=1} END {if (!f) print 0}' "$1"; }
put_sale() {   # put_sale SALE JSON
  local st
  st=$(curl -s -o "$TMP/put.out" -w '%{http_code}' -X PUT -H 'Content-Type: application/json' \
       --data "$2" "http://$ADMIN/v1/sales/$1")
  [ "$st" = 201 ] || [ "$st" = 200 ] || die "PUT sale $1: $st $(cat "$TMP/put.out")"
}
sale_field() { curl -s "http://$ADMIN/v1/sales/$1" | "$PY" -c "import json,sys; print(json.load(sys.stdin)['$2'])"; }
# check_book SALE: "orders=N users=M" from the listing, following `next`
check_book() {
  "$PY" - "$ADMIN" "$1" <<'EOF'
import json, sys, urllib.request
admin, sale = sys.argv[1], sys.argv[2]
after, n, users, qty = None, 0, set(), 0
while True:
    url = "http://%s/v1/sales/%s/orders?limit=1000" % (admin, sale) + ("&after=%s" % after if after else "")
    page = json.load(urllib.request.urlopen(url, timeout=30))
    for o in page["orders"]:
        n += 1; qty += o["qty"]; users.add(o["user"])
    after = page["next"]
    if not after or not page["orders"]:
        break
print("orders=%d users=%d qty=%d" % (n, len(users), qty))
EOF
}

pt_seckilld() {   # pt_seckilld CLIENT CONNS TRY (scenario in SK_SCEN)
  local client=$1 c=$2 s=$SK_SCEN sale st n n201 n409 nother sold book want_users before who
  sale="${SK_NAME}-${s}-${client}-${c}-${3}"   # redis and redis-1 share one Redis
  who=$([ "$client" = wrk ] && echo 'a distinct user per request' || echo 'anonymous')
  case $s in
    sold-out) put_sale "$sale" '{"stock": 0}'
              ROW_note="POST take, stock 0, $who" ;;
    winning)  put_sale "$sale" "{\"stock\": $WIN_STOCK}"
              ROW_note="POST take, huge stock, no limit, $who: every take a durable win" ;;
    mixed)    if [ "$client" = wrk ]; then
                put_sale "$sale" "{\"stock\": $MIXED_STOCK, \"per_user_limit\": 1}"
                ROW_note="stock $MIXED_STOCK, per_user_limit 1, $MIXED_BUYERS distinct buyers retrying for ${SECS}s"
              else
                put_sale "$sale" "{\"stock\": $MIXED_STOCK}"
                ROW_note="stock $MIXED_STOCK, $MIXED_BUYERS anonymous requests (ab sends one body: no per-user limit)"
              fi ;;
  esac
  curl -s "http://$ADMIN/metrics" > "$TMP/m0"
  if [ "$client" = wrk ]; then
    case $s in mixed) measure wrk "$SK_PORT" "$c" pool "/v1/sales/$sale/orders" "$MIXED_BUYERS" "b" ;;
               *)     measure wrk "$SK_PORT" "$c" user "/v1/sales/$sale/orders" 0 "u" ;; esac
  else
    case $s in mixed) measure ab "http://$SK_PUB/v1/sales/$sale/orders" "$c" "$SK_ANON" "$MIXED_BUYERS" ;;
               *)     measure ab "http://$SK_PUB/v1/sales/$sale/orders" "$c" "$SK_ANON" ;; esac
  fi
  sleep 0.3   # answers to requests that the client abandoned at its end are counted too
  curl -s "http://$ADMIN/metrics" > "$TMP/m1"
  # the statuses that the server sent for takes during this point (its /metrics)
  n201=0; n409=0; nother=0
  while read -r st n; do
    before=$(metric "$TMP/m0" take "$st"); n=$((n - before))
    case $st in 201) n201=$n ;; 409) n409=$n ;; *) nother=$((nother + n)) ;; esac
  done < <(take_statuses "$TMP/m1")
  sold=$(sale_field "$sale" sold)
  ROW_check=ok; ROW_unexpected=0
  case $s in
    sold-out)
      ROW_unexpected=$((n201 + nother))
      [ "$ROW_unexpected" = 0 ] && [ "$sold" = 0 ] || ROW_check="FAIL: $n201 x 201, $nother other, sold $sold"
      ROW_check="$ROW_check: $n409 x 409 sold_out" ;;
    winning)
      ROW_unexpected=$((n409 + nother + R_non2xx))
      if [ "$ROW_unexpected" = 0 ] && [ "$sold" = "$n201" ]; then ROW_check="ok: sold $sold = $n201 x 201"
      else ROW_check="FAIL: sold $sold, $n201 x 201, $n409 x 409, $nother other, client non-2xx $R_non2xx"; fi ;;
    mixed)
      book=$(check_book "$sale")
      ROW_unexpected=$nother
      want_users=$MIXED_STOCK; [ "$client" = ab ] && want_users=1
      if [ "$sold" = "$MIXED_STOCK" ] && [ "$n201" = "$MIXED_STOCK" ] && [ "$nother" = 0 ] \
         && [ "$book" = "orders=$MIXED_STOCK users=$want_users qty=$MIXED_STOCK" ]; then
        ROW_check="ok: sold $sold, $n201 x 201, $n409 x 409 ($(( $(outcome "$TMP/m1" sold_out) - $(outcome "$TMP/m0" sold_out) )) sold_out, $(( $(outcome "$TMP/m1" user_limit) - $(outcome "$TMP/m0" user_limit) )) user_limit), book $book"
      else
        ROW_check="FAIL: sold $sold, $n201 x 201, $n409 x 409, $nother other, book $book"
      fi ;;
  esac
  [ "$R_errors" = 0 ] || ROW_check="FAIL: $R_errors client errors; $ROW_check"
}

bench_seckilld() {   # bench_seckilld NAME STORE-URL [REDIS-PID]
  local name=$1 url=$2 rpid=${3:-} d=$TMP/$1 sk pub
  mkdir -p "$d"
  echo "seckilld-$name|server|${SK_ENV:+$SK_ENV }taskset -c $SCPU $SECKILLD --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --store $url --threads 1 --log-file $d/seckilld.log" >> "$OUT/commands.txt"
  env ${SK_ENV:-} taskset -c "$SCPU" "$SECKILLD" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --store "$url" \
    --threads 1 --log-file "$d/seckilld.log" > "$d/stdout" 2> "$d/stderr" & sk=$!; PIDS+=("$sk")
  for i in $(seq 100); do grep -q '^listening admin=' "$d/stdout" 2>/dev/null && break; kill -0 "$sk" 2>/dev/null || break; sleep 0.1; done
  if ! grep -q '^listening admin=' "$d/stdout" 2>/dev/null; then
    local why; why=$(cat "$d/stderr" "$d/seckilld.log" 2>/dev/null | tr '\n"' ' '"'"'' | cut -c1-300 || true)
    stop_pid "$sk"
    log "seckilld on $url did not start: $why"
    for client in $CLIENTS; do for c in $CONNS; do for s in $SCENARIOS; do
      skip_row "seckilld-$name" "$s" "$client" "$c" "seckilld --store $url did not start: $why"
    done; done; done
    return 0
  fi
  pub=$(sed -n 's/^listening public=//p' "$d/stdout"); ADMIN=$(sed -n 's/^listening admin=//p' "$d/stdout")
  wait_http "http://$ADMIN/healthz" "$sk" || die "seckilld not healthy"
  for i in $(seq 100); do [ "$(curl -s -o /dev/null -w '%{http_code}' "http://$ADMIN/healthz")" = 200 ] && break; sleep 0.1; done
  log "seckilld ($url) pid $sk public $pub admin $ADMIN"
  SERVER_PIDS=("$sk"); STORE_PIDS=(); [ -n "$rpid" ] && STORE_PIDS=("$rpid")
  SK_PORT=${pub##*:}; SK_PUB=$pub; SK_ANON=$TMP/anon.json; SK_NAME=$name
  echo '{}' > "$SK_ANON"
  local client c
  for SK_SCEN in $SCENARIOS; do for client in $CLIENTS; do for c in $CONNS; do
    point "seckilld-$name" "$SK_SCEN" "$client" "$c" pt_seckilld
  done; done; done
  grep -E ' (error|warn) ' "$d/seckilld.log" | head -5 > "$OUT/seckilld-$name.warnings" || true
  stop_pid "$sk"
  ADMIN=""
}

if has "$TARGETS" sqlite; then
  bench_seckilld sqlite "sqlite:$TMP/sqlite/bench.db"
fi
if has "$TARGETS" redis; then
  d=$TMP/redis; mkdir -p "$d"; rport=$(free_port)
  # durable like the embedded store: AOF with an fsync per write (see DESIGN.md)
  taskset -c "$LCPU" redis-server --bind 127.0.0.1 --port "$rport" --save "" --appendonly yes \
    --appendfsync always --dir "$d" --logfile "$d/redis.log" --daemonize no & rpid=$!; PIDS+=("$rpid")
  for i in $(seq 50); do redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.1; done
  echo "seckilld-redis|server|taskset -c $LCPU redis-server --bind 127.0.0.1 --port $rport --save '' --appendonly yes --appendfsync always --dir $d" >> "$OUT/commands.txt"
  bench_seckilld redis "redis://127.0.0.1:$rport" "$rpid"
  # coalescing off (one script call per take), for the gain that issue 3 asks to measure
  if has "$TARGETS" redis-1; then
    SCENARIOS_SAVED=$SCENARIOS; SCENARIOS=winning
    SK_ENV="SECKILL_REDIS_BATCH=1" bench_seckilld redis-1 "redis://127.0.0.1:$rport" "$rpid"
    SCENARIOS=$SCENARIOS_SAVED
  fi
  stop_pid "$rpid"
fi

# ---------------------------------------------------------------- report
BACKGROUND_NOTE=$BACKGROUND_NOTE "$PY" "$B/report.py" --out "$OUT" --root "$ROOT" --update-docs "$UPDATE_DOCS"
log "done: $OUT/results.csv"
exit 0
}
