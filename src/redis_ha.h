/* redis_ha.h: what the Redis store needs beyond one address (docs/redis.md, "High availability"):
 * the redis-sentinel:// and unix:// URLs, finding the master through the sentinels (asked again
 * on every reconnect), watching them for +switch-master, and the check at start that fails fast
 * on what will not heal (a wrong password, a bad DB index, an unknown master name).
 * Single-threaded like redis_conn.c: a discovery or a watch lives on one loop. */
#ifndef SK_REDIS_HA_H
#define SK_REDIS_HA_H

#include "redis_conn.h"

#define SK_SENTINEL_PORT 26379
#define SK_REDIS_SENTINELS_MAX 16

/* redis-sentinel://[[USER]:PASSWORD@]HOST[:PORT][,HOST[:PORT]...][/DB]#MASTER and
 * unix://[[USER]:PASSWORD@]/PATH[?db=DB] into conf (already zeroed, port set). 0 or -1 with a
 * reason (the password never in it) in err. */
int sk_redis_ha_parse(sk_redis_conf_t *conf, const char *url, char *err, size_t errlen);

/* ---- discovery: where is the master? ---- */

typedef struct sk_redis_disc_s sk_redis_disc_t;

/* Asks every sentinel of conf at once (SENTINEL get-master-addr-by-name, and SENTINEL MASTER for
 * its state). `ready(ctx)` is called from inside a hiredis callback once every sentinel has
 * answered or failed; the caller then (outside hiredis) calls sk_redis_disc_finish, as it does
 * when its deadline passes first. NULL when nothing could be started. */
sk_redis_disc_t *sk_redis_disc_start(h2o_loop_t *loop, const sk_redis_conf_t *conf, void (*ready)(void *ctx),
                                     void *ctx);
/* Ends a discovery and frees it: 1 with the master's address in host/port when the sentinels
 * name one (the rule is in redis_ha.c), else 0 with the reason in why. Not from inside a hiredis
 * callback. NULL is allowed (0). */
int sk_redis_disc_finish(sk_redis_disc_t *d, char *host, size_t hostlen, int *port, char *why, size_t whylen);

/* ---- the +switch-master watch: one subscription per sentinel ---- */

typedef struct sk_redis_watch_s sk_redis_watch_t;

/* Subscribes to +switch-master on every sentinel (re-subscribing after a loss, on tick) and
 * bumps shared->moves (with the new address in shared->moved_to) for every message about conf's
 * master; and, for what a lost subscription misses, asks the sentinels every 2 s (on tick) and
 * does the same when the master they name has changed. */
sk_redis_watch_t *sk_redis_watch_start(h2o_loop_t *loop, const sk_redis_conf_t *conf, sk_redis_shared_t *shared);
/* Reconnects lost subscriptions; call every so often. */
void sk_redis_watch_tick(sk_redis_watch_t *w, int64_t now_mono);
void sk_redis_watch_stop(sk_redis_watch_t *w);

/* ---- at start ---- */

/* Blocking, on the main thread, before the workers: 0 when Redis (or the sentinels) cannot be
 * reached (the store starts unhealthy and keeps trying) or all is well; warnings are logged for a
 * master whose persistence does not give what docs/redis.md promises. -1 with the reason in err
 * for what will not heal: a refused password, a DB index out of range, a master name that no
 * sentinel knows. */
int sk_redis_check_start(const sk_redis_conf_t *conf, char *err, size_t errlen);

#endif
