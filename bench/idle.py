#!/usr/bin/python3
"""bench/idle.py: what idle sales cost Redis (issue 16, "Nothing per idle sale").

Starts a redis-server and two seckilld instances (2 threads each) on free loopback ports, makes
SALES sales (half of them with a held order whose deadline is an hour away), then, with nobody
buying, reads Redis's `INFO commandstats` before and after IDLE_SECONDS and prints the calls per
second per instance, by command. Then DUE sales get a held order expiring in 5 s: it prints how
late after its deadline the last of them was swept (its order `expired` in the book) and, for the
whole run, every /healthz answer that was not 200.

    SECKILLD=build/seckilld /usr/bin/python3 bench/idle.py            # 100,000 sales
    SALES=20000 IDLE_SECONDS=10 /usr/bin/python3 bench/idle.py
    CLUSTER=3 /usr/bin/python3 bench/idle.py    # on a Redis Cluster of 3 masters: calls summed over them

Redis runs with appendfsync everysec here: the figure is a count of calls, and 150,000 fsynced
writes would only make the set-up slow."""
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

HOST = "127.0.0.1"
SECKILLD = os.environ.get("SECKILLD", os.path.join(os.path.dirname(__file__), "..", "build", "seckilld"))
SALES = int(os.environ.get("SALES", "100000"))
IDLE = float(os.environ.get("IDLE_SECONDS", "30"))
DUE = int(os.environ.get("DUE", "2000"))
CLUSTER = int(os.environ.get("CLUSTER", "0"))


def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def resp(port, *args):
    with socket.create_connection((HOST, port), timeout=10) as s:
        s.sendall(b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a.encode()), a.encode())
                                                      for a in map(str, args)))
        f = s.makefile("rb")

        def read():
            line = f.readline()
            t, rest = line[:1], line[1:-2]
            if t in (b"+", b"-"):
                return rest.decode()
            if t == b":":
                return int(rest)
            if t == b"$":
                n = int(rest)
                return None if n < 0 else f.read(n + 2)[:-2].decode()
            if t == b"*":
                n = int(rest)
                return None if n < 0 else [read() for _ in range(n)]
            raise OSError(line)
        return read()


def commandstats(ports):
    out = {}
    for port in ports:
        for line in resp(port, "INFO", "commandstats").splitlines():
            if line.startswith("cmdstat_"):
                name, rest = line[8:].split(":", 1)
                out[name] = out.get(name, 0) + int(dict(kv.split("=") for kv in rest.split(","))["calls"])
    return out


def parallel(port, reqs, threads=16):
    """Sends [(method, path, body)] over keep-alive connections; returns the statuses."""
    it = iter(range(len(reqs)))
    lock = threading.Lock()
    status = [None] * len(reqs)

    def worker():
        c = http.client.HTTPConnection(HOST, port, timeout=30)
        while True:
            with lock:
                i = next(it, None)
            if i is None:
                break
            m, p, b = reqs[i]
            c.request(m, p, json.dumps(b), {"content-type": "application/json"})
            r = c.getresponse()
            r.read()
            status[i] = r.status
        c.close()
    ts = [threading.Thread(target=worker) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return status


def start_seckilld(url, workdir, name):
    err = open(os.path.join(workdir, f"{name}.stderr"), "wb")
    p = subprocess.Popen([SECKILLD, "--listen", f"{HOST}:0", "--admin-listen", f"{HOST}:0", "--store", url,
                          "--threads", "2"], stdout=subprocess.PIPE, stderr=err)
    ports = {}
    for raw in p.stdout:
        line = raw.decode()
        for kind in ("public", "admin"):
            key = f"listening {kind}="
            if key in line:
                ports[kind] = int(line.split(key)[1].split()[0].rsplit(":", 1)[1])
        if len(ports) == 2:
            break
    threading.Thread(target=lambda: [None for _ in p.stdout], daemon=True).start()
    return p, ports["public"], ports["admin"]


def main():
    work = tempfile.mkdtemp(prefix="sk-idle-")
    procs = []
    cluster = None
    try:
        if CLUSTER:
            sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "e2e"))
            import conftest  # the e2e suite's RedisCluster
            cluster = conftest.RedisCluster(work, masters=CLUSTER, replicas=0).start()
            masters = sorted(cluster.masters())
            url = cluster.url

            def node_of(sale):
                return cluster.master_of_slot(conftest.key_slot(sale))
        else:
            rport = free_port()
            procs.append(subprocess.Popen(["redis-server", "--port", str(rport), "--bind", HOST, "--save", "",
                                           "--appendonly", "yes", "--appendfsync", "everysec", "--dir", work,
                                           "--logfile", os.path.join(work, "redis.log")]))
            while True:
                try:
                    if resp(rport, "PING") == "PONG":
                        break
                except OSError:
                    time.sleep(0.05)
            masters = [rport]
            url = f"redis://{HOST}:{rport}"

            def node_of(sale):
                return rport
        insts = [start_seckilld(url, work, f"seckilld{i}") for i in range(2)]
        procs += [p for p, _, _ in insts]
        (_, pub, adm) = insts[0]
        t0 = time.monotonic()
        st = parallel(adm, [("PUT", f"/v1/sales/s{i}", {"stock": 10, "hold_seconds": 3600 if i % 2 else 0})
                            for i in range(SALES)])
        assert all(s == 201 for s in st), set(st)
        st = parallel(pub, [("POST", f"/v1/sales/s{i}/orders", {"user": "u"}) for i in range(1, SALES, 2)])
        assert all(s == 201 for s in st), set(st)
        print(f"set-up: {SALES} sales, {SALES // 2} held orders in {time.monotonic() - t0:.1f} s", flush=True)

        bad = []
        stop = threading.Event()

        def health():
            while not stop.is_set():
                for _, _, a in insts:
                    c = http.client.HTTPConnection(HOST, a, timeout=5)
                    c.request("GET", "/healthz")
                    r = c.getresponse()
                    r.read()
                    if r.status != 200:
                        bad.append((time.time(), a, r.status))
                    c.close()
                time.sleep(0.1)
        ht = threading.Thread(target=health)
        ht.start()

        time.sleep(2)  # the set-up's last answers and sweeps
        before, t1 = commandstats(masters), time.monotonic()
        time.sleep(IDLE)
        after, t2 = commandstats(masters), time.monotonic()
        secs = t2 - t1
        delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
        delta["info"] = delta.get("info", 0) - len(masters)  # our own INFO
        delta = {k: v for k, v in delta.items() if v > 0}
        total = sum(delta.values())
        print(f"idle {secs:.1f} s, 2 instances x 2 threads, {len(masters)} Redis master(s): {total} calls = {total / secs:.1f}/s = "
              f"{total / secs / 2:.1f}/s per instance", flush=True)
        for k, v in sorted(delta.items(), key=lambda kv: -kv[1]):
            print(f"  {k:<20} {v:>7} {v / secs / 2:8.2f}/s per instance")

        # deadlines: DUE new held orders, 5 s
        now = int(resp(masters[0], "TIME")[0])
        parallel(adm, [("PUT", f"/v1/sales/d{i}", {"stock": 1, "hold_seconds": 5}) for i in range(DUE)])
        for i in range(DUE):  # the sales' own streams, which time the expiries below (docs/redis.md)
            resp(node_of(f"d{i}"), "XGROUP", "CREATE", "sk:{d%d}:stream" % i, "g", "$", "MKSTREAM")

        def order1(i):
            """order 1 of sale d<i> as stored: layout 2 (a single Redis) or 1 (a cluster)"""
            return (resp(node_of(f"d{i}"), "HGET", "sk:{d%d}:o:0" % i, "1")
                    or resp(node_of(f"d{i}"), "HGET", "sk:{d%d}:orders" % i, "1"))
        st = parallel(pub, [("POST", f"/v1/sales/d{i}/orders", {"user": "u"}) for i in range(DUE)])
        assert all(s == 201 for s in st), set(st)
        exp = max(int(order1(i).split("\t")[3])
                  for i in range(DUE))
        left = set(range(DUE))
        while left:
            left = {i for i in left
                    if order1(i).split("\t")[0] not in ("expired", "e")}
            if left:
                time.sleep(0.02)
        # how late each expiry was recorded: its stream entry's id is Redis's clock (ms) then
        lates = []
        for i in range(DUE):
            entry = resp(node_of(f"d{i}"), "XREVRANGE", "sk:{d%d}:stream" % i, "+", "-", "COUNT", 1)[0]
            assert entry[1][1] == "expired", entry
            due = int(order1(i).split("\t")[3])
            lates.append(int(entry[0].split("-")[0]) / 1000 - due)
        lates.sort()
        print(f"deadlines: {DUE} holds taken at {now}, the last due at {exp}: expiry "
              f"recorded after the deadline by {lates[0]:.3f} s (min), {lates[len(lates) // 2]:.3f} s (median), "
              f"{lates[-1]:.3f} s (max); none early: {lates[0] >= 0}", flush=True)
        stop.set()
        ht.join()
        print(f"/healthz answers other than 200 during the run: {len(bad)} {bad[:5]}")
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        if cluster is not None:
            cluster.stop()


if __name__ == "__main__":
    sys.exit(main())
