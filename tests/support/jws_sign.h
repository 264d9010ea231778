/* jws_sign.h: signed buyer tokens made the way a shop's token service makes them, for the tests
 * and the bench only (tests/unit/test_jwt.c, tests/fuzz/fuzz_jwt.c, bench/jwt_bench.c): base64url
 * without padding, and a JWS signature over "header.claims" with OpenSSL, in the form RFC 7518
 * gives (ES256 as the 64 bytes r || s, not DER). seckilld itself only verifies (src/jwt.c). */
#ifndef SK_TEST_JWS_SIGN_H
#define SK_TEST_JWS_SIGN_H

#include <openssl/evp.h>
#include <stddef.h>

/* Writes n bytes of in as base64url without padding to out (no NUL); returns its length, at most
 * (n * 4 + 2) / 3. */
size_t sk_test_b64url(const void *in, size_t n, char *out);

/* Signs the n bytes of msg into sig (room for 64 bytes): alg "HS256" with secret, "ES256" with the
 * P-256 key, "EdDSA" with the Ed25519 key. Returns the signature's length, 0 on any failure. */
size_t sk_test_jws_sign(const char *alg, EVP_PKEY *key, const char *secret, const void *msg, size_t n,
                        unsigned char *sig);

/* The token header.claims.signature (JSON texts as given) into tok (NUL-terminated; room for
 * (strlen(header) + strlen(claims) + 64) * 4 / 3 + 8 bytes); returns its length, 0 on failure. */
size_t sk_test_jws_mint(const char *alg, EVP_PKEY *key, const char *secret, const char *header, const char *claims,
                        char *tok);

#endif
