/* metrics.h: counters for GET /metrics (Prometheus text format). Each worker thread counts into
 * its own block with plain relaxed stores (no locked instructions, no shared cache lines on the
 * hot path); a scrape sums the blocks. The committer's figures have a block of their own. */
#ifndef SK_METRICS_H
#define SK_METRICS_H

#include <stddef.h>
#include <stdint.h>
#include "router.h"
#include "util.h"

/* Makes the calling thread's counter block (once per worker thread). */
void sk_metrics_thread_init(void);

/* One answered request: its action (SK_A_COUNT_ for unrouted), HTTP status and latency. */
void sk_metrics_request(int action, int status, int64_t latency_us);
/* One take outcome: 0 for a win (a replayed request id when `replayed`), else the SK_E* code. */
void sk_metrics_take(int err, int replayed);
/* One committer batch of n orders that took ms milliseconds to commit (and fsync). */
void sk_metrics_commit(size_t n, int64_t ms, int ok);

/* One Redis script call carrying `takes` takes (0 for scripts other than take). */
void sk_metrics_script(size_t takes);

/* A write the Redis store's primary refused for certain (nothing ran), by the error's first word,
 * or a WAIT that did not confirm enough replicas in time (the outcome is unknown). */
enum {
    SK_REDIS_REFUSED_NOREPLICAS,
    SK_REDIS_REFUSED_READONLY,
    SK_REDIS_REFUSED_MOVED,
    SK_REDIS_REFUSED_LOADING,
    SK_REDIS_REFUSED_MASTERDOWN,
    SK_REDIS_REFUSED_TRYAGAIN,    /* Redis Cluster: a slot in migration, keys split between nodes */
    SK_REDIS_REFUSED_CLUSTERDOWN, /* Redis Cluster: a slot without a master */
    SK_REDIS_REFUSED_WAIT,
    SK_REDIS_REFUSED_KINDS_
};
void sk_metrics_redis_refused(int kind);

/* A Redis Cluster redirection the Redis store followed: MOVED (the slot has moved) or ASK (the
 * slot is moving: the command went again, after ASKING, to the node named). */
enum { SK_REDIS_REDIRECT_MOVED, SK_REDIS_REDIRECT_ASK, SK_REDIS_REDIRECT_KINDS_ };
void sk_metrics_redis_redirect(int kind);

/* The winners feed's relay on a Redis Cluster (redis_relay.c, worker 0 of each instance). A step
 * is one read of a slot's feed stream and the copy of what it read into the merged feed
 * (relay.lua): copied (the compare-and-set held; `entries` entries landed, possibly none),
 * raced (another relay had moved the slot's position on: nothing landed, read again) or failed
 * (the position's, the read's, the WAIT's or the copy's command failed, timed out or was not
 * sent: the slot's mark stays for a later round). */
enum { SK_RELAY_COPIED, SK_RELAY_RACED, SK_RELAY_FAILED, SK_RELAY_RESULTS_ };
void sk_metrics_relay_step(int result, size_t entries);
/* The relay found entries of a slot stream lost before it copied them (event=feed_relay_gap). */
void sk_metrics_relay_gap(void);
/* A relay started (on = 1) or stopped (on = 0) at mono ms `now_ms`: the lag gauge is shown while
 * one runs in the process, from that start until its first complete round. */
void sk_metrics_relay_running(int on, int64_t now_ms);
/* A relay round whose read of the marks was sent at mono ms `t0_ms` ended complete: every slot
 * marked then was relayed to its stream's end, without a failure. The lag gauge shows the time
 * since the latest such t0. Single writer (the relay's worker); read on scrape. */
void sk_metrics_relay_complete(int64_t t0_ms);

/* Calls cb for each take outcome that /metrics shows (won, replayed, sold_out, user_limit and
 * every other error code seen), with its count summed over the threads. */
void sk_metrics_each_take(void (*cb)(const char *outcome, uint64_t n, void *arg), void *arg);

/* Appends every counter in Prometheus text format. */
void sk_metrics_render(sk_buf_t *out);

#endif
