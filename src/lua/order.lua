-- order.lua (read-only): one order. ARGV: order id.
-- Returns {R_NO_SALE}, {R_NO_ORDER} or order_reply(R_OK, order) with the stored status.
if not layout() then
  return {R_NO_SALE}
end
-- on a cluster, the order's key (common.lua's touch): on the importing node of a slot in
-- migration, a key not moved yet would read as no order
if B then
  touch({okey(ARGV[1])})
end
local o = load_order(ARGV[1])
if not o then
  return {R_NO_ORDER}
end
return order_reply(R_OK, o)
