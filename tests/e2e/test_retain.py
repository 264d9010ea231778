"""retain_seconds (issue 17): a sale is deleted, as by DELETE /v1/sales/{sale}, that long after it
ends (at ends_at or by "end now"), once it holds no held order; a sale still holding orders goes
when its last hold resolves. Every store; on Redis and a Redis Cluster no key of the sale is left (SCAN)."""
import time

import pytest

from conftest import assert_error, key_slot, resp


def slot_tag(slot):
    """The tag of a slot's own keys (sk:slot:{TAG}:...): the smallest number that hashes to it, as
    redis_cluster.c's sk_redis_slot_tag."""
    v = 0
    while key_slot(str(v)) != slot:
        v += 1
    return str(v)


def redis_keys(store, sale):
    """Every key of the sale in Redis (SCAN over the whole keyspace, every master of a cluster),
    sorted; and the sale's place in its slot's set of sales and sweep list (sk:slot:{TAG}:sales,
    :due, where a sale with retain_seconds waits for them), which must be gone too."""
    ports = [store.redis.port] if store.kind == "redis" else list(store.cluster.masters())
    keys = []
    for port in ports:
        cursor = "0"
        while True:
            cursor, batch = resp(port, "SCAN", cursor, "MATCH", "*{%s}*" % sale, "COUNT", 1000)
            keys += [k for k in batch if "{%s}" % sale in k]
            if cursor == "0":
                break
    slot = key_slot(sale)
    tag = slot_tag(slot)
    port = store.redis.port if store.kind == "redis" else store.cluster.master_of_slot(slot)
    if resp(port, "SISMEMBER", "sk:slot:{%s}:sales" % tag, sale) != 0:
        keys.append("sales")
    if resp(port, "ZSCORE", "sk:slot:{%s}:due" % tag, sale) is not None:
        keys.append("due")
    return sorted(keys)


def wait_gone(srv, s, timeout=15.0):
    """Waits until GET of the sale answers 404; returns the seconds it took."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        r = srv.pub("GET", f"/v1/sales/{s}")
        if r.status == 404:
            return time.monotonic() - t0
        assert r.status == 200, r
        time.sleep(0.05)
    pytest.fail(f"sale {s} was not deleted within {timeout} s")


def sweeps(srv):
    """Lets both stores' sweeps run a few times (0.5 s on the embedded store, 0.3 s on Redis)."""
    time.sleep(1.6)


def test_retain_deletes_the_sale_after_its_end(server, store, sale_id):
    s = sale_id()
    ends = int(time.time()) + 2
    r = server.put_sale(s, stock=10, ends_at=ends, retain_seconds=1)
    assert r.body["retain_seconds"] == 1 and r.body["ends_at"] == ends
    a = server.take(s, user="alice")
    b = server.take(s, user="bob")
    assert a.status == 201 and b.status == 201
    assert server.sale(s)["retain_seconds"] == 1
    if store.kind != "sqlite":
        assert "due" in redis_keys(store, s)  # its place in its slot's sweep list
    wait_gone(server, s)
    assert time.time() >= ends + 1  # not before ends_at + retain_seconds
    assert_error(server.take(s, user="carol"), 404, "no_such_sale")
    assert_error(server.adm("GET", f"/v1/sales/{s}/orders"), 404, "no_such_sale")
    assert s not in [x["sale"] for x in server.adm("GET", "/v1/sales").body["sales"]]
    if store.kind != "sqlite":
        assert redis_keys(store, s) == []
    # the id may be used again; order ids go on after the deleted ones
    server.put_sale(s, stock=5)
    again = server.take(s, user="alice")
    assert again.status == 201 and again.body["order"] == "3", again


def test_retain_waits_for_the_last_hold(server, store, sale_id):
    s = sale_id()
    server.put_sale(s, stock=10, hold_seconds=600, retain_seconds=0)
    held = server.take(s, user="alice")
    final = server.take(s, user="bob")
    assert held.body["status"] == "held" and final.status == 201
    assert server.adm("POST", f"/v1/sales/{s}/orders/{final.body['order']}/confirm").status == 200
    # end now: due at once, but alice's hold keeps it
    server.put_sale(s, expect=200, stock=10, hold_seconds=600, retain_seconds=0, ends_at=int(time.time()))
    sweeps(server)
    v = server.sale(s)
    assert v["state"] == "ended" and v["held"] == 1 and v["sold"] == 1
    assert server.adm("POST", f"/v1/sales/{s}/orders/{held.body['order']}/cancel").status == 200
    wait_gone(server, s)
    if store.kind != "sqlite":
        assert redis_keys(store, s) == []


def test_retain_null_or_no_end_keeps_the_sale(server, sale_id):
    kept, no_end = sale_id(), sale_id()
    now = int(time.time())
    server.put_sale(kept, stock=1, ends_at=now + 1, retain_seconds=0)
    # retain_seconds removed again before it was due: a PUT sets every field
    r = server.put_sale(kept, expect=200, stock=1, ends_at=now + 1)
    assert r.body["retain_seconds"] is None
    server.put_sale(no_end, stock=1, retain_seconds=0)
    while time.time() < now + 2:
        time.sleep(0.1)
    sweeps(server)
    assert server.sale(kept)["state"] == "ended"
    assert server.sale(no_end)["state"] == "open"


def test_retain_survives_restarts(make_server, store, sale_id):
    srv = make_server()
    s, later = sale_id(), sale_id()
    ends = int(time.time()) + 2
    srv.put_sale(s, stock=10, ends_at=ends, retain_seconds=0)
    srv.put_sale(later, stock=10, ends_at=ends, retain_seconds=3600)
    assert srv.take(s, user="alice").status == 201
    srv.stop()
    while time.time() < ends + 1:  # due while no server runs
        time.sleep(0.1)
    srv.start()
    wait_gone(srv, s)
    v = srv.sale(later)
    assert v["retain_seconds"] == 3600 and v["state"] == "ended"
    srv.restart()
    assert srv.sale(later)["retain_seconds"] == 3600
    if store.kind != "sqlite":
        assert redis_keys(store, s) == []


def test_retain_seconds_bad_values(server, sale_id):
    s = sale_id()
    msg = "retain_seconds must be null or an integer from 0 to 315360000"
    for bad in (-1, 315360001, 1.5, "60", True, [1]):
        r = server.adm("PUT", f"/v1/sales/{s}", {"stock": 1, "retain_seconds": bad})
        assert_error(r, 400, "bad_request")
        assert r.body["message"] == msg, (bad, r)
    assert_error(server.pub("GET", f"/v1/sales/{s}"), 404, "no_such_sale")
    r = server.put_sale(s, stock=1, retain_seconds=315360000)
    assert r.body["retain_seconds"] == 315360000
