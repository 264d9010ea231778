-- reap.lua: the sweep of one slot. KEYS[1]: the slot's sweep list (sk:slot:{TAG}:due: sale id
-- scored by the earliest deadline of its held orders, or earlier). ARGV: at most how many holds.
-- For every sale of the list that is due, records the expiry of its held orders past their
-- deadline (common.lua's reap, which returns their units exactly once) and scores it again by its
-- next deadline (or drops it). A sale's keys are named from its id, its hash tag: they live in
-- this very slot. Returns {handled, more (0/1: due sales are left), the slot's next deadline (-1:
-- none)}. Idempotent: every instance sweeps, and whichever reaches an order first returns its units.
local due = KEYS[1]
local max = tonumber(ARGV[1])
local now = math.floor(clock_ms() / 1000)
local handled = 0
for _, id in ipairs(redis.call('ZRANGEBYSCORE', due, '-inf', num(now), 'LIMIT', 0, 100)) do
  if handled >= max then
    break
  end
  local p = 'sk:{' .. id .. '}'
  K.sale, K.users, K.holds, K.stream, K.orders = p, p .. ':users', p .. ':holds', p .. ':stream',
    p .. ':orders'
  handled = handled + reap(now, max - handled)
  local first = redis.call('ZRANGE', K.holds, 0, 0, 'WITHSCORES')
  if first[2] then
    redis.call('ZADD', due, first[2], id)
  else
    redis.call('ZREM', due, id)
  end
end
local nd, more = -1, 0
local first = redis.call('ZRANGE', due, 0, 0, 'WITHSCORES')
if first[2] then
  nd = tonumber(first[2])
  if nd <= now then
    more = 1
  end
end
return {handled, more, nd}
