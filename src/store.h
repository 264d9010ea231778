/* store.h: the storage interface, the only storage header that handlers see. A store decides
 * takes and keeps sales and orders; two implement it: store_embed.c (in memory + SQLite) and
 * store_redis.c. Every operation is one sk_store_req_t: the caller fills the inputs and calls
 * sk_store_submit; the store fills the outputs.
 *
 * Async rule: sk_store_submit returns
 *   SK_STORE_DONE (1): answered at once; the outputs are set and `cb` will NOT be called;
 *   0: pending; `cb` is called exactly once, later, on the caller's event loop (`receiver`);
 *   < 0: an SK_E* error, the request was not taken; `cb` is never called.
 * In both answered cases req->err holds the outcome (0 or an SK_E* code). */
#ifndef SK_STORE_H
#define SK_STORE_H

#include <stddef.h>
#include <stdint.h>
#define H2O_USE_LIBUV 0
#include <h2o/multithread.h>
#include "sale.h"

#define SK_STORE_DONE 1

typedef struct sk_store_s sk_store_t;
typedef struct sk_store_req_s sk_store_req_t;
typedef void (*sk_store_cb)(sk_store_req_t *req);

typedef enum sk_store_op_e {
    SK_STORE_TAKE,
    SK_STORE_SALE_PUT,
    SK_STORE_SALE_GET,
    SK_STORE_SALE_LIST,
    SK_STORE_ORDER_GET,
    SK_STORE_ORDER_LIST,
    SK_STORE_ORDER_CONFIRM,
    SK_STORE_ORDER_CANCEL,
} sk_store_op_t;

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

struct sk_store_req_s {
    /* inputs, set by the caller */
    sk_store_op_t op;
    h2o_multithread_receiver_t *receiver; /* the caller's loop, for async answers */
    sk_store_cb cb;
    void *data;                           /* the caller's */
    char sale[SK_SALE_ID_MAX + 1];
    const char *user;                     /* take: borrowed until answered; NULL if absent */
    size_t user_len;
    int64_t qty;                          /* take */
    const char *request_id;               /* take: borrowed until answered; NULL if absent */
    size_t request_id_len;
    sk_sale_conf_t conf;                  /* sale put */
    uint64_t order_id;                    /* order get / confirm / cancel; list: after */
    unsigned limit;                       /* order list */
    int64_t now_ms;                       /* set by sk_store_submit */

    /* outputs, set by the store */
    int err;                  /* 0 or SK_E* */
    int created;              /* sale put: 1 if created; take: 1 if a new order, 0 if a replay */
    sk_order_t order;         /* take, order get / confirm / cancel */
    sk_sale_view_t view;      /* sale get / put */
    sk_sale_view_t *views;    /* sale list: owned array */
    size_t nviews;
    sk_order_t *orders;       /* order list: owned array */
    size_t norders;
    int more;                 /* order list: there are orders after the last one */

    /* private to the store */
    h2o_multithread_message_t msg;
    sk_store_req_t *next;     /* queues and waiter lists */
    void *priv;
    uint64_t stamp;           /* e.g. the settings generation a take was decided under */
};

typedef struct sk_store_ops_s {
    const char *name;
    int (*submit)(sk_store_t *st, sk_store_req_t *req);
    /* 1 when the store can answer (for /healthz) */
    int (*healthy)(sk_store_t *st);
    /* per worker thread set-up on that thread's loop; returns a worker-local pointer */
    void *(*worker_init)(sk_store_t *st, h2o_loop_t *loop, int index);
    void (*worker_dispose)(sk_store_t *st, void *local);
    /* called by each worker after every turn of its loop, before it may block waiting for events:
     * passes on work held back during the turn (may be NULL) */
    void (*worker_flush)(sk_store_t *st, void *local);
    /* stops background work, makes everything acknowledged durable, frees the store */
    void (*close)(sk_store_t *st);
} sk_store_ops_t;

struct sk_store_s {
    const sk_store_ops_t *ops;
};

/* 0 if url names a store that can be opened ("sqlite:PATH" with PATH a file, or "redis://..."),
 * else -1 with a reason in err: a configuration error, found before anything starts. */
int sk_store_url_check(const char *url, char *err, size_t errlen);

/* Opens the store named by url ("sqlite:PATH" or "redis://..."). On failure returns NULL and
 * writes a reason into err. */
sk_store_t *sk_store_open(const char *url, int threads, char *err, size_t errlen);

/* Fills req->now_ms and submits; see the async rule above. */
int sk_store_submit(sk_store_t *st, sk_store_req_t *req);

/* For stores: answer a pending request on its caller's loop. Thread-safe. */
void sk_store_complete(sk_store_req_t *req);
/* For workers: the receiver callback that runs the answers sent by sk_store_complete. */
void sk_store_receive_cb(h2o_multithread_receiver_t *receiver, h2o_linklist_t *messages);

/* Frees what the store put into req's outputs (not req itself). */
void sk_store_req_dispose(sk_store_req_t *req);
void sk_order_dispose(sk_order_t *o);
/* Deep copy: dst's strings are new. */
void sk_order_copy(sk_order_t *dst, const sk_order_t *src);

/* Stores, for sk_store_open. */
sk_store_t *sk_store_embed_open(const char *path, int threads, char *err, size_t errlen);
sk_store_t *sk_store_redis_open(const char *url, int threads, char *err, size_t errlen);

#endif
