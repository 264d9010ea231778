-- feed.lua (read-only): GET /v1/orders, the events of sk:feed after a cursor.
-- KEYS: sk:feed, sk:feed:trimmed (the id of the last entry the retention removed, feedtrim.lua),
-- sk:tombstones. ARGV: the cursor ('0-0' for the start, else an entry id), at most how many.
-- Returns {R_BAD_REQUEST} for a cursor past the feed's end (not one this feed gave),
-- {R_EXPIRED} when entries after the cursor were removed by the retention, or
-- {R_OK, next cursor, more (0/1), then per event: sale, event, order, user, qty, status,
-- request_id, created_at, expires_at, cursor}. Entries of a deleted sale (an order id at or below
-- its tombstone) are passed over; the next cursor still moves past them.
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
local tomb = {}
for _, e in ipairs(entries) do
  out[2] = e[1]
  local f = {}
  for i = 1, #e[2], 2 do
    f[e[2][i]] = e[2][i + 1]
  end
  local t = tomb[f.sale]
  if t == nil then
    t = tonumber(redis.call('HGET', KEYS[3], f.sale) or '0')
    tomb[f.sale] = t
  end
  if tonumber(f.order) > t then
    local n = #out
    out[n + 1], out[n + 2], out[n + 3], out[n + 4], out[n + 5] = f.sale, f.event, f.order, f.user, f.qty
    out[n + 6], out[n + 7], out[n + 8], out[n + 9], out[n + 10] = f.status, f.request_id, f.created_at,
      f.expires_at, e[1]
  end
end
return out
