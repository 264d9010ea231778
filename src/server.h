/* server.h: the process: worker threads, each with its own h2o event loop and its own
 * SO_REUSEPORT listening sockets for the public and admin listeners (share-nothing HTTP), one
 * owner per listening address, bounded connections, the store, signals and a bounded clean
 * shutdown. */
#ifndef SK_SERVER_H
#define SK_SERVER_H

#define H2O_USE_LIBUV 0
#include <h2o.h>
#include <pthread.h>
#include <stdatomic.h>
#include "config.h"
#include "proxy.h"
#include "store.h"
#include "util.h"

typedef struct sk_server_s sk_server_t;
typedef struct sk_ratelimit_s sk_ratelimit_t;
typedef struct sk_worker_s sk_worker_t;

enum { SK_LISTENER_PUBLIC, SK_LISTENER_ADMIN, SK_LISTENER_COUNT };

/* One worker's listening socket for one listener. */
typedef struct sk_listener_s {
    h2o_socket_t *sock;            /* NULL once closed (stopping) */
    h2o_accept_ctx_t accept;
    sk_worker_t *worker;
    int kind;                      /* SK_LISTENER_PUBLIC or SK_LISTENER_ADMIN */
    int polled;                    /* accepting; 0 while paused at the cap or after an error */
    int64_t paused_until;          /* sk_mono_ms() before which an accept error keeps it paused */
} sk_listener_t;

struct sk_worker_s {
    int index;
    sk_server_t *server;
    h2o_context_t ctx;
    sk_listener_t listeners[SK_LISTENER_COUNT];
    h2o_multithread_receiver_t store_receiver; /* answers from the store (its env.post) */
    h2o_multithread_receiver_t ctl_receiver;   /* shutdown requests from the main thread */
    h2o_multithread_message_t ctl_msg;
    sk_store_worker_t *store;                  /* this worker's store handle; NULL if it failed */
    char store_err[256];                       /* why it failed */
    size_t inflight;                           /* requests waiting for the store */
    int stopping;
    struct sk_dashboard_s *dashboard;          /* dashboard.c: this worker's event streams */
    struct sk_feed_s *feed;                    /* feed.c: this worker's long-polls and streams */
    uint64_t loop_now_max;                     /* the latest h2o loop time seen (clock steps) */
    pthread_t tid;
};

/* What a module that keeps per-worker state (the dashboard's event streams) gives the server:
 * called on the worker's thread. */
typedef struct sk_worker_hooks_s {
    void (*stop)(sk_worker_t *w);    /* the worker is stopping: end what would never end by itself */
    size_t (*open)(sk_worker_t *w);  /* what is still open: the worker waits for 0 before exiting */
    void (*dispose)(sk_worker_t *w); /* the worker is exiting */
} sk_worker_hooks_t;

#define SK_WORKER_HOOKS_MAX 4

struct sk_server_s {
    sk_config_t *_Atomic cfg; /* SIGHUP publishes a new one (sk_config_reload); read it once per use */
    const sk_worker_hooks_t *hooks[SK_WORKER_HOOKS_MAX]; /* registered before the workers start */
    int nhooks;
    sk_store_t *store;
    sk_ratelimit_t *_Atomic ratelimit; /* NULL when off; replaced on reload, read it once per request */
    h2o_globalconf_t globalconf;
    h2o_hostconf_t *host_public;
    h2o_hostconf_t *host_admin;
    h2o_hostconf_t *hosts_public[2];
    h2o_hostconf_t *hosts_admin[2];
    sk_worker_t *workers;
    int nworkers;
    int *fds[SK_LISTENER_COUNT];     /* one listening socket per worker and listener */
    _Atomic long nconns[SK_LISTENER_COUNT];             /* open connections, by listener */
    long max_conns[SK_LISTENER_COUNT];                  /* accepting stops at this many */
    _Atomic uint64_t accept_errors[SK_LISTENER_COUNT];  /* accepts failed for lack of descriptors or memory */
    _Atomic uint64_t accepted[SK_LISTENER_COUNT];       /* connections accepted */
    _Atomic uint64_t at_cap[SK_LISTENER_COUNT];         /* times a worker stopped accepting at the cap */
    h2o_barrier_t ready;                                /* every worker has its loop, receivers and store handle */
    /* who buys, who administers (api.c; loaded and reloaded by server.c) */
    sk_cidrs_t trusted; /* --trusted-proxies */
    char **admin_hosts; /* the Host names the admin listener answers */
    size_t nadmin_hosts;
    struct sk_jwt_keys_s *_Atomic jwt_keys; /* buyer-token keys; NULL: no tokens */
    struct sk_jwt_keys_s **jwt_retired;     /* rings replaced by SIGHUP, freed at exit */
    size_t njwt_retired;
};

/* Descriptors kept out of the connection budget: standard streams, logs, each worker's event
 * loop, queue, listening sockets, store and Redis connection, the order book's files. */
#define SK_FD_RESERVE_BASE 64
#define SK_FD_RESERVE_PER_WORKER 16

/* The connection limits for a descriptor limit `nofile` and `nworkers` workers. The budget is
 * nofile less the reserve; the admin listener gets an eighth of it (16 to 1024), the public one
 * the rest, or `requested` when that is smaller (0: no request). Sets max[SK_LISTENER_*] and
 * returns 0, or 1 when `requested` was lowered to the budget, or -1 when the budget is so small
 * that the limits (16 each at least) may still run out of descriptors. */
int sk_server_conn_limits(uint64_t nofile, int nworkers, int64_t requested, long max[SK_LISTENER_COUNT]);

/* Appends the connection gauges and accept-error counters in Prometheus text format (api.c's
 * /metrics). */
void sk_server_render_metrics(sk_server_t *srv, sk_buf_t *out);

/* Runs the server until SIGTERM/SIGINT; SIGHUP reopens the logs and reloads the configuration
 * (sk_config_reload: what is live applies, the rest is logged as needing a restart, an invalid
 * file changes nothing). Returns the process exit code. */
int sk_server_run(sk_config_t *cfg);

/* Sets up the HTTP handlers on the server's host configurations (api.c). */
void sk_api_register(sk_server_t *srv);

/* Registers per-worker hooks (before the workers start; at most SK_WORKER_HOOKS_MAX). */
void sk_server_add_worker_hooks(sk_server_t *srv, const sk_worker_hooks_t *hooks);

#endif
