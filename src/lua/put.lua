-- put.lua: creates or updates a sale. ARGV: stock, per_user_limit, hold_seconds, starts_at,
-- ends_at (times '' = null), all checked by the caller (sk_sale_conf_check), then the sale id,
-- then retain_seconds ('' = null).
-- KEYS: the sale's seven, then its slot's set of sales, its slot's tombstones (a sale made under
-- the id of a deleted one goes on after that one's last order id: delete.lua) and its slot's
-- sweep list (a sale with retain_seconds is due there when they are up: reap.lua deletes it), then
-- the feed (common.lua). The caller puts that time into the index too (due_add.lua).
-- Returns sale_reply(R_CREATED | R_OK, sale) or {R_BELOW_TAKEN}: the new stock must cover what
-- is sold and held, checked and applied in this one step.
-- the sale is due in its slot's sweep list when its retain_seconds are up, at the latest
local function retain_sweep(id, s)
  local at = retain_due(s)
  if at then
    redis.call('ZADD', KEYS[10], 'LT', num(at), id)
  end
end

local s = load_sale()
if not s then
  local last = redis.call('HGET', KEYS[9], ARGV[6])
  if last then
    redis.call('SET', K.seq, last)
  end
  redis.call('SADD', KEYS[8], ARGV[6])
  redis.call('HSET', K.sale, 'stock', ARGV[1], 'limit', ARGV[2], 'hold', ARGV[3], 'starts', ARGV[4],
             'ends', ARGV[5], 'sold', '0', 'held', '0', 'retain', ARGV[7])
  -- layout 2 (common.lua): B keys for request ids and for users, from the stock it is made with
  -- (on a Redis Cluster too: its scripts touch those keys first, common.lua's touch)
  redis.call('HSET', K.sale, 'b', num(buckets_for(tonumber(ARGV[1]))))
  s = load_sale()
  retain_sweep(ARGV[6], s)
  return sale_reply(R_CREATED, s)
end
-- holds past their deadline no longer count against the new stock
reap(math.floor(clock_ms() / 1000), 1000)
s = load_sale()
if tonumber(ARGV[1]) < s.sold + s.held then
  return {R_BELOW_TAKEN}
end
redis.call('HSET', K.sale, 'stock', ARGV[1], 'limit', ARGV[2], 'hold', ARGV[3], 'starts', ARGV[4],
           'ends', ARGV[5], 'retain', ARGV[7])
s = load_sale()
retain_sweep(ARGV[6], s)
return sale_reply(R_OK, s)
