"""Held orders (hold_seconds > 0): hold, confirm, cancel, expiry, from API.md."""

import math
import time

import pytest

from conftest import assert_error, assert_order, storm


@pytest.fixture
def hserver(server):
    return server


def take_held(srv, s, hold, **body):
    t0 = time.time()
    r = srv.take(s, **body)
    t1 = time.time()
    assert r.status == 201, r
    o = r.body
    assert_order(o, s, body.get("user"), body.get("qty", 1), body.get("request_id"), "held", t0, t1)
    # expires_at is the take's time rounded up to a whole second plus hold_seconds
    assert type(o["expires_at"]) is int, o
    assert math.ceil(t0) + hold - 1 <= o["expires_at"] <= math.ceil(t1) + hold, (o, t0, t1)
    assert o["expires_at"] - hold in (o["created_at"], o["created_at"] + 1), o
    return o


def counts(srv, s):
    b = srv.sale(s)
    return b["sold"], b["held"], b["remaining"], b["state"]


def test_take_is_held(hserver, sale_id):
    s = sale_id()
    hserver.put_sale(s, stock=5, per_user_limit=2, hold_seconds=60)
    o = take_held(hserver, s, 60, user="alice", qty=2, request_id="h1")
    assert hserver.sale(s) == {"sale": s, "stock": 5, "sold": 0, "held": 2, "remaining": 3,
                               "per_user_limit": 2, "hold_seconds": 60, "starts_at": None,
                               "ends_at": None, "retain_seconds": None, "state": "open"}
    # held units count against the user's limit
    assert_error(hserver.take(s, user="alice"), 409, "user_limit")
    g = hserver.adm("GET", f"/v1/sales/{s}/orders/{o['order']}")
    assert g.status == 200 and g.body == o
    r = hserver.take(s, user="alice", qty=2, request_id="h1")
    assert r.status == 200 and r.body == o, r


def test_confirm_held(hserver, sale_id):
    s = sale_id()
    hserver.put_sale(s, stock=5, hold_seconds=60)
    o = take_held(hserver, s, 60, user="alice", qty=2)
    c = hserver.adm("POST", f"/v1/sales/{s}/orders/{o['order']}/confirm")
    assert c.status == 200, c
    assert c.body["status"] == "confirmed" and c.body["order"] == o["order"], c
    assert c.body["qty"] == 2 and c.body["user"] == "alice"
    assert counts(hserver, s) == (2, 0, 3, "open")
    c2 = hserver.adm("POST", f"/v1/sales/{s}/orders/{o['order']}/confirm")
    assert c2.status == 200 and c2.body["status"] == "confirmed", c2
    assert counts(hserver, s) == (2, 0, 3, "open")
    # a confirmed order does not expire
    g = hserver.adm("GET", f"/v1/sales/{s}/orders/{o['order']}")
    assert g.body["status"] == "confirmed"


def test_cancel_held(hserver, sale_id):
    s = sale_id()
    hserver.put_sale(s, stock=2, per_user_limit=2, hold_seconds=60)
    o = take_held(hserver, s, 60, user="alice", qty=2)
    assert counts(hserver, s) == (0, 2, 0, "sold_out")
    assert_error(hserver.take(s, user="bob"), 409, "sold_out")
    x = hserver.adm("POST", f"/v1/sales/{s}/orders/{o['order']}/cancel")
    assert x.status == 200 and x.body["status"] == "cancelled", x
    assert counts(hserver, s) == (0, 0, 2, "open")
    x2 = hserver.adm("POST", f"/v1/sales/{s}/orders/{o['order']}/cancel")
    assert x2.status == 200 and x2.body["status"] == "cancelled", x2
    assert_error(hserver.adm("POST", f"/v1/sales/{s}/orders/{o['order']}/confirm"), 409,
                 "order_not_held")
    assert counts(hserver, s) == (0, 0, 2, "open")
    # units back to the sale and to alice's allowance
    take_held(hserver, s, 60, user="alice", qty=2)
    assert counts(hserver, s) == (0, 2, 0, "sold_out")


def test_stock_below_sold_plus_held(hserver, sale_id):
    s = sale_id()
    hserver.put_sale(s, stock=10, hold_seconds=60)
    o = take_held(hserver, s, 60, user="a", qty=3)
    assert hserver.take(s, user="b", qty=2).status == 201
    hserver.adm("POST", f"/v1/sales/{s}/orders/{o['order']}/confirm")
    r = hserver.adm("PUT", f"/v1/sales/{s}", {"stock": 4, "hold_seconds": 60})
    assert_error(r, 409, "stock_below_taken")
    r = hserver.adm("PUT", f"/v1/sales/{s}", {"stock": 5, "hold_seconds": 60})
    assert r.status == 200, r
    assert counts(hserver, s) == (3, 2, 0, "sold_out")


def test_expiry(hserver, sale_id):
    s = sale_id()
    hserver.put_sale(s, stock=3, per_user_limit=1, hold_seconds=1)
    a = take_held(hserver, s, 1, user="alice", request_id="ra")
    b = take_held(hserver, s, 1, user="bob")
    c = hserver.take(s, user="carol").body
    assert counts(hserver, s) == (0, 3, 0, "sold_out")
    assert hserver.adm("POST", f"/v1/sales/{s}/orders/{b['order']}/confirm").status == 200
    # just after expires_at has passed: expired at once, even before any sweep
    time.sleep(max(0, a["expires_at"] + 1.05 - time.time()))
    assert_error(hserver.adm("POST", f"/v1/sales/{s}/orders/{a['order']}/confirm"), 409,
                 "order_not_held")
    assert_error(hserver.adm("POST", f"/v1/sales/{s}/orders/{a['order']}/cancel"), 409,
                 "order_not_held")
    g = hserver.adm("GET", f"/v1/sales/{s}/orders/{a['order']}")
    assert g.status == 200 and g.body["status"] == "expired", g
    # units return within one second, exactly once
    time.sleep(max(0, max(a["expires_at"], c["expires_at"]) + 2.2 - time.time()))
    assert counts(hserver, s) == (1, 0, 2, "open")
    time.sleep(1.0)
    assert counts(hserver, s) == (1, 0, 2, "open")
    # the replay of an expired order's request id still answers that order
    r = hserver.take(s, user="alice", request_id="ra")
    assert r.status == 200 and r.body["order"] == a["order"], r
    # allowance is back: alice may take again (a new request)
    n = take_held(hserver, s, 1, user="alice")
    assert int(n["order"]) > int(c["order"])
    assert_error(hserver.take(s, user="bob"), 409, "user_limit")
    statuses = {o["order"]: o["status"] for o in hserver.orders(s)}
    assert statuses[a["order"]] == "expired" and statuses[b["order"]] == "confirmed"
    assert statuses[c["order"]] == "expired"


def test_expiry_storm_returns_units_exactly_once(hserver, sale_id):
    s = sale_id()
    hserver.put_sale(s, stock=20, hold_seconds=1)
    reqs = [("POST", f"/v1/sales/{s}/orders", {"user": f"u{i}"}) for i in range(200)]
    res = storm(hserver.public_port, reqs, threads=32)
    wins = [b for st, b in res if st == 201]
    assert len(wins) == 20
    assert all(st == 409 and b["error"] == "sold_out" for st, b in res if st != 201)
    last = max(o["expires_at"] for o in wins)
    time.sleep(max(0, last + 2.2 - time.time()))
    assert counts(hserver, s) == (0, 0, 20, "open")
    # a second wave takes exactly the returned 20 again
    res = storm(hserver.public_port, reqs, threads=32)
    assert sum(1 for st, _ in res if st == 201) == 20
    assert counts(hserver, s)[:3] == (0, 20, 0)


def test_confirm_cancel_race(hserver, sale_id):
    import threading
    s = sale_id()
    hserver.put_sale(s, stock=40, hold_seconds=60)
    orders = [take_held(hserver, s, 60, user=f"u{i}") for i in range(20)]
    answers = {}

    def act(o, what):
        answers[(o["order"], what)] = hserver.adm("POST", f"/v1/sales/{s}/orders/{o['order']}/{what}")

    ts = [threading.Thread(target=act, args=(o, w)) for o in orders for w in ("confirm", "cancel")]
    for t in ts:
        t.start()
    for t in ts:
        t.join(20)
    final = {o["order"]: o["status"] for o in hserver.orders(s)}
    for o in orders:
        c, x = answers[(o["order"], "confirm")], answers[(o["order"], "cancel")]
        assert x.status == 200 and x.body["status"] == "cancelled", x  # cancel always wins at last
        assert final[o["order"]] == "cancelled"
        if c.status == 200:
            assert c.body["status"] == "confirmed", c  # confirmed first, then cancelled
        else:
            assert_error(c, 409, "order_not_held")  # cancelled first
    assert counts(hserver, s) == (0, 0, 40, "open")


@pytest.mark.parametrize("store", ["redis"], indirect=True)
def test_expiry_exactly_once_across_instances(make_server, sale_id):
    a = make_server()
    b = make_server()
    s = sale_id()
    a.put_sale(s, stock=30, hold_seconds=1)
    reqs = [("POST", f"/v1/sales/{s}/orders", {"user": f"u{i}"}) for i in range(60)]
    res = storm(a.public_port, reqs[:30], threads=16) + storm(b.public_port, reqs[30:], threads=16)
    wins = [x for c, x in res if c == 201]
    assert len(wins) == 30
    last = max(o["expires_at"] for o in wins)
    time.sleep(max(0, last + 2.2 - time.time()))
    for srv in (a, b):
        assert counts(srv, s) == (0, 0, 30, "open")
    assert all(o["status"] == "expired" for o in a.orders(s))
