/* redis_relay.c: the Redis store's relay of the slots' feed streams into one merged feed, on a
 * Redis Cluster (store_redis_internal.h; docs/redis.md, "The winners feed on a Redis Cluster").
 *
 * A cluster's scripts touch one slot each, so a script writes its events to its slot's own feed
 * stream (SLOT_FEED), and the relay copies them into the merged feed CL_FEED_KEY that readers
 * read. Every script that may write a slot's feed stream is followed, from the worker that sent
 * it, by a mark of that slot in sk:{feed}:dirty (relay_mark.lua: a version never given before;
 * store_redis.c's on_cmd marks). Worker 0 of every instance reads the marks (every RELAY_IDLE_MS
 * while there are none, at once after a round that had some), and for each marked slot reads its
 * stream after the slot's position and copies the entries with relay.lua, which lands them only
 * if the position is still the stored one and clears the mark only if its version is still the
 * one read: a mark set after the read stays for the next round, and the entry it stands for was
 * written before it. docs/redis.md has the argument. Idle, this costs one HGETALL per
 * RELAY_IDLE_MS, whatever the number of sales. */
#include <stdlib.h>
#include <string.h>
#include "log.h"
#include "metrics.h"
#include "redis_conn_internal.h"
#include "store_redis_internal.h"
#include "util.h"

#define RELAY_IDLE_MS 200 /* it reads the marks this often while a round finds none */
#define RELAY_BUSY_MS 20  /* ... but this often for RELAY_TAIL_MS after a round that had some */
#define RELAY_TAIL_MS 300 /* (a storm's last marks may still be on their way) */
#define RELAY_PAR 16      /* slots relayed at once */
#define RELAY_TRIES 8     /* copies of a slot refused (another relay moved on) per round */
/* a slot stream keeps its copied entries this long (for a failover of the merged feed's master) */
#define RELAY_SLOT_KEEP_MS 5000

/* Worker 0's relay on a Redis Cluster: rounds of (read the marks, relay each marked slot). */
struct relay_s {
    int polling;       /* the marks' read in flight */
    int64_t next_poll; /* mono ms */
    struct {
        int slot;
        long long ver;
    } * todo; /* the round's marked slots */
    size_t ntodo, next, cap;
    size_t out;      /* slots being relayed */
    int failed;      /* a command of the round failed: the next round waits RELAY_IDLE_MS */
    int behind;      /* a slot of the round ran out of tries (RELAY_TRIES): not relayed to its end */
    int64_t poll_at; /* mono ms the round's read of the marks was sent */
    struct {
        uint64_t hi, lo;
        int known;
        int64_t copied_at; /* mono ms of this relay's last copy into it */
    } pos[SK_REDIS_SLOTS]; /* each slot stream's position in sk:{feed}:pos, as last seen */
    int feed_lost;         /* the merged feed's master was unreachable: recheck once it is back */
    int64_t last_work;     /* mono ms of the last round that had marks */
    h2o_timeout_t t_busy;  /* RELAY_BUSY_MS: the next round soon after a busy one */
    h2o_timeout_entry_t e_busy;
    worker_t *w;
};

static void relay_run(worker_t *w);
static void relay_tick(worker_t *w);

static int bit_get(const uint8_t *b, int i)
{
    return (b[i >> 3] >> (i & 7)) & 1;
}

static void bit_set(uint8_t *b, int i)
{
    b[i >> 3] |= (uint8_t)(1u << (i & 7));
}

static void mark_again(worker_t *w, const cmd_t *cmd);

/* Sends the marks gathered (one relay_mark.lua call in flight per worker; what fails is kept for
 * the next tick). */
static void mark_flush(worker_t *w)
{
    if (w->marking || w->ndirty == 0 || w->closing)
        return;
    sk_buf_t b = {0};
    for (int i = 0; i < SK_REDIS_SLOTS; i++)
        if (bit_get(w->dirty, i)) {
            sk_buf_printf(&b, "%s%d", b.len > 0 ? " " : "", i);
            w->dirty[i >> 3] &= (uint8_t) ~(1u << (i & 7));
        }
    w->ndirty = 0;
    cmd_t *cmd = sk_store_redis_cmd_new(w, C_RELAY_MARK, S_RELAY_MARK);
    cmd->slot = w->r->feed_slot;
    cmd->blob = b.p;
    cmd->bloblen = b.len;
    if (sk_store_redis_cmd_send(cmd) != 0) {
        mark_again(w, cmd); /* the next tick */
        free(cmd->blob);
        free(cmd);
        return;
    }
    w->marking = 1;
}

/* The slots of a mark call that may not have run: marked again on the next tick. */
static void mark_again(worker_t *w, const cmd_t *cmd)
{
    const char *p = cmd->blob, *end = cmd->blob + cmd->bloblen;
    while (p != NULL && p < end) {
        int slot = atoi(p);
        if (slot >= 0 && slot < SK_REDIS_SLOTS && !bit_get(w->dirty, slot)) {
            bit_set(w->dirty, slot);
            w->ndirty++;
        }
        p = memchr(p, ' ', (size_t)(end - p));
        if (p != NULL)
            p++;
    }
}

/* A script that may have written the feed stream of `slot` has answered (any worker). */
void sk_store_redis_relay_mark(worker_t *w, int slot)
{
    if (slot < 0 || slot >= SK_REDIS_SLOTS)
        return;
    if (!bit_get(w->dirty, slot)) {
        bit_set(w->dirty, slot);
        w->ndirty++;
    }
    mark_flush(w);
}

static void mark_done(worker_t *w, cmd_t *cmd, redisReply *rep)
{
    w->marking = 0;
    if (rep == NULL || rep->type != REDIS_REPLY_INTEGER) { /* it may have run: marking again is harmless */
        mark_again(w, cmd);
        return; /* again on the next tick */
    }
    mark_flush(w);
}

/* MessagePack (as Redis's cmsgpack reads it): an array header, a string. */
static void mp_head(sk_buf_t *b, size_t n, unsigned char fix, unsigned char b16, unsigned char b32)
{
    unsigned char h[5];
    size_t len;
    if (fix != 0 && n < (fix == 0x90 ? 16u : 32u)) {
        h[0] = (unsigned char)(fix | n);
        len = 1;
    } else if (n < 65536) {
        h[0] = b16;
        h[1] = (unsigned char)(n >> 8);
        h[2] = (unsigned char)n;
        len = 3;
    } else {
        h[0] = b32;
        h[1] = (unsigned char)(n >> 24);
        h[2] = (unsigned char)(n >> 16);
        h[3] = (unsigned char)(n >> 8);
        h[4] = (unsigned char)n;
        len = 5;
    }
    sk_buf_append(b, (const char *)h, len);
}

static void mp_str(sk_buf_t *b, const char *s, size_t n)
{
    mp_head(b, n, 0xa0, 0xda, 0xdb);
    sk_buf_append(b, s, n);
}

/* XRANGE's reply from its element `from` on as relay.lua's argument: an array of {id, field,
 * value, ...}. -1 when it is not a stream's range. */
static int relay_pack(const redisReply *rep, size_t from, sk_buf_t *b)
{
    mp_head(b, rep->elements - from, 0x90, 0xdc, 0xdd);
    for (size_t i = from; i < rep->elements; i++) {
        const redisReply *e = rep->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 || e->element[0]->type != REDIS_REPLY_STRING ||
            e->element[1]->type != REDIS_REPLY_ARRAY)
            return -1;
        const redisReply *f = e->element[1];
        mp_head(b, f->elements + 1, 0x90, 0xdc, 0xdd);
        mp_str(b, e->element[0]->str, e->element[0]->len);
        for (size_t k = 0; k < f->elements; k++) {
            if (f->element[k]->type != REDIS_REPLY_STRING)
                return -1;
            mp_str(b, f->element[k]->str, f->element[k]->len);
        }
    }
    return 0;
}

static void relay_end_job(worker_t *w, int failed)
{
    relay_t *rl = w->relay;
    rl->out--;
    if (failed) {
        rl->failed = 1;
        sk_metrics_relay_step(SK_RELAY_FAILED, 0);
    }
    relay_run(w);
}

/* The slot stream's key and position into a relay command. */
static cmd_t *relay_cmd(worker_t *w, cmd_type_t type, int script, int slot, long long ver, int tries)
{
    cmd_t *cmd = sk_store_redis_cmd_new(w, type, script);
    cmd->sslot = slot;
    cmd->ver = ver;
    cmd->tries = tries;
    slot_key(cmd->key, sizeof(cmd->key), slot, SLOT_FEED);
    snprintf(cmd->pos, sizeof(cmd->pos), "%llu-%llu", (unsigned long long)w->relay->pos[slot].hi,
             (unsigned long long)w->relay->pos[slot].lo);
    return cmd;
}

static int relay_send(cmd_t *cmd)
{
    if (sk_store_redis_cmd_send(cmd) == 0)
        return 0;
    free(cmd->blob);
    free(cmd);
    return -1;
}

/* Sends a copy whose turn has come (after its WAIT, if any); the job ends failed if it cannot go
 * out, or (go == 0) is not to go: the mark stays, and the next round copies it again. */
static void relay_send_copy(worker_t *w, cmd_t *copy, int go)
{
    if (!go) {
        free(copy->blob);
        free(copy);
        relay_end_job(w, 1);
    } else if (relay_send(copy) != 0) {
        relay_end_job(w, 1);
    }
}

/* Reads a slot's stream after its position (asks for the position first when it is not known). */
static void relay_read(worker_t *w, int slot, long long ver, int tries)
{
    relay_t *rl = w->relay;
    cmd_t *cmd;
    if (!rl->pos[slot].known) {
        char stream[64];
        cmd = relay_cmd(w, C_RELAY_POS, -1, slot, ver, tries);
        cmd->slot = w->r->feed_slot;
        slot_key(stream, sizeof(stream), slot, SLOT_FEED);
        cmd_plain(cmd, "HGET", CL_FEED_POS_KEY, stream);
    } else {
        cmd = relay_cmd(w, C_RELAY_READ, -1, slot, ver, tries);
        cmd->slot = slot;
    }
    if (relay_send(cmd) != 0)
        relay_end_job(w, 1);
}

static void relay_pos_done(worker_t *w, cmd_t *cmd, redisReply *rep)
{
    relay_t *rl = w->relay;
    sk_cursor_t c = {0, 0};
    if (rep == NULL || (rep->type != REDIS_REPLY_NIL && rep->type != REDIS_REPLY_STRING) ||
        (rep->type == REDIS_REPLY_STRING && sk_store_redis_parse_cursor(rep->str, rep->len, &c) != 0)) {
        relay_end_job(w, 1);
        return;
    }
    rl->pos[cmd->sslot].hi = c.hi;
    rl->pos[cmd->sslot].lo = c.lo;
    rl->pos[cmd->sslot].known = 1;
    relay_read(w, cmd->sslot, cmd->ver, cmd->tries);
}

/* The slot stream from its position on: the entry at the position itself comes first (and is not
 * copied again), unless it has gone. The relay's own trim keeps it (RELAY_SLOT_KEEP_MS before the
 * newest position), so it has gone only when the stream was capped (common.lua's FEED_SLOT_KEEP:
 * the relay fell that far behind) or its master failed over without it: entries may have been
 * lost, which the copy's answer logs when the position was the stored one. */
static void relay_read_done(worker_t *w, cmd_t *cmd, redisReply *rep)
{
    sk_buf_t b = {0};
    size_t from = 0;
    int none = strcmp(cmd->pos, "0-0") == 0, gap = 0;
    if (rep == NULL || rep->type != REDIS_REPLY_ARRAY) {
        relay_end_job(w, 1);
        return;
    }
    if (!none && rep->elements > 0) {
        const redisReply *e = rep->element[0];
        if (e->type == REDIS_REPLY_ARRAY && e->elements == 2 && e->element[0]->type == REDIS_REPLY_STRING &&
            e->element[0]->len == strlen(cmd->pos) && memcmp(e->element[0]->str, cmd->pos, e->element[0]->len) == 0)
            from = 1;
        else
            gap = 1;
    }
    if (relay_pack(rep, from, &b) != 0) {
        sk_buf_dispose(&b);
        relay_end_job(w, 1);
        return;
    }
    cmd_t *copy = relay_cmd(w, C_RELAY_COPY, S_RELAY, cmd->sslot, cmd->ver, cmd->tries);
    copy->slot = w->r->feed_slot;
    snprintf(copy->pos, sizeof(copy->pos), "%s", cmd->pos); /* what was read after */
    copy->at_end = rep->elements - from < RELAY_BATCH;
    copy->blob = b.p;
    copy->bloblen = b.len;
    copy->nreqs = rep->elements - from; /* how many entries */
    copy->gap = gap;
    if (w->r->conf.min_replicas > 0 && copy->nreqs > 0) {
        /* --redis-min-replicas: nothing is copied that a failover of the slot's master could
         * still lose with its order. A write after the read, on the same connection, then WAIT:
         * once the replicas have that write they have every entry read before it. */
        cmd_t *sync = relay_cmd(w, C_RELAY_SYNC, -1, cmd->sslot, 0, 0), *wait;
        char key[64];
        sync->slot = cmd->sslot;
        sync->via = cmd->super.conn;
        slot_key(key, sizeof(key), cmd->sslot, SLOT_RELAYED);
        cmd_plain(sync, "SET", key, cmd->pos);
        if (relay_send(sync) != 0) {
            relay_send_copy(w, copy, 0);
            return;
        }
        wait = relay_cmd(w, C_RELAY_WAIT, -1, cmd->sslot, 0, 0);
        wait->via = cmd->super.conn;
        wait->then = copy;
        if (relay_send(wait) != 0)
            relay_send_copy(w, copy, 0);
        return;
    }
    relay_send_copy(w, copy, 1);
}

static void relay_wait_done(worker_t *w, cmd_t *cmd, redisReply *rep)
{
    cmd_t *copy = cmd->then;
    cmd->then = NULL;
    /* not on enough replicas yet: not copied, the mark stays */
    relay_send_copy(w, copy, sk_redis_conn_waited(cmd->super.conn, rep));
}

static void relay_copy_done(worker_t *w, cmd_t *cmd, redisReply *rep)
{
    relay_t *rl = w->relay;
    long long code;
    const char *s;
    size_t len;
    sk_cursor_t c;
    int slot = cmd->sslot;
    if (reply_code(rep, &code) != 0 || (code != RC_OK && code != RC_REPLAY) || el_str(rep, 1, &s, &len) != 0 ||
        sk_store_redis_parse_cursor(s, len, &c) != 0) {
        if (rep != NULL && rep->type == REDIS_REPLY_ERROR)
            sk_log(SK_LOG_WARN, "event=feed_relay_error slot=%d error=\"%.*s\"", slot, (int)rep->len, rep->str);
        rl->pos[slot].known = 0;
        relay_end_job(w, 1);
        return;
    }
    sk_metrics_relay_step(code == RC_OK ? SK_RELAY_COPIED : SK_RELAY_RACED, cmd->nreqs);
    if (code == RC_OK && cmd->gap) { /* the position was the stored one: what followed it may be lost */
        sk_log(SK_LOG_WARN, "event=feed_relay_gap slot=%d after=%s copied_to=%.*s", slot, cmd->pos, (int)len, s);
        sk_metrics_relay_gap();
    }
    rl->pos[slot].hi = c.hi;
    rl->pos[slot].lo = c.lo;
    rl->pos[slot].known = 1;
    if (code == RC_OK && cmd->nreqs > 0)
        rl->pos[slot].copied_at = sk_mono_ms();
    if (code == RC_OK && cmd->nreqs > 0 && c.hi > RELAY_SLOT_KEEP_MS) {
        /* what was copied a while ago leaves the slot stream (failing is harmless: the next does it) */
        cmd_t *trim = relay_cmd(w, C_RELAY_TRIM, -1, slot, 0, 0);
        trim->slot = slot;
        snprintf(trim->val, sizeof(trim->val), "%llu-0", (unsigned long long)(c.hi - RELAY_SLOT_KEEP_MS));
        relay_send(trim);
    }
    if (code == RC_REPLAY) { /* another relay moved on (or this one was behind): read after the stored one */
        if (cmd->tries + 1 >= RELAY_TRIES) {
            rl->behind = 1;
            relay_end_job(w, 0); /* the mark stays: the next round */
            return;
        }
        relay_read(w, slot, cmd->ver, cmd->tries + 1);
        return;
    }
    if (!cmd->at_end) {
        relay_read(w, slot, cmd->ver, cmd->tries);
        return;
    }
    relay_end_job(w, 0);
}

/* Starts the round's next slots, at most RELAY_PAR at once; at its end the next round is asked
 * for at once if this one had marks and no failure. A round that relayed every slot marked when
 * it read the marks to its stream's end (none failed or ran out of tries) is complete: every
 * entry marked before that read is in the merged feed (copied by this relay or another), which
 * the lag gauge of /metrics counts from (sk_metrics_relay_complete). */
static void relay_run(worker_t *w)
{
    relay_t *rl = w->relay;
    while (!w->closing && rl->out < RELAY_PAR && rl->next < rl->ntodo) {
        size_t k = rl->next++;
        rl->out++;
        relay_read(w, rl->todo[k].slot, rl->todo[k].ver, 0);
    }
    if (rl->out > 0 || rl->next < rl->ntodo)
        return;
    int64_t now = sk_mono_ms();
    if (!rl->failed && !rl->behind)
        sk_metrics_relay_complete(rl->poll_at);
    if (rl->ntodo > 0 && !rl->failed) {
        rl->last_work = now;
        rl->next_poll = now;
    } else if (!rl->failed && !w->closing && now - rl->last_work < RELAY_TAIL_MS) {
        /* a storm's last marks may be on their way: look again soon rather than at the next idle
         * read (a follower's lag at the end of a storm) */
        rl->next_poll = now + RELAY_BUSY_MS;
        if (!h2o_timeout_is_linked(&rl->e_busy))
            h2o_timeout_link(w->loop, &rl->t_busy, &rl->e_busy);
    } else {
        rl->next_poll = now + RELAY_IDLE_MS;
    }
    rl->ntodo = rl->next = 0;
    rl->failed = rl->behind = 0;
    relay_tick(w);
}

static void on_relay_busy(h2o_timeout_entry_t *e)
{
    relay_t *rl = SK_CONTAINER_OF(e, relay_t, e_busy);
    relay_tick(rl->w);
}

static void relay_poll_done(worker_t *w, redisReply *rep)
{
    relay_t *rl = w->relay;
    long v;
    rl->polling = 0;
    if (rep == NULL || rep->type != REDIS_REPLY_ARRAY) {
        rl->next_poll = sk_mono_ms() + RELAY_IDLE_MS;
        return;
    }
    if (rl->cap < rep->elements / 2) {
        rl->cap = rep->elements / 2;
        rl->todo = sk_realloc(rl->todo, rl->cap * sizeof(*rl->todo));
    }
    rl->ntodo = rl->next = 0;
    for (size_t i = 0; i + 1 < rep->elements; i += 2) {
        const redisReply *k = rep->element[i], *x = rep->element[i + 1];
        if (k->type == REDIS_REPLY_STRING && x->type == REDIS_REPLY_STRING &&
            sk_redis_parse_number(k->str, k->str + k->len, SK_REDIS_SLOTS - 1, &v) == 0) {
            rl->todo[rl->ntodo].slot = (int)v;
            rl->todo[rl->ntodo++].ver = strtoll(x->str, NULL, 10);
        }
    }
    relay_run(w);
}

/* The merged feed's master back after it was out of reach (a failover may have lost its last
 * copies, positions and marks together): the slots this relay copied into lately are marked
 * again, while their streams still hold what was copied (RELAY_SLOT_KEEP_MS), and every position
 * is read again. */
static void relay_recheck(worker_t *w)
{
    relay_t *rl = w->relay;
    int64_t since = sk_mono_ms() - RELAY_SLOT_KEEP_MS;
    int n = 0;
    for (int i = 0; i < SK_REDIS_SLOTS; i++) {
        rl->pos[i].known = 0;
        if (rl->pos[i].copied_at != 0 && rl->pos[i].copied_at >= since) {
            sk_store_redis_relay_mark(w, i);
            n++;
        }
    }
    if (n > 0)
        sk_log(SK_LOG_INFO, "event=feed_relay_recheck slots=%d", n);
}

/* The start of a round, when its time has come and none is running. */
static void relay_tick(worker_t *w)
{
    relay_t *rl = w->relay;
    if (rl == NULL || w->closing)
        return;
    if (!sk_store_redis_route_up(w, w->r->feed_slot)) {
        rl->feed_lost = 1;
        return;
    }
    if (rl->feed_lost) {
        rl->feed_lost = 0;
        relay_recheck(w);
    }
    if (rl->polling || rl->out > 0 || rl->next < rl->ntodo || sk_mono_ms() + 1 < rl->next_poll)
        return;
    cmd_t *cmd = sk_store_redis_cmd_new(w, C_RELAY_POLL, -1);
    cmd->slot = w->r->feed_slot;
    cmd_plain(cmd, "HGETALL", CL_FEED_DIRTY_KEY, NULL);
    rl->poll_at = sk_mono_ms();
    rl->next_poll = rl->poll_at + RELAY_IDLE_MS;
    if (sk_store_redis_cmd_send(cmd) == 0)
        rl->polling = 1;
    else
        free(cmd);
}

/* Worker 0 on a cluster: its relay (see relay_t). */
void sk_store_redis_relay_open(worker_t *w)
{
    w->relay = sk_calloc(1, sizeof(*w->relay));
    w->relay->w = w;
    h2o_timeout_init(w->loop, &w->relay->t_busy, RELAY_BUSY_MS);
    w->relay->e_busy.cb = on_relay_busy;
    sk_metrics_relay_running(1, sk_mono_ms());
}

/* Frees the relay, if any; its commands were answered (the connections are gone). */
void sk_store_redis_relay_close(worker_t *w)
{
    if (w->relay != NULL) {
        sk_metrics_relay_running(0, 0);
        free(w->relay->todo);
        if (h2o_timeout_is_linked(&w->relay->e_busy))
            h2o_timeout_unlink(&w->relay->e_busy);
        h2o_timeout_dispose(w->loop, &w->relay->t_busy);
    }
    free(w->relay);
    w->relay = NULL;
}

/* Every tick of every worker on a cluster: the marks that failed, again; worker 0's next round. */
void sk_store_redis_relay_tick(worker_t *w)
{
    mark_flush(w);
    relay_tick(w);
}

/* The reply of a relay or mark command (NULL: the connection went first); on_cmd frees cmd. */
void sk_store_redis_relay_done(worker_t *w, cmd_t *cmd, redisReply *rep)
{
    switch (cmd->type) {
    case C_RELAY_MARK:
        mark_done(w, cmd, rep);
        break;
    case C_RELAY_POLL:
        relay_poll_done(w, rep);
        break;
    case C_RELAY_POS:
        relay_pos_done(w, cmd, rep);
        break;
    case C_RELAY_READ:
        relay_read_done(w, cmd, rep);
        break;
    case C_RELAY_COPY:
        relay_copy_done(w, cmd, rep);
        break;
    case C_RELAY_WAIT:
        relay_wait_done(w, cmd, rep);
        break;
    default: /* C_RELAY_TRIM, C_RELAY_SYNC: nothing to do */
        break;
    }
}
