"""Operational faults of the server process (issue 12), made to happen for real.

- One owner per port: a second seckilld, or any other process, already listening on an address
  that overlaps ours makes seckilld exit 1 with `Address already in use`, also when two start at
  the same instant; public and admin on overlapping addresses exit 2.
- Connections are bounded: under `ulimit -n 256` the derived cap (docs/operations.md: 140 public,
  20 admin with 2 workers) keeps 400 connections from exhausting descriptors; the admin listener
  keeps answering, the process does not spin, the cap is logged once; `--max-connections N`
  accepts exactly N, the others wait in the kernel and are served as connections close; accepts
  that fail with EMFILE (the descriptor limit lowered under the running process) pause instead
  of spinning.
- Clocks: deadlines and caches in the server's files run on CLOCK_MONOTONIC (a clock cannot be
  stepped in a test: the source is checked for wall-clock reads, each one accounted for).
"""

import http.client
import os
import re
import resource
import select
import socket
import subprocess
import time

import pytest

import conftest
from conftest import HOST, free_port, request, seckilld_binary

sqlite_only = pytest.mark.parametrize("store", ["sqlite"], indirect=True)

SRC = os.path.join(os.path.dirname(__file__), "..", "..", "src")
IN_USE = "Address already in use"


# --------------------------------------------------------------------------------------------
# helpers


def run_seckilld(tmp_path, *args, name="other", timeout=10):
    """Runs seckilld to its end with its own order book (so that only addresses can conflict)."""
    book = tmp_path / f"{name}.db"
    return subprocess.run([seckilld_binary(), "--store", f"sqlite:{book}", "--threads", "2", *args],
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                          preexec_fn=conftest._pdeathsig)


def log_lines(srv, needle):
    return [ln for ln in srv.stderr_tail(10 ** 7).splitlines() if needle in ln]


def wait_for(cond, timeout, what):
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(0.02)


# --------------------------------------------------------------------------------------------
# one owner per port


@sqlite_only
def test_second_instance_on_the_same_port_exits_1(make_server, tmp_path, sale_id):
    srv = make_server()
    s = sale_id()
    srv.put_sale(s, stock=5)
    for args, taken in [
        (["--listen", f"{HOST}:{srv.public_port}", "--admin-listen", f"{HOST}:0"], f"{HOST}:{srv.public_port}"),
        (["--listen", f"{HOST}:0", "--admin-listen", f"{HOST}:{srv.admin_port}"], f"{HOST}:{srv.admin_port}"),
        # the wildcard overlaps the first one's loopback address
        (["--listen", f"0.0.0.0:{srv.public_port}", "--admin-listen", f"{HOST}:0"], f"0.0.0.0:{srv.public_port}"),
    ]:
        p = run_seckilld(tmp_path, *args)
        assert p.returncode == 1, (args, p)
        assert f"seckilld: cannot listen on {taken}: {IN_USE}\n" in p.stderr, (args, p.stderr)
        assert "listening" not in p.stdout, p.stdout
    # the first one still owns its ports and its buyers
    assert [srv.take(s, user=f"u{i}").status for i in range(6)] == [201] * 5 + [409]
    assert srv.sale(s)["sold"] == 5


@pytest.mark.parametrize("how", ["plain", "reuseaddr", "reuseport", "bound-only"])
def test_port_held_by_another_process_exits_1(tmp_path, how):
    """Held by a plain socket, as nginx or redis-server hold theirs; with SO_REUSEPORT (nginx's
    `reuseport`), which our own sockets would have joined before; or bound without listening."""
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if how == "reuseaddr":
            holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if how == "reuseport":
            holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        holder.bind((HOST, 0))
        if how != "bound-only":
            holder.listen(16)
        port = holder.getsockname()[1]
        p = run_seckilld(tmp_path, "--listen", f"{HOST}:{port}", "--admin-listen", f"{HOST}:0")
        assert p.returncode == 1, p
        assert f"seckilld: cannot listen on {HOST}:{port}: {IN_USE}\n" in p.stderr, p.stderr
        p = run_seckilld(tmp_path, "--listen", f"{HOST}:0", "--admin-listen", f"0.0.0.0:{port}")
        assert p.returncode == 1, p
        assert f"seckilld: cannot listen on 0.0.0.0:{port}: {IN_USE}\n" in p.stderr, p.stderr
    finally:
        holder.close()


def start_raw(tmp_path, name, *args):
    return subprocess.Popen(
        [seckilld_binary(), "--store", f"sqlite:{tmp_path}/{name}.db", "--threads", "2", *args],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=conftest._pdeathsig)


def stop_raw(procs):
    for p in procs:
        if p.poll() is None:
            p.terminate()
            assert p.wait(10) == 0, p.stderr.read()
        p.stdout.close()
        p.stderr.close()


def one_won(procs, port, timeout=8):
    """Of seckillds started on one port, exactly one runs and the others exit 1."""
    deadline = time.monotonic() + timeout
    while sum(p.poll() is None for p in procs) > 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.5)
    alive = [p for p in procs if p.poll() is None]
    assert len(alive) == 1, [p.poll() for p in procs]
    for p in procs:
        if p is not alive[0]:
            err = p.stderr.read()
            assert p.returncode == 1, err
            assert f"seckilld: cannot listen on {HOST}:{port}: {IN_USE}\n" in err, err
    assert alive[0].stdout.readline() == f"listening public={HOST}:{port}\n"
    assert request(port, "GET", "/healthz", timeout=3).status == 200


def port_lock(port):
    """The start-up lock seckilld takes for a port (server.c): an abstract Unix socket."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(f"\0seckilld/listen/{port}")
    return s


def test_two_starting_at_once_on_one_port_one_wins(tmp_path):
    """Two seckillds starting at the same instant on one port: exactly one runs, the other exits
    1. Both could probe the port before either binds it; the start-up lock orders them. Here the
    test holds the lock while both start, so that both reach it together, then lets go."""
    port = free_port()
    lock = port_lock(port)
    procs = []
    try:
        procs = [start_raw(tmp_path, f"race{k}", "--listen", f"{HOST}:{port}", "--admin-listen", f"{HOST}:0")
                 for k in range(2)]
        time.sleep(1.0)
        assert [p.poll() for p in procs] == [None, None]  # both wait for the lock
        r, _, _ = select.select([p.stdout for p in procs], [], [], 0)
        assert r == [], "one started listening while the lock was held"
        lock.close()
        one_won(procs, port)
    finally:
        lock.close()
        stop_raw(procs)
    # and without the test's help, a few times
    for round_ in range(3):
        port = free_port()
        procs = [start_raw(tmp_path, f"free{round_}-{k}", "--listen", f"{HOST}:{port}", "--admin-listen", f"{HOST}:0")
                 for k in range(2)]
        try:
            one_won(procs, port)
        finally:
            stop_raw(procs)


def test_start_up_lock_held_too_long_exits_1(tmp_path):
    port = free_port()
    lock = port_lock(port)
    try:
        t0 = time.monotonic()
        p = run_seckilld(tmp_path, "--listen", f"{HOST}:{port}", "--admin-listen", f"{HOST}:0")
        assert 5.0 <= time.monotonic() - t0 < 8.0
        assert p.returncode == 1, p
        assert f"seckilld: cannot listen on {HOST}:{port}: another seckilld is starting on this port\n" in p.stderr
    finally:
        lock.close()


@pytest.mark.parametrize("public,admin", [
    ("127.0.0.1:{p}", "127.0.0.1:{p}"),
    ("0.0.0.0:{p}", "127.0.0.1:{p}"),
    ("127.0.0.1:{p}", "0.0.0.0:{p}"),
    ("[::]:{p}", "127.0.0.1:{p}"),
    ("[::1]:{p}", "[::]:{p}"),
    ("[::ffff:127.0.0.1]:{p}", "127.0.0.1:{p}"),
])
def test_public_and_admin_on_one_address_exit_2(tmp_path, public, admin):
    port = free_port()
    pub, adm = public.format(p=port), admin.format(p=port)
    p = run_seckilld(tmp_path, "--listen", pub, "--admin-listen", adm)
    assert p.returncode == 2, p
    assert p.stderr.endswith(f"seckilld: --listen {pub} and --admin-listen {adm} overlap: the admin listener "
                             f"needs an address of its own\n"), p.stderr
    assert p.stdout == "", p.stdout


def test_one_port_on_two_addresses_is_fine(tmp_path):
    """The same port on two different loopback addresses does not overlap: both listeners run."""
    port = free_port()
    proc = start_raw(tmp_path, "two", "--listen", f"127.0.0.2:{port}", "--admin-listen", f"127.0.0.1:{port}")
    try:
        assert proc.stdout.readline() == f"listening public=127.0.0.2:{port}\n"
        assert proc.stdout.readline() == f"listening admin=127.0.0.1:{port}\n"
        c = http.client.HTTPConnection("127.0.0.2", port, timeout=3)
        c.request("GET", "/metrics")
        assert c.getresponse().status == 404  # the public listener
        c.close()
        assert request(port, "GET", "/metrics", timeout=3).status == 200  # the admin one
    finally:
        stop_raw([proc])


# --------------------------------------------------------------------------------------------
# connections bounded


def metrics(srv):
    r = srv.adm("GET", "/metrics", timeout=2)
    assert r.status == 200, r
    out = {}
    for line in r.body.splitlines():
        m = re.match(r'^(seckill_(?:connections|connections_max|accept_errors_total))\{listener="(\w+)"\} (\d+)$',
                     line)
        if m:
            out[(m.group(1), m.group(2))] = int(m.group(3))
    return out


def cpu_seconds(pid):
    """utime + stime of a process, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.fixture
def nofile(monkeypatch):
    """nofile(n): the servers started next get soft = hard RLIMIT_NOFILE = n."""
    orig = conftest._pdeathsig

    def limit(n):
        def preexec():
            orig()
            resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))
        monkeypatch.setattr(conftest, "_pdeathsig", preexec)

    return limit


class Clients:
    """Many raw connections, each sending one keep-alive GET /healthz at once."""

    REQ = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"

    def __init__(self, port, n):
        self.socks = []
        self.answered = set()
        for _ in range(n):
            s = socket.create_connection((HOST, port), timeout=5)
            s.sendall(self.REQ)
            self.socks.append(s)

    def poll_answers(self, wait=0.0):
        """Reads what arrived; returns how many connections got their answer so far."""
        p = select.poll()
        by_fd = {}
        for s in self.socks:
            if s.fileno() >= 0 and s not in self.answered:
                p.register(s, select.POLLIN)
                by_fd[s.fileno()] = s
        for fd, _ in p.poll(int(wait * 1000)):
            s = by_fd[fd]
            data = s.recv(65536)
            assert data.startswith(b"HTTP/1.1 200"), data[:200]
            self.answered.add(s)
        return len(self.answered)

    def settle(self, expect, timeout=3.0, quiet=0.5):
        """Waits until exactly `expect` are answered and no more come for `quiet` seconds."""
        deadline = time.monotonic() + timeout
        while self.poll_answers(0.05) < expect and time.monotonic() < deadline:
            pass
        self.poll_answers(quiet)
        return len(self.answered)

    def close(self, socks=None):
        for s in list(socks if socks is not None else self.socks):
            s.close()

    def close_answered(self, k):
        done = [s for s in self.socks if s in self.answered and s.fileno() >= 0][:k]
        self.close(done)
        return done


def test_400_connections_under_ulimit_256(make_server, nofile, sale_id):
    """400 connections at `ulimit -n 256` (2 workers): the cap of 140 public connections
    (256 - 64 - 2 * 16 = 160 descriptors, an eighth of them for the admin listener) is reached
    and never passed, nothing fails for lack of descriptors, the admin listener answers, the
    process sleeps, the cap is logged once, and the waiting connections are served in turn."""
    nofile(256)
    srv = make_server()
    started = wait_for(lambda: log_lines(srv, "event=started"), 3, "event=started")  # logged after `listening`
    assert len(started) == 1 and "nofile=256 max_connections=140 admin_max_connections=20" in started[0], started
    m = metrics(srv)
    assert m[("seckill_connections_max", "public")] == 140
    assert m[("seckill_connections_max", "admin")] == 20
    clients = Clients(srv.public_port, 400)
    try:
        assert clients.settle(140) == 140
        # the admin listener answers at once
        t0 = time.monotonic()
        assert srv.adm("GET", "/healthz", timeout=2).status == 200
        m = metrics(srv)
        assert time.monotonic() - t0 < 2.0
        assert m[("seckill_connections", "public")] == 140
        assert m[("seckill_accept_errors_total", "public")] == 0
        assert m[("seckill_accept_errors_total", "admin")] == 0
        # at the cap it does not spin: under a quarter of a core over 2 s
        c0 = cpu_seconds(srv.proc.pid)
        time.sleep(2.0)
        used = cpu_seconds(srv.proc.pid) - c0
        assert used < 0.5, f"{used:.2f} s of CPU in 2 s at the cap"
        assert clients.poll_answers() == 140
        assert len(log_lines(srv, "event=connections_at_cap listener=public max=140")) == 1
        # as connections close, exactly as many waiting ones are served
        clients.close_answered(100)
        assert clients.settle(240) == 240
        assert metrics(srv)[("seckill_connections", "public")] == 140
        clients.close()
        wait_for(lambda: metrics(srv)[("seckill_connections", "public")] == 0, 5, "connections to close")
        s = sale_id()
        srv.put_sale(s, stock=3)
        assert [srv.take(s, user=f"u{i}").status for i in range(4)] == [201, 201, 201, 409]
        assert len(log_lines(srv, "event=connections_at_cap")) == 1
        assert log_lines(srv, "event=accept_failed") == []
    finally:
        clients.close()


@sqlite_only
def test_max_connections_extra_ones_wait(make_server, sale_id):
    srv = make_server(["--max-connections", "4"])
    m = metrics(srv)
    assert m[("seckill_connections_max", "public")] == 4
    clients = Clients(srv.public_port, 6)
    try:
        assert clients.settle(4) == 4  # the other 2 wait in the kernel's backlog, unanswered
        assert metrics(srv)[("seckill_connections", "public")] == 4
        assert srv.adm("GET", "/healthz").status == 200  # the admin listener has its own quota
        clients.close_answered(1)
        assert clients.settle(5) == 5
        clients.close_answered(1)
        assert clients.settle(6) == 6
        assert metrics(srv)[("seckill_connections", "public")] == 4
        more = Clients(srv.public_port, 3)
        try:
            assert more.settle(0, timeout=0.5) == 0
            clients.close()
            assert more.settle(3) == 3
            assert metrics(srv)[("seckill_connections", "public")] == 3
        finally:
            more.close()
        wait_for(lambda: metrics(srv)[("seckill_connections", "public")] == 0, 5, "connections to close")
        assert len(log_lines(srv, "event=connections_at_cap listener=public max=4")) == 1
    finally:
        clients.close()


@sqlite_only
def test_max_connections_above_the_budget_is_lowered(make_server):
    srv = make_server(["--max-connections", "100000000"])
    m = metrics(srv)
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]  # what the server raised its soft limit to
    budget = nofile - 64 - 2 * 16
    admin = min(1024, max(16, budget // 8))
    assert m[("seckill_connections_max", "admin")] == admin
    assert m[("seckill_connections_max", "public")] == budget - admin
    lowered = log_lines(srv, "event=max_connections_lowered")
    assert len(lowered) == 1 and f"requested=100000000 max={budget - admin} nofile={nofile} " in lowered[0], lowered


@sqlite_only
def test_emfile_pauses_accepting_instead_of_spinning(make_server, nofile, sale_id):
    """The descriptor limit lowered under the running process (prlimit), below what its cap
    assumed: accept fails with EMFILE. The listener pauses for 100 ms at a time instead of
    spinning on a readable socket, one warning is logged, and service resumes once connections
    close."""
    nofile(256)
    srv = make_server()
    pid = srv.proc.pid
    base = len(os.listdir(f"/proc/{pid}/fd"))
    limit = base + 30
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (limit, 256))  # soft only: it can be put back
    clients = Clients(srv.public_port, 100)
    try:
        wait_for(lambda: log_lines(srv, "event=accept_failed listener=public"), 5, "an accept to fail")
        t_fail = time.monotonic()
        got = clients.settle(1)
        assert 1 <= got <= 30, got
        c0 = cpu_seconds(pid)
        time.sleep(2.0)
        used = cpu_seconds(pid) - c0
        assert used < 0.5, f"{used:.2f} s of CPU in 2 s with accept failing"
        assert clients.poll_answers() == got  # nobody else got in
        lines = log_lines(srv, "event=accept_failed")
        assert len(lines) == 1, lines
        assert 'listener=public error="Too many open files"' in lines[0] and "pause_ms=100" in lines[0], lines
        clients.close()
        # after the pause, the admin listener and the public one accept again
        m = wait_for(lambda: _try_metrics(srv), 3, "the admin listener to answer again")
        elapsed = time.monotonic() - t_fail + 0.5
        errors = m[("seckill_accept_errors_total", "public")] + m[("seckill_accept_errors_total", "admin")]
        # each of the 2 workers retries each listener at most once per 100 ms pause
        assert 1 <= errors <= 2 * 2 * (elapsed / 0.1 + 2), (errors, elapsed)
        wait_for(lambda: _try_metrics(srv) and _try_metrics(srv)[("seckill_connections", "public")] == 0, 5,
                 "connections to close")
        s = sale_id()
        srv.put_sale(s, stock=2)
        assert [srv.take(s, user=f"u{i}").status for i in range(3)] == [201, 201, 409]
    finally:
        clients.close()
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (256, 256))


def _try_metrics(srv):
    try:
        return metrics(srv)
    except (OSError, http.client.HTTPException, AssertionError):
        return None


# --------------------------------------------------------------------------------------------
# clocks


# Every wall-clock read in the server's files, each a timestamp and not a deadline:
WALL_CLOCK_READS = {
    ("store_redis.c", "ws->deadline = d >= 0 && d < INT64_MAX / 1000 ? mono + (d * 1000 - sk_now_ms()) : INT64_MAX;"),
    # h2o's loop clock is the wall clock read once a turn (gettimeofday in h2o 2.2.5): the guard
    # against its steps, and the dashboard's snapshot time (its tick's, on the timer's clock)
    ("server.c", "uint64_t now = h2o_now(loop);"),
    ("server.c", "w->loop_now_max = h2o_now(w->ctx.loop);"),
    ("dashboard.c", "d->asked_at = (int64_t)h2o_now(d->w->ctx.loop);"),
    ("log.c", "clock_gettime(CLOCK_REALTIME, &ts); /* a timestamp, the one thing the wall clock is for */"),
    ("accesslog.c", "time_t now = time(NULL);"),
}


def test_deadlines_and_caches_use_the_monotonic_clock():
    """The Redis store's sold-out cache (fresh_until, the hold deadline), the Redis connection's
    deadlines, accept pauses, shutdown, rate limits and dashboard caches read CLOCK_MONOTONIC; the
    wall clock is read only for the timestamps listed above (store_redis.c turns Redis's wall-clock
    hold deadline into a monotonic one as it learns it). req->now_ms, the wall clock of a request,
    is compared with sale windows (wall-clock times) only."""
    files = ["server.c", "store_redis.c", "redis_args.c", "redis_reply.c", "redis_requests.c", "redis_sweep.c",
             "redis_relay.c", "redis_conn.c", "redis_cluster.c", "dashboard.c", "feed.c", "ratelimit.c", "metrics.c",
             "log.c", "accesslog.c", "config.c", "main.c"]
    wall = re.compile(r"sk_now_ms\(\)|CLOCK_REALTIME|gettimeofday|\btime\(NULL\)|\bh2o_now\(")
    found = set()
    for name in files:
        with open(os.path.join(SRC, name)) as f:
            for line in f:
                code = line.strip()
                if wall.search(code) and not code.startswith(("/*", "*", "//")):
                    found.add((name, line.strip()))
    assert found == WALL_CLOCK_READS
    with open(os.path.join(SRC, "store_redis.c")) as f:
        text = f.read()
    assert "ws->fresh_until = mono + SOLDOUT_TTL_MS;" in text
    assert "mono >= ws->deadline" in text and "mono >= ws->fresh_until" in text
    # the only use of a request's wall clock in the cache is the sale's window
    uses = re.findall(r".*req->now_ms.*", text)
    assert [u.strip() for u in uses] == ["if (ws->ends_at != SK_NO_TIME && req->now_ms / 1000 >= ws->ends_at - 1)"]
