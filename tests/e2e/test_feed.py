"""The winners feed, GET /v1/orders (admin, issue 17): every order event (created, confirmed,
cancelled, expired) of every sale in one sequence after an opaque cursor; `wait` long-polls;
Accept: text/event-stream streams (Last-Event-ID resumes); bounded retention (410 for a cursor
before it). Every store: SQLite, one Redis and a Redis Cluster, where worker 0 of every instance
relays each slot's feed stream into one merged stream (docs/redis.md): an event shows there
within a fraction of a second, so the tests wait for the feed's state rather than read it once.
Two instances on one Redis and on a cluster (their relays race)."""
import http.client
import json
import re
import threading
import time

import pytest

from conftest import HOST, OpenAPI, Server, assert_error, key_slot, resp, storm

redis_stores = pytest.mark.parametrize("store", ["redis", "redis-cluster"], indirect=True)
feed_stores = pytest.mark.parametrize("store", ["sqlite", "redis", "redis-cluster"], indirect=True)
cluster_only = pytest.mark.parametrize("store", ["redis-cluster"], indirect=True)


def cur(c):
    hi, lo = c.split("-")
    return (int(hi), int(lo))


def feed(srv, after=None, limit=None, wait=None, expect=200):
    q = []
    if after is not None:
        q.append(f"after={after}")
    if limit is not None:
        q.append(f"limit={limit}")
    if wait is not None:
        q.append(f"wait={wait}")
    r = srv.adm("GET", "/v1/orders" + ("?" + "&".join(q) if q else ""), timeout=max(15.0, (wait or 0) + 10))
    assert r.status == expect, r
    return r.body


def follow(srv, after="0-0", limit=1000):
    """Every event after `after`, page by page; returns (events, last cursor)."""
    out = []
    for _ in range(100000):
        b = feed(srv, after, limit)
        out.extend(b["events"])
        assert cur(b["cursor"]) >= cur(after)
        after = b["cursor"]
        if not b["more"]:
            return out, after
    raise AssertionError("the feed never ended")


def short(events, sale=None):
    return [(e["sale"], e["order"], e["event"], e["status"]) for e in events if sale is None or e["sale"] == sale]


def wait_for(pred, timeout=15.0, what="a state"):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    pytest.fail(f"waited {timeout} s for {what}")


def by_sale(events):
    """Each sale's events in their order (the one order a cluster's merged feed promises)."""
    out = {}
    for e in events:
        out.setdefault(e[0], []).append(e)
    return out


def settled(srv, after, want, timeout=15.0):
    """Asserts that the feed after `after` comes to read `want` (short()), each sale's events in
    their order (sales of different slots of a cluster interleave as relayed): at once on SQLite
    and one Redis, within the relay's delay on a cluster. Returns the events."""
    got = [None, None]

    def same():
        got[1] = follow(srv, after)[0]
        got[0] = short(got[1])
        if len(got[0]) == len(want) and by_sale(got[0]) == by_sale(want):
            got[0] = want
        return got[0] == want

    t0 = time.monotonic()
    while not same() and time.monotonic() - t0 < timeout:
        time.sleep(0.05)
    assert got[0] == want, got[0]
    return got[1]


def at_least(srv, after, n, what="the events"):
    """The events after `after` once there are at least n (and the last cursor)."""
    return wait_for(lambda: (lambda r: r if len(r[0]) >= n else None)(follow(srv, after)), what=what)


@feed_stores
def test_feed_carries_every_event_in_order(server, store, sale_id):
    s, t = sale_id(), sale_id()
    _, start = follow(server)
    server.put_sale(s, stock=10, hold_seconds=600)
    server.put_sale(t, stock=10, hold_seconds=1)
    a = server.take(s, user="alice", request_id="ra").body
    b = server.take(s, user="bob", qty=2).body
    assert server.take(s, user="alice", request_id="ra").status == 200  # a replay: no event
    assert server.adm("POST", f"/v1/sales/{s}/orders/{a['order']}/confirm").status == 200
    assert server.adm("POST", f"/v1/sales/{s}/orders/{a['order']}/confirm").status == 200  # nothing new
    assert server.adm("POST", f"/v1/sales/{s}/orders/{b['order']}/cancel").status == 200
    x = server.take(t, user="carol").body
    evs = wait_for(lambda: (lambda e: e if len(e) >= 6 else None)(follow(server, start)[0]),
                   what="the expiry in the feed")
    want = [
        (s, a["order"], "created", "held"),
        (s, b["order"], "created", "held"),
        (s, a["order"], "confirmed", "confirmed"),
        (s, b["order"], "cancelled", "cancelled"),
        (t, x["order"], "created", "held"),
        (t, x["order"], "expired", "expired"),
    ]
    if store.kind == "redis-cluster":  # s and t are in two slots: their events interleave as relayed
        assert by_sale(short(evs)) == by_sale(want) and len(evs) == 6, short(evs)
    else:
        assert short(evs) == want, short(evs)
    first, second = [e for e in evs if e["sale"] == s][:2]
    assert first["user"] == "alice" and first["qty"] == 1 and first["request_id"] == "ra"
    assert first["expires_at"] == a["expires_at"] and first["created_at"] == a["created_at"]
    assert second["qty"] == 2 and second["request_id"] is None
    cursors = [cur(e["cursor"]) for e in evs]
    assert cursors == sorted(cursors) and len(set(cursors)) == len(cursors)
    # resume from any event: exactly what follows it
    for i in range(len(evs)):
        assert short(follow(server, evs[i]["cursor"])[0]) == short(evs[i + 1:])
    # pages of one
    got, after = [], start
    for _ in range(6):
        page = feed(server, after, limit=1)
        assert len(page["events"]) == 1 and page["more"] is True
        got += page["events"]
        after = page["cursor"]
    assert got == evs
    last = feed(server, after, limit=1)
    assert last == {"events": [], "cursor": after, "more": False}


@feed_stores
def test_feed_final_orders_and_deleted_sales(server, sale_id):
    s, keep = sale_id(), sale_id()
    _, start = follow(server)
    server.put_sale(s, stock=3)
    server.put_sale(keep, stock=3)
    for u in ("a", "b"):
        assert server.take(s, user=u).status == 201
    k = server.take(keep, user="z").body
    settled(server, start, [(s, "1", "created", "confirmed"), (s, "2", "created", "confirmed"),
                            (keep, k["order"], "created", "confirmed")])
    server.put_sale(s, expect=200, stock=3, ends_at=int(time.time()))
    assert server.adm("DELETE", f"/v1/sales/{s}").status == 200
    # a deleted sale's events go with it; the sale made again starts after its ids
    settled(server, start, [(keep, k["order"], "created", "confirmed")])
    server.put_sale(s, stock=3)
    n = server.take(s, user="c").body
    assert n["order"] == "3"
    settled(server, start, [(keep, k["order"], "created", "confirmed"), (s, "3", "created", "confirmed")])


@feed_stores
def test_feed_long_poll_wakes_on_a_new_event(server, sale_id):
    s = sale_id()
    server.put_sale(s, stock=10)
    _, head = follow(server)
    got = {}

    def poll():
        t0 = time.monotonic()
        got["body"] = feed(server, head, wait=30)
        got["took"] = time.monotonic() - t0

    th = threading.Thread(target=poll)
    th.start()
    time.sleep(0.3)  # let it park (if it has not, it simply finds the event at once)
    r = server.take(s, user="u1")
    assert r.status == 201
    th.join(40)
    assert not th.is_alive()
    assert short(got["body"]["events"]) == [(s, r.body["order"], "created", "confirmed")]
    assert got["took"] < 20  # woken by the event, not by the end of the wait
    # nothing new: an empty page after the wait, the same cursor
    c = got["body"]["cursor"]
    t0 = time.monotonic()
    assert feed(server, c, wait=1) == {"events": [], "cursor": c, "more": False}
    assert time.monotonic() - t0 >= 0.9


@feed_stores
def test_feed_bad_queries(server):
    msg = {"after": "after must be a cursor from this feed", "limit": "limit must be an integer from 1 to 1000",
           "wait": "wait must be an integer from 0 to 60 (seconds)"}
    for q, key in [("after=x", "after"), ("after=5", "after"), ("after=-1", "after"), ("after=1-", "after"),
                   ("after=01-2", "after"), ("after=18446744073709551616-0", "after"), ("limit=0", "limit"),
                   ("limit=1001", "limit"), ("limit=x", "limit"), ("wait=61", "wait"), ("wait=-1", "wait"),
                   ("wait=1.5", "wait")]:
        r = server.adm("GET", f"/v1/orders?{q}")
        assert_error(r, 400, "bad_request")
        assert r.body["message"] == msg[key], (q, r)
    # a cursor past the end of this feed was not given by it
    r = server.adm("GET", "/v1/orders?after=99999999999999-0")
    assert_error(r, 400, "bad_request")
    assert_error(server.pub("GET", "/v1/orders"), 404, "not_found")  # admin listener only
    assert feed(server, "0-0", limit=1000, wait=0)["more"] is False


@feed_stores
def test_feed_admin_token(make_server):
    token = "s3cret-token-for-the-feed"
    srv = make_server(env={"SECKILL_ADMIN_TOKEN": token}, token=token)
    assert_error(srv.adm("GET", "/v1/orders", token=""), 401, "unauthorized")
    assert_error(srv.adm("GET", "/v1/orders", token="wrong"), 401, "unauthorized")
    assert srv.adm("GET", "/v1/orders").status == 200


@feed_stores
def test_feed_survives_restarts(make_server, sale_id):
    srv = make_server()
    s = sale_id()
    srv.put_sale(s, stock=100, hold_seconds=600)
    res = storm(srv.public_port, [("POST", f"/v1/sales/{s}/orders", {"user": f"u{i}"}) for i in range(20)])
    assert [st for st, _ in res].count(201) == 20
    before, mid = at_least(srv, "0-0", 20)
    assert len(short(before, s)) == 20
    srv.restart()
    assert follow(srv)[0] == before
    assert srv.adm("POST", f"/v1/sales/{s}/orders/1/confirm").status == 200
    after = settled(srv, mid, [(s, "1", "confirmed", "confirmed")])
    assert cur(after[0]["cursor"]) > cur(mid)


def relay_metrics(srv):
    """The feed relay's samples of /metrics: {"entries", "copied", "raced", "failed", "gaps",
    "lag"} (lag None when the gauge is not shown)."""
    r = srv.adm("GET", "/metrics")
    assert r.status == 200, r
    got = dict(re.findall(r"^(seckill_feed_relay_\S+) (\S+)$", r.body, re.M))
    lag = got.get("seckill_feed_relay_lag_seconds")
    out = {"entries": int(got["seckill_feed_relay_entries_total"]),
           "gaps": int(got["seckill_feed_relay_gaps_total"]), "lag": None if lag is None else float(lag)}
    for k in ("copied", "raced", "failed"):
        out[k] = int(got[f'seckill_feed_relay_copies_total{{result="{k}"}}'])
    return out


def entries_added(port, key):
    """XINFO STREAM's entries-added: every entry ever added to the stream, trimmed ones too."""
    info = resp(port, "XINFO", "STREAM", key)
    return int(dict(zip(info[::2], info[1::2]))["entries-added"])


def relays_add_up(cluster, servers):
    """Asserts that the entries the relays of `servers` count as copied (/metrics) add up to
    those added to the merged stream sk:{feed}, once the last copy's answer is in: the store was
    emptied before the test, so every entry there is one of theirs, and one that lost the race
    counts nothing. Also: no gap, no failure, every relay caught up (its lag gauge below 1 s: idle,
    its rounds complete every 0.2 s). Returns (entries added, each relay's metrics)."""
    fm = cluster.master_of_slot(key_slot("{feed}"))
    got = {}

    def counted():
        n = entries_added(fm, "sk:{feed}")
        got["added"], got["relays"] = n, [relay_metrics(x) for x in servers]
        got["ok"] = sum(m["entries"] for m in got["relays"]) == n == entries_added(fm, "sk:{feed}")
        return got["ok"]

    t0 = time.monotonic()
    while not counted() and time.monotonic() - t0 < 10:
        time.sleep(0.05)
    assert got["ok"], got
    for m in got["relays"]:
        assert m["gaps"] == 0 and m["failed"] == 0 and m["lag"] is not None, got
    assert sum(m["copied"] for m in got["relays"]) >= 1, got
    wait_for(lambda: all(relay_metrics(x)["lag"] < 1.0 for x in servers), timeout=10,
             what="the relays' lag below 1 s")
    return got["added"], got["relays"]


@redis_stores
def test_feed_from_two_instances(make_server, store, sale_id):
    a, b = make_server(), make_server()
    s = sale_id()
    a.put_sale(s, stock=1000)
    _, start = follow(b)
    reqs = [("POST", f"/v1/sales/{s}/orders", {"user": f"u{i}"}) for i in range(300)]
    seen, stop, after = [], threading.Event(), [start]

    def follower():
        while not stop.is_set():
            page = feed(b, after[0], wait=2)
            seen.extend(page["events"])
            after[0] = page["cursor"]

    th = threading.Thread(target=follower)
    th.start()
    ra = threading.Thread(target=lambda: storm(a.public_port, reqs[:150], threads=16))
    ra.start()
    storm(b.public_port, reqs[150:], threads=16)
    ra.join()
    wait_for(lambda: len(seen) >= 300, what="every event at the follower")
    stop.set()
    th.join(10)
    ids = [e["order"] for e in seen]
    assert sorted(ids, key=int) == [str(i) for i in range(1, 301)]  # every order once
    assert ids == sorted(ids, key=int)  # in the order of the sale
    assert short(follow(a, start)[0]) == short(seen)  # the same from either instance
    if store.kind == "redis-cluster":  # 300 created: in 300 entries, or fewer (a take call's in one)
        added, ms = relays_add_up(store.cluster, (a, b))
        assert 1 <= added <= 300, (added, ms)


class SSE:
    def __init__(self, srv, headers=None, query=""):
        self.conn = http.client.HTTPConnection(HOST, srv.admin_port, timeout=15)
        h = {"Accept": "text/event-stream"}
        h.update(headers or {})
        self.conn.request("GET", "/v1/orders" + query, headers=h)
        self.r = self.conn.getresponse()

    def next(self):
        """The next event (id, event, data) or a comment ':'."""
        fields = {}
        while True:
            line = self.r.readline()
            assert line, "the stream ended"
            line = line.decode().rstrip("\n")
            if line == "":
                if fields:
                    return fields
                continue
            if line.startswith(":"):
                return {"comment": line}
            k, _, v = line.partition(": ")
            fields[k] = v

    def events(self, n):
        out = []
        while len(out) < n:
            f = self.next()
            if "data" in f:
                d = json.loads(f["data"])
                OpenAPI.get().check_schema("FeedEvent", d, "a feed stream event")
                assert f["id"] == d["cursor"] and f["event"] == d["event"]
                out.append(d)
        return out

    def close(self):
        self.conn.close()


@feed_stores
def test_feed_stream_and_last_event_id(server, sale_id):
    s = sale_id()
    _, start = follow(server)
    server.put_sale(s, stock=10)
    for u in ("a", "b", "c"):
        assert server.take(s, user=u).status == 201
    st = SSE(server, {"Last-Event-ID": start})
    assert st.r.status == 200 and st.r.getheader("content-type") == "text/event-stream"
    first = st.events(3)
    assert short(first) == [(s, str(i), "created", "confirmed") for i in (1, 2, 3)]
    assert server.take(s, user="d").status == 201  # pushed as it happens
    assert short(st.events(1)) == [(s, "4", "created", "confirmed")]
    st.close()
    # resumed after the second event
    st = SSE(server, {"Last-Event-ID": first[1]["cursor"]})
    assert short(st.events(2)) == [(s, "3", "created", "confirmed"), (s, "4", "created", "confirmed")]
    st.close()
    # ?after= works too; a bad Last-Event-ID is 400
    st = SSE(server, query=f"?after={first[2]['cursor']}")
    assert short(st.events(1)) == [(s, "4", "created", "confirmed")]
    st.close()
    r = server.adm("GET", "/v1/orders", headers={"Accept": "text/event-stream", "Last-Event-ID": "nope"})
    assert_error(r, 400, "bad_request")


@feed_stores
def test_feed_retention_and_410(make_server, sale_id):
    srv = make_server(env={"SECKILL_FEED_RETAIN": "10"})
    s = sale_id()
    srv.put_sale(s, stock=100)
    first = None
    for i in range(12):
        assert srv.take(s, user=f"u{i}").status == 201
        if first is None:
            first = at_least(srv, "0-0", 1)[0][0]["cursor"]
    res = storm(srv.public_port, [("POST", f"/v1/sales/{s}/orders", {"user": f"v{i}"}) for i in range(30)])
    assert [st for st, _ in res].count(201) == 30

    def expired():
        r = srv.adm("GET", f"/v1/orders?after={first}")
        if r.status == 410:
            return r
        assert r.status == 200, r
        return None

    r = wait_for(expired, what="the retention to remove the first events")
    assert_error(r, 410, "cursor_expired")
    # from the start: what is kept, once the last event is in
    evs = wait_for(lambda: (lambda e: e if e and e[-1]["order"] == "42" else None)(follow(srv)[0]),
                   what="the last event")
    assert 10 <= len(evs) < 42
    assert [int(e["order"]) for e in evs] == list(range(43 - len(evs), 43))


@feed_stores
def test_feed_follower_sees_a_storm_exactly_once(server, sale_id):
    s = sale_id()
    n = 3000
    server.put_sale(s, stock=n)
    _, start = follow(server)
    seen, stop, after = [], threading.Event(), [start]

    def follower():
        while not stop.is_set():
            page = feed(server, after[0], wait=1)  # the last one ends 1 s after the storm, not 5
            seen.extend(page["events"])
            after[0] = page["cursor"]

    th = threading.Thread(target=follower)
    th.start()
    res = storm(server.public_port, [("POST", f"/v1/sales/{s}/orders", {"user": f"u{i}"}) for i in range(n)])
    assert [st for st, _ in res].count(201) == n
    wait_for(lambda: len(seen) >= n, timeout=30, what="every event at the follower")
    stop.set()
    th.join(10)
    assert [e["order"] for e in seen] == [str(i) for i in range(1, n + 1)]


@redis_stores
def test_feed_entry_per_take_call_gives_each_event_a_cursor(server, store, sale_id):
    """On Redis a take call's orders are one feed entry (version 3, docs/redis.md): a storm makes
    entries of several events, and a reader going one event at a time (limit=1) gets each once,
    with cursors that only grow, the ones inside an entry included; the same from the start with
    a page of 1000; a cursor inside an entry resumes right after its event."""
    s = sale_id()
    n = 400
    server.put_sale(s, stock=n)
    _, start = follow(server)
    res = storm(server.public_port, [("POST", f"/v1/sales/{s}/orders", {"user": f"u{i}"}) for i in range(n)],
                threads=16)
    assert [st for st, _ in res].count(201) == n
    if store.cluster is not None:
        port, key = store.cluster.master_of_slot(key_slot("{feed}")), "sk:{feed}"
    else:
        port, key = store.redis.port, "sk:feed"
    every = wait_for(lambda: (lambda e: e if len(e) == n else None)(follow(server, start)[0]),
                     what="every event in the feed")
    assert [e["order"] for e in every] == [str(i) for i in range(1, n + 1)]
    entries = resp(port, "XRANGE", key, "(" + start, "+")
    sizes = [int(dict(zip(f[::2], f[1::2])).get("n", "1")) for _, f in entries]
    assert sum(sizes) == n and max(sizes) > 1, sizes  # entries of several events
    assert len(entries) < n
    one, after = [], start
    for _ in range(n):
        b = feed(server, after, limit=1)
        assert len(b["events"]) == 1 and b["more"] is True  # a full page (every store)
        assert cur(b["cursor"]) > cur(after) and b["cursor"] == b["events"][0]["cursor"]
        one.append(b["events"][0])
        after = b["cursor"]
    assert one == every
    assert feed(server, after)["events"] == []
    # inside an entry of several events: on from its second event
    i = next(j for j, (_, f) in enumerate(entries) if int(dict(zip(f[::2], f[1::2])).get("n", "1")) > 1)
    k = sum(sizes[:i])  # events before that entry
    b = feed(server, every[k]["cursor"], limit=2)
    assert b["events"] == every[k + 1:k + 3]


@feed_stores
def test_feed_stream_heartbeats_and_its_bound(make_server, sale_id):
    srv = make_server(extra_args=["--threads", "1"], env={"SECKILL_FEED_HEARTBEAT_MS": "200"})
    st = SSE(srv)
    assert st.next() == {"retry": "2000"}
    assert st.next() == {"comment": ":"}  # nothing happens: a heartbeat
    s = sale_id()
    srv.put_sale(s, stock=1)
    assert srv.take(s, user="a").status == 201
    while True:  # heartbeats may come first
        f = st.next()
        if "data" in f:
            assert f["event"] == "created" and json.loads(f["data"])["order"] == "1"
            break
    # at most 64 streams a worker (one worker here): the 65th is refused
    more = [SSE(srv) for _ in range(63)]
    assert all(m.r.status == 200 for m in more)
    r = srv.adm("GET", "/v1/orders", headers={"Accept": "text/event-stream"})
    assert_error(r, 503, "unavailable")
    more.pop().close()
    more.append(wait_for(lambda: (lambda x: x if x.r.status == 200 else x.close())(SSE(srv)),
                         what="a stream slot to free up"))
    for m in more + [st]:
        m.close()


@feed_stores
def test_feed_shutdown_answers_long_polls_and_ends_streams(make_server):
    srv = make_server()
    _, head = follow(srv)
    got = {}

    def poll():
        got["body"] = feed(srv, head, wait=60)

    th = threading.Thread(target=poll)
    th.start()
    st = SSE(srv)
    assert st.next() == {"retry": "2000"}
    time.sleep(0.3)  # parked (if not yet, the stop answers it all the same)
    t0 = time.monotonic()
    assert srv.stop() == 0  # exit 0, without waiting for the long-poll or the stream
    srv.expect_dead = True
    th.join(20)
    assert got["body"] == {"events": [], "cursor": head, "more": False}
    assert time.monotonic() - t0 < 10  # not the 60 s of the wait
    assert st.r.read() == b""  # the stream ended cleanly


def slot_tag(slot):
    tag = 0
    while key_slot(str(tag)) != slot:
        tag += 1
    return tag


@cluster_only
def test_feed_cluster_merges_sales_of_every_master(make_server, store, sale_id):
    """Sales on each of the three masters: the merged feed has every event once, each sale's in
    its order, deletions included (their entries passed over); the relay leaves its positions in
    sk:{feed}:pos and trims nothing it has not copied. /metrics: the entries the two racing
    relays count as copied add up to those added to the merged stream (one that lost the race
    counts nothing), no gap, both caught up."""
    c = store.cluster
    masters = sorted(c.masters())
    by_master = {}
    while len(by_master) < len(masters):
        s = sale_id()
        by_master.setdefault(c.master_of_slot(key_slot(s)), s)
    sales = [by_master[m] for m in masters]
    a, b = make_server(), make_server()
    for s in sales:
        a.put_sale(s, stock=50, hold_seconds=600)
    reqs = [("POST", f"/v1/sales/{s}/orders", {"user": f"u{i}"}) for i in range(20) for s in sales]
    res = storm(a.public_port, reqs[::2], threads=8)
    res += storm(b.public_port, reqs[1::2], threads=8)
    assert [st for st, _ in res].count(201) == 60
    for s in sales:
        assert b.adm("POST", f"/v1/sales/{s}/orders/3/cancel").status == 200
    evs, _ = at_least(b, "0-0", 63)
    assert len(evs) == 63
    for s in sales:
        mine = [(e["order"], e["event"]) for e in evs if e["sale"] == s]
        assert mine == [(str(i), "created") for i in range(1, 21)] + [("3", "cancelled")], (s, mine)
    cursors = [cur(e["cursor"]) for e in evs]
    assert cursors == sorted(cursors) and len(set(cursors)) == 63
    assert follow(a)[0] == evs  # the same merged feed from either instance
    # every slot stream's position is its last entry
    fm = c.master_of_slot(key_slot("{feed}"))
    for s in sales:
        key = "sk:slot:{%d}:feed" % slot_tag(key_slot(s))
        last = resp(c.master_of_slot(key_slot(s)), "XREVRANGE", key, "+", "-", "COUNT", "1")
        assert resp(fm, "HGET", "sk:{feed}:pos", key) == last[0][0]
    # a deleted sale's events are passed over from then on (its deletion travels the same way)
    gone = sales[0]
    a.put_sale(gone, expect=200, stock=50, hold_seconds=600, ends_at=int(time.time()))
    held = [str(i) for i in range(1, 21) if i != 3]
    for o in held:
        assert a.adm("POST", f"/v1/sales/{gone}/orders/{o}/confirm").status == 200
    assert a.adm("DELETE", f"/v1/sales/{gone}").status == 200
    want = [(e["sale"], e["order"], e["event"], e["status"]) for e in evs if e["sale"] != gone]
    settled(b, "0-0", want)
    assert resp(fm, "HGET", "sk:{feed}:gone", gone) == "20"
    # /metrics: what the relays copied is what the merged stream holds (nothing trimmed at the
    # default retention): 60 created (a take call's orders in one entry: 3 entries or more), 3
    # cancelled, 19 confirmed, 1 deletion
    added, ms = relays_add_up(c, (a, b))
    assert resp(fm, "XLEN", "sk:{feed}") == added
    assert 26 <= added <= 83, (added, ms)
    assert sum(m["copied"] for m in ms) >= 3, ms  # three slots had entries


@cluster_only
def test_feed_relay_lag_grows_while_the_merged_feeds_master_stalls(make_server, store, sale_id):
    """seckill_feed_relay_lag_seconds: the time since the start of the relay's last complete
    round. Idle it stays below the 0.2 s between two reads of the marks (plus scheduling); while
    the merged feed's master answers nothing (CLIENT PAUSE) no round completes and it grows with
    the clock; once the master answers again it drops back, and the entries written meanwhile are
    copied."""
    srv = make_server()
    fm = store.cluster.master_of_slot(key_slot("{feed}"))
    wait_for(lambda: (relay_metrics(srv)["lag"] or 9) < 1.0, timeout=10, what="the relay's first rounds")
    s = sale_id()
    while store.cluster.master_of_slot(key_slot(s)) == fm:
        s = sale_id()
    srv.put_sale(s, stock=10)
    assert resp(fm, "CLIENT", "PAUSE", "2000", "ALL") == "OK"
    t0 = time.monotonic()
    took = []  # on another master: its entry waits in its slot stream (the take may wait too)
    th = threading.Thread(target=lambda: took.append(srv.take(s, user="a").status))
    th.start()
    lags = []
    while time.monotonic() - t0 < 1.8:
        lags.append(relay_metrics(srv)["lag"])
        time.sleep(0.1)
    assert max(lags) >= 1.2 and lags == sorted(lags), lags  # only grows
    th.join(15)
    assert took == [201]
    wait_for(lambda: relay_metrics(srv)["lag"] < 1.0, timeout=10, what="the lag back below 1 s")
    evs, _ = at_least(srv, "0-0", 1)
    assert short(evs) == [(s, "1", "created", "confirmed")]
    assert relay_metrics(srv)["entries"] == 1
