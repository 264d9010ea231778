-- relay_mark.lua: marks slots whose feed stream got entries (a Redis Cluster's relay, relay.lua),
-- sent by a worker after the scripts that may have written them. KEYS: sk:{feed}:dirty (hash:
-- slot -> mark version), sk:{feed}:markseq (the versions' counter). ARGV: the slots, as decimal
-- numbers separated by spaces. Each mark gets a version never given before (not a per-slot
-- count, which would start again at 1 once a relay cleared the mark): a relay that read an older
-- version (and the slot stream after it) leaves the mark for its next round.
-- Returns how many slots were marked.
local v = redis.call('INCR', KEYS[2])
local n = 0
for slot in string.gmatch(ARGV[1], '%d+') do
  redis.call('HSET', KEYS[1], slot, v)
  n = n + 1
end
return n
