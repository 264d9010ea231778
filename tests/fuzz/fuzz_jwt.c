/* fuzz_jwt.c: libFuzzer target for buyer tokens (src/jwt.c), the one parser that meets the
 * network carrying a signature. The ring has an HS256 secret (no kid), an ES256 key "e1" and an
 * Ed25519 key "d1" (and the same Ed25519 key without kid). Two kinds of input, by the first byte:
 * a raw token (the bytes as they come), or a token built here from a header and claims drawn from
 * the input (or sensible defaults), base64url-encoded and signed with one of the ring's private
 * keys, then maybe one byte flipped or bytes appended.
 *
 * Oracles: a token sk_jwt_verify accepts has a signature that OpenSSL, called here another way
 * (EVP_Q_mac, a fresh public key, OpenSSL's own base64 decoder), finds valid over its first two
 * parts for one of the ring's keys, a sub that is a valid user id and an exp not past now plus
 * the leeway: a token whose signature is not valid is never accepted. The cached path gives the
 * same answer twice. A token built with the defaults and left intact is accepted. The claims'
 * direct scan (sk_jwt_claims_parse) reads what jansson reads (sk_jwt_claims_parse_json), for the
 * claims built and for the raw input as claims. */
#include <openssl/core_names.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include "fuzz_util.h"
#include "jws_sign.h"
#include "jwt.h"

#define NOW 1800000000
#define LEEWAY 30

static const char SECRET[] = "fuzz-secret-0123456789abcdef-0123456789";
static const char P256_KEY[] = "-----BEGIN PRIVATE KEY-----\n"
                               "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg3Y9TrF2+BZFCa+9O\n"
                               "NW7BSoWuxiJPy4R+9GdsVkZ1LjOhRANCAAQcy9Czcyu24qgHNGfnfNoiDS5TOvue\n"
                               "y+roHz7iIrE6WDgHxPw8IFs5IPhqpuA0raZjx36aB925oGSxNc1GeDIx\n"
                               "-----END PRIVATE KEY-----\n";
static const char ED25519_KEY[] = "-----BEGIN PRIVATE KEY-----\n"
                                  "MC4CAQAwBQYDK2VwBCIEIC/PkCH/08RQwRJNn8+Dzz7Qgd2OYosUesMdMKBrwUOX\n"
                                  "-----END PRIVATE KEY-----\n";

/* the same keys twice: the cache assumes one audience per ring (the options), so the inputs
 * checked with an audience have a ring of their own */
static sk_jwt_keys_t *rings[2], *ring;
static EVP_PKEY *ec_priv, *ed_priv;

static EVP_PKEY *load_priv(const char *pem)
{
    BIO *b = BIO_new_mem_buf(pem, -1);
    EVP_PKEY *k = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
    BIO_free(b);
    CHECK(k != NULL);
    return k;
}

static void add_public(const char *kid, EVP_PKEY *priv)
{
    char err[256], *pem;
    BIO *b = BIO_new(BIO_s_mem());
    CHECK(PEM_write_bio_PUBKEY(b, priv) == 1);
    long n = BIO_get_mem_data(b, &pem);
    CHECK(sk_jwt_keys_add_pem(ring, kid, pem, (size_t)n, err, sizeof(err)) == 0);
    BIO_free(b);
}

static void init(void)
{
    char err[256];
    ec_priv = load_priv(P256_KEY);
    ed_priv = load_priv(ED25519_KEY);
    for (int i = 0; i < 2; i++) {
        ring = rings[i] = sk_jwt_keys_new();
        CHECK(sk_jwt_keys_add_secret(ring, NULL, SECRET, strlen(SECRET), err, sizeof(err)) == 0);
        add_public("e1", ec_priv);
        add_public("d1", ed_priv);
        add_public(NULL, ed_priv);
    }
}

/* ---- the oracle: the signature checked another way ---- */

static FZ_ORACLE long ref_b64url(const char *in, size_t n, uint8_t *out)
{
    char *t = malloc(n + 4);
    size_t m = 0;
    CHECK(t != NULL);
    for (size_t i = 0; i < n; i++) {
        if (in[i] == '+' || in[i] == '/' || in[i] == '=') {
            free(t);
            return -1;
        }
        t[m++] = in[i] == '-' ? '+' : in[i] == '_' ? '/' : in[i];
    }
    size_t pad = (4 - m % 4) % 4;
    for (size_t i = 0; i < pad; i++)
        t[m++] = '=';
    int r = EVP_DecodeBlock(out, (const unsigned char *)t, (int)m);
    free(t);
    return r < 0 ? -1 : r - (long)pad;
}

static FZ_ORACLE int ref_sig_valid(const char *tok, size_t len)
{
    const char *d2 = NULL;
    int dots = 0;
    for (size_t i = 0; i < len; i++)
        if (tok[i] == '.' && ++dots == 2)
            d2 = tok + i;
    if (dots != 2)
        return 0;
    uint8_t sig[SK_JWT_MAX], mac[64];
    long slen = ref_b64url(d2 + 1, len - (size_t)(d2 + 1 - tok), sig);
    size_t mlen = (size_t)(d2 - tok), maclen = 0;
    if (slen < 0)
        return 0;
    CHECK(EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, SECRET, strlen(SECRET), (const uint8_t *)tok, mlen, mac,
                    sizeof(mac), &maclen) != NULL);
    if (slen == 32 && memcmp(mac, sig, 32) == 0)
        return 1;
    if (slen != 64)
        return 0;
    int ok = 0;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (EVP_DigestVerifyInit(md, NULL, NULL, NULL, ed_priv) == 1 &&
        EVP_DigestVerify(md, sig, 64, (const uint8_t *)tok, mlen) == 1)
        ok = 1;
    EVP_MD_CTX_free(md);
    if (!ok) {
        ECDSA_SIG *es = ECDSA_SIG_new();
        uint8_t *der = NULL;
        CHECK(ECDSA_SIG_set0(es, BN_bin2bn(sig, 32, NULL), BN_bin2bn(sig + 32, 32, NULL)) == 1);
        int dlen = i2d_ECDSA_SIG(es, &der);
        md = EVP_MD_CTX_new();
        ok = dlen > 0 && EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, ec_priv) == 1 &&
             EVP_DigestVerify(md, der, (size_t)dlen, (const uint8_t *)tok, mlen) == 1;
        EVP_MD_CTX_free(md);
        OPENSSL_free(der);
        ECDSA_SIG_free(es);
    }
    return ok;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const algs[] = {"", "HS256", "ES256", "EdDSA"};
    static const char *const kids[] = {"", NULL, "e1", "d1"};
    fz_t f = {data, size};
    char hdr[256], cls[256], *tok = malloc(SK_JWT_MAX + 64);
    size_t len = 0;
    int intact = 0;
    CHECK(tok != NULL);
    if (rings[0] == NULL)
        init();
    uint8_t mode = fz_u8(&f);
    int which = mode % 4;
    const char *aud = (mode & 16) ? "aud1" : NULL;
    ring = rings[aud != NULL];
    if (which == 0) {
        len = f.n > SK_JWT_MAX + 16 ? SK_JWT_MAX + 16 : f.n;
        memcpy(tok, f.p, len);
    } else {
        size_t hl = fz_str(&f, hdr, sizeof(hdr)), cl = fz_str(&f, cls, sizeof(cls));
        hdr[hl] = cls[cl] = '\0';
        intact = hl == 0 && cl == 0 && !(mode & (4 | 8 | 16));
        if (hl == 0)
            hl = (size_t)snprintf(hdr, sizeof(hdr),
                                  kids[which] ? "{\"alg\":\"%s\",\"kid\":\"%s\"}" : "{\"alg\":\"%s\"%s}", algs[which],
                                  kids[which] ? kids[which] : "");
        if (cl == 0)
            cl = (size_t)snprintf(cls, sizeof(cls), "{\"sub\":\"buyer-1\",\"exp\":%d,\"sale\":\"s1\"}", NOW + 60);
        /* the header and claims as drawn (they may hold NULs, hence no sk_test_jws_mint) */
        len = sk_test_b64url(hdr, hl, tok);
        tok[len++] = '.';
        len += sk_test_b64url(cls, cl, tok + len);
        uint8_t sig[64];
        size_t sl = sk_test_jws_sign(algs[which], which == 2 ? ec_priv : ed_priv, SECRET, tok, len, sig);
        CHECK(sl > 0);
        tok[len++] = '.';
        len += sk_test_b64url(sig, sl, tok + len);
        if (mode & 4) { /* one byte off, anywhere */
            size_t at = (size_t)fz_u64(&f, 2) % len;
            tok[at] ^= (char)(fz_u8(&f) | 1);
        }
        if (mode & 8) /* bytes after it */
            for (size_t n = fz_u8(&f) % 8 + 1; n > 0; n--)
                tok[len++] = (char)fz_u8(&f);
    }

    /* the claims' direct scan against jansson: the claims built above, or the raw input */
    const char *cj = which ? cls : tok;
    size_t cjn = which ? strlen(cls) : len;
    for (int a = 0; a < 2; a++) {
        sk_jwt_claims_t x, y;
        const char *wx = NULL, *wy = NULL;
        int rx = sk_jwt_claims_parse(cj, cjn, a ? "aud1" : NULL, &x, &wx);
        int ry = sk_jwt_claims_parse_json(cj, cjn, a ? "aud1" : NULL, &y, &wy);
        CHECK(rx == ry);
        if (rx == 0)
            CHECK(strcmp(x.sub, y.sub) == 0 && x.sub_len == y.sub_len && strcmp(x.sale, y.sale) == 0 &&
                  x.exp == y.exp && x.nbf == y.nbf && x.iat == y.iat);
        else
            CHECK(wx != NULL && wy != NULL);
    }

    sk_jwt_claims_t c, c2;
    const char *why = NULL;
    int rc = sk_jwt_verify(ring, tok, len, NOW, LEEWAY, aud, &c, &why);
    CHECK(rc == 0 || (rc == -1 && why != NULL && *why != '\0'));
    if (rc == 0) {
        CHECK(ref_sig_valid(tok, len));
        CHECK(ref_valid_ident((const uint8_t *)c.sub, c.sub_len) && strlen(c.sub) == c.sub_len);
        CHECK(c.exp > NOW - LEEWAY);
        CHECK(c.sale[0] == '\0' || ref_valid_sale_id((const uint8_t *)c.sale, strlen(c.sale)));
    }
    if (intact)
        CHECK(rc == 0 && strcmp(c.sub, "buyer-1") == 0 && strcmp(c.sale, "s1") == 0);
    for (int i = 0; i < 2; i++) { /* a miss, then (when accepted) a hit */
        int rc2 = sk_jwt_verify_cached(ring, tok, len, NOW, LEEWAY, aud, &c2, &why);
        CHECK(rc2 == rc);
        if (rc == 0)
            CHECK(memcmp(&c, &c2, sizeof(c)) == 0 || (strcmp(c.sub, c2.sub) == 0 && c.exp == c2.exp));
    }
    free(tok);
    return 0;
}
