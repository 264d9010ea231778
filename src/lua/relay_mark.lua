-- relay_mark.lua: marks slots whose feed stream got entries (a Redis Cluster's relay, relay.lua),
-- sent by a worker after the scripts that may have written them. KEYS: sk:{feed}:dirty (hash:
-- slot -> mark version). ARGV: the slots, as decimal numbers separated by spaces. Each mark's
-- version moves on, so that a relay that read an older version (and the slot stream after it)
-- leaves the mark for its next round. Returns how many slots were marked.
local n = 0
for slot in string.gmatch(ARGV[1], '%d+') do
  redis.call('HINCRBY', KEYS[1], slot, 1)
  n = n + 1
end
return n
