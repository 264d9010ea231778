-- due_add.lua: a slot got held orders (sent after the take that made them). KEYS: sk:idx:{i}:due,
-- sk:idx:{i}:ver. ARGV: slot, its sale's next deadline. Lowers the slot's deadline (adds it) and
-- moves its version on, so that a sweep that read the slot before cannot raise the deadline past
-- this one (due_set.lua). Returns {R_OK}.
redis.call('ZADD', KEYS[1], 'LT', ARGV[2], ARGV[1])
redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
return {R_OK}
