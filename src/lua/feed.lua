-- feed.lua (read-only): GET /v1/orders, the events of the feed after a cursor.
-- KEYS: the feed's stream (sk:feed; on a Redis Cluster the merged sk:{feed}, relay.lua), the id
-- of the last entry the retention removed (sk:feed:trimmed, sk:{feed}:trimmed: trim_feed), and on
-- a cluster sk:{feed}:gone (deleted sale -> its last order id).
-- ARGV: the cursor ('0-0' for the start, else an entry id), at most how many.
-- Returns {R_BAD_REQUEST} for a cursor past the feed's end (not one this feed gave),
-- {R_EXPIRED} when entries after the cursor were removed by the retention, or
-- {R_OK, next cursor, more (0/1), then per event: sale, event, order, user, qty, status,
-- request_id, created_at, expires_at, cursor}. Entries of a deleted sale are passed over, and so
-- are a cluster's deletion entries ({gone, upto}, common.lua's drop_sale); the next cursor still
-- moves past them. Entries are decoded by common.lua's feed_fields (both versions), the one place
-- where a feed entry's fields are read.
-- An entry is of a deleted sale when its order id is at or below the sale's tombstone (its last
-- order id when deleted): a sale made again under the id goes on after it (put.lua). On a cluster
-- the tombstone is the one the relay copied into sk:{feed}:gone. On a single Redis it is tested
-- without naming the slot's tombstones key, whose tag only C knows: the order is not in its
-- sale's orders (its key of layout 2, else the orders hash of layout 1, common.lua; orders leave
-- them only when the sale is deleted); those keys are not declared, which a single Redis allows.
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
local gone, tomb = KEYS[3], {}
local function live(f)
  if not gone then
    local p = 'sk:{' .. f.sale .. '}'
    return redis.call('HEXISTS', p .. ':o:' .. math.floor(tonumber(f.order) / ORDERS_PER_KEY), f.order) == 1
      or redis.call('HEXISTS', p .. ':orders', f.order) == 1
  end
  if tomb[f.sale] == nil then
    tomb[f.sale] = tonumber(redis.call('HGET', gone, f.sale) or '0')
  end
  return tonumber(f.order) > tomb[f.sale]
end
for _, e in ipairs(entries) do
  out[2] = e[1]
  local f = feed_fields(e[2])
  if f.gone == nil and live(f) then
    local n = #out
    out[n + 1], out[n + 2], out[n + 3], out[n + 4], out[n + 5] = f.sale, f.event, f.order, f.user, f.qty
    out[n + 6], out[n + 7], out[n + 8], out[n + 9], out[n + 10] = f.status, f.request_id, f.created_at,
      f.expires_at, e[1]
  end
end
return out
