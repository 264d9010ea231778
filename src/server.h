/* server.h: the process: worker threads, each with its own h2o event loop and its own
 * SO_REUSEPORT listening sockets for the public and admin listeners (share-nothing HTTP), the
 * store, signals and a bounded clean shutdown. */
#ifndef SK_SERVER_H
#define SK_SERVER_H

#define H2O_USE_LIBUV 0
#include <h2o.h>
#include <pthread.h>
#include <stdatomic.h>
#include "config.h"
#include "store.h"

typedef struct sk_server_s sk_server_t;
typedef struct sk_ratelimit_s sk_ratelimit_t;

typedef struct sk_worker_s {
    int index;
    sk_server_t *server;
    h2o_context_t ctx;
    h2o_accept_ctx_t accept_public;
    h2o_accept_ctx_t accept_admin;
    h2o_socket_t *listen_public;
    h2o_socket_t *listen_admin;
    h2o_multithread_receiver_t store_receiver; /* answers from the store */
    h2o_multithread_receiver_t ctl_receiver;   /* shutdown requests from the main thread */
    h2o_multithread_message_t ctl_msg;
    void *store_local;
    size_t inflight;                           /* requests waiting for the store */
    int stopping;
    struct sk_dashboard_s *dashboard;          /* dashboard.c: this worker's event streams */
    pthread_t tid;
} sk_worker_t;

struct sk_server_s {
    sk_config_t *cfg;
    sk_store_t *store;
    sk_ratelimit_t *ratelimit;       /* NULL when off */
    h2o_globalconf_t globalconf;
    h2o_hostconf_t *host_public;
    h2o_hostconf_t *host_admin;
    h2o_hostconf_t *hosts_public[2];
    h2o_hostconf_t *hosts_admin[2];
    sk_worker_t *workers;
    int nworkers;
    int *fds_public;                 /* one listening socket per worker */
    int *fds_admin;
    h2o_barrier_t ready;             /* every worker has its loop and receivers */
    _Atomic int stopping;
};

/* Runs the server until SIGTERM/SIGINT; returns the process exit code. */
int sk_server_run(sk_config_t *cfg);

/* Sets up the HTTP handlers on the server's host configurations (api.c). */
void sk_api_register(sk_server_t *srv);

#endif
