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
 * Lock order: a stripe lock is never held while taking another lock.
 *
 * Its files: this one (the sales table, answering, the take, the store interface, opening the
 * book), embed_commit.c (the committer), embed_read.c (reads on the worker threads),
 * embed_rebuild.c (memory rebuilt from the book at start); store_embed_internal.h shares their
 * types. */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
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
#include "store.h"
#include "store_embed_internal.h"
#include "util.h"

/* ---- sales table: lock-free lookups, inserts and deletes by the committer only ---- */

/* A deleted sale's slot: lookups go past it, inserts may reuse it. */
static esale_t tomb_sale;
#define TOMB (&tomb_sale)

esale_t *sk_embed_find_sale(embed_t *e, const char *id)
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
esale_t *sk_embed_slot_sale(embed_t *e, size_t i)
{
    esale_t *s = atomic_load_explicit(&e->slots[i], memory_order_acquire);
    return s == TOMB ? NULL : s;
}

void sk_embed_publish_sale(embed_t *e, esale_t *s)
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
void sk_embed_unpublish_sale(embed_t *e, esale_t *s)
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

esale_t *sk_embed_sale_new(const char *id, const sk_sale_conf_t *c)
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

void sk_embed_sale_free(esale_t *s)
{
    for (int i = 0; i < NSTRIPES; i++) {
        sk_map_dispose(&s->stripes[i].users, free_user);
        sk_map_dispose(&s->stripes[i].rids, free_rid);
        pthread_mutex_destroy(&s->stripes[i].lock);
    }
    free(s);
}

/* Reads the settings as one set; returns their generation (always even). */
uint64_t sk_embed_sale_conf(const esale_t *s, sk_sale_conf_t *c)
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
void sk_embed_publish_begin(esale_t *s)
{
    atomic_store_explicit(&s->gen, atomic_load_explicit(&s->gen, memory_order_relaxed) + 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
}

void sk_embed_publish_end(esale_t *s)
{
    atomic_store_explicit(&s->gen, atomic_load_explicit(&s->gen, memory_order_relaxed) + 1, memory_order_release);
}

void sk_embed_sale_view(const esale_t *s, sk_sale_view_t *v)
{
    memcpy(v->id, s->id, sizeof(v->id));
    for (;;) {
        uint64_t g = sk_embed_sale_conf(s, &v->conf);
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

stripe_t *sk_embed_stripe_of(esale_t *s, uint64_t hash)
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
void sk_embed_user_add(esale_t *s, const char *user, size_t len, uint64_t h, int64_t delta)
{
    stripe_t *st = sk_embed_stripe_of(s, h);
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
void sk_embed_rid_finish(esale_t *s, const char *key, size_t klen, int err, const sk_order_t *order)
{
    uint64_t h = sk_hash(key, klen);
    stripe_t *st = sk_embed_stripe_of(s, h);
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
int sk_embed_decide(esale_t *s, sk_store_req_t *req, const sk_sale_conf_t *conf)
{
    int rc;
    /* the sold-out fast path: one atomic load, no lock (sold_out wins over user_limit) */
    if ((rc = stock_answer(s, atomic_load_explicit(&s->avail, memory_order_relaxed), req->qty)) != 0)
        return rc;
    if (req->user == NULL)
        return reserve(s, req->qty);
    uint64_t h = sk_hash(req->user, req->user_len);
    stripe_t *st = sk_embed_stripe_of(s, h);
    pthread_mutex_lock(&st->lock);
    user_t *u = (user_t *)sk_map_find(&st->users, h, req->user, req->user_len);
    if ((rc = sk_sale_check_user(conf->per_user_limit, u ? u->taken : 0, req->qty)) == 0 &&
        (rc = reserve(s, req->qty)) == 0)
        (u ? u : user_get(st, req->user, req->user_len, h))->taken += req->qty;
    pthread_mutex_unlock(&st->lock);
    return rc;
}

/* Gives back what decide reserved for order `o`. */
void sk_embed_unreserve(esale_t *s, const sk_order_t *o)
{
    atomic_fetch_add(&s->avail, o->qty);
    if (o->status == SK_ORDER_HELD)
        atomic_fetch_sub(&s->held, o->qty);
    if (o->user)
        sk_embed_user_add(s, o->user, strlen(o->user), sk_hash(o->user, strlen(o->user)), -o->qty);
}

/* Fills a decided take's order (all but its id, which the committer draws) and counts a hold. */
void sk_embed_fill_order(esale_t *s, sk_store_req_t *req, const sk_sale_conf_t *conf)
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
void sk_embed_collect(struct collector_s *c, uint64_t freed)
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
    sk_embed_collect(&w->collector, atomic_load_explicit(&e->freed, memory_order_relaxed));
    if (!w->wake_committer)
        return;
    w->wake_committer = 0;
    pthread_mutex_lock(&e->qlock);
    pthread_cond_signal(&e->qcond);
    pthread_mutex_unlock(&e->qlock);
}

static int take(embed_t *e, sk_store_req_t *req)
{
    esale_t *s = sk_embed_find_sale(e, req->sale);
    sk_sale_conf_t conf;
    const char *why;
    int rc;

    if (s == NULL)
        return req->err = SK_ENO_SUCH_SALE, SK_STORE_DONE;
    /* while the order book cannot be written (or was lost) nothing is decided */
    if (!atomic_load_explicit(&e->healthy, memory_order_relaxed))
        return req->err = SK_EUNAVAILABLE, SK_STORE_DONE;
    req->stamp = sk_embed_sale_conf(s, &conf);
    if ((rc = sk_sale_check_take(&conf, req->user != NULL, req->qty, &why)) != 0)
        return req->err = rc, SK_STORE_DONE;

    /* a request id is looked up before anything else: a replay is answered even when the sale
     * has since sold out or ended */
    if (req->request_id != NULL) {
        uint64_t h = sk_hash(req->request_id, req->request_id_len);
        stripe_t *st = sk_embed_stripe_of(s, h);
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
        rc = sk_embed_decide(s, req, &conf);
    req->priv = s;
    if (rc == DEFERRED) {
        req->stamp = UNDECIDED;
        enqueue(e, req);
        return 0;
    }
    if (rc != 0) {
        if (req->request_id != NULL)
            sk_embed_rid_finish(s, req->request_id, req->request_id_len, rc, NULL);
        return req->err = rc, SK_STORE_DONE;
    }
    sk_embed_fill_order(s, req, &conf);
    enqueue(e, req);
    return 0;
}

/* ---- the store interface ---- */

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
        if ((s = sk_embed_find_sale(e, req->sale)) == NULL)
            req->err = SK_ENO_SUCH_SALE;
        else
            sk_embed_sale_view(s, &req->view);
        return SK_STORE_DONE;
    case SK_STORE_SALE_LIST: {
        size_t cap = (size_t)atomic_load(&e->nsales) + 1;
        req->views = sk_malloc(cap * sizeof(*req->views));
        for (size_t i = 0; i < SALE_SLOTS && req->nviews < cap; i++)
            if ((s = sk_embed_slot_sale(e, i)) != NULL)
                sk_embed_sale_view(s, &req->views[req->nviews++]);
        qsort(req->views, req->nviews, sizeof(*req->views), cmp_view);
        return SK_STORE_DONE;
    }
    case SK_STORE_ORDER_GET:
    case SK_STORE_ORDER_LIST:
        if (sk_embed_find_sale(e, req->sale) == NULL) {
            req->err = SK_ENO_SUCH_SALE;
            return SK_STORE_DONE;
        }
        req->err = req->op == SK_STORE_ORDER_GET ? sk_embed_read_one(w, req) : sk_embed_read_orders(w, req);
        return SK_STORE_DONE;
    case SK_STORE_FEED:
        req->err = sk_embed_read_feed(w, req);
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

int sk_embed_prepare(sqlite3 *db, const char *sql, sqlite3_stmt **st)
{
    if (sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, st, NULL) != SQLITE_OK) {
        sk_log(SK_LOG_ERROR, "event=sqlite_prepare sql=\"%s\" error=\"%s\"", sql, sqlite3_errmsg(db));
        return -1;
    }
    return 0;
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
        esale_t *s = sk_embed_slot_sale(e, i);
        if (s != NULL)
            sk_embed_sale_free(s);
    }
    while (e->limbo != NULL) {
        esale_t *s = e->limbo;
        e->limbo = s->limbo;
        sk_embed_sale_free(s);
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
    .worker_open = sk_embed_worker_open,
    .worker_flush = embed_worker_flush,
    .worker_close = sk_embed_worker_close,
    .submit = embed_submit,
    .healthy = embed_healthy,
    .feed_mark = embed_feed_mark,
    .close = embed_close,
};

/* the order book's tables: src/sql/schema.sql, embedded at build time */
extern const char sk_sql_schema[];

/* ---- opening the book ---- */

/* Where the feed goes on: after the last event written or deleted by the retention. */
static int feed_open(embed_t *e)
{
    sqlite3_stmt *st;
    if (sk_embed_prepare(e->db,
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
        if (!have && sk_embed_exec(db, sql) != 0)
            return -1;
    }
    return 0;
}

/* The pid that holds an flock on the file (dev, ino), from /proc/locks; 0 when unknown. */
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
    sk_embed_test_take_delay_ms = delay != NULL ? atoll(delay) : 0;

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
    if (sk_embed_exec(e->db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;") != 0 ||
        sk_embed_exec(e->db, sk_sql_schema) != 0 || sk_embed_exec(e->db, PROBE) != 0) {
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
    if (sk_embed_prepare(e->db,
                         "INSERT INTO orders(sale, id, user, qty, status, request_id, created_at, expires_at)"
                         " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                         &e->ins_order) != 0 ||
        sk_embed_prepare(
            e->db,
            "INSERT INTO sales(sale, stock, per_user_limit, hold_seconds, starts_at, ends_at, retain_seconds)"
            " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            &e->ins_sale) != 0 ||
        sk_embed_prepare(
            e->db,
            "UPDATE sales SET stock = ?2, per_user_limit = ?3, hold_seconds = ?4, starts_at = ?5, ends_at = ?6,"
            " retain_seconds = ?7 WHERE sale = ?1",
            &e->upd_sale) != 0 ||
        sk_embed_prepare(
            e->db,
            "SELECT user, qty, status, request_id, created_at, expires_at FROM orders WHERE sale = ?1 AND id = ?2",
            &e->get_order) != 0 ||
        sk_embed_prepare(e->db, "UPDATE orders SET status = ?1 WHERE sale = ?2 AND id = ?3", &e->upd_status) != 0 ||
        sk_embed_prepare(e->db, "INSERT INTO events(seq, sale, id, kind) VALUES(?1, ?2, ?3, ?4)", &e->ins_event) != 0 ||
        feed_open(e) != 0) {
        snprintf(err, errlen, "cannot prepare statements on %s", path);
        goto fail;
    }
    char why[400];
    if (sk_embed_rebuild(e, why, sizeof(why)) != 0) {
        snprintf(err, errlen, "the order book %s is refused: %s", path, why);
        goto fail;
    }
    e->next_watch = sk_mono_ms() + WATCH_MS;
    if (pthread_create(&e->thread, NULL, sk_embed_committer_main, e) != 0) {
        snprintf(err, errlen, "pthread_create: %s", strerror(errno));
        goto fail;
    }
    return &e->super;
fail:
    embed_free(e);
    return NULL;
}
