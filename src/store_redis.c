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
 * calls then alternate over two connections per worker, and each counts as in flight (PIPELINE)
 * until its WAIT answers. Under Sentinel, worker 0 also runs the
 * +switch-master watch (redis_ha.c), which moves every worker's connections.
 *
 * Worker 0 of each instance also sweeps held orders past their deadline: it asks the index for
 * the slots due (at the next deadline, and at least every SWEEP_IDLE_MS), and reaps only those.
 * On a Redis Cluster it also relays the slots' feed streams into the one merged feed, reading
 * only the slots that workers marked after their scripts ("the relay", below). */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "error.h"
#include "log.h"
#include "map.h"
#include "metrics.h"
#include "parse.h"
#include "redis_conn.h"
#include "redis_cluster.h"
#include "redis_conn_internal.h"
#include "redis_ha.h"
#include "store.h"
#include "store_redis_internal.h"
#include "util.h"

/* Take script calls for one sale in flight at once per worker (with --redis-min-replicas, over its
 * two connections, each in flight until its WAIT answers: take_done). A first call goes out at
 * once; a second only when PIPELINE_MIN takes wait for it (or when the first comes back), so that
 * a busy sale keeps Redis fed while it fsyncs, but a small batch does not cost Redis an event-loop
 * turn and an fsync of its own: with a second call for every waiting take, 64 connections
 * settled into batches of 62 and 1 taking turns (docs/redis.md, "Coalescing"). */
#define PIPELINE 2
#define PIPELINE_MIN 32
#define BATCH_MAX 128          /* takes per script call (SECKILL_REDIS_BATCH may lower it) */
#define SOLDOUT_TTL_MS 250     /* how long a learned sold-out is trusted while connected */
#define BG_TICK_MS 100         /* worker 0's background timer */
#define SWEEP_IDLE_MS 1000     /* worker 0 asks for due slots at least this often (a hold lasts >= 1 s) */
#define FEEDTRIM_EVERY_MS 300  /* worker 0 trims the feed this often (not on a cluster) */
/* Redis Cluster: the relay of the slots' feed streams into the merged feed (worker 0) */
#define RELAY_IDLE_MS 200 /* it reads the marks this often while a round finds none */
#define RELAY_BUSY_MS 20  /* ... but this often for RELAY_TAIL_MS after a round that had some */
#define RELAY_TAIL_MS 300 /* (a storm's last marks may still be on their way) */
#define RELAY_BATCH 500   /* entries per copy (relay.lua) */
#define RELAY_PAR 16      /* slots relayed at once */
#define RELAY_TRIES 8     /* copies of a slot refused (another relay moved on) per round */
/* a slot stream keeps its copied entries this long (for a failover of the merged feed's master) */
#define RELAY_SLOT_KEEP_MS 5000
/* holds per reap call (~5 ms of Redis); a sale with more due gets the next call at once */
#define REAP_MAX 1000

/* the scripts, generated from the .lua files of src/lua by cmake/embed.cmake */
extern const char sk_lua_common[], sk_lua_take[], sk_lua_put[], sk_lua_view[], sk_lua_order[], sk_lua_orders[],
    sk_lua_change[], sk_lua_reap[], sk_lua_delete[], sk_lua_due_get[], sk_lua_due_add[], sk_lua_due_set[],
    sk_lua_feed[], sk_lua_feedtrim[], sk_lua_relay[], sk_lua_relay_mark[];

enum script_e {
    S_TAKE,
    S_PUT,
    S_VIEW,
    S_ORDER,
    S_ORDERS,
    S_CHANGE,
    S_REAP,
    S_DELETE,
    S_DUE_GET,
    S_DUE_ADD,
    S_DUE_SET,
    S_FEED,
    S_FEEDTRIM,
    S_RELAY,
    S_RELAY_MARK,
    S_COUNT
};

static const struct {
    const char *name;
    const char *body;
    int readonly; /* sent with flags=no-writes */
} SCRIPTS[S_COUNT] = {
    {"take", sk_lua_take, 0},         {"put", sk_lua_put, 0},         {"view", sk_lua_view, 1},
    {"order", sk_lua_order, 1},       {"orders", sk_lua_orders, 1},   {"change", sk_lua_change, 0},
    {"reap", sk_lua_reap, 0},         {"delete", sk_lua_delete, 0},   {"due_get", sk_lua_due_get, 1},
    {"due_add", sk_lua_due_add, 0},   {"due_set", sk_lua_due_set, 0}, {"feed", sk_lua_feed, 1},
    {"feedtrim", sk_lua_feedtrim, 0}, {"relay", sk_lua_relay, 0},     {"relay_mark", sk_lua_relay_mark, 0},
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
/* The keys of a slot's own, "sk:slot:{TAG}<suffix>" with the slot's tag (redis_cluster.h), in the
 * slot of the sales they index: every script touches one slot. */
#define SLOT_SALES ":sales"           /* set: the sale ids of the slot */
#define SLOT_DUE ":due"               /* sorted set: sale id -> its earliest hold deadline (or earlier) */
#define SLOT_TOMBSTONES ":tombstones" /* hash: deleted sale id -> its last order id */
#define SLOT_FEED ":feed"             /* Redis Cluster: stream, the feed of the slot's sales (common.lua) */
#define SLOT_RELAYED ":relayed" /* Redis Cluster with --redis-min-replicas: string, the relay's last read position */
/* The index, one of each per deployment (tag {i}), written by plain commands and index scripts
 * only, never with a sale's keys: */
static const char IDX_SLOTS[] = "sk:idx:{i}:slots"; /* set: slots that may hold sales (put adds first) */
static const char IDX_DUE[] = "sk:idx:{i}:due";     /* sorted set: slot -> its earliest deadline (or earlier) */
static const char IDX_VER[] = "sk:idx:{i}:ver";     /* hash: slot -> version (due_add.lua moves it on) */
#define DUE_SLOTS_MAX 1000                          /* due slots per sweep call */
#define REDIRECTS_MAX 5                             /* MOVED / ASK followed per command */
#define DUE_RETRY_MAX 256                           /* failed due_add calls kept for a retry, per worker */
#define REINDEX_PER_TICK 200                        /* slots read per 100 ms by the reindex at start */
/* The winners feed on a single Redis or under Sentinel (a cluster's scripts write the slots'
 * SLOT_FEED instead, which the relay merges into CL_FEED_KEY: docs/redis.md, "The winners feed"): */
static const char FEED_KEY[] = "sk:feed";                 /* stream: every order event of every sale, in one order */
static const char FEED_TRIMMED_KEY[] = "sk:feed:trimmed"; /* string: the last entry id the retention removed */
/* On a Redis Cluster the merged feed and what the relay keeps next to it, all in the slot of {feed}
 * (relay.lua; docs/redis.md, "The winners feed on a Redis Cluster"): */
static const char CL_FEED_KEY[] = "sk:{feed}";                 /* stream: every order event, merged */
static const char CL_FEED_TRIMMED_KEY[] = "sk:{feed}:trimmed"; /* string: as FEED_TRIMMED_KEY */
static const char CL_FEED_GONE_KEY[] = "sk:{feed}:gone";       /* hash: deleted sale -> its last order id */
static const char CL_FEED_POS_KEY[] = "sk:{feed}:pos";         /* hash: slot stream -> last entry id copied */
static const char CL_FEED_DIRTY_KEY[] = "sk:{feed}:dirty";     /* hash: slot -> mark version (relay_mark.lua) */
static const char CL_FEED_MARKSEQ_KEY[] = "sk:{feed}:markseq"; /* string: the marks' versions' counter */

typedef struct redis_s {
    sk_store_t super;
    sk_redis_conf_t conf;
    int nworkers;
    size_t batch_max;     /* takes per script call */
    sk_redis_shared_t shared; /* health and +switch-master, shared by the connections */
    sk_redis_cluster_t *cl;   /* redis-cluster://: the slot map; NULL otherwise */
    int idx_slot;             /* the slot of the index keys (IDX_*) */
    int feed_slot;            /* the slot of the feed's keys (sk:feed, or CL_FEED_* on a cluster) */
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
    int probe_next;        /* the cache aged out: the next call is a probe (see may_send) */
    int probing;           /* a probe is in flight */
    uint64_t gen;          /* the store's gen when the call that taught it was sent */
    int64_t fresh_until;   /* mono ms: trusted until then while connected */
    int64_t deadline;      /* mono ms: never trusted past the sale's next hold deadline */
    int64_t limit;         /* per_user_limit */
    int64_t ends_at;       /* SK_NO_TIME or the end of the window */
    int slot;              /* of its keys */
    char id[SK_SALE_ID_MAX + 1];
} wsale_t;

/* Redis Cluster: a master, as one worker reaches it. */
typedef struct node_s {
    char host[256];
    int port;
    sk_redis_conn_t conn, conn2; /* conn2 with --redis-min-replicas, as worker_t's */
    struct node_s *next_dead;    /* out of the map: disposed of on the next loop turn */
} node_t;

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
    size_t reaping; /* sweep commands outstanding */
    int64_t next_trim;
    size_t trimming; /* feed retention commands outstanding */
    /* redis-cluster:// only (conn and conn2 above stay down): a connection per master, nodes[i]
     * being the map's node i (and past the map's, nodes learned from a MOVED or ASK) */
    node_t *nodes[SK_REDIS_NODES_MAX];
    int nnodes;
    unsigned map_version;              /* of the map copied into nodes and slot_node */
    uint8_t slot_node[SK_REDIS_SLOTS]; /* index into nodes, 0xff: no master known */
    node_t *dead;                      /* nodes out of the map, disposed of on the next turn */
    /* due_add calls that failed (index unreachable, refused): sent again on the next tick */
    struct {
        int slot;
        long long deadline;
    } due_retry[DUE_RETRY_MAX];
    size_t ndue_retry;
    /* worker 0, once after start: every slot's earliest deadline into the index, for the
     * due_add calls an instance that died took with it */
    int reindex;        /* 0: to do, 1: listing, 2: going through slots, 3: done */
    int *reindex_slots; /* the slots in use */
    size_t nreindex, reindex_next, reindex_out;
    /* Redis Cluster: slots whose feed stream this worker's scripts may have written, to be marked
     * for the relay (relay_mark.lua), one call in flight at a time */
    uint8_t dirty[SK_REDIS_SLOTS / 8];
    size_t ndirty;
    int marking;
    struct relay_s *relay; /* worker 0 on a cluster: the relay */
    int closing;
} worker_t;

/* Worker 0's relay on a Redis Cluster: rounds of (read the marks, relay each marked slot). */
typedef struct relay_s {
    int polling;       /* the marks' read in flight */
    int64_t next_poll; /* mono ms */
    struct {
        int slot;
        long long ver;
    } * todo; /* the round's marked slots */
    size_t ntodo, next, cap;
    size_t out; /* slots being relayed */
    int failed; /* a command of the round failed: the next round waits RELAY_IDLE_MS */
    struct {
        uint64_t hi, lo;
        int known;
        int64_t copied_at; /* mono ms of this relay's last copy into it */
    } pos[SK_REDIS_SLOTS]; /* each slot stream's position in sk:{feed}:pos, as last seen */
    int feed_lost;         /* the merged feed's master was unreachable: recheck once it is back */
    int64_t last_work;     /* mono ms of the last round that had marks */
    h2o_timeout_t t_busy;  /* RELAY_BUSY_MS: the next round soon after a busy one */
    h2o_timeout_entry_t e_busy;
    worker_t *w;
} relay_t;

typedef enum cmd_type_e {
    C_TAKE,         /* a batch of takes of one sale */
    C_VIEW,         /* sale get */
    C_LIST_SLOTS,   /* sale list: SMEMBERS of the index's slots, then ... */
    C_LIST_MEMBERS, /* ... SMEMBERS of each slot's sales, then ... */
    C_LIST_VIEW,    /* ... one view per sale */
    C_PUT_PRE,      /* sale put: SADD of its slot to the index's, then ... */
    C_PUT,          /* ... the put script */
    C_ORDER,
    C_ORDERS,
    C_CHANGE,        /* confirm / cancel */
    C_DELETE,        /* sale delete */
    C_DUE_GET,       /* the sweep: the slots due, then ... */
    C_REAP,          /* ... one reap per slot (again while more are due), then ... */
    C_DUE_SET,       /* ... the slot's next deadline into the index */
    C_DUE_ADD,       /* after a take that made holds: the slot's deadline into the index */
    C_ASKING,        /* ASKING ahead of a command sent after an ASK redirection */
    C_REINDEX_SLOTS, /* at start: the slots in use, then ... */
    C_REINDEX_SLOT,  /* ... each slot's earliest deadline into the index (due_add) */
    C_FEED,          /* GET /v1/orders */
    C_FEEDTRIM,      /* worker 0: the feed's retention (not on a cluster) */
    C_RELAY_POLL,    /* worker 0 on a cluster: the marked slots, then per slot ... */
    C_RELAY_POS,     /* ... its position, if not known, then ... */
    C_RELAY_READ,    /* ... XRANGE of its feed stream from it, then ... */
    C_RELAY_COPY,    /* ... relay.lua (again while more), then ... */
    C_RELAY_TRIM,    /* ... XTRIM of what was copied a while ago */
    C_RELAY_SYNC,    /* with --redis-min-replicas, after the read: a write on the slot's master, then ... */
    C_RELAY_WAIT,    /* ... WAIT: what was read is on the replicas before it is copied */
    C_RELAY_MARK,    /* any worker on a cluster: relay_mark.lua */
    C_WAIT,          /* WAIT after a write (--redis-min-replicas): answers what the write decided */
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
    wsale_t *ws;                   /* take; a take call's WAIT: the sale it counts in flight for */
    uint64_t gen;                  /* take: r->gen when sent */
    int probe;                     /* take: the first call after the sold-out cache aged out */
    list_t *list;                  /* C_LIST_* */
    struct cmd_s *wait;            /* a write's WAIT, which answers its requests */
    struct cmd_s *of;              /* a WAIT: its write, until that write's reply has come */
    sk_redis_conn_t *via;          /* the connection it goes out on (NULL: the slot's master's first) */
    int slot;                      /* where it goes (the slot of its keys) */
    int sslot;                     /* C_REAP, C_DUE_*, C_LIST_MEMBERS: the slot it is about */
    long long ver, next;           /* C_REAP, C_DUE_SET: the slot's version and next deadline */
    int redirects;                 /* MOVED / ASK followed */
    const char *verb;              /* a plain command: verb key [val] */
    char key[64];
    char val[SK_SALE_ID_MAX + 1];
    char sale[SK_SALE_ID_MAX + 1]; /* C_LIST_VIEW */
    char *blob;                    /* C_RELAY_COPY: the entries (MessagePack); C_RELAY_MARK: the slots; owned */
    size_t bloblen;
    int tries;          /* C_RELAY_*: copies refused so far */
    int at_end;         /* C_RELAY_COPY: the entries reach the stream's end as read */
    int gap;            /* C_RELAY_COPY: the entry at the position had gone */
    char pos[48];       /* C_RELAY_READ, C_RELAY_COPY: the position read after */
    struct cmd_s *then; /* C_RELAY_WAIT: the copy it lets go; owned */
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

/* ---- routing: which connection a slot's commands go out on ---- */

static void on_zero(h2o_timeout_entry_t *e);

static node_t *node_find(worker_t *w, const char *host, int port, int *at)
{
    for (int i = 0; i < w->nnodes; i++)
        if (w->nodes[i] != NULL && w->nodes[i]->port == port && strcmp(w->nodes[i]->host, host) == 0) {
            *at = i;
            return w->nodes[i];
        }
    return NULL;
}

static node_t *node_new(worker_t *w, const char *host, int port)
{
    redis_t *r = w->r;
    node_t *n = sk_calloc(1, sizeof(*n));
    snprintf(n->host, sizeof(n->host), "%s", host);
    n->port = port;
    sk_redis_conn_init_at(&n->conn, w->loop, w->index, &r->conf, r->scripts, S_COUNT, &r->shared, host, port);
    if (w->two)
        sk_redis_conn_init_at(&n->conn2, w->loop, w->index, &r->conf, r->scripts, S_COUNT, &r->shared, host, port);
    return n;
}

/* A node out of the map goes on the next loop turn: it may be the one whose reply is running. */
static void node_bury(worker_t *w, node_t *n)
{
    n->next_dead = w->dead;
    w->dead = n;
    if (!h2o_timeout_is_linked(&w->e_zero))
        h2o_timeout_link(w->loop, &w->t_zero, &w->e_zero);
}

static void nodes_dispose(worker_t *w)
{
    while (w->dead != NULL) {
        node_t *n = w->dead;
        w->dead = n->next_dead;
        sk_redis_conn_dispose(&n->conn); /* its commands are answered (NULL) */
        if (w->two)
            sk_redis_conn_dispose(&n->conn2);
        free(n);
    }
}

/* Takes the instance's map when it has moved: a connection per master (kept across maps), the
 * others buried. */
static void cluster_sync(worker_t *w)
{
    redis_t *r = w->r;
    if (sk_redis_cluster_version(r->cl) == w->map_version)
        return;
    sk_redis_map_t *m = sk_malloc(sizeof(*m));
    sk_redis_cluster_copy(r->cl, m);
    node_t *nodes[SK_REDIS_NODES_MAX];
    for (int i = 0; i < m->nnodes; i++) {
        int at;
        nodes[i] = node_find(w, m->nodes[i].host, m->nodes[i].port, &at);
        if (nodes[i] != NULL)
            w->nodes[at] = NULL;
        else
            nodes[i] = node_new(w, m->nodes[i].host, m->nodes[i].port);
    }
    for (int i = 0; i < w->nnodes; i++)
        if (w->nodes[i] != NULL)
            node_bury(w, w->nodes[i]);
    memcpy(w->nodes, nodes, sizeof(nodes[0]) * (size_t)m->nnodes);
    w->nnodes = m->nnodes;
    memcpy(w->slot_node, m->slot_node, sizeof(w->slot_node));
    w->map_version = m->version;
    free(m);
}

static int node_index(worker_t *w, int slot)
{
    if (w->r->cl == NULL)
        return -1;
    cluster_sync(w);
    int k = w->slot_node[slot];
    return k < w->nnodes ? k : -2;
}

/* The connection for a slot's commands: the worker's own, or its slot's master's (NULL when no
 * master is known). */
static sk_redis_conn_t *route(worker_t *w, int slot)
{
    int k = node_index(w, slot);
    return k == -1 ? &w->conn : k >= 0 ? &w->nodes[k]->conn : NULL;
}

static int route_up(worker_t *w, int slot)
{
    sk_redis_conn_t *c = route(w, slot);
    return c != NULL && sk_redis_conn_up(c);
}

/* Whether the sweep may start: the index's master is ready. */
static int index_ready(worker_t *w)
{
    sk_redis_conn_t *c = route(w, w->r->idx_slot);
    return c != NULL && c->ready;
}

/* A plain command of one key (and one value). */
static void cmd_plain(cmd_t *cmd, const char *verb, const char *key, const char *val)
{
    cmd->verb = verb;
    snprintf(cmd->key, sizeof(cmd->key), "%s", key);
    if (val != NULL)
        snprintf(cmd->val, sizeof(cmd->val), "%s", val);
    else
        cmd->val[0] = '\0';
}

static void slot_key(char *out, size_t n, int slot, const char *suffix)
{
    snprintf(out, n, "sk:slot:{%s}%s", sk_redis_slot_tag(slot), suffix);
}

/* Sends the WAIT that will answer `write`'s requests, on c behind it. If it cannot go out (the
 * connection is going), the write's reply, NULL, answers them itself. */
static void send_wait(worker_t *w, sk_redis_conn_t *c, cmd_t *write)
{
    char n[16], ms[16];
    cmd_t *wait = cmd_new(w, C_WAIT, -1);
    snprintf(n, sizeof(n), "%d", w->r->conf.min_replicas);
    snprintf(ms, sizeof(ms), "%d", w->r->conf.wait_timeout_ms);
    write->wait = NULL;
    if (sk_redis_send(c, &wait->super, SK_REDIS_ARGS("WAIT", n, ms)) == 0) {
        write->wait = wait;
        wait->of = write;
    } else {
        free(wait);
    }
}

/* Sends a command where its slot lives; a write script with --redis-min-replicas gets a WAIT
 * right behind it (pipelined: no extra round trip): the write's requests are then answered by the
 * WAIT's reply. 0, or -1 when it cannot go out (its callback will not run). */
static int cmd_send(cmd_t *cmd)
{
    worker_t *w = cmd->w;
    sk_redis_conn_t *c = cmd->via ? cmd->via : route(w, cmd->slot);
    if (c == NULL)
        return -1;
    if (cmd->type == C_REINDEX_SLOT)
        return sk_redis_send(c, &cmd->super, SK_REDIS_ARGS("ZRANGE", cmd->key, "0", "0", "WITHSCORES"));
    if (cmd->type == C_RELAY_READ) {
        /* from the position itself, which is still there unless entries were lost (relay_read_done) */
        int none = strcmp(cmd->pos, "0-0") == 0;
        char count[16];
        snprintf(count, sizeof(count), "%d", RELAY_BATCH + !none);
        const char *start = none ? "-" : cmd->pos;
        return sk_redis_send(c, &cmd->super, SK_REDIS_ARGS("XRANGE", cmd->key, start, "+", "COUNT", count));
    }
    if (cmd->type == C_RELAY_TRIM)
        return sk_redis_send(c, &cmd->super, SK_REDIS_ARGS("XTRIM", cmd->key, "MINID", cmd->val));
    if (cmd->type == C_RELAY_WAIT) {
        char n[16], ms[16];
        snprintf(n, sizeof(n), "%d", w->r->conf.min_replicas);
        snprintf(ms, sizeof(ms), "%d", w->r->conf.wait_timeout_ms);
        return sk_redis_send(c, &cmd->super, SK_REDIS_ARGS("WAIT", n, ms));
    }
    if (cmd->super.script == NULL)
        return cmd->val[0] != '\0' ? sk_redis_send(c, &cmd->super, SK_REDIS_ARGS(cmd->verb, cmd->key, cmd->val))
                                   : sk_redis_send(c, &cmd->super, SK_REDIS_ARGS(cmd->verb, cmd->key));
    if (sk_redis_send_script(c, &cmd->super) != 0)
        return -1;
    if (w->r->conf.min_replicas > 0 &&
        (cmd->type == C_TAKE || cmd->type == C_PUT || cmd->type == C_CHANGE || cmd->type == C_DELETE))
        send_wait(w, c, cmd);
    return 0;
}

/* Answers a write's request now, or when its WAIT has answered. Only what reports a write waits
 * for the WAIT (a take's order, a replay of one, a put, a confirm or cancel done): a refusal
 * (sold_out, user_limit, ...) acknowledges nothing that a failover could lose, and answers at
 * the script's reply (docs/redis.md, "What a refusal means across a failover"). */
static void answer(cmd_t *cmd, sk_store_req_t *req)
{
    if (cmd->wait == NULL || req->err != 0) {
        req->cb(req);
        return;
    }
    req->next = cmd->wait->req; /* the order of answers does not matter */
    cmd->wait->req = req;
}

static void ws_flush(worker_t *w, wsale_t *ws);
static int may_send(worker_t *w, wsale_t *ws);
static void ws_maybe_free(worker_t *w, wsale_t *ws);

static void wait_done(worker_t *w, cmd_t *cmd, redisReply *rep)
{
    /* Answered before its write's reply: the write was answered NOSCRIPT and sent again as EVAL
     * (redis_conn.c) behind this WAIT, which so confirmed nothing of it. Another WAIT goes out
     * behind the EVAL in its place. */
    if (cmd->of != NULL) {
        if (rep != NULL)
            send_wait(w, cmd->super.conn, cmd->of);
        else
            cmd->of->wait = NULL; /* the connection went: the write's NULL reply answers */
        return;
    }
    int ok = rep != NULL && sk_redis_conn_waited(cmd->super.conn, rep);
    wsale_t *ws = cmd->ws; /* a take call's: in flight until now (take_done) */
    if (ws != NULL) {
        ws->inflight--;
        if (ws->qlen > 0 && may_send(w, ws))
            ws_flush(w, ws); /* keep the pipe busy before answering */
    }
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
    if (ws != NULL)
        ws_maybe_free(w, ws);
}

/* The last key of every sale script (common.lua's K.feed): the feed, sk:feed, or on a Redis Cluster
 * the stream of the slot whose tag is `tag`, so that every script touches one slot only. */
static void args_feed(sk_redis_argv_t *a, const worker_t *w, const char *tag)
{
    if (w->r->cl != NULL)
        sk_redis_arg_printf(a, "sk:slot:{%s}%s", tag, SLOT_FEED);
    else
        sk_redis_arg_s(a, FEED_KEY);
}

/* The sale's keys, then `nextra` keys of its slot's own (SLOT_*; declared as KEYS too, so that
 * Redis knows them). */
static void args_keys_and(sk_redis_argv_t *a, const worker_t *w, const char *sale, const char *const *extra,
                          size_t nextra)
{
    const char *tag = sk_redis_slot_tag(sk_redis_sale_slot(sale, strlen(sale)));
    sk_redis_arg_u(a, NKEYS + nextra + 1);
    for (size_t i = 0; i < NKEYS; i++)
        sk_redis_arg_printf(a, "sk:{%s}%s", sale, KEY_SUFFIX[i]);
    for (size_t i = 0; i < nextra; i++)
        sk_redis_arg_printf(a, "sk:slot:{%s}%s", tag, extra[i]);
    args_feed(a, w, tag);
}

/* The index's keys (due_*.lua). */
static void args_index(sk_redis_argv_t *a)
{
    sk_redis_arg_u(a, 2);
    sk_redis_arg_s(a, IDX_DUE);
    sk_redis_arg_s(a, IDX_VER);
}

static void args_keys(sk_redis_argv_t *a, const worker_t *w, const char *sale)
{
    args_keys_and(a, w, sale, NULL, 0);
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
    case C_TAKE: {
        static const char *const extra[] = {SLOT_DUE};
        args_keys_and(a, cmd->w, cmd->ws->id, extra, 1);
        sk_redis_arg_u(a, cmd->nreqs);
        for (const sk_store_req_t *q = req; q != NULL; q = q->next) {
            sk_redis_arg(a, q->user ? q->user : "", q->user ? q->user_len : 0);
            sk_redis_arg_i(a, q->qty);
            sk_redis_arg(a, q->request_id ? q->request_id : "", q->request_id ? q->request_id_len : 0);
        }
        return;
    }
    case C_VIEW:
        args_keys(a, cmd->w, req->sale);
        return;
    case C_LIST_VIEW:
        args_keys(a, cmd->w, cmd->sale);
        return;
    case C_PUT: {
        static const char *const extra[] = {SLOT_SALES, SLOT_TOMBSTONES, SLOT_DUE};
        args_keys_and(a, cmd->w, req->sale, extra, 3);
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
        static const char *const extra[] = {SLOT_SALES, SLOT_DUE, SLOT_TOMBSTONES};
        args_keys_and(a, cmd->w, req->sale, extra, 3);
        sk_redis_arg_s(a, req->sale);
        return;
    }
    case C_ORDER:
        args_keys(a, cmd->w, req->sale);
        sk_redis_arg_u(a, req->order_id);
        return;
    case C_ORDERS:
        args_keys(a, cmd->w, req->sale);
        sk_redis_arg_u(a, req->order_id);
        sk_redis_arg_u(a, req->limit);
        return;
    case C_CHANGE:
        args_keys(a, cmd->w, req->sale);
        sk_redis_arg_u(a, req->order_id);
        sk_redis_arg_s(a, sk_order_op_name(req->change));
        return;
    case C_REAP: {
        const char *tag = sk_redis_slot_tag(cmd->sslot);
        sk_redis_arg_u(a, 4);
        sk_redis_arg_printf(a, "sk:slot:{%s}%s", tag, SLOT_DUE);
        sk_redis_arg_printf(a, "sk:slot:{%s}%s", tag, SLOT_SALES);
        sk_redis_arg_printf(a, "sk:slot:{%s}%s", tag, SLOT_TOMBSTONES);
        args_feed(a, cmd->w, tag);
        sk_redis_arg_i(a, REAP_MAX);
        return;
    }
    case C_DUE_GET:
        args_index(a);
        sk_redis_arg_i(a, DUE_SLOTS_MAX);
        return;
    case C_DUE_ADD:
        args_index(a);
        sk_redis_arg_i(a, cmd->sslot);
        sk_redis_arg_i(a, cmd->next);
        return;
    case C_DUE_SET:
        args_index(a);
        sk_redis_arg_i(a, cmd->sslot);
        sk_redis_arg_i(a, cmd->ver);
        sk_redis_arg_i(a, cmd->next);
        return;
    case C_FEED:
        if (cmd->w->r->cl != NULL) {
            sk_redis_arg_u(a, 3);
            sk_redis_arg_s(a, CL_FEED_KEY);
            sk_redis_arg_s(a, CL_FEED_TRIMMED_KEY);
            sk_redis_arg_s(a, CL_FEED_GONE_KEY);
        } else {
            sk_redis_arg_u(a, 2);
            sk_redis_arg_s(a, FEED_KEY);
            sk_redis_arg_s(a, FEED_TRIMMED_KEY);
        }
        sk_redis_arg_printf(a, "%llu-%llu", (unsigned long long)req->cursor.hi, (unsigned long long)req->cursor.lo);
        sk_redis_arg_u(a, req->limit);
        return;
    case C_FEEDTRIM:
        sk_redis_arg_u(a, 2);
        sk_redis_arg_s(a, FEED_KEY);
        sk_redis_arg_s(a, FEED_TRIMMED_KEY);
        sk_redis_arg_u(a, sk_feed_retain());
        return;
    case C_RELAY_COPY:
        sk_redis_arg_u(a, 5);
        sk_redis_arg_s(a, CL_FEED_KEY);
        sk_redis_arg_s(a, CL_FEED_TRIMMED_KEY);
        sk_redis_arg_s(a, CL_FEED_GONE_KEY);
        sk_redis_arg_s(a, CL_FEED_POS_KEY);
        sk_redis_arg_s(a, CL_FEED_DIRTY_KEY);
        sk_redis_arg_s(a, cmd->key);
        sk_redis_arg_s(a, cmd->pos);
        sk_redis_arg_i(a, cmd->sslot);
        sk_redis_arg_i(a, cmd->ver);
        sk_redis_arg_i(a, cmd->at_end);
        sk_redis_arg_u(a, sk_feed_retain());
        sk_redis_arg(a, cmd->blob, cmd->bloblen);
        return;
    case C_RELAY_MARK:
        sk_redis_arg_u(a, 2);
        sk_redis_arg_s(a, CL_FEED_DIRTY_KEY);
        sk_redis_arg_s(a, CL_FEED_MARKSEQ_KEY);
        sk_redis_arg(a, cmd->blob, cmd->bloblen);
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
    worker_t *w = SK_CONTAINER_OF(e, worker_t, e_zero);
    run_failq(w);
    nodes_dispose(w);
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
    ws->slot = sk_redis_sale_slot(sale, len);
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
    if (ws->gen != atomic_load_explicit(&w->r->gen, memory_order_relaxed) || mono >= ws->deadline) {
        ws_forget(ws); /* units may have come back */
        return 0;
    }
    if (route_up(w, ws->slot) && mono >= ws->fresh_until) {
        ws_forget(ws);
        ws->probe_next = 1; /* only its age: most likely still sold out */
        return 0;
    }
    /* the window is Redis's wall clock: keep a second of margin against skew */
    if (ws->ends_at != SK_NO_TIME && req->now_ms / 1000 >= ws->ends_at - 1)
        return 0;
    req->err = sk_sale_soldout_answer(ws->limit, req->user != NULL, req->qty);
    return 1;
}

/* The connection for the next take call of a slot: of its master's two (with
 * --redis-min-replicas), the one with fewer commands in flight. */
static sk_redis_conn_t *take_conn(worker_t *w, int slot)
{
    int k = node_index(w, slot);
    if (k == -2)
        return NULL;
    sk_redis_conn_t *a = k == -1 ? &w->conn : &w->nodes[k]->conn, *b = k == -1 ? &w->conn2 : &w->nodes[k]->conn2;
    if (w->two && b->ready && b->pending < a->pending)
        return b;
    return a;
}

/* Sends up to batch_max queued takes as one script call. */
static void ws_flush(worker_t *w, wsale_t *ws)
{
    cmd_t *cmd = cmd_new(w, C_TAKE, S_TAKE);
    cmd->via = take_conn(w, ws->slot);
    cmd->slot = ws->slot;
    sk_store_req_t **tail = &cmd->req;
    cmd->ws = ws;
    cmd->gen = atomic_load(&w->r->gen);
    cmd->probe = ws->probe_next && ws->inflight == 0;
    ws->probe_next = 0;
    ws->probing |= cmd->probe;
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
    if (cmd_send(cmd) == 0)
        return;
    /* the connection is going: nothing queued here could go out later either */
    ws->inflight--;
    if (cmd->probe)
        ws->probing = 0;
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

/* Answers from the sold-out cache, just learned, the takes that wait in the sale's queue (they
 * came while the call that taught it was in flight: that call's decision is as fresh for them as
 * for those that come next). Those it cannot answer (a request_id) stay queued in order. */
static void ws_drain_soldout(worker_t *w, wsale_t *ws)
{
    sk_store_req_t *done = NULL, **dtail = &done, **pp = &ws->qhead;
    while (*pp != NULL) {
        sk_store_req_t *q = *pp;
        if (fast_answer(w, ws, q)) {
            *pp = q->next;
            q->next = NULL;
            *dtail = q;
            dtail = &q->next;
            ws->qlen--;
        } else {
            pp = &q->next;
        }
    }
    ws->qtail = pp;
    /* answered once the queue is whole again: a callback may queue a take of this sale */
    for (sk_store_req_t *q = done, *next; q != NULL; q = next) {
        next = q->next;
        q->next = NULL;
        q->cb(q);
    }
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

/* Whether the takes waiting for a sale go out now (see PIPELINE). While a probe is in flight (the
 * first call after the sold-out cache aged out) nothing else goes out, however many queue: the
 * sale is most likely still sold out, and the probe's reply then answers them all from the cache
 * (ws_drain_soldout) instead of second and third calls making PIPELINE_MIN buyers or more wait
 * for Redis (BENCHMARKS.md, the mixed sale's p99 with WAIT). Their wait is bounded by the
 * probe's command deadline. */
static int may_send(worker_t *w, wsale_t *ws)
{
    if (ws->probing)
        return ws->inflight == 0;
    return ws->inflight == 0 || (ws->inflight < PIPELINE && ws->qlen >= PIPELINE_MIN) ||
           ws->qlen >= w->r->batch_max;
}

/* A slot's deadline that did not reach the index: sent again on the next tick (the earliest per
 * slot). Only past DUE_RETRY_MAX is one lost: the hold still expires (every read and write of its
 * sale reaps it), only the sweep does not return its units before the slot is indexed again. */
static void due_retry_add(worker_t *w, int slot, long long deadline)
{
    for (size_t i = 0; i < w->ndue_retry; i++)
        if (w->due_retry[i].slot == slot) {
            if (deadline < w->due_retry[i].deadline)
                w->due_retry[i].deadline = deadline;
            return;
        }
    if (w->ndue_retry == DUE_RETRY_MAX) {
        sk_log(SK_LOG_WARN, "event=redis_due_index_lost slot=%d deadline=%lld", slot, deadline);
        return;
    }
    w->due_retry[w->ndue_retry].slot = slot;
    w->due_retry[w->ndue_retry++].deadline = deadline;
}

static void due_add(worker_t *w, int slot, long long deadline)
{
    cmd_t *cmd = cmd_new(w, C_DUE_ADD, S_DUE_ADD);
    cmd->slot = w->r->idx_slot;
    cmd->sslot = slot;
    cmd->next = deadline;
    if (cmd_send(cmd) != 0) {
        due_retry_add(w, slot, deadline);
        free(cmd);
    }
}

static void take_done(worker_t *w, cmd_t *cmd, redisReply *rep)
{
    wsale_t *ws = cmd->ws;
    long long h[TH_LEN] = {0}; /* zeroed: gcc -O3 cannot see that reply_code sets h[0] on success */
    int ok = reply_code(rep, &h[TH_CODE]) == 0;

    /* With WAIT the call stays in flight until its WAIT answers: its requests are not answered
     * before, so their buyers cannot send the next takes either, and a second call sent now would
     * carry only what arrived meanwhile. Counted so, a sale has at most PIPELINE calls between
     * send and answer, and its batches are as large as without WAIT (BENCHMARKS.md) */
    if (cmd->wait != NULL)
        cmd->wait->ws = ws;
    else
        ws->inflight--;
    if (cmd->probe)
        ws->probing = 0;
    if (ok && h[TH_CODE] == RC_OK) {
        for (size_t i = 1; ok && i < TH_LEN; i++)
            ok = el_int(rep, i, &h[i]) == 0;
        ok = ok && rep->elements == TH_LEN + TE_LEN * cmd->nreqs;
    }
    if (ok && h[TH_CODE] == RC_OK && h[TH_OPEN] == 1 && h[TH_REMAINING] == 0) { /* open and nothing left */
        learn_soldout(ws, cmd, h);
        if (ws->qlen > 0)
            ws_drain_soldout(w, ws);
    } else {
        ws_forget(ws);
    }

    /* keep the pipe busy before answering */
    if (ws->qlen > 0 && may_send(w, ws))
        ws_flush(w, ws);

    size_t i = 0;
    int held = 0; /* the call made held orders */
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
        held |= q->err == 0 && q->created && q->order.expires_at != SK_NO_TIME;
        answer(cmd, q);
    }
    /* the slot's deadline into the index, for the sweep (after the take: see due_set.lua) */
    if (held && h[TH_DEADLINE] >= 0)
        due_add(w, ws->slot, h[TH_DEADLINE]);
    ws_maybe_free(w, ws);
}

static int submit_take(worker_t *w, sk_store_req_t *req)
{
    wsale_t *ws = ws_find(w, req->sale);
    if (ws != NULL && fast_answer(w, ws, req))
        return SK_STORE_DONE;
    if (!route_up(w, ws != NULL ? ws->slot : sk_redis_sale_slot(req->sale, strlen(req->sale))))
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
        if (req->views == NULL)
            req->views = sk_calloc(1, sizeof(*req->views));
        qsort(req->views, req->nviews, sizeof(*req->views), cmp_view);
    }
    free(l);
    req->cb(req);
}

/* The index's slots: one SMEMBERS of each slot's sales. */
static void list_slots_done(worker_t *w, cmd_t *cmd, redisReply *rep)
{
    list_t *l = cmd->list;
    if (rep == NULL || rep->type != REDIS_REPLY_ARRAY) {
        l->failed = 1;
        list_finish(l);
        return;
    }
    for (size_t i = 0; i < rep->elements && !l->failed; i++) {
        const redisReply *m = rep->element[i];
        long v;
        if (m->type != REDIS_REPLY_STRING ||
            sk_redis_parse_number(m->str, m->str + m->len, SK_REDIS_SLOTS - 1, &v) != 0)
            continue; /* not ours */
        cmd_t *c = cmd_new(w, C_LIST_MEMBERS, -1);
        char key[64];
        c->list = l;
        c->slot = c->sslot = (int)v;
        slot_key(key, sizeof(key), c->slot, SLOT_SALES);
        cmd_plain(c, "SMEMBERS", key, NULL);
        if (cmd_send(c) != 0) {
            free(c);
            l->failed = 1;
            break;
        }
        l->outstanding++;
    }
    if (l->outstanding == 0)
        list_finish(l);
}

/* A slot's sales: one view each. */
static void list_members_done(worker_t *w, cmd_t *cmd, redisReply *rep)
{
    list_t *l = cmd->list;
    l->outstanding--;
    if (rep == NULL || rep->type != REDIS_REPLY_ARRAY) {
        l->failed = 1;
    } else if (!l->failed && rep->elements > 0) {
        l->cap += rep->elements;
        l->req->views = sk_realloc(l->req->views, l->cap * sizeof(*l->req->views));
    }
    for (size_t i = 0; !l->failed && i < rep->elements; i++) {
        const redisReply *m = rep->element[i];
        if (m->type != REDIS_REPLY_STRING || m->len == 0 || m->len > SK_SALE_ID_MAX)
            continue;
        cmd_t *v = cmd_new(w, C_LIST_VIEW, S_VIEW);
        v->list = l;
        memcpy(v->sale, m->str, m->len);
        v->sale[m->len] = '\0';
        v->slot = sk_redis_sale_slot(v->sale, m->len);
        if (cmd_send(v) != 0) {
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
    cmd_t *cmd = cmd_new(w, C_LIST_SLOTS, -1);
    list_t *l = sk_calloc(1, sizeof(*l));
    l->req = req;
    cmd->list = l;
    cmd->slot = w->r->idx_slot;
    cmd_plain(cmd, "SMEMBERS", IDX_SLOTS, NULL);
    if (cmd_send(cmd) != 0) {
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
            if (parse_view(rep, req->sale, &req->view) != 0) {
                err = SK_EUNAVAILABLE;
            } else if (req->view.conf.retain_seconds != SK_NO_TIME && req->view.conf.ends_at != SK_NO_TIME &&
                       req->view.conf.retain_seconds >= 0 && req->view.conf.ends_at >= 0 &&
                       req->view.conf.retain_seconds <= INT64_MAX - req->view.conf.ends_at) {
                /* put.lua put the sale into its slot's sweep list for when its retain_seconds
                 * are up: the index learns that time too, so that the sweep comes (reap.lua) */
                due_add(w, cmd->slot, (long long)(req->view.conf.ends_at + req->view.conf.retain_seconds));
            }
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
    cmd->slot = sk_redis_sale_slot(req->sale, strlen(req->sale));
    if (cmd_send(cmd) != 0) {
        free(cmd);
        return SK_EUNAVAILABLE;
    }
    return 0;
}

/* Sale put: its slot into the index's first (so a listed slot may hold no sale yet, never the
 * reverse), then, once that is done, the script, which adds the sale to its slot's sales. */
static int submit_put(worker_t *w, sk_store_req_t *req)
{
    cmd_t *pre = cmd_new(w, C_PUT_PRE, -1);
    char slot[16];
    pre->req = req;
    pre->slot = w->r->idx_slot;
    snprintf(slot, sizeof(slot), "%d", sk_redis_sale_slot(req->sale, strlen(req->sale)));
    cmd_plain(pre, "SADD", IDX_SLOTS, slot);
    if (cmd_send(pre) != 0) {
        free(pre);
        return SK_EUNAVAILABLE;
    }
    return 0;
}

static void put_pre_done(worker_t *w, cmd_t *cmd, redisReply *rep)
{
    sk_store_req_t *req = cmd->req;
    if (req == NULL)
        return;
    if (rep != NULL && rep->type != REDIS_REPLY_ERROR) {
        cmd_t *put = cmd_new(w, C_PUT, S_PUT);
        put->req = req;
        put->slot = sk_redis_sale_slot(req->sale, strlen(req->sale));
        if (cmd_send(put) == 0)
            return;
        free(put);
    }
    req->err = SK_EUNAVAILABLE;
    req->cb(req);
}

/* ---- worker 0: the sweep of held orders past their deadline ---- */

static void sweep_send(worker_t *w, cmd_t *cmd)
{
    if (cmd_send(cmd) == 0)
        w->reaping++;
    else
        free(cmd);
}

static void reap_slot(worker_t *w, int slot, long long ver)
{
    cmd_t *cmd = cmd_new(w, C_REAP, S_REAP);
    cmd->slot = cmd->sslot = slot;
    cmd->ver = ver;
    sweep_send(w, cmd);
}

/* due_get.lua's answer: {now ms, next deadline, slot, version, ...}: a reap for each slot, and
 * the next ask when the next deadline comes (at the latest SWEEP_IDLE_MS from now: a hold made
 * since, by any instance, is due a second after it was made at the earliest). */
static void due_get_done(worker_t *w, redisReply *rep)
{
    long long now_ms, next, slot, ver;
    size_t n = 0;
    w->reaping--;
    if (reply_code(rep, &now_ms) != 0 || el_int(rep, 1, &next) != 0)
        return;
    for (size_t i = 2; i + 1 < rep->elements; i += 2)
        if (el_int(rep, i, &slot) == 0 && el_int(rep, i + 1, &ver) == 0 && slot >= 0 && slot < SK_REDIS_SLOTS) {
            reap_slot(w, (int)slot, ver);
            n++;
        }
    int64_t wait = SWEEP_IDLE_MS;
    if (n >= DUE_SLOTS_MAX) /* more may be due: again once these are reaped */
        wait = 0;
    else if (next >= 0 && next < INT64_MAX / 1000 && now_ms >= 0 && next * 1000 - now_ms < wait)
        wait = next * 1000 - now_ms < 0 ? 0 : next * 1000 - now_ms;
    w->next_reap = sk_mono_ms() + wait;
}

/* reap.lua's answer: {handled, more, next deadline, retired sale ids...}: again while more are due, then the slot's
 * next deadline into the index. */
static void reap_done(worker_t *w, cmd_t *done, redisReply *rep)
{
    long long n, more, next;
    w->reaping--;
    if (reply_code(rep, &n) != 0 || el_int(rep, 1, &more) != 0 || el_int(rep, 2, &next) != 0)
        return;
    if (n > 0 || rep->elements > 3)
        bump_gen(w->r);
    for (size_t i = 3; i < rep->elements; i++) /* the sales whose retain_seconds were up, deleted */
        if (rep->element[i]->type == REDIS_REPLY_STRING)
            sk_log(SK_LOG_INFO, "event=sale_retired sale=%.*s", (int)rep->element[i]->len, rep->element[i]->str);
    if (more) { /* a burst of expiries: keep at this slot until it is done */
        reap_slot(w, done->sslot, done->ver);
        return;
    }
    cmd_t *cmd = cmd_new(w, C_DUE_SET, S_DUE_SET);
    cmd->slot = w->r->idx_slot;
    cmd->sslot = done->sslot;
    cmd->ver = done->ver;
    cmd->next = next < 0 ? -1 : next;
    sweep_send(w, cmd);
}

static void relay_mark(worker_t *w, int slot);

/* The reindex at start (worker 0): SMEMBERS of the slots in use, then, REINDEX_PER_TICK slots per
 * tick, each slot's earliest deadline (ZRANGE of its sweep list) into the index. */
static void reindex_tick(worker_t *w)
{
    if (w->reindex == 0) {
        cmd_t *cmd = cmd_new(w, C_REINDEX_SLOTS, -1);
        cmd->slot = w->r->idx_slot;
        cmd_plain(cmd, "SMEMBERS", IDX_SLOTS, NULL);
        if (cmd_send(cmd) == 0)
            w->reindex = 1;
        else
            free(cmd);
        return;
    }
    if (w->reindex != 2 || w->reindex_out > 0)
        return;
    for (size_t k = 0; k < REINDEX_PER_TICK && w->reindex_next < w->nreindex; k++) {
        cmd_t *cmd = cmd_new(w, C_REINDEX_SLOT, -1);
        cmd->slot = cmd->sslot = w->reindex_slots[w->reindex_next];
        slot_key(cmd->key, sizeof(cmd->key), cmd->slot, SLOT_DUE);
        if (cmd_send(cmd) != 0) {
            free(cmd);
            return; /* again on the next tick */
        }
        w->reindex_next++;
        w->reindex_out++;
    }
    if (w->reindex_next == w->nreindex && w->reindex_out == 0) {
        free(w->reindex_slots);
        w->reindex_slots = NULL;
        w->reindex = 3;
    }
}

static void reindex_slots_done(worker_t *w, redisReply *rep)
{
    long v;
    if (rep == NULL || rep->type != REDIS_REPLY_ARRAY) {
        w->reindex = 0; /* again */
        return;
    }
    w->reindex_slots = sk_calloc(rep->elements ? rep->elements : 1, sizeof(*w->reindex_slots));
    for (size_t i = 0; i < rep->elements; i++) {
        const redisReply *m = rep->element[i];
        if (m->type == REDIS_REPLY_STRING &&
            sk_redis_parse_number(m->str, m->str + m->len, SK_REDIS_SLOTS - 1, &v) == 0)
            w->reindex_slots[w->nreindex++] = (int)v;
    }
    /* on a cluster, each slot's feed stream once too: what an instance that died between a script
     * and its mark left there is relayed */
    for (size_t i = 0; w->r->cl != NULL && i < w->nreindex; i++)
        relay_mark(w, w->reindex_slots[i]);
    w->reindex = 2;
}

static void reindex_slot_done(worker_t *w, cmd_t *cmd, redisReply *rep)
{
    w->reindex_out--;
    if (rep != NULL && rep->type == REDIS_REPLY_ARRAY && rep->elements == 2 &&
        rep->element[1]->type == REDIS_REPLY_STRING) {
        long long at = strtoll(rep->element[1]->str, NULL, 10);
        if (at > 0)
            due_add(w, cmd->sslot, at);
    }
}

/* ---- Redis Cluster: the relay of the slots' feed streams into one merged feed ----
 *
 * Every script that may write a slot's feed stream is followed, from the worker that sent it, by a
 * mark of that slot in sk:{feed}:dirty (relay_mark.lua: a version never given before). Worker 0 of every
 * instance reads the marks (every RELAY_IDLE_MS while there are none, at once after a round that
 * had some), and for each marked slot reads its stream after the slot's position and copies the
 * entries with relay.lua, which lands them only if the position is still the stored one and
 * clears the mark only if its version is still the one read: a mark set after the read stays for
 * the next round, and the entry it stands for was written before it. docs/redis.md has the
 * argument. Idle, this costs one HGETALL per RELAY_IDLE_MS, whatever the number of sales. */

static void relay_run(worker_t *w);
static void relay_tick(worker_t *w);

static int bit_get(const uint8_t *b, int i)
{
    return (b[i >> 3] >> (i & 7)) & 1;
}

static void bit_set(uint8_t *b, int i)
{
    b[i >> 3] |= (uint8_t)(1u << (i & 7));
}

static void mark_again(worker_t *w, const cmd_t *cmd);

/* Sends the marks gathered (one relay_mark.lua call in flight per worker; what fails is kept for
 * the next tick). */
static void mark_flush(worker_t *w)
{
    if (w->marking || w->ndirty == 0 || w->closing)
        return;
    sk_buf_t b = {0};
    for (int i = 0; i < SK_REDIS_SLOTS; i++)
        if (bit_get(w->dirty, i)) {
            sk_buf_printf(&b, "%s%d", b.len > 0 ? " " : "", i);
            w->dirty[i >> 3] &= (uint8_t) ~(1u << (i & 7));
        }
    w->ndirty = 0;
    cmd_t *cmd = cmd_new(w, C_RELAY_MARK, S_RELAY_MARK);
    cmd->slot = w->r->feed_slot;
    cmd->blob = b.p;
    cmd->bloblen = b.len;
    if (cmd_send(cmd) != 0) {
        mark_again(w, cmd); /* the next tick */
        free(cmd->blob);
        free(cmd);
        return;
    }
    w->marking = 1;
}

/* The slots of a mark call that may not have run: marked again on the next tick. */
static void mark_again(worker_t *w, const cmd_t *cmd)
{
    const char *p = cmd->blob, *end = cmd->blob + cmd->bloblen;
    while (p != NULL && p < end) {
        int slot = atoi(p);
        if (slot >= 0 && slot < SK_REDIS_SLOTS && !bit_get(w->dirty, slot)) {
            bit_set(w->dirty, slot);
            w->ndirty++;
        }
        p = memchr(p, ' ', (size_t)(end - p));
        if (p != NULL)
            p++;
    }
}

/* A script that may have written the feed stream of `slot` has answered. */
static void relay_mark(worker_t *w, int slot)
{
    if (slot < 0 || slot >= SK_REDIS_SLOTS)
        return;
    if (!bit_get(w->dirty, slot)) {
        bit_set(w->dirty, slot);
        w->ndirty++;
    }
    mark_flush(w);
}

static void mark_done(worker_t *w, cmd_t *cmd, redisReply *rep)
{
    w->marking = 0;
    if (rep == NULL || rep->type != REDIS_REPLY_INTEGER) { /* it may have run: marking again is harmless */
        mark_again(w, cmd);
        return; /* again on the next tick */
    }
    mark_flush(w);
}

/* MessagePack (as Redis's cmsgpack reads it): an array header, a string. */
static void mp_head(sk_buf_t *b, size_t n, unsigned char fix, unsigned char b16, unsigned char b32)
{
    unsigned char h[5];
    size_t len;
    if (fix != 0 && n < (fix == 0x90 ? 16u : 32u)) {
        h[0] = (unsigned char)(fix | n);
        len = 1;
    } else if (n < 65536) {
        h[0] = b16;
        h[1] = (unsigned char)(n >> 8);
        h[2] = (unsigned char)n;
        len = 3;
    } else {
        h[0] = b32;
        h[1] = (unsigned char)(n >> 24);
        h[2] = (unsigned char)(n >> 16);
        h[3] = (unsigned char)(n >> 8);
        h[4] = (unsigned char)n;
        len = 5;
    }
    sk_buf_append(b, (const char *)h, len);
}

static void mp_str(sk_buf_t *b, const char *s, size_t n)
{
    mp_head(b, n, 0xa0, 0xda, 0xdb);
    sk_buf_append(b, s, n);
}

/* XRANGE's reply from its element `from` on as relay.lua's argument: an array of {id, field,
 * value, ...}. -1 when it is not a stream's range. */
static int relay_pack(const redisReply *rep, size_t from, sk_buf_t *b)
{
    mp_head(b, rep->elements - from, 0x90, 0xdc, 0xdd);
    for (size_t i = from; i < rep->elements; i++) {
        const redisReply *e = rep->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 || e->element[0]->type != REDIS_REPLY_STRING ||
            e->element[1]->type != REDIS_REPLY_ARRAY)
            return -1;
        const redisReply *f = e->element[1];
        mp_head(b, f->elements + 1, 0x90, 0xdc, 0xdd);
        mp_str(b, e->element[0]->str, e->element[0]->len);
        for (size_t k = 0; k < f->elements; k++) {
            if (f->element[k]->type != REDIS_REPLY_STRING)
                return -1;
            mp_str(b, f->element[k]->str, f->element[k]->len);
        }
    }
    return 0;
}

static void relay_end_job(worker_t *w, int failed)
{
    relay_t *rl = w->relay;
    rl->out--;
    if (failed)
        rl->failed = 1;
    relay_run(w);
}

/* The slot stream's key and position into a relay command. */
static cmd_t *relay_cmd(worker_t *w, cmd_type_t type, int script, int slot, long long ver, int tries)
{
    cmd_t *cmd = cmd_new(w, type, script);
    cmd->sslot = slot;
    cmd->ver = ver;
    cmd->tries = tries;
    slot_key(cmd->key, sizeof(cmd->key), slot, SLOT_FEED);
    snprintf(cmd->pos, sizeof(cmd->pos), "%llu-%llu", (unsigned long long)w->relay->pos[slot].hi,
             (unsigned long long)w->relay->pos[slot].lo);
    return cmd;
}

static int relay_send(cmd_t *cmd)
{
    if (cmd_send(cmd) == 0)
        return 0;
    free(cmd->blob);
    free(cmd);
    return -1;
}

/* Reads a slot's stream after its position (asks for the position first when it is not known). */
static void relay_read(worker_t *w, int slot, long long ver, int tries)
{
    relay_t *rl = w->relay;
    cmd_t *cmd;
    if (!rl->pos[slot].known) {
        char stream[64];
        cmd = relay_cmd(w, C_RELAY_POS, -1, slot, ver, tries);
        cmd->slot = w->r->feed_slot;
        slot_key(stream, sizeof(stream), slot, SLOT_FEED);
        cmd_plain(cmd, "HGET", CL_FEED_POS_KEY, stream);
    } else {
        cmd = relay_cmd(w, C_RELAY_READ, -1, slot, ver, tries);
        cmd->slot = slot;
    }
    if (relay_send(cmd) != 0)
        relay_end_job(w, 1);
}

static void relay_pos_done(worker_t *w, cmd_t *cmd, redisReply *rep)
{
    relay_t *rl = w->relay;
    sk_cursor_t c = {0, 0};
    if (rep == NULL || (rep->type != REDIS_REPLY_NIL && rep->type != REDIS_REPLY_STRING) ||
        (rep->type == REDIS_REPLY_STRING && parse_cursor(rep->str, rep->len, &c) != 0)) {
        relay_end_job(w, 1);
        return;
    }
    rl->pos[cmd->sslot].hi = c.hi;
    rl->pos[cmd->sslot].lo = c.lo;
    rl->pos[cmd->sslot].known = 1;
    relay_read(w, cmd->sslot, cmd->ver, cmd->tries);
}

/* The slot stream from its position on: the entry at the position itself comes first (and is not
 * copied again), unless it has gone. The relay's own trim keeps it (RELAY_SLOT_KEEP_MS before the
 * newest position), so it has gone only when the stream was capped (common.lua's FEED_SLOT_KEEP:
 * the relay fell that far behind) or its master failed over without it: entries may have been
 * lost, which the copy's answer logs when the position was the stored one. */
static void relay_read_done(worker_t *w, cmd_t *cmd, redisReply *rep)
{
    sk_buf_t b = {0};
    size_t from = 0;
    int none = strcmp(cmd->pos, "0-0") == 0, gap = 0;
    if (rep == NULL || rep->type != REDIS_REPLY_ARRAY) {
        relay_end_job(w, 1);
        return;
    }
    if (!none && rep->elements > 0) {
        const redisReply *e = rep->element[0];
        if (e->type == REDIS_REPLY_ARRAY && e->elements == 2 && e->element[0]->type == REDIS_REPLY_STRING &&
            e->element[0]->len == strlen(cmd->pos) && memcmp(e->element[0]->str, cmd->pos, e->element[0]->len) == 0)
            from = 1;
        else
            gap = 1;
    }
    if (relay_pack(rep, from, &b) != 0) {
        sk_buf_dispose(&b);
        relay_end_job(w, 1);
        return;
    }
    cmd_t *copy = relay_cmd(w, C_RELAY_COPY, S_RELAY, cmd->sslot, cmd->ver, cmd->tries);
    copy->slot = w->r->feed_slot;
    snprintf(copy->pos, sizeof(copy->pos), "%s", cmd->pos); /* what was read after */
    copy->at_end = rep->elements - from < RELAY_BATCH;
    copy->blob = b.p;
    copy->bloblen = b.len;
    copy->nreqs = rep->elements - from; /* how many entries */
    copy->gap = gap;
    if (w->r->conf.min_replicas > 0 && copy->nreqs > 0) {
        /* --redis-min-replicas: nothing is copied that a failover of the slot's master could
         * still lose with its order. A write after the read, on the same connection, then WAIT:
         * once the replicas have that write they have every entry read before it. */
        cmd_t *sync = relay_cmd(w, C_RELAY_SYNC, -1, cmd->sslot, 0, 0), *wait;
        char key[64];
        sync->slot = cmd->sslot;
        sync->via = cmd->super.conn;
        slot_key(key, sizeof(key), cmd->sslot, SLOT_RELAYED);
        cmd_plain(sync, "SET", key, cmd->pos);
        if (relay_send(sync) != 0) {
            free(copy->blob);
            free(copy);
            relay_end_job(w, 1);
            return;
        }
        wait = relay_cmd(w, C_RELAY_WAIT, -1, cmd->sslot, 0, 0);
        wait->via = cmd->super.conn;
        wait->then = copy;
        if (relay_send(wait) != 0) {
            free(copy->blob);
            free(copy);
            relay_end_job(w, 1);
        }
        return;
    }
    if (relay_send(copy) != 0)
        relay_end_job(w, 1);
}

static void relay_wait_done(worker_t *w, cmd_t *cmd, redisReply *rep)
{
    cmd_t *copy = cmd->then;
    cmd->then = NULL;
    if (!sk_redis_conn_waited(cmd->super.conn, rep)) { /* not on enough replicas yet: the mark stays */
        free(copy->blob);
        free(copy);
        relay_end_job(w, 1);
        return;
    }
    if (relay_send(copy) != 0)
        relay_end_job(w, 1);
}

static void relay_copy_done(worker_t *w, cmd_t *cmd, redisReply *rep)
{
    relay_t *rl = w->relay;
    long long code;
    const char *s;
    size_t len;
    sk_cursor_t c;
    int slot = cmd->sslot;
    if (reply_code(rep, &code) != 0 || (code != RC_OK && code != RC_REPLAY) || el_str(rep, 1, &s, &len) != 0 ||
        parse_cursor(s, len, &c) != 0) {
        if (rep != NULL && rep->type == REDIS_REPLY_ERROR)
            sk_log(SK_LOG_WARN, "event=feed_relay_error slot=%d error=\"%.*s\"", slot, (int)rep->len, rep->str);
        rl->pos[slot].known = 0;
        relay_end_job(w, 1);
        return;
    }
    if (code == RC_OK && cmd->gap) /* the position was the stored one: what followed it may be lost */
        sk_log(SK_LOG_WARN, "event=feed_relay_gap slot=%d after=%s copied_to=%.*s", slot, cmd->pos, (int)len, s);
    rl->pos[slot].hi = c.hi;
    rl->pos[slot].lo = c.lo;
    rl->pos[slot].known = 1;
    if (code == RC_OK && cmd->nreqs > 0)
        rl->pos[slot].copied_at = sk_mono_ms();
    if (code == RC_OK && cmd->nreqs > 0 && c.hi > RELAY_SLOT_KEEP_MS) {
        /* what was copied a while ago leaves the slot stream (failing is harmless: the next does it) */
        cmd_t *trim = relay_cmd(w, C_RELAY_TRIM, -1, slot, 0, 0);
        trim->slot = slot;
        snprintf(trim->val, sizeof(trim->val), "%llu-0", (unsigned long long)(c.hi - RELAY_SLOT_KEEP_MS));
        relay_send(trim);
    }
    if (code == RC_REPLAY) { /* another relay moved on (or this one was behind): read after the stored one */
        if (cmd->tries + 1 >= RELAY_TRIES) {
            relay_end_job(w, 0); /* the mark stays: the next round */
            return;
        }
        relay_read(w, slot, cmd->ver, cmd->tries + 1);
        return;
    }
    if (!cmd->at_end) {
        relay_read(w, slot, cmd->ver, cmd->tries);
        return;
    }
    relay_end_job(w, 0);
}

/* Starts the round's next slots, at most RELAY_PAR at once; at its end the next round is asked
 * for at once if this one had marks and no failure. */
static void relay_run(worker_t *w)
{
    relay_t *rl = w->relay;
    while (!w->closing && rl->out < RELAY_PAR && rl->next < rl->ntodo) {
        size_t k = rl->next++;
        rl->out++;
        relay_read(w, rl->todo[k].slot, rl->todo[k].ver, 0);
    }
    if (rl->out > 0 || rl->next < rl->ntodo)
        return;
    int64_t now = sk_mono_ms();
    if (rl->ntodo > 0 && !rl->failed) {
        rl->last_work = now;
        rl->next_poll = now;
    } else if (!rl->failed && !w->closing && now - rl->last_work < RELAY_TAIL_MS) {
        /* a storm's last marks may be on their way: look again soon rather than at the next idle
         * read (a follower's lag at the end of a storm) */
        rl->next_poll = now + RELAY_BUSY_MS;
        if (!h2o_timeout_is_linked(&rl->e_busy))
            h2o_timeout_link(w->loop, &rl->t_busy, &rl->e_busy);
    } else {
        rl->next_poll = now + RELAY_IDLE_MS;
    }
    rl->ntodo = rl->next = 0;
    rl->failed = 0;
    relay_tick(w);
}

static void on_relay_busy(h2o_timeout_entry_t *e)
{
    relay_t *rl = SK_CONTAINER_OF(e, relay_t, e_busy);
    relay_tick(rl->w);
}

static void relay_poll_done(worker_t *w, redisReply *rep)
{
    relay_t *rl = w->relay;
    long v;
    rl->polling = 0;
    if (rep == NULL || rep->type != REDIS_REPLY_ARRAY) {
        rl->next_poll = sk_mono_ms() + RELAY_IDLE_MS;
        return;
    }
    if (rl->cap < rep->elements / 2) {
        rl->cap = rep->elements / 2;
        rl->todo = sk_realloc(rl->todo, rl->cap * sizeof(*rl->todo));
    }
    rl->ntodo = rl->next = 0;
    for (size_t i = 0; i + 1 < rep->elements; i += 2) {
        const redisReply *k = rep->element[i], *x = rep->element[i + 1];
        if (k->type == REDIS_REPLY_STRING && x->type == REDIS_REPLY_STRING &&
            sk_redis_parse_number(k->str, k->str + k->len, SK_REDIS_SLOTS - 1, &v) == 0) {
            rl->todo[rl->ntodo].slot = (int)v;
            rl->todo[rl->ntodo++].ver = strtoll(x->str, NULL, 10);
        }
    }
    relay_run(w);
}

/* The merged feed's master back after it was out of reach (a failover may have lost its last
 * copies, positions and marks together): the slots this relay copied into lately are marked
 * again, while their streams still hold what was copied (RELAY_SLOT_KEEP_MS), and every position
 * is read again. */
static void relay_recheck(worker_t *w)
{
    relay_t *rl = w->relay;
    int64_t since = sk_mono_ms() - RELAY_SLOT_KEEP_MS;
    int n = 0;
    for (int i = 0; i < SK_REDIS_SLOTS; i++) {
        rl->pos[i].known = 0;
        if (rl->pos[i].copied_at != 0 && rl->pos[i].copied_at >= since) {
            relay_mark(w, i);
            n++;
        }
    }
    if (n > 0)
        sk_log(SK_LOG_INFO, "event=feed_relay_recheck slots=%d", n);
}

/* The start of a round, when its time has come and none is running. */
static void relay_tick(worker_t *w)
{
    relay_t *rl = w->relay;
    if (rl == NULL || w->closing)
        return;
    if (!route_up(w, w->r->feed_slot)) {
        rl->feed_lost = 1;
        return;
    }
    if (rl->feed_lost) {
        rl->feed_lost = 0;
        relay_recheck(w);
    }
    if (rl->polling || rl->out > 0 || rl->next < rl->ntodo || sk_mono_ms() + 1 < rl->next_poll)
        return;
    cmd_t *cmd = cmd_new(w, C_RELAY_POLL, -1);
    cmd->slot = w->r->feed_slot;
    cmd_plain(cmd, "HGETALL", CL_FEED_DIRTY_KEY, NULL);
    rl->next_poll = sk_mono_ms() + RELAY_IDLE_MS;
    if (cmd_send(cmd) == 0)
        rl->polling = 1;
    else
        free(cmd);
}

static void on_bg(h2o_timeout_entry_t *e)
{
    worker_t *w = SK_CONTAINER_OF(e, worker_t, e_bg);
    int64_t now = sk_mono_ms();
    if (w->r->cl != NULL) { /* a new map; a master lost: ask for a new one */
        cluster_sync(w);
        if (atomic_load(&w->r->shared.nbad) > 0 || atomic_load(&w->r->shared.nrefusing) > 0)
            sk_redis_cluster_refresh(w->r->cl);
    }
    if (w->ndue_retry > 0 && index_ready(w)) {
        size_t n = w->ndue_retry;
        w->ndue_retry = 0; /* what fails again comes back */
        for (size_t i = 0; i < n; i++)
            due_add(w, w->due_retry[i].slot, w->due_retry[i].deadline);
    }
    if (w->index == 0 && w->reindex < 3 && index_ready(w))
        reindex_tick(w);
    if (w->index == 0 && w->reaping == 0 && now >= w->next_reap && index_ready(w)) {
        cmd_t *cmd = cmd_new(w, C_DUE_GET, S_DUE_GET);
        cmd->slot = w->r->idx_slot;
        w->next_reap = now + SWEEP_IDLE_MS; /* until its answer says when */
        sweep_send(w, cmd);
    }
    if (w->r->cl != NULL) { /* the feed's relay: marks that failed, worker 0's rounds */
        mark_flush(w);
        relay_tick(w);
    }
    if (w->index == 0 && w->r->cl == NULL && w->trimming == 0 && now >= w->next_trim) {
        cmd_t *cmd = cmd_new(w, C_FEEDTRIM, S_FEEDTRIM);
        cmd->slot = w->r->feed_slot;
        w->next_trim = now + FEEDTRIM_EVERY_MS;
        if (cmd_send(cmd) == 0)
            w->trimming++;
        else
            free(cmd);
    }
    h2o_timeout_link(w->loop, &w->t_bg, &w->e_bg);
}

/* Redis Cluster: a command answered MOVED (the slot has moved: its new master, and a new map) or
 * ASK (the slot is moving: this command, after ASKING, on the node named) goes there. 1 when it
 * went (its callback will run again), 0 to answer it with the redirection (503: nothing ran). */
static int redirect(cmd_t *cmd, const redisReply *rep)
{
    worker_t *w = cmd->w;
    char host[256];
    int slot, port, at;
    int kind = sk_redis_redirect_parse(rep->str, &slot, host, sizeof(host), &port);
    if (kind == 0 || cmd->redirects >= REDIRECTS_MAX)
        return 0;
    if (kind == 1)
        sk_redis_cluster_refresh(w->r->cl);
    node_t *n = node_find(w, host, port, &at);
    if (n == NULL) {
        if (w->nnodes == SK_REDIS_NODES_MAX)
            return 0;
        n = node_new(w, host, port);
        at = w->nnodes;
        w->nodes[w->nnodes++] = n;
    }
    if (kind == 1)
        w->slot_node[slot] = (uint8_t)at;
    cmd->redirects++;
    sk_metrics_redis_redirect(kind == 2 ? SK_REDIS_REDIRECT_ASK : SK_REDIS_REDIRECT_MOVED);
    if (cmd->wait != NULL)
        cmd->wait->of = NULL; /* the WAIT sent behind it answers nothing now (wait_done): */
    cmd->wait = NULL;         /* cmd_send sends one behind it where it goes */
    cmd->via = cmd->type == C_TAKE ? take_conn(w, slot) : NULL;
    if (kind == 2) {
        cmd_t *asking = cmd_new(w, C_ASKING, -1);
        cmd->via = &n->conn;
        if (sk_redis_send(cmd->via, &asking->super, SK_REDIS_ARGS("ASKING")) != 0) {
            free(asking);
            return 0;
        }
    }
    return cmd_send(cmd) == 0;
}

/* Every command's end (redis_conn.h): NULL when the connection went away first. */
static void on_cmd(sk_redis_cmd_t *super, redisReply *rep)
{
    cmd_t *cmd = (cmd_t *)super;
    worker_t *w = cmd->w;
    if (rep != NULL && rep->type == REDIS_REPLY_ERROR && w->r->cl != NULL && cmd->type != C_ASKING &&
        cmd->type != C_WAIT && cmd->type != C_RELAY_WAIT && redirect(cmd, rep))
        return;
    /* on a cluster, a script that may have written its slot's feed stream: the relay is told */
    if (w->r->cl != NULL && (cmd->type == C_TAKE || cmd->type == C_CHANGE || cmd->type == C_REAP ||
                             cmd->type == C_PUT || cmd->type == C_DELETE))
        relay_mark(w, cmd->slot);
    switch (cmd->type) {
    case C_TAKE:
        take_done(w, cmd, rep);
        break;
    case C_LIST_SLOTS:
        list_slots_done(w, cmd, rep);
        break;
    case C_LIST_MEMBERS:
        list_members_done(w, cmd, rep);
        break;
    case C_LIST_VIEW:
        list_view_done(cmd, rep);
        break;
    case C_PUT_PRE:
        put_pre_done(w, cmd, rep);
        break;
    case C_DUE_GET:
        due_get_done(w, rep);
        break;
    case C_REAP:
        reap_done(w, cmd, rep);
        break;
    case C_DUE_SET:
        w->reaping--;
        break;
    case C_DUE_ADD:
        if (rep == NULL || rep->type == REDIS_REPLY_ERROR) /* it may have run: adding again is harmless */
            due_retry_add(w, cmd->sslot, cmd->next);
        break;
    case C_ASKING:
        break;
    case C_REINDEX_SLOTS:
        reindex_slots_done(w, rep);
        break;
    case C_REINDEX_SLOT:
        reindex_slot_done(w, cmd, rep);
        break;
    case C_FEEDTRIM: { /* a storm past the retention: keep at it while there is more */
        w->trimming--;
        if (rep != NULL && rep->type == REDIS_REPLY_INTEGER && rep->integer >= 1000) {
            cmd_t *more = cmd_new(w, C_FEEDTRIM, S_FEEDTRIM);
            more->slot = cmd->slot;
            if (cmd_send(more) == 0)
                w->trimming++;
            else
                free(more);
        }
        break;
    }
    case C_WAIT:
        wait_done(w, cmd, rep);
        break;
    case C_RELAY_MARK:
        mark_done(w, cmd, rep);
        break;
    case C_RELAY_POLL:
        relay_poll_done(w, rep);
        break;
    case C_RELAY_POS:
        relay_pos_done(w, cmd, rep);
        break;
    case C_RELAY_READ:
        relay_read_done(w, cmd, rep);
        break;
    case C_RELAY_COPY:
        relay_copy_done(w, cmd, rep);
        break;
    case C_RELAY_TRIM:
    case C_RELAY_SYNC:
        break;
    case C_RELAY_WAIT:
        relay_wait_done(w, cmd, rep);
        break;
    default:
        req_done(w, cmd, rep);
        break;
    }
    if (cmd->wait != NULL) /* its reply came: the WAIT holds what it answers */
        cmd->wait->of = NULL;
    free(cmd->blob);
    free(cmd);
}

/* ---- the store interface ---- */

static int redis_submit(sk_store_worker_t *super, sk_store_req_t *req)
{
    worker_t *w = (worker_t *)super;
    if (req->op == SK_STORE_TAKE)
        return submit_take(w, req);
    if (w->r->cl == NULL && !sk_redis_conn_up(&w->conn)) /* under Cluster: the slot's master's (cmd_send) */
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
    case SK_STORE_FEED: {
        cmd_t *cmd = cmd_new(w, C_FEED, S_FEED);
        cmd->req = req;
        cmd->slot = w->r->feed_slot;
        if (cmd_send(cmd) != 0) {
            free(cmd);
            return SK_EUNAVAILABLE;
        }
        return 0;
    }
    default:
        return SK_EINTERNAL;
    }
}

static int redis_healthy(sk_store_t *st)
{
    redis_t *r = (redis_t *)st;
    /* under Cluster, every slot must have a master too */
    return atomic_load(&r->shared.nbad) == 0 && atomic_load(&r->shared.nrefusing) == 0 &&
           (r->cl == NULL || sk_redis_cluster_complete(r->cl));
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
    h2o_timeout_link(w->loop, &w->t_bg, &w->e_bg); /* every worker: retries, the map; worker 0: the sweep */
    w->two = r->conf.min_replicas > 0;
    if (r->cl != NULL) { /* a connection per master instead (cluster_sync) */
        memset(w->slot_node, 0xff, sizeof(w->slot_node));
        if (w->index == 0) {
            w->relay = sk_calloc(1, sizeof(*w->relay));
            w->relay->w = w;
            h2o_timeout_init(w->loop, &w->relay->t_busy, RELAY_BUSY_MS);
            w->relay->e_busy.cb = on_relay_busy;
        }
        sk_redis_conn_init_down(&w->conn, w->loop, w->index, &r->conf, r->scripts, S_COUNT, &r->shared);
        if (w->two)
            sk_redis_conn_init_down(&w->conn2, w->loop, w->index, &r->conf, r->scripts, S_COUNT, &r->shared);
        cluster_sync(w);
        *out = &w->super;
        return 0;
    }
    sk_redis_conn_init(&w->conn, w->loop, w->index, &r->conf, r->scripts, S_COUNT, &r->shared);
    /* one +switch-master watch per instance: worker 0's */
    if (r->conf.master_name != NULL && w->index == 0)
        w->conn.watch = sk_redis_watch_start(w->loop, &r->conf, &r->shared);
    if (w->two)
        sk_redis_conn_init(&w->conn2, w->loop, w->index, &r->conf, r->scripts, S_COUNT, &r->shared);
    *out = &w->super;
    return 0;
}

static void redis_worker_close(sk_store_worker_t *super)
{
    worker_t *w = (worker_t *)super;
    w->closing = 1;                  /* the relay starts nothing more */
    sk_redis_conn_dispose(&w->conn); /* every waiting request is answered */
    if (w->two)
        sk_redis_conn_dispose(&w->conn2);
    for (int i = 0; i < w->nnodes; i++)
        node_bury(w, w->nodes[i]);
    w->nnodes = 0;
    nodes_dispose(w);
    free(w->reindex_slots);
    if (w->relay != NULL) {
        free(w->relay->todo);
        if (h2o_timeout_is_linked(&w->relay->e_busy))
            h2o_timeout_unlink(&w->relay->e_busy);
        h2o_timeout_dispose(w->loop, &w->relay->t_busy);
    }
    free(w->relay);
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
    sk_redis_cluster_stop(r->cl);
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
    r->idx_slot = sk_redis_key_slot(IDX_SLOTS, strlen(IDX_SLOTS));
    r->feed_slot = r->conf.cluster ? sk_redis_key_slot(CL_FEED_KEY, strlen(CL_FEED_KEY))
                                   : sk_redis_key_slot(FEED_KEY, strlen(FEED_KEY));
    sk_redis_slot_tag(0); /* the slots' tags, once, before the workers */
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
     * only makes the store unhealthy until it comes up; under Cluster, the map thread asks the
     * seeds where the masters are */
    if (r->conf.cluster && check && (r->cl = sk_redis_cluster_start(&r->conf)) == NULL) {
        snprintf(err, errlen, "cannot start the Redis Cluster map thread");
        redis_close(&r->super);
        return NULL;
    }
    if (r->conf.cluster)
        sk_log(SK_LOG_INFO, "event=redis_store cluster_seeds=%d auth=%s threads=%d batch=%zu min_replicas=%d",
               r->conf.nseeds, r->conf.password ? "yes" : "no", r->nworkers, r->batch_max, r->conf.min_replicas);
    else if (r->conf.master_name != NULL)
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
    w->ndue_retry = 0;
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
        [SK_REDIS_R_TAKE] = {C_TAKE, S_TAKE},           [SK_REDIS_R_VIEW] = {C_VIEW, S_VIEW},
        [SK_REDIS_R_LIST_SLOTS] = {C_LIST_SLOTS, -1},   [SK_REDIS_R_LIST_MEMBERS] = {C_LIST_MEMBERS, -1},
        [SK_REDIS_R_LIST_VIEW] = {C_LIST_VIEW, S_VIEW}, [SK_REDIS_R_PUT] = {C_PUT, S_PUT},
        [SK_REDIS_R_ORDER] = {C_ORDER, S_ORDER},        [SK_REDIS_R_ORDERS] = {C_ORDERS, S_ORDERS},
        [SK_REDIS_R_CHANGE] = {C_CHANGE, S_CHANGE},     [SK_REDIS_R_DUE_GET] = {C_DUE_GET, S_DUE_GET},
        [SK_REDIS_R_REAP] = {C_REAP, S_REAP},           [SK_REDIS_R_DUE_SET] = {C_DUE_SET, S_DUE_SET},
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
    case SK_REDIS_R_LIST_SLOTS:
    case SK_REDIS_R_LIST_MEMBERS:
    case SK_REDIS_R_LIST_VIEW: {
        list_t *l = sk_calloc(1, sizeof(*l));
        l->req = &reqs[0];
        if (kind != SK_REDIS_R_LIST_VIEW) {
            cmd = cmd_new(w, KIND[kind].type, -1);
            cmd->list = l;
            l->outstanding = kind == SK_REDIS_R_LIST_MEMBERS; /* as list_slots_done counts it */
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
    case SK_REDIS_R_PUT: /* the SADDs of put_pre (of another put: no request), then the script */
        for (size_t i = 0; i + 1 < nreps; i++) {
            cmd = cmd_new(w, C_PUT_PRE, -1);
            offline_deliver(w, cmd, reps[i]);
        }
        cmd = cmd_new(w, C_PUT, S_PUT);
        cmd->req = &reqs[0];
        offline_deliver(w, cmd, reps[nreps - 1]);
        break;
    case SK_REDIS_R_DUE_GET:
    case SK_REDIS_R_REAP:
    case SK_REDIS_R_DUE_SET:
        w->reaping++;
        cmd = cmd_new(w, KIND[kind].type, KIND[kind].script);
        cmd->slot = cmd->sslot = sk_redis_sale_slot(reqs[0].sale, strlen(reqs[0].sale));
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
