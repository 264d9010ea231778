/* fuzz_url.c: libFuzzer target for the store URL (--store): sk_store_url_check (store.c), which
 * decides before anything starts whether a URL names a store, and sk_redis_conf_parse
 * (redis_conn.c), which splits redis://[[USER]:PASSWORD@]HOST[:PORT][/DB] and (redis_ha.c)
 * redis-cluster://[[USER]:PASSWORD@]HOST[:PORT][,HOST[:PORT]...].
 *
 * Oracles:
 *   - differential: every input, as a C string, goes to both and to a reference splitter written
 *     here another way (the authority cut at the first '/', the userinfo at the last '@', escapes
 *     decoded by table); they must agree on accept or refuse and on every field;
 *   - the check and the opener agree: sk_store_url_check accepts a redis:// URL exactly when the
 *     parser does (a URL that cannot be opened is a configuration error, found at start), and a
 *     sqlite: path exactly when SQLite would open that very file (not "", not ":memory:", not a
 *     "file:" URI, which SQLite reads as a URI while the store locks and watches the literal path);
 *   - round trip: a URL written from parts drawn from the input (any bytes but NUL in the user
 *     and password, percent-encoded where they must be and at random elsewhere) parses back to
 *     exactly those parts. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_util.h"
#include "redis_conn.h"
#include "store.h"
#include "util.h"

/* ---- the reference ---- */

typedef struct {
    char *host;
    int port;
    char *user; /* NULL: none */
    char *password;
    int db;
} ref_conf_t;

static void ref_free(ref_conf_t *r)
{
    free(r->host);
    free(r->user);
    free(r->password);
    memset(r, 0, sizeof(*r));
}

static char *dup_n(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    CHECK(d != NULL);
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

/* Percent-decodes s[0..n) into a new string; NULL when an escape is not '%' and two hex digits,
 * or decodes to NUL (a C string cannot carry it: it would cut the password short). */
static char *ref_decode(const char *s, size_t n)
{
    char *out = malloc(n + 1);
    size_t o = 0, i = 0;
    CHECK(out != NULL);
    while (i < n) {
        if (s[i] == '%') {
            int hi = i + 1 < n ? ref_hex((uint8_t)s[i + 1]) : -1;
            int lo = i + 2 < n ? ref_hex((uint8_t)s[i + 2]) : -1;
            if (hi < 0 || lo < 0 || (hi | lo) == 0) {
                free(out);
                return NULL;
            }
            out[o++] = (char)(hi << 4 | lo);
            i += 3;
        } else {
            out[o++] = s[i++];
        }
    }
    out[o] = '\0';
    return out;
}

/* Digits only, leading zeros allowed, value in lo..hi. */
static int ref_number(const char *s, size_t n, long lo, long hi, int *out)
{
    size_t i = 0;
    long v = 0;
    if (n == 0 || strspn(s, "0123456789") < n)
        return -1;
    while (i < n && s[i] == '0')
        i++;
    if (n - i > 7)
        return -1;
    for (; i < n; i++)
        v = v * 10 + (s[i] - '0');
    if (v < lo || v > hi)
        return -1;
    *out = (int)v;
    return 0;
}

static int ref_parse(const char *url, ref_conf_t *r)
{
    const char *a, *hp;
    size_t alen, hlen, at;
    memset(r, 0, sizeof(*r));
    r->port = 6379;
    if (strncmp(url, "redis://", 8) != 0)
        return -1;
    a = url + 8;
    alen = strcspn(a, "/");
    at = alen;
    for (size_t i = alen; i > 0; i--)
        if (a[i - 1] == '@') {
            at = i - 1;
            break;
        }
    if (at < alen) {
        const char *colon = memchr(a, ':', at);
        if (colon == NULL) {
            r->password = ref_decode(a, at);
            if (r->password == NULL)
                goto bad;
        } else {
            size_t ulen = (size_t)(colon - a);
            if (ulen > 0 && (r->user = ref_decode(a, ulen)) == NULL)
                goto bad;
            if ((r->password = ref_decode(colon + 1, at - ulen - 1)) == NULL)
                goto bad;
        }
        if (r->password[0] == '\0') {
            free(r->password);
            r->password = NULL;
        }
        hp = a + at + 1;
        hlen = alen - at - 1;
    } else {
        hp = a;
        hlen = alen;
    }
    const char *rest;
    size_t restlen;
    if (hlen > 0 && hp[0] == '[') {
        const char *close = memchr(hp + 1, ']', hlen - 1);
        if (close == NULL || close == hp + 1)
            goto bad;
        r->host = dup_n(hp + 1, (size_t)(close - hp - 1));
        rest = close + 1;
        restlen = hlen - (size_t)(rest - hp);
    } else {
        const char *colon = memchr(hp, ':', hlen);
        size_t h = colon ? (size_t)(colon - hp) : hlen;
        if (h == 0)
            goto bad;
        r->host = dup_n(hp, h);
        rest = hp + h;
        restlen = hlen - h;
    }
    if (restlen > 0 && (rest[0] != ':' || ref_number(rest + 1, restlen - 1, 1, 65535, &r->port) != 0))
        goto bad;
    if (a[alen] == '/' && a[alen + 1] != '\0' &&
        ref_number(a + alen + 1, strlen(a + alen + 1), 0, 1000000, &r->db) != 0)
        goto bad;
    return 0;
bad:
    ref_free(r);
    return -1;
}

static int same_str(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

/* redis-cluster://[[USER]:PASSWORD@]HOST[:PORT][,HOST[:PORT]...], written another way: the user
 * info up to the last '@' of the whole URL (a cluster URL has no path), then the seeds split at
 * every ',' first, each a host (or [v6]) and an optional port; no '/' anywhere after the user
 * info, at most 16 seeds. */
#define REF_SEEDS_MAX 16
typedef struct {
    ref_conf_t auth; /* user and password only */
    int n;
    char *host[REF_SEEDS_MAX];
    int port[REF_SEEDS_MAX];
} ref_cluster_t;

static void ref_cluster_free(ref_cluster_t *r)
{
    ref_free(&r->auth);
    for (int i = 0; i < r->n; i++)
        free(r->host[i]);
    memset(r, 0, sizeof(*r));
}

static int ref_cluster(const char *url, ref_cluster_t *r)
{
    const char *a = url + strlen("redis-cluster://"), *last = strrchr(a, '@'), *hp = a;
    memset(r, 0, sizeof(*r));
    if (last != NULL) {
        size_t at = (size_t)(last - a);
        const char *colon = memchr(a, ':', at);
        size_t ulen = colon ? (size_t)(colon - a) : 0;
        if (colon != NULL && ulen > 0 && (r->auth.user = ref_decode(a, ulen)) == NULL)
            goto bad;
        r->auth.password = colon ? ref_decode(colon + 1, at - ulen - 1) : ref_decode(a, at);
        if (r->auth.password == NULL)
            goto bad;
        if (r->auth.password[0] == '\0') {
            free(r->auth.password);
            r->auth.password = NULL;
        }
        hp = last + 1;
    }
    if (*hp == '\0' || strchr(hp, '/') != NULL)
        goto bad;
    for (;;) {
        size_t len = strcspn(hp, ","), h;
        const char *rest;
        if (len == 0 || r->n == REF_SEEDS_MAX)
            goto bad;
        if (hp[0] == '[') {
            const char *close = memchr(hp + 1, ']', len - 1);
            if (close == NULL || close == hp + 1)
                goto bad;
            r->host[r->n] = dup_n(hp + 1, (size_t)(close - hp - 1));
            rest = close + 1;
        } else {
            const char *colon = memchr(hp, ':', len);
            h = colon ? (size_t)(colon - hp) : len;
            if (h == 0)
                goto bad;
            r->host[r->n] = dup_n(hp, h);
            rest = hp + h;
        }
        size_t restlen = len - (size_t)(rest - hp);
        r->port[r->n] = 6379;
        r->n++;
        if (restlen > 0 && (rest[0] != ':' || ref_number(rest + 1, restlen - 1, 1, 65535, &r->port[r->n - 1]) != 0))
            goto bad;
        if (hp[len] == '\0')
            return 0;
        hp += len + 1;
    }
bad:
    ref_cluster_free(r);
    return -1;
}

/* What sk_store_url_check must say: SQLite opens exactly the file the path names. */
static int ref_url_ok(const char *url)
{
    if (strncmp(url, "sqlite:", 7) == 0) {
        const char *path = url + 7;
        return path[0] != '\0' && strcmp(path, ":memory:") != 0 && strncmp(path, "file:", 5) != 0;
    }
    if (strncmp(url, "redis://", 8) == 0) {
        ref_conf_t r;
        int ok = ref_parse(url, &r) == 0;
        ref_free(&r);
        return ok;
    }
    if (strncmp(url, "redis-cluster://", 16) == 0) {
        ref_cluster_t r;
        int ok = ref_cluster(url, &r) == 0;
        ref_cluster_free(&r);
        return ok;
    }
    return 0;
}

/* ---- the checks ---- */

static void check_url(const char *url, const ref_conf_t *want)
{
    sk_redis_conf_t c;
    ref_conf_t r;
    char err[256];
    int rc, rrc;

    err[0] = '\0';
    rc = sk_redis_conf_parse(&c, url, err, sizeof(err));
    if (strncmp(url, "redis-cluster://", 16) == 0) {
        ref_cluster_t rc_ref;
        char shown[1024];
        int want_ok = ref_cluster(url, &rc_ref) == 0;
        CHECK((rc == 0) == want_ok);
        if (rc == 0) {
            CHECK(c.cluster && c.nseeds == rc_ref.n && c.db == 0 && c.host == NULL);
            for (int i = 0; i < c.nseeds; i++)
                CHECK(strcmp(c.seeds[i].host, rc_ref.host[i]) == 0 && c.seeds[i].port == rc_ref.port[i]);
            CHECK(same_str(c.user, rc_ref.auth.user));
            CHECK(same_str(c.password, rc_ref.auth.password));
        } else {
            /* never the password in the message (unless what the redacted URL shows holds it) */
            sk_url_redact(url, shown, sizeof(shown));
            CHECK(err[0] != '\0');
            CHECK(c.password == NULL || strlen(c.password) < 4 || strstr(err, c.password) == NULL ||
                  strstr(shown, c.password) != NULL);
        }
        ref_cluster_free(&rc_ref);
        sk_redis_conf_dispose(&c);
        CHECK(sk_store_url_check(url, err, sizeof(err)) == rc);
        CHECK((rc == 0) == ref_url_ok(url));
        return;
    }
    if (strncmp(url, "redis-sentinel://", 17) == 0 || strncmp(url, "unix://", 7) == 0) {
        /* redis_ha.c's forms, which the reference does not parse: consistent, and never a
         * password in the message */
        CHECK(rc == 0 || (rc == -1 && err[0] != '\0'));
        CHECK(rc != 0 || c.master_name != NULL || c.path != NULL);
        /* a password shows in no message, unless its bytes are also elsewhere in the URL, in what
         * the redacted URL shows */
        char shown[1024];
        sk_url_redact(url, shown, sizeof(shown));
        CHECK(rc == 0 || c.password == NULL || c.password[0] == '\0' || strlen(c.password) < 4 ||
              strstr(err, c.password) == NULL || strstr(shown, c.password) != NULL);
        sk_redis_conf_dispose(&c);
        CHECK(sk_store_url_check(url, err, sizeof(err)) == rc);
        return;
    }
    rrc = ref_parse(url, &r);
    CHECK((rc == 0) == (rrc == 0));
    if (rc == 0) {
        CHECK(strcmp(c.host, r.host) == 0 && c.host[0] != '\0');
        CHECK(c.port == r.port && c.port >= 1 && c.port <= 65535);
        CHECK(c.db == r.db && c.db >= 0);
        CHECK(same_str(c.user, r.user));
        CHECK(same_str(c.password, r.password));
        CHECK(c.password == NULL || c.password[0] != '\0');
        if (want != NULL) {
            CHECK(strcmp(c.host, want->host) == 0);
            CHECK(c.port == want->port && c.db == want->db);
            CHECK(same_str(c.user, want->user));
            CHECK(same_str(c.password, want->password));
        }
    } else {
        CHECK(rc == -1 && err[0] != '\0');
        CHECK(want == NULL);
    }
    sk_redis_conf_dispose(&c);
    CHECK(c.host == NULL && c.user == NULL && c.password == NULL);
    ref_free(&r);

    /* the check at start, with a roomy and a tiny error buffer */
    err[0] = '\0';
    rc = sk_store_url_check(url, err, sizeof(err));
    CHECK((rc == 0) == ref_url_ok(url));
    CHECK(rc == 0 || (rc == -1 && err[0] != '\0'));
    char tiny[4];
    CHECK(sk_store_url_check(url, tiny, sizeof(tiny)) == rc);
}

/* ---- round trip: parts -> URL -> parts ---- */

static void put(char **o, const char *s, size_t n)
{
    memcpy(*o, s, n);
    *o += n;
}

/* Bytes a URL may carry raw in that place; the rest is escaped (and, at random, the rest too). */
static void put_enc(char **o, fz_t *f, const char *s, size_t n, const char *must)
{
    static const char hex[] = "0123456789ABCDEF0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        uint8_t c = (uint8_t)s[i];
        uint8_t r = fz_u8(f);
        if (c == '%' || c <= 0x20 || c >= 0x7f || strchr(must, c) != NULL || (r & 3) == 0) {
            const char *h = hex + ((r & 4) ? 16 : 0);
            char e[3] = {'%', h[c >> 4], h[c & 15]};
            put(o, e, 3);
        } else {
            put(o, (const char *)&c, 1);
        }
    }
}

static void round_trip(fz_t *f)
{
    static const char HOST[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_~!$&'()*+,;=%?#]";
    static const char HOST6[] = "0123456789abcdefABCDEF:.%z";
    char url[2048], host[64], user[256], pass[256], *o = url;
    ref_conf_t want = {host, 6379, NULL, NULL, 0};
    uint8_t shape = fz_u8(f);
    size_t hlen = 1 + fz_u8(f) % 40;
    int v6 = shape & 1;

    for (size_t i = 0; i < hlen; i++) {
        uint8_t b = fz_u8(f);
        host[i] = v6 ? HOST6[b % (sizeof(HOST6) - 1)] : HOST[b % (sizeof(HOST) - 1)];
    }
    host[hlen] = '\0';
    if (!v6 && host[0] == ']')
        host[0] = 'h';
    put(&o, "redis://", 8);
    if (shape & 2) { /* userinfo */
        size_t ulen = (shape & 4) ? fz_str(f, user, sizeof(user)) : 0;
        size_t plen = fz_str(f, pass, sizeof(pass));
        int colon = ulen > 0 || (shape & 8);
        if (ulen > 0) {
            put_enc(&o, f, user, ulen, ":@/");
            want.user = user;
        }
        if (colon)
            put(&o, ":", 1);
        /* without the colon, a raw ':' would start the password */
        put_enc(&o, f, pass, plen, colon ? "/" : ":/");
        want.password = plen > 0 ? pass : NULL;
        put(&o, "@", 1);
    }
    if (v6)
        put(&o, "[", 1);
    put(&o, host, hlen);
    if (v6)
        put(&o, "]", 1);
    if (shape & 16) {
        want.port = 1 + (int)(fz_u64(f, 2) % 65535);
        o += sprintf(o, ":%0*d", 1 + (int)(shape >> 6), want.port);
    }
    if (shape & 32) {
        if (fz_u8(f) & 1) {
            want.db = (int)(fz_u64(f, 3) % 1000001);
            o += sprintf(o, "/%d", want.db);
        } else {
            put(&o, "/", 1);
        }
    }
    *o = '\0';
    check_url(url, &want);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    fz_t f = {data, size};
    CHECK(s != NULL);
    memcpy(s, data, size);
    s[size] = '\0';
    check_url(s, NULL);
    /* the same bytes after a scheme, so that the parser gets past its prefix */
    if (size > 0 && data[0] < 0x20) {
        static const char *const schemes[] = {"redis://",           "sqlite:",
                                              "redis://:",          "redis://u:",
                                              "redis-cluster://",   "redis-cluster://u:",
                                              "redis-cluster://h,", "redis-cluster://:p@"};
        const char *sch = schemes[data[0] & 7];
        char *t = malloc(strlen(sch) + size);
        CHECK(t != NULL);
        strcpy(t, sch);
        strcat(t, s + 1);
        check_url(t, NULL);
        free(t);
    }
    free(s);
    round_trip(&f);
    return 0;
}
