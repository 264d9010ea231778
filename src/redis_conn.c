/* redis_conn.c: see redis_conn.h.
 *
 * Life of a connection: conn_connect makes a hiredis context, attaches it to the loop and queues
 * the handshake, which goes out as soon as the TCP connect completes; its last reply makes the
 * connection ready. Any loss (EOF, socket error, a missed deadline, a refused handshake, a server
 * that turned out not to be a primary) goes through conn_lost, which marks the connection down
 * and schedules the next attempt; hiredis then answers every pending command with a NULL reply.
 * The tick timer reconnects when the backoff has passed and probes an idle connection with ROLE,
 * so that a stalled Redis is noticed within PROBE_IDLE_MS + SK_REDIS_TIMEOUT_MS. */
#include "redis_conn.h"
#include "metrics.h"
#include "redis_cluster.h"
#include "redis_conn_internal.h"
#include "redis_ha.h"
#include <errno.h>
#include <hiredis/async.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "log.h"
#include "util.h"

#define TICK_MS 50          /* housekeeping timer */
#define PROBE_IDLE_MS 200   /* an idle connection is probed (ROLE) this often */
/* under Redis Cluster, a connection per master and worker: probed less often (a lost master
 * drops its connection at once; a stalled one is noticed within PROBE + TIMEOUT; its cluster's
 * own failover takes cluster-node-timeout, seconds) */
#define PROBE_IDLE_CLUSTER_MS 1000
#define BACKOFF_MIN_MS 50   /* reconnect backoff, doubling up to the max */
#define BACKOFF_MAX_MS 1000
#define LOG_EVERY_MS 1000   /* Redis error replies are logged at most this often per connection */
#define DISC_TIMEOUT_MS 1000  /* the sentinels' answers are waited for this long */
#define SENTINEL_RETRY_MS 100 /* asked again this soon when they name no usable master */
#define REFUSED_HOLD_MS 2000  /* a definite refusal counts for health at least this long */

/* ---- configuration ---- */

static int hexval(int ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* A percent-decoded copy of s[0..n), or NULL when an escape is malformed or decodes to NUL (the
 * copy is a C string: a NUL would silently cut the password short). */
char *sk_redis_pct_decode(const char *s, size_t n)
{
    char *out = sk_malloc(n + 1), *o = out;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '%') {
            *o++ = s[i];
            continue;
        }
        int hi = i + 2 < n ? hexval((unsigned char)s[i + 1]) : -1;
        int lo = i + 2 < n ? hexval((unsigned char)s[i + 2]) : -1;
        if (hi < 0 || lo < 0 || hi + lo == 0) {
            free(out);
            return NULL;
        }
        *o++ = (char)(hi * 16 + lo);
        i += 2;
    }
    *o = '\0';
    return out;
}

int sk_redis_parse_number(const char *p, const char *end, long max, long *out)
{
    long v = 0;
    if (p == end)
        return -1;
    for (; p < end; p++)
        if (*p < '0' || *p > '9' || (v = v * 10 + (*p - '0')) > max)
            return -1;
    *out = v;
    return 0;
}

int sk_redis_conf_parse(sk_redis_conf_t *conf, const char *url, char *err, size_t errlen)
{
    const char *p, *end, *at = NULL, *slash, *hs, *he;
    char shown[512];
    long v;

    memset(conf, 0, sizeof(*conf));
    conf->port = 6379;
    if (strncmp(url, "redis-sentinel://", 17) == 0 || strncmp(url, "unix://", 7) == 0 ||
        strncmp(url, "redis-cluster://", 16) == 0)
        return sk_redis_ha_parse(conf, url, err, errlen);
    if (strncmp(url, "redis://", 8) != 0)
        goto bad;
    p = url + 8;
    slash = strchr(p, '/');
    end = slash ? slash : p + strlen(p);
    for (const char *q = p; q < end; q++) /* the last '@': a password may hold one */
        if (*q == '@')
            at = q;
    if (at != NULL) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        if (colon != NULL) {
            if (colon > p && (conf->user = sk_redis_pct_decode(p, (size_t)(colon - p))) == NULL)
                goto bad;
            if ((conf->password = sk_redis_pct_decode(colon + 1, (size_t)(at - colon - 1))) == NULL)
                goto bad;
        } else if ((conf->password = sk_redis_pct_decode(p, (size_t)(at - p))) == NULL) {
            goto bad;
        }
        p = at + 1;
    }
    if (*p == '[') { /* [v6] */
        hs = p + 1;
        if ((he = memchr(hs, ']', (size_t)(end - hs))) == NULL)
            goto bad;
        p = he + 1;
    } else {
        for (hs = he = p; he < end && *he != ':'; he++)
            ;
        p = he;
    }
    if (he == hs)
        goto bad;
    conf->host = sk_strndup(hs, (size_t)(he - hs));
    if (p < end) {
        if (*p != ':' || sk_redis_parse_number(p + 1, end, 65535, &v) != 0 || v == 0)
            goto bad;
        conf->port = (int)v;
    }
    if (slash != NULL && slash[1] != '\0') {
        if (sk_redis_parse_number(slash + 1, slash + strlen(slash), 1000000, &v) != 0)
            goto bad;
        conf->db = (int)v;
    }
    if (conf->password != NULL && conf->password[0] == '\0') {
        free(conf->password);
        conf->password = NULL;
    }
    return 0;
bad:
    /* never the password: the message is printed and logged */
    snprintf(err, errlen, "cannot parse '%s' (want redis://[:PASSWORD@]HOST:PORT[/DB])",
             sk_url_redact(url, shown, sizeof(shown)));
    return -1;
}

void sk_redis_conf_dispose(sk_redis_conf_t *conf)
{
    for (int i = 0; i < conf->nsentinels; i++)
        free(conf->sentinels[i].host);
    free(conf->sentinels);
    for (int i = 0; i < conf->nseeds; i++)
        free(conf->seeds[i].host);
    free(conf->seeds);
    free(conf->master_name);
    free(conf->sentinel_password);
    free(conf->path);
    free(conf->host);
    free(conf->user);
    free(conf->password);
    memset(conf, 0, sizeof(*conf));
}

int sk_redis_script_init(sk_redis_script_t *s, const char *name, char *text, size_t len)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    s->name = name;
    s->text = text;
    s->len = len;
    if (EVP_Digest(text, len, md, &mdlen, EVP_sha1(), NULL) != 1 || mdlen != 20)
        return -1;
    for (size_t i = 0; i < 20; i++)
        snprintf(s->sha + 2 * i, 3, "%02x", md[i]);
    return 0;
}

void sk_redis_script_dispose(sk_redis_script_t *s)
{
    free(s->text);
    s->text = NULL;
}

/* ---- arguments ---- */

void sk_redis_arg(sk_redis_argv_t *a, const char *p, size_t len)
{
    a->v[a->n] = p;
    a->len[a->n++] = len;
}

void sk_redis_arg_s(sk_redis_argv_t *a, const char *s)
{
    sk_redis_arg(a, s, strlen(s));
}

void sk_redis_arg_i(sk_redis_argv_t *a, long long v)
{
    char *b = a->nums[a->nnums++];
    sk_redis_arg(a, b, (size_t)snprintf(b, 24, "%lld", v));
}

void sk_redis_arg_u(sk_redis_argv_t *a, unsigned long long v)
{
    char *b = a->nums[a->nnums++];
    sk_redis_arg(a, b, (size_t)snprintf(b, 24, "%llu", v));
}

void sk_redis_arg_printf(sk_redis_argv_t *a, const char *fmt, ...)
{
    va_list ap;
    size_t room = sizeof(a->buf) - a->used;
    va_start(ap, fmt);
    /* NOLINTNEXTLINE(clang-analyzer-valist.Uninitialized): false positive, va_start is above */
    int n = vsnprintf(a->buf + a->used, room, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= room) {
        sk_log(SK_LOG_ERROR, "event=redis_argument_too_long fmt=\"%s\"", fmt);
        abort(); /* the store formats keys of bounded sale ids only */
    }
    sk_redis_arg(a, a->buf + a->used, (size_t)n);
    a->used += (size_t)n + 1;
}

static sk_redis_argv_t *argv_new(void)
{
    sk_redis_argv_t *a = sk_malloc(sizeof(*a));
    a->n = a->nnums = 0;
    a->used = 0;
    return a;
}

/* ---- the connection ---- */

static void on_reply(redisAsyncContext *ac, void *reply, void *privdata);
static void on_cmd_timeout(h2o_timeout_entry_t *e);

static const char *name_of(const sk_redis_cmd_t *cmd)
{
    return cmd->script ? cmd->script->name : "none";
}

static int send_argv(sk_redis_conn_t *c, sk_redis_cmd_t *cmd, sk_redis_argv_t *a)
{
    if (c->ac == NULL || redisAsyncCommandArgv(c->ac, on_reply, cmd, a->n, a->v, a->len) != REDIS_OK)
        return -1;
    cmd->conn = c;
    cmd->ac = c->ac;
    cmd->timeout.cb = on_cmd_timeout;
    h2o_timeout_link(c->loop, &c->t_cmd, &cmd->timeout);
    c->pending++;
    c->last_send = cmd->sent_at = sk_mono_ms();
    return 0;
}

int sk_redis_send(sk_redis_conn_t *c, sk_redis_cmd_t *cmd, const char *const *args)
{
    sk_redis_argv_t *a = argv_new();
    for (; *args != NULL; args++)
        sk_redis_arg_s(a, *args);
    int rc = send_argv(c, cmd, a);
    free(a);
    return rc;
}

int sk_redis_send_script(sk_redis_conn_t *c, sk_redis_cmd_t *cmd)
{
    sk_redis_argv_t *a = argv_new();
    if (cmd->eval) {
        sk_redis_arg_s(a, "EVAL");
        sk_redis_arg(a, cmd->script->text, cmd->script->len);
    } else {
        sk_redis_arg_s(a, "EVALSHA");
        sk_redis_arg(a, cmd->script->sha, 40);
    }
    cmd->args(cmd, a);
    sk_metrics_script(cmd->takes);
    int rc = send_argv(c, cmd, a);
    free(a);
    return rc;
}

static void set_bad(sk_redis_conn_t *c, int bad)
{
    if (c->bad != bad) {
        c->bad = bad;
        atomic_fetch_add(&c->shared->nbad, bad ? 1 : -1);
    }
}

/* Writes refused for certain, or not confirmed by WAIT: /healthz says 503 until a ROLE lists
 * enough replicas again or a WAIT confirms. */
static void set_refusing(sk_redis_conn_t *c, int refusing)
{
    if (c->refusing != refusing) {
        c->refusing = refusing;
        atomic_fetch_add(&c->shared->nrefusing, refusing ? 1 : -1);
    }
}

/* Replicas listed by a primary's ROLE reply: ["master", offset, [[ip, port, offset], ...]]. */
static int role_replicas(const redisReply *rep)
{
    if (rep->elements < 3 || rep->element[2]->type != REDIS_REPLY_ARRAY)
        return 0;
    return (int)rep->element[2]->elements;
}

/* A primary's ROLE: with --redis-min-replicas, does it have the replicas the writes need? (A
 * refusal of Redis's own, NOREPLICAS, says nothing of how many it wants: it counts for
 * REFUSED_HOLD_MS whatever ROLE lists.) */
static void check_replicas(sk_redis_conn_t *c, const redisReply *rep)
{
    if (c->conf->min_replicas == 0)
        return;
    if (role_replicas(rep) < c->conf->min_replicas)
        set_refusing(c, 1);
    else if (sk_mono_ms() - c->refused_at >= REFUSED_HOLD_MS)
        set_refusing(c, 0);
}

static void schedule_retry(sk_redis_conn_t *c)
{
    c->retry_at = sk_mono_ms() + c->backoff;
    c->backoff = c->backoff * 2 < BACKOFF_MAX_MS ? c->backoff * 2 : BACKOFF_MAX_MS;
}

static void log_down(sk_redis_conn_t *c, const char *why)
{
    if (!c->down_logged && !c->closing) {
        c->down_logged = 1;
        sk_log(SK_LOG_WARN, "event=redis_down worker=%d host=%s port=%d error=\"%s\"", c->index,
               c->host[0] ? c->host : "-", c->port, why);
    } else {
        sk_log(SK_LOG_DEBUG, "event=redis_connect_failed worker=%d error=\"%s\"", c->index, why);
    }
}

/* Marks the connection down (idempotent); the caller or hiredis frees the context. */
static void conn_lost(sk_redis_conn_t *c, const char *why)
{
    if (c->ac == NULL)
        return;
    c->ac = NULL;
    c->ready = 0;
    set_bad(c, 1);
    log_down(c, why ? why : "unknown");
    schedule_retry(c);
}

/* Tears the connection down, from outside hiredis or from a reply callback (hiredis then frees
 * after the callback): every pending command is answered with NULL. */
static void conn_fail(sk_redis_conn_t *c, const char *why)
{
    redisAsyncContext *ac = c->ac;
    if (ac == NULL)
        return;
    conn_lost(c, why);
    redisAsyncFree(ac);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    sk_redis_conn_t *c = ac->data;
    if (status != REDIS_OK && c->ac == ac)
        conn_lost(c, ac->errstr); /* hiredis frees the context right after */
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    sk_redis_conn_t *c = ac->data;
    (void)status;
    if (c->ac == ac)
        conn_lost(c, ac->err ? ac->errstr : "disconnected");
}

int sk_redis_is_primary(const redisReply *rep)
{
    return rep->type == REDIS_REPLY_ARRAY && rep->elements >= 1 && rep->element[0]->type == REDIS_REPLY_STRING &&
           rep->element[0]->len == 6 && memcmp(rep->element[0]->str, "master", 6) == 0;
}

/* The handshake's steps: each a command of its own, the last one makes the connection ready. */
typedef struct step_s {
    sk_redis_cmd_t cmd;
    const char *what;
    const sk_redis_script_t *load; /* SCRIPT LOAD of this script */
    int role;                      /* the ROLE check */
    int last;
} step_t;

static void step_done(sk_redis_cmd_t *cmd, redisReply *rep)
{
    step_t *st = (step_t *)cmd;
    sk_redis_conn_t *c = cmd->conn;
    if (rep == NULL)
        goto out;
    if (rep->type == REDIS_REPLY_ERROR) {
        sk_log(c->down_logged ? SK_LOG_DEBUG : SK_LOG_ERROR, "event=redis_handshake worker=%d step=%s error=\"%.200s\"",
               c->index, st->what, rep->str);
        conn_fail(c, "handshake refused");
        goto out;
    }
    /* a replica would refuse every write: wait for the address to lead to a primary */
    if (st->role && !sk_redis_is_primary(rep)) {
        sk_log(c->down_logged ? SK_LOG_DEBUG : SK_LOG_ERROR, "event=redis_not_primary worker=%d host=%s port=%d",
               c->index, c->host, c->port);
        conn_fail(c, "not a primary");
        goto out;
    }
    if (st->role)
        check_replicas(c, rep);
    if (st->load != NULL && (rep->type != REDIS_REPLY_STRING || rep->len != 40 || memcmp(rep->str, st->load->sha, 40) != 0))
        sk_log(SK_LOG_WARN, "event=redis_script_sha_mismatch worker=%d script=%s", c->index, st->load->name);
    if (st->last && c->ac != NULL && !c->ready) {
        c->ready = 1;
        c->backoff = BACKOFF_MIN_MS;
        set_bad(c, 0);
        if (c->down_logged || c->index == 0)
            sk_log(SK_LOG_INFO, "event=redis_up worker=%d host=%s port=%d db=%d", c->index, c->host, c->port,
                   c->conf->db);
        c->down_logged = 0;
    }
out:
    free(st);
}

static step_t *step_new(const char *what)
{
    step_t *st = sk_calloc(1, sizeof(*st));
    st->cmd.cb = step_done;
    st->what = what;
    return st;
}

/* Queue one handshake step; return 0 or -1 (the step is freed). */
static int queue_step(sk_redis_conn_t *c, step_t *st, const char *const *args)
{
    int rc = sk_redis_send(c, &st->cmd, args);
    if (rc != 0)
        free(st);
    return rc;
}

static int queue_load(sk_redis_conn_t *c, step_t *st, const sk_redis_script_t *script)
{
    sk_redis_argv_t *a = argv_new();
    sk_redis_arg_s(a, "SCRIPT");
    sk_redis_arg_s(a, "LOAD");
    sk_redis_arg(a, script->text, script->len);
    st->load = script;
    int rc = send_argv(c, &st->cmd, a);
    free(a);
    if (rc != 0)
        free(st);
    return rc;
}

static void disc_ready(void *ctx)
{
    sk_redis_conn_t *c = ctx;
    if (!h2o_timeout_is_linked(&c->e_disc))
        h2o_timeout_link(c->loop, &c->t_zero, &c->e_disc);
}

static void connect_master(sk_redis_conn_t *c);

/* The sentinels' answer: connect to the master they name, or try again soon. */
static void disc_end(sk_redis_conn_t *c)
{
    char why[300];
    if (h2o_timeout_is_linked(&c->e_disc))
        h2o_timeout_unlink(&c->e_disc);
    sk_redis_disc_t *d = c->disc;
    c->disc = NULL;
    if (sk_redis_disc_finish(d, c->host, sizeof(c->host), &c->port, why, sizeof(why))) {
        connect_master(c);
        return;
    }
    log_down(c, why);
    set_bad(c, 1);
    c->retry_at = sk_mono_ms() + SENTINEL_RETRY_MS;
}

static void on_disc(h2o_timeout_entry_t *e)
{
    disc_end(SK_CONTAINER_OF(e, sk_redis_conn_t, e_disc));
}

/* Under Sentinel every connect starts by asking the sentinels where the master is. */
static void conn_connect(sk_redis_conn_t *c)
{
    if (c->conf->master_name == NULL) {
        connect_master(c);
        return;
    }
    if (c->disc != NULL)
        return;
    c->moves = atomic_load(&c->shared->moves);
    c->disc_deadline = sk_mono_ms() + DISC_TIMEOUT_MS;
    if ((c->disc = sk_redis_disc_start(c->loop, c->conf, disc_ready, c)) == NULL) {
        set_bad(c, 1);
        schedule_retry(c);
    }
}

static void connect_master(sk_redis_conn_t *c)
{
    const sk_redis_conf_t *conf = c->conf;
    redisAsyncContext *ac = conf->path ? redisAsyncConnectUnix(conf->path) : redisAsyncConnect(c->host, c->port);
    if (ac == NULL || ac->err) {
        log_down(c, ac ? ac->errstr : "out of memory");
        if (ac != NULL)
            redisAsyncFree(ac);
        set_bad(c, 1);
        schedule_retry(c);
        return;
    }
    if (sk_redis_attach(&c->ev, ac, c->loop) != 0) {
        sk_log(SK_LOG_ERROR, "event=redis_attach worker=%d error=\"%s\"", c->index, strerror(errno));
        redisAsyncFree(ac);
        set_bad(c, 1);
        schedule_retry(c);
        return;
    }
    ac->data = c;
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    if (conf->path == NULL)
        redisEnableKeepAlive(&ac->c);
    c->ac = ac;

    /* queued now, sent when the connect completes; ready after the last reply */
    int rc = 0;
    step_t *st;
    if (conf->password != NULL) {
        st = step_new("auth");
        rc = queue_step(c, st,
                        conf->user ? SK_REDIS_ARGS("AUTH", conf->user, conf->password)
                                   : SK_REDIS_ARGS("AUTH", conf->password));
    }
    if (rc == 0 && conf->db != 0) {
        char db[16];
        snprintf(db, sizeof(db), "%d", conf->db);
        rc = queue_step(c, step_new("select"), SK_REDIS_ARGS("SELECT", db));
    }
    if (rc == 0) {
        st = step_new("role");
        st->role = 1;
        st->last = c->nscripts == 0;
        rc = queue_step(c, st, SK_REDIS_ARGS("ROLE"));
    }
    for (size_t i = 0; rc == 0 && i < c->nscripts; i++) {
        st = step_new(c->scripts[i].name);
        st->last = i == c->nscripts - 1;
        rc = queue_load(c, st, &c->scripts[i]);
    }
    if (rc != 0)
        conn_fail(c, "cannot queue the handshake");
}

static void probe_done(sk_redis_cmd_t *cmd, redisReply *rep)
{
    if (rep != NULL && !sk_redis_is_primary(rep))
        conn_fail(cmd->conn, rep->type == REDIS_REPLY_ERROR ? rep->str : "not a primary any more");
    else if (rep != NULL && cmd->conn->ac == cmd->ac)
        check_replicas(cmd->conn, rep);
    free(cmd);
}

/* After a +switch-master: whether this connection is on the new master already (it found it
 * before the message came). */
static int already_there(sk_redis_conn_t *c)
{
    char here[300];
    unsigned moves = atomic_load(&c->shared->moves);
    snprintf(here, sizeof(here), "%s %d", c->host, c->port);
    pthread_mutex_lock(&c->shared->mu);
    int same = c->ac != NULL && strcmp(here, c->shared->moved_to) == 0;
    pthread_mutex_unlock(&c->shared->mu);
    if (same)
        c->moves = moves;
    return same;
}

static void on_tick(h2o_timeout_entry_t *e)
{
    sk_redis_conn_t *c = SK_CONTAINER_OF(e, sk_redis_conn_t, e_tick);
    int64_t now = sk_mono_ms();
    if (c->watch != NULL)
        sk_redis_watch_tick(c->watch, now);
    /* the sentinels moved the master: leave this one and ask them again, now */
    if (c->conf->master_name != NULL && atomic_load(&c->shared->moves) != c->moves && !already_there(c)) {
        c->moves = atomic_load(&c->shared->moves);
        if (c->disc != NULL) {
            char h[8], why[8];
            int p;
            sk_redis_disc_t *d = c->disc;
            c->disc = NULL;
            if (h2o_timeout_is_linked(&c->e_disc))
                h2o_timeout_unlink(&c->e_disc);
            sk_redis_disc_finish(d, h, sizeof(h), &p, why, sizeof(why));
        }
        conn_fail(c, "+switch-master");
        c->backoff = BACKOFF_MIN_MS;
        c->retry_at = now;
    }
    if (c->disc != NULL && now >= c->disc_deadline)
        disc_end(c);
    /* without WAIT nothing else says that writes are taken again on a connection that carries
     * none: a refusal counts until REFUSED_HOLD_MS have passed without another */
    if (c->refusing && c->conf->min_replicas == 0 && now - c->refused_at >= REFUSED_HOLD_MS)
        set_refusing(c, 0);
    if (c->ac == NULL && c->disc == NULL && !c->closing && now >= c->retry_at)
        conn_connect(c);
    /* with commands in flight their deadlines watch the connection; but one refusing writes for
     * want of replicas asks ROLE even while it carries other commands (the sweep's, every second
     * on the index's master, kept an idle connection from ever looking idle): nothing else tells
     * it that the replicas are back on an instance that sends no write */
    int64_t every = c->conf->cluster ? PROBE_IDLE_CLUSTER_MS : PROBE_IDLE_MS;
    int idle = c->pending == 0 && now - c->last_send >= every;
    int recheck = c->refusing && c->conf->min_replicas > 0 && now - c->last_role >= every;
    if (c->ready && (idle || recheck)) {
        sk_redis_cmd_t *cmd = sk_calloc(1, sizeof(*cmd));
        cmd->cb = probe_done;
        if (sk_redis_send(c, cmd, SK_REDIS_ARGS("ROLE")) != 0)
            free(cmd);
        else
            c->last_role = now;
    }
    h2o_timeout_link(c->loop, &c->t_tick, &c->e_tick);
}

static void on_cmd_timeout(h2o_timeout_entry_t *e)
{
    sk_redis_cmd_t *cmd = SK_CONTAINER_OF(e, sk_redis_cmd_t, timeout);
    sk_redis_conn_t *c = cmd->conn;
    /* h2o's timers run on the wall clock: one that stepped forward fires them early */
    if (sk_mono_ms() - cmd->sent_at < SK_REDIS_TIMEOUT_MS) {
        h2o_timeout_link(c->loop, &c->t_cmd, &cmd->timeout);
        return;
    }
    sk_log(c->down_logged ? SK_LOG_DEBUG : SK_LOG_WARN, "event=redis_timeout worker=%d ms=%d script=%s", c->index,
           SK_REDIS_TIMEOUT_MS, name_of(cmd));
    conn_fail(c, "command timed out"); /* answers cmd, among others */
}

/* The definite refusals (SK_REDIS_REFUSED_*, metrics.h), or -1. */
static int refusal_kind(const redisReply *rep)
{
    static const char *const PREFIX[] = {"NOREPLICAS", "READONLY", "MOVED",      "LOADING",
                                         "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN"};
    if (rep == NULL || rep->type != REDIS_REPLY_ERROR)
        return -1;
    for (int i = 0; i < (int)(sizeof(PREFIX) / sizeof(PREFIX[0])); i++) {
        size_t n = strlen(PREFIX[i]);
        if (strncmp(rep->str, PREFIX[i], n) == 0 && (rep->str[n] == ' ' || rep->str[n] == '\0'))
            return i;
    }
    return -1;
}

int sk_redis_is_refusal(const redisReply *rep)
{
    return refusal_kind(rep) >= 0;
}

int sk_redis_conn_waited(sk_redis_conn_t *c, const redisReply *rep)
{
    if (rep != NULL && rep->type == REDIS_REPLY_INTEGER && rep->integer >= c->conf->min_replicas) {
        set_refusing(c, 0);
        return 1;
    }
    if (rep != NULL && rep->type == REDIS_REPLY_INTEGER) {
        sk_metrics_redis_refused(SK_REDIS_REFUSED_WAIT);
        set_refusing(c, 1);
    }
    return 0;
}

/* Every reply, and the NULL "reply" of each pending command when its context goes away. */
static void on_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    sk_redis_cmd_t *cmd = privdata;
    sk_redis_conn_t *c = cmd->conn;
    redisReply *rep = reply;
    (void)ac;

    if (h2o_timeout_is_linked(&cmd->timeout))
        h2o_timeout_unlink(&cmd->timeout);
    c->pending--;
    if (rep == NULL) {
        if (c->ac == cmd->ac)
            conn_lost(c, cmd->ac->errstr[0] ? cmd->ac->errstr : "connection lost");
    } else if (rep->type != REDIS_REPLY_ERROR && cmd->takes > 0 && c->conf->min_replicas == 0) {
        set_refusing(c, 0); /* a take script ran: writes are taken again (with WAIT, WAIT says) */
    } else if (rep->type == REDIS_REPLY_ERROR && cmd->cb != step_done) {
        /* NOSCRIPT: nothing ran; send the script itself, which caches it again */
        if (cmd->script != NULL && !cmd->eval && strncmp(rep->str, "NOSCRIPT", 8) == 0) {
            cmd->eval = 1;
            if (sk_redis_send_script(c, cmd) == 0)
                return;
            rep = NULL;
        } else if (c->conf->cluster && (strncmp(rep->str, "MOVED ", 6) == 0 || strncmp(rep->str, "ASK ", 4) == 0)) {
            /* a slot that moved or is moving: the store sends the command where it now lives */
        } else {
            int64_t now = sk_mono_ms();
            if (now - c->last_err_log >= LOG_EVERY_MS) {
                c->last_err_log = now;
                sk_log(SK_LOG_ERROR, "event=redis_error worker=%d script=%s error=\"%.200s\"", c->index, name_of(cmd),
                       rep->str);
            }
            /* a definite refusal (nothing ran): a primary demoted by a failover, a Redis
             * restarted under us, too few replicas; this connection will not recover, a new one
             * (to wherever the sentinels or the address now lead) may */
            int why = refusal_kind(rep);
            if (c->conf->cluster && why < 0 && sk_redis_script_migrating(rep->str))
                why = SK_REDIS_REFUSED_TRYAGAIN; /* stopped at its first key not here: nothing written */
            if (c->conf->cluster && (why == SK_REDIS_REFUSED_TRYAGAIN || why == SK_REDIS_REFUSED_CLUSTERDOWN)) {
                /* a slot in migration (TRYAGAIN, or a script it stopped before its first write:
                 * common.lua's touch) or a cluster without a quorum: the node is fine and nothing
                 * ran; a cluster that is down counts for health */
                sk_metrics_redis_refused(why);
                if (why == SK_REDIS_REFUSED_CLUSTERDOWN) {
                    set_refusing(c, 1);
                    c->refused_at = sk_mono_ms();
                }
            } else if (why >= 0) {
                sk_metrics_redis_refused(why);
                set_refusing(c, 1);
                c->refused_at = sk_mono_ms();
                conn_fail(c, rep->str);
            } else if (strncmp(rep->str, "NOAUTH", 6) == 0) {
                conn_fail(c, rep->str);
            }
        }
    }
    cmd->cb(cmd, rep);
}

void sk_redis_conn_init_down(sk_redis_conn_t *c, h2o_loop_t *loop, int index, const sk_redis_conf_t *conf,
                             const sk_redis_script_t *scripts, size_t nscripts, sk_redis_shared_t *shared)
{
    memset(c, 0, sizeof(*c));
    c->loop = loop;
    c->index = index;
    c->conf = conf;
    c->scripts = scripts;
    c->nscripts = nscripts;
    c->shared = shared;
    c->backoff = BACKOFF_MIN_MS;
    if (conf->host != NULL)
        snprintf(c->host, sizeof(c->host), "%s", conf->host);
    else if (conf->path != NULL)
        snprintf(c->host, sizeof(c->host), "%s", conf->path);
    c->port = conf->path ? 0 : conf->port;
    h2o_timeout_init(loop, &c->t_cmd, SK_REDIS_TIMEOUT_MS);
    h2o_timeout_init(loop, &c->t_tick, TICK_MS);
    h2o_timeout_init(loop, &c->t_zero, 0);
    c->e_tick.cb = on_tick;
    c->e_disc.cb = on_disc;
}

void sk_redis_conn_init(sk_redis_conn_t *c, h2o_loop_t *loop, int index, const sk_redis_conf_t *conf,
                        const sk_redis_script_t *scripts, size_t nscripts, sk_redis_shared_t *shared)
{
    sk_redis_conn_init_at(c, loop, index, conf, scripts, nscripts, shared, NULL, 0);
}

void sk_redis_conn_init_at(sk_redis_conn_t *c, h2o_loop_t *loop, int index, const sk_redis_conf_t *conf,
                           const sk_redis_script_t *scripts, size_t nscripts, sk_redis_shared_t *shared,
                           const char *host, int port)
{
    sk_redis_conn_init_down(c, loop, index, conf, scripts, nscripts, shared);
    if (host != NULL) {
        snprintf(c->host, sizeof(c->host), "%s", host);
        c->port = port;
    }
    conn_connect(c);
    h2o_timeout_link(loop, &c->t_tick, &c->e_tick);
}

void sk_redis_conn_deliver(sk_redis_conn_t *c, sk_redis_cmd_t *cmd, redisReply *rep)
{
    /* as send_argv leaves a command that went out */
    cmd->conn = c;
    cmd->ac = c->ac;
    c->pending++;
    if (rep != NULL) {
        on_reply(c->ac, rep, cmd);
    } else { /* the command's share of on_reply for a lost connection */
        c->pending--;
        cmd->cb(cmd, NULL);
    }
}

void sk_redis_conn_dispose(sk_redis_conn_t *c)
{
    c->closing = 1;
    conn_fail(c, "shutting down");
    if (c->disc != NULL) {
        char h[8], why[8];
        int p;
        sk_redis_disc_finish(c->disc, h, sizeof(h), &p, why, sizeof(why));
        c->disc = NULL;
    }
    if (h2o_timeout_is_linked(&c->e_disc))
        h2o_timeout_unlink(&c->e_disc);
    sk_redis_watch_stop(c->watch);
    c->watch = NULL;
    set_bad(c, 0);
    set_refusing(c, 0);
    if (h2o_timeout_is_linked(&c->e_tick))
        h2o_timeout_unlink(&c->e_tick);
    h2o_timeout_dispose(c->loop, &c->t_cmd);
    h2o_timeout_dispose(c->loop, &c->t_tick);
    h2o_timeout_dispose(c->loop, &c->t_zero);
}
