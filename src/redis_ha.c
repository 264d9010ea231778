/* redis_ha.c: see redis_ha.h.
 *
 * Which address the sentinels name. Every sentinel is asked at once; a sentinel's answer is the
 * address (get-master-addr-by-name, which during a failover already gives the promoted replica
 * once it is promoted), its config epoch for the master and the master's flags. The answers of
 * the highest config epoch decide: they must all name the same address, none of them may see the
 * master down (s_down, o_down) or in a failover (failover_in_progress, unless it
 * names the promoted replica already), and more than half of the configured sentinels must have
 * answered. So a sentinel that has not yet heard of a promotion (older epoch) is outvoted by the
 * one that made it, and an old master back on its address while its replica is being promoted is
 * never chosen: the leader's flags say failover_in_progress until the switch, and after it the
 * leader's newer epoch names the new master. */
#include "redis_ha.h"
#include <errno.h>
#include <hiredis/async.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "log.h"
#include "redis_adapter.h"
#include "redis_cluster.h"
#include "redis_conn_internal.h"
#include "store.h"
#include "util.h"

#define WATCH_RETRY_MS 500
#define WATCH_CHECK_MS 2000 /* the watch asks the sentinels where the master is this often */
#define WATCH_DISC_MS 1000  /* and waits this long for their answers */

/* ---- URLs ---- */

static int parse_userinfo(sk_redis_conf_t *conf, const char *p, const char *at)
{
    const char *colon = memchr(p, ':', (size_t)(at - p));
    if (colon != NULL) {
        if (colon > p && (conf->user = sk_redis_pct_decode(p, (size_t)(colon - p))) == NULL)
            return -1;
        if ((conf->password = sk_redis_pct_decode(colon + 1, (size_t)(at - colon - 1))) == NULL)
            return -1;
    } else if ((conf->password = sk_redis_pct_decode(p, (size_t)(at - p))) == NULL) {
        return -1;
    }
    if (conf->password != NULL && conf->password[0] == '\0') {
        free(conf->password);
        conf->password = NULL;
    }
    return 0;
}

/* HOST[:PORT] or [V6][:PORT] in [p, end) */
/* [[USER]:PASSWORD@] at *p, up to the last '@' before end (a password may hold one): parsed into
 * conf and skipped. 0, or -1 when it is malformed. */
static int skip_userinfo(sk_redis_conf_t *conf, const char **p, const char *end)
{
    const char *at = NULL;
    for (const char *q = *p; q < end; q++)
        if (*q == '@')
            at = q;
    if (at == NULL)
        return 0;
    if (parse_userinfo(conf, *p, at) != 0)
        return -1;
    *p = at + 1;
    return 0;
}

static int parse_hostport(const char *p, const char *end, int defport, sk_redis_addr_t *a)
{
    const char *hs, *he;
    long v;
    if (p < end && *p == '[') {
        hs = p + 1;
        if ((he = memchr(hs, ']', (size_t)(end - hs))) == NULL)
            return -1;
        p = he + 1;
    } else {
        for (hs = he = p; he < end && *he != ':'; he++)
            ;
        p = he;
    }
    if (he == hs)
        return -1;
    a->host = sk_strndup(hs, (size_t)(he - hs));
    a->port = defport;
    if (p < end) {
        if (*p != ':' || sk_redis_parse_number(p + 1, end, 65535, &v) != 0 || v == 0)
            return -1;
        a->port = (int)v;
    }
    return 0;
}

static int parse_sentinel(sk_redis_conf_t *conf, const char *url)
{
    const char *p = url + strlen("redis-sentinel://"), *hash = strchr(p, '#'), *slash, *end;
    long v;
    if (hash == NULL || hash[1] == '\0')
        return -1;
    if ((conf->master_name = sk_redis_pct_decode(hash + 1, strlen(hash + 1))) == NULL)
        return -1;
    for (const char *q = conf->master_name; *q; q++)
        if ((unsigned char)*q <= ' ' || *q == 0x7f)
            return -1;
    slash = memchr(p, '/', (size_t)(hash - p));
    end = slash ? slash : hash;
    if (skip_userinfo(conf, &p, end) != 0)
        return -1;
    while (p < end) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *e = comma ? comma : end;
        if (conf->nsentinels == SK_REDIS_SENTINELS_MAX)
            return -1;
        if (conf->sentinels == NULL)
            conf->sentinels = sk_calloc(SK_REDIS_SENTINELS_MAX, sizeof(*conf->sentinels));
        if (parse_hostport(p, e, SK_SENTINEL_PORT, &conf->sentinels[conf->nsentinels++]) != 0)
            return -1;
        p = comma ? comma + 1 : end;
        if (comma != NULL && p == end)
            return -1;
    }
    if (conf->nsentinels == 0)
        return -1;
    if (slash != NULL && slash + 1 < hash) {
        if (sk_redis_parse_number(slash + 1, hash, 1000000, &v) != 0)
            return -1;
        conf->db = (int)v;
    }
    return 0;
}

/* redis-cluster://[[USER]:PASSWORD@]HOST[:PORT][,HOST[:PORT]...]: seed nodes, no DB (a cluster
 * has only DB 0), nothing after the hosts. */
static int parse_cluster(sk_redis_conf_t *conf, const char *url)
{
    const char *p = url + strlen("redis-cluster://"), *end = p + strlen(p);
    conf->cluster = 1;
    if (skip_userinfo(conf, &p, end) != 0)
        return -1;
    while (p < end) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *e = comma ? comma : end;
        if (conf->nseeds == SK_REDIS_SEEDS_MAX || memchr(p, '/', (size_t)(e - p)) != NULL)
            return -1;
        if (conf->seeds == NULL)
            conf->seeds = sk_calloc(SK_REDIS_SEEDS_MAX, sizeof(*conf->seeds));
        if (parse_hostport(p, e, 6379, &conf->seeds[conf->nseeds++]) != 0)
            return -1;
        p = comma ? comma + 1 : end;
        if (comma != NULL && p == end)
            return -1;
    }
    return conf->nseeds == 0 ? -1 : 0;
}

static int parse_unix(sk_redis_conf_t *conf, const char *url)
{
    const char *p = url + strlen("unix://"), *q;
    long v;
    if (*p != '/') {
        const char *at = strstr(p, "@/");
        if (at == NULL || parse_userinfo(conf, p, at) != 0)
            return -1;
        p = at + 1;
    }
    q = strchr(p, '?');
    if (q == NULL)
        q = p + strlen(p);
    if (q - p < 2 || q - p > 107) /* sun_path */
        return -1;
    conf->path = sk_strndup(p, (size_t)(q - p));
    if (*q == '?') {
        if (strncmp(q, "?db=", 4) != 0 || sk_redis_parse_number(q + 4, q + strlen(q), 1000000, &v) != 0)
            return -1;
        conf->db = (int)v;
    }
    return 0;
}

int sk_redis_ha_parse(sk_redis_conf_t *conf, const char *url, char *err, size_t errlen)
{
    char shown[512];
    int sentinel = strncmp(url, "redis-sentinel://", 17) == 0;
    int cluster = strncmp(url, "redis-cluster://", 16) == 0;
    if ((sentinel ? parse_sentinel(conf, url) : cluster ? parse_cluster(conf, url) : parse_unix(conf, url)) == 0) {
        const char *env = getenv("SECKILL_SENTINEL_PASSWORD");
        if (sentinel && env != NULL && env[0] != '\0')
            conf->sentinel_password = sk_strndup(env, strlen(env));
        return 0;
    }
    sk_store_url_redact(url, shown, sizeof(shown));
    snprintf(err, errlen, "cannot parse '%s' (want %s)", shown,
             sentinel  ? "redis-sentinel://[[USER]:PASSWORD@]HOST[:PORT][,HOST[:PORT]...][/DB]#MASTER"
             : cluster ? "redis-cluster://[[USER]:PASSWORD@]HOST[:PORT][,HOST[:PORT]...]"
                       : "unix://[[USER]:PASSWORD@]/PATH[?db=DB]");
    return -1;
}

/* ---- discovery ---- */

enum { Q_ADDR, Q_MASTER, Q_N };

typedef struct query_s {
    struct sk_redis_disc_s *d;
    redisAsyncContext *ac; /* NULL once gone */
    sk_redis_ev_t ev;
    int left; /* replies still to come */
    int done;
    int answered;   /* both replies arrived */
    char host[256]; /* get-master-addr-by-name, "" for nil */
    int port;
    long long epoch; /* SENTINEL MASTER's config-epoch */
    char flags[256];
    char mhost[256]; /* SENTINEL MASTER's ip and port */
    int mport;
} query_t;

struct sk_redis_disc_s {
    const sk_redis_conf_t *conf;
    void (*ready)(void *ctx);
    void *ctx;
    int finishing;
    int nq, ndone;
    query_t q[SK_REDIS_SENTINELS_MAX];
};

static void query_end(query_t *q)
{
    if (q->done)
        return;
    q->done = 1;
    sk_redis_disc_t *d = q->d;
    if (++d->ndone == d->nq && !d->finishing)
        d->ready(d->ctx);
}

static void disc_on_connect(const redisAsyncContext *ac, int status)
{
    query_t *q = ac->data;
    if (status != REDIS_OK && q->ac == ac) {
        q->ac = NULL; /* hiredis frees it; the pending replies come as NULL */
        query_end(q);
    }
}

static void disc_on_disconnect(const redisAsyncContext *ac, int status)
{
    query_t *q = ac->data;
    (void)status;
    if (q->ac == ac) {
        q->ac = NULL;
        query_end(q);
    }
}

static const redisReply *field(const redisReply *r, const char *name)
{
    if (r->type != REDIS_REPLY_ARRAY)
        return NULL;
    for (size_t i = 0; i + 1 < r->elements; i += 2)
        if (r->element[i]->type == REDIS_REPLY_STRING && strcmp(r->element[i]->str, name) == 0)
            return r->element[i + 1];
    return NULL;
}

static void copy_str(char *dst, size_t n, const redisReply *r)
{
    dst[0] = '\0';
    if (r != NULL && r->type == REDIS_REPLY_STRING)
        snprintf(dst, n, "%.*s", (int)r->len, r->str);
}

static void disc_on_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    redisReply *r = reply;
    query_t *q = (query_t *)((char *)ac->data); /* the query; privdata says which reply */
    intptr_t which = (intptr_t)privdata;
    char num[32];
    if (q->done)
        return;
    if (r == NULL) {
        query_end(q);
        return;
    }
    if (which == Q_ADDR) {
        if (r->type == REDIS_REPLY_ARRAY && r->elements == 2 && r->element[0]->type == REDIS_REPLY_STRING &&
            r->element[1]->type == REDIS_REPLY_STRING) {
            copy_str(q->host, sizeof(q->host), r->element[0]);
            copy_str(num, sizeof(num), r->element[1]);
            q->port = atoi(num);
        }
    } else if (which == Q_MASTER) {
        copy_str(q->flags, sizeof(q->flags), field(r, "flags"));
        copy_str(q->mhost, sizeof(q->mhost), field(r, "ip"));
        copy_str(num, sizeof(num), field(r, "port"));
        q->mport = atoi(num);
        copy_str(num, sizeof(num), field(r, "config-epoch"));
        q->epoch = num[0] ? atoll(num) : -1;
    }
    if (--q->left == 0) {
        q->answered = 1;
        query_end(q);
    }
}

static void disc_on_auth(redisAsyncContext *ac, void *reply, void *privdata)
{
    /* a sentinel without a password refuses AUTH ("...without any password configured"): it
     * then answers anyway; a wrong password makes the next replies NOAUTH errors */
    (void)ac;
    (void)reply;
    (void)privdata;
}

/* An asynchronous connection to sentinel i on loop, with data, the callbacks and (where there is
 * a password) the AUTH queued; NULL when it cannot even start (nothing is left to free). */
static redisAsyncContext *sentinel_connect(h2o_loop_t *loop, const sk_redis_conf_t *conf, int i, sk_redis_ev_t *ev,
                                           void *data, redisConnectCallback *on_connect,
                                           redisDisconnectCallback *on_disconnect)
{
    const char *pw = conf->sentinel_password ? conf->sentinel_password : conf->password;
    redisAsyncContext *ac = redisAsyncConnect(conf->sentinels[i].host, conf->sentinels[i].port);
    if (ac == NULL || ac->err || sk_redis_attach(ev, ac, loop) != 0) {
        if (ac != NULL)
            redisAsyncFree(ac);
        return NULL;
    }
    ac->data = data;
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    if (pw != NULL)
        redisAsyncCommand(ac, disc_on_auth, NULL, "AUTH %s", pw);
    return ac;
}

sk_redis_disc_t *sk_redis_disc_start(h2o_loop_t *loop, const sk_redis_conf_t *conf, void (*ready)(void *ctx), void *ctx)
{
    sk_redis_disc_t *d = sk_calloc(1, sizeof(*d));
    d->conf = conf;
    d->ready = ready;
    d->ctx = ctx;
    d->finishing = 1; /* no ready() while starting: a refused connect may end a query at once */
    for (int i = 0; i < conf->nsentinels; i++) {
        query_t *q = &d->q[d->nq++];
        q->d = d;
        q->left = Q_N;
        redisAsyncContext *ac = sentinel_connect(loop, conf, i, &q->ev, q, disc_on_connect, disc_on_disconnect);
        if (ac == NULL) {
            q->done = 1;
            d->ndone++;
            continue;
        }
        q->ac = ac;
        redisAsyncCommand(ac, disc_on_reply, (void *)(intptr_t)Q_ADDR, "SENTINEL get-master-addr-by-name %s",
                          conf->master_name);
        redisAsyncCommand(ac, disc_on_reply, (void *)(intptr_t)Q_MASTER, "SENTINEL MASTER %s", conf->master_name);
    }
    d->finishing = 0;
    if (d->ndone == d->nq)
        ready(ctx);
    return d;
}

static int has_flag(const char *flags, const char *f)
{
    size_t n = strlen(f);
    for (const char *p = flags; (p = strstr(p, f)) != NULL; p += n)
        if ((p == flags || p[-1] == ',') && (p[n] == '\0' || p[n] == ','))
            return 1;
    return 0;
}

/* The rule of the file's comment. */
static int decide(sk_redis_disc_t *d, char *host, size_t hostlen, int *port, char *why, size_t whylen)
{
    int answered = 0, unknown = 0;
    long long top = -2;
    const query_t *pick = NULL;
    for (int i = 0; i < d->nq; i++) {
        const query_t *q = &d->q[i];
        if (!q->answered)
            continue;
        answered++;
        if (q->host[0] == '\0') {
            unknown++;
            continue;
        }
        if (q->epoch > top)
            top = q->epoch;
    }
    if (answered * 2 <= d->conf->nsentinels) {
        snprintf(why, whylen, "%d of %d sentinels answered", answered, d->conf->nsentinels);
        return 0;
    }
    if (unknown == answered) {
        snprintf(why, whylen, "no sentinel knows master '%s'", d->conf->master_name);
        return 0;
    }
    for (int i = 0; i < d->nq; i++) {
        const query_t *q = &d->q[i];
        if (!q->answered || q->host[0] == '\0' || q->epoch != top)
            continue;
        int promoted = strcmp(q->host, q->mhost) != 0 || q->port != q->mport;
        if (has_flag(q->flags, "s_down") || has_flag(q->flags, "o_down") ||
            (has_flag(q->flags, "failover_in_progress") && !promoted)) {
            snprintf(why, whylen, "a sentinel sees the master %s:%d as %s", q->host, q->port, q->flags);
            return 0;
        }
        if (pick != NULL && (strcmp(pick->host, q->host) != 0 || pick->port != q->port)) {
            snprintf(why, whylen, "the sentinels name %s:%d and %s:%d", pick->host, pick->port, q->host, q->port);
            return 0;
        }
        pick = q;
    }
    if (pick == NULL || pick->port <= 0) {
        snprintf(why, whylen, "no usable answer");
        return 0;
    }
    snprintf(host, hostlen, "%s", pick->host);
    *port = pick->port;
    return 1;
}

int sk_redis_disc_finish(sk_redis_disc_t *d, char *host, size_t hostlen, int *port, char *why, size_t whylen)
{
    if (d == NULL) {
        snprintf(why, whylen, "not asked");
        return 0;
    }
    int rc = decide(d, host, hostlen, port, why, whylen);
    d->finishing = 1;
    for (int i = 0; i < d->nq; i++) {
        query_t *q = &d->q[i];
        q->done = 1; /* the NULL replies of what is still pending change nothing */
        if (q->ac != NULL) {
            redisAsyncContext *ac = q->ac;
            q->ac = NULL;
            redisAsyncFree(ac);
        }
    }
    free(d);
    return rc;
}

/* ---- the watch ---- */

typedef struct sub_s {
    struct sk_redis_watch_s *w;
    redisAsyncContext *ac;
    sk_redis_ev_t ev;
    int64_t retry_at;
} sub_t;

struct sk_redis_watch_s {
    h2o_loop_t *loop;
    const sk_redis_conf_t *conf;
    sk_redis_shared_t *shared;
    int stopping;
    sub_t subs[SK_REDIS_SENTINELS_MAX];
    /* besides the messages, which a lost subscription misses: the sentinels asked every
     * WATCH_CHECK_MS; a master they name that differs from the last one counts as a switch */
    sk_redis_disc_t *disc;
    int disc_ready;
    int64_t next_check, disc_deadline;
    char known[300];
};

static void sub_gone(sub_t *s)
{
    s->ac = NULL;
    s->retry_at = sk_mono_ms() + WATCH_RETRY_MS;
}

static void sub_on_connect(const redisAsyncContext *ac, int status)
{
    sub_t *s = ac->data;
    if (status != REDIS_OK && s->ac == ac)
        sub_gone(s);
}

static void sub_on_disconnect(const redisAsyncContext *ac, int status)
{
    sub_t *s = ac->data;
    (void)status;
    if (s->ac == ac)
        sub_gone(s);
}

/* ["message", "+switch-master", "<master> <old ip> <old port> <new ip> <new port>"] */
static void sub_on_message(redisAsyncContext *ac, void *reply, void *privdata)
{
    redisReply *r = reply;
    sub_t *s = privdata;
    (void)ac;
    if (r == NULL || s->w->stopping || r->type != REDIS_REPLY_ARRAY || r->elements != 3 ||
        r->element[0]->type != REDIS_REPLY_STRING || strcmp(r->element[0]->str, "message") != 0 ||
        r->element[2]->type != REDIS_REPLY_STRING)
        return;
    const char *msg = r->element[2]->str, *name = s->w->conf->master_name;
    size_t n = strlen(name);
    if (strncmp(msg, name, n) != 0 || msg[n] != ' ')
        return;
    /* "<master> <old ip> <old port> <new ip> <new port>": keep the new address */
    const char *p = msg + n;
    for (int k = 0; k < 2 && p != NULL; k++)
        p = strchr(p + 1, ' ');
    snprintf(s->w->known, sizeof(s->w->known), "%s", p ? p + 1 : "");
    pthread_mutex_lock(&s->w->shared->mu);
    snprintf(s->w->shared->moved_to, sizeof(s->w->shared->moved_to), "%s", p ? p + 1 : "");
    pthread_mutex_unlock(&s->w->shared->mu);
    atomic_fetch_add(&s->w->shared->moves, 1);
    sk_log(SK_LOG_WARN, "event=redis_switch_master message=\"%.200s\"", msg);
}

static void sub_connect(sk_redis_watch_t *w, int i)
{
    sub_t *s = &w->subs[i];
    redisAsyncContext *ac = sentinel_connect(w->loop, w->conf, i, &s->ev, s, sub_on_connect, sub_on_disconnect);
    if (ac == NULL) {
        sub_gone(s);
        return;
    }
    s->ac = ac;
    redisAsyncCommand(ac, sub_on_message, s, "SUBSCRIBE +switch-master");
}

sk_redis_watch_t *sk_redis_watch_start(h2o_loop_t *loop, const sk_redis_conf_t *conf, sk_redis_shared_t *shared)
{
    sk_redis_watch_t *w = sk_calloc(1, sizeof(*w));
    w->loop = loop;
    w->conf = conf;
    w->shared = shared;
    for (int i = 0; i < conf->nsentinels; i++) {
        w->subs[i].w = w;
        sub_connect(w, i);
    }
    return w;
}

static void watch_disc_ready(void *ctx)
{
    ((sk_redis_watch_t *)ctx)->disc_ready = 1;
}

/* Called outside hiredis (on the connection's tick). */
static void watch_check(sk_redis_watch_t *w, int64_t now)
{
    char host[256], why[300], addr[300];
    int port;
    if (w->disc == NULL) {
        if (now < w->next_check)
            return;
        w->next_check = now + WATCH_CHECK_MS;
        w->disc_deadline = now + WATCH_DISC_MS;
        w->disc_ready = 0;
        w->disc = sk_redis_disc_start(w->loop, w->conf, watch_disc_ready, w);
        return;
    }
    if (!w->disc_ready && now < w->disc_deadline)
        return;
    sk_redis_disc_t *d = w->disc;
    w->disc = NULL;
    if (!sk_redis_disc_finish(d, host, sizeof(host), &port, why, sizeof(why)))
        return;
    snprintf(addr, sizeof(addr), "%s %d", host, port);
    if (strcmp(addr, w->known) == 0)
        return;
    if (w->known[0] != '\0')
        sk_log(SK_LOG_WARN, "event=redis_master_moved master=%s from=\"%s\" to=\"%s\"", w->conf->master_name, w->known,
               addr);
    snprintf(w->known, sizeof(w->known), "%s", addr);
    pthread_mutex_lock(&w->shared->mu);
    snprintf(w->shared->moved_to, sizeof(w->shared->moved_to), "%s", addr);
    pthread_mutex_unlock(&w->shared->mu);
    atomic_fetch_add(&w->shared->moves, 1); /* a connection already there stays */
}

void sk_redis_watch_tick(sk_redis_watch_t *w, int64_t now)
{
    for (int i = 0; i < w->conf->nsentinels; i++)
        if (w->subs[i].ac == NULL && now >= w->subs[i].retry_at)
            sub_connect(w, i);
    watch_check(w, now);
}

void sk_redis_watch_stop(sk_redis_watch_t *w)
{
    if (w == NULL)
        return;
    w->stopping = 1;
    if (w->disc != NULL) {
        char h[8], why[8];
        int p;
        sk_redis_disc_finish(w->disc, h, sizeof(h), &p, why, sizeof(why));
    }
    for (int i = 0; i < w->conf->nsentinels; i++)
        if (w->subs[i].ac != NULL) {
            redisAsyncContext *ac = w->subs[i].ac;
            w->subs[i].ac = NULL;
            redisAsyncFree(ac);
        }
    free(w);
}

/* ---- at start ---- */

static redisContext *connect_blocking(const char *host, int port, const char *path)
{
    struct timeval tv = {1, 0};
    redisContext *c = path ? redisConnectUnixWithTimeout(path, tv) : redisConnectWithTimeout(host, port, tv);
    if (c != NULL && c->err == 0)
        redisSetTimeout(c, tv);
    return c;
}

static int is_auth_error(const char *s)
{
    return strncmp(s, "WRONGPASS", 9) == 0 || strncmp(s, "NOAUTH", 6) == 0 || strstr(s, "invalid password") != NULL ||
           strstr(s, "invalid username-password") != NULL;
}

/* 1: the sentinel answered (addr set, or "" for an unknown name); 0: unreachable; -1: fatal */
static int ask_sentinel(const sk_redis_conf_t *conf, const sk_redis_addr_t *s, char *host, size_t hostlen, int *port,
                        char *err, size_t errlen)
{
    redisContext *c = connect_blocking(s->host, s->port, NULL);
    redisReply *r;
    int rc = 0;
    const char *pw = conf->sentinel_password ? conf->sentinel_password : conf->password;
    host[0] = '\0';
    if (c == NULL || c->err)
        goto out;
    if (pw != NULL) {
        if ((r = redisCommand(c, "AUTH %s", pw)) == NULL)
            goto out;
        if (r->type == REDIS_REPLY_ERROR && is_auth_error(r->str)) {
            snprintf(err, errlen, "sentinel %s:%d refuses the password: %.200s", s->host, s->port, r->str);
            rc = -1;
        }
        freeReplyObject(r);
        if (rc != 0)
            goto out;
    }
    if ((r = redisCommand(c, "SENTINEL get-master-addr-by-name %s", conf->master_name)) == NULL)
        goto out;
    if (r->type == REDIS_REPLY_ERROR && is_auth_error(r->str)) {
        snprintf(err, errlen, "sentinel %s:%d wants a password: %.200s", s->host, s->port, r->str);
        rc = -1;
    } else if (r->type == REDIS_REPLY_ARRAY && r->elements == 2 && r->element[0]->type == REDIS_REPLY_STRING &&
               r->element[1]->type == REDIS_REPLY_STRING) {
        snprintf(host, hostlen, "%s", r->element[0]->str);
        *port = atoi(r->element[1]->str);
        rc = 1;
    } else if (r->type == REDIS_REPLY_NIL) {
        rc = 1;
    }
    freeReplyObject(r);
out:
    if (c != NULL)
        redisFree(c);
    return rc;
}

static void check_persistence(redisContext *c, const char *where)
{
    redisReply *r = redisCommand(c, "CONFIG GET append*");
    char aof[16] = "", fsync[16] = "";
    if (r == NULL)
        return;
    if (r->type == REDIS_REPLY_ARRAY)
        for (size_t i = 0; i + 1 < r->elements; i += 2) {
            if (r->element[i]->type != REDIS_REPLY_STRING || r->element[i + 1]->type != REDIS_REPLY_STRING)
                continue;
            if (strcmp(r->element[i]->str, "appendonly") == 0)
                snprintf(aof, sizeof(aof), "%s", r->element[i + 1]->str);
            else if (strcmp(r->element[i]->str, "appendfsync") == 0)
                snprintf(fsync, sizeof(fsync), "%s", r->element[i + 1]->str);
        }
    if (r->type == REDIS_REPLY_ARRAY && aof[0] != '\0' && (strcmp(aof, "yes") != 0 || strcmp(fsync, "always") != 0))
        sk_log(SK_LOG_WARN,
               "event=redis_durability master=%s appendonly=%s appendfsync=%s "
               "hint=\"an acknowledged order survives a crash of Redis's machine only with appendonly yes and "
               "appendfsync always (docs/redis.md, Persistence)\"",
               where, aof, fsync);
    freeReplyObject(r);
}

int sk_redis_check_start(const sk_redis_conf_t *conf, char *err, size_t errlen)
{
    char host[256], where[300];
    int port = conf->port;
    if (conf->master_name != NULL) {
        int reached = 0, unknown = 0, found = 0;
        for (int i = 0; i < conf->nsentinels; i++) {
            char h[256];
            int p = 0, rc = ask_sentinel(conf, &conf->sentinels[i], h, sizeof(h), &p, err, errlen);
            if (rc < 0)
                return -1;
            if (rc == 0)
                continue;
            reached++;
            if (h[0] == '\0') {
                unknown++;
            } else if (!found) {
                found = 1;
                snprintf(host, sizeof(host), "%s", h);
                port = p;
            }
        }
        if (reached > 0 && unknown == reached) {
            snprintf(err, errlen, "no sentinel knows a master named '%s' (SENTINEL get-master-addr-by-name)",
                     conf->master_name);
            return -1;
        }
        if (!found) {
            sk_log(SK_LOG_WARN, "event=redis_sentinels_unreachable master=%s sentinels=%d", conf->master_name,
                   conf->nsentinels);
            return 0;
        }
    } else if (conf->cluster) { /* the first seed: credentials and persistence (of that node) */
        snprintf(host, sizeof(host), "%s", conf->seeds[0].host);
        port = conf->seeds[0].port;
    } else if (conf->path == NULL) {
        snprintf(host, sizeof(host), "%s", conf->host);
    }
    if (conf->path != NULL)
        snprintf(where, sizeof(where), "%s", conf->path);
    else
        snprintf(where, sizeof(where), "%s:%d", host, port);

    redisContext *c = connect_blocking(host, port, conf->path);
    redisReply *r;
    int rc = 0;
    if (c == NULL || c->err) {
        sk_log(SK_LOG_WARN, "event=redis_unreachable_at_start master=%s error=\"%s\"", where,
               c ? c->errstr : "out of memory");
        goto out;
    }
    if (conf->password != NULL) {
        r = conf->user ? redisCommand(c, "AUTH %s %s", conf->user, conf->password)
                       : redisCommand(c, "AUTH %s", conf->password);
        if (r == NULL)
            goto out;
        if (r->type == REDIS_REPLY_ERROR) {
            snprintf(err, errlen, "Redis %s refuses the credentials: %.200s", where, r->str);
            rc = -1;
        }
        freeReplyObject(r);
        if (rc != 0)
            goto out;
    }
    if (conf->db != 0) {
        if ((r = redisCommand(c, "SELECT %d", conf->db)) == NULL)
            goto out;
        if (r->type == REDIS_REPLY_ERROR) {
            snprintf(err, errlen, "Redis %s refuses database %d: %.200s", where, conf->db, r->str);
            rc = -1;
        }
        freeReplyObject(r);
        if (rc != 0)
            goto out;
    }
    if ((r = redisCommand(c, "PING")) == NULL)
        goto out;
    if (r->type == REDIS_REPLY_ERROR && is_auth_error(r->str)) {
        snprintf(err, errlen, "Redis %s wants a password (SECKILL_REDIS_PASSWORD): %.200s", where, r->str);
        rc = -1;
    }
    freeReplyObject(r);
    if (rc == 0)
        check_persistence(c, where);
    if (rc == 0 && !conf->cluster && sk_redis_layout_migrate(c) < 0)
        sk_log(SK_LOG_ERROR,
               "event=redis_layout_migration_failed master=%s hint=\"sales made before issue 16 are "
               "not listed or swept until a start migrates them (docs/redis.md, Migration)\"",
               where);
out:
    if (c != NULL)
        redisFree(c);
    return rc;
}
