/* embed_read.c: the embedded store's reads on the worker threads (store_embed.c): each worker's
 * read-only connection to the order book and its statements, and the reads through it: an order,
 * a sale's orders, the feed. They never wait for the committer (WAL: readers do not block the
 * writer). */
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include "error.h"
#include "store.h"
#include "store_embed_internal.h"
#include "util.h"

/* ---- reads on the worker threads ---- */

static const char *const ORDER_COLS = "user, qty, status, request_id, created_at, expires_at";

/* An order from a row whose first columns are ORDER_COLS; its id from column idcol (< 0: none). */
void sk_embed_row_to_order(sqlite3_stmt *st, const char *sale, int idcol, sk_order_t *o)
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
    o->expires_at = sk_embed_column_time(st, 5);
}

/* GET /v1/orders: the events after req->cursor, in one read snapshot with the retention's mark
 * (feed_trim) and the feed's end. Events of deleted sales find no order and are passed over (the
 * cursor still moves past them). */
int sk_embed_read_feed(worker_local_t *w, sk_store_req_t *req)
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
        sk_embed_row_to_order(st, (const char *)sqlite3_column_text(st, 8), 6, &ev->order);
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

int sk_embed_read_orders(worker_local_t *w, sk_store_req_t *req)
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
        sk_embed_row_to_order(st, req->sale, 6, &req->orders[req->norders++]);
    }
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc == SQLITE_DONE ? 0 : SK_EUNAVAILABLE;
}

int sk_embed_read_one(worker_local_t *w, sk_store_req_t *req)
{
    sqlite3_stmt *st = w->get;
    sqlite3_bind_text(st, 1, req->sale, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)req->order_id);
    int rc = sqlite3_step(st), err = 0;
    if (rc == SQLITE_ROW) {
        sk_embed_row_to_order(st, req->sale, 6, &req->order);
        req->order.id = req->order_id;
    } else {
        err = rc == SQLITE_DONE ? SK_ENO_SUCH_ORDER : SK_EUNAVAILABLE;
    }
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return err;
}

/* ---- a worker's handle: its read-only connection ---- */

void sk_embed_worker_close(sk_store_worker_t *super)
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
int sk_embed_worker_open(sk_store_t *st, const sk_store_env_t *env, sk_store_worker_t **out, char *err, size_t errlen)
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
    if (sk_embed_prepare(w->db, sql, &w->get) != 0)
        goto prep_fail;
    snprintf(sql, sizeof(sql), "SELECT %s, id FROM orders WHERE sale = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
             ORDER_COLS);
    if (sk_embed_prepare(w->db, sql, &w->list) != 0)
        goto prep_fail;
    if (sk_embed_prepare(
            w->db,
            "SELECT o.user, o.qty, o.status, o.request_id, o.created_at, o.expires_at, ev.id, ev.seq, ev.sale,"
            " ev.kind FROM events ev LEFT JOIN orders o ON o.sale = ev.sale AND o.id = ev.id"
            " WHERE ev.seq > ?1 ORDER BY ev.seq LIMIT ?2",
            &w->feed) != 0 ||
        sk_embed_prepare(w->db,
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
    sk_embed_worker_close(&w->super);
    return -1;
}
