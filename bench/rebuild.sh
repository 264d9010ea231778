#!/usr/bin/env bash
# bench/rebuild.sh: the embedded store at scale (issue 6, item 4). Writes an order book of
# N orders (default 10,000,000) of N distinct buyers into a fresh SQLite file, starts seckilld
# on it, and reports how long the rebuild took (its `event=rebuilt ... ms=` log line) and the
# resident memory per buyer once it serves. Usage: bench/rebuild.sh [N]
set -euo pipefail
n=${1:-10000000}
bin=${SECKILLD:-build/seckilld}
dir=$(mktemp -d /tmp/seckill-rebuild.XXXXXX)
trap 'pkill -f "store sqlite:$dir/" 2>/dev/null || true; rm -rf "$dir"' EXIT
# the store's own schema (src/sql/schema.sql), then the rows
sqlite3 "$dir/big.db" <<SQL
PRAGMA journal_mode=WAL;
$(cat "$(dirname "$0")/../src/sql/schema.sql")
INSERT INTO sales VALUES('big', $((n * 2)), 1, 0, NULL, NULL);
WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < $n)
INSERT INTO orders SELECT 'big', x, 'user' || x, 1, 'confirmed', NULL, 1795767485, NULL FROM c;
SQL
# the baseline: the same server on an empty book
"$bin" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --store "sqlite:$dir/empty.db" --threads 1 \
  >"$dir/e.out" 2>"$dir/e.err" &
until grep -q 'listening admin' "$dir/e.out" 2>/dev/null; do sleep 0.1; done
base=$(awk '/VmRSS/{print $2}' /proc/$!/status)
kill $!
"$bin" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --store "sqlite:$dir/big.db" --threads 1 \
  >"$dir/b.out" 2>"$dir/b.err" &
pid=$!
until grep -q 'listening admin' "$dir/b.out" 2>/dev/null; do sleep 0.2; done
ms=$(sed -n 's/.*event=rebuilt .* ms=\([0-9]*\).*/\1/p' "$dir/b.err")
rss=$(awk '/VmRSS/{print $2}' /proc/$pid/status)
port=$(sed -n 's/listening public=.*:\([0-9]*\)$/\1/p' "$dir/b.out")
sold=$(curl -s "127.0.0.1:$port/v1/sales/big" | sed 's/.*"sold":\([0-9]*\).*/\1/')
kill $pid
echo "orders=$n sold=$sold rebuild_ms=$ms rss_kib=$rss baseline_rss_kib=$base bytes_per_buyer=$(( (rss - base) * 1024 / n ))"
