-- schema.sql: the embedded store's order book (SQLite, WAL), the one place it is written.
-- store_embed.c runs it at every start (embedded into the binary at build time); bench/rebuild.sh
-- and tests/fuzz/fuzz_rebuild.c build books from it. docs/design.md describes the tables.
-- Times are Unix seconds; a NULL starts_at / ends_at / expires_at is "none".
CREATE TABLE IF NOT EXISTS sales(
  sale TEXT PRIMARY KEY,
  stock INTEGER NOT NULL,
  per_user_limit INTEGER NOT NULL,  -- 0: no limit
  hold_seconds INTEGER NOT NULL,    -- 0: orders are final when taken
  starts_at INTEGER,
  ends_at INTEGER,
  retain_seconds INTEGER            -- NULL: kept until deleted; else deleted this long after the end
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS orders(
  sale TEXT NOT NULL,
  id INTEGER NOT NULL,              -- 1, 2, ... per sale, in commit order
  user TEXT,                        -- NULL: anonymous
  qty INTEGER NOT NULL,
  status TEXT NOT NULL,             -- held, confirmed, cancelled, expired
  request_id TEXT,
  created_at INTEGER NOT NULL,
  expires_at INTEGER,               -- held orders only
  PRIMARY KEY(sale, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value) WITHOUT ROWID;
-- Deleted sales (DELETE /v1/sales/{sale}) and their orders, moved here in the deleting
-- transaction, for the shop's records; the server never reads them back.
CREATE TABLE IF NOT EXISTS sales_archive(
  sale TEXT NOT NULL,
  deleted_at INTEGER NOT NULL,
  stock INTEGER NOT NULL,
  per_user_limit INTEGER NOT NULL,
  hold_seconds INTEGER NOT NULL,
  starts_at INTEGER,
  ends_at INTEGER,
  retain_seconds INTEGER
);
CREATE TABLE IF NOT EXISTS orders_archive(
  sale TEXT NOT NULL,
  id INTEGER NOT NULL,
  user TEXT,
  qty INTEGER NOT NULL,
  status TEXT NOT NULL,
  request_id TEXT,
  created_at INTEGER NOT NULL,
  expires_at INTEGER,
  deleted_at INTEGER NOT NULL,
  PRIMARY KEY(sale, id)             -- ids are never reused, a sale id's next life included
) WITHOUT ROWID;
-- The last order id of each deleted sale id: a sale made again under that id goes on after it.
CREATE TABLE IF NOT EXISTS tombstones(sale TEXT PRIMARY KEY, last_id INTEGER NOT NULL) WITHOUT ROWID;
-- The winners feed (GET /v1/orders): one row per order event, written in the transaction of the
-- change itself (the same group commit as the orders). seq is given by the committer in commit
-- order and never reused; the order's fields come from `orders` (a deleted sale's events find no
-- order and are not served). Rows beyond the retention are deleted from the oldest; meta's
-- 'feed_trimmed' is the last seq deleted.
CREATE TABLE IF NOT EXISTS events(
  seq INTEGER PRIMARY KEY,
  sale TEXT NOT NULL,
  id INTEGER NOT NULL,
  kind INTEGER NOT NULL             -- 1 created, 2 confirmed, 3 cancelled, 4 expired
);
