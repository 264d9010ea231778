/* embed_rebuild.c: the embedded store's memory rebuilt from the order book alone when it opens
 * (sk_store_embed_open in store_embed.c): sales, then every order, then the tombstones of deleted
 * sales. Every row is checked first; a book that breaks a rule is refused, never trusted. */
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include "log.h"
#include "map.h"
#include "parse.h"
#include "store.h"
#include "store_embed_internal.h"
#include "util.h"

#define TIME_MAX INT64_C(253402300799) /* 9999-12-31T23:59:59Z, the API's largest time (parse.c) */

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
int sk_embed_rebuild(embed_t *e, char *err, size_t errlen)
{
    sqlite3_stmt *st;
    size_t norders = 0;
    int64_t t0 = sk_mono_ms();
    int rc = 0;
    if (sk_embed_prepare(
            e->db, "SELECT sale, stock, per_user_limit, hold_seconds, starts_at, ends_at, retain_seconds FROM sales",
            &st) != 0)
        return REFUSE("cannot read the sales table: %s", sqlite3_errmsg(e->db));
    while (rc == 0 && sqlite3_step(st) == SQLITE_ROW) {
        const char *id = (const char *)sqlite3_column_text(st, 0);
        const char *why = NULL;
        sk_sale_conf_t c = {sqlite3_column_int64(st, 1), sqlite3_column_int64(st, 2), sqlite3_column_int64(st, 3),
                            sk_embed_column_time(st, 4), sk_embed_column_time(st, 5), sk_embed_column_time(st, 6)};
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
        else if (sk_embed_find_sale(e, id) != NULL)
            rc = REFUSE("sale %s: it is in the sales table twice", id);
        else
            sk_embed_publish_sale(e, sk_embed_sale_new(id, &c));
    }
    sqlite3_finalize(st);
    if (rc != 0)
        return rc;

    /* in (sale, id) order, the primary key's: an id that is not above the last one of its sale is
     * in the book twice (a table made by hand may have no key) */
    if (sk_embed_prepare(
            e->db,
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
        if ((s == NULL || strcmp(s->id, sale) != 0) && (s = sk_embed_find_sale(e, sale)) == NULL) {
            rc = REFUSE("sale %s: it has orders but is not in the sales table", sale);
            break;
        }
        uint64_t id = (uint64_t)sqlite3_column_int64(st, 1);
        int64_t qty = sqlite3_column_int64(st, 3);
        const char *status_name = (const char *)sqlite3_column_text(st, 4);
        sk_order_status_t status = status_name != NULL && (size_t)sqlite3_column_bytes(st, 4) == strlen(status_name)
                                       ? sk_order_status_parse(status_name)
                                       : 0;
        int64_t created = sqlite3_column_int64(st, 6), expires = sk_embed_column_time(st, 7);
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
                sk_embed_heap_push(e, (deadline_t){expires, s, id});
            }
            if (user != NULL)
                sk_embed_user_add(s, user, ulen, sk_hash(user, ulen), qty);
        }
        if (sqlite3_column_type(st, 5) != SQLITE_NULL) {
            const char *key = (const char *)sqlite3_column_text(st, 5);
            size_t klen = (size_t)sqlite3_column_bytes(st, 5);
            uint64_t h = sk_hash(key, klen);
            stripe_t *sp = sk_embed_stripe_of(s, h);
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
    if (sk_embed_prepare(e->db, "SELECT sale, last_id FROM tombstones", &st) != 0)
        return REFUSE("cannot read the tombstones table: %s", sqlite3_errmsg(e->db));
    while (rc == 0 && (step = sqlite3_step(st)) == SQLITE_ROW) {
        const char *id = (const char *)sqlite3_column_text(st, 0);
        esale_t *ts;
        if (!valid_int(st, 1, 0) || sqlite3_column_int64(st, 1) < 0)
            rc = REFUSE("tombstone of sale %s: last_id is not a non-negative integer", id ? id : "?");
        else if (id != NULL && (ts = sk_embed_find_sale(e, id)) != NULL &&
                 (uint64_t)sqlite3_column_int64(st, 1) >= ts->next_id)
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
