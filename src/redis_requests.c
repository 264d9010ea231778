/* redis_requests.c: every request of the Redis store but a take (store_redis_internal.h): sale
 * get, put and delete, the sale listing, order get, list, confirm and cancel, and the winners
 * feed. Each is one script call on its sale's slot (the feed: on the feed's), answered from its
 * reply (a write's with --redis-min-replicas once its WAIT confirms it: store_redis.c's answer),
 * but for two: a put first adds its sale's slot to the index's set of slots, and a listing reads
 * the index's slots, then each slot's sales, then a view of each sale. Takes are store_redis.c's. */
#include <stdlib.h>
#include <string.h>
#include "error.h"
#include "redis_conn_internal.h"
#include "store_redis_internal.h"
#include "util.h"

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
        cmd_t *c = sk_store_redis_cmd_new(w, C_LIST_MEMBERS, -1);
        char key[64];
        c->list = l;
        c->slot = c->sslot = (int)v;
        slot_key(key, sizeof(key), c->slot, SLOT_SALES);
        cmd_plain(c, "SMEMBERS", key, NULL);
        if (sk_store_redis_cmd_send(c) != 0) {
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
        cmd_t *v = sk_store_redis_cmd_new(w, C_LIST_VIEW, S_VIEW);
        v->list = l;
        memcpy(v->sale, m->str, m->len);
        v->sale[m->len] = '\0';
        v->slot = sk_redis_sale_slot(v->sale, m->len);
        if (sk_store_redis_cmd_send(v) != 0) {
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
        ok = req->nviews < l->cap && sk_store_redis_parse_view(rep, cmd->sale, &req->views[req->nviews]) == 0;
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
    cmd_t *cmd = sk_store_redis_cmd_new(w, C_LIST_SLOTS, -1);
    list_t *l = sk_calloc(1, sizeof(*l));
    l->req = req;
    cmd->list = l;
    cmd->slot = w->r->idx_slot;
    cmd_plain(cmd, "SMEMBERS", IDX_SLOTS, NULL);
    if (sk_store_redis_cmd_send(cmd) != 0) {
        free(l);
        free(cmd);
        return SK_EUNAVAILABLE;
    }
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
            if (sk_store_redis_parse_view(rep, req->sale, &req->view) != 0)
                err = SK_EUNAVAILABLE;
            break;
        case C_DELETE: /* the sale as it was; every worker's cache of it goes */
            if (sk_store_redis_parse_view(rep, req->sale, &req->view) != 0)
                err = SK_EUNAVAILABLE;
            bump_gen(w->r);
            break;
        case C_PUT:
            if (req->err != 0) { /* adding it to the sets of sales failed: the outcome is unknown */
                err = req->err;
                break;
            }
            if (sk_store_redis_parse_view(rep, req->sale, &req->view) != 0) {
                err = SK_EUNAVAILABLE;
            } else if (req->view.conf.retain_seconds != SK_NO_TIME && req->view.conf.ends_at != SK_NO_TIME &&
                       req->view.conf.retain_seconds >= 0 && req->view.conf.ends_at >= 0 &&
                       req->view.conf.retain_seconds <= INT64_MAX - req->view.conf.ends_at) {
                /* put.lua put the sale into its slot's sweep list for when its retain_seconds
                 * are up: the index learns that time too, so that the sweep comes (reap.lua) */
                sk_store_redis_due_add(w, cmd->slot,
                                       (long long)(req->view.conf.ends_at + req->view.conf.retain_seconds));
            }
            req->created = code == RC_CREATED;
            bump_gen(w->r);
            break;
        case C_ORDER:
        case C_CHANGE:
            if (sk_store_redis_parse_order(rep, 1, req->sale, req->order_id, &req->order) != 0) {
                sk_order_dispose(&req->order);
                err = SK_EUNAVAILABLE;
            } else if (req->op == SK_STORE_ORDER_CHANGE && req->change == SK_OP_CANCEL_ORDER) {
                bump_gen(w->r);
            }
            break;
        case C_FEED:
            if (sk_store_redis_parse_feed(rep, req) != 0) {
                sk_store_req_dispose(req);
                err = SK_EUNAVAILABLE;
            }
            break;
        case C_ORDERS:
            if (sk_store_redis_parse_orders(rep, req) != 0) {
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
    sk_store_redis_answer(cmd, req);
}

static int submit_script(worker_t *w, sk_store_req_t *req, cmd_type_t type, int script)
{
    cmd_t *cmd = sk_store_redis_cmd_new(w, type, script);
    cmd->req = req;
    cmd->slot = sk_redis_sale_slot(req->sale, strlen(req->sale));
    if (sk_store_redis_cmd_send(cmd) != 0) {
        free(cmd);
        return SK_EUNAVAILABLE;
    }
    return 0;
}

/* Sale put: its slot into the index's first (so a listed slot may hold no sale yet, never the
 * reverse), then, once that is done, the script, which adds the sale to its slot's sales. */
static int submit_put(worker_t *w, sk_store_req_t *req)
{
    cmd_t *pre = sk_store_redis_cmd_new(w, C_PUT_PRE, -1);
    char slot[16];
    pre->req = req;
    pre->slot = w->r->idx_slot;
    snprintf(slot, sizeof(slot), "%d", sk_redis_sale_slot(req->sale, strlen(req->sale)));
    cmd_plain(pre, "SADD", IDX_SLOTS, slot);
    if (sk_store_redis_cmd_send(pre) != 0) {
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
        cmd_t *put = sk_store_redis_cmd_new(w, C_PUT, S_PUT);
        put->req = req;
        put->slot = sk_redis_sale_slot(req->sale, strlen(req->sale));
        if (sk_store_redis_cmd_send(put) == 0)
            return;
        free(put);
    }
    req->err = SK_EUNAVAILABLE;
    req->cb(req);
}

/* Every request but a take (store_redis.c's), once the worker's connection is up (under Cluster,
 * the slot's master's: cmd_send): 0, or an SK_E* error (its callback will not run). */
int sk_store_redis_request_submit(worker_t *w, sk_store_req_t *req)
{
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
        cmd_t *cmd = sk_store_redis_cmd_new(w, C_FEED, S_FEED);
        cmd->req = req;
        cmd->slot = w->r->feed_slot;
        if (sk_store_redis_cmd_send(cmd) != 0) {
            free(cmd);
            return SK_EUNAVAILABLE;
        }
        return 0;
    }
    default:
        return SK_EINTERNAL;
    }
}

/* The reply of one of their commands (NULL: the connection went first); on_cmd frees cmd. */
void sk_store_redis_request_done(worker_t *w, cmd_t *cmd, redisReply *rep)
{
    switch (cmd->type) {
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
    default:
        req_done(w, cmd, rep);
        break;
    }
}
