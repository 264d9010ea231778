/* store_redis.c: the Redis store (store.h) for `--store redis://[:PASSWORD@]HOST:PORT[/DB]`
 * (or unix:// or redis-sentinel://, redis_ha.h), and its core: the workers, their commands and
 * where each goes out, the takes, the store interface.
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
 * Worker 0 of each instance also sweeps held orders past their deadline (redis_sweep.c): it asks
 * the index for the slots due (at the next deadline, and at least every second), and reaps only
 * those. On a Redis Cluster it also relays the slots' feed streams into the one merged feed,
 * reading only the slots that workers marked after their scripts (redis_relay.c).
 *
 * The store's other files share store_redis_internal.h: redis_args.c composes the scripts and
 * writes what each command sends, redis_reply.c reads the scripts' replies, redis_requests.c
 * serves every request but a take, redis_sweep.c and redis_relay.c do the background work above,
 * and redis_offline.c runs the reply handlers without Redis (the fuzz target). Here, in order:
 * the commands (every reply comes back through on_cmd), the routing (which connection a slot's
 * commands go out on), the takes, everything else (the worker's timer; every command's end, MOVED
 * and ASK followed there), and the store interface. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "error.h"
#include "log.h"
#include "map.h"
#include "metrics.h"
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
#define BG_TICK_MS 100         /* every worker's background timer (on_bg) */
#define REDIRECTS_MAX 5        /* MOVED / ASK followed per command */

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

/* ---- commands ---- */

static void on_cmd(sk_redis_cmd_t *super, redisReply *rep);

static cmd_t *cmd_new(worker_t *w, cmd_type_t type, int script)
{
    cmd_t *cmd = sk_calloc(1, sizeof(*cmd));
    cmd->w = w;
    cmd->type = type;
    cmd->super.cb = on_cmd;
    if (script >= 0) {
        cmd->super.script = &w->r->scripts[script];
        cmd->super.args = sk_store_redis_cmd_args;
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
int sk_store_redis_index_ready(worker_t *w)
{
    sk_redis_conn_t *c = route(w, w->r->idx_slot);
    return c != NULL && c->ready;
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
    if (cmd->super.script == NULL)
        return sk_store_redis_send_plain(c, cmd);
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

/* Every BG_TICK_MS on every worker: the cluster's map, the index's retries, the marks for the
 * relay; on worker 0 also the sweep and the relay's rounds. */
static void on_bg(h2o_timeout_entry_t *e)
{
    worker_t *w = SK_CONTAINER_OF(e, worker_t, e_bg);
    if (w->r->cl != NULL) { /* a new map; a master lost: ask for a new one */
        cluster_sync(w);
        if (atomic_load(&w->r->shared.nbad) > 0 || atomic_load(&w->r->shared.nrefusing) > 0)
            sk_redis_cluster_refresh(w->r->cl);
    }
    if (w->ndue_retry > 0 && sk_store_redis_index_ready(w)) {
        size_t n = w->ndue_retry;
        w->ndue_retry = 0; /* what fails again comes back */
        for (size_t i = 0; i < n; i++)
            due_add(w, w->due_retry[i].slot, w->due_retry[i].deadline);
    }
    if (w->index == 0) /* the reindex at start, the sweep, the feed's retention */
        sk_store_redis_sweep_tick(w, sk_mono_ms());
    if (w->r->cl != NULL) /* the feed's relay: marks that failed, worker 0's rounds */
        sk_store_redis_relay_tick(w);
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
        sk_store_redis_relay_mark(w, cmd->slot);
    switch (cmd->type) {
    case C_TAKE:
        take_done(w, cmd, rep);
        break;
    case C_DUE_ADD:
        if (rep == NULL || rep->type == REDIS_REPLY_ERROR) /* it may have run: adding again is harmless */
            due_retry_add(w, cmd->sslot, cmd->next);
        break;
    case C_WAIT:
        wait_done(w, cmd, rep);
        break;
    case C_ASKING:
        break;
    case C_DUE_GET:
    case C_REAP:
    case C_DUE_SET:
    case C_REINDEX_SLOTS:
    case C_REINDEX_SLOT:
    case C_FEEDTRIM:
        sk_store_redis_sweep_done(w, cmd, rep);
        break;
    case C_RELAY_MARK:
    case C_RELAY_POLL:
    case C_RELAY_POS:
    case C_RELAY_READ:
    case C_RELAY_COPY:
    case C_RELAY_TRIM:
    case C_RELAY_SYNC:
    case C_RELAY_WAIT:
        sk_store_redis_relay_done(w, cmd, rep);
        break;
    default: /* the requests' commands */
        sk_store_redis_request_done(w, cmd, rep);
        break;
    }
    if (cmd->wait != NULL) /* its reply came: the WAIT holds what it answers */
        cmd->wait->of = NULL;
    free(cmd->blob);
    free(cmd);
}

/* ---- what the store's other files call (store_redis_internal.h) ----
 * The first five are the static functions above under their shared names: the takes call them
 * by the static ones. */

cmd_t *sk_store_redis_cmd_new(worker_t *w, cmd_type_t type, int script)
{
    return cmd_new(w, type, script);
}

int sk_store_redis_cmd_send(cmd_t *cmd)
{
    return cmd_send(cmd);
}

int sk_store_redis_route_up(worker_t *w, int slot)
{
    return route_up(w, slot);
}

void sk_store_redis_answer(cmd_t *cmd, sk_store_req_t *req)
{
    answer(cmd, req);
}

void sk_store_redis_due_add(worker_t *w, int slot, long long deadline)
{
    due_add(w, slot, deadline);
}

void sk_store_redis_run_failq(worker_t *w)
{
    run_failq(w);
}

/* The offline store (redis_offline.c): every sale forgotten, */
void sk_store_redis_forget_sales(worker_t *w)
{
    sk_map_dispose(&w->sales, ws_free);
    sk_map_init(&w->sales);
}

/* ... and a take call of reqs[0..n) for reqs[0].sale as ws_flush sends it, with
 * reqs[n..n+queued) waiting behind it, but not sent. */
cmd_t *sk_store_redis_take_sent(worker_t *w, sk_store_req_t *reqs, size_t n, size_t queued)
{
    wsale_t *ws = ws_get(w, reqs[0].sale);
    cmd_t *cmd = cmd_new(w, C_TAKE, S_TAKE);
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
    return cmd;
}

/* ---- the store interface ---- */

static int redis_submit(sk_store_worker_t *super, sk_store_req_t *req)
{
    worker_t *w = (worker_t *)super;
    if (req->op == SK_STORE_TAKE)
        return submit_take(w, req);
    if (w->r->cl == NULL && !sk_redis_conn_up(&w->conn)) /* under Cluster: the slot's master's (cmd_send) */
        return SK_EUNAVAILABLE;
    return sk_store_redis_request_submit(w, req);
}

static int redis_healthy(sk_store_t *st)
{
    redis_t *r = (redis_t *)st;
    /* under Cluster, every slot must have a master too */
    return atomic_load(&r->shared.nbad) == 0 && atomic_load(&r->shared.nrefusing) == 0 &&
           (r->cl == NULL || sk_redis_cluster_complete(r->cl));
}

/* A worker handle that starts nothing yet (its timers are not linked, its connections not made). */
worker_t *sk_store_redis_worker_new(redis_t *r, const sk_store_env_t *env)
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
    worker_t *w = sk_store_redis_worker_new(r, env);
    (void)err;
    (void)errlen;
    h2o_timeout_link(w->loop, &w->t_bg, &w->e_bg); /* every worker: retries, the map; worker 0: the sweep */
    w->two = r->conf.min_replicas > 0;
    if (r->cl != NULL) { /* a connection per master instead (cluster_sync) */
        memset(w->slot_node, 0xff, sizeof(w->slot_node));
        if (w->index == 0)
            sk_store_redis_relay_open(w);
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
    sk_store_redis_relay_close(w);
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

/* sk_store_redis_open with `check` 1; with 0 (the offline store), Redis is not checked at start and
 * no cluster map thread starts. */
sk_store_t *sk_store_redis_new(const char *url, int threads, const sk_store_opts_t *opts, int check, char *err,
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
    if (sk_redis_conf_parse(&r->conf, url, err, errlen) != 0 || sk_store_redis_load_scripts(r, err, errlen) != 0) {
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
    return sk_store_redis_new(url, threads, opts, 1, err, errlen);
}
