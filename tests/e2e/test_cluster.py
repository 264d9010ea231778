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

from conftest import HOST, RedisCluster, Server, key_slot, metric, resp, storm

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


def used_memory(port):
    """INFO memory's used_memory less mem_total_replication_buffers: the replication backlog
    (repl-backlog-size, 1 MB) fills once with whatever is written, however much that is."""
    info = dict(ln.split(":", 1) for ln in resp(port, "INFO", "memory").split("\r\n") if ":" in ln)
    return int(info["used_memory"]) - int(info["mem_total_replication_buffers"])


@cluster_only
def test_layout_2_memory_per_order(make_server, store):
    """A sale of N orders on a cluster (layout 2, 10-byte users, 11-byte request ids,
    per_user_limit 1) costs its master at most 160 bytes of used_memory an order, the slot's feed
    stream entries included (BENCHMARKS.md, "Cheap takes"): the relay is held off for the
    measurement (sk:{feed} made a string, which its copy refuses before writing anything), so
    that the slot stream keeps every entry, as it does at worst until the relay trims it."""
    n = 20000
    c = store.cluster
    srv = make_server()
    feed_master = c.master_of_slot(key_slot("{feed}"))
    avoid = {feed_master, c.master_of_slot(key_slot("{i}"))}
    s = next(f"mem{i}" for i in range(1000) if c.master_of_slot(key_slot(f"mem{i}")) not in avoid)
    m = c.master_of_slot(key_slot(s))
    srv.put_sale(s, stock=n, per_user_limit=1)
    assert resp(m, "HGET", "sk:{%s}" % s, "b") == str(-(-n // 64))
    resp(feed_master, "SET", "sk:{feed}", "held off by test_layout_2_memory_per_order")
    try:
        time.sleep(0.5)
        before = used_memory(m)
        res = storm(srv.public_port, [("POST", f"/v1/sales/{s}/orders",
                                       {"user": f"u{i:09d}", "request_id": f"r{i:010d}"}) for i in range(n)],
                    threads=32)
        assert collections.Counter(code for code, _ in res) == {201: n}
        time.sleep(0.5)
        after = min(used_memory(m) for _ in range(3))
        feed = next(k for k in resp(m, "KEYS", "sk:slot:{*}:feed") if key_slot(k) == key_slot(s))
        # every order's event still in the slot stream (entries of version 3: a take call's orders each)
        entries = resp(m, "XRANGE", feed, "-", "+")
        assert sum(int(dict(zip(f[::2], f[1::2])).get("n", "1")) for _, f in entries) == n
        per = (after - before) / n
        print(f"\nlayout 2 on a cluster: {per:.1f} B per order ({n} orders, slot feed included)")
        assert per <= 160, per
    finally:
        resp(feed_master, "DEL", "sk:{feed}")


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
    return int(metric(srv, f'seckill_redis_redirects_total{{kind="{kind}"}}'))


def refused(srv, reason):
    """seckill_redis_refused_total{reason=REASON} of /metrics."""
    return int(metric(srv, f'seckill_redis_refused_total{{reason="{reason}"}}'))


def slot_snapshot(slot, ports):
    """Every key of the slot on each node as DUMP gives it: {(port, key): bytes}; the slot's sweep
    list only as its members: a sweep woken early (the earliest hold was confirmed) scores a sale
    again by its next deadline, a write that needs no key of the sale's, legitimately made while
    the slot moves."""
    out = {}
    for p in ports:
        for k in resp(p, "CLUSTER", "GETKEYSINSLOT", slot, 100000):
            if k.startswith("sk:slot:{") and k.endswith(":due"):
                out[(p, k)] = sorted(resp(p, "ZRANGE", k, "0", "-1", asking=True, raw=True))
                continue
            v = resp(p, "DUMP", k, asking=True, raw=True)
            assert not isinstance(v, Exception), (p, k, v)
            out[(p, k)] = v
    return out


def bucket_keys(port, sale):
    return sorted(k for k in resp(port, "KEYS", "sk:{%s}:*" % sale) if k.split(":")[-2] in ("o", "r", "u"))


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
            # layout 2 on a cluster too (docs/redis.md, "Layouts"): 300 units, 5 keys of each kind
            assert resp(c.master_of_slot(key_slot(x)), "HGET", "sk:{%s}" % x, "b") == "5"
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
        # the sale's bucket keys (orders 64 a key, request ids and users over 5 keys each) moved
        # with it: all on the new master, none left on the old
        assert bucket_keys(src, s) == []
        assert len([k for k in bucket_keys(dst, s) if ":o:" in k]) >= 4
        assert len([k for k in bucket_keys(dst, s) if ":r:" in k or ":u:" in k]) == 10
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


def test_half_moved_sale_refuses_whole_scripts(own_cluster, tmp_path):
    """A sale's slot MIGRATING with its users' keys already on the new master (layout 2: keys the
    scripts name themselves, not in KEYS): a take, two cancels and the sweep (held orders past
    their deadline), which all need a user's key, are each refused whole (503, counted as
    TRYAGAIN), every key of the slot on both nodes as it was, because each script touches the
    keys it will use before its first write (common.lua's touch); a confirm, whose keys are all
    still here, succeeds whole. Every key a script declares is made present on the old master,
    so that Redis's own check of KEYS lets the scripts run and the touch is what refuses them.
    Then the migration completes and everything is decided, with exact counts."""
    c = own_cluster
    srv = Server(c.url, str(tmp_path), name="half").start()
    try:
        wait_for(lambda: srv.adm("GET", "/healthz").status == 200, 10, "healthz 200")
        idx = key_slot("{i}")
        s = next(f"hm{i}" for i in range(1000) if key_slot(f"hm{i}") not in (idx, key_slot("{feed}")))
        slot = key_slot(s)
        src = c.master_of_slot(slot)
        dst = next(p for p in c.masters() if p != src)
        srv.put_sale(s, stock=200, per_user_limit=1, hold_seconds=8)
        assert resp(src, "HGET", "sk:{%s}" % s, "b") == "5"  # layout 2: 5 keys of request ids, 5 of users
        orders = [srv.take(s, user=f"u{i}", request_id=f"r{i}") for i in range(100)]
        assert all(r.status == 201 for r in orders), [r for r in orders if r.status != 201][:3]
        ids = [r.body["order"] for r in orders]
        for o in ids[:40]:
            assert srv.adm("POST", f"/v1/sales/{s}/orders/{o}/confirm").status == 200
        assert srv.adm("POST", f"/v1/sales/{s}/orders/{ids[40]}/cancel").status == 200
        # every declared key present on the old master (a stream, as a consumer makes it; the
        # keys of layout 1, unused by a sale of layout 2; a tombstone of a sale never made)
        p = "sk:{%s}" % s
        resp(src, "XGROUP", "CREATE", p + ":stream", "g", "$", "MKSTREAM")
        for k in (p + ":users", p + ":rids", p + ":orders"):
            resp(src, "HSET", k, "~", "0")
        tag = next(k for k in resp(src, "CLUSTER", "GETKEYSINSLOT", slot, 1000) if k.startswith("sk:slot:{"))
        tag = tag[:tag.index("}") + 1]
        resp(src, "HSET", tag + ":tombstones", "~never", "0")
        for k in ("sales", "due", "feed", "tombstones"):
            assert resp(src, "EXISTS", f"{tag}:{k}") == 1, k
        users = [k for k in bucket_keys(src, s) if ":u:" in k]
        assert users and len([k for k in bucket_keys(src, s) if ":o:" in k]) == 2  # ids 1-63, 64-127
        time.sleep(1.0)  # the relay has copied the slot's feed entries (it trims when it copies)

        # the slot in migration, its users' keys on the new master, the rest on the old
        assert resp(dst, "CLUSTER", "SETSLOT", slot, "IMPORTING", node_id(src)) == "OK"
        assert resp(src, "CLUSTER", "SETSLOT", slot, "MIGRATING", node_id(dst)) == "OK"
        assert resp(src, "MIGRATE", HOST, dst, "", 0, 5000, "KEYS", *users) == "OK"
        before = slot_snapshot(slot, [src, dst])
        assert {k for (port, k) in before if port == dst} == set(users)
        n0 = refused(srv, "tryagain")
        r = srv.take(s, user="newbie", request_id="rn")
        assert r.status == 503, r
        assert srv.adm("POST", f"/v1/sales/{s}/orders/{ids[42]}/cancel").status == 503
        assert srv.adm("POST", f"/v1/sales/{s}/orders/{ids[0]}/cancel").status == 503  # a refund
        assert srv.adm("GET", f"/v1/sales/{s}/orders/{ids[43]}").status == 200  # a read: its key is here
        assert refused(srv, "tryagain") >= n0 + 3
        assert slot_snapshot(slot, [src, dst]) == before  # nothing written, on either node
        r = srv.adm("POST", f"/v1/sales/{s}/orders/{ids[41]}/confirm")  # no user's key needed
        assert r.status == 200 and r.body["status"] == "confirmed", r
        before = slot_snapshot(slot, [src, dst])
        # the holds' deadline passes: the sweep tries the slot, and is refused whole too
        n1 = refused(srv, "tryagain")
        deadline = orders[99].body["expires_at"]
        wait_for(lambda: time.time() > deadline + 1 and refused(srv, "tryagain") >= n1 + 1, 30,
                 "the sweep to be refused")
        assert slot_snapshot(slot, [src, dst]) == before  # nothing written, on either node
        assert "non local key" in srv.stderr_tail(20000)

        # the migration completes: everything is decided
        while True:
            keys = resp(src, "CLUSTER", "GETKEYSINSLOT", slot, 100)
            if not keys:
                break
            assert resp(src, "MIGRATE", HOST, dst, "", 0, 5000, "KEYS", *keys) == "OK"
        for port in c.masters():
            resp(port, "CLUSTER", "SETSLOT", slot, "NODE", node_id(dst))
        wait_for(lambda: c.master_of_slot(slot) == dst, 10, "the new map")
        end = time.monotonic() + 20
        while (r := srv.take(s, user="newbie", request_id="rn")).status == 503 and time.monotonic() < end:
            time.sleep(0.1)
        assert r.status == 201 and int(r.body["order"]) == 101, r
        assert srv.adm("POST", f"/v1/sales/{s}/orders/{ids[0]}/cancel").status == 200
        # the holds of 41..99 expired (the sweep, or this very read): units back, users free
        wait_for(lambda: srv.sale(s)["held"] == 1, 20, "the expiries")  # the new take's hold
        g = srv.sale(s)
        assert (g["sold"], g["held"], g["remaining"]) == (40, 1, 159), g
        book = {o["order"]: o for o in srv.orders(s)}
        assert len(book) == 101
        st = collections.Counter(o["status"] for o in book.values())
        assert st == {"confirmed": 40, "cancelled": 2, "expired": 58, "held": 1}, st
        assert book[ids[41]]["status"] == "confirmed" and book[ids[42]]["status"] == "expired"
        assert book[ids[0]]["status"] == "cancelled"
        # the users' units: 1 for each confirmed order and the new hold, none for the rest
        units = {}
        for k in bucket_keys(dst, s):
            if ":u:" in k:
                flat = resp(dst, "HGETALL", k)
                units.update({flat[j]: int(flat[j + 1]) for j in range(0, len(flat), 2)})
        assert units == {**{f"u{i}": 1 for i in (*range(1, 40), 41)}, "newbie": 1}, units
        assert bucket_keys(src, s) == []
        assert srv.adm("GET", "/healthz").status == 200
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
