"""Operations: systemd notification, SIGTERM with requests in flight, metrics after known traffic,
configuration sources, and the embedded store's answer to a full disk."""

import os
import re
import socket
import subprocess
import threading
import time

import pytest

from conftest import HOST, Server, request, seckilld_binary, storm

sqlite_only = pytest.mark.parametrize("store", ["sqlite"], indirect=True)


def metric(text, name, labels=""):
    """The value of one sample of the Prometheus text `text`, or None."""
    m = re.search(r"^" + re.escape(name + labels) + r" (\S+)$", text, re.M)
    return None if m is None else float(m.group(1))


def test_metrics_after_known_traffic(server, sale_id):
    s = sale_id()
    server.put_sale(s, stock=3, per_user_limit=1)
    assert server.take(s, user="a", request_id="ra").status == 201
    assert server.take(s, user="a", request_id="ra").status == 200  # replay
    assert server.take(s, user="a").status == 409                   # user_limit
    assert server.take(s, user="b").status == 201
    assert server.take(s, user="c").status == 201
    assert server.take(s, user="d").status == 409                   # sold_out
    assert server.take(s, user="e").status == 409                   # sold_out
    assert server.pub("POST", f"/v1/sales/{s}/orders", b"{bad").status == 400
    r = server.adm("GET", "/metrics")
    assert r.status == 200
    assert r.headers["content-type"].startswith("text/plain")
    t = r.body
    assert metric(t, "seckill_takes_total", '{outcome="won"}') == 3
    assert metric(t, "seckill_takes_total", '{outcome="replayed"}') == 1
    assert metric(t, "seckill_takes_total", '{outcome="user_limit"}') == 1
    assert metric(t, "seckill_takes_total", '{outcome="sold_out"}') == 2
    assert metric(t, "seckill_takes_total", '{outcome="bad_request"}') == 1
    assert metric(t, "seckill_requests_total", '{route="take",status="201"}') == 3
    assert metric(t, "seckill_requests_total", '{route="take",status="409"}') == 3
    assert metric(t, "seckill_requests_total", '{route="take",status="200"}') == 1
    assert metric(t, "seckill_requests_total", '{route="take",status="400"}') == 1
    assert metric(t, "seckill_sale_sold", f'{{sale="{s}"}}') == 3
    assert metric(t, "seckill_sale_held", f'{{sale="{s}"}}') == 0
    assert metric(t, "seckill_sale_remaining", f'{{sale="{s}"}}') == 0
    assert metric(t, "seckill_store_up", '{store="%s"}' % ("sqlite" if "sqlite" in server.store_url else "redis")) == 1
    if "redis" in server.store_url:
        # every take went to Redis but the sold-out ones after a worker learned "sold out" from
        # a reply (each worker has its own sold-out cache): 5 to 7 of the 7
        assert metric(t, "seckill_redis_take_batch_size_sum") in (5, 6, 7)
        assert 1 <= metric(t, "seckill_redis_take_batch_size_count") <= 7
        assert metric(t, "seckill_redis_script_calls_total") >= metric(t, "seckill_redis_take_batch_size_count")
    else:
        assert metric(t, "seckill_committed_orders_total") == 3
        assert metric(t, "seckill_commit_batch_size_sum") == 3
    # the feed relay runs on a Redis Cluster only: elsewhere its counters stay at 0 and its lag
    # gauge is not shown; on a cluster the take events' entries reach the merged feed
    relay = ["seckill_feed_relay_entries_total", "seckill_feed_relay_gaps_total"] + \
        [f'seckill_feed_relay_copies_total{{result="{r}"}}' for r in ("copied", "raced", "failed")]
    if "redis-cluster" in server.store_url:
        deadline = time.monotonic() + 10
        while metric(t, "seckill_feed_relay_entries_total") < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
            t = server.adm("GET", "/metrics").body
        assert metric(t, "seckill_feed_relay_entries_total") == 3  # the 3 created, a take call each
        assert metric(t, 'seckill_feed_relay_copies_total{result="copied"}') >= 1
        assert metric(t, "seckill_feed_relay_gaps_total") == 0
        assert 0 <= metric(t, "seckill_feed_relay_lag_seconds") < 60
    else:
        assert [metric(t, name) for name in relay] == [0] * len(relay)
        assert "seckill_feed_relay_lag_seconds" not in t
    # the histogram counts every request answered before this scrape (at least the 9 above)
    assert metric(t, "seckill_request_duration_seconds_count") >= 9
    assert metric(t, "seckill_request_duration_seconds_bucket", '{le="+Inf"}') == \
        metric(t, "seckill_request_duration_seconds_count")


@sqlite_only
def test_notify_socket_ready_and_stopping(store, tmp_path):
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(10)
    srv = Server(store.url, str(tmp_path), env={"NOTIFY_SOCKET": path})
    try:
        srv.start()
        assert sock.recv(256) == b"READY=1"
        assert srv.stop() == 0
        assert sock.recv(256) == b"STOPPING=1"
    finally:
        srv.kill()
        sock.close()


@sqlite_only
def test_sigterm_with_requests_in_flight(make_server, sale_id):
    """SIGTERM in the middle of a storm: exit 0, and every order acknowledged is in the book
    after a restart."""
    srv = make_server()
    s = sale_id()
    srv.put_sale(s, stock=100000)
    reqs = [("POST", f"/v1/sales/{s}/orders", {"user": f"u{i}", "request_id": f"r{i}"}) for i in range(4000)]
    results = [None] * len(reqs)
    t = threading.Thread(target=storm, args=(srv.public_port, reqs), kwargs={"threads": 32, "results": results})
    t.start()
    deadline = time.monotonic() + 10
    while sum(1 for r in results if r is not None) < 300 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert srv.stop(timeout=15) == 0, srv.stderr_tail()
    t.join(60)
    acked = {reqs[i][2]["request_id"]: r[1]["order"] for i, r in enumerate(results)
             if r is not None and r[0] in (200, 201)}
    assert len(acked) >= 300
    srv.start()
    book = {o["request_id"]: o["order"] for o in srv.orders(s)}
    for rid, oid in acked.items():
        assert book.get(rid) == oid, f"acknowledged order {rid} -> {oid} lost after SIGTERM"
    assert srv.sale(s)["sold"] == len(book)


@sqlite_only
def test_config_file_env_and_command_line(store, tmp_path):
    """--config FILE, SECKILL_* and the command line: the command line wins over the
    environment, which wins over the file."""
    token = tmp_path / "token"
    token.write_text("sekrit\n")
    cfg = tmp_path / "seckilld.conf"
    cfg.write_text(f"# comment\nadmin-token-file = {token}\nmax-body-bytes = 100\nidle-timeout=5\n")
    srv = Server(store.url, str(tmp_path), extra_args=["--config", str(cfg), "--max-body-bytes", "200"],
                 env={"SECKILL_MAX_BODY_BYTES": "150"}, token="sekrit")
    try:
        srv.start()
        assert srv.adm("GET", "/v1/sales", token="wrong").status == 401
        assert srv.adm("GET", "/v1/sales").status == 200
        body = b'{"stock": 1, "per_user_limit": 0' + b" " * 160 + b"}"  # 195 bytes: under 200
        assert srv.adm("PUT", "/v1/sales/cfg", body).status == 201
        big = b'{"stock": 1' + b" " * 200 + b"}"
        assert srv.adm("PUT", "/v1/sales/cfg", big).status == 413
    finally:
        assert srv.stop() == 0


def test_config_line_over_1023_bytes_or_with_a_nul_exits_2(tmp_path):
    """A line is never cut: its tail would become a line of its own, and a live setting (found by
    tests/fuzz/fuzz_config.c; issue 19)."""
    cfg = tmp_path / "long.conf"
    head = "log-file = /tmp/"
    cfg.write_text("log-level = warn\n" + head + "x" * (1023 - len(head)) + "threads = 9\n")
    p = subprocess.run([seckilld_binary(), "--config", str(cfg)], capture_output=True, text=True, timeout=10)
    assert p.returncode == 2 and f"{cfg}:2: the line is longer than 1023 bytes" in p.stderr, p
    cfg.write_bytes(b"store = sqlite:/tmp/x.db\0.old\n")
    p = subprocess.run([seckilld_binary(), "--config", str(cfg)], capture_output=True, text=True, timeout=10)
    assert p.returncode == 2 and f"{cfg}:1: the line holds a NUL byte" in p.stderr, p


def test_bad_config_file_exits_2(tmp_path):
    cfg = tmp_path / "bad.conf"
    cfg.write_text("no-such-key = 1\n")
    p = subprocess.run([seckilld_binary(), "--config", str(cfg)], capture_output=True, text=True, timeout=10)
    assert p.returncode == 2 and "no-such-key" in p.stderr, p
    p = subprocess.run([seckilld_binary(), "--threads", "many"], capture_output=True, text=True, timeout=10)
    assert p.returncode == 2 and "--threads" in p.stderr, p


@sqlite_only
def test_rate_limit_429_with_retry_after(make_server, sale_id):
    # a burst of 5, then 1 token a second: the takes below are exact unless the machine is so
    # slow (a sanitizer build on a busy machine) that a second passed meanwhile, when each second
    # may have given one more 201
    srv = make_server(["--rate-limit", "1", "--rate-burst", "5"])
    s = sale_id()
    srv.put_sale(s, stock=1000)
    t0 = time.monotonic()
    codes = [srv.take(s, user="bot").status for _ in range(8)]
    r = srv.take(s, user="bot")
    # another user named in the body is the same client (the address)
    human = srv.take(s, user="human").status
    refilled = int(time.monotonic() - t0)
    got = codes + [r.status, human]
    assert got[:5] == [201] * 5 and set(got) <= {201, 429}, got
    assert got.count(201) - 5 <= refilled, (got, refilled)
    if refilled == 0:
        assert got == [201] * 5 + [429] * 5, got
    r = r if r.status == 429 else next(x for x in (srv.take(s, user="bot") for _ in range(10)) if x.status == 429)
    assert r.status == 429 and r.body["error"] == "rate_limited"
    assert int(r.headers["retry-after"]) >= 1
    # the admin listener is never limited
    assert all(srv.take(s, via="adm", user="bot2").status == 201 for _ in range(8))
    sold = srv.adm("GET", f"/v1/sales/{s}").body["sold"]
    time.sleep(1.1)  # a token comes back
    assert srv.take(s, user="human").status == 201
    assert srv.adm("GET", f"/v1/sales/{s}").body["sold"] == sold + 1


def _mount_tmpfs(path, size):
    # The one skip of the suite: what the machine lacks, not a package (SK_NO_SKIP=1 fails it).
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs")
    os.makedirs(path, exist_ok=True)
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path], capture_output=True, text=True)
    if p.returncode != 0:
        pytest.skip(f"cannot mount tmpfs here: {p.stderr.strip()}")


@sqlite_only
def test_disk_full_gives_503_and_leaves_nothing_half_done(store, tmp_path, sale_id):
    """The order book's disk fills up: takes get 503 (never 201), nothing half-done remains,
    /healthz says 503; when space returns, service resumes and a retry is decided anew."""
    mnt = str(tmp_path / "small")
    _mount_tmpfs(mnt, "2m")
    srv = Server(f"sqlite:{mnt}/seckill.db", str(tmp_path))
    try:
        srv.start()
        s = sale_id()
        srv.put_sale(s, stock=1000000)
        filler = os.path.join(mnt, "filler")
        st = os.statvfs(mnt)
        room = 64 * 1024  # leave only a little room for the WAL
        with open(filler, "wb") as f:
            f.write(b"\0" * max(0, st.f_bavail * st.f_frsize - room))
        answers = {}
        for i in range(3000):
            r = srv.take(s, user=f"u{i}", request_id=f"r{i}")
            answers[f"r{i}"] = r
            if r.status == 503:
                break
        failed = [rid for rid, r in answers.items() if r.status == 503]
        assert failed, "the disk never filled up"
        r = answers[failed[0]]
        assert r.body["error"] == "unavailable" and int(r.headers["retry-after"]) >= 1
        assert srv.pub("GET", "/healthz").status == 503
        won = {rid: r.body["order"] for rid, r in answers.items() if r.status == 201}
        assert all(r.status in (201, 503) for r in answers.values())
        sale = srv.sale(s)
        assert sale["sold"] == len(won), (sale, len(won))  # the failed reservation was undone
        # while the book cannot be written every take is refused at once, sold-out or not
        r = srv.take(s, user="x-late", request_id="x-late")
        assert (r.status, r.body["error"]) == (503, "unavailable"), r
        os.remove(filler)
        # service resumes by itself, without a take to try it (the store probes the disk), within
        # 5 s; the failed request is then decided anew
        deadline = time.monotonic() + 5
        while srv.pub("GET", "/healthz").status != 200:
            assert time.monotonic() < deadline, "/healthz did not come back within 5 s of the disk"
            time.sleep(0.1)
        r = srv.take(s, user=failed[0].replace("r", "u"), request_id=failed[0])
        assert r.status == 201, r
        book = {o["request_id"]: o["order"] for o in srv.orders(s)}
        assert len(book) == len(won) + 1
        for rid, oid in won.items():
            assert book[rid] == oid
        assert srv.sale(s)["sold"] == len(won) + 1
        assert srv.stop() == 0
        srv.start()  # what is on disk agrees with what was acknowledged
        assert srv.sale(s)["sold"] == len(won) + 1
    finally:
        srv.kill()
        subprocess.run(["umount", "-l", mnt], capture_output=True)


@sqlite_only
def test_access_log_lines_and_reopen(make_server, tmp_path, sale_id):
    log = tmp_path / "access.log"
    srv = make_server(["--access-log", str(log)])
    s = sale_id()
    srv.put_sale(s, stock=1)
    assert srv.take(s, user="a", request_id="x").status == 201
    assert srv.take(s, user="a", request_id="x").status == 200
    assert srv.take(s, user="b").status == 409
    assert srv.pub("GET", "/nope").status == 404
    deadline = time.monotonic() + 4  # buffered: written at least once a second
    while len(log.read_text().splitlines() if log.exists() else []) < 5:
        assert time.monotonic() < deadline, log.read_text() if log.exists() else "no access log"
        time.sleep(0.1)
    lines = [l.split(" ") for l in log.read_text().splitlines()]
    got = sorted((l[2], l[3], l[4], l[5]) for l in lines)
    assert got == sorted([("PUT", f"/v1/sales/{s}", "201", "-"),
                          ("POST", f"/v1/sales/{s}/orders", "201", "won"),
                          ("POST", f"/v1/sales/{s}/orders", "200", "replayed"),
                          ("POST", f"/v1/sales/{s}/orders", "409", "sold_out"),
                          ("GET", "/nope", "404", "not_found")]), lines
    assert all(l[1] == HOST and len(l) == 7 and int(l[6]) >= 0 for l in lines), lines
    os.rename(log, tmp_path / "access.log.1")
    srv.proc.send_signal(__import__("signal").SIGHUP)
    time.sleep(0.3)
    assert srv.pub("GET", "/healthz").status == 200
    deadline = time.monotonic() + 4
    while not (log.exists() and "/healthz" in log.read_text()):
        assert time.monotonic() < deadline, "SIGHUP did not reopen --access-log"
        time.sleep(0.1)


def test_systemd_unit_verifies():
    unit = os.path.join(os.path.dirname(__file__), "..", "..", "packaging", "seckilld.service")
    tool = "/usr/bin/systemd-analyze"
    if not os.access(tool, os.X_OK):
        pytest.fail(f"{tool} missing: apt-get install systemd (scripts/deps.sh, run by make test, does it)",
                    pytrace=False)
    # verify the unit as shipped, with ExecStart pointed at the binary under test
    text = open(unit).read().replace("/usr/local/bin/seckilld", seckilld_binary())
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "seckilld.service")
        with open(path, "w") as f:
            f.write(text)
        p = subprocess.run([tool, "verify", "--man=no", path], capture_output=True, text=True, timeout=60)
    problems = [l for l in (p.stdout + p.stderr).splitlines() if "seckilld.service" in l]
    assert p.returncode == 0 and not problems, p.stdout + p.stderr


@sqlite_only
@pytest.mark.parametrize("trust", [True, False])
def test_rate_limit_client_from_x_forwarded_for(make_server, trust):
    """With --trust-proxy the peer is a proxy and the client is the last X-Forwarded-For address
    (the one the proxy wrote; the first is the client's own word); without it the header is
    ignored and every request comes from the same peer."""
    srv = make_server(["--rate-limit", "2", "--rate-burst", "2"] + (["--trust-proxy"] if trust else []))
    def get(xff):
        return srv.pub("GET", "/healthz", headers={"X-Forwarded-For": xff}).status
    a = [get(f"203.0.113.{i}, 10.0.0.1") for i in range(3)]
    b = get("198.51.100.9")
    if trust:
        assert (a, b) == ([200, 200, 429], 200), (a, b)
    else:
        assert (a, b) == ([200, 200, 429], 429), (a, b)
