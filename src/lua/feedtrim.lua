-- feedtrim.lua: the feed's retention. KEYS: sk:feed, sk:feed:trimmed. ARGV: how many entries to
-- keep. Once the stream holds a 64th more than that, removes the oldest (at most 1,000 a call,
-- about a millisecond of Redis; the caller calls again at once while it removed 1,000)
-- and records the id of the last one removed in sk:feed:trimmed, in the same step: feed.lua
-- refuses a cursor before it (R_EXPIRED), so no reader skips an entry without knowing.
-- Returns how many entries were removed.
local keep = tonumber(ARGV[1])
local n = redis.call('XLEN', KEYS[1]) - keep
if n < math.floor(keep / 64) + 1 then
  return 0
end
if n > 1000 then
  n = 1000
end
local entries = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', n)
local lastid = entries[#entries][1]
local hi, lo = string.match(lastid, '^(%d+)-(%d+)$')
redis.call('XTRIM', KEYS[1], 'MINID', hi .. '-' .. string.format('%d', tonumber(lo) + 1))
redis.call('SET', KEYS[2], lastid)
return #entries
