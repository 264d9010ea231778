/* test_jwt.c: buyer tokens (jwt.h): base64url, the key ring's rules, the exact edges of exp,
 * nbf, iat and the leeway, aud, the algorithm taken from the key, the claims' direct scan against
 * jansson, and the cache across a key ring's replacement. Tokens are HS256, made by
 * tests/support/jws_sign.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>

#include "jws_sign.h"
#include "jwt.h"

#define NOW 1800000000
static const char SECRET[] = "unit-secret-0123456789abcdef-0123456789";

/* An HS256 token of header and claims, signed with `secret`. */
static const char *tok(const char *header, const char *claims, const char *secret)
{
    static char t[2048];
    assert_true(sk_test_jws_mint("HS256", NULL, secret, header, claims, t) > 0);
    return t;
}

static sk_jwt_keys_t *ring(void)
{
    char err[128];
    sk_jwt_keys_t *k = sk_jwt_keys_new();
    assert_int_equal(sk_jwt_keys_add_secret(k, NULL, SECRET, strlen(SECRET), err, sizeof(err)), 0);
    return k;
}

static int check(sk_jwt_keys_t *k, const char *t, const char *aud, sk_jwt_claims_t *c)
{
    const char *why = NULL;
    int rc = sk_jwt_verify(k, t, strlen(t), NOW, 30, aud, c, &why);
    assert_true(rc == 0 || why != NULL);
    return rc;
}

#define HS "{\"alg\":\"HS256\",\"typ\":\"JWT\"}"

static void base64url(void **state)
{
    (void)state;
    unsigned char out[16];
    assert_int_equal(sk_base64url_decode("", 0, out), 0);
    assert_int_equal(sk_base64url_decode("TQ", 2, out), 1);
    assert_int_equal(out[0], 'M');
    assert_int_equal(sk_base64url_decode("TWE", 3, out), 2);
    assert_int_equal(sk_base64url_decode("TWFu", 4, out), 3);
    assert_memory_equal(out, "Man", 3);
    assert_int_equal(sk_base64url_decode("-_8", 3, out), 2);
    assert_int_equal(out[0], 0xfb);
    assert_int_equal(out[1], 0xff);
    assert_int_equal(sk_base64url_decode("T", 1, out), -1);  /* no length gives 1 char mod 4 */
    assert_int_equal(sk_base64url_decode("TR", 2, out), -1); /* unused bits not zero */
    assert_int_equal(sk_base64url_decode("TWF", 3, out), -1);
    assert_int_equal(sk_base64url_decode("TQ==", 4, out), -1); /* no padding */
    assert_int_equal(sk_base64url_decode("T+/u", 4, out), -1); /* not the url alphabet */
    assert_int_equal(sk_base64url_decode("TW u", 4, out), -1);
}

static void key_rules(void **state)
{
    (void)state;
    char err[128];
    sk_jwt_keys_t *k = sk_jwt_keys_new();
    assert_int_equal(sk_jwt_keys_add_secret(k, NULL, "short", 5, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "32 bytes"));
    assert_int_equal(sk_jwt_keys_add_secret(k, NULL, SECRET, strlen(SECRET), err, sizeof(err)), 0);
    assert_int_equal(sk_jwt_keys_add_secret(k, NULL, SECRET, strlen(SECRET), err, sizeof(err)), -1);
    assert_int_equal(sk_jwt_keys_add_secret(k, "a", SECRET, strlen(SECRET), err, sizeof(err)), 0);
    assert_int_equal(sk_jwt_keys_add_secret(k, "a", SECRET, strlen(SECRET), err, sizeof(err)), -1);
    assert_int_equal(sk_jwt_keys_add_secret(k, "a b", SECRET, strlen(SECRET), err, sizeof(err)), -1);
    assert_int_equal(sk_jwt_keys_add_pem(k, "p", "nope", 4, err, sizeof(err)), -1);
    assert_int_equal(sk_jwt_keys_count(k), 2);
    sk_jwt_keys_free(k);
    sk_jwt_keys_free(NULL);
}

static void times_and_leeway(void **state)
{
    (void)state;
    sk_jwt_keys_t *k = ring();
    sk_jwt_claims_t c;
    char cl[256];
    /* exp: refused from exp + leeway on */
    snprintf(cl, sizeof(cl), "{\"sub\":\"u\",\"exp\":%d}", NOW - 29);
    assert_int_equal(check(k, tok(HS, cl, SECRET), NULL, &c), 0);
    assert_string_equal(c.sub, "u");
    assert_int_equal(c.exp, NOW - 29);
    snprintf(cl, sizeof(cl), "{\"sub\":\"u\",\"exp\":%d}", NOW - 30);
    assert_int_equal(check(k, tok(HS, cl, SECRET), NULL, &c), -1);
    snprintf(cl, sizeof(cl), "{\"sub\":\"u\",\"exp\":%d.9}", NOW - 30);
    assert_int_equal(check(k, tok(HS, cl, SECRET), NULL, &c), -1);
    /* nbf: refused before nbf - leeway */
    snprintf(cl, sizeof(cl), "{\"sub\":\"u\",\"exp\":%d,\"nbf\":%d}", NOW + 60, NOW + 30);
    assert_int_equal(check(k, tok(HS, cl, SECRET), NULL, &c), 0);
    assert_int_equal(c.nbf, NOW + 30);
    snprintf(cl, sizeof(cl), "{\"sub\":\"u\",\"exp\":%d,\"nbf\":%d}", NOW + 60, NOW + 31);
    assert_int_equal(check(k, tok(HS, cl, SECRET), NULL, &c), -1);
    /* iat: refused when issued after now + leeway */
    snprintf(cl, sizeof(cl), "{\"sub\":\"u\",\"exp\":%d,\"iat\":%d}", NOW + 60, NOW + 30);
    assert_int_equal(check(k, tok(HS, cl, SECRET), NULL, &c), 0);
    snprintf(cl, sizeof(cl), "{\"sub\":\"u\",\"exp\":%d,\"iat\":%d}", NOW + 60, NOW + 31);
    assert_int_equal(check(k, tok(HS, cl, SECRET), NULL, &c), -1);
    /* extremes do not overflow */
    assert_int_equal(check(k, tok(HS, "{\"sub\":\"u\",\"exp\":9223372036854775807}", SECRET), NULL, &c), 0);
    assert_int_equal(check(k, tok(HS, "{\"sub\":\"u\",\"exp\":-9223372036854775807}", SECRET), NULL, &c), -1);
    assert_int_equal(
        check(k, tok(HS, "{\"sub\":\"u\",\"exp\":9223372036854775807,\"nbf\":-9223372036854775807}", SECRET), NULL, &c),
        0);
    assert_int_equal(check(k, tok(HS, "{\"sub\":\"u\"}", SECRET), NULL, &c), -1);
    sk_jwt_keys_free(k);
}

static void claims_and_keys(void **state)
{
    (void)state;
    sk_jwt_keys_t *k = ring();
    sk_jwt_claims_t c;
    char cl[256];
    snprintf(cl, sizeof(cl), "{\"sub\":\"alice\",\"exp\":%d,\"sale\":\"phone-1\",\"aud\":\"shop\"}", NOW + 60);
    assert_int_equal(check(k, tok(HS, cl, SECRET), "shop", &c), 0);
    assert_string_equal(c.sale, "phone-1");
    assert_int_equal(check(k, tok(HS, cl, SECRET), "other", &c), -1);
    assert_int_equal(check(k, tok(HS, cl, SECRET), NULL, &c), -1); /* aud, and no audience set */
    assert_int_equal(check(k, tok(HS, cl, "another secret of thirty-two bytes!!"), "shop", &c), -1);
    /* the algorithm is the key's: none, another alg, a kid no key has */
    assert_int_equal(check(k, tok("{\"alg\":\"none\"}", cl, SECRET), "shop", &c), -1);
    assert_int_equal(check(k, tok("{\"alg\":\"HS384\"}", cl, SECRET), "shop", &c), -1);
    assert_int_equal(check(k, tok("{\"alg\":\"HS256\",\"kid\":\"x\"}", cl, SECRET), "shop", &c), -1);
    assert_int_equal(check(k, tok("{\"alg\":\"HS256\",\"crit\":[]}", cl, SECRET), "shop", &c), -1);
    assert_int_equal(check(k, tok("{\"alg\":\"HS256\",\"alg\":\"HS256\"}", cl, SECRET), "shop", &c), -1);
    assert_int_equal(check(k, tok("{\"alg\":\"HS256\"}", cl, SECRET), "shop", &c), 0);
    assert_int_equal(check(k, tok("{\"alg\" : \"HS256\" , \"kid\" : null}", cl, SECRET), "shop", &c), -1);
    sk_jwt_keys_free(k);
}

/* The direct scan of the claims reads what jansson reads, on shapes on both sides of its edge. */
static void claims_scan_matches_jansson(void **state)
{
    (void)state;
    static const char *const cases[] = {
        "{\"sub\":\"a\",\"exp\":5}",
        " { \"sub\" : \"a\" ,\n\"exp\" :\t-0 } ",
        "{\"sub\":\"a\",\"exp\":01}",
        "{\"sub\":\"a\",\"exp\":1e3}",
        "{\"sub\":\"a\",\"exp\":1.5}",
        "{\"sub\":\"a\",\"exp\":\"5\"}",
        "{\"sub\":\"a\",\"exp\":5,\"exp\":6}",
        "{\"sub\":\"a\",\"exp\":5,\"x\":1,\"x\":2}",
        "{\"sub\":\"\\u0061\",\"exp\":5}",
        "{\"sub\":\"\xc3\xa9\",\"exp\":5}",
        "{\"sub\":\"\xc3\",\"exp\":5}",
        "{\"sub\":\"a\",\"exp\":5}x",
        "{}",
        "{\"sub\":5,\"exp\":5}",
        "{\"sub\":\"a\",\"exp\":5,\"sale\":\"a b\"}",
        "{\"sub\":\"a\",\"exp\":5,\"sale\":7}",
        "{\"sub\":\"a\",\"exp\":5,\"aud\":\"aud1\"}",
        "{\"sub\":\"a\",\"exp\":5,\"aud\":[\"aud1\"]}",
        "{\"sub\":\"a\",\"exp\":5,\"aud\":5}",
        "{\"sub\":\"a\",\"exp\":5,\"nbf\":\"x\"}",
        "{\"sub\":\"a\",\"exp\":5,\"iat\":true}",
        "{\"sub\":\"a\",\"exp\":123456789012345678}",
        "{\"sub\":\"a\",\"exp\":1234567890123456789}",
        "{\"sub\":\"a\",\"exp\":5,}",
        "{\"sub\":\"a\" \"exp\":5}",
        "[1]",
        "",
        "{\"sub\":\"a\",\"exp\":-}",
        "{\"a\":1,\"b\":2,\"c\":3,\"d\":4,\"e\":5,\"f\":6,\"g\":7,\"h\":8,\"i\":9,\"sub\":\"a\",\"exp\":5}",
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        for (int a = 0; a < 2; a++) {
            sk_jwt_claims_t x, y;
            const char *wx = NULL, *wy = NULL;
            int rx = sk_jwt_claims_parse(cases[i], strlen(cases[i]), a ? "aud1" : NULL, &x, &wx);
            int ry = sk_jwt_claims_parse_json(cases[i], strlen(cases[i]), a ? "aud1" : NULL, &y, &wy);
            if (rx != ry)
                fail_msg("case %zu (%s), audience %d: scan %d, jansson %d", i, cases[i], a, rx, ry);
            if (rx == 0) {
                assert_string_equal(x.sub, y.sub);
                assert_int_equal(x.exp, y.exp);
                assert_string_equal(x.sale, y.sale);
            }
        }
}

static void cache_follows_the_ring(void **state)
{
    (void)state;
    char err[128], cl[128];
    sk_jwt_claims_t c;
    const char *why;
    sk_jwt_keys_t *k1 = ring(), *k2 = sk_jwt_keys_new();
    assert_int_equal(sk_jwt_keys_add_secret(k2, NULL, "the next secret, thirty-two bytes long", 38, err, sizeof(err)),
                     0);
    snprintf(cl, sizeof(cl), "{\"sub\":\"u\",\"exp\":%d}", NOW + 10);
    char t[2048];
    snprintf(t, sizeof(t), "%s", tok(HS, cl, SECRET));
    assert_int_equal(sk_jwt_verify_cached(k1, t, strlen(t), NOW, 30, NULL, &c, &why), 0);
    assert_int_equal(sk_jwt_verify_cached(k1, t, strlen(t), NOW, 30, NULL, &c, &why), 0); /* a hit */
    /* the times are checked again on a hit */
    assert_int_equal(sk_jwt_verify_cached(k1, t, strlen(t), NOW + 40, 30, NULL, &c, &why), -1);
    /* another ring (a reload): the cached token is checked again, and fails */
    assert_int_equal(sk_jwt_verify_cached(k2, t, strlen(t), NOW, 30, NULL, &c, &why), -1);
    t[strlen(t) - 2] ^= 1; /* a token one byte off is not the cached one */
    assert_int_equal(sk_jwt_verify_cached(k1, t, strlen(t), NOW, 30, NULL, &c, &why), -1);
    sk_jwt_cache_dispose();
    sk_jwt_keys_free(k1);
    sk_jwt_keys_free(k2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(base64url),
        cmocka_unit_test(key_rules),
        cmocka_unit_test(times_and_leeway),
        cmocka_unit_test(claims_and_keys),
        cmocka_unit_test(claims_scan_matches_jansson),
        cmocka_unit_test(cache_follows_the_ring),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
