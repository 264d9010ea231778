-- take.lua: decides and records a batch of takes of one sale, atomically, in arrival order.
-- KEYS: the sale's seven, then its slot's sweep list (sk:slot:{TAG}:due, docs/redis.md), then
-- the feed (common.lua).
-- ARGV: n, then n triples: user ('' = anonymous), qty, request_id ('' = none).
-- Returns {R_NO_SALE} or
--   {R_OK, remaining, per_user_limit, ends_at (-1), next hold deadline (-1), window open (0/1),
--    then per take: code, order id, created_at, expires_at (-1)}
-- The header lets the instance answer sold_out without Redis until units can come back.
--
-- The rules are those of src/sale.c, checked in the order of docs/API.md: user required,
-- request id (a replay is answered even when sold out or ended), window, stock (sold out is
-- sold out for everybody), the user's allowance.
-- The whole batch is decided first, reading only, then written: every kind of key once per batch
-- (the orders with one HSET, the users' totals with one HSET, ...), and a stream entry per order.
local now_ms = clock_ms()
local now = math.floor(now_ms / 1000)
reap(now, 100)
local s = load_sale()
if not s then
  return {R_NO_SALE}
end
local window = R_OK
if s.starts and now < s.starts then
  window = R_NOT_STARTED
elseif s.ends and now >= s.ends then
  window = R_ENDED
end

local seq0 = tonumber(redis.call('GET', K.seq) or '0')
local seq, sold0, held0 = seq0, s.sold, s.held
local expires = -1
if s.hold > 0 then
  -- the take's time rounded up to a whole second, plus hold_seconds
  expires = math.floor((now_ms + 999) / 1000) + s.hold
end
local status = s.hold > 0 and 'held' or 'confirmed'
local created_at, expires_at = num(now), s.hold > 0 and num(expires) or ''
local taken = {}    -- user -> units, as of now in this batch
local added = {}    -- user -> units this batch adds
local users = {}    -- the users of `added`, in order
local new_rids = {} -- request_id -> {user, qty, id} of an order made by this batch
local orders = {}   -- the new orders: id, user, qty, request_id (strings), 4 slots each
local packed = {}   -- HSET arguments for K.orders: id, pack_order(...), ...
-- the reply: the header (filled in at the end), then code, id, created_at, expires_at per take
local out = {R_OK, 0, 0, 0, 0, 0}

local function taken_by(user)
  local t = taken[user]
  if not t then
    t = tonumber(redis.call('HGET', K.users, user)) or 0
    taken[user] = t
  end
  return t
end

local n = tonumber(ARGV[1])
for i = 0, n - 1 do
  local user, qty, rid = ARGV[2 + 3 * i], tonumber(ARGV[3 + 3 * i]), ARGV[4 + 3 * i]
  local code, id, created, exp = R_OK, 0, 0, -1
  local prev, prev_user, prev_qty
  if rid ~= '' then
    local mine = new_rids[rid]
    if mine then
      prev, prev_user, prev_qty, created, exp = mine[3], mine[1], mine[2], now, expires
    else
      prev = redis.call('HGET', K.rids, rid)
      if prev then
        local o = load_order(prev)
        if o then
          prev_user, prev_qty = o.user, tonumber(o.qty)
          created, exp = tonumber(o.created_at), tonumber(o.expires_at) or -1
        end
      end
    end
  end
  if s.limit > 0 and user == '' then
    code = R_BAD_REQUEST
  elseif prev then
    if prev_user ~= user or prev_qty ~= qty then
      code, created, exp = R_REUSED, 0, -1
    else
      code, id = R_REPLAY, tonumber(prev)
    end
  elseif window ~= R_OK then
    code = window
  elseif s.stock - s.sold - s.held < qty then
    code = R_SOLD_OUT
  elseif s.limit > 0 and (qty > s.limit or taken_by(user) > s.limit - qty) then
    code = R_USER_LIMIT
  else
    seq = seq + 1
    id, created, exp = seq, now, expires
    if s.hold > 0 then
      s.held = s.held + qty
    else
      s.sold = s.sold + qty
    end
    if user ~= '' then
      if not added[user] then
        added[user] = 0
        users[#users + 1] = user
      end
      added[user] = added[user] + qty
      if s.limit > 0 then
        taken[user] = taken_by(user) + qty
      end
    end
    if rid ~= '' then
      new_rids[rid] = {user, qty, id}
    end
    local ids, qtys = num(id), ARGV[3 + 3 * i]
    local k = #orders
    orders[k + 1], orders[k + 2], orders[k + 3], orders[k + 4] = ids, user, qtys, rid
    k = #packed
    packed[k + 1], packed[k + 2] = ids, pack_order(status, qtys, created_at, expires_at, user, rid)
  end
  local k = #out
  out[k + 1], out[k + 2], out[k + 3], out[k + 4] = code, id, created, exp
end

-- record: one call per kind of key for the whole batch, and one stream entry per order
if seq ~= seq0 then
  local held, rids = {}, {}
  for k = 1, #orders, 4 do
    local id, user, qty, rid = orders[k], orders[k + 1], orders[k + 2], orders[k + 3]
    if s.hold > 0 then
      held[#held + 1] = expires_at
      held[#held + 1] = id
    end
    if rid ~= '' then
      rids[#rids + 1] = rid
      rids[#rids + 1] = id
    end
    redis.call('XADD', K.stream, '*', 'event', 'taken', 'order', id, 'user', user, 'qty', qty,
               'status', status, 'request_id', rid, 'created_at', created_at,
               'expires_at', expires_at)
    feed_add('created', id, user, qty, status, rid, created_at, expires_at)
  end
  redis.call('HSET', K.orders, unpack(packed))
  if #held > 0 then
    redis.call('ZADD', K.holds, unpack(held))
    -- the slot's sweep list (KEYS[8]): this sale is due at its earliest deadline at the latest
    redis.call('ZADD', KEYS[8], 'LT', expires_at, SALE_ID)
  end
  if #rids > 0 then
    redis.call('HSET', K.rids, unpack(rids))
  end
  if #users > 0 then
    -- each user's new total: with a limit, taken[] already holds it; without one, read them all
    local totals = {}
    local stored = s.limit > 0 and {} or redis.call('HMGET', K.users, unpack(users))
    for i, u in ipairs(users) do
      totals[#totals + 1] = u
      totals[#totals + 1] = num(s.limit > 0 and taken[u] or (tonumber(stored[i]) or 0) + added[u])
    end
    redis.call('HSET', K.users, unpack(totals))
  end
  redis.call('SET', K.seq, num(seq))
  if s.sold ~= sold0 then
    redis.call('HINCRBY', K.sale, 'sold', num(s.sold - sold0))
  end
  if s.held ~= held0 then
    redis.call('HINCRBY', K.sale, 'held', num(s.held - held0))
  end
end

local remaining = s.stock - s.sold - s.held
if remaining < 0 then
  remaining = 0
end
local next_deadline = -1
local first = redis.call('ZRANGE', K.holds, 0, 0, 'WITHSCORES')
if first[2] then
  next_deadline = tonumber(first[2])
end
out[2], out[3], out[4], out[5], out[6] = remaining, s.limit, s.ends or -1, next_deadline,
  window == R_OK and 1 or 0
return out
