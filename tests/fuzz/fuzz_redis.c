/* fuzz_redis.c: libFuzzer target for Redis replies: every reply handler of the Redis store
 * (store_redis.c, redis_requests.c, redis_sweep.c, reading through redis_reply.c: takes, sale
 * views and puts, sale listings, orders and order listings, confirm/cancel, the reaper) and the
 * ROLE check of redis_conn.c. The input draws a command and its requests, then reply trees:
 * encoded as RESP and read by hiredis's own reader, so the trees are exactly what hiredis hands
 * the store (arrays, bulk and status strings, errors, integers, nils, nested). Half of them are
 * shaped like the scripts' replies, with any value in any slot, so that the handlers get past
 * their first check. The replies reach the handlers through redis_conn.c's reply path
 * (store_redis_internal.h, redis_offline.c: an offline store whose connection never comes up, so
 * what a handler sends next fails as on a lost connection).
 *
 * Oracles: every request is answered exactly once; a reference decoder written here says what
 * each handler must answer (the error, or every field of the view or order it read), including
 * the rule that a reply outside what the scripts return (a unit count past 2^53, an order id
 * below 1, a user that is not a valid id, a NUL in a status...) is refused as unavailable, never
 * half-read; what is accepted renders to JSON that parses back; a sold-out learned from a take
 * reply answers the next take at once, and nothing else does; and ROLE against a reference. */
#include <hiredis/hiredis.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "fuzz_util.h"
#include "log.h"
#include "redis_conn_internal.h"
#include "render.h"
#include "sale.h"
#include "store_redis_internal.h"
#include "util.h"

#define MAX_REQS 6
#define MAX_REPS 4

/* the scripts' result codes, written again here as the reference (store_redis_internal.h: SK_REDIS_RESULTS) */
enum {
    OK,
    REPLAY,
    NO_SALE,
    NO_ORDER,
    BAD_REQUEST,
    NOT_STARTED,
    ENDED,
    USER_LIMIT,
    SOLD_OUT,
    REUSED,
    BELOW_TAKEN,
    NOT_HELD,
    CREATED,
    ACTIVE,
    EXPIRED,
    NCODES
};

/* ---- RESP from the input ---- */

static const char *const ERRORS[] = {"NOSCRIPT No matching script",
                                     "READONLY You can't write against a read only replica",
                                     "LOADING Redis is loading",
                                     "MASTERDOWN Link with MASTER is down",
                                     "NOAUTH Authentication required",
                                     "ERR unknown command",
                                     "WRONGTYPE"};
static const char *const STATUSES[] = {"held",    "confirmed", "cancelled", "expired",
                                       "held\0x", "HELD",      "",          "confirmedconfirmed"};
static const size_t STATUS_LEN[] = {4, 9, 9, 7, 6, 4, 0, 18};

static void put_int(sk_buf_t *b, long long v)
{
    sk_buf_printf(b, ":%lld\r\n", v);
}

static void put_bulk(sk_buf_t *b, const void *p, size_t n)
{
    sk_buf_printf(b, "$%zu\r\n", n);
    sk_buf_append(b, p, n);
    sk_buf_append(b, "\r\n", 2);
}

/* An integer for a slot: small codes and counts often, any value sometimes. */
static long long draw_int(fz_t *f)
{
    uint8_t k = fz_u8(f);
    if (k < 96)
        return k % 14;
    if (k < 128)
        return (long long)(k % 8) - 2;
    return fz_i64(f);
}

static void put_any(sk_buf_t *b, fz_t *f, int depth, int *budget);

/* A string for a slot: ids, names, statuses, or bytes. */
static void put_str(sk_buf_t *b, fz_t *f)
{
    static const char *const IDS[] = {"alice", "r-1", "s1", "phone", "\xc3\xa9t\xc3\xa9", "a\001b", "master", "slave"};
    uint8_t k = fz_u8(f);
    const uint8_t *p;
    if (k < 64) {
        put_bulk(b, STATUSES[k % 8], STATUS_LEN[k % 8]);
    } else if (k < 160) {
        put_bulk(b, IDS[k % 8], strlen(IDS[k % 8]));
    } else if (k < 168) {
        static const char big[200] = {0};
        char s[200];
        memset(s, 'u', sizeof(s));
        put_bulk(b, k & 1 ? s : big, 129 + (k & 7));
    } else {
        size_t n = fz_bytes(f, 64, &p);
        put_bulk(b, p, n);
    }
}

/* A slot meant to hold `t` ('i' integer, 's' string), another type at times. */
static void put_slot(sk_buf_t *b, fz_t *f, char t, int depth, int *budget)
{
    uint8_t k = fz_u8(f);
    if (k >= 240) {
        put_any(b, f, depth + 1, budget);
    } else if (t == 'i') {
        put_int(b, draw_int(f));
    } else {
        put_str(b, f);
    }
}

static void put_any(sk_buf_t *b, fz_t *f, int depth, int *budget)
{
    uint8_t k = fz_u8(f);
    const uint8_t *p;
    size_t n;
    if (--*budget <= 0 || depth > 4)
        k = 0;
    switch (k % 8) {
    case 0:
        put_int(b, draw_int(f));
        return;
    case 1:
        put_str(b, f);
        return;
    case 2:
        sk_buf_printf(b, "$-1\r\n");
        return;
    case 3: /* a status line: no CR or LF */
        n = fz_bytes(f, 32, &p);
        sk_buf_append(b, "+", 1);
        for (size_t i = 0; i < n; i++)
            sk_buf_append(b, p[i] == '\r' || p[i] == '\n' ? "x" : (const char *)p + i, 1);
        sk_buf_append(b, "\r\n", 2);
        return;
    case 4:
        sk_buf_printf(b, "-%s\r\n", ERRORS[fz_u8(f) % 7]);
        return;
    case 5:
        n = fz_u8(f) % 12;
        sk_buf_printf(b, "*%zu\r\n", n);
        for (size_t i = 0; i < n; i++)
            put_any(b, f, depth + 1, budget);
        return;
    case 6:
        sk_buf_printf(b, "*-1\r\n");
        return;
    default: /* an array of integers */
        n = fz_u8(f) % 12;
        sk_buf_printf(b, "*%zu\r\n", n);
        for (size_t i = 0; i < n; i++)
            put_int(b, draw_int(f));
        return;
    }
}

/* A reply shaped like a script's: `shape` gives the slots, the last `repeat` of them repeated. */
static void put_shaped(sk_buf_t *b, fz_t *f, const char *shape, size_t repeat, size_t times)
{
    size_t head = strlen(shape) - repeat, n = head + repeat * times;
    int budget = 16;
    uint8_t k = fz_u8(f);
    if (k >= 232) /* one slot more or less */
        n += (k & 1) ? 1 : (n > 0 ? (size_t)-1 : 0);
    sk_buf_printf(b, "*%zu\r\n", n);
    for (size_t i = 0; i < n; i++)
        put_slot(b, f, i < head ? shape[i] : shape[head + (i - head) % (repeat ? repeat : 1)], 1, &budget);
}

/* The RESP of a reply, printable (a static buffer). */
static const char *sk_buf_dup_escaped(const sk_buf_t *b)
{
    static char out[8192];
    size_t o = 0;
    for (size_t i = 0; i < b->len && o + 5 < sizeof(out); i++) {
        unsigned char c = (unsigned char)b->p[i];
        o += (size_t)(c >= 0x20 && c < 0x7f ? snprintf(out + o, 2, "%c", c) : snprintf(out + o, 5, "\\x%02x", c));
    }
    out[o] = '\0';
    return out;
}

static redisReply *read_reply(const sk_buf_t *b)
{
    redisReader *rd = redisReaderCreate();
    void *rep = NULL;
    CHECK(rd != NULL);
    CHECK(redisReaderFeed(rd, b->p, b->len) == REDIS_OK);
    if (redisReaderGetReply(rd, &rep) != REDIS_OK)
        rep = NULL;
    redisReaderFree(rd);
    return rep;
}

/* ---- the reference ---- */

typedef const redisReply rep_t;

static rep_t *el(rep_t *r, size_t i, int type)
{
    if (r == NULL || r->type != REDIS_REPLY_ARRAY || i >= r->elements || r->element[i]->type != type)
        return NULL;
    return r->element[i];
}

static int el_i(rep_t *r, size_t i, long long *v)
{
    rep_t *e = el(r, i, REDIS_REPLY_INTEGER);
    if (e != NULL)
        *v = e->integer;
    return e != NULL;
}

/* The error a script's code means; 0 only for the codes of success. */
static int code_err(long long c)
{
    static const int errs[NCODES] = {0,
                                     0,
                                     SK_ENO_SUCH_SALE,
                                     SK_ENO_SUCH_ORDER,
                                     SK_EBAD_REQUEST,
                                     SK_ENOT_STARTED,
                                     SK_EENDED,
                                     SK_EUSER_LIMIT,
                                     SK_ESOLD_OUT,
                                     SK_EREQUEST_ID_REUSED,
                                     SK_ESTOCK_BELOW_TAKEN,
                                     SK_EORDER_NOT_HELD,
                                     0,
                                     SK_ESALE_ACTIVE,
                                     SK_ECURSOR_EXPIRED};
    return c >= 0 && c < NCODES ? errs[c] : SK_EUNAVAILABLE;
}

/* The code of a script's reply: its first element, an integer; else the reply is unavailable. */
static int ref_code(rep_t *r, long long *c)
{
    return el_i(r, 0, c);
}

static int64_t tm(long long v)
{
    return v < 0 ? SK_NO_TIME : v;
}

static int units(long long v)
{
    return v >= 0 && v <= SK_MAX_UNITS;
}

/* A view (sale_reply): 0 and *v, or -1. */
static int ref_view(rep_t *r, const char *sale, sk_sale_view_t *v)
{
    long long x[8];
    for (size_t i = 0; i < 8; i++)
        if (!el_i(r, i, &x[i]))
            return -1;
    memset(v, 0, sizeof(*v));
    snprintf(v->id, sizeof(v->id), "%s", sale);
    long long retain = -1; /* optional: a reply of 8 elements has none */
    if (r->type == REDIS_REPLY_ARRAY && r->elements > 8 && !el_i(r, 8, &retain))
        return -1;
    v->conf = (sk_sale_conf_t){x[1], x[2], x[3], tm(x[4]), tm(x[5]), tm(retain)};
    if (v->conf.retain_seconds != SK_NO_TIME && v->conf.retain_seconds > SK_RETAIN_MAX)
        return -1;
    v->sold = x[6];
    v->held = x[7] > 0 ? x[7] : 0;
    if (!units(x[1]) || !units(x[2]) || x[3] < 0 || x[3] > 31536000 || !units(x[6]) || !units(v->held))
        return -1;
    if (v->conf.starts_at != SK_NO_TIME && v->conf.ends_at != SK_NO_TIME && v->conf.ends_at <= v->conf.starts_at)
        return -1;
    return 0;
}

typedef struct {
    sk_order_t o;
    char user[256], rid[256];
} ref_order_t;

static int status_of(rep_t *s)
{
    for (int k = 0; k < 4; k++)
        if (s->len == STATUS_LEN[k] && memcmp(s->str, STATUSES[k], s->len) == 0)
            return k + 1;
    return 0;
}

/* An order_reply whose fields start at k: 0 and *o, or -1. */
static int ref_order(rep_t *r, size_t k, const char *sale, uint64_t id, ref_order_t *o)
{
    rep_t *u = el(r, k, REDIS_REPLY_STRING), *st = el(r, k + 2, REDIS_REPLY_STRING),
          *rid = el(r, k + 3, REDIS_REPLY_STRING);
    long long qty, created, expires;
    memset(o, 0, sizeof(*o));
    if (u == NULL || !el_i(r, k + 1, &qty) || st == NULL || rid == NULL || !el_i(r, k + 4, &created) ||
        !el_i(r, k + 5, &expires))
        return -1;
    if ((o->o.status = status_of(st)) == 0 || qty < 1 || qty > SK_MAX_UNITS || created < 0)
        return -1;
    if ((u->len > 0 && !ref_valid_ident((const uint8_t *)u->str, u->len)) ||
        (rid->len > 0 && !ref_valid_ident((const uint8_t *)rid->str, rid->len)))
        return -1;
    if (o->o.status == SK_ORDER_HELD && expires < 0)
        return -1;
    snprintf(o->o.sale, sizeof(o->o.sale), "%s", sale);
    o->o.id = id;
    o->o.qty = qty;
    o->o.created_at = created;
    o->o.expires_at = tm(expires);
    memcpy(o->user, u->str, u->len);
    memcpy(o->rid, rid->str, rid->len);
    o->o.user = u->len ? o->user : NULL;
    o->o.request_id = rid->len ? o->rid : NULL;
    return 0;
}

/* ---- comparing and rendering what was answered ---- */

static int same_s(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

static void check_order(const sk_order_t *got, const sk_order_t *want)
{
    char buf[SK_RENDER_MAX];
    json_error_t e;
    CHECK(strcmp(got->sale, want->sale) == 0);
    CHECK(got->id == want->id && got->qty == want->qty && got->status == want->status);
    CHECK(got->created_at == want->created_at && got->expires_at == want->expires_at);
    CHECK(same_s(got->user, want->user) && same_s(got->request_id, want->request_id));
    size_t n = sk_render_order(buf, got, 0);
    json_t *j = json_loadb(buf, n, 0, &e);
    CHECK(j != NULL);
    json_decref(j);
}

static void check_view(const sk_sale_view_t *got, const sk_sale_view_t *want)
{
    char buf[SK_RENDER_MAX];
    json_error_t e;
    CHECK(strcmp(got->id, want->id) == 0);
    CHECK(memcmp(&got->conf, &want->conf, sizeof(got->conf)) == 0);
    CHECK(got->sold == want->sold && got->held == want->held);
    size_t n = sk_render_sale(buf, got, 0);
    json_t *j = json_loadb(buf, n, 0, &e);
    CHECK(j != NULL);
    json_decref(j);
}

/* ---- the target ---- */

static h2o_loop_t *loop;
static sk_store_worker_t *store;

static int answered[MAX_REQS];
static sk_store_req_t reqs[MAX_REQS];

static void answer_cb(sk_store_req_t *req)
{
    CHECK(req >= reqs && req < reqs + MAX_REQS);
    answered[req - reqs]++;
}

static void never_cb(sk_store_req_t *req)
{
    (void)req;
    CHECK(!"a take answered from the cache or refused at once has no callback");
}

static void setup(void)
{
    sk_log_level = (sk_log_level_t)(SK_LOG_ERROR + 1); /* quiet: every refused handshake would log */
    loop = h2o_evloop_create();
    /* the Redis store calls back on its loop, never through post */
    sk_store_env_t env = {.loop = loop, .index = 0, .post = NULL, .post_ctx = NULL};
    store = sk_store_redis_offline_open(&env);
    CHECK(store != NULL);
}

static void check_role(rep_t *r)
{
    rep_t *e = el(r, 0, REDIS_REPLY_STRING);
    int want = e != NULL && e->len == 6 && memcmp(e->str, "master", 6) == 0;
    if (r != NULL)
        CHECK(sk_redis_is_primary(r) == want);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const SALES[] = {"s1", "phone", "a.b-c_9"};
    static const char *const USERS[] = {NULL, "alice", "bob", "\xc3\xa9t\xc3\xa9"};
    static const char *const RIDS[] = {NULL, "r-1", "r-2"};
    fz_t f = {data, size};
    redisReply *reps[MAX_REPS] = {NULL};
    sk_buf_t bufs[MAX_REPS];
    size_t nreps, n = 1, queued = 0;

    if (store == NULL)
        setup();
    sk_store_redis_offline_reset(store);
    memset(reqs, 0, sizeof(reqs));
    memset(answered, 0, sizeof(answered));

    sk_redis_reply_kind_t kind = (sk_redis_reply_kind_t)(fz_u8(&f) % SK_REDIS_R_KINDS_);
    const char *sale = SALES[fz_u8(&f) % 3];
    if (kind == SK_REDIS_R_TAKE) {
        n = 1 + fz_u8(&f) % 4;
        queued = fz_u8(&f) % (MAX_REQS - n + 1);
    }
    for (size_t i = 0; i < n + queued; i++) {
        sk_store_req_t *q = &reqs[i];
        uint8_t k = fz_u8(&f);
        snprintf(q->sale, sizeof(q->sale), "%s", sale);
        q->cb = answer_cb;
        q->op = kind == SK_REDIS_R_CHANGE ? SK_STORE_ORDER_CHANGE : SK_STORE_TAKE;
        q->change = (k & 1) ? SK_OP_CANCEL_ORDER : SK_OP_CONFIRM_ORDER;
        q->user = USERS[(k >> 1) & 3];
        q->user_len = q->user ? strlen(q->user) : 0;
        q->request_id = RIDS[(k >> 3) % 3];
        q->request_id_len = q->request_id ? strlen(q->request_id) : 0;
        q->qty = 1 + (k >> 5);
        q->order_id = 1 + (k & 7);
        q->limit = 10;
    }

    /* the replies: shaped like the script's, or anything */
    nreps = kind == SK_REDIS_R_LIST_VIEW || kind == SK_REDIS_R_PUT ? 1 + fz_u8(&f) % (MAX_REPS - 1) : 1;
    if (kind == SK_REDIS_R_PUT)
        nreps++; /* the SADDs, then the script */
    for (size_t i = 0; i < nreps; i++) {
        uint8_t k = fz_u8(&f);
        int budget = 40;
        int script = !(kind == SK_REDIS_R_LIST_MEMBERS || kind == SK_REDIS_R_LIST_SLOTS ||
                       (kind == SK_REDIS_R_PUT && i + 1 < nreps));
        memset(&bufs[i], 0, sizeof(bufs[i]));
        if ((k & 1) == 0 || !script) {
            if ((k & 6) == 0)
                continue;                  /* NULL: the connection was lost first */
            if (!script && (k & 8) == 0) { /* SMEMBERS / SADD: strings, or an integer */
                if (kind == SK_REDIS_R_PUT) {
                    put_int(&bufs[i], draw_int(&f));
                } else {
                    size_t m = fz_u8(&f) % 6;
                    sk_buf_printf(&bufs[i], "*%zu\r\n", m);
                    for (size_t j = 0; j < m; j++)
                        put_str(&bufs[i], &f);
                }
            } else {
                put_any(&bufs[i], &f, 0, &budget);
            }
        } else {
            switch (kind) {
            case SK_REDIS_R_TAKE:
                put_shaped(&bufs[i], &f, "iiiiiiiiii", 4, n);
                break;
            case SK_REDIS_R_ORDER:
            case SK_REDIS_R_CHANGE:
                put_shaped(&bufs[i], &f, "isissii", 0, 0);
                break;
            case SK_REDIS_R_ORDERS:
                put_shaped(&bufs[i], &f, "iiisissii", 7, fz_u8(&f) % 4);
                break;
            case SK_REDIS_R_REAP:
                put_shaped(&bufs[i], &f, "iii", 0, 0);
                break;
            case SK_REDIS_R_DUE_GET:
                put_shaped(&bufs[i], &f, "iiii", 2, fz_u8(&f) % 4);
                break;
            case SK_REDIS_R_DUE_SET:
                put_shaped(&bufs[i], &f, "ii", 0, 0);
                break;
            default:
                put_shaped(&bufs[i], &f, "iiiiiiii", 0, 0);
                break;
            }
        }
        reps[i] = read_reply(&bufs[i]);
        CHECK(reps[i] != NULL);
        check_role(reps[i]);
    }

    if (getenv("SK_FUZZ_VERBOSE") != NULL) { /* what an input is, when replaying one */
        fprintf(stderr, "kind %d, %zu requests (+%zu queued), replies:\n", (int)kind, n, queued);
        for (size_t i = 0; i < nreps; i++)
            fprintf(stderr, "  %s\n", reps[i] ? sk_buf_dup_escaped(&bufs[i]) : "(none: the connection was lost)");
    }
    sk_store_redis_offline_reply(store, kind, reqs, n, queued, reps, nreps);

    /* exactly once, every kind but the reaper's */
    int reaper = kind == SK_REDIS_R_REAP || kind == SK_REDIS_R_DUE_GET || kind == SK_REDIS_R_DUE_SET;
    for (size_t i = 0; i < n + queued; i++)
        CHECK(answered[i] == (reaper ? 0 : 1));
    for (size_t i = n + queued; i < MAX_REQS; i++)
        CHECK(answered[i] == 0);

    rep_t *r = reps[0];
    long long c;
    sk_store_req_t *q = &reqs[0];
    switch (kind) {
    case SK_REDIS_R_VIEW: {
        sk_sale_view_t v;
        int err = ref_code(r, &c) ? code_err(c) : SK_EUNAVAILABLE;
        if (err == 0 && ref_view(r, sale, &v) != 0)
            err = SK_EUNAVAILABLE;
        CHECK(q->err == err);
        if (err == 0)
            check_view(&q->view, &v);
        break;
    }
    case SK_REDIS_R_PUT: {
        sk_sale_view_t v; /* the SADDs before are other puts' (no request): the script's reply decides */
        r = reps[nreps - 1];
        int err = ref_code(r, &c) ? code_err(c) : SK_EUNAVAILABLE;
        if (err == 0 && ref_view(r, sale, &v) != 0)
            err = SK_EUNAVAILABLE;
        CHECK(q->err == err);
        if (err == 0) {
            check_view(&q->view, &v);
            CHECK(q->created == (c == CREATED));
        }
        break;
    }
    case SK_REDIS_R_LIST_SLOTS: {
        int err = 0, any = 0;
        if (r == NULL || r->type != REDIS_REPLY_ARRAY)
            err = SK_EUNAVAILABLE;
        for (size_t i = 0; err == 0 && i < r->elements; i++) {
            const rep_t *e = r->element[i];
            long v = 0;
            size_t k = 0;
            if (e->type != REDIS_REPLY_STRING || e->len == 0)
                continue;
            while (k < e->len && e->str[k] >= '0' && e->str[k] <= '9' && v <= 16383)
                v = v * 10 + (e->str[k++] - '0');
            any |= k == e->len && v <= 16383;
        }
        if (any) /* a slot's SMEMBERS would go out now, on a connection that is down */
            err = SK_EUNAVAILABLE;
        CHECK(q->err == err);
        CHECK(q->nviews == 0);
        break;
    }
    case SK_REDIS_R_LIST_MEMBERS: {
        int err = 0, any = 0;
        if (r == NULL || r->type != REDIS_REPLY_ARRAY)
            err = SK_EUNAVAILABLE;
        for (size_t i = 0; err == 0 && i < r->elements; i++)
            any |= r->element[i]->type == REDIS_REPLY_STRING && r->element[i]->len >= 1 && r->element[i]->len <= 64;
        if (any) /* a view for it would go out now, on a connection that is down */
            err = SK_EUNAVAILABLE;
        CHECK(q->err == err);
        CHECK(q->nviews == 0);
        break;
    }
    case SK_REDIS_R_LIST_VIEW: {
        sk_sale_view_t want[MAX_REPS];
        size_t nv = 0;
        int err = 0;
        for (size_t i = 0; i < nreps; i++) {
            if (!ref_code(reps[i], &c) || (c != OK && c != NO_SALE) ||
                (c == OK && ref_view(reps[i], sale, &want[nv++]) != 0))
                err = SK_EUNAVAILABLE;
        }
        CHECK(q->err == err);
        if (err == 0) { /* sorted by id, which they share: in any order */
            int used[MAX_REPS] = {0};
            CHECK(q->nviews == nv);
            for (size_t i = 0; i < nv; i++) {
                size_t k = 0;
                while (k < nv && (used[k] || memcmp(&q->views[i].conf, &want[k].conf, sizeof(want[k].conf)) != 0 ||
                                  q->views[i].sold != want[k].sold || q->views[i].held != want[k].held))
                    k++;
                CHECK(k < nv);
                used[k] = 1;
                check_view(&q->views[i], &want[k]);
            }
        } else {
            CHECK(q->nviews == 0 && q->views == NULL);
        }
        break;
    }
    case SK_REDIS_R_ORDER:
    case SK_REDIS_R_CHANGE: {
        ref_order_t o;
        int err = ref_code(r, &c) ? code_err(c) : SK_EUNAVAILABLE;
        if (err == 0 && ref_order(r, 1, sale, q->order_id, &o) != 0)
            err = SK_EUNAVAILABLE;
        CHECK(q->err == err);
        if (err == 0)
            check_order(&q->order, &o.o);
        else
            CHECK(q->order.user == NULL && q->order.request_id == NULL);
        break;
    }
    case SK_REDIS_R_ORDERS: {
        static ref_order_t o[64];
        long long more, id;
        int err = ref_code(r, &c) ? code_err(c) : SK_EUNAVAILABLE;
        size_t no = 0;
        if (err == 0) {
            if (!el_i(r, 1, &more) || (r->elements - 2) % 7 != 0)
                err = SK_EUNAVAILABLE;
            for (size_t i = 0; err == 0 && i < (r->elements - 2) / 7; i++, no++)
                if (i >= 64 || !el_i(r, 2 + 7 * i, &id) || id < 1 ||
                    ref_order(r, 3 + 7 * i, sale, (uint64_t)id, &o[i]) != 0)
                    err = SK_EUNAVAILABLE;
        }
        CHECK(q->err == err);
        if (err == 0) {
            CHECK(q->norders == no && q->more == (more != 0));
            for (size_t i = 0; i < no; i++)
                check_order(&q->orders[i], &o[i].o);
        } else {
            CHECK(q->norders == 0 && q->orders == NULL && q->more == 0);
        }
        break;
    }
    case SK_REDIS_R_TAKE: {
        long long h[6] = {0};
        int ok = ref_code(r, &h[0]), learned;
        if (ok && h[0] == OK) {
            for (size_t i = 1; i < 6; i++)
                ok = ok && el_i(r, i, &h[i]);
            ok = ok && r->elements == 6 + 4 * n;
        }
        learned = ok && h[0] == OK && h[5] == 1 && h[1] == 0;
        for (size_t i = 0; i < n; i++) {
            sk_store_req_t *t = &reqs[i];
            long long v[4];
            int err;
            if (!ok)
                err = SK_EUNAVAILABLE;
            else if (h[0] != OK)
                err = code_err(h[0]) != 0 ? code_err(h[0]) : SK_EUNAVAILABLE;
            else if (!el_i(r, 6 + 4 * i, &v[0]) || !el_i(r, 7 + 4 * i, &v[1]) || !el_i(r, 8 + 4 * i, &v[2]) ||
                     !el_i(r, 9 + 4 * i, &v[3]))
                err = SK_EUNAVAILABLE;
            else if ((err = code_err(v[0])) == 0 && (v[1] < 1 || v[2] < 0))
                err = SK_EUNAVAILABLE;
            CHECK(t->err == err);
            if (err != 0) {
                CHECK(t->order.user == NULL && t->order.request_id == NULL);
                continue;
            }
            sk_order_t want = {.id = (uint64_t)v[1], .qty = t->qty, .created_at = v[2], .expires_at = tm(v[3])};
            snprintf(want.sale, sizeof(want.sale), "%s", sale);
            want.status = want.expires_at != SK_NO_TIME ? SK_ORDER_HELD : SK_ORDER_CONFIRMED;
            want.user = (char *)t->user;
            want.request_id = (char *)t->request_id;
            check_order(&t->order, &want);
            CHECK(t->created == (v[0] == OK));
        }
        /* whether the sold-out cache it taught answers a take now: the window open, the next hold
         * deadline not come (a second of margin either way: the clock moved between the reads) */
        int64_t now = sk_now_ms();
        int64_t deadline = h[4] >= 0 && h[4] < INT64_MAX / 1000 ? h[4] * 1000 : INT64_MAX, ends = tm(h[3]);
        int open = now + 1000 < deadline && (ends == SK_NO_TIME || now / 1000 + 1 < ends - 1);
        int closed = now - 1000 >= deadline || (ends != SK_NO_TIME && now / 1000 - 1 >= ends - 1);
        /* queued behind it: a take without a request id is answered from that cache when it was
         * learned (store_redis.c's drain), any other is flushed on a connection that is down */
        for (size_t i = n; i < n + queued; i++) {
            const sk_store_req_t *w = &reqs[i];
            int cached = sk_sale_soldout_answer(h[2], w->user != NULL, w->qty);
            /* the window by the request's own clock (now_ms), as the cache reads it */
            int ended = ends != SK_NO_TIME && w->now_ms / 1000 >= ends - 1;
            if (!learned || w->request_id != NULL || ended || now - 1000 >= deadline)
                CHECK(w->err == SK_EUNAVAILABLE);
            else if (now + 1000 < deadline)
                CHECK(w->err == cached);
            else
                CHECK(w->err == SK_EUNAVAILABLE || w->err == cached);
        }
        /* the next take without a request id: at once from the sold-out cache, or unavailable */
        sk_store_req_t next = {.op = SK_STORE_TAKE, .cb = never_cb, .qty = 1, .user = USERS[fz_u8(&f) & 1]};
        snprintf(next.sale, sizeof(next.sale), "%s", sale);
        next.user_len = next.user ? strlen(next.user) : 0;
        int rc = sk_store_submit(store, &next);
        if (!learned) {
            CHECK(rc == SK_EUNAVAILABLE);
        } else {
            if (open) {
                CHECK(rc == SK_STORE_DONE);
                CHECK(next.err == (h[2] > 0 && next.user == NULL ? SK_EBAD_REQUEST : SK_ESOLD_OUT));
            } else if (closed) {
                CHECK(rc == SK_EUNAVAILABLE);
            }
        }
        sk_store_req_dispose(&next);
        break;
    }
    default:
        break;
    }

    for (size_t i = 0; i < MAX_REQS; i++)
        sk_store_req_dispose(&reqs[i]);
    for (size_t i = 0; i < nreps; i++) {
        if (reps[i] != NULL)
            freeReplyObject(reps[i]);
        sk_buf_dispose(&bufs[i]);
    }
    return 0;
}
