/* redis_adapter.h: attaches a hiredis async context to an h2o evloop, in the manner of hiredis's
 * own adapters in hiredis/adapters/ (there is none for h2o 2.2.5). store_redis.c uses one per worker thread.
 *
 * The socket is watched through an h2o socket made with H2O_SOCKET_FLAG_DONT_READ on a dup() of
 * hiredis's fd: h2o only reports readiness and hiredis does all the reading and writing. The dup
 * is there because both sides close their fd on disposal: hiredis closes its own in redisFree,
 * h2o closes (and first removes from epoll) the duplicate in h2o_socket_close. */
#ifndef SK_REDIS_ADAPTER_H
#define SK_REDIS_ADAPTER_H

#define H2O_USE_LIBUV 0
#include <h2o.h>
#include <hiredis/async.h>

typedef struct sk_redis_ev_s {
    h2o_socket_t *sock;      /* NULL once cleaned up */
    redisAsyncContext *ac;
    int reading;             /* hiredis wants read events */
    int writing;             /* hiredis wants write events */
    int write_armed;         /* an h2o_socket_notify_write is outstanding */
} sk_redis_ev_t;

/* Attaches `ac` (fresh from redisAsyncConnect, without error) to `loop`. `ev` is owned by the
 * caller and must outlive `ac`; hiredis's cleanup hook closes the h2o socket but never frees
 * `ev`. Arms a write event so that the non-blocking connect completes even before the first
 * command. Returns 0, or -1 (dup failed) in which case nothing is attached. */
int sk_redis_attach(sk_redis_ev_t *ev, redisAsyncContext *ac, h2o_loop_t *loop);

#endif
