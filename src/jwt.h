/* jwt.h: buyer tokens. A compact JWS (RFC 7515) with JWT claims (RFC 7519), checked against a
 * key ring: an HS256 secret and PEM public keys (ES256 on P-256, EdDSA on Ed25519), each with an
 * optional `kid`. The cryptography is OpenSSL's; this file frames it: base64url, the JSON of the
 * header and the claims (jansson), which key, which algorithm, which times. Fuzzed by
 * tests/fuzz/fuzz_jwt.c (a token whose signature is not valid is never accepted).
 *
 * The algorithm comes from the key, never from the token: the token's `kid` names a key (no
 * `kid`: the keys without one), and its `alg` must be that key's own ("none" is nobody's). */
#ifndef SK_JWT_H
#define SK_JWT_H

#include <stddef.h>
#include <stdint.h>
#include "sale.h"

#define SK_JWT_MAX 4096 /* longest token accepted, in bytes */

typedef struct sk_jwt_keys_s sk_jwt_keys_t;

/* What a verified token says. */
typedef struct sk_jwt_claims_s {
    char sub[SK_IDENT_MAX + 1]; /* the buyer (rules of a user id) */
    size_t sub_len;
    char sale[SK_SALE_ID_MAX + 1]; /* the one sale it admits to, "" when any */
    int64_t exp;                   /* seconds since the epoch */
    int64_t nbf;                   /* INT64_MIN when absent */
    int64_t iat;                   /* INT64_MIN when absent */
} sk_jwt_claims_t;

/* An empty key ring, then keys added to it. Each add returns 0, or -1 with a message in err:
 * a secret shorter than 32 bytes, a PEM that is not an ES256 (P-256) or Ed25519 public key,
 * a kid twice (kid NULL: no kid; two keys without kid are fine only of different algorithms). */
sk_jwt_keys_t *sk_jwt_keys_new(void);
int sk_jwt_keys_add_secret(sk_jwt_keys_t *k, const char *kid, const void *secret, size_t len, char *err, size_t errlen);
int sk_jwt_keys_add_pem(sk_jwt_keys_t *k, const char *kid, const char *pem, size_t len, char *err, size_t errlen);
/* Adds every key of a PEM file: each "-----BEGIN PUBLIC KEY-----" block, named by the last
 * `kid: NAME` line before it (NAME: [A-Za-z0-9_.-]{1,64}), if any. */
int sk_jwt_keys_add_pem_file(sk_jwt_keys_t *k, const char *path, char *err, size_t errlen);
/* The ring of --buyer-token-secret-file and --buyer-token-public-key (either may be NULL), or
 * NULL with a message in err. */
sk_jwt_keys_t *sk_jwt_keys_load(const char *secret_file, const char *pem_file, char *err, size_t errlen);
size_t sk_jwt_keys_count(const sk_jwt_keys_t *k);
void sk_jwt_keys_free(sk_jwt_keys_t *k); /* NULL is fine */

/* Verifies a token at `now` (seconds) with `leeway` seconds of clock skew: signature, exp
 * (required: refused from exp + leeway on), nbf and iat (refused before nbf - leeway, and when
 * issued after now + leeway), aud (when `audience` is set: a string equal to it or an array
 * holding it; a token with aud and no audience set is refused too, RFC 7519 4.1.3), sub (required,
 * a valid user id) and sale (optional, a valid sale id). A header with `crit` is refused. Returns
 * 0 with *out filled, or -1 with *why a static message. Thread-safe (the ring is read only). */
int sk_jwt_verify(const sk_jwt_keys_t *k, const char *tok, size_t len, int64_t now, int64_t leeway,
                  const char *audience, sk_jwt_claims_t *out, const char **why);

/* The same through this thread's cache of verified tokens (a buyer's retries are not verified
 * again): a hit is the same token bytes, verified under the same ring, its times checked again
 * at `now`. Only tokens that passed are kept; `audience` and `leeway` must be the same for the
 * life of the process (they are: options). */
int sk_jwt_verify_cached(const sk_jwt_keys_t *k, const char *tok, size_t len, int64_t now, int64_t leeway,
                         const char *audience, sk_jwt_claims_t *out, const char **why);

/* Reads a token's claims (JSON, decoded from base64url) and checks all but the times: exp
 * (required) and nbf, iat numeric, aud, sub, sale, as sk_jwt_verify says. The usual shapes
 * (strings without escapes, integers) are read directly; all else by jansson, the reference
 * (sk_jwt_claims_parse_json). Returns 0 with *out filled, or -1 with *why. */
int sk_jwt_claims_parse(const char *buf, size_t len, const char *audience, sk_jwt_claims_t *out, const char **why);
int sk_jwt_claims_parse_json(const char *buf, size_t len, const char *audience, sk_jwt_claims_t *out, const char **why);

/* Frees this thread's cache (a worker thread, as it ends). */
void sk_jwt_cache_dispose(void);

/* Decodes unpadded base64url (RFC 4648 section 5; no padding, no white space, unused bits zero)
 * into out (at least len * 3 / 4 + 1 bytes). Returns the decoded length or -1. */
long sk_base64url_decode(const char *in, size_t len, unsigned char *out);

#endif
