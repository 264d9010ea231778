/* redis_adapter.c: see redis_adapter.h. */
#include "redis_adapter.h"
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

static void on_readable(h2o_socket_t *sock, const char *err)
{
    sk_redis_ev_t *ev = sock->data;
    /* with DONT_READ h2o reads nothing itself, so err is always NULL: hiredis sees EOF or the
     * socket error on its own read and tears the context down */
    (void)err;
    redisAsyncHandleRead(ev->ac);
}

static void on_writable(h2o_socket_t *sock, const char *err)
{
    sk_redis_ev_t *ev = sock->data;
    (void)err;
    /* h2o's write notification is one-shot: re-armed by add_write if hiredis has more to send */
    ev->write_armed = 0;
    if (ev->writing)
        redisAsyncHandleWrite(ev->ac);
}

static void add_read(void *p)
{
    sk_redis_ev_t *ev = p;
    if (ev->sock == NULL || ev->reading)
        return;
    ev->reading = 1;
    h2o_socket_read_start(ev->sock, on_readable);
}

static void del_read(void *p)
{
    sk_redis_ev_t *ev = p;
    if (ev->sock == NULL || !ev->reading)
        return;
    ev->reading = 0;
    h2o_socket_read_stop(ev->sock);
}

static void add_write(void *p)
{
    sk_redis_ev_t *ev = p;
    if (ev->sock == NULL)
        return;
    ev->writing = 1;
    if (!ev->write_armed) {
        ev->write_armed = 1;
        h2o_socket_notify_write(ev->sock, on_writable);
    }
}

/* h2o cannot take back a write notification: it fires once more and is ignored then */
static void del_write(void *p)
{
    sk_redis_ev_t *ev = p;
    ev->writing = 0;
}

/* hiredis 0.14 may call this more than once per context */
static void cleanup(void *p)
{
    sk_redis_ev_t *ev = p;
    if (ev->sock != NULL) {
        /* drops any outstanding notification and removes the duplicate fd from epoll */
        h2o_socket_close(ev->sock);
        ev->sock = NULL;
    }
    ev->reading = ev->writing = ev->write_armed = 0;
}

int sk_redis_attach(sk_redis_ev_t *ev, redisAsyncContext *ac, h2o_loop_t *loop)
{
    int fd = fcntl(ac->c.fd, F_DUPFD_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    memset(ev, 0, sizeof(*ev));
    ev->ac = ac;
    ev->sock = h2o_evloop_socket_create(loop, fd, H2O_SOCKET_FLAG_DONT_READ);
    ev->sock->data = ev;
    ac->ev.data = ev;
    ac->ev.addRead = add_read;
    ac->ev.delRead = del_read;
    ac->ev.addWrite = add_write;
    ac->ev.delWrite = del_write;
    ac->ev.cleanup = cleanup;
    add_write(ev);
    return 0;
}
