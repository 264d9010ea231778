"""Redis Cluster (issue 16): what only a cluster can show. The whole store suite also runs against
a cluster (the `redis-cluster` store of conftest.py); here: storms over sales on every master, a
slot moved to another master in the middle of a storm, the kill -9 of a master with
--redis-min-replicas 1 (both with the merged winners feed checked against the books), and the
key layout (every script touches one slot).

The destructive tests share one cluster of their own (module scope), in this order: the
migration moves one slot, the failover kills one master last."""
import collections
import threading
import time

import pytest

from conftest import HOST, RedisCluster, Server, key_slot, resp, storm

cluster_only = pytest.mark.parametrize("store", ["redis-cluster"], indirect=True)


def wait_for(cond, timeout, what):
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def take_reqs(s, bodies):
    return [("POST", f"/v1/sales/{s}/orders", b) for b in bodies]


def sales_on_every_master(cluster, n, prefix):
    """n sale ids spread over every master (round robin over the masters)."""
    masters = sorted(cluster.masters())
    by = {m: [] for m in masters}
    i = 0
    while min(len(v) for v in by.values()) * len(masters) < n:
        s = f"{prefix}{i}"
        by[cluster.master_of_slot(key_slot(s))].append(s)
        i += 1
    out = []
    for k in range(n):
        out.append(by[masters[k % len(masters)]][k // len(masters)])
    return out


def settle(srv, results, bodies_of, timeout=60):
    """Retries every request whose outcome is unknown (503, a socket error) with its request_id
    until it is decided; returns {request_id: (status, body)} of every decision."""
    decided = {}
    retry = []
    for (code, body), (sale, b) in zip(results, bodies_of):
        if code in (200, 201, 409):
            decided[b["request_id"]] = (code, body, sale)
        else:
            assert code == 503 or code == "error", (code, body)
            retry.append((sale, b))
    deadline = time.monotonic() + timeout
    last = None
    while retry:
        assert time.monotonic() < deadline, \
            (f"{len(retry)} takes never decided", collections.Counter(x for x, _ in retry), last,
             srv.adm("GET", "/healthz").status)
        left = []
        for sale, b in retry:
            r = srv.take(sale, **b)
            if r.status in (200, 201, 409):
                decided[b["request_id"]] = (r.status, r.body, sale)
            else:
                assert r.status == 503, r
                left.append((sale, b))
                last = r
        retry = left
        if retry:
            time.sleep(0.1)
    return decided


def check_books(srv, sales, stock, acked):
    """Every sale sold exactly its stock, no unit twice, and every acknowledged (201) order is in
    the book as acknowledged."""
    for s in sales:
        g = srv.sale(s)
        book = srv.orders(s)
        assert (g["sold"], g["held"], g["remaining"]) == (stock, 0, 0), (s, g)
        assert sum(o["qty"] for o in book) == stock, (s, len(book))
        assert sorted(int(o["order"]) for o in book) == list(range(1, len(book) + 1)), s
        assert len({o["request_id"] for o in book}) == len(book), s
        by_id = {o["order"]: o for o in book}
        for body in acked.get(s, []):
            assert by_id.get(body["order"]) == body, (s, body, by_id.get(body["order"]))


@cluster_only
def test_storm_over_every_master_is_exact(make_server, store):
    """30 sales over the 3 masters, 2 instances, 64 buyers each: exact counts everywhere."""
    a, b = make_server(), make_server()
    sales = sales_on_every_master(store.cluster, 30, "st")
    assert len({store.cluster.master_of_slot(key_slot(s)) for s in sales}) == 3
    for s in sales:
        a.put_sale(s, stock=20, per_user_limit=1)
    bodies = [(s, {"user": f"u{i}", "request_id": f"{s}-{i}"}) for i in range(40) for s in sales]
    half = len(bodies) // 2
    out = {}

    def run(name, srv, part):
        out[name] = storm(srv.public_port, [("POST", f"/v1/sales/{s}/orders", body) for s, body in part],
                          threads=32)

    ts = [threading.Thread(target=run, args=("a", a, bodies[:half])),
          threading.Thread(target=run, args=("b", b, bodies[half:]))]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
    res = out["a"] + out["b"]
    assert collections.Counter(c for c, _ in res) == {201: 600, 409: 600}
    acked = collections.defaultdict(list)
    for c, body in res:
        if c == 201:
            acked[body["sale"]].append(body)
    assert all(len(acked[s]) == 20 for s in sales)
    check_books(a, sales, 20, acked)
    listed = {x["sale"] for x in b.adm("GET", "/v1/sales").body["sales"]}
    assert listed == set(sales)


@cluster_only
def test_every_script_touches_one_slot(make_server, store):
    """The keys a sale's life makes are in its slot, or in its slot's own keys (the winners feed
    too: a stream per slot), or in the index."""
    srv = make_server()
    sales = sales_on_every_master(store.cluster, 6, "ks")
    for s in sales:
        srv.put_sale(s, stock=3, hold_seconds=30)
        assert srv.take(s, user="u", request_id="r").status == 201
    srv.put_sale("gone", stock=1, ends_at=int(time.time()) + 1)
    wait_for(lambda: srv.adm("DELETE", "/v1/sales/gone").status == 200, 10, "the delete")
    keys = []
    for port in store.cluster.masters():
        keys += resp(port, "KEYS", "sk:*")
    for k in keys:
        if k.startswith("sk:idx:{i}:"):
            continue
        if k.startswith("sk:slot:{"):
            tag = k[len("sk:slot:{"):k.index("}")]
            assert k.endswith((":sales", ":due", ":tombstones", ":feed", ":relayed")), k
            assert any(key_slot(s) == key_slot("{%s}" % tag) for s in sales + ["gone"]), k
        else:
            assert k.startswith("sk:{"), k
    assert {k for k in keys if k.startswith("sk:idx:")} >= {"sk:idx:{i}:slots", "sk:idx:{i}:due",
                                                              "sk:idx:{i}:ver"}
    assert srv.adm("GET", "/healthz").status == 200


# --------------------------------------------------------------------------------------------
# a cluster of our own: a slot migrated, a master killed


def check_feed(srv, sales, stock):
    """The merged winners feed (the relay's, docs/redis.md) holds each sale's orders once, each
    created event in the order of the sale, as the book has them."""
    def read():
        evs, after = [], "0-0"
        while True:
            r = srv.adm("GET", f"/v1/orders?after={after}&limit=1000")
            assert r.status == 200, r
            evs += r.body["events"]
            after = r.body["cursor"]
            if not r.body["more"]:
                break
        per = {s: [(e["order"], e["user"]) for e in evs if e["sale"] == s and e["event"] == "created"]
               for s in sales}
        return per if all(len(v) >= stock for v in per.values()) else None

    per = wait_for(read, 30, "every order in the merged feed")
    for s in sales:
        book = {o["order"]: o["user"] for o in srv.orders(s)}
        assert per[s] == sorted(book.items(), key=lambda kv: int(kv[0])), s


@pytest.fixture(scope="module")
def own_cluster(tmp_path_factory):
    c = RedisCluster(str(tmp_path_factory.mktemp("own")), node_timeout=1000).start()
    try:
        yield c
    finally:
        c.stop()


def node_id(port):
    return resp(port, "CLUSTER", "MYID")


def migrate_slot(cluster, slot, src, dst):
    """CLUSTER SETSLOT IMPORTING/MIGRATING, MIGRATE of its keys in batches, SETSLOT NODE."""
    sid, did = node_id(src), node_id(dst)
    assert resp(dst, "CLUSTER", "SETSLOT", slot, "IMPORTING", sid) == "OK"
    assert resp(src, "CLUSTER", "SETSLOT", slot, "MIGRATING", did) == "OK"
    moved = 0
    while True:
        keys = resp(src, "CLUSTER", "GETKEYSINSLOT", slot, 3)
        if not keys:
            break
        r = resp(src, "MIGRATE", HOST, dst, "", 0, 5000, "KEYS", *keys)
        assert r == "OK" or r == "NOKEY", r
        moved += len(keys)
        time.sleep(0.05)  # takes run between the batches: some keys here, some there
    for p in cluster.masters():
        resp(p, "CLUSTER", "SETSLOT", slot, "NODE", did)
    return moved


def redirects(srv, kind):
    """seckill_redis_redirects_total{kind=KIND} of /metrics."""
    r = srv.adm("GET", "/metrics")
    assert r.status == 200, r
    for ln in r.body.split("\n"):
        if ln.startswith(f'seckill_redis_redirects_total{{kind="{kind}"}} '):
            return int(float(ln.split()[1]))
    raise AssertionError(f"no redirects line for {kind}")


def test_slot_migrated_mid_storm(own_cluster, tmp_path):
    """A slot moved (SETSLOT MIGRATING/IMPORTING, MIGRATE in batches) while a storm runs on it:
    every acknowledged order is in the book once, nothing sold twice, and the ASK path ran (a
    take sent to the old master while the slot was moving went again, after ASKING, to the new)."""
    c = own_cluster
    srv = Server(c.url, str(tmp_path), name="mig").start()
    try:
        wait_for(lambda: srv.adm("GET", "/healthz").status == 200, 10, "healthz 200")
        assert redirects(srv, "ask") == 0
        sales = sales_on_every_master(c, 6, "mg")
        s = sales[0]
        slot = key_slot(s)
        src = c.master_of_slot(slot)
        dst = next(p for p in c.masters() if p != src)
        for x in sales:
            srv.put_sale(x, stock=300, per_user_limit=1)
        bodies_of = [(x, {"user": f"u{i}", "request_id": f"{x}-{i}"}) for i in range(400) for x in sales]
        results = [None] * len(bodies_of)
        moved = {}

        def mover():
            wait_for(lambda: sum(1 for r in results if r is not None) >= 300, 60, "the storm to start")
            moved["keys"] = migrate_slot(c, slot, src, dst)
            moved["done_at"] = sum(1 for r in results if r is not None)

        t = threading.Thread(target=mover)
        t.start()
        storm(srv.public_port, [("POST", f"/v1/sales/{x}/orders", b) for x, b in bodies_of], threads=16,
              results=results)
        t.join(60)
        assert moved["keys"] >= 5 and moved["done_at"] < len(bodies_of), moved  # mid-storm indeed
        assert c.master_of_slot(slot) == dst
        decided = settle(srv, results, bodies_of)
        acked = collections.defaultdict(list)
        for code, body, sale in decided.values():
            if code in (200, 201):
                acked[sale].append(body)
        assert all(len(acked[x]) == 300 for x in sales), {x: len(acked[x]) for x in sales}
        check_books(srv, sales, 300, acked)
        check_feed(srv, sales, 300)  # the moved slot's feed stream moved with it
        assert srv.adm("GET", "/healthz").status == 200
        assert redirects(srv, "ask") >= 1
    finally:
        srv.stop()


def test_master_killed_loses_nothing_acknowledged(own_cluster, tmp_path):
    """kill -9 of a master with --redis-min-replicas 1: its replica takes over; every 201 given
    before, during and after is in the book, nothing sold twice; /healthz 503 while its slots
    have no master (and while the new master has no replica), 200 once it has one again."""
    c = own_cluster
    srv = Server(c.url, str(tmp_path), ["--redis-min-replicas", "1"], name="fo").start()
    try:
        wait_for(lambda: srv.adm("GET", "/healthz").status == 200, 10, "healthz 200")
        sales = sales_on_every_master(c, 6, "fo")
        victim = c.master_of_slot(key_slot(sales[0]))
        for x in sales:
            srv.put_sale(x, stock=200, per_user_limit=1)
        bodies_of = [(x, {"user": f"u{i}", "request_id": f"{x}-{i}"}) for i in range(300) for x in sales]
        results = [None] * len(bodies_of)
        seen = {}

        def killer():
            wait_for(lambda: sum(1 for r in results if r is not None and r[0] == 201) >= 200, 60, "201s")
            c.nodes[victim].kill()
            c.nodes[victim].wait(5)
            seen["503"] = wait_for(lambda: srv.adm("GET", "/healthz").status == 503, 10, "healthz 503")
            wait_for(lambda: victim not in c.masters(), 30, "the replica's promotion")
            c.wait_ok(timeout=30)
            seen["promoted"] = True

        t = threading.Thread(target=killer)
        t.start()
        storm(srv.public_port, [("POST", f"/v1/sales/{x}/orders", b) for x, b in bodies_of], threads=16,
              results=results)
        t.join(90)
        assert seen.get("503"), seen
        # the promoted replica has no replica of its own: its writes wait for the old master to
        # come back as its replica (WAIT 1); restarted from this thread (the node dies with the
        # thread that started it)
        assert srv.adm("GET", "/healthz").status == 503
        c.restart(victim)
        wait_for(lambda: "master_link_status:up" in resp(victim, "INFO", "replication"), 30,
                 "the old master to come back as a replica")
        wait_for(lambda: srv.adm("GET", "/healthz").status == 200, 30, "healthz 200")
        assert seen["promoted"] and victim not in c.masters()
        decided = settle(srv, results, bodies_of)
        first = {}
        for (code, body), (x, b) in zip(results, bodies_of):
            if code == 201:
                first[b["request_id"]] = body
        acked = collections.defaultdict(list)
        for rid, (code, body, sale) in decided.items():
            if code in (200, 201):
                acked[sale].append(body)
                if rid in first:  # a 201 of the storm: the same order, never lost
                    assert first[rid] == body, (first[rid], body)
        assert all(len(acked[x]) == 200 for x in sales)
        check_books(srv, sales, 200, acked)
        check_feed(srv, sales, 200)  # no event of an order the failover lost, none twice
    finally:
        srv.stop()
