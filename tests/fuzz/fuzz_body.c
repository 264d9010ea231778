/* fuzz_body.c: libFuzzer target for the request line and bodies (the other input surfaces have
 * their own fuzz_<surface>.c; docs/testing.md lists them): the take body, the sale definition,
 * the order-listing query, identifiers and order ids, and the router. Each input is fed to every
 * parser; results are checked against invariants, the validators against independent reference
 * implementations written differently, and the take body's direct scan against the jansson-only
 * path (differential fuzzing). Any violation aborts. Built two ways by tests/CMakeLists.txt: with
 * libFuzzer (fuzz_body, SK_FUZZ=ON under clang) and as fuzz_body_replay, which replays
 * tests/fuzz/corpus/fuzz_body in ctest. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "fuzz_util.h"
#include "parse.h"
#include "router.h"
#include "sale.h"

/* ---- reference validators (and ref_valid_ident, ref_valid_sale_id in fuzz_util.h) ---- */

static uint64_t ref_order_id(const uint8_t *s, size_t len)
{
    char buf[32];
    char *end;
    unsigned long long v;
    if (len < 1 || len > 19 || s[0] == '0')
        return 0;
    for (size_t i = 0; i < len; i++)
        if (s[i] < '0' || s[i] > '9')
            return 0;
    memcpy(buf, s, len);
    buf[len] = '\0';
    v = strtoull(buf, &end, 10);
    CHECK(*end == '\0');
    return v <= (unsigned long long)INT64_MAX ? (uint64_t)v : 0;
}

/* ---- the parsers ---- */

static int same_ident(const char *a, size_t alen, const char *b, size_t blen)
{
    if (a == NULL || b == NULL)
        return a == NULL && b == NULL && alen == 0 && blen == 0;
    return alen == blen && memcmp(a, b, alen + 1) == 0;
}

static void fuzz_take(const char *p, size_t n)
{
    sk_take_body_t b, j, d;
    const char *why = NULL, *jwhy = NULL;
    int rc = sk_parse_take(p, n, &b, &why);
    /* differential: the direct scan must agree with the jansson-only path, field for field */
    int jrc = sk_parse_take_json(p, n, &j, &jwhy);
    int direct = sk_parse_take_direct(p, n, &d);
    CHECK(rc == jrc);
    if (direct) {
        CHECK(jrc == 0);
        CHECK(d.qty == j.qty);
        CHECK(same_ident(d.user, d.user_len, j.user, j.user_len));
        CHECK(same_ident(d.request_id, d.request_id_len, j.request_id, j.request_id_len));
    }
    if (rc != 0) {
        CHECK(rc == SK_EBAD_REQUEST);
        CHECK(why != NULL && why[0] != '\0');
        CHECK(jwhy != NULL && strcmp(why, jwhy) == 0);
        CHECK(b.user == NULL && b.request_id == NULL && b.qty == 1);
        return;
    }
    CHECK(b.qty == j.qty);
    CHECK(same_ident(b.user, b.user_len, j.user, j.user_len));
    CHECK(same_ident(b.request_id, b.request_id_len, j.request_id, j.request_id_len));
    CHECK(b.qty >= 1 && b.qty <= SK_MAX_UNITS);
    if (b.user == NULL) {
        CHECK(b.user_len == 0);
    } else {
        CHECK(b.user == b.user_buf && b.user[b.user_len] == '\0');
        CHECK(b.user_len >= 1 && b.user_len <= SK_IDENT_MAX);
        CHECK(sk_valid_ident(b.user, b.user_len));
        CHECK(ref_valid_ident((const uint8_t *)b.user, b.user_len));
        CHECK(memchr(b.user, '\0', b.user_len) == NULL);
    }
    if (b.request_id == NULL) {
        CHECK(b.request_id_len == 0);
    } else {
        CHECK(b.request_id == b.request_id_buf && b.request_id[b.request_id_len] == '\0');
        CHECK(b.request_id_len >= 1 && b.request_id_len <= SK_IDENT_MAX);
        CHECK(sk_valid_ident(b.request_id, b.request_id_len));
        CHECK(ref_valid_ident((const uint8_t *)b.request_id, b.request_id_len));
    }
    /* a take that passed the parser passes the sale's request rules with a user present */
    {
        sk_sale_conf_t c = {10, 1, 0, SK_NO_TIME, SK_NO_TIME, SK_NO_TIME};
        const char *w;
        CHECK(sk_sale_check_take(&c, 1, b.qty, &w) == 0);
    }
}

static void fuzz_sale_conf(const char *p, size_t n)
{
    sk_sale_conf_t c;
    const char *why = NULL;
    int rc = sk_parse_sale_conf(p, n, &c, &why);
    if (rc != 0) {
        CHECK(rc == SK_EBAD_REQUEST);
        CHECK(why != NULL && why[0] != '\0');
        return;
    }
    CHECK(sk_sale_conf_check(&c, &why) == 0);
    CHECK(c.stock >= 0 && c.stock <= SK_MAX_UNITS);
    CHECK(c.per_user_limit >= 0 && c.per_user_limit <= SK_MAX_UNITS);
    CHECK(c.hold_seconds >= 0 && c.hold_seconds <= 31536000);
    CHECK(c.starts_at == SK_NO_TIME || c.starts_at >= 0);
    CHECK(c.ends_at == SK_NO_TIME || c.ends_at >= 0);
    if (c.starts_at != SK_NO_TIME && c.ends_at != SK_NO_TIME)
        CHECK(c.ends_at > c.starts_at);
    /* an open sale before starts_at is not open, and one at ends_at is over */
    if (c.starts_at != SK_NO_TIME && c.starts_at > 0)
        CHECK(sk_sale_window(&c, c.starts_at - 1) == SK_ENOT_STARTED);
    if (c.ends_at != SK_NO_TIME)
        CHECK(sk_sale_window(&c, c.ends_at) == SK_EENDED);
}

static void fuzz_list_query(const char *p, size_t n)
{
    uint64_t after = 0;
    unsigned limit = 0;
    const char *why = NULL;
    int rc = sk_parse_list_query(p, n, &after, &limit, &why);
    if (rc != 0) {
        CHECK(rc == SK_EBAD_REQUEST);
        CHECK(why != NULL);
        return;
    }
    CHECK(limit >= 1 && limit <= 1000);
    CHECK(after <= (uint64_t)INT64_MAX);
}

/* The feed's query and cursors: what parses is in range, and a cursor is canonical (printed
 * again, it is the same bytes: two spellings of one position would be two cursors). */
static void fuzz_feed_query(const char *p, size_t n)
{
    uint64_t hi = 7, lo = 7;
    unsigned limit = 0, wait = 99;
    const char *why = NULL;
    int rc = sk_parse_feed_query(p, n, &hi, &lo, &limit, &wait, &why);
    if (rc != 0) {
        CHECK(rc == SK_EBAD_REQUEST && why != NULL);
    } else {
        CHECK(limit >= 1 && limit <= 1000 && wait <= 60);
    }
    if (sk_parse_cursor(p, n, &hi, &lo) == 0) {
        char buf[48];
        int len = snprintf(buf, sizeof(buf), "%llu-%llu", (unsigned long long)hi, (unsigned long long)lo);
        CHECK(len > 0 && (size_t)len == n && memcmp(buf, p, n) == 0);
    }
}

static void fuzz_idents(const uint8_t *d, size_t n)
{
    const char *p = (const char *)d;
    CHECK(sk_valid_ident(p, n) == ref_valid_ident(d, n));
    CHECK(sk_valid_sale_id(p, n) == ref_valid_sale_id(d, n));
    CHECK(sk_parse_order_id(p, n) == ref_order_id(d, n));
    /* every prefix too, which walks every cut through a multi-byte character */
    for (size_t k = 0; k < n && k <= 130; k++)
        CHECK(sk_valid_ident(p, k) == ref_valid_ident(d, k));
}

static int within(sk_slice_t s, const char *p, size_t n)
{
    return s.p == NULL ? s.len == 0 : (s.p >= p && s.len <= n && (size_t)(s.p - p) <= n - s.len);
}

static int has_sale(sk_action_t a)
{
    return a != SK_A_HEALTHZ && a != SK_A_METRICS && a != SK_A_SALE_LIST && a != SK_A_DASHBOARD && a != SK_A_EVENTS &&
           a != SK_A_OPENAPI && a != SK_A_FEED;
}

static int has_order(sk_action_t a)
{
    return a == SK_A_ORDER_GET || a == SK_A_ORDER_CONFIRM || a == SK_A_ORDER_CANCEL;
}

/* Input: one byte whose low bit picks the listener, then "METHOD PATH" (no space: GET PATH). */
static void fuzz_route(const uint8_t *d, size_t n)
{
    const char *method = "GET", *path;
    size_t mlen = 3, plen;
    int admin;
    sk_match_t m, ma;
    int rc, rca;
    if (n < 1)
        return;
    admin = d[0] & 1;
    path = (const char *)d + 1;
    plen = n - 1;
    {
        const char *sp = memchr(path, ' ', plen);
        if (sp != NULL) {
            method = path;
            mlen = (size_t)(sp - path);
            plen -= mlen + 1;
            path = sp + 1;
        }
    }
    rc = sk_route(method, mlen, path, plen, admin, &m);
    CHECK(rc == 0 || rc == SK_ENOT_FOUND || rc == SK_EMETHOD_NOT_ALLOWED);
    CHECK(within(m.query, path, plen));
    if (m.query.p != NULL)
        CHECK(m.query.p > path && m.query.p[-1] == '?' && memchr(path, '?', (size_t)(m.query.p - 1 - path)) == NULL);
    if (rc == SK_ENOT_FOUND)
        return;
    CHECK(plen >= 1 && path[0] == '/');
    CHECK(within(m.sale, path, plen));
    CHECK(within(m.order, path, plen));
    if (m.sale.p != NULL)
        CHECK(m.sale.len >= 1 && !memchr(m.sale.p, '/', m.sale.len) && !memchr(m.sale.p, '?', m.sale.len));
    if (m.order.p != NULL)
        CHECK(m.order.len >= 1 && !memchr(m.order.p, '/', m.order.len) && !memchr(m.order.p, '?', m.order.len));
    if (rc == SK_EMETHOD_NOT_ALLOWED) {
        CHECK(m.allow != NULL && m.allow[0] != '\0');
        return;
    }
    CHECK(m.allow == NULL);
    CHECK((unsigned)m.action < SK_A_COUNT_);
    CHECK(strcmp(sk_action_name(m.action), "unknown") != 0);
    CHECK(has_sale(m.action) == (m.sale.p != NULL));
    CHECK(has_order(m.action) == (m.order.p != NULL));
    /* what the handler does next: the listing parses the query slice as the router left it,
     * which is {NULL, 0} when the target has no '?' */
    if (m.action == SK_A_ORDER_LIST)
        fuzz_list_query(m.query.p, m.query.len);
    if (m.action == SK_A_FEED)
        fuzz_feed_query(m.query.p, m.query.len);
    if (m.sale.p != NULL)
        (void)sk_valid_sale_id(m.sale.p, m.sale.len);
    if (m.order.p != NULL)
        CHECK(sk_parse_order_id(m.order.p, m.order.len) == ref_order_id((const uint8_t *)m.order.p, m.order.len));
    /* the public listener serves public actions only, and the admin listener serves everything */
    if (!admin) {
        CHECK(!sk_action_is_admin(m.action));
        rca = sk_route(method, mlen, path, plen, 1, &ma);
        CHECK(rca == 0 && ma.action == m.action);
    }
}

/* The sale rules on arbitrary in-contract numbers: 0..2^53. */
static int64_t units(const uint8_t *d)
{
    uint64_t v;
    memcpy(&v, d, sizeof(v));
    return (int64_t)(v % ((uint64_t)SK_MAX_UNITS + 1));
}

static void fuzz_rules(const uint8_t *d, size_t n)
{
    int64_t limit, taken, qty, stock, sold, held;
    sk_sale_view_t v;
    if (n < 48)
        return;
    limit = units(d), taken = units(d + 8), qty = units(d + 16);
    stock = units(d + 24), sold = units(d + 32), held = units(d + 40);
    if (qty >= 1) {
        int want = limit > 0 && taken + qty > limit; /* no overflow: all <= 2^53 */
        CHECK((sk_sale_check_user(limit, taken, qty) == SK_EUSER_LIMIT) == want);
        CHECK(sk_sale_check_user(limit, taken, qty) == 0 || sk_sale_check_user(limit, taken, qty) == SK_EUSER_LIMIT);
    }
    CHECK((sk_sale_check_restock(stock, sold, held) == 0) == (stock >= sold + held));
    memset(&v, 0, sizeof(v));
    v.conf = (sk_sale_conf_t){stock, limit, 0, SK_NO_TIME, SK_NO_TIME, SK_NO_TIME};
    v.sold = sold;
    v.held = held;
    CHECK(sk_sale_remaining(&v) >= 0);
    CHECK(sk_sale_remaining(&v) == (stock - sold - held > 0 ? stock - sold - held : 0));
    CHECK(sk_sale_check_stock(sk_sale_remaining(&v), qty ? qty : 1) == 0 ||
          sk_sale_check_stock(sk_sale_remaining(&v), qty ? qty : 1) == SK_ESOLD_OUT);
    {
        int64_t hold = (int64_t)(d[0] % 100) + 1;
        int64_t now_ms = units(d + 8) % INT64_C(4102444800000); /* to 2100 */
        int64_t e = sk_sale_expires_at(now_ms, hold);
        CHECK(e * 1000 - now_ms >= hold * 1000 && e * 1000 - now_ms < (hold + 1) * 1000);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = (const char *)data;
    fuzz_take(p, size);
    fuzz_sale_conf(p, size);
    fuzz_list_query(p, size);
    fuzz_feed_query(p, size);
    fuzz_idents(data, size);
    fuzz_route(data, size);
    fuzz_rules(data, size);
    return 0;
}
