-- feed.lua (read-only): GET /v1/orders, the events of the feed after a cursor.
-- KEYS: the feed's stream (sk:feed; on a Redis Cluster the merged sk:{feed}, relay.lua), the id
-- of the last entry the retention removed (sk:feed:trimmed, sk:{feed}:trimmed: trim_feed), and on
-- a cluster sk:{feed}:gone (deleted sale -> its last order id).
-- ARGV: the cursor ('0-0' for the start, else an event's: an entry's id, or within an entry of
-- several events an id just below it, common.lua's feed_xadd), at most how many events.
-- Returns {R_BAD_REQUEST} for a cursor past the feed's end (not one this feed gave),
-- {R_EXPIRED} when entries after the cursor were removed by the retention, or
-- {R_OK, next cursor, more (0/1), then per event: sale, event, order, user, qty, status,
-- request_id, created_at, expires_at, cursor}. Entries of a deleted sale are passed over, and so
-- are a cluster's deletion entries ({gone, upto}, common.lua's drop_sale); the next cursor still
-- moves past them. Entries are decoded by common.lua's feed_fields (every version), the one place
-- where a feed entry's fields are read.
-- An entry is of a deleted sale when its order id is at or below the sale's tombstone (its last
-- order id when deleted): a sale made again under the id goes on after it (put.lua). On a cluster
-- the tombstone is the one the relay copied into sk:{feed}:gone. On a single Redis it is tested
-- without naming the slot's tombstones key, whose tag only C knows: the order is not in its
-- sale's orders (its key of layout 2, else the orders hash of layout 1, common.lua; orders leave
-- them only when the sale is deleted); those keys are not declared, which a single Redis allows.
local function before(ah, al, bh, bl)
  return ah < bh or (ah == bh and al < bl)
end
local limit = tonumber(ARGV[2])
local ah, al = id_parts(ARGV[1])
local trimmed = redis.call('GET', KEYS[2]) or '0-0'
local th, tl = id_parts(trimmed)
local eh, el = th, tl
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if #last > 0 then
  eh, el = id_parts(last[1][1])
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
-- the entries after the cursor, the first of which may hold events at or before it (version 3):
-- each holds at least one event after it, so `limit` entries fill a page. `more`: the page is
-- full (as on the embedded store)
local entries = redis.call('XRANGE', KEYS[1], '(' .. start, '+', 'COUNT', limit)
local out = {R_OK, ARGV[1], 0}
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
local sh, sl = id_parts(start)
local seen = 0 -- events gone through (served or passed over), at most `limit`
for _, e in ipairs(entries) do
  if seen == limit then
    break
  end
  local evs = feed_fields(e[2])
  local h, l = id_parts(e[1])
  local k = #evs
  for j, f in ipairs(evs) do
    local c = l - k + j -- this event's cursor: h-c (the entry's id for its last one)
    if before(sh, sl, h, c) then
      if seen == limit then
        break
      end
      seen = seen + 1
      local cursor = j == k and e[1] or (num(h) .. '-' .. num(c))
      out[2] = cursor
      if f.gone == nil and live(f) then
        local n = #out
        out[n + 1], out[n + 2], out[n + 3], out[n + 4], out[n + 5] = f.sale, f.event, f.order, f.user, f.qty
        out[n + 6], out[n + 7], out[n + 8], out[n + 9], out[n + 10] = f.status, f.request_id, f.created_at,
          f.expires_at, cursor
      end
    end
  end
end
if seen == limit then
  out[3] = 1
end
return out
