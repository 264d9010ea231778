"""Who is buying (docs/API.md, "Buyers"): signed buyer tokens (HS256, ES256, EdDSA by kid,
reloaded on SIGHUP) or a trusted gateway's header; per-user limits and rate limits keyed on the
verified buyer and the client address, never on a claimed body user. Tokens are minted here
(jwtmint.py: hmac, the openssl command line)."""

import os
import signal
import subprocess
import time

import pytest

from conftest import HOST, assert_error, seckilld_binary, storm
from jwtmint import KeyPair, claims, hs256, pem_file, segment, unsigned

sqlite_only = pytest.mark.parametrize("store", ["sqlite"], indirect=True)

SECRET = b"0123456789abcdef0123456789abcdef-buyers"


def secret_file(tmp_path, secret=SECRET, mode=0o600):
    f = tmp_path / "buyer.secret"
    f.write_bytes(secret + b"\n")
    f.chmod(mode)
    return str(f)


def bearer(tok):
    return {"Authorization": f"Bearer {tok}"}


def take(srv, sale, tok=None, via="pub", headers=None, **body):
    h = dict(headers or {})
    if tok is not None:
        h["Authorization"] = f"Bearer {tok}"
    fn = srv.pub if via == "pub" else srv.adm
    return fn("POST", f"/v1/sales/{sale}/orders", body, headers=h)


def assert_401(r):
    assert_error(r, 401, "unauthorized")
    assert r.headers.get("www-authenticate") == 'Bearer error="invalid_token"', r.headers


def test_hs256_tokens(make_server, tmp_path, sale_id):
    srv = make_server(["--buyer-token-secret-file", secret_file(tmp_path)])
    assert "buyer_token_secret_readable" not in srv.stderr_tail()
    s, other = sale_id(), sale_id()
    srv.put_sale(s, stock=100, per_user_limit=1)
    srv.put_sale(other, stock=100)
    now = int(time.time())

    # a verified buyer: the body may leave the user out, or name the same one
    r = take(srv, s, hs256(SECRET, claims("alice")))
    assert r.status == 201 and r.body["user"] == "alice", r
    assert_error(take(srv, s, hs256(SECRET, claims("alice"))), 409, "user_limit")  # the limit is the sub's
    r = take(srv, s, hs256(SECRET, claims("bob")), user="bob", request_id="b1")
    assert r.status == 201 and r.body["user"] == "bob", r
    # the scheme in any case
    r = srv.pub("POST", f"/v1/sales/{other}/orders", {}, headers={"Authorization": "bearer " + hs256(SECRET, claims("c"))})
    assert r.status == 201, r

    # a body naming someone else is 403, whoever it names (mallory cannot spend alice's allowance)
    mallory = hs256(SECRET, claims("mallory"))
    for u in ["alice", "bob"] + [f"mallory-{i}" for i in range(1, 11)]:
        assert_error(take(srv, s, mallory, user=u), 403, "forbidden")
    # an admission ticket for another sale is 403; for this one, fine
    assert_error(take(srv, s, hs256(SECRET, claims("dave", sale=other))), 403, "forbidden")
    assert take(srv, s, hs256(SECRET, claims("dave", sale=s))).status == 201

    wrong = b"another secret, 32 bytes or more........"
    good = hs256(SECRET, claims("eve"))
    h, p, sig = good.split(".")
    flipped = sig[:5] + ("A" if sig[5] != "A" else "B") + sig[6:]
    cases = {
        "none": None,
        "empty": "",
        "garbage": "not-a-token",
        "two parts": h + "." + p,
        "four parts": good + ".x",
        "bad signature": ".".join([h, p, flipped]),
        "padded signature": good + "=",
        "other secret": hs256(wrong, claims("eve")),
        "alg none": unsigned(claims("eve")),
        "alg none, signed": hs256(SECRET, claims("eve"), header={"alg": "none"}),
        "alg HS512": hs256(SECRET, claims("eve"), header={"alg": "HS512", "typ": "JWT"}),
        "alg ES256 by HMAC": hs256(SECRET, claims("eve"), header={"alg": "ES256"}),
        "no alg": hs256(SECRET, claims("eve"), header={"typ": "JWT"}),
        "unknown kid": hs256(SECRET, claims("eve"), kid="k9"),
        "crit": hs256(SECRET, claims("eve"), header={"alg": "HS256", "crit": ["exp"]}),
        "header not JSON": segment(b"{alg") + "." + p + "." + sig,
        "no exp": hs256(SECRET, claims("eve", exp=None)),
        "exp a string": hs256(SECRET, claims("eve", exp=str(now + 300))),
        "expired past the leeway": hs256(SECRET, claims("eve", exp=now - 31)),
        "nbf ahead past the leeway": hs256(SECRET, claims("eve", nbf=now + 60)),
        "iat ahead past the leeway": hs256(SECRET, claims("eve", iat=now + 60)),
        "no sub": hs256(SECRET, claims(None)),
        "empty sub": hs256(SECRET, claims("")),
        "sub a number": hs256(SECRET, claims(7)),
        "sub with a control byte": hs256(SECRET, claims("e\u0001ve")),
        "sub too long": hs256(SECRET, claims("e" * 129)),
        "sale not a sale id": hs256(SECRET, claims("eve", sale="a b")),
        "aud without --buyer-token-audience": hs256(SECRET, claims("eve", aud="shop")),
        "claims an array": segment({"alg": "HS256"}) + "." + segment([1]) + "." + sig,
        "duplicate sub": None,  # below
    }
    dup = segment({"alg": "HS256", "typ": "JWT"}) + "." + segment(b'{"sub":"eve","sub":"alice","exp":%d}' % (now + 60))
    import hashlib
    import hmac as hm
    from jwtmint import b64url
    cases["duplicate sub"] = dup + "." + b64url(hm.new(SECRET, dup.encode(), hashlib.sha256).digest())
    failures = []
    for name, tok in cases.items():
        r = take(srv, s, tok)
        try:
            assert_401(r)
        except AssertionError as e:
            failures.append(f"{name}: {e}")
    for name, hdr in (("Basic", "Basic " + good), ("no token", "Bearer "), ("no space", "Bearer" + good),
                      ("two headers", None)):
        if hdr is None:
            continue
        r = srv.pub("POST", f"/v1/sales/{s}/orders", {}, headers={"Authorization": hdr})
        if r.status != 401:
            failures.append(f"{name}: {r}")
    assert not failures, "\n".join(failures)
    # inside the leeway (30 s) is fine
    assert take(srv, s, hs256(SECRET, claims("f1", exp=now - 5))).status == 201
    assert take(srv, s, hs256(SECRET, claims("f2", nbf=now + 10, iat=now + 10))).status == 201
    # a bad token never takes stock: alice, bob, dave, f1, f2 and nothing else
    assert srv.sale(s)["sold"] == 5
    assert sorted(o["user"] for o in srv.orders(s)) == ["alice", "bob", "dave", "f1", "f2"]
    # the admin listener's takes need a token too
    assert_401(take(srv, other, None, via="adm", user="zed"))
    assert take(srv, other, hs256(SECRET, claims("zed")), via="adm").status == 201


@sqlite_only
def test_token_audience_and_leeway(make_server, tmp_path, sale_id):
    srv = make_server(["--buyer-token-secret-file", secret_file(tmp_path, mode=0o640), "--buyer-token-audience",
                       "shop", "--buyer-token-leeway", "0"])
    assert "event=buyer_token_secret_readable" in srv.stderr_tail(), srv.stderr_tail()
    s = sale_id()
    srv.put_sale(s, stock=100)
    now = int(time.time())
    assert take(srv, s, hs256(SECRET, claims("a", aud="shop"))).status == 201
    assert take(srv, s, hs256(SECRET, claims("b", aud=["other", "shop"]))).status == 201
    for aud in (None, "other", ["other"], [], 5, ["shop", 5]):
        assert_401(take(srv, s, hs256(SECRET, claims("c", aud=aud) if aud is not None else claims("c"))))
    assert_401(take(srv, s, hs256(SECRET, claims("d", aud="shop", exp=now - 2))))
    assert_401(take(srv, s, hs256(SECRET, claims("d", aud="shop", nbf=now + 5))))
    assert srv.sale(s)["sold"] == 2


@sqlite_only
def test_public_keys_by_kid_and_sighup(make_server, tmp_path, sale_id):
    k1 = KeyPair(str(tmp_path), "k1", "ES256")
    k2 = KeyPair(str(tmp_path), "k2", "EdDSA")
    k3 = KeyPair(str(tmp_path), "k3", "ES256")
    keys = pem_file(str(tmp_path / "keys.pem"), [("k1", k1), ("k2", k2)])
    srv = make_server(["--buyer-token-public-key", keys, "--buyer-token-secret-file", secret_file(tmp_path)])
    s = sale_id()
    srv.put_sale(s, stock=100)
    t1 = k1.sign(claims("one"), kid="k1")
    assert take(srv, s, t1).status == 201
    assert take(srv, s, k2.sign(claims("two"), kid="k2")).status == 201
    assert take(srv, s, hs256(SECRET, claims("three"))).status == 201  # the secret has no kid
    assert take(srv, s, t1, request_id=None).status == 201  # a retry, from the cache
    for name, tok in {
        "ES256 under the EdDSA key's kid": k1.sign(claims("x"), kid="k2"),
        "EdDSA under the ES256 key's kid": k2.sign(claims("x"), kid="k1"),
        "ES256 without kid": k1.sign(claims("x")),
        "another key, same kid": k3.sign(claims("x"), kid="k1"),
        "HS256 keyed with the public key": hs256(k1.public_pem.encode(), claims("x"), kid="k1"),
        "HS256 keyed with the public key, alg ES256": hs256(k1.public_pem.encode(), claims("x"),
                                                            header={"alg": "ES256", "kid": "k1"}),
        "ES256 with a kid but HS256 secret": hs256(SECRET, claims("x"), kid="k1"),
        "ES256 signature cut": t1[:-4],
    }.items():
        r = take(srv, s, tok)
        assert r.status == 401, f"{name}: {r}"
    assert srv.sale(s)["sold"] == 4

    # rotation: k1 out, k3 in; SIGHUP
    pem_file(keys, [("k2", k2), ("k3", k3)])
    srv.proc.send_signal(signal.SIGHUP)
    t3 = k3.sign(claims("four"), kid="k3")
    deadline = time.monotonic() + 5
    while take(srv, s, t3, request_id="r4").status != 201:
        assert time.monotonic() < deadline, srv.stderr_tail()
        time.sleep(0.05)
    assert_401(take(srv, s, t1))  # cached before, refused now
    assert_401(take(srv, s, k1.sign(claims("five"), kid="k1")))
    assert take(srv, s, k2.sign(claims("six"), kid="k2")).status == 201
    # a broken file on SIGHUP keeps the keys in force
    with open(keys, "w") as f:
        f.write("kid: k9\n-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
    srv.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    while "buyer_token_keys_reload_failed" not in srv.stderr_tail():
        assert time.monotonic() < deadline, srv.stderr_tail()
        time.sleep(0.05)
    assert take(srv, s, k3.sign(claims("seven"), kid="k3")).status == 201
    assert srv.sale(s)["sold"] == 7


@sqlite_only
def test_key_options_checked_at_start(tmp_path, store):
    def run(*args):
        return subprocess.run([seckilld_binary(), "--listen", f"{HOST}:0", "--admin-listen", f"{HOST}:0",
                               "--store", store.url] + list(args), capture_output=True, text=True, timeout=10,
                              env={"PATH": os.environ["PATH"]})

    short = tmp_path / "short"
    short.write_text("too short\n")
    k = KeyPair(str(tmp_path), "rsa-not", "EdDSA")
    rsa = tmp_path / "rsa.key"
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024", "-out", str(rsa)],
                   check=True, capture_output=True)
    rsa_pub = tmp_path / "rsa.pem"
    rsa_pub.write_bytes(subprocess.run(["openssl", "pkey", "-in", str(rsa), "-pubout"], check=True,
                                       capture_output=True).stdout)
    dup = pem_file(str(tmp_path / "dup.pem"), [("a", k), ("a", k)])
    for args, why in (
        (["--buyer-token-secret-file", str(short)], "32 bytes"),
        (["--buyer-token-secret-file", str(tmp_path / "missing")], "cannot open"),
        (["--buyer-token-public-key", str(rsa_pub)], "only P-256"),
        (["--buyer-token-public-key", str(short)], "no public key"),
        (["--buyer-token-public-key", dup], "twice"),
        (["--user-header", "X-User"], "--trusted-proxies"),
        (["--user-header", "X-User", "--trusted-proxies", "10.0.0.0/8", "--buyer-token-secret-file",
          secret_file(tmp_path)], "one way"),
        (["--trusted-proxies", "10.0.0.0/33"], "CIDR"),
        (["--trusted-proxies", "example.com"], "CIDR"),
    ):
        p = run(*args)
        assert p.returncode == 2 and why in p.stderr, (args, p.returncode, p.stderr)


@sqlite_only
def test_gateway_header(make_server, sale_id):
    srv = make_server(["--user-header", "X-Buyer", "--trusted-proxies", "10.0.0.0/8, 127.0.0.1"])
    s = sale_id()
    srv.put_sale(s, stock=10, per_user_limit=1)
    r = srv.pub("POST", f"/v1/sales/{s}/orders", {}, headers={"X-Buyer": "carol"})
    assert r.status == 201 and r.body["user"] == "carol", r
    assert_error(srv.pub("POST", f"/v1/sales/{s}/orders", {}, headers={"x-buyer": "carol"}), 409, "user_limit")
    assert_error(srv.pub("POST", f"/v1/sales/{s}/orders", {"user": "dan"}, headers={"X-Buyer": "carol"}), 403,
                 "forbidden")
    assert_error(srv.pub("POST", f"/v1/sales/{s}/orders", {"user": "dan"}), 401, "unauthorized")
    assert_error(srv.pub("POST", f"/v1/sales/{s}/orders", {}, headers={"X-Buyer": ""}), 401, "unauthorized")
    assert srv.sale(s)["sold"] == 1
    # from a peer that is not a trusted proxy, the header is nobody's word
    srv.stop()
    srv.proc = None
    untrusted = make_server(["--user-header", "X-Buyer", "--trusted-proxies", "10.0.0.0/8"])
    for h in ({"X-Buyer": "erin"}, {}, {"X-Buyer": "erin", "X-Forwarded-For": "10.0.0.1"}):
        assert_error(untrusted.pub("POST", f"/v1/sales/{s}/orders", {"user": "erin"}, headers=h), 401, "unauthorized")
    assert untrusted.sale(s)["sold"] == 1


@sqlite_only
def test_rate_limits_keyed_on_verified_identity(make_server, tmp_path, sale_id):
    """--rate-limit 3: with tokens, one bucket per verified buyer and one per client address
    (behind a trusted proxy: the right-most untrusted X-Forwarded-For entry); the body's user
    never picks a bucket."""
    # a burst of 3, then 1 token a second: exact unless a second passed (a sanitizer build on a
    # busy machine), when each second may have given a bucket one more 201
    srv = make_server(["--buyer-token-secret-file", secret_file(tmp_path), "--rate-limit", "1", "--rate-burst", "3",
                       "--trusted-proxies", "127.0.0.1, 10.0.0.0/8"])
    s = sale_id()
    srv.put_sale(s, stock=1000)
    alice = hs256(SECRET, claims("alice"))

    def bucket(codes, t0):
        refilled = int(time.monotonic() - t0)
        assert codes[:3] == [201] * 3 and set(codes) <= {201, 429}, codes
        assert codes.count(201) - 3 <= refilled, (codes, refilled)
        if refilled == 0:
            assert codes == [201, 201, 201, 429, 429], codes
        return codes.count(201)

    # one buyer from five addresses: her own bucket stops her
    t0 = time.monotonic()
    won = bucket([take(srv, s, alice, headers={"X-Forwarded-For": f"198.51.100.{i}, 10.0.0.1"}).status
                  for i in range(5)], t0)
    # five buyers from one address: the address's bucket stops them; forging the left-most entry
    # (the client writes it) changes nothing
    t0 = time.monotonic()
    codes = [take(srv, s, hs256(SECRET, claims(f"b{i}")),
                  headers={"X-Forwarded-For": f"192.0.2.{i}, 203.0.113.9, 10.0.0.7"}).status for i in range(5)]
    r = take(srv, s, hs256(SECRET, claims("b9")), headers={"X-Forwarded-For": "203.0.113.9"})
    won += bucket(codes, t0)
    if r.status == 201:  # a second passed: its token
        won += 1
        r = take(srv, s, hs256(SECRET, claims("b9")), headers={"X-Forwarded-For": "203.0.113.9"})
    assert_error(r, 429, "rate_limited")
    assert int(r.headers["retry-after"]) >= 1
    assert srv.adm("GET", f"/v1/sales/{s}").body["sold"] == won
    srv.stop()
    srv.proc = None
    # without tokens: the address only; users named in the body share it (the bot)
    plain = make_server(["--rate-limit", "1", "--rate-burst", "1"])
    m = sale_id()
    plain.put_sale(m, stock=100, per_user_limit=1)
    codes = [plain.take(m, user=f"mallory-{i}").status for i in range(1, 11)]
    assert codes.count(201) <= 2 and codes.count(429) >= 8, codes


@pytest.mark.parametrize("n", [3000])
def test_storm_of_token_holders(make_server, tmp_path, sale_id, n):
    """3,000 buyers with their own tokens, 100 units, one each: exactly 100 win, each a distinct
    token's sub, and every other buyer is told sold_out."""
    srv = make_server(["--buyer-token-secret-file", secret_file(tmp_path)])
    s = sale_id()
    srv.put_sale(s, stock=100, per_user_limit=1)
    subs = [f"holder-{i}" for i in range(n)]
    reqs = [("POST", f"/v1/sales/{s}/orders", {}, bearer(hs256(SECRET, claims(u, sale=s)))) for u in subs]
    res = storm(srv.public_port, reqs, threads=48)
    statuses = [st for st, _ in res]
    assert statuses.count(201) == 100, {x: statuses.count(x) for x in set(statuses)}
    assert statuses.count(409) == n - 100 and all(b["error"] == "sold_out" for st, b in res if st == 409)
    winners = [b["user"] for st, b in res if st == 201]
    assert len(set(winners)) == 100 and set(winners) <= set(subs)
    sale = srv.sale(s)
    assert (sale["sold"], sale["remaining"], sale["state"]) == (100, 0, "sold_out"), sale
    book = srv.orders(s)
    assert sorted(o["user"] for o in book) == sorted(winners)
