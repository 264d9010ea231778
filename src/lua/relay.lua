-- relay.lua: the relay's copy of one slot's feed entries into the merged feed of a Redis Cluster
-- (docs/redis.md, "The winners feed on a Redis Cluster"). Runs on the merged stream's master.
-- KEYS: sk:{feed} (the merged stream), sk:{feed}:trimmed, sk:{feed}:gone, sk:{feed}:pos (hash:
-- slot stream -> the id of its last entry copied), sk:{feed}:dirty (hash: slot -> mark version),
-- sk:{feed}:extra (the merged feed's events beyond one an entry: common.lua's feed_extra).
-- ARGV: the slot stream's key, the position the relay read after ('0-0': none yet), the slot,
-- the slot's mark version the relay read ('': none), 1 when the entries reach the slot stream's
-- end as read, how many events the feed keeps, then the entries read (XRANGE after that
-- position, in order) as one MessagePack array of arrays {id, field, value, field, value, ...}.
-- Copies only when the position is still the stored one (compare and set) and stores the new
-- one in the same step, so relays of several instances racing land each entry exactly once, in
-- the slot stream's order. Entries are copied field for field (an entry of several events, version
-- 3, under an id that keeps its events' cursors apart: common.lua's feed_xadd); only a deletion
-- entry ({gone, upto}, common.lua's drop_sale) is looked into, to record the tombstone for
-- feed.lua. With the slot stream read to its end, the slot's mark is cleared if nobody marked
-- it since it was read. Then the feed's retention (common.lua's trim_feed).
-- Returns {R_OK, the new position} or {R_REPLAY, the stored position} when it had moved.
local stream, trimmed, gone, posk, dirty, extra = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local pos = redis.call('HGET', posk, ARGV[1]) or '0-0'
if pos ~= ARGV[2] then
  return {R_REPLAY, pos}
end
local entries = cmsgpack.unpack(ARGV[7])
local xs = 0
for _, e in ipairs(entries) do
  local k = feed_count(e, 2)
  feed_xadd(stream, k, nil, unpack(e, 2))
  xs = xs + k - 1
  if e[2] == 'gone' then
    local upto = tonumber(e[5]) or 0
    if upto > tonumber(redis.call('HGET', gone, e[3]) or '-1') then
      redis.call('HSET', gone, e[3], e[5])
    end
  end
  pos = e[1]
end
if #entries > 0 then
  redis.call('HSET', posk, ARGV[1], pos)
end
if xs > 0 then
  redis.call('INCRBY', extra, num(xs))
end
if ARGV[5] == '1' and ARGV[4] ~= '' and redis.call('HGET', dirty, ARGV[3]) == ARGV[4] then
  redis.call('HDEL', dirty, ARGV[3])
end
trim_feed(stream, trimmed, gone, tonumber(ARGV[6]), extra)
return {R_OK, pos}
