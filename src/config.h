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
    char *redis_password_file; /* its password goes into `store` at load (config.c) */
    char *config_file;
    /* who is buying, who is administering, what the wire may carry (issue 15; api.c, auth.c) */
    int64_t http2;                  /* 1: h2c upgrades and HTTP/2 prior knowledge are served */
    char *admin_hosts;              /* Host names the admin listener answers (comma list); NULL: default */
    char *buyer_token_secret_file;  /* HS256 secret */
    char *buyer_token_public_key;   /* PEM public keys (ES256, EdDSA), each after an optional `kid:` line */
    int64_t buyer_token_leeway;     /* seconds of clock skew allowed on exp, nbf, iat */
    char *buyer_token_audience;     /* required `aud` when set */
    char *user_header;              /* the buyer, from a trusted gateway */
    char *trusted_proxies;          /* CIDR list: X-Forwarded-For and --user-header are believed from these */
    int admin_token_group_readable; /* the admin token file may be read by group or others */
    int check_only;                 /* -t / --check-config */
    int argc;                       /* the command line, borrowed: a reload reads it again */
    char **argv;
    int64_t redis_min_replicas; /* Redis store: WAIT for this many replicas before a 201 */
    int64_t redis_wait_timeout; /* ms */
} sk_config_t;

enum { SK_CONFIG_RUN = 0, SK_CONFIG_EXIT_OK = 1, SK_CONFIG_EXIT_USAGE = 2 };

/* Fills *cfg from defaults, the config file, the environment and argv, and reads the secrets'
 * files (admin token, Redis password). Returns SK_CONFIG_RUN, or SK_CONFIG_EXIT_OK after printing
 * --help / --version to out, or SK_CONFIG_EXIT_USAGE after printing every problem found to err,
 * one line each, naming the file and line, the option or the variable. argv is kept (borrowed)
 * for sk_config_reload. */
int sk_config_load(sk_config_t *cfg, int argc, char **argv, FILE *out, FILE *err);

/* What the load cannot see alone: the log level, the addresses' form, the store URL (parsed, not
 * opened). Opens nothing. Returns the number of problems, each printed to err. */
int sk_config_check(const sk_config_t *cfg, FILE *err);

/* 1 when a change of the option `name` applies on SIGHUP without a restart. */
int sk_config_live(const char *name);

/* SIGHUP: loads the configuration again into *next (the same command line and environment, the
 * --config file and the secrets' files read anew). Returns 0 with `applied` and `restart` set
 * to the comma-separated names of what changed ("" when nothing did): what applies live (the
 * live options and "admin-token") and what needs a restart; *next then holds the new live
 * values and the running values of everything else. Returns -1 after printing every problem
 * to err when the new configuration is invalid: nothing is to change, *next is disposed. */
int sk_config_reload(sk_config_t *next, const sk_config_t *cur, char *applied, size_t alen, char *restart, size_t rlen,
                     FILE *err);
void sk_config_dispose(sk_config_t *cfg);

#endif
