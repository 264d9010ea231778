/* fuzz_head.c: libFuzzer target for request heads as the API reads them (api.c, dashboard.c).
 * The input is a raw HTTP/1.1 head; it is parsed by h2o's own parser (picohttpparser's
 * phr_parse_request, in libh2o) and turned into an h2o_req_t the way h2o 2.2.5's http1.c does
 * (names lowercased, tokens looked up, Host, Content-Length, Transfer-Encoding, Expect and
 * Upgrade kept out of the header list), then every reader of api.c runs on it: the head size
 * (--max-head-bytes), the admin token (Authorization), the dashboard's ?token= (percent-decoded),
 * Accept (CSV or JSON), the rate limit's client key (X-Forwarded-For, right to left past
 * --trust-proxy or --trusted-proxies), the access log's redaction of the query, and the wire
 * check (sk_api_wire_check: differing Content-Length, CL with TE, TE but chunked, obs-fold), and
 * the admin listener's Host, Content-Type and Origin readers.
 *
 * Oracles: each reader against a reference written here from the raw header list (not h2o's),
 * another way; the headers the API does not read (Host, Origin, Content-Type, Referer,
 * User-Agent) change none of its decisions; the access log never shows a query whose token
 * opens the dashboard; and a round trip: a token drawn from the input, sent as "Bearer T" and as
 * ?token= percent-encoded at random, is accepted both ways, and a token one byte off is not. */
#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api_internal.h"
#include "dashboard.h"
#include "error.h"
#include "fuzz_util.h"
#include "phr.h"
#include "router.h"

#define MAX_HEADERS 100 /* h2o's H2O_MAX_HEADERS */

/* The admin tokens a head is checked against: plain, with characters the query must escape, and
 * with bytes past ASCII. */
static const char *const TOKENS[] = {"s3cr3t", "a b+c%d&e=f", "\xc3\xbc\xe2\x82\xac/?#"};

typedef struct {
    const char *m, *p;
    size_t mlen, plen;
    struct phr_header h[MAX_HEADERS];
    size_t nh;
    int minor;
} head_t;

/* ---- peers: one fixed address ---- */

static socklen_t peer_cb(h2o_conn_t *conn, struct sockaddr *sa)
{
    struct sockaddr_in *in = (struct sockaddr_in *)sa;
    memset(in, 0, sizeof(*in));
    in->sin_family = AF_INET;
    in->sin_addr.s_addr = htonl(0xc0000207); /* 192.0.2.7 */
    return sizeof(*in);
}

static const h2o_conn_callbacks_t CONN_CBS = {.get_peername = peer_cb};
static h2o_conn_t CONN = {.callbacks = &CONN_CBS};

/* ---- the references, over the raw header list ---- */

static int name_is(const struct phr_header *h, const char *lit)
{
    return h->name_len == strlen(lit) && strncasecmp(h->name, lit, h->name_len) == 0;
}

static int special(const struct phr_header *h)
{
    return name_is(h, "content-length") || name_is(h, "transfer-encoding") || name_is(h, "expect") ||
           name_is(h, "upgrade") || name_is(h, "host");
}

/* The head written out in HTTP/1.1 form, h2o's unseen lines left out, and its length taken. */
static size_t ref_head_size(const head_t *hd)
{
    sk_buf_t b = {0};
    const struct phr_header *host = NULL;
    size_t n;
    sk_buf_printf(&b, "%.*s %.*s HTTP/1.1\r\n", (int)hd->mlen, hd->m, (int)hd->plen, hd->p);
    for (size_t i = 0; i < hd->nh; i++) {
        if (name_is(&hd->h[i], "host"))
            host = &hd->h[i];
        if (!special(&hd->h[i]))
            sk_buf_printf(&b, "%.*s: %.*s\r\n", (int)hd->h[i].name_len, hd->h[i].name, (int)hd->h[i].value_len,
                          hd->h[i].value);
    }
    if (host != NULL)
        sk_buf_printf(&b, "Host: %.*s\r\n", (int)host->value_len, host->value);
    sk_buf_append(&b, "\r\n", 2);
    n = b.len;
    sk_buf_dispose(&b);
    return n;
}

static const struct phr_header *first(const head_t *hd, const char *name)
{
    for (size_t i = 0; i < hd->nh; i++)
        if (name_is(&hd->h[i], name))
            return &hd->h[i];
    return NULL;
}

static int ref_token_ok(const head_t *hd, const char *token)
{
    const struct phr_header *a = first(hd, "authorization");
    char scheme[8];
    size_t tlen = strlen(token);
    if (a == NULL || a->value_len != tlen + 7)
        return 0;
    for (int i = 0; i < 7; i++)
        scheme[i] = (char)tolower((unsigned char)a->value[i]);
    return memcmp(scheme, "bearer ", 7) == 0 && memcmp(a->value + 7, token, tlen) == 0;
}

/* The first `token=` parameter decides: its value decoded ('+' is a space, %XX a byte, any other
 * '%' spoils it) must be the token. */
static int ref_query_token(const char *q, size_t n, const char *token)
{
    size_t pos = 0;
    while (q != NULL && pos < n) {
        const char *par = q + pos, *amp = memchr(par, '&', n - pos);
        size_t plen = amp ? (size_t)(amp - par) : n - pos;
        pos += plen + 1;
        if (plen < 6 || strncmp(par, "token=", 6) != 0)
            continue;
        char *dec = malloc(plen);
        size_t d = 0;
        int ok = 1;
        CHECK(dec != NULL);
        for (size_t i = 6; i < plen && ok; i++) {
            if (par[i] == '+') {
                dec[d++] = ' ';
            } else if (par[i] != '%') {
                dec[d++] = par[i];
            } else if (i + 2 < plen && ref_hex((uint8_t)par[i + 1]) >= 0 && ref_hex((uint8_t)par[i + 2]) >= 0) {
                dec[d++] = (char)(ref_hex((uint8_t)par[i + 1]) * 16 + ref_hex((uint8_t)par[i + 2]));
                i += 2;
            } else {
                ok = 0;
            }
        }
        ok = ok && d == strlen(token) && memcmp(dec, token, d) == 0;
        free(dec);
        return ok;
    }
    return 0;
}

/* RFC 9110 media ranges: "text/csv" in any case, its q parameter (if any) not zero. */
static int ref_csv_element(const char *s, size_t n)
{
    char *low = malloc(n + 1), *tok;
    int want = 0;
    CHECK(low != NULL);
    for (size_t i = 0; i < n; i++)
        low[i] = (char)tolower((unsigned char)s[i]);
    low[n] = '\0';
    /* media range, then parameters: cut at each ';', white space around each part dropped */
    size_t k = 0;
    for (char *part = low;; k++) {
        char *semi = strchr(part, ';');
        if (semi != NULL)
            *semi = '\0';
        tok = part;
        while (*tok == ' ' || *tok == '\t')
            tok++;
        char *end = tok + strlen(tok);
        while (end > tok && (end[-1] == ' ' || end[-1] == '\t'))
            *--end = '\0';
        if (k == 0) {
            want = strcmp(tok, "text/csv") == 0;
            if (!want)
                break;
        } else if (tok[0] == 'q' && tok[1] == '=') {
            const char *v = tok + 2;
            if (strcmp(v, "0") == 0 || strcmp(v, "0.") == 0 || strcmp(v, "0.0") == 0 || strcmp(v, "0.00") == 0 ||
                strcmp(v, "0.000") == 0)
                want = 0;
        }
        if (semi == NULL)
            break;
        part = semi + 1;
    }
    free(low);
    return want;
}

static int ref_wants_csv(const head_t *hd)
{
    for (size_t i = 0; i < hd->nh; i++) {
        if (!name_is(&hd->h[i], "accept"))
            continue;
        const char *v = hd->h[i].value;
        size_t n = hd->h[i].value_len, a = 0;
        for (size_t j = 0; j <= n; j++)
            if (j == n || v[j] == ',') {
                if (ref_csv_element(v + a, j - a))
                    return 1;
                a = j + 1;
            }
    }
    return 0;
}

/* The reference of the client address: every X-Forwarded-For element, in order, then a walk
 * from the right. mode 1: --trust-proxy (the peer is a proxy, no element is); mode 2: trusted
 * proxies 10.0.0.0/8 and 192.0.2.7 (the peer). */
static int ref_trusted(const char *e, size_t n, int mode, char *canon)
{
    char buf[64];
    unsigned char a[16];
    if (n >= 2 && e[0] == '[' && e[n - 1] == ']')
        e++, n -= 2;
    if (n == 0 || n >= sizeof(buf))
        return -1;
    memcpy(buf, e, n);
    buf[n] = '\0';
    if (inet_pton(AF_INET, buf, a) == 1) {
        inet_ntop(AF_INET, a, canon, 64);
        return mode == 2 && (a[0] == 10 || (a[0] == 192 && a[1] == 0 && a[2] == 2 && a[3] == 7));
    }
    if (inet_pton(AF_INET6, buf, a) != 1)
        return -1;
    if (memcmp(a, "\0\0\0\0\0\0\0\0\0\0\xff\xff", 12) == 0) {
        inet_ntop(AF_INET, a + 12, canon, 64);
        return mode == 2 && (a[12] == 10 || (a[12] == 192 && a[13] == 0 && a[14] == 2 && a[15] == 7));
    }
    inet_ntop(AF_INET6, a, canon, 64);
    return 0;
}

static size_t ref_rate_key(const head_t *hd, int mode, const char *user, size_t ulen, char *key)
{
    const char *el[4 * MAX_HEADERS + 8];
    size_t ell[4 * MAX_HEADERS + 8], n = 0;
    char client[64] = "192.0.2.7", canon[64];
    if (user != NULL) {
        memcpy(key, "u:", 2);
        memcpy(key + 2, user, ulen);
        key[2 + ulen] = '\0';
        return 2 + ulen;
    }
    for (size_t i = 0; mode != 0 && i < hd->nh; i++) {
        if (!name_is(&hd->h[i], "x-forwarded-for"))
            continue;
        const char *v = hd->h[i].value;
        size_t len = hd->h[i].value_len, a = 0;
        for (size_t j = 0; j <= len; j++)
            if (j == len || v[j] == ',') {
                size_t x = a, z = j;
                while (x < z && (v[x] == ' ' || v[x] == '\t'))
                    x++;
                while (z > x && (v[z - 1] == ' ' || v[z - 1] == '\t'))
                    z--;
                if (z > x && n < sizeof(el) / sizeof(el[0])) {
                    el[n] = v + x;
                    ell[n++] = z - x;
                }
                a = j + 1;
            }
    }
    while (n-- > 0) {
        int t = ref_trusted(el[n], ell[n], mode, canon);
        if (t < 0)
            break;
        strcpy(client, canon);
        if (t == 0)
            break;
    }
    return (size_t)sprintf(key, "a:%s", client);
}

/* The reference of the wire check: from the header list, counted another way. */
static int ref_wire_refused(const head_t *hd, int minor)
{
    size_t ncl = 0, nte = 0, chunked = 0;
    const struct phr_header *cl = NULL;
    for (size_t i = 0; i < hd->nh; i++) {
        if (hd->h[i].name_len == 0)
            return 1;
        if (name_is(&hd->h[i], "content-length")) {
            if (cl != NULL && (cl->value_len != hd->h[i].value_len || memcmp(cl->value, hd->h[i].value, cl->value_len)))
                return 1;
            cl = &hd->h[i];
            ncl++;
        }
        if (name_is(&hd->h[i], "transfer-encoding")) {
            const char *v = hd->h[i].value;
            size_t a = 0, z = hd->h[i].value_len;
            nte++;
            while (a < z && (v[a] == ' ' || v[a] == '\t'))
                a++;
            while (z > a && (v[z - 1] == ' ' || v[z - 1] == '\t'))
                z--;
            chunked += z - a == 7 && strncasecmp(v + a, "chunked", 7) == 0;
        }
    }
    if (nte == 0)
        return 0;
    return ncl > 0 || minor == 0 || nte > 1 || chunked != 1;
}

/* ---- the admin listener's readers ---- */

static const char *const ADMIN_HOSTS[] = {"localhost", "127.0.0.1", "[::1]", "Admin.Example"};

static int ref_ci_eq(const char *a, size_t an, const char *b, size_t bn)
{
    if (an != bn)
        return 0;
    for (size_t i = 0; i < an; i++)
        if (tolower((unsigned char)a[i]) != tolower((unsigned char)b[i]))
            return 0;
    return 1;
}

/* name[:port] (a port is digits, maybe none), or [v6][:port]; the name one of ADMIN_HOSTS. */
static int ref_host_allowed(const char *v, size_t n)
{
    size_t hl;
    if (n > 0 && v[0] == '[') {
        const char *rb = memchr(v, ']', n);
        if (rb == NULL)
            return 0;
        hl = (size_t)(rb - v) + 1;
    } else {
        hl = 0;
        while (hl < n && v[hl] != ':')
            hl++;
    }
    if (hl < n) {
        if (v[hl] != ':')
            return 0;
        for (size_t i = hl + 1; i < n; i++)
            if (!isdigit((unsigned char)v[i]))
                return 0;
    }
    for (size_t i = 0; i < sizeof(ADMIN_HOSTS) / sizeof(ADMIN_HOSTS[0]); i++)
        if (ref_ci_eq(v, hl, ADMIN_HOSTS[i], strlen(ADMIN_HOSTS[i])))
            return 1;
    return 0;
}

/* One Content-Type, its type/subtype (before any ';', blanks around) application/json. */
static int ref_json_ctype(const head_t *hd)
{
    const struct phr_header *ct = NULL;
    for (size_t i = 0; i < hd->nh; i++)
        if (name_is(&hd->h[i], "content-type")) {
            if (ct != NULL)
                return 0;
            ct = &hd->h[i];
        }
    if (ct == NULL)
        return 0;
    size_t a = 0, z = 0;
    while (z < ct->value_len && ct->value[z] != ';')
        z++;
    while (a < z && (ct->value[a] == ' ' || ct->value[a] == '\t'))
        a++;
    while (z > a && (ct->value[z - 1] == ' ' || ct->value[z - 1] == '\t'))
        z--;
    return ref_ci_eq(ct->value + a, z - a, "application/json", 16);
}

/* No Origin, or one that is http:// or https:// and the Host. */
static int ref_origin_ok(const head_t *hd, const char *host, size_t hlen)
{
    const struct phr_header *o = NULL;
    char want[1200];
    for (size_t i = 0; i < hd->nh; i++)
        if (name_is(&hd->h[i], "origin")) {
            if (o != NULL)
                return 0;
            o = &hd->h[i];
        }
    if (o == NULL)
        return 1;
    if (host == NULL || hlen > 1000)
        return 0;
    for (int s = 0; s < 2; s++) {
        int n = snprintf(want, sizeof(want), "%s://%.*s", s ? "https" : "http", (int)hlen, host);
        if (ref_ci_eq(o->value, o->value_len, want, (size_t)n))
            return 1;
    }
    return 0;
}

/* ---- the request as h2o makes it ---- */

/* h2o 2.2.5's init_headers and fixup_request: 0, or -1 where h2o answers 400 itself. `skip`
 * leaves out the headers it names (the check that they change nothing). */
static int make_req(h2o_req_t *req, const head_t *hd, int skip)
{
    static const char *const IGNORED[] = {"host", "origin", "content-type", "referer", "user-agent"};
    memset(req, 0, sizeof(*req));
    h2o_mem_init_pool(&req->pool);
    req->conn = &CONN;
    req->method = req->input.method = h2o_iovec_init(hd->m, hd->mlen);
    req->path = req->input.path = h2o_iovec_init(hd->p, hd->plen);
    for (size_t i = 0; i < hd->nh; i++) {
        const struct phr_header *h = &hd->h[i];
        const h2o_token_t *t;
        if (h->name_len == 0) /* a folded line */
            return -1;
        if (skip) {
            size_t k = 0;
            while (k < sizeof(IGNORED) / sizeof(IGNORED[0]) && !name_is(h, IGNORED[k]))
                k++;
            if (k < sizeof(IGNORED) / sizeof(IGNORED[0]))
                continue;
        }
        char *lower = h2o_mem_alloc_pool(&req->pool, h->name_len);
        for (size_t k = 0; k < h->name_len; k++)
            lower[k] = (char)tolower((unsigned char)h->name[k]);
        if ((t = h2o_lookup_token(lower, h->name_len)) != NULL) {
            if (t->is_init_header_special) {
                if (t == H2O_TOKEN_HOST)
                    req->input.authority = h2o_iovec_init(h->value, h->value_len);
                continue;
            }
            h2o_add_header(&req->pool, &req->headers, t, h->name, h->value, h->value_len);
        } else {
            h2o_add_header_by_str(&req->pool, &req->headers, lower, h->name_len, 0, h->name, h->value, h->value_len);
        }
    }
    return 0;
}

static int parse(const char *buf, size_t len, head_t *hd)
{
    hd->nh = MAX_HEADERS;
    return phr_parse_request(buf, len, &hd->m, &hd->mlen, &hd->p, &hd->plen, &hd->minor, hd->h, &hd->nh, 0) > 0 ? 0
                                                                                                                : -1;
}

/* ---- the checks ---- */

static void check_head(const head_t *hd, int admin, int trust, const char *user, size_t ulen)
{
    h2o_req_t req, bare;
    char key[SK_API_RATE_KEY_MAX], rkey[SK_API_RATE_KEY_MAX + 8], bkey[SK_API_RATE_KEY_MAX];
    const char *q = memchr(hd->p, '?', hd->plen);
    size_t qlen = q ? hd->plen - (size_t)(q - hd->p) - 1 : 0;

    if (make_req(&req, hd, 0) != 0) {
        h2o_mem_clear_pool(&req.pool);
        return;
    }
    CHECK(make_req(&bare, hd, 1) == 0);

    CHECK(sk_api_head_size(&req) == ref_head_size(hd));
    CHECK(sk_api_wants_csv(&req) == ref_wants_csv(hd));
    CHECK(sk_api_wants_csv(&bare) == sk_api_wants_csv(&req));
    for (size_t t = 0; t < sizeof(TOKENS) / sizeof(TOKENS[0]); t++) {
        int ok = sk_api_token_ok(&req, TOKENS[t]), qok = sk_dashboard_query_token_ok(q ? q + 1 : NULL, qlen, TOKENS[t]);
        CHECK(ok == ref_token_ok(hd, TOKENS[t]));
        CHECK(sk_api_token_ok(&bare, TOKENS[t]) == ok);
        CHECK(qok == ref_query_token(q ? q + 1 : NULL, qlen, TOKENS[t]));
        if (qok)
            CHECK(sk_api_log_path_len(hd->p, hd->plen) == (size_t)(q - hd->p));
    }
    size_t lp = sk_api_log_path_len(hd->p, hd->plen);
    CHECK(lp == hd->plen || (q != NULL && lp == (size_t)(q - hd->p)));

    sk_cidrs_t trusted = {0};
    char err[128];
    CHECK(sk_cidrs_parse("10.0.0.0/8, 192.0.2.7", &trusted, err, sizeof(err)) == 0);
    const sk_cidrs_t *tl = trust == 2 ? &trusted : NULL;
    size_t n = sk_api_rate_key(&req, tl, trust == 1, user, ulen, key);
    CHECK(n == strlen(key) && n < SK_API_RATE_KEY_MAX);
    CHECK(n == ref_rate_key(hd, trust, user, ulen, rkey) && memcmp(key, rkey, n) == 0);
    CHECK(sk_api_rate_key(&bare, tl, trust == 1, user, ulen, bkey) == n && memcmp(bkey, key, n) == 0);
    sk_cidrs_dispose(&trusted);

    /* the admin listener's readers */
    char *hosts[sizeof(ADMIN_HOSTS) / sizeof(ADMIN_HOSTS[0])];
    memcpy(hosts, ADMIN_HOSTS, sizeof(hosts));
    if (req.input.authority.base != NULL)
        CHECK(sk_api_host_allowed(req.input.authority.base, req.input.authority.len, hosts, 4) ==
              ref_host_allowed(req.input.authority.base, req.input.authority.len));
    CHECK(sk_api_json_content_type(&req) == ref_json_ctype(hd));
    CHECK(sk_api_origin_ok(&req) == ref_origin_ok(hd, req.input.authority.base, req.input.authority.len));

    /* and the route, as on_req takes it next */
    sk_match_t m;
    int rc = sk_route(hd->m, hd->mlen, hd->p, hd->plen, admin, &m);
    CHECK(rc == 0 || rc == SK_ENOT_FOUND || rc == SK_EMETHOD_NOT_ALLOWED);

    h2o_mem_clear_pool(&bare.pool);
    h2o_mem_clear_pool(&req.pool);
}

/* A token drawn from the input, sent both ways: accepted; one byte off: refused. */
static void round_trip(fz_t *f)
{
    static const char hex[] = "0123456789ABCDEF0123456789abcdef";
    char token[128], off[128], head[1024];
    size_t tlen = fz_str(f, token, 100), hl;
    head_t hd;
    h2o_req_t req;

    /* an admin token is trimmed and non-empty, and a header value carries no control byte */
    for (size_t i = 0; i < tlen; i++)
        if ((unsigned char)token[i] < 0x20 || token[i] == 0x7f)
            token[i] = 'x';
    while (tlen > 0 && token[tlen - 1] == ' ')
        token[--tlen] = '\0';
    if (tlen == 0 || token[0] == ' ')
        return;
    hl = (size_t)snprintf(head, sizeof(head), "GET /v1/events?a=1&token=");
    for (size_t i = 0; i < tlen; i++) {
        uint8_t c = (uint8_t)token[i], r = fz_u8(f);
        if (c == ' ' && (r & 1))
            head[hl++] = '+';
        else if (c <= 0x20 || c >= 0x7f || strchr("%&+#", c) != NULL || (r & 6) == 0)
            hl += (size_t)snprintf(head + hl, 4, "%%%c%c", hex[(r & 8 ? 16 : 0) + (c >> 4)],
                                   hex[(r & 8 ? 16 : 0) + (c & 15)]);
        else
            head[hl++] = (char)c;
    }
    hl += (size_t)snprintf(head + hl, sizeof(head) - hl, "&b=2 HTTP/1.1\r\nHost: h\r\nAuthorization: %s %s\r\n\r\n",
                           (fz_u8(f) & 1) ? "bearer" : "Bearer", token);
    CHECK(hl < sizeof(head));
    CHECK(parse(head, hl, &hd) == 0);
    CHECK(make_req(&req, &hd, 0) == 0);
    memcpy(off, token, tlen + 1);
    off[fz_u8(f) % tlen] ^= 0x01;
    const char *q = memchr(hd.p, '?', hd.plen) + 1;
    size_t qlen = hd.plen - (size_t)(q - hd.p);
    CHECK(sk_api_token_ok(&req, token) == 1);
    CHECK(sk_dashboard_query_token_ok(q, qlen, token) == 1);
    CHECK(sk_api_token_ok(&req, off) == 0);
    CHECK(sk_dashboard_query_token_ok(q, qlen, off) == 0);
    CHECK(sk_api_log_path_len(hd.p, hd.plen) == strlen("/v1/events"));
    h2o_mem_clear_pool(&req.pool);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_t f = {data, size};
    uint8_t flags = fz_u8(&f);
    head_t hd;
    char user[SK_IDENT_MAX + 1];
    size_t ulen = 0;

    if (flags & 4)
        ulen = fz_str(&f, user, sizeof(user));
    /* the rest is the head; h2o waits for its blank line, so one is added when missing */
    char *buf = malloc(f.n + 4);
    size_t len = f.n;
    CHECK(buf != NULL);
    memcpy(buf, f.p, f.n);
    if (len < 4 || memcmp(buf + len - 4, "\r\n\r\n", 4) != 0) {
        memcpy(buf + len, "\r\n\r\n", 4);
        len += 4;
    }
    if (parse(buf, len, &hd) == 0)
        check_head(&hd, flags & 2, (flags & 1) ? 1 : (flags & 8) ? 2 : 0, (flags & 4) ? user : NULL, ulen);
    if (parse(buf, len, &hd) == 0) /* parse again: make_req lowercased the names in place, as h2o does */
        CHECK((sk_api_wire_check(buf, len) != NULL) == ref_wire_refused(&hd, hd.minor));
    free(buf);

    fz_t g = {data, size};
    round_trip(&g);
    return 0;
}
