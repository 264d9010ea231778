-- reap.lua: records the expiry of held orders past their deadline. ARGV: at most how many.
-- Returns {handled, more (0/1)}. Idempotent: every instance runs it on a timer, and whichever
-- gets to an order first returns its units; the others find it gone from the holds set.
local max = tonumber(ARGV[1])
local n = reap(math.floor(clock_ms() / 1000), max)
return {n, n >= max and 1 or 0}
