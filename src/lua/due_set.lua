-- due_set.lua: the end of a slot's sweep. KEYS: sk:idx:{i}:due, sk:idx:{i}:ver. ARGV: slot, the
-- version due_get.lua gave, the slot's next deadline (-1: none, reap.lua's). Only when no take
-- made holds in the slot since (same version): otherwise the slot stays due, and the next sweep
-- looks again. Versions are kept for ever (one field per slot). Returns {R_OK, set (0/1)}.
if (tonumber(redis.call('HGET', KEYS[2], ARGV[1])) or 0) ~= tonumber(ARGV[2]) then
  return {R_OK, 0}
end
if ARGV[3] == '-1' then
  redis.call('ZREM', KEYS[1], ARGV[1])
else
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
end
return {R_OK, 1}
