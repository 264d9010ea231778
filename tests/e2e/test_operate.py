"""Operating seckilld as an nginx or redis-server operator would (docs/operations.md, issue 18):
-v, the config test (-t), SIGHUP reloading the configuration, errors that name what they are
about, secrets never printed, the Redis password from a file."""

import os
import re
import signal
import subprocess
import threading
import time

import pytest

from conftest import HOST, REDIS_SERVER, Server, free_port, seckilld_binary, storm

sqlite_only = pytest.mark.parametrize("store", ["sqlite"], indirect=True)
ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
SHIPPED_CONF = os.path.join(ROOT, "packaging", "seckilld.conf")


def run(*args, env=None, cwd=None):
    e = {k: v for k, v in os.environ.items() if not k.startswith(("SECKILL_", "JOURNAL_STREAM"))}
    e.update(env or {})
    return subprocess.run([seckilld_binary(), *args], capture_output=True, text=True, timeout=10,
                          stdin=subprocess.DEVNULL, env=e, cwd=cwd)


@pytest.mark.parametrize("flag", ["-v", "-V", "--version"])
def test_version_flags(flag):
    p = run(flag)
    assert p.returncode == 0 and re.fullmatch(r"seckilld \d+\.\d+\.\d+\n", p.stdout), p


def test_check_config_of_the_shipped_file_is_ok(tmp_path):
    """`seckilld -t --config /etc/seckill/seckilld.conf` (docs/operations.md): the shipped config
    passes, and the test opens nothing (its log and book directories need not exist)."""
    p = run("-t", "--config", SHIPPED_CONF, cwd=tmp_path)
    assert p.returncode == 0, p
    assert p.stderr == f"seckilld: the configuration {SHIPPED_CONF} is ok\n", p
    assert p.stdout == "" and os.listdir(tmp_path) == []


def test_check_config_lists_every_problem_and_opens_nothing(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    cfg = d / "bad.conf"
    cfg.write_text(f"rate-limit = lots\nno-such-key = 1\nlog-level = loud\nlisten = nowhere\n"
                   f"store = redis://:hunter2@localhost:0\nadmin-token-file = {d}/missing-token\n"
                   f"log-file = {d}/seckilld.log\naccess-log = {d}/access.log\n")
    p = run("--check-config", "--config", str(cfg), "--threads", "999", env={"SECKILL_MAX_BODY_BYTES": "1"},
            cwd=d)
    assert p.returncode == 1, p
    want = [
        f"seckilld: {cfg}:1: --rate-limit must be an integer from 0 to 100000000, not 'lots'",
        f"seckilld: {cfg}:2: unknown key 'no-such-key'",
        "seckilld: SECKILL_MAX_BODY_BYTES: --max-body-bytes must be an integer from 64 to 1048576, not '1'",
        "seckilld: command line: --threads must be an integer from 0 to 256, not '999'",
        f"seckilld: --admin-token-file: cannot open the admin token file {d}/missing-token: "
        "No such file or directory",
        "seckilld: --log-level must be debug, info, warn or error, not 'loud'",
        "seckilld: --listen must be HOST:PORT, not 'nowhere'",
        "seckilld: --store cannot parse 'redis://:***@localhost:0' (want redis://[:PASSWORD@]HOST:PORT[/DB])",
        f"seckilld: the configuration {cfg} has problems (each on a line above)",
    ]
    assert p.stderr.splitlines() == want, p.stderr
    assert "hunter2" not in p.stderr + p.stdout
    assert sorted(os.listdir(d)) == ["bad.conf"]  # no log, no access log, no book


def test_store_url_password_is_never_printed(tmp_path):
    p = run("--listen", f"{HOST}:0", "--admin-listen", f"{HOST}:0", "--store", "redis://u:s3cr%65t@[::1:0",
            cwd=tmp_path)
    assert p.returncode == 2, p
    assert "redis://u:***@[::1:0" in p.stderr and "s3cr" not in p.stderr, p


def test_errors_name_the_file(tmp_path):
    """The order book's directory, the log file: the message says which file and why."""
    args = ["--listen", f"{HOST}:0", "--admin-listen", f"{HOST}:0"]
    p = run(*args, "--store", f"sqlite:{tmp_path}/no/such/dir/book.db", cwd=tmp_path)
    assert p.returncode == 1, p
    assert f"the order book's directory {tmp_path}/no/such/dir: No such file or directory" in p.stderr, p
    p = run(*args, "--store", f"sqlite:{tmp_path}/book.db", "--log-file", f"{tmp_path}/none/x.log")
    assert p.returncode == 1, p
    assert p.stderr == f"seckilld: --log-file: cannot open {tmp_path}/none/x.log: No such file or directory\n", p


@sqlite_only
def test_unknown_field_is_named(server, sale_id):
    r = server.adm("PUT", f"/v1/sales/{sale_id()}", {"stock": 1, "colour": "red"})
    assert r.status == 400 and r.body["message"] == "unknown field 'colour' in the body", r
    r = server.pub("POST", "/v1/sales/x/orders", {"user": "a", "quantity": 2})
    assert r.status == 400 and r.body["message"] == "unknown field 'quantity' in the body", r


# --------------------------------------------------------------------------------------------
# SIGHUP: the configuration reloaded


def wait_log(path, pattern, after=0, timeout=5.0):
    """The first line of the log file at `path` past byte `after` that matches `pattern`."""
    deadline = time.monotonic() + timeout
    while True:
        text = path.read_text()[after:] if path.exists() else ""
        m = re.search(pattern, text, re.M)
        if m:
            return m
        assert time.monotonic() < deadline, f"no line matching {pattern!r} in {text[-3000:]!r}"
        time.sleep(0.05)


@sqlite_only
def test_sighup_reloads_what_can_change_and_keeps_the_rest(store, tmp_path, sale_id):
    """`systemctl reload seckilld` (ExecReload sends SIGHUP): the rate limit, the admin token,
    the log level and file, the access log change at once; what needs a restart is logged and
    keeps its value; a bad file changes nothing."""
    log, log2, access = tmp_path / "seckilld.log", tmp_path / "seckilld2.log", tmp_path / "access.log"
    tok_a, tok_b = tmp_path / "token-a", tmp_path / "token-b"
    tok_a.write_text("token-a\n")
    tok_b.write_text("token-b\n")
    cfg = tmp_path / "seckilld.conf"
    cfg.write_text(f"rate-limit = 2\nrate-burst = 2\nadmin-token-file = {tok_a}\nlog-file = {log}\n"
                   "max-body-bytes = 4096\n")
    srv = Server(store.url, str(tmp_path), extra_args=["--config", str(cfg)], token="token-a")
    try:
        srv.start()
        s = sale_id()
        srv.put_sale(s, stock=100)
        assert [srv.pub("GET", f"/v1/sales/{s}").status for _ in range(3)] == [200, 200, 429]
        wait_log(log, r"level=info event=started")
        assert "level=debug" not in log.read_text()

        cfg.write_text(f"rate-limit = 1000\nrate-burst = 1000\nadmin-token-file = {tok_b}\nlog-file = {log2}\n"
                       f"log-level = debug\naccess-log = {access}\nmax-body-bytes = 100\nidle-timeout = 5\nthreads = 1\n")
        srv.proc.send_signal(signal.SIGHUP)
        m = wait_log(log2, r"level=info event=reloaded config=(\S+) applied=(\S+) needs_restart=(\S+)$")
        assert m.group(1) == str(cfg)
        assert m.group(2) == "admin-token-file,log-file,log-level,access-log,rate-limit,rate-burst,admin-token"
        assert m.group(3) == "max-body-bytes,idle-timeout"  # threads: the command line wins
        assert "event=reloaded" not in log.read_text()  # the old file saw the reopen, not the rest
        assert srv.adm("GET", "/v1/sales", token="token-a").status == 401
        assert srv.adm("GET", "/v1/sales", token="token-b").status == 200
        assert all(srv.pub("GET", f"/v1/sales/{s}").status == 200 for _ in range(10))
        # max-body-bytes needs a restart: still 4096
        body = b'{"stock": 1' + b" " * 200 + b"}"
        assert srv.adm("PUT", f"/v1/sales/{s}", body, token="token-b").status == 200
        wait_log(access, rf"GET /v1/sales/{s} 200 ")

        # a bad file: every problem logged, nothing changes
        cfg.write_text(f"rate-limit = 1\nadmin-token-file = {tok_a}\nlog-level = loud\nbogus = 1\n")
        at = log2.stat().st_size
        srv.proc.send_signal(signal.SIGHUP)
        wait_log(log2, r"level=error event=reload_failed config=\S+ changed=none$", after=at)
        text = log2.read_text()[at:]
        assert f'level=error event=reload_failed error="{cfg}:4: unknown key \'bogus\'"' in text, text
        assert "level=error event=reload_failed error=\"--log-level must be debug, info, warn or error, " \
               "not 'loud'\"" not in text  # the load failed first: the check of what it read is not run
        assert srv.adm("GET", "/v1/sales", token="token-b").status == 200
        assert all(srv.pub("GET", f"/v1/sales/{s}").status == 200 for _ in range(5))

        # back to no rate limit and no access log: both off
        cfg.write_text(f"admin-token-file = {tok_b}\nlog-file = {log2}\nmax-body-bytes = 4096\n")
        at = log2.stat().st_size
        srv.proc.send_signal(signal.SIGHUP)
        m = wait_log(log2, r"event=reloaded config=\S+ applied=(\S+) needs_restart=(\S+)$", after=at)
        assert m.groups() == ("log-level,access-log,rate-limit,rate-burst", "none"), m.group(0)
        assert all(srv.pub("GET", f"/v1/sales/{s}").status == 200 for _ in range(20))
    finally:
        assert srv.stop() == 0


# --------------------------------------------------------------------------------------------
# the Redis password from a file


def test_redis_password_file_keeps_the_secret_out_of_argv_env_and_logs(tmp_path):
    if not os.access(REDIS_SERVER, os.X_OK):
        pytest.fail(f"{REDIS_SERVER} missing: apt-get install redis-server", pytrace=False)
    secret = "pw with spaces/and@signs%"
    port = free_port()
    (tmp_path / "redis").mkdir()
    redis = subprocess.Popen([REDIS_SERVER, "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no",
                              "--dir", str(tmp_path / "redis"), "--requirepass", secret],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pwfile = tmp_path / "redis-password"
    pwfile.write_text(secret + "\n")
    log = tmp_path / "seckilld.log"
    srv = Server(f"redis://{HOST}:{port}", str(tmp_path),
                 extra_args=["--redis-password-file", str(pwfile), "--log-file", str(log)])
    try:
        deadline = time.monotonic() + 10
        while subprocess.run(["redis-cli", "-p", str(port), "-a", secret, "--no-auth-warning", "ping"],
                             capture_output=True, text=True).stdout.strip() != "PONG":
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
        srv.start()
        assert srv.adm("PUT", "/v1/sales/pw", {"stock": 1}).status == 201
        assert srv.pub("GET", "/healthz").status == 200
        with open(f"/proc/{srv.proc.pid}/cmdline", "rb") as f:
            assert secret.encode() not in f.read()
        with open(f"/proc/{srv.proc.pid}/environ", "rb") as f:
            assert secret.encode() not in f.read()
        assert secret not in log.read_text() and "auth=yes" in log.read_text()
        # and a password given twice is refused, naming both places
        p = run("-t", "--store", f"redis://:x@{HOST}:{port}", "--redis-password-file", str(pwfile))
        assert p.returncode == 1 and "--redis-password-file: --store already holds a password" in p.stderr, p
    finally:
        assert srv.stop() == 0
        redis.terminate()
        redis.wait(10)


# --------------------------------------------------------------------------------------------
# monitoring: /metrics as Prometheus reads it

PROMTOOL = "/usr/bin/promtool"
ALERTS = os.path.join(ROOT, "packaging", "seckilld-alerts.yml")


def promtool():
    if not os.access(PROMTOOL, os.X_OK):
        pytest.fail(f"{PROMTOOL} missing: apt-get install prometheus (scripts/deps.sh does)", pytrace=False)
    return PROMTOOL


def test_alert_rules_check():
    """`promtool check rules packaging/seckilld-alerts.yml` (docs/operations.md)."""
    p = subprocess.run([promtool(), "check", "rules", ALERTS], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and "SUCCESS: 14 rules found" in p.stdout, p


def test_metrics_pass_promtool_and_alerts_have_series_from_the_start(server, sale_id):
    """`curl -s localhost:8081/metrics | promtool check metrics`: clean on a fresh server and after
    traffic; every series the example alerts read exists before the first event, at 0."""
    t0 = time.time()
    fresh = server.adm("GET", "/metrics").body
    p = subprocess.run([promtool(), "check", "metrics"], input=fresh, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stdout + p.stderr == "", p
    samples = dict(re.findall(r"^(\S+) (\S+)$", fresh, re.M))
    for outcome in ("unavailable", "rate_limited", "internal", "sold_out", "user_limit", "won"):
        assert samples.get(f'seckill_takes_total{{outcome="{outcome}"}}') == "0", outcome
    for status in ("201", "409", "429", "503"):
        assert samples.get(f'seckill_requests_total{{route="take",status="{status}"}}') == "0", status
    for name in ("seckill_commit_failures_total", 'seckill_accept_errors_total{listener="public"}',
                 'seckill_connections_at_cap_total{listener="public"}',
                 'seckill_connections_accepted_total{listener="admin"}'):
        assert name in samples, name
    assert samples["seckill_commit_failures_total"] == "0"
    assert re.search(r'^seckill_build_info\{version="\d+\.\d+\.\d+"\} 1$', fresh, re.M)
    assert int(samples['seckill_connections_accepted_total{listener="admin"}']) >= 1
    assert int(samples["process_open_fds"]) > 5
    assert int(samples["process_resident_memory_bytes"]) > 1 << 20
    assert int(samples["process_max_fds"]) >= int(samples["process_open_fds"])
    assert t0 - 30 <= float(samples["process_start_time_seconds"]) <= t0 + 1
    assert float(samples["process_cpu_seconds_total"]) >= 0
    # every metric an example alert reads is one seckilld exports
    wanted = set(re.findall(r"\b((?:seckill|process)_[a-z_]+?)(?:_bucket)?\b", open(ALERTS).read()))
    exported = set(re.findall(r"^# TYPE (\S+) ", fresh, re.M))
    # (the feed relay's lag gauge exists only on a Redis Cluster store, where a relay runs)
    assert wanted <= exported | {"seckill_commit_fsync_seconds", "seckill_feed_relay_lag_seconds"}, wanted - exported

    s = sale_id()
    server.put_sale(s, stock=1)
    assert server.take(s, user="a").status == 201
    assert server.take(s, user="b").status == 409
    after = server.adm("GET", "/metrics").body
    p = subprocess.run([promtool(), "check", "metrics"], input=after, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stdout + p.stderr == "", p
    assert f'seckill_sale_sold{{sale="{s}"}} 1' in after
    assert "# HELP seckill_sale_remaining " in after


@sqlite_only
def test_journal_gets_syslog_priorities(store, tmp_path):
    """Under systemd with stderr on the journal (JOURNAL_STREAM=DEV:INODE names it), every line
    starts with its syslog priority, which journald keeps (`journalctl -u seckilld -p err`)."""
    err = tmp_path / "stderr"
    with open(err, "wb") as f:
        st = os.fstat(f.fileno())
        e = {k: v for k, v in os.environ.items() if not k.startswith("SECKILL_")}
        e["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
        p = subprocess.Popen([seckilld_binary(), "--listen", f"{HOST}:0", "--admin-listen", f"{HOST}:0", "--store",
                              store.url, "--threads", "1", "--log-level", "debug"],
                             stdout=subprocess.PIPE, stderr=f, stdin=subprocess.DEVNULL, env=e)
    try:
        assert p.stdout.readline().startswith(b"listening public=")
        assert p.stdout.readline().startswith(b"listening admin=")
    finally:
        p.send_signal(signal.SIGTERM)
        assert p.wait(15) == 0
    lines = [l for l in err.read_text().splitlines() if "level=" in l]  # (a sanitizer may add its own)
    assert lines and all(re.match(r"<[3467]>\d{4}-\d\d-\d\dT[\d:.]+Z level=(debug|info|warn|error) ", l)
                         for l in lines), lines
    assert any(l.startswith("<6>") and " level=info event=started " in l for l in lines), lines
    # without it (or with --log-file), no prefix: tests/unit/test_log.c and every other test's log


@sqlite_only
def test_sighup_during_a_storm_drops_nothing(store, tmp_path, sale_id):
    """Reloads while buyers storm (the config, the rate limiter and the access log swapped under
    running workers): every take is answered, exactly the stock is sold, the server lives on
    (under `make tsan` this is also the race check of the reload)."""
    log, access = tmp_path / "seckilld.log", tmp_path / "access.log"
    tok_a, tok_b = tmp_path / "token-a", tmp_path / "token-b"
    tok_a.write_text("token-a\n")
    tok_b.write_text("token-b\n")
    cfg = tmp_path / "seckilld.conf"
    confs = [f"admin-token-file = {tok_a}\nlog-file = {log}\n",
             f"admin-token-file = {tok_b}\nlog-file = {log}\nrate-limit = 100000\naccess-log = {access}\n"
             "log-level = debug\ntrust-proxy = yes\n"]
    cfg.write_text(confs[0])
    srv = Server(store.url, str(tmp_path), extra_args=["--config", str(cfg)], token="token-a")
    try:
        srv.start()
        s = sale_id()
        srv.put_sale(s, stock=300)
        done = threading.Event()

        def reloader():
            for i in range(20):
                cfg.write_text(confs[(i + 1) % 2])
                srv.proc.send_signal(signal.SIGHUP)
                time.sleep(0.05)
            done.set()

        t = threading.Thread(target=reloader)
        t.start()
        results = storm(srv.public_port, [("POST", f"/v1/sales/{s}/orders", {"user": f"u{i}"}) for i in range(600)],
                        threads=16)
        t.join(30)
        assert done.is_set()
        codes = sorted(set(r[0] for r in results))
        assert codes == [201, 409], codes
        assert sum(1 for r in results if r[0] == 201) == 300
        wait_log(log, r"event=reloaded .*\n(.*\n)*.*event=reloaded", timeout=10)
        assert "reload_failed" not in log.read_text()
        # the last reload (i = 19) wrote confs[0]: token A again
        deadline = time.monotonic() + 5
        while srv.adm("GET", "/v1/sales", token="token-a").status != 200:
            assert time.monotonic() < deadline, "the last reload did not bring token A back"
            time.sleep(0.05)
        assert srv.sale(s)["sold"] == 300
    finally:
        assert srv.stop() == 0
