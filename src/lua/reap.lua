-- reap.lua: the sweep of one slot. KEYS: the slot's sweep list (sk:slot:{TAG}:due: sale id scored
-- by the earliest deadline of its held orders or the time its retain_seconds are up, or earlier),
-- the slot's set of sales, its tombstones, then the feed (common.lua). ARGV: at most how many holds.
-- For every sale of the list that is due, records the expiry of its held orders past their
-- deadline (common.lua's reap, which returns their units exactly once), deletes it when its
-- retain_seconds are up and it holds nothing (drop_sale, as delete.lua), and scores it again by
-- its next time (a second from now while its retain_seconds are up but orders are held), or
-- drops it. A sale's keys are named from its id, its hash tag: they live in
-- this very slot. Returns {handled, more (0/1: due sales are left), the slot's next deadline (-1:
-- none), then the ids of the sales it deleted}. Idempotent: every instance sweeps, and whichever reaches an order first returns its units.
local due, sales, tombstones = KEYS[1], KEYS[2], KEYS[3]
local max = tonumber(ARGV[1])
local now = math.floor(clock_ms() / 1000)
local handled = 0
local retired = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', due, '-inf', num(now), 'LIMIT', 0, 100)) do
  if handled >= max then
    break
  end
  local p = 'sk:{' .. id .. '}'
  K.sale, K.users, K.holds, K.stream, K.rids, K.seq, K.orders = p, p .. ':users', p .. ':holds',
    p .. ':stream', p .. ':rids', p .. ':seq', p .. ':orders'
  SALE_ID = id
  -- on a cluster the sale's keys are not declared here: those read before this sale's first write
  -- (K.sale, K.holds) are touched first (common.lua), as reap and drop_sale touch theirs; a slot in
  -- migration stops the sweep before this sale's first write (the sales before it are swept whole)
  touch({K.holds})
  handled = handled + reap(now, max - handled)
  local s = load_sale()
  local next_at
  if s then
    local first = redis.call('ZRANGE', K.holds, 0, 0, 'WITHSCORES')
    if first[2] then
      next_at = tonumber(first[2])
    end
    local at = retain_due(s)
    if at and at <= now and s.held == 0 then
      drop_sale(id, sales, due, tombstones) -- retain_seconds are up: as delete.lua
      retired[#retired + 1] = id
      next_at = nil
    elseif at and at <= now then
      -- up, but orders are held: a confirm or cancel may resolve them before their deadline,
      -- and it does not tell the sweep list, so look again in a second
      next_at = now + 1
    elseif at and (not next_at or at < next_at) then
      next_at = at
    end
  end
  if next_at then
    redis.call('ZADD', due, num(next_at), id)
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
local out = {handled, more, nd}
for _, id in ipairs(retired) do
  out[#out + 1] = id
end
return out
