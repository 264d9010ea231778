/* store_embed_internal.h: the embedded store's shared insides, for its four files and nothing
 * else: store_embed.c (the sales table, the take, the store interface, opening), embed_commit.c
 * (the committer thread), embed_read.c (each worker's read-only connection and its reads) and
 * embed_rebuild.c (memory rebuilt from the order book at start). Everything outside goes through
 * store.h (sk_store_embed_open). Each function's comment is at its definition. */
#ifndef SK_STORE_EMBED_INTERNAL_H
#define SK_STORE_EMBED_INTERNAL_H

#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>
#include "map.h"
#include "store.h"

#define NSTRIPES 64
#define SALE_SLOTS 16384 /* power of two; at most half of it is used */
#define MAX_SALES (SALE_SLOTS / 2)
#define WATCH_MS 500 /* how often the committer looks at the book (and probes a failing disk) */
/* a write with an fsync that proves the book writable */
#define PROBE "INSERT OR REPLACE INTO meta(key, value) VALUES('probe', strftime('%s', 'now'))"

typedef struct user_s {
    sk_map_node_t node;
    int64_t taken; /* units held plus bought */
    char key[];
} user_t;

/* A request id: pending while its take is decided and committed, then done for ever. */
typedef struct rid_s {
    sk_map_node_t node;
    int done;
    char *user; /* owned; NULL when anonymous */
    int64_t qty;
    uint64_t order_id; /* done only */
    int64_t created_at;
    int64_t expires_at;
    sk_store_req_t *waiters; /* repeats that arrived while pending */
    char key[];
} rid_t;

typedef struct stripe_s {
    pthread_mutex_t lock;
    sk_map_t users;
    sk_map_t rids;
} __attribute__((aligned(64))) stripe_t;

/* A sale. Its settings are written by the committer only, after they are durable, under a
 * sequence lock (`gen`, odd while a write is under way; see publish_begin): a worker reads them
 * as one set with sale_conf and keeps the generation it read, and the committer decides again
 * any take whose generation is no longer current when it commits it (linearizable settings). */
typedef struct esale_s {
    char id[SK_SALE_ID_MAX + 1];
    _Atomic uint64_t gen;
    _Atomic int64_t stock;
    _Atomic int64_t per_user_limit;
    _Atomic int64_t hold_seconds;
    _Atomic int64_t starts_at;
    _Atomic int64_t ends_at;
    _Atomic int64_t retain_seconds;
    _Atomic int64_t avail __attribute__((aligned(64))); /* remaining units; reserved by CAS */
    _Atomic int64_t lowering; /* units taken out of avail by a stock decrease not yet durable */
    _Atomic int64_t held;
    uint64_t next_id;      /* the committer's: ids are drawn in commit order */
    int deleted;           /* the committer's: deleted, waiting for the workers to let go */
    uint64_t retire;       /* the epoch of its deletion (see reclaim) */
    struct esale_s *limbo; /* the committer's list of deleted sales not yet freed */
    stripe_t stripes[NSTRIPES];
} esale_t;

/* A held order's deadline, in the committer's heap. */
typedef struct deadline_s {
    int64_t at;
    esale_t *sale;
    uint64_t id;
} deadline_t;

typedef struct worker_local_s {
    sk_store_worker_t super;
    _Atomic uint64_t seen;       /* the store's epoch at the end of this worker's last loop turn */
    struct worker_local_s *next; /* the store's list of workers (wlock) */
    sqlite3 *db;                 /* read-only connection for order reads */
    sqlite3_stmt *get, *list, *feed, *feed_edge;
    int wake_committer;    /* work was queued during this turn of the loop (embed_worker_flush) */
    struct collector_s {   /* giving freed memory back (collect) */
        uint64_t seen;     /* the store's `freed` as last seen */
        int64_t due, last; /* when to collect next (0: not due), when it last did (monotonic ms) */
    } collector;
} worker_local_t;

typedef struct embed_s {
    sk_store_t super;
    char *path;
    char *wal_path;
    int fd;             /* the book, opened by us: its exclusive flock says whose it is */
    dev_t dev, wal_dev; /* what the book and its WAL were when opened */
    ino_t ino, wal_ino;
    const char *lost;                          /* the committer's: why the book is gone (removed, replaced, wal_lost) */
    int64_t next_watch;                        /* the committer's: next look at the book (monotonic ms) */
    struct delayed_s *delayed, **delayed_tail; /* the committer's: takes held by the test hook */
    _Atomic(esale_t *) slots[SALE_SLOTS];      /* open addressing; written by the committer only */
    _Atomic int nsales;
    /* deleted sales are freed once no worker can hold them (quiescent-state reclamation: a worker
     * holds a sale only within one turn of its loop, and says so after each turn) */
    _Atomic uint64_t epoch;
    _Atomic uint64_t freed;       /* bumped by the committer when it has freed deleted sales */
    struct collector_s collector; /* the committer's (reclaim) */
    pthread_mutex_t wlock;
    worker_local_t *workers;
    worker_local_t *closed; /* handles closed while the committer may still answer through them */
    esale_t *limbo;
    _Atomic int healthy;

    /* the committer */
    sqlite3 *db;
    sqlite3_stmt *ins_order, *ins_sale, *upd_sale, *get_order, *upd_status, *ins_event;
    uint64_t feed_seq;          /* the committer's: the last feed seq given (in a commit or not) */
    uint64_t feed_trimmed;      /* the committer's: the last seq the retention deleted */
    _Atomic uint64_t feed_mark; /* feed_seq as of the last commit: long-polls read again when it moves */
    pthread_t thread;
    pthread_mutex_t qlock;
    pthread_cond_t qcond;
    sk_store_req_t *qhead, **qtail;
    int stopping;
    deadline_t *heap;
    size_t nheap, capheap;
} embed_t;

/* A take that cannot be decided on the worker (see stock_answer) and goes to the committer
 * undecided; its stamp says so (a settings generation is always even). */
#define DEFERRED 1
#define UNDECIDED UINT64_MAX

/* A refusal of the order book (rebuild, book_open): says why into err (errlen bytes), gives -1. */
#define REFUSE(...) (snprintf(err, errlen, __VA_ARGS__), -1)

/* store_embed.c: the sales table */
esale_t *sk_embed_find_sale(embed_t *e, const char *id);
esale_t *sk_embed_slot_sale(embed_t *e, size_t i);
void sk_embed_publish_sale(embed_t *e, esale_t *s);
void sk_embed_unpublish_sale(embed_t *e, esale_t *s);
esale_t *sk_embed_sale_new(const char *id, const sk_sale_conf_t *c);
void sk_embed_sale_free(esale_t *s);
uint64_t sk_embed_sale_conf(const esale_t *s, sk_sale_conf_t *c);
void sk_embed_publish_begin(esale_t *s);
void sk_embed_publish_end(esale_t *s);
void sk_embed_sale_view(const esale_t *s, sk_sale_view_t *v);
stripe_t *sk_embed_stripe_of(esale_t *s, uint64_t hash);
void sk_embed_user_add(esale_t *s, const char *user, size_t len, uint64_t h, int64_t delta);

/* store_embed.c: answering, the take */
void sk_embed_rid_finish(esale_t *s, const char *key, size_t klen, int err, const sk_order_t *order);
int sk_embed_decide(esale_t *s, sk_store_req_t *req, const sk_sale_conf_t *conf);
void sk_embed_unreserve(esale_t *s, const sk_order_t *o);
void sk_embed_fill_order(esale_t *s, sk_store_req_t *req, const sk_sale_conf_t *conf);
void sk_embed_collect(struct collector_s *c, uint64_t freed);

/* store_embed.c: a persistent prepared statement; -1 (logged) when SQLite refuses it */
int sk_embed_prepare(sqlite3 *db, const char *sql, sqlite3_stmt **st);

/* embed_commit.c: the committer thread and what opening and rebuilding need of it */
extern int64_t sk_embed_test_take_delay_ms;
void *sk_embed_committer_main(void *arg);
int sk_embed_exec(sqlite3 *db, const char *sql);
int64_t sk_embed_column_time(sqlite3_stmt *st, int i);
void sk_embed_heap_push(embed_t *e, deadline_t d);

/* embed_read.c: a worker's handle and the reads on its thread (0 or an SK_E* code) */
int sk_embed_worker_open(sk_store_t *st, const sk_store_env_t *env, sk_store_worker_t **out, char *err, size_t errlen);
void sk_embed_worker_close(sk_store_worker_t *super);
void sk_embed_row_to_order(sqlite3_stmt *st, const char *sale, int idcol, sk_order_t *o);
int sk_embed_read_feed(worker_local_t *w, sk_store_req_t *req);
int sk_embed_read_orders(worker_local_t *w, sk_store_req_t *req);
int sk_embed_read_one(worker_local_t *w, sk_store_req_t *req);

/* embed_rebuild.c: memory from the book at start; -1 with why in err when the book is refused */
int sk_embed_rebuild(embed_t *e, char *err, size_t errlen);

#endif
