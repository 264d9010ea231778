#!/usr/bin/python3
"""bench/feed.py: a follower of the winners feed (GET /v1/orders?wait=) through a storm of N
orders (default 100,000) taken with ab over 64 keep-alive connections. Prints how many events the
follower saw, whether each order was seen exactly once and in order, the storm's rate, and the
follower's lag at the end: from the storm's last answer to the follower holding the last event.

Usage: bench/feed.py [sqlite|redis|redis-cluster] [N]
Env:   SECKILLD (default build/seckilld), REDIS_SERVER (default /usr/bin/redis-server)
Needs: ab (apache2-utils); redis-server for the Redis stores (appendonly yes, appendfsync always);
       redis-cli too for redis-cluster (3 masters, no replicas, made by the e2e suite's RedisCluster:
       the follower reads the merged feed that the relay fills, docs/redis.md).
"""
import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

STORE = sys.argv[1] if len(sys.argv) > 1 else "sqlite"
N = int(sys.argv[2]) if len(sys.argv) > 2 else 100000
BIN = os.environ.get("SECKILLD", "build/seckilld")
REDIS = os.environ.get("REDIS_SERVER", "/usr/bin/redis-server")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(conn, method, path, body=None):
    conn.request(method, path, body=json.dumps(body) if body is not None else None,
                 headers={"Content-Type": "application/json"} if body is not None else {})
    r = conn.getresponse()
    return r.status, json.loads(r.read() or b"null")


def main():
    if shutil.which("ab") is None:
        sys.exit("bench/feed.py: needs ab (apache2-utils)")
    d = tempfile.mkdtemp(prefix="seckill-feed.")
    procs = []
    cluster = None
    try:
        if STORE == "redis-cluster":
            sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "e2e"))
            import conftest  # the e2e suite's RedisCluster
            cluster = conftest.RedisCluster(d, masters=3, replicas=0).start()
            url = cluster.url
        elif STORE == "redis":
            port = free_port()
            procs.append(subprocess.Popen([REDIS, "--port", str(port), "--bind", "127.0.0.1", "--dir", d,
                                           "--appendonly", "yes", "--appendfsync", "always", "--save", ""],
                                          stdout=subprocess.DEVNULL))
            for _ in range(100):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    time.sleep(0.1)
            url = f"redis://127.0.0.1:{port}"
        else:
            url = f"sqlite:{d}/book.db"
        out = open(f"{d}/out", "w+")
        procs.append(subprocess.Popen([BIN, "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--store", url,
                                       "--threads", "2"], stdout=out, stderr=open(f"{d}/err", "w")))
        pub = adm = None
        for _ in range(300):
            text = open(f"{d}/out").read()
            m1, m2 = re.search(r"listening public=\S*:(\d+)", text), re.search(r"listening admin=\S*:(\d+)", text)
            if m1 and m2:
                pub, adm = int(m1.group(1)), int(m2.group(1))
                break
            time.sleep(0.1)
        if adm is None:
            sys.exit("seckilld did not start: " + open(f"{d}/err").read()[-2000:])
        conn = http.client.HTTPConnection("127.0.0.1", adm, timeout=30)
        assert call(conn, "PUT", "/v1/sales/storm", {"stock": N})[0] == 201
        st, page = call(conn, "GET", "/v1/orders?limit=1")
        start = page["cursor"]

        seen = []  # (order id, monotonic time the follower had it)
        stop = threading.Event()

        def follower():
            c = http.client.HTTPConnection("127.0.0.1", adm, timeout=90)
            after = start
            while not stop.is_set():
                st, p = call(c, "GET", f"/v1/orders?after={after}&limit=1000&wait=10")
                assert st == 200, (st, p)
                now = time.monotonic()
                seen.extend((int(e["order"]), now) for e in p["events"])
                after = p["cursor"]

        th = threading.Thread(target=follower, daemon=True)
        th.start()
        body = f"{d}/body.json"
        open(body, "w").write("{}")
        t0 = time.monotonic()
        ab = subprocess.run(["ab", "-q", "-k", "-n", str(N), "-c", "64", "-p", body, "-T", "application/json",
                             f"http://127.0.0.1:{pub}/v1/sales/storm/orders"], capture_output=True, text=True)
        t_end = time.monotonic()
        failed = re.search(r"Non-2xx responses:\s+(\d+)", ab.stdout)
        deadline = time.monotonic() + 60
        while len(seen) < N and time.monotonic() < deadline:
            time.sleep(0.005)
        t_last = seen[-1][1] if seen else float("nan")
        time.sleep(1.0)  # anything more would be a duplicate
        stop.set()
        ids = [i for i, _ in seen]
        conn.close()  # idle through the storm: the server may have closed it
        sold = call(http.client.HTTPConnection("127.0.0.1", adm, timeout=30), "GET", "/v1/sales/storm")[1]["sold"]
        print(f"store={STORE} orders={N} sold={sold} ab_non2xx={failed.group(1) if failed else 0}")
        print(f"storm: {t_end - t0:.2f} s, {N / (t_end - t0):.0f} orders/s (ab -k -c 64, 2 worker threads)")
        print(f"follower: events={len(ids)} distinct={len(set(ids))} in_order={ids == sorted(ids)} "
              f"exactly_once={sorted(ids) == list(range(1, N + 1))}")
        print(f"lag at the end: {max(0.0, t_last - t_end) * 1000:.0f} ms (last answer of the storm -> last event "
              f"at the follower)")
        if STORE == "redis-cluster":  # the relay's own report of entries lost before it copied them
            print(f"relay gaps logged: {open(f'{d}/err').read().count('event=feed_relay_gap')}")
        ok = sorted(ids) == list(range(1, N + 1)) and ids == sorted(ids) and t_last - t_end < 1.0
        sys.exit(0 if ok else 1)
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
