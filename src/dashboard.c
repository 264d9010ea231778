/* dashboard.c: see dashboard.h. The event stream, on h2o 2.2.5's generator interface:
 *
 *   - a stream is an h2o generator living in its request's pool (h2o_mem_alloc_shared with a
 *     dispose hook), so the pool, and the stream with it, lives exactly as long as h2o keeps the
 *     request; the hook unlinks the stream from its worker's list, whichever way it ended;
 *   - each worker keeps one timer (h2o_timeout_t, SK_DASHBOARD_TICK_MS) that runs only while the
 *     worker has streams; at a tick it takes the sale list another worker has made since its
 *     last snapshot (`shared`, under a mutex: one list for the whole process), or else asks the
 *     store for one itself (SK_STORE_SALE_LIST, as /metrics does), unless another worker is at
 *     it or SK_DASHBOARD_SALES_PER_TICK says not yet; it builds one snapshot message shared by
 *     every stream of the worker (refcounted: h2o_mem_alloc_shared without a pool);
 *   - a stream has at most one write in flight: a snapshot is sent only to a stream whose previous
 *     write h2o has flushed (`proceed`); a slow reader skips snapshots rather than queueing them,
 *     so memory and rate stay bounded whatever the traffic; snapshots are cumulative, so a
 *     skipped one loses nothing;
 *   - the client going away shows as a failed write: h2o closes the connection and calls `stop`,
 *     then disposes the pool;
 *   - on shutdown the server calls its stop hook (worker_stop): each stream is finished with
 *     H2O_SEND_STATE_FINAL (after its current write, if one is in flight) on a non-persistent
 *     connection, so h2o closes it and the worker's drain sees the count reach 0. A client that
 *     does not read would hold its write (and so the drain) for ever: after STOP_GRACE_MS its
 *     socket is shut down, the write fails, and h2o releases the request as for a vanished client.
 *
 * A snapshot carries the time of its tick and the counters read then (see refresh). The numbers
 * are those of /metrics: the take outcome counters come from sk_metrics_each_take,
 * which also writes them into /metrics, so the two cannot disagree. */
#include "dashboard.h"
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include "error.h"
#include "log.h"
#include "metrics.h"
#include "render.h"
#include "sse.h"
#include "util.h"

/* One snapshot message ("data: {...}\n\n"), refcounted, shared by the streams sending it. */
typedef struct msg_s {
    size_t len;
    char data[];
} msg_t;

typedef struct sk_dashboard_s dashboard_t;

typedef struct stream_s {
    sk_sse_t sse; /* the response; holds the message being written */
    dashboard_t *d;
    h2o_linklist_t link; /* in d->streams */
} stream_t;

struct sk_dashboard_s {
    sk_worker_t *w;
    h2o_linklist_t streams;   /* stream_t.link */
    size_t nstreams;          /* streams h2o has not released yet */
    h2o_timeout_t tick;       /* SK_DASHBOARD_TICK_MS, on the worker's loop */
    h2o_timeout_entry_t tick_entry;
    sk_store_req_t list;      /* the sale list for the next snapshot */
    int listing;              /* `list` is with the store */
    uint64_t gen;             /* the shared list (shared.gen) this worker last showed */
    int64_t asked_mono;       /* sk_mono_ms() when `list` was asked for */
    int stopping;
    int64_t stop_at;          /* sk_mono_ms() of worker_stop */
    int64_t asked_at;         /* the loop's clock when `list` was asked for: the snapshot's time_ms */
    sk_buf_t takes;           /* "takes":{...} as counted at asked_at */
    msg_t *last;              /* the latest snapshot (a reference), NULL before the first */
    int64_t last_at;          /* sk_mono_ms() when `last` was built */
};

#define STOP_GRACE_MS 1000
#define BUSY_MS 10000 /* a list with the store longer than this no longer keeps the others from listing */

/* The latest sale list, shared by every worker of the process (under `mu`): one worker lists for
 * all of them, so the store's work for the dashboard does not grow with the number of workers
 * with open streams. Workers copy `part` under the lock; only listed() replaces it. */
static struct {
    pthread_mutex_t mu;
    sk_store_t *store;  /* the store the list is from */
    sk_buf_t part;      /* the latest list, rendered: `"sales":[...],"error":...` */
    uint64_t gen;       /* lists made so far (0: none yet) */
    int64_t at;         /* sk_mono_ms() when `part` was made */
    int64_t period;     /* ms from one list to the next (SK_DASHBOARD_SALES_PER_TICK) */
    int64_t list_after; /* sk_mono_ms() before which no worker lists */
    int busy;           /* a worker's list is with the store */
    int64_t busy_since; /* sk_mono_ms() when it was asked for */
} shared = {.mu = PTHREAD_MUTEX_INITIALIZER};

static const char RETRY[] = "retry: 2000\n\n"; /* EventSource reconnects after 2 s */

/* The take outcomes the page charts always appear, zero or not. */
static const char *const OUTCOMES[] = {"won", "sold_out", "user_limit", "rate_limited", "unavailable", "replayed"};

static void msg_release(msg_t **m)
{
    if (*m != NULL)
        h2o_mem_release_shared(*m);
    *m = NULL;
}

/* -- the snapshot */

typedef struct {
    const char *name[SK_ERR_COUNT + 2];
    uint64_t n[SK_ERR_COUNT + 2];
    size_t count;
} takes_t;

static void collect_take(const char *outcome, uint64_t n, void *arg)
{
    takes_t *t = arg;
    if (t->count < sizeof(t->n) / sizeof(t->n[0])) {
        t->name[t->count] = outcome;
        t->n[t->count++] = n;
    }
}

/* "takes": {"won": N, ...}: the charted outcomes first (zero or not), then any other that
 * /metrics shows, with the same numbers (sk_metrics_each_take serves both). */
static void put_takes(sk_buf_t *b)
{
    takes_t t = {.count = 0};
    const char *sep = "";
    sk_metrics_each_take(collect_take, &t);
    sk_buf_printf(b, "\"takes\":{");
    for (size_t i = 0; i < sizeof(OUTCOMES) / sizeof(OUTCOMES[0]); i++) {
        uint64_t n = 0;
        for (size_t k = 0; k < t.count; k++)
            if (strcmp(t.name[k], OUTCOMES[i]) == 0)
                n = t.n[k];
        sk_buf_printf(b, "%s\"%s\":%llu", sep, OUTCOMES[i], (unsigned long long)n);
        sep = ",";
    }
    for (size_t k = 0; k < t.count; k++) {
        size_t i = 0;
        while (i < sizeof(OUTCOMES) / sizeof(OUTCOMES[0]) && strcmp(t.name[k], OUTCOMES[i]) != 0)
            i++;
        if (i == sizeof(OUTCOMES) / sizeof(OUTCOMES[0]))
            sk_buf_printf(b, ",\"%s\":%llu", t.name[k], (unsigned long long)t.n[k]);
    }
    sk_buf_append(b, "}", 1);
}

/* The snapshot's sale part, `"sales":[...],"error":null` or `"sales":null,"error":"code"`, from the
 * store's answer `s`. Sales are the objects of GET /v1/sales/{sale} (render.c); names and codes
 * need no escaping. */
static void render_sales(sk_buf_t *b, const sk_store_req_t *s)
{
    char sale[SK_RENDER_MAX];
    if (s->err == 0) {
        sk_buf_append(b, "\"sales\":[", 9);
        for (size_t i = 0; i < s->nviews; i++) {
            if (i > 0)
                sk_buf_append(b, ",", 1);
            sk_buf_append(b, sale, sk_render_sale(sale, &s->views[i], s->now_ms / 1000));
        }
        sk_buf_append(b, "],\"error\":null", 14);
    } else {
        sk_buf_printf(b, "\"sales\":null,\"error\":\"%s\"", sk_err_code(s->err));
    }
}

/* One message: "data: " and the snapshot object, compact JSON (no newline), then a blank line:
 * the tick's time and counters, the store's health now, and the sale part `sales`. */
static msg_t *snapshot(dashboard_t *d, const sk_buf_t *sales)
{
    sk_store_t *st = d->w->server->store;
    sk_buf_t b = {0};
    sk_buf_printf(&b, "data: {\"time_ms\":%lld,\"interval_ms\":%d,\"store\":{\"name\":\"%s\",\"up\":%s},",
                  (long long)d->asked_at, SK_DASHBOARD_TICK_MS, sk_store_name(st),
                  sk_store_healthy(st) ? "true" : "false");
    sk_buf_append(&b, d->takes.p, d->takes.len);
    sk_buf_append(&b, ",", 1);
    sk_buf_append(&b, sales->p, sales->len);
    sk_buf_append(&b, "}\n\n", 3);
    msg_t *m = h2o_mem_alloc_shared(NULL, sizeof(*m) + b.len, NULL);
    memcpy(m->data, b.p, b.len);
    m->len = b.len;
    sk_buf_dispose(&b);
    return m;
}

/* -- streams */

/* Writes `m` (may be NULL) after what is in the stream's buffer; the stream must be idle. Nothing
 * may touch `st` after it: h2o may fail the write and release the request at once. */
static void stream_send(stream_t *st, msg_t *m)
{
    sk_sse_send(&st->sse, m, m != NULL ? m->data : NULL, m != NULL ? m->len : 0);
}

/* The request's pool is being cleared: the stream is gone, however it ended. */
static void on_stream_dispose(void *p)
{
    stream_t *st = p;
    h2o_linklist_unlink(&st->link);
    st->d->nstreams--;
    sk_sse_dispose(&st->sse);
}

/* -- the worker's timer and snapshots */

static void publish(dashboard_t *d, const sk_buf_t *sales)
{
    msg_t *m = snapshot(d, sales);
    msg_release(&d->last);
    d->last = m;
    d->last_at = sk_mono_ms();
    if (d->stopping)
        return;
    for (h2o_linklist_t *n = d->streams.next, *next; n != &d->streams; n = next) {
        next = n->next; /* a send may release its stream */
        stream_t *st = H2O_STRUCT_FROM_MEMBER(stream_t, link, n);
        if (sk_sse_idle(&st->sse))
            stream_send(st, m);
    }
}

/* The store answered this worker's list: render it once for every worker of the process. */
static void listed(dashboard_t *d)
{
    sk_buf_t part = {0};
    render_sales(&part, &d->list);
    /* the next list comes ceil(sales / SK_DASHBOARD_SALES_PER_TICK) ticks after this one: the
     * store reads at most that many sales a tick for the process, on average (half a tick of
     * slack: the timers and this clock are read at slightly different moments) */
    size_t nsales = d->list.err == 0 ? d->list.nviews : 0;
    int64_t ticks =
        nsales > SK_DASHBOARD_SALES_PER_TICK ? (int64_t)((nsales - 1) / SK_DASHBOARD_SALES_PER_TICK) + 1 : 1;
    sk_store_req_dispose(&d->list);
    publish(d, &part); /* copies `part` into the message, before `part` is shared */
    pthread_mutex_lock(&shared.mu);
    sk_buf_t old = shared.part; /* the others copy it under the lock only */
    shared.part = part;
    shared.store = d->w->server->store;
    shared.gen++;
    shared.at = sk_mono_ms();
    shared.period = ticks * SK_DASHBOARD_TICK_MS;
    shared.list_after = d->asked_mono + shared.period - SK_DASHBOARD_TICK_MS / 2;
    shared.busy = 0;
    d->gen = shared.gen;
    pthread_mutex_unlock(&shared.mu);
    sk_buf_dispose(&old);
}

static void on_list(sk_store_req_t *sreq)
{
    dashboard_t *d = sreq->data;
    d->listing = 0;
    d->w->inflight--;
    listed(d);
}

static void refresh(dashboard_t *d)
{
    if (d->listing)
        return;
    /* The time and the counters are those of the tick, not of the store's answer, and the time is
     * the loop's clock (h2o's, the wall clock read once per turn of the loop), the one the tick's
     * timer runs on. The answer's delay varies with the load (a list behind a storm of takes on a
     * Redis connection), and so does the delay between the loop reading its clock and this tick
     * running (a turn busy with requests, a thread preempted): stamped with sk_now_ms() on
     * arrival, two snapshots were once 339 ms apart although their ticks were 500 ms apart. The
     * timer fires when the loop's clock has passed its link time by a tick and is relinked at
     * that same clock reading, so time_ms advances by at least SK_DASHBOARD_TICK_MS from one
     * message to the next; and the page's rates pair each count with the time it was read. */
    d->asked_at = (int64_t)h2o_now(d->w->ctx.loop);
    d->asked_mono = sk_mono_ms();
    d->takes.len = 0;
    put_takes(&d->takes);

    /* One list for every worker of the process: a list newer than this worker last showed (and
     * not past its time) is shown as it is; else this worker lists, unless another one is at it
     * or SK_DASHBOARD_SALES_PER_TICK says not yet (then this tick sends nothing). */
    sk_store_t *store = d->w->server->store;
    sk_buf_t part = {0};
    int list = 0;
    pthread_mutex_lock(&shared.mu);
    if (shared.store != store) { /* another server in this process (tests): start afresh */
        shared.store = store;
        shared.gen = 0;
        shared.busy = 0;
        shared.list_after = 0;
    }
    if (shared.gen != 0 && shared.gen != d->gen && d->asked_mono - shared.at < shared.period + SK_DASHBOARD_TICK_MS) {
        sk_buf_append(&part, shared.part.p, shared.part.len);
        d->gen = shared.gen;
    } else if (d->asked_mono >= shared.list_after && (!shared.busy || d->asked_mono - shared.busy_since > BUSY_MS)) {
        shared.busy = 1;
        shared.busy_since = d->asked_mono;
        list = 1;
    }
    pthread_mutex_unlock(&shared.mu);
    if (part.p != NULL) {
        publish(d, &part);
        sk_buf_dispose(&part);
        return;
    }
    if (!list)
        return;

    memset(&d->list, 0, sizeof(d->list));
    d->list.op = SK_STORE_SALE_LIST;
    d->list.cb = on_list;
    d->list.data = d;
    int rc = sk_store_submit(d->w->store, &d->list);
    if (rc == SK_STORE_DONE) {
        listed(d);
    } else if (rc < 0) {
        d->list.err = rc;
        listed(d);
    } else {
        d->listing = 1;
        d->w->inflight++; /* the worker's drain waits for the store's answer, as for any request */
    }
}

/* Shutting down: the streams still open are stuck behind a client that does not read. Shutting
 * the socket down fails their write; h2o then closes the connection and releases the request. */
static void cut(dashboard_t *d)
{
    for (h2o_linklist_t *n = d->streams.next; n != &d->streams; n = n->next) {
        stream_t *st = H2O_STRUCT_FROM_MEMBER(stream_t, link, n);
        h2o_req_t *req = st->sse.req;
        h2o_socket_t *sock = req != NULL ? req->conn->callbacks->get_socket(req->conn) : NULL;
        if (sock != NULL)
            shutdown(h2o_socket_get_fd(sock), SHUT_RDWR);
    }
}

static void on_tick(h2o_timeout_entry_t *entry)
{
    dashboard_t *d = H2O_STRUCT_FROM_MEMBER(dashboard_t, tick_entry, entry);
    if (d->nstreams == 0)
        return; /* the timer rests until the next stream */
    h2o_timeout_link(d->w->ctx.loop, &d->tick, &d->tick_entry);
    if (d->stopping) {
        if (sk_mono_ms() - d->stop_at >= STOP_GRACE_MS)
            cut(d);
    } else {
        refresh(d);
    }
}

static dashboard_t *dashboard_of(sk_worker_t *w)
{
    if (w->dashboard == NULL) {
        dashboard_t *d = sk_calloc(1, sizeof(*d));
        d->w = w;
        h2o_linklist_init_anchor(&d->streams);
        h2o_timeout_init(w->ctx.loop, &d->tick, SK_DASHBOARD_TICK_MS);
        d->tick_entry.cb = on_tick;
        w->dashboard = d;
    }
    return w->dashboard;
}

void sk_dashboard_events(sk_worker_t *w, h2o_req_t *req)
{
    dashboard_t *d = dashboard_of(w);
    int stopping = d->stopping || w->stopping; /* a request that arrived as the worker was stopping */
    if (!stopping && !h2o_timeout_is_linked(&d->tick_entry)) {
        /* the first stream: tick from now on, and take a snapshot at once (before this stream is
         * listed, so that it gets the snapshot with its first write below) */
        h2o_timeout_link(w->ctx.loop, &d->tick, &d->tick_entry);
        refresh(d); /* lists only if no other worker has a list (shared.list_after) */
    }
    stream_t *st = h2o_mem_alloc_shared(&req->pool, sizeof(*st), on_stream_dispose);
    memset(st, 0, sizeof(*st));
    st->d = d;
    h2o_linklist_insert(&d->streams, &st->link);
    d->nstreams++;
    sk_sse_start(&st->sse, req, NULL);

    if (stopping) {
        sk_sse_finish(&st->sse);
        return;
    }
    /* the latest snapshot at once when it is recent; else the next tick brings one */
    msg_t *m = d->last != NULL && sk_mono_ms() - d->last_at < 2 * SK_DASHBOARD_TICK_MS ? d->last : NULL;
    sk_buf_append(&st->sse.out, RETRY, sizeof(RETRY) - 1);
    stream_send(st, m);
}

/* -- the token in the query string */

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

int sk_dashboard_query_token_ok(const char *query, size_t len, const char *token)
{
    size_t tlen = strlen(token);
    for (size_t i = 0; query != NULL && i < len;) {
        const char *amp = memchr(query + i, '&', len - i);
        size_t end = amp ? (size_t)(amp - query) : len;
        if (end - i >= 6 && memcmp(query + i, "token=", 6) == 0) {
            /* decode and compare as we go: the time taken depends on the lengths only, never on
             * where the bytes differ (the length of the token is not a secret) */
            size_t n = 0;
            unsigned diff = 0;
            for (size_t k = i + 6; k < end; k++, n++) {
                int c = (unsigned char)query[k];
                if (c == '%') {
                    int hi = k + 2 < end ? hexval(query[k + 1]) : -1, lo = hi >= 0 ? hexval(query[k + 2]) : -1;
                    if (lo < 0)
                        return 0;
                    c = hi * 16 + lo;
                    k += 2;
                } else if (c == '+') {
                    c = ' ';
                }
                diff |= (unsigned)c ^ (n < tlen ? (unsigned char)token[n] : 0x100u);
            }
            return n == tlen && diff == 0;
        }
        i = end + 1;
    }
    return 0;
}

/* -- server.c's hooks */

static void worker_stop(sk_worker_t *w)
{
    dashboard_t *d = w->dashboard;
    if (d == NULL || d->stopping)
        return;
    d->stopping = 1;
    d->stop_at = sk_mono_ms();
    for (h2o_linklist_t *n = d->streams.next, *next; n != &d->streams; n = next) {
        next = n->next;
        sk_sse_finish(&H2O_STRUCT_FROM_MEMBER(stream_t, link, n)->sse);
    }
    /* the timer now watches the streams still writing (see cut) */
    if (d->nstreams != 0 && !h2o_timeout_is_linked(&d->tick_entry))
        h2o_timeout_link(w->ctx.loop, &d->tick, &d->tick_entry);
}

static size_t worker_open(sk_worker_t *w)
{
    return w->dashboard != NULL ? w->dashboard->nstreams : 0;
}

static void worker_dispose(sk_worker_t *w)
{
    dashboard_t *d = w->dashboard;
    if (d == NULL)
        return;
    if (d->nstreams != 0 || d->listing) {
        /* past the shutdown timeout: h2o's connections or the store still point here, and the
         * process exits right after; keep it */
        sk_log(SK_LOG_WARN, "event=dashboard_streams_left worker=%d streams=%zu", w->index, d->nstreams);
        return;
    }
    if (h2o_timeout_is_linked(&d->tick_entry))
        h2o_timeout_unlink(&d->tick_entry);
    h2o_timeout_dispose(w->ctx.loop, &d->tick);
    msg_release(&d->last);
    sk_buf_dispose(&d->takes);
    free(d);
    w->dashboard = NULL;
}

void sk_dashboard_register(sk_server_t *srv)
{
    static const sk_worker_hooks_t hooks = {.stop = worker_stop, .open = worker_open, .dispose = worker_dispose};
    sk_server_add_worker_hooks(srv, &hooks);
}
