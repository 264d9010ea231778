/* embed_commit.c: the embedded store's committer (store_embed.c), the one thread that writes the
 * order book: group commit of the workers' takes, sale puts and deletes, order changes, the
 * holds' expiry heap, the feed's rows and their retention, the watch on the book file, and the
 * reclamation of deleted sales. The workers hand it jobs through the store's queue (enqueue in
 * store_embed.c); its answers go back to them through each request's worker (sk_store_complete). */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include "error.h"
#include "log.h"
#include "metrics.h"
#include "store.h"
#include "store_embed_internal.h"
#include "util.h"

#define BATCH_MAX 4096

/* ---- the committer ---- */

/* A test hook (docs/testing.md): with SECKILL_TEST_TAKE_DELAY_MS=N in the environment, the
 * committer holds a take by a user whose id starts with "delay-" for N ms after its decision
 * before it commits it, handling everything else meanwhile, so that a test can race a PUT
 * against a take in flight. 0 (off) unless set. */
int64_t sk_embed_test_take_delay_ms;

typedef struct delayed_s {
    sk_store_req_t *req;
    int64_t due; /* monotonic ms */
    struct delayed_s *next;
} delayed_t;

static int delayed_user(const sk_store_req_t *req)
{
    return sk_embed_test_take_delay_ms > 0 && req->user != NULL && req->user_len >= 6 &&
           memcmp(req->user, "delay-", 6) == 0;
}

void sk_embed_heap_push(embed_t *e, deadline_t d)
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

int sk_embed_exec(sqlite3 *db, const char *sql)
{
    char *msg = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK) {
        sk_log_limited(SK_LOG_ERROR, "event=sqlite_error sql=\"%.40s\" error=\"%s\"", sql,
                       msg ? msg : sqlite3_errstr(rc));
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

int64_t sk_embed_column_time(sqlite3_stmt *st, int i)
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
            sk_log(SK_LOG_ERROR,
                   "event=book_checkpointed path=%s action=\"every committed order is in %s; restart"
                   " seckilld\"",
                   e->path, e->path);
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
            sk_log(SK_LOG_ERROR,
                   "event=book_rescued path=%s copy=%s action=\"stop seckilld, move %s to %s, start"
                   " it again\"",
                   e->path, copy, copy, e->path);
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
        sk_embed_unreserve(s, o);
    else if (err == 0 && o->status == SK_ORDER_HELD)
        sk_embed_heap_push(e, (deadline_t){o->expires_at, s, o->id});
    if (req->request_id != NULL)
        sk_embed_rid_finish(s, req->request_id, req->request_id_len, err, o);
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
        sk_embed_unreserve(s, &req->order);
        sk_order_dispose(&req->order);
    }
    req->now_ms = sk_now_ms();
    req->stamp = sk_embed_sale_conf(s, &conf);
    if ((rc = sk_sale_check_take(&conf, req->user != NULL, req->qty, &why)) != 0 ||
        (rc = sk_sale_window(&conf, req->now_ms / 1000)) != 0 || (rc = sk_embed_decide(s, req, &conf)) != 0)
        return rc == DEFERRED ? SK_ESOLD_OUT : rc; /* no decrease is pending on the committer */
    sk_embed_fill_order(s, req, &conf);
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
    int ok = !e->lost && sk_embed_exec(e->db, "BEGIN") == 0;
    int64_t t0 = sk_mono_ms();
    for (sk_store_req_t *r = run; ok && r != NULL; r = r->next)
        ok = insert_order(e, &r->order) == 0;
    if (ok)
        ok = sk_embed_exec(e->db, "COMMIT") == 0;
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
    if (ok && !e->lost && sk_embed_exec(e->db, "COMMIT") == 0 && book_check(e) == NULL) {
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
    sk_embed_publish_begin(s);
    atomic_store_explicit(&s->stock, c->stock, memory_order_relaxed);
    atomic_store_explicit(&s->per_user_limit, c->per_user_limit, memory_order_relaxed);
    atomic_store_explicit(&s->hold_seconds, c->hold_seconds, memory_order_relaxed);
    atomic_store_explicit(&s->starts_at, c->starts_at, memory_order_relaxed);
    atomic_store_explicit(&s->ends_at, c->ends_at, memory_order_relaxed);
    atomic_store_explicit(&s->retain_seconds, c->retain_seconds, memory_order_relaxed);
    atomic_fetch_add(&s->avail, avail_delta);
    atomic_fetch_add(&s->lowering, lowering_delta);
    sk_embed_publish_end(s);
}

/* Sets aside `units` of the remaining ones for a stock decrease that is about to be written:
 * checked and taken in one CAS, so that concurrent takes cannot slip between check and change.
 * Returns -1 when sold + held units would be above the new stock. */
static int lowering_begin(esale_t *s, int64_t units)
{
    int rc = 0;
    sk_embed_publish_begin(s);
    atomic_fetch_add(&s->lowering, units);
    int64_t a = atomic_load(&s->avail);
    do {
        if (a - units < 0) {
            atomic_fetch_sub(&s->lowering, units);
            rc = -1;
            break;
        }
    } while (!atomic_compare_exchange_weak(&s->avail, &a, a - units));
    sk_embed_publish_end(s);
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
    esale_t *s = sk_embed_find_sale(e, req->sale);
    sk_sale_conf_t conf;
    int64_t now = req->now_ms / 1000;
    if (s == NULL) {
        req->err = SK_ENO_SUCH_SALE;
    } else {
        sk_embed_sale_conf(s, &conf);
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
        esale_t *s = sk_embed_slot_sale(e, i);
        sk_sale_conf_t conf;
        sk_sale_view_t view;
        if (s == NULL)
            continue;
        sk_embed_sale_conf(s, &conf);
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
    int ok = !e->lost && sk_embed_exec(e->db, "BEGIN") == 0;
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
    sk_embed_sale_view(s, view);
    /* deadlines of its orders (confirmed or cancelled since) point at it: drop them */
    for (size_t i = 0; i < e->nheap;)
        if (e->heap[i].sale == s)
            e->heap[i] = e->heap[--e->nheap];
        else
            i++;
    for (size_t i = e->nheap / 2; i-- > 0;)
        heap_down(e, i);
    sk_embed_unpublish_sale(e, s);
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
            sk_embed_sale_free(s);
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
    sk_embed_collect(&e->collector, atomic_load_explicit(&e->freed, memory_order_relaxed));
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
    esale_t *s = sk_embed_find_sale(e, req->sale);
    const sk_sale_conf_t *c = &req->conf;
    int ok;

    if (s == NULL) {
        if (atomic_load(&e->nsales) >= MAX_SALES) {
            req->err = SK_ETOO_MANY_SALES;
            goto out;
        }
        ok = sk_embed_exec(e->db, "BEGIN") == 0 && write_sale(e, e->ins_sale, req->sale, c) == 0;
        if (in_txn(e, ok) != 0) {
            req->err = SK_EUNAVAILABLE;
            goto out;
        }
        s = sk_embed_sale_new(req->sale, c);
        s->next_id = tombstone(e, req->sale) + 1; /* a sale id deleted before goes on after its ids */
        sk_embed_publish_sale(e, s);
        req->created = 1;
    } else {
        int64_t delta = c->stock - atomic_load(&s->stock);
        int64_t lower = delta < 0 ? -delta : 0;
        if (lower > 0 && lowering_begin(s, lower) != 0) {
            req->err = SK_ESTOCK_BELOW_TAKEN;
            goto out;
        }
        ok = sk_embed_exec(e->db, "BEGIN") == 0 && write_sale(e, e->upd_sale, req->sale, c) == 0;
        if (in_txn(e, ok) != 0) {
            if (lower > 0) {
                sk_embed_publish_begin(s);
                atomic_fetch_add(&s->avail, lower); /* before `lowering` drops: see stock_answer */
                atomic_fetch_sub(&s->lowering, lower);
                sk_embed_publish_end(s);
            }
            req->err = SK_EUNAVAILABLE;
            goto out;
        }
        publish_conf(s, c, delta > 0 ? delta : 0, -lower);
        req->created = 0;
    }
    sk_embed_sale_view(s, &req->view);
out:
    sk_store_complete(req);
}

/* Reads an order through the committer's connection. Returns 1 when found. */
static int read_order(sqlite3 *db, sqlite3_stmt *st, const char *sale, uint64_t id, sk_order_t *o)
{
    int found = 0;
    sqlite3_bind_text(st, 1, sale, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)id);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        sk_embed_row_to_order(st, sale, -1, o);
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
        sk_embed_user_add(s, o->user, strlen(o->user), sk_hash(o->user, strlen(o->user)), -o->qty);
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
    esale_t *s = sk_embed_find_sale(e, req->sale);
    sk_order_status_t from = 0;
    int rc;
    if (s == NULL) {
        rc = SK_ENO_SUCH_SALE;
        goto out;
    }
    if (sk_embed_exec(e->db, "BEGIN") != 0) {
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
    if (sk_embed_exec(e->db, "BEGIN") != 0)
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
            sk_embed_heap_push(e, d);
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
            sk_embed_heap_push(e, d);
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
            sk_embed_heap_push(e, done[i]);
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
    if (in_txn(e, sk_embed_exec(e->db, "BEGIN") == 0 && sk_embed_exec(e->db, sql) == 0) == 0)
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
    in_txn(e, sk_embed_exec(e->db, "BEGIN IMMEDIATE") == 0 && sk_embed_exec(e->db, PROBE) == 0);
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

void *sk_embed_committer_main(void *arg)
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
                    *d = (delayed_t){jobs, sk_mono_ms() + sk_embed_test_take_delay_ms, NULL};
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
