/* store_redis.c: the Redis store (store.h) for `--store redis://[:PASSWORD@]HOST:PORT[/DB]`
 * (or unix:// or redis-sentinel://, redis_ha.h).
 *
 * Every worker thread has one Redis connection (redis_conn.c) on its own h2o evloop, in its
 * store handle, so a request and its answer never leave the worker that received it: the reply
 * callback runs on the caller's loop and calls req->cb directly. Each
 * decision is one Lua script (src/lua/, embedded at build time; common.lua is prepended to each)
 * that checks and records in one atomic step; docs/redis.md has the key layout and the stream.
 *
 * Coalescing: takes for one sale that reach a worker while a take script for that sale is in
 * flight wait in that sale's queue and go out together as one script call (at most BATCH_MAX,
 * each with its own answer).
 *
 * Sold-out fast path: a worker that learns that a sale is sold out keeps that answer for
 * SOLDOUT_TTL_MS, never past the sale's next hold deadline, and forgets it at once when this
 * instance cancels an order, changes a sale or reaps a hold (the store's `gen`); meanwhile it
 * answers sold_out (sold out is sold out for everybody, docs/API.md) without Redis. A take with
 * a request_id always goes to Redis: it may be the replay of a win.
 *
 * Faults: a lost connection or a missed deadline answers every waiting request SK_EUNAVAILABLE
 * (the outcome is unknown to the client, who retries with its request_id); while the worker's
 * connection is down, requests are answered so at once, except those the sold-out cache can
 * answer. Health is redis_conn.c's: no worker knows Redis to be unreachable.
 *
 * High availability (docs/redis.md): with --redis-min-replicas a WAIT follows every write script on
 * its connection and answers the script's requests (503 when too few replicas confirm); take
 * calls then alternate over two connections per worker. Under Sentinel, worker 0 also runs the
 * +switch-master watch (redis_ha.c), which moves every worker's connections.
 *
 * Worker 0 of each instance also reaps expired holds (every REAP_EVERY_MS). */
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "error.h"
#include "log.h"
#include "map.h"
#include "parse.h"
#include "redis_conn.h"
#include "redis_conn_internal.h"
#include "redis_ha.h"
#include "store.h"
#include "store_redis_internal.h"
#include "util.h"

/* Take script calls for one sale in flight at once on one connection. A first call goes out at
 * once; a second only when PIPELINE_MIN takes wait for it (or when the first comes back), so that
 * a busy sale keeps Redis fed while it fsyncs, but a small batch does not cost Redis an event-loop
 * turn and an fsync of its own: with a second call for every waiting take, 64 connections
 * settled into batches of 62 and 1 taking turns (docs/redis.md, "Coalescing"). */
#define PIPELINE 2
#define PIPELINE_MIN 32
#define BATCH_MAX 128          /* takes per script call (SECKILL_REDIS_BATCH may lower it) */
#define SOLDOUT_TTL_MS 250     /* how long a learned sold-out is trusted while connected */
#define BG_TICK_MS 100         /* worker 0's background timer */
#define REAP_EVERY_MS 300      /* worker 0 sweeps expired holds this often */
/* holds per reap call (~5 ms of Redis); a sale with more due gets the next call at once */
#define REAP_MAX 1000

/* the scripts, generated from the .lua files of src/lua by cmake/embed.cmake */
extern const char sk_lua_common[], sk_lua_take[], sk_lua_put[], sk_lua_view[], sk_lua_order[], sk_lua_orders[],
    sk_lua_change[], sk_lua_reap[], sk_lua_delete[], sk_lua_feed[], sk_lua_feedtrim[];

enum script_e { S_TAKE, S_PUT, S_VIEW, S_ORDER, S_ORDERS, S_CHANGE, S_REAP, S_DELETE, S_FEED, S_FEEDTRIM, S_COUNT };

static const struct {
    const char *name;
    const char *body;
    int readonly; /* sent with flags=no-writes */
} SCRIPTS[S_COUNT] = {
    {"take", sk_lua_take, 0},         {"put", sk_lua_put, 0},       {"view", sk_lua_view, 1},
    {"order", sk_lua_order, 1},       {"orders", sk_lua_orders, 1}, {"change", sk_lua_change, 0},
    {"reap", sk_lua_reap, 0},         {"delete", sk_lua_delete, 0}, {"feed", sk_lua_feed, 1},
    {"feedtrim", sk_lua_feedtrim, 0},
};

/* The scripts' result codes and what each answers: one list for C and Lua. load_scripts() writes
 * it into every script as `local R_OK, R_REPLAY, ... = 0, 1, ...`, ahead of common.lua, so that
 * no script can use a code C does not know. */
#define SK_REDIS_RESULTS(XX)                                                                                           \
    XX(OK, 0)                                                                                                          \
    XX(REPLAY, 0)                                                                                                      \
    XX(NO_SALE, SK_ENO_SUCH_SALE)                                                                                      \
    XX(NO_ORDER, SK_ENO_SUCH_ORDER)                                                                                    \
    XX(BAD_REQUEST, SK_EBAD_REQUEST)                                                                                   \
    XX(NOT_STARTED, SK_ENOT_STARTED)                                                                                   \
    XX(ENDED, SK_EENDED)                                                                                               \
    XX(USER_LIMIT, SK_EUSER_LIMIT)                                                                                     \
    XX(SOLD_OUT, SK_ESOLD_OUT)                                                                                         \
    XX(REUSED, SK_EREQUEST_ID_REUSED)                                                                                  \
    XX(BELOW_TAKEN, SK_ESTOCK_BELOW_TAKEN)                                                                             \
    XX(NOT_HELD, SK_EORDER_NOT_HELD)                                                                                   \
    XX(CREATED, 0)                                                                                                     \
    XX(ACTIVE, SK_ESALE_ACTIVE)                                                                                        \
    XX(EXPIRED, SK_ECURSOR_EXPIRED)

enum rcode_e {
#define XX(name, err) RC_##name,
    SK_REDIS_RESULTS(XX)
#undef XX
        RC_COUNT_
};

static const int RC_ERR[RC_COUNT_] = {
#define XX(name, err) err,
    SK_REDIS_RESULTS(XX)
#undef XX
};

/* The shapes of the scripts' replies (common.lua's sale_reply and order_reply, take.lua, orders.lua),
 * by element. */
/* SR_RETAIN is optional (a reply of SR_LEN elements: null), so that a reply of before it still reads */
enum sale_reply_e {
    SR_CODE,
    SR_STOCK,
    SR_LIMIT,
    SR_HOLD,
    SR_STARTS,
    SR_ENDS,
    SR_SOLD,
    SR_HELD,
    SR_LEN,
    SR_RETAIN = SR_LEN
};
enum order_reply_e { OR_USER, OR_QTY, OR_STATUS, OR_REQUEST_ID, OR_CREATED, OR_EXPIRES, OR_LEN }; /* after a code */
enum take_head_e { TH_CODE, TH_REMAINING, TH_LIMIT, TH_ENDS, TH_DEADLINE, TH_OPEN, TH_LEN };
enum take_each_e { TE_CODE, TE_ID, TE_CREATED, TE_EXPIRES, TE_LEN }; /* per take, after the head */
enum orders_reply_e { OL_CODE, OL_MORE, OL_LEN };                    /* then per order: */
enum orders_each_e { OE_ID, OE_ORDER, OE_LEN = OE_ORDER + OR_LEN };  /* id, an order_reply's fields */

/* Every script gets these keys of its sale, in this order (common.lua's K). */
static const char *const KEY_SUFFIX[] = {"", ":users", ":holds", ":stream", ":rids", ":seq", ":orders"};
#define NKEYS (sizeof(KEY_SUFFIX) / sizeof(KEY_SUFFIX[0]))
static const char SALES_KEY[] = "sk:sales";     /* set of every sale id */
static const char HOLDING_KEY[] = "sk:holding"; /* set of sales that ever had hold_seconds > 0 */
static const char TOMBSTONES_KEY[] = "sk:tombstones";     /* hash: deleted sale id -> its last order id */
static const char FEED_KEY[] = "sk:feed";                 /* stream: every order event of every sale, in one order */
static const char FEED_TRIMMED_KEY[] = "sk:feed:trimmed"; /* string: the last entry id the retention removed */
static const char RETAIN_KEY[] = "sk:retain";             /* sorted set: sales with retain_seconds, by when due */

typedef struct redis_s {
    sk_store_t super;
    sk_redis_conf_t conf;
    int nworkers;
    size_t batch_max;     /* takes per script call */
    sk_redis_shared_t shared; /* health and +switch-master, shared by the connections */
    _Atomic uint64_t gen; /* bumped when this instance may have given units back */
    sk_redis_script_t scripts[S_COUNT];
} redis_t;

/* One sale as one worker sees it: the coalescing queue and the sold-out cache. */
typedef struct wsale_s {
    sk_map_node_t node;
    unsigned inflight;     /* take script calls in flight */
    sk_store_req_t *qhead; /* takes waiting for the next call */
    sk_store_req_t **qtail;
    size_t qlen;
    int soldout;           /* the cache below is set */
    uint64_t gen;          /* the store's gen when the call that taught it was sent */
    int64_t fresh_until;   /* mono ms: trusted until then while connected */
    int64_t deadline;      /* mono ms: never trusted past the sale's next hold deadline */
    int64_t limit;         /* per_user_limit */
    int64_t ends_at;       /* SK_NO_TIME or the end of the window */
    char id[SK_SALE_ID_MAX + 1];
} wsale_t;

typedef struct worker_s {
    sk_store_worker_t super;
    sk_redis_conn_t conn;
    /* With --redis-min-replicas a take call's WAIT blocks its connection until the replicas
     * confirm; take calls then alternate over two connections, so that one call runs on the
     * master while the other waits for the replicas. */
    sk_redis_conn_t conn2;
    int two;
    redis_t *r;
    int index;
    h2o_loop_t *loop;
    sk_map_t sales;              /* wsale_t by sale id */
    sk_store_req_t *failq;       /* answered SK_EUNAVAILABLE on the next loop turn */
    sk_store_req_t **failtail;
    h2o_timeout_t t_zero, t_bg;
    h2o_timeout_entry_t e_zero, e_bg;
    /* worker 0 only */
    int64_t next_reap;
    size_t reaping; /* reap commands outstanding */
} worker_t;

typedef enum cmd_type_e {
    C_TAKE,         /* a batch of takes of one sale */
    C_VIEW,         /* sale get */
    C_LIST_MEMBERS, /* sale list: SMEMBERS, then ... */
    C_LIST_VIEW,    /* ... one view per sale */
    C_PUT_PRE,      /* sale put: SADD to the sets of sales, then ... */
    C_PUT,          /* ... the put script */
    C_ORDER,
    C_ORDERS,
    C_CHANGE,       /* confirm / cancel */
    C_DELETE,       /* sale delete */
    C_REAP_MEMBERS, /* reaper: SMEMBERS sk:holding, then ... */
    C_REAP,         /* ... one reap per sale */
    C_RETIRE_DUE,   /* reaper: sales of sk:retain due, then ... */
    C_RETIRE,       /* ... the delete script for each (retain_seconds) */
    C_FEED,         /* GET /v1/orders */
    C_FEEDTRIM,     /* reaper: the feed's retention */
    C_WAIT,         /* WAIT after a write (--redis-min-replicas): answers what the write decided */
} cmd_type_t;

/* A sale listing in progress: one view call per sale. */
typedef struct list_s {
    sk_store_req_t *req;
    size_t outstanding;
    size_t cap;
    int failed;
} list_t;

typedef struct cmd_s {
    sk_redis_cmd_t super;
    worker_t *w;
    cmd_type_t type;
    sk_store_req_t *req;           /* the request (take: the batch, linked by next) */
    size_t nreqs;
    wsale_t *ws;                   /* take */
    uint64_t gen;                  /* take: r->gen when sent */
    list_t *list;                  /* C_LIST_* */
    struct cmd_s *wait;            /* a write's WAIT, which answers its requests */
    sk_redis_conn_t *via;          /* the connection it goes out on (NULL: the worker's first) */
    char sale[SK_SALE_ID_MAX + 1]; /* C_LIST_VIEW, C_REAP */
} cmd_t;

/* ---- replies ---- */

static int rcode_err(long long rc)
{
    return rc >= 0 && rc < RC_COUNT_ ? RC_ERR[rc] : SK_EUNAVAILABLE;
}

static int el_int(const redisReply *r, size_t i, long long *v)
{
    if (i >= r->elements || r->element[i]->type != REDIS_REPLY_INTEGER)
        return -1;
    *v = r->element[i]->integer;
    return 0;
}

static int el_str(const redisReply *r, size_t i, const char **s, size_t *len)
{
    if (i >= r->elements || r->element[i]->type != REDIS_REPLY_STRING)
        return -1;
    *s = r->element[i]->str;
    *len = r->element[i]->len;
    return 0;
}

/* A script's array reply and its code (element 0). */
static int reply_code(const redisReply *r, long long *code)
{
    return r != NULL && r->type == REDIS_REPLY_ARRAY && el_int(r, 0, code) == 0 ? 0 : -1;
}

static int64_t time_of(long long v)
{
    return v < 0 ? SK_NO_TIME : (int64_t)v;
}

/* A sale_reply (common.lua) into a view. */
static int parse_view(const redisReply *r, const char *sale, sk_sale_view_t *v)
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
static int parse_order(const redisReply *r, size_t k, const char *sale, uint64_t id, sk_order_t *o)
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

/* ---- commands ---- */

static void on_cmd(sk_redis_cmd_t *super, redisReply *rep);
static void cmd_args(sk_redis_cmd_t *super, sk_redis_argv_t *a);

static cmd_t *cmd_new(worker_t *w, cmd_type_t type, int script)
{
    cmd_t *cmd = sk_calloc(1, sizeof(*cmd));
    cmd->w = w;
    cmd->type = type;
    cmd->super.cb = on_cmd;
    if (script >= 0) {
        cmd->super.script = &w->r->scripts[script];
        cmd->super.args = cmd_args;
    }
    return cmd;
}

/* Sends a write script and, with --redis-min-replicas, a WAIT right behind it (pipelined: no
 * extra round trip): the write's requests are then answered by the WAIT's reply. */
static int cmd_send_script(cmd_t *cmd)
{
    worker_t *w = cmd->w;
    sk_redis_conn_t *c = cmd->via ? cmd->via : &w->conn;
    if (sk_redis_send_script(c, &cmd->super) != 0)
        return -1;
    if (w->r->conf.min_replicas > 0 && (cmd->type == C_TAKE || cmd->type == C_PUT || cmd->type == C_CHANGE)) {
        char n[16], ms[16];
        cmd_t *wait = cmd_new(w, C_WAIT, -1);
        snprintf(n, sizeof(n), "%d", w->r->conf.min_replicas);
        snprintf(ms, sizeof(ms), "%d", w->r->conf.wait_timeout_ms);
        if (sk_redis_send(c, &wait->super, SK_REDIS_ARGS("WAIT", n, ms)) == 0)
            cmd->wait = wait;
        else
            free(wait); /* the connection is going: the write's reply will be NULL */
    }
    return 0;
}

/* Answers a write's request now, or when its WAIT has answered. */
static void answer(cmd_t *cmd, sk_store_req_t *req)
{
    if (cmd->wait == NULL) {
        req->cb(req);
        return;
    }
    req->next = cmd->wait->req; /* the order of answers does not matter */
    cmd->wait->req = req;
}

static void wait_done(worker_t *w, cmd_t *cmd, redisReply *rep)
{
    int ok = rep != NULL && sk_redis_conn_waited(cmd->super.conn, rep);
    (void)w;
    for (sk_store_req_t *q = cmd->req, *next; q != NULL; q = next) {
        next = q->next;
        q->next = NULL;
        if (!ok && q->err == 0) { /* decided, but perhaps only on this node: the outcome is unknown */
            sk_store_req_dispose(q);
            q->err = SK_EUNAVAILABLE;
            q->created = 0;
        }
        q->cb(q);
    }
}

/* The sale's keys, then `extra` global ones (declared as KEYS too, so that Redis knows them). */
static void args_keys_and(sk_redis_argv_t *a, const char *sale, const char *const *extra, size_t nextra)
{
    sk_redis_arg_u(a, NKEYS + 1 + nextra);
    for (size_t i = 0; i < NKEYS; i++)
        sk_redis_arg_printf(a, "sk:{%s}%s", sale, KEY_SUFFIX[i]);
    sk_redis_arg_s(a, FEED_KEY); /* KEYS[8]: scripts that change an order tell the feed (common.lua) */
    for (size_t i = 0; i < nextra; i++)
        sk_redis_arg_s(a, extra[i]);
}

static void args_keys(sk_redis_argv_t *a, const char *sale)
{
    args_keys_and(a, sale, NULL, 0);
}

static void args_time(sk_redis_argv_t *a, int64_t t)
{
    if (t == SK_NO_TIME)
        sk_redis_arg(a, "", 0);
    else
        sk_redis_arg_i(a, t);
}

/* A script command's keys and arguments (again when it is re-sent as EVAL). */
static void cmd_args(sk_redis_cmd_t *super, sk_redis_argv_t *a)
{
    cmd_t *cmd = (cmd_t *)super;
    const sk_store_req_t *req = cmd->req;
    switch (cmd->type) {
    case C_TAKE:
        args_keys(a, cmd->ws->id);
        sk_redis_arg_u(a, cmd->nreqs);
        for (const sk_store_req_t *q = req; q != NULL; q = q->next) {
            sk_redis_arg(a, q->user ? q->user : "", q->user ? q->user_len : 0);
            sk_redis_arg_i(a, q->qty);
            sk_redis_arg(a, q->request_id ? q->request_id : "", q->request_id ? q->request_id_len : 0);
        }
        return;
    case C_VIEW:
        args_keys(a, req->sale);
        return;
    case C_LIST_VIEW:
        args_keys(a, cmd->sale);
        return;
    case C_PUT: {
        static const char *const extra[] = {TOMBSTONES_KEY, RETAIN_KEY};
        args_keys_and(a, req->sale, extra, 2);
        sk_redis_arg_i(a, req->conf.stock);
        sk_redis_arg_i(a, req->conf.per_user_limit);
        sk_redis_arg_i(a, req->conf.hold_seconds);
        args_time(a, req->conf.starts_at);
        args_time(a, req->conf.ends_at);
        sk_redis_arg_s(a, req->sale);
        args_time(a, req->conf.retain_seconds);
        return;
    }
    case C_DELETE: {
        static const char *const extra[] = {SALES_KEY, HOLDING_KEY, TOMBSTONES_KEY, RETAIN_KEY};
        args_keys_and(a, req->sale, extra, 4);
        sk_redis_arg_s(a, req->sale);
        return;
    }
    case C_RETIRE: {
        static const char *const extra[] = {SALES_KEY, HOLDING_KEY, TOMBSTONES_KEY, RETAIN_KEY};
        args_keys_and(a, cmd->sale, extra, 4);
        sk_redis_arg_s(a, cmd->sale);
        sk_redis_arg_s(a, "retire");
        return;
    }
    case C_ORDER:
        args_keys(a, req->sale);
        sk_redis_arg_u(a, req->order_id);
        return;
    case C_ORDERS:
        args_keys(a, req->sale);
        sk_redis_arg_u(a, req->order_id);
        sk_redis_arg_u(a, req->limit);
        return;
    case C_CHANGE:
        args_keys(a, req->sale);
        sk_redis_arg_u(a, req->order_id);
        sk_redis_arg_s(a, sk_order_op_name(req->change));
        return;
    case C_REAP:
        args_keys(a, cmd->sale);
        sk_redis_arg_i(a, REAP_MAX);
        return;
    case C_FEED:
        sk_redis_arg_u(a, 3);
        sk_redis_arg_s(a, FEED_KEY);
        sk_redis_arg_s(a, FEED_TRIMMED_KEY);
        sk_redis_arg_s(a, TOMBSTONES_KEY);
        sk_redis_arg_printf(a, "%llu-%llu", (unsigned long long)req->cursor.hi, (unsigned long long)req->cursor.lo);
        sk_redis_arg_u(a, req->limit);
        return;
    case C_FEEDTRIM:
        sk_redis_arg_u(a, 2);
        sk_redis_arg_s(a, FEED_KEY);
        sk_redis_arg_s(a, FEED_TRIMMED_KEY);
        sk_redis_arg_u(a, sk_feed_retain());
        return;
    default:
        return;
    }
}

/* Requests failed outside their submit are answered on the next loop turn: never from inside
 * another request's submit. */
static void fail_later(worker_t *w, sk_store_req_t *req)
{
    req->err = SK_EUNAVAILABLE;
    req->next = NULL;
    *w->failtail = req;
    w->failtail = &req->next;
    if (!h2o_timeout_is_linked(&w->e_zero))
        h2o_timeout_link(w->loop, &w->t_zero, &w->e_zero);
}

static void run_failq(worker_t *w)
{
    while (w->failq != NULL) {
        sk_store_req_t *req = w->failq;
        w->failq = req->next;
        if (w->failq == NULL)
            w->failtail = &w->failq;
        req->next = NULL;
        req->cb(req);
    }
}

static void on_zero(h2o_timeout_entry_t *e)
{
    run_failq(SK_CONTAINER_OF(e, worker_t, e_zero));
}

static void bump_gen(redis_t *r)
{
    atomic_fetch_add(&r->gen, 1);
}

/* ---- takes: coalescing and the sold-out cache ---- */

static void ws_forget(wsale_t *ws)
{
    ws->soldout = 0;
}

static wsale_t *ws_find(worker_t *w, const char *sale)
{
    size_t len = strlen(sale);
    return (wsale_t *)sk_map_find(&w->sales, sk_hash(sale, len), sale, len);
}

static wsale_t *ws_get(worker_t *w, const char *sale)
{
    wsale_t *ws = ws_find(w, sale);
    if (ws != NULL)
        return ws;
    size_t len = strlen(sale);
    ws = sk_calloc(1, sizeof(*ws));
    memcpy(ws->id, sale, len + 1);
    ws->node = (sk_map_node_t){ws->id, (uint32_t)len};
    ws->qtail = &ws->qhead;
    sk_map_insert(&w->sales, &ws->node, sk_hash(ws->id, len));
    return ws;
}

static void ws_free(sk_map_node_t *n)
{
    free(n);
}

/* Frees a sale entry that holds nothing worth keeping. */
static void ws_maybe_free(worker_t *w, wsale_t *ws)
{
    if (ws->inflight == 0 && ws->qlen == 0 && !ws->soldout) {
        sk_map_remove(&w->sales, &ws->node, sk_hash(ws->id, ws->node.klen));
        ws_free(&ws->node);
    }
}

/* Answers a take from the sold-out cache when that gives what Redis would, in the order of
 * checks of docs/API.md: no request id (a replay must reach Redis), the window still open, then
 * a missing user where a limit is set is 400 and anything else sold_out. While the worker's
 * connection is down the answer stands past its freshness (API.md allows it). Returns 1 with
 * req->err set when answered. */
static int fast_answer(worker_t *w, wsale_t *ws, sk_store_req_t *req)
{
    if (!ws->soldout || req->request_id != NULL)
        return 0;
    /* how long it is trusted is monotonic time: a wall clock stepped back must not stretch it */
    int64_t mono = sk_mono_ms();
    if (ws->gen != atomic_load_explicit(&w->r->gen, memory_order_relaxed) || mono >= ws->deadline ||
        (sk_redis_conn_up(&w->conn) && mono >= ws->fresh_until)) {
        ws_forget(ws);
        return 0;
    }
    /* the window is Redis's wall clock: keep a second of margin against skew */
    if (ws->ends_at != SK_NO_TIME && req->now_ms / 1000 >= ws->ends_at - 1)
        return 0;
    req->err = sk_sale_soldout_answer(ws->limit, req->user != NULL, req->qty);
    return 1;
}

/* The connection for the next take call: the one with fewer commands in flight. */
static sk_redis_conn_t *take_conn(worker_t *w)
{
    if (w->two && w->conn2.ready && w->conn2.pending < w->conn.pending)
        return &w->conn2;
    return &w->conn;
}

/* Sends up to batch_max queued takes as one script call. */
static void ws_flush(worker_t *w, wsale_t *ws)
{
    cmd_t *cmd = cmd_new(w, C_TAKE, S_TAKE);
    cmd->via = take_conn(w);
    sk_store_req_t **tail = &cmd->req;
    cmd->ws = ws;
    cmd->gen = atomic_load(&w->r->gen);
    while (ws->qhead != NULL && cmd->nreqs < w->r->batch_max) {
        sk_store_req_t *q = ws->qhead;
        ws->qhead = q->next;
        q->next = NULL;
        *tail = q;
        tail = &q->next;
        cmd->nreqs++;
        ws->qlen--;
    }
    if (ws->qhead == NULL)
        ws->qtail = &ws->qhead;
    cmd->super.takes = cmd->nreqs;
    ws->inflight++;
    if (cmd_send_script(cmd) == 0)
        return;
    /* the connection is going: nothing queued here could go out later either */
    ws->inflight--;
    *tail = ws->qhead;
    ws->qhead = NULL;
    ws->qtail = &ws->qhead;
    ws->qlen = 0;
    for (sk_store_req_t *q = cmd->req, *next; q != NULL; q = next) {
        next = q->next;
        fail_later(w, q);
    }
    free(cmd);
}

/* h: the take reply's head (take.lua, TH_*) */
static void learn_soldout(wsale_t *ws, const cmd_t *cmd, const long long *h)
{
    ws->soldout = 1;
    ws->gen = cmd->gen;
    int64_t mono = sk_mono_ms();
    ws->fresh_until = mono + SOLDOUT_TTL_MS;
    /* the deadline is a second of Redis's wall clock (TIME): kept as a monotonic deadline, at the
     * distance from our wall clock it has now, so that a later step of our clock does not move it */
    long long d = h[TH_DEADLINE];
    ws->deadline = d >= 0 && d < INT64_MAX / 1000 ? mono + (d * 1000 - sk_now_ms()) : INT64_MAX;
    ws->limit = h[TH_LIMIT];
    ws->ends_at = time_of(h[TH_ENDS]);
}

static void fill_take(sk_store_req_t *q, const long long *v)
{
    /* v: one take's answer (TE_*) */
    if ((q->err = rcode_err(v[TE_CODE])) != 0)
        return;
    if (v[TE_ID] < 1 || v[TE_CREATED] < 0) { /* not an order take.lua made */
        q->err = SK_EUNAVAILABLE;
        return;
    }
    sk_order_t *o = &q->order;
    memset(o, 0, sizeof(*o));
    snprintf(o->sale, sizeof(o->sale), "%s", q->sale);
    o->id = (uint64_t)v[TE_ID];
    o->qty = q->qty;
    o->created_at = v[TE_CREATED];
    o->expires_at = time_of(v[TE_EXPIRES]);
    /* as taken: a replay shows the order as it was created, like the embedded store */
    o->status = o->expires_at != SK_NO_TIME ? SK_ORDER_HELD : SK_ORDER_CONFIRMED;
    o->user = sk_strndup(q->user, q->user_len);
    o->request_id = sk_strndup(q->request_id, q->request_id_len);
    q->created = v[TE_CODE] == RC_OK;
}

/* Whether the takes waiting for a sale go out now (see PIPELINE). */
static int may_send(worker_t *w, wsale_t *ws)
{
    return ws->inflight == 0 || (ws->inflight < PIPELINE && ws->qlen >= PIPELINE_MIN) ||
           ws->qlen >= w->r->batch_max;
}

static void take_done(worker_t *w, cmd_t *cmd, redisReply *rep)
{
    wsale_t *ws = cmd->ws;
    long long h[TH_LEN] = {0}; /* zeroed: gcc -O3 cannot see that reply_code sets h[0] on success */
    int ok = reply_code(rep, &h[TH_CODE]) == 0;

    ws->inflight--;
    if (ok && h[TH_CODE] == RC_OK) {
        for (size_t i = 1; ok && i < TH_LEN; i++)
            ok = el_int(rep, i, &h[i]) == 0;
        ok = ok && rep->elements == TH_LEN + TE_LEN * cmd->nreqs;
    }
    if (ok && h[TH_CODE] == RC_OK && h[TH_OPEN] == 1 && h[TH_REMAINING] == 0) /* open and nothing left */
        learn_soldout(ws, cmd, h);
    else
        ws_forget(ws);

    /* keep the pipe busy before answering */
    if (ws->qlen > 0 && may_send(w, ws))
        ws_flush(w, ws);

    size_t i = 0;
    for (sk_store_req_t *q = cmd->req, *next; q != NULL; q = next, i++) {
        long long v[TE_LEN] = {0};
        int vok = ok;
        next = q->next;
        q->next = NULL;
        for (size_t k = 0; vok && h[TH_CODE] == RC_OK && k < TE_LEN; k++)
            vok = el_int(rep, TH_LEN + TE_LEN * i + k, &v[k]) == 0;
        if (!vok)
            q->err = SK_EUNAVAILABLE;
        else if (h[TH_CODE] != RC_OK) /* the batch's own code: an error (a code of success is not one) */
            q->err = rcode_err(h[TH_CODE]) != 0 ? rcode_err(h[TH_CODE]) : SK_EUNAVAILABLE;
        else
            fill_take(q, v);
        answer(cmd, q);
    }
    ws_maybe_free(w, ws);
}

static int submit_take(worker_t *w, sk_store_req_t *req)
{
    wsale_t *ws = ws_find(w, req->sale);
    if (ws != NULL && fast_answer(w, ws, req))
        return SK_STORE_DONE;
    if (!sk_redis_conn_up(&w->conn))
        return SK_EUNAVAILABLE;
    ws = ws_get(w, req->sale);
    req->next = NULL;
    *ws->qtail = req;
    ws->qtail = &req->next;
    ws->qlen++;
    if (may_send(w, ws))
        ws_flush(w, ws);
    return 0;
}

/* ---- everything else ---- */

static int cmp_view(const void *a, const void *b)
{
    return strcmp(((const sk_sale_view_t *)a)->id, ((const sk_sale_view_t *)b)->id);
}

static void list_finish(list_t *l)
{
    sk_store_req_t *req = l->req;
    if (l->failed) {
        free(req->views);
        req->views = NULL;
        req->nviews = 0;
        req->err = SK_EUNAVAILABLE;
    } else {
        qsort(req->views, req->nviews, sizeof(*req->views), cmp_view);
    }
    free(l);
    req->cb(req);
}

static void list_members_done(worker_t *w, cmd_t *cmd, redisReply *rep)
{
    list_t *l = cmd->list;
    if (rep == NULL || rep->type != REDIS_REPLY_ARRAY) {
        l->failed = 1;
        list_finish(l);
        return;
    }
    l->cap = rep->elements;
    l->req->views = sk_calloc(l->cap ? l->cap : 1, sizeof(*l->req->views));
    for (size_t i = 0; i < rep->elements; i++) {
        const redisReply *m = rep->element[i];
        if (m->type != REDIS_REPLY_STRING || m->len == 0 || m->len > SK_SALE_ID_MAX)
            continue;
        cmd_t *v = cmd_new(w, C_LIST_VIEW, S_VIEW);
        v->list = l;
        memcpy(v->sale, m->str, m->len);
        v->sale[m->len] = '\0';
        if (cmd_send_script(v) != 0) {
            free(v);
            l->failed = 1;
            break;
        }
        l->outstanding++;
    }
    if (l->outstanding == 0)
        list_finish(l);
}

static void list_view_done(cmd_t *cmd, redisReply *rep)
{
    list_t *l = cmd->list;
    sk_store_req_t *req = l->req;
    long long code;
    /* RC_NO_SALE: listed by a put whose script has not run (yet), so not a sale */
    int ok = reply_code(rep, &code) == 0 && (code == RC_OK || code == RC_NO_SALE);
    if (ok && code == RC_OK) {
        ok = req->nviews < l->cap && parse_view(rep, cmd->sale, &req->views[req->nviews]) == 0;
        if (ok)
            req->nviews++;
    }
    if (!ok)
        l->failed = 1;
    if (--l->outstanding == 0)
        list_finish(l);
}

static int submit_list(worker_t *w, sk_store_req_t *req)
{
    cmd_t *cmd = cmd_new(w, C_LIST_MEMBERS, -1);
    list_t *l = sk_calloc(1, sizeof(*l));
    l->req = req;
    cmd->list = l;
    if (sk_redis_send(&w->conn, &cmd->super, SK_REDIS_ARGS("SMEMBERS", SALES_KEY)) != 0) {
        free(l);
        free(cmd);
        return SK_EUNAVAILABLE;
    }
    return 0;
}

static int parse_orders(const redisReply *rep, sk_store_req_t *req)
{
    long long more, id;
    size_t n = rep->elements >= OL_LEN ? (rep->elements - OL_LEN) / OE_LEN : 0;
    if (el_int(rep, OL_MORE, &more) != 0 || rep->elements != OL_LEN + OE_LEN * n)
        return -1;
    req->orders = sk_calloc(n ? n : 1, sizeof(*req->orders));
    for (size_t i = 0; i < n; i++) {
        size_t at = OL_LEN + OE_LEN * i;
        if (el_int(rep, at + OE_ID, &id) != 0 || id < 1 ||
            parse_order(rep, at + OE_ORDER, req->sale, (uint64_t)id, &req->orders[i]) != 0) {
            sk_order_dispose(&req->orders[i]);
            return -1; /* the caller disposes of what was parsed */
        }
        req->norders++;
    }
    req->more = more != 0;
    return 0;
}

/* An entry id ("HI-LO") into a cursor. */
static int parse_cursor(const char *s, size_t len, sk_cursor_t *c)
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

static int parse_feed(const redisReply *rep, sk_store_req_t *req)
{
    static const char *const KINDS[] = {"created", "confirmed", "cancelled", "expired"};
    const char *s;
    size_t len;
    long long more;
    if (el_str(rep, 1, &s, &len) != 0 || parse_cursor(s, len, &req->cursor) != 0 || el_int(rep, 2, &more) != 0 ||
        (rep->elements - 3) % FE_LEN != 0)
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
        if (ev->kind == 0 || parse_cursor(e[FE_ID]->str, e[FE_ID]->len, &ev->cursor) != 0 || e[FE_ORDER]->len == 0 ||
            e[FE_ORDER]->len >= sizeof(num))
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
        if (parse_order(&arr, 1, sale, id, &ev->order) != 0)
            return -1;
    }
    req->more = more != 0;
    return 0;
}

/* The answer of a one-request script command. */
static void req_done(worker_t *w, cmd_t *cmd, redisReply *rep)
{
    sk_store_req_t *req = cmd->req;
    long long code;
    int err = reply_code(rep, &code) == 0 ? rcode_err(code) : SK_EUNAVAILABLE;

    if (err == 0) {
        switch (cmd->type) {
        case C_VIEW:
            if (parse_view(rep, req->sale, &req->view) != 0)
                err = SK_EUNAVAILABLE;
            break;
        case C_DELETE: /* the sale as it was; every worker's cache of it goes */
            if (parse_view(rep, req->sale, &req->view) != 0)
                err = SK_EUNAVAILABLE;
            bump_gen(w->r);
            break;
        case C_PUT:
            if (req->err != 0) { /* adding it to the sets of sales failed: the outcome is unknown */
                err = req->err;
                break;
            }
            if (parse_view(rep, req->sale, &req->view) != 0)
                err = SK_EUNAVAILABLE;
            req->created = code == RC_CREATED;
            bump_gen(w->r);
            break;
        case C_ORDER:
        case C_CHANGE:
            if (parse_order(rep, 1, req->sale, req->order_id, &req->order) != 0) {
                sk_order_dispose(&req->order);
                err = SK_EUNAVAILABLE;
            } else if (req->op == SK_STORE_ORDER_CHANGE && req->change == SK_OP_CANCEL_ORDER) {
                bump_gen(w->r);
            }
            break;
        case C_FEED:
            if (parse_feed(rep, req) != 0) {
                sk_store_req_dispose(req);
                err = SK_EUNAVAILABLE;
            }
            break;
        case C_ORDERS:
            if (parse_orders(rep, req) != 0) {
                sk_store_req_dispose(req);
                req->more = 0;
                err = SK_EUNAVAILABLE;
            }
            break;
        default:
            break;
        }
    }
    req->err = err;
    answer(cmd, req);
}

static int submit_script(worker_t *w, sk_store_req_t *req, cmd_type_t type, int script)
{
    cmd_t *cmd = cmd_new(w, type, script);
    cmd->req = req;
    if (cmd_send_script(cmd) != 0) {
        free(cmd);
        return SK_EUNAVAILABLE;
    }
    return 0;
}

/* Sale put: the sets of sales first (so a listed sale may not exist yet, never the reverse),
 * then the script. All are pipelined; the put's answer comes with the last reply. */
static int submit_put(worker_t *w, sk_store_req_t *req)
{
    cmd_t *pre[2] = {NULL, NULL};
    const char *sets[2] = {SALES_KEY, req->conf.hold_seconds > 0 ? HOLDING_KEY : NULL};
    for (int i = 0; i < 2 && sets[i] != NULL; i++) {
        pre[i] = cmd_new(w, C_PUT_PRE, -1);
        pre[i]->req = req;
        if (sk_redis_send(&w->conn, &pre[i]->super, SK_REDIS_ARGS("SADD", sets[i], req->sale)) != 0) {
            free(pre[i]);
            pre[i] = NULL;
            goto fail;
        }
    }
    if (submit_script(w, req, C_PUT, S_PUT) == 0)
        return 0;
fail:
    /* what went out must not touch a request that is answered here */
    for (int i = 0; i < 2; i++)
        if (pre[i] != NULL)
            pre[i]->req = NULL;
    return SK_EUNAVAILABLE;
}

/* ---- worker 0: reaping holds ---- */

static void reap_members_done(worker_t *w, redisReply *rep)
{
    w->reaping--;
    if (rep == NULL || rep->type != REDIS_REPLY_ARRAY)
        return;
    for (size_t i = 0; i < rep->elements; i++) {
        const redisReply *m = rep->element[i];
        if (m->type != REDIS_REPLY_STRING || m->len == 0 || m->len > SK_SALE_ID_MAX)
            continue;
        cmd_t *cmd = cmd_new(w, C_REAP, S_REAP);
        memcpy(cmd->sale, m->str, m->len);
        cmd->sale[m->len] = '\0';
        if (cmd_send_script(cmd) != 0) {
            free(cmd);
            return;
        }
        w->reaping++;
    }
}

static void reap_done(worker_t *w, cmd_t *done, redisReply *rep)
{
    long long n, more;
    w->reaping--;
    if (reply_code(rep, &n) != 0 || el_int(rep, 1, &more) != 0)
        return;
    if (n > 0)
        bump_gen(w->r);
    if (more) { /* a burst of expiries: keep at this sale until it is done */
        cmd_t *cmd = cmd_new(w, C_REAP, S_REAP);
        memcpy(cmd->sale, done->sale, sizeof(cmd->sale));
        if (cmd_send_script(cmd) == 0)
            w->reaping++;
        else
            free(cmd);
    }
}

/* retain_seconds: the sales of sk:retain due by this instance's clock each get the delete
 * script, which decides by Redis's (and waits while the sale still holds orders). */
static void retire_due_done(worker_t *w, redisReply *rep)
{
    w->reaping--;
    if (rep == NULL || rep->type != REDIS_REPLY_ARRAY)
        return;
    for (size_t i = 0; i < rep->elements; i++) {
        const redisReply *m = rep->element[i];
        if (m->type != REDIS_REPLY_STRING || m->len == 0 || m->len > SK_SALE_ID_MAX)
            continue;
        cmd_t *cmd = cmd_new(w, C_RETIRE, S_DELETE);
        memcpy(cmd->sale, m->str, m->len);
        cmd->sale[m->len] = '\0';
        if (cmd_send_script(cmd) != 0) {
            free(cmd);
            return;
        }
        w->reaping++;
    }
}

static void retire_done(worker_t *w, cmd_t *cmd, redisReply *rep)
{
    long long code;
    w->reaping--;
    if (reply_code(rep, &code) == 0 && code == RC_OK) {
        bump_gen(w->r);
        sk_log(SK_LOG_INFO, "event=sale_retired sale=%s", cmd->sale);
    }
}

static void on_bg(h2o_timeout_entry_t *e)
{
    worker_t *w = SK_CONTAINER_OF(e, worker_t, e_bg);
    int64_t now = sk_mono_ms();
    if (w->conn.ready && w->reaping == 0 && now >= w->next_reap) {
        cmd_t *cmd = cmd_new(w, C_REAP_MEMBERS, -1);
        w->next_reap = now + REAP_EVERY_MS;
        if (sk_redis_send(&w->conn, &cmd->super, SK_REDIS_ARGS("SMEMBERS", HOLDING_KEY)) == 0)
            w->reaping++;
        else
            free(cmd);
        char due[24];
        snprintf(due, sizeof(due), "%" PRId64, sk_now_ms() / 1000);
        cmd = cmd_new(w, C_FEEDTRIM, S_FEEDTRIM);
        if (cmd_send_script(cmd) == 0)
            w->reaping++;
        else
            free(cmd);
        cmd = cmd_new(w, C_RETIRE_DUE, -1);
        if (sk_redis_send(&w->conn, &cmd->super,
                          SK_REDIS_ARGS("ZRANGEBYSCORE", RETAIN_KEY, "-inf", due, "LIMIT", "0", "100")) == 0)
            w->reaping++;
        else
            free(cmd);
    }
    h2o_timeout_link(w->loop, &w->t_bg, &w->e_bg);
}

/* Every command's end (redis_conn.h): NULL when the connection went away first. */
static void on_cmd(sk_redis_cmd_t *super, redisReply *rep)
{
    cmd_t *cmd = (cmd_t *)super;
    worker_t *w = cmd->w;
    switch (cmd->type) {
    case C_TAKE:
        take_done(w, cmd, rep);
        break;
    case C_LIST_MEMBERS:
        list_members_done(w, cmd, rep);
        break;
    case C_LIST_VIEW:
        list_view_done(cmd, rep);
        break;
    case C_PUT_PRE:
        if (cmd->req != NULL && cmd->req->err == 0 && (rep == NULL || rep->type == REDIS_REPLY_ERROR))
            cmd->req->err = SK_EUNAVAILABLE;
        break;
    case C_REAP_MEMBERS:
        reap_members_done(w, rep);
        break;
    case C_REAP:
        reap_done(w, cmd, rep);
        break;
    case C_RETIRE_DUE:
        retire_due_done(w, rep);
        break;
    case C_RETIRE:
        retire_done(w, cmd, rep);
        break;
    case C_FEEDTRIM: { /* a storm past the retention: keep at it while there is more */
        w->reaping--;
        if (rep != NULL && rep->type == REDIS_REPLY_INTEGER && rep->integer >= 1000) {
            cmd_t *more = cmd_new(w, C_FEEDTRIM, S_FEEDTRIM);
            if (cmd_send_script(more) == 0)
                w->reaping++;
            else
                free(more);
        }
        break;
    }
    case C_WAIT:
        wait_done(w, cmd, rep);
        break;
    default:
        req_done(w, cmd, rep);
        break;
    }
    free(cmd);
}

/* ---- the store interface ---- */

static int redis_submit(sk_store_worker_t *super, sk_store_req_t *req)
{
    worker_t *w = (worker_t *)super;
    if (req->op == SK_STORE_TAKE)
        return submit_take(w, req);
    if (!sk_redis_conn_up(&w->conn))
        return SK_EUNAVAILABLE;
    switch (req->op) {
    case SK_STORE_SALE_GET:
        return submit_script(w, req, C_VIEW, S_VIEW);
    case SK_STORE_SALE_LIST:
        return submit_list(w, req);
    case SK_STORE_SALE_PUT:
        return submit_put(w, req);
    case SK_STORE_ORDER_GET:
        return submit_script(w, req, C_ORDER, S_ORDER);
    case SK_STORE_ORDER_LIST:
        return submit_script(w, req, C_ORDERS, S_ORDERS);
    case SK_STORE_ORDER_CHANGE:
        return submit_script(w, req, C_CHANGE, S_CHANGE);
    case SK_STORE_SALE_DELETE:
        return submit_script(w, req, C_DELETE, S_DELETE);
    case SK_STORE_FEED:
        return submit_script(w, req, C_FEED, S_FEED);
    default:
        return SK_EINTERNAL;
    }
}

static int redis_healthy(sk_store_t *st)
{
    redis_t *r = (redis_t *)st;
    return atomic_load(&r->shared.nbad) == 0 && atomic_load(&r->shared.nrefusing) == 0;
}

static worker_t *worker_new(redis_t *r, const sk_store_env_t *env)
{
    worker_t *w = sk_calloc(1, sizeof(*w));
    w->super.store = &r->super;
    w->super.env = *env;
    w->r = r;
    w->index = env->index;
    w->loop = env->loop;
    w->failtail = &w->failq;
    sk_map_init(&w->sales);
    h2o_timeout_init(w->loop, &w->t_zero, 0);
    h2o_timeout_init(w->loop, &w->t_bg, BG_TICK_MS);
    w->e_zero.cb = on_zero;
    w->e_bg.cb = on_bg;
    return w;
}

static int redis_worker_open(sk_store_t *st, const sk_store_env_t *env, sk_store_worker_t **out, char *err,
                             size_t errlen)
{
    redis_t *r = (redis_t *)st;
    worker_t *w = worker_new(r, env);
    (void)err;
    (void)errlen;
    if (w->index == 0)
        h2o_timeout_link(w->loop, &w->t_bg, &w->e_bg);
    sk_redis_conn_init(&w->conn, w->loop, w->index, &r->conf, r->scripts, S_COUNT, &r->shared);
    /* one +switch-master watch per instance: worker 0's */
    if (r->conf.master_name != NULL && w->index == 0)
        w->conn.watch = sk_redis_watch_start(w->loop, &r->conf, &r->shared);
    if ((w->two = r->conf.min_replicas > 0))
        sk_redis_conn_init(&w->conn2, w->loop, w->index, &r->conf, r->scripts, S_COUNT, &r->shared);
    *out = &w->super;
    return 0;
}

static void redis_worker_close(sk_store_worker_t *super)
{
    worker_t *w = (worker_t *)super;
    sk_redis_conn_dispose(&w->conn); /* every waiting request is answered */
    if (w->two)
        sk_redis_conn_dispose(&w->conn2);
    run_failq(w);
    sk_map_dispose(&w->sales, ws_free);
    if (h2o_timeout_is_linked(&w->e_bg))
        h2o_timeout_unlink(&w->e_bg);
    if (h2o_timeout_is_linked(&w->e_zero))
        h2o_timeout_unlink(&w->e_zero);
    h2o_timeout_dispose(w->loop, &w->t_zero);
    h2o_timeout_dispose(w->loop, &w->t_bg);
    free(w);
}

static void redis_close(sk_store_t *st)
{
    redis_t *r = (redis_t *)st;
    for (int i = 0; i < S_COUNT; i++)
        sk_redis_script_dispose(&r->scripts[i]);
    sk_redis_conf_dispose(&r->conf);
    pthread_mutex_destroy(&r->shared.mu);
    free(r);
}

static const sk_store_ops_t redis_ops = {
    .name = "redis",
    .worker_open = redis_worker_open,
    .worker_close = redis_worker_close,
    .submit = redis_submit,
    .healthy = redis_healthy,
    .close = redis_close,
};

/* Each script as sent: the shebang with its flags, the result codes, common.lua, the script. */
static int load_scripts(redis_t *r, char *err, size_t errlen)
{
    static const char *const NAMES[RC_COUNT_] = {
#define XX(name, e) "R_" #name,
        SK_REDIS_RESULTS(XX)
#undef XX
    };
    sk_buf_t codes = {0};
    for (int i = 0; i < RC_COUNT_; i++) /* one line each: Lua allows 200 locals, not 200 values a line */
        sk_buf_printf(&codes, "local %s = %d\n", NAMES[i], i);
    for (int i = 0; i < S_COUNT; i++) {
        sk_buf_t b = {0};
        sk_buf_printf(&b, "#!lua%s\n", SCRIPTS[i].readonly ? " flags=no-writes" : "");
        sk_buf_append(&b, codes.p, codes.len);
        sk_buf_append(&b, sk_lua_common, strlen(sk_lua_common));
        sk_buf_append(&b, "\n", 1);
        sk_buf_append(&b, SCRIPTS[i].body, strlen(SCRIPTS[i].body));
        if (sk_redis_script_init(&r->scripts[i], SCRIPTS[i].name, b.p, b.len) != 0) {
            snprintf(err, errlen, "cannot compute the SHA1 of script %s", SCRIPTS[i].name);
            sk_buf_dispose(&codes);
            return -1;
        }
    }
    sk_buf_dispose(&codes);
    return 0;
}

static sk_store_t *redis_open(const char *url, int threads, const sk_store_opts_t *opts, int check, char *err,
                              size_t errlen)
{
    redis_t *r = sk_calloc(1, sizeof(*r));
    const char *env;
    r->super.ops = &redis_ops;
    r->nworkers = threads > 0 ? threads : 1;
    atomic_init(&r->shared.nbad, 0);
    atomic_init(&r->shared.nrefusing, 0);
    atomic_init(&r->shared.moves, 0);
    pthread_mutex_init(&r->shared.mu, NULL);
    atomic_init(&r->gen, 0);
    if (sk_redis_conf_parse(&r->conf, url, err, errlen) != 0 || load_scripts(r, err, errlen) != 0) {
        redis_close(&r->super);
        return NULL;
    }
    if (r->conf.password == NULL && (env = getenv("SECKILL_REDIS_PASSWORD")) != NULL && env[0] != '\0')
        r->conf.password = sk_strndup(env, strlen(env));
    if (opts != NULL) {
        r->conf.min_replicas = opts->redis_min_replicas;
        r->conf.wait_timeout_ms = opts->redis_wait_timeout_ms;
    }
    if (r->conf.wait_timeout_ms <= 0)
        r->conf.wait_timeout_ms = 100;
    /* what will not heal stops the start; a Redis that is down does not */
    if (check && sk_redis_check_start(&r->conf, err, errlen) != 0) {
        redis_close(&r->super);
        return NULL;
    }
    /* for measuring coalescing: SECKILL_REDIS_BATCH=1 sends one script call per take */
    r->batch_max = BATCH_MAX;
    if ((env = getenv("SECKILL_REDIS_BATCH")) != NULL) {
        long v = strtol(env, NULL, 10);
        r->batch_max = v < 1 ? 1 : v > BATCH_MAX ? BATCH_MAX : (size_t)v;
    }
    /* no connection here: workers connect on their own loops, and a Redis that is down at start
     * only makes the store unhealthy until it comes up */
    if (r->conf.master_name != NULL)
        sk_log(SK_LOG_INFO,
               "event=redis_store sentinels=%d master=%s db=%d auth=%s threads=%d batch=%zu min_replicas=%d "
               "wait_timeout_ms=%d",
               r->conf.nsentinels, r->conf.master_name, r->conf.db, r->conf.password ? "yes" : "no", r->nworkers,
               r->batch_max, r->conf.min_replicas, r->conf.wait_timeout_ms);
    else
        sk_log(SK_LOG_INFO,
               "event=redis_store host=%s port=%d db=%d auth=%s threads=%d batch=%zu min_replicas=%d "
               "wait_timeout_ms=%d",
               r->conf.path ? r->conf.path : r->conf.host, r->conf.path ? 0 : r->conf.port, r->conf.db,
               r->conf.password ? "yes" : "no", r->nworkers, r->batch_max, r->conf.min_replicas,
               r->conf.wait_timeout_ms);
    return &r->super;
}

sk_store_t *sk_store_redis_open(const char *url, int threads, const sk_store_opts_t *opts, char *err, size_t errlen)
{
    return redis_open(url, threads, opts, 1, err, errlen);
}

/* ---- offline: the reply handlers without Redis (store_redis_internal.h) ---- */

sk_store_worker_t *sk_store_redis_offline_open(const sk_store_env_t *env)
{
    char err[256];
    sk_store_t *st = redis_open("redis://127.0.0.1:6379", 1, NULL, 0, err, sizeof(err));
    if (st == NULL)
        return NULL;
    /* redis_worker_open, but with a connection that stays down */
    redis_t *r = (redis_t *)st;
    worker_t *w = worker_new(r, env);
    sk_redis_conn_init_down(&w->conn, w->loop, 0, &r->conf, r->scripts, S_COUNT, &r->shared);
    return &w->super;
}

void sk_store_redis_offline_close(sk_store_worker_t *w)
{
    sk_store_t *st = w->store;
    redis_worker_close(w);
    redis_close(st);
}

void sk_store_redis_offline_reset(sk_store_worker_t *super)
{
    worker_t *w = (worker_t *)super;
    sk_map_dispose(&w->sales, ws_free);
    sk_map_init(&w->sales);
    w->reaping = 0;
    atomic_store(&w->r->gen, 0);
}

static void offline_deliver(worker_t *w, cmd_t *cmd, redisReply *rep)
{
    sk_redis_conn_deliver(&w->conn, &cmd->super, rep); /* on_cmd frees cmd */
}

void sk_store_redis_offline_reply(sk_store_worker_t *super, sk_redis_reply_kind_t kind, sk_store_req_t *reqs, size_t n,
                                  size_t queued, redisReply *const *reps, size_t nreps)
{
    static const struct {
        cmd_type_t type;
        int script;
    } KIND[SK_REDIS_R_KINDS_] = {
        [SK_REDIS_R_TAKE] = {C_TAKE, S_TAKE},
        [SK_REDIS_R_VIEW] = {C_VIEW, S_VIEW},
        [SK_REDIS_R_LIST_MEMBERS] = {C_LIST_MEMBERS, -1},
        [SK_REDIS_R_LIST_VIEW] = {C_LIST_VIEW, S_VIEW},
        [SK_REDIS_R_PUT] = {C_PUT, S_PUT},
        [SK_REDIS_R_ORDER] = {C_ORDER, S_ORDER},
        [SK_REDIS_R_ORDERS] = {C_ORDERS, S_ORDERS},
        [SK_REDIS_R_CHANGE] = {C_CHANGE, S_CHANGE},
        [SK_REDIS_R_REAP_MEMBERS] = {C_REAP_MEMBERS, -1},
        [SK_REDIS_R_REAP] = {C_REAP, S_REAP},
    };
    worker_t *w = (worker_t *)super;
    cmd_t *cmd;
    if (nreps == 0)
        return;
    switch (kind) {
    case SK_REDIS_R_TAKE: { /* as ws_flush sent it, with `queued` more waiting */
        wsale_t *ws = ws_get(w, reqs[0].sale);
        cmd = cmd_new(w, C_TAKE, S_TAKE);
        cmd->ws = ws;
        cmd->gen = atomic_load(&w->r->gen);
        for (size_t i = n; i-- > 0;) {
            reqs[i].next = cmd->req;
            cmd->req = &reqs[i];
        }
        cmd->nreqs = cmd->super.takes = n;
        ws->inflight++;
        for (size_t i = n; i < n + queued; i++) {
            reqs[i].next = NULL;
            *ws->qtail = &reqs[i];
            ws->qtail = &reqs[i].next;
            ws->qlen++;
        }
        offline_deliver(w, cmd, reps[0]);
        break;
    }
    case SK_REDIS_R_LIST_MEMBERS:
    case SK_REDIS_R_LIST_VIEW: {
        list_t *l = sk_calloc(1, sizeof(*l));
        l->req = &reqs[0];
        if (kind == SK_REDIS_R_LIST_MEMBERS) {
            cmd = cmd_new(w, C_LIST_MEMBERS, -1);
            cmd->list = l;
            offline_deliver(w, cmd, reps[0]);
            break;
        }
        /* as list_members_done sent them, one per member */
        l->cap = l->outstanding = nreps;
        reqs[0].views = sk_calloc(nreps, sizeof(*reqs[0].views));
        for (size_t i = 0; i < nreps; i++) {
            cmd = cmd_new(w, C_LIST_VIEW, S_VIEW);
            cmd->list = l;
            snprintf(cmd->sale, sizeof(cmd->sale), "%s", reqs[0].sale);
            offline_deliver(w, cmd, reps[i]);
        }
        break;
    }
    case SK_REDIS_R_PUT: /* as submit_put sent them: the SADDs, then the script */
        for (size_t i = 0; i + 1 < nreps; i++) {
            cmd = cmd_new(w, C_PUT_PRE, -1);
            cmd->req = &reqs[0];
            offline_deliver(w, cmd, reps[i]);
        }
        cmd = cmd_new(w, C_PUT, S_PUT);
        cmd->req = &reqs[0];
        offline_deliver(w, cmd, reps[nreps - 1]);
        break;
    case SK_REDIS_R_REAP_MEMBERS:
    case SK_REDIS_R_REAP:
        w->reaping++;
        cmd = cmd_new(w, KIND[kind].type, KIND[kind].script);
        snprintf(cmd->sale, sizeof(cmd->sale), "%s", reqs[0].sale);
        offline_deliver(w, cmd, reps[0]);
        break;
    default:
        if ((unsigned)kind >= SK_REDIS_R_KINDS_)
            return;
        cmd = cmd_new(w, KIND[kind].type, KIND[kind].script);
        cmd->req = &reqs[0];
        offline_deliver(w, cmd, reps[0]);
        break;
    }
    run_failq(w); /* what the handlers failed for the next loop turn */
}
