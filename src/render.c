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

static void put_str(out_t *o, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    if (s == NULL) {
        PUT_LIT(o, "null");
        return;
    }
    PUT_LIT(o, "\"");
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            put(o, e, 2);
        } else if (c < 0x20 || c == 0x7f) {
            char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            put(o, e, 6);
        } else {
            put(o, (const char *)&c, 1);
        }
    }
    PUT_LIT(o, "\"");
}

static void put_int(out_t *o, int64_t v)
{
    char b[24];
    int n = snprintf(b, sizeof(b), "%lld", (long long)v);
    put(o, b, (size_t)n);
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
    char id[24];
    snprintf(id, sizeof(id), "%llu", (unsigned long long)ord->id);
    PUT_LIT(&o, "{\"sale\":");
    put_str(&o, ord->sale);
    PUT_LIT(&o, ",\"order\":");
    put_str(&o, id);
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
    PUT_LIT(&o, ",\"state\":");
    put_str(&o, sk_sale_state_name(sk_sale_state(v, now)));
    PUT_LIT(&o, "}");
    return o.len;
}
