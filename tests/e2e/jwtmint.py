"""Buyer tokens for the tests, minted here: HS256 with the standard library's hmac, ES256 and
EdDSA with the `openssl` command line (keys made by `openssl genpkey`). Nothing here checks a
token: seckilld does, and the tests check its answers."""

import base64
import hashlib
import hmac
import json
import os
import subprocess
import time

OPENSSL = "/usr/bin/openssl"


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode("ascii")


def segment(obj):
    if isinstance(obj, (bytes, bytearray)):
        return b64url(bytes(obj))
    return b64url(json.dumps(obj, separators=(",", ":")).encode("utf-8"))


def claims(sub="alice", ttl=300, **extra):
    """Default claims: sub (None: none), iat now, exp in ttl seconds; extra ones added (None
    removes)."""
    now = int(time.time())
    c = {"sub": sub, "iat": now, "exp": now + ttl}
    if sub is None:
        del c["sub"]
    for k, v in extra.items():
        if v is None:
            c.pop(k, None)
        else:
            c[k] = v
    return c


def hs256(secret, claim_set, kid=None, header=None):
    h = {"alg": "HS256", "typ": "JWT"}
    if kid is not None:
        h["kid"] = kid
    if header is not None:
        h = header
    signing_input = segment(h) + "." + segment(claim_set)
    sig = hmac.new(secret, signing_input.encode("ascii"), hashlib.sha256).digest()
    return signing_input + "." + b64url(sig)


def unsigned(claim_set, alg="none"):
    return segment({"alg": alg, "typ": "JWT"}) + "." + segment(claim_set) + "."


def _openssl(args, data=None):
    p = subprocess.run([OPENSSL] + args, input=data, capture_output=True, timeout=30)
    assert p.returncode == 0, (args, p.stderr)
    return p.stdout


class KeyPair:
    """A private key file and its PEM public key; kind 'ES256' (P-256) or 'EdDSA' (Ed25519)."""

    def __init__(self, directory, name, kind):
        self.kind = kind
        self.key = os.path.join(directory, f"{name}.key")
        if kind == "ES256":
            _openssl(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", self.key])
        else:
            _openssl(["genpkey", "-algorithm", "ED25519", "-out", self.key])
        self.public_pem = _openssl(["pkey", "-in", self.key, "-pubout"]).decode("ascii")

    def sign(self, claim_set, kid=None, header=None):
        h = {"alg": self.kind, "typ": "JWT"}
        if kid is not None:
            h["kid"] = kid
        if header is not None:
            h = header
        signing_input = (segment(h) + "." + segment(claim_set)).encode("ascii")
        if self.kind == "EdDSA":
            # Ed25519 signs in one shot, which openssl does from a file only
            msg = self.key + ".msg"
            with open(msg, "wb") as f:
                f.write(signing_input)
            sig = _openssl(["pkeyutl", "-sign", "-inkey", self.key, "-rawin", "-in", msg])
        else:
            sig = der_to_raw(_openssl(["dgst", "-sha256", "-sign", self.key], signing_input))
        return signing_input.decode("ascii") + "." + b64url(sig)


def der_to_raw(der):
    """An ECDSA signature, DER SEQUENCE { INTEGER r, INTEGER s }, as JWS's r || s (32 bytes each)."""
    assert der[0] == 0x30
    i = 2 if der[1] < 0x80 else 2 + (der[1] & 0x7F)
    out = b""
    for _ in range(2):
        assert der[i] == 0x02
        n = der[i + 1]
        v = der[i + 2:i + 2 + n].lstrip(b"\x00")
        out += v.rjust(32, b"\x00")
        i += 2 + n
    return out


def pem_file(path, keys):
    """Writes [(kid or None, KeyPair)] as one --buyer-token-public-key file."""
    with open(path, "w") as f:
        for kid, kp in keys:
            if kid is not None:
                f.write(f"kid: {kid}\n")
            f.write(kp.public_pem)
    return path
