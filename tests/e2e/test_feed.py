"""The winners feed, GET /v1/orders (admin, issue 17): every order event (created, confirmed,
cancelled, expired) of every sale in one sequence after an opaque cursor; `wait` long-polls;
Accept: text/event-stream streams (Last-Event-ID resumes); bounded retention (410 for a cursor
before it). Both stores and two instances on one Redis; on a Redis Cluster, 501 feed_unavailable
(no relay merges the slots' streams yet, docs/redis.md), while takes still tell their slot's."""
import http.client
import json
import threading
import time

import pytest

from conftest import HOST, OpenAPI, Server, assert_error, key_slot, resp, storm

redis_only = pytest.mark.parametrize("store", ["redis"], indirect=True)
# where the feed exists: every store but a Redis Cluster (test_feed_on_a_cluster_is_501)
feed_stores = pytest.mark.parametrize("store", ["sqlite", "redis"], indirect=True)
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


@feed_stores
def test_feed_carries_every_event_in_order(server, sale_id):
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
    assert short(evs) == [
        (s, a["order"], "created", "held"),
        (s, b["order"], "created", "held"),
        (s, a["order"], "confirmed", "confirmed"),
        (s, b["order"], "cancelled", "cancelled"),
        (t, x["order"], "created", "held"),
        (t, x["order"], "expired", "expired"),
    ], short(evs)
    first = evs[0]
    assert first["user"] == "alice" and first["qty"] == 1 and first["request_id"] == "ra"
    assert first["expires_at"] == a["expires_at"] and first["created_at"] == a["created_at"]
    assert evs[1]["qty"] == 2 and evs[1]["request_id"] is None
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
    assert short(follow(server, start)[0]) == [(s, "1", "created", "confirmed"), (s, "2", "created", "confirmed"),
                                               (keep, k["order"], "created", "confirmed")]
    server.put_sale(s, expect=200, stock=3, ends_at=int(time.time()))
    assert server.adm("DELETE", f"/v1/sales/{s}").status == 200
    # a deleted sale's events go with it; the sale made again starts after its ids
    assert short(follow(server, start)[0]) == [(keep, k["order"], "created", "confirmed")]
    server.put_sale(s, stock=3)
    n = server.take(s, user="c").body
    assert n["order"] == "3"
    assert short(follow(server, start)[0]) == [(keep, k["order"], "created", "confirmed"), (s, "3", "created", "confirmed")]


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
    before, mid = follow(srv)
    assert len(short(before, s)) == 20
    srv.restart()
    assert follow(srv)[0] == before
    assert srv.adm("POST", f"/v1/sales/{s}/orders/1/confirm").status == 200
    after, _ = follow(srv, mid)
    assert short(after) == [(s, "1", "confirmed", "confirmed")]
    assert cur(after[0]["cursor"]) > cur(mid)


@redis_only
def test_feed_from_two_instances(make_server, sale_id):
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
            first = follow(srv)[0][0]["cursor"]
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
    evs, _ = follow(srv)  # from the start: what is kept
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
            page = feed(server, after[0], wait=5)
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


@cluster_only
def test_feed_on_a_cluster_is_501(server, store, sale_id):
    """On a Redis Cluster GET /v1/orders answers 501 feed_unavailable (long poll and stream too),
    and every take still tells its slot's own stream (sk:slot:{TAG}:feed), in order."""
    s = sale_id()
    server.put_sale(s, stock=10, hold_seconds=600)
    for u in ("ann", "bob", "cy"):
        assert server.take(s, user=u).status == 201
    assert server.adm("POST", f"/v1/sales/{s}/orders/2/cancel").status == 200
    assert_error(server.adm("GET", "/v1/orders"), 501, "feed_unavailable")
    assert_error(server.adm("GET", "/v1/orders?after=0-0&wait=1"), 501, "feed_unavailable")
    slot = key_slot(s)
    tag = 0
    while key_slot(str(tag)) != slot:
        tag += 1
    entries = resp(store.cluster.master_of_slot(slot), "XRANGE", "sk:slot:{%d}:feed" % tag, "-", "+")
    got = []
    for _, f in entries:
        d = dict(zip(f[::2], f[1::2]))  # feed entries of version 2 (docs/redis.md): sale, order, o
        d.update(zip(("event", "user", "qty", "request_id", "created_at", "expires_at"), d.pop("o").split("\t")))
        d["event"] = {"n": "created", "c": "confirmed", "x": "cancelled", "e": "expired"}[d["event"]]
        if d["sale"] == s:
            got.append((d["order"], d["event"], d["user"]))
    assert got == [("1", "created", "ann"), ("2", "created", "bob"), ("3", "created", "cy"),
                   ("2", "cancelled", "bob")], got
