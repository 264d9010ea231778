-- due_get.lua (read-only): the slots whose sweep is due, from the index of deadlines (docs/redis.md,
-- "Holds and expiry"). KEYS: sk:idx:{i}:due (slot -> the slot's earliest deadline, or earlier),
-- sk:idx:{i}:ver (slot -> version). ARGV: at most how many slots.
-- Returns {now (ms, Redis's clock), the earliest deadline not yet due (-1: none among the first
-- ARGV[1]), then per due slot: slot, version}: the sweep sleeps until that deadline.
local now_ms = clock_ms()
local now = math.floor(now_ms / 1000)
local first = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1, 'WITHSCORES')
local out = {now_ms, -1}
local due = {}
for i = 1, #first, 2 do
  local at = tonumber(first[i + 1])
  if at > now then
    out[2] = at
    break
  end
  due[#due + 1] = first[i]
end
if #due > 0 then
  local vers = redis.call('HMGET', KEYS[2], unpack(due))
  for i, slot in ipairs(due) do
    out[#out + 1] = tonumber(slot)
    out[#out + 1] = tonumber(vers[i]) or 0
  end
end
return out
