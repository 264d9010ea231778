/* redis_offline.c: the Redis store without Redis, for the fuzz target tests/fuzz/fuzz_redis.c
 * (store_redis_internal.h, its first part): a store of one worker whose connection stays down,
 * and a reply handed to the handler of a command as if Redis had sent it, through redis_conn.c's
 * reply path (sk_redis_conn_deliver). */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "redis_conn_internal.h"
#include "store_redis_internal.h"
#include "util.h"

sk_store_worker_t *sk_store_redis_offline_open(const sk_store_env_t *env)
{
    char err[256];
    sk_store_t *st = sk_store_redis_new("redis://127.0.0.1:6379", 1, NULL, 0, err, sizeof(err));
    if (st == NULL)
        return NULL;
    /* redis_worker_open, but with a connection that stays down */
    redis_t *r = (redis_t *)st;
    worker_t *w = sk_store_redis_worker_new(r, env);
    sk_redis_conn_init_down(&w->conn, w->loop, 0, &r->conf, r->scripts, S_COUNT, &r->shared);
    return &w->super;
}

void sk_store_redis_offline_close(sk_store_worker_t *w)
{
    sk_store_t *st = w->store;
    sk_store_worker_close(w);
    sk_store_close(st);
}

void sk_store_redis_offline_reset(sk_store_worker_t *super)
{
    worker_t *w = (worker_t *)super;
    sk_store_redis_forget_sales(w);
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
    case SK_REDIS_R_TAKE: /* as ws_flush sent it, with `queued` more waiting */
        offline_deliver(w, sk_store_redis_take_sent(w, reqs, n, queued), reps[0]);
        break;
    case SK_REDIS_R_LIST_SLOTS:
    case SK_REDIS_R_LIST_MEMBERS:
    case SK_REDIS_R_LIST_VIEW: {
        list_t *l = sk_calloc(1, sizeof(*l));
        l->req = &reqs[0];
        if (kind != SK_REDIS_R_LIST_VIEW) {
            cmd = sk_store_redis_cmd_new(w, KIND[kind].type, -1);
            cmd->list = l;
            l->outstanding = kind == SK_REDIS_R_LIST_MEMBERS; /* as list_slots_done counts it */
            offline_deliver(w, cmd, reps[0]);
            break;
        }
        /* as list_members_done sent them, one per member */
        l->cap = l->outstanding = nreps;
        reqs[0].views = sk_calloc(nreps, sizeof(*reqs[0].views));
        for (size_t i = 0; i < nreps; i++) {
            cmd = sk_store_redis_cmd_new(w, C_LIST_VIEW, S_VIEW);
            cmd->list = l;
            snprintf(cmd->sale, sizeof(cmd->sale), "%s", reqs[0].sale);
            offline_deliver(w, cmd, reps[i]);
        }
        break;
    }
    case SK_REDIS_R_PUT: /* the SADDs of put_pre (of another put: no request), then the script */
        for (size_t i = 0; i + 1 < nreps; i++) {
            cmd = sk_store_redis_cmd_new(w, C_PUT_PRE, -1);
            offline_deliver(w, cmd, reps[i]);
        }
        cmd = sk_store_redis_cmd_new(w, C_PUT, S_PUT);
        cmd->req = &reqs[0];
        offline_deliver(w, cmd, reps[nreps - 1]);
        break;
    case SK_REDIS_R_DUE_GET:
    case SK_REDIS_R_REAP:
    case SK_REDIS_R_DUE_SET:
        w->reaping++;
        cmd = sk_store_redis_cmd_new(w, KIND[kind].type, KIND[kind].script);
        cmd->slot = cmd->sslot = sk_redis_sale_slot(reqs[0].sale, strlen(reqs[0].sale));
        offline_deliver(w, cmd, reps[0]);
        break;
    default:
        if ((unsigned)kind >= SK_REDIS_R_KINDS_)
            return;
        cmd = sk_store_redis_cmd_new(w, KIND[kind].type, KIND[kind].script);
        cmd->req = &reqs[0];
        offline_deliver(w, cmd, reps[0]);
        break;
    }
    sk_store_redis_run_failq(w); /* what the handlers failed for the next loop turn */
}
