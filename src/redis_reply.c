/* redis_reply.c: the Redis store's reading of its scripts' replies (store_redis_internal.h): a
 * sale view (common.lua's sale_reply), an order (order_reply), a page of orders (orders.lua), a
 * page of the winners feed (feed.lua), an entry id. Each returns 0, or -1 for anything the
 * scripts cannot have written (another shape, a number out of range), which is never half read:
 * a request then answers 503. The take's reply is read where takes are (store_redis.c); every
 * reply handler is fuzzed through redis_offline.c (tests/fuzz/fuzz_redis.c). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "parse.h"
#include "store_redis_internal.h"
#include "util.h"

/* A sale_reply (common.lua) into a view. */
int sk_store_redis_parse_view(const redisReply *r, const char *sale, sk_sale_view_t *v)
{
    long long x[SR_LEN];
    for (size_t i = 0; i < SR_LEN; i++)
        if (el_int(r, i, &x[i]) != 0)
            return -1;
    memset(v, 0, sizeof(*v));
    snprintf(v->id, sizeof(v->id), "%s", sale);
    v->conf.stock = x[SR_STOCK];
    v->conf.per_user_limit = x[SR_LIMIT];
    v->conf.hold_seconds = x[SR_HOLD];
    v->conf.starts_at = time_of(x[SR_STARTS]);
    v->conf.ends_at = time_of(x[SR_ENDS]);
    long long retain = -1;
    if (r->elements > SR_RETAIN && el_int(r, SR_RETAIN, &retain) != 0)
        return -1;
    v->conf.retain_seconds = time_of(retain);
    v->sold = x[SR_SOLD];
    v->held = x[SR_HELD] > 0 ? x[SR_HELD] : 0;
    /* only what put.lua can have stored: other numbers are not our data (and would overflow the
     * sums that render a sale) */
    const char *why;
    if (sk_sale_conf_check(&v->conf, &why) != 0 || v->sold < 0 || v->sold > SK_MAX_UNITS || v->held > SK_MAX_UNITS)
        return -1;
    return 0;
}

/* An order_reply (common.lua) whose fields start at element k. */
int sk_store_redis_parse_order(const redisReply *r, size_t k, const char *sale, uint64_t id, sk_order_t *o)
{
    const char *user, *status, *rid;
    size_t ulen, slen, rlen;
    long long qty, created, expires;
    char st[16];
    memset(o, 0, sizeof(*o));
    if (el_str(r, k + OR_USER, &user, &ulen) != 0 || el_int(r, k + OR_QTY, &qty) != 0 ||
        el_str(r, k + OR_STATUS, &status, &slen) != 0 || el_str(r, k + OR_REQUEST_ID, &rid, &rlen) != 0 ||
        el_int(r, k + OR_CREATED, &created) != 0 || el_int(r, k + OR_EXPIRES, &expires) != 0 || slen >= sizeof(st) ||
        memchr(status, '\0', slen) != NULL)
        return -1;
    /* only what take.lua can have stored, as the embedded store's rebuild checks its rows */
    if (qty < 1 || qty > SK_MAX_UNITS || created < 0 || (ulen > 0 && !sk_valid_ident(user, ulen)) ||
        (rlen > 0 && !sk_valid_ident(rid, rlen)))
        return -1;
    memcpy(st, status, slen);
    st[slen] = '\0';
    if ((o->status = sk_order_status_parse(st)) == 0 || (o->status == SK_ORDER_HELD && expires < 0))
        return -1;
    snprintf(o->sale, sizeof(o->sale), "%s", sale);
    o->id = id;
    o->qty = qty;
    o->created_at = created;
    o->expires_at = time_of(expires);
    o->user = ulen > 0 ? sk_strndup(user, ulen) : NULL;
    o->request_id = rlen > 0 ? sk_strndup(rid, rlen) : NULL;
    return 0;
}

/* orders.lua's reply (OL_*, then OE_LEN elements per order) into req->orders, norders and more. */
int sk_store_redis_parse_orders(const redisReply *rep, sk_store_req_t *req)
{
    long long more, id;
    size_t n = rep->elements >= OL_LEN ? (rep->elements - OL_LEN) / OE_LEN : 0;
    if (el_int(rep, OL_MORE, &more) != 0 || rep->elements != OL_LEN + OE_LEN * n)
        return -1;
    req->orders = sk_calloc(n ? n : 1, sizeof(*req->orders));
    for (size_t i = 0; i < n; i++) {
        size_t at = OL_LEN + OE_LEN * i;
        if (el_int(rep, at + OE_ID, &id) != 0 || id < 1 ||
            sk_store_redis_parse_order(rep, at + OE_ORDER, req->sale, (uint64_t)id, &req->orders[i]) != 0) {
            sk_order_dispose(&req->orders[i]);
            return -1; /* the caller disposes of what was parsed */
        }
        req->norders++;
    }
    req->more = more != 0;
    return 0;
}

/* An entry id ("HI-LO") into a cursor. */
int sk_store_redis_parse_cursor(const char *s, size_t len, sk_cursor_t *c)
{
    char buf[48];
    if (len == 0 || len >= sizeof(buf))
        return -1;
    memcpy(buf, s, len);
    buf[len] = '\0';
    return sk_parse_cursor(buf, len, &c->hi, &c->lo);
}

/* feed.lua's reply: the next cursor, more, then the events, FE_LEN elements each. */
enum feed_each_e {
    FE_SALE,
    FE_EVENT,
    FE_ORDER,
    FE_USER,
    FE_QTY,
    FE_STATUS,
    FE_RID,
    FE_CREATED,
    FE_EXPIRES,
    FE_ID,
    FE_LEN
};

int sk_store_redis_parse_feed(const redisReply *rep, sk_store_req_t *req)
{
    static const char *const KINDS[] = {"created", "confirmed", "cancelled", "expired"};
    const char *s;
    size_t len;
    long long more;
    if (el_str(rep, 1, &s, &len) != 0 || sk_store_redis_parse_cursor(s, len, &req->cursor) != 0 ||
        el_int(rep, 2, &more) != 0 || (rep->elements - 3) % FE_LEN != 0)
        return -1;
    size_t n = (rep->elements - 3) / FE_LEN;
    req->events = n > 0 ? sk_calloc(n, sizeof(*req->events)) : NULL;
    for (size_t i = 0; i < n; i++) {
        redisReply *const *e = rep->element + 3 + i * FE_LEN;
        sk_feed_event_t *ev = &req->events[i];
        char num[24], sale[SK_SALE_ID_MAX + 1], *end;
        for (size_t k = 0; k < FE_LEN; k++)
            if (e[k]->type != REDIS_REPLY_STRING)
                return -1;
        req->nevents = i + 1; /* what is filled is disposed */
        if (e[FE_SALE]->len == 0 || e[FE_SALE]->len > SK_SALE_ID_MAX ||
            !sk_valid_sale_id(e[FE_SALE]->str, e[FE_SALE]->len))
            return -1;
        memcpy(sale, e[FE_SALE]->str, e[FE_SALE]->len);
        sale[e[FE_SALE]->len] = '\0';
        ev->kind = 0;
        for (int k = 0; k < 4; k++)
            if (e[FE_EVENT]->len == strlen(KINDS[k]) && memcmp(e[FE_EVENT]->str, KINDS[k], e[FE_EVENT]->len) == 0)
                ev->kind = (sk_feed_kind_t)(k + 1);
        if (ev->kind == 0 || sk_store_redis_parse_cursor(e[FE_ID]->str, e[FE_ID]->len, &ev->cursor) != 0 ||
            e[FE_ORDER]->len == 0 || e[FE_ORDER]->len >= sizeof(num))
            return -1;
        memcpy(num, e[FE_ORDER]->str, e[FE_ORDER]->len);
        num[e[FE_ORDER]->len] = '\0';
        unsigned long long id = strtoull(num, &end, 10);
        if (*end != '\0' || id == 0)
            return -1;
        /* the order's fields as an order_reply (common.lua) reads them */
        redisReply f[OR_LEN], *fp[OR_LEN + 1];
        long long iv[3];
        const redisReply *src[3] = {e[FE_QTY], e[FE_CREATED], e[FE_EXPIRES]};
        for (int k = 0; k < 3; k++) {
            if (src[k]->len >= sizeof(num))
                return -1;
            memcpy(num, src[k]->str, src[k]->len);
            num[src[k]->len] = '\0';
            iv[k] = src[k]->len == 0 ? -1 : strtoll(num, &end, 10);
            if (src[k]->len > 0 && *end != '\0')
                return -1;
        }
        memset(f, 0, sizeof(f));
        f[OR_USER] = *e[FE_USER];
        f[OR_STATUS] = *e[FE_STATUS];
        f[OR_REQUEST_ID] = *e[FE_RID];
        f[OR_QTY] = (redisReply){.type = REDIS_REPLY_INTEGER, .integer = iv[0]};
        f[OR_CREATED] = (redisReply){.type = REDIS_REPLY_INTEGER, .integer = iv[1]};
        f[OR_EXPIRES] = (redisReply){.type = REDIS_REPLY_INTEGER, .integer = iv[2]};
        redisReply arr = {.type = REDIS_REPLY_ARRAY, .elements = OR_LEN + 1, .element = fp};
        redisReply code = {.type = REDIS_REPLY_INTEGER};
        fp[0] = &code;
        for (int k = 0; k < OR_LEN; k++)
            fp[k + 1] = &f[k];
        if (sk_store_redis_parse_order(&arr, 1, sale, id, &ev->order) != 0)
            return -1;
    }
    req->more = more != 0;
    return 0;
}
