-- feed.lua (read-only): GET /v1/orders, the events of sk:feed after a cursor (a single Redis or
-- Sentinel only: a Redis Cluster has no one feed yet, docs/redis.md).
-- KEYS: sk:feed, sk:feed:trimmed (the id of the last entry the retention removed, feedtrim.lua).
-- ARGV: the cursor ('0-0' for the start, else an entry id), at most how many.
-- Returns {R_BAD_REQUEST} for a cursor past the feed's end (not one this feed gave),
-- {R_EXPIRED} when entries after the cursor were removed by the retention, or
-- {R_OK, next cursor, more (0/1), then per event: sale, event, order, user, qty, status,
-- request_id, created_at, expires_at, cursor}. Entries of a deleted sale are passed over; the next
-- cursor still moves past them. An entry is of a deleted sale when its order is not in its sale's
-- orders (its key of layout 2, else the orders hash of layout 1, common.lua): orders leave it only when the sale is deleted, and a sale made again under the id
-- goes on after the deleted one's last order id (its slot's tombstone, put.lua), so this is the
-- tombstone's test (order id at or below it) without naming the slot's key, whose tag only C
-- knows. The sale's orders key is not declared: a single Redis allows that, a cluster never runs
-- this script.
local function id_of(s)
  local hi, lo = string.match(s, '^(%d+)-(%d+)$')
  return tonumber(hi), tonumber(lo)
end
local function before(ah, al, bh, bl)
  return ah < bh or (ah == bh and al < bl)
end
local limit = tonumber(ARGV[2])
local ah, al = id_of(ARGV[1])
local trimmed = redis.call('GET', KEYS[2]) or '0-0'
local th, tl = id_of(trimmed)
local eh, el = th, tl
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if #last > 0 then
  eh, el = id_of(last[1][1])
end
if before(eh, el, ah, al) then
  return {R_BAD_REQUEST}
end
local start = ARGV[1]
if before(ah, al, th, tl) then
  if ah ~= 0 or al ~= 0 then
    return {R_EXPIRED}
  end
  start = trimmed
end
local entries = redis.call('XRANGE', KEYS[1], '(' .. start, '+', 'COUNT', limit)
local out = {R_OK, ARGV[1], #entries == limit and 1 or 0}
for _, e in ipairs(entries) do
  out[2] = e[1]
  local f = feed_fields(e[2])
  local p = 'sk:{' .. f.sale .. '}'
  if redis.call('HEXISTS', p .. ':o:' .. math.floor(tonumber(f.order) / ORDERS_PER_KEY), f.order) == 1
     or redis.call('HEXISTS', p .. ':orders', f.order) == 1 then
    local n = #out
    out[n + 1], out[n + 2], out[n + 3], out[n + 4], out[n + 5] = f.sale, f.event, f.order, f.user, f.qty
    out[n + 6], out[n + 7], out[n + 8], out[n + 9], out[n + 10] = f.status, f.request_id, f.created_at,
      f.expires_at, e[1]
  end
end
return out
