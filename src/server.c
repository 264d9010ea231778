/* server.c: see server.h. The main thread raises the descriptor limit, binds every listening
 * socket (one per worker and listener, SO_REUSEPORT, so the kernel spreads connections and
 * workers share nothing), starts the workers, prints the `listening ...` lines, then waits for
 * signals: SIGHUP reopens the log and reloads the buyer-token keys, SIGTERM/SIGINT stop
 * accepting, let in-flight requests finish (bounded by --shutdown-timeout), flush the store and
 * return 0. Readiness and stopping are reported to systemd when NOTIFY_SOCKET is set.
 *
 * One owner per address: SO_REUSEPORT would let a second process join our listening sockets and
 * take half the buyers, so before binding, an address is probed with a socket without it, which
 * the kernel refuses (EADDRINUSE) while anyone else listens on an overlapping address. Two
 * seckillds starting at once could both probe before either binds; an abstract Unix socket named
 * after the port, bound from probe to listen(), orders them, and the second one's probe then sees
 * the first one's sockets. (Another program that binds with SO_REUSEPORT itself, as the same
 * user, in the microseconds between our probe and our bind is not excluded.)
 *
 * Connections are bounded (server.h: the descriptor budget): a worker accepts only after taking
 * a slot of its listener's count, so the cap is exact across workers; at the cap it stops polling
 * that listener and the kernel keeps new connections in the backlog until a connection closes.
 * An accept that fails for lack of descriptors or memory pauses that listener for
 * ACCEPT_PAUSE_MS instead of spinning on a listener that stays readable. */
#include "server.h"
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include "accesslog.h"
#include "jwt.h"
#include "log.h"
#include "metrics.h"
#include "ratelimit.h"
#include "util.h"

#define ACCEPT_PAUSE_MS 100      /* after EMFILE, ENFILE, ENOBUFS or ENOMEM */
#define PORT_LOCK_WAIT_MS 5000   /* another seckilld binding the same port takes milliseconds */
#define ADMIN_MIN 16             /* admin connections, at least ... */
#define ADMIN_MAX 1024           /* ... and at most */
#define PUBLIC_MIN 16

static const char *const listener_names[SK_LISTENER_COUNT] = {"public", "admin"};

/* Splits HOST:PORT (HOST may be [v6]) and resolves it numerically. */
static int resolve(const char *hostport, struct sockaddr_storage *ss, socklen_t *len)
{
    char host[256];
    const char *colon = strrchr(hostport, ':');
    if (colon == NULL || colon == hostport || (size_t)(colon - hostport) >= sizeof(host))
        return -1;
    size_t hlen = (size_t)(colon - hostport);
    memcpy(host, hostport, hlen);
    host[hlen] = '\0';
    if (host[0] == '[' && host[hlen - 1] == ']') {
        memmove(host, host + 1, hlen - 2);
        host[hlen - 2] = '\0';
    }
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end != '\0' || end == colon + 1 || port < 0 || port > 65535)
        return -1;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *res;
    if (getaddrinfo(host, colon + 1, &hints, &res) != 0)
        return -1;
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *len = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

static int listen_on(const struct sockaddr_storage *ss, socklen_t len)
{
    int fd, one = 1;
    if ((fd = socket(ss->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
        return -1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0 ||
        bind(fd, (const struct sockaddr *)ss, len) != 0 || listen(fd, 4096) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

/* Binds a socket without SO_REUSEPORT to the address and closes it: fails with EADDRINUSE while
 * any socket listens on an overlapping address (SO_REUSEADDR only lets it past connections of an
 * earlier life in TIME_WAIT). */
static int probe(const struct sockaddr_storage *ss, socklen_t len)
{
    int fd, one = 1, rc;
    if ((fd = socket(ss->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
        return -1;
    rc = setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (rc == 0)
        rc = bind(fd, (const struct sockaddr *)ss, len);
    int e = errno;
    close(fd);
    errno = e;
    return rc;
}

/* Takes the start-up lock of a TCP port: the abstract Unix socket "@seckilld/listen/PORT" (per
 * network namespace, like the port; released when the process dies). Returns its descriptor, or
 * -1 when it cannot be made (the probe still guards), or -2 when another process held it for
 * PORT_LOCK_WAIT_MS. */
static int port_lock(int port)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int n = snprintf(sa.sun_path + 1, sizeof(sa.sun_path) - 1, "seckilld/listen/%d", port);
    socklen_t len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    for (int waited = 0;; waited += 10) {
        if (bind(fd, (struct sockaddr *)&sa, len) == 0)
            return fd;
        if (errno != EADDRINUSE || waited >= PORT_LOCK_WAIT_MS) {
            int busy = errno == EADDRINUSE;
            close(fd);
            return busy ? -2 : -1;
        }
        usleep(10000);
    }
}

static int port_of(const struct sockaddr_storage *ss)
{
    return ntohs(ss->ss_family == AF_INET6 ? ((const struct sockaddr_in6 *)ss)->sin6_port
                                           : ((const struct sockaddr_in *)ss)->sin_port);
}

/* ss as IPv4 when it is an IPv4-mapped IPv6 address. */
static struct sockaddr_storage unmapped(const struct sockaddr_storage *ss)
{
    struct sockaddr_storage out = *ss;
    const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;
    if (ss->ss_family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&out;
        memset(&out, 0, sizeof(out));
        s4->sin_family = AF_INET;
        s4->sin_port = s6->sin6_port;
        memcpy(&s4->sin_addr, &s6->sin6_addr.s6_addr[12], 4);
    }
    return out;
}

static int is_any(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET6)
        return IN6_IS_ADDR_UNSPECIFIED(&((const struct sockaddr_in6 *)ss)->sin6_addr);
    return ((const struct sockaddr_in *)ss)->sin_addr.s_addr == htonl(INADDR_ANY);
}

/* Whether two listening addresses would take the same connections: the same port (not 0) on
 * the same address, or on a wildcard that covers the other ([::] covers IPv4 as well, as it
 * does unless net.ipv6.bindv6only is set). */
static int overlap(const struct sockaddr_storage *x, const struct sockaddr_storage *y)
{
    struct sockaddr_storage a = unmapped(x), b = unmapped(y);
    if (port_of(&a) == 0 || port_of(&a) != port_of(&b))
        return 0;
    if ((a.ss_family == AF_INET6 && is_any(&a)) || (b.ss_family == AF_INET6 && is_any(&b)))
        return 1;
    if (a.ss_family != b.ss_family)
        return 0;
    if (is_any(&a) || is_any(&b))
        return 1;
    if (a.ss_family == AF_INET6)
        return memcmp(&((struct sockaddr_in6 *)&a)->sin6_addr, &((struct sockaddr_in6 *)&b)->sin6_addr, 16) == 0;
    return ((struct sockaddr_in *)&a)->sin_addr.s_addr == ((struct sockaddr_in *)&b)->sin_addr.s_addr;
}

/* Opens n sockets on one address, as its only owner (see the top of the file); port 0 becomes
 * the port the first one got. Returns 0, or -1 after saying why on stderr. */
static int open_listeners(const char *hostport, const struct sockaddr_storage *addr, socklen_t len, int n, int *fds,
                          int *port)
{
    struct sockaddr_storage ss = *addr;
    int lock = -1, i = 0;
    const char *why = NULL;
    if (port_of(&ss) != 0) {
        if ((lock = port_lock(port_of(&ss))) == -2)
            why = "another seckilld is starting on this port";
        else if (probe(&ss, len) != 0)
            why = strerror(errno);
    }
    for (; why == NULL && i < n; i++) {
        if ((fds[i] = listen_on(&ss, len)) < 0) {
            why = strerror(errno);
            break;
        }
        if (i == 0) {
            socklen_t l = sizeof(ss);
            getsockname(fds[0], (struct sockaddr *)&ss, &l);
            *port = port_of(&ss);
        }
    }
    if (lock >= 0)
        close(lock);
    if (why == NULL)
        return 0;
    fprintf(stderr, "seckilld: cannot listen on %s: %s\n", hostport, why);
    sk_log(SK_LOG_ERROR, "event=listen_failed address=%s error=\"%s\"", hostport, why);
    while (i-- > 0)
        close(fds[i]);
    return -1;
}

int sk_server_conn_limits(uint64_t nofile, int nworkers, int64_t requested, long max[SK_LISTENER_COUNT])
{
    uint64_t reserve = SK_FD_RESERVE_BASE + SK_FD_RESERVE_PER_WORKER * (uint64_t)(nworkers > 0 ? nworkers : 1);
    uint64_t budget = nofile > reserve ? nofile - reserve : 0;
    uint64_t admin = budget / 8;
    int rc = 0;
    if (admin < ADMIN_MIN)
        admin = ADMIN_MIN;
    if (admin > ADMIN_MAX)
        admin = ADMIN_MAX;
    uint64_t pub = budget > admin + PUBLIC_MIN ? budget - admin : PUBLIC_MIN;
    if (budget < admin + PUBLIC_MIN)
        rc = -1;
    if (requested > 0 && (uint64_t)requested < pub)
        pub = (uint64_t)requested;
    else if (requested > 0 && (uint64_t)requested > pub && rc == 0)
        rc = 1;
    max[SK_LISTENER_PUBLIC] = (long)(pub < LONG_MAX ? pub : LONG_MAX);
    max[SK_LISTENER_ADMIN] = (long)admin;
    return rc;
}

/* Raises the soft RLIMIT_NOFILE to the hard one, as nginx's worker_rlimit_nofile does, and
 * returns the limit in force. */
static uint64_t raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return 1024;
    if (rl.rlim_cur < rl.rlim_max) {
        struct rlimit want = {rl.rlim_max, rl.rlim_max};
        if (setrlimit(RLIMIT_NOFILE, &want) == 0)
            rl = want;
        else
            sk_log(SK_LOG_WARN, "event=setrlimit_failed resource=nofile soft=%llu hard=%llu error=\"%s\"",
                   (unsigned long long)rl.rlim_cur, (unsigned long long)rl.rlim_max, strerror(errno));
    }
    return rl.rlim_cur == RLIM_INFINITY ? (uint64_t)1 << 20 : (uint64_t)rl.rlim_cur;
}

/* ---- accepting ---- */

static void on_accept(h2o_socket_t *listener, const char *err);

static void listener_start(sk_listener_t *l)
{
    if (l->sock != NULL && !l->polled) {
        h2o_socket_read_start(l->sock, on_accept);
        l->polled = 1;
    }
}

static void listener_stop(sk_listener_t *l)
{
    if (l->sock != NULL && l->polled) {
        h2o_socket_read_stop(l->sock);
        l->polled = 0;
    }
}

/* h2o closed one of our connections (h2o_socket_t.on_close): give its slot back, and take the
 * listener up again if it was paused at the cap (other workers' listeners resume on their next
 * loop turn, listeners_update). */
static void on_conn_close(void *data)
{
    sk_listener_t *l = data;
    sk_server_t *srv = l->worker->server;
    long open = atomic_fetch_sub(&srv->nconns[l->kind], 1) - 1;
    if (!l->polled && l->paused_until == 0 && !l->worker->stopping && open < srv->max_conns[l->kind])
        listener_start(l);
}

static void on_accept(h2o_socket_t *listener, const char *err)
{
    static sk_log_limit_t cap_log[SK_LISTENER_COUNT], err_log[SK_LISTENER_COUNT];
    sk_listener_t *l = listener->data;
    sk_server_t *srv = l->worker->server;
    h2o_socket_t *sock;
    if (err != NULL)
        return;
    /* a slot first: workers racing for the last ones never take more than the cap */
    if (atomic_fetch_add(&srv->nconns[l->kind], 1) >= srv->max_conns[l->kind]) {
        atomic_fetch_sub(&srv->nconns[l->kind], 1);
        listener_stop(l);
        atomic_fetch_add_explicit(&srv->at_cap[l->kind], 1, memory_order_relaxed);
        if (SK_LOG_WARN >= sk_log_level)
            sk_log_limited_write(&cap_log[l->kind], SK_LOG_WARN,
                                 "event=connections_at_cap listener=%s max=%ld",
                                 listener_names[l->kind], srv->max_conns[l->kind]);
        return;
    }
    errno = 0;
    if ((sock = h2o_evloop_socket_accept(listener)) == NULL) {
        int e = errno;
        atomic_fetch_sub(&srv->nconns[l->kind], 1);
        if (e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM) {
            /* the connection stays in the backlog and the listener readable: do not spin on it */
            listener_stop(l);
            l->paused_until = sk_mono_ms() + ACCEPT_PAUSE_MS;
            atomic_fetch_add(&srv->accept_errors[l->kind], 1);
            if (SK_LOG_WARN >= sk_log_level)
                sk_log_limited_write(&err_log[l->kind], SK_LOG_WARN,
                                     "event=accept_failed listener=%s error=\"%s\" open=%ld pause_ms=%d",
                                     listener_names[l->kind], strerror(e), atomic_load(&srv->nconns[l->kind]),
                                     ACCEPT_PAUSE_MS);
        }
        return; /* EAGAIN (another worker took it), ECONNABORTED: nothing to do */
    }
    atomic_fetch_add_explicit(&srv->accepted[l->kind], 1, memory_order_relaxed);
    sock->on_close.cb = on_conn_close;
    sock->on_close.data = l;
    h2o_accept(&l->accept, sock);
}

/* Once per loop turn: takes up again the listeners whose pause is over. */
static void listeners_update(sk_worker_t *w)
{
    sk_server_t *srv = w->server;
    int64_t now = 0;
    for (int k = 0; k < SK_LISTENER_COUNT; k++) {
        sk_listener_t *l = &w->listeners[k];
        if (l->sock == NULL || l->polled)
            continue;
        if (l->paused_until != 0) {
            if (now == 0)
                now = sk_mono_ms();
            if (now < l->paused_until)
                continue;
            l->paused_until = 0;
        }
        if (atomic_load_explicit(&srv->nconns[k], memory_order_relaxed) < srv->max_conns[k])
            listener_start(l);
    }
}

static void attach(sk_worker_t *w, int kind, int fd, h2o_hostconf_t **hosts)
{
    sk_listener_t *l = &w->listeners[kind];
    l->worker = w;
    l->kind = kind;
    l->accept = (h2o_accept_ctx_t){.ctx = &w->ctx, .hosts = hosts};
    l->sock = h2o_evloop_socket_create(w->ctx.loop, fd, H2O_SOCKET_FLAG_DONT_READ);
    l->sock->data = l;
    listener_start(l);
}

static void close_listener(sk_listener_t *l)
{
    listener_stop(l);
    if (l->sock != NULL) {
        h2o_socket_close(l->sock);
        l->sock = NULL;
    }
}

/* h2o 2.2.5's loop time is gettimeofday(): when the wall clock steps back, every timer entry
 * registered before the step waits for the length of the step, and so does every entry behind
 * it in its list (h2o_timeout_run stops at the first one not yet due): idle timeouts, the Redis
 * connection's ticks and deadlines, zero-delay callbacks. An entry registered in the future of
 * the loop's time can only come from such a step; bringing it back to now makes a step back
 * delay a timer by at most its own interval. (A step forward fires timers early; the deadlines
 * of our own that matter check sk_mono_ms() before acting.) */
static void loop_clock_guard(sk_worker_t *w)
{
    h2o_evloop_t *loop = w->ctx.loop;
    uint64_t now = h2o_now(loop);
    if (now >= w->loop_now_max) {
        w->loop_now_max = now;
        return;
    }
    for (h2o_linklist_t *t = loop->_timeouts.next; t != &loop->_timeouts; t = t->next) {
        h2o_timeout_t *timeout = H2O_STRUCT_FROM_MEMBER(h2o_timeout_t, _link, t);
        for (h2o_linklist_t *e = timeout->_entries.next; e != &timeout->_entries; e = e->next) {
            h2o_timeout_entry_t *entry = H2O_STRUCT_FROM_MEMBER(h2o_timeout_entry_t, _link, e);
            if (entry->registered_at > now)
                entry->registered_at = now;
        }
    }
    sk_log_limited(SK_LOG_WARN, "event=clock_step_back worker=%d ms=%llu", w->index,
                   (unsigned long long)(w->loop_now_max - now));
    w->loop_now_max = now;
}

void sk_server_render_metrics(sk_server_t *srv, sk_buf_t *o)
{
    sk_buf_printf(o, "# HELP seckill_connections Open connections, by listener.\n"
                     "# TYPE seckill_connections gauge\n");
    for (int k = 0; k < SK_LISTENER_COUNT; k++)
        sk_buf_printf(o, "seckill_connections{listener=\"%s\"} %ld\n", listener_names[k], atomic_load(&srv->nconns[k]));
    sk_buf_printf(o, "# HELP seckill_connections_max Connections open at once at most; more wait in the kernel.\n"
                     "# TYPE seckill_connections_max gauge\n");
    for (int k = 0; k < SK_LISTENER_COUNT; k++)
        sk_buf_printf(o, "seckill_connections_max{listener=\"%s\"} %ld\n", listener_names[k], srv->max_conns[k]);
    sk_buf_printf(o, "# HELP seckill_accept_errors_total Accepts failed for lack of descriptors or memory.\n"
                     "# TYPE seckill_accept_errors_total counter\n");
    for (int k = 0; k < SK_LISTENER_COUNT; k++)
        sk_buf_printf(o, "seckill_accept_errors_total{listener=\"%s\"} %llu\n", listener_names[k],
                      (unsigned long long)atomic_load(&srv->accept_errors[k]));
    sk_buf_printf(o, "# HELP seckill_connections_accepted_total Connections accepted, by listener.\n"
                     "# TYPE seckill_connections_accepted_total counter\n");
    for (int k = 0; k < SK_LISTENER_COUNT; k++)
        sk_buf_printf(o, "seckill_connections_accepted_total{listener=\"%s\"} %llu\n", listener_names[k],
                      (unsigned long long)atomic_load(&srv->accepted[k]));
    sk_buf_printf(o, "# HELP seckill_connections_at_cap_total Times a worker stopped accepting at the cap (new "
                     "connections then wait in the kernel's backlog; none is refused).\n"
                     "# TYPE seckill_connections_at_cap_total counter\n");
    for (int k = 0; k < SK_LISTENER_COUNT; k++)
        sk_buf_printf(o, "seckill_connections_at_cap_total{listener=\"%s\"} %llu\n", listener_names[k],
                      (unsigned long long)atomic_load(&srv->at_cap[k]));
}

/* A stop request from the main thread: stop accepting, close idle connections. */
static void on_ctl(h2o_multithread_receiver_t *receiver, h2o_linklist_t *messages)
{
    sk_worker_t *w = H2O_STRUCT_FROM_MEMBER(sk_worker_t, ctl_receiver, receiver);
    while (!h2o_linklist_is_empty(messages))
        h2o_linklist_unlink(messages->next);
    for (int k = 0; k < SK_LISTENER_COUNT; k++)
        close_listener(&w->listeners[k]);
    h2o_context_request_shutdown(&w->ctx);
    w->stopping = 1;
    for (int i = 0; i < w->server->nhooks; i++) /* event streams end now: they would never end by themselves */
        w->server->hooks[i]->stop(w);
}

void sk_server_add_worker_hooks(sk_server_t *srv, const sk_worker_hooks_t *hooks)
{
    if (srv->nhooks == SK_WORKER_HOOKS_MAX)
        abort(); /* a build with more modules than slots: a programming error */
    srv->hooks[srv->nhooks++] = hooks;
}

static size_t hooks_open(sk_worker_t *w)
{
    size_t n = 0;
    for (int i = 0; i < w->server->nhooks; i++)
        n += w->server->hooks[i]->open(w);
    return n;
}

/* The store's env.post: answers travel to the worker's loop as h2o messages, the link kept in
 * the request's post_link. */
_Static_assert(sizeof(h2o_multithread_message_t) <= sizeof(((sk_store_req_t *)0)->post_link) &&
                   _Alignof(h2o_multithread_message_t) <= _Alignof(void *),
               "a message fits in post_link");

static void post_store_answer(void *ctx, sk_store_req_t *req)
{
    sk_worker_t *w = ctx;
    h2o_multithread_message_t *m = (h2o_multithread_message_t *)(void *)req->post_link;
    memset(m, 0, sizeof(*m));
    h2o_multithread_send_message(&w->store_receiver, m);
}

static void on_store_answers(h2o_multithread_receiver_t *receiver, h2o_linklist_t *messages)
{
    (void)receiver;
    while (!h2o_linklist_is_empty(messages)) {
        h2o_multithread_message_t *m = H2O_STRUCT_FROM_MEMBER(h2o_multithread_message_t, link, messages->next);
        h2o_linklist_unlink(&m->link);
        sk_store_req_t *req = (sk_store_req_t *)(void *)((char *)m - offsetof(sk_store_req_t, post_link));
        req->cb(req);
    }
}

static void *worker_main(void *arg)
{
    sk_worker_t *w = arg;
    sk_server_t *srv = w->server;
    /* everything of h2o's is made on the thread that runs it: h2o keeps per-thread state (its
     * buffer recycling), and a context made on another thread would share that thread's */
    h2o_context_init(&w->ctx, h2o_evloop_create(), &srv->globalconf);
    h2o_multithread_register_receiver(w->ctx.queue, &w->store_receiver, on_store_answers);
    h2o_multithread_register_receiver(w->ctx.queue, &w->ctl_receiver, on_ctl);
    sk_metrics_thread_init();
    sk_store_env_t env = {.loop = w->ctx.loop, .index = w->index, .post = post_store_answer, .post_ctx = w};
    if (sk_store_worker_open(srv->store, &env, &w->store, w->store_err, sizeof(w->store_err)) != 0) {
        w->store = NULL;
        h2o_barrier_wait(&srv->ready); /* the main thread sees store_err and stops */
        return NULL;
    }
    attach(w, SK_LISTENER_PUBLIC, srv->fds[SK_LISTENER_PUBLIC][w->index], srv->hosts_public);
    attach(w, SK_LISTENER_ADMIN, srv->fds[SK_LISTENER_ADMIN][w->index], srv->hosts_admin);
    w->loop_now_max = h2o_now(w->ctx.loop);
    h2o_barrier_wait(&srv->ready); /* the main thread may now send stop messages */

    int64_t deadline = 0, drained_at = 0;
    for (;;) {
        h2o_evloop_run(w->ctx.loop, 50);
        loop_clock_guard(w);
        if (!w->stopping)
            listeners_update(w);
        sk_store_worker_flush(w->store);
        sk_accesslog_flush(0);
        if (!w->stopping)
            continue;
        int64_t now = sk_mono_ms();
        if (deadline == 0)
            deadline = now + srv->cfg->shutdown_timeout * 1000;
        /* drained: nothing in flight for a while. A request read from a keep-alive connection
         * after the stop starts the wait again: the store must answer it before the worker closes
         * its store handle (the committer would otherwise answer into a freed handle) */
        if (w->inflight != 0 || hooks_open(w) != 0)
            drained_at = 0;
        else if (drained_at == 0)
            drained_at = now;
        /* a short grace after the last answer lets its bytes reach the socket */
        if ((drained_at != 0 && now - drained_at >= 100) || now >= deadline)
            break;
    }
    sk_accesslog_flush(1);
    if (w->inflight != 0)
        sk_log(SK_LOG_WARN, "event=shutdown_timeout worker=%d inflight=%zu", w->index, w->inflight);
    for (int i = 0; i < srv->nhooks; i++)
        srv->hooks[i]->dispose(w);
    sk_jwt_cache_dispose();
    sk_store_worker_close(w->store);
    w->store = NULL;
    /* the context and loop are not disposed: h2o 2.2.5 asserts that no connection is left,
     * and keep-alive clients may still hold some; the process exits right after */
    return NULL;
}

/* Asks every worker to stop and waits for them; a worker that could not start has returned. */
static void stop_workers(sk_server_t *srv)
{
    for (int i = 0; i < srv->nworkers; i++)
        h2o_multithread_send_message(&srv->workers[i].ctl_receiver, &srv->workers[i].ctl_msg);
    for (int i = 0; i < srv->nworkers; i++)
        pthread_join(srv->workers[i].tid, NULL);
}

/* sd_notify without libsystemd: one datagram to $NOTIFY_SOCKET. */
static void notify(const char *msg)
{
    const char *path = getenv("NOTIFY_SOCKET");
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (path == NULL || (path[0] != '/' && path[0] != '@') || strlen(path) >= sizeof(sa.sun_path))
        return;
    size_t plen = strlen(path);
    memcpy(sa.sun_path, path, plen);
    if (sa.sun_path[0] == '@')
        sa.sun_path[0] = '\0';
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return;
    if (sendto(fd, msg, strlen(msg), MSG_NOSIGNAL, (struct sockaddr *)&sa,
               (socklen_t)(offsetof(struct sockaddr_un, sun_path) + plen)) < 0)
        sk_log(SK_LOG_WARN, "event=sd_notify error=\"%s\"", strerror(errno));
    close(fd);
}

static void print_listening(const char *name, const char *hostport, int port)
{
    const char *colon = strrchr(hostport, ':');
    printf("listening %s=%.*s:%d\n", name, (int)(colon - hostport), hostport, port);
}

/* ---- who buys, who administers: options checked at start, keys reloaded on SIGHUP ---- */

static int is_loopback(const struct sockaddr_storage *x)
{
    struct sockaddr_storage a = unmapped(x);
    if (a.ss_family == AF_INET6)
        return IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *)&a)->sin6_addr);
    return (ntohl(((const struct sockaddr_in *)&a)->sin_addr.s_addr) >> 24) == 127;
}

/* The admin listener's Host names: --admin-hosts, or its own address and the loopback names. */
static void admin_hosts_init(sk_server_t *srv, const sk_config_t *cfg)
{
    char buf[1024];
    if (cfg->admin_hosts != NULL) {
        snprintf(buf, sizeof(buf), "%s", cfg->admin_hosts);
    } else {
        const char *colon = strrchr(cfg->admin_listen, ':');
        int hl = colon ? (int)(colon - cfg->admin_listen) : (int)strlen(cfg->admin_listen);
        snprintf(buf, sizeof(buf), "%.*s,localhost,127.0.0.1,[::1]", hl, cfg->admin_listen);
    }
    for (char *save = NULL, *t = strtok_r(buf, ", ", &save); t != NULL; t = strtok_r(NULL, ", ", &save)) {
        srv->admin_hosts = sk_realloc(srv->admin_hosts, (srv->nadmin_hosts + 1) * sizeof(char *));
        srv->admin_hosts[srv->nadmin_hosts++] = sk_strndup(t, strlen(t));
    }
}

/* Checks the identity options and loads the buyer-token keys. Returns 0, or 2 after saying why. */
static int identity_init(sk_server_t *srv, const sk_config_t *cfg, const struct sockaddr_storage *admin)
{
    char err[512];
    int tokens = cfg->buyer_token_secret_file != NULL || cfg->buyer_token_public_key != NULL;
    if (cfg->trusted_proxies != NULL && sk_cidrs_parse(cfg->trusted_proxies, &srv->trusted, err, sizeof(err)) != 0) {
        fprintf(stderr, "seckilld: --trusted-proxies: %s\n", err);
        return 2;
    }
    if (cfg->user_header != NULL && (srv->trusted.n == 0 || tokens || cfg->user_header[0] == '\0')) {
        fprintf(stderr, "seckilld: --user-header needs --trusted-proxies (the gateways it is believed from), and "
                        "no buyer tokens (one way to name the buyer)\n");
        return 2;
    }
    if (cfg->user_header != NULL)
        for (char *p = cfg->user_header; *p; p++) /* h2o keeps header names in lower case */
            *p = (char)tolower((unsigned char)*p);
    if (tokens) {
        sk_jwt_keys_t *k =
            sk_jwt_keys_load(cfg->buyer_token_secret_file, cfg->buyer_token_public_key, err, sizeof(err));
        if (k == NULL) {
            fprintf(stderr, "seckilld: %s\n", err);
            return 2;
        }
        atomic_store(&srv->jwt_keys, k);
        sk_log(SK_LOG_INFO, "event=buyer_token_keys keys=%zu", sk_jwt_keys_count(k));
        struct stat st;
        if (cfg->buyer_token_secret_file != NULL && stat(cfg->buyer_token_secret_file, &st) == 0 &&
            (st.st_mode & (S_IRGRP | S_IROTH)) != 0)
            sk_log(SK_LOG_WARN,
                   "event=buyer_token_secret_readable path=%s hint=\"chmod 600: group or others can "
                   "read the secret that signs buyer tokens\"",
                   cfg->buyer_token_secret_file);
    }
    admin_hosts_init(srv, cfg);
    if (!is_loopback(admin) && cfg->admin_token == NULL)
        sk_log(SK_LOG_WARN,
               "event=admin_exposed address=%s hint=\"the admin listener is not on loopback and has no "
               "token: set --admin-token-file\"",
               cfg->admin_listen);
    if (cfg->admin_token_group_readable)
        sk_log(SK_LOG_WARN,
               "event=admin_token_file_readable path=%s hint=\"chmod 600: group or others can read "
               "the admin token\"",
               cfg->admin_token_file);
    return 0;
}

/* SIGHUP: the buyer-token keys again, from the same files. A file that fails keeps the keys in
 * force. The replaced ring is kept until exit: a worker may still be verifying with it, and a
 * reload is rare (a few kilobytes each). */
static void identity_reload(sk_server_t *srv)
{
    const sk_config_t *cfg = srv->cfg;
    char err[512];
    if (cfg->buyer_token_secret_file == NULL && cfg->buyer_token_public_key == NULL)
        return;
    sk_jwt_keys_t *k = sk_jwt_keys_load(cfg->buyer_token_secret_file, cfg->buyer_token_public_key, err, sizeof(err));
    if (k == NULL) {
        sk_log(SK_LOG_ERROR, "event=buyer_token_keys_reload_failed error=\"%s\" hint=\"the keys in force stay\"", err);
        return;
    }
    srv->jwt_retired = sk_realloc(srv->jwt_retired, (srv->njwt_retired + 1) * sizeof(*srv->jwt_retired));
    srv->jwt_retired[srv->njwt_retired++] = atomic_exchange(&srv->jwt_keys, k);
    sk_log(SK_LOG_INFO, "event=buyer_token_keys_reloaded keys=%zu", sk_jwt_keys_count(k));
}

static void identity_dispose(sk_server_t *srv)
{
    sk_jwt_keys_free(atomic_exchange(&srv->jwt_keys, NULL));
    for (size_t i = 0; i < srv->njwt_retired; i++)
        sk_jwt_keys_free(srv->jwt_retired[i]);
    free(srv->jwt_retired);
    for (size_t i = 0; i < srv->nadmin_hosts; i++)
        free(srv->admin_hosts[i]);
    free(srv->admin_hosts);
    sk_cidrs_dispose(&srv->trusted);
}

/* Why an embedded store's book would not open, in terms of its file (SQLite's own message, "unable
 * to open database file", names neither the file nor the cause): " (...)" or "". */
static void book_hint(const char *url, char *out, size_t len)
{
    char dir[4096];
    out[0] = '\0';
    if (strncmp(url, "sqlite:", 7) != 0)
        return;
    const char *path = url + 7, *slash = strrchr(path, '/');
    if (slash == NULL)
        snprintf(dir, sizeof(dir), ".");
    else
        snprintf(dir, sizeof(dir), "%.*s", slash == path ? 1 : (int)(slash - path), path);
    if (access(dir, F_OK) != 0)
        snprintf(out, len, " (the order book's directory %.300s: %.100s)", dir, strerror(errno));
    else if (access(dir, W_OK | X_OK) != 0)
        snprintf(out, len, " (the order book's directory %.300s is not writable by this user: %.100s)", dir,
                 strerror(errno));
    else if (access(path, F_OK) == 0 && access(path, R_OK | W_OK) != 0)
        snprintf(out, len, " (the order book %.300s: %.100s)", path, strerror(errno));
}

/* A reload's leftovers: workers may still read an old config or rate limiter, so they live until
 * exit (a few hundred bytes, and a rate limiter, per reload that changes them). */
typedef struct retiree_s {
    sk_config_t *cfg; /* NULL for the caller's own */
    sk_ratelimit_t *rl;
} retiree_t;

typedef struct retired_s {
    retiree_t *v;
    size_t n;
} retired_t;

static sk_config_t *first_cfg; /* the caller's: never freed here */

static void retire(retired_t *r, sk_config_t *cfg, sk_ratelimit_t *rl)
{
    r->v = sk_realloc(r->v, (r->n + 1) * sizeof(*r->v));
    r->v[r->n].cfg = cfg;
    r->v[r->n].rl = rl;
    r->n++;
}

/* Logs each line of `text` (sk_config_reload's problems) as one reload_failed line. */
static void log_problems(char *text)
{
    for (char *line = strtok(text, "\n"); line != NULL; line = strtok(NULL, "\n")) {
        if (strncmp(line, "seckilld: ", 10) == 0)
            line += 10;
        for (char *q = line; *q; q++)
            if (*q == '"')
                *q = '\'';
        sk_log(SK_LOG_ERROR, "event=reload_failed error=\"%s\"", line);
    }
}

/* SIGHUP: reads the configuration again and applies what is live (config.c's live_opts): the log
 * level and file, the access log, the rate limit, trust-proxy and the admin token (the last two
 * by publishing the new config). Anything that cannot be applied leaves everything as it was. */
static void reload(sk_server_t *srv, retired_t *retired)
{
    sk_config_t *cur = srv->cfg, *next = sk_calloc(1, sizeof(*next));
    char applied[512], restart[512], *text = NULL;
    size_t textlen = 0;
    FILE *ef = open_memstream(&text, &textlen);
    if (ef == NULL || sk_config_reload(next, cur, applied, sizeof(applied), restart, sizeof(restart), ef) != 0) {
        if (ef != NULL)
            fclose(ef);
        if (text != NULL)
            log_problems(text);
        sk_log(SK_LOG_ERROR, "event=reload_failed config=%s changed=none",
               cur->config_file ? cur->config_file : "(none)");
        free(text);
        free(next);
        return;
    }
    fclose(ef);
    free(text);
    sk_log_level_t level;
    sk_log_parse_level(next->log_level, &level); /* checked by the reload */
    /* the files first: a log that cannot be opened is the one change that can still fail */
    int log_changed = strcmp(cur->log_file ? cur->log_file : "", next->log_file ? next->log_file : "") != 0;
    int access_changed = strcmp(cur->access_log ? cur->access_log : "", next->access_log ? next->access_log : "") != 0;
    if (log_changed && sk_log_open(next->log_file) != 0) {
        sk_log(SK_LOG_ERROR, "event=reload_failed option=log-file path=%s error=\"%s\" changed=none", next->log_file,
               strerror(errno));
        goto refuse;
    }
    if (access_changed && sk_accesslog_set(next->access_log) != 0) {
        sk_log(SK_LOG_ERROR, "event=reload_failed option=access-log path=%s error=\"%s\" changed=none",
               next->access_log, strerror(errno));
        if (log_changed && sk_log_open(cur->log_file) != 0)
            sk_log(SK_LOG_ERROR, "event=log_reopen_failed option=log-file path=%s error=\"%s\"", cur->log_file,
                   strerror(errno));
        goto refuse;
    }
    sk_log_level = level;
    sk_ratelimit_t *rl = srv->ratelimit;
    if (next->rate_limit != cur->rate_limit || next->rate_burst != cur->rate_burst) {
        srv->ratelimit = next->rate_limit > 0 ? sk_ratelimit_new(next->rate_limit, next->rate_burst, 16384) : NULL;
        retire(retired, NULL, rl);
    }
    srv->cfg = next;
    retire(retired, cur == first_cfg ? NULL : cur, NULL);
    sk_log(SK_LOG_INFO, "event=reloaded config=%s applied=%s needs_restart=%s",
           next->config_file ? next->config_file : "(none)", applied[0] ? applied : "none",
           restart[0] ? restart : "none");
    return;
refuse:
    sk_config_dispose(next);
    free(next);
}

int sk_server_run(sk_config_t *cfg)
{
    retired_t retired = {0};
    sk_server_t srv;
    first_cfg = cfg;
    char err[512];
    int port_public = 0, port_admin = 0, rc = 1;
    sigset_t set;

    memset(&srv, 0, sizeof(srv));
    srv.cfg = cfg;
    srv.nworkers = cfg->threads > 0 ? (int)cfg->threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (srv.nworkers < 1)
        srv.nworkers = 1;
    for (int k = 0; k < SK_LISTENER_COUNT; k++)
        srv.fds[k] = sk_calloc((size_t)srv.nworkers, sizeof(int));

    /* every thread inherits this mask; the main thread takes the signals with sigwait */
    signal(SIGPIPE, SIG_IGN);
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);

    const char *addrs[SK_LISTENER_COUNT] = {cfg->listen, cfg->admin_listen};
    static const char *const opt[SK_LISTENER_COUNT] = {"listen", "admin-listen"};
    struct sockaddr_storage ss[SK_LISTENER_COUNT];
    socklen_t sslen[SK_LISTENER_COUNT];
    for (int k = 0; k < SK_LISTENER_COUNT; k++)
        if (resolve(addrs[k], &ss[k], &sslen[k]) != 0) {
            fprintf(stderr, "seckilld: --%s: cannot parse or resolve '%s' (want HOST:PORT)\n", opt[k], addrs[k]);
            goto out;
        }
    if (overlap(&ss[SK_LISTENER_PUBLIC], &ss[SK_LISTENER_ADMIN])) {
        fprintf(stderr, "seckilld: --listen %s and --admin-listen %s overlap: the admin listener needs an address "
                        "of its own\n", cfg->listen, cfg->admin_listen);
        rc = 2;
        goto out;
    }

    if ((rc = identity_init(&srv, cfg, &ss[SK_LISTENER_ADMIN])) != 0)
        goto out;
    rc = 1;

    uint64_t nofile = raise_nofile();
    int lim = sk_server_conn_limits(nofile, srv.nworkers, cfg->max_connections, srv.max_conns);
    if (lim > 0)
        sk_log(SK_LOG_WARN, "event=max_connections_lowered requested=%lld max=%ld nofile=%llu "
                            "hint=\"raise the descriptor limit (LimitNOFILE) for more\"",
               (long long)cfg->max_connections, srv.max_conns[SK_LISTENER_PUBLIC], (unsigned long long)nofile);
    else if (lim < 0)
        sk_log(SK_LOG_WARN, "event=descriptors_low nofile=%llu max_connections=%ld admin_max_connections=%ld "
                            "hint=\"raise the descriptor limit (LimitNOFILE)\"",
               (unsigned long long)nofile, srv.max_conns[SK_LISTENER_PUBLIC], srv.max_conns[SK_LISTENER_ADMIN]);

    if (open_listeners(cfg->listen, &ss[SK_LISTENER_PUBLIC], sslen[SK_LISTENER_PUBLIC], srv.nworkers,
                       srv.fds[SK_LISTENER_PUBLIC], &port_public) != 0)
        goto out;
    if (open_listeners(cfg->admin_listen, &ss[SK_LISTENER_ADMIN], sslen[SK_LISTENER_ADMIN], srv.nworkers,
                       srv.fds[SK_LISTENER_ADMIN], &port_admin) != 0)
        goto out;
    sk_store_opts_t sopts = {.redis_min_replicas = (int)cfg->redis_min_replicas,
                             .redis_wait_timeout_ms = (int)cfg->redis_wait_timeout};
    if ((srv.store = sk_store_open(cfg->store, srv.nworkers, &sopts, err, sizeof(err))) == NULL) {
        char url[512], hint[600];
        sk_url_redact(cfg->store, url, sizeof(url));
        book_hint(cfg->store, hint, sizeof(hint));
        fprintf(stderr, "seckilld: --store %s: %s%s\n", url, err, hint);
        sk_log(SK_LOG_ERROR, "event=store_open_failed store=%s error=\"%s%s\"", url, err, hint);
        goto out;
    }
    if (cfg->rate_limit > 0)
        srv.ratelimit = sk_ratelimit_new(cfg->rate_limit, cfg->rate_burst, 16384);

    h2o_config_init(&srv.globalconf);
    srv.globalconf.server_name = h2o_iovec_init(H2O_STRLIT("seckilld"));
    srv.globalconf.max_request_entity_size = (size_t)cfg->max_body_bytes;
    srv.globalconf.http1.req_timeout = (uint64_t)cfg->idle_timeout * 1000;
    /* h2o upgrades h2c and takes the HTTP/2 preface by default: a way past proxy rules that
     * only speak HTTP/1.1, so only with --http2 */
    srv.globalconf.http1.upgrade_to_http2 = cfg->http2 != 0;
    srv.host_public = h2o_config_register_host(&srv.globalconf, h2o_iovec_init(H2O_STRLIT("public")), 65535);
    srv.host_admin = h2o_config_register_host(&srv.globalconf, h2o_iovec_init(H2O_STRLIT("admin")), 65535);
    srv.hosts_public[0] = srv.host_public;
    srv.hosts_admin[0] = srv.host_admin;
    sk_api_register(&srv);

    srv.workers = sk_calloc((size_t)srv.nworkers, sizeof(*srv.workers));
    h2o_barrier_init(&srv.ready, (size_t)srv.nworkers + 1);
    for (int i = 0; i < srv.nworkers; i++) {
        srv.workers[i].index = i;
        srv.workers[i].server = &srv;
        h2o_multithread_create_thread(&srv.workers[i].tid, NULL, worker_main, &srv.workers[i]);
    }
    h2o_barrier_wait(&srv.ready);
    for (int i = 0; i < srv.nworkers; i++) {
        if (srv.workers[i].store != NULL)
            continue;
        char url[512];
        sk_url_redact(cfg->store, url, sizeof(url));
        fprintf(stderr, "seckilld: --store %s: %s\n", url, srv.workers[i].store_err);
        sk_log(SK_LOG_ERROR, "event=store_open_failed store=%s worker=%d error=\"%s\"", url, i,
               srv.workers[i].store_err);
        stop_workers(&srv);
        goto out;
    }
    print_listening("public", cfg->listen, port_public);
    print_listening("admin", cfg->admin_listen, port_admin);
    fflush(stdout);
    sk_log(SK_LOG_INFO,
           "event=started version=%s store=%s threads=%d public_port=%d admin_port=%d nofile=%llu "
           "max_connections=%ld admin_max_connections=%ld",
           SK_VERSION, sk_store_name(srv.store), srv.nworkers, port_public, port_admin, (unsigned long long)nofile,
           srv.max_conns[SK_LISTENER_PUBLIC], srv.max_conns[SK_LISTENER_ADMIN]);
    notify("READY=1");

    for (;;) {
        int sig;
        if (sigwait(&set, &sig) != 0)
            continue;
        if (sig == SIGHUP) {
            const sk_config_t *c = srv.cfg;
            if (sk_log_reopen() != 0)
                fprintf(stderr, "seckilld: --log-file: cannot reopen %s: %s\n", c->log_file, strerror(errno));
            if (sk_accesslog_reopen() != 0)
                sk_log(SK_LOG_ERROR, "event=access_log_reopen_failed option=access-log path=%s error=\"%s\"",
                       c->access_log, strerror(errno));
            sk_log(SK_LOG_INFO, "event=log_reopened");
            reload(&srv, &retired);
            identity_reload(&srv);
            continue;
        }
        sk_log(SK_LOG_INFO, "event=stopping signal=%d", sig);
        break;
    }
    notify("STOPPING=1");
    stop_workers(&srv);
    sk_store_close(srv.store);
    srv.store = NULL;
    sk_log(SK_LOG_INFO, "event=stopped");
    rc = 0;
out:
    if (srv.store != NULL)
        sk_store_close(srv.store);
    sk_ratelimit_free(srv.ratelimit);
    identity_dispose(&srv);
    for (size_t i = 0; i < retired.n; i++) {
        if (retired.v[i].cfg != NULL) {
            sk_config_dispose(retired.v[i].cfg);
            free(retired.v[i].cfg);
        }
        sk_ratelimit_free(retired.v[i].rl);
    }
    free(retired.v);
    if (srv.cfg != cfg) { /* the caller's own is among the retired ones; this one is ours */
        sk_config_t *last = srv.cfg;
        sk_config_dispose(last);
        free(last);
    }
    free(srv.workers);
    for (int k = 0; k < SK_LISTENER_COUNT; k++)
        free(srv.fds[k]);
    return rc;
}
