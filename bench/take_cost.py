#!/usr/bin/python3
"""bench/take_cost.py: what a winning take costs Redis, the take script alone (no seckilld), for
two versions of the scripts side by side on the same machine in the same run.

For each version (REV's src/lua and result codes, read with `git show`, and the working tree's):
a fresh redis-server (appendonly yes, appendfsync always, no RDB), the scripts composed exactly
as src/redis_args.c's sk_store_redis_load_scripts() does, then:

- memory: a sale of N units, per_user_limit 1, taken by N buyers with 10-byte users and 11-byte
  request ids in calls of BATCH takes; `used_memory` before and after (per order), and
  MEMORY USAGE of every key of the sale, by kind (the feed apart: it keeps only its newest
  1,000,000 events);
- CPU and the ceiling: a second sale of C units taken the same way with DEPTH calls in flight
  (Redis saturated: the script's thread is busy all the time), `INFO commandstats`
  (cmdstat_evalsha usec / takes, the commands run inside the script included) and the
  redis-server process's CPU from /proc/PID/stat over the storm (the AOF's write and fsync
  included), and winning takes/s (the one-hot-sale ceiling on one Redis core).

With --callgrind T, first: redis-server's user-space instructions per winning take (callgrind,
a run with T takes against one with T/2, so that start-up and warm-up cancel out), which the
machine's other load does not change.

With --floor, instead: what the least a take could cost Redis is, measured the same way as the
storm above (C takes, calls of BATCH, DEPTH in flight, /proc CPU per take): scripts that only
read their arguments (`noop`), that write each take's request id and user with one HSETNX each
into keys of 64 entries, the keys named by the caller (`2 hsetnx`: what any design that keeps a
request id and a user per order in listpacks must do per take), that with one hash table per
index, read and written once a call (`2 big hashes`: no write per take, 118 B an order more),
and `2 hsetnx` plus the batch's orders and one feed entry (`2 hsetnx + batch`), beside the
working tree's take.lua in the same run.

Usage: bench/take_cost.py [--before REV] [--orders N] [--storm C] [--batch B] [--depth D] [--rounds R]
                          [--callgrind T] [--floor]
Env:   REDIS_SERVER (default /usr/bin/redis-server), BENCH_DIR (where Redis writes its AOF;
       default a new directory under /tmp)
"""
import argparse
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import zlib

REDIS = os.environ.get("REDIS_SERVER", "/usr/bin/redis-server")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TICKS = os.sysconf("SC_CLK_TCK")


def enc(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


class Conn:
    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port))
        self.f = self.s.makefile("rb")

    def send(self, *args):
        self.s.sendall(enc(*args))

    def read(self):
        line = self.f.readline()
        t, rest = line[:1], line[1:-2]
        if t == b"+":
            return rest.decode()
        if t == b"-":
            raise RuntimeError(rest.decode())
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            if n < 0:
                return None
            v = self.f.read(n + 2)[:-2]
            return v.decode("latin-1")
        if t == b"*":
            n = int(rest)
            return None if n < 0 else [self.read() for _ in range(n)]
        raise RuntimeError(f"bad reply {line!r}")

    def call(self, *args):
        self.send(*args)
        return self.read()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sources(rev):
    """{name: text} of the Lua scripts and the result codes' names, at REV (None: working tree)."""
    def show(path):
        if rev is None:
            with open(os.path.join(ROOT, path)) as f:
                return f.read()
        return subprocess.run(["git", "-C", ROOT, "show", f"{rev}:{path}"], check=True, capture_output=True,
                              text=True).stdout
    lua = {n: show(f"src/lua/{n}.lua") for n in ("common", "take", "put")}
    # the list is in store_redis_internal.h, or in store_redis.c at a REV before the split
    try:
        c = show("src/store_redis_internal.h")
    except (OSError, subprocess.CalledProcessError):
        c = ""
    if "#define SK_REDIS_RESULTS(XX)" not in c:
        c = show("src/store_redis.c")
    block = c[c.index("#define SK_REDIS_RESULTS(XX)"):]
    block = block[:block.index("enum rcode_e")]
    names = re.findall(r"XX\((\w+),", block)
    return lua, names


def compose(lua, names, script):
    codes = "".join(f"local R_{n} = {i}\n" for i, n in enumerate(names))
    return "#!lua\n" + codes + lua["common"] + "\n" + lua[script]


def keys(sale):
    p = "sk:{%s}" % sale
    return [p, p + ":users", p + ":holds", p + ":stream", p + ":rids", p + ":seq", p + ":orders"]


def info(c, section):
    d = {}
    for ln in c.call("INFO", section).split("\r\n"):
        if ":" in ln and not ln.startswith("#"):
            k, v = ln.split(":", 1)
            d[k] = v
    return d


def proc_cpu(pid):
    with open(f"/proc/{pid}/stat") as f:
        x = f.read().rsplit(")", 1)[1].split()
    return (int(x[11]) + int(x[12])) / TICKS  # utime + stime


def proc_sys(pid):
    with open(f"/proc/{pid}/stat") as f:
        x = f.read().rsplit(")", 1)[1].split()
    return int(x[12]) / TICKS  # stime: the kernel's share (the AOF's write and fsync, the socket)


class Redis:
    def __init__(self, d, wrap=()):
        self.port = free_port()
        self.p = subprocess.Popen(list(wrap) + [REDIS, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", d,
                                                "--appendonly", "yes", "--appendfsync", "always", "--save", "",
                                                "--auto-aof-rewrite-percentage", "0"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(1200):
            try:
                self.c = Conn(self.port)
                self.c.call("PING")
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self):
        self.p.terminate()
        self.p.wait(10)


def put(c, sha, sale, stock):
    k = keys(sale) + ["sk:slot:{x}:sales", "sk:slot:{x}:tombstones", "sk:slot:{x}:due", "sk:feed"]
    r = c.call("EVALSHA", sha, len(k), *k, stock, 1, 0, "", "", sale, "")
    assert r[0] in (0, 12), r  # R_OK or R_CREATED


def take_args(sha, sale, first, n):
    k = keys(sale) + ["sk:slot:{x}:due", "sk:feed"]
    a = ["EVALSHA", sha, len(k), *k, n]
    for i in range(first, first + n):
        a += ["u%09d" % i, "1", "r%010d" % i]  # 10-byte user, 11-byte request id
    return enc(*a)


def storm(c, sha, sale, total, batch, depth):
    """total takes in calls of `batch`, `depth` calls in flight; checks every take won."""
    reqs = [take_args(sha, sale, i, min(batch, total - i)) for i in range(0, total, batch)]
    inflight, won, sent = 0, 0, 0
    t0 = time.monotonic()
    while sent < len(reqs) or inflight:
        while sent < len(reqs) and inflight < depth:
            c.s.sendall(reqs[sent])
            sent += 1
            inflight += 1
        r = c.read()
        inflight -= 1
        assert r[0] == 0, r[:6]
        won += sum(1 for j in range(6, len(r), 4) if r[j] == 0)
    return won, time.monotonic() - t0


def kind_of(key, sale):
    rest = key[len("sk:{%s}" % sale):]
    if rest == "":
        return "sale"
    m = re.match(r":(\w+?)(?::\d+)?$", rest)
    return m.group(1) + (" (buckets)" if re.search(r":\d+$", rest) else "") if m else rest


def measure(rev, args, base):
    lua, names = sources(rev)
    d = tempfile.mkdtemp(prefix="take_cost.", dir=base)
    r = Redis(d)
    try:
        c = r.c
        take = c.call("SCRIPT", "LOAD", compose(lua, names, "take"))
        putsha = c.call("SCRIPT", "LOAD", compose(lua, names, "put"))
        out = {}
        # memory
        put(c, putsha, "m", args.orders)
        m0 = int(info(c, "memory")["used_memory"])
        won, _ = storm(c, take, "m", args.orders, args.batch, 1)
        assert won == args.orders, won
        m1 = int(info(c, "memory")["used_memory"])
        by = {}
        cursor = "0"
        while True:
            cursor, ks = c.call("SCAN", cursor, "MATCH", "sk:{m}*", "COUNT", 1000)
            for k in ks:
                kind = kind_of(k, "m")
                n, b = by.get(kind, (0, 0))
                by[kind] = (n + 1, b + c.call("MEMORY", "USAGE", k, "SAMPLES", 0))
            if cursor == "0":
                break
        feed = c.call("MEMORY", "USAGE", "sk:feed", "SAMPLES", 0) or 0
        out["mem_per_order"] = (m1 - m0) / args.orders
        out["feed_per_order"] = feed / args.orders
        out["keys"] = {k: (n, b / args.orders) for k, (n, b) in sorted(by.items())}
        # CPU and the ceiling
        put(c, putsha, "c", args.storm)
        c.call("CONFIG", "RESETSTAT")
        cpu0, sys0 = proc_cpu(r.p.pid), proc_sys(r.p.pid)
        won, secs = storm(c, take, "c", args.storm, args.batch, args.depth)
        cpu1, sys1 = proc_cpu(r.p.pid), proc_sys(r.p.pid)
        assert won == args.storm, won
        cs = info(c, "commandstats")
        out["inner"] = {k[8:]: int(dict(x.split("=") for x in v.split(","))["usec"]) / won
                        for k, v in cs.items() if k != "cmdstat_evalsha"}
        st = cs["cmdstat_evalsha"]
        f = dict(x.split("=") for x in st.split(","))
        out["calls"] = int(f["calls"])
        out["script_us"] = int(f["usec"]) / won
        out["proc_us"] = (cpu1 - cpu0) * 1e6 / won
        out["sys_us"] = (sys1 - sys0) * 1e6 / won
        out["rate"] = won / secs
        out["cpu_share"] = (cpu1 - cpu0) / secs
        out["aof_bytes"] = os.path.getsize(aof_size_path(d)) if aof_size_path(d) else 0
        return out
    finally:
        r.stop()
        shutil.rmtree(d, ignore_errors=True)


def instructions(rev, takes, batch, base):
    """redis-server's user-space instructions (callgrind's Ir) from its start to its end, with
    `takes` winning takes of one sale in between."""
    lua, names = sources(rev)
    d = tempfile.mkdtemp(prefix="take_cost.", dir=base)
    out = os.path.join(d, "callgrind.out")
    r = Redis(d, ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"])
    try:
        c = r.c
        take = c.call("SCRIPT", "LOAD", compose(lua, names, "take"))
        putsha = c.call("SCRIPT", "LOAD", compose(lua, names, "put"))
        put(c, putsha, "c", 1000000)
        if takes:
            won, _ = storm(c, take, "c", takes, batch, 1)
            assert won == takes, won
        c.send("SHUTDOWN", "NOSAVE")
        r.p.wait(120)
        with open(out) as f:
            for ln in f:
                if ln.startswith("summary:") or ln.startswith("totals:"):
                    return int(ln.split()[1])
        raise RuntimeError("no callgrind total")
    finally:
        if r.p.poll() is None:
            r.stop()
        shutil.rmtree(d, ignore_errors=True)


def aof_size_path(d):
    best, size = None, -1
    for root, _, files in os.walk(d):
        for f in files:
            if ".aof" in f:
                p = os.path.join(root, f)
                if os.path.getsize(p) > size:
                    best, size = p, os.path.getsize(p)
    return best


FLOOR = {
    "noop": "return 1",
    "2 hsetnx": """
local n = tonumber(ARGV[1])
for i = 0, n - 1 do
  redis.call('HSETNX', ARGV[2 + 3 * n + 2 * i], ARGV[4 + 3 * i], '1')
  redis.call('HSETNX', ARGV[3 + 3 * n + 2 * i], ARGV[2 + 3 * i], '1')
end
return 1""",
    "2 big hashes": """
local n = tonumber(ARGV[1])
local r, u, a, b = {}, {}, {}, {}
for i = 0, n - 1 do
  r[#r + 1], u[#u + 1] = ARGV[4 + 3 * i], ARGV[2 + 3 * i]
  a[#a + 1], a[#a + 2] = ARGV[4 + 3 * i], '1'
  b[#b + 1], b[#b + 2] = ARGV[2 + 3 * i], '1'
end
redis.call('HMGET', 'sk:{c}:rids', unpack(r))
redis.call('HMGET', 'sk:{c}:users', unpack(u))
redis.call('HSET', 'sk:{c}:rids', unpack(a))
redis.call('HSET', 'sk:{c}:users', unpack(b))
return 1""",
    "2 hsetnx + batch": """
local n = tonumber(ARGV[1])
local seq = tonumber(redis.call('GET', KEYS[1]) or '0')
local p, ev, first = {}, {}, seq + 1
for i = 0, n - 1 do
  local u, r = ARGV[2 + 3 * i], ARGV[4 + 3 * i]
  redis.call('HSETNX', ARGV[2 + 3 * n + 2 * i], r, '1')
  redis.call('HSETNX', ARGV[3 + 3 * n + 2 * i], u, '1')
  seq = seq + 1
  p[#p + 1], p[#p + 2] = string.format('%d', seq), 'c\\t1\\t1700000000\\t\\t' .. u .. '\\t' .. r
  ev[#ev + 1] = u .. '\\t1\\t' .. r
end
redis.call('HSET', KEYS[2] .. math.floor(seq / 64), unpack(p))
redis.call('XADD', 'sk:feed', '*', 'sale', 'c', 'n', n, 'o', first, 't', '1700000000\\t', 'e', table.concat(ev, '\\n'))
redis.call('SET', KEYS[1], seq)
return 1""",
}


def floor(args, base):
    """/proc CPU per take of the FLOOR scripts and of the working tree's take.lua, one fresh
    redis-server each, the same storm."""
    buckets = max(1, -(-args.storm // 64))
    for name in list(FLOOR) + ["take.lua"]:
        d = tempfile.mkdtemp(prefix="take_cost.", dir=base)
        r = Redis(d)
        try:
            c = r.c
            if name == "take.lua":
                lua, names = sources(None)
                sha = c.call("SCRIPT", "LOAD", compose(lua, names, "take"))
                put(c, c.call("SCRIPT", "LOAD", compose(lua, names, "put")), "c", args.storm)
                reqs = [take_args(sha, "c", i, min(args.batch, args.storm - i))
                        for i in range(0, args.storm, args.batch)]
            else:
                sha = c.call("SCRIPT", "LOAD", FLOOR[name])
                reqs = []
                for first in range(0, args.storm, args.batch):
                    n = min(args.batch, args.storm - first)
                    a = ["EVALSHA", sha, 2, "sk:{c}:seq", "sk:{c}:o:", n]
                    for i in range(first, first + n):
                        a += ["u%09d" % i, "1", "r%010d" % i]
                    for i in range(first, first + n):
                        a += ["sk:{c}:r:%d" % (zlib.crc32(b"r%010d" % i) % buckets),
                              "sk:{c}:u:%d" % (zlib.crc32(b"u%09d" % i) % buckets)]
                    reqs.append(enc(*a))
            cpu0 = proc_cpu(r.p.pid)
            inflight = sent = 0
            while sent < len(reqs) or inflight:
                while sent < len(reqs) and inflight < args.depth:
                    c.s.sendall(reqs[sent])
                    sent += 1
                    inflight += 1
                x = c.read()
                inflight -= 1
                assert x == 1 or x[0] == 0, x
            cpu = (proc_cpu(r.p.pid) - cpu0) * 1e6 / args.storm
            print(f"  {name:<18} {cpu:6.2f} us of redis-server CPU (/proc) per take", flush=True)
        finally:
            r.stop()
            shutil.rmtree(d, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", default="main")
    ap.add_argument("--orders", type=int, default=100000)
    ap.add_argument("--storm", type=int, default=200000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--callgrind", type=int, default=0, metavar="T",
                    help="also count redis-server's instructions per take under callgrind (T takes against T/2)")
    ap.add_argument("--floor", action="store_true", help="the least a take could cost (see above), then stop")
    args = ap.parse_args()
    base = os.environ.get("BENCH_DIR") or None
    if args.floor:
        print(f"# floor: {args.storm} takes, {args.batch} a call, {args.depth} calls in flight, keys of 64 entries; "
              f"redis-server appendonly yes appendfsync always")
        for rnd in range(args.rounds):
            print(f"round {rnd + 1}:")
            floor(args, base)
        return
    if args.callgrind:
        for label, rev in ((f"before ({args.before})", args.before), ("after (working tree)", None)):
            half = args.callgrind // 2
            i0 = instructions(rev, half, args.batch, base)
            i1 = instructions(rev, args.callgrind, args.batch, base)
            print(f"{label}: {(i1 - i0) / (args.callgrind - half):,.0f} instructions per winning take in "
                  f"redis-server (callgrind Ir, user space; {args.callgrind} takes in calls of {args.batch} "
                  f"against {half})", flush=True)
    print(f"# {args.orders} orders (memory), {args.storm} takes (CPU), {args.batch} takes a call, "
          f"{args.depth} calls in flight; redis-server appendonly yes appendfsync always")
    for rnd in range(args.rounds):
        for label, rev in ((f"before ({args.before})", args.before), ("after (working tree)", None)):
            o = measure(rev, args, base)
            print(f"{label}, round {rnd + 1}:")
            print(f"  memory: {o['mem_per_order']:.1f} B per order (used_memory), of which the feed "
                  f"{o['feed_per_order']:.1f} B (MEMORY USAGE sk:feed)")
            for k, (n, b) in o["keys"].items():
                print(f"    {k:<18} {n:>6} keys  {b:6.1f} B per order")
            print(f"  CPU: {o['script_us']:.2f} us per winning take in the script (cmdstat_evalsha usec / takes, "
                  f"{args.storm / o['calls']:.1f} takes a call); {o['proc_us']:.2f} us of redis-server CPU "
                  f"(/proc) per take, {o['sys_us']:.2f} of it in the kernel")
            print("  of which the commands it runs, us per take: " + ", ".join(
                f"{k} {v:.2f}" for k, v in sorted(o["inner"].items(), key=lambda kv: -kv[1]) if v >= 0.01))
            print(f"  ceiling: {o['rate']:,.0f} winning takes/s with redis-server at {o['cpu_share'] * 100:.0f}% "
                  f"of a core; AOF {o['aof_bytes'] / (args.orders + args.storm):.0f} B per take")


if __name__ == "__main__":
    main()
