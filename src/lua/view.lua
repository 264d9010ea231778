-- view.lua (read-only): a sale as GET /v1/sales/{sale} shows it: sale_reply(R_OK, sale) or
-- {R_NO_SALE}. Held orders already past their deadline but not yet reaped count as returned,
-- so the view is exact between two sweeps.
local s = load_sale()
if not s then
  return {R_NO_SALE}
end
local now = math.floor(clock_ms() / 1000)
local due = redis.call('ZRANGEBYSCORE', K.holds, '-inf', num(now), 'LIMIT', 0, 1000)
if B and #due > 0 then
  -- on a cluster, their keys first (common.lua's touch, as order.lua)
  local ks = {}
  for _, id in ipairs(due) do
    ks[#ks + 1] = okey(id)
  end
  touch(ks)
end
for _, id in ipairs(due) do
  local o = load_order(id)
  if o and o.status == 'held' then
    s.held = s.held - tonumber(o.qty)
  end
end
return sale_reply(R_OK, s)
