/* store_redis_internal.h: the Redis store's insides, in two parts.
 *
 * The first, the offline store, is for the fuzz target tests/fuzz/fuzz_redis.c (redis_offline.c
 * implements it): the store's reply handlers without Redis. An offline store has one worker, on
 * the caller's thread and loop, whose connection never comes up: a reply is handed to the
 * handler of a command as if Redis had sent it, and whatever the handler sends next fails at
 * once, as on a lost connection.
 *
 * The second is what the store's own files share, and nothing else reads: store_redis.c (the
 * workers, their commands and routing, the takes, the store interface), redis_args.c (what each
 * command sends), redis_reply.c (the scripts' replies read), redis_requests.c (every request but
 * a take), redis_sweep.c (worker 0's sweep), redis_relay.c (the feed relay on a Redis Cluster)
 * and redis_offline.c. Its types, constants and inline helpers keep the short names they had
 * as the statics of one file (worker_t, cmd_t, C_TAKE, el_int...); the functions that cross
 * files are sk_store_redis_*. Each function's comment is at its definition. */
#ifndef SK_STORE_REDIS_INTERNAL_H
#define SK_STORE_REDIS_INTERNAL_H

#include <hiredis/hiredis.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include "error.h"
#include "map.h"
#include "redis_cluster.h"
#include "redis_conn.h"
#include "store.h"

/* ---- the offline store (tests/fuzz/fuzz_redis.c) ---- */

/* The commands whose replies the store reads. */
typedef enum sk_redis_reply_kind_e {
    SK_REDIS_R_TAKE,         /* the take script for a batch: reps[0] */
    SK_REDIS_R_VIEW,         /* sale get: reps[0] */
    SK_REDIS_R_LIST_SLOTS,   /* sale list, SMEMBERS of the index's slots: reps[0] */
    SK_REDIS_R_LIST_MEMBERS, /* sale list, SMEMBERS of one slot's sales: reps[0] */
    SK_REDIS_R_LIST_VIEW,    /* sale list, one view per member: reps[0..nreps) */
    SK_REDIS_R_PUT,          /* sale put: SADD replies reps[0..nreps-1) (of other puts), the script's reps[nreps-1] */
    SK_REDIS_R_ORDER,        /* order get: reps[0] */
    SK_REDIS_R_ORDERS,       /* order list: reps[0] */
    SK_REDIS_R_CHANGE,       /* confirm or cancel (reqs[0].op says which): reps[0] */
    SK_REDIS_R_DUE_GET,      /* the sweep's due slots: reps[0], no request */
    SK_REDIS_R_REAP,         /* the reap script for reqs[0].sale's slot: reps[0]; the request is not answered */
    SK_REDIS_R_DUE_SET,      /* the sweep's end for a slot: reps[0], no request */
    SK_REDIS_R_KINDS_,
} sk_redis_reply_kind_t;

/* An offline Redis store's one worker handle, on env's loop; NULL if it cannot be made. Closing
 * the handle closes the store. */
sk_store_worker_t *sk_store_redis_offline_open(const sk_store_env_t *env);
void sk_store_redis_offline_close(sk_store_worker_t *w);

/* Forgets what the worker learned (coalescing queues, sold-out cache) and the store's
 * generation: each input starts from the same state. */
void sk_store_redis_offline_reset(sk_store_worker_t *w);

/* Answers one command of `kind` carrying reqs[0..n) (a take batch: n >= 1; any other: n = 1) with
 * the replies reps[0..nreps) (an element may be NULL: the connection was lost first). For a take,
 * reqs[n..n+queued) wait behind the batch for the next call. The requests' inputs and cb are the
 * caller's; every request of every kind but the reaper's is answered (cb called) exactly once
 * before this returns. The replies stay the caller's. */
void sk_store_redis_offline_reply(sk_store_worker_t *w, sk_redis_reply_kind_t kind, sk_store_req_t *reqs, size_t n,
                                  size_t queued, redisReply *const *reps, size_t nreps);

/* ---- what the store's files share ---- */

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

/* The scripts' result codes and what each answers: one list for C and Lua.
 * sk_store_redis_load_scripts (redis_args.c) writes it into every script as `local R_OK, R_REPLAY,
 * ... = 0, 1, ...`, ahead of common.lua, so that no script can use a code C does not know. */
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

/* The keys of a slot's own, "sk:slot:{TAG}<suffix>" with the slot's tag (redis_cluster.h), in the
 * slot of the sales they index: every script touches one slot. (A sale's own keys: redis_args.c.) */
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
#define DUE_RETRY_MAX 256                           /* failed due_add calls kept for a retry, per worker */
/* The winners feed on a single Redis or under Sentinel (a cluster's scripts write the slots'
 * SLOT_FEED instead, which the relay merges into CL_FEED_KEY: docs/redis.md, "The winners feed"): */
static const char FEED_KEY[] = "sk:feed";                 /* stream: every order event of every sale, in one order */
static const char FEED_TRIMMED_KEY[] = "sk:feed:trimmed"; /* string: the last entry id the retention removed */
static const char FEED_EXTRA_KEY[] = "sk:feed:extra";     /* integer: events beyond one an entry (feed_extra) */
/* On a Redis Cluster the merged feed and what the relay keeps next to it, all in the slot of {feed}
 * (relay.lua; docs/redis.md, "The winners feed on a Redis Cluster"): */
static const char CL_FEED_KEY[] = "sk:{feed}";                 /* stream: every order event, merged */
static const char CL_FEED_TRIMMED_KEY[] = "sk:{feed}:trimmed"; /* string: as FEED_TRIMMED_KEY */
static const char CL_FEED_GONE_KEY[] = "sk:{feed}:gone";       /* hash: deleted sale -> its last order id */
static const char CL_FEED_POS_KEY[] = "sk:{feed}:pos";         /* hash: slot stream -> last entry id copied */
static const char CL_FEED_DIRTY_KEY[] = "sk:{feed}:dirty";     /* hash: slot -> mark version (relay_mark.lua) */
static const char CL_FEED_MARKSEQ_KEY[] = "sk:{feed}:markseq"; /* string: the marks' versions' counter */
static const char CL_FEED_EXTRA_KEY[] = "sk:{feed}:extra";     /* integer: as FEED_EXTRA_KEY */

#define RELAY_BATCH 500 /* entries per copy (relay.lua), read by the relay's XRANGE */

typedef struct redis_s {
    sk_store_t super;
    sk_redis_conf_t conf;
    int nworkers;
    size_t batch_max;         /* takes per script call */
    sk_redis_shared_t shared; /* health and +switch-master, shared by the connections */
    sk_redis_cluster_t *cl;   /* redis-cluster://: the slot map; NULL otherwise */
    int idx_slot;             /* the slot of the index keys (IDX_*) */
    int feed_slot;            /* the slot of the feed's keys (sk:feed, or CL_FEED_* on a cluster) */
    _Atomic uint64_t gen;     /* bumped when this instance may have given units back */
    sk_redis_script_t scripts[S_COUNT];
} redis_t;

typedef struct wsale_s wsale_t; /* one sale as one worker sees it (store_redis.c) */
typedef struct node_s node_t;   /* Redis Cluster: a master, as one worker reaches it (store_redis.c) */
typedef struct relay_s relay_t; /* worker 0's relay on a Redis Cluster (redis_relay.c) */

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
    sk_map_t sales;        /* wsale_t by sale id */
    sk_store_req_t *failq; /* answered SK_EUNAVAILABLE on the next loop turn */
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
    relay_t *relay; /* worker 0 on a cluster: the relay */
    int closing;
} worker_t;

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
    sk_store_req_t *req; /* the request (take: the batch, linked by next) */
    size_t nreqs;
    wsale_t *ws;          /* take; a take call's WAIT: the sale it counts in flight for */
    uint64_t gen;         /* take: r->gen when sent */
    int probe;            /* take: the first call after the sold-out cache aged out */
    list_t *list;         /* C_LIST_* */
    struct cmd_s *wait;   /* a write's WAIT, which answers its requests */
    struct cmd_s *of;     /* a WAIT: its write, until that write's reply has come */
    sk_redis_conn_t *via; /* the connection it goes out on (NULL: the slot's master's first) */
    int slot;             /* where it goes (the slot of its keys) */
    int sslot;            /* C_REAP, C_DUE_*, C_LIST_MEMBERS: the slot it is about */
    long long ver, next;  /* C_REAP, C_DUE_SET: the slot's version and next deadline */
    int redirects;        /* MOVED / ASK followed */
    const char *verb;     /* a plain command: verb key [val] */
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

/* A script's result code into what it answers (0 or an SK_E* code; unknown: unavailable). */
static inline int rcode_err(long long rc)
{
    switch (rc) {
#define XX(name, err)                                                                                                  \
    case RC_##name:                                                                                                    \
        return err;
        SK_REDIS_RESULTS(XX)
#undef XX
    default:
        return SK_EUNAVAILABLE;
    }
}

static inline int el_int(const redisReply *r, size_t i, long long *v)
{
    if (i >= r->elements || r->element[i]->type != REDIS_REPLY_INTEGER)
        return -1;
    *v = r->element[i]->integer;
    return 0;
}

static inline int el_str(const redisReply *r, size_t i, const char **s, size_t *len)
{
    if (i >= r->elements || r->element[i]->type != REDIS_REPLY_STRING)
        return -1;
    *s = r->element[i]->str;
    *len = r->element[i]->len;
    return 0;
}

/* A script's array reply and its code (element 0). */
static inline int reply_code(const redisReply *r, long long *code)
{
    return r != NULL && r->type == REDIS_REPLY_ARRAY && el_int(r, 0, code) == 0 ? 0 : -1;
}

static inline int64_t time_of(long long v)
{
    return v < 0 ? SK_NO_TIME : (int64_t)v;
}

/* A plain command of one key (and one value). */
static inline void cmd_plain(cmd_t *cmd, const char *verb, const char *key, const char *val)
{
    cmd->verb = verb;
    snprintf(cmd->key, sizeof(cmd->key), "%s", key);
    if (val != NULL)
        snprintf(cmd->val, sizeof(cmd->val), "%s", val);
    else
        cmd->val[0] = '\0';
}

static inline void slot_key(char *out, size_t n, int slot, const char *suffix)
{
    snprintf(out, n, "sk:slot:{%s}%s", sk_redis_slot_tag(slot), suffix);
}

/* This instance may have given units back: every worker's sold-out cache is forgotten. */
static inline void bump_gen(redis_t *r)
{
    atomic_fetch_add(&r->gen, 1);
}

/* store_redis.c: the core */
cmd_t *sk_store_redis_cmd_new(worker_t *w, cmd_type_t type, int script);
int sk_store_redis_cmd_send(cmd_t *cmd);
int sk_store_redis_route_up(worker_t *w, int slot);
int sk_store_redis_index_ready(worker_t *w);
void sk_store_redis_answer(cmd_t *cmd, sk_store_req_t *req);
void sk_store_redis_due_add(worker_t *w, int slot, long long deadline);
void sk_store_redis_run_failq(worker_t *w);
sk_store_t *sk_store_redis_new(const char *url, int threads, const sk_store_opts_t *opts, int check, char *err,
                               size_t errlen);
worker_t *sk_store_redis_worker_new(redis_t *r, const sk_store_env_t *env);
void sk_store_redis_forget_sales(worker_t *w);
cmd_t *sk_store_redis_take_sent(worker_t *w, sk_store_req_t *reqs, size_t n, size_t queued);

/* redis_args.c */
int sk_store_redis_load_scripts(redis_t *r, char *err, size_t errlen);
void sk_store_redis_cmd_args(sk_redis_cmd_t *super, sk_redis_argv_t *a);
int sk_store_redis_send_plain(sk_redis_conn_t *c, cmd_t *cmd);

/* redis_reply.c */
int sk_store_redis_parse_view(const redisReply *r, const char *sale, sk_sale_view_t *v);
int sk_store_redis_parse_order(const redisReply *r, size_t k, const char *sale, uint64_t id, sk_order_t *o);
int sk_store_redis_parse_orders(const redisReply *rep, sk_store_req_t *req);
int sk_store_redis_parse_cursor(const char *s, size_t len, sk_cursor_t *c);
int sk_store_redis_parse_feed(const redisReply *rep, sk_store_req_t *req);

/* redis_requests.c */
int sk_store_redis_request_submit(worker_t *w, sk_store_req_t *req);
void sk_store_redis_request_done(worker_t *w, cmd_t *cmd, redisReply *rep);

/* redis_sweep.c (worker 0) */
void sk_store_redis_sweep_tick(worker_t *w, int64_t now);
void sk_store_redis_sweep_done(worker_t *w, cmd_t *cmd, redisReply *rep);

/* redis_relay.c (Redis Cluster) */
void sk_store_redis_relay_open(worker_t *w);
void sk_store_redis_relay_close(worker_t *w);
void sk_store_redis_relay_mark(worker_t *w, int slot);
void sk_store_redis_relay_tick(worker_t *w);
void sk_store_redis_relay_done(worker_t *w, cmd_t *cmd, redisReply *rep);

#endif
