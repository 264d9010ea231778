"""What the wire may carry and who may administer (docs/API.md, "The wire" and "The admin
listener"): requests two parsers could frame differently get 400 and a closed connection, and
what follows them never runs; no HTTP/2 without --http2; the admin listener answers only its own
Host names, takes mutating requests only as JSON and never from another origin; the admin token
file is read whole or refused."""

import os
import socket
import subprocess

import pytest

from conftest import (HOST, assert_error, parse_raw_responses, raw_exchange, request, seckilld_binary)

sqlite_only = pytest.mark.parametrize("store", ["sqlite"], indirect=True)


def retire(srv):
    """Stops a server (exit 0) before the next one opens the same order book."""
    assert srv.stop() == 0, srv.stderr_tail()
    srv.proc = None


def take_raw(sale, user, version="1.1"):
    body = ('{"user": "%s"}' % user).encode()
    return (f"POST /v1/sales/{sale}/orders HTTP/{version}\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def smuggle_cases(sale):
    """(name, raw bytes): a take with ambiguous framing, then a complete take as `smuggled`."""
    after = take_raw(sale, "smuggled")
    b = b'{"user": "front"}'
    head = f"POST /v1/sales/{sale}/orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    chunked = b"%x\r\n" % len(b) + b + b"\r\n0\r\n\r\n"
    return [
        ("two Content-Length", (head + f"Content-Length: {len(b)}\r\nContent-Length: {len(b) + len(after)}\r\n\r\n")
         .encode() + b + after),
        ("two Content-Length, the longer first", (head + f"Content-Length: {len(b) + len(after)}\r\n"
                                                  f"Content-Length: {len(b)}\r\n\r\n").encode() + b + after),
        ("Content-Length and chunked", (head + f"Content-Length: {len(chunked) + len(after)}\r\n"
                                        "Transfer-Encoding: chunked\r\n\r\n").encode() + chunked + after),
        ("chunked and Content-Length", (head + "Transfer-Encoding: chunked\r\n"
                                        f"Content-Length: {len(chunked)}\r\n\r\n").encode() + chunked + after),
        ("gzip", (head + "Transfer-Encoding: gzip\r\n\r\n").encode() + chunked + after),
        ("gzip, chunked", (head + "Transfer-Encoding: gzip, chunked\r\n\r\n").encode() + chunked + after),
        ("two Transfer-Encoding", (head + "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n").encode()
         + chunked + after),
        ("chunked twice", (head + "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n").encode()
         + chunked + after),
        ("chunked in HTTP/1.0", (head.replace("HTTP/1.1", "HTTP/1.0") + "Connection: keep-alive\r\n"
                                 "Transfer-Encoding: chunked\r\n\r\n").encode() + chunked + after),
        ("obs-fold", (head + f"X-Note: a\r\n b\r\nContent-Length: {len(b)}\r\n\r\n").encode() + b + after),
        ("obs-fold with a tab", (head + f"Content-Length: {len(b)}\r\nX-Note: a\r\n\tb\r\n\r\n").encode() + b + after),
    ]


@pytest.mark.parametrize("listener", ["public", "admin"])
def test_ambiguous_framing_is_400_and_close(server, sale_id, listener):
    """Each case raw on a socket: one 400, the connection closed, and the take that follows it
    in the same bytes never runs (the sale sells nothing)."""
    port = server.public_port if listener == "public" else server.admin_port
    s = sale_id()
    server.put_sale(s, stock=100)

    def check(case):
        name, data = case
        buf, closed = raw_exchange(port, data, timeout=3)
        assert closed, f"{name}: the connection stayed open: {buf[:300]!r}"
        assert buf.startswith(b"HTTP/1.1 400 "), f"{name}: {buf[:300]!r}"
        assert buf.count(b"HTTP/1.1 ") == 1, f"{name}: more than one answer: {buf!r}"
        assert server.sale(s)["sold"] == 0, f"{name}: a take ran"

    failures = []
    for case in smuggle_cases(s):
        try:
            check(case)
        except AssertionError as e:
            failures.append(str(e))
    assert not failures, "\n".join(failures)
    assert server.orders(s) == []


def test_plain_framing_still_pipelines(server, sale_id):
    """The control: the same Content-Length twice is one length, chunked alone is fine, and a
    pipelined second take runs: what the cases above refuse is the ambiguity, nothing more."""
    s = sale_id()
    server.put_sale(s, stock=100)
    b = b'{"user": "front"}'
    head = f"POST /v1/sales/{s}/orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    same = (head + f"Content-Length: {len(b)}\r\nContent-Length: {len(b)}\r\n\r\n").encode() + b
    chunked = (head + "Transfer-Encoding: Chunked\r\n\r\n").encode() + b"%x\r\n" % len(b) + b + b"\r\n0\r\n\r\n"
    buf, _ = raw_exchange(server.public_port, same + chunked + take_raw(s, "third"), timeout=2)
    statuses = [st for st, _, _ in parse_raw_responses(buf)]
    assert statuses == [201, 201, 201], buf[:600]
    assert server.sale(s)["sold"] == 3


def h2c_upgrade(port):
    return raw_exchange(port, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade, HTTP2-Settings\r\n"
                              b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n", timeout=2)


PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def test_no_http2_by_default(server):
    """Upgrade: h2c is answered as HTTP/1.1 (never 101) and the HTTP/2 preface gets no SETTINGS
    frame, on both listeners."""
    for port in (server.public_port, server.admin_port):
        buf, _ = h2c_upgrade(port)
        assert buf.startswith(b"HTTP/1.1 200 "), buf[:200]
        assert b" 101 " not in buf and b"upgrade" not in buf.lower(), buf[:300]
        buf, closed = raw_exchange(port, PREFACE, timeout=2)
        # an HTTP/2 server answers with a SETTINGS frame: 3 length bytes, then type 4
        assert not (len(buf) >= 9 and buf[3] == 4), buf[:40]
        assert closed and (buf == b"" or buf.startswith(b"HTTP/1.1 400 ")), buf[:200]


@sqlite_only
def test_http2_option_allows_h2c(make_server):
    srv = make_server(["--http2"])
    buf, _ = h2c_upgrade(srv.public_port)
    assert buf.startswith(b"HTTP/1.1 101 "), buf[:200]


# ---------------------------------------------------------------------------- the admin listener


def test_admin_mutations_need_json(server, sale_id):
    s = sale_id()
    for ctype in (None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                  "application/jsonx", "text/json"):
        h = {} if ctype is None else {"Content-Type": ctype}
        r = request(server.admin_port, "PUT", f"/v1/sales/{s}", b'{"stock": 5}', headers=h, json_ct=False)
        assert_error(r, 415, "unsupported_media_type")
    assert_error(server.pub("GET", f"/v1/sales/{s}"), 404, "no_such_sale")
    r = request(server.admin_port, "PUT", f"/v1/sales/{s}", b'{"stock": 5}',
                headers={"Content-Type": "Application/JSON; charset=utf-8"}, json_ct=False)
    assert r.status == 201, r
    o = server.take(s, user="u").body["order"]
    for action in ("cancel", "confirm"):
        r = request(server.admin_port, "POST", f"/v1/sales/{s}/orders/{o}/{action}", json_ct=False)
        assert_error(r, 415, "unsupported_media_type")
    assert server.adm("GET", f"/v1/sales/{s}/orders/{o}").body["status"] == "confirmed"
    # a take on the admin listener is a mutation there too; on the public one it is not checked
    r = request(server.admin_port, "POST", f"/v1/sales/{s}/orders", b'{"user": "v"}', json_ct=False)
    assert_error(r, 415, "unsupported_media_type")
    r = request(server.public_port, "POST", f"/v1/sales/{s}/orders", b'{"user": "w"}', json_ct=False)
    assert r.status == 201, r
    assert server.sale(s)["sold"] == 2


def test_admin_refuses_other_origins(server, sale_id):
    s = sale_id()
    server.put_sale(s, stock=5)
    o = server.take(s, user="u").body["order"]
    for origin in ("http://evil.example", "null", f"http://{HOST}:{server.admin_port + 1}",
                   f"http://{HOST}", f"ftp://{HOST}:{server.admin_port}"):
        r = server.adm("POST", f"/v1/sales/{s}/orders/{o}/cancel", headers={"Origin": origin})
        assert_error(r, 403, "forbidden")
        r = server.adm("PUT", f"/v1/sales/{s}", {"stock": 1}, headers={"Origin": origin})
        assert_error(r, 403, "forbidden")
    assert server.adm("GET", f"/v1/sales/{s}/orders/{o}").body["status"] == "confirmed"
    assert server.sale(s)["stock"] == 5
    # the listener's own origin (the dashboard's fetch) is fine, in any case
    p = server.admin_port
    r = server.adm("PUT", f"/v1/sales/{s}", {"stock": 6},
                   headers={"Host": f"LOCALHOST:{p}", "Origin": f"HTTP://localhost:{p}"})
    assert r.status == 200 and r.body["stock"] == 6, r
    r = server.adm("POST", f"/v1/sales/{s}/orders/{o}/cancel",
                   headers={"Origin": f"http://{HOST}:{server.admin_port}"})
    assert r.status == 200 and r.body["status"] == "cancelled", r


def test_admin_answers_its_own_host_names_only(make_server, sale_id):
    srv = make_server()
    s = sale_id()
    srv.put_sale(s, stock=5)
    p = srv.admin_port
    for host in ("evil.example", f"evil.example:{p}", "127.0.0.2", f"localhost.evil.example:{p}", f"{HOST}:x",
                 "[::2]", f"[::1]x:{p}"):
        assert_error(srv.adm("GET", f"/v1/sales/{s}/orders", headers={"Host": host}), 421, "misdirected_request")
        assert_error(srv.adm("PUT", f"/v1/sales/{s}", {"stock": 9}, headers={"Host": host}), 421,
                     "misdirected_request")
    assert srv.sale(s)["stock"] == 5
    for host in (f"{HOST}:{p}", HOST, f"localhost:{p}", f"LocalHost:{p}", f"[::1]:{p}", "[::1]"):
        assert srv.adm("GET", f"/v1/sales/{s}/orders", headers={"Host": host}).status == 200, host
    # the public listener answers any Host
    assert srv.pub("GET", f"/v1/sales/{s}", headers={"Host": "evil.example"}).status == 200
    # HTTP/1.1 without Host
    buf, _ = raw_exchange(p, f"GET /v1/sales/{s} HTTP/1.1\r\n\r\n".encode(), timeout=2)
    assert buf.startswith(b"HTTP/1.1 421 "), buf[:200]
    # --admin-hosts replaces the list
    retire(srv)
    other = make_server(["--admin-hosts", "admin.example, Ops.Example"])
    assert other.adm("GET", "/v1/sales", headers={"Host": f"admin.example:{other.admin_port}"}).status == 200
    assert other.adm("GET", "/v1/sales", headers={"Host": "OPS.example"}).status == 200
    assert_error(other.adm("GET", "/v1/sales"), 421, "misdirected_request")


@sqlite_only
def test_admin_exposed_warning(make_server, tmp_path):
    exposed = make_server(["--admin-listen", "0.0.0.0:0"])
    assert "event=admin_exposed" in exposed.stderr_tail(), exposed.stderr_tail()
    retire(exposed)
    tok = tmp_path / "tok"
    tok.write_text("s3cret\n")
    tok.chmod(0o600)
    guarded = make_server(["--admin-listen", "0.0.0.0:0", "--admin-token-file", str(tok)], token="s3cret")
    assert "event=admin_exposed" not in guarded.stderr_tail()
    assert "admin_token_file_readable" not in guarded.stderr_tail()
    retire(guarded)
    local = make_server()
    assert "event=admin_exposed" not in local.stderr_tail()


@sqlite_only
def test_admin_token_file_rules(make_server, tmp_path, store):
    def start(content, mode=0o600):
        f = tmp_path / "token"
        f.write_bytes(content)
        f.chmod(mode)
        return subprocess.run([seckilld_binary(), "--listen", f"{HOST}:0", "--admin-listen", f"{HOST}:0",
                               "--store", store.url, "--admin-token-file", str(f)],
                              capture_output=True, text=True, timeout=10, env={"PATH": os.environ["PATH"]})

    for content, why in ((b"a" * 4097, "larger than 4096"), (b"ab\0cd\n", "NUL"), (b"ab\ncd\n", "newline"),
                         (b"ab\n\n", "newline"), (b"\n", "empty"), (b"", "empty")):
        p = start(content)
        assert p.returncode == 2 and why in p.stderr, (content[:20], p.returncode, p.stderr)
    # a final newline is trimmed; 4096 bytes are fine; the token is the whole line
    f = tmp_path / "good"
    f.write_bytes(b"x" * 4095 + b"\n")
    f.chmod(0o600)
    srv = make_server(["--admin-token-file", str(f)], token="x" * 4095)
    assert srv.adm("GET", "/v1/sales").status == 200
    assert srv.adm("GET", "/v1/sales", token="x" * 4094).status == 401
    assert srv.adm("GET", "/v1/sales", token="x" * 511).status == 401  # never cut at 511 bytes
    assert "admin_token_file_readable" not in srv.stderr_tail()
    retire(srv)
    f2 = tmp_path / "loose"
    f2.write_bytes(b"  spaced token\r\n")
    f2.chmod(0o644)
    loose = make_server(["--admin-token-file", str(f2)], token="  spaced token")
    assert loose.adm("GET", "/v1/sales").status == 200
    assert "event=admin_token_file_readable" in loose.stderr_tail(), loose.stderr_tail()
