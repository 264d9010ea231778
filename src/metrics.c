/* metrics.c: see metrics.h. */
#include "metrics.h"
#include <dirent.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>
#include "error.h"

#define MAX_THREADS 256
#define NSTATUS 16
#define NLAT 13

static const int statuses[NSTATUS] = {200, 201, 400, 401, 403, 404, 405, 409, 413, 429, 431, 500, 503, 507, 0, 0};
static const int64_t lat_bounds_us[NLAT - 1] = {100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 1000000};
static const int64_t batch_bounds[8] = {1, 2, 4, 16, 64, 256, 1024, 4096};
static const int64_t fsync_bounds_ms[8] = {1, 2, 5, 10, 25, 50, 100, 1000};

typedef _Atomic uint64_t counter_t;

typedef struct block_s {
    counter_t requests[SK_A_COUNT_ + 1][NSTATUS];
    counter_t takes[SK_ERR_COUNT + 2]; /* [0]: won; [i]: error SK_ERR_FIRST_ + i; last: replayed */
    counter_t lat[NLAT];
    counter_t lat_sum_us;
    counter_t lat_count;
    counter_t scripts;            /* Redis script calls */
    counter_t take_batches[9];    /* takes per take script call, by batch_bounds */
    counter_t take_batch_calls, take_batch_sum;
    counter_t redis_refused[SK_REDIS_REFUSED_KINDS_];
    counter_t redis_redirects[SK_REDIS_REDIRECT_KINDS_];
    counter_t relay_steps[SK_RELAY_RESULTS_]; /* the feed relay (worker 0 on a cluster) */
    counter_t relay_entries, relay_gaps;
} block_t;

typedef struct commit_block_s {
    counter_t batches, orders, failures;
    counter_t size[9];
    counter_t fsync[9];
    counter_t fsync_sum_ms;
} commit_block_t;

static block_t *blocks[MAX_THREADS];
static _Atomic int nblocks;
static block_t overflow; /* threads past MAX_THREADS share this one; counts may then be approximate */
static commit_block_t commits;
static __thread block_t *mine;
/* The feed relay's lag gauge: relays running in the process (one on a cluster store: worker 0's)
 * and the mono ms its last complete round began (written by the relay's worker, read on scrape). */
static _Atomic int relays;
static _Atomic int64_t relay_complete_ms;

static inline void inc(counter_t *c, uint64_t by)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + by, memory_order_relaxed);
}

void sk_metrics_thread_init(void)
{
    int i = atomic_fetch_add(&nblocks, 1);
    if (i >= MAX_THREADS) {
        mine = &overflow;
        return;
    }
    mine = calloc(1, sizeof(*mine));
    blocks[i] = mine;
}

static block_t *me(void)
{
    return mine ? mine : &overflow;
}

static int status_index(int status)
{
    for (int i = 0; i < NSTATUS && statuses[i] != 0; i++)
        if (statuses[i] == status)
            return i;
    return NSTATUS - 1;
}

void sk_metrics_request(int action, int status, int64_t latency_us)
{
    block_t *b = me();
    if (action < 0 || action > SK_A_COUNT_)
        action = SK_A_COUNT_;
    inc(&b->requests[action][status_index(status)], 1);
    int k = 0;
    while (k < NLAT - 1 && latency_us > lat_bounds_us[k])
        k++;
    inc(&b->lat[k], 1);
    inc(&b->lat_sum_us, (uint64_t)(latency_us > 0 ? latency_us : 0));
    inc(&b->lat_count, 1);
}

void sk_metrics_take(int err, int replayed)
{
    int i = err - SK_ERR_FIRST_;
    if (err == 0)
        i = replayed ? SK_ERR_COUNT + 1 : 0;
    else if (i < 1 || i > SK_ERR_COUNT)
        i = SK_EINTERNAL - SK_ERR_FIRST_;
    inc(&me()->takes[i], 1);
}

static int bucket(const int64_t *bounds, int n, int64_t v)
{
    int k = 0;
    while (k < n && v > bounds[k])
        k++;
    return k;
}

void sk_metrics_script(size_t takes)
{
    block_t *b = me();
    inc(&b->scripts, 1);
    if (takes > 0) {
        inc(&b->take_batches[bucket(batch_bounds, 8, (int64_t)takes)], 1);
        inc(&b->take_batch_calls, 1);
        inc(&b->take_batch_sum, takes);
    }
}

void sk_metrics_redis_refused(int kind)
{
    if (kind >= 0 && kind < SK_REDIS_REFUSED_KINDS_)
        inc(&me()->redis_refused[kind], 1);
}

void sk_metrics_redis_redirect(int kind)
{
    if (kind >= 0 && kind < SK_REDIS_REDIRECT_KINDS_)
        inc(&me()->redis_redirects[kind], 1);
}

void sk_metrics_relay_step(int result, size_t entries)
{
    block_t *b = me();
    if (result < 0 || result >= SK_RELAY_RESULTS_)
        return;
    inc(&b->relay_steps[result], 1);
    if (result == SK_RELAY_COPIED)
        inc(&b->relay_entries, entries);
}

void sk_metrics_relay_gap(void)
{
    inc(&me()->relay_gaps, 1);
}

void sk_metrics_relay_running(int on, int64_t now_ms)
{
    if (on) {
        atomic_store_explicit(&relay_complete_ms, now_ms, memory_order_relaxed);
        atomic_fetch_add(&relays, 1);
    } else {
        atomic_fetch_sub(&relays, 1);
    }
}

void sk_metrics_relay_complete(int64_t t0_ms)
{
    atomic_store_explicit(&relay_complete_ms, t0_ms, memory_order_relaxed);
}

void sk_metrics_commit(size_t n, int64_t ms, int ok)
{
    inc(&commits.batches, 1);
    if (!ok) {
        inc(&commits.failures, 1);
        return;
    }
    inc(&commits.orders, n);
    inc(&commits.size[bucket(batch_bounds, 8, (int64_t)n)], 1);
    inc(&commits.fsync[bucket(fsync_bounds_ms, 8, ms)], 1);
    inc(&commits.fsync_sum_ms, (uint64_t)ms);
}

static uint64_t rd(counter_t *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}

/* Sums the counter at byte offset `off` over every block. */
static uint64_t sum_at(size_t off)
{
    uint64_t s = rd((counter_t *)((char *)&overflow + off));
    int n = atomic_load(&nblocks);
    for (int i = 0; i < n && i < MAX_THREADS; i++)
        if (blocks[i] != NULL)
            s += rd((counter_t *)((char *)blocks[i] + off));
    return s;
}

#define SUM(field) sum_at(offsetof(block_t, field))

static void histogram(sk_buf_t *o, const char *name, const char *labels, const int64_t *bounds, int nb,
                      double scale, counter_t *buckets, uint64_t count, double sum)
{
    uint64_t cum = 0;
    for (int k = 0; k <= nb; k++) {
        cum += rd(&buckets[k]);
        if (k < nb)
            sk_buf_printf(o, "%s_bucket{%sle=\"%g\"} %llu\n", name, labels, (double)bounds[k] * scale,
                          (unsigned long long)cum);
        else
            sk_buf_printf(o, "%s_bucket{%sle=\"+Inf\"} %llu\n", name, labels, (unsigned long long)cum);
    }
    sk_buf_printf(o, "%s_sum %g\n%s_count %llu\n", name, sum, name, (unsigned long long)count);
}

/* Whether a take can end with error `err`: those outcomes are shown from the start, at 0, so
 * that an alert on one (unavailable, rate_limited, ...) has a series before it first happens. */
static int take_outcome(int err)
{
    switch (err) {
    case SK_EBAD_REQUEST:
    case SK_ENOT_STARTED:
    case SK_EENDED:
    case SK_ENO_SUCH_SALE:
    case SK_ESOLD_OUT:
    case SK_EUSER_LIMIT:
    case SK_EREQUEST_ID_REUSED:
    case SK_ERATE_LIMITED:
    case SK_EINTERNAL:
    case SK_EUNAVAILABLE:
        return 1;
    default:
        return 0;
    }
}

void sk_metrics_each_take(void (*cb)(const char *outcome, uint64_t n, void *arg), void *arg)
{
    cb("won", SUM(takes[0]), arg);
    cb("replayed", SUM(takes[SK_ERR_COUNT + 1]), arg);
    for (int i = 1; i <= SK_ERR_COUNT; i++) {
        uint64_t v = SUM(takes[i]);
        if (v != 0 || take_outcome(SK_ERR_FIRST_ + i))
            cb(sk_err_code(SK_ERR_FIRST_ + i), v, arg);
    }
}

/* The statuses a take is answered with: shown from the start for the take route, at 0. */
static int take_status(int status)
{
    return status == 200 || status == 201 || status == 400 || status == 403 || status == 404 || status == 409 ||
           status == 429 || status == 500 || status == 503;
}

/* process_* as the Prometheus client libraries name them (from /proc/self). */
static void render_process(sk_buf_t *o)
{
    char buf[1024];
    long ticks = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
    unsigned long long utime = 0, stime = 0, start = 0, vsize = 0, btime = 0;
    long long rss = 0;
    FILE *f = fopen("/proc/self/stat", "r");
    if (f != NULL) {
        size_t n = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        buf[n] = '\0';
        /* after the command's closing parenthesis: state is field 3; utime 14, stime 15,
         * starttime 22, vsize 23, rss 24 */
        const char *p = strrchr(buf, ')');
        if (p == NULL || sscanf(p + 2,
                                "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d %*d %*d %*d "
                                "%*d %llu %llu %lld",
                                &utime, &stime, &start, &vsize, &rss) != 5)
            utime = stime = start = vsize = 0, rss = 0;
    }
    if ((f = fopen("/proc/stat", "r")) != NULL) {
        while (fgets(buf, sizeof(buf), f) != NULL)
            if (sscanf(buf, "btime %llu", &btime) == 1)
                break;
        fclose(f);
    }
    long fds = 0;
    DIR *d = opendir("/proc/self/fd");
    if (d != NULL) {
        for (struct dirent *e; (e = readdir(d)) != NULL;)
            fds += e->d_name[0] != '.';
        fds--; /* the directory's own descriptor */
        closedir(d);
    }
    struct rlimit rl = {0, 0};
    getrlimit(RLIMIT_NOFILE, &rl);
    sk_buf_printf(o,
                  "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n"
                  "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total %g\n"
                  "# HELP process_resident_memory_bytes Resident memory size in bytes.\n"
                  "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes %lld\n"
                  "# HELP process_virtual_memory_bytes Virtual memory size in bytes.\n"
                  "# TYPE process_virtual_memory_bytes gauge\nprocess_virtual_memory_bytes %llu\n"
                  "# HELP process_open_fds Number of open file descriptors.\n"
                  "# TYPE process_open_fds gauge\nprocess_open_fds %ld\n"
                  "# HELP process_max_fds Maximum number of open file descriptors.\n"
                  "# TYPE process_max_fds gauge\nprocess_max_fds %llu\n"
                  "# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.\n"
                  "# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds %.2f\n",
                  ticks > 0 ? (double)(utime + stime) / (double)ticks : 0.0, rss * page, vsize, fds,
                  (unsigned long long)(rl.rlim_cur == RLIM_INFINITY ? 0 : rl.rlim_cur),
                  ticks > 0 ? (double)btime + (double)start / (double)ticks : 0.0);
}

static void take_line(const char *outcome, uint64_t n, void *arg)
{
    sk_buf_printf(arg, "seckill_takes_total{outcome=\"%s\"} %llu\n", outcome, (unsigned long long)n);
}

/* The feed relay's: the counters always (0 but on a Redis Cluster store), the lag gauge only while
 * a relay runs (a 0 elsewhere would say that a relay is keeping up). */
static void render_relay(sk_buf_t *o)
{
    static const char *const results[SK_RELAY_RESULTS_] = {"copied", "raced", "failed"};
    sk_buf_printf(o,
                  "# HELP seckill_feed_relay_entries_total Feed entries (each one event or one take call's orders) "
                  "this instance's relay copied into the merged feed; a copy that lost the race to another "
                  "relay counts nothing (Redis Cluster store).\n"
                  "# TYPE seckill_feed_relay_entries_total counter\nseckill_feed_relay_entries_total %llu\n",
                  (unsigned long long)SUM(relay_entries));
    sk_buf_printf(o, "# HELP seckill_feed_relay_copies_total Relay copies (a read of one slot's feed stream and "
                     "the copy of what it read), by result: copied, raced (another relay had moved the slot's "
                     "position on: read again), failed (a command failed or timed out: the slot waits for a "
                     "later round) (Redis Cluster store).\n"
                     "# TYPE seckill_feed_relay_copies_total counter\n");
    for (int k = 0; k < SK_RELAY_RESULTS_; k++)
        sk_buf_printf(o, "seckill_feed_relay_copies_total{result=\"%s\"} %llu\n", results[k],
                      (unsigned long long)SUM(relay_steps[k]));
    sk_buf_printf(o,
                  "# HELP seckill_feed_relay_gaps_total Times the relay found a slot stream's entries lost "
                  "before it copied them (event=feed_relay_gap) (Redis Cluster store).\n"
                  "# TYPE seckill_feed_relay_gaps_total counter\nseckill_feed_relay_gaps_total %llu\n",
                  (unsigned long long)SUM(relay_gaps));
    if (atomic_load(&relays) <= 0)
        return;
    int64_t lag = sk_mono_ms() - atomic_load_explicit(&relay_complete_ms, memory_order_relaxed);
    sk_buf_printf(o,
                  "# HELP seckill_feed_relay_lag_seconds Seconds since the start of the relay's last complete "
                  "round (every slot then marked copied to its stream's end): no entry marked before that waits "
                  "uncopied; 0 to 0.2 s when idle (Redis Cluster store only).\n"
                  "# TYPE seckill_feed_relay_lag_seconds gauge\nseckill_feed_relay_lag_seconds %.3f\n",
                  (double)(lag > 0 ? lag : 0) / 1e3);
}

void sk_metrics_render(sk_buf_t *o)
{
    sk_buf_printf(o,
                  "# HELP seckill_build_info The running seckilld's version (always 1).\n"
                  "# TYPE seckill_build_info gauge\nseckill_build_info{version=\"%s\"} 1\n",
                  SK_VERSION);
    render_process(o);
    sk_buf_printf(o, "# HELP seckill_requests_total HTTP requests answered, by route and status.\n"
                     "# TYPE seckill_requests_total counter\n");
    for (int a = 0; a <= SK_A_COUNT_; a++)
        for (int s = 0; s < NSTATUS; s++) {
            uint64_t v = SUM(requests[a][s]);
            if (v != 0 || (a == SK_A_TAKE && take_status(statuses[s])))
                sk_buf_printf(o, "seckill_requests_total{route=\"%s\",status=\"%d\"} %llu\n",
                              a == SK_A_COUNT_ ? "none" : sk_action_name((sk_action_t)a), statuses[s],
                              (unsigned long long)v);
        }
    sk_buf_printf(o, "# HELP seckill_takes_total Take outcomes, by error code (won for a new order).\n"
                     "# TYPE seckill_takes_total counter\n");
    sk_metrics_each_take(take_line, o);
    sk_buf_printf(o, "# HELP seckill_request_duration_seconds Time from request to reply.\n"
                     "# TYPE seckill_request_duration_seconds histogram\n");
    counter_t lat[NLAT];
    for (int k = 0; k < NLAT; k++)
        atomic_init(&lat[k], SUM(lat[k]));
    histogram(o, "seckill_request_duration_seconds", "", lat_bounds_us, NLAT - 1, 1e-6, lat, SUM(lat_count),
              (double)SUM(lat_sum_us) / 1e6);
    sk_buf_printf(o, "# HELP seckill_redis_script_calls_total Redis script calls (Redis store).\n"
                     "# TYPE seckill_redis_script_calls_total counter\nseckill_redis_script_calls_total %llu\n",
                  (unsigned long long)SUM(scripts));
    sk_buf_printf(o, "# HELP seckill_redis_take_batch_size Takes per take script call (coalescing).\n"
                     "# TYPE seckill_redis_take_batch_size histogram\n");
    counter_t tb[9];
    for (int k = 0; k < 9; k++)
        atomic_init(&tb[k], SUM(take_batches[k]));
    histogram(o, "seckill_redis_take_batch_size", "", batch_bounds, 8, 1, tb, SUM(take_batch_calls),
              (double)SUM(take_batch_sum));
    static const char *const refused[SK_REDIS_REFUSED_KINDS_] = {"noreplicas", "readonly", "moved",      "loading",
                                                                 "masterdown", "tryagain", "clusterdown"};
    sk_buf_printf(o, "# HELP seckill_redis_refused_total Writes the Redis primary refused for certain (nothing "
                     "ran), by reason (Redis store).\n# TYPE seckill_redis_refused_total counter\n");
    for (int k = 0; k < SK_REDIS_REFUSED_WAIT; k++)
        sk_buf_printf(o, "seckill_redis_refused_total{reason=\"%s\"} %llu\n", refused[k],
                      (unsigned long long)SUM(redis_refused[k]));
    sk_buf_printf(o,
                  "# HELP seckill_redis_wait_timeouts_total Writes whose WAIT did not confirm "
                  "--redis-min-replicas replicas in time (answered 503, outcome unknown).\n"
                  "# TYPE seckill_redis_wait_timeouts_total counter\nseckill_redis_wait_timeouts_total %llu\n",
                  (unsigned long long)SUM(redis_refused[SK_REDIS_REFUSED_WAIT]));
    sk_buf_printf(o,
                  "# HELP seckill_redis_redirects_total Redis Cluster redirections followed: moved (the slot had "
                  "moved) or ask (the slot was moving: sent again after ASKING) (Redis store).\n"
                  "# TYPE seckill_redis_redirects_total counter\n"
                  "seckill_redis_redirects_total{kind=\"moved\"} %llu\nseckill_redis_redirects_total{kind=\"ask\"} "
                  "%llu\n",
                  (unsigned long long)SUM(redis_redirects[SK_REDIS_REDIRECT_MOVED]),
                  (unsigned long long)SUM(redis_redirects[SK_REDIS_REDIRECT_ASK]));
    render_relay(o);
    sk_buf_printf(o,
                  "# HELP seckill_commit_batches_total Committer transactions (embedded store).\n"
                  "# TYPE seckill_commit_batches_total counter\nseckill_commit_batches_total %llu\n"
                  "# HELP seckill_commit_failures_total Committer transactions that failed (disk full, I/O error).\n"
                  "# TYPE seckill_commit_failures_total counter\nseckill_commit_failures_total %llu\n"
                  "# HELP seckill_committed_orders_total Orders made durable by the committer (embedded store).\n"
                  "# TYPE seckill_committed_orders_total counter\nseckill_committed_orders_total %llu\n",
                  (unsigned long long)rd(&commits.batches), (unsigned long long)rd(&commits.failures),
                  (unsigned long long)rd(&commits.orders));
    sk_buf_printf(o, "# HELP seckill_commit_batch_size Orders per committed batch.\n"
                     "# TYPE seckill_commit_batch_size histogram\n");
    histogram(o, "seckill_commit_batch_size", "", batch_bounds, 8, 1, commits.size,
              rd(&commits.batches) - rd(&commits.failures), (double)rd(&commits.orders));
    sk_buf_printf(o, "# HELP seckill_commit_fsync_seconds Time to commit and fsync one batch.\n"
                     "# TYPE seckill_commit_fsync_seconds histogram\n");
    histogram(o, "seckill_commit_fsync_seconds", "", fsync_bounds_ms, 8, 1e-3, commits.fsync,
              rd(&commits.batches) - rd(&commits.failures), (double)rd(&commits.fsync_sum_ms) / 1e3);
}
