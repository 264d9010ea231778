/* jws_sign.c: see jws_sign.h. */
#include "jws_sign.h"

#include <openssl/ecdsa.h>
#include <string.h>

size_t sk_test_b64url(const void *in, size_t n, char *out)
{
    static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    const unsigned char *u = in;
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)u[i] << 16 | (i + 1 < n ? (unsigned)u[i + 1] << 8 : 0u) | (i + 2 < n ? u[i + 2] : 0u);
        out[o++] = a[v >> 18];
        out[o++] = a[(v >> 12) & 63];
        if (i + 1 < n)
            out[o++] = a[(v >> 6) & 63];
        if (i + 2 < n)
            out[o++] = a[v & 63];
    }
    return o;
}

size_t sk_test_jws_sign(const char *alg, EVP_PKEY *key, const char *secret, const void *msg, size_t n,
                        unsigned char *sig)
{
    size_t len = 64;
    if (strcmp(alg, "HS256") == 0) {
        if (secret == NULL ||
            EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, secret, strlen(secret), msg, n, sig, 64, &len) == NULL)
            return 0;
        return len;
    }
    int ed = strcmp(alg, "EdDSA") == 0;
    if (key == NULL || (!ed && strcmp(alg, "ES256") != 0))
        return 0;
    unsigned char der[128];
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (md == NULL)
        return 0;
    if (!ed)
        len = sizeof(der);
    int ok = EVP_DigestSignInit(md, NULL, ed ? NULL : EVP_sha256(), NULL, key) == 1 &&
             EVP_DigestSign(md, ed ? sig : der, &len, msg, n) == 1;
    EVP_MD_CTX_free(md);
    if (!ok)
        return 0;
    if (ed)
        return len == 64 ? len : 0;
    /* ES256: DER's SEQUENCE { r, s } as r || s, 32 bytes each */
    const unsigned char *p = der;
    ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)len);
    if (es == NULL)
        return 0;
    ok = BN_bn2binpad(ECDSA_SIG_get0_r(es), sig, 32) == 32 && BN_bn2binpad(ECDSA_SIG_get0_s(es), sig + 32, 32) == 32;
    ECDSA_SIG_free(es);
    return ok ? 64 : 0;
}

size_t sk_test_jws_mint(const char *alg, EVP_PKEY *key, const char *secret, const char *header, const char *claims,
                        char *tok)
{
    unsigned char sig[64];
    size_t len = sk_test_b64url(header, strlen(header), tok);
    tok[len++] = '.';
    len += sk_test_b64url(claims, strlen(claims), tok + len);
    size_t sl = sk_test_jws_sign(alg, key, secret, tok, len, sig);
    if (sl == 0)
        return 0;
    tok[len++] = '.';
    len += sk_test_b64url(sig, sl, tok + len);
    tok[len] = '\0';
    return len;
}
