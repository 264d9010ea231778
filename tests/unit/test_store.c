/* test_store.c: both stores driven through store.h alone, without HTTP: the same table of cases
 * against the embedded store (a temporary SQLite file) and the Redis store (a real redis-server
 * started here on a free loopback port), so that "both stores answer the same" is checked below
 * the API too; then the faults of each: an fsync that fails (an SQLite VFS shim), a take held in
 * flight while its sale ends (the embedded store's test hook), a rebuild; NOSCRIPT, a dropped
 * connection and a missed deadline on Redis.
 *
 * The harness is a worker as the server is one: an h2o evloop for the store's own I/O, a post
 * function that queues answers, and a wait that turns the loop, flushes the handle and runs the
 * posted callbacks until the requests it waits for are answered. Waits are on state with a
 * deadline, never a bare sleep. */
#include <errno.h>
#include <fcntl.h>
#include <h2o.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <setjmp.h>
#include <cmocka.h>
#include "error.h"
#include "log.h"
#include "redis_cluster.h"
#include "store.h"
#include "util.h"

#define WAIT_MS 10000 /* the longest any wait here may take */
#define MAXQ 4096

/* ---- the worker ---- */

typedef struct fx_s {
    sk_store_t *st;
    sk_store_worker_t *w;
    h2o_loop_t *loop;
    pthread_mutex_t mu;
    sk_store_req_t *posted[MAXQ];
    size_t nposted;
    char dir[64];
    char path[128];
    int seq; /* for sale names */
} fx_t;

typedef struct backend_s {
    const char *name;
    int redis;
} backend_t;

static const backend_t SQLITE = {"sqlite", 0}, REDIS = {"redis", 1}, CLUSTER = {"redis-cluster", 2};
static const backend_t *backend;
static int redis_port; /* the Redis group's; the cluster group's first node */
static pid_t redis_pid;
#define CLUSTER_NODES 3 /* masters, no replicas: the cases, not failover (tests/e2e/test_cluster.py) */
static int cluster_ports[CLUSTER_NODES];
static pid_t cluster_pids[CLUSTER_NODES];
static char cluster_dir[64];

static void post(void *ctx, sk_store_req_t *req)
{
    fx_t *f = ctx;
    pthread_mutex_lock(&f->mu);
    assert_true(f->nposted < MAXQ);
    f->posted[f->nposted++] = req;
    pthread_mutex_unlock(&f->mu);
}

static void on_answer(sk_store_req_t *req)
{
    (*(int *)req->data)++;
}

/* Turns the worker until every request of reqs[0..n) is answered (each exactly once). */
static void wait_all(fx_t *f, sk_store_req_t **reqs, int *done, size_t n)
{
    int64_t until = sk_mono_ms() + WAIT_MS;
    for (;;) {
        size_t left = 0;
        for (size_t i = 0; i < n; i++) {
            assert_in_range(done[i], 0, 1);
            left += done[i] == 0;
        }
        if (left == 0)
            return;
        assert_true(sk_mono_ms() < until);
        sk_store_worker_flush(f->w);
        h2o_evloop_run(f->loop, 2);
        pthread_mutex_lock(&f->mu);
        size_t m = f->nposted;
        sk_store_req_t *got[MAXQ];
        memcpy(got, f->posted, m * sizeof(*got));
        f->nposted = 0;
        pthread_mutex_unlock(&f->mu);
        for (size_t i = 0; i < m; i++)
            got[i]->cb(got[i]);
    }
    (void)reqs;
}

/* Submits reqs[0..n) at once, then waits for all; returns how many were answered at once. */
static size_t run_n(fx_t *f, sk_store_req_t **reqs, size_t n)
{
    int *done = calloc(n, sizeof(*done));
    size_t at_once = 0;
    for (size_t i = 0; i < n; i++) {
        reqs[i]->cb = on_answer;
        reqs[i]->data = &done[i];
        int rc = sk_store_submit(f->w, reqs[i]);
        if (rc == SK_STORE_DONE) {
            done[i] = 1;
            at_once++;
        } else if (rc < 0) {
            reqs[i]->err = rc;
            done[i] = 1;
            at_once++;
        } else {
            assert_int_equal(rc, 0);
            assert_int_equal(done[i], 0); /* never inside submit */
        }
    }
    wait_all(f, reqs, done, n);
    free(done);
    return at_once;
}

static int run1(fx_t *f, sk_store_req_t *r)
{
    run_n(f, &r, 1);
    return r->err;
}

/* ---- operations ---- */

#define GET (-1) /* change(): an order get */

static sk_sale_conf_t conf_of(int64_t stock, int64_t limit, int64_t hold)
{
    sk_sale_conf_t c = {.stock = stock,
                        .per_user_limit = limit,
                        .hold_seconds = hold,
                        .starts_at = SK_NO_TIME,
                        .ends_at = SK_NO_TIME,
                        .retain_seconds = SK_NO_TIME};
    return c;
}

static void new_sale(fx_t *f, char *sale)
{
    snprintf(sale, SK_SALE_ID_MAX + 1, "s%d", ++f->seq);
}

static int put(fx_t *f, const char *sale, sk_sale_conf_t c, int *created)
{
    sk_store_req_t r = {.op = SK_STORE_SALE_PUT, .conf = c};
    snprintf(r.sale, sizeof(r.sale), "%.*s", SK_SALE_ID_MAX, sale);
    int err = run1(f, &r);
    if (created != NULL)
        *created = r.created;
    sk_store_req_dispose(&r);
    return err;
}

static void put_ok(fx_t *f, const char *sale, sk_sale_conf_t c)
{
    assert_int_equal(put(f, sale, c, NULL), 0);
}

static int view(fx_t *f, const char *sale, sk_sale_view_t *v)
{
    sk_store_req_t r = {.op = SK_STORE_SALE_GET};
    snprintf(r.sale, sizeof(r.sale), "%.*s", SK_SALE_ID_MAX, sale);
    int err = run1(f, &r);
    *v = r.view;
    sk_store_req_dispose(&r);
    return err;
}

static void take_init(sk_store_req_t *r, const char *sale, const char *user, int64_t qty, const char *rid)
{
    memset(r, 0, sizeof(*r));
    r->op = SK_STORE_TAKE;
    snprintf(r->sale, sizeof(r->sale), "%.*s", SK_SALE_ID_MAX, sale);
    r->user = user;
    r->user_len = user ? strlen(user) : 0;
    r->qty = qty;
    r->request_id = rid;
    r->request_id_len = rid ? strlen(rid) : 0;
}

/* A take; its order into *o (owned by the caller) when o is not NULL. */
static int take(fx_t *f, const char *sale, const char *user, int64_t qty, const char *rid, sk_order_t *o, int *created)
{
    sk_store_req_t r;
    take_init(&r, sale, user, qty, rid);
    int err = run1(f, &r);
    if (created != NULL)
        *created = r.created;
    if (o != NULL) {
        *o = r.order;
        memset(&r.order, 0, sizeof(r.order));
    }
    sk_store_req_dispose(&r);
    return err;
}

/* An order get (op -1) or change (a sk_order_op_t). */
static int change(fx_t *f, const char *sale, uint64_t id, int op, sk_order_t *o)
{
    sk_store_req_t r = {.op = op < 0 ? SK_STORE_ORDER_GET : SK_STORE_ORDER_CHANGE, .order_id = id};
    r.change = op < 0 ? SK_OP_CONFIRM_ORDER : (sk_order_op_t)op;
    snprintf(r.sale, sizeof(r.sale), "%.*s", SK_SALE_ID_MAX, sale);
    int err = run1(f, &r);
    if (o != NULL) {
        *o = r.order;
        memset(&r.order, 0, sizeof(r.order));
    }
    sk_store_req_dispose(&r);
    return err;
}

static int64_t now_s(void)
{
    return sk_now_ms() / 1000;
}

/* ---- fixtures ---- */

static int redis_cmd_ok(const char *fmt, ...)
{
    redisContext *c = redisConnect("127.0.0.1", redis_port);
    if (c == NULL || c->err) {
        redisFree(c);
        return -1;
    }
    va_list ap;
    va_start(ap, fmt);
    redisReply *rep = redisvCommand(c, fmt, ap);
    va_end(ap);
    int ok = rep != NULL && rep->type != REDIS_REPLY_ERROR;
    freeReplyObject(rep);
    redisFree(c);
    return ok ? 0 : -1;
}

static int free_port(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t l = sizeof(a);
    if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof(a)) != 0 || getsockname(s, (struct sockaddr *)&a, &l) != 0)
        return -1;
    close(s);
    return ntohs(a.sin_port);
}

static int group_sqlite(void **state)
{
    (void)state;
    backend = &SQLITE;
    return 0;
}

/* A redis-server of our own, for the whole group. */
static int group_redis(void **state)
{
    (void)state;
    backend = &REDIS;
    char port[16];
    redis_port = free_port();
    snprintf(port, sizeof(port), "%d", redis_port);
    if ((redis_pid = fork()) == 0) {
        int null = open("/dev/null", O_WRONLY);
        dup2(null, 1);
        dup2(null, 2);
        execlp("redis-server", "redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly",
               "no", "--enable-debug-command", "yes", "--loglevel", "warning", (char *)NULL);
        _exit(127);
    }
    int64_t until = sk_mono_ms() + WAIT_MS;
    while (redis_cmd_ok("PING") != 0) {
        if (sk_mono_ms() > until)
            return -1;
        usleep(20000);
    }
    return 0;
}

static int redis_on(int port, const char *cmd)
{
    int keep = redis_port, rc;
    redis_port = port;
    rc = redis_cmd_ok("%s", cmd);
    redis_port = keep;
    return rc;
}

/* A Redis Cluster of our own (3 masters), for the whole group: the same cases over it. */
static int group_cluster(void **state)
{
    char cmd[512], port[16];
    size_t used;
    (void)state;
    backend = &CLUSTER;
    snprintf(cluster_dir, sizeof(cluster_dir), "/tmp/sk-cluster-XXXXXX");
    if (mkdtemp(cluster_dir) == NULL)
        return -1;
    used = (size_t)snprintf(cmd, sizeof(cmd), "redis-cli --cluster create");
    for (int i = 0; i < CLUSTER_NODES; i++) {
        char dir[96];
        do /* the cluster bus listens on port + 10000 */
            cluster_ports[i] = free_port();
        while (cluster_ports[i] <= 0 || cluster_ports[i] > 55535);
        snprintf(port, sizeof(port), "%d", cluster_ports[i]);
        snprintf(dir, sizeof(dir), "%s/%d", cluster_dir, i);
        mkdir(dir, 0700);
        if ((cluster_pids[i] = fork()) == 0) {
            int null = open("/dev/null", O_WRONLY);
            dup2(null, 1);
            dup2(null, 2);
            execlp("redis-server", "redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly",
                   "no", "--cluster-enabled", "yes", "--dir", dir, "--loglevel", "warning", (char *)NULL);
            _exit(127);
        }
        used += (size_t)snprintf(cmd + used, sizeof(cmd) - used, " 127.0.0.1:%d", cluster_ports[i]);
    }
    redis_port = cluster_ports[0];
    int64_t until = sk_mono_ms() + WAIT_MS;
    for (int i = 0; i < CLUSTER_NODES; i++)
        while (redis_on(cluster_ports[i], "PING") != 0) {
            if (sk_mono_ms() > until)
                return -1;
            usleep(20000);
        }
    snprintf(cmd + used, sizeof(cmd) - used, " --cluster-yes >/dev/null 2>&1");
    if (system(cmd) != 0)
        return -1;
    /* every node sees the cluster up */
    for (int i = 0; i < CLUSTER_NODES; i++) {
        redisContext *c = redisConnect("127.0.0.1", cluster_ports[i]);
        for (;;) {
            redisReply *rep = c && !c->err ? redisCommand(c, "CLUSTER INFO") : NULL;
            int ok = rep != NULL && rep->type == REDIS_REPLY_STRING && strstr(rep->str, "cluster_state:ok") != NULL;
            freeReplyObject(rep);
            if (ok)
                break;
            if (sk_mono_ms() > until + 20000) {
                redisFree(c);
                return -1;
            }
            usleep(20000);
        }
        redisFree(c);
    }
    return 0;
}

static int group_cluster_down(void **state)
{
    char cmd[128];
    (void)state;
    for (int i = 0; i < CLUSTER_NODES; i++)
        if (cluster_pids[i] > 0) {
            kill(cluster_pids[i], SIGKILL);
            waitpid(cluster_pids[i], NULL, 0);
            cluster_pids[i] = 0;
        }
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", cluster_dir);
    return system(cmd) == 0 ? 0 : -1;
}

static int group_redis_down(void **state)
{
    (void)state;
    if (redis_pid > 0) {
        kill(redis_pid, SIGKILL);
        waitpid(redis_pid, NULL, 0);
        redis_pid = 0;
    }
    return 0;
}

static void open_worker(fx_t *f)
{
    char err[256] = "";
    sk_store_env_t env = {.loop = f->loop, .index = 0, .post = post, .post_ctx = f};
    assert_int_equal(sk_store_worker_open(f->st, &env, &f->w, err, sizeof(err)), 0);
}

static void open_store(fx_t *f)
{
    char url[160], err[256] = "";
    if (backend->redis == 2)
        snprintf(url, sizeof(url), "redis-cluster://127.0.0.1:%d,127.0.0.1:%d", cluster_ports[0], cluster_ports[1]);
    else if (backend->redis)
        snprintf(url, sizeof(url), "redis://127.0.0.1:%d", redis_port);
    else
        snprintf(url, sizeof(url), "sqlite:%s", f->path);
    f->st = sk_store_open(url, 1, NULL, err, sizeof(err));
    if (f->st == NULL)
        fail_msg("cannot open %s: %s", url, err);
    open_worker(f);
}

static void close_store(fx_t *f)
{
    sk_store_worker_close(f->w);
    f->w = NULL;
    sk_store_close(f->st);
    f->st = NULL;
}

static int setup(void **state)
{
    if (backend->redis == 1 && redis_pid <= 0)
        return -1;
    fx_t *f = calloc(1, sizeof(*f));
    pthread_mutex_init(&f->mu, NULL);
    f->loop = h2o_evloop_create();
    snprintf(f->dir, sizeof(f->dir), "/tmp/sk-store-XXXXXX");
    if (mkdtemp(f->dir) == NULL)
        return -1;
    snprintf(f->path, sizeof(f->path), "%s/book.db", f->dir);
    if (backend->redis == 1 && redis_cmd_ok("FLUSHALL") != 0)
        return -1;
    for (int i = 0; backend->redis == 2 && i < CLUSTER_NODES; i++)
        if (redis_on(cluster_ports[i], "FLUSHALL") != 0)
            return -1;
    open_store(f);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx_t *f = *state;
    char cmd[160];
    if (f->st != NULL)
        close_store(f);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
    if (system(cmd) != 0)
        return -1;
    pthread_mutex_destroy(&f->mu);
    free(f);
    return 0;
}

/* ---- the cases both stores answer alike ---- */

static void put_and_get(void **state)
{
    fx_t *f = *state;
    char s[SK_SALE_ID_MAX + 1];
    sk_sale_view_t v;
    int created = -1;
    new_sale(f, s);
    assert_int_equal(view(f, s, &v), SK_ENO_SUCH_SALE);
    assert_int_equal(put(f, s, conf_of(5, 1, 0), &created), 0);
    assert_int_equal(created, 1);
    assert_int_equal(put(f, s, conf_of(7, 2, 0), &created), 0);
    assert_int_equal(created, 0);
    assert_int_equal(view(f, s, &v), 0);
    assert_string_equal(v.id, s);
    assert_int_equal(v.conf.stock, 7);
    assert_int_equal(v.conf.per_user_limit, 2);
    assert_int_equal(v.sold, 0);
    assert_int_equal(v.held, 0);

    sk_store_req_t l = {.op = SK_STORE_SALE_LIST};
    char s2[SK_SALE_ID_MAX + 1];
    new_sale(f, s2);
    put_ok(f, s2, conf_of(1, 0, 0));
    assert_int_equal(run1(f, &l), 0);
    assert_int_equal(l.nviews, 2);
    assert_string_equal(l.views[0].id, s); /* sorted by id */
    assert_string_equal(l.views[1].id, s2);
    sk_store_req_dispose(&l);
}

static void unknown_sale(void **state)
{
    fx_t *f = *state;
    assert_int_equal(take(f, "nope", "u", 1, NULL, NULL, NULL), SK_ENO_SUCH_SALE);
    assert_int_equal(change(f, "nope", 1, GET, NULL), SK_ENO_SUCH_SALE);
}

/* 200 takes at once for 50 units: exactly 50 orders, ids 1..50 each once, the rest sold out. */
static void storm_exact(void **state)
{
    enum { N = 200, STOCK = 50 };
    fx_t *f = *state;
    char s[SK_SALE_ID_MAX + 1], users[N][16];
    sk_store_req_t *r = calloc(N, sizeof(*r)), *p[N];
    new_sale(f, s);
    put_ok(f, s, conf_of(STOCK, 1, 0));
    for (int i = 0; i < N; i++) {
        snprintf(users[i], sizeof(users[i]), "u%d", i);
        take_init(&r[i], s, users[i], 1, NULL);
        p[i] = &r[i];
    }
    run_n(f, p, N);
    int won = 0, sold_out = 0, seen[STOCK + 1] = {0};
    for (int i = 0; i < N; i++) {
        if (r[i].err == 0) {
            won++;
            assert_int_equal(r[i].created, 1);
            assert_in_range(r[i].order.id, 1, STOCK);
            seen[r[i].order.id]++;
            assert_string_equal(r[i].order.user, users[i]);
            assert_int_equal(r[i].order.status, SK_ORDER_CONFIRMED);
        } else {
            assert_int_equal(r[i].err, SK_ESOLD_OUT);
            sold_out++;
        }
        sk_store_req_dispose(&r[i]);
    }
    assert_int_equal(won, STOCK);
    assert_int_equal(sold_out, N - STOCK);
    for (int i = 1; i <= STOCK; i++)
        assert_int_equal(seen[i], 1);
    sk_sale_view_t v;
    assert_int_equal(view(f, s, &v), 0);
    assert_int_equal(v.sold, STOCK);
    assert_int_equal(take(f, s, "late", 1, NULL, NULL, NULL), SK_ESOLD_OUT);
    free(r);
}

static void user_limit(void **state)
{
    fx_t *f = *state;
    char s[SK_SALE_ID_MAX + 1];
    new_sale(f, s);
    put_ok(f, s, conf_of(10, 3, 0));
    assert_int_equal(take(f, s, "alice", 2, NULL, NULL, NULL), 0);
    assert_int_equal(take(f, s, "alice", 2, NULL, NULL, NULL), SK_EUSER_LIMIT);
    assert_int_equal(take(f, s, "alice", 1, NULL, NULL, NULL), 0);
    assert_int_equal(take(f, s, "alice", 1, NULL, NULL, NULL), SK_EUSER_LIMIT);
    assert_int_equal(take(f, s, "bob", 3, NULL, NULL, NULL), 0);
    assert_int_equal(take(f, s, NULL, 1, NULL, NULL, NULL), SK_EBAD_REQUEST); /* a limit needs a user */
    sk_sale_view_t v;
    assert_int_equal(view(f, s, &v), 0);
    assert_int_equal(v.sold, 6);
}

static void request_ids(void **state)
{
    fx_t *f = *state;
    char s[SK_SALE_ID_MAX + 1];
    sk_order_t a, b;
    int created;
    new_sale(f, s);
    put_ok(f, s, conf_of(3, 0, 0));
    assert_int_equal(take(f, s, "alice", 1, "r-1", &a, &created), 0);
    assert_int_equal(created, 1);
    assert_int_equal(take(f, s, "alice", 1, "r-1", &b, &created), 0);
    assert_int_equal(created, 0);
    assert_int_equal(a.id, b.id);
    assert_string_equal(b.request_id, "r-1");
    sk_order_dispose(&a);
    sk_order_dispose(&b);
    assert_int_equal(take(f, s, "bob", 1, "r-1", NULL, NULL), SK_EREQUEST_ID_REUSED);
    assert_int_equal(take(f, s, "alice", 2, "r-1", NULL, NULL), SK_EREQUEST_ID_REUSED);

    /* the same request id twice at once (a client retrying before its answer): one order, and
     * both answers name it */
    sk_store_req_t r[2], *p[2] = {&r[0], &r[1]};
    take_init(&r[0], s, "carol", 1, "r-2");
    take_init(&r[1], s, "carol", 1, "r-2");
    run_n(f, p, 2);
    assert_int_equal(r[0].err, 0);
    assert_int_equal(r[1].err, 0);
    assert_int_equal(r[0].created + r[1].created, 1);
    assert_int_equal(r[0].order.id, r[1].order.id);
    sk_store_req_dispose(&r[0]);
    sk_store_req_dispose(&r[1]);

    /* a replay is answered even when sold out */
    assert_int_equal(take(f, s, "dave", 1, "r-3", NULL, NULL), 0);
    assert_int_equal(take(f, s, "erin", 1, "r-4", NULL, NULL), SK_ESOLD_OUT);
    assert_int_equal(take(f, s, "dave", 1, "r-3", NULL, &created), 0);
    assert_int_equal(created, 0);
}

static void windows(void **state)
{
    fx_t *f = *state;
    char s[SK_SALE_ID_MAX + 1];
    sk_sale_conf_t c = conf_of(5, 0, 0);
    new_sale(f, s);
    c.starts_at = now_s() + 3600;
    put_ok(f, s, c);
    assert_int_equal(take(f, s, "u", 1, NULL, NULL, NULL), SK_ENOT_STARTED);
    c.starts_at = now_s() - 10;
    c.ends_at = now_s() - 1;
    put_ok(f, s, c);
    assert_int_equal(take(f, s, "u", 1, NULL, NULL, NULL), SK_EENDED);
    c.ends_at = now_s() + 3600;
    put_ok(f, s, c);
    assert_int_equal(take(f, s, "u", 1, NULL, NULL, NULL), 0);
}

static void stock_changes(void **state)
{
    fx_t *f = *state;
    char s[SK_SALE_ID_MAX + 1];
    new_sale(f, s);
    put_ok(f, s, conf_of(2, 0, 0));
    assert_int_equal(take(f, s, "a", 2, NULL, NULL, NULL), 0);
    assert_int_equal(take(f, s, "b", 1, NULL, NULL, NULL), SK_ESOLD_OUT);
    assert_int_equal(put(f, s, conf_of(1, 0, 0), NULL), SK_ESTOCK_BELOW_TAKEN);
    put_ok(f, s, conf_of(3, 0, 0));
    assert_int_equal(take(f, s, "b", 1, NULL, NULL, NULL), 0);
    assert_int_equal(take(f, s, "c", 1, NULL, NULL, NULL), SK_ESOLD_OUT);
    sk_sale_view_t v;
    assert_int_equal(view(f, s, &v), 0);
    assert_int_equal(v.sold, 3);
    assert_int_equal(v.conf.stock, 3);
}

static void holds(void **state)
{
    fx_t *f = *state;
    char s[SK_SALE_ID_MAX + 1];
    sk_order_t a, b, o;
    sk_sale_view_t v;
    new_sale(f, s);
    put_ok(f, s, conf_of(2, 1, 600));
    assert_int_equal(take(f, s, "alice", 1, NULL, &a, NULL), 0);
    assert_int_equal(a.status, SK_ORDER_HELD);
    assert_true(a.expires_at >= now_s() + 599);
    assert_int_equal(take(f, s, "bob", 1, NULL, &b, NULL), 0);
    assert_int_equal(view(f, s, &v), 0);
    assert_int_equal(v.held, 2);
    assert_int_equal(v.sold, 0);
    assert_int_equal(take(f, s, "carol", 1, NULL, NULL, NULL), SK_ESOLD_OUT);

    assert_int_equal(change(f, s, a.id, SK_OP_CONFIRM_ORDER, &o), 0);
    assert_int_equal(o.status, SK_ORDER_CONFIRMED);
    sk_order_dispose(&o);
    assert_int_equal(change(f, s, a.id, SK_OP_CONFIRM_ORDER, &o), 0); /* again: no change */
    assert_int_equal(o.status, SK_ORDER_CONFIRMED);
    sk_order_dispose(&o);
    assert_int_equal(change(f, s, b.id, SK_OP_CANCEL_ORDER, &o), 0);
    assert_int_equal(o.status, SK_ORDER_CANCELLED);
    sk_order_dispose(&o);
    assert_int_equal(change(f, s, b.id, SK_OP_CANCEL_ORDER, NULL), 0); /* again: no change */
    assert_int_equal(change(f, s, b.id, SK_OP_CONFIRM_ORDER, NULL), SK_EORDER_NOT_HELD);
    assert_int_equal(change(f, s, 999, SK_OP_CONFIRM_ORDER, NULL), SK_ENO_SUCH_ORDER);
    assert_int_equal(view(f, s, &v), 0);
    assert_int_equal(v.sold, 1);
    assert_int_equal(v.held, 0);
    /* bob's unit and allowance came back */
    assert_int_equal(take(f, s, "bob", 1, NULL, NULL, NULL), 0);
    assert_int_equal(change(f, s, a.id, GET, &o), 0);
    assert_int_equal(o.status, SK_ORDER_CONFIRMED);
    assert_string_equal(o.user, "alice");
    sk_order_dispose(&o);
    /* a confirmed order may be cancelled too (a refund): its unit comes back */
    assert_int_equal(change(f, s, a.id, SK_OP_CANCEL_ORDER, &o), 0);
    assert_int_equal(o.status, SK_ORDER_CANCELLED);
    sk_order_dispose(&o);
    assert_int_equal(view(f, s, &v), 0);
    assert_int_equal(v.sold, 0);
    assert_int_equal(v.held, 1);
    sk_order_dispose(&a);
    sk_order_dispose(&b);
}

/* A hold of 1 s expires by itself: its unit comes back (waited for on the sale's state). */
static void hold_expiry(void **state)
{
    fx_t *f = *state;
    char s[SK_SALE_ID_MAX + 1];
    sk_order_t a, o;
    sk_sale_view_t v;
    new_sale(f, s);
    put_ok(f, s, conf_of(1, 0, 1));
    assert_int_equal(take(f, s, "alice", 1, NULL, &a, NULL), 0);
    assert_int_equal(take(f, s, "bob", 1, NULL, NULL, NULL), SK_ESOLD_OUT);
    int64_t until = sk_mono_ms() + WAIT_MS;
    do {
        assert_true(sk_mono_ms() < until);
        h2o_evloop_run(f->loop, 50);
        assert_int_equal(view(f, s, &v), 0);
    } while (v.held != 0);
    assert_int_equal(v.sold, 0);
    assert_int_equal(change(f, s, a.id, GET, &o), 0);
    assert_int_equal(sk_order_effective(o.status, o.expires_at, now_s()), SK_ORDER_EXPIRED);
    sk_order_dispose(&o);
    assert_int_equal(change(f, s, a.id, SK_OP_CONFIRM_ORDER, NULL), SK_EORDER_NOT_HELD);
    assert_int_equal(take(f, s, "bob", 1, NULL, NULL, NULL), 0);
    sk_order_dispose(&a);
}

/* retain_seconds on every backend (on Redis through the slot's sweep list, reap.lua), and the
 * winners feed on every backend (on a Redis Cluster once worker 0's relay has copied the event). */
static void retain_and_feed(void **state)
{
    fx_t *f = *state;
    char s[SK_SALE_ID_MAX + 1];
    sk_sale_view_t v;
    new_sale(f, s);
    sk_sale_conf_t c = conf_of(5, 0, 0);
    c.ends_at = now_s() + 1;
    c.retain_seconds = 0;
    put_ok(f, s, c);
    assert_int_equal(take(f, s, "alice", 1, NULL, NULL, NULL), 0);
    int seen = 0;
    int64_t until = sk_mono_ms() + WAIT_MS;
    for (;;) {
        sk_store_req_t r = {.op = SK_STORE_FEED, .limit = 1000};
        assert_int_equal(run1(f, &r), 0);
        for (size_t i = 0; i < r.nevents; i++)
            seen += strcmp(r.events[i].order.sale, s) == 0 && r.events[i].kind == SK_FEED_CREATED;
        sk_store_req_dispose(&r);
        if (seen > 0 || backend->redis != 2) /* a cluster's relay copies it within a round */
            break;
        assert_true(sk_mono_ms() < until);
        h2o_evloop_run(f->loop, 50);
    }
    assert_int_equal(seen, 1);
    do { /* deleted once ends_at + 0 s has passed */
        assert_true(sk_mono_ms() < until);
        h2o_evloop_run(f->loop, 50);
    } while (view(f, s, &v) == 0);
    assert_int_equal(view(f, s, &v), SK_ENO_SUCH_SALE);
}

static void order_list(void **state)
{
    fx_t *f = *state;
    char s[SK_SALE_ID_MAX + 1], u[16];
    new_sale(f, s);
    put_ok(f, s, conf_of(10, 0, 0));
    for (int i = 1; i <= 5; i++) {
        snprintf(u, sizeof(u), "u%d", i);
        assert_int_equal(take(f, s, u, 1, NULL, NULL, NULL), 0);
    }
    sk_store_req_t r = {.op = SK_STORE_ORDER_LIST, .order_id = 1, .limit = 3};
    snprintf(r.sale, sizeof(r.sale), "%.*s", SK_SALE_ID_MAX, s);
    assert_int_equal(run1(f, &r), 0);
    assert_int_equal(r.norders, 3);
    assert_int_equal(r.orders[0].id, 2);
    assert_int_equal(r.orders[2].id, 4);
    assert_string_equal(r.orders[0].user, "u2");
    assert_int_equal(r.more, 1);
    sk_store_req_dispose(&r);
    r = (sk_store_req_t){.op = SK_STORE_ORDER_LIST, .order_id = 4, .limit = 3};
    snprintf(r.sale, sizeof(r.sale), "%.*s", SK_SALE_ID_MAX, s);
    assert_int_equal(run1(f, &r), 0);
    assert_int_equal(r.norders, 1);
    assert_int_equal(r.orders[0].id, 5);
    assert_int_equal(r.more, 0);
    sk_store_req_dispose(&r);
}

/* Closing and opening the store again (a restart) shows the same sales and orders. */
static void reopen(void **state)
{
    fx_t *f = *state;
    char s[SK_SALE_ID_MAX + 1];
    sk_sale_view_t v;
    sk_order_t o;
    new_sale(f, s);
    put_ok(f, s, conf_of(3, 1, 600));
    assert_int_equal(take(f, s, "alice", 1, "r-a", NULL, NULL), 0);
    assert_int_equal(take(f, s, "bob", 1, NULL, NULL, NULL), 0);
    assert_int_equal(change(f, s, 2, SK_OP_CONFIRM_ORDER, NULL), 0);
    close_store(f);
    open_store(f);
    assert_int_equal(view(f, s, &v), 0);
    assert_int_equal(v.conf.stock, 3);
    assert_int_equal(v.sold, 1);
    assert_int_equal(v.held, 1);
    assert_int_equal(take(f, s, "alice", 1, NULL, NULL, NULL), SK_EUSER_LIMIT);
    int created = -1;
    assert_int_equal(take(f, s, "alice", 1, "r-a", &o, &created), 0);
    assert_int_equal(created, 0);
    assert_int_equal(o.id, 1);
    sk_order_dispose(&o);
    assert_int_equal(take(f, s, "carol", 1, NULL, &o, NULL), 0);
    assert_int_equal(o.id, 3); /* ids go on */
    sk_order_dispose(&o);
}

static int del(fx_t *f, const char *sale, sk_sale_view_t *v)
{
    sk_store_req_t r = {.op = SK_STORE_SALE_DELETE};
    snprintf(r.sale, sizeof(r.sale), "%.*s", SK_SALE_ID_MAX, sale);
    int err = run1(f, &r);
    if (v != NULL)
        *v = r.view;
    sk_store_req_dispose(&r);
    return err;
}

/* Keys of a sale left in Redis (SCAN sk:{SALE}*), or rows of it in the order book's live tables. */
static long leftovers(fx_t *f, const char *sale)
{
    long n = 0;
    for (int node = 0; backend->redis && node < (backend->redis == 2 ? CLUSTER_NODES : 1); node++) {
        redisContext *c = redisConnect("127.0.0.1", backend->redis == 2 ? cluster_ports[node] : redis_port);
        assert_true(c != NULL && c->err == 0);
        char cursor[32] = "0";
        do {
            redisReply *rep = redisCommand(c, "SCAN %s MATCH sk:{%s}* COUNT 1000", cursor, sale);
            assert_true(rep != NULL && rep->type == REDIS_REPLY_ARRAY && rep->elements == 2);
            snprintf(cursor, sizeof(cursor), "%s", rep->element[0]->str);
            n += (long)rep->element[1]->elements;
            freeReplyObject(rep);
        } while (strcmp(cursor, "0") != 0);
        redisReply *rep = redisCommand(c, "SISMEMBER sk:slot:{%s}:sales %s",
                                       sk_redis_slot_tag(sk_redis_sale_slot(sale, strlen(sale))), sale);
        n += rep->type == REDIS_REPLY_INTEGER ? rep->integer : 0; /* MOVED: another node's */
        freeReplyObject(rep);
        redisFree(c);
        if (node + 1 == (backend->redis == 2 ? CLUSTER_NODES : 1))
            return n;
    }
    sqlite3 *db;
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_open_v2(f->path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "SELECT (SELECT count(*) FROM sales WHERE sale = ?1) +"
                                        " (SELECT count(*) FROM orders WHERE sale = ?1)",
                                        -1, &st, NULL),
                     SQLITE_OK);
    sqlite3_bind_text(st, 1, sale, -1, SQLITE_STATIC);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
}

/* A sale is deleted once it has ended and holds no held order: every trace of it goes from the
 * live data, and a sale made again under its id goes on after its order ids, also after a
 * restart. */
static void delete_sale(void **state)
{
    fx_t *f = *state;
    char s[SK_SALE_ID_MAX + 1];
    sk_sale_view_t v;
    sk_order_t a, o;
    sk_sale_conf_t c = conf_of(5, 0, 600);
    new_sale(f, s);
    assert_int_equal(del(f, s, NULL), SK_ENO_SUCH_SALE);
    put_ok(f, s, c);
    assert_int_equal(take(f, s, "alice", 2, "r-a", &a, NULL), 0);
    assert_int_equal(take(f, s, "bob", 1, NULL, &o, NULL), 0);
    assert_int_equal(change(f, s, o.id, SK_OP_CONFIRM_ORDER, NULL), 0);
    sk_order_dispose(&o);
    assert_int_equal(del(f, s, NULL), SK_ESALE_ACTIVE); /* no end */
    c.ends_at = now_s() + 3600;
    put_ok(f, s, c);
    assert_int_equal(del(f, s, NULL), SK_ESALE_ACTIVE); /* not ended yet */
    c.ends_at = now_s();
    put_ok(f, s, c);
    assert_int_equal(del(f, s, NULL), SK_ESALE_ACTIVE); /* alice's order is held */
    assert_int_equal(change(f, s, a.id, SK_OP_CANCEL_ORDER, NULL), 0);
    sk_order_dispose(&a);
    assert_int_equal(del(f, s, &v), 0);
    assert_string_equal(v.id, s);
    assert_int_equal(v.sold, 1);
    assert_int_equal(v.held, 0);
    assert_int_equal(view(f, s, &v), SK_ENO_SUCH_SALE);
    assert_int_equal(take(f, s, "carol", 1, NULL, NULL, NULL), SK_ENO_SUCH_SALE);
    assert_int_equal(change(f, s, 1, GET, NULL), SK_ENO_SUCH_SALE);
    assert_int_equal(del(f, s, NULL), SK_ENO_SUCH_SALE);
    sk_store_req_t l = {.op = SK_STORE_SALE_LIST};
    assert_int_equal(run1(f, &l), 0);
    assert_int_equal(l.nviews, 0);
    sk_store_req_dispose(&l);
    assert_int_equal(leftovers(f, s), 0);

    /* the id again: a new sale, whose order ids go on after the deleted one's (2) */
    int created = 0;
    assert_int_equal(put(f, s, conf_of(3, 0, 0), &created), 0);
    assert_int_equal(created, 1);
    assert_int_equal(take(f, s, "alice", 1, "r-a", &o, &created), 0);
    assert_int_equal(created, 1); /* the request id died with its sale */
    assert_int_equal(o.id, 3);
    sk_order_dispose(&o);
    close_store(f);
    open_store(f);
    assert_int_equal(take(f, s, "dave", 1, NULL, &o, NULL), 0);
    assert_int_equal(o.id, 4);
    sk_order_dispose(&o);
    /* deleted again after a restart, then made again: still no id given twice */
    c = conf_of(3, 0, 0);
    c.ends_at = now_s();
    put_ok(f, s, c);
    assert_int_equal(del(f, s, NULL), 0);
    close_store(f);
    open_store(f);
    put_ok(f, s, conf_of(3, 0, 0));
    assert_int_equal(take(f, s, "erin", 1, NULL, &o, NULL), 0);
    assert_int_equal(o.id, 5);
    sk_order_dispose(&o);
}

/* Deleting many sales under takes of others: the table, its memory and the survivors stay
 * whole (the embedded store frees a deleted sale once no worker can hold it). */
static void delete_many(void **state)
{
    enum { N = 300 };
    fx_t *f = *state;
    char keep[SK_SALE_ID_MAX + 1], ids[N][SK_SALE_ID_MAX + 1];
    new_sale(f, keep);
    put_ok(f, keep, conf_of(N, 0, 0));
    for (int i = 0; i < N; i++) {
        sk_sale_conf_t c = conf_of(1, 0, 0);
        c.ends_at = now_s() + 3600;
        new_sale(f, ids[i]);
        put_ok(f, ids[i], c);
        assert_int_equal(take(f, ids[i], "u", 1, NULL, NULL, NULL), 0);
        c.ends_at = now_s();
        put_ok(f, ids[i], c);
    }
    sk_store_req_t *r = calloc(2 * N, sizeof(*r)), *p[2 * N];
    char users[N][16];
    for (int i = 0; i < N; i++) {
        r[2 * i].op = SK_STORE_SALE_DELETE;
        snprintf(r[2 * i].sale, sizeof(r[2 * i].sale), "%.*s", SK_SALE_ID_MAX, ids[i]);
        snprintf(users[i], sizeof(users[i]), "k%d", i);
        take_init(&r[2 * i + 1], keep, users[i], 1, NULL);
        p[2 * i] = &r[2 * i];
        p[2 * i + 1] = &r[2 * i + 1];
    }
    run_n(f, p, 2 * N);
    for (int i = 0; i < 2 * N; i++) {
        assert_int_equal(r[i].err, 0);
        sk_store_req_dispose(&r[i]);
    }
    free(r);
    sk_sale_view_t v;
    assert_int_equal(view(f, keep, &v), 0);
    assert_int_equal(v.sold, N);
    sk_store_req_t l = {.op = SK_STORE_SALE_LIST};
    assert_int_equal(run1(f, &l), 0);
    assert_int_equal(l.nviews, 1);
    sk_store_req_dispose(&l);
    for (int i = 0; i < N; i += 37)
        assert_int_equal(view(f, ids[i], &v), SK_ENO_SUCH_SALE);
}

/* ---- the embedded store's faults ---- */

/* An SQLite VFS over the default one whose xSync fails while fail_sync is set. */
static atomic_int fail_sync;
static sqlite3_vfs shim, *real_vfs;

typedef struct sfile_s {
    sqlite3_file base;
    sqlite3_file *real; /* follows this struct in the same allocation */
} sfile_t;

#define REAL(f) (((sfile_t *)(f))->real)
static int f_close(sqlite3_file *f)
{
    return REAL(f)->pMethods->xClose(REAL(f));
}
static int f_read(sqlite3_file *f, void *p, int n, sqlite3_int64 o)
{
    return REAL(f)->pMethods->xRead(REAL(f), p, n, o);
}
static int f_write(sqlite3_file *f, const void *p, int n, sqlite3_int64 o)
{
    return REAL(f)->pMethods->xWrite(REAL(f), p, n, o);
}
static int f_truncate(sqlite3_file *f, sqlite3_int64 n)
{
    return REAL(f)->pMethods->xTruncate(REAL(f), n);
}
static int f_sync(sqlite3_file *f, int flags)
{
    if (atomic_load(&fail_sync))
        return SQLITE_IOERR_FSYNC;
    return REAL(f)->pMethods->xSync(REAL(f), flags);
}
static int f_size(sqlite3_file *f, sqlite3_int64 *n)
{
    return REAL(f)->pMethods->xFileSize(REAL(f), n);
}
static int f_lock(sqlite3_file *f, int l)
{
    return REAL(f)->pMethods->xLock(REAL(f), l);
}
static int f_unlock(sqlite3_file *f, int l)
{
    return REAL(f)->pMethods->xUnlock(REAL(f), l);
}
static int f_check(sqlite3_file *f, int *out)
{
    return REAL(f)->pMethods->xCheckReservedLock(REAL(f), out);
}
static int f_fctl(sqlite3_file *f, int op, void *arg)
{
    return REAL(f)->pMethods->xFileControl(REAL(f), op, arg);
}
static int f_sector(sqlite3_file *f)
{
    return REAL(f)->pMethods->xSectorSize(REAL(f));
}
static int f_dev(sqlite3_file *f)
{
    return REAL(f)->pMethods->xDeviceCharacteristics(REAL(f));
}
static int f_shmmap(sqlite3_file *f, int pg, int sz, int ext, void volatile **p)
{
    return REAL(f)->pMethods->xShmMap(REAL(f), pg, sz, ext, p);
}
static int f_shmlock(sqlite3_file *f, int off, int n, int flags)
{
    return REAL(f)->pMethods->xShmLock(REAL(f), off, n, flags);
}
static void f_shmbarrier(sqlite3_file *f)
{
    REAL(f)->pMethods->xShmBarrier(REAL(f));
}
static int f_shmunmap(sqlite3_file *f, int del)
{
    return REAL(f)->pMethods->xShmUnmap(REAL(f), del);
}
static int f_fetch(sqlite3_file *f, sqlite3_int64 o, int n, void **p)
{
    return REAL(f)->pMethods->xFetch(REAL(f), o, n, p);
}
static int f_unfetch(sqlite3_file *f, sqlite3_int64 o, void *p)
{
    return REAL(f)->pMethods->xUnfetch(REAL(f), o, p);
}

static const sqlite3_io_methods shim_methods = {
    3,      f_close,  f_read, f_write,  f_truncate, f_sync,       f_size,     f_lock,  f_unlock,  f_check,
    f_fctl, f_sector, f_dev,  f_shmmap, f_shmlock,  f_shmbarrier, f_shmunmap, f_fetch, f_unfetch,
};

static int shim_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *file, int flags, int *out)
{
    sfile_t *s = (sfile_t *)file;
    (void)vfs;
    s->real = (sqlite3_file *)(s + 1);
    s->base.pMethods = NULL;
    int rc = real_vfs->xOpen(real_vfs, name, s->real, flags, out);
    if (rc == SQLITE_OK && s->real->pMethods != NULL) {
        assert_true(s->real->pMethods->iVersion >= 3);
        s->base.pMethods = &shim_methods;
    }
    return rc;
}

/* Installs the shim as the default VFS, once. */
static void shim_install(void)
{
    if (real_vfs != NULL)
        return;
    real_vfs = sqlite3_vfs_find(NULL);
    shim = *real_vfs;
    shim.zName = "sk-failsync";
    shim.szOsFile = (int)sizeof(sfile_t) + real_vfs->szOsFile;
    shim.xOpen = shim_open;
    assert_int_equal(sqlite3_vfs_register(&shim, 1), SQLITE_OK);
}

/* fsync fails: the take is refused as unknown (503), its unit is not sold, the store turns
 * unhealthy, and comes back by itself when fsync works again. */
static void embed_failed_commit(void **state)
{
    fx_t *f = *state;
    char s[SK_SALE_ID_MAX + 1];
    sk_sale_view_t v;
    close_store(f);
    shim_install();
    open_store(f);
    new_sale(f, s);
    put_ok(f, s, conf_of(2, 0, 0));
    atomic_store(&fail_sync, 1);
    assert_int_equal(take(f, s, "alice", 1, "r-1", NULL, NULL), SK_EUNAVAILABLE);
    assert_int_equal(sk_store_healthy(f->st), 0);
    assert_int_equal(take(f, s, "bob", 1, NULL, NULL, NULL), SK_EUNAVAILABLE); /* at once, while failing */
    assert_int_equal(view(f, s, &v), 0);
    assert_int_equal(v.sold, 0);
    atomic_store(&fail_sync, 0);
    int64_t until = sk_mono_ms() + WAIT_MS;
    while (!sk_store_healthy(f->st)) {
        assert_true(sk_mono_ms() < until);
        usleep(10000);
    }
    int created = -1;
    assert_int_equal(take(f, s, "alice", 1, "r-1", NULL, &created), 0);
    assert_int_equal(created, 1); /* the failed one left no trace */
    assert_int_equal(view(f, s, &v), 0);
    assert_int_equal(v.sold, 1);
    close_store(f);
    open_store(f);
    assert_int_equal(view(f, s, &v), 0);
    assert_int_equal(v.sold, 1);
}

/* "End now" while a take is in flight (the committer holds it: SECKILL_TEST_TAKE_DELAY_MS): the
 * take is refused as ended, and nothing is sold. */
static void embed_end_races_take(void **state)
{
    fx_t *f = *state;
    char s[SK_SALE_ID_MAX + 1];
    sk_sale_view_t v;
    close_store(f);
    setenv("SECKILL_TEST_TAKE_DELAY_MS", "300", 1);
    open_store(f);
    unsetenv("SECKILL_TEST_TAKE_DELAY_MS");
    new_sale(f, s);
    put_ok(f, s, conf_of(5, 0, 0));
    sk_store_req_t t, p = {.op = SK_STORE_SALE_PUT, .conf = conf_of(5, 0, 0)}, *r[2] = {&t, &p};
    take_init(&t, s, "delay-1", 1, NULL);
    snprintf(p.sale, sizeof(p.sale), "%.*s", SK_SALE_ID_MAX, s);
    p.conf.ends_at = now_s();
    run_n(f, r, 2);
    assert_int_equal(p.err, 0);
    assert_int_equal(t.err, SK_EENDED);
    assert_int_equal(view(f, s, &v), 0);
    assert_int_equal(v.sold, 0);
    sk_store_req_dispose(&t);
    sk_store_req_dispose(&p);
    /* and a stock lowered under it: deferred, then decided against the new stock */
    char s2[SK_SALE_ID_MAX + 1];
    new_sale(f, s2);
    put_ok(f, s2, conf_of(1, 0, 0));
    take_init(&t, s2, "delay-2", 1, NULL);
    p = (sk_store_req_t){.op = SK_STORE_SALE_PUT, .conf = conf_of(0, 0, 0)};
    snprintf(p.sale, sizeof(p.sale), "%.*s", SK_SALE_ID_MAX, s2);
    run_n(f, r, 2);
    assert_int_equal(view(f, s2, &v), 0);
    if (t.err == 0) { /* the take won: the stock may not go under it */
        assert_int_equal(p.err, SK_ESTOCK_BELOW_TAKEN);
        assert_int_equal(v.conf.stock, 1);
        assert_int_equal(v.sold, 1);
    } else { /* the PUT won: the take is decided again under it */
        assert_int_equal(t.err, SK_ESOLD_OUT);
        assert_int_equal(p.err, 0);
        assert_int_equal(v.conf.stock, 0);
        assert_int_equal(v.sold, 0);
    }
    sk_store_req_dispose(&t);
    sk_store_req_dispose(&p);
}

/* ---- the Redis store's faults ---- */

/* The scripts flushed from Redis: the next call answers NOSCRIPT and is sent again as EVAL. */
static void redis_noscript(void **state)
{
    fx_t *f = *state;
    char s[SK_SALE_ID_MAX + 1];
    new_sale(f, s);
    put_ok(f, s, conf_of(3, 0, 0));
    assert_int_equal(take(f, s, "a", 1, NULL, NULL, NULL), 0);
    assert_int_equal(redis_cmd_ok("SCRIPT FLUSH"), 0);
    assert_int_equal(take(f, s, "b", 1, NULL, NULL, NULL), 0);
    sk_sale_view_t v;
    assert_int_equal(view(f, s, &v), 0);
    assert_int_equal(v.sold, 2);
}

/* Takes until one is answered otherwise than `unavailable`, within WAIT_MS. */
static int take_until_answered(fx_t *f, const char *sale, const char *user, const char *rid, int *created)
{
    int64_t until = sk_mono_ms() + WAIT_MS;
    int err;
    while ((err = take(f, sale, user, 1, rid, NULL, created)) == SK_EUNAVAILABLE) {
        assert_true(sk_mono_ms() < until);
        h2o_evloop_run(f->loop, 20);
    }
    return err;
}

/* The store's connection killed by Redis: it reconnects by itself. */
static void redis_dropped(void **state)
{
    fx_t *f = *state;
    char s[SK_SALE_ID_MAX + 1];
    new_sale(f, s);
    put_ok(f, s, conf_of(3, 0, 0));
    assert_int_equal(take(f, s, "a", 1, NULL, NULL, NULL), 0);
    assert_int_equal(redis_cmd_ok("CLIENT KILL TYPE normal"), 0);
    assert_int_equal(take_until_answered(f, s, "b", NULL, NULL), 0);
    assert_int_equal(sk_store_healthy(f->st), 1);
}

#define PROBE_MS 300 /* a PING not answered by then: Redis is asleep */

/* Returns once Redis no longer answers a PING within PROBE_MS (it runs a DEBUG SLEEP sent
 * before), within WAIT_MS. A fixed pause instead lost the race on a loaded CI machine. */
static void redis_wait_asleep(void)
{
    int64_t until = sk_mono_ms() + WAIT_MS;
    for (;;) {
        assert_true(sk_mono_ms() < until);
        redisContext *p = redisConnect("127.0.0.1", redis_port);
        assert_true(p != NULL && p->err == 0);
        struct timeval tv = {.tv_sec = 0, .tv_usec = PROBE_MS * 1000};
        assert_int_equal(redisSetTimeout(p, tv), REDIS_OK);
        redisReply *r = redisCommand(p, "PING");
        int asleep = r == NULL;
        if (r != NULL)
            freeReplyObject(r);
        redisFree(p);
        if (asleep)
            return;
        usleep(10000);
    }
}

/* Redis stalls past the deadline (DEBUG SLEEP): the take is answered unavailable (outcome
 * unknown). Redis runs it when it wakes, so the retry with the same request_id finds that
 * order: no second unit is taken. */
static void redis_deadline(void **state)
{
    fx_t *f = *state;
    char s[SK_SALE_ID_MAX + 1];
    new_sale(f, s);
    put_ok(f, s, conf_of(3, 0, 0));
    assert_int_equal(take(f, s, "warm", 1, NULL, NULL, NULL), 0);
    redisContext *c = redisConnect("127.0.0.1", redis_port);
    assert_true(c != NULL && c->err == 0);
    redisAppendCommand(c, "DEBUG SLEEP 4");
    int wdone = 0;
    while (!wdone)
        assert_int_equal(redisBufferWrite(c, &wdone), REDIS_OK);
    redis_wait_asleep(); /* a loaded machine may take its time to start the sleep */
    int64_t t0 = sk_mono_ms();
    assert_int_equal(take(f, s, "alice", 1, "r-x", NULL, NULL), SK_EUNAVAILABLE);
    /* Redis sleeps 4 s from at most PROBE_MS before t0: the deadline (SK_REDIS_TIMEOUT_MS), not
     * Redis waking, ended the wait */
    assert_true(sk_mono_ms() - t0 < 4000 - PROBE_MS - 200);
    void *rep = NULL;
    assert_int_equal(redisGetReply(c, &rep), REDIS_OK); /* Redis awake */
    freeReplyObject(rep);
    redisFree(c);
    int created = -1;
    assert_int_equal(take_until_answered(f, s, "alice", "r-x", &created), 0);
    assert_int_equal(created, 0);
    sk_sale_view_t v;
    assert_int_equal(view(f, s, &v), 0);
    assert_int_equal(v.sold, 2);
}

#define CASES                                                                                                          \
    cmocka_unit_test_setup_teardown(put_and_get, setup, teardown),                                                     \
        cmocka_unit_test_setup_teardown(unknown_sale, setup, teardown),                                                \
        cmocka_unit_test_setup_teardown(storm_exact, setup, teardown),                                                 \
        cmocka_unit_test_setup_teardown(user_limit, setup, teardown),                                                  \
        cmocka_unit_test_setup_teardown(request_ids, setup, teardown),                                                 \
        cmocka_unit_test_setup_teardown(windows, setup, teardown),                                                     \
        cmocka_unit_test_setup_teardown(stock_changes, setup, teardown),                                               \
        cmocka_unit_test_setup_teardown(holds, setup, teardown),                                                       \
        cmocka_unit_test_setup_teardown(hold_expiry, setup, teardown),                                                 \
        cmocka_unit_test_setup_teardown(order_list, setup, teardown),                                                  \
        cmocka_unit_test_setup_teardown(retain_and_feed, setup, teardown),                                             \
        cmocka_unit_test_setup_teardown(reopen, setup, teardown),                                                      \
        cmocka_unit_test_setup_teardown(delete_sale, setup, teardown),                                                 \
        cmocka_unit_test_setup_teardown(delete_many, setup, teardown)

int main(void)
{
    sk_log_level = SK_LOG_ERROR + 1; /* the faults here would log */
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest sqlite_tests[] = {
        CASES,
        cmocka_unit_test_setup_teardown(embed_failed_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(embed_end_races_take, setup, teardown),
    };
    const struct CMUnitTest redis_tests[] = {
        CASES,
        cmocka_unit_test_setup_teardown(redis_noscript, setup, teardown),
        cmocka_unit_test_setup_teardown(redis_dropped, setup, teardown),
        cmocka_unit_test_setup_teardown(redis_deadline, setup, teardown),
    };
    int failed = cmocka_run_group_tests_name("store sqlite", sqlite_tests, group_sqlite, NULL);
    /* a machine without redis-server skips the Redis group, unless skips fail (SK_NO_SKIP, as in
     * CI: docs/testing.md) */
    if (system("command -v redis-server >/dev/null 2>&1") == 0) {
        failed += cmocka_run_group_tests_name("store redis", redis_tests, group_redis, group_redis_down);
        const struct CMUnitTest cluster_tests[] = {CASES};
        failed += cmocka_run_group_tests_name("store redis-cluster", cluster_tests, group_cluster, group_cluster_down);
    } else {
        fprintf(stderr, "store redis: SKIPPED: redis-server is not installed\n");
        failed += getenv("SK_NO_SKIP") != NULL;
    }
    return failed != 0;
}
