"""Restarts and crashes: nothing acknowledged is lost, nothing is decided twice, order ids are
never reused. kill -9 storms run on the embedded (sqlite) store; plain restarts on both."""

import collections
import threading
import time

import pytest

from conftest import storm

sqlite_only = pytest.mark.parametrize("store", ["sqlite"], indirect=True)


def snapshot(srv, sales):
    return ({s: srv.sale(s) for s in sales}, {s: srv.orders(s) for s in sales},
            sorted(srv.adm("GET", "/v1/sales").body["sales"], key=lambda x: x["sale"]))


def test_plain_restart_keeps_everything(make_server, sale_id):
    srv = make_server()
    a, b = sale_id(), sale_id()
    srv.put_sale(a, stock=10, per_user_limit=2)
    srv.put_sale(b, stock=3, starts_at=int(time.time()) - 10, ends_at=int(time.time()) + 3600)
    made = [srv.take(a, user=f"u{i % 3}", request_id=f"r{i}") for i in range(5)]
    assert [r.status for r in made] == [201] * 5
    assert srv.take(b, qty=3).status == 201
    x = srv.adm("POST", f"/v1/sales/{a}/orders/{made[1].body['order']}/cancel")
    assert x.status == 200 and x.body["status"] == "cancelled"
    before = snapshot(srv, [a, b])
    assert before[0][a]["sold"] == 4
    srv.restart()
    after = snapshot(srv, [a, b])
    assert after == before
    # replays answer the same orders, from the durable record
    for i, r in enumerate(made):
        if i == 1:
            continue
        rr = srv.take(a, user=f"u{i % 3}", request_id=f"r{i}")
        assert rr.status == 200 and rr.body == r.body, rr
    # allowances survived: u0 already has 2 (orders 0 and 3)
    assert srv.take(a, user="u0").status == 409
    # order ids continue increasing, never reused
    top = max(int(o["order"]) for o in before[1][a])
    n = srv.take(a, user="fresh")
    assert n.status == 201 and int(n.body["order"]) > top, n
    assert srv.take(b).body["error"] == "sold_out"
    srv.restart()
    n2 = srv.take(a, user="fresh2")
    assert n2.status == 201 and int(n2.body["order"]) > int(n.body["order"]), n2
    assert srv.sale(a)["sold"] == 6


def test_kill9_after_acks(make_server, sale_id):
    srv = make_server()
    s = sale_id()
    srv.put_sale(s, stock=50, per_user_limit=1)
    acked = [srv.take(s, user=f"u{i}", request_id=f"r{i}") for i in range(12)]
    assert all(r.status == 201 for r in acked)
    srv.kill()
    srv.start()
    lst = srv.orders(s)
    assert lst == [r.body for r in acked]
    assert srv.sale(s)["sold"] == 12
    n = srv.take(s, user="after")
    assert n.status == 201 and int(n.body["order"]) > int(acked[-1].body["order"])


@sqlite_only
def test_kill9_during_storm(make_server, sale_id):
    srv = make_server()
    s = sale_id()
    stock = 300
    srv.put_sale(s, stock=stock, per_user_limit=1)
    n = 1500
    bodies = [{"user": f"u{i}", "qty": 1, "request_id": f"k{i}"} for i in range(n)]
    reqs = [("POST", f"/v1/sales/{s}/orders", b) for b in bodies]
    results = [None] * n
    killed = threading.Event()

    def killer():
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if sum(1 for r in results if r is not None and r[0] == 201) >= 80:
                break
            time.sleep(0.002)
        srv.kill()
        killed.set()

    k = threading.Thread(target=killer, daemon=True)
    k.start()
    storm(srv.public_port, reqs, threads=64, results=results)
    k.join(40)
    assert killed.is_set()
    acked = {bodies[i]["request_id"]: r[1] for i, r in enumerate(results) if r[0] in (200, 201)}
    unanswered = [i for i, r in enumerate(results) if r[0] == "error"]
    for i, r in enumerate(results):
        assert r[0] in (201, 409, "error"), r
        if r[0] == 409:
            assert r[1]["error"] == "sold_out", r
    assert len(acked) >= 80

    srv.start()  # same database file, new ports
    lst = srv.orders(s)
    ids = [o["order"] for o in lst]
    assert len(ids) == len(set(ids)), "an order id appears twice"
    by_rid = {o["request_id"]: o for o in lst}
    assert len(by_rid) == len(lst), "a request id was recorded twice"
    assert len({o["user"] for o in lst}) == len(lst), "a user with limit 1 has two orders"
    for rid, body in acked.items():
        assert by_rid.get(rid) == body, f"acknowledged order {body} lost or changed: {by_rid.get(rid)}"
    sale = srv.sale(s)
    assert sale["sold"] == sum(o["qty"] for o in lst) == len(lst), (sale, len(lst))
    assert sale["sold"] <= stock
    assert sale["remaining"] == stock - sale["sold"]

    # retry every request that got no answer: each is decided exactly once
    top = max((int(i) for i in ids), default=0)
    first = {}
    for i in unanswered:
        b = bodies[i]
        r = srv.take(s, **b)
        if b["request_id"] in by_rid:
            assert r.status == 200 and r.body == by_rid[b["request_id"]], (b, r)
        else:
            assert r.status in (201, 409), (b, r)
            if r.status == 201:
                assert int(r.body["order"]) > top, ("order id reused after the crash", r.body)
            else:
                assert r.body["error"] == "sold_out", r
        first[b["request_id"]] = (r.status, r.body)
    for i in unanswered:  # and again: the same answers, nothing new taken
        b = bodies[i]
        r = srv.take(s, **b)
        st, body = first[b["request_id"]]
        if st in (200, 201):
            assert r.status == 200 and r.body == body, (b, r)
        else:
            assert r.status == 409 and r.body["error"] == "sold_out", (b, r)
    lst2 = srv.orders(s)
    assert len({o["request_id"] for o in lst2}) == len(lst2)
    sale = srv.sale(s)
    assert sale["sold"] == len(lst2) <= stock
    want = len(lst) + sum(1 for st, _ in first.values() if st == 201)
    assert len(lst2) == want
    if sale["sold"] < stock:
        # nothing is left unsold by mistake: the rest can still be taken
        r = srv.take(s, user="rest", qty=1)
        assert r.status == 201, r


@sqlite_only
def test_kill9_twice_ids_never_reused(make_server, sale_id):
    srv = make_server()
    s = sale_id()
    srv.put_sale(s, stock=10000)
    seen = []
    for round_ in range(3):
        res = storm(srv.public_port, [("POST", f"/v1/sales/{s}/orders", {"user": f"r{round_}"})] * 150,
                    threads=16)
        got = [b for c, b in res if c == 201]
        assert len(got) == 150
        seen += got
        srv.kill()
        srv.start()
    lst = srv.orders(s)
    assert collections.Counter(o["order"] for o in lst).most_common(1)[0][1] == 1
    assert {o["order"] for o in lst} == {o["order"] for o in seen}
    assert srv.sale(s)["sold"] == 450
    n = srv.take(s, user="z")
    assert n.status == 201 and int(n.body["order"]) > max(int(o["order"]) for o in seen)


@pytest.mark.parametrize("store", ["redis"], indirect=True)
def test_redis_kill9_during_storm(make_server, store, sale_id):
    """Redis with appendfsync always dies mid-storm: acknowledged orders survive, the rest answer
    503 or nothing, and retries with the same request ids are decided exactly once."""
    srv = make_server()
    s = sale_id()
    stock = 300
    srv.put_sale(s, stock=stock, per_user_limit=1)
    n = 1200
    bodies = [{"user": f"u{i}", "request_id": f"k{i}"} for i in range(n)]
    results = [None] * n

    def killer():
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if sum(1 for r in results if r is not None and r[0] == 201) >= 60:
                break
            time.sleep(0.002)
        store.redis.proc.kill()
        store.redis.proc.wait(5)

    k = threading.Thread(target=killer, daemon=True)
    k.start()
    storm(srv.public_port, [("POST", f"/v1/sales/{s}/orders", b) for b in bodies], threads=64,
          results=results)
    k.join(40)
    for r in results:
        assert r[0] in (201, 409, 503, "error"), r
        if r[0] == 503:
            assert r[1]["error"] == "unavailable", r
    acked = {bodies[i]["request_id"]: r[1] for i, r in enumerate(results) if r[0] == 201}
    unknown = [i for i, r in enumerate(results) if r[0] in (503, "error")]
    store.redis.restart_same_port()
    t0 = time.monotonic()
    while srv.pub("GET", "/healthz").status != 200:
        assert time.monotonic() - t0 < 6, "healthz not back within 5 s of Redis's return"
        time.sleep(0.1)
    lst = srv.orders(s)
    by_rid = {o["request_id"]: o for o in lst}
    assert len(by_rid) == len(lst) == len({o["order"] for o in lst})
    for rid, body in acked.items():
        assert by_rid.get(rid) == body, f"acknowledged order lost: {body}"
    assert srv.sale(s)["sold"] == len(lst) <= stock
    for i in unknown:
        b = bodies[i]
        r = srv.take(s, **b)
        if b["request_id"] in by_rid:
            assert r.status == 200 and r.body == by_rid[b["request_id"]], (b, r)
        else:
            assert r.status in (201, 409), (b, r)
    lst2 = srv.orders(s)
    assert len({o["request_id"] for o in lst2}) == len(lst2)
    assert srv.sale(s)["sold"] == len(lst2) <= stock
