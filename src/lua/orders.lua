-- orders.lua (read-only): a page of the order book in increasing id. ARGV: after, limit.
-- Returns {R_NO_SALE} or {R_OK, more, then per order: id, user, qty, status, request_id,
-- created_at, expires_at (-1)}; more is 1 when orders exist after the last one returned.
-- Order ids are dense (INCR inside the take script, which writes nothing else before deciding),
-- so the page is a range of ids.
if not layout() then
  return {R_NO_SALE}
end
local last = tonumber(redis.call('GET', K.seq) or '0')
local limit = tonumber(ARGV[2])
local id = tonumber(ARGV[1]) + 1
local out = {R_OK, 0}
local ids = {}
while id <= last and #ids < limit do
  ids[#ids + 1] = num(id)
  id = id + 1
end
-- on a cluster, the page's keys first (common.lua's touch, as order.lua)
if B and #ids > 0 then
  local ks = {}
  for k = math.floor(tonumber(ids[1]) / ORDERS_PER_KEY), math.floor(tonumber(ids[#ids]) / ORDERS_PER_KEY) do
    ks[#ks + 1] = K.sale .. ':o:' .. num(k)
  end
  touch(ks)
end
-- one HMGET per key the ids are in (layout 2: ORDERS_PER_KEY ids a key)
local from = 1
while from <= #ids do
  local key = okey(ids[from])
  local to = from
  while to < #ids and okey(ids[to + 1]) == key do
    to = to + 1
  end
  for i, v in ipairs(redis.call('HMGET', key, unpack(ids, from, to))) do
    local o = unpack_order(v)
    if o then
      for _, f in ipairs(order_reply(tonumber(ids[from + i - 1]), o)) do
        out[#out + 1] = f
      end
    end
  end
  from = to + 1
end
if id <= last then
  out[2] = 1
end
return out
