/* store.h: the storage interface, the only storage header that handlers see. A store decides
 * takes and keeps sales and orders; two implement it: store_embed.c (in memory + SQLite) and
 * store_redis.c. It knows no HTTP and no event loop: the server hands each worker's store an
 * environment (sk_store_env_t) and gets back that worker's handle (sk_store_worker_t), through
 * which every operation goes. docs/design.md, "The store contract", draws it.
 *
 * Threads: sk_store_open and sk_store_close on the main thread; sk_store_worker_open, _flush,
 * _close and sk_store_submit on the worker's own thread (each worker its own handle);
 * sk_store_healthy and sk_store_name anywhere.
 *
 * Completion rule (libuv's, with one fast path): sk_store_submit returns
 *   < 0: an SK_E* error; the request was not taken and `cb` never runs;
 *   SK_STORE_DONE (1): answered at once; the outputs and req->err are set and `cb` never runs;
 *   0: pending; `cb` runs exactly once, later (never inside sk_store_submit), on the worker's
 *      thread: from the store's own I/O on the worker's loop, or through env.post.
 * In both answered cases req->err holds the outcome (0 or an SK_E* code). A request's memory
 * stays the caller's and must live until it is answered. */
#ifndef SK_STORE_H
#define SK_STORE_H

#include <stddef.h>
#include <stdint.h>
#include "sale.h"

#define SK_STORE_DONE 1

typedef struct sk_store_s sk_store_t;
typedef struct sk_store_worker_s sk_store_worker_t;
typedef struct sk_store_req_s sk_store_req_t;
typedef void (*sk_store_cb)(sk_store_req_t *req);

/* What a worker gives its store. */
typedef struct sk_store_env_s {
    /* The worker's event loop, for the store's own I/O (an h2o_loop_t in this build: only the
     * Redis adapter, redis_adapter.c, knows that); used on the worker's thread only. */
    void *loop;
    int index; /* the worker's, 0 .. threads - 1 */
    /* Hands an answered request back to the worker, which then calls req->cb on its own thread.
     * Thread-safe; a store calls it through sk_store_complete. It may use req->post_link. */
    void (*post)(void *ctx, sk_store_req_t *req);
    void *post_ctx;
} sk_store_env_t;

typedef enum sk_store_op_e {
    SK_STORE_TAKE,
    SK_STORE_SALE_PUT,
    SK_STORE_SALE_GET,
    SK_STORE_SALE_LIST,
    SK_STORE_ORDER_GET,
    SK_STORE_ORDER_LIST,
    SK_STORE_ORDER_CHANGE, /* req->change: SK_OP_CONFIRM_ORDER or SK_OP_CANCEL_ORDER */
    SK_STORE_SALE_DELETE,  /* an ended sale without held orders: req->view is the sale as it was */
    SK_STORE_FEED,         /* the order events after req->cursor, at most req->limit (docs/API.md) */
} sk_store_op_t;

/* A position in the winners feed: opaque to clients ("HI-LO"). The embedded store's is (0, the
 * event's sequence number), the Redis store's the entry id of sk:feed (ms, seq). {0, 0} is the
 * start. Ordered as a pair. */
typedef struct sk_cursor_s {
    uint64_t hi, lo;
} sk_cursor_t;

typedef enum sk_feed_kind_e {
    SK_FEED_CREATED = 1,
    SK_FEED_CONFIRMED = 2,
    SK_FEED_CANCELLED = 3,
    SK_FEED_EXPIRED = 4,
} sk_feed_kind_t;

typedef struct sk_order_s {
    char sale[SK_SALE_ID_MAX + 1];
    uint64_t id;
    int64_t qty;
    sk_order_status_t status; /* as stored; see sk_order_effective for the shown status */
    int64_t created_at;
    int64_t expires_at;       /* SK_NO_TIME unless held */
    char *user;               /* NULL for anonymous; owned */
    char *request_id;         /* NULL when absent; owned */
} sk_order_t;

/* One event of the feed: the order as it was right after the event (its status the event's:
 * held or confirmed for a creation, else the event's own). */
typedef struct sk_feed_event_s {
    sk_cursor_t cursor;
    sk_feed_kind_t kind;
    sk_order_t order;
} sk_feed_event_t;

struct sk_store_req_s {
    /* inputs, set by the caller */
    sk_store_op_t op;
    sk_store_cb cb;
    void *data;                           /* the caller's */
    char sale[SK_SALE_ID_MAX + 1];
    const char *user;                     /* take: borrowed until answered; NULL if absent */
    size_t user_len;
    int64_t qty;                          /* take */
    const char *request_id;               /* take: borrowed until answered; NULL if absent */
    size_t request_id_len;
    sk_sale_conf_t conf;                  /* sale put */
    uint64_t order_id;                    /* order get / change; list: after */
    sk_order_op_t change;                 /* order change */
    unsigned limit;                       /* order list, feed */
    sk_cursor_t cursor;                   /* feed: after this; the store sets the next one */
    int64_t now_ms;                       /* set by sk_store_submit */
    sk_store_worker_t *worker;            /* set by sk_store_submit */

    /* outputs, set by the store */
    int err;                  /* 0 or SK_E* */
    int created;              /* sale put: 1 if created; take: 1 if a new order, 0 if a replay */
    sk_order_t order;         /* take, order get / change */
    sk_sale_view_t view;      /* sale get / put */
    sk_sale_view_t *views;    /* sale list: owned array */
    size_t nviews;
    sk_order_t *orders;       /* order list: owned array */
    size_t norders;
    int more;                /* order list: there are orders after the last one; feed: likewise */
    sk_feed_event_t *events; /* feed: owned array (cursor: where the next read starts) */
    size_t nevents;

    /* private to the environment's post function (e.g. a message link) */
    void *post_link[2];

    /* private to the store */
    sk_store_req_t *next;     /* queues and waiter lists */
    void *priv;
    uint64_t stamp;           /* e.g. the settings generation a take was decided under */
};

/* A store's functions; callers use the sk_store_* wrappers below, never these. */
typedef struct sk_store_ops_s {
    const char *name;
    /* opens the calling worker's handle into *out; -1 with a reason in err */
    int (*worker_open)(sk_store_t *st, const sk_store_env_t *env, sk_store_worker_t **out, char *err, size_t errlen);
    /* may be NULL */
    void (*worker_flush)(sk_store_worker_t *w);
    /* answers what is pending (cb runs), frees the handle */
    void (*worker_close)(sk_store_worker_t *w);
    int (*submit)(sk_store_worker_t *w, sk_store_req_t *req);
    int (*healthy)(sk_store_t *st);
    /* may be NULL: a number that changes whenever the feed gets events (0: not known, poll) */
    uint64_t (*feed_mark)(sk_store_t *st);
    void (*close)(sk_store_t *st);
} sk_store_ops_t;

struct sk_store_s {
    const sk_store_ops_t *ops;
};

/* The head of every store's per-worker handle. */
struct sk_store_worker_s {
    sk_store_t *store;
    sk_store_env_t env;
};

/* 0 if url names a store that can be opened ("sqlite:PATH" with PATH a file, "redis://...",
 * "redis-sentinel://..." or "unix://..."), else -1 with a reason in err: a configuration error,
 * found before anything starts. */
int sk_store_url_check(const char *url, char *err, size_t errlen);

/* url with the password of its user info (SCHEME://[USER]:PASSWORD@...) replaced by "***", for
 * messages and logs: a password is never printed. */
void sk_store_url_redact(const char *url, char *out, size_t outlen);

/* What a store takes besides its URL (the Redis store's options; the embedded store has none). */
typedef struct sk_store_opts_s {
    int redis_min_replicas;    /* --redis-min-replicas: WAIT for this many replicas (0: no WAIT) */
    int redis_wait_timeout_ms; /* --redis-wait-timeout */
} sk_store_opts_t;

/* Opens the store named by url ("sqlite:PATH" or a Redis URL); opts may be NULL (the defaults).
 * On failure returns NULL and writes a reason into err. */
sk_store_t *sk_store_open(const char *url, int threads, const sk_store_opts_t *opts, char *err, size_t errlen);

/* Stops background work, makes everything acknowledged durable, frees the store. Every worker
 * handle must be closed first. */
static inline void sk_store_close(sk_store_t *st)
{
    st->ops->close(st);
}

static inline const char *sk_store_name(const sk_store_t *st)
{
    return st->ops->name;
}

/* 1 when the store can answer (for /healthz). */
static inline int sk_store_healthy(sk_store_t *st)
{
    return st->ops->healthy(st);
}

/* A number that changes whenever the feed gets events, for long-polls to know when to read
 * again without asking the store; 0 when the store cannot tell (poll). Any thread. */
static inline uint64_t sk_store_feed_mark(sk_store_t *st)
{
    return st->ops->feed_mark != NULL ? st->ops->feed_mark(st) : 0;
}

/* The feed's retention: events kept (SECKILL_FEED_RETAIN, default SK_FEED_RETAIN_DEFAULT). */
#define SK_FEED_RETAIN_DEFAULT 1000000
uint64_t sk_feed_retain(void);

/* On the worker's thread, before its first request: its handle into *out, or -1 with a reason
 * in err (the worker cannot serve). env is copied. */
static inline int sk_store_worker_open(sk_store_t *st, const sk_store_env_t *env, sk_store_worker_t **out, char *err,
                                       size_t errlen)
{
    return st->ops->worker_open(st, env, out, err, errlen);
}

/* Called by the worker after every turn of its loop, before it may block waiting for events:
 * passes on work held back during the turn. */
static inline void sk_store_worker_flush(sk_store_worker_t *w)
{
    if (w->store->ops->worker_flush != NULL)
        w->store->ops->worker_flush(w);
}

/* Closes the handle; NULL is allowed. What the store answers on the worker's loop (Redis) is
 * answered now, callbacks run; a request still with another thread (the embedded store's
 * committer, at a shutdown deadline) may still be posted through env.post until sk_store_close
 * returns, so env.post and its context must live until then (the handle does). */
static inline void sk_store_worker_close(sk_store_worker_t *w)
{
    if (w != NULL)
        w->store->ops->worker_close(w);
}

/* Fills req->now_ms, req->worker and req->err (0) and submits; see the completion rule above. */
int sk_store_submit(sk_store_worker_t *w, sk_store_req_t *req);

/* For stores: answer a pending request through its worker's env.post. Thread-safe. */
void sk_store_complete(sk_store_req_t *req);

/* Frees what the store put into req's outputs (not req itself). */
void sk_store_req_dispose(sk_store_req_t *req);
void sk_order_dispose(sk_order_t *o);
/* Deep copy: dst's strings are new. */
void sk_order_copy(sk_order_t *dst, const sk_order_t *src);

/* Stores, for sk_store_open. */
sk_store_t *sk_store_embed_open(const char *path, int threads, char *err, size_t errlen);
sk_store_t *sk_store_redis_open(const char *url, int threads, const sk_store_opts_t *opts, char *err, size_t errlen);

#endif
