"""The Redis store's own promises (issue 3): the order stream, SCRIPT FLUSH in the middle of
traffic, starting while Redis is down, and the password in the URL or the environment."""

import collections
import os
import subprocess
import threading
import time

import pytest

from conftest import HOST, Redis, Server, assert_error, resp, storm, stored_orders

redis_only = pytest.mark.parametrize("store", ["redis"], indirect=True)
REDIS_CLI = "/usr/bin/redis-cli"


def cli(port, *args, password=None):
    cmd = [REDIS_CLI, "-h", HOST, "-p", str(port), "--raw"]
    if password:
        cmd += ["--no-auth-warning", "-a", password]
    p = subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=10)
    assert p.returncode == 0, p
    return p.stdout


def stream(port, sale):
    """The sale's order stream as a list of dicts (redis-cli --raw prints one element a line:
    an entry's id, then its fields and values)."""
    import re
    entries = []
    lines = cli(port, "XRANGE", "sk:{%s}:stream" % sale, "-", "+").split("\n")
    i = 0
    while i < len(lines):
        if re.fullmatch(r"\d+-\d+", lines[i]):
            entries.append({})
            i += 1
        elif entries and i + 1 < len(lines):
            entries[-1][lines[i]] = lines[i + 1]
            i += 2
        else:
            i += 1
    return entries


@redis_only
def test_order_stream_records_every_change(server, store, sale_id):
    """A sale's own stream, once a consumer has made it (docs/redis.md, "The order stream"), gets
    every change of every order, in order, in the same step."""
    s = sale_id()
    server.put_sale(s, stock=5, hold_seconds=60)
    cli(store.redis.port, "XGROUP", "CREATE", "sk:{%s}:stream" % s, "orders", "$", "MKSTREAM")
    a = server.take(s, user="alice", request_id="ra").body
    b = server.take(s, user="bob", qty=2).body
    assert server.take(s, user="alice", request_id="ra").status == 200  # a replay writes nothing
    assert server.adm("POST", f"/v1/sales/{s}/orders/{a['order']}/confirm").status == 200
    assert server.adm("POST", f"/v1/sales/{s}/orders/{a['order']}/confirm").status == 200  # nothing
    assert server.adm("POST", f"/v1/sales/{s}/orders/{b['order']}/cancel").status == 200
    assert server.adm("POST", f"/v1/sales/{s}/orders/{a['order']}/cancel").status == 200  # a refund
    got = [(e["event"], e["order"], e["user"], e["qty"], e["status"], e["request_id"]) for e in stream(store.redis.port, s)]
    assert got == [
        ("taken", a["order"], "alice", "1", "held", "ra"),
        ("taken", b["order"], "bob", "2", "held", ""),
        ("confirmed", a["order"], "alice", "1", "confirmed", "ra"),
        ("cancelled", b["order"], "bob", "2", "cancelled", ""),
        ("cancelled", a["order"], "alice", "1", "cancelled", "ra"),
    ], got
    e = stream(store.redis.port, s)[0]
    assert e["created_at"] == str(a["created_at"]) and e["expires_at"] == str(a["expires_at"])


@redis_only
def test_no_order_stream_unless_made(server, store, sale_id):
    """Layout 2 writes a sale's own stream only when it exists: without one, takes, a confirm and a
    cancel leave no stream key; the winners feed has every event."""
    s = sale_id()
    server.put_sale(s, stock=5, hold_seconds=60)
    a = server.take(s, user="alice", request_id="ra").body
    server.take(s, user="bob", qty=2)
    assert server.adm("POST", f"/v1/sales/{s}/orders/{a['order']}/confirm").status == 200
    assert server.adm("POST", f"/v1/sales/{s}/orders/{a['order']}/cancel").status == 200
    assert cli(store.redis.port, "EXISTS", "sk:{%s}:stream" % s).strip() == "0"
    events = [(e["event"], e["order"]) for e in server.adm("GET", "/v1/orders?limit=1000").body["events"]
              if e["sale"] == s]
    assert events == [("created", a["order"]), ("created", "2"), ("confirmed", a["order"]),
                      ("cancelled", a["order"])], events


@redis_only
def test_script_flush_in_the_middle_of_traffic(server, store, sale_id):
    s = sale_id()
    stock = 1500
    server.put_sale(s, stock=stock, per_user_limit=1)
    stop = threading.Event()
    flushes = []

    def flusher():
        while not stop.is_set():
            cli(store.redis.port, "SCRIPT", "FLUSH")
            flushes.append(1)
            time.sleep(0.05)

    t = threading.Thread(target=flusher)
    t.start()
    try:
        reqs = [("POST", f"/v1/sales/{s}/orders", {"user": f"u{i}", "request_id": f"r{i}"}) for i in range(2000)]
        res = storm(server.public_port, reqs, threads=32)
    finally:
        stop.set()
        t.join(10)
    assert len(flushes) >= 3
    codes = [c for c, _ in res]
    assert codes.count(201) == stock, {c: codes.count(c) for c in set(codes)}
    assert all(c == 409 for c in codes if c != 201), {c: codes.count(c) for c in set(codes)}
    assert server.sale(s)["sold"] == stock
    assert len(server.orders(s)) == stock


@redis_only
def test_starts_with_redis_down_and_recovers(make_server, store, sale_id):
    store.redis.stop()
    srv = make_server()  # starts although the store is unreachable
    deadline = time.monotonic() + 3
    while srv.pub("GET", "/healthz").status != 503:
        assert time.monotonic() < deadline, "healthz is not 503 while Redis is down"
        time.sleep(0.1)
    assert_error(srv.adm("PUT", "/v1/sales/x", {"stock": 1}), 503, "unavailable")
    store.redis.restart_same_port()
    deadline = time.monotonic() + 6
    while srv.pub("GET", "/healthz").status != 200:
        assert time.monotonic() < deadline, "healthz not back within 5 s of Redis's start"
        time.sleep(0.1)
    s = sale_id()
    srv.put_sale(s, stock=2)
    assert srv.take(s, user="u").status == 201


@pytest.mark.parametrize("how", ["url", "env"])
def test_password_in_url_or_environment(tmp_path, how):
    r = Redis(str(tmp_path))
    r.start()
    try:
        cli(r.port, "CONFIG", "SET", "requirepass", "s3cr:et")
        if how == "url":
            srv = Server(f"redis://:s3cr%3Aet@{HOST}:{r.port}", str(tmp_path))
        else:
            srv = Server(f"redis://{HOST}:{r.port}", str(tmp_path), env={"SECKILL_REDIS_PASSWORD": "s3cr:et"})
        srv.start()
        try:
            deadline = time.monotonic() + 5
            while srv.pub("GET", "/healthz").status != 200:
                assert time.monotonic() < deadline, srv.stderr_tail()
                time.sleep(0.1)
            assert srv.adm("PUT", "/v1/sales/pw", {"stock": 1}).status == 201
            assert srv.take("pw", user="u").status == 201
            assert cli(r.port, "HGET", "sk:{pw}", "sold", password="s3cr:et").strip() == "1"
            # the password never reaches the logs
            assert "s3cr" not in srv.stderr_tail(100000)
        finally:
            assert srv.stop() == 0
    finally:
        r.stop()


@redis_only
def test_old_layout_is_migrated_at_start(make_server, store):
    """Data of the layout before issue 16 (sk:sales, sk:holding, sk:tombstones) is moved into the
    per-slot keys when seckilld starts: the sales are listed, a held order is swept at its
    deadline, a deleted id goes on after its tombstone, and the old keys are gone."""
    port = store.redis.port
    now = int(cli(port, "TIME").split("\n")[0])
    # a sale as put.lua made it, with one held order expiring in 2 s, as take.lua made it
    cli(port, "HSET", "sk:{old}", "stock", "5", "limit", "0", "hold", "2", "starts", "", "ends", "",
        "sold", "0", "held", "1")
    cli(port, "HSET", "sk:{old}:orders", "1", f"held\t1\t{now}\t{now + 2}\tann\t")
    cli(port, "ZADD", "sk:{old}:holds", str(now + 2), "1")
    cli(port, "HSET", "sk:{old}:users", "ann", "1")
    cli(port, "SET", "sk:{old}:seq", "1")
    cli(port, "SADD", "sk:sales", "old")
    cli(port, "SADD", "sk:holding", "old")
    cli(port, "HSET", "sk:tombstones", "gone", "7")
    srv = make_server()
    assert [x["sale"] for x in srv.adm("GET", "/v1/sales").body["sales"]] == ["old"]
    assert cli(port, "EXISTS", "sk:sales", "sk:holding", "sk:tombstones").strip() == "0"
    # the sweep returns the unit (GET counts it back from the deadline on; the book says so
    # once swept)
    deadline = time.monotonic() + 10
    while srv.adm("GET", "/v1/sales/old/orders/1").body["status"] != "expired":
        assert time.monotonic() < deadline, "the old hold was never swept"
        time.sleep(0.05)
    assert srv.sale("old")["held"] == 0
    srv.put_sale("gone", stock=1)
    assert srv.take("gone", user="x").body["order"] == "8"
    # a second start finds nothing to migrate and changes nothing
    srv.restart()
    assert sorted(x["sale"] for x in srv.adm("GET", "/v1/sales").body["sales"]) == ["gone", "old"]
    assert "redis_layout_migrated" not in srv.stderr_tail()


@redis_only
def test_layout_2_keys_and_their_limits(server, store, sale_id):
    """A sale made on a single Redis is of layout 2 (docs/redis.md, "Layouts"): its orders, request
    ids and users are in small keys that Redis keeps as listpacks. An order too long for one (a
    128-byte user and request id) or a key with more than 128 buyers (the stock raised after the
    sale was made with b = 1) turns that key into a hash table: every answer stays exact."""
    port = store.redis.port
    s = sale_id()
    server.put_sale(s, stock=10, per_user_limit=1)
    assert cli(port, "HGET", "sk:{%s}" % s, "b").strip() == "1"
    a = server.take(s, user="ann", request_id="ra").body
    assert cli(port, "OBJECT", "ENCODING", "sk:{%s}:o:0" % s).strip() == "listpack"
    assert stored_orders(port, s)[a["order"]] == ["confirmed", "1", str(a["created_at"]), "", "ann", "ra"]
    assert cli(port, "HGET", "sk:{%s}:o:0" % s, a["order"]).startswith("c\t1\t")
    for k in ("r", "u"):
        assert cli(port, "OBJECT", "ENCODING", "sk:{%s}:%s:0" % (s, k)).strip() == "listpack"
    long_user, long_rid = "u" * 128, "r" * 128
    b = server.take(s, user=long_user, request_id=long_rid)
    assert b.status == 201, b
    for k in ("o", "r", "u"):
        assert cli(port, "OBJECT", "ENCODING", "sk:{%s}:%s:0" % (s, k)).strip() == "hashtable"
    r = server.take(s, user=long_user, request_id=long_rid)
    assert r.status == 200 and r.body["order"] == b.body["order"], r
    assert_error(server.take(s, user=long_user, request_id="another"), 409, "user_limit")
    assert_error(server.take(s, user="bob", request_id=long_rid), 409, "request_id_reused")
    # 300 buyers in the one key of each kind that b = 1 gives (the stock raised after the sale was made)
    server.put_sale(s, expect=200, stock=400, per_user_limit=1)
    assert cli(port, "HGET", "sk:{%s}" % s, "b").strip() == "1"
    res = storm(server.public_port, [("POST", f"/v1/sales/{s}/orders", {"user": f"b{i}", "request_id": f"q{i}"})
                                     for i in range(300)], threads=8)
    assert sorted(st for st, _ in res) == [201] * 300, collections.Counter(st for st, _ in res)
    res = storm(server.public_port, [("POST", f"/v1/sales/{s}/orders", {"user": f"b{i}", "request_id": f"q{i}"})
                                     for i in range(300)], threads=8)
    assert sorted(st for st, _ in res) == [200] * 300  # every one a replay
    assert int(cli(port, "HLEN", "sk:{%s}:r:0" % s)) == 302 and int(cli(port, "HLEN", "sk:{%s}:u:0" % s)) == 302
    book = server.orders(s)
    assert len(book) == 302 and [o["order"] for o in book] == [str(i) for i in range(1, 303)]
    assert server.sale(s)["sold"] == 302
    assert sorted(stored_orders(port, s)) == sorted(str(i) for i in range(1, 303))
    assert resp(port, "SCAN", "0", "MATCH", "sk:{%s}:o:*" % s, "COUNT", 1000)[1] != []
    assert sorted(resp(port, "SCAN", "0", "MATCH", "sk:{%s}:o:*" % s, "COUNT", 1000)[1]) == \
        ["sk:{%s}:o:%d" % (s, i) for i in range(5)]  # ids 1-302: 64 a key


@redis_only
def test_sale_of_layout_1_keeps_working(make_server, store):
    """A sale as the version before layout 2 wrote it (one hash each for its orders, request ids and
    users, its own stream, listed in the global sk:sales): after a start of this version every
    order reads the same, a request id replays its order (or is refused for another buyer), the
    user's total holds the limit, new orders go on in the same keys and the stream gets them."""
    port = store.redis.port
    now = int(cli(port, "TIME").split("\n")[0])
    cli(port, "HSET", "sk:{o1}", "stock", "10", "limit", "2", "hold", "0", "starts", "", "ends", "",
        "sold", "2", "held", "0", "retain", "")
    cli(port, "HSET", "sk:{o1}:orders", "1", f"confirmed\t1\t{now}\t\tann\tra1",
        "2", f"confirmed\t1\t{now}\t\tbob\trb1")
    cli(port, "HSET", "sk:{o1}:rids", "ra1", "1", "rb1", "2")
    cli(port, "HSET", "sk:{o1}:users", "ann", "1", "bob", "1")
    cli(port, "SET", "sk:{o1}:seq", "2")
    for i, u, r in ((1, "ann", "ra1"), (2, "bob", "rb1")):
        cli(port, "XADD", "sk:{o1}:stream", "*", "event", "taken", "order", str(i), "user", u, "qty", "1",
            "status", "confirmed", "request_id", r, "created_at", str(now), "expires_at", "")
    cli(port, "SADD", "sk:sales", "o1")
    srv = make_server()
    assert [x["sale"] for x in srv.adm("GET", "/v1/sales").body["sales"]] == ["o1"]
    book = srv.orders("o1")
    assert [(o["order"], o["user"], o["qty"], o["status"], o["request_id"], o["created_at"]) for o in book] == [
        ("1", "ann", 1, "confirmed", "ra1", now), ("2", "bob", 1, "confirmed", "rb1", now)], book
    r = srv.take("o1", user="ann", request_id="ra1")
    assert r.status == 200 and r.body["order"] == "1" and r.body["created_at"] == now, r
    assert_error(srv.take("o1", user="bob", request_id="ra1"), 409, "request_id_reused")
    assert srv.take("o1", user="ann", request_id="ra2").body["order"] == "3"
    assert_error(srv.take("o1", user="ann", request_id="ra3"), 409, "user_limit")
    assert srv.adm("POST", "/v1/sales/o1/orders/1/cancel").status == 200
    assert cli(port, "HGET", "sk:{o1}:users", "ann").strip() == "1"
    assert srv.take("o1", user="ann", request_id="ra3").body["order"] == "4"
    assert srv.take("o1", user="ann", request_id="ra3").status == 200  # a replay of a new order
    assert cli(port, "HGET", "sk:{o1}:users", "ann").strip() == "2"
    assert cli(port, "HGET", "sk:{o1}:rids", "ra3").strip() == "4"
    assert srv.sale("o1")["sold"] == 3
    assert sorted(stored_orders(port, "o1")) == ["1", "2", "3", "4"]
    assert cli(port, "HLEN", "sk:{o1}:orders").strip() == "4"  # still layout 1: no sk:{o1}:o:N key
    assert resp(port, "SCAN", "0", "MATCH", "sk:{o1}:[oru]:*", "COUNT", "1000")[1] == []
    assert [e["event"] for e in stream(port, "o1")] == ["taken", "taken", "taken", "cancelled", "taken"]


@redis_only
def test_sweep_index_update_is_retried(make_server, store):
    """A take's due_add.lua that Redis refuses (here an ACL keeps the user off the index of
    deadlines) is sent again until it goes through: the hold is then swept at once, though no
    other hold was made in its slot."""
    port = store.redis.port
    allowed = ["~sk:{*", "~sk:slot:*", "~sk:idx:{i}:slots", "~sk:sales", "~sk:holding", "~sk:tombstones",
               "~sk:feed", "~sk:feed:trimmed", "~sk:feed:extra"]
    cli(port, "ACL", "SETUSER", "seck", "on", ">pw", "+@all", *allowed)
    srv = Server(f"redis://seck:pw@{HOST}:{port}", str(store.redis.dir) + "-acl", name="acl")
    os.makedirs(srv.workdir, exist_ok=True)
    srv.start()
    try:
        srv.put_sale("h", stock=3, hold_seconds=1)
        r = srv.take("h", user="ann")
        assert r.status == 201 and r.body["status"] == "held", r
        due = r.body["expires_at"]
        # past the deadline: the book still says held (neither the take's index update nor the
        # sweep's read of the index got through)
        while int(cli(port, "TIME").split("\n")[0]) < due + 1:
            time.sleep(0.05)
        time.sleep(0.5)
        assert stored_orders(port, "h")["1"][0] == "held"
        assert cli(port, "EXISTS", "sk:idx:{i}:due").strip() == "0"
        cli(port, "ACL", "SETUSER", "seck", "~sk:idx:*")
        deadline = time.monotonic() + 5
        while stored_orders(port, "h")["1"][0] != "expired":
            assert time.monotonic() < deadline, "the hold was never swept"
            time.sleep(0.05)
        assert srv.sale("h")["held"] == 0
    finally:
        assert srv.stop() == 0


@redis_only
def test_sweep_index_rebuilt_at_start(store):
    """An instance that dies with a take's index update not done (kill -9 while the index is kept
    from it): the next start puts every slot's earliest deadline into the index again, and the
    hold is swept."""
    port = store.redis.port
    allowed = ["~sk:{*", "~sk:slot:*", "~sk:idx:{i}:slots", "~sk:sales", "~sk:holding", "~sk:tombstones",
               "~sk:feed", "~sk:feed:trimmed", "~sk:feed:extra"]
    cli(port, "ACL", "SETUSER", "seck", "on", ">pw", "+@all", *allowed)
    workdir = str(store.redis.dir) + "-acl"
    os.makedirs(workdir, exist_ok=True)
    srv = Server(f"redis://seck:pw@{HOST}:{port}", workdir, name="acl").start()
    try:
        srv.put_sale("h", stock=3, hold_seconds=1)
        r = srv.take("h", user="ann")
        assert r.status == 201 and r.body["status"] == "held", r
    finally:
        srv.kill()
    cli(port, "ACL", "SETUSER", "seck", "~sk:idx:*")
    assert cli(port, "EXISTS", "sk:idx:{i}:due").strip() == "0"
    srv = Server(f"redis://seck:pw@{HOST}:{port}", workdir, name="acl2").start()
    try:
        deadline = time.monotonic() + 10
        while stored_orders(port, "h")["1"][0] != "expired":
            assert time.monotonic() < deadline, "the hold was never swept"
            time.sleep(0.05)
    finally:
        assert srv.stop() == 0
