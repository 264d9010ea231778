/* fuzz_writers.c: libFuzzer target for what the API writes: the order and sale bodies (render.c)
 * and the CSV of an order listing (sk_render_orders_csv, render.c). Orders and sales are drawn from the
 * input, then written.
 *
 * Oracle: round trips. What render.c writes must parse with jansson to exactly the values it was
 * made from, the shown status and sale state and remaining units as a reference computes them
 * here; what the CSV writer writes must parse with a small RFC 4180 reader (written here) to
 * exactly the fields it was made from, one record per order. In contract means what the stores
 * hand the writers: sale ids [A-Za-z0-9_.-]{1,64}, users and request ids of at most 128 bytes of
 * valid UTF-8 without NUL (control characters included: the writers escape them), units in
 * 0..2^53; any other string is still written within the buffer, and only checked for that. */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api_internal.h"
#include "fuzz_util.h"
#include "render.h"

#define MAX_ORDERS 3

static const char SALE_CHARS[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-";

/* Well-formed UTF-8 (any code point, controls included; NUL cannot be in a C string): what jansson
 * reads back. The byte ranges of the Unicode standard's table 3-7. */
FZ_ORACLE static int utf8_ok(const char *str)
{
    const uint8_t *s = (const uint8_t *)str;
    while (*s != 0) {
        uint8_t b = *s, lo = 0x80, hi = 0xbf;
        size_t n;
        if (b < 0x80) {
            s++;
            continue;
        }
        if (b >= 0xc2 && b <= 0xdf)
            n = 1;
        else if (b == 0xe0)
            n = 2, lo = 0xa0;
        else if ((b >= 0xe1 && b <= 0xec) || b == 0xee || b == 0xef)
            n = 2;
        else if (b == 0xed)
            n = 2, hi = 0x9f;
        else if (b == 0xf0)
            n = 3, lo = 0x90;
        else if (b >= 0xf1 && b <= 0xf3)
            n = 3;
        else if (b == 0xf4)
            n = 3, hi = 0x8f;
        else
            return 0;
        if (s[1] < lo || s[1] > hi) /* a NUL fails here too */
            return 0;
        for (size_t k = 2; k <= n; k++)
            if (s[k] < 0x80 || s[k] > 0xbf)
                return 0;
        s += n + 1;
    }
    return 1;
}

static void draw_sale_id(fz_t *f, char *id)
{
    size_t n = 1 + fz_u8(f) % SK_SALE_ID_MAX;
    for (size_t i = 0; i < n; i++)
        id[i] = SALE_CHARS[fz_u8(f) % (sizeof(SALE_CHARS) - 1)];
    id[n] = '\0';
}

/* A user or request id: NULL, or bytes from the input (in contract or not: see *inside). */
static char *draw_ident(fz_t *f, char *buf, size_t cap, int *inside)
{
    uint8_t k = fz_u8(f);
    if ((k & 3) == 0)
        return NULL;
    size_t n = fz_str(f, buf, cap);
    if (n == 0)
        return NULL;
    if (n > SK_IDENT_MAX || !utf8_ok(buf))
        *inside = 0;
    return buf;
}

static int64_t draw_units(fz_t *f)
{
    return (int64_t)(fz_u64(f, 8) % ((uint64_t)SK_MAX_UNITS + 1));
}

static int64_t draw_time(fz_t *f)
{
    uint8_t k = fz_u8(f);
    return (k & 3) == 0 ? SK_NO_TIME : fz_i64(f);
}

/* ---- references ---- */

FZ_ORACLE static const char *ref_status(const sk_order_t *o, int64_t now)
{
    static const char *const names[] = {"", "held", "confirmed", "cancelled", "expired"};
    if (o->status == SK_ORDER_HELD && o->expires_at != SK_NO_TIME && o->expires_at <= now)
        return "expired";
    return names[o->status];
}

FZ_ORACLE static int64_t ref_remaining(const sk_sale_view_t *v)
{
    /* in contract all three are in 0..2^53: no overflow */
    int64_t r = v->conf.stock - v->sold - v->held;
    return r < 0 ? 0 : r;
}

FZ_ORACLE static const char *ref_state(const sk_sale_view_t *v, int64_t now)
{
    if (v->conf.starts_at != SK_NO_TIME && now < v->conf.starts_at)
        return "scheduled";
    if (v->conf.ends_at != SK_NO_TIME && now >= v->conf.ends_at)
        return "ended";
    return ref_remaining(v) > 0 ? "open" : "sold_out";
}

/* ---- JSON ---- */

FZ_ORACLE static void check_str(json_t *o, const char *key, const char *want)
{
    json_t *v = json_object_get(o, key);
    CHECK(v != NULL);
    if (want == NULL) {
        CHECK(json_is_null(v));
    } else {
        CHECK(json_is_string(v));
        CHECK(json_string_length(v) == strlen(want) && memcmp(json_string_value(v), want, strlen(want)) == 0);
    }
}

FZ_ORACLE static void check_int(json_t *o, const char *key, int64_t want, int nullable)
{
    json_t *v = json_object_get(o, key);
    CHECK(v != NULL);
    if (nullable && want == SK_NO_TIME)
        CHECK(json_is_null(v));
    else
        CHECK(json_is_integer(v) && json_integer_value(v) == want);
}

FZ_ORACLE static json_t *load(const char *buf, size_t n)
{
    json_error_t e;
    json_t *j = json_loadb(buf, n, JSON_REJECT_DUPLICATES, &e);
    if (j == NULL)
        fprintf(stderr, "not JSON (%s): %.*s\n", e.text, (int)n, buf);
    CHECK(j != NULL && json_is_object(j));
    return j;
}

FZ_ORACLE static void check_order_json(const sk_order_t *o, int64_t now, int inside)
{
    char buf[SK_RENDER_MAX], id[24];
    size_t n = sk_render_order(buf, o, now);
    CHECK(n > 0 && n < SK_RENDER_MAX);
    if (!inside)
        return;
    json_t *j = load(buf, n);
    snprintf(id, sizeof(id), "%llu", (unsigned long long)o->id);
    CHECK(json_object_size(j) == 8);
    check_str(j, "sale", o->sale);
    check_str(j, "order", id);
    check_str(j, "user", o->user);
    check_int(j, "qty", o->qty, 0);
    check_str(j, "status", ref_status(o, now));
    check_str(j, "request_id", o->request_id);
    check_int(j, "created_at", o->created_at, 0);
    check_int(j, "expires_at", o->expires_at, 1);
    json_decref(j);
}

FZ_ORACLE static void check_sale_json(const sk_sale_view_t *v, int64_t now)
{
    char buf[SK_RENDER_MAX];
    size_t n = sk_render_sale(buf, v, now);
    CHECK(n > 0 && n < SK_RENDER_MAX);
    json_t *j = load(buf, n);
    CHECK(json_object_size(j) == 11);
    check_int(j, "retain_seconds", v->conf.retain_seconds, 1);
    check_str(j, "sale", v->id);
    check_int(j, "stock", v->conf.stock, 0);
    check_int(j, "sold", v->sold, 0);
    check_int(j, "held", v->held, 0);
    check_int(j, "remaining", ref_remaining(v), 0);
    check_int(j, "per_user_limit", v->conf.per_user_limit, 0);
    check_int(j, "hold_seconds", v->conf.hold_seconds, 0);
    check_int(j, "starts_at", v->conf.starts_at, 1);
    check_int(j, "ends_at", v->conf.ends_at, 1);
    check_str(j, "state", ref_state(v, now));
    json_decref(j);
}

/* ---- CSV: a reader per RFC 4180 ---- */

#define FIELD_MAX 1024

typedef struct {
    char f[8][FIELD_MAX];
    size_t len[8];
    int n;
} record_t;

/* Reads one CRLF-terminated record at *pos into r; returns 0, or -1 when malformed. */
FZ_ORACLE static int csv_record(const char *s, size_t n, size_t *pos, record_t *r)
{
    size_t i = *pos;
    r->n = 0;
    for (;;) {
        char *out;
        size_t o = 0;
        if (r->n == 8)
            return -1;
        out = r->f[r->n];
        if (i < n && s[i] == '"') {
            for (i++;; i++) {
                if (i >= n || o == FIELD_MAX)
                    return -1;
                if (s[i] == '"') {
                    if (i + 1 < n && s[i + 1] == '"') {
                        out[o++] = '"';
                        i++;
                        continue;
                    }
                    i++;
                    break;
                }
                out[o++] = s[i];
            }
        } else {
            while (i < n && s[i] != ',' && s[i] != '\r' && s[i] != '\n' && s[i] != '"') {
                if (o == FIELD_MAX)
                    return -1;
                out[o++] = s[i++];
            }
        }
        r->len[r->n++] = o;
        if (i < n && s[i] == ',') {
            i++;
            continue;
        }
        if (i + 1 < n && s[i] == '\r' && s[i + 1] == '\n') {
            *pos = i + 2;
            return 0;
        }
        return -1;
    }
}

FZ_ORACLE static int field_is(const record_t *r, int k, const char *want)
{
    size_t n = want ? strlen(want) : 0;
    return r->len[k] == n && memcmp(r->f[k], want ? want : "", n) == 0;
}

/* What a text cell must read back as: the value, after a single quote when a spreadsheet would
 * take it for a formula (its first byte is one of = + - @ TAB CR), written out here again. */
FZ_ORACLE static int cell_is(const record_t *r, int k, const char *want)
{
    if (want == NULL ||
        !(want[0] == '=' || want[0] == '+' || want[0] == '-' || want[0] == '@' || want[0] == '\t' || want[0] == '\r'))
        return field_is(r, k, want);
    size_t n = strlen(want);
    return r->len[k] == n + 1 && r->f[k][0] == '\'' && memcmp(r->f[k] + 1, want, n) == 0;
}

FZ_ORACLE static void check_csv(const sk_order_t *o, size_t n, int64_t now)
{
    sk_buf_t b = {0};
    record_t r;
    size_t pos = 0;
    char num[32];
    sk_render_orders_csv(&b, o, n, now);
    CHECK(csv_record(b.p, b.len, &pos, &r) == 0 && r.n == 8);
    static const char *const head[] = {"sale",   "order",      "user",       "qty",
                                       "status", "request_id", "created_at", "expires_at"};
    for (int k = 0; k < 8; k++)
        CHECK(field_is(&r, k, head[k]));
    for (size_t i = 0; i < n; i++) {
        CHECK(csv_record(b.p, b.len, &pos, &r) == 0);
        CHECK(r.n == 8);
        CHECK(cell_is(&r, 0, o[i].sale));
        snprintf(num, sizeof(num), "%llu", (unsigned long long)o[i].id);
        CHECK(field_is(&r, 1, num));
        CHECK(cell_is(&r, 2, o[i].user));
        snprintf(num, sizeof(num), "%lld", (long long)o[i].qty);
        CHECK(field_is(&r, 3, num));
        CHECK(field_is(&r, 4, ref_status(&o[i], now)));
        CHECK(cell_is(&r, 5, o[i].request_id));
        snprintf(num, sizeof(num), "%lld", (long long)o[i].created_at);
        CHECK(field_is(&r, 6, num));
        if (o[i].expires_at == SK_NO_TIME)
            num[0] = '\0';
        else
            snprintf(num, sizeof(num), "%lld", (long long)o[i].expires_at);
        CHECK(field_is(&r, 7, num));
    }
    CHECK(pos == b.len);
    sk_buf_dispose(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_t f = {data, size};
    sk_order_t o[MAX_ORDERS];
    char users[MAX_ORDERS][256], rids[MAX_ORDERS][256];
    size_t n = 1 + fz_u8(&f) % MAX_ORDERS;
    int64_t now = fz_i64(&f);

    for (size_t i = 0; i < n; i++) {
        int one = 1;
        memset(&o[i], 0, sizeof(o[i]));
        draw_sale_id(&f, o[i].sale);
        o[i].id = 1 + fz_u64(&f, 8) % (uint64_t)INT64_MAX;
        o[i].qty = 1 + draw_units(&f) % SK_MAX_UNITS;
        o[i].status = (sk_order_status_t)(1 + fz_u8(&f) % 4);
        o[i].created_at = fz_i64(&f);
        o[i].expires_at = draw_time(&f);
        o[i].user = draw_ident(&f, users[i], sizeof(users[i]), &one);
        o[i].request_id = draw_ident(&f, rids[i], sizeof(rids[i]), &one);
        check_order_json(&o[i], now, one);
    }
    /* CSV carries any bytes but NUL: no contract on the strings beyond that */
    check_csv(o, n, now);

    sk_sale_view_t v;
    memset(&v, 0, sizeof(v));
    draw_sale_id(&f, v.id);
    v.conf.stock = draw_units(&f);
    v.sold = draw_units(&f);
    v.held = draw_units(&f);
    v.conf.per_user_limit = fz_i64(&f);
    v.conf.hold_seconds = fz_i64(&f);
    v.conf.starts_at = draw_time(&f);
    v.conf.ends_at = draw_time(&f);
    v.conf.retain_seconds = draw_time(&f);
    check_sale_json(&v, now);
    return 0;
}
