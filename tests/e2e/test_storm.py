"""Concurrent storms with exact counts, against both stores."""

import collections
import os
import re
import subprocess

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
