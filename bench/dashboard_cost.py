#!/usr/bin/python3
"""What an open dashboard costs the server (docs/dashboard.md, "Cost"): N sales, then the CPU time
of seckilld (and of redis-server on the Redis store) over a span with no event stream, with one
and with five streams open; per snapshot: CPU, bytes, and the time GET /v1/sales takes (the same
store request and rendering as one snapshot's list).

    SECKILLD=$PWD/build/seckilld /usr/bin/python3 bench/dashboard_cost.py [sqlite|redis] [N] [SECONDS]

It reuses the e2e suite's process helpers (tests/e2e/conftest.py): seckilld with --threads 2 on
loopback, a throw-away redis-server with appendfsync always."""
import http.client
import os
import socket
import statistics
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "e2e"))
from conftest import HOST, Redis, Server, storm  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def reader(port, stop, stats):
    s = socket.create_connection((HOST, port))
    s.sendall(f"GET /v1/events HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
    s.settimeout(0.2)
    while not stop.is_set():
        try:
            d = s.recv(1 << 20)
        except socket.timeout:
            continue
        if not d:
            break
        stats["bytes"] += len(d)
        stats["msgs"] += d.count(b"data: ")
    s.close()


def span(pids, port, streams, seconds):
    stop, stats = threading.Event(), {"bytes": 0, "msgs": 0}
    ts = [threading.Thread(target=reader, args=(port, stop, stats)) for _ in range(streams)]
    for t in ts:
        t.start()
    time.sleep(1.0)  # past the first snapshot
    c0, b0, m0 = [cpu_s(p) for p in pids], stats["bytes"], stats["msgs"]
    time.sleep(seconds)
    c1, b1, m1 = [cpu_s(p) for p in pids], stats["bytes"], stats["msgs"]
    stop.set()
    for t in ts:
        t.join()
    return [b - a for a, b in zip(c0, c1)], b1 - b0, m1 - m0


def main():
    kind = sys.argv[1] if len(sys.argv) > 1 else "sqlite"
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
    seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 10.0
    with tempfile.TemporaryDirectory() as tmp:
        red = None
        if kind == "redis":
            red = Redis(tmp).start()
            url = red.url
        else:
            url = f"sqlite:{tmp}/seckill.db"
        srv = Server(url, tmp)
        srv.start()
        try:
            res = storm(srv.admin_port, [("PUT", f"/v1/sales/sale-{i:05d}",
                                          {"stock": 1000 + i, "ends_at": 4000000000}) for i in range(n)],
                        threads=16)
            assert all(r[0] == 201 for r in res), res[:3]
            lat = []
            conn = http.client.HTTPConnection(HOST, srv.admin_port)
            for _ in range(20):  # raw: the suite's request() also validates the reply, slowly
                t0 = time.perf_counter()
                conn.request("GET", "/v1/sales")
                r = conn.getresponse()
                body = r.read()
                lat.append((time.perf_counter() - t0) * 1000)
                assert r.status == 200 and body.count(b'"sale":') == n
            conn.close()
            pids = [srv.proc.pid] + ([red.proc.pid] if red else [])
            names = ["seckilld"] + (["redis-server"] if red else [])
            idle, _, _ = span(pids, srv.admin_port, 0, seconds)
            print(f"store={kind} sales={n} span={seconds:.0f}s  GET /v1/sales: median {statistics.median(lat):.1f} ms, "
                  f"max {max(lat):.1f} ms, {len(body):,} bytes")
            print(f"  no stream: " + ", ".join(f"{nm} {c * 1000 / seconds:.1f} ms CPU/s" for nm, c in zip(names, idle)))
            for streams in (1, 5):
                # one stream: one worker lists; five: both workers of --threads 2 do, each for its own
                cpu, nbytes, msgs = span(pids, srv.admin_port, streams, seconds)
                per = max(msgs / streams, 1)  # messages one stream got
                print(f"  {streams} stream(s): {msgs / streams / seconds:.2f} msg/s per stream, "
                      f"{nbytes / max(msgs, 1):,.0f} bytes/msg; " +
                      ", ".join(f"{nm} {c * 1000 / seconds:.1f} ms CPU/s ({(c - i) * 1000 / per:.1f} ms over idle "
                                f"per message of one stream)" for nm, c, i in zip(names, cpu, idle)))
        finally:
            srv.stop()
            if red:
                red.stop()


if __name__ == "__main__":
    main()
