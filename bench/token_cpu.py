#!/usr/bin/python3
"""seckilld's CPU per take with and without buyer tokens (BENCHMARKS.md, "Buyer tokens").

Starts `seckilld --threads 1` on a sold-out sale (every take is answered 409 sold_out: the path
where a token's check weighs most), sends N takes over keep-alive connections from a few client
threads, and reads the server's user+system CPU from /proc before and after: CPU per take, not
throughput, so the client's own cost (Python) does not count. Configurations: no token (the
user in the body), HS256 (a distinct token per take: nothing cached), ES256 and EdDSA (each token
sent RETRIES times: the first verifies, the retries hit the cache).

    /usr/bin/python3 bench/token_cpu.py [N [RETRIES [ROUNDS]]]     (defaults 40000, 20, 3)
"""

import http.client
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "e2e"))
from jwtmint import KeyPair, claims, hs256, pem_file  # noqa: E402

BIN = os.environ.get("SECKILLD", os.path.join(os.path.dirname(__file__), "..", "build", "seckilld"))
SECRET = b"bench-secret-0123456789abcdef-0123456789"
TICK = os.sysconf("SC_CLK_TCK")


def cpu(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def start(tmp, args):
    p = subprocess.Popen([BIN, "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--threads", "1",
                          "--store", f"sqlite:{tmp}/b{time.monotonic_ns()}.db"] + args,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    ports = {}
    while len(ports) < 2:
        m = re.search(r"listening (public|admin)=[0-9.]+:(\d+)", p.stdout.readline())
        if m:
            ports[m.group(1)] = int(m.group(2))
    c = http.client.HTTPConnection("127.0.0.1", ports["admin"])
    c.request("PUT", "/v1/sales/gone", json.dumps({"stock": 0}), {"Content-Type": "application/json"})
    assert c.getresponse().status == 201
    return p, ports["public"]


def send(port, reqs, threads=4):
    it = iter(reqs)
    lock = threading.Lock()

    def worker():
        c = http.client.HTTPConnection("127.0.0.1", port)
        while True:
            with lock:
                r = next(it, None)
            if r is None:
                return
            body, headers = r
            c.request("POST", "/v1/sales/gone/orders", body, headers)
            resp = c.getresponse()
            resp.read()
            assert resp.status == 409, resp.status

    ts = [threading.Thread(target=worker) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


def measure(tmp, args, reqs):
    p, port = start(tmp, args)
    try:
        send(port, reqs[:2000])  # warm up
        c0 = cpu(p.pid)
        send(port, reqs)
        return (cpu(p.pid) - c0) / len(reqs) * 1e6
    finally:
        p.terminate()
        p.wait()


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 40000
    retries = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    ct = {"Content-Type": "application/json"}
    with tempfile.TemporaryDirectory() as tmp:
        sf = os.path.join(tmp, "secret")
        with open(sf, "wb") as f:
            f.write(SECRET)
        es, ed = KeyPair(tmp, "es", "ES256"), KeyPair(tmp, "ed", "EdDSA")
        pf = pem_file(os.path.join(tmp, "keys.pem"), [("es", es), ("ed", ed)])
        configs = []
        plain = [(json.dumps({"user": f"u{i}"}), ct) for i in range(n)]
        configs.append(("none (body user)", [], plain))
        hs = [("{}", dict(ct, Authorization="Bearer " + hs256(SECRET, claims(f"u{i}")))) for i in range(n)]
        configs.append(("HS256, every token new", ["--buyer-token-secret-file", sf], hs))
        for name, kp in (("ES256", es), ("EdDSA", ed)):
            toks = [kp.sign(claims(f"u{i}"), kid="es" if kp is es else "ed") for i in range(n // retries)]
            reqs = [("{}", dict(ct, Authorization="Bearer " + toks[i % len(toks)])) for i in range(n)]
            configs.append((f"{name}, each token {retries} times", ["--buyer-token-public-key", pf], reqs))
        # rounds, each configuration once a round: a shared machine's noise hits all of them
        runs = {name: [] for name, _, _ in configs}
        for _ in range(rounds):
            for name, args, reqs in configs:
                runs[name].append(measure(tmp, args, reqs))
    print(f"| tokens | seckilld CPU per take, us (least of {rounds}) | median |\n| --- | ---: | ---: |")
    for name, us in runs.items():
        us.sort()
        print(f"| {name} | {us[0]:.1f} | {us[len(us) // 2]:.1f} |")


if __name__ == "__main__":
    main()
