"""Installing seckilld (docs/operations.md, "Installing"): `make install` never overwrites a
config, the unit is made with the configured prefix; `make deb` builds a lintian-clean Debian
package whose binary, unit, conffiles and man page are checked after unpacking it into a
scratch root, and whose binary then serves."""

import glob
import gzip
import os
import re
import subprocess

import pytest

from conftest import Server, seckilld_binary

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sqlite_only = pytest.mark.parametrize("store", ["sqlite"], indirect=True)


def need(tool, package):
    if not os.access(tool, os.X_OK):
        pytest.fail(f"{tool} missing: apt-get install {package} (scripts/deps.sh does)", pytrace=False)
    return tool


def help_options():
    """Every option `seckilld --help` lists."""
    out = subprocess.run([seckilld_binary(), "--help"], capture_output=True, text=True, timeout=10).stdout
    return sorted(set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*|-[a-zA-Z])\b", out)))


def man_warnings(path):
    """What `man --warnings` says about a page (lintian runs it the same way)."""
    need("/usr/bin/man", "man-db")
    p = subprocess.run(["man", "--warnings", "-E", "UTF-8", "-l", "-Tutf8", "-Z", path], capture_output=True,
                       text=True, timeout=60, env=dict(os.environ, LC_ALL="C.UTF-8", MANROFFSEQ="", MANWIDTH="80"))
    assert p.returncode == 0, p
    return p.stderr


def test_man_page_names_every_option_and_has_no_warnings():
    page = os.path.join(ROOT, "docs", "seckilld.8")
    text = open(page).read().replace("\\-", "-")
    missing = [o for o in help_options() if o not in text]
    assert not missing, f"seckilld(8) does not name {missing}"
    assert man_warnings(page) == ""
    version = subprocess.run([seckilld_binary(), "-v"], capture_output=True, text=True, timeout=10).stdout.split()[1]
    assert f'"seckill {version}"' in text.split("\n.SH")[0], "the man page's .TH names another version"


def test_make_install_keeps_an_existing_config(tmp_path):
    """`make install PREFIX=/usr`, twice, the config edited in between (an upgrade): the edit is
    kept, the new default goes beside it as .conf.new, and the unit runs PREFIX/bin/seckilld."""
    dest = tmp_path / "root"
    build = os.path.dirname(seckilld_binary())

    def install():
        p = subprocess.run(["make", "-s", "-C", ROOT, "install", f"BUILD={build}", f"DESTDIR={dest}", "PREFIX=/usr"],
                           capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stdout + p.stderr
        return p.stdout

    install()
    unit = (dest / "usr/lib/systemd/system/seckilld.service").read_text()
    assert "ExecStart=/usr/bin/seckilld --config /etc/seckill/seckilld.conf\n" in unit
    assert "Documentation=man:seckilld(8) file:///usr/share/doc/seckill/README.md\n" in unit
    assert "/usr/local" not in unit
    assert os.access(dest / "usr/bin/seckilld", os.X_OK)
    conf = dest / "etc/seckill/seckilld.conf"
    shipped = open(os.path.join(ROOT, "packaging", "seckilld.conf")).read()
    assert conf.read_text() == shipped
    assert (dest / "usr/share/man/man8/seckilld.8").exists()

    conf.write_text(shipped + "admin-token-file = /etc/seckill/admin-token\n")
    out = install()
    assert conf.read_text() == shipped + "admin-token-file = /etc/seckill/admin-token\n"
    assert (dest / "etc/seckill/seckilld.conf.new").read_text() == shipped
    assert f"install: kept {conf} (yours); the new default is {conf}.new" in out
    assert not (dest / "etc/logrotate.d/seckilld.new").exists()  # unchanged: nothing beside it


@sqlite_only
def test_deb_builds_lintian_clean_installs_and_serves(store, tmp_path, monkeypatch):
    """`make deb`, `lintian`, then the package unpacked into a scratch root (`dpkg-deb -x`, as
    `dpkg -i` would lay it out, without touching this machine): the installed binary's version
    is the package's, its config passes -t, its unit verifies, its man page reads cleanly, and it
    serves."""
    need("/usr/bin/dpkg-buildpackage", "dpkg-dev")
    need("/usr/bin/dh", "debhelper")
    lintian = need("/usr/bin/lintian", "lintian")
    out = tmp_path / "out"
    p = subprocess.run(["make", "-s", "-C", ROOT, "deb", f"BUILD={out}"], capture_output=True, text=True, timeout=600,
                       env=dict(os.environ, DEB_BUILD_OPTIONS="noautodbgsym"))
    assert p.returncode == 0, (p.stdout + p.stderr)[-4000:]
    debs = glob.glob(str(out / "deb" / "seckilld_*.deb"))
    assert len(debs) == 1, os.listdir(out / "deb")
    deb = debs[0]

    changes = glob.glob(str(out / "deb" / "*.changes"))[0]
    p = subprocess.run([lintian, "--fail-on", "error,warning", changes], capture_output=True, text=True, timeout=300)
    tags = [l for l in (p.stdout + p.stderr).splitlines() if re.match(r"[EW]: ", l)]
    assert p.returncode == 0 and not tags, p.stdout + p.stderr

    info = subprocess.run(["dpkg-deb", "-f", deb, "Package", "Version", "Depends"], capture_output=True, text=True,
                          check=True).stdout
    assert "Package: seckilld\n" in info and "adduser" in info and "libh2o-evloop" in info, info
    version = re.search(r"^Version: (\S+)$", info, re.M).group(1)
    ctl = tmp_path / "control"
    subprocess.run(["dpkg-deb", "-e", deb, str(ctl)], check=True)
    assert (ctl / "conffiles").read_text().split() == ["/etc/logrotate.d/seckilld", "/etc/seckill/seckilld.conf"]
    postinst = (ctl / "postinst").read_text()
    assert "adduser --system --group" in postinst and " seckill\n" in postinst and "/var/lib/seckill" in postinst

    root = tmp_path / "root"
    subprocess.run(["dpkg-deb", "-x", deb, str(root)], check=True)
    binary = str(root / "usr/bin/seckilld")
    p = subprocess.run([binary, "-v"], capture_output=True, text=True, timeout=10)
    assert p.returncode == 0 and p.stdout == f"seckilld {version}\n", p
    conf = str(root / "etc/seckill/seckilld.conf")
    p = subprocess.run([binary, "-t", "--config", conf], capture_output=True, text=True, timeout=10)
    assert p.returncode == 0 and p.stderr == f"seckilld: the configuration {conf} is ok\n", p
    unit = (root / "lib/systemd/system/seckilld.service").read_text()
    assert "ExecStart=/usr/bin/seckilld --config /etc/seckill/seckilld.conf\n" in unit
    assert "User=seckill\n" in unit and "StateDirectory=seckill\n" in unit
    analyze = need("/usr/bin/systemd-analyze", "systemd")
    local = tmp_path / "seckilld.service"
    local.write_text(unit.replace("/usr/bin/seckilld", binary))
    p = subprocess.run([analyze, "verify", "--man=no", str(local)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and "seckilld.service" not in p.stdout + p.stderr, p.stdout + p.stderr
    man = root / "usr/share/man/man8/seckilld.8.gz"
    assert man_warnings(str(man)) == ""
    assert "--check-config" in gzip.open(man, "rt").read().replace("\\-", "-")

    # the installed binary, with the installed config (the command line moves ports, book, log)
    monkeypatch.setenv("SECKILLD", binary)
    srv = Server(store.url, str(tmp_path), extra_args=["--config", conf, "--log-file", str(tmp_path / "log")])
    try:
        srv.start()
        assert srv.pub("GET", "/healthz").status == 200
        assert srv.adm("PUT", "/v1/sales/deb", {"stock": 1}).status == 201
        assert srv.take("deb", user="a").status == 201
        assert f'seckill_build_info{{version="{version}"}} 1' in srv.adm("GET", "/metrics").body
    finally:
        assert srv.stop() == 0
