-- change.lua: confirm or cancel one order. ARGV: order id, 'confirm' | 'cancel'.
-- Returns {R_NO_SALE}, {R_NO_ORDER}, {R_NOT_HELD} or order_reply(R_OK, order as it now is).
-- The rules of sk_order_transition (src/sale.c): a held order past expires_at is first recorded
-- as expired (its units return, once), whatever the op; confirm: held -> confirmed, confirmed
-- stays; cancel: held or confirmed -> cancelled (units return), cancelled stays; anything else
-- is order_not_held. Repeating an op changes nothing and tells the stream nothing.
if not layout() then
  return {R_NO_SALE}
end
local id = ARGV[1]
local o = load_order(id)
local now = math.floor(clock_ms() / 1000)
if B then
  -- on a cluster, before the first write (common.lua's touch): the order's key, and its user's
  -- when units go back (give_back: a cancel, or a hold past its deadline)
  local back = o and o.user ~= '' and (ARGV[2] ~= 'confirm' or (o.status == 'held' and o.expires_at ~= ''
    and now >= tonumber(o.expires_at)))
  touch({okey(id), back and ukey(o.user) or nil})
end
if not o then
  return {R_NO_ORDER}
end
if o.status == 'held' and o.expires_at ~= '' and now >= tonumber(o.expires_at) then
  give_back(o, 'held')
  set_status(id, o, 'expired')
  redis.call('ZREM', K.holds, id)
end
if ARGV[2] == 'confirm' then
  if o.status == 'held' then
    local q = o.qty
    redis.call('HINCRBY', K.sale, 'held', num(-tonumber(q)))
    redis.call('HINCRBY', K.sale, 'sold', q)
    redis.call('ZREM', K.holds, id)
    set_status(id, o, 'confirmed')
  elseif o.status ~= 'confirmed' then
    return {R_NOT_HELD}
  end
else
  if o.status == 'held' or o.status == 'confirmed' then
    local from = o.status
    give_back(o, from)
    if from == 'held' then
      redis.call('ZREM', K.holds, id)
    end
    set_status(id, o, 'cancelled')
  elseif o.status ~= 'cancelled' then
    return {R_NOT_HELD}
  end
end
return order_reply(R_OK, o)
