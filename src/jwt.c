/* jwt.c: see jwt.h. OpenSSL 3 does every cryptographic step (HMAC through a keyed EVP_MAC
 * context duplicated per token, ECDSA and Ed25519 through EVP_DigestVerify); this file only
 * splits the token, decodes base64url strictly and reads the JSON with jansson (duplicate keys
 * refused). A verified token's claims are copied out: nothing borrowed survives the call. */
#include "jwt.h"
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/pem.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "map.h"
#include "parse.h"
#include "util.h"

enum { ALG_HS256, ALG_ES256, ALG_EDDSA };
static const char *const alg_names[] = {"HS256", "ES256", "EdDSA"};

#define KID_MAX 64
#define MAX_KEYS 64
#define SECRET_MIN 32 /* RFC 7518 3.2: a key at least as long as the hash */

typedef struct key_s {
    char kid[KID_MAX + 1]; /* "" when the key has none */
    int alg;
    EVP_MAC_CTX *mac; /* HS256: keyed once, duplicated per token */
    EVP_PKEY *pkey;   /* ES256, EdDSA */
} key_t_;

struct sk_jwt_keys_s {
    key_t_ keys[MAX_KEYS];
    size_t n;
    uint64_t gen; /* unique per ring: the cache's entries name the ring they passed */
    EVP_MAC *hmac;
};

static _Atomic uint64_t next_gen = 1;

sk_jwt_keys_t *sk_jwt_keys_new(void)
{
    sk_jwt_keys_t *k = sk_calloc(1, sizeof(*k));
    k->gen = atomic_fetch_add(&next_gen, 1);
    return k;
}

size_t sk_jwt_keys_count(const sk_jwt_keys_t *k)
{
    return k ? k->n : 0;
}

void sk_jwt_keys_free(sk_jwt_keys_t *k)
{
    if (k == NULL)
        return;
    for (size_t i = 0; i < k->n; i++) {
        EVP_MAC_CTX_free(k->keys[i].mac);
        EVP_PKEY_free(k->keys[i].pkey);
    }
    EVP_MAC_free(k->hmac);
    free(k);
}

static int valid_kid(const char *s, size_t n)
{
    if (n < 1 || n > KID_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
              c == '-'))
            return 0;
    }
    return 1;
}

/* A slot for a key of `alg` named kid, or NULL when the ring is full or has it already. */
static key_t_ *slot(sk_jwt_keys_t *k, const char *kid, int alg, char *err, size_t errlen)
{
    if (kid != NULL && !valid_kid(kid, strlen(kid))) {
        snprintf(err, errlen, "kid '%s' must match [A-Za-z0-9_.-]{1,64}", kid);
        return NULL;
    }
    if (k->n == MAX_KEYS) {
        snprintf(err, errlen, "more than %d keys", MAX_KEYS);
        return NULL;
    }
    for (size_t i = 0; i < k->n; i++)
        if (strcmp(k->keys[i].kid, kid ? kid : "") == 0 && (kid != NULL || k->keys[i].alg == alg)) {
            snprintf(err, errlen, kid ? "kid '%s' is given twice" : "two %s keys without kid",
                     kid ? kid : alg_names[alg]);
            return NULL;
        }
    key_t_ *key = &k->keys[k->n];
    memset(key, 0, sizeof(*key));
    snprintf(key->kid, sizeof(key->kid), "%s", kid ? kid : "");
    key->alg = alg;
    return key;
}

int sk_jwt_keys_add_secret(sk_jwt_keys_t *k, const char *kid, const void *secret, size_t len, char *err, size_t errlen)
{
    if (len < SECRET_MIN) {
        snprintf(err, errlen, "an HS256 secret needs %d bytes at least, not %zu", SECRET_MIN, len);
        return -1;
    }
    key_t_ *key = slot(k, kid, ALG_HS256, err, errlen);
    if (key == NULL)
        return -1;
    if (k->hmac == NULL && (k->hmac = EVP_MAC_fetch(NULL, "HMAC", NULL)) == NULL) {
        snprintf(err, errlen, "OpenSSL has no HMAC");
        return -1;
    }
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
                           OSSL_PARAM_construct_end()};
    if ((key->mac = EVP_MAC_CTX_new(k->hmac)) == NULL || !EVP_MAC_init(key->mac, secret, len, params)) {
        EVP_MAC_CTX_free(key->mac);
        key->mac = NULL;
        snprintf(err, errlen, "OpenSSL refused the HMAC key");
        return -1;
    }
    k->n++;
    return 0;
}

int sk_jwt_keys_add_pem(sk_jwt_keys_t *k, const char *kid, const char *pem, size_t len, char *err, size_t errlen)
{
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    EVP_PKEY *pkey = bio ? PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL) : NULL;
    int alg = -1;
    BIO_free(bio);
    if (pkey == NULL) {
        snprintf(err, errlen, "not a PEM public key");
        return -1;
    }
    if (EVP_PKEY_get_base_id(pkey) == EVP_PKEY_ED25519) {
        alg = ALG_EDDSA;
    } else if (EVP_PKEY_get_base_id(pkey) == EVP_PKEY_EC) {
        char group[64];
        size_t glen = 0;
        if (EVP_PKEY_get_group_name(pkey, group, sizeof(group), &glen) && strcmp(group, "prime256v1") == 0)
            alg = ALG_ES256;
    }
    if (alg < 0) {
        EVP_PKEY_free(pkey);
        snprintf(err, errlen, "only P-256 (ES256) and Ed25519 (EdDSA) public keys are supported");
        return -1;
    }
    key_t_ *key = slot(k, kid, alg, err, errlen);
    if (key == NULL) {
        EVP_PKEY_free(pkey);
        return -1;
    }
    key->pkey = pkey;
    k->n++;
    return 0;
}

int sk_jwt_keys_add_pem_file(sk_jwt_keys_t *k, const char *path, char *err, size_t errlen)
{
    static const char begin[] = "-----BEGIN PUBLIC KEY-----", end[] = "-----END PUBLIC KEY-----";
    FILE *f = fopen(path, "r");
    char *line = NULL, kid[KID_MAX + 1] = "", why[256];
    size_t cap = 0, added = 0;
    ssize_t n;
    int lineno = 0, rc = 0, has_kid = 0;
    sk_buf_t pem = {0};
    if (f == NULL) {
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    while (rc == 0 && (n = getline(&line, &cap, f)) >= 0) {
        lineno++;
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r' || line[n - 1] == ' '))
            line[--n] = '\0';
        if (pem.len > 0) { /* inside a block */
            sk_buf_append(&pem, line, (size_t)n);
            sk_buf_append(&pem, "\n", 1);
            if (strcmp(line, end) != 0)
                continue;
            if (sk_jwt_keys_add_pem(k, has_kid ? kid : NULL, pem.p, pem.len, why, sizeof(why)) != 0) {
                snprintf(err, errlen, "%s:%d: %s", path, lineno, why);
                rc = -1;
            }
            added++;
            pem.len = 0;
            has_kid = 0;
        } else if (strncmp(line, "kid:", 4) == 0) {
            const char *v = line + 4;
            while (*v == ' ' || *v == '\t')
                v++;
            if (!valid_kid(v, strlen(v))) {
                snprintf(err, errlen, "%s:%d: a kid must match [A-Za-z0-9_.-]{1,64}", path, lineno);
                rc = -1;
            }
            snprintf(kid, sizeof(kid), "%s", v);
            has_kid = 1;
        } else if (strcmp(line, begin) == 0) {
            sk_buf_append(&pem, line, (size_t)n);
            sk_buf_append(&pem, "\n", 1);
        } else if (strncmp(line, "-----BEGIN ", 11) == 0) {
            snprintf(err, errlen, "%s:%d: only \"%s\" blocks (public keys) are read", path, lineno, begin);
            rc = -1;
        }
    }
    if (rc == 0 && pem.len > 0) {
        snprintf(err, errlen, "%s: a key block does not end", path);
        rc = -1;
    }
    if (rc == 0 && added == 0) {
        snprintf(err, errlen, "%s holds no public key", path);
        rc = -1;
    }
    free(line);
    sk_buf_dispose(&pem);
    fclose(f);
    return rc;
}

sk_jwt_keys_t *sk_jwt_keys_load(const char *secret_file, const char *pem_file, char *err, size_t errlen)
{
    sk_jwt_keys_t *k = sk_jwt_keys_new();
    char buf[SK_SECRET_FILE_MAX + 1], why[512];
    size_t n;
    int loose;
    if (secret_file != NULL) {
        if (sk_secret_file_read(secret_file, buf, &n, &loose, why, sizeof(why)) != 0 ||
            sk_jwt_keys_add_secret(k, NULL, buf, n, why, sizeof(why)) != 0) {
            snprintf(err, errlen, "buyer token secret: %s", why);
            OPENSSL_cleanse(buf, sizeof(buf));
            sk_jwt_keys_free(k);
            return NULL;
        }
        OPENSSL_cleanse(buf, sizeof(buf));
    }
    if (pem_file != NULL && sk_jwt_keys_add_pem_file(k, pem_file, why, sizeof(why)) != 0) {
        snprintf(err, errlen, "buyer token public key: %s", why);
        sk_jwt_keys_free(k);
        return NULL;
    }
    return k;
}

/* ---- verification ---- */

static const signed char b64url[256] = {
    ['A'] = 1,  ['B'] = 2,  ['C'] = 3,  ['D'] = 4,  ['E'] = 5,  ['F'] = 6,  ['G'] = 7,  ['H'] = 8,  ['I'] = 9,
    ['J'] = 10, ['K'] = 11, ['L'] = 12, ['M'] = 13, ['N'] = 14, ['O'] = 15, ['P'] = 16, ['Q'] = 17, ['R'] = 18,
    ['S'] = 19, ['T'] = 20, ['U'] = 21, ['V'] = 22, ['W'] = 23, ['X'] = 24, ['Y'] = 25, ['Z'] = 26, ['a'] = 27,
    ['b'] = 28, ['c'] = 29, ['d'] = 30, ['e'] = 31, ['f'] = 32, ['g'] = 33, ['h'] = 34, ['i'] = 35, ['j'] = 36,
    ['k'] = 37, ['l'] = 38, ['m'] = 39, ['n'] = 40, ['o'] = 41, ['p'] = 42, ['q'] = 43, ['r'] = 44, ['s'] = 45,
    ['t'] = 46, ['u'] = 47, ['v'] = 48, ['w'] = 49, ['x'] = 50, ['y'] = 51, ['z'] = 52, ['0'] = 53, ['1'] = 54,
    ['2'] = 55, ['3'] = 56, ['4'] = 57, ['5'] = 58, ['6'] = 59, ['7'] = 60, ['8'] = 61, ['9'] = 62, ['-'] = 63,
    ['_'] = 64}; /* value + 1; 0: not in the alphabet */

long sk_base64url_decode(const char *in, size_t len, unsigned char *out)
{
    size_t o = 0, i = 0;
    uint32_t acc = 0;
    if (len % 4 == 1)
        return -1;
    for (; i < len; i++) {
        int v = b64url[(unsigned char)in[i]];
        if (v == 0)
            return -1;
        acc = (acc << 6) | (uint32_t)(v - 1);
        if (i % 4 == 3) {
            out[o++] = (unsigned char)(acc >> 16);
            out[o++] = (unsigned char)(acc >> 8);
            out[o++] = (unsigned char)acc;
            acc = 0;
        }
    }
    if (len % 4 == 2) { /* 12 bits: 8 used, 4 must be zero */
        if (acc & 0xf)
            return -1;
        out[o++] = (unsigned char)(acc >> 4);
    } else if (len % 4 == 3) { /* 18 bits: 16 used, 2 must be zero */
        if (acc & 0x3)
            return -1;
        out[o++] = (unsigned char)(acc >> 10);
        out[o++] = (unsigned char)(acc >> 2);
    }
    return (long)o;
}

static json_t *decode_json(const char *seg, size_t len)
{
    unsigned char buf[SK_JWT_MAX];
    long n;
    if (len == 0 || len > SK_JWT_MAX || (n = sk_base64url_decode(seg, len, buf)) <= 0)
        return NULL;
    json_t *o = json_loadb((const char *)buf, (size_t)n, JSON_REJECT_DUPLICATES, NULL);
    if (o != NULL && !json_is_object(o)) {
        json_decref(o);
        o = NULL;
    }
    return o;
}

/* A NumericDate (RFC 7519: seconds, possibly fractional) as whole seconds, rounded down. */
static int numeric_date(json_t *v, int64_t *out)
{
    if (json_is_integer(v)) {
        *out = (int64_t)json_integer_value(v);
        return 0;
    }
    if (json_is_real(v)) {
        double d = json_real_value(v);
        if (!isfinite(d) || d < -9.2e18 || d > 9.2e18)
            return -1;
        *out = (int64_t)floor(d);
        return 0;
    }
    return -1;
}

/* Each thread's own copies of the ring's keyed HMAC contexts: duplicating one per token cost
 * more than the HMAC itself; a copy is reset (EVP_MAC_init without a key keeps the key) instead. */
static __thread struct {
    uint64_t gen; /* the ring the copies are of */
    EVP_MAC_CTX *mac[MAX_KEYS];
} tl_macs;

static void macs_dispose(void)
{
    for (size_t i = 0; i < MAX_KEYS; i++) {
        EVP_MAC_CTX_free(tl_macs.mac[i]);
        tl_macs.mac[i] = NULL;
    }
    tl_macs.gen = 0;
}

static EVP_MAC_CTX *thread_mac(const sk_jwt_keys_t *k, const key_t_ *key)
{
    size_t i = (size_t)(key - k->keys);
    if (tl_macs.gen != k->gen) {
        macs_dispose();
        tl_macs.gen = k->gen;
    }
    if (tl_macs.mac[i] == NULL)
        tl_macs.mac[i] = EVP_MAC_CTX_dup(key->mac);
    if (tl_macs.mac[i] == NULL || !EVP_MAC_init(tl_macs.mac[i], NULL, 0, NULL))
        return NULL;
    return tl_macs.mac[i];
}

static int sig_ok(const sk_jwt_keys_t *k, const key_t_ *key, const unsigned char *msg, size_t mlen,
                  const unsigned char *sig, size_t slen)
{
    int ok = 0;
    if (key->alg == ALG_HS256) {
        unsigned char mac[EVP_MAX_MD_SIZE];
        size_t maclen = 0;
        EVP_MAC_CTX *c = thread_mac(k, key);
        if (c != NULL && EVP_MAC_update(c, msg, mlen) && EVP_MAC_final(c, mac, &maclen, sizeof(mac)))
            ok = maclen == 32 && slen == 32 && CRYPTO_memcmp(mac, sig, 32) == 0;
        return ok;
    }
    if (slen != 64) /* ES256: R || S, 32 bytes each (RFC 7518 3.4); Ed25519: 64 bytes */
        return 0;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (md == NULL)
        return 0;
    if (key->alg == ALG_EDDSA) {
        ok =
            EVP_DigestVerifyInit(md, NULL, NULL, NULL, key->pkey) == 1 && EVP_DigestVerify(md, sig, 64, msg, mlen) == 1;
    } else {
        /* JWS carries the raw pair; OpenSSL verifies the DER form */
        ECDSA_SIG *es = ECDSA_SIG_new();
        BIGNUM *r = BN_bin2bn(sig, 32, NULL), *s = BN_bin2bn(sig + 32, 32, NULL);
        unsigned char *der = NULL;
        int dlen = -1;
        if (es != NULL && r != NULL && s != NULL && ECDSA_SIG_set0(es, r, s) == 1) {
            r = s = NULL; /* es owns them */
            dlen = i2d_ECDSA_SIG(es, &der);
        }
        if (dlen > 0)
            ok = EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, key->pkey) == 1 &&
                 EVP_DigestVerify(md, der, (size_t)dlen, msg, mlen) == 1;
        OPENSSL_free(der);
        BN_free(r);
        BN_free(s);
        ECDSA_SIG_free(es);
    }
    EVP_MD_CTX_free(md);
    return ok;
}

static int fail(const char **why, const char *msg)
{
    *why = msg;
    return -1;
}

/* The time claims against now: 0, or -1 with *why. */
static int times_ok(const sk_jwt_claims_t *c, int64_t now, int64_t leeway, const char **why)
{
    /* expired from exp + leeway on; not yet valid before nbf - leeway; issued after now + leeway */
    if (c->exp <= INT64_MAX - leeway && now >= c->exp + leeway)
        return fail(why, "the token has expired");
    if (c->nbf != INT64_MIN && c->nbf >= INT64_MIN + leeway && now < c->nbf - leeway)
        return fail(why, "the token is not valid yet");
    if (c->iat != INT64_MIN && c->iat >= INT64_MIN + leeway && now < c->iat - leeway)
        return fail(why, "the token was issued in the future");
    return 0;
}

static int aud_ok(json_t *aud, const char *audience)
{
    if (aud == NULL)
        return audience == NULL;
    if (audience == NULL)
        return 0;
    if (json_is_string(aud))
        return strcmp(json_string_value(aud), audience) == 0;
    if (!json_is_array(aud))
        return 0;
    size_t i;
    json_t *v;
    int found = 0;
    json_array_foreach(aud, i, v)
    {
        if (!json_is_string(v))
            return 0;
        found |= strcmp(json_string_value(v), audience) == 0;
    }
    return found;
}

/* ---- the claims ---- */

static int claims_from_json(json_t *claims, const char *audience, sk_jwt_claims_t *out, const char **why)
{
    json_t *v;
    if ((v = json_object_get(claims, "exp")) == NULL || numeric_date(v, &out->exp) != 0)
        return fail(why, "the token needs a numeric exp");
    if (((v = json_object_get(claims, "nbf")) != NULL && numeric_date(v, &out->nbf) != 0) ||
        ((v = json_object_get(claims, "iat")) != NULL && numeric_date(v, &out->iat) != 0))
        return fail(why, "the token's nbf and iat must be numeric");
    if (!aud_ok(json_object_get(claims, "aud"), audience))
        return fail(why, "the token is not for this audience");
    v = json_object_get(claims, "sub");
    if (!json_is_string(v) || !sk_valid_ident(json_string_value(v), json_string_length(v)))
        return fail(why, "the token's sub must be a user id (1-128 bytes of UTF-8, no control characters)");
    out->sub_len = json_string_length(v);
    memcpy(out->sub, json_string_value(v), out->sub_len);
    out->sub[out->sub_len] = '\0';
    if ((v = json_object_get(claims, "sale")) != NULL) {
        if (!json_is_string(v) || !sk_valid_sale_id(json_string_value(v), json_string_length(v)))
            return fail(why, "the token's sale must be a sale id");
        memcpy(out->sale, json_string_value(v), json_string_length(v) + 1);
    }
    return 0;
}

int sk_jwt_claims_parse_json(const char *buf, size_t len, const char *audience, sk_jwt_claims_t *out, const char **why)
{
    memset(out, 0, sizeof(*out));
    out->nbf = out->iat = INT64_MIN;
    json_t *claims = json_loadb(buf, len, JSON_REJECT_DUPLICATES, NULL);
    if (claims == NULL || !json_is_object(claims)) {
        json_decref(claims);
        return fail(why, "the token's claims are not a JSON object");
    }
    int rc = claims_from_json(claims, audience, out, why);
    json_decref(claims);
    return rc;
}

static int json_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* A string without escapes, control characters or bytes past ASCII, from s[*i] (the opening
 * quote); *i ends past the closing one. 0, or -1 for anything else. */
static int plain_string(const char *s, size_t n, size_t *i, const char **p, size_t *len)
{
    size_t j = *i + 1;
    while (j < n && s[j] != '"') {
        unsigned char c = (unsigned char)s[j];
        if (c < 0x20 || c >= 0x7f || c == '\\')
            return -1;
        j++;
    }
    if (j == n)
        return -1;
    *p = s + *i + 1;
    *len = j - *i - 1;
    *i = j + 1;
    return 0;
}

/* The claims a shop issues ({"sub":"...","exp":N,...}: strings without escapes, integers) read
 * directly: jansson's parse cost more than the rest of a token's check (HMAC included). Returns 1
 * when it read them (rc in *rc), 0 to leave them to jansson, which stays the authority: whatever
 * this reads, sk_jwt_claims_parse_json reads the same (fuzz_jwt checks it). */
static int scan_claims(const char *s, size_t n, const char *audience, sk_jwt_claims_t *out, const char **why, int *rc)
{
    enum { SUB, SALE, EXP, NBF, IAT, AUD, NKEYS };
    static const char *const names[NKEYS] = {"sub", "sale", "exp", "nbf", "iat", "aud"};
    struct {
        const char *p;
        size_t len;
        int is_int;
        int64_t v;
    } val[NKEYS];
    const char *other[8]; /* keys read and ignored, for duplicates */
    size_t other_len[8], nother = 0, i = 0;
    int seen[NKEYS] = {0};
    while (i < n && json_ws(s[i]))
        i++;
    if (i == n || s[i++] != '{')
        return 0;
    while (i < n && json_ws(s[i]))
        i++;
    if (i < n && s[i] == '}') {
        i++;
    } else {
        for (;;) {
            const char *kp, *vp = NULL;
            size_t klen, vlen = 0;
            int is_int = 0;
            int64_t v = 0;
            if (i == n || s[i] != '"' || plain_string(s, n, &i, &kp, &klen) != 0)
                return 0;
            while (i < n && json_ws(s[i]))
                i++;
            if (i == n || s[i++] != ':')
                return 0;
            while (i < n && json_ws(s[i]))
                i++;
            if (i < n && s[i] == '"') {
                if (plain_string(s, n, &i, &vp, &vlen) != 0)
                    return 0;
            } else {
                int neg = i < n && s[i] == '-';
                size_t d = i + (size_t)neg, e = d;
                while (e < n && s[e] >= '0' && s[e] <= '9')
                    e++;
                /* an integer, no leading zero, 18 digits at most; fractions, exponents, literals,
                 * arrays and objects are jansson's */
                if (e == d || e - d > 18 || (s[d] == '0' && e - d > 1) ||
                    (e < n && (s[e] == '.' || s[e] == 'e' || s[e] == 'E')))
                    return 0;
                for (size_t k = d; k < e; k++)
                    v = v * 10 + (s[k] - '0');
                v = neg ? -v : v;
                is_int = 1;
                i = e;
            }
            int k = 0;
            while (k < NKEYS && !(strlen(names[k]) == klen && memcmp(names[k], kp, klen) == 0))
                k++;
            if (k < NKEYS) {
                if (seen[k]++)
                    return 0; /* a duplicate: jansson refuses it */
                val[k].p = vp, val[k].len = vlen, val[k].is_int = is_int, val[k].v = v;
            } else {
                if (nother == sizeof(other) / sizeof(other[0]))
                    return 0;
                for (size_t o = 0; o < nother; o++)
                    if (other_len[o] == klen && memcmp(other[o], kp, klen) == 0)
                        return 0;
                other[nother] = kp;
                other_len[nother++] = klen;
            }
            while (i < n && json_ws(s[i]))
                i++;
            if (i < n && s[i] == ',') {
                i++;
                while (i < n && json_ws(s[i]))
                    i++;
                continue;
            }
            if (i < n && s[i] == '}') {
                i++;
                break;
            }
            return 0;
        }
    }
    while (i < n && json_ws(s[i]))
        i++;
    if (i != n)
        return 0;
    /* the rules of claims_from_json, on what was read */
    *rc = -1;
    if (!seen[EXP] || !val[EXP].is_int) {
        *why = "the token needs a numeric exp";
        return 1;
    }
    out->exp = val[EXP].v;
    if ((seen[NBF] && !val[NBF].is_int) || (seen[IAT] && !val[IAT].is_int)) {
        *why = "the token's nbf and iat must be numeric";
        return 1;
    }
    if (seen[NBF])
        out->nbf = val[NBF].v;
    if (seen[IAT])
        out->iat = val[IAT].v;
    if (seen[AUD] ? (val[AUD].is_int || audience == NULL || strlen(audience) != val[AUD].len ||
                     memcmp(audience, val[AUD].p, val[AUD].len) != 0)
                  : audience != NULL) {
        *why = "the token is not for this audience";
        return 1;
    }
    if (!seen[SUB] || val[SUB].is_int || !sk_valid_ident(val[SUB].p, val[SUB].len)) {
        *why = "the token's sub must be a user id (1-128 bytes of UTF-8, no control characters)";
        return 1;
    }
    memcpy(out->sub, val[SUB].p, val[SUB].len);
    out->sub[val[SUB].len] = '\0';
    out->sub_len = val[SUB].len;
    if (seen[SALE]) {
        if (val[SALE].is_int || !sk_valid_sale_id(val[SALE].p, val[SALE].len)) {
            *why = "the token's sale must be a sale id";
            return 1;
        }
        memcpy(out->sale, val[SALE].p, val[SALE].len);
        out->sale[val[SALE].len] = '\0';
    }
    *rc = 0;
    return 1;
}

int sk_jwt_claims_parse(const char *buf, size_t len, const char *audience, sk_jwt_claims_t *out, const char **why)
{
    int rc;
    memset(out, 0, sizeof(*out));
    out->nbf = out->iat = INT64_MIN;
    if (scan_claims(buf, len, audience, out, why, &rc))
        return rc;
    return sk_jwt_claims_parse_json(buf, len, audience, out, why);
}

/* The last header this thread resolved to a key: a shop's tokens share one header, and its JSON
 * need not be read again for every token. */
static __thread struct {
    uint64_t gen; /* the ring; 0: none */
    size_t len, key;
    char seg[128]; /* the header's base64url bytes */
} tl_header;

int sk_jwt_verify(const sk_jwt_keys_t *k, const char *tok, size_t len, int64_t now, int64_t leeway,
                  const char *audience, sk_jwt_claims_t *out, const char **why)
{
    const char *d1, *d2;
    json_t *hdr = NULL;
    const key_t_ *key = NULL;
    unsigned char sig[SK_JWT_MAX];
    long slen;
    int rc = -1;

    if (k == NULL || len == 0 || len > SK_JWT_MAX)
        return fail(why, "no token, or one longer than 4096 bytes");
    if ((d1 = memchr(tok, '.', len)) == NULL || (d2 = memchr(d1 + 1, '.', len - (size_t)(d1 + 1 - tok))) == NULL ||
        memchr(d2 + 1, '.', len - (size_t)(d2 + 1 - tok)) != NULL)
        return fail(why, "a token is three base64url parts joined by dots");
    size_t hlen = (size_t)(d1 - tok);
    if (tl_header.gen == k->gen && tl_header.len == hlen && memcmp(tl_header.seg, tok, hlen) == 0) {
        key = &k->keys[tl_header.key]; /* the same header bytes as the last token's: the same key */
    } else {
        if ((hdr = decode_json(tok, hlen)) == NULL) {
            *why = "the token's header is not base64url JSON";
            goto out;
        }
        /* the key first, by kid, then the token's alg must be that key's */
        json_t *alg = json_object_get(hdr, "alg"), *kid = json_object_get(hdr, "kid");
        if (!json_is_string(alg) || (kid != NULL && !json_is_string(kid)) || json_object_get(hdr, "crit") != NULL) {
            *why = "the token's header needs alg, a string kid if any, and no crit";
            goto out;
        }
        const char *kidv = kid ? json_string_value(kid) : "";
        for (size_t i = 0; i < k->n && key == NULL; i++)
            if (strcmp(k->keys[i].kid, kidv) == 0 && strcmp(alg_names[k->keys[i].alg], json_string_value(alg)) == 0)
                key = &k->keys[i];
        if (key == NULL) {
            *why = "no key for the token's kid and alg";
            goto out;
        }
        if (hlen <= sizeof(tl_header.seg)) {
            memcpy(tl_header.seg, tok, hlen);
            tl_header.len = hlen;
            tl_header.gen = k->gen;
            tl_header.key = (size_t)(key - k->keys);
        }
    }
    if ((slen = sk_base64url_decode(d2 + 1, len - (size_t)(d2 + 1 - tok), sig)) < 0 ||
        !sig_ok(k, key, (const unsigned char *)tok, (size_t)(d2 - tok), sig, (size_t)slen)) {
        *why = "the token's signature is not valid";
        goto out;
    }
    /* signed by us: now its claims */
    {
        unsigned char buf[SK_JWT_MAX];
        size_t clen = (size_t)(d2 - d1 - 1);
        long n = clen > 0 ? sk_base64url_decode(d1 + 1, clen, buf) : -1;
        if (n <= 0) {
            *why = "the token's claims are not base64url JSON";
            goto out;
        }
        if (sk_jwt_claims_parse((const char *)buf, (size_t)n, audience, out, why) != 0)
            goto out;
    }
    if (times_ok(out, now, leeway, why) != 0)
        goto out;
    rc = 0;
out:
    json_decref(hdr);
    return rc;
}

/* ---- the cache of verified tokens, one per thread ---- */

#define CACHE_SETS 2048 /* sets of CACHE_WAYS entries: 8,192 tokens per thread */
#define CACHE_WAYS 4
#define CACHE_TOKEN_MAX 1024

typedef struct centry_s {
    uint64_t hash; /* 0: empty */
    uint64_t gen;  /* the ring it passed */
    uint64_t used; /* the thread's use count when last hit: the least recent is replaced */
    size_t len, cap;
    char *tok; /* the token's bytes (cap allocated) */
    sk_jwt_claims_t claims;
} centry_t;

static __thread centry_t *tl_cache;
static __thread uint64_t tl_uses;

int sk_jwt_verify_cached(const sk_jwt_keys_t *k, const char *tok, size_t len, int64_t now, int64_t leeway,
                         const char *audience, sk_jwt_claims_t *out, const char **why)
{
    if (k == NULL || len == 0 || len > CACHE_TOKEN_MAX)
        return sk_jwt_verify(k, tok, len, now, leeway, audience, out, why);
    uint64_t h = sk_hash(tok, len) | 1;
    if (tl_cache == NULL)
        tl_cache = sk_calloc(CACHE_SETS * CACHE_WAYS, sizeof(*tl_cache));
    centry_t *set = &tl_cache[(h >> 8) % CACHE_SETS * CACHE_WAYS], *old = set;
    tl_uses++;
    for (int i = 0; i < CACHE_WAYS; i++) {
        centry_t *e = &set[i];
        if (e->hash == h && e->gen == k->gen && e->len == len && memcmp(e->tok, tok, len) == 0) {
            e->used = tl_uses;
            *out = e->claims;
            return times_ok(out, now, leeway, why);
        }
        if (e->used < old->used)
            old = e;
    }
    if (sk_jwt_verify(k, tok, len, now, leeway, audience, out, why) != 0)
        return -1;
    if (old->cap < len) {
        free(old->tok);
        old->cap = len < 256 ? 256 : len;
        old->tok = sk_malloc(old->cap);
    }
    old->hash = h;
    old->gen = k->gen;
    old->used = tl_uses;
    old->len = len;
    memcpy(old->tok, tok, len);
    old->claims = *out;
    return 0;
}

void sk_jwt_cache_dispose(void)
{
    macs_dispose();
    tl_header.gen = 0;
    if (tl_cache == NULL)
        return;
    for (size_t i = 0; i < CACHE_SETS * CACHE_WAYS; i++)
        free(tl_cache[i].tok);
    free(tl_cache);
    tl_cache = NULL;
}
