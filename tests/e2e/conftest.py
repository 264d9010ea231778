"""End-to-end fixtures for seckilld.

Starts the server under test (and, for the Redis store, a real redis-server) on free loopback
ports, and offers small HTTP helpers built on the standard library only. Every test that takes
the `server` fixture runs once per store: `sqlite` (the embedded store) and `redis`.

Run:  SECKILLD=/work/main/build/seckilld /usr/bin/python3 -m pytest -q tests/e2e

No silent skips: a test skips only for what the machine lacks (root for a tmpfs, say), never
because a feature or a package is missing; with SK_NO_SKIP=1 (make fresh, .ci/run) a skip is a
failure.
"""

import atexit
import ctypes
import http.client
import itertools
import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

import pytest

HOST = "127.0.0.1"
DEFAULT_TIMEOUT = 15.0  # seconds, for any single network wait
NO_SKIP = os.environ.get("SK_NO_SKIP", "") not in ("", "0")
TEST_WATCHDOG = 150.0  # seconds; a test running longer gets its processes killed
REDIS_SERVER = os.environ.get("REDIS_SERVER", "/usr/bin/redis-server")
ERROR_KEYS = {"error", "message"}
SALE_KEYS = {"sale", "stock", "sold", "held", "remaining", "per_user_limit", "hold_seconds",
             "starts_at", "ends_at", "retain_seconds", "state"}
ORDER_KEYS = {"sale", "order", "user", "qty", "status", "request_id", "created_at", "expires_at"}
CSV_HEADER = "sale,order,user,qty,status,request_id,created_at,expires_at"


# --------------------------------------------------------------------------------------------
# processes


def _pdeathsig():
    """Child side of Popen: die with the test run, so that no server outlives pytest."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def free_port():
    """A free loopback port, picked by the kernel (bind to port 0). Used for redis-server only;
    seckilld picks its own ports with `:0` and reports them."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def seckilld_binary():
    path = os.environ.get("SECKILLD", os.path.join(os.path.dirname(__file__), "..", "..",
                                                   "build", "seckilld"))
    path = os.path.abspath(path)
    if not os.access(path, os.X_OK):
        pytest.fail(f"seckilld binary not found at {path}: build it (make) or set SECKILLD", pytrace=False)
    return path


_live_procs = []  # every process started by the current test, for the watchdog
_live_lock = threading.Lock()


def _track(proc):
    with _live_lock:
        _live_procs.append(proc)


def redis_data_dir(workdir, name):
    """A directory for a test Redis's data files (its AOF): in /dev/shm where there is one, else
    WORKDIR/NAME-data. Each write is still fsynced (appendfsync always), and a kill -9 loses
    nothing the kernel has, which is what the tests check; but on a disk shared with builds and
    other tests that fsync once stalled a freshly promoted master for seconds, long enough for
    Sentinel (down-after 1 s in the tests) to fail over again and the test's premise to break.
    Removed when the test process ends."""
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        d = tempfile.mkdtemp(prefix=f"sk-test-{name}-", dir="/dev/shm")
        atexit.register(shutil.rmtree, d, True)
        return d
    d = os.path.join(workdir, f"{name}-data")
    os.makedirs(d, exist_ok=True)
    return d


class Redis:
    """A throw-away redis-server with every write fsynced (appendfsync always)."""

    def __init__(self, workdir):
        self.dir = os.path.join(workdir, "redis")
        os.makedirs(self.dir, exist_ok=True)
        self.data = redis_data_dir(workdir, "redis")
        self.port = None
        self.proc = None
        self.log = os.path.join(self.dir, "redis.log")

    def _spawn(self):
        """Runs redis-server on self.port; True once it answers PING (within 10 s)."""
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", HOST, "--appendonly", "yes",
             "--appendfsync", "always", "--dir", self.data, "--save", "", "--daemonize", "no",
             "--logfile", self.log],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
            preexec_fn=_pdeathsig)
        _track(self.proc)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self.proc.poll() is None:
            if self.ping():
                return True
            time.sleep(0.02)
        return False

    def start(self):
        last = None
        for _ in range(5):  # the picked port may be taken in between: retry on a new one
            self.port = free_port()
            if self._spawn():
                return self
            last = self._log_tail()
            self.stop()
        raise RuntimeError(f"redis-server did not start: {last}")

    def restart_same_port(self):
        """Start again on the same port and directory (the AOF brings the data back)."""
        if self._spawn():
            return self
        raise RuntimeError(f"redis-server did not restart: {self._log_tail()}")

    def ping(self):
        try:
            with socket.create_connection((HOST, self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def _log_tail(self):
        try:
            with open(self.log, errors="replace") as f:
                return f.read()[-2000:]
        except OSError:
            return ""

    @property
    def url(self):
        return f"redis://{HOST}:{self.port}"

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)



REDIS_CLI = os.environ.get("REDIS_CLI", "/usr/bin/redis-cli")


def free_cluster_port():
    """A free loopback port whose cluster bus port (port + 10000) is free too."""
    for _ in range(200):
        p = free_port()
        if p + 10000 > 65535:
            continue
        try:
            with socket.socket() as b:
                b.bind((HOST, p + 10000))
            return p
        except OSError:
            continue
    raise RuntimeError("no free port pair for a cluster node")


def resp(port, *args, timeout=5.0, asking=False, raw=False):
    """One command to a Redis on loopback (RESP2), its reply as Python values; an error reply is
    returned as an Exception instance (not raised). With `asking`, ASKING first on the same
    connection (a Cluster node importing the slot serves its keys then); with `raw`, bulk strings
    as bytes (DUMP)."""
    def enc(*cmd):
        out = b"*%d\r\n" % len(cmd)
        for a in cmd:
            a = a if isinstance(a, bytes) else str(a).encode()
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        return out

    with socket.create_connection((HOST, port), timeout=timeout) as s:
        s.sendall((enc("ASKING") if asking else b"") + enc(*args))
        f = s.makefile("rb")

        def read():
            line = f.readline()
            if not line:
                raise OSError("connection closed")
            t, rest = line[:1], line[1:-2]
            if t == b"+":
                return rest.decode()
            if t == b"-":
                return Exception(rest.decode())
            if t == b":":
                return int(rest)
            if t == b"$":
                n = int(rest)
                if n < 0:
                    return None
                data = f.read(n + 2)[:-2]
                return data if raw else data.decode(errors="replace")
            if t == b"*":
                n = int(rest)
                return None if n < 0 else [read() for _ in range(n)]
            raise OSError(f"bad reply {line!r}")
        if asking:
            read()  # +OK
        return read()


class RedisCluster:
    """A throw-away Redis Cluster on loopback: `masters` masters with `replicas` replicas each,
    every write fsynced (appendfsync always), made with redis-cli --cluster create."""

    def __init__(self, workdir, masters=3, replicas=1, node_timeout=2000):
        self.dir = os.path.join(workdir, "cluster")
        os.makedirs(self.dir, exist_ok=True)
        self.nmasters, self.nreplicas, self.node_timeout = masters, replicas, node_timeout
        self.nodes = {}  # port -> Popen
        self.data = {}  # port -> its data directory

    def _spawn(self, port):
        d = os.path.join(self.dir, str(port))  # its log
        os.makedirs(d, exist_ok=True)
        if port not in self.data:  # its AOF and nodes.conf, kept over restarts (redis_data_dir)
            self.data[port] = redis_data_dir(self.dir, f"cluster-{port}")
        proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(port), "--bind", HOST, "--cluster-enabled", "yes",
             "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", str(self.node_timeout),
             "--appendonly", "yes", "--appendfsync", "always", "--dir", self.data[port], "--save", "",
             "--daemonize", "no", "--logfile", os.path.join(d, "redis.log")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
            preexec_fn=_pdeathsig)
        _track(proc)
        self.nodes[port] = proc
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if resp(port, "PING") == "PONG":
                    return True
            except OSError:
                pass
            time.sleep(0.02)
        return False

    def start(self):
        n = self.nmasters * (1 + self.nreplicas)
        for _ in range(n):
            for _ in range(5):
                port = free_cluster_port()
                if self._spawn(port):
                    break
                self.nodes.pop(port).kill()
            else:
                raise RuntimeError("a cluster node did not start")
        addrs = [f"{HOST}:{p}" for p in self.nodes]
        out = subprocess.run([REDIS_CLI, "--cluster", "create", *addrs, "--cluster-replicas",
                              str(self.nreplicas), "--cluster-yes"], capture_output=True, text=True,
                             timeout=60)
        if out.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {out.stdout[-2000:]} {out.stderr[-2000:]}")
        self.wait_ok()
        deadline = time.monotonic() + 30
        while not self.replicas_synced():
            if time.monotonic() > deadline:
                raise RuntimeError("the cluster's replicas did not sync")
            time.sleep(0.05)
        return self

    def replicas_synced(self):
        """Every live master has its replicas connected and in sync (WAIT 1 answers)."""
        if self.nreplicas == 0:
            return True
        try:
            for p in self.masters():
                info = resp(p, "INFO", "replication")
                n = int(re.search(r"connected_slaves:(\d+)", info).group(1))
                if n < self.nreplicas or "state=online" not in info:
                    return False
            return True
        except OSError:
            return False

    def wait_ok(self, timeout=30.0, masters=None):
        """Until every live node says cluster_state:ok and sees `masters` masters serving all
        16384 slots (each with its replicas, when they are alive)."""
        masters = masters or self.nmasters
        deadline = time.monotonic() + timeout
        while True:
            try:
                if all(self._node_ok(p, masters) for p in self.live_ports()):
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the cluster did not settle")
            time.sleep(0.05)

    def _node_ok(self, port, masters):
        info = resp(port, "CLUSTER", "INFO")
        if "cluster_state:ok" not in info:
            return False
        slots = resp(port, "CLUSTER", "SLOTS")
        owners = {(r[2][0], r[2][1]) for r in slots}
        return sum(r[1] - r[0] + 1 for r in slots) == 16384 and len(owners) == masters

    def restart(self, port):
        """Starts a killed node again on its port and directory (it rejoins from nodes.conf)."""
        if not self._spawn(port):
            raise RuntimeError(f"cluster node {port} did not restart")

    def live_ports(self):
        return [p for p, proc in self.nodes.items() if proc.poll() is None]

    def masters(self):
        """Ports of the live masters, each with the slot ranges it serves."""
        for p in self.live_ports():
            try:
                slots = resp(p, "CLUSTER", "SLOTS")
            except OSError:
                continue  # a node starting again
            if not isinstance(slots, list) or not slots:
                continue
            out = {}
            for r in slots:
                out.setdefault(int(r[2][1]), []).append((r[0], r[1]))
            return out
        raise RuntimeError("no cluster node answers CLUSTER SLOTS")

    def master_of_slot(self, slot):
        for port, ranges in self.masters().items():
            if any(lo <= slot <= hi for lo, hi in ranges):
                return port
        raise KeyError(slot)

    def flush(self):
        """Empties every master (and so its replicas) between tests."""
        for port in self.masters():
            resp(port, "FLUSHALL")
            resp(port, "SCRIPT", "FLUSH")

    @property
    def url(self):
        return "redis-cluster://" + ",".join(f"{HOST}:{p}" for p in list(self.nodes)[:2])

    def stop(self):
        for proc in self.nodes.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)


ORDERS_PER_KEY = 64  # src/lua/common.lua: layout 2 keeps 64 order ids a key
LONG_STATUS = {"h": "held", "c": "confirmed", "x": "cancelled", "e": "expired"}


def stored_orders(port, sale):
    """order id -> [status, qty, created_at, expires_at, user, request_id] as the Redis at `port`
    stores them, in either layout of docs/redis.md (layout 2's one-letter status spelled out)."""
    packed = {}
    keys = [f"sk:{{{sale}}}:orders"]
    cursor = "0"
    while True:
        cursor, found = resp(port, "SCAN", cursor, "MATCH", f"sk:{{{sale}}}:o:*", "COUNT", 1000)
        keys += found
        if cursor == "0":
            break
    for k in keys:
        flat = resp(port, "HGETALL", k)
        for j in range(0, len(flat), 2):
            f = flat[j + 1].split("\t")
            f[0] = LONG_STATUS.get(f[0], f[0])
            packed[flat[j]] = f
    return packed


def metric(srv, sample):
    """One sample of the server's /metrics, named as the text names it (with its labels:
    'seckill_redis_refused_total{reason="tryagain"}'), as a float; fails when it is not there."""
    r = srv.adm("GET", "/metrics")
    assert r.status == 200, r
    m = re.search(r"^" + re.escape(sample) + r" (\S+)$", r.body, re.M)
    assert m is not None, f"no {sample} in /metrics"
    return float(m.group(1))


def key_slot(key):
    """Redis Cluster's slot of a key (CRC16/XMODEM of its hash tag)."""
    k = key.encode()
    a = k.find(b"{")
    if a >= 0:
        b = k.find(b"}", a + 1)
        if b > a + 1:
            k = k[a + 1:b]
    crc = 0
    for byte in k:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc & 16383

class Server:
    """One running seckilld. `pub` / `adm` send requests to the public / admin listener."""

    def __init__(self, store_url, workdir, extra_args=(), token=None, env=None, name="seckilld"):
        self.store_url = store_url
        self.workdir = workdir
        self.extra_args = list(extra_args)
        self.token = token  # sent by adm() when set
        self.env = env
        self.name = name
        self.proc = None
        self.public_port = None
        self.admin_port = None
        self.stdout_lines = []
        self._n = 0

    # -- lifecycle

    def start(self, timeout=15.0):
        self._n += 1
        self.stderr_path = os.path.join(self.workdir, f"{self.name}.{self._n}.stderr")
        args = [seckilld_binary(), "--listen", f"{HOST}:0", "--admin-listen", f"{HOST}:0",
                "--store", self.store_url, "--threads", "2"] + self.extra_args
        self.args = args
        env = {k: v for k, v in os.environ.items() if not k.startswith("SECKILL_")}
        if self.env:
            env.update(self.env)
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=err, env=env, preexec_fn=_pdeathsig)
        _track(self.proc)
        lines = queue.Queue()
        self.stdout_lines = []

        def reader(proc=self.proc, sink=self.stdout_lines):
            for raw in proc.stdout:  # drain for ever so the server never blocks on stdout
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                sink.append(line)
                lines.put(line)
            lines.put(None)

        threading.Thread(target=reader, daemon=True).start()
        self.public_port = self.admin_port = None
        deadline = time.monotonic() + timeout
        while self.public_port is None or self.admin_port is None:
            left = deadline - time.monotonic()
            if left <= 0:
                self.kill()
                raise AssertionError(f"seckilld did not report its ports within {timeout}s; "
                                     f"stdout={self.stdout_lines!r} stderr={self.stderr_tail()!r}")
            try:
                line = lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:  # stdout closed: the server exited
                rc = self.proc.wait(5)
                err = self.stderr_tail()
                raise AssertionError(f"seckilld exited at start-up (rc={rc}) args={args!r}; "
                                     f"stderr={err!r}")
            m = re.search(r"listening (public|admin)=([0-9.]+):(\d+)", line)
            if m:
                if m.group(1) == "public":
                    self.public_port = int(m.group(3))
                else:
                    self.admin_port = int(m.group(3))
        return self

    def stderr_tail(self, n=3000):
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read()[-n:].decode("utf-8", "replace")
        except (OSError, AttributeError):
            return ""

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=10.0):
        """SIGTERM; returns the exit code (None if it had to be killed)."""
        if self.proc is None:
            return None
        if self.proc.poll() is not None:
            return self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def restart(self):
        rc = self.stop()
        assert rc == 0, f"seckilld did not exit 0 on SIGTERM (rc={rc}); stderr={self.stderr_tail()!r}"
        return self.start()

    # -- requests

    def pub(self, method, path, body=None, headers=None, **kw):
        return request(self.public_port, method, path, body, headers, **kw)

    def adm(self, method, path, body=None, headers=None, token=None, **kw):
        h = dict(headers or {})
        tok = token if token is not None else self.token
        if tok is not None and not any(k.lower() == "authorization" for k in h):
            h["Authorization"] = f"Bearer {tok}"
        return request(self.admin_port, method, path, body, h, **kw)

    # -- conveniences built on the API

    def put_sale(self, sale, expect=201, **fields):
        body = {"stock": 100}
        body.update(fields)
        r = self.adm("PUT", f"/v1/sales/{sale}", body)
        assert r.status == expect, f"PUT sale {sale} {body} -> {r}"
        return r

    def sale(self, sale):
        r = self.pub("GET", f"/v1/sales/{sale}")
        assert r.status == 200, f"GET sale {sale} -> {r}"
        return r.body

    def take(self, sale, via="pub", **body):
        fn = self.pub if via == "pub" else self.adm
        return fn("POST", f"/v1/sales/{sale}/orders", body)

    def orders(self, sale, limit=1000):
        """Every order of a sale, following `next`."""
        out, after = [], None
        for _ in range(10000):
            q = f"limit={limit}" + (f"&after={after}" if after is not None else "")
            r = self.adm("GET", f"/v1/sales/{sale}/orders?{q}")
            assert r.status == 200, f"order listing -> {r}"
            assert set(r.body) == {"orders", "next"}, r.body
            out.extend(r.body["orders"])
            after = r.body["next"]
            if after is None:
                return out
        raise AssertionError("order listing never ended")


# --------------------------------------------------------------------------------------------
# HTTP


class Resp:
    """A response: status, headers (lower-case names), body (parsed JSON when the reply is
    JSON, else text), raw bytes. Unpacks as (status, headers, body)."""

    def __init__(self, status, headers, body, raw, reason=""):
        self.status, self.headers, self.body, self.raw, self.reason = status, headers, body, raw, reason

    def __iter__(self):
        return iter((self.status, self.headers, self.body))

    def __repr__(self):
        return f"<{self.status} {self.headers.get('content-type')} {self.raw[:300]!r}>"


def _encode(body):
    if body is None:
        return None
    if isinstance(body, (bytes, bytearray)):
        return bytes(body)
    if isinstance(body, str):
        return body.encode("utf-8")
    return json.dumps(body).encode("utf-8")


def check_framing(headers, raw, method="GET"):
    """API.md: every response carries Content-Length, never chunked (the CSV export, an attachment,
    aside: it is streamed)."""
    te = headers.get("transfer-encoding", "")
    if "attachment" in headers.get("content-disposition", "") and headers.get("content-type", "").startswith("text/csv"):
        assert te.lower() == "chunked", f"the export is streamed: {headers}"
        return
    assert "chunked" not in te.lower(), f"chunked reply: {headers}"
    assert "content-length" in headers, f"reply without Content-Length: {headers}"
    if method != "HEAD":
        assert int(headers["content-length"]) == len(raw), (headers, raw[:200])


def read_response(conn, method):
    r = conn.getresponse()
    raw = r.read()
    headers = {}
    for k, v in r.getheaders():
        k = k.lower()
        headers[k] = v if k not in headers else headers[k] + ", " + v
    check_framing(headers, raw, method)
    ctype = headers.get("content-type", "")
    body = raw
    if method == "HEAD":
        pass
    elif ctype.startswith("application/json"):
        try:
            body = json.loads(raw.decode("utf-8"))
        except ValueError as e:
            raise AssertionError(f"reply says JSON but is not: {raw[:300]!r}") from e
    elif ctype.startswith("text/"):
        body = raw.decode("utf-8", "replace")
    return Resp(r.status, headers, body, raw, r.reason)


class OpenAPI:
    """docs/openapi.yaml, against which every JSON reply that request() receives is validated
    (Debian's python3-yaml and python3-jsonschema), so that the description cannot drift from
    the server: a reply it does not describe fails the test that got it."""

    PATH = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "openapi.yaml")
    _lock = threading.Lock()
    _it = None

    @classmethod
    def get(cls):
        with cls._lock:
            if cls._it is None:
                cls._it = cls()
            return cls._it

    def __init__(self):
        try:
            import jsonschema
            import yaml
        except ImportError as e:
            pytest.fail(f"{e}: apt-get install python3-yaml python3-jsonschema (scripts/deps.sh does)",
                        pytrace=False)
        with open(self.PATH) as f:
            self.spec = yaml.safe_load(f)
        self._jsonschema = jsonschema
        self._resolver = jsonschema.RefResolver.from_schema(self.spec)
        self._validators = {}
        self.routes = []
        for tmpl, item in self.spec["paths"].items():
            rx = "^" + re.sub(r"\\\{[a-z_]+\\\}", "[^/]+", re.escape(tmpl)) + "$"
            self.routes.append((re.compile(rx), tmpl, item))

    def _deref(self, obj):
        while "$ref" in obj:
            obj = self._resolver.resolve(obj["$ref"])[1]
        return obj

    def _validate(self, schema, body, what):
        key = id(schema)
        v = self._validators.get(key)
        if v is None:
            v = self._validators[key] = self._jsonschema.Draft202012Validator(schema, resolver=self._resolver)
        errors = sorted(v.iter_errors(body), key=lambda e: list(e.path))
        assert not errors, f"{what}: the reply is not what docs/openapi.yaml says: " \
                           f"{errors[0].message} at {list(errors[0].path)}; body={json.dumps(body)[:300]}"

    def check_schema(self, name, body, what):
        """Asserts that `body` is a components/schemas/`name` (the dashboard's events)."""
        self._validate(self.spec["components"]["schemas"][name], body, what)

    def check(self, method, path, status, body):
        """Asserts that a JSON reply `body` to METHOD PATH with `status` is as described."""
        p = path.split("?", 1)[0]
        what = f"{method} {p} -> {status}"
        error = {"$ref": "#/components/schemas/Error"}
        for rx, tmpl, item in self.routes:
            if rx.match(p):
                break
        else:  # no such route: an error body
            return self._validate(error, body, what)
        op = item.get(method.lower())
        if op is None:  # 405
            return self._validate(error, body, what)
        responses = op["responses"]
        resp = responses.get(str(status), responses.get("default"))
        assert resp is not None, f"docs/openapi.yaml does not describe {method} {tmpl} -> {status}"
        content = self._deref(resp).get("content", {})
        assert "application/json" in content, f"docs/openapi.yaml says {method} {tmpl} -> {status} is not JSON"
        self._validate(content["application/json"]["schema"], body, f"{method} {tmpl} -> {status}")


def request(port, method, path, body=None, headers=None, timeout=DEFAULT_TIMEOUT, conn=None,
            json_ct=True):
    """One request. A fresh connection unless `conn` (an http.client.HTTPConnection) is given.
    A JSON reply is checked against docs/openapi.yaml (OpenAPI.check)."""
    data = _encode(body)
    h = {}
    if json_ct and (data is not None or method not in ("GET", "HEAD")):
        # the admin listener takes a mutating request only as JSON (docs/API.md)
        h["Content-Type"] = "application/json"
    h.update(headers or {})
    own = conn is None
    if own:
        conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request(method, path, body=data, headers=h)
        r = read_response(conn, method)
    finally:
        if own:
            conn.close()
    if method != "HEAD" and r.headers.get("content-type", "").startswith("application/json"):
        OpenAPI.get().check(method, path, r.status, r.body)
    return r


def assert_error(r, status, code):
    """API.md: every error body is {"error": code, "message": text}, application/json."""
    assert r.status == status, f"expected {status} {code}, got {r}"
    assert r.headers.get("content-type", "").startswith("application/json"), r
    assert isinstance(r.body, dict) and set(r.body) == ERROR_KEYS, r
    assert r.body["error"] == code, f"expected error {code}, got {r}"
    assert isinstance(r.body["message"], str) and r.body["message"], r


def assert_order(o, sale, user, qty, request_id=None, status="confirmed", t0=None, t1=None):
    assert isinstance(o, dict) and set(o) == ORDER_KEYS, o
    assert o["sale"] == sale, o
    assert isinstance(o["order"], str) and re.fullmatch(r"[0-9]+", o["order"]), o
    assert o["user"] == user, o
    assert o["qty"] == qty and type(o["qty"]) is int, o
    assert o["status"] == status, o
    assert o["request_id"] == request_id, o
    assert type(o["created_at"]) is int, o
    if t0 is not None:
        assert int(t0) - 1 <= o["created_at"] <= int(t1) + 1, (o, t0, t1)
    if status == "confirmed":
        assert o["expires_at"] is None, o


def each(cases, check, name=repr):
    """Run check(case) for every case on the same server, collecting failures, and fail once with
    all of them: one server start serves many inputs."""
    failures = []
    for c in cases:
        try:
            check(c)
        except AssertionError as e:
            failures.append(f"{name(c)[:120]}: {str(e).splitlines()[0][:400] if str(e) else 'assert'}")
    assert not failures, f"{len(failures)} of {len(cases)} cases failed:\n" + "\n".join(failures)


def raw_exchange(port, data, timeout=5.0, shut_write=False):
    """Send raw bytes, read until the server closes or `timeout` passes. Returns (bytes, closed)."""
    s = socket.create_connection((HOST, port), timeout=timeout)
    try:
        s.sendall(data)
        if shut_write:
            s.shutdown(socket.SHUT_WR)
        buf = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            s.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                return buf, False
            except ConnectionResetError:
                return buf, True
            if not chunk:
                return buf, True
            buf += chunk
        return buf, False
    finally:
        s.close()


def parse_raw_responses(buf):
    """Split raw bytes into [(status, headers, body)] using Content-Length framing."""
    out = []
    while buf:
        head, sep, rest = buf.partition(b"\r\n\r\n")
        assert sep, f"incomplete head: {buf[:300]!r}"
        lines = head.decode("latin-1").split("\r\n")
        m = re.match(r"HTTP/1\.[01] (\d{3})", lines[0])
        assert m, f"bad status line {lines[0]!r}"
        headers = {}
        for ln in lines[1:]:
            k, _, v = ln.partition(":")
            headers[k.strip().lower()] = v.strip()
        assert "content-length" in headers, f"no Content-Length: {lines}"
        assert "chunked" not in headers.get("transfer-encoding", "").lower()
        n = int(headers["content-length"])
        assert len(rest) >= n, (headers, rest)
        out.append((int(m.group(1)), headers, rest[:n]))
        buf = rest[n:]
    return out


# --------------------------------------------------------------------------------------------
# concurrency


def storm(port, reqs, threads=64, timeout=DEFAULT_TIMEOUT, stop=None, results=None):
    """Send `reqs` [(method, path, body_dict[, headers])] from `threads` threads, each on its own keep-alive
    connection. Returns [(status, body) | ("error", repr(exc))] in the order of `reqs`.
    A request that fails at the socket level is never retried (its outcome is unknown).
    `results`, if given, is a list of len(reqs) Nones filled in as answers arrive (for watchers)."""
    if results is None:
        results = [None] * len(reqs)
    it = iter(range(len(reqs)))
    lock = threading.Lock()

    def worker():
        conn = None
        while True:
            with lock:
                i = next(it, None)
            if i is None:
                break
            if stop is not None and stop.is_set():
                results[i] = ("error", "not sent")
                continue
            method, path, body = reqs[i][:3]
            headers = reqs[i][3] if len(reqs[i]) > 3 else None
            if conn is None:
                conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
            try:
                r = request(port, method, path, body, headers=headers, conn=conn)
                results[i] = (r.status, r.body)
                if r.headers.get("connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as e:
                results[i] = ("error", repr(e))
                conn.close()
                conn = None
        if conn is not None:
            conn.close()

    ts = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout * 20)
        assert not t.is_alive(), "storm worker hung"
    return results


# --------------------------------------------------------------------------------------------
# no silent skips


def _no_skip(rep):
    """With SK_NO_SKIP=1 a skipped test (or module) is reported as failed, saying why it skipped."""
    if NO_SKIP and rep.skipped and not hasattr(rep, "wasxfail"):
        why = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
        rep.outcome = "failed"
        rep.longrepr = f"SK_NO_SKIP=1: a skip is a failure here; it would have skipped: {why}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _no_skip(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    _no_skip(outcome.get_result())


# --------------------------------------------------------------------------------------------
# fixtures

_sale_ids = itertools.count(1)


@pytest.fixture
def sale_id():
    """A fresh sale id factory: sale_id() -> 's<N>'."""
    return lambda prefix="s": f"{prefix}{next(_sale_ids)}"


@pytest.fixture(autouse=True)
def _watchdog():
    """Kill every process a test started if the test runs too long, so that a hung server
    turns into a failed test rather than a hung run."""
    with _live_lock:
        _live_procs.clear()
    done = threading.Event()

    def dog():
        if not done.wait(TEST_WATCHDOG):
            with _live_lock:
                for p in _live_procs:
                    if p.poll() is None:
                        p.kill()

    t = threading.Thread(target=dog, daemon=True)
    t.start()
    yield
    done.set()


@pytest.fixture(scope="session")
def shared_cluster(tmp_path_factory):
    """One Redis Cluster for the whole session (3 masters, a replica each), emptied before each
    test that uses it: starting one takes seconds. Tests that change its shape (a failover, a
    slot migration) make their own."""
    if not os.access(REDIS_SERVER, os.X_OK) or not os.access(REDIS_CLI, os.X_OK):
        pytest.fail(f"{REDIS_SERVER} or {REDIS_CLI} missing: apt-get install redis-server", pytrace=False)
    c = RedisCluster(str(tmp_path_factory.mktemp("shared"))).start()
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture(params=["sqlite", "redis", "redis-cluster"])
def store(request, tmp_path):
    """The store URL factory for this test run: ('sqlite', url), ('redis', url) or
    ('redis-cluster', url)."""
    kind = request.param
    if kind == "redis-cluster":
        c = request.getfixturevalue("shared_cluster")
        c.wait_ok()
        c.flush()
        yield Store(kind, c.url, cluster=c)
        return
    if kind == "sqlite":
        d = tmp_path / "db"
        d.mkdir()
        yield Store(kind, f"sqlite:{d / 'seckill.db'}", db_path=str(d / "seckill.db"))
        return
    if not os.access(REDIS_SERVER, os.X_OK):
        pytest.fail(f"{REDIS_SERVER} missing: apt-get install redis-server", pytrace=False)
    r = Redis(str(tmp_path)).start()
    try:
        yield Store(kind, r.url, redis=r)
    finally:
        r.stop()


class Store:
    def __init__(self, kind, url, db_path=None, redis=None, cluster=None):
        self.kind, self.url, self.db_path, self.redis, self.cluster = kind, url, db_path, redis, cluster


@pytest.fixture
def make_server(store, tmp_path):
    """Factory: make_server(extra_args=(), token=None, env=None) -> started Server on the store.
    At teardown every server must still be alive (no crash) and exit 0 on SIGTERM."""
    started = []

    def make(extra_args=(), token=None, env=None, start=True):
        s = Server(store.url, str(tmp_path), extra_args, token=token, env=env,
                   name=f"seckilld{len(started)}")
        started.append(s)
        if start:
            try:
                s.start()
            except BaseException:
                s.expect_dead = True  # the start-up failure is the report
                raise
        return s

    yield make
    problems = []
    for s in started:
        if s.proc is None or getattr(s, "expect_dead", False):
            s.kill()
            continue
        if s.proc.poll() is not None:
            problems.append(f"{s.name} died during the test (rc={s.proc.returncode}); "
                            f"stderr tail: {s.stderr_tail()!r}")
            continue
        rc = s.stop()
        if rc != 0:
            problems.append(f"{s.name} did not exit 0 on SIGTERM (rc={rc}); "
                            f"stderr tail: {s.stderr_tail()!r}")
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture
def server(make_server):
    """A started seckilld (no admin token) on the parametrized store."""
    return make_server()
