"""Operational faults of the server process (issue 12), made to happen for real.

- One owner per port: a second seckilld, or any other process, already listening on an address
  that overlaps ours makes seckilld exit 1 with `Address already in use`, also when two start at
  the same instant; public and admin on overlapping addresses exit 2.
"""

import http.client
import os
import re
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
