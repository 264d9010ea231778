"""The command line contract of API.md: --help, --version, unknown options, logs, signals."""

import os
import signal
import subprocess
import time

import pytest

from conftest import seckilld_binary

sqlite_only = pytest.mark.parametrize("store", ["sqlite"], indirect=True)


def run(*args):
    return subprocess.run([seckilld_binary(), *args], capture_output=True, text=True, timeout=10,
                          stdin=subprocess.DEVNULL)


def test_help():
    p = run("--help")
    assert p.returncode == 0, p
    assert "--listen" in p.stdout and "--store" in p.stdout, p.stdout


def test_version():
    p = run("--version")
    assert p.returncode == 0, p
    assert p.stdout.strip(), p


@pytest.mark.parametrize("args", [["--no-such-option"], ["--listen"], ["-z"]])
def test_bad_option_exits_2(args):
    p = run(*args)
    assert p.returncode == 2, p
    assert p.stderr.strip(), "a bad option should say what is wrong on stderr"


@sqlite_only
def test_log_file_and_sighup(make_server, tmp_path, sale_id):
    log = tmp_path / "seckilld.log"
    srv = make_server(["--log-file", str(log)])  # ports are still reported on stdout
    s = sale_id()
    srv.put_sale(s, stock=3)
    deadline = time.monotonic() + 3
    while not (log.exists() and log.stat().st_size > 0):
        assert time.monotonic() < deadline, "nothing logged to --log-file"
        time.sleep(0.05)
    os.rename(log, tmp_path / "seckilld.log.1")
    srv.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 3
    while not log.exists():
        assert time.monotonic() < deadline, "SIGHUP did not reopen --log-file"
        time.sleep(0.05)
    assert srv.alive()
    assert srv.take(s, user="u").status == 201


@pytest.mark.parametrize("url,why", [
    ("sqlite:file:book.db", "as a URI"),          # SQLite would open another file than the one locked
    ("redis://localhost:0", "cannot parse"),      # was found only when the store opened (exit 1)
    ("redis://:pa%00ss@localhost", "cannot parse"),  # the password would have been cut at the NUL
])
def test_store_url_that_cannot_be_opened_exits_2(url, why, tmp_path):
    """Found by tests/fuzz/fuzz_url.c (issue 19): nothing is created, nothing starts."""
    p = subprocess.run([seckilld_binary(), "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
                        "--store", url], capture_output=True, text=True, timeout=10, cwd=tmp_path,
                       stdin=subprocess.DEVNULL)
    assert p.returncode == 2 and why in p.stderr, p
    assert os.listdir(tmp_path) == [], os.listdir(tmp_path)
