/* redis_sweep.c: the Redis store's worker 0 at work in the background (store_redis_internal.h),
 * on every instance, from its timer (store_redis.c's on_bg).
 *
 * The sweep of held orders past their deadline (docs/redis.md, "Holds and expiry"): a take that
 * makes holds lowers its sale's score in its slot's sweep list (SLOT_DUE, in take.lua), then the
 * slot's in the index (IDX_DUE, due_add.lua from store_redis.c). Worker 0 asks the index for the
 * slots due (due_get.lua: at the next deadline, at least every SWEEP_IDLE_MS), reaps only those
 * (reap.lua, again while more are due; a sale past its retain_seconds goes too), then writes each
 * slot's next deadline into the index (due_set.lua, only if no take moved the slot's version on
 * meanwhile). Once after start, the reindex: every slot's earliest deadline into the index again,
 * for the due_add calls an instance that died took with it.
 *
 * The feed's retention on a single Redis or under Sentinel (feedtrim.lua; on a cluster the relay
 * trims, redis_relay.c). */
#include <stdlib.h>
#include "log.h"
#include "redis_conn_internal.h"
#include "store_redis_internal.h"
#include "util.h"

#define SWEEP_IDLE_MS 1000    /* worker 0 asks for due slots at least this often (a hold lasts >= 1 s) */
#define FEEDTRIM_EVERY_MS 300 /* worker 0 trims the feed this often (not on a cluster) */
#define FEEDTRIM_IDLE_MS 1000 /* and this often after a trim that removed nothing */
#define REINDEX_PER_TICK 200  /* slots read per 100 ms by the reindex at start */

static void sweep_send(worker_t *w, cmd_t *cmd)
{
    if (sk_store_redis_cmd_send(cmd) == 0)
        w->reaping++;
    else
        free(cmd);
}

static void reap_slot(worker_t *w, int slot, long long ver)
{
    cmd_t *cmd = sk_store_redis_cmd_new(w, C_REAP, S_REAP);
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
    cmd_t *cmd = sk_store_redis_cmd_new(w, C_DUE_SET, S_DUE_SET);
    cmd->slot = w->r->idx_slot;
    cmd->sslot = done->sslot;
    cmd->ver = done->ver;
    cmd->next = next < 0 ? -1 : next;
    sweep_send(w, cmd);
}

/* The reindex at start (worker 0): SMEMBERS of the slots in use, then, REINDEX_PER_TICK slots per
 * tick, each slot's earliest deadline (ZRANGE of its sweep list) into the index. */
static void reindex_tick(worker_t *w)
{
    if (w->reindex == 0) {
        cmd_t *cmd = sk_store_redis_cmd_new(w, C_REINDEX_SLOTS, -1);
        cmd->slot = w->r->idx_slot;
        cmd_plain(cmd, "SMEMBERS", IDX_SLOTS, NULL);
        if (sk_store_redis_cmd_send(cmd) == 0)
            w->reindex = 1;
        else
            free(cmd);
        return;
    }
    if (w->reindex != 2 || w->reindex_out > 0)
        return;
    for (size_t k = 0; k < REINDEX_PER_TICK && w->reindex_next < w->nreindex; k++) {
        cmd_t *cmd = sk_store_redis_cmd_new(w, C_REINDEX_SLOT, -1);
        cmd->slot = cmd->sslot = w->reindex_slots[w->reindex_next];
        slot_key(cmd->key, sizeof(cmd->key), cmd->slot, SLOT_DUE);
        if (sk_store_redis_cmd_send(cmd) != 0) {
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
        sk_store_redis_relay_mark(w, w->reindex_slots[i]);
    w->reindex = 2;
}

static void reindex_slot_done(worker_t *w, cmd_t *cmd, redisReply *rep)
{
    w->reindex_out--;
    if (rep != NULL && rep->type == REDIS_REPLY_ARRAY && rep->elements == 2 &&
        rep->element[1]->type == REDIS_REPLY_STRING) {
        long long at = strtoll(rep->element[1]->str, NULL, 10);
        if (at > 0)
            sk_store_redis_due_add(w, cmd->sslot, at);
    }
}

/* Worker 0's turn of every tick: the reindex until it is done, the next ask for due slots when it
 * is time and none is out, and (not on a cluster, whose relay trims the merged feed) the feed's
 * retention every FEEDTRIM_EVERY_MS (FEEDTRIM_IDLE_MS once it found nothing to trim). */
void sk_store_redis_sweep_tick(worker_t *w, int64_t now)
{
    if (w->reindex < 3 && sk_store_redis_index_ready(w))
        reindex_tick(w);
    if (w->reaping == 0 && now >= w->next_reap && sk_store_redis_index_ready(w)) {
        cmd_t *cmd = sk_store_redis_cmd_new(w, C_DUE_GET, S_DUE_GET);
        cmd->slot = w->r->idx_slot;
        w->next_reap = now + SWEEP_IDLE_MS; /* until its answer says when */
        sweep_send(w, cmd);
    }
    if (w->r->cl == NULL && w->trimming == 0 && now >= w->next_trim) {
        cmd_t *cmd = sk_store_redis_cmd_new(w, C_FEEDTRIM, S_FEEDTRIM);
        cmd->slot = w->r->feed_slot;
        w->next_trim = now + FEEDTRIM_EVERY_MS;
        if (sk_store_redis_cmd_send(cmd) == 0)
            w->trimming++;
        else
            free(cmd);
    }
}

/* The reply of a sweep, reindex or retention command (NULL: the connection went first); on_cmd
 * frees cmd. */
void sk_store_redis_sweep_done(worker_t *w, cmd_t *cmd, redisReply *rep)
{
    switch (cmd->type) {
    case C_DUE_GET:
        due_get_done(w, rep);
        break;
    case C_REAP:
        reap_done(w, cmd, rep);
        break;
    case C_DUE_SET:
        w->reaping--;
        break;
    case C_REINDEX_SLOTS:
        reindex_slots_done(w, rep);
        break;
    case C_REINDEX_SLOT:
        reindex_slot_done(w, cmd, rep);
        break;
    case C_FEEDTRIM: { /* a storm past the retention: keep at it while there is more */
        w->trimming--;
        if (rep != NULL && rep->type == REDIS_REPLY_INTEGER && rep->integer == 0)
            w->next_trim = sk_mono_ms() + FEEDTRIM_IDLE_MS; /* nothing to trim: an idle feed costs less */
        if (rep != NULL && rep->type == REDIS_REPLY_INTEGER && rep->integer >= 1000) {
            cmd_t *more = sk_store_redis_cmd_new(w, C_FEEDTRIM, S_FEEDTRIM);
            more->slot = cmd->slot;
            if (sk_store_redis_cmd_send(more) == 0)
                w->trimming++;
            else
                free(more);
        }
        break;
    }
    default:
        break;
    }
}
