-- feedtrim.lua: the feed's retention on a single Redis or under Sentinel (on a cluster relay.lua
-- trims sk:{feed} as it copies). KEYS: sk:feed, sk:feed:trimmed, sk:feed:extra. ARGV: how many
-- events to keep. Once the stream holds a 64th more than that, removes the oldest entries (at
-- most 1,000 a call, about a millisecond of Redis; the caller calls again at once while it
-- removed 1,000) and records the id of the last one removed in sk:feed:trimmed, in the same
-- step: feed.lua refuses a cursor before it (R_EXPIRED), so no reader skips an entry without
-- knowing (common.lua's trim_feed). Returns how many entries were removed.
return trim_feed(KEYS[1], KEYS[2], nil, tonumber(ARGV[1]), KEYS[3])
