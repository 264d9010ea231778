#!/usr/bin/env bash
# bench/delete.sh: what deleting sales does to the embedded store's memory. Starts seckilld on a
# fresh book; then, ROUNDS times: makes SALES sales of ORDERS units each (defaults 1,000 x 1,000),
# sells every unit to a distinct buyer with a request id (wrk, bench/delete.lua), ends and deletes
# every sale. Prints the server's resident memory (VmRSS) at each step and how many sales the
# store freed (its debug log). Usage: bench/delete.sh [SALES] [ORDERS] [ROUNDS]
set -euo pipefail
sales=${1:-1000}
orders=${2:-1000}
rounds=${3:-2}
bin=${SECKILLD:-build/seckilld}
dir=$(mktemp -d /tmp/seckill-delete.XXXXXX)
pid=
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$dir"' EXIT
"$bin" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --store "sqlite:$dir/book.db" --threads 2 --log-level debug \
  >"$dir/out" 2>"$dir/err" &
pid=$!
until grep -q 'listening admin' "$dir/out" 2>/dev/null; do sleep 0.1; done
pub=$(awk '/listening public/ {print $NF}' "$dir/out" | sed 's/.*://')
adm=$(awk '/listening admin/ {print $NF}' "$dir/out" | sed 's/.*://')
rss() { # VmRSS, and of it the process's own memory (RssAnon: the heap, not SQLite's mapped -shm)
  awk '/^VmRSS/ {r = $2} /^RssAnon/ {a = $2} END {printf "%.1f MiB (anon %.1f MiB)", r / 1024, a / 1024}' \
    "/proc/$pid/status"
}
freed() { grep -o 'event=sales_freed count=[0-9]*' "$dir/err" | awk -F= '{n += $3} END {print n + 0}'; }
sold() { curl -sf "127.0.0.1:$adm/metrics" | awk '/^seckill_sale_sold/ {s += $2} END {print s + 0}'; }
json='Content-Type: application/json'
echo "start: $(rss)"
run=0
for ((r = 1; r <= rounds; r++)); do
  p="r$r-"
  for ((i = 0; i < sales; i++)); do
    curl -sf -o /dev/null -X PUT -H "$json" "127.0.0.1:$adm/v1/sales/$p$i" -d "{\"stock\": $orders, \"per_user_limit\": 1}"
  done
  want=$((sales * orders))
  while [ "$(sold)" -lt "$want" ]; do
    run=$((run + 1))
    wrk -t 2 -c 64 -d 5s -s bench/delete.lua "http://127.0.0.1:$pub" -- "$sales" "$run" "$p" >/dev/null
  done
  echo "round $r: $sales sales, $want orders sold: $(rss)"
  now=$(date +%s)
  for ((i = 0; i < sales; i++)); do
    curl -sf -o /dev/null -X PUT -H "$json" "127.0.0.1:$adm/v1/sales/$p$i" \
      -d "{\"stock\": $orders, \"per_user_limit\": 1, \"ends_at\": $now}"
  done
  sleep 1
  for ((i = 0; i < sales; i++)); do
    curl -sf -o /dev/null -X DELETE "127.0.0.1:$adm/v1/sales/$p$i"
  done
  sleep 2
  echo "round $r: all deleted: $(rss), $(freed) sales freed so far"
done
