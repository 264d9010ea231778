#!/usr/bin/env bash
# A short `make run` smoke test (run by `make fresh` inside its fresh Debian 12 root; also fine
# by hand): starts `make run` on free loopback ports with a throw-away order book, runs the
# README's curl examples ("A sale, with curl", then the `ab -c 100 -n 200` check), checks every
# answer, stops the server with SIGTERM and expects `make run` to exit 0. Any difference fails.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
run_pid=
cleanup() {
  if [ -n "$run_pid" ] && kill -0 "$run_pid" 2>/dev/null; then
    kill -KILL -- "-$run_pid" 2>/dev/null || true  # the process group setsid made below
  fi
  rm -rf "$work"
}
trap cleanup EXIT
fail() {
  echo "smoke: FAIL: $*" >&2
  echo "smoke: make run's output:" >&2
  sed 's/^/  | /' "$work/run.log" >&2 || true
  exit 1
}

# Port 0: the kernel picks free ports and seckilld prints them. Its own session and process
# group, so that it can be found, and cleaned up, without touching anything else.
setsid make --no-print-directory run \
  ARGS="--listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --store sqlite:$work/seckill.db" \
  >"$work/run.log" 2>&1 </dev/null &
run_pid=$!
for _ in $(seq 600); do  # make run installs and builds what is missing first: up to 5 min
  pub=$(sed -n 's/^listening public=127\.0\.0\.1:\([0-9]*\)$/\1/p' "$work/run.log")
  adm=$(sed -n 's/^listening admin=127\.0\.0\.1:\([0-9]*\)$/\1/p' "$work/run.log")
  [ -n "$pub" ] && [ -n "$adm" ] && break
  kill -0 "$run_pid" 2>/dev/null || fail "make run exited before listening"
  sleep 0.5
done
if [ -z "$pub" ] || [ -z "$adm" ]; then fail "make run did not print its listeners within 5 minutes"; fi
echo "smoke: make run listens on public=$pub admin=$adm" >&2

# call NAME STATUS CURL-ARGS...: runs curl, the body goes to $work/NAME, checks the status
call() {
  local name=$1 want=$2 got
  shift 2
  got=$(curl -s -o "$work/$name" -w '%{http_code}' "$@") || fail "$name: curl failed ($*)"
  [ "$got" = "$want" ] || fail "$name: HTTP $got, wanted $want: $(cat "$work/$name")"
}
# has NAME TEXT...: the body of NAME contains every TEXT
has() {
  local name=$1 t
  shift
  for t in "$@"; do
    grep -qF -- "$t" "$work/$name" || fail "$name: no '$t' in: $(cat "$work/$name")"
  done
}

# README, "A sale, with curl" (its localhost:8080/8081 are $pub/$adm here)
call put 201 -X PUT "localhost:$adm/v1/sales/phone" -H 'Content-Type: application/json' -d '{"stock": 5, "per_user_limit": 1}'
has put '"sale":"phone"' '"stock":5' '"per_user_limit":1' '"state":"open"'
call buy 201 -X POST "localhost:$pub/v1/sales/phone/orders" -d '{"user": "alice", "request_id": "a-1"}'
has buy '"sale":"phone","order":"1","user":"alice","qty":1,"status":"confirmed","request_id":"a-1",'
call retry 200 -X POST "localhost:$pub/v1/sales/phone/orders" -d '{"user": "alice", "request_id": "a-1"}'
has retry '"sale":"phone","order":"1","user":"alice","qty":1,"status":"confirmed","request_id":"a-1",'
call again 409 -X POST "localhost:$pub/v1/sales/phone/orders" -d '{"user": "alice"}'
has again '"error":"user_limit","message":"'
call sale 200 "localhost:$pub/v1/sales/phone"
has sale '"sale":"phone","stock":5,"sold":1,"held":0,"remaining":4,' '"state":"open"'
call orders 200 "localhost:$adm/v1/sales/phone/orders"
has orders '"order":"1","user":"alice"'
call csv 200 -H 'Accept: text/csv' "localhost:$adm/v1/sales/phone/orders"
[ "$(head -n1 "$work/csv" | tr -d '\r')" = "sale,order,user,qty,status,request_id,created_at,expires_at" ] ||
  fail "csv: header is $(head -n1 "$work/csv")"
has csv 'phone,1,alice,1,confirmed,a-1,'
call metrics 200 "localhost:$adm/metrics"
has metrics 'seckill_takes_total{outcome="won"} 1' 'seckill_takes_total{outcome="replayed"} 1' \
  'seckill_takes_total{outcome="user_limit"} 1'

# README, "The original check: ab -c 100 -n 200, 5 units"
call ab_put 201 -X PUT "localhost:$adm/v1/sales/ab" -H 'Content-Type: application/json' -d '{"stock": 5}'
echo '{}' >"$work/body.json"
ab -q -c 100 -n 200 -p "$work/body.json" -T application/json "http://127.0.0.1:$pub/v1/sales/ab/orders" \
  >"$work/ab" 2>&1 || fail "ab failed: $(cat "$work/ab")"
grep -qE '^Complete requests: +200$' "$work/ab" || fail "ab: $(grep -E 'Complete|Failed' "$work/ab")"
grep -qE '^Non-2xx responses: +195$' "$work/ab" || fail "ab: $(grep -E 'Non-2xx' "$work/ab")"
call ab_sale 200 "localhost:$pub/v1/sales/ab"
has ab_sale '"sold":5,' '"remaining":0,' '"state":"sold_out"'

# SIGTERM to the server (the one seckilld in make's process group): it exits 0, so does make
srv=
for f in /proc/[0-9]*/stat; do
  line=$(cat "$f" 2>/dev/null) || continue
  [[ $line == *" (seckilld) "* ]] || continue
  read -r _ _ pgrp _ <<<"${line##*) }"
  if [ "$pgrp" = "$run_pid" ]; then srv=${f//[^0-9]/}; break; fi
done
[ -n "$srv" ] || fail "no seckilld in make run's process group"
kill -TERM "$srv"
for _ in $(seq 100); do kill -0 "$run_pid" 2>/dev/null || break; sleep 0.1; done
kill -0 "$run_pid" 2>/dev/null && fail "make run still running 10 s after SIGTERM"
rc=0
wait "$run_pid" || rc=$?
run_pid=
[ "$rc" = 0 ] || fail "make run exited $rc after SIGTERM"
echo "smoke: ok: the README's curl examples and ab check, then SIGTERM, exit 0" >&2
