/* config.h: the server's settings. One option table (config.c) drives the command line, the
 * SECKILL_* environment variables, an optional --config file of `key = value` lines and --help.
 * Precedence: command line > environment > config file > default. */
#ifndef SK_CONFIG_H
#define SK_CONFIG_H

#include <stdint.h>
#include <stdio.h>

typedef struct sk_config_s {
    char *listen;           /* public HOST:PORT */
    char *admin_listen;     /* admin HOST:PORT */
    char *store;            /* sqlite:PATH | redis://... */
    int64_t threads;        /* 0: one per core */
    char *admin_token_file;
    char *admin_token;      /* from the file or SECKILL_ADMIN_TOKEN; NULL: no token */
    char *log_file;
    char *log_level;
    char *access_log;       /* NULL: off */
    int64_t rate_limit;     /* requests per second per client; 0: off */
    int64_t rate_burst;     /* 0: same as rate_limit */
    int64_t trust_proxy;    /* 1: the client is the first X-Forwarded-For address */
    int64_t max_connections; /* public connections; 0: derived from RLIMIT_NOFILE (server.h) */
    int64_t max_body_bytes;
    int64_t max_head_bytes;
    int64_t idle_timeout;   /* seconds */
    int64_t shutdown_timeout; /* seconds to finish in-flight requests on SIGTERM */
    char *config_file;
    int64_t redis_min_replicas; /* Redis store: WAIT for this many replicas before a 201 */
    int64_t redis_wait_timeout; /* ms */
} sk_config_t;

enum { SK_CONFIG_RUN = 0, SK_CONFIG_EXIT_OK = 1, SK_CONFIG_EXIT_USAGE = 2 };

/* Fills *cfg from defaults, the config file, the environment and argv. Returns SK_CONFIG_RUN, or
 * SK_CONFIG_EXIT_OK after printing --help / --version to out, or SK_CONFIG_EXIT_USAGE after
 * printing an error to err. */
int sk_config_load(sk_config_t *cfg, int argc, char **argv, FILE *out, FILE *err);
void sk_config_dispose(sk_config_t *cfg);

#endif
