-- bench/wrk.lua: the one wrk script of bench/run.sh, for every target, so that the load
-- generator costs about the same per request whatever it talks to.
--
--   wrk -t T -c C -d S -s bench/wrk.lua URL -- MODE PATH [POOL] [TAG] [T]
--
-- MODE  get        GET PATH?u=TAG-THREAD-N (nginx `/`, the Python app's `/limit`; both ignore the
--                  query, which is there so that wrk builds each request as it does a POST's)
--       user       POST PATH {"user": TAG-THREAD-N}: every request a distinct user
--       pool       POST PATH {"user": "bTAG-K"} with K cycling over POOL buyer ids: POOL distinct
--                  buyers who keep trying (the mixed flash sale)
--       anon       POST PATH {} (anonymous buyer, like ab)
-- done() prints one line starting with "BENCH " with the counts and the latency percentiles
-- (microseconds), p99.9 included, which `wrk --latency` does not give.

local threads = {}

function setup(thread)
   thread:set("tid", #threads)
   table.insert(threads, thread)
end

local mode, path, pool, tag, nthreads
local counter = 0
local fixed = nil
local headers = { ["Content-Type"] = "application/json" }

function init(args)
   mode = args[1] or "get"
   path = args[2] or "/"
   pool = tonumber(args[3] or "0") or 0
   tag = args[4] or "b"
   nthreads = tonumber(args[5] or "1") or 1
   if mode == "anon" then
      fixed = wrk.format("POST", path, headers, "{}")
   end
end

function request()
   if fixed then
      return fixed
   end
   counter = counter + 1
   local user
   if mode == "pool" then
      user = tag .. "-" .. ((counter * nthreads + tid) % pool)
   else
      user = tag .. "-" .. tid .. "-" .. counter
   end
   if mode == "get" then
      return wrk.format("GET", path .. "?u=" .. user)
   end
   return wrk.format("POST", path, headers, '{"user":"' .. user .. '"}')
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      "BENCH requests=%d duration_us=%d connect=%d read=%d write=%d status=%d timeout=%d " ..
      "p50=%.1f p75=%.1f p90=%.1f p99=%.1f p999=%.1f max=%.1f mean=%.1f\n",
      summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
      latency:percentile(50), latency:percentile(75), latency:percentile(90),
      latency:percentile(99), latency:percentile(99.9), latency.max, latency.mean))
end
