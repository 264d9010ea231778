/* store_redis_internal.h: the Redis store's reply handlers without Redis, for the fuzz target
 * tests/fuzz/fuzz_redis.c. An offline store has one worker, on the caller's thread and loop,
 * whose connection never comes up: a reply is handed to the handler of a command as if Redis had
 * sent it, and whatever the handler sends next fails at once, as on a lost connection. Nothing
 * else includes this. */
#ifndef SK_STORE_REDIS_INTERNAL_H
#define SK_STORE_REDIS_INTERNAL_H

#include <hiredis/hiredis.h>
#include <stddef.h>
#include "store.h"

/* The commands whose replies the store reads. */
typedef enum sk_redis_reply_kind_e {
    SK_REDIS_R_TAKE,         /* the take script for a batch: reps[0] */
    SK_REDIS_R_VIEW,         /* sale get: reps[0] */
    SK_REDIS_R_LIST_SLOTS,   /* sale list, SMEMBERS of the index's slots: reps[0] */
    SK_REDIS_R_LIST_MEMBERS, /* sale list, SMEMBERS of one slot's sales: reps[0] */
    SK_REDIS_R_LIST_VIEW,    /* sale list, one view per member: reps[0..nreps) */
    SK_REDIS_R_PUT,          /* sale put: SADD replies reps[0..nreps-1) (of other puts), the script's reps[nreps-1] */
    SK_REDIS_R_ORDER,        /* order get: reps[0] */
    SK_REDIS_R_ORDERS,       /* order list: reps[0] */
    SK_REDIS_R_CHANGE,       /* confirm or cancel (reqs[0].op says which): reps[0] */
    SK_REDIS_R_DUE_GET,      /* the sweep's due slots: reps[0], no request */
    SK_REDIS_R_REAP,         /* the reap script for reqs[0].sale's slot: reps[0]; the request is not answered */
    SK_REDIS_R_DUE_SET,      /* the sweep's end for a slot: reps[0], no request */
    SK_REDIS_R_KINDS_,
} sk_redis_reply_kind_t;

/* An offline Redis store's one worker handle, on env's loop; NULL if it cannot be made. Closing
 * the handle closes the store. */
sk_store_worker_t *sk_store_redis_offline_open(const sk_store_env_t *env);
void sk_store_redis_offline_close(sk_store_worker_t *w);

/* Forgets what the worker learned (coalescing queues, sold-out cache) and the store's
 * generation: each input starts from the same state. */
void sk_store_redis_offline_reset(sk_store_worker_t *w);

/* Answers one command of `kind` carrying reqs[0..n) (a take batch: n >= 1; any other: n = 1) with
 * the replies reps[0..nreps) (an element may be NULL: the connection was lost first). For a take,
 * reqs[n..n+queued) wait behind the batch for the next call. The requests' inputs and cb are the
 * caller's; every request of every kind but the reaper's is answered (cb called) exactly once
 * before this returns. The replies stay the caller's. */
void sk_store_redis_offline_reply(sk_store_worker_t *w, sk_redis_reply_kind_t kind, sk_store_req_t *reqs, size_t n,
                                  size_t queued, redisReply *const *reps, size_t nreps);

#endif
