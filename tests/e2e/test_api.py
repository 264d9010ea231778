"""API.md, row by row, against both stores (the `server` fixture is parametrized)."""

import csv
import http.client
import io
import json
import re
import time

import pytest

from conftest import (CSV_HEADER, HOST, assert_error, each, assert_order, parse_raw_responses,
                      raw_exchange, request)

TWO53 = 2 ** 53


def sale_obj(sale, stock, sold=0, held=0, per_user_limit=0, hold_seconds=0, starts_at=None,
             ends_at=None, state=None, retain_seconds=None):
    remaining = stock - sold - held
    if state is None:
        state = "sold_out" if remaining == 0 else "open"
    return {"sale": sale, "stock": stock, "sold": sold, "held": held, "remaining": remaining,
            "per_user_limit": per_user_limit, "hold_seconds": hold_seconds,
            "starts_at": starts_at, "ends_at": ends_at, "retain_seconds": retain_seconds, "state": state}


# ------------------------------------------------------------------------------------- sales


def test_sale_create_201_and_get(server, sale_id):
    s = sale_id()
    r = server.adm("PUT", f"/v1/sales/{s}", {"stock": 100, "per_user_limit": 1, "hold_seconds": 0,
                                             "starts_at": None, "ends_at": None})
    assert r.status == 201, r
    assert r.headers["content-type"].startswith("application/json"), r
    want = sale_obj(s, 100, per_user_limit=1)
    for port in (server.public_port, server.admin_port):
        g = request(port, "GET", f"/v1/sales/{s}")
        assert g.status == 200, g
        assert g.headers["content-type"].startswith("application/json"), g
        assert g.body == want


def test_sale_create_defaults(server, sale_id):
    s = sale_id()
    server.put_sale(s, stock=7)
    assert server.sale(s) == sale_obj(s, 7)


def test_sale_update_200(server, sale_id):
    s = sale_id()
    server.put_sale(s, stock=10, per_user_limit=2)
    r = server.adm("PUT", f"/v1/sales/{s}", {"stock": 25, "per_user_limit": 3})
    assert r.status == 200, r
    assert server.sale(s) == sale_obj(s, 25, per_user_limit=3)
    # a third PUT is an update again
    r = server.adm("PUT", f"/v1/sales/{s}", {"stock": 5, "per_user_limit": 3})
    assert r.status == 200, r
    assert server.sale(s)["stock"] == 5


def test_sale_stock_limits(server, sale_id):
    s0, smax, sover = sale_id(), sale_id(), sale_id()
    server.put_sale(s0, stock=0)
    assert server.sale(s0) == sale_obj(s0, 0, state="sold_out")
    assert_error(server.take(s0, user="u"), 409, "sold_out")
    server.put_sale(smax, stock=TWO53)
    assert server.sale(smax) == sale_obj(smax, TWO53)
    r = server.adm("PUT", f"/v1/sales/{sover}", {"stock": TWO53 + 1})
    assert_error(r, 400, "bad_request")
    assert_error(server.pub("GET", f"/v1/sales/{sover}"), 404, "no_such_sale")


def test_stock_update_below_taken(server, sale_id):
    s = sale_id()
    server.put_sale(s, stock=5)
    assert server.take(s, qty=3).status == 201
    r = server.adm("PUT", f"/v1/sales/{s}", {"stock": 2})
    assert_error(r, 409, "stock_below_taken")
    assert server.sale(s) == sale_obj(s, 5, sold=3)
    assert server.adm("PUT", f"/v1/sales/{s}", {"stock": 3}).status == 200
    assert server.sale(s) == sale_obj(s, 3, sold=3, state="sold_out")
    assert_error(server.take(s, qty=1), 409, "sold_out")
    # raising the stock again reopens the sale (the sold-out fast path must not stick)
    assert server.adm("PUT", f"/v1/sales/{s}", {"stock": 4}).status == 200
    assert server.sale(s) == sale_obj(s, 4, sold=3)
    assert server.take(s, qty=1).status == 201
    assert_error(server.take(s, qty=1), 409, "sold_out")
    assert server.sale(s) == sale_obj(s, 4, sold=4)


def test_sale_list(server, sale_id):
    r = server.adm("GET", "/v1/sales")
    assert r.status == 200 and r.body == {"sales": []}, r
    ids = [sale_id() for _ in range(3)]
    for i, s in enumerate(ids):
        server.put_sale(s, stock=10 + i, per_user_limit=i)
    server.take(ids[1], user="a", qty=1)
    r = server.adm("GET", "/v1/sales")
    assert r.status == 200, r
    assert set(r.body) == {"sales"}
    got = sorted(r.body["sales"], key=lambda x: x["sale"])
    want = sorted([sale_obj(ids[0], 10), sale_obj(ids[1], 11, sold=1, per_user_limit=1),
                   sale_obj(ids[2], 12, per_user_limit=2)], key=lambda x: x["sale"])
    assert got == want


BAD_SALES = [
    ("unknown field", {"stock": 10, "colour": "red"}),
    ("stock missing", {"per_user_limit": 1}),
    ("empty object", {}),
    ("stock string", {"stock": "10"}),
    ("stock float", {"stock": 1.5}),
    ("stock bool", {"stock": True}),
    ("stock null", {"stock": None}),
    ("stock negative", {"stock": -1}),
    ("stock too big", {"stock": TWO53 + 1}),
    ("limit negative", {"stock": 10, "per_user_limit": -1}),
    ("limit string", {"stock": 10, "per_user_limit": "1"}),
    ("hold negative", {"stock": 10, "hold_seconds": -1}),
    ("hold string", {"stock": 10, "hold_seconds": "5"}),
    ("starts_at string", {"stock": 10, "starts_at": "2024-01-01"}),
    ("starts_at negative", {"stock": 10, "starts_at": -5}),
    ("ends_at float", {"stock": 10, "ends_at": 1.5}),
    ("ends_at == starts_at", {"stock": 10, "starts_at": 2000000000, "ends_at": 2000000000}),
    ("ends_at < starts_at", {"stock": 10, "starts_at": 2000000000, "ends_at": 1999999999}),
    ("array body", [{"stock": 10}]),
    ("number body", 10),
    ("string body", "stock"),
]


def test_sale_validation_400(server, sale_id):
    def check(case):
        why, body = case
        s = sale_id()
        assert_error(server.adm("PUT", f"/v1/sales/{s}", body), 400, "bad_request")
        # nothing was created
        assert_error(server.pub("GET", f"/v1/sales/{s}"), 404, "no_such_sale")
    each(BAD_SALES, check, name=lambda c: c[0])
    assert server.adm("GET", "/v1/sales").body == {"sales": []}


def test_sale_validation_400_on_update_keeps_sale(server, sale_id):
    s = sale_id()
    server.put_sale(s, stock=10, per_user_limit=1)
    for body in ({"stock": -3}, {"stock": 10, "bogus": 1}, {"per_user_limit": 2},
                 {"stock": 10, "starts_at": 20, "ends_at": 10}):
        assert_error(server.adm("PUT", f"/v1/sales/{s}", body), 400, "bad_request")
    assert server.sale(s) == sale_obj(s, 10, per_user_limit=1)


def test_sale_empty_put_body_400(server, sale_id):
    s = sale_id()
    assert_error(server.adm("PUT", f"/v1/sales/{s}", b""), 400, "bad_request")


def test_invalid_sale_id_400(server):
    def check(bad):
        assert_error(server.adm("PUT", f"/v1/sales/{bad}", {"stock": 1}), 400, "bad_request")
        assert_error(server.pub("GET", f"/v1/sales/{bad}"), 400, "bad_request")
        assert_error(server.pub("POST", f"/v1/sales/{bad}/orders", {"user": "u"}), 400,
                     "bad_request")
    each(["bad!id", "a%20b", "x" * 65, "caf%C3%A9", "a%2Fb", "a*b", "a~b"], check)
    assert server.adm("GET", "/v1/sales").body == {"sales": []}


def test_sale_id_charset_and_64_chars(server):
    for s in ("A-z_0.9", "y" * 64, "-", "..."):
        server.put_sale(s, stock=3)
        assert server.sale(s)["sale"] == s
        r = server.take(s, user="u")
        assert r.status == 201, (s, r)
        assert r.body["sale"] == s


def test_no_such_sale_404(server):
    assert_error(server.pub("GET", "/v1/sales/nope"), 404, "no_such_sale")
    assert_error(server.adm("GET", "/v1/sales/nope"), 404, "no_such_sale")
    assert_error(server.take("nope", user="u"), 404, "no_such_sale")
    assert_error(server.adm("GET", "/v1/sales/nope/orders"), 404, "no_such_sale")


def test_sale_states_by_window(server, sale_id):
    now = int(time.time())
    sched, ended, open_ = sale_id(), sale_id(), sale_id()
    server.put_sale(sched, stock=5, starts_at=now + 3600)
    server.put_sale(ended, stock=5, starts_at=now - 7200, ends_at=now - 3600)
    server.put_sale(open_, stock=5, starts_at=now - 3600, ends_at=now + 3600)
    assert server.sale(sched) == sale_obj(sched, 5, starts_at=now + 3600, state="scheduled")
    assert server.sale(ended) == sale_obj(ended, 5, starts_at=now - 7200, ends_at=now - 3600,
                                          state="ended")
    assert server.sale(open_) == sale_obj(open_, 5, starts_at=now - 3600, ends_at=now + 3600)
    assert_error(server.take(sched, user="u"), 403, "not_started")
    assert_error(server.take(ended, user="u"), 403, "ended")
    assert server.take(open_, user="u").status == 201
    # refusals take nothing
    assert server.sale(sched)["sold"] == 0 and server.sale(ended)["sold"] == 0


def test_window_opens_and_closes(server, sale_id):
    """The window is a comparison of the take's time with starts_at and ends_at: moved into the past
    by a PUT rather than waited for (the clock's part is the same comparison)."""
    s = sale_id()
    now = int(time.time())
    server.put_sale(s, stock=10, starts_at=now + 3600, ends_at=now + 7200)
    assert_error(server.take(s, user="a", request_id="early"), 403, "not_started")
    start, end = now - 10, now + 3600
    server.put_sale(s, expect=200, stock=10, starts_at=start, ends_at=end)
    r = server.take(s, user="a", request_id="in")
    assert r.status == 201, r
    assert server.sale(s)["state"] == "open"
    # the early request left nothing behind: its request_id is decided anew now
    r2 = server.take(s, user="b", request_id="early")
    assert r2.status == 201, r2
    end = int(time.time())  # ends now: a take at this second is after the end
    server.put_sale(s, expect=200, stock=10, starts_at=start, ends_at=end)
    assert_error(server.take(s, user="c"), 403, "ended")
    assert server.sale(s) == sale_obj(s, 10, sold=2, starts_at=start, ends_at=end, state="ended")
    # a replay is answered for ever, also after the end
    again = server.take(s, user="a", request_id="in")
    assert again.status == 200 and again.body == r.body, again


def test_half_open_windows(server, sale_id):
    now = int(time.time())
    only_end, only_start = sale_id(), sale_id()
    server.put_sale(only_end, stock=5, ends_at=now - 1)
    server.put_sale(only_start, stock=5, starts_at=now + 3600)
    assert server.sale(only_end) == sale_obj(only_end, 5, ends_at=now - 1, state="ended")
    assert server.sale(only_start) == sale_obj(only_start, 5, starts_at=now + 3600, state="scheduled")
    assert_error(server.take(only_end, user="u"), 403, "ended")
    assert_error(server.take(only_start, user="u"), 403, "not_started")
    # moving the window by an update opens the sale
    r = server.adm("PUT", f"/v1/sales/{only_start}", {"stock": 5, "starts_at": now - 10})
    assert r.status == 200, r
    assert server.take(only_start, user="u").status == 201


def test_sale_ids_are_case_sensitive(server):
    server.put_sale("Case", stock=1)
    assert_error(server.pub("GET", "/v1/sales/case"), 404, "no_such_sale")
    server.put_sale("case", stock=2)
    assert server.sale("Case")["stock"] == 1 and server.sale("case")["stock"] == 2


# ------------------------------------------------------------------------------------- takes


def test_user_is_compared_after_json_unescaping(server, sale_id):
    s = sale_id()
    server.put_sale(s, stock=10, per_user_limit=1)
    r = server.pub("POST", f"/v1/sales/{s}/orders", '{"user": "é"}'.encode())
    assert r.status == 201 and r.body["user"] == "é", r
    r = server.pub("POST", f"/v1/sales/{s}/orders", b'{"user": "\\u00e9"}')
    assert_error(r, 409, "user_limit")
    # the same for request ids: an escaped spelling is the same request id
    r1 = server.pub("POST", f"/v1/sales/{s}/orders", '{"user": "x", "request_id": "ré"}'.encode())
    assert r1.status == 201, r1
    r2 = server.pub("POST", f"/v1/sales/{s}/orders", b'{"user": "x", "request_id": "r\\u00e9"}')
    assert r2.status == 200 and r2.body == r1.body, r2


def test_take_201_body(server, sale_id):
    s = sale_id()
    server.put_sale(s, stock=10, per_user_limit=2)
    t0 = time.time()
    r = server.take(s, user="alice", qty=1, request_id="c1f9e0")
    t1 = time.time()
    assert r.status == 201, r
    assert r.headers["content-type"].startswith("application/json"), r
    assert_order(r.body, s, "alice", 1, "c1f9e0", "confirmed", t0, t1)
    assert abs(r.body["created_at"] - time.time()) <= 2
    assert server.sale(s) == sale_obj(s, 10, sold=1, per_user_limit=2)


def test_take_defaults_qty_1_and_anonymous(server, sale_id):
    s = sale_id()
    server.put_sale(s, stock=3)  # per_user_limit 0: user may be omitted
    r = server.take(s)
    assert r.status == 201, r
    assert r.body["qty"] == 1 and r.body["user"] is None and r.body["request_id"] is None, r
    assert r.body["status"] == "confirmed" and r.body["expires_at"] is None
    # an empty body is {}
    r = server.pub("POST", f"/v1/sales/{s}/orders", b"")
    assert r.status == 201, r
    assert r.body["qty"] == 1
    r = server.take(s, user="named", qty=1)
    assert r.status == 201 and r.body["user"] == "named", r
    assert server.sale(s) == sale_obj(s, 3, sold=3)


def test_take_on_admin_listener(server, sale_id):
    s = sale_id()
    server.put_sale(s, stock=2)
    r = server.take(s, via="adm", user="x")
    assert r.status == 201, r
    assert server.sale(s)["sold"] == 1


def test_sold_out_409(server, sale_id):
    s = sale_id()
    server.put_sale(s, stock=2)
    assert server.take(s, user="a").status == 201
    assert server.take(s, user="b").status == 201
    for u in ("c", "d", "a"):
        assert_error(server.take(s, user=u), 409, "sold_out")
    assert server.sale(s) == sale_obj(s, 2, sold=2)
    assert server.sale(s)["state"] == "sold_out"


def test_qty_all_or_nothing(server, sale_id):
    s = sale_id()
    server.put_sale(s, stock=5)
    r = server.take(s, user="a", qty=3)
    assert r.status == 201 and r.body["qty"] == 3, r
    assert_error(server.take(s, user="b", qty=3), 409, "sold_out")
    assert server.sale(s) == sale_obj(s, 5, sold=3)
    r = server.take(s, user="c", qty=2)
    assert r.status == 201 and r.body["qty"] == 2, r
    assert_error(server.take(s, user="d", qty=1), 409, "sold_out")
    assert server.sale(s) == sale_obj(s, 5, sold=5)


def test_qty_huge_is_sold_out(server, sale_id):
    s = sale_id()
    server.put_sale(s, stock=5)
    assert_error(server.take(s, qty=TWO53), 409, "sold_out")
    assert_error(server.take(s, qty=6), 409, "sold_out")
    assert server.take(s, qty=5).status == 201


def test_qty_invalid_400(server, sale_id):
    s = sale_id()
    server.put_sale(s, stock=5)
    each([0, -1, 1.5, "1", True, None, TWO53 + 1, [1], {"n": 1}],
         lambda qty: assert_error(server.take(s, user="u", qty=qty), 400, "bad_request"))
    assert server.sale(s) == sale_obj(s, 5)


def test_user_limit_409(server, sale_id):
    s = sale_id()
    server.put_sale(s, stock=100, per_user_limit=2)
    assert server.take(s, user="alice", qty=1).status == 201
    assert_error(server.take(s, user="alice", qty=2), 409, "user_limit")
    assert server.take(s, user="alice", qty=1).status == 201
    assert_error(server.take(s, user="alice", qty=1), 409, "user_limit")
    assert_error(server.take(s, user="bob", qty=3), 409, "user_limit")
    assert server.take(s, user="bob", qty=2).status == 201
    assert server.sale(s) == sale_obj(s, 100, sold=4, per_user_limit=2)


def test_missing_user_with_limit_400(server, sale_id):
    s = sale_id()
    server.put_sale(s, stock=10, per_user_limit=1)
    assert_error(server.take(s), 400, "bad_request")
    assert_error(server.take(s, qty=1, request_id="r1"), 400, "bad_request")
    assert_error(server.pub("POST", f"/v1/sales/{s}/orders", b""), 400, "bad_request")
    assert server.sale(s)["sold"] == 0


@pytest.mark.parametrize("field", ["user", "request_id"])
def test_identifier_rules(server, sale_id, field):
    s = sale_id()
    server.put_sale(s, stock=100, per_user_limit=0)
    good = ["x", "a" * 128, "é" * 64, "ålice ü 雪", "with space", "ok-id"]
    bad = ["", "a" * 129, "é" * 64 + "a", "a\u0001b", "tab\there", "new\nline", "nul\u0000x",
           "\u001f", 5, 1.5, True, ["a"], {"a": 1}]
    for i, v in enumerate(good):
        body = {"qty": 1, field: v}
        if field == "request_id":
            body["user"] = f"u{i}"
        r = server.take(s, **body)
        assert r.status == 201, (v, r)
        assert r.body[field] == v, r
    for v in bad:
        body = {"qty": 1, field: v}
        if field == "request_id":
            body["user"] = "someone"
        assert_error(server.take(s, **body), 400, "bad_request")
    assert server.sale(s)["sold"] == len(good)


def test_request_id_replay_200(server, sale_id):
    s = sale_id()
    server.put_sale(s, stock=3, per_user_limit=0)
    r1 = server.take(s, user="alice", qty=2, request_id="rid-1")
    assert r1.status == 201, r1
    for _ in range(3):
        r2 = server.take(s, user="alice", qty=2, request_id="rid-1")
        assert r2.status == 200, r2
        assert r2.body == r1.body
        assert r2.headers["content-type"].startswith("application/json")
    assert server.sale(s) == sale_obj(s, 3, sold=2)
    # the replay is answered even once the sale is sold out
    assert server.take(s, user="bob", qty=1).status == 201
    r3 = server.take(s, user="alice", qty=2, request_id="rid-1")
    assert r3.status == 200 and r3.body == r1.body, r3
    # also on the admin listener
    r4 = server.take(s, via="adm", user="alice", qty=2, request_id="rid-1")
    assert r4.status == 200 and r4.body == r1.body, r4
    assert server.sale(s) == sale_obj(s, 3, sold=3)


def test_request_id_default_qty_is_same_request(server, sale_id):
    s = sale_id()
    server.put_sale(s, stock=3, per_user_limit=1)
    r1 = server.take(s, user="alice", request_id="q")
    assert r1.status == 201
    r2 = server.take(s, user="alice", qty=1, request_id="q")
    assert r2.status == 200 and r2.body == r1.body, r2


def test_request_id_reused_409(server, sale_id):
    s = sale_id()
    server.put_sale(s, stock=10, per_user_limit=0)
    r1 = server.take(s, user="alice", qty=1, request_id="rid")
    assert r1.status == 201
    assert_error(server.take(s, user="bob", qty=1, request_id="rid"), 409, "request_id_reused")
    assert_error(server.take(s, user="alice", qty=2, request_id="rid"), 409, "request_id_reused")
    assert_error(server.take(s, qty=1, request_id="rid"), 409, "request_id_reused")
    assert server.sale(s) == sale_obj(s, 10, sold=1)
    # request ids are per sale: the same one in another sale is a new request
    s2 = sale_id()
    server.put_sale(s2, stock=10)
    r = server.take(s2, user="bob", qty=2, request_id="rid")
    assert r.status == 201, r


def test_rejected_request_leaves_nothing(server, sale_id):
    s = sale_id()
    server.put_sale(s, stock=2, per_user_limit=1)
    assert server.take(s, user="alice", request_id="ra").status == 201
    # a user_limit rejection leaves nothing
    assert_error(server.take(s, user="alice", request_id="rd"), 409, "user_limit")
    # a 400 with a request id leaves nothing either
    assert_error(server.take(s, user="carol", qty=0, request_id="rc"), 400, "bad_request")
    assert server.take(s, user="carol", request_id="rx").status == 201
    # a sold_out rejection leaves nothing
    assert_error(server.take(s, user="bob", request_id="rb"), 409, "sold_out")
    assert server.adm("PUT", f"/v1/sales/{s}", {"stock": 5, "per_user_limit": 1}).status == 200
    rb = server.take(s, user="bob", request_id="rb")
    assert rb.status == 201, rb
    # rc and rd were never recorded: other users may use them now
    rc = server.take(s, user="dave", qty=1, request_id="rc")
    assert rc.status == 201, rc
    rd = server.take(s, user="erin", request_id="rd")
    assert rd.status == 201, rd
    assert server.sale(s) == sale_obj(s, 5, sold=5, per_user_limit=1)
    assert [o["request_id"] for o in server.orders(s)] == ["ra", "rx", "rb", "rc", "rd"]


def test_order_ids_increasing_decimal_strings(server, sale_id):
    s = sale_id()
    server.put_sale(s, stock=50)
    ids = []
    for i in range(20):
        r = server.take(s, user=f"u{i}", qty=1 + i % 2)
        assert r.status == 201, r
        assert isinstance(r.body["order"], str) and re.fullmatch(r"[0-9]+", r.body["order"]), r
        ids.append(int(r.body["order"]))
    assert all(a < b for a, b in zip(ids, ids[1:])), ids


def test_get_order(server, sale_id):
    s = sale_id()
    server.put_sale(s, stock=10)
    r = server.take(s, user="alice", qty=2, request_id="g1")
    assert r.status == 201
    g = server.adm("GET", f"/v1/sales/{s}/orders/{r.body['order']}")
    assert g.status == 200 and g.body == r.body, g
    assert_error(server.adm("GET", f"/v1/sales/{s}/orders/{int(r.body['order']) + 1000}"),
                 404, "no_such_order")
    assert_error(server.adm("GET", f"/v1/sales/nosale/orders/{r.body['order']}"), 404,
                 "no_such_sale")
    # admin only
    assert_error(server.pub("GET", f"/v1/sales/{s}/orders/{r.body['order']}"), 404, "not_found")


def test_order_listing_pagination(server, sale_id):
    s = sale_id()
    server.put_sale(s, stock=100)
    made = []
    for i in range(7):
        r = server.take(s, user=f"u{i}", qty=1, request_id=f"r{i}")
        assert r.status == 201
        made.append(r.body)
    other = sale_id()
    server.put_sale(other, stock=10)
    server.take(other, user="x")
    r = server.adm("GET", f"/v1/sales/{s}/orders")
    assert r.status == 200, r
    assert r.body == {"orders": made, "next": None}
    pages, after = [], None
    while True:
        q = "limit=3" + (f"&after={after}" if after else "")
        r = server.adm("GET", f"/v1/sales/{s}/orders?{q}")
        assert r.status == 200, r
        assert set(r.body) == {"orders", "next"}
        pages.append(r.body["orders"])
        after = r.body["next"]
        if after is None:
            break
        assert isinstance(after, str), r.body
        assert len(pages) < 10
    assert [len(p) for p in pages] == [3, 3, 1]
    assert [o for p in pages for o in p] == made
    # after an id: strictly the later orders
    r = server.adm("GET", f"/v1/sales/{s}/orders?after={made[4]['order']}")
    assert r.body == {"orders": made[5:], "next": None}, r
    r = server.adm("GET", f"/v1/sales/{s}/orders?after={made[6]['order']}&limit=5")
    assert r.body == {"orders": [], "next": None}, r
    r = server.adm("GET", f"/v1/sales/{s}/orders?limit=1000")
    assert r.status == 200 and r.body["orders"] == made


def test_order_listing_bad_query_400(server, sale_id):
    s = sale_id()
    server.put_sale(s, stock=1)
    each(["limit=0", "limit=1001", "limit=-1", "limit=abc", "limit=1.5", "after=abc"],
         lambda q: assert_error(server.adm("GET", f"/v1/sales/{s}/orders?{q}"), 400, "bad_request"))
    assert server.adm("GET", f"/v1/sales/{s}/orders?limit=1000").status == 200
    assert server.adm("GET", f"/v1/sales/{s}/orders?limit=1").status == 200


def test_order_listing_csv(server, sale_id):
    s = sale_id()
    server.put_sale(s, stock=100)
    made = []
    for i, u in enumerate(["plain", 'comma,"quote"', "é ü", "x"]):
        body = {"user": u, "qty": 1 + i}
        if i % 2 == 0:
            body["request_id"] = f"rid,{i}"
        r = server.take(s, **body)
        assert r.status == 201, r
        made.append(r.body)
    r = server.adm("GET", f"/v1/sales/{s}/orders?limit=1000", headers={"Accept": "text/csv"})
    assert r.status == 200, r
    assert r.headers["content-type"].startswith("text/csv"), r
    text = r.raw.decode("utf-8")
    assert text.splitlines()[0] == CSV_HEADER
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == CSV_HEADER.split(",")
    body_rows = [row for row in rows[1:] if row]
    assert len(body_rows) == 4, rows

    def cell(v):
        return "" if v is None else str(v)

    want = [[cell(o[k]) for k in CSV_HEADER.split(",")] for o in made]
    assert body_rows == want


def test_cancel_and_confirm_confirmed_order(server, sale_id):
    s = sale_id()
    server.put_sale(s, stock=1, per_user_limit=1)
    r = server.take(s, user="alice", request_id="a1")
    assert r.status == 201
    o = r.body
    assert_error(server.take(s, user="bob"), 409, "sold_out")
    c = server.adm("POST", f"/v1/sales/{s}/orders/{o['order']}/confirm")
    assert c.status == 200 and c.body == o, c
    x = server.adm("POST", f"/v1/sales/{s}/orders/{o['order']}/cancel")
    assert x.status == 200, x
    assert x.body == dict(o, status="cancelled"), x
    assert server.sale(s) == sale_obj(s, 1, per_user_limit=1)
    g = server.adm("GET", f"/v1/sales/{s}/orders/{o['order']}")
    assert g.status == 200 and g.body["status"] == "cancelled", g
    x2 = server.adm("POST", f"/v1/sales/{s}/orders/{o['order']}/cancel")
    assert x2.status == 200 and x2.body["status"] == "cancelled", x2
    assert_error(server.adm("POST", f"/v1/sales/{s}/orders/{o['order']}/confirm"), 409,
                 "order_not_held")
    assert server.sale(s) == sale_obj(s, 1, per_user_limit=1)
    # the unit went back to the sale and to alice's allowance
    r2 = server.take(s, user="alice")
    assert r2.status == 201, r2
    assert int(r2.body["order"]) > int(o["order"])
    assert server.sale(s) == sale_obj(s, 1, sold=1, per_user_limit=1)
    assert_error(server.take(s, user="bob"), 409, "sold_out")
    lst = server.orders(s)
    assert [(x["order"], x["status"]) for x in lst] == [(o["order"], "cancelled"),
                                                         (r2.body["order"], "confirmed")]


def test_confirm_cancel_unknown(server, sale_id):
    s = sale_id()
    server.put_sale(s, stock=1)
    for act in ("confirm", "cancel"):
        assert_error(server.adm("POST", f"/v1/sales/{s}/orders/12345/{act}"), 404, "no_such_order")
        assert_error(server.adm("POST", f"/v1/sales/zz/orders/1/{act}"), 404, "no_such_sale")
        assert_error(server.pub("POST", f"/v1/sales/{s}/orders/1/{act}"), 404, "not_found")


# ----------------------------------------------------------------------------- listeners, auth


ADMIN_ONLY = [("PUT", "/v1/sales/s1", {"stock": 1}), ("GET", "/v1/sales", None),
              ("GET", "/v1/sales/s1/orders", None), ("GET", "/v1/sales/s1/orders/1", None),
              ("POST", "/v1/sales/s1/orders/1/confirm", None),
              ("POST", "/v1/sales/s1/orders/1/cancel", None), ("GET", "/metrics", None)]


def test_admin_routes_404_on_public(server):
    server.put_sale("s1", stock=5)
    o = server.take("s1", user="u").body
    wrong = []
    for method, path, body in ADMIN_ONLY:
        for h in ({}, {"Authorization": "Bearer x"}):  # a token does not open them either
            r = server.pub(method, path, body, headers=h)
            if r.status != 404 or r.body.get("error") != "not_found":
                wrong.append(f"{method} {path} {h} -> {r.status} {r.raw[:80]!r}")
    assert not wrong, "admin routes must be 404 not_found on the public listener:\n" + "\n".join(wrong)
    assert server.sale("s1") == sale_obj("s1", 5, sold=1)
    assert server.adm("GET", f"/v1/sales/s1/orders/{o['order']}").body == o


@pytest.mark.parametrize("how", ["file", "env"])
def test_admin_token(make_server, tmp_path, how, sale_id):
    token = "s3cret-Token_42"
    if how == "file":
        f = tmp_path / "token"
        f.write_text(token)
        srv = make_server(["--admin-token-file", str(f)])
    else:
        srv = make_server(env={"SECKILL_ADMIN_TOKEN": token})
    s = sale_id()
    for method, path, body in ADMIN_ONLY:
        path = path.replace("s1", s)
        for bad in (None, "", "Bearer", "Bearer ", "Bearer wrong", f"Bearer {token[:-1]}",
                    f"Bearer {token}x", f"Basic {token}", token, f"bearer{token}"):
            h = {} if bad is None else {"Authorization": bad}
            assert_error(srv.adm(method, path, body, headers=h), 401, "unauthorized")
    assert_error(srv.pub("GET", f"/v1/sales/{s}"), 404, "no_such_sale")  # nothing was created
    good = {"Authorization": f"Bearer {token}"}
    assert srv.adm("PUT", f"/v1/sales/{s}", {"stock": 5}, headers=good).status == 201
    assert srv.adm("GET", "/v1/sales", headers=good).status == 200
    m = srv.adm("GET", "/metrics", headers=good)
    assert m.status == 200, m
    # public routes need no token, on either listener
    for port in (srv.public_port, srv.admin_port):
        assert request(port, "GET", "/healthz").status == 200
        assert request(port, "GET", f"/v1/sales/{s}").status == 200
        r = request(port, "POST", f"/v1/sales/{s}/orders", {"user": "u"})
        assert r.status == 201, r
    o = r.body
    g = srv.adm("GET", f"/v1/sales/{s}/orders/{o['order']}", headers=good)
    assert g.status == 200 and g.body == o
    lst = srv.adm("GET", f"/v1/sales/{s}/orders", headers=good)
    assert lst.status == 200 and len(lst.body["orders"]) == 2
    assert srv.adm("POST", f"/v1/sales/{s}/orders/{o['order']}/cancel", headers=good).status == 200
    assert srv.sale(s) == sale_obj(s, 5, sold=1)


def test_healthz(server):
    for port in (server.public_port, server.admin_port):
        r = request(port, "GET", "/healthz")
        assert r.status == 200, r
        assert r.headers["content-type"].startswith("application/json")
        assert r.body == {"status": "ok"}


def test_metrics(server, sale_id):
    s = sale_id()
    server.put_sale(s, stock=1)
    server.take(s, user="a")
    server.take(s, user="b")
    r = server.adm("GET", "/metrics")
    assert r.status == 200, r
    assert r.headers["content-type"].startswith("text/plain"), r
    assert "seckill_" in r.body


# ---------------------------------------------------------------------------------------- HTTP


def test_keep_alive_many_requests_one_connection(server, sale_id):
    s = sale_id()
    server.put_sale(s, stock=30, per_user_limit=1)
    conn = http.client.HTTPConnection(HOST, server.public_port, timeout=10)
    try:
        conn.connect()
        sock = conn.sock
        statuses = []
        for i in range(60):
            if i % 3 == 0:
                r = request(server.public_port, "GET", f"/v1/sales/{s}", conn=conn)
            elif i % 3 == 1:
                r = request(server.public_port, "POST", f"/v1/sales/{s}/orders",
                            {"user": f"u{i}"}, conn=conn)
            else:
                r = request(server.public_port, "GET", "/no/such/route", conn=conn)
            statuses.append(r.status)
            assert r.headers.get("connection", "").lower() != "close", r.headers
            assert conn.sock is sock, f"connection was not kept alive after request {i}"
        assert statuses == [200, 201, 404] * 20
    finally:
        conn.close()
    assert server.sale(s) == sale_obj(s, 30, sold=20, per_user_limit=1)


def test_pipelined_requests(server, sale_id):
    s = sale_id()
    server.put_sale(s, stock=5)
    body = b'{"user":"p","qty":1}'
    one = (f"POST /v1/sales/{s}/orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
           f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    last = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    buf, closed = raw_exchange(server.public_port, one * 3 + last, timeout=5)
    resps = parse_raw_responses(buf)
    assert [st for st, _, _ in resps] == [201, 201, 201, 200], buf
    ids = [int(json.loads(b)["order"]) for _, _, b in resps[:3]]
    assert ids == sorted(ids) and len(set(ids)) == 3
    assert server.sale(s)["sold"] == 3


def test_http10(server, sale_id):
    s = sale_id()
    server.put_sale(s, stock=2)
    buf, closed = raw_exchange(server.public_port, b"GET /healthz HTTP/1.0\r\n\r\n", timeout=5)
    assert closed, "HTTP/1.0 without keep-alive: the server should close after the reply"
    (st, h, b), = parse_raw_responses(buf)
    assert st == 200 and json.loads(b) == {"status": "ok"}, buf
    assert "content-length" in h
    body = b"{}"
    req = (f"POST /v1/sales/{s}/orders HTTP/1.0\r\nContent-Type: application/json\r\n"
           f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    buf, closed = raw_exchange(server.public_port, req, timeout=5)
    (st, h, b), = parse_raw_responses(buf)
    assert st == 201, buf
    assert json.loads(b)["qty"] == 1
    buf, _ = raw_exchange(server.public_port, f"GET /v1/sales/{s} HTTP/1.0\r\n\r\n".encode())
    (st, h, b), = parse_raw_responses(buf)
    assert st == 200 and json.loads(b)["sold"] == 1


def test_every_response_has_content_length(server, sale_id):
    """request() checks framing on every reply; this walks through every kind of reply."""
    s = sale_id()
    server.put_sale(s, stock=1, per_user_limit=1)
    o = server.take(s, user="a", request_id="r").body
    calls = [
        (server.pub, "GET", "/healthz", None), (server.adm, "GET", "/metrics", None),
        (server.adm, "GET", "/v1/sales", None), (server.pub, "GET", f"/v1/sales/{s}", None),
        (server.pub, "POST", f"/v1/sales/{s}/orders", {"user": "a", "request_id": "r"}),
        (server.pub, "POST", f"/v1/sales/{s}/orders", {"user": "b"}),
        (server.pub, "POST", f"/v1/sales/{s}/orders", {"user": "a"}),
        (server.pub, "POST", f"/v1/sales/{s}/orders", b"{bad"),
        (server.adm, "GET", f"/v1/sales/{s}/orders", None),
        (server.adm, "GET", f"/v1/sales/{s}/orders?limit=1000", None),
        (server.adm, "GET", f"/v1/sales/{s}/orders/{o['order']}", None),
        (server.adm, "POST", f"/v1/sales/{s}/orders/{o['order']}/confirm", None),
        (server.pub, "GET", "/nope", None), (server.pub, "DELETE", "/healthz", None),
    ]
    for fn, method, path, body in calls:
        r = fn(method, path, body)
        assert r.status in (200, 201, 400, 404, 405, 409), (path, r)
    r = server.adm("GET", f"/v1/sales/{s}/orders", headers={"Accept": "text/csv"})
    assert r.status == 200
    # a big listing (bigger than any socket buffer) is not chunked either
    b = sale_id()
    server.put_sale(b, stock=400)
    res = [server.take(b, user="u" * 100 + str(i)) for i in range(300)]
    assert all(x.status == 201 for x in res)
    r = server.adm("GET", f"/v1/sales/{b}/orders?limit=1000")
    assert r.status == 200 and len(r.body["orders"]) == 300
    r = server.adm("GET", f"/v1/sales/{b}/orders?limit=1000", headers={"Accept": "text/csv"})
    assert r.status == 200 and len(r.raw.decode().strip().splitlines()) == 301


# ---------------------------------------------------------------------- rate limit, outages


def test_rate_limit_429(make_server, sale_id):
    """--rate-limit 5 (burst 5) on the public listener. docs/API.md: without buyer tokens the
    client is the peer address, never the `user` a take names."""
    srv = make_server(["--rate-limit", "5"])
    s = sale_id()
    srv.put_sale(s, stock=100)
    t0 = time.monotonic()
    got = [srv.pub("GET", f"/v1/sales/{s}") for _ in range(20)]
    elapsed = time.monotonic() - t0
    ok = [r for r in got if r.status == 200]
    for r in got:
        if r.status != 200:
            assert_error(r, 429, "rate_limited")
            assert int(r.headers["retry-after"]) >= 1, r.headers
    assert 5 <= len(ok) <= 5 + int(elapsed * 5) + 1, (len(ok), elapsed)
    time.sleep(1.1)  # the GETs above emptied this address's bucket; 5 tokens come back a second
    t0 = time.monotonic()
    takes = [srv.take(s, user="bot") for _ in range(12)]
    elapsed = time.monotonic() - t0
    won = [r for r in takes if r.status == 201]
    for r in takes:
        if r.status != 201:
            assert_error(r, 429, "rate_limited")
            assert int(r.headers["retry-after"]) >= 1, r.headers
    assert 5 <= len(won) <= 5 + int(elapsed * 5) + 1, (len(won), elapsed)
    assert srv.adm("GET", f"/v1/sales/{s}").body["sold"] == len(won)  # a 429 takes nothing
    # the body names no client: "human" shares the address's empty bucket (a slow take may find a
    # token refilled, 5 a second: then the next, at once, finds none)
    human = [srv.take(s, user="human") for _ in range(2)]
    assert_error(human[-1] if human[0].status == 201 else human[0], 429, "rate_limited")
    won += [r for r in human if r.status == 201]
    # the admin listener is not limited
    assert all(srv.adm("GET", f"/v1/sales/{s}").status == 200 for _ in range(20))
    assert all(srv.take(s, via="adm", user="bot").status == 201 for _ in range(8))
    time.sleep(1.3)
    r = srv.take(s, user="bot")
    assert r.status == 201, r
    assert srv.sale(s)["sold"] == len(won) + 8 + 1


@pytest.mark.parametrize("store", ["redis"], indirect=True)
def test_store_unreachable_503(server, store, sale_id):
    s = sale_id()
    server.put_sale(s, stock=10, per_user_limit=1)
    r1 = server.take(s, user="a", request_id="r1")
    assert r1.status == 201
    store.redis.stop()
    t0 = time.monotonic()
    while True:
        h = server.pub("GET", "/healthz")
        if h.status == 503:
            break
        assert h.status == 200, h
        assert time.monotonic() - t0 < 3.0, "healthz still 200 3 s after losing the store"
        time.sleep(0.1)
    assert h.body == {"status": "unavailable"}, h
    assert server.adm("GET", "/healthz").status == 503
    r = server.take(s, user="b", request_id="r2")
    assert_error(r, 503, "unavailable")
    assert "retry-after" in r.headers, r.headers
    store.redis.restart_same_port()
    t0 = time.monotonic()
    while server.pub("GET", "/healthz").status != 200:
        assert time.monotonic() - t0 < 6.0, "healthz not back to 200 within 5 s of the store's return"
        time.sleep(0.1)
    r2 = server.take(s, user="b", request_id="r2")
    assert r2.status in (200, 201), r2
    assert server.take(s, user="a", request_id="r1").body == r1.body
    g = server.sale(s)
    assert g["sold"] == 2 and g["remaining"] == 8, g
    assert [o["request_id"] for o in server.orders(s)] == ["r1", "r2"]
