/* store_embed.c: the embedded store. Decisions are made in memory on the worker threads, with
 * atomics for each sale's remaining units and striped locks for users and request ids (no global
 * lock on the hot path); a rejected buyer touches nothing but one atomic load. Winning orders and
 * every other change go to one committer thread that writes them to SQLite (WAL) a batch per
 * transaction, one fsync per batch (group commit), and only then answers the workers, so a 201 is
 * never sent before its order is durable. At start the memory is rebuilt from SQLite alone.
 *
 * The committer is also the only writer of order status (confirm, cancel, expiry), so those
 * transitions are serialised without further locking; it keeps a heap of hold deadlines.
 *
 * Lock order: a stripe lock is never held while taking another lock. */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>
#include "error.h"
#include "log.h"
#include "map.h"
#include "metrics.h"
#include "parse.h"
#include "store.h"
#include "util.h"

#define NSTRIPES 64
#define SALE_SLOTS 16384 /* power of two; at most half of it is used */
#define MAX_SALES (SALE_SLOTS / 2)
#define BATCH_MAX 4096
#define WATCH_MS 500 /* how often the committer looks at the book (and probes a failing disk) */
/* a write with an fsync that proves the book writable */
#define PROBE "INSERT OR REPLACE INTO meta(key, value) VALUES('probe', strftime('%s', 'now'))"

typedef struct user_s {
    sk_map_node_t node;
    int64_t taken; /* units held plus bought */
    char key[];
} user_t;

/* A request id: pending while its take is decided and committed, then done for ever. */
typedef struct rid_s {
    sk_map_node_t node;
    int done;
    char *user;                /* owned; NULL when anonymous */
    int64_t qty;
    uint64_t order_id;         /* done only */
    int64_t created_at;
    int64_t expires_at;
    sk_store_req_t *waiters;   /* repeats that arrived while pending */
    char key[];
} rid_t;

typedef struct stripe_s {
    pthread_mutex_t lock;
    sk_map_t users;
    sk_map_t rids;
} __attribute__((aligned(64))) stripe_t;

/* A sale. Its settings are written by the committer only, after they are durable, under a
 * sequence lock (`gen`, odd while a write is under way; see publish_begin): a worker reads them
 * as one set with sale_conf and keeps the generation it read, and the committer decides again
 * any take whose generation is no longer current when it commits it (linearizable settings). */
typedef struct esale_s {
    char id[SK_SALE_ID_MAX + 1];
    _Atomic uint64_t gen;
    _Atomic int64_t stock;
    _Atomic int64_t per_user_limit;
    _Atomic int64_t hold_seconds;
    _Atomic int64_t starts_at;
    _Atomic int64_t ends_at;
    _Atomic int64_t retain_seconds;
    _Atomic int64_t avail __attribute__((aligned(64))); /* remaining units; reserved by CAS */
    _Atomic int64_t lowering; /* units taken out of avail by a stock decrease not yet durable */
    _Atomic int64_t held;
    uint64_t next_id;         /* the committer's: ids are drawn in commit order */
    int deleted;              /* the committer's: deleted, waiting for the workers to let go */
    uint64_t retire;          /* the epoch of its deletion (see reclaim) */
    struct esale_s *limbo;    /* the committer's list of deleted sales not yet freed */
    stripe_t stripes[NSTRIPES];
} esale_t;

/* A held order's deadline, in the committer's heap. */
typedef struct deadline_s {
    int64_t at;
    esale_t *sale;
    uint64_t id;
} deadline_t;

typedef struct worker_local_s {
    sk_store_worker_t super;
    _Atomic uint64_t seen;       /* the store's epoch at the end of this worker's last loop turn */
    struct worker_local_s *next; /* the store's list of workers (wlock) */
    sqlite3 *db; /* read-only connection for order reads */
    sqlite3_stmt *get, *list, *feed, *feed_edge;
    int wake_committer; /* work was queued during this turn of the loop (embed_worker_flush) */
    struct collector_s {   /* giving freed memory back (collect) */
        uint64_t seen;     /* the store's `freed` as last seen */
        int64_t due, last; /* when to collect next (0: not due), when it last did (monotonic ms) */
    } collector;
} worker_local_t;

typedef struct embed_s {
    sk_store_t super;
    char *path;
    char *wal_path;
    int fd;              /* the book, opened by us: its exclusive flock says whose it is */
    dev_t dev, wal_dev;  /* what the book and its WAL were when opened */
    ino_t ino, wal_ino;
    const char *lost;    /* the committer's: why the book is gone (removed, replaced, wal_lost) */
    int64_t next_watch;  /* the committer's: next look at the book (monotonic ms) */
    struct delayed_s *delayed, **delayed_tail; /* the committer's: takes held by the test hook */
    _Atomic(esale_t *) slots[SALE_SLOTS]; /* open addressing; written by the committer only */
    _Atomic int nsales;
    /* deleted sales are freed once no worker can hold them (quiescent-state reclamation: a worker
     * holds a sale only within one turn of its loop, and says so after each turn) */
    _Atomic uint64_t epoch;
    _Atomic uint64_t freed;       /* bumped by the committer when it has freed deleted sales */
    struct collector_s collector; /* the committer's (reclaim) */
    pthread_mutex_t wlock;
    worker_local_t *workers;
    worker_local_t *closed; /* handles closed while the committer may still answer through them */
    esale_t *limbo;
    _Atomic int healthy;

    /* the committer */
    sqlite3 *db;
    sqlite3_stmt *ins_order, *ins_sale, *upd_sale, *get_order, *upd_status, *ins_event;
    uint64_t feed_seq;          /* the committer's: the last feed seq given (in a commit or not) */
    uint64_t feed_trimmed;      /* the committer's: the last seq the retention deleted */
    _Atomic uint64_t feed_mark; /* feed_seq as of the last commit: long-polls read again when it moves */
    pthread_t thread;
    pthread_mutex_t qlock;
    pthread_cond_t qcond;
    sk_store_req_t *qhead, **qtail;
    int stopping;
    deadline_t *heap;
    size_t nheap, capheap;
} embed_t;

/* ---- sales table: lock-free lookups, inserts and deletes by the committer only ---- */

/* A deleted sale's slot: lookups go past it, inserts may reuse it. */
static esale_t tomb_sale;
#define TOMB (&tomb_sale)

static esale_t *find_sale(embed_t *e, const char *id)
{
    size_t len = strlen(id);
    uint64_t h = sk_hash(id, len);
    for (size_t i = 0; i < SALE_SLOTS; i++) {
        esale_t *s = atomic_load_explicit(&e->slots[(h + i) & (SALE_SLOTS - 1)], memory_order_acquire);
        if (s == NULL)
            return NULL;
        if (s != TOMB && strcmp(s->id, id) == 0)
            return s;
    }
    return NULL;
}

/* A live sale of the table (NULL for an empty or deleted slot). */
static esale_t *slot_sale(embed_t *e, size_t i)
{
    esale_t *s = atomic_load_explicit(&e->slots[i], memory_order_acquire);
    return s == TOMB ? NULL : s;
}

static void publish_sale(embed_t *e, esale_t *s)
{
    uint64_t h = sk_hash(s->id, strlen(s->id));
    for (size_t i = 0;; i++) {
        size_t slot = (h + i) & (SALE_SLOTS - 1);
        esale_t *old = atomic_load_explicit(&e->slots[slot], memory_order_relaxed);
        if (old == NULL || old == TOMB) {
            atomic_store_explicit(&e->slots[slot], s, memory_order_release);
            atomic_fetch_add(&e->nsales, 1);
            return;
        }
    }
}

/* Takes a sale out of the table; it is freed later (reclaim). */
static void unpublish_sale(embed_t *e, esale_t *s)
{
    uint64_t h = sk_hash(s->id, strlen(s->id));
    for (size_t i = 0; i < SALE_SLOTS; i++) {
        size_t slot = (h + i) & (SALE_SLOTS - 1);
        if (atomic_load_explicit(&e->slots[slot], memory_order_relaxed) == s) {
            atomic_store_explicit(&e->slots[slot], TOMB, memory_order_release);
            atomic_fetch_sub(&e->nsales, 1);
            break;
        }
    }
    s->deleted = 1;
    s->retire = atomic_fetch_add(&e->epoch, 1) + 1; /* seq_cst: after the slot's store */
    s->limbo = e->limbo;
    e->limbo = s;
}

static esale_t *sale_new(const char *id, const sk_sale_conf_t *c)
{
    esale_t *s = sk_calloc(1, sizeof(*s));
    snprintf(s->id, sizeof(s->id), "%s", id);
    atomic_init(&s->stock, c->stock);
    atomic_init(&s->per_user_limit, c->per_user_limit);
    atomic_init(&s->hold_seconds, c->hold_seconds);
    atomic_init(&s->starts_at, c->starts_at);
    atomic_init(&s->ends_at, c->ends_at);
    atomic_init(&s->retain_seconds, c->retain_seconds);
    atomic_init(&s->avail, c->stock);
    atomic_init(&s->held, 0);
    atomic_init(&s->lowering, 0);
    atomic_init(&s->gen, 0);
    s->next_id = 1;
    for (int i = 0; i < NSTRIPES; i++) {
        pthread_mutex_init(&s->stripes[i].lock, NULL);
        sk_map_init(&s->stripes[i].users);
        sk_map_init(&s->stripes[i].rids);
    }
    return s;
}

static void free_user(sk_map_node_t *n)
{
    free(n);
}

static void free_rid(sk_map_node_t *n)
{
    rid_t *r = (rid_t *)n;
    free(r->user);
    free(r);
}

static void sale_free(esale_t *s)
{
    for (int i = 0; i < NSTRIPES; i++) {
        sk_map_dispose(&s->stripes[i].users, free_user);
        sk_map_dispose(&s->stripes[i].rids, free_rid);
        pthread_mutex_destroy(&s->stripes[i].lock);
    }
    free(s);
}

/* Reads the settings as one set; returns their generation (always even). */
static uint64_t sale_conf(const esale_t *s, sk_sale_conf_t *c)
{
    for (;;) {
        uint64_t g = atomic_load_explicit(&s->gen, memory_order_acquire);
        c->stock = atomic_load_explicit(&s->stock, memory_order_relaxed);
        c->per_user_limit = atomic_load_explicit(&s->per_user_limit, memory_order_relaxed);
        c->hold_seconds = atomic_load_explicit(&s->hold_seconds, memory_order_relaxed);
        c->starts_at = atomic_load_explicit(&s->starts_at, memory_order_relaxed);
        c->ends_at = atomic_load_explicit(&s->ends_at, memory_order_relaxed);
        c->retain_seconds = atomic_load_explicit(&s->retain_seconds, memory_order_relaxed);
        atomic_thread_fence(memory_order_acquire);
        if ((g & 1) == 0 && atomic_load_explicit(&s->gen, memory_order_relaxed) == g)
            return g;
    }
}

/* The committer's side of the sequence lock: everything written between begin and end is seen
 * by sale_conf and sale_view as one change. Never any I/O in between. */
static void publish_begin(esale_t *s)
{
    atomic_store_explicit(&s->gen, atomic_load_explicit(&s->gen, memory_order_relaxed) + 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
}

static void publish_end(esale_t *s)
{
    atomic_store_explicit(&s->gen, atomic_load_explicit(&s->gen, memory_order_relaxed) + 1, memory_order_release);
}

static void sale_view(const esale_t *s, sk_sale_view_t *v)
{
    memcpy(v->id, s->id, sizeof(v->id));
    for (;;) {
        uint64_t g = sale_conf(s, &v->conf);
        /* units set aside by a stock decrease still count as remaining until it is durable */
        int64_t avail = atomic_load(&s->avail) + atomic_load(&s->lowering);
        v->held = atomic_load(&s->held);
        atomic_thread_fence(memory_order_acquire);
        if (atomic_load_explicit(&s->gen, memory_order_relaxed) != g)
            continue;
        v->sold = v->conf.stock - v->held - (avail > 0 ? avail : 0);
        if (v->sold < 0)
            v->sold = 0;
        return;
    }
}

static stripe_t *stripe_of(esale_t *s, uint64_t hash)
{
    return &s->stripes[(hash >> 58) & (NSTRIPES - 1)];
}

/* A user's entry in its stripe (whose lock the caller holds), created at 0 when absent. */
static user_t *user_get(stripe_t *st, const char *user, size_t len, uint64_t h)
{
    user_t *u = (user_t *)sk_map_find(&st->users, h, user, len);
    if (u == NULL) {
        u = sk_malloc(sizeof(*u) + len + 1);
        memcpy(u->key, user, len);
        u->key[len] = '\0';
        u->node = (sk_map_node_t){u->key, (uint32_t)len};
        u->taken = 0;
        sk_map_insert(&st->users, &u->node, h);
    }
    return u;
}

/* Adds `delta` units to a user's taken count (creating the entry). */
static void user_add(esale_t *s, const char *user, size_t len, uint64_t h, int64_t delta)
{
    stripe_t *st = stripe_of(s, h);
    pthread_mutex_lock(&st->lock);
    user_get(st, user, len, h)->taken += delta;
    pthread_mutex_unlock(&st->lock);
}

/* ---- answering ---- */

static void order_from_rid(const esale_t *s, const rid_t *r, sk_order_t *o)
{
    memset(o, 0, sizeof(*o));
    memcpy(o->sale, s->id, sizeof(o->sale));
    o->id = r->order_id;
    o->qty = r->qty;
    o->status = r->expires_at != SK_NO_TIME ? SK_ORDER_HELD : SK_ORDER_CONFIRMED;
    o->created_at = r->created_at;
    o->expires_at = r->expires_at;
    o->user = r->user ? sk_strndup(r->user, strlen(r->user)) : NULL;
    o->request_id = sk_strndup(r->key, r->node.klen);
}

/* Ends a pending request id: on success it becomes done with `order`; on failure it is removed
 * so that a retry is decided anew. Its waiters get the same answer. */
static void rid_finish(esale_t *s, const char *key, size_t klen, int err, const sk_order_t *order)
{
    uint64_t h = sk_hash(key, klen);
    stripe_t *st = stripe_of(s, h);
    pthread_mutex_lock(&st->lock);
    rid_t *r = (rid_t *)sk_map_find(&st->rids, h, key, klen);
    assert(r != NULL && !r->done); /* a take with a request id made it pending, and only it ends it */
    sk_store_req_t *w = r->waiters;
    r->waiters = NULL;
    if (err == 0) {
        r->done = 1;
        r->order_id = order->id;
        r->created_at = order->created_at;
        r->expires_at = order->expires_at;
    } else {
        sk_map_remove(&st->rids, &r->node, h);
    }
    pthread_mutex_unlock(&st->lock);
    while (w != NULL) {
        sk_store_req_t *next = w->next;
        w->err = err;
        w->created = 0;
        if (err == 0)
            sk_order_copy(&w->order, order);
        sk_store_complete(w);
        w = next;
    }
    if (err != 0)
        free_rid(&r->node);
}

/* ---- the take: the hot path ---- */

/* A take that cannot be decided on the worker (see stock_answer) and goes to the committer
 * undecided; its stamp says so (a settings generation is always even). */
#define DEFERRED 1
#define UNDECIDED UINT64_MAX

/* What `avail` units say of a take of `qty`: 0 when they are enough, else SK_ESOLD_OUT, or
 * DEFERRED while a stock decrease that is not yet durable set some aside, which would make a
 * refusal rest on a change that may still fail. The committer decides deferred takes once that
 * change is settled (they queue behind it). */
static int stock_answer(esale_t *s, int64_t avail, int64_t qty)
{
    for (;;) {
        if (sk_sale_check_stock(avail, qty) == 0)
            return 0;
        int64_t l = atomic_load(&s->lowering);
        if (l > 0)
            return sk_sale_check_stock(avail + l, qty) == 0 ? DEFERRED : SK_ESOLD_OUT;
        /* a decrease that just failed gives its units back before it clears `lowering` */
        int64_t again = atomic_load(&s->avail);
        if (again == avail)
            return SK_ESOLD_OUT;
        avail = again;
    }
}

static int reserve(esale_t *s, int64_t qty)
{
    int64_t a = atomic_load_explicit(&s->avail, memory_order_relaxed);
    do {
        int rc = stock_answer(s, a, qty);
        if (rc != 0)
            return rc;
    } while (!atomic_compare_exchange_weak_explicit(&s->avail, &a, a - qty, memory_order_acq_rel,
                                                    memory_order_relaxed));
    return 0;
}

/* Stock and allowance, reserved together under the user's stripe so that the check and the
 * update of the user's count are one step. */
static int decide(esale_t *s, sk_store_req_t *req, const sk_sale_conf_t *conf)
{
    int rc;
    /* the sold-out fast path: one atomic load, no lock (sold_out wins over user_limit) */
    if ((rc = stock_answer(s, atomic_load_explicit(&s->avail, memory_order_relaxed), req->qty)) != 0)
        return rc;
    if (req->user == NULL)
        return reserve(s, req->qty);
    uint64_t h = sk_hash(req->user, req->user_len);
    stripe_t *st = stripe_of(s, h);
    pthread_mutex_lock(&st->lock);
    user_t *u = (user_t *)sk_map_find(&st->users, h, req->user, req->user_len);
    if ((rc = sk_sale_check_user(conf->per_user_limit, u ? u->taken : 0, req->qty)) == 0 &&
        (rc = reserve(s, req->qty)) == 0)
        (u ? u : user_get(st, req->user, req->user_len, h))->taken += req->qty;
    pthread_mutex_unlock(&st->lock);
    return rc;
}

/* Gives back what decide reserved for order `o`. */
static void unreserve(esale_t *s, const sk_order_t *o)
{
    atomic_fetch_add(&s->avail, o->qty);
    if (o->status == SK_ORDER_HELD)
        atomic_fetch_sub(&s->held, o->qty);
    if (o->user)
        user_add(s, o->user, strlen(o->user), sk_hash(o->user, strlen(o->user)), -o->qty);
}

/* Fills a decided take's order (all but its id, which the committer draws) and counts a hold. */
static void fill_order(esale_t *s, sk_store_req_t *req, const sk_sale_conf_t *conf)
{
    sk_order_t *o = &req->order;
    memcpy(o->sale, s->id, sizeof(o->sale));
    o->id = 0;
    o->qty = req->qty;
    o->created_at = req->now_ms / 1000;
    o->expires_at = sk_sale_expires_at(req->now_ms, conf->hold_seconds);
    o->status = o->expires_at != SK_NO_TIME ? SK_ORDER_HELD : SK_ORDER_CONFIRMED;
    o->user = sk_strndup(req->user, req->user_len);
    o->request_id = sk_strndup(req->request_id, req->request_id_len);
    if (o->status == SK_ORDER_HELD)
        atomic_fetch_add(&s->held, req->qty);
}

/* Hands a job to the committer. A worker wakes it once per turn of its loop, after the turn
 * (embed_worker_flush), not once per job: woken by the first take of a turn, the committer would
 * take the core from the worker (both share it on a small machine) to commit that one take, and
 * the rest of the turn's takes would wait for the next fsync. */
static void enqueue(embed_t *e, sk_store_req_t *req)
{
    worker_local_t *w = (worker_local_t *)req->worker;
    req->next = NULL;
    pthread_mutex_lock(&e->qlock);
    *e->qtail = req;
    e->qtail = &req->next;
    pthread_mutex_unlock(&e->qlock);
    w->wake_committer = 1;
}

/* Gives what this thread freed back to the system (util.h's sk_mem_collect) once deleted sales
 * were freed (`freed` moved). The committer frees them, but their buyers and request ids are the
 * workers' allocations: mimalloc keeps such pages for the thread that made them, and an idle
 * worker never takes them up again. So every thread collects, at most once a COLLECT_EVERY_MS
 * (the collection walks the thread's heap: a stream of deletions must not cost every turn of
 * every loop), the last one at most that long after the last sale freed. Measured with
 * bench/delete.sh: 300 sales of 1,000 orders deleted left 59 MiB of 72 in use without this,
 * 6 MiB with it (BENCHMARKS.md). Never on a request's path. */
#define COLLECT_EVERY_MS 1000
static void collect(struct collector_s *c, uint64_t freed)
{
    if (freed != c->seen) {
        c->seen = freed;
        if (c->due == 0)
            c->due = c->last + COLLECT_EVERY_MS;
    }
    if (c->due == 0 || sk_mem_collect == NULL)
        return;
    int64_t now = sk_mono_ms();
    if (now >= c->due) {
        c->due = 0;
        c->last = now;
        sk_mem_collect();
    }
}

static void embed_worker_flush(sk_store_worker_t *super)
{
    worker_local_t *w = (worker_local_t *)super;
    embed_t *e = (embed_t *)super->store;
    /* a quiescent point: this worker holds no sale from here until its next turn */
    atomic_store_explicit(&w->seen, atomic_load(&e->epoch), memory_order_release);
    collect(&w->collector, atomic_load_explicit(&e->freed, memory_order_relaxed));
    if (!w->wake_committer)
        return;
    w->wake_committer = 0;
    pthread_mutex_lock(&e->qlock);
    pthread_cond_signal(&e->qcond);
    pthread_mutex_unlock(&e->qlock);
}

/* A test hook (docs/testing.md): with SECKILL_TEST_TAKE_DELAY_MS=N in the environment, the
 * committer holds a take by a user whose id starts with "delay-" for N ms after its decision
 * before it commits it, handling everything else meanwhile, so that a test can race a PUT
 * against a take in flight. 0 (off) unless set. */
static int64_t test_take_delay_ms;

typedef struct delayed_s {
    sk_store_req_t *req;
    int64_t due; /* monotonic ms */
    struct delayed_s *next;
} delayed_t;

static int delayed_user(const sk_store_req_t *req)
{
    return test_take_delay_ms > 0 && req->user != NULL && req->user_len >= 6 && memcmp(req->user, "delay-", 6) == 0;
}

static int take(embed_t *e, sk_store_req_t *req)
{
    esale_t *s = find_sale(e, req->sale);
    sk_sale_conf_t conf;
    const char *why;
    int rc;

    if (s == NULL)
        return req->err = SK_ENO_SUCH_SALE, SK_STORE_DONE;
    /* while the order book cannot be written (or was lost) nothing is decided */
    if (!atomic_load_explicit(&e->healthy, memory_order_relaxed))
        return req->err = SK_EUNAVAILABLE, SK_STORE_DONE;
    req->stamp = sale_conf(s, &conf);
    if ((rc = sk_sale_check_take(&conf, req->user != NULL, req->qty, &why)) != 0)
        return req->err = rc, SK_STORE_DONE;

    /* a request id is looked up before anything else: a replay is answered even when the sale
     * has since sold out or ended */
    if (req->request_id != NULL) {
        uint64_t h = sk_hash(req->request_id, req->request_id_len);
        stripe_t *st = stripe_of(s, h);
        pthread_mutex_lock(&st->lock);
        rid_t *r = (rid_t *)sk_map_find(&st->rids, h, req->request_id, req->request_id_len);
        if (r != NULL) {
            int same = r->qty == req->qty && (r->user == NULL) == (req->user == NULL) &&
                       (r->user == NULL || (strlen(r->user) == req->user_len &&
                                            memcmp(r->user, req->user, req->user_len) == 0));
            if (!same) {
                rc = SK_EREQUEST_ID_REUSED;
            } else if (r->done) {
                order_from_rid(s, r, &req->order);
                req->created = 0;
            } else {
                req->next = r->waiters;
                r->waiters = req;
                pthread_mutex_unlock(&st->lock);
                return 0;
            }
            pthread_mutex_unlock(&st->lock);
            return req->err = rc, SK_STORE_DONE;
        }
        /* a buyer who is turned away at once leaves nothing behind */
        if ((rc = sk_sale_window(&conf, req->now_ms / 1000)) != 0 ||
            (rc = stock_answer(s, atomic_load_explicit(&s->avail, memory_order_relaxed), req->qty)) < 0) {
            pthread_mutex_unlock(&st->lock);
            return req->err = rc, SK_STORE_DONE;
        }
        r = sk_calloc(1, sizeof(*r) + req->request_id_len + 1);
        memcpy(r->key, req->request_id, req->request_id_len);
        r->node = (sk_map_node_t){r->key, (uint32_t)req->request_id_len};
        r->user = req->user ? sk_strndup(req->user, req->user_len) : NULL;
        r->qty = req->qty;
        sk_map_insert(&st->rids, &r->node, h);
        pthread_mutex_unlock(&st->lock);
    }

    if ((rc = sk_sale_window(&conf, req->now_ms / 1000)) == 0)
        rc = decide(s, req, &conf);
    req->priv = s;
    if (rc == DEFERRED) {
        req->stamp = UNDECIDED;
        enqueue(e, req);
        return 0;
    }
    if (rc != 0) {
        if (req->request_id != NULL)
            rid_finish(s, req->request_id, req->request_id_len, rc, NULL);
        return req->err = rc, SK_STORE_DONE;
    }
    fill_order(s, req, &conf);
    enqueue(e, req);
    return 0;
}

/* ---- the committer ---- */

static void heap_push(embed_t *e, deadline_t d)
{
    if (e->nheap == e->capheap) {
        e->capheap = e->capheap ? e->capheap * 2 : 256;
        e->heap = sk_realloc(e->heap, e->capheap * sizeof(*e->heap));
    }
    size_t i = e->nheap++;
    while (i > 0 && e->heap[(i - 1) / 2].at > d.at) {
        e->heap[i] = e->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    e->heap[i] = d;
}

/* Restores the heap below i (after an entry there was replaced). */
static void heap_down(embed_t *e, size_t i)
{
    deadline_t x = e->heap[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= e->nheap)
            break;
        if (c + 1 < e->nheap && e->heap[c + 1].at < e->heap[c].at)
            c++;
        if (e->heap[c].at >= x.at)
            break;
        e->heap[i] = e->heap[c];
        i = c;
    }
    e->heap[i] = x;
}

static deadline_t heap_pop(embed_t *e)
{
    deadline_t top = e->heap[0];
    if (--e->nheap > 0) {
        e->heap[0] = e->heap[e->nheap];
        heap_down(e, 0);
    }
    return top;
}

static int exec(sqlite3 *db, const char *sql)
{
    char *msg = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK) {
        sk_log_limited(SK_LOG_ERROR, "event=sqlite_error sql=\"%.40s\" error=\"%s\"", sql, msg ? msg : sqlite3_errstr(rc));
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

static void bind_text_or_null(sqlite3_stmt *st, int i, const char *s)
{
    if (s)
        sqlite3_bind_text(st, i, s, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, i);
}

static void bind_time(sqlite3_stmt *st, int i, int64_t t)
{
    if (t == SK_NO_TIME)
        sqlite3_bind_null(st, i);
    else
        sqlite3_bind_int64(st, i, t);
}

static int64_t column_time(sqlite3_stmt *st, int i)
{
    return sqlite3_column_type(st, i) == SQLITE_NULL ? SK_NO_TIME : sqlite3_column_int64(st, i);
}

static int step_done(sqlite3 *db, sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    if (rc != SQLITE_DONE) {
        sk_log_limited(SK_LOG_ERROR, "event=sqlite_error error=\"%s\"", sqlite3_errmsg(db));
        return -1;
    }
    return 0;
}

/* The feed's row for an event of order (sale, id), in the caller's transaction. A seq given to a
 * transaction that rolls back is never given again: the feed has holes, never a repeat. */
static int insert_event(embed_t *e, const char *sale, uint64_t id, sk_feed_kind_t kind)
{
    sqlite3_stmt *st = e->ins_event;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)++e->feed_seq);
    sqlite3_bind_text(st, 2, sale, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, (sqlite3_int64)id);
    sqlite3_bind_int(st, 4, (int)kind);
    return step_done(e->db, st);
}

static int insert_order(embed_t *e, const sk_order_t *o)
{
    sqlite3_stmt *st = e->ins_order;
    sqlite3_bind_text(st, 1, o->sale, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)o->id);
    bind_text_or_null(st, 3, o->user);
    sqlite3_bind_int64(st, 4, o->qty);
    sqlite3_bind_text(st, 5, sk_order_status_name(o->status), -1, SQLITE_STATIC);
    bind_text_or_null(st, 6, o->request_id);
    sqlite3_bind_int64(st, 7, o->created_at);
    bind_time(st, 8, o->expires_at);
    if (step_done(e->db, st) != 0)
        return -1;
    return insert_event(e, o->sale, o->id, SK_FEED_CREATED);
}

static int set_status(embed_t *e, const char *sale, uint64_t id, sk_order_status_t status)
{
    sqlite3_bind_text(e->upd_status, 1, sk_order_status_name(status), -1, SQLITE_STATIC);
    sqlite3_bind_text(e->upd_status, 2, sale, -1, SQLITE_STATIC);
    sqlite3_bind_int64(e->upd_status, 3, (sqlite3_int64)id);
    if (step_done(e->db, e->upd_status) != 0)
        return -1;
    sk_feed_kind_t kind = status == SK_ORDER_CONFIRMED   ? SK_FEED_CONFIRMED
                          : status == SK_ORDER_CANCELLED ? SK_FEED_CANCELLED
                                                         : SK_FEED_EXPIRED;
    return insert_event(e, sale, id, kind);
}

/* Writes what the committer's connection still sees of a lost book where it can be found: a
 * lost WAL is checkpointed into the book file (still in place); a removed or replaced book is
 * copied next to its path. */
static void book_rescue(embed_t *e)
{
    if (strcmp(e->lost, "wal_lost") == 0) {
        if (sqlite3_exec(e->db, "PRAGMA wal_checkpoint(TRUNCATE)", NULL, NULL, NULL) == SQLITE_OK)
            sk_log(SK_LOG_ERROR, "event=book_checkpointed path=%s action=\"every committed order is in %s; restart"
                   " seckilld\"", e->path, e->path);
        else
            sk_log(SK_LOG_ERROR, "event=book_checkpoint_failed path=%s error=\"%s\"", e->path, sqlite3_errmsg(e->db));
        return;
    }
    char copy[PATH_MAX];
    sqlite3_stmt *st = NULL;
    snprintf(copy, sizeof(copy), "%s.rescued-%lld", e->path, (long long)(sk_now_ms() / 1000));
    if (sqlite3_prepare_v2(e->db, "VACUUM INTO ?1", -1, &st, NULL) == SQLITE_OK) {
        sqlite3_bind_text(st, 1, copy, -1, SQLITE_STATIC);
        if (sqlite3_step(st) == SQLITE_DONE) {
            sk_log(SK_LOG_ERROR, "event=book_rescued path=%s copy=%s action=\"stop seckilld, move %s to %s, start"
                   " it again\"", e->path, copy, copy, e->path);
            sqlite3_finalize(st);
            return;
        }
    }
    sk_log(SK_LOG_ERROR, "event=book_rescue_failed path=%s copy=%s error=\"%s\"", e->path, copy, sqlite3_errmsg(e->db));
    sqlite3_finalize(st);
}

/* Whether the book this process writes is still the file at its path, with its WAL: returns
 * NULL, or what happened to it, once and for all (the store stays unavailable until a restart,
 * and what the process still holds is rescued). A few stats: after each commit and twice a
 * second on the committer. */
static const char *book_check(embed_t *e)
{
    struct stat st;
    const char *why = NULL;
    if (e->lost != NULL)
        return e->lost;
    int r;
    if (fstat(e->fd, &st) == 0 && st.st_nlink == 0)
        why = "removed";
    else if ((r = stat(e->path, &st)) != 0 ? errno == ENOENT : st.st_dev != e->dev || st.st_ino != e->ino)
        why = r != 0 ? "removed" : "replaced";
    else if (stat(e->wal_path, &st) != 0 ? errno == ENOENT : st.st_dev != e->wal_dev || st.st_ino != e->wal_ino)
        why = "wal_lost";
    if (why == NULL)
        return NULL;
    e->lost = why; /* from here on the committer commits nothing */
    sk_log(SK_LOG_ERROR, "event=book_lost path=%s what=%s action=\"every take is refused until a restart\"", e->path,
           why);
    /* rescued before /healthz turns: whoever sees the 503 finds the copy */
    book_rescue(e);
    atomic_store(&e->healthy, 0);
    return why;
}

static void set_healthy(embed_t *e, int ok)
{
    if (e->lost != NULL)
        ok = 0; /* until a restart */
    if (atomic_exchange(&e->healthy, ok) != ok)
        sk_log(ok ? SK_LOG_INFO : SK_LOG_ERROR, "event=store_health store=sqlite path=%s healthy=%d", e->path, ok);
}

/* Ends a take: durable (err 0) or failed; a failed take's reservation, if it holds one, is
 * undone. */
static void finish_take(embed_t *e, sk_store_req_t *req, int err, int reserved)
{
    esale_t *s = req->priv;
    sk_order_t *o = &req->order;
    if (err != 0 && reserved)
        unreserve(s, o);
    else if (err == 0 && o->status == SK_ORDER_HELD)
        heap_push(e, (deadline_t){o->expires_at, s, o->id});
    if (req->request_id != NULL)
        rid_finish(s, req->request_id, req->request_id_len, err, o);
    if (err != 0)
        sk_order_dispose(o);
    req->err = err;
    req->created = err == 0;
    sk_store_complete(req);
}

/* Decides a take again, on the committer, under the settings in force now: a take deferred
 * behind a stock decrease, or one decided under settings that a PUT has replaced since. Only the
 * committer writes settings, so what it reads here holds until the take is committed, and the
 * take is ordered after that PUT. Returns 0 with the take reserved and filled, or an SK_E* code
 * with nothing reserved. */
static int redecide(sk_store_req_t *req)
{
    esale_t *s = req->priv;
    sk_sale_conf_t conf;
    const char *why;
    int rc;
    if (req->stamp != UNDECIDED) {
        unreserve(s, &req->order);
        sk_order_dispose(&req->order);
    }
    req->now_ms = sk_now_ms();
    req->stamp = sale_conf(s, &conf);
    if ((rc = sk_sale_check_take(&conf, req->user != NULL, req->qty, &why)) != 0 ||
        (rc = sk_sale_window(&conf, req->now_ms / 1000)) != 0 || (rc = decide(s, req, &conf)) != 0)
        return rc == DEFERRED ? SK_ESOLD_OUT : rc; /* no decrease is pending on the committer */
    fill_order(s, req, &conf);
    return 0;
}

/* One transaction for a run of takes: one fsync for all of them. Order ids are drawn here, in
 * commit order, so that a reader who sees an id has already been able to see every smaller one
 * (a cursor over `after=` misses nothing). */
static void commit_takes(embed_t *e, sk_store_req_t *head, size_t n)
{
    sk_store_req_t *run = NULL, **tail = &run;
    for (sk_store_req_t *r = head, *next; r != NULL; r = next) {
        next = r->next;
        r->next = NULL;
        esale_t *s = r->priv;
        int rc = s->deleted ? SK_EENDED /* decided before its end, deleted since */
                 : r->stamp == atomic_load_explicit(&s->gen, memory_order_relaxed) ? 0
                                                                                   : redecide(r);
        if (rc != 0) {
            finish_take(e, r, rc, s->deleted && r->stamp != UNDECIDED);
            n--;
            continue;
        }
        r->order.id = s->next_id++;
        *tail = r;
        tail = &r->next;
    }
    if (run == NULL)
        return;
    int ok = !e->lost && exec(e->db, "BEGIN") == 0;
    int64_t t0 = sk_mono_ms();
    for (sk_store_req_t *r = run; ok && r != NULL; r = r->next)
        ok = insert_order(e, &r->order) == 0;
    if (ok)
        ok = exec(e->db, "COMMIT") == 0;
    if (!ok)
        sqlite3_exec(e->db, "ROLLBACK", NULL, NULL, NULL);
    /* a 201 only for what is in the book on disk: not in a file that is gone */
    if (ok && book_check(e) != NULL)
        ok = 0;
    sk_metrics_commit(n, sk_mono_ms() - t0, ok);
    set_healthy(e, ok);
    if (ok)
        atomic_store_explicit(&e->feed_mark, e->feed_seq, memory_order_release);
    while (run != NULL) {
        sk_store_req_t *next = run->next;
        finish_take(e, run, ok ? 0 : SK_EUNAVAILABLE, 1);
        run = next;
    }
}

static int write_sale(embed_t *e, sqlite3_stmt *st, const char *id, const sk_sale_conf_t *c)
{
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, c->stock);
    sqlite3_bind_int64(st, 3, c->per_user_limit);
    sqlite3_bind_int64(st, 4, c->hold_seconds);
    bind_time(st, 5, c->starts_at);
    bind_time(st, 6, c->ends_at);
    bind_time(st, 7, c->retain_seconds);
    return step_done(e->db, st);
}

/* Ends the transaction the caller began: commits when `ok`, else rolls back. Returns 0 when it
 * committed into the book on disk; the store's health follows. */
static int in_txn(embed_t *e, int ok)
{
    if (ok && !e->lost && exec(e->db, "COMMIT") == 0 && book_check(e) == NULL) {
        set_healthy(e, 1);
        atomic_store_explicit(&e->feed_mark, e->feed_seq, memory_order_release);
        return 0;
    }
    sqlite3_exec(e->db, "ROLLBACK", NULL, NULL, NULL);
    set_healthy(e, 0);
    return -1;
}

/* Sets a sale's settings for workers to see, with `avail_delta` more units. */
static void publish_conf(esale_t *s, const sk_sale_conf_t *c, int64_t avail_delta, int64_t lowering_delta)
{
    publish_begin(s);
    atomic_store_explicit(&s->stock, c->stock, memory_order_relaxed);
    atomic_store_explicit(&s->per_user_limit, c->per_user_limit, memory_order_relaxed);
    atomic_store_explicit(&s->hold_seconds, c->hold_seconds, memory_order_relaxed);
    atomic_store_explicit(&s->starts_at, c->starts_at, memory_order_relaxed);
    atomic_store_explicit(&s->ends_at, c->ends_at, memory_order_relaxed);
    atomic_store_explicit(&s->retain_seconds, c->retain_seconds, memory_order_relaxed);
    atomic_fetch_add(&s->avail, avail_delta);
    atomic_fetch_add(&s->lowering, lowering_delta);
    publish_end(s);
}

/* Sets aside `units` of the remaining ones for a stock decrease that is about to be written:
 * checked and taken in one CAS, so that concurrent takes cannot slip between check and change.
 * Returns -1 when sold + held units would be above the new stock. */
static int lowering_begin(esale_t *s, int64_t units)
{
    int rc = 0;
    publish_begin(s);
    atomic_fetch_add(&s->lowering, units);
    int64_t a = atomic_load(&s->avail);
    do {
        if (a - units < 0) {
            atomic_fetch_sub(&s->lowering, units);
            rc = -1;
            break;
        }
    } while (!atomic_compare_exchange_weak(&s->avail, &a, a - units));
    publish_end(s);
    return rc;
}

/* The last order id of a deleted sale id (0 if none, or when it cannot be read: the order book's
 * primary key then refuses a reused id, and the take fails rather than reuses it). */
static uint64_t tombstone(embed_t *e, const char *sale)
{
    sqlite3_stmt *st = NULL;
    uint64_t last = 0;
    if (sqlite3_prepare_v2(e->db, "SELECT last_id FROM tombstones WHERE sale = ?1", -1, &st, NULL) == SQLITE_OK) {
        sqlite3_bind_text(st, 1, sale, -1, SQLITE_STATIC);
        if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_int64(st, 0) > 0)
            last = (uint64_t)sqlite3_column_int64(st, 0);
    }
    sqlite3_finalize(st);
    return last;
}

/* DELETE /v1/sales/{sale}: a sale that has ended and holds no held order moves, with its orders,
 * to the archive tables in one transaction, leaves a tombstone with its last order id, and leaves
 * the table; its memory is freed once no worker can hold it (reclaim). A take decided before the
 * end and committed after the delete finds the sale deleted and is refused as ended. */
static int delete_now(embed_t *e, esale_t *s, int64_t now, sk_sale_view_t *view);

static void delete_sale(embed_t *e, sk_store_req_t *req)
{
    esale_t *s = find_sale(e, req->sale);
    sk_sale_conf_t conf;
    int64_t now = req->now_ms / 1000;
    if (s == NULL) {
        req->err = SK_ENO_SUCH_SALE;
    } else {
        sale_conf(s, &conf);
        if (conf.ends_at == SK_NO_TIME || now < conf.ends_at || atomic_load(&s->held) > 0)
            req->err = SK_ESALE_ACTIVE;
        else
            req->err = delete_now(e, s, now, &req->view);
    }
    sk_store_complete(req);
}

/* retain_seconds: every sale whose time is up, ended and holding nothing, is deleted as by
 * DELETE (delete_now). Runs with the book's watch, twice a second, after due holds expired, so a
 * sale that still held orders goes within half a second of its last hold's end. */
static void retire_due(embed_t *e, int64_t now)
{
    for (size_t i = 0; i < SALE_SLOTS; i++) {
        esale_t *s = slot_sale(e, i);
        sk_sale_conf_t conf;
        sk_sale_view_t view;
        if (s == NULL)
            continue;
        sale_conf(s, &conf);
        if (!sk_sale_retain_due(&conf, atomic_load(&s->held), now))
            continue;
        if (delete_now(e, s, now, &view) == 0)
            sk_log(SK_LOG_INFO, "event=sale_retired sale=%s ends_at=%" PRId64 " retain_seconds=%" PRId64, view.id,
                   conf.ends_at, conf.retain_seconds);
        else
            return; /* the book cannot be written: the next watch tries again */
    }
}

/* Deletes sale s, which has ended and holds nothing: its rows to the archive in one transaction,
 * then out of the table; `view` gets the sale as it was. SK_EUNAVAILABLE when it cannot be
 * written. */
static int delete_now(embed_t *e, esale_t *s, int64_t now, sk_sale_view_t *view)
{
    static const char *const SQL[] = {
        /* the archive's columns in the order of schema.sql (an older book's gained retain_seconds last) */
        "INSERT INTO sales_archive SELECT sale, ?2, stock, per_user_limit, hold_seconds, starts_at, ends_at,"
        " retain_seconds FROM sales WHERE sale = ?1",
        "INSERT INTO orders_archive(sale, id, user, qty, status, request_id, created_at, expires_at, deleted_at)"
        " SELECT sale, id, user, qty, status, request_id, created_at, expires_at, ?2 FROM orders WHERE sale = ?1",
        "DELETE FROM orders WHERE sale = ?1",
        "DELETE FROM sales WHERE sale = ?1",
        "INSERT OR REPLACE INTO tombstones(sale, last_id) VALUES(?1, ?3)",
    };
    int ok = !e->lost && exec(e->db, "BEGIN") == 0;
    for (size_t i = 0; ok && i < sizeof(SQL) / sizeof(SQL[0]); i++) {
        sqlite3_stmt *st = NULL;
        ok = sqlite3_prepare_v2(e->db, SQL[i], -1, &st, NULL) == SQLITE_OK;
        if (ok) {
            sqlite3_bind_text(st, 1, s->id, -1, SQLITE_STATIC);
            sqlite3_bind_int64(st, 2, now);
            sqlite3_bind_int64(st, 3, (sqlite3_int64)(s->next_id - 1));
            ok = sqlite3_step(st) == SQLITE_DONE;
        }
        sqlite3_finalize(st);
    }
    if (in_txn(e, ok) != 0)
        return SK_EUNAVAILABLE;
    sale_view(s, view);
    /* deadlines of its orders (confirmed or cancelled since) point at it: drop them */
    for (size_t i = 0; i < e->nheap;)
        if (e->heap[i].sale == s)
            e->heap[i] = e->heap[--e->nheap];
        else
            i++;
    for (size_t i = e->nheap / 2; i-- > 0;)
        heap_down(e, i);
    unpublish_sale(e, s);
    return 0;
}

/* Frees the deleted sales that no worker can hold any more: those deleted before every worker's
 * last quiescent point seen before this turn of the committer took its jobs (`seen`, read then),
 * once those jobs, which hold every take that could still point at them, are done. */
static void reclaim(embed_t *e, uint64_t seen)
{
    size_t n = 0;
    for (esale_t **p = &e->limbo; *p != NULL;) {
        esale_t *s = *p;
        if (s->retire <= seen) {
            *p = s->limbo;
            sale_free(s);
            n++;
        } else {
            p = &s->limbo;
        }
    }
    if (n > 0) {
        sk_log(SK_LOG_DEBUG, "event=sales_freed count=%zu", n);
        /* the buyers and request ids were the workers' allocations: each gives the pages back
         * (collect), from its next turn (embed_worker_flush) */
        atomic_fetch_add_explicit(&e->freed, 1, memory_order_relaxed);
    }
    collect(&e->collector, atomic_load_explicit(&e->freed, memory_order_relaxed));
}

/* The oldest quiescent point of the workers (the current epoch when there is none). */
static uint64_t workers_seen(embed_t *e)
{
    uint64_t min = atomic_load(&e->epoch);
    pthread_mutex_lock(&e->wlock);
    for (worker_local_t *w = e->workers; w != NULL; w = w->next) {
        uint64_t v = atomic_load_explicit(&w->seen, memory_order_acquire);
        if (v < min)
            min = v;
    }
    pthread_mutex_unlock(&e->wlock);
    return min;
}

/* Durable before usable: a new sale is published, and a sale's new settings and added units
 * become visible, only once the change is committed; units taken away by a decrease are set
 * aside before it is written (takes that would need them wait behind it, see stock_answer) and
 * given back if it fails. A failed change leaves no trace. */
static void put_sale(embed_t *e, sk_store_req_t *req)
{
    esale_t *s = find_sale(e, req->sale);
    const sk_sale_conf_t *c = &req->conf;
    int ok;

    if (s == NULL) {
        if (atomic_load(&e->nsales) >= MAX_SALES) {
            req->err = SK_ETOO_MANY_SALES;
            goto out;
        }
        ok = exec(e->db, "BEGIN") == 0 && write_sale(e, e->ins_sale, req->sale, c) == 0;
        if (in_txn(e, ok) != 0) {
            req->err = SK_EUNAVAILABLE;
            goto out;
        }
        s = sale_new(req->sale, c);
        s->next_id = tombstone(e, req->sale) + 1; /* a sale id deleted before goes on after its ids */
        publish_sale(e, s);
        req->created = 1;
    } else {
        int64_t delta = c->stock - atomic_load(&s->stock);
        int64_t lower = delta < 0 ? -delta : 0;
        if (lower > 0 && lowering_begin(s, lower) != 0) {
            req->err = SK_ESTOCK_BELOW_TAKEN;
            goto out;
        }
        ok = exec(e->db, "BEGIN") == 0 && write_sale(e, e->upd_sale, req->sale, c) == 0;
        if (in_txn(e, ok) != 0) {
            if (lower > 0) {
                publish_begin(s);
                atomic_fetch_add(&s->avail, lower); /* before `lowering` drops: see stock_answer */
                atomic_fetch_sub(&s->lowering, lower);
                publish_end(s);
            }
            req->err = SK_EUNAVAILABLE;
            goto out;
        }
        publish_conf(s, c, delta > 0 ? delta : 0, -lower);
        req->created = 0;
    }
    sale_view(s, &req->view);
out:
    sk_store_complete(req);
}

/* An order from a row whose first columns are ORDER_COLS; its id from column idcol (< 0: none). */
static void row_to_order(sqlite3_stmt *st, const char *sale, int idcol, sk_order_t *o)
{
    memset(o, 0, sizeof(*o));
    snprintf(o->sale, sizeof(o->sale), "%s", sale);
    o->id = idcol >= 0 ? (uint64_t)sqlite3_column_int64(st, idcol) : 0;
    o->user = sqlite3_column_type(st, 0) == SQLITE_NULL
                  ? NULL
                  : sk_strndup((const char *)sqlite3_column_text(st, 0), (size_t)sqlite3_column_bytes(st, 0));
    o->qty = sqlite3_column_int64(st, 1);
    o->status = sk_order_status_parse((const char *)sqlite3_column_text(st, 2));
    o->request_id = sqlite3_column_type(st, 3) == SQLITE_NULL
                        ? NULL
                        : sk_strndup((const char *)sqlite3_column_text(st, 3), (size_t)sqlite3_column_bytes(st, 3));
    o->created_at = sqlite3_column_int64(st, 4);
    o->expires_at = column_time(st, 5);
}

/* Reads an order through the committer's connection. Returns 1 when found. */
static int read_order(sqlite3 *db, sqlite3_stmt *st, const char *sale, uint64_t id, sk_order_t *o)
{
    int found = 0;
    sqlite3_bind_text(st, 1, sale, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)id);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        row_to_order(st, sale, -1, o);
        o->id = id;
        found = 1;
    } else if (rc != SQLITE_DONE) {
        sk_log_limited(SK_LOG_ERROR, "event=sqlite_error error=\"%s\"", sqlite3_errmsg(db));
        found = -1;
    }
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return found;
}

/* Gives an order's units back to its sale and its user. */
static void return_units(esale_t *s, const sk_order_t *o, sk_order_status_t from)
{
    atomic_fetch_add(&s->avail, o->qty);
    if (from == SK_ORDER_HELD)
        atomic_fetch_sub(&s->held, o->qty);
    if (o->user)
        user_add(s, o->user, strlen(o->user), sk_hash(o->user, strlen(o->user)), -o->qty);
}

/* Applies confirm or cancel to one order inside the caller's transaction. A hold past its
 * deadline is first recorded as expired, whatever the op, so that its units return exactly once.
 * Returns 0 or an SK_E* code; *o holds the order as it now is, *from its stored status before. */
static int transition(embed_t *e, esale_t *s, uint64_t id, sk_order_op_t op, int64_t now, sk_order_t *o,
                      sk_order_status_t *from)
{
    sk_order_status_t next;
    int back, rc;
    int found = read_order(e->db, e->get_order, s->id, id, o);
    if (found < 0)
        return SK_EUNAVAILABLE;
    if (found == 0)
        return SK_ENO_SUCH_ORDER;
    *from = o->status;
    if (sk_order_effective(o->status, o->expires_at, now) == SK_ORDER_EXPIRED && o->status == SK_ORDER_HELD) {
        if (set_status(e, s->id, id, SK_ORDER_EXPIRED) != 0)
            return SK_EUNAVAILABLE;
        o->status = SK_ORDER_EXPIRED;
    }
    if ((rc = sk_order_transition(o->status, o->expires_at, now, op, &next, &back)) != 0)
        return rc;
    if (next != o->status && set_status(e, s->id, id, next) != 0)
        return SK_EUNAVAILABLE;
    o->status = next;
    return 0;
}

/* Applies to memory what a committed transition did to an order that was `from`. */
static void apply_transition(esale_t *s, const sk_order_t *o, sk_order_status_t from)
{
    if (from == o->status)
        return;
    if (o->status == SK_ORDER_CANCELLED || o->status == SK_ORDER_EXPIRED)
        return_units(s, o, from);
    else if (from == SK_ORDER_HELD && o->status == SK_ORDER_CONFIRMED)
        atomic_fetch_sub(&s->held, o->qty);
}

static void change_order(embed_t *e, sk_store_req_t *req)
{
    esale_t *s = find_sale(e, req->sale);
    sk_order_status_t from = 0;
    int rc;
    if (s == NULL) {
        rc = SK_ENO_SUCH_SALE;
        goto out;
    }
    if (exec(e->db, "BEGIN") != 0) {
        rc = SK_EUNAVAILABLE;
        goto out;
    }
    rc = transition(e, s, req->order_id, req->change, req->now_ms / 1000, &req->order, &from);
    if (rc == 0 || rc == SK_EORDER_NOT_HELD) {
        /* committed also on ORDER_NOT_HELD: an expiry may have been recorded on the way */
        if (in_txn(e, 1) != 0)
            rc = SK_EUNAVAILABLE;
        else
            apply_transition(s, &req->order, from);
    } else {
        sqlite3_exec(e->db, "ROLLBACK", NULL, NULL, NULL);
    }
out:
    req->err = rc;
    if (rc != 0)
        sk_order_dispose(&req->order);
    sk_store_complete(req);
}

static void expire_due(embed_t *e, int64_t now)
{
    if (e->nheap == 0 || e->heap[0].at > now)
        return;
    if (exec(e->db, "BEGIN") != 0)
        return;
    size_t n = 0;
    deadline_t done[512];
    sk_order_t orders[512];
    sk_order_status_t from[512];
    int ok = 1;
    while (ok && n < 512 && e->nheap > 0 && e->heap[0].at <= now) {
        deadline_t d = heap_pop(e);
        sk_order_t o;
        int found = read_order(e->db, e->get_order, d.sale->id, d.id, &o);
        if (found < 0) {
            ok = 0;
            heap_push(e, d);
            break;
        }
        if (found == 0)
            continue;
        if (o.status != SK_ORDER_HELD) { /* confirmed or cancelled in time */
            sk_order_dispose(&o);
            continue;
        }
        if (set_status(e, d.sale->id, d.id, SK_ORDER_EXPIRED) != 0) {
            sk_order_dispose(&o);
            heap_push(e, d);
            ok = 0;
            break;
        }
        done[n] = d;
        from[n] = o.status;
        o.status = SK_ORDER_EXPIRED;
        orders[n++] = o;
    }
    if (in_txn(e, ok) != 0) {
        for (size_t i = 0; i < n; i++) {
            heap_push(e, done[i]);
            sk_order_dispose(&orders[i]);
        }
        set_healthy(e, 0);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        apply_transition(done[i].sale, &orders[i], from[i]);
        sk_order_dispose(&orders[i]);
    }
    if (n > 0)
        sk_log(SK_LOG_DEBUG, "event=holds_expired count=%zu", n);
}

/* The feed's retention: the oldest events beyond sk_feed_retain() go, at most 20,000 a
 * transaction, once they are a 64th of it (so that a trim is not a transaction per event). The
 * last seq deleted goes to meta in the same transaction: a reader compares its cursor with it in
 * its own snapshot (read_feed), so a cursor whose next events were deleted is refused, never
 * silently moved on. */
static void feed_trim(embed_t *e)
{
    uint64_t keep = sk_feed_retain();
    if (e->feed_seq <= keep)
        return;
    uint64_t cut = e->feed_seq - keep;
    if (cut <= e->feed_trimmed || cut - e->feed_trimmed < keep / 64 + 1)
        return;
    if (cut - e->feed_trimmed > 20000) /* a few ms of the committer's; 40,000 a second */
        cut = e->feed_trimmed + 20000;
    char sql[200];
    snprintf(sql, sizeof(sql),
             "DELETE FROM events WHERE seq <= %" PRIu64 ";"
             " INSERT OR REPLACE INTO meta(key, value) VALUES('feed_trimmed', %" PRIu64 ")",
             cut, cut);
    if (in_txn(e, exec(e->db, "BEGIN") == 0 && exec(e->db, sql) == 0) == 0)
        e->feed_trimmed = cut;
}

/* Twice a second: is the book still there, and, while it could not be written, can it be now?
 * The store comes back by itself when the disk does (a probe write and its fsync), without
 * waiting for a take to try. */
static void watch(embed_t *e)
{
    int64_t now = sk_mono_ms();
    if (now < e->next_watch)
        return;
    e->next_watch = now + WATCH_MS;
    if (book_check(e) != NULL)
        return;
    if (atomic_load(&e->healthy)) {
        retire_due(e, sk_now_ms() / 1000);
        feed_trim(e);
        return;
    }
    in_txn(e, exec(e->db, "BEGIN IMMEDIATE") == 0 && exec(e->db, PROBE) == 0);
}

/* Commits the takes the test hook held once they are due (all of them when stopping). */
static void commit_delayed(embed_t *e, int all)
{
    sk_store_req_t *run = NULL, **tail = &run;
    size_t n = 0;
    while (e->delayed != NULL && (all || e->delayed->due <= sk_mono_ms())) {
        delayed_t *d = e->delayed;
        e->delayed = d->next;
        *tail = d->req;
        tail = &d->req->next;
        d->req->next = NULL;
        n++;
        free(d);
    }
    if (e->delayed == NULL)
        e->delayed_tail = &e->delayed;
    if (run != NULL)
        commit_takes(e, run, n);
}

static void *committer_main(void *arg)
{
    embed_t *e = arg;
    for (;;) {
        pthread_mutex_lock(&e->qlock);
        while (e->qhead == NULL && !e->stopping) {
            /* the next hold is due at a wall-clock time (it is a timestamp in the order); the
             * wait itself and the book's watch run on the monotonic clock */
            int64_t wait_ms = e->next_watch - sk_mono_ms();
            if (e->delayed != NULL && e->delayed->due - sk_mono_ms() < wait_ms)
                wait_ms = e->delayed->due - sk_mono_ms();
            if (e->nheap > 0 && e->heap[0].at * 1000 - sk_now_ms() < wait_ms)
                wait_ms = e->heap[0].at * 1000 - sk_now_ms();
            if (wait_ms <= 0)
                break;
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            ts.tv_sec += wait_ms / 1000;
            ts.tv_nsec += (wait_ms % 1000) * 1000000;
            if (ts.tv_nsec >= 1000000000) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000;
            }
            pthread_cond_timedwait(&e->qcond, &e->qlock, &ts);
        }
        pthread_mutex_unlock(&e->qlock);
        uint64_t seen = workers_seen(e); /* before the jobs are taken: see reclaim */
        pthread_mutex_lock(&e->qlock);
        sk_store_req_t *jobs = e->qhead;
        int stop = e->stopping && jobs == NULL && e->delayed == NULL;
        int stopping = e->stopping;
        e->qhead = NULL;
        e->qtail = &e->qhead;
        pthread_mutex_unlock(&e->qlock);
        commit_delayed(e, stopping);

        /* runs of takes share a transaction; anything else gets its own, in queue order */
        while (jobs != NULL) {
            sk_store_req_t *run = NULL, **rtail = &run;
            size_t n = 0;
            while (jobs != NULL && jobs->op == SK_STORE_TAKE && n < BATCH_MAX) {
                sk_store_req_t *next = jobs->next;
                jobs->next = NULL;
                if (delayed_user(jobs)) {
                    delayed_t *d = sk_malloc(sizeof(*d));
                    *d = (delayed_t){jobs, sk_mono_ms() + test_take_delay_ms, NULL};
                    *e->delayed_tail = d;
                    e->delayed_tail = &d->next;
                } else {
                    *rtail = jobs;
                    rtail = &jobs->next;
                    n++;
                }
                jobs = next;
            }
            if (run != NULL)
                commit_takes(e, run, n);
            if (jobs == NULL || jobs->op == SK_STORE_TAKE)
                continue;
            sk_store_req_t *job = jobs;
            jobs = jobs->next;
            if (job->op == SK_STORE_SALE_PUT)
                put_sale(e, job);
            else if (job->op == SK_STORE_SALE_DELETE)
                delete_sale(e, job);
            else
                change_order(e, job);
        }
        reclaim(e, seen);
        expire_due(e, sk_now_ms() / 1000);
        watch(e);
        if (stop)
            break;
    }
    return NULL;
}

/* ---- reads on the worker threads ---- */

static const char *const ORDER_COLS = "user, qty, status, request_id, created_at, expires_at";

/* GET /v1/orders: the events after req->cursor, in one read snapshot with the retention's mark
 * (feed_trim) and the feed's end. Events of deleted sales find no order and are passed over (the
 * cursor still moves past them). */
static int read_feed(worker_local_t *w, sk_store_req_t *req)
{
    uint64_t after = req->cursor.lo, trimmed = 0, end = 0;
    size_t cap = 0, rows = 0;
    int rc = SK_EUNAVAILABLE;
    if (sqlite3_exec(w->db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK)
        return SK_EUNAVAILABLE;
    if (sqlite3_step(w->feed_edge) != SQLITE_ROW)
        goto out;
    trimmed = (uint64_t)sqlite3_column_int64(w->feed_edge, 0);
    end = (uint64_t)sqlite3_column_int64(w->feed_edge, 1);
    if (end < trimmed)
        end = trimmed;
    if (req->cursor.hi != 0 || after > end) { /* not a cursor this feed gave */
        rc = SK_EBAD_REQUEST;
        goto out;
    }
    if (after < trimmed && after != 0) {
        rc = SK_ECURSOR_EXPIRED;
        goto out;
    }
    sqlite3_stmt *st = w->feed;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)(after > trimmed ? after : trimmed));
    sqlite3_bind_int64(st, 2, (sqlite3_int64)req->limit);
    int step;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        rows++;
        req->cursor.lo = (uint64_t)sqlite3_column_int64(st, 7);
        if (sqlite3_column_type(st, 1) == SQLITE_NULL) /* a deleted sale's */
            continue;
        if (req->nevents == cap) {
            cap = cap ? cap * 2 : 64;
            req->events = sk_realloc(req->events, cap * sizeof(*req->events));
        }
        sk_feed_event_t *ev = &req->events[req->nevents++];
        row_to_order(st, (const char *)sqlite3_column_text(st, 8), 6, &ev->order);
        ev->cursor = req->cursor;
        ev->kind = (sk_feed_kind_t)sqlite3_column_int(st, 9);
        ev->order.status = ev->kind == SK_FEED_CREATED
                               ? (ev->order.expires_at == SK_NO_TIME ? SK_ORDER_CONFIRMED : SK_ORDER_HELD)
                           : ev->kind == SK_FEED_CONFIRMED ? SK_ORDER_CONFIRMED
                           : ev->kind == SK_FEED_CANCELLED ? SK_ORDER_CANCELLED
                                                           : SK_ORDER_EXPIRED;
    }
    sqlite3_reset(st);
    rc = step == SQLITE_DONE ? 0 : SK_EUNAVAILABLE;
    req->more = rc == 0 && rows == req->limit;
out:
    sqlite3_reset(w->feed_edge);
    sqlite3_exec(w->db, "COMMIT", NULL, NULL, NULL);
    return rc;
}

static int read_orders(worker_local_t *w, sk_store_req_t *req)
{
    sqlite3_stmt *st = w->list;
    size_t cap = 0;
    sqlite3_bind_text(st, 1, req->sale, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)req->order_id);
    sqlite3_bind_int64(st, 3, (sqlite3_int64)req->limit + 1);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (req->norders == req->limit) {
            req->more = 1;
            continue;
        }
        if (req->norders == cap) {
            cap = cap ? cap * 2 : 16;
            req->orders = sk_realloc(req->orders, cap * sizeof(*req->orders));
        }
        row_to_order(st, req->sale, 6, &req->orders[req->norders++]);
    }
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc == SQLITE_DONE ? 0 : SK_EUNAVAILABLE;
}

static int read_one(worker_local_t *w, sk_store_req_t *req)
{
    sqlite3_stmt *st = w->get;
    sqlite3_bind_text(st, 1, req->sale, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)req->order_id);
    int rc = sqlite3_step(st), err = 0;
    if (rc == SQLITE_ROW) {
        row_to_order(st, req->sale, 6, &req->order);
        req->order.id = req->order_id;
    } else {
        err = rc == SQLITE_DONE ? SK_ENO_SUCH_ORDER : SK_EUNAVAILABLE;
    }
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return err;
}

static int cmp_view(const void *a, const void *b)
{
    return strcmp(((const sk_sale_view_t *)a)->id, ((const sk_sale_view_t *)b)->id);
}

static int embed_submit(sk_store_worker_t *super, sk_store_req_t *req)
{
    worker_local_t *w = (worker_local_t *)super;
    embed_t *e = (embed_t *)super->store;
    esale_t *s;
    switch (req->op) {
    case SK_STORE_TAKE:
        return take(e, req);
    case SK_STORE_SALE_GET:
        if ((s = find_sale(e, req->sale)) == NULL)
            req->err = SK_ENO_SUCH_SALE;
        else
            sale_view(s, &req->view);
        return SK_STORE_DONE;
    case SK_STORE_SALE_LIST: {
        size_t cap = (size_t)atomic_load(&e->nsales) + 1;
        req->views = sk_malloc(cap * sizeof(*req->views));
        for (size_t i = 0; i < SALE_SLOTS && req->nviews < cap; i++)
            if ((s = slot_sale(e, i)) != NULL)
                sale_view(s, &req->views[req->nviews++]);
        qsort(req->views, req->nviews, sizeof(*req->views), cmp_view);
        return SK_STORE_DONE;
    }
    case SK_STORE_ORDER_GET:
    case SK_STORE_ORDER_LIST:
        if (find_sale(e, req->sale) == NULL) {
            req->err = SK_ENO_SUCH_SALE;
            return SK_STORE_DONE;
        }
        req->err = req->op == SK_STORE_ORDER_GET ? read_one(w, req) : read_orders(w, req);
        return SK_STORE_DONE;
    case SK_STORE_FEED:
        req->err = read_feed(w, req);
        return SK_STORE_DONE;
    case SK_STORE_SALE_PUT:
    case SK_STORE_SALE_DELETE:
    case SK_STORE_ORDER_CHANGE:
        enqueue(e, req);
        return 0;
    }
    return SK_EINTERNAL;
}

static int embed_healthy(sk_store_t *st)
{
    return atomic_load(&((embed_t *)st)->healthy);
}

static int prepare(sqlite3 *db, const char *sql, sqlite3_stmt **st)
{
    if (sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, st, NULL) != SQLITE_OK) {
        sk_log(SK_LOG_ERROR, "event=sqlite_prepare sql=\"%s\" error=\"%s\"", sql, sqlite3_errmsg(db));
        return -1;
    }
    return 0;
}

static void embed_worker_close(sk_store_worker_t *super)
{
    worker_local_t *w = (worker_local_t *)super;
    embed_t *e = (embed_t *)super->store;
    pthread_mutex_lock(&e->wlock);
    for (worker_local_t **p = &e->workers; *p != NULL; p = &(*p)->next)
        if (*p == w) {
            *p = w->next;
            break;
        }
    sqlite3_finalize(w->get);
    sqlite3_finalize(w->list);
    sqlite3_finalize(w->feed);
    sqlite3_finalize(w->feed_edge);
    sqlite3_close(w->db);
    w->db = NULL;
    w->get = w->list = w->feed = w->feed_edge = NULL;
    /* a take or change still with the committer (a worker that stopped at its shutdown deadline)
     * is answered through this handle: it is freed with the store, after the committer */
    w->next = e->closed;
    e->closed = w;
    pthread_mutex_unlock(&e->wlock);
}

/* A worker's handle: its read-only connection for order reads. Takes and changes go to the
 * committer, whose answers come back through the worker's env.post. */
static int embed_worker_open(sk_store_t *st, const sk_store_env_t *env, sk_store_worker_t **out, char *err,
                             size_t errlen)
{
    embed_t *e = (embed_t *)st;
    worker_local_t *w = sk_calloc(1, sizeof(*w));
    char sql[256];
    w->super.store = st;
    w->super.env = *env;
    if (sqlite3_open_v2(e->path, &w->db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "cannot open the order book %s for reading: %s", e->path, sqlite3_errmsg(w->db));
        goto fail;
    }
    sqlite3_busy_timeout(w->db, 5000);
    snprintf(sql, sizeof(sql), "SELECT %s, id FROM orders WHERE sale = ?1 AND id = ?2", ORDER_COLS);
    if (prepare(w->db, sql, &w->get) != 0)
        goto prep_fail;
    snprintf(sql, sizeof(sql), "SELECT %s, id FROM orders WHERE sale = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
             ORDER_COLS);
    if (prepare(w->db, sql, &w->list) != 0)
        goto prep_fail;
    if (prepare(w->db,
                "SELECT o.user, o.qty, o.status, o.request_id, o.created_at, o.expires_at, ev.id, ev.seq, ev.sale,"
                " ev.kind FROM events ev LEFT JOIN orders o ON o.sale = ev.sale AND o.id = ev.id"
                " WHERE ev.seq > ?1 ORDER BY ev.seq LIMIT ?2",
                &w->feed) != 0 ||
        prepare(w->db,
                "SELECT coalesce((SELECT value FROM meta WHERE key = 'feed_trimmed'), 0),"
                " coalesce((SELECT max(seq) FROM events), 0)",
                &w->feed_edge) != 0)
        goto prep_fail;
    atomic_init(&w->seen, atomic_load(&e->epoch));
    pthread_mutex_lock(&e->wlock);
    w->next = e->workers;
    e->workers = w;
    pthread_mutex_unlock(&e->wlock);
    *out = &w->super;
    return 0;
prep_fail:
    snprintf(err, errlen, "cannot read the order book %s: %s", e->path, sqlite3_errmsg(w->db));
fail:
    embed_worker_close(&w->super);
    return -1;
}

static void embed_free(embed_t *e)
{
    sqlite3_finalize(e->ins_order);
    sqlite3_finalize(e->ins_sale);
    sqlite3_finalize(e->upd_sale);
    sqlite3_finalize(e->get_order);
    sqlite3_finalize(e->upd_status);
    sqlite3_finalize(e->ins_event);
    sqlite3_close(e->db);
    for (size_t i = 0; i < SALE_SLOTS; i++) {
        esale_t *s = slot_sale(e, i);
        if (s != NULL)
            sale_free(s);
    }
    while (e->limbo != NULL) {
        esale_t *s = e->limbo;
        e->limbo = s->limbo;
        sale_free(s);
    }
    while (e->closed != NULL) {
        worker_local_t *w = e->closed;
        e->closed = w->next;
        free(w);
    }
    pthread_mutex_destroy(&e->wlock);
    /* closed after SQLite's connections: closing a descriptor of the book drops every POSIX lock
     * the process holds on it, SQLite's included */
    if (e->fd >= 0)
        close(e->fd);
    pthread_cond_destroy(&e->qcond);
    free(e->heap);
    free(e->path);
    free(e->wal_path);
    free(e);
}

static void embed_close(sk_store_t *st)
{
    embed_t *e = (embed_t *)st;
    pthread_mutex_lock(&e->qlock);
    e->stopping = 1;
    pthread_cond_signal(&e->qcond);
    pthread_mutex_unlock(&e->qlock);
    pthread_join(e->thread, NULL);
    embed_free(e);
}

static uint64_t embed_feed_mark(sk_store_t *st)
{
    /* + 1: 0 means "not known" to the caller */
    return atomic_load_explicit(&((embed_t *)st)->feed_mark, memory_order_acquire) + 1;
}

static const sk_store_ops_t embed_ops = {
    .name = "sqlite",
    .worker_open = embed_worker_open,
    .worker_flush = embed_worker_flush,
    .worker_close = embed_worker_close,
    .submit = embed_submit,
    .healthy = embed_healthy,
    .feed_mark = embed_feed_mark,
    .close = embed_close,
};

/* the order book's tables: src/sql/schema.sql, embedded at build time */
extern const char sk_sql_schema[];

/* Rebuild refuses a book that breaks a rule: this says which, of what, into err. */
#define TIME_MAX INT64_C(253402300799) /* 9999-12-31T23:59:59Z, the API's largest time (parse.c) */
#define REFUSE(...) (snprintf(err, errlen, __VA_ARGS__), -1)

/* The type is read first: once sqlite3_column_text has converted a value, its type is undefined
 * (a BLOB then reads as TEXT). */
static int valid_text(sqlite3_stmt *st, int col, int nullable)
{
    int type = sqlite3_column_type(st, col);
    if (type == SQLITE_NULL)
        return nullable;
    const char *t = (const char *)sqlite3_column_text(st, col);
    return type == SQLITE_TEXT && sk_valid_ident(t, (size_t)sqlite3_column_bytes(st, col));
}

static int valid_int(sqlite3_stmt *st, int col, int nullable)
{
    return sqlite3_column_type(st, col) == SQLITE_INTEGER || (nullable && sqlite3_column_type(st, col) == SQLITE_NULL);
}

/* Rebuilds memory from the order book: sales, then every order in id order. Every row is checked
 * first: a book that breaks a rule (a hand-edited row, a row set that sells more than the stock)
 * is refused with the sale and the rule in err, never trusted and never clamped. */
static int rebuild(embed_t *e, char *err, size_t errlen)
{
    sqlite3_stmt *st;
    size_t norders = 0;
    int64_t t0 = sk_mono_ms();
    int rc = 0;
    if (prepare(e->db,
                "SELECT sale, stock, per_user_limit, hold_seconds, starts_at, ends_at, retain_seconds FROM sales",
                &st) != 0)
        return REFUSE("cannot read the sales table: %s", sqlite3_errmsg(e->db));
    while (rc == 0 && sqlite3_step(st) == SQLITE_ROW) {
        const char *id = (const char *)sqlite3_column_text(st, 0);
        const char *why = NULL;
        sk_sale_conf_t c = {sqlite3_column_int64(st, 1), sqlite3_column_int64(st, 2), sqlite3_column_int64(st, 3),
                            column_time(st, 4),          column_time(st, 5),          column_time(st, 6)};
        if (id == NULL || !sk_valid_sale_id(id, (size_t)sqlite3_column_bytes(st, 0)))
            rc = REFUSE("a sale id is not [A-Za-z0-9_.-]{1,64}");
        else if (!valid_int(st, 1, 0) || !valid_int(st, 2, 0) || !valid_int(st, 3, 0) || !valid_int(st, 4, 1) ||
                 !valid_int(st, 5, 1) || !valid_int(st, 6, 1))
            rc = REFUSE("sale %s: a setting is not an integer", id);
        else if (sk_sale_conf_check(&c, &why) != 0)
            rc = REFUSE("sale %s: %s", id, why);
        else if ((c.starts_at == SK_NO_TIME && sqlite3_column_type(st, 4) != SQLITE_NULL) ||
                 (c.ends_at == SK_NO_TIME && sqlite3_column_type(st, 5) != SQLITE_NULL)) /* -2^63 is not null */
            rc = REFUSE("sale %s: starts_at and ends_at must be null or non-negative integers", id);
        else if (c.retain_seconds == SK_NO_TIME && sqlite3_column_type(st, 6) != SQLITE_NULL)
            rc = REFUSE("sale %s: retain_seconds must be null or a non-negative integer", id);
        else if (atomic_load(&e->nsales) >= MAX_SALES)
            rc = REFUSE("sale %s: more than %d sales", id, MAX_SALES);
        else if (find_sale(e, id) != NULL)
            rc = REFUSE("sale %s: it is in the sales table twice", id);
        else
            publish_sale(e, sale_new(id, &c));
    }
    sqlite3_finalize(st);
    if (rc != 0)
        return rc;

    /* in (sale, id) order, the primary key's: an id that is not above the last one of its sale is
     * in the book twice (a table made by hand may have no key) */
    if (prepare(e->db,
                "SELECT sale, id, user, qty, status, request_id, created_at, expires_at FROM orders ORDER BY sale, id",
                &st) != 0)
        return REFUSE("cannot read the orders table: %s", sqlite3_errmsg(e->db));
    esale_t *s = NULL;
    int step;
    while (rc == 0 && (step = sqlite3_step(st)) == SQLITE_ROW) {
        const char *sale = (const char *)sqlite3_column_text(st, 0);
        if (sale == NULL || !sk_valid_sale_id(sale, (size_t)sqlite3_column_bytes(st, 0))) {
            rc = REFUSE("an order's sale is not [A-Za-z0-9_.-]{1,64}");
            break;
        }
        if ((s == NULL || strcmp(s->id, sale) != 0) && (s = find_sale(e, sale)) == NULL) {
            rc = REFUSE("sale %s: it has orders but is not in the sales table", sale);
            break;
        }
        uint64_t id = (uint64_t)sqlite3_column_int64(st, 1);
        int64_t qty = sqlite3_column_int64(st, 3);
        const char *status_name = (const char *)sqlite3_column_text(st, 4);
        sk_order_status_t status = status_name != NULL && (size_t)sqlite3_column_bytes(st, 4) == strlen(status_name)
                                       ? sk_order_status_parse(status_name)
                                       : 0;
        int64_t created = sqlite3_column_int64(st, 6), expires = column_time(st, 7);
        if (!valid_int(st, 1, 0) || sqlite3_column_int64(st, 1) < 1) {
            rc = REFUSE("sale %s: an order id is not a positive integer", sale);
        } else if (!valid_int(st, 3, 0) || qty < 1 || qty > SK_MAX_UNITS) {
            rc = REFUSE("sale %s: order %llu: qty must be an integer from 1 to 2^53", sale, (unsigned long long)id);
        } else if (status == 0) {
            rc = REFUSE("sale %s: order %llu: unknown status", sale, (unsigned long long)id);
        } else if (!valid_int(st, 6, 0) || created < 0 || created > TIME_MAX || !valid_int(st, 7, 1) ||
                   (expires != SK_NO_TIME && (expires < 0 || expires > TIME_MAX)) ||
                   (status == SK_ORDER_HELD && expires == SK_NO_TIME)) {
            rc = REFUSE("sale %s: order %llu: created_at and expires_at must be times (a hold needs expires_at)", sale,
                        (unsigned long long)id);
        } else if (!valid_text(st, 2, 1) || !valid_text(st, 5, 1)) {
            rc = REFUSE("sale %s: order %llu: user and request_id must be null or [A-Za-z0-9_.:@-]{1,128}", sale,
                        (unsigned long long)id);
        } else if (id < s->next_id) {
            rc = REFUSE("sale %s: order %llu: its id is in the book twice", sale, (unsigned long long)id);
        }
        if (rc != 0)
            break;
        const char *user = (const char *)sqlite3_column_text(st, 2); /* after valid_text read its type */
        size_t ulen = (size_t)sqlite3_column_bytes(st, 2);
        s->next_id = id + 1;
        if (status == SK_ORDER_HELD || status == SK_ORDER_CONFIRMED) {
            int64_t a = atomic_load_explicit(&s->avail, memory_order_relaxed);
            if (sk_sale_check_stock(a, qty) != 0) {
                rc = REFUSE("sale %s: its held and confirmed orders come to more than its stock of %lld", sale,
                            (long long)atomic_load(&s->stock));
                break;
            }
            atomic_store_explicit(&s->avail, a - qty, memory_order_relaxed);
            if (status == SK_ORDER_HELD) {
                atomic_fetch_add_explicit(&s->held, qty, memory_order_relaxed);
                heap_push(e, (deadline_t){expires, s, id});
            }
            if (user != NULL)
                user_add(s, user, ulen, sk_hash(user, ulen), qty);
        }
        if (sqlite3_column_type(st, 5) != SQLITE_NULL) {
            const char *key = (const char *)sqlite3_column_text(st, 5);
            size_t klen = (size_t)sqlite3_column_bytes(st, 5);
            uint64_t h = sk_hash(key, klen);
            stripe_t *sp = stripe_of(s, h);
            if (sk_map_find(&sp->rids, h, key, klen) != NULL) {
                rc = REFUSE("sale %s: order %llu: its request_id is used by another order", sale,
                            (unsigned long long)id);
                break;
            }
            rid_t *r = sk_calloc(1, sizeof(*r) + klen + 1);
            memcpy(r->key, key, klen);
            r->node = (sk_map_node_t){r->key, (uint32_t)klen};
            r->done = 1;
            r->user = user ? sk_strndup(user, ulen) : NULL;
            r->qty = qty;
            r->order_id = id;
            r->created_at = created;
            r->expires_at = expires;
            sk_map_insert(&sp->rids, &r->node, h);
        }
        norders++;
    }
    if (rc == 0 && step != SQLITE_DONE)
        rc = REFUSE("cannot read the orders table: %s", sqlite3_errmsg(e->db));
    sqlite3_finalize(st);
    if (rc != 0)
        return rc;

    /* a sale made again after a delete goes on after the ids of its earlier life */
    if (prepare(e->db, "SELECT sale, last_id FROM tombstones", &st) != 0)
        return REFUSE("cannot read the tombstones table: %s", sqlite3_errmsg(e->db));
    while (rc == 0 && (step = sqlite3_step(st)) == SQLITE_ROW) {
        const char *id = (const char *)sqlite3_column_text(st, 0);
        esale_t *ts;
        if (!valid_int(st, 1, 0) || sqlite3_column_int64(st, 1) < 0)
            rc = REFUSE("tombstone of sale %s: last_id is not a non-negative integer", id ? id : "?");
        else if (id != NULL && (ts = find_sale(e, id)) != NULL && (uint64_t)sqlite3_column_int64(st, 1) >= ts->next_id)
            ts->next_id = (uint64_t)sqlite3_column_int64(st, 1) + 1;
    }
    if (rc == 0 && step != SQLITE_DONE)
        rc = REFUSE("cannot read the tombstones table: %s", sqlite3_errmsg(e->db));
    sqlite3_finalize(st);
    if (rc != 0)
        return rc;
    sk_log(SK_LOG_INFO, "event=rebuilt sales=%d orders=%zu ms=%lld", atomic_load(&e->nsales), norders,
           (long long)(sk_mono_ms() - t0));
    return 0;
}

/* The pid that holds an flock on the file (dev, ino), from /proc/locks; 0 when unknown. */
/* Where the feed goes on: after the last event written or deleted by the retention. */
static int feed_open(embed_t *e)
{
    sqlite3_stmt *st;
    if (prepare(e->db,
                "SELECT coalesce((SELECT value FROM meta WHERE key = 'feed_trimmed'), 0),"
                " coalesce((SELECT max(seq) FROM events), 0)",
                &st) != 0)
        return -1;
    int ok = sqlite3_step(st) == SQLITE_ROW;
    if (ok) {
        e->feed_trimmed = (uint64_t)sqlite3_column_int64(st, 0);
        e->feed_seq = (uint64_t)sqlite3_column_int64(st, 1);
        if (e->feed_seq < e->feed_trimmed)
            e->feed_seq = e->feed_trimmed;
        atomic_store(&e->feed_mark, e->feed_seq);
    }
    sqlite3_finalize(st);
    return ok ? 0 : -1;
}

/* A book written before retain_seconds existed gets the column (NULL: kept until deleted). */
static int migrate(sqlite3 *db)
{
    static const char *const TABLES[] = {"sales", "sales_archive"};
    for (size_t i = 0; i < 2; i++) {
        char sql[128];
        sqlite3_stmt *st = NULL;
        snprintf(sql, sizeof(sql), "SELECT retain_seconds FROM %s LIMIT 0", TABLES[i]);
        int have = sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK;
        sqlite3_finalize(st);
        snprintf(sql, sizeof(sql), "ALTER TABLE %s ADD COLUMN retain_seconds INTEGER", TABLES[i]);
        if (!have && exec(db, sql) != 0)
            return -1;
    }
    return 0;
}

static long lock_owner(dev_t dev, ino_t ino)
{
    FILE *f = fopen("/proc/locks", "re");
    char line[256];
    long pid = 0;
    while (f != NULL && pid == 0 && fgets(line, sizeof(line), f) != NULL) {
        char type[16];
        long p;
        unsigned maj, min;
        unsigned long long i;
        if (sscanf(line, "%*[^:]: %15s %*s %*s %ld %x:%x:%llu", type, &p, &maj, &min, &i) == 5 &&
            strcmp(type, "FLOCK") == 0 && maj == major(dev) && min == minor(dev) && i == (unsigned long long)ino)
            pid = p;
    }
    if (f != NULL)
        fclose(f);
    return pid;
}

/* Opens the book file and takes it for this process: one seckilld per order book. */
static int book_open(embed_t *e, char *err, size_t errlen)
{
    struct stat st;
    if ((e->fd = open(e->path, O_RDWR | O_CREAT | O_CLOEXEC, 0644)) < 0)
        return REFUSE("cannot open %s: %s", e->path, strerror(errno));
    if (fstat(e->fd, &st) != 0)
        return REFUSE("cannot stat %s: %s", e->path, strerror(errno));
    e->dev = st.st_dev;
    e->ino = st.st_ino;
    if (flock(e->fd, LOCK_EX | LOCK_NB) == 0)
        return 0;
    if (errno != EWOULDBLOCK)
        return REFUSE("cannot lock %s: %s", e->path, strerror(errno));
    long pid = lock_owner(st.st_dev, st.st_ino);
    if (pid > 0)
        return REFUSE("the order book %s is in use by another process (pid %ld): one seckilld per order book",
                      e->path, pid);
    return REFUSE("the order book %s is in use by another process: one seckilld per order book", e->path);
}

sk_store_t *sk_store_embed_open(const char *path, int threads, char *err, size_t errlen)
{
    embed_t *e = sk_calloc(1, sizeof(*e));
    pthread_condattr_t ca;
    struct stat st;
    const char *delay = getenv("SECKILL_TEST_TAKE_DELAY_MS");
    (void)threads;
    e->super.ops = &embed_ops;
    e->fd = -1;
    e->path = sk_strndup(path, strlen(path));
    e->wal_path = sk_malloc(strlen(path) + 5);
    snprintf(e->wal_path, strlen(path) + 5, "%s-wal", path);
    atomic_init(&e->healthy, 1);
    pthread_mutex_init(&e->qlock, NULL);
    pthread_mutex_init(&e->wlock, NULL);
    atomic_init(&e->epoch, 0);
    atomic_init(&e->freed, 0);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&e->qcond, &ca);
    pthread_condattr_destroy(&ca);
    e->qtail = &e->qhead;
    e->delayed_tail = &e->delayed;
    test_take_delay_ms = delay != NULL ? atoll(delay) : 0;

    if (book_open(e, err, errlen) != 0)
        goto fail;
    if (sqlite3_open_v2(path, &e->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "cannot open %s: %s", path, sqlite3_errmsg(e->db));
        goto fail;
    }
    sqlite3_busy_timeout(e->db, 5000);
    /* WAL with synchronous=FULL: every COMMIT is fsynced, so a committed batch survives a crash
     * or power loss; readers on the worker threads never block the writer. The probe write
     * proves the book writable now and makes its WAL exist, to be watched. */
    if (exec(e->db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;") != 0 || exec(e->db, sk_sql_schema) != 0 ||
        exec(e->db, PROBE) != 0) {
        snprintf(err, errlen, "cannot initialise or write %s: %s", path, sqlite3_errmsg(e->db));
        goto fail;
    }
    if (migrate(e->db) != 0) {
        snprintf(err, errlen, "cannot add retain_seconds to %s: %s", path, sqlite3_errmsg(e->db));
        goto fail;
    }
    if (sqlite3_db_readonly(e->db, "main") == 1) {
        snprintf(err, errlen, "cannot write %s: it opened read-only", path);
        goto fail;
    }
    if (stat(e->wal_path, &st) != 0) {
        snprintf(err, errlen, "cannot stat %s: %s (is the book in WAL mode?)", e->wal_path, strerror(errno));
        goto fail;
    }
    e->wal_dev = st.st_dev;
    e->wal_ino = st.st_ino;
    if (prepare(e->db,
                "INSERT INTO orders(sale, id, user, qty, status, request_id, created_at, expires_at)"
                " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                &e->ins_order) != 0 ||
        prepare(e->db,
                "INSERT INTO sales(sale, stock, per_user_limit, hold_seconds, starts_at, ends_at, retain_seconds)"
                " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                &e->ins_sale) != 0 ||
        prepare(e->db,
                "UPDATE sales SET stock = ?2, per_user_limit = ?3, hold_seconds = ?4, starts_at = ?5, ends_at = ?6,"
                " retain_seconds = ?7 WHERE sale = ?1",
                &e->upd_sale) != 0 ||
        prepare(e->db,
                "SELECT user, qty, status, request_id, created_at, expires_at FROM orders WHERE sale = ?1 AND id = ?2",
                &e->get_order) != 0 ||
        prepare(e->db, "UPDATE orders SET status = ?1 WHERE sale = ?2 AND id = ?3", &e->upd_status) != 0 ||
        prepare(e->db, "INSERT INTO events(seq, sale, id, kind) VALUES(?1, ?2, ?3, ?4)", &e->ins_event) != 0 ||
        feed_open(e) != 0) {
        snprintf(err, errlen, "cannot prepare statements on %s", path);
        goto fail;
    }
    char why[400];
    if (rebuild(e, why, sizeof(why)) != 0) {
        snprintf(err, errlen, "the order book %s is refused: %s", path, why);
        goto fail;
    }
    e->next_watch = sk_mono_ms() + WATCH_MS;
    if (pthread_create(&e->thread, NULL, committer_main, e) != 0) {
        snprintf(err, errlen, "pthread_create: %s", strerror(errno));
        goto fail;
    }
    return &e->super;
fail:
    embed_free(e);
    return NULL;
}
