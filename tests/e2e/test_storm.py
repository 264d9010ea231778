"""Concurrent storms with exact counts, against both stores."""

import collections
import os
import re
import subprocess
import threading

import pytest

from conftest import HOST, storm


def take_reqs(s, bodies):
    return [("POST", f"/v1/sales/{s}/orders", b) for b in bodies]


def check_listing_matches(srv, s, wins):
    """The order listing holds exactly the winning orders, with the same bodies."""
    lst = srv.orders(s)
    ids = [o["order"] for o in lst]
    assert len(ids) == len(set(ids)), "duplicate order ids in the listing"
    assert [int(i) for i in ids] == sorted(int(i) for i in ids), "listing not in id order"
    by_id = {o["order"]: o for o in lst}
    assert len(wins) == len({w["order"] for w in wins}), "duplicate order ids among 201s"
    assert set(by_id) == {w["order"] for w in wins}
    for w in wins:
        assert by_id[w["order"]] == w
    return lst


def test_storm_distinct_users_limit_1(server, sale_id):
    s = sale_id()
    server.put_sale(s, stock=100, per_user_limit=1)
    res = storm(server.public_port, take_reqs(s, [{"user": f"u{i}"} for i in range(2000)]),
                threads=64)
    st = collections.Counter(r[0] for r in res)
    assert st == {201: 100, 409: 1900}, st
    assert all(b["error"] == "sold_out" for c, b in res if c == 409)
    wins = [b for c, b in res if c == 201]
    assert len({w["user"] for w in wins}) == 100
    assert all(w["qty"] == 1 and w["status"] == "confirmed" for w in wins)
    g = server.sale(s)
    assert (g["sold"], g["held"], g["remaining"], g["state"]) == (100, 0, 0, "sold_out"), g
    check_listing_matches(server, s, wins)


def test_storm_one_user_limit_3(server, sale_id):
    s = sale_id()
    server.put_sale(s, stock=100, per_user_limit=3)
    res = storm(server.public_port, take_reqs(s, [{"user": "hammer"}] * 500), threads=32)
    st = collections.Counter((c, b.get("error") if c != 201 and isinstance(b, dict) else None)
                             for c, b in res)
    assert st == {(201, None): 3, (409, "user_limit"): 497}, st
    g = server.sale(s)
    assert (g["sold"], g["remaining"]) == (3, 97), g
    check_listing_matches(server, s, [b for c, b in res if c == 201])


def test_storm_qty_mix(server, sale_id):
    s = sale_id()
    server.put_sale(s, stock=100)
    bodies = [{"user": f"u{i}", "qty": 1 + (i * 5) % 7} for i in range(800)]
    res = storm(server.public_port, take_reqs(s, bodies), threads=48)
    for (c, b), body in zip(res, bodies):
        assert c in (201, 409), (c, b)
        if c == 201:
            assert b["qty"] == body["qty"] and b["user"] == body["user"]
        else:
            assert b["error"] == "sold_out"
    wins = [b for c, b in res if c == 201]
    sold = sum(w["qty"] for w in wins)
    assert sold <= 100
    g = server.sale(s)
    assert (g["sold"], g["remaining"]) == (sold, 100 - sold), g
    # all or nothing: whatever is left can still be taken, exactly
    if sold < 100:
        r = server.take(s, user="drain", qty=100 - sold)
        assert r.status == 201, r
        wins.append(r.body)
    r = server.take(s, user="late", qty=1)
    assert r.status == 409 and r.body["error"] == "sold_out", r
    g = server.sale(s)
    assert (g["sold"], g["remaining"], g["state"]) == (100, 0, "sold_out"), g
    lst = check_listing_matches(server, s, wins)
    assert sum(o["qty"] for o in lst) == 100


def test_storm_qty_mix_per_user_limit(server, sale_id):
    s = sale_id()
    server.put_sale(s, stock=10000, per_user_limit=5)
    users = [f"p{i}" for i in range(20)]
    bodies = [{"user": users[i % 20], "qty": 1 + (i // 20) % 3} for i in range(600)]
    res = storm(server.public_port, take_reqs(s, bodies), threads=48)
    per_user = collections.Counter()
    for (c, b), body in zip(res, bodies):
        assert c in (201, 409), (c, b)
        if c == 201:
            per_user[b["user"]] += b["qty"]
        else:
            assert b["error"] == "user_limit", b
    assert all(per_user[u] <= 5 for u in users), per_user
    # top every user up, one unit at a time: each ends at exactly 5
    for u in users:
        for _ in range(5 - per_user[u]):
            r = server.take(s, user=u)
            assert r.status == 201, (u, r)
        r = server.take(s, user=u)
        assert r.status == 409 and r.body["error"] == "user_limit", (u, r)
    lst = server.orders(s)
    got = collections.Counter()
    for o in lst:
        got[o["user"]] += o["qty"]
    assert got == {u: 5 for u in users}
    assert server.sale(s)["sold"] == 100


@pytest.mark.parametrize("stock,limit", [(1000, 1), (50, 0)])
def test_storm_duplicate_request_ids(server, sale_id, stock, limit):
    s = sale_id()
    server.put_sale(s, stock=stock, per_user_limit=limit)
    copies = 5
    nrid = 150
    bodies = []
    for i in range(nrid):  # the copies of one request id sit next to each other: they race
        bodies += [{"user": f"u{i}", "qty": 1, "request_id": f"rid-{i}"}] * copies
    res = storm(server.public_port, take_reqs(s, bodies), threads=64)
    winners = []
    for i in range(nrid):
        answers = res[i * copies:(i + 1) * copies]
        st = collections.Counter(c for c, _ in answers)
        if st == {409: copies}:
            assert all(b["error"] == "sold_out" for _, b in answers), answers
            continue
        assert st == {201: 1, 200: copies - 1}, (f"rid-{i}", answers)
        bodies_i = [b for _, b in answers]
        assert all(b == bodies_i[0] for b in bodies_i), (f"rid-{i}", answers)
        assert bodies_i[0]["request_id"] == f"rid-{i}"
        winners.append(bodies_i[0])
    assert len(winners) == min(stock, nrid)
    g = server.sale(s)
    assert g["sold"] == len(winners), g
    lst = check_listing_matches(server, s, winners)
    assert len({o["request_id"] for o in lst}) == len(lst)
    # and once more, sequentially: every winner replays, every loser stays decided anew (sold out)
    for i in range(nrid):
        r = server.take(s, user=f"u{i}", qty=1, request_id=f"rid-{i}")
        w = [x for x in winners if x["request_id"] == f"rid-{i}"]
        if w:
            assert r.status == 200 and r.body == w[0], r
        else:
            assert r.status == 409 and r.body["error"] == "sold_out", r
    assert server.sale(s)["sold"] == len(winners)


def test_storm_duplicate_request_ids_repeated(server, sale_id):
    """Many rounds of racing duplicates on one server: the wait-for-the-first path must hold up."""
    n, k = 60, 12
    for rnd in range(30):
        s = sale_id()
        server.put_sale(s, stock=1000, per_user_limit=1)
        bodies = []
        for i in range(n):
            bodies += [{"user": f"u{i}", "request_id": f"rid-{i}"}] * k
        res = storm(server.public_port, take_reqs(s, bodies), threads=64)
        assert server.alive(), f"seckilld died in round {rnd}: {server.stderr_tail()}"
        for i in range(n):
            answers = res[i * k:(i + 1) * k]
            st = collections.Counter(c for c, _ in answers)
            assert st == {201: 1, 200: k - 1}, (rnd, f"rid-{i}", dict(st), answers)
            assert all(b == answers[0][1] for _, b in answers), answers
        assert server.sale(s)["sold"] == n


AB = "/usr/bin/ab"


def test_ab_stock_5(server, sale_id, tmp_path):
    if not os.access(AB, os.X_OK):
        pytest.fail("ab missing: apt-get install apache2-utils", pytrace=False)
    s = sale_id()
    server.put_sale(s, stock=5, per_user_limit=0)
    body = tmp_path / "body.json"
    body.write_text("{}")
    p = subprocess.run([AB, "-q", "-c", "100", "-n", "200", "-s", "20", "-p", str(body),
                        "-T", "application/json",
                        f"http://{HOST}:{server.public_port}/v1/sales/{s}/orders"],
                       capture_output=True, text=True, timeout=90)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out
    assert re.search(r"^Complete requests:\s+200$", out, re.M), out
    m = re.search(r"^Non-2xx responses:\s+(\d+)$", out, re.M)
    assert m, out
    assert int(m.group(1)) == 195, out
    g = server.sale(s)
    assert (g["sold"], g["remaining"], g["state"]) == (5, 0, "sold_out"), g
    assert len(server.orders(s)) == 5


def test_concurrent_cancels_return_units_once(server, sale_id):
    s = sale_id()
    server.put_sale(s, stock=10, per_user_limit=3)
    orders = [server.take(s, user="a", qty=3).body, server.take(s, user="b", qty=2).body]
    assert server.sale(s)["remaining"] == 5
    reqs = [("POST", f"/v1/sales/{s}/orders/{o['order']}/cancel", None)
            for o in orders for _ in range(20)]
    res = storm(server.admin_port, reqs, threads=40)
    assert all(c == 200 and b["status"] == "cancelled" for c, b in res), res
    g = server.sale(s)
    assert (g["sold"], g["remaining"]) == (0, 10), g
    # each user's allowance came back once: exactly 3 units each, no more
    assert server.take(s, user="a", qty=3).status == 201
    r = server.take(s, user="a", qty=1)
    assert r.status == 409 and r.body["error"] == "user_limit", r


def test_storm_with_cancels_keeps_the_books(server, sale_id):
    s = sale_id()
    stock = 60
    server.put_sale(s, stock=stock, per_user_limit=1)
    reqs = [("POST", f"/v1/sales/{s}/orders", {"user": f"u{i}"}) for i in range(900)]
    cancelled = []
    done = threading.Event()

    def canceller():
        while not done.is_set() and len(cancelled) < 25:
            r = server.adm("GET", f"/v1/sales/{s}/orders?limit=1000")
            for o in r.body["orders"]:
                if o["status"] == "confirmed" and o["order"] not in cancelled and len(cancelled) < 25:
                    x = server.adm("POST", f"/v1/sales/{s}/orders/{o['order']}/cancel")
                    assert x.status == 200 and x.body["status"] == "cancelled", x
                    cancelled.append(o["order"])

    t = threading.Thread(target=canceller, daemon=True)
    t.start()
    res = storm(server.public_port, reqs, threads=32)
    done.set()
    t.join(30)
    assert not t.is_alive()
    assert all(c in (201, 409) for c, _ in res), collections.Counter(c for c, _ in res)
    lst = server.orders(s)
    st = collections.Counter(o["status"] for o in lst)
    g = server.sale(s)
    assert st["cancelled"] == len(cancelled)
    assert g["sold"] == st["confirmed"] <= stock, (g, st)
    assert g["remaining"] == stock - g["sold"]
    assert len(lst) == sum(1 for c, _ in res if c == 201)
    # top up: exactly the remaining units can still be taken, then it is sold out
    for i in range(g["remaining"]):
        r = server.take(s, user=f"top{i}")
        assert r.status == 201, r
    r = server.take(s, user="toolate")
    assert r.status == 409 and r.body["error"] == "sold_out", r
    lst = server.orders(s)
    assert sum(1 for o in lst if o["status"] == "confirmed") == stock
    assert server.sale(s)["sold"] == stock


def test_stock_lowered_during_storm(server, sale_id):
    s = sale_id()
    server.put_sale(s, stock=200)
    reqs = [("POST", f"/v1/sales/{s}/orders", {"user": f"u{i}"}) for i in range(1200)]
    outcomes = []
    done = threading.Event()

    def lowerer():
        target = 200
        while not done.is_set() and target > 20:
            target -= 10
            r = server.adm("PUT", f"/v1/sales/{s}", {"stock": target})
            assert r.status in (200, 409), r
            if r.status == 409:
                assert r.body["error"] == "stock_below_taken", r
            outcomes.append((target, r.status))

    t = threading.Thread(target=lowerer, daemon=True)
    t.start()
    res = storm(server.public_port, reqs, threads=32)
    done.set()
    t.join(30)
    wins = sum(1 for c, _ in res if c == 201)
    g = server.sale(s)
    last_ok = min([tg for tg, st in outcomes if st == 200], default=200)
    assert g["stock"] == last_ok, (g, outcomes)
    assert g["sold"] == wins == len(server.orders(s)), (g, wins)
    assert g["sold"] <= g["stock"] and g["remaining"] == g["stock"] - g["sold"], g
    assert all(c in (201, 409) for c, _ in res)


redis_only = pytest.mark.parametrize("store", ["redis"], indirect=True)


@redis_only
def test_two_instances_share_one_redis(make_server, sale_id):
    a, b = make_server(), make_server()
    s = sale_id()
    a.put_sale(s, stock=100, per_user_limit=1)
    assert b.sale(s)["stock"] == 100
    out = {}

    def run(name, srv, lo):
        out[name] = storm(srv.public_port, take_reqs(s, [{"user": f"u{i}", "request_id": f"r{i}"}
                                                         for i in range(lo, lo + 1000)]), threads=32)

    ts = [threading.Thread(target=run, args=("a", a, 0)), threading.Thread(target=run, args=("b", b, 500))]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
    res = out["a"] + out["b"]
    # users u500..u999 hit both instances (same request ids): decided once across instances
    assert all(c in (200, 201, 409) for c, _ in res), collections.Counter(c for c, _ in res)
    wins = {}
    for c, body in res:
        if c in (200, 201):
            wins.setdefault(body["request_id"], []).append((c, body))
    for rid, got in wins.items():
        assert sum(1 for c, _ in got if c == 201) == 1, got
        assert all(body == got[0][1] for _, body in got), got
    orders = [got[0][1] for got in wins.values()]
    assert len(orders) == 100
    assert len({o["order"] for o in orders}) == 100
    for srv in (a, b):
        g = srv.sale(s)
        assert (g["sold"], g["remaining"]) == (100, 0), g
        assert sorted(srv.orders(s), key=lambda o: int(o["order"])) == \
            sorted(orders, key=lambda o: int(o["order"]))
    # a replay on the other instance answers the same order
    o = orders[0]
    for srv in (a, b):
        r = srv.take(s, user=o["user"], request_id=o["request_id"])
        assert r.status == 200 and r.body == o, r
    # ids keep increasing whichever instance takes
    s2 = sale_id()
    a.put_sale(s2, stock=100)
    ids = [int((a if i % 2 else b).take(s2, user=f"x{i}").body["order"]) for i in range(20)]
    assert ids == sorted(ids) and len(set(ids)) == 20, ids
