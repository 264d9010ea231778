-- delete.lua: deletes a sale that has ended (by Redis's clock) and holds no held order, with every
-- key of it, in one step. KEYS: the sale's seven and sk:feed, then sk:sales, sk:holding,
-- sk:tombstones, sk:retain. ARGV: the sale id, then 'retire' when the reaper deletes a sale whose
-- retain_seconds are up (then only when they are: R_ACTIVE otherwise). The sale's last order id
-- stays in sk:tombstones, so that a sale made again under the id goes on after it (put.lua) and
-- no order id is ever given twice.
-- Returns sale_reply(R_OK, the sale as it was), {R_NO_SALE} or {R_ACTIVE}.
local s = load_sale()
if not s then
  return {R_NO_SALE}
end
local now = math.floor(clock_ms() / 1000)
reap(now, 1000) -- holds past their deadline are not held any more
s = load_sale()
if ARGV[2] == 'retire' and not (s.retain and s.ends and now >= s.ends + s.retain) then
  retain_index(12, ARGV[1], s) -- changed since the reaper looked
  return {R_ACTIVE}
end
if not s.ends or now < s.ends or s.held > 0 then
  return {R_ACTIVE}
end
local seq = tonumber(redis.call('GET', K.seq) or '0')
if seq > tonumber(redis.call('HGET', KEYS[11], ARGV[1]) or '0') then
  redis.call('HSET', KEYS[11], ARGV[1], num(seq))
end
redis.call('UNLINK', K.sale, K.users, K.holds, K.stream, K.rids, K.seq, K.orders)
redis.call('SREM', KEYS[9], ARGV[1])
redis.call('SREM', KEYS[10], ARGV[1])
redis.call('ZREM', KEYS[12], ARGV[1])
return sale_reply(R_OK, s)
