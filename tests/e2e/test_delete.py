"""DELETE /v1/sales/{sale} (admin): a sale that has ended and holds no held order goes, with every
trace of it in the live data; its orders move to the archive tables on the embedded store; a sale
made again under the id goes on after its order ids. Both stores (test_store.c checks the Redis
keys left, 0, below HTTP)."""
import sqlite3
import time

import pytest

from conftest import assert_error, storm

sqlite_only = pytest.mark.parametrize("store", ["sqlite"], indirect=True)
redis_stores = pytest.mark.parametrize("store", ["redis", "redis-cluster"], indirect=True)


def end_now(server, s, **fields):
    body = {"stock": 10, "ends_at": int(time.time())}
    body.update(fields)
    server.put_sale(s, expect=200, **body)


def test_delete_an_ended_sale(server, sale_id):
    s = sale_id()
    assert_error(server.adm("DELETE", f"/v1/sales/{s}"), 404, "no_such_sale")
    server.put_sale(s, stock=10, hold_seconds=600)
    held = server.take(s, user="alice", request_id="r-1")
    assert held.status == 201 and held.body["status"] == "held"
    bob = server.take(s, user="bob")
    assert server.adm("POST", f"/v1/sales/{s}/orders/{bob.body['order']}/confirm").status == 200
    assert_error(server.adm("DELETE", f"/v1/sales/{s}"), 409, "sale_active")  # no end
    end_now(server, s, hold_seconds=600)
    assert_error(server.adm("DELETE", f"/v1/sales/{s}"), 409, "sale_active")  # alice's hold
    assert server.adm("POST", f"/v1/sales/{s}/orders/{held.body['order']}/cancel").status == 200
    assert_error(server.pub("DELETE", f"/v1/sales/{s}"), 404, "not_found")  # admin only
    r = server.adm("DELETE", f"/v1/sales/{s}")
    assert r.status == 200, r
    assert r.body["sale"] == s and r.body["sold"] == 1 and r.body["held"] == 0 and r.body["state"] == "ended"
    assert_error(server.pub("GET", f"/v1/sales/{s}"), 404, "no_such_sale")
    assert_error(server.take(s, user="carol"), 404, "no_such_sale")
    assert_error(server.adm("GET", f"/v1/sales/{s}/orders"), 404, "no_such_sale")
    assert_error(server.adm("GET", f"/v1/sales/{s}/orders.csv"), 404, "no_such_sale")
    assert s not in [x["sale"] for x in server.adm("GET", "/v1/sales").body["sales"]]
    assert_error(server.adm("DELETE", f"/v1/sales/{s}"), 404, "no_such_sale")
    # made again: a new sale; order ids go on after the deleted ones (2); the request id is free
    server.put_sale(s, stock=5)
    again = server.take(s, user="alice", request_id="r-1")
    assert again.status == 201 and again.body["order"] == "3", again


@redis_stores
def test_delete_a_sale_of_a_huge_stock(server, store, sale_id):
    """A sale made with a stock of 10^15 (layout 2: its request ids and users over a bounded
    number of keys, docs/redis.md "Layouts") is deleted at once, every key of it gone: the
    deletion unlinks each of its buckets, which were ceil(stock / 64) before the bound (10^13:
    Redis would have been busy for ever)."""
    from conftest import key_slot, resp
    from test_retain import redis_keys

    s = sale_id()
    server.put_sale(s, stock=10 ** 15)
    port = store.redis.port if store.kind == "redis" else store.cluster.master_of_slot(key_slot(s))
    assert resp(port, "HGET", "sk:{%s}" % s, "b") == "65521"  # the bound, a prime
    res = storm(server.public_port, [("POST", f"/v1/sales/{s}/orders", {"user": f"{i}", "request_id": f"r{i}"})
                                     for i in range(200)])
    assert [st for st, _ in res].count(201) == 200
    end_now(server, s, stock=10 ** 15)
    t0 = time.monotonic()
    r = server.adm("DELETE", f"/v1/sales/{s}")
    assert r.status == 200 and r.body["sold"] == 200, r
    assert time.monotonic() - t0 < 10
    assert redis_keys(store, s) == []


def test_delete_survives_restarts(make_server, sale_id):
    srv = make_server()
    s = sale_id()
    srv.put_sale(s, stock=100)
    res = storm(srv.public_port, [("POST", f"/v1/sales/{s}/orders", {"user": f"u{i}"}) for i in range(50)])
    assert [st for st, _ in res].count(201) == 50
    end_now(srv, s, stock=100)
    assert srv.adm("DELETE", f"/v1/sales/{s}").status == 200
    srv.restart()
    assert_error(srv.pub("GET", f"/v1/sales/{s}"), 404, "no_such_sale")
    srv.put_sale(s, stock=5)
    srv.restart()
    r = srv.take(s, user="x")
    assert r.status == 201 and r.body["order"] == "51", r


@sqlite_only
def test_deleted_rows_go_to_the_archive(make_server, store, sale_id):
    srv = make_server()
    s, other = sale_id(), sale_id()
    srv.put_sale(s, stock=10)
    srv.put_sale(other, stock=10)
    for u in ("a", "b", "c"):
        assert srv.take(s, user=u, request_id="rid-" + u).status == 201
    assert srv.take(other, user="a").status == 201
    end_now(srv, s)
    t0 = int(time.time())
    assert srv.adm("DELETE", f"/v1/sales/{s}").status == 200
    db = sqlite3.connect(f"file:{store.db_path}?mode=ro", uri=True)
    try:
        assert db.execute("SELECT count(*) FROM sales WHERE sale = ?", (s,)).fetchone() == (0,)
        assert db.execute("SELECT count(*) FROM orders WHERE sale = ?", (s,)).fetchone() == (0,)
        assert db.execute("SELECT count(*) FROM orders WHERE sale = ?", (other,)).fetchone() == (1,)
        rows = db.execute("SELECT id, user, qty, status, request_id, deleted_at FROM orders_archive"
                          " WHERE sale = ? ORDER BY id", (s,)).fetchall()
        assert [r[:5] for r in rows] == [(1, "a", 1, "confirmed", "rid-a"), (2, "b", 1, "confirmed", "rid-b"),
                                         (3, "c", 1, "confirmed", "rid-c")]
        assert all(t0 <= r[5] <= t0 + 5 for r in rows)
        arch = db.execute("SELECT stock, per_user_limit, hold_seconds, starts_at FROM sales_archive"
                          " WHERE sale = ?", (s,)).fetchall()
        assert arch == [(10, 0, 0, None)]
        assert db.execute("SELECT last_id FROM tombstones WHERE sale = ?", (s,)).fetchone() == (3,)
    finally:
        db.close()
    assert srv.take(other, user="b").status == 201  # the others live on
