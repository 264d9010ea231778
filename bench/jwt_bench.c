/* jwt_bench.c: what a buyer token costs per take, in CPU time on this thread: sk_jwt_verify (the
 * signature, base64url, the header's and the claims' JSON) for a token as a shop would issue it
 * (sub, exp, iat, sale; about 200 bytes), for HS256, ES256 and EdDSA, and the same through the
 * per-thread cache of verified tokens (a buyer's retries). Built as bench_jwt (CMake); run by
 * BENCHMARKS.md ("Buyer tokens"): build/bench_jwt [SECONDS [ALG]] (default 2 s each). */
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "jws_sign.h"
#include "jwt.h"

static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A token as a shop would issue it, signed with priv (NULL: HS256 with secret). */
static size_t mint(const char *alg, EVP_PKEY *priv, const char *secret, int n, char *tok)
{
    char hdr[128], cls[256];
    long now = (long)time(NULL);
    snprintf(hdr, sizeof(hdr), "{\"alg\":\"%s\",\"typ\":\"JWT\"%s}", alg, priv ? ",\"kid\":\"k1\"" : "");
    snprintf(cls, sizeof(cls), "{\"sub\":\"buyer-%08d\",\"iat\":%ld,\"exp\":%ld,\"sale\":\"phone-2026\"}", n, now,
             now + 3600);
    size_t len = sk_test_jws_mint(alg, priv, secret, hdr, cls, tok);
    if (len == 0) {
        fprintf(stderr, "bench_jwt: cannot sign an %s token\n", alg);
        exit(1);
    }
    return len;
}

static void run(const char *name, sk_jwt_keys_t *k, const char *alg, EVP_PKEY *priv, const char *secret, double secs)
{
    enum { NTOK = 1024 };
    static char toks[NTOK][512];
    size_t lens[NTOK];
    sk_jwt_claims_t c;
    const char *why;
    for (int i = 0; i < NTOK; i++)
        lens[i] = mint(alg, priv, secret, i, toks[i]);
    for (int cached = 0; cached < 2; cached++) {
        long n = 0;
        double t0 = cpu_s(), t;
        int64_t now = (int64_t)time(NULL);
        do {
            for (int i = 0; i < 64; i++, n++) {
                int j = (int)(n % NTOK);
                int rc = cached ? sk_jwt_verify_cached(k, toks[j], lens[j], now, 30, NULL, &c, &why)
                                : sk_jwt_verify(k, toks[j], lens[j], now, 30, NULL, &c, &why);
                if (rc != 0) {
                    fprintf(stderr, "bench_jwt: %s refused: %s\n", name, why);
                    exit(1);
                }
            }
        } while ((t = cpu_s() - t0) < secs);
        printf("%s,%s,%zu,%.3f,%ld\n", name, cached ? "cached" : "verified", lens[0], t / (double)n * 1e6, n);
    }
}

int main(int argc, char **argv)
{
    double secs = argc > 1 ? atof(argv[1]) : 2.0;
    static const char secret[] = "0123456789abcdef0123456789abcdef-bench";
    char err[256];
    EVP_PKEY *ec = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256"), *ed = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    sk_jwt_keys_t *hs = sk_jwt_keys_new(), *es = sk_jwt_keys_new(), *eds = sk_jwt_keys_new();
    char *pem;
    BIO *b;
    if (sk_jwt_keys_add_secret(hs, NULL, secret, strlen(secret), err, sizeof(err)) != 0)
        return 1;
    b = BIO_new(BIO_s_mem());
    PEM_write_bio_PUBKEY(b, ec);
    if (sk_jwt_keys_add_pem(es, "k1", pem, (size_t)BIO_get_mem_data(b, &pem), err, sizeof(err)) != 0)
        return 1;
    BIO_free(b);
    b = BIO_new(BIO_s_mem());
    PEM_write_bio_PUBKEY(b, ed);
    if (sk_jwt_keys_add_pem(eds, "k1", pem, (size_t)BIO_get_mem_data(b, &pem), err, sizeof(err)) != 0)
        return 1;
    BIO_free(b);
    printf("alg,path,token_bytes,us_per_take,takes\n");
    const char *only = argc > 2 ? argv[2] : NULL; /* one algorithm, for a profiler */
    if (only == NULL || strcmp(only, "HS256") == 0)
        run("HS256", hs, "HS256", NULL, secret, secs);
    if (only == NULL || strcmp(only, "ES256") == 0)
        run("ES256", es, "ES256", ec, NULL, secs);
    if (only == NULL || strcmp(only, "EdDSA") == 0)
        run("EdDSA", eds, "EdDSA", ed, NULL, secs);
    sk_jwt_cache_dispose();
    sk_jwt_keys_free(hs);
    sk_jwt_keys_free(es);
    sk_jwt_keys_free(eds);
    EVP_PKEY_free(ec);
    EVP_PKEY_free(ed);
    return 0;
}
