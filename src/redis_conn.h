/* redis_conn.h: one self-healing Redis connection on an h2o evloop, for the Redis store
 * (store_redis.c keeps one per worker thread). It connects with hiredis's async API through
 * redis_adapter.c, checks that the server is a primary and loads the store's Lua scripts
 * (handshake: AUTH, SELECT, ROLE, SCRIPT LOAD), gives every command a deadline, probes an idle
 * connection, re-sends a script as EVAL when Redis answers NOSCRIPT, and on any loss reconnects
 * with backoff. Single-threaded: everything runs on the loop's thread. */
#ifndef SK_REDIS_CONN_H
#define SK_REDIS_CONN_H

#define H2O_USE_LIBUV 0
#include <h2o.h>
#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include "redis_adapter.h"

#define SK_REDIS_TIMEOUT_MS 1200 /* a command not answered by then fails its connection */
#define SK_REDIS_ARGV_MAX 400    /* arguments of one command */
#define SK_REDIS_NUMS_MAX 140    /* numbers formatted into one command */
#define SK_REDIS_SEEDS_MAX 16    /* redis-cluster:// seed nodes */

typedef struct sk_redis_addr_s {
    char *host;
    int port;
} sk_redis_addr_t;

/* Where Redis is: redis://[[USER]:PASSWORD@]HOST[:PORT][/DB], unix://[[USER]:PASSWORD@]/PATH[?db=DB]
 * redis-sentinel://[[USER]:PASSWORD@]HOST[:PORT][,HOST[:PORT]...][/DB]#MASTER (redis_ha.h)
 * or redis-cluster://[[USER]:PASSWORD@]HOST[:PORT][,HOST[:PORT]...] (redis_cluster.h). */
typedef struct sk_redis_conf_s {
    char *host;     /* redis:// only */
    int port;       /* 6379 when absent */
    char *user;     /* NULL: AUTH with the password alone */
    char *password; /* NULL: no AUTH */
    int db;
    char *path; /* unix://: the socket's path */
    /* redis-sentinel:// (the master's address comes from the sentinels only) */
    char *master_name;          /* NULL unless Sentinel */
    sk_redis_addr_t *sentinels; /* nsentinels, port 26379 when absent */
    int nsentinels;
    char *sentinel_password; /* SECKILL_SENTINEL_PASSWORD, else the password */
    /* redis-cluster:// (the masters come from CLUSTER SLOTS, redis_cluster.h) */
    int cluster;
    sk_redis_addr_t *seeds; /* nseeds, port 6379 when absent */
    int nseeds;
    /* --redis-min-replicas, --redis-wait-timeout: a write is acknowledged only once WAIT
     * min_replicas wait_timeout_ms says enough replicas have it */
    int min_replicas;
    int wait_timeout_ms;
} sk_redis_conf_t;

/* What an instance's connections share (atomics: every worker's thread). */
typedef struct sk_redis_shared_s {
    _Atomic int nbad;       /* connections in `bad` state */
    _Atomic int nrefusing;  /* connections whose writes Redis refuses (or WAIT does not confirm) */
    _Atomic unsigned moves; /* +switch-master messages seen: every connection finds the master again */
    pthread_mutex_t mu;     /* guards moved_to */
    char moved_to[300];     /* "HOST PORT" of the last +switch-master */
} sk_redis_shared_t;

/* Parses `url` (percent escapes allowed in USER and PASSWORD). Returns 0, or -1 with a reason in
 * err; conf is to be disposed of either way. */
int sk_redis_conf_parse(sk_redis_conf_t *conf, const char *url, char *err, size_t errlen);
void sk_redis_conf_dispose(sk_redis_conf_t *conf);

/* A Lua script as sent: its text and the SHA1 that names it in EVALSHA. */
typedef struct sk_redis_script_s {
    const char *name;
    char *text; /* owned */
    size_t len;
    char sha[41];
} sk_redis_script_t;

/* Takes ownership of `text` (malloc'd) and computes its SHA1. Returns 0 or -1. */
int sk_redis_script_init(sk_redis_script_t *s, const char *name, char *text, size_t len);
void sk_redis_script_dispose(sk_redis_script_t *s);

/* The arguments of one command. Strings added with sk_redis_arg are borrowed until the command
 * is sent (hiredis copies them); numbers are formatted into the argv itself. */
typedef struct sk_redis_argv_s {
    int n;
    const char *v[SK_REDIS_ARGV_MAX];
    size_t len[SK_REDIS_ARGV_MAX];
    char nums[SK_REDIS_NUMS_MAX][24];
    int nnums;
    char buf[2048]; /* for sk_redis_arg_printf */
    size_t used;
} sk_redis_argv_t;

void sk_redis_arg(sk_redis_argv_t *a, const char *p, size_t len);
void sk_redis_arg_s(sk_redis_argv_t *a, const char *s);
void sk_redis_arg_i(sk_redis_argv_t *a, long long v);
void sk_redis_arg_u(sk_redis_argv_t *a, unsigned long long v);
/* A formatted argument (keys); the formatted texts of one command share 2 KiB. */
void sk_redis_arg_printf(sk_redis_argv_t *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

typedef struct sk_redis_conn_s sk_redis_conn_t;
typedef struct sk_redis_cmd_s sk_redis_cmd_t;

/* The end of a command, called exactly once: with Redis's reply (borrowed for the call; an error
 * reply included), or with NULL when the connection was lost or missed a deadline before the
 * reply (the command may or may not have run). May send new commands. Owns `cmd` from then. */
typedef void (*sk_redis_reply_cb)(sk_redis_cmd_t *cmd, redisReply *reply);
/* Adds a script command's KEYS count, keys and ARGV after "EVALSHA sha" / "EVAL text"; called
 * again when the command is re-sent after NOSCRIPT. */
typedef void (*sk_redis_args_cb)(sk_redis_cmd_t *cmd, sk_redis_argv_t *a);

/* A command in flight; embed it in the caller's own context (hiredis's privdata). */
struct sk_redis_cmd_s {
    h2o_timeout_entry_t timeout;       /* wakes the deadline check (h2o's loop time is the wall clock) */
    int64_t sent_at;                   /* mono ms: the deadline is sent_at + SK_REDIS_TIMEOUT_MS */
    sk_redis_conn_t *conn;
    struct redisAsyncContext *ac;      /* the context it went out on */
    const sk_redis_script_t *script;   /* NULL for a plain command */
    int eval;                          /* re-sent as EVAL after NOSCRIPT */
    sk_redis_reply_cb cb;
    sk_redis_args_cb args;             /* script commands */
    size_t takes;                      /* takes carried by a take script, for metrics */
};

struct sk_redis_conn_s {
    h2o_loop_t *loop;
    int index;                         /* the worker's, for logs */
    const sk_redis_conf_t *conf;
    const sk_redis_script_t *scripts;  /* loaded by each handshake */
    size_t nscripts;
    sk_redis_shared_t *shared;
    struct redisAsyncContext *ac;      /* NULL while down */
    char host[256];                    /* where it connects: conf's, or the sentinels' master */
    int port;
    struct sk_redis_disc_s *disc;   /* asking the sentinels where the master is */
    unsigned moves;                 /* shared->moves when the master was last asked for */
    int refusing;                   /* counted in shared->nrefusing */
    int64_t refused_at;             /* mono ms of the last definite refusal */
    struct sk_redis_watch_s *watch; /* set by the owner: a +switch-master watch it ticks and stops */
    int64_t disc_deadline;          /* mono ms */
    sk_redis_ev_t ev;
    int ready;                         /* handshake done */
    int bad;                           /* failed since it was last ready (or since start) */
    int closing;
    int down_logged;                   /* the current outage has been logged */
    int64_t retry_at;                  /* mono ms */
    int64_t backoff;
    int64_t last_send;                 /* mono ms */
    int64_t last_role;                 /* mono ms: the last ROLE probe sent */
    int64_t last_err_log;              /* mono ms */
    size_t pending;                    /* commands in flight */
    h2o_timeout_t t_cmd, t_tick, t_zero;
    h2o_timeout_entry_t e_tick, e_disc;
};

/* Starts connecting. `conf`, `scripts` and `shared` must outlive the connection. Health: the
 * connection counts in shared->nbad from a failed connect or a lost connection until its next
 * handshake completes; the first connect after start does not count while it is under way
 * (commands wait for it, and a Redis that is down refuses it at once). */
void sk_redis_conn_init(sk_redis_conn_t *c, h2o_loop_t *loop, int index, const sk_redis_conf_t *conf,
                        const sk_redis_script_t *scripts, size_t nscripts, sk_redis_shared_t *shared);
/* sk_redis_conn_init, to host:port rather than conf's address (a Redis Cluster master; conf gives
 * the credentials). host NULL: conf's. */
void sk_redis_conn_init_at(sk_redis_conn_t *c, h2o_loop_t *loop, int index, const sk_redis_conf_t *conf,
                           const sk_redis_script_t *scripts, size_t nscripts, sk_redis_shared_t *shared,
                           const char *host, int port);
/* Fails every command in flight (their callbacks run with NULL) and stops. */
void sk_redis_conn_dispose(sk_redis_conn_t *c);

/* 1 while commands can be sent: connected or connecting (commands sent while connecting wait in
 * hiredis's buffer behind the handshake, bounded by their deadline). */
static inline int sk_redis_conn_up(const sk_redis_conn_t *c)
{
    return c->ac != NULL;
}

/* Sends a plain command of string arguments (a NULL-terminated array: SK_REDIS_ARGS("SADD", k,
 * v)), or a script command (cmd->script and cmd->args set). cmd->cb must be set. Returns 0 (cb
 * will be called) or -1 (the connection is down or going: cb will not be called). */
int sk_redis_send(sk_redis_conn_t *c, sk_redis_cmd_t *cmd, const char *const *args);
int sk_redis_send_script(sk_redis_conn_t *c, sk_redis_cmd_t *cmd);
#define SK_REDIS_ARGS(...) ((const char *const[]){__VA_ARGS__, NULL})

/* The answer to a write: 1 when the reply is a definite refusal (NOREPLICAS, READONLY, MOVED,
 * LOADING, MASTERDOWN, TRYAGAIN, CLUSTERDOWN: nothing ran). The connection has then counted it,
 * marked itself refusing (health) and gone to find the master again; under Redis Cluster, MOVED
 * and ASK go to the command's callback untouched (the store sends the command where the slot now
 * is), TRYAGAIN and CLUSTERDOWN are counted and keep the connection (CLUSTERDOWN marks it
 * refusing for health), and so is a script that a slot in migration stopped before its first
 * write (sk_redis_script_migrating, counted as TRYAGAIN). */
int sk_redis_is_refusal(const redisReply *rep);
/* WAIT's answer for a write sent on c: 1 when enough replicas have it; else the connection is
 * refusing until a later WAIT or an idle probe finds the replicas back. */
int sk_redis_conn_waited(sk_redis_conn_t *c, const redisReply *rep);

#endif
