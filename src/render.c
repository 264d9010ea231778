/* render.c: see render.h. */
#include "render.h"
#include <stdio.h>
#include <string.h>

typedef struct {
    char *p;
    size_t len;
} out_t;

static void put(out_t *o, const char *s, size_t n)
{
    if (o->len + n < SK_RENDER_MAX) {
        memcpy(o->p + o->len, s, n);
        o->len += n;
    }
}

#define PUT_LIT(o, s) put(o, s, sizeof(s) - 1)

/* A JSON string: runs of bytes that need no escape are copied at once. */
static void put_str(out_t *o, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    if (s == NULL) {
        PUT_LIT(o, "null");
        return;
    }
    PUT_LIT(o, "\"");
    for (;;) {
        const char *run = s;
        unsigned char c;
        while ((c = (unsigned char)*s) >= 0x20 && c != '"' && c != '\\' && c != 0x7f)
            s++;
        put(o, run, (size_t)(s - run));
        if (c == '\0')
            break;
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            put(o, e, 2);
        } else {
            char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            put(o, e, 6);
        }
        s++;
    }
    PUT_LIT(o, "\"");
}

/* Decimal digits without stdio: snprintf was two thirds of the cost of rendering an order. */
static void put_u64(out_t *o, uint64_t v)
{
    char b[20];
    size_t i = sizeof(b);
    do {
        b[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    put(o, b + i, sizeof(b) - i);
}

static void put_int(out_t *o, int64_t v)
{
    if (v < 0) {
        PUT_LIT(o, "-");
        put_u64(o, (uint64_t)0 - (uint64_t)v);
    } else {
        put_u64(o, (uint64_t)v);
    }
}

static void put_time(out_t *o, int64_t t)
{
    if (t == SK_NO_TIME)
        PUT_LIT(o, "null");
    else
        put_int(o, t);
}

size_t sk_render_order(char *buf, const sk_order_t *ord, int64_t now)
{
    out_t o = {buf, 0};
    PUT_LIT(&o, "{\"sale\":");
    put_str(&o, ord->sale);
    PUT_LIT(&o, ",\"order\":\""); /* the id is a string of digits: nothing to escape */
    put_u64(&o, ord->id);
    PUT_LIT(&o, "\"");
    PUT_LIT(&o, ",\"user\":");
    put_str(&o, ord->user);
    PUT_LIT(&o, ",\"qty\":");
    put_int(&o, ord->qty);
    PUT_LIT(&o, ",\"status\":");
    put_str(&o, sk_order_status_name(sk_order_effective(ord->status, ord->expires_at, now)));
    PUT_LIT(&o, ",\"request_id\":");
    put_str(&o, ord->request_id);
    PUT_LIT(&o, ",\"created_at\":");
    put_int(&o, ord->created_at);
    PUT_LIT(&o, ",\"expires_at\":");
    put_time(&o, ord->expires_at);
    PUT_LIT(&o, "}");
    return o.len;
}

size_t sk_render_sale(char *buf, const sk_sale_view_t *v, int64_t now)
{
    out_t o = {buf, 0};
    PUT_LIT(&o, "{\"sale\":");
    put_str(&o, v->id);
    PUT_LIT(&o, ",\"stock\":");
    put_int(&o, v->conf.stock);
    PUT_LIT(&o, ",\"sold\":");
    put_int(&o, v->sold);
    PUT_LIT(&o, ",\"held\":");
    put_int(&o, v->held);
    PUT_LIT(&o, ",\"remaining\":");
    put_int(&o, sk_sale_remaining(v));
    PUT_LIT(&o, ",\"per_user_limit\":");
    put_int(&o, v->conf.per_user_limit);
    PUT_LIT(&o, ",\"hold_seconds\":");
    put_int(&o, v->conf.hold_seconds);
    PUT_LIT(&o, ",\"starts_at\":");
    put_time(&o, v->conf.starts_at);
    PUT_LIT(&o, ",\"ends_at\":");
    put_time(&o, v->conf.ends_at);
    PUT_LIT(&o, ",\"retain_seconds\":");
    put_time(&o, v->conf.retain_seconds);
    PUT_LIT(&o, ",\"state\":");
    put_str(&o, sk_sale_state_name(sk_sale_state(v, now)));
    PUT_LIT(&o, "}");
    return o.len;
}

void sk_render_sale_list(sk_buf_t *b, const sk_sale_view_t *views, size_t n, int64_t now)
{
    char buf[SK_RENDER_MAX];
    sk_buf_append(b, "{\"sales\":[", 10);
    for (size_t i = 0; i < n; i++) {
        if (i > 0)
            sk_buf_append(b, ",", 1);
        sk_buf_append(b, buf, sk_render_sale(buf, &views[i], now));
    }
    sk_buf_append(b, "]}", 2);
}

void sk_render_order_list(sk_buf_t *b, const sk_order_t *orders, size_t n, const char *next, int64_t now)
{
    char buf[SK_RENDER_MAX];
    sk_buf_append(b, "{\"orders\":[", 11);
    for (size_t i = 0; i < n; i++) {
        if (i > 0)
            sk_buf_append(b, ",", 1);
        sk_buf_append(b, buf, sk_render_order(buf, &orders[i], now));
    }
    if (next != NULL)
        sk_buf_printf(b, "],\"next\":\"%s\"}", next);
    else
        sk_buf_append(b, "],\"next\":null}", 14);
}

/* A text cell. One that a spreadsheet would run as a formula (its first character one of = + - @,
 * tab or CR) is neutralised as OWASP recommends ("CSV Injection"): a single quote before it, and
 * the cell quoted. A reader that wants the value back drops that quote. */
static void csv_field(sk_buf_t *b, const char *s)
{
    if (s == NULL)
        return;
    int formula = strchr(SK_CSV_FORMULA_FIRST, s[0]) != NULL && s[0] != '\0';
    if (!formula && strpbrk(s, ",\"\r\n") == NULL) {
        sk_buf_append(b, s, strlen(s));
        return;
    }
    sk_buf_append(b, formula ? "\"'" : "\"", formula ? 2 : 1);
    for (const char *p = s; *p; p++) {
        if (*p == '"')
            sk_buf_append(b, "\"", 1);
        sk_buf_append(b, p, 1);
    }
    sk_buf_append(b, "\"", 1);
}

void sk_render_orders_csv(sk_buf_t *b, const sk_order_t *orders, size_t n, int64_t now)
{
    sk_render_orders_csv_head(b);
    sk_render_orders_csv_rows(b, orders, n, now);
}

void sk_render_orders_csv_head(sk_buf_t *b)
{
    sk_buf_append(b, SK_CSV_ORDERS_HEAD "\r\n", sizeof(SK_CSV_ORDERS_HEAD "\r\n") - 1);
}

void sk_render_orders_csv_rows(sk_buf_t *b, const sk_order_t *orders, size_t n, int64_t now)
{
    for (size_t i = 0; i < n; i++) {
        const sk_order_t *o = &orders[i];
        csv_field(b, o->sale);
        sk_buf_printf(b, ",%llu,", (unsigned long long)o->id);
        csv_field(b, o->user);
        sk_buf_printf(b, ",%lld,%s,", (long long)o->qty,
                      sk_order_status_name(sk_order_effective(o->status, o->expires_at, now)));
        csv_field(b, o->request_id);
        sk_buf_printf(b, ",%lld,", (long long)o->created_at);
        if (o->expires_at != SK_NO_TIME)
            sk_buf_printf(b, "%lld", (long long)o->expires_at);
        sk_buf_append(b, "\r\n", 2);
    }
}
