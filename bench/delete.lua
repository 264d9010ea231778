-- bench/delete.lua: takes spread over N sales (d0 .. dN-1), each request a new buyer with a
-- request id, for bench/delete.sh:  wrk ... -s bench/delete.lua URL -- N RUN PREFIX (RUN: a tag of
-- the run, so that the buyers of a run are new; the sales are PREFIX0 .. PREFIX(N-1))
local threads = {}
function setup(thread)
   thread:set("tid", #threads)
   table.insert(threads, thread)
end
local n, run, prefix, counter = 1, "0", "d", 0
local headers = { ["Content-Type"] = "application/json" }
function init(args)
   n = tonumber(args[1] or "1") or 1
   run = args[2] or "0"
   prefix = args[3] or "d"
end
function request()
   counter = counter + 1
   local id = run .. "-" .. tid .. "-" .. counter
   return wrk.format("POST", "/v1/sales/" .. prefix .. (counter % n) .. "/orders", headers,
      '{"user":"u' .. id .. '","request_id":"r' .. id .. '"}')
end
