"""The export of a sale's whole order book: GET /v1/sales/{sale}/orders.csv (admin), streamed page by
page (1,000 orders a page), with a file name, cells a spreadsheet would run as formulas
neutralised (OWASP), an optional UTF-8 BOM. Both stores."""
import csv
import http.client
import io
import socket

from conftest import CSV_HEADER, HOST, assert_error, storm

FORMULAS = ["=HYPERLINK(\"http://x\",\"y\")", "+cmd|' /C calc'!A0", "-2+3", "@SUM(1)"]


def get_export(srv, path, method="GET", headers=None):
    """The raw export (chunked: read with http.client, not the suite's Content-Length check)."""
    conn = http.client.HTTPConnection(HOST, srv.admin_port, timeout=30)
    try:
        conn.request(method, path, headers=headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def test_export_streams_the_whole_book(server, sale_id):
    s = sale_id()
    n = 2500  # three pages
    server.put_sale(s, stock=n)
    reqs = [("POST", f"/v1/sales/{s}/orders", {"user": f"u{i}"}) for i in range(n - len(FORMULAS))]
    reqs += [("POST", f"/v1/sales/{s}/orders", {"user": u, "request_id": u}) for u in FORMULAS]
    res = storm(server.public_port, reqs, threads=32)
    assert [st for st, _ in res].count(201) == n, [r for r in res if r[0] != 201][:3]
    status, h, raw = get_export(server, f"/v1/sales/{s}/orders.csv")
    assert status == 200, (status, raw[:300])
    assert h["content-type"] == "text/csv; charset=utf-8"
    assert h["content-disposition"] == f'attachment; filename="{s}-orders.csv"'
    assert h.get("transfer-encoding") == "chunked" and "content-length" not in h
    text = raw.decode("utf-8")
    assert not text.startswith("\ufeff")
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == CSV_HEADER.split(",")
    body = rows[1:]
    assert len(body) == n
    assert [int(r[1]) for r in body] == list(range(1, n + 1))  # every order once, in id order
    users = {r[2] for r in body}
    assert {f"u{i}" for i in range(n - len(FORMULAS))} <= users
    # formulas come out neutralised: a single quote first, in the user and the request id
    for u in FORMULAS:
        row = next(r for r in body if r[5] == "'" + u)
        assert row[2] == "'" + u, row
    assert not any(r[2][:1] in "=+-@" for r in body)
    # the paged listing is written by the same writer
    for u in FORMULAS:
        oid = int(next(r for r in body if r[5] == "'" + u)[1])
        lst = server.adm("GET", f"/v1/sales/{s}/orders?after={oid - 1}&limit=1", headers={"Accept": "text/csv"})
        assert list(csv.reader(io.StringIO(lst.body)))[1][2] == "'" + u


def test_export_small_empty_bom_head(server, sale_id):
    s = sale_id()
    server.put_sale(s, stock=10)
    status, h, raw = get_export(server, f"/v1/sales/{s}/orders.csv")
    assert status == 200 and raw.decode() == CSV_HEADER + "\r\n"
    assert server.take(s, user="alice").status == 201
    status, h, raw = get_export(server, f"/v1/sales/{s}/orders.csv?bom=1")
    assert status == 200
    assert raw.startswith(b"\xef\xbb\xbf" + CSV_HEADER.encode() + b"\r\n")
    assert raw.count(b"\r\n") == 2 and b",alice,1,confirmed," in raw
    status, h, raw = get_export(server, f"/v1/sales/{s}/orders.csv", method="HEAD")
    assert status == 200 and raw == b"" and h["content-type"].startswith("text/csv")


def test_export_refusals(server, sale_id):
    s = sale_id()
    assert_error(server.adm("GET", "/v1/sales/nope/orders.csv"), 404, "no_such_sale")
    server.put_sale(s, stock=1)
    assert_error(server.adm("GET", f"/v1/sales/{s}/orders.csv?bom=2"), 400, "bad_request")
    assert_error(server.pub("GET", f"/v1/sales/{s}/orders.csv"), 404, "not_found")  # admin only
    r = server.adm("POST", f"/v1/sales/{s}/orders.csv", {})
    assert_error(r, 405, "method_not_allowed")
    assert r.headers["allow"] == "GET"


def test_export_client_gone_mid_stream(server, sale_id):
    """A client that leaves after the first bytes: the export stops, the server stays healthy and
    serves the next export whole."""
    s = sale_id()
    n = 3000
    server.put_sale(s, stock=n)
    res = storm(server.public_port, [("POST", f"/v1/sales/{s}/orders", {"user": f"u{i}"}) for i in range(n)])
    assert [st for st, _ in res].count(201) == n
    for _ in range(5):
        c = socket.create_connection((HOST, server.admin_port), timeout=10)
        c.sendall(f"GET /v1/sales/{s}/orders.csv HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        assert c.recv(100).startswith(b"HTTP/1.1 200")
        c.close()
    status, _, raw = get_export(server, f"/v1/sales/{s}/orders.csv")
    assert status == 200 and raw.count(b"\r\n") == n + 1
    assert server.pub("GET", "/healthz").status == 200
