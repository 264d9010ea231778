"""seckilld's own decisions where API.md is silent (docs/API.md, "Where seckilld chose"), on
both stores."""

import math
import time

from conftest import assert_error, each


def test_malformed_body_before_unknown_sale(server):
    # docs/API.md: "Order of checks on a take: malformed body (400), unknown sale (404), ..."
    assert_error(server.pub("POST", "/v1/sales/nosuch/orders", b"{bad"), 400, "bad_request")
    assert_error(server.take("nosuch", qty=0), 400, "bad_request")
    assert_error(server.take("nosuch", user="u"), 404, "no_such_sale")


def test_order_of_checks(server, sale_id):
    now = int(time.time())
    # malformed body before anything about the sale
    gone = sale_id()
    server.put_sale(gone, stock=0, ends_at=now - 5)
    assert_error(server.take(gone, qty=0), 400, "bad_request")
    # the window before the stock
    assert_error(server.take(gone, user="u"), 403, "ended")
    later = sale_id()
    server.put_sale(later, stock=0, starts_at=now + 3600)
    assert_error(server.take(later, user="u"), 403, "not_started")
    # the stock before the user's allowance: sold out is sold out for everybody
    s = sale_id()
    server.put_sale(s, stock=2, per_user_limit=1)
    assert server.take(s, user="a", request_id="ra").status == 201
    assert server.take(s, user="b").status == 201
    assert_error(server.take(s, user="a"), 409, "sold_out")
    # a replay before window and stock; request_id_reused likewise
    r = server.take(s, user="a", request_id="ra")
    assert r.status == 200, r
    assert_error(server.take(s, user="z", request_id="ra"), 409, "request_id_reused")
    w = sale_id()
    server.put_sale(w, stock=5, starts_at=now - 10, ends_at=now + 2)
    first = server.take(w, user="a", request_id="rw")
    assert first.status == 201
    time.sleep(max(0, now + 3.2 - time.time()))
    assert_error(server.take(w, user="b"), 403, "ended")
    assert server.take(w, user="a", request_id="rw").body == first.body
    assert_error(server.take(w, user="b", request_id="rw"), 409, "request_id_reused")


def test_null_is_absent_and_unknown_take_fields(server, sale_id):
    anon, limited = sale_id(), sale_id()
    server.put_sale(anon, stock=5)
    server.put_sale(limited, stock=5, per_user_limit=1)
    r = server.take(anon, user=None, request_id=None)
    assert r.status == 201 and r.body["user"] is None and r.body["request_id"] is None, r
    assert_error(server.take(limited, user=None), 400, "bad_request")
    assert_error(server.take(anon, user="u", colour="red"), 400, "bad_request")
    assert server.sale(anon)["sold"] == 1 and server.sale(limited)["sold"] == 0


def test_replay_returns_order_as_created(server, sale_id):
    s = sale_id()
    server.put_sale(s, stock=5)
    r = server.take(s, user="a", request_id="r")
    x = server.adm("POST", f"/v1/sales/{s}/orders/{r.body['order']}/cancel")
    assert x.status == 200 and x.body["status"] == "cancelled"
    again = server.take(s, user="a", request_id="r")
    assert again.status == 200 and again.body == r.body, again
    g = server.adm("GET", f"/v1/sales/{s}/orders/{r.body['order']}")
    assert g.body["status"] == "cancelled"
    assert server.sale(s)["sold"] == 0


def test_created_at_rounded_down(server, sale_id):
    s = sale_id()
    server.put_sale(s, stock=50)
    for _ in range(10):
        t0 = time.time()
        r = server.take(s)
        t1 = time.time()
        assert math.floor(t0) <= r.body["created_at"] <= math.floor(t1), (t0, r.body, t1)
        time.sleep(0.09)


def test_hold_seconds_max(server, sale_id):
    s = sale_id()
    r = server.adm("PUT", f"/v1/sales/{s}", {"stock": 1, "hold_seconds": 31536000})
    assert r.status == 201, r
    assert_error(server.adm("PUT", f"/v1/sales/{s}", {"stock": 1, "hold_seconds": 31536001}),
                 400, "bad_request")
    assert server.sale(s)["hold_seconds"] == 31536000


def test_bad_order_id_is_no_such_order(server, sale_id):
    s = sale_id()
    server.put_sale(s, stock=5)
    server.take(s)

    def check(bad):
        assert_error(server.adm("GET", f"/v1/sales/{s}/orders/{bad}"), 404, "no_such_order")
        assert_error(server.adm("POST", f"/v1/sales/{s}/orders/{bad}/cancel"), 404,
                     "no_such_order")
    each(["abc", "0", "-1", "1.0", "1e3", "99999999999999999999999"], check)
    assert server.sale(s)["sold"] == 1


def test_head_like_get(server, sale_id):
    s = sale_id()
    server.put_sale(s, stock=5)
    for fn, path in ((server.pub, "/healthz"), (server.pub, f"/v1/sales/{s}"),
                     (server.adm, "/v1/sales")):
        g = fn("GET", path)
        h = fn("HEAD", path)
        assert h.status == 200 and h.raw == b"", h
        assert h.headers["content-length"] == g.headers["content-length"], (h.headers, g.headers)


def test_401_carries_www_authenticate(make_server, tmp_path):
    f = tmp_path / "tok"
    f.write_text("tok")
    srv = make_server(["--admin-token-file", str(f)])
    r = srv.adm("GET", "/v1/sales")
    assert_error(r, 401, "unauthorized")
    assert r.headers.get("www-authenticate", "").lower().startswith("bearer"), r.headers


def test_listing_next_and_csv_x_next(server, sale_id):
    s = sale_id()
    server.put_sale(s, stock=10)
    made = [server.take(s, user=f"u{i}").body for i in range(6)]
    r = server.adm("GET", f"/v1/sales/{s}/orders?limit=3")
    assert r.body == {"orders": made[:3], "next": made[2]["order"]}, r.body
    r = server.adm("GET", f"/v1/sales/{s}/orders?limit=3&after={made[2]['order']}")
    assert r.body == {"orders": made[3:], "next": None}, r.body  # nothing follows: null
    r = server.adm("GET", f"/v1/sales/{s}/orders?after=0&limit=1000")
    assert r.body == {"orders": made, "next": None}
    c = server.adm("GET", f"/v1/sales/{s}/orders?limit=4", headers={"Accept": "text/csv"})
    assert c.status == 200 and c.headers.get("x-next") == made[3]["order"], c.headers
    assert len(c.raw.decode().strip().splitlines()) == 5
    c = server.adm("GET", f"/v1/sales/{s}/orders?limit=4&after={made[3]['order']}",
                   headers={"Accept": "text/csv"})
    assert c.status == 200 and c.headers.get("x-next") in (None, ""), c.headers
    assert len(c.raw.decode().strip().splitlines()) == 3


def test_accept_csv_in_any_case_and_not_with_q_0(server, sale_id):
    """Media types are case-insensitive and q=0 means "not acceptable" (RFC 9110); every Accept
    header counts (found by tests/fuzz/fuzz_head.c, issue 19)."""
    s = sale_id()
    server.put_sale(s, stock=2)
    server.take(s, user="u")
    for accept, csv in [("TEXT/CSV", True), ("application/json, text/csv;q=0", False),
                        ("text/csv; q=0.000", False), ("text/csv;q=0.5, application/json", True),
                        ("text/csvx", False), ("application/json", False)]:
        c = server.adm("GET", f"/v1/sales/{s}/orders", headers={"Accept": accept})
        assert c.status == 200 and c.headers["content-type"].startswith("text/csv") == csv, (accept, c.headers)


def test_put_replaces_all_settings(server, sale_id):
    s = sale_id()
    now = int(time.time())
    server.put_sale(s, stock=10, per_user_limit=2, starts_at=now - 5, ends_at=now + 3600)
    assert server.adm("PUT", f"/v1/sales/{s}", {"stock": 12}).status == 200
    g = server.sale(s)
    assert (g["stock"], g["per_user_limit"], g["starts_at"], g["ends_at"]) == (12, 0, None, None), g
