/* redis_cluster.c: see redis_cluster.h.
 *
 * The map thread asks one node at a time (the masters of the last map first, then the URL's seeds)
 * for CLUSTER SLOTS over a blocking hiredis connection with short timeouts, and publishes the map
 * under a mutex with a new version when it differs. It asks every MAP_EVERY_MS, and at once (but
 * not more often than every MAP_MIN_MS) when a worker asks for it. Workers read the version with
 * one atomic load per command and copy the map when it moved. */
#include "redis_cluster.h"
#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "log.h"
#include "util.h"

#define MAP_EVERY_MS 5000 /* the map is asked for this often */
#define MAP_MIN_MS 100    /* and never more often than this */
#define MAP_IO_MS 500     /* a node's connect and reply timeouts */

/* ---- slots ---- */

uint16_t sk_redis_crc16(const char *p, size_t n)
{
    uint16_t crc = 0;
    for (size_t i = 0; i < n; i++) {
        crc ^= (uint16_t)((uint8_t)p[i] << 8);
        for (int b = 0; b < 8; b++)
            crc = (crc & 0x8000) ? (uint16_t)((crc << 1) ^ 0x1021) : (uint16_t)(crc << 1);
    }
    return crc;
}

int sk_redis_key_slot(const char *key, size_t n)
{
    const char *open = memchr(key, '{', n);
    if (open != NULL) {
        const char *close = memchr(open + 1, '}', n - (size_t)(open + 1 - key));
        if (close != NULL && close > open + 1)
            return sk_redis_crc16(open + 1, (size_t)(close - open - 1)) & (SK_REDIS_SLOTS - 1);
    }
    return sk_redis_crc16(key, n) & (SK_REDIS_SLOTS - 1);
}

int sk_redis_sale_slot(const char *sale, size_t n)
{
    return sk_redis_crc16(sale, n) & (SK_REDIS_SLOTS - 1);
}

static char tags[SK_REDIS_SLOTS][SK_REDIS_TAG_MAX];
static pthread_once_t tags_once = PTHREAD_ONCE_INIT;

static void tags_make(void)
{
    int left = SK_REDIS_SLOTS;
    for (unsigned v = 0; left > 0 && v < 10000000; v++) {
        char t[SK_REDIS_TAG_MAX];
        int n = snprintf(t, sizeof(t), "%u", v);
        int s = sk_redis_crc16(t, (size_t)n) & (SK_REDIS_SLOTS - 1);
        if (tags[s][0] == '\0') {
            memcpy(tags[s], t, (size_t)n + 1);
            left--;
        }
    }
}

const char *sk_redis_slot_tag(int slot)
{
    pthread_once(&tags_once, tags_make);
    return tags[slot & (SK_REDIS_SLOTS - 1)];
}

/* ---- replies ---- */

int sk_redis_map_parse(sk_redis_map_t *map, const void *reply, const char *asked_host)
{
    const redisReply *r = reply;
    int covered = 0;
    map->nnodes = 0;
    memset(map->slot_node, 0xff, sizeof(map->slot_node));
    if (r == NULL || r->type != REDIS_REPLY_ARRAY)
        return -1;
    for (size_t i = 0; i < r->elements; i++) {
        const redisReply *e = r->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements < 3 || e->element[0]->type != REDIS_REPLY_INTEGER ||
            e->element[1]->type != REDIS_REPLY_INTEGER || e->element[2]->type != REDIS_REPLY_ARRAY)
            return -1;
        long long lo = e->element[0]->integer, hi = e->element[1]->integer;
        const redisReply *m = e->element[2];
        if (lo < 0 || hi >= SK_REDIS_SLOTS || lo > hi || m->elements < 2 || m->element[0]->type != REDIS_REPLY_STRING ||
            m->element[1]->type != REDIS_REPLY_INTEGER || m->element[1]->integer <= 0 || m->element[1]->integer > 65535)
            return -1;
        /* an empty or unknown endpoint ("" or "?") means the node we asked */
        const char *host =
            m->element[0]->len == 0 || strcmp(m->element[0]->str, "?") == 0 ? asked_host : m->element[0]->str;
        int port = (int)m->element[1]->integer, k;
        if (strlen(host) >= sizeof(map->nodes[0].host))
            return -1;
        for (k = 0; k < map->nnodes; k++)
            if (map->nodes[k].port == port && strcmp(map->nodes[k].host, host) == 0)
                break;
        if (k == map->nnodes) {
            if (map->nnodes == SK_REDIS_NODES_MAX)
                return -1;
            snprintf(map->nodes[k].host, sizeof(map->nodes[k].host), "%s", host);
            map->nodes[k].port = port;
            map->nnodes++;
        }
        for (long long s = lo; s <= hi; s++) {
            if (map->slot_node[s] == 0xff)
                covered++;
            map->slot_node[s] = (uint8_t)k;
        }
    }
    map->complete = covered == SK_REDIS_SLOTS;
    return 0;
}

int sk_redis_redirect_parse(const char *err, int *slot, char *host, size_t hostlen, int *port)
{
    int kind;
    const char *p;
    if (strncmp(err, "MOVED ", 6) == 0) {
        kind = 1;
        p = err + 6;
    } else if (strncmp(err, "ASK ", 4) == 0) {
        kind = 2;
        p = err + 4;
    } else {
        return 0;
    }
    char *end;
    long s = strtol(p, &end, 10);
    if (end == p || *end != ' ' || s < 0 || s >= SK_REDIS_SLOTS)
        return 0;
    p = end + 1;
    const char *colon = strrchr(p, ':');
    if (colon == NULL || colon == p || (size_t)(colon - p) >= hostlen)
        return 0;
    long v = strtol(colon + 1, &end, 10);
    if (end == colon + 1 || *end != '\0' || v <= 0 || v > 65535)
        return 0;
    memcpy(host, p, (size_t)(colon - p));
    host[colon - p] = '\0';
    *slot = (int)s;
    *port = (int)v;
    return kind;
}

int sk_redis_script_migrating(const char *err)
{
    return err != NULL && (strstr(err, "attempted to access a non local key in a cluster node") != NULL ||
                           strstr(err, "undeclared keys were accessed during rehashing of the slot") != NULL);
}

/* ---- the map thread ---- */

struct sk_redis_cluster_s {
    const sk_redis_conf_t *conf;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop;                 /* guarded by mu */
    int asked;                /* guarded by mu: a worker wants a new map */
    _Atomic unsigned version; /* of map */
    _Atomic int complete;
    sk_redis_map_t map; /* guarded by mu */
    int logged_incomplete;
};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* CLUSTER SLOTS from one node into *m: 0, or -1. */
static int ask_node(const sk_redis_conf_t *conf, const char *host, int port, sk_redis_map_t *m)
{
    struct timeval tv = {0, MAP_IO_MS * 1000};
    redisContext *c = redisConnectWithTimeout(host, port, tv);
    redisReply *r = NULL;
    int rc = -1;
    if (c == NULL || c->err)
        goto out;
    redisSetTimeout(c, tv);
    if (conf->password != NULL) {
        r = conf->user ? redisCommand(c, "AUTH %s %s", conf->user, conf->password)
                       : redisCommand(c, "AUTH %s", conf->password);
        if (r == NULL || r->type == REDIS_REPLY_ERROR)
            goto out;
        freeReplyObject(r);
    }
    r = redisCommand(c, "CLUSTER SLOTS");
    rc = sk_redis_map_parse(m, r, host);
out:
    if (r != NULL)
        freeReplyObject(r);
    if (c != NULL)
        redisFree(c);
    return rc;
}

static void fetch(sk_redis_cluster_t *cl)
{
    sk_redis_map_t *m = sk_malloc(sizeof(*m));
    sk_redis_node_addr_t known[SK_REDIS_NODES_MAX + SK_REDIS_SEEDS_MAX];
    int nknown = 0, ok = 0;
    pthread_mutex_lock(&cl->mu);
    for (int i = 0; i < cl->map.nnodes; i++)
        known[nknown++] = cl->map.nodes[i];
    pthread_mutex_unlock(&cl->mu);
    for (int i = 0; i < cl->conf->nseeds; i++) {
        snprintf(known[nknown].host, sizeof(known[nknown].host), "%s", cl->conf->seeds[i].host);
        known[nknown++].port = cl->conf->seeds[i].port;
    }
    /* the first complete answer wins; an incomplete one only when nobody gives a complete one */
    sk_redis_map_t *best = NULL;
    for (int i = 0; i < nknown && !ok; i++) {
        if (ask_node(cl->conf, known[i].host, known[i].port, m) != 0)
            continue;
        if (m->complete) {
            ok = 1;
            best = m;
        } else if (best == NULL) {
            best = sk_malloc(sizeof(*best));
            *best = *m;
        }
    }
    if (best != NULL) {
        pthread_mutex_lock(&cl->mu);
        int same = cl->map.nnodes == best->nnodes &&
                   memcmp(cl->map.nodes, best->nodes, sizeof(best->nodes[0]) * (size_t)best->nnodes) == 0 &&
                   memcmp(cl->map.slot_node, best->slot_node, sizeof(best->slot_node)) == 0 &&
                   cl->map.complete == best->complete;
        if (!same) {
            unsigned v = cl->map.version + 1;
            cl->map = *best;
            cl->map.version = v;
            atomic_store(&cl->version, v);
            sk_log(SK_LOG_INFO, "event=redis_cluster_map version=%u masters=%d complete=%d", v, best->nnodes,
                   best->complete);
        }
        atomic_store(&cl->complete, best->complete);
        pthread_mutex_unlock(&cl->mu);
        if (best->complete)
            cl->logged_incomplete = 0;
    }
    if ((best == NULL || !best->complete) && !cl->logged_incomplete) {
        cl->logged_incomplete = 1;
        atomic_store(&cl->complete, 0);
        sk_log(SK_LOG_WARN, "event=redis_cluster_incomplete nodes_asked=%d answered=%d", nknown, best != NULL);
    }
    if (best != m)
        free(best);
    free(m);
}

static void *map_main(void *arg)
{
    sk_redis_cluster_t *cl = arg;
    int64_t last = mono_ms(); /* sk_redis_cluster_start fetched the first map */
    pthread_mutex_lock(&cl->mu);
    while (!cl->stop) {
        int64_t now = mono_ms();
        int due = now - last >= MAP_EVERY_MS || (cl->asked && now - last >= MAP_MIN_MS);
        if (due) {
            cl->asked = 0;
            pthread_mutex_unlock(&cl->mu);
            fetch(cl);
            last = mono_ms();
            pthread_mutex_lock(&cl->mu);
            /* an incomplete map is asked for again soon */
            if (!atomic_load(&cl->complete))
                cl->asked = 1;
            continue;
        }
        int64_t wait = cl->asked ? MAP_MIN_MS - (now - last) : MAP_EVERY_MS - (now - last);
        struct timespec ts; /* cv waits on the monotonic clock (sk_redis_cluster_start) */
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_sec += wait / 1000;
        ts.tv_nsec += (wait % 1000) * 1000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&cl->cv, &cl->mu, &ts);
    }
    pthread_mutex_unlock(&cl->mu);
    return NULL;
}

sk_redis_cluster_t *sk_redis_cluster_start(const sk_redis_conf_t *conf)
{
    sk_redis_cluster_t *cl = sk_calloc(1, sizeof(*cl));
    cl->conf = conf;
    memset(cl->map.slot_node, 0xff, sizeof(cl->map.slot_node));
    atomic_init(&cl->version, 0);
    atomic_init(&cl->complete, 0);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* a wall clock that steps moves no wait */
    pthread_mutex_init(&cl->mu, NULL);
    pthread_cond_init(&cl->cv, &ca);
    pthread_condattr_destroy(&ca);
    sk_redis_slot_tag(0); /* the tags, before any worker needs them */
    fetch(cl);            /* the first map before the workers start: their first commands need it */
    cl->asked = !atomic_load(&cl->complete);
    if (pthread_create(&cl->thread, NULL, map_main, cl) != 0) {
        pthread_mutex_destroy(&cl->mu);
        pthread_cond_destroy(&cl->cv);
        free(cl);
        return NULL;
    }
    return cl;
}

void sk_redis_cluster_stop(sk_redis_cluster_t *cl)
{
    if (cl == NULL)
        return;
    pthread_mutex_lock(&cl->mu);
    cl->stop = 1;
    pthread_cond_signal(&cl->cv);
    pthread_mutex_unlock(&cl->mu);
    pthread_join(cl->thread, NULL);
    pthread_mutex_destroy(&cl->mu);
    pthread_cond_destroy(&cl->cv);
    free(cl);
}

void sk_redis_cluster_refresh(sk_redis_cluster_t *cl)
{
    pthread_mutex_lock(&cl->mu); /* held only to copy or publish a map, never over the network */
    if (!cl->asked) {
        cl->asked = 1;
        pthread_cond_signal(&cl->cv);
    }
    pthread_mutex_unlock(&cl->mu);
}

unsigned sk_redis_cluster_version(sk_redis_cluster_t *cl)
{
    return atomic_load_explicit(&cl->version, memory_order_acquire);
}

int sk_redis_cluster_complete(sk_redis_cluster_t *cl)
{
    return atomic_load(&cl->complete);
}

void sk_redis_cluster_copy(sk_redis_cluster_t *cl, sk_redis_map_t *out)
{
    pthread_mutex_lock(&cl->mu);
    *out = cl->map;
    pthread_mutex_unlock(&cl->mu);
}

/* ---- the layout before issue 16 ---- */

/* Runs the appended commands' replies off c; -1 on a lost connection or an error reply. */
static int drain(redisContext *c, int n)
{
    int rc = 0;
    for (int i = 0; i < n; i++) {
        redisReply *r = NULL;
        if (redisGetReply(c, (void **)&r) != REDIS_OK)
            return -1;
        if (r->type == REDIS_REPLY_ERROR)
            rc = -1;
        freeReplyObject(r);
    }
    return rc;
}

int sk_redis_layout_migrate(void *ctx)
{
    redisContext *c = ctx;
    redisReply *sales = NULL, *holding = NULL, *tomb = NULL, *r;
    int rc = -1, n = 0;
    char slot[16];
    if ((r = redisCommand(c, "EXISTS sk:sales sk:holding sk:tombstones")) == NULL)
        return -1;
    long long old = r->type == REDIS_REPLY_INTEGER ? r->integer : -1;
    freeReplyObject(r);
    if (old <= 0)
        return old == 0 ? 0 : -1;
    sales = redisCommand(c, "SMEMBERS sk:sales");
    holding = redisCommand(c, "SMEMBERS sk:holding");
    tomb = redisCommand(c, "HGETALL sk:tombstones");
    if (sales == NULL || holding == NULL || tomb == NULL || sales->type != REDIS_REPLY_ARRAY ||
        holding->type != REDIS_REPLY_ARRAY || tomb->type != REDIS_REPLY_ARRAY)
        goto out;
    for (size_t i = 0; i < sales->elements; i++) {
        const redisReply *e = sales->element[i];
        int s = sk_redis_sale_slot(e->str, e->len);
        snprintf(slot, sizeof(slot), "%d", s);
        redisAppendCommand(c, "SADD sk:idx:{i}:slots %s", slot);
        redisAppendCommand(c, "SADD sk:slot:{%s}:sales %b", sk_redis_slot_tag(s), e->str, e->len);
        if ((n += 2) >= 1000) {
            if (drain(c, n) != 0)
                goto out;
            n = 0;
        }
    }
    /* a held sale's earliest deadline into its slot's sweep list and the index (due_add.lua's
     * steps): ZRANGE first, one at a time */
    for (size_t i = 0; i < holding->elements; i++) {
        const redisReply *e = holding->element[i];
        int s = sk_redis_sale_slot(e->str, e->len);
        if (drain(c, n) != 0)
            goto out;
        n = 0;
        r = redisCommand(c, "ZRANGE sk:{%b}:holds 0 0 WITHSCORES", e->str, e->len);
        if (r == NULL)
            goto out;
        if (r->type == REDIS_REPLY_ARRAY && r->elements == 2 && r->element[1]->type == REDIS_REPLY_STRING) {
            snprintf(slot, sizeof(slot), "%d", s);
            redisAppendCommand(c, "ZADD sk:slot:{%s}:due LT %s %b", sk_redis_slot_tag(s), r->element[1]->str, e->str,
                               e->len);
            redisAppendCommand(c, "ZADD sk:idx:{i}:due LT %s %s", r->element[1]->str, slot);
            redisAppendCommand(c, "HINCRBY sk:idx:{i}:ver %s 1", slot);
            n += 3;
        }
        freeReplyObject(r);
    }
    /* tombstones: the larger last order id wins (a start that stopped half-way runs again) */
    for (size_t i = 0; i + 1 < tomb->elements; i += 2) {
        const redisReply *id = tomb->element[i], *last = tomb->element[i + 1];
        const char *tag = sk_redis_slot_tag(sk_redis_sale_slot(id->str, id->len));
        if (drain(c, n) != 0)
            goto out;
        n = 0;
        r = redisCommand(c, "HGET sk:slot:{%s}:tombstones %b", tag, id->str, id->len);
        if (r == NULL)
            goto out;
        if (r->type != REDIS_REPLY_STRING || strtoll(r->str, NULL, 10) < strtoll(last->str, NULL, 10)) {
            redisAppendCommand(c, "HSET sk:slot:{%s}:tombstones %b %b", tag, id->str, id->len, last->str, last->len);
            n++;
        }
        freeReplyObject(r);
    }
    if (drain(c, n) != 0)
        goto out;
    /* only now: a start that stops half-way finds the old keys again and goes on */
    if ((r = redisCommand(c, "DEL sk:sales sk:holding sk:tombstones")) == NULL)
        goto out;
    freeReplyObject(r);
    sk_log(SK_LOG_INFO, "event=redis_layout_migrated sales=%zu holding=%zu tombstones=%zu", sales->elements,
           holding->elements, tomb->elements / 2);
    rc = 1;
out:
    if (sales != NULL)
        freeReplyObject(sales);
    if (holding != NULL)
        freeReplyObject(holding);
    if (tomb != NULL)
        freeReplyObject(tomb);
    return rc;
}
