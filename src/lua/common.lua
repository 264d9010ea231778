-- common.lua: helpers shared by every Redis script of the seckill Redis store.
--
-- store_redis.c never sends this file alone: each script is sent as
--   "#!lua" (+ " flags=no-writes" for read-only scripts) .. the result codes .. common.lua .. <script>.lua
-- so the helpers below are in scope in every script, and one SHA1 names each composition.
--
-- Every script gets the same seven keys of one sale, all with the sale as hash tag, so that one
-- sale lives in one Redis Cluster slot, and some scripts also keys of that slot's own (the sales
-- of the slot, its sweep list, its tombstones: 'sk:slot:{TAG}:...' with a TAG that hashes to the
-- sale's slot), so that every script touches one slot only, and last of all the winners feed's
-- stream (every script that may change an order tells it): sk:feed on a single Redis or under
-- Sentinel, the slot's own sk:slot:{TAG}:feed on a Redis Cluster. See docs/redis.md for the
-- layout, the order stream and the feed.

local K = {
  sale = KEYS[1],   -- hash: stock limit hold starts ends sold held  ('' = null time)
  users = KEYS[2],  -- hash: user -> units held plus bought (fields at 0 are deleted)
  holds = KEYS[3],  -- sorted set: order id scored by expires_at, held orders only
  stream = KEYS[4], -- stream: one entry per order event (taken/confirmed/cancelled/expired)
  rids = KEYS[5],   -- hash: request_id -> order id, for ever
  seq = KEYS[6],    -- string: the last order id given
  orders = KEYS[7], -- hash: order id -> the order, packed (pack_order)
  feed = KEYS[#KEYS], -- stream: the feed (sk:feed, or the slot's on a cluster), always the last key
}

-- The sale's id: KEYS[1] is 'sk:{' .. id .. '}' (reap.lua, whose KEYS[1] is a slot's, sets it
-- for each sale it goes through).
local SALE_ID = string.sub(KEYS[1], 5, -2)

-- On a Redis Cluster the feed is the slot's own stream, which worker 0 of every instance copies
-- into the one merged stream sk:{feed} (relay.lua, docs/redis.md): each keeps about its last
-- FEED_SLOT_KEEP entries, trimmed as it is written: a bound for a relay that stalls (the relay
-- itself trims what it copied a few seconds after copying it).
local FEED_SLOT_KEEP = 100000
local FEED_PER_SLOT = string.sub(K.feed or '', 1, 8) == 'sk:slot:'

-- The result codes (R_OK, R_SOLD_OUT, ...) are not defined here: store_redis.c writes them ahead of
-- this file from its one list, SK_REDIS_RESULTS, which also says what each one answers.

-- An integer as Redis wants it: tostring() would print 2^53 as 9.007199254741e+15. '%d' formats a
-- C long (64 bits), exact for every integer up to 2^53, and costs less than '%.0f'.
-- (Hot functions of the standard library, as locals: a global costs a table lookup each use.)
local format, byte, tonumber, call = string.format, string.byte, tonumber, redis.call
local function num(n)
  return format('%d', n)
end

-- Redis's own clock, in milliseconds: every instance agrees on it. Scripts are replicated by
-- their effects (the Redis 7 default), so calling TIME is allowed.
local function clock_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- The sale's layout (docs/redis.md, "Layouts"). Layout 1: the orders, request ids and users of a
-- sale are one hash each (K.orders, K.rids, K.users). Layout 2 (every sale made by this version):
-- they are spread over small hashes that Redis keeps as listpacks (about 4 times smaller than a
-- hash's table): the orders ORDERS_PER_KEY ids a key ('sk:{sale}:o:' .. id div ORDERS_PER_KEY),
-- request ids and users over B keys each ('sk:{sale}:r:' / 'sk:{sale}:u:' .. a hash of the string
-- mod B), B fixed when the sale is made, from its stock (buckets_for: PER_BUCKET entries a key on
-- average).
-- These keys are not declared in KEYS: on a Redis Cluster every script touches them first (touch,
-- below), so that a slot in migration stops it before it writes anything. The sale's field 'b'
-- holds B: absent for layout 1.
local ORDERS_PER_KEY = 64
local PER_BUCKET = 64
local BUCKETS_MAX = 65521 -- the largest prime below 2^16 (buckets_for)

-- B for a sale made with `stock`: ceil(stock / PER_BUCKET), at most BUCKETS_MAX, then the prime at
-- or above it. shash mod a power of two (or another even number) leaves buckets empty and
-- overfills others past hash-max-listpack-entries for ids of digits ('12345'), and a prime
-- spreads them (at most about 90 entries a key for 64 on average, for every id pattern tried).
-- The bound keeps a deletion's UNLINK of every bucket (drop_sale, when the sale has more orders
-- than buckets) to about 131,000 keys: a sale of stock 10^15 would have had 10^13. A sale of more than
-- about 4 million orders fills its buckets past 128 entries, which Redis then keeps as tables.
local function buckets_for(stock)
  local b = math.min(math.max(1, math.ceil(stock / PER_BUCKET)), BUCKETS_MAX)
  if b < 3 then
    return b
  end
  while true do
    local prime, d = true, 2
    while d * d <= b do
      if b % d == 0 then
        prime = false
        break
      end
      d = d + 1
    end
    if prime then
      return b
    end
    b = b + 1
  end
end
local B = nil          -- the sale's B, nil for layout 1 (set by load_sale / layout)
local B_OF = nil       -- the K.sale B was read for

-- Reads the sale's layout (once per sale a script goes through); false when there is no sale.
local function layout()
  if B_OF ~= K.sale then
    local c = redis.call('HMGET', K.sale, 'stock', 'b')
    if not c[1] then
      B, B_OF = nil, nil
      return false
    end
    B, B_OF = tonumber(c[2] or ''), K.sale
  end
  return true
end

-- The key holding order id (a number or a decimal string).
local function okey(id)
  if B then
    return K.sale .. ':o:' .. num(math.floor(tonumber(id) / ORDERS_PER_KEY))
  end
  return K.orders
end

-- A cheap hash of a string (its length, its first and last 8 bytes), exact in Lua's doubles.
local function shash(v)
  local a, b, c, d, e, f, g, h = byte(v, 1, 8)
  local x = ((((((((#v * 31 + (a or 0)) * 31 + (b or 0)) * 31 + (c or 0)) * 31 + (d or 0)) * 31 + (e or 0)) * 31
    + (f or 0)) * 31 + (g or 0)) * 31 + (h or 0))
  a, b, c, d, e, f, g, h = byte(v, -8, -1)
  return x + (((((((((a or 0) * 31 + (b or 0)) * 31 + (c or 0)) * 31 + (d or 0)) * 31 + (e or 0)) * 31
    + (f or 0)) * 31 + (g or 0)) * 31 + (h or 0)) * 7)
end

-- The keys holding a request id's order id and a user's units.
local function rkey(rid)
  if B then
    return K.sale .. ':r:' .. (B > 1 and num(shash(rid) % B) or '0')
  end
  return K.rids
end
local function ukey(user)
  if B then
    return K.sale .. ':u:' .. (B > 1 and num(shash(user) % B) or '0')
  end
  return K.users
end

-- On a Redis Cluster (docs/redis.md, "Layouts"): the keys ks, and K.sale, in multi-key EXISTS
-- calls (TOUCH_CHUNK keys a call, each with K.sale), before the script's first write. While the
-- slot migrates, Redis checks every command a script runs against this node's keys: a key not
-- here stops the script with an error there and then ("Script attempted to access a non local key
-- in a cluster node script"), but what the script wrote before stays written. So every key a
-- script names itself (not in KEYS, which Redis checks before the script runs) and may read or
-- write goes through here before its first write: on the migrating node a key already moved (or
-- never made: a new bucket) stops it, and on the importing node (ASKING) one not yet moved does
-- too (a command of one key would be let through there, and would make a second copy of the key;
-- a command of several keys with one missing is refused, TRYAGAIN). The store answers that error
-- as TRYAGAIN: nothing was written, 503, the retry decides. With no migration the keys are all
-- here and nothing is refused. Not on a single Redis or under Sentinel, where nothing migrates.
-- K.sale must be a key of the script's sale (touch counts it in: present for a live sale).
local TOUCH_CHUNK = 500
local function touch(ks)
  if not FEED_PER_SLOT then
    return
  end
  local seen, list = {[K.sale] = true}, {}
  for _, k in ipairs(ks) do
    if not seen[k] then
      seen[k] = true
      list[#list + 1] = k
    end
  end
  for i = 1, #list, TOUCH_CHUNK do
    redis.call('EXISTS', K.sale, unpack(list, i, math.min(i + TOUCH_CHUNK - 1, #list)))
  end
end

-- An order as stored: status, qty, created_at, expires_at, user, request_id, joined by tabs ('' for
-- a null). user and request_id never hold a control character (src/parse.c), so a tab cannot be
-- part of a field. Layout 2 writes the status as its first letter (h, c, x for cancelled, e); both
-- forms are read. One hash field per order lets a batch of takes write its orders with one HSET
-- per key.
local SHORT = {held = 'h', confirmed = 'c', cancelled = 'x', expired = 'e'}
local LONG = {h = 'held', c = 'confirmed', x = 'cancelled', e = 'expired'}
local function pack_order(status, qty, created_at, expires_at, user, request_id)
  return (B and SHORT[status] or status) .. '\t' .. qty .. '\t' .. created_at .. '\t' .. expires_at .. '\t' .. user
         .. '\t' .. request_id
end

-- The packed order v (from HGET/HMGET) as a table of strings, or nil when v is false.
local function unpack_order(v)
  if not v then
    return nil
  end
  local status, qty, created, expires, user, rid =
    string.match(v, '^([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)\t(.*)$')
  return {user = user, qty = qty, status = LONG[status] or status, request_id = rid, created_at = created,
          expires_at = expires}
end

-- A stored order as a table of strings (user and request_id '' when absent), or nil.
local function load_order(id)
  layout()
  return unpack_order(redis.call('HGET', okey(id), id))
end

-- The sale's own stream (K.stream) is written only when it exists: a consumer that wants it
-- creates it (XGROUP CREATE ... MKSTREAM); the winners feed carries every event (docs/redis.md).
local STREAM_OF, STREAM_ON = nil, false
local function stream_on()
  if STREAM_OF ~= K.stream then
    STREAM_OF, STREAM_ON = K.stream, redis.call('EXISTS', K.stream) == 1
  end
  return STREAM_ON
end

-- The winners feed (K.feed, docs/redis.md "The winners feed"). An entry holds one event or, from
-- take.lua, the orders one take call made (version 3): every event has its own cursor, and an
-- entry's id is its last event's cursor, the events before it having the ids just below it in
-- the same millisecond (an entry of k events with id H-L: H-(L-k+1) .. H-L). feed_xadd gives an
-- entry of k > 1 events such an id, above every id given before.
-- Version 2 (one event): `sale`, `order` (the order id) and `o`, the event and the order as it is
-- after it, joined by tabs: the event as a letter (FEED_EVENT), user, qty, request_id,
-- created_at, expires_at. The order's status is not written: it follows from the event (created:
-- held when the order has an expires_at, else confirmed; any other event: the event's own name).
-- Version 3 (the orders one take call made, consecutive ids): `sale`, `n` (how many), `o` (the
-- first order id), `t` (created_at and expires_at, the same for all, joined by a tab), `e`: per
-- order user, qty and request_id joined by tabs, the orders joined by newlines; the event is
-- `created` for each. Version 1 had nine fields,
-- as the sale's stream. feed_fields reads every version, and is the one place that decodes an
-- entry. One entry per take call rather than per order makes a take's feed cost one XADD a call
-- (docs/redis.md, BENCHMARKS.md "Cheap takes").
local FEED_EVENT = {created = 'n', confirmed = 'c', cancelled = 'x', expired = 'e'}
local FEED_EVENT_NAME = {n = 'created', c = 'confirmed', x = 'cancelled', e = 'expired'}

-- An entry id's two numbers.
local function id_parts(s)
  local h, l = string.match(s, '^(%d+)-(%d+)$')
  return tonumber(h), tonumber(l)
end

-- stream -> {ms, seq} of the last id this script gave it (feed_xadd)
local FEED_LAST = {}

-- Adds an entry of k events (fields: the rest) to stream, trimmed to about `maxlen` entries when
-- given; returns its id. An entry of one event takes Redis's next id ('*'); one of k > 1 events
-- takes H-L with L - k + 1 above the stream's last id in the same millisecond H (the later of
-- now and the last id's), so that its k cursors are above every cursor given before.
local function feed_xadd(stream, k, maxlen, ...)
  local id = '*'
  if k > 1 then
    local last = FEED_LAST[stream]
    if last == nil then
      last = false
      local e = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)
      if e[1] then
        last = {id_parts(e[1][1])}
      elseif redis.call('EXISTS', stream) == 1 then
        -- emptied by the retention: its last id is still the floor of the next
        local info = redis.call('XINFO', 'STREAM', stream)
        for i = 1, #info, 2 do
          if info[i] == 'last-generated-id' then
            last = {id_parts(info[i + 1])}
          end
        end
      end
    end
    local now = clock_ms()
    if last and last[1] >= now then
      id = num(last[1]) .. '-' .. num(last[2] + k)
    else
      id = num(now) .. '-' .. num(k - 1)
    end
  end
  local got
  if maxlen then
    got = redis.call('XADD', stream, 'MAXLEN', '~', maxlen, id, ...)
  else
    got = redis.call('XADD', stream, id, ...)
  end
  FEED_LAST[stream] = {id_parts(got)}
  return got
end

-- The count of the feed's events beyond one an entry, sk:feed:extra (on a cluster the merged
-- feed's is sk:{feed}:extra, relay.lua; slot streams have none): the retention counts events,
-- XLEN counts entries. A single Redis allows take.lua not to declare it.
local function feed_extra(stream)
  return stream .. ':extra'
end

-- One event of one order, as an entry of version 2.
local function feed_add(event, id, user, qty, status, request_id, created_at, expires_at)
  local o = FEED_EVENT[event] .. '\t' .. user .. '\t' .. qty .. '\t' .. request_id .. '\t' .. created_at .. '\t'
            .. expires_at
  feed_xadd(K.feed, 1, FEED_PER_SLOT and FEED_SLOT_KEEP or nil, 'sale', SALE_ID, 'order', id, 'o', o)
end

-- The created events of one take call, as one entry of version 3: `first` the first order id (a
-- string), `ev` per order user, qty and request_id joined by tabs.
local function feed_add_created(first, ev, created_at, expires_at)
  local k = #ev
  feed_xadd(K.feed, k, FEED_PER_SLOT and FEED_SLOT_KEEP or nil, 'sale', SALE_ID, 'n', num(k), 'o', first, 't',
            created_at .. '\t' .. expires_at, 'e', table.concat(ev, '\n'))
  if k > 1 and not FEED_PER_SLOT then
    redis.call('INCRBY', feed_extra(K.feed), num(k - 1))
  end
end

-- How many events an entry holds: its fields as XRANGE gives them (name, value, ...) from kv[i]
-- on (i: 1, or 2 for the relay's {id, name, value, ...}).
local function feed_count(kv, i)
  i = i or 1
  if kv[i + 2] == 'n' then
    return tonumber(kv[i + 3])
  end
  return 1
end

-- The event of `ev` (a letter or, version 1, a name), and the order's status after it.
local function feed_event(ev, expires_at)
  local event = FEED_EVENT_NAME[ev] or ev
  if event ~= 'created' then
    return event, event
  elseif expires_at ~= '' then
    return event, 'held'
  end
  return event, 'confirmed'
end

-- A feed entry's events (its fields as XRANGE gives them: name, value, ...) as a list of tables
-- of strings: sale, event, order, user, qty, status, request_id, created_at, expires_at; every
-- version. A cluster's deletion entry ({gone, upto}) is one table with those two fields.
local function feed_fields(kv)
  local f = {}
  for i = 1, #kv, 2 do
    f[kv[i]] = kv[i + 1]
  end
  if f.e then
    local list, id = {}, tonumber(f.o)
    local created, expires = string.match(f.t, '^([^\t]*)\t(.*)$')
    local event, status = feed_event('n', expires)
    for line in string.gmatch(f.e, '[^\n]+') do
      local g = {sale = f.sale, order = num(id), event = event, status = status, created_at = created,
                 expires_at = expires}
      g.user, g.qty, g.request_id = string.match(line, '^([^\t]*)\t([^\t]*)\t(.*)$')
      list[#list + 1] = g
      id = id + 1
    end
    return list
  end
  if f.o then
    local ev
    ev, f.user, f.qty, f.request_id, f.created_at, f.expires_at =
      string.match(f.o, '^([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)\t(.*)$')
    f.event, f.status = feed_event(ev, f.expires_at)
    f.o = nil
  end
  return {f}
end

-- One stream entry and its feed entry: the order as it is after the event.
local function emit(event, id, o)
  if stream_on() then
    redis.call('XADD', K.stream, '*', 'event', event, 'order', id, 'user', o.user, 'qty', o.qty,
               'status', o.status, 'request_id', o.request_id, 'created_at', o.created_at,
               'expires_at', o.expires_at)
  end
  feed_add(event, id, o.user, o.qty, o.status, o.request_id, o.created_at, o.expires_at)
end

-- Gives an order's units back to the sale (out of `from`: 'held' or 'confirmed') and to the
-- user's allowance.
local function give_back(o, from)
  local q = tonumber(o.qty)
  redis.call('HINCRBY', K.sale, from == 'held' and 'held' or 'sold', num(-q))
  if o.user ~= '' then
    local uk = ukey(o.user)
    if redis.call('HINCRBY', uk, o.user, num(-q)) <= 0 then
      redis.call('HDEL', uk, o.user)
    end
  end
end

-- Sets an order's status and tells the stream.
local function set_status(id, o, status)
  o.status = status
  redis.call('HSET', okey(id), id,
             pack_order(status, o.qty, o.created_at, o.expires_at, o.user, o.request_id))
  emit(status, id, o)
end

-- Records the expiry of at most `max` held orders whose expires_at has passed (now >= expires_at),
-- returning their units exactly once: an order leaves `holds` in the same step. Counters are
-- updated once per sweep. Returns how many deadlines were handled.
local function reap(now, max)
  local due = redis.call('ZRANGEBYSCORE', K.holds, '-inf', num(now), 'LIMIT', 0, max)
  if #due == 0 then
    return 0
  end
  local orders = {}
  for i, id in ipairs(due) do
    orders[i] = load_order(id)
  end
  if FEED_PER_SLOT then
    -- the orders' keys and their users' keys (and K.holds and K.stream, which set_status reads,
    -- not declared in reap.lua), before the first write
    local ks = {K.holds, K.stream}
    for i, id in ipairs(due) do
      ks[#ks + 1] = okey(id)
      local o = orders[i]
      if o and o.status == 'held' and o.user ~= '' then
        ks[#ks + 1] = ukey(o.user)
      end
    end
    touch(ks)
  end
  local units, per_user, users = 0, {}, {}
  for i, id in ipairs(due) do
    local o = orders[i]
    if o and o.status == 'held' then
      local q = tonumber(o.qty)
      units = units + q
      if o.user ~= '' then
        if not per_user[o.user] then
          per_user[o.user] = 0
          users[#users + 1] = o.user
        end
        per_user[o.user] = per_user[o.user] + q
      end
      set_status(id, o, 'expired')
    end
  end
  redis.call('ZREM', K.holds, unpack(due))
  if units > 0 then
    redis.call('HINCRBY', K.sale, 'held', num(-units))
  end
  for _, u in ipairs(users) do
    local uk = ukey(u)
    if redis.call('HINCRBY', uk, u, num(-per_user[u])) <= 0 then
      redis.call('HDEL', uk, u)
    end
  end
  return #due
end

-- The sale's configuration and counters, or nil when there is no such sale.
local function load_sale()
  local c = redis.call('HMGET', K.sale, 'stock', 'limit', 'hold', 'starts', 'ends', 'sold', 'held',
                      'retain', 'b')
  if not c[1] then
    B, B_OF = nil, nil
    return nil
  end
  B, B_OF = tonumber(c[9] or ''), K.sale
  return {stock = tonumber(c[1]), limit = tonumber(c[2]), hold = tonumber(c[3]),
          starts = tonumber(c[4] or ''), ends = tonumber(c[5] or ''), -- nil when null
          sold = tonumber(c[6]), held = tonumber(c[7]), retain = tonumber(c[8] or '')}
end

-- The reply shape of a sale: code, stock, limit, hold, starts, ends (-1: null), sold, held,
-- retain (-1: null).
local function sale_reply(code, s)
  return {code, s.stock, s.limit, s.hold, s.starts or -1, s.ends or -1, s.sold, s.held, s.retain or -1}
end

-- retain_seconds: when the sale is due for deletion (ends + retain), or nil when it has no end or
-- no retain_seconds. The slot's sweep list scores the sale by this time too (put.lua, reap.lua).
local function retain_due(s)
  if s.retain and s.ends then
    return s.ends + s.retain
  end
  return nil
end

-- Deletes the sale `id` (loaded as s: ended, nothing held) with every key of it, and takes it out
-- of its slot's set of sales and sweep list. Its last order id stays in the slot's tombstones, so
-- that a sale made again under the id goes on after it (put.lua) and no order id is given twice.
local function drop_sale(id, sales, due, tombstones)
  local seq = tonumber(redis.call('GET', K.seq) or '0')
  layout()
  -- layout 2: every key the sale may have (an absent one costs nothing): its order keys, and the
  -- keys of its request ids and users: those its orders name when it has fewer orders than B
  -- (every entry of them is an order's), else all 2 B
  local ks = {}
  if B then
    local named = seq < B and {} or nil
    for i = 0, math.floor(seq / ORDERS_PER_KEY) do
      local ok = K.sale .. ':o:' .. i
      ks[#ks + 1] = ok
      if named then
        local kv = redis.call('HGETALL', ok)
        for j = 2, #kv, 2 do
          local o = unpack_order(kv[j])
          if o.request_id ~= '' then
            named[rkey(o.request_id)] = true
          end
          if o.user ~= '' then
            named[ukey(o.user)] = true
          end
        end
      end
    end
    if named then
      for k in pairs(named) do
        ks[#ks + 1] = k
      end
    else
      for i = 0, B - 1 do
        ks[#ks + 1] = K.sale .. ':r:' .. i
        ks[#ks + 1] = K.sale .. ':u:' .. i
      end
    end
  end
  if FEED_PER_SLOT then
    -- on a cluster, all of them (and the sale's own, not declared in reap.lua) before the first
    -- write: a slot in migration stops the deletion before it starts, never half-way
    local all = {K.users, K.holds, K.stream, K.rids, K.seq, K.orders}
    for _, k in ipairs(ks) do
      all[#all + 1] = k
    end
    touch(all)
  end
  if seq > tonumber(redis.call('HGET', tombstones, id) or '0') then
    redis.call('HSET', tombstones, id, num(seq))
  end
  for i = 1, #ks, 1000 do -- 1,000 a call
    redis.call('UNLINK', unpack(ks, i, math.min(i + 999, #ks)))
  end
  redis.call('UNLINK', K.sale, K.users, K.holds, K.stream, K.rids, K.seq, K.orders)
  B_OF = nil
  redis.call('SREM', sales, id)
  redis.call('ZREM', due, id)
  if FEED_PER_SLOT then
    -- on a cluster feed.lua cannot look into the sale's slot: the deletion travels to the merged
    -- feed in the slot's stream, after every event of the sale, as {gone = id, upto = its last
    -- order id} (relay.lua records it in sk:{feed}:gone; readers pass over this entry)
    redis.call('XADD', K.feed, 'MAXLEN', '~', FEED_SLOT_KEEP, '*', 'gone', id, 'upto',
               redis.call('HGET', tombstones, id) or '0')
  end
end

-- The feed's retention (feedtrim.lua; relay.lua on a cluster): once `stream` holds a 64th more
-- than `keep` events (its entries plus the count in `extra`, feed_extra), removes the oldest
-- entries holding at most that many more (at most 1,000 entries a call; at least `keep` events
-- stay, and fewer than 64 more than that once an entry of a take call is next) and records the id of
-- the last one removed in `trimmed` in the same step, so that feed.lua refuses a cursor before it.
-- With `gone` (a cluster's sk:{feed}:gone, sale -> its last order id when deleted), a deletion
-- entry that leaves takes its record with it: every entry of the sale it covers was before it.
-- Returns how many entries were removed.
local function trim_feed(stream, trimmed, gone, keep, extra)
  local over = redis.call('XLEN', stream) + tonumber(redis.call('GET', extra) or '0') - keep
  if over < math.floor(keep / 64) + 1 then
    return 0
  end
  local entries = redis.call('XRANGE', stream, '-', '+', 'COUNT', math.min(over, 1000))
  local n, events, xs = 0, 0, 0
  for i, e in ipairs(entries) do
    local k = feed_count(e[2])
    if events + k > over then
      break -- never fewer than `keep` events
    end
    n, events, xs = i, events + k, xs + k - 1
  end
  if n == 0 then
    return 0
  end
  local lastid = entries[n][1]
  local hi, lo = string.match(lastid, '^(%d+)-(%d+)$')
  redis.call('XTRIM', stream, 'MINID', hi .. '-' .. string.format('%d', tonumber(lo) + 1))
  redis.call('SET', trimmed, lastid)
  if xs > 0 then
    redis.call('DECRBY', extra, num(xs))
  end
  if gone then
    for i = 1, n do
      local f = entries[i][2]
      if f[1] == 'gone' and redis.call('HGET', gone, f[2]) == f[4] then
        redis.call('HDEL', gone, f[2])
      end
    end
  end
  return n
end

-- The reply shape of an order (after a code): user, qty, status, request_id, created_at,
-- expires_at (-1: null).
local function order_reply(code, o)
  return {code, o.user, tonumber(o.qty), o.status, o.request_id, tonumber(o.created_at),
          tonumber(o.expires_at) or -1}
end

