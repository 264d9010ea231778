-- delete.lua: deletes a sale that has ended (by Redis's clock) and holds no held order, with every
-- key of it, in one step. KEYS: the sale's seven, then its slot's set of sales, sweep list and
-- tombstones, then the feed (common.lua). ARGV: the sale id. The sale's last order id stays in
-- the tombstones, so that a sale made again under the id goes on after it (put.lua) and no order
-- id is ever given twice; on a cluster a {gone, upto} entry also goes to the slot's feed stream,
-- for the merged feed (common.lua's drop_sale). (retain_seconds deletes a sale in reap.lua, with
-- the same drop_sale.)
-- Returns sale_reply(R_OK, the sale as it was), {R_NO_SALE} or {R_ACTIVE}.
local s = load_sale()
if not s then
  return {R_NO_SALE}
end
local now = math.floor(clock_ms() / 1000)
reap(now, 1000) -- holds past their deadline are not held any more
s = load_sale()
if not s.ends or now < s.ends or s.held > 0 then
  return {R_ACTIVE}
end
drop_sale(ARGV[1], KEYS[8], KEYS[9], KEYS[10])
return sale_reply(R_OK, s)
