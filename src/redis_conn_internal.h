/* redis_conn_internal.h: redis_conn.c's reply checks and a connection that never connects, for
 * the Redis store's offline mode (store_redis_internal.h) and the fuzz target
 * tests/fuzz/fuzz_redis.c. Nothing else includes this. */
#ifndef SK_REDIS_CONN_INTERNAL_H
#define SK_REDIS_CONN_INTERNAL_H

#include "redis_conn.h"

/* 1 when a ROLE reply is a primary's: an array whose first element is the bulk string
 * "master"; else 0. */
int sk_redis_is_primary(const redisReply *rep);

/* sk_redis_conn_init without connecting or ticking: the connection stays down, so every send
 * fails at once (as while Redis is unreachable). Dispose of it with sk_redis_conn_dispose. */
void sk_redis_conn_init_down(sk_redis_conn_t *c, h2o_loop_t *loop, int index, const sk_redis_conf_t *conf,
                             const sk_redis_script_t *scripts, size_t nscripts, sk_redis_shared_t *shared);

/* Hands `rep` to `cmd` (its cb and, for a script, args set) as if it had been sent on c and Redis
 * had answered it: error replies go through what the connection does with them (NOSCRIPT sends
 * the script again, READONLY and its kind fail the connection) before cmd->cb. NULL: the
 * connection was lost before the reply. The reply stays the caller's. */
void sk_redis_conn_deliver(sk_redis_conn_t *c, sk_redis_cmd_t *cmd, redisReply *rep);

/* The URL parsers' pieces, shared with redis_ha.c: a percent-decoded copy of s[0..n) (NULL when
 * an escape is malformed or decodes to NUL), and a decimal number in [p, end) up to max. */
char *sk_redis_pct_decode(const char *s, size_t n);
int sk_redis_parse_number(const char *p, const char *end, long max, long *out);

#endif
