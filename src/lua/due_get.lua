-- due_get.lua (read-only): the slots whose sweep is due, from the index of deadlines (docs/redis.md,
-- "Holds and expiry"). KEYS: sk:idx:{i}:due (slot -> the slot's earliest deadline, or earlier),
-- sk:idx:{i}:ver (slot -> version). ARGV: at most how many slots.
-- Returns {now, then per due slot: slot, version}.
local now = math.floor(clock_ms() / 1000)
local slots = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', num(now), 'LIMIT', 0, tonumber(ARGV[1]))
local out = {now}
if #slots > 0 then
  local vers = redis.call('HMGET', KEYS[2], unpack(slots))
  for i, slot in ipairs(slots) do
    out[#out + 1] = tonumber(slot)
    out[#out + 1] = tonumber(vers[i]) or 0
  end
end
return out
