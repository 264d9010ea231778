"""Held orders, continued (issue 4): restarts keep holds, storms racing expiries and cancels,
two instances on one Redis, restock and ending a sale, and the sold-out fast path learning
that units came back."""

import threading
import time

import pytest

from conftest import assert_error, storm
from test_holds import counts, take_held


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)
def test_restart_keeps_holds_and_expires_missed_deadlines(make_server, sale_id):
    srv = make_server()
    s = sale_id()
    srv.put_sale(s, stock=10, per_user_limit=2, hold_seconds=2)
    short = [take_held(srv, s, 2, user=f"u{i}") for i in range(3)]
    srv.put_sale(s, expect=200, stock=10, per_user_limit=2, hold_seconds=600)
    long_ = [take_held(srv, s, 600, user=f"v{i}") for i in range(2)]
    assert srv.adm("POST", f"/v1/sales/{s}/orders/{short[0]['order']}/confirm").status == 200
    assert counts(srv, s) == (1, 4, 5, "open")
    srv.kill()  # kill -9: the holds are on disk; two of their deadlines pass while it is down
    time.sleep(max(0, max(o["expires_at"] for o in short) + 1.2 - time.time()))
    srv.start()
    # the missed deadlines expire at start (within a second); the long holds stay held
    deadline = time.monotonic() + 2
    while counts(srv, s) != (1, 2, 7, "open"):
        assert time.monotonic() < deadline, counts(srv, s)
        time.sleep(0.05)
    st = {o["order"]: o["status"] for o in srv.orders(s)}
    assert [st[o["order"]] for o in short] == ["confirmed", "expired", "expired"]
    assert [st[o["order"]] for o in long_] == ["held", "held"]
    # the held units still count against their users' allowance after the restart
    assert srv.take(s, user="v0", qty=2).status == 409
    assert srv.take(s, user="v0").status == 201
    # and a hold can still be confirmed after the restart
    r = srv.adm("POST", f"/v1/sales/{s}/orders/{long_[1]['order']}/confirm")
    assert r.status == 200 and r.body["status"] == "confirmed", r
    assert counts(srv, s) == (2, 2, 6, "open")


def test_storm_racing_expiries_and_cancels_never_oversells(make_server, sale_id):
    srv = make_server()
    s = sale_id()
    stock = 30
    srv.put_sale(s, stock=stock, hold_seconds=1)
    stop = threading.Event()
    cancelled = set()

    def canceller():
        while not stop.is_set():
            for o in srv.orders(s):
                if o["status"] == "held" and o["order"] not in cancelled:
                    r = srv.adm("POST", f"/v1/sales/{s}/orders/{o['order']}/cancel")
                    if r.status == 200:
                        cancelled.add(o["order"])
                    else:
                        assert_error(r, 409, "order_not_held")
            time.sleep(0.05)

    def watcher(bad):
        while not stop.is_set():
            g = srv.sale(s)
            if g["sold"] + g["held"] > stock or g["remaining"] < 0:
                bad.append(g)
            time.sleep(0.02)

    bad = []
    ts = [threading.Thread(target=canceller), threading.Thread(target=watcher, args=(bad,))]
    for t in ts:
        t.start()
    try:
        t_end = time.monotonic() + 4
        wins = 0
        while time.monotonic() < t_end:
            reqs = [("POST", f"/v1/sales/{s}/orders", {"user": f"u{time.monotonic_ns()}-{i}"}) for i in range(150)]
            res = storm(srv.public_port, reqs, threads=16)
            assert all(c in (201, 409) for c, _ in res), [r for r in res if r[0] not in (201, 409)][:3]
            wins += sum(1 for c, _ in res if c == 201)
    finally:
        stop.set()
        for t in ts:
            t.join(30)
    assert not bad, bad[:3]
    assert wins > stock  # units came back and were sold again
    # once every hold has ended, the books balance exactly
    time.sleep(2.2)
    orders = srv.orders(s)
    assert len(orders) == wins
    live = sum(o["qty"] for o in orders if o["status"] in ("held", "confirmed"))
    assert live == 0
    assert counts(srv, s) == (0, 0, stock, "open")
    assert {o["status"] for o in orders} <= {"cancelled", "expired"}
    assert sum(1 for o in orders if o["status"] == "cancelled") == len(cancelled)


def test_restock_lower_and_end_now(make_server, sale_id):
    srv = make_server()
    s = sale_id()
    srv.put_sale(s, stock=4, hold_seconds=60)
    a = take_held(srv, s, 60, user="a", qty=2)
    take_held(srv, s, 60, user="b", qty=2)
    assert srv.adm("POST", f"/v1/sales/{s}/orders/{a['order']}/confirm").status == 200
    assert counts(srv, s) == (2, 2, 0, "sold_out")
    assert_error(srv.take(s, user="c"), 409, "sold_out")
    # raise: the new units are sold at once
    r = srv.adm("PUT", f"/v1/sales/{s}", {"stock": 6, "hold_seconds": 60})
    assert r.status == 200 and (r.body["sold"], r.body["held"], r.body["remaining"]) == (2, 2, 2), r
    take_held(srv, s, 60, user="c", qty=2)
    # lower: never below sold + held
    assert_error(srv.adm("PUT", f"/v1/sales/{s}", {"stock": 5, "hold_seconds": 60}), 409, "stock_below_taken")
    assert counts(srv, s) == (2, 4, 0, "sold_out")
    # end it now: buying is refused, holds may still be confirmed
    now = int(time.time())
    r = srv.adm("PUT", f"/v1/sales/{s}", {"stock": 6, "hold_seconds": 60, "ends_at": now})
    assert r.status == 200 and r.body["state"] == "ended", r
    assert_error(srv.take(s, user="d"), 403, "ended")
    held = [o for o in srv.orders(s) if o["status"] == "held"]
    assert len(held) == 2
    assert srv.adm("POST", f"/v1/sales/{s}/orders/{held[0]['order']}/confirm").status == 200
    assert counts(srv, s)[:3] == (4, 2, 0)


@pytest.mark.parametrize("store", ["redis"], indirect=True)
def test_two_instances_hold_arithmetic_and_fast_path(make_server, sale_id):
    """Confirm on one instance, cancel on the other; the other's sold-out fast path learns
    that units came back within a second."""
    a, b = make_server(), make_server()
    s = sale_id()
    a.put_sale(s, stock=3, per_user_limit=1, hold_seconds=60)
    o1 = take_held(a, s, 60, user="u1")
    o2 = take_held(b, s, 60, user="u2")
    o3 = take_held(a, s, 60, user="u3")
    for srv in (a, b):
        assert_error(srv.take(s, user="x"), 409, "sold_out")  # both learn it is sold out
        assert counts(srv, s) == (0, 3, 0, "sold_out")
    r = b.adm("POST", f"/v1/sales/{s}/orders/{o1['order']}/confirm")
    assert r.status == 200 and r.body["status"] == "confirmed"
    assert a.adm("POST", f"/v1/sales/{s}/orders/{o1['order']}/confirm").status == 200  # idempotent
    assert counts(a, s) == (1, 2, 0, "sold_out")
    r = a.adm("POST", f"/v1/sales/{s}/orders/{o2['order']}/cancel")
    assert r.status == 200 and r.body["status"] == "cancelled"
    assert b.adm("POST", f"/v1/sales/{s}/orders/{o2['order']}/cancel").status == 200  # idempotent
    assert_error(b.adm("POST", f"/v1/sales/{s}/orders/{o2['order']}/confirm"), 409, "order_not_held")
    for srv in (a, b):
        assert counts(srv, s) == (1, 1, 1, "open")
    # b learned "sold out" before the cancel on a: within a second it sells the returned unit
    deadline = time.monotonic() + 1.0
    while True:
        r = b.take(s, user="late")
        if r.status == 201:
            break
        assert_error(r, 409, "sold_out")
        assert time.monotonic() < deadline, "instance b never learned that a unit came back"
        time.sleep(0.05)
    # u2's allowance came back with the cancel
    assert b.take(s, user="u2").status == 409  # sold out again now
    r = a.adm("POST", f"/v1/sales/{s}/orders/{o3['order']}/cancel")
    assert r.status == 200
    deadline = time.monotonic() + 1.0
    while b.take(s, user="u2").status != 201:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert counts(a, s) == (1, 2, 0, "sold_out")
