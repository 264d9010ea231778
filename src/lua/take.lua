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
-- A winning take writes its user's units and its request id as it is decided (below); the orders
-- are written once per key per batch, then one feed entry for them all (and a stream entry per
-- order, when the sale's stream exists), then the counters once.
local now_ms = clock_ms()
local now = math.floor(now_ms / 1000)
local ukeys, rkeys -- on a cluster, take i's user's and request id's keys as the pre-pass named them
if FEED_PER_SLOT and layout() and B then
  -- On a Redis Cluster, before the first write (the reap's, then the decisions'), every key of
  -- layout 2 the batch may read or write (common.lua's touch): each take's user's key and request
  -- id's key, the keys of the orders it may make (ids seq0 + 1 to seq0 + n), and those of the
  -- orders its request ids already name (a replay reads its order). The reap touches its own.
  local n0 = tonumber(ARGV[1])
  local seq00 = tonumber(redis.call('GET', K.seq) or '0')
  local ks, rks, rids = {}, {}, {} -- rids: request id key (rks, in order) -> its request ids
  ukeys, rkeys = {}, {}
  for i = 0, n0 - 1 do
    local user, rid = ARGV[2 + 3 * i], ARGV[4 + 3 * i]
    if user ~= '' then
      ukeys[i] = ukey(user)
      ks[#ks + 1] = ukeys[i]
    end
    if rid ~= '' then
      local rk = rkey(rid)
      rkeys[i] = rk
      if not rids[rk] then
        rids[rk] = {}
        rks[#rks + 1] = rk
        ks[#ks + 1] = rk
      end
      local r = rids[rk]
      r[#r + 1] = rid
    end
  end
  for k = math.floor((seq00 + 1) / ORDERS_PER_KEY), math.floor((seq00 + n0) / ORDERS_PER_KEY) do
    ks[#ks + 1] = K.sale .. ':o:' .. num(k)
  end
  for _, rk in ipairs(rks) do
    for _, prev in ipairs(redis.call('HMGET', rk, unpack(rids[rk]))) do
      if prev then
        ks[#ks + 1] = okey(prev)
      end
    end
  end
  touch(ks)
end
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
local taken = {}    -- user -> units, as of now in this batch (per_user_limit only)
local new_rids = {} -- request_id -> the place in `feed` of an order made by this batch
local feed = {}     -- the new orders for the feed: id, user, qty, request_id (strings), 4 slots each
local packed = {}   -- order key -> HSET arguments: id, pack_order(...), ...
local okeys = {}    -- the order keys of `packed`, in order
local held = {}     -- ZADD arguments for K.holds
-- the reply: the header (filled in at the end), then code, id, created_at, expires_at per take
local out = {R_OK, 0, 0, 0, 0, 0}
local open = window == R_OK

-- The order a request id names, if any: its id, user, qty, created_at, expires_at (-1).
local function by_rid(rid)
  local prev = redis.call('HGET', rkey(rid), rid)
  if prev then
    local o = load_order(prev)
    if o then
      return prev, o.user, tonumber(o.qty), tonumber(o.created_at), tonumber(o.expires_at) or -1
    end
  end
  return prev, nil, nil, 0, -1
end

-- The writes of a take that wins are made as it is decided, each key's once: a user's units
-- (HSETNX for one who holds none, the common case; else HINCRBY), its request id (HSETNX, which
-- also tells whether the id is known: then nothing is written, or the user's HSETNX is undone).
local n = tonumber(ARGV[1])
local limit, stock, hold = s.limit, s.stock, s.hold
-- a winning order as stored (pack_order): pre .. qty .. mid .. user .. '\t' .. request_id
local pre, mid = (B and SHORT[status] or status) .. '\t', '\t' .. created_at .. '\t' .. expires_at .. '\t'
for i = 0, n - 1 do
  local user, qtys, rid = ARGV[2 + 3 * i], ARGV[3 + 3 * i], ARGV[4 + 3 * i]
  local qty = tonumber(qtys)
  local code, id, created, exp = R_OK, 0, 0, -1
  local prev, prev_user, prev_qty
  local mine = rid ~= '' and new_rids[rid]
  if mine then
    prev, prev_user, prev_qty, created, exp = feed[mine], feed[mine + 1], tonumber(feed[mine + 2]), now, expires
  end
  if limit > 0 and user == '' then
    code, prev = R_BAD_REQUEST, nil
  elseif not prev and (not open or stock - s.sold - s.held < qty) then
    -- cannot win: only a known request id changes the answer
    if rid ~= '' then
      prev, prev_user, prev_qty, created, exp = by_rid(rid)
    end
    if not prev then
      code = open and R_SOLD_OUT or window
    end
  elseif not prev then
    local uk = user ~= '' and (ukeys and ukeys[i] or ukey(user))
    local fresh = false -- the user held nothing and now holds qty (written)
    local allowed = true
    if limit > 0 then
      local t = taken[user]
      if not t then
        if qty <= limit and call('HSETNX', uk, user, qtys) == 1 then
          t, fresh = 0, true
        else
          t = tonumber(call('HGET', uk, user)) or 0
        end
        taken[user] = t
      end
      allowed = qty <= limit and t <= limit - qty
    end
    local ids = num(seq + 1) -- the order's id, if it wins
    if rid ~= '' then
      if not allowed or call('HSETNX', rkeys and rkeys[i] or rkey(rid), rid, ids) == 0 then
        prev, prev_user, prev_qty, created, exp = by_rid(rid)
      end
    end
    if prev then
      if fresh then
        call('HDEL', uk, user)
      end
    elseif not allowed then
      code = R_USER_LIMIT
    else
      seq = seq + 1
      id, created, exp = seq, now, expires
      if hold > 0 then
        s.held = s.held + qty
      else
        s.sold = s.sold + qty
      end
      if user ~= '' then
        if limit > 0 then
          taken[user] = taken[user] + qty
        end
        if not fresh then
          call('HINCRBY', uk, user, qtys)
        end
      end
      local k = #feed
      if rid ~= '' then
        new_rids[rid] = k + 1
      end
      feed[k + 1], feed[k + 2], feed[k + 3], feed[k + 4] = ids, user, qtys, rid
      local ok = okeys[#okeys]
      if not ok or (B and id % ORDERS_PER_KEY == 0) then
        ok = okey(id) -- the batch's first order, or the first of a key of layout 2
        if not packed[ok] then
          packed[ok] = {}
          okeys[#okeys + 1] = ok
        end
      end
      local p = packed[ok]
      p[#p + 1], p[#p + 2] = ids, pre .. qtys .. mid .. user .. '\t' .. rid
      if hold > 0 then
        held[#held + 1] = expires_at
        held[#held + 1] = ids
      end
    end
  end
  if prev then
    if prev_user ~= user or prev_qty ~= qty then
      code, created, exp = R_REUSED, 0, -1
    else
      code, id = R_REPLAY, tonumber(prev)
    end
  end
  local k = #out
  out[k + 1], out[k + 2], out[k + 3], out[k + 4] = code, id, created, exp
end

-- record: the orders with one HSET per key, then the sale's stream (when it exists) and the feed's entry
if seq ~= seq0 then
  for _, ok in ipairs(okeys) do
    redis.call('HSET', ok, unpack(packed[ok]))
  end
  local stream, ev = stream_on(), {}
  for k = 1, #feed, 4 do
    local id, user, qty, rid = feed[k], feed[k + 1], feed[k + 2], feed[k + 3]
    if stream then
      redis.call('XADD', K.stream, '*', 'event', 'taken', 'order', id, 'user', user, 'qty', qty,
                 'status', status, 'request_id', rid, 'created_at', created_at,
                 'expires_at', expires_at)
    end
    ev[#ev + 1] = user .. '\t' .. qty .. '\t' .. rid
  end
  feed_add_created(feed[1], ev, created_at, expires_at) -- the batch's ids are consecutive
  if #held > 0 then
    redis.call('ZADD', K.holds, unpack(held))
    -- the slot's sweep list (KEYS[8]): this sale is due at its earliest deadline at the latest
    redis.call('ZADD', KEYS[8], 'LT', expires_at, SALE_ID)
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
