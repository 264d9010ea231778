"""Malformed and hostile input: the server refuses it cleanly, changes nothing, keeps serving."""

import json
import random
import socket
import threading
import time

import pytest

from conftest import HOST, assert_error, each, parse_raw_responses, raw_exchange, request


@pytest.fixture
def victim(server, sale_id):
    """A sale with one order in it; after the test, sale and orders must be unchanged and the
    server must still answer."""
    s = sale_id("v")
    server.put_sale(s, stock=10, per_user_limit=1)
    first = server.take(s, user="first", request_id="first")
    assert first.status == 201
    before = server.sale(s)
    yield server, s
    assert server.pub("GET", "/healthz").body == {"status": "ok"}
    assert server.sale(s) == before
    assert server.orders(s) == [first.body]


def post_raw(srv, path, data, port=None, headers=None):
    return request(port or srv.public_port, "POST", path, data, headers)


BAD_JSON = [b"{", b'{"user":', b'{"user":"a",}', b"{'user':'a'}", b'{"user":"a"} x',
            b'{"user":"a"}{"user":"b"}', b"nul", b"[", b'{"user" "a"}', b'{"user":"a\\x"}',
            b'{"user":"a","qty":01}', b'{"user":"a","qty":+1}', b'{"user":"a","qty":NaN}',
            b'{"user":"a","qty":Infinity}', b'{"user":"a","qty":-}', b"\x00", b'"just a string"',
            b"12", b"null", b"true", b"[]"]


def test_bad_json(victim):
    srv, s = victim

    def check(data):
        assert_error(post_raw(srv, f"/v1/sales/{s}/orders", data), 400, "bad_request")
        assert_error(srv.adm("PUT", f"/v1/sales/{s}", data), 400, "bad_request")
    each(BAD_JSON, check)


HUGE = [b'{"user":"h","qty":1e400}', b'{"user":"h","qty":99999999999999999999999}',
        b'{"user":"h","qty":-99999999999999999999999}', b'{"user":"h","qty":9007199254740993}',
        b'{"user":"h","qty":1' + b"0" * 400 + b"}", b'{"user":"h","qty":1e-400}',
        b'{"user":"h","qty":18446744073709551617}', b'{"user":"h","qty":-9223372036854775809}']


def test_huge_numbers_take(victim):
    srv, s = victim
    each(HUGE, lambda data: assert_error(post_raw(srv, f"/v1/sales/{s}/orders", data), 400,
                                         "bad_request"))


HUGE_SALE = [(f, n) for f in ("stock", "per_user_limit", "hold_seconds", "starts_at", "ends_at",
                               "retain_seconds")
             for n in (b"1e400", b"99999999999999999999999", b"-99999999999999999999999",
                       b"18446744073709551616", b"9007199254740993")
             if f == "stock" or n != b"9007199254740993"]  # 2^53+1: out of range for stock only


def test_huge_numbers_sale(victim):
    srv, s = victim

    def check(case):
        field, num = case
        body = b'{"stock": 10, "per_user_limit": 1, "%s": %s}' % (field.encode(), num)
        if field == "stock":
            body = b'{"stock": %s, "per_user_limit": 1}' % num
        assert_error(srv.adm("PUT", f"/v1/sales/{s}", body), 400, "bad_request")
        assert_error(srv.adm("PUT", "/v1/sales/fresh-huge", body), 400, "bad_request")
        assert_error(srv.pub("GET", "/v1/sales/fresh-huge"), 404, "no_such_sale")
    each(HUGE_SALE, check)


BAD_UTF8 = [b'{"user":"\xff"}', b'{"user":"a\xc0\xafb"}', b'{"user":"\xed\xa0\x80"}',
            b'{"user":"\xe2\x82"}', b'{"user":"\\ud800"}', b'{"user":"x\\udc00y"}',
            b'{"user":"ok","request_id":"\xfe\xfe"}', b'{"user\xff":"a"}',
            b'{"user":"\xf8\x88\x80\x80\x80"}', b'{"user":"\xf4\x90\x80\x80"}']


def test_invalid_utf8(victim):
    srv, s = victim
    each(BAD_UTF8, lambda data: assert_error(post_raw(srv, f"/v1/sales/{s}/orders", data), 400,
                                             "bad_request"))
    # in a sale's body too
    each([b'{"stock": 1, "\xff": 1}', b'{"stock": 1, "per_user_limit": "\xc0\xaf"}'],
         lambda data: assert_error(srv.adm("PUT", "/v1/sales/utf", data), 400, "bad_request"))


CONTROL = [b'{"user":"a\x01b"}', b'{"user":"a\nb"}', b'{"user":"a\x1fb"}', b'{"user":"\x00"}',
           b'{"user":"a\\u0001b"}', b'{"user":"a\\nb"}', b'{"user":"a\\u0000b"}',
           b'{"user":"a\\tb"}', b'{"user":"ok","request_id":"r\\u001b[31m"}',
           b'{"user":"ok","request_id":"\\r"}']


def test_control_chars(victim):
    srv, s = victim
    each(CONTROL, lambda data: assert_error(post_raw(srv, f"/v1/sales/{s}/orders", data), 400,
                                            "bad_request"))


WRONG_TYPES = [{"user": 1}, {"user": None}, {"user": ["a"]}, {"user": "a", "qty": "1"},
               {"user": "a", "qty": 1.5}, {"user": "a", "qty": False}, {"user": "a", "request_id": 7},
               {"user": "a", "request_id": {"x": 1}}, {"user": {"name": "a"}}]


def test_wrong_types(victim):
    srv, s = victim
    each(WRONG_TYPES, lambda body: assert_error(srv.take(s, **body), 400, "bad_request"))


# ------------------------------------------------------------------------------ size limits


def padded(n, user="big"):
    core = json.dumps({"user": user, "qty": 1})
    assert len(core) < n
    return (core[:-1] + " " * (n - len(core)) + "}").encode()


def assert_413(r):
    assert r.status == 413, r
    if r.headers.get("content-type", "").startswith("application/json"):
        assert_error(r, 413, "body_too_large")


def test_body_limit_4096_ok_4097_413(server, sale_id):
    s = sale_id()
    server.put_sale(s, stock=10, per_user_limit=1)
    assert_413(post_raw(server, f"/v1/sales/{s}/orders", padded(4097, "over")))
    assert_413(post_raw(server, f"/v1/sales/{s}/orders", padded(20000, "over2")))
    assert_413(server.adm("PUT", f"/v1/sales/{s}", (b'{"stock":10' + b" " * 5000 + b"}")))
    assert server.sale(s)["sold"] == 0 and server.sale(s)["stock"] == 10
    r = post_raw(server, f"/v1/sales/{s}/orders", padded(4096, "exact"))
    assert r.status == 201 and r.body["user"] == "exact", r
    assert server.sale(s)["sold"] == 1
    assert [o["user"] for o in server.orders(s)] == ["exact"]


def test_body_limit_configurable(make_server, sale_id):
    srv = make_server(["--max-body-bytes", "100"])
    s = sale_id()
    srv.put_sale(s, stock=10)
    assert_413(post_raw(srv, f"/v1/sales/{s}/orders", padded(101)))
    assert post_raw(srv, f"/v1/sales/{s}/orders", padded(100)).status == 201
    assert srv.sale(s)["sold"] == 1


def test_body_too_large_declared_only(victim):
    """A Content-Length past the limit is refused at once, without waiting for the body."""
    srv, s = victim
    head = (f"POST /v1/sales/{s}/orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: 10000000\r\n\r\n").encode()
    t0 = time.monotonic()
    with socket.create_connection((HOST, srv.public_port), timeout=5) as c:
        c.sendall(head + b'{"user":"x"')
        buf = b""
        while b"\r\n" not in buf:
            chunk = c.recv(4096)
            if not chunk:
                break
            buf += chunk
    assert buf.startswith(b"HTTP/1.1 413"), buf[:200]
    assert time.monotonic() - t0 < 4


def test_body_too_large_chunked(victim):
    srv, s = victim
    chunk = b'{"user":"chunky"' + b" " * 3000
    data = (f"POST /v1/sales/{s}/orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Transfer-Encoding: chunked\r\n\r\n").encode()
    for _ in range(3):
        data += b"%x\r\n%s\r\n" % (len(chunk), chunk)
    data += b"1\r\n}\r\n0\r\n\r\n"
    buf, closed = raw_exchange(srv.public_port, data, timeout=5)
    assert buf.startswith(b"HTTP/1.1 413"), buf[:200]


def test_chunked_request_body_small(server, sale_id):
    s = sale_id()
    server.put_sale(s, stock=3)
    data = (f"POST /v1/sales/{s}/orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n").encode()
    data += b'8\r\n{"user":\r\nb\r\n"chunky"}  \r\n0\r\n\r\n'
    buf, _ = raw_exchange(server.public_port, data, timeout=5)
    (st, h, b), = parse_raw_responses(buf)
    assert st == 201, buf
    assert json.loads(b)["user"] == "chunky"


def test_head_limit_431(victim):
    srv, s = victim
    r = srv.pub("GET", f"/v1/sales/{s}", headers={"X-Big": "a" * 9000})
    assert_error(r, 431, "head_too_large")
    r = srv.pub("GET", f"/v1/sales/{s}", headers={f"X-H{i}": "b" * 100 for i in range(90)})
    assert_error(r, 431, "head_too_large")
    r = srv.pub("POST", f"/v1/sales/{s}/orders", {"user": "big-head"},
                headers={"X-Big": "c" * 9000})
    assert_error(r, 431, "head_too_large")
    r = srv.adm("PUT", f"/v1/sales/{s}", {"stock": 99}, headers={"X-Big": "d" * 9000})
    assert_error(r, 431, "head_too_large")
    # just under the limit is fine
    r = srv.pub("GET", f"/v1/sales/{s}", headers={"X-Big": "a" * 7000})
    assert r.status == 200, r


def test_head_limit_counts_the_host_header(make_server):
    """h2o keeps Host out of the header list: a 9 KB Host passed the 8 KiB limit (found by
    tests/fuzz/fuzz_head.c, issue 19)."""
    srv = make_server(["--max-head-bytes", "1024"])
    assert_error(srv.pub("GET", "/healthz", headers={"Host": "h" * 1100}), 431, "head_too_large")
    assert srv.pub("GET", "/healthz", headers={"Host": "h" * 500}).status == 200


def test_head_limit_configurable(make_server, sale_id):
    srv = make_server(["--max-head-bytes", "1024"])
    assert_error(srv.pub("GET", "/healthz", headers={"X-Big": "a" * 1100}), 431, "head_too_large")
    assert srv.pub("GET", "/healthz", headers={"X-Big": "a" * 500}).status == 200


# ----------------------------------------------------------------------------- raw junk


rng = random.Random(1234)
# Not HTTP at all, or HTTP that must be refused: a 4xx reply or a closed connection.
JUNK = [
    b"\x00\x01\x02\x03garbage\r\n\r\n",
    b"GARBAGE\r\n\r\n",
    b"GET\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(rng.randrange(256) for _ in range(500)),
    bytes(rng.randrange(256) for _ in range(65536)),
    b"POST /v1/sales/S/orders HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n{}",
    b"POST /v1/sales/S/orders HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
    b"POST /v1/sales/S/orders HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
    b"POST /v1/sales/S/orders HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
    b"POST /v1/sales/S/orders HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"G" * 100000,
]
# Borderline input an HTTP parser may tolerate: any well-formed reply but a 5xx, or a close.
LENIENT = [
    b"GET /healthz HTTP/1.1 extra\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nBad Header Line\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\n: novalue\r\n\r\n",
    b"\r\n" * 2000,
]


def _junk(srv, s, data, strict):
    data = data.replace(b"/v1/sales/S/", f"/v1/sales/{s}/".encode())
    try:
        buf, closed = raw_exchange(srv.public_port, data, timeout=5, shut_write=True)
    except (ConnectionResetError, BrokenPipeError):
        buf, closed = b"", True
    if buf:
        assert buf.startswith((b"HTTP/1.1 ", b"HTTP/1.0 ")), buf[:200]
        status = int(buf[9:12])
        if strict:
            assert 400 <= status < 500, buf[:300]
        else:
            assert status < 500, buf[:300]
    else:
        assert closed, "no reply and no close"
    # the server keeps serving
    assert srv.pub("GET", "/healthz").status == 200


def test_junk_on_socket(victim):
    each(JUNK, lambda data: _junk(*victim, data, strict=True), name=lambda d: repr(d[:40]))


def test_borderline_on_socket(victim):
    each(LENIENT, lambda data: _junk(*victim, data, strict=False), name=lambda d: repr(d[:40]))


def test_junk_then_valid_on_other_connections(victim):
    srv, s = victim
    socks = []
    for i in range(20):
        c = socket.create_connection((HOST, srv.public_port), timeout=5)
        c.sendall(bytes(rng.randrange(256) for _ in range(2000)))
        socks.append(c)
    try:
        for _ in range(5):
            assert srv.pub("GET", f"/v1/sales/{s}").status == 200
    finally:
        for c in socks:
            c.close()


# ------------------------------------------------------------------------------ slow clients


def time_to_close(sock, limit):
    """Seconds until the peer closes `sock` (reading and discarding), or None past `limit`."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        sock.settimeout(max(0.05, limit - (time.monotonic() - t0)))
        try:
            b = sock.recv(65536)
        except socket.timeout:
            return None
        except ConnectionResetError:
            return time.monotonic() - t0
        if not b:
            return time.monotonic() - t0
    return None


def test_idle_and_slow_clients_closed(make_server, sale_id):
    srv = make_server(["--idle-timeout", "2"])
    s = sale_id()
    srv.put_sale(s, stock=10)
    port = srv.public_port
    kinds = {}
    kinds["idle"] = socket.create_connection((HOST, port), timeout=5)
    kinds["partial head"] = socket.create_connection((HOST, port), timeout=5)
    kinds["partial head"].sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    kinds["partial body"] = socket.create_connection((HOST, port), timeout=5)
    kinds["partial body"].sendall((f"POST /v1/sales/{s}/orders HTTP/1.1\r\nHost: x\r\n"
                                   f"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
                                   ).encode() + b'{"user":')
    kinds["after a reply"] = socket.create_connection((HOST, port), timeout=5)
    kinds["after a reply"].sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    t0 = time.monotonic()
    results = {}

    def watch(name, sock):
        results[name] = time_to_close(sock, 8)

    ts = [threading.Thread(target=watch, args=kv, daemon=True) for kv in kinds.items()]
    for t in ts:
        t.start()
    # a drip-feeding client (one byte at a time) is closed too: its request is never received
    drip = socket.create_connection((HOST, port), timeout=5)
    drip_closed = None
    msg = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100
    for i in range(len(msg)):
        try:
            drip.sendall(msg[i:i + 1])
        except OSError:
            drip_closed = time.monotonic() - t0
            break
        if time.monotonic() - t0 > 7:
            break
        # the server answers everybody else meanwhile
        if i % 4 == 0:
            assert request(port, "GET", "/healthz", timeout=2).status == 200
        time.sleep(0.4)
        drip.settimeout(0.01)
        try:
            if drip.recv(1) == b"":
                drip_closed = time.monotonic() - t0
                break
        except socket.timeout:
            pass
        except OSError:
            drip_closed = time.monotonic() - t0
            break
    drip.close()
    for t in ts:
        t.join(10)
    for sock in kinds.values():
        sock.close()
    for name, t in results.items():
        assert t is not None, f"{name} connection not closed within 8 s (idle timeout 2 s)"
        assert 1.0 <= t <= 4.5, f"{name} connection closed after {t:.2f} s (idle timeout 2 s)"
    assert drip_closed is not None and drip_closed <= 4.5, \
        f"drip-feeding client not closed in time: {drip_closed}"
    assert srv.sale(s)["sold"] == 0


def test_active_keepalive_survives_idle_timeout(make_server):
    import http.client
    srv = make_server(["--idle-timeout", "2"])
    conn = http.client.HTTPConnection(HOST, srv.public_port, timeout=5)
    try:
        conn.connect()
        sock = conn.sock
        for _ in range(6):
            assert request(srv.public_port, "GET", "/healthz", conn=conn).status == 200
            assert conn.sock is sock
            time.sleep(0.8)
    finally:
        conn.close()


def test_many_idle_connections(victim):
    srv, s = victim
    socks = []
    try:
        for i in range(300):
            c = socket.create_connection((HOST, srv.public_port if i % 3 else srv.admin_port),
                                         timeout=5)
            if i % 2:
                c.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never finished
            socks.append(c)
        t0 = time.monotonic()
        for i in range(20):
            r = request(srv.public_port, "GET", "/healthz", timeout=3)
            assert r.status == 200
            r = request(srv.admin_port, "GET", f"/v1/sales/{s}", timeout=3)
            assert r.status == 200
        assert time.monotonic() - t0 < 10
        srv.put_sale("idle-extra", stock=2)
        assert srv.take("idle-extra", user="x").status == 201
        # the idle connections are still served when they finally speak
        done = 0
        for i, c in enumerate(socks[:40]):
            if i % 2:  # finish the request it started
                c.sendall(b"Connection: close\r\n\r\n")
            else:
                c.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        for c in socks[:40]:
            buf = b""
            c.settimeout(5)
            while True:
                b = c.recv(65536)
                if not b:
                    break
                buf += b
            if buf.startswith(b"HTTP/1.1 200"):
                done += 1
        assert done == 40
    finally:
        for c in socks:
            c.close()


# ------------------------------------------------------------------------- routes, methods


# "/" is the dashboard on the admin listener (404 on public): tests/e2e/test_dashboard.py
UNKNOWN = ["/v1", "/v1/", "/v2/sales", "/v1/salesx", "/v1/sales/s/x", "/healthz/x",
           "/metricsx", "/v1/sales/s/orders/1/refund", "/v1/sales/s/orders/1/confirm/x",
           "/favicon.ico"]


def test_unknown_route_404(victim):
    srv, s = victim

    def check(path):
        for port in (srv.public_port, srv.admin_port):
            assert_error(request(port, "GET", path), 404, "not_found")
            assert_error(request(port, "POST", path, {}), 404, "not_found")
    each(UNKNOWN, check)


def allow_set(r):
    assert "allow" in r.headers, r.headers
    return {m.strip().upper() for m in r.headers["allow"].split(",") if m.strip()}


METHODS_ADMIN = [("POST", "/v1/sales/S", {"GET", "PUT", "DELETE"}),
                 ("POST", "/healthz", {"GET"}), ("PUT", "/v1/sales", {"GET"}),
                 ("DELETE", "/v1/sales/S/orders", {"GET", "POST"}),
                 ("GET", "/v1/sales/S/orders/1/confirm", {"POST"}),
                 ("PUT", "/v1/sales/S/orders/1/cancel", {"POST"}),
                 ("DELETE", "/v1/sales/S/orders/1", {"GET"}), ("POST", "/metrics", {"GET"}),
                 ("PATCH", "/v1/sales/S", {"GET", "PUT", "DELETE"})]


def test_wrong_method_405_admin(victim):
    srv, s = victim

    def check(case):
        method, path, allow = case
        r = srv.adm(method, path.replace("S", s), {} if method in ("POST", "PUT", "PATCH") else None)
        assert_error(r, 405, "method_not_allowed")
        assert allow <= allow_set(r), r.headers
    each(METHODS_ADMIN, check)


METHODS_PUBLIC = [("POST", "/healthz", {"GET"}), ("PATCH", "/v1/sales/S", {"GET"}),
                  ("PUT", "/healthz", {"GET"})]


def test_wrong_method_405_public(victim):
    srv, s = victim

    def check(case):
        method, path, allow = case
        r = srv.pub(method, path.replace("S", s), {} if method in ("POST", "PUT") else None)
        assert_error(r, 405, "method_not_allowed")
        got = allow_set(r)
        assert allow <= got and "PUT" not in got and "DELETE" not in got, r.headers
    each(METHODS_PUBLIC, check)
