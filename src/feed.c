/* feed.c: see feed.h. A request of the feed is a poll_t on the heap:
 *
 *   - it reads the store (SK_STORE_FEED) after its cursor; a read may answer at once (the
 *     embedded store reads SQLite on the worker thread) or later (Redis);
 *   - a long-poll that found nothing is parked in its worker's list until its deadline; the
 *     worker's timer (FEED_TICK_MS, linked only while something is parked) reads again for it when
 *     the store's feed mark (sk_store_feed_mark: the embedded store's last committed event) has
 *     moved, or every FEED_POLL_MS when the store cannot tell (Redis: another instance may have
 *     written), so the event loop never blocks and a new event reaches a waiting client within
 *     about FEED_TICK_MS (embedded) or FEED_POLL_MS (Redis);
 *   - a stream (Accept: text/event-stream) is the same loop without an end: read, send what came
 *     (one write in flight, the next read once h2o has flushed it), park, read again; a comment
 *     line every SK_FEED_HEARTBEAT_MS while nothing happens;
 *   - the poll lives until both h2o has freed the request (the pool's dispose hook clears `req`)
 *     and no read is with the store (`pending`): the last of the two frees it. */
#include "feed.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "error.h"
#include "log.h"
#include "parse.h"
#include "render.h"
#include "sse.h"
#include "util.h"

#define FEED_TICK_MS 10  /* the parked requests' timer */
#define FEED_POLL_MS 50  /* a parked request's read when the store has no feed mark */
#define STREAM_LIMIT 500 /* events per read for a stream */

typedef struct sk_feed_s feed_t;

typedef struct poll_s {
    sk_sse_t sse; /* a stream's response */
    sk_store_req_t sreq;
    h2o_req_t *req; /* NULL once h2o has freed the request */
    feed_t *f;
    h2o_linklist_t link; /* in f->parked while parked */
    int action;
    unsigned limit;
    sk_cursor_t after;    /* where the next read starts */
    int64_t deadline;     /* mono ms: a long-poll's end; a stream's next heartbeat */
    int64_t next_poll;    /* mono ms: the next read when the store has no feed mark */
    uint64_t mark;        /* the store's feed mark before the last read */
    unsigned pending : 1; /* a read is with the store */
    unsigned stream : 1;
    unsigned again : 1; /* read again as soon as the write is done (there was more) */
} poll_t;

struct sk_feed_s {
    sk_worker_t *w;
    h2o_linklist_t parked; /* poll_t.link */
    size_t open;           /* polls not freed yet */
    size_t streams;        /* streams among them */
    h2o_timeout_t tick;
    h2o_timeout_entry_t tick_entry;
    int stopping;
};

static const char *const KINDS[] = {"", "created", "confirmed", "cancelled", "expired"};

/* SK_FEED_HEARTBEAT_MS; SECKILL_FEED_HEARTBEAT_MS (undocumented) shortens it for the tests */
static int64_t heartbeat_ms = SK_FEED_HEARTBEAT_MS;

static void poll_read(poll_t *p);

static void poll_free(poll_t *p)
{
    if (h2o_linklist_is_linked(&p->link))
        h2o_linklist_unlink(&p->link);
    p->f->open--;
    if (p->stream)
        p->f->streams--;
    sk_store_req_dispose(&p->sreq);
    sk_sse_dispose(&p->sse);
    free(p);
}

static void req_gone(void *arg)
{
    poll_t *p = *(poll_t **)arg;
    p->req = NULL;
    if (h2o_linklist_is_linked(&p->link))
        h2o_linklist_unlink(&p->link);
    if (!p->pending)
        poll_free(p);
}

static void put_cursor(sk_buf_t *b, sk_cursor_t c)
{
    sk_buf_printf(b, "%llu-%llu", (unsigned long long)c.hi, (unsigned long long)c.lo);
}

/* {"cursor":"HI-LO","event":"created", then the order's fields as GET of the order shows them,
 * with its status right after the event (never the status shown now). */
static void put_event(sk_buf_t *b, const sk_feed_event_t *ev)
{
    char buf[SK_RENDER_MAX];
    size_t n = sk_render_order(buf, &ev->order, 0); /* at time 0 a hold is never past its end */
    sk_buf_append(b, "{\"cursor\":\"", 11);
    put_cursor(b, ev->cursor);
    sk_buf_printf(b, "\",\"event\":\"%s\",", KINDS[ev->kind]);
    sk_buf_append(b, buf + 1, n - 1);
}

static void park(poll_t *p)
{
    feed_t *f = p->f;
    h2o_linklist_insert(&f->parked, &p->link);
    if (!h2o_timeout_is_linked(&f->tick_entry))
        h2o_timeout_link(f->w->ctx.loop, &f->tick, &f->tick_entry);
}

/* A long-poll's answer: the events read (maybe none), the cursor to go on from, and whether more
 * are there already. */
static void reply_page(poll_t *p)
{
    sk_buf_t b = {0};
    sk_buf_append(&b, "{\"events\":[", 11);
    for (size_t i = 0; i < p->sreq.nevents; i++) {
        if (i > 0)
            sk_buf_append(&b, ",", 1);
        put_event(&b, &p->sreq.events[i]);
    }
    sk_buf_append(&b, "],\"cursor\":\"", 12);
    put_cursor(&b, p->after);
    sk_buf_printf(&b, "\",\"more\":%s}", p->sreq.more ? "true" : "false");
    h2o_add_header(&p->req->pool, &p->req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL, H2O_STRLIT("no-store"));
    sk_api_reply(p->req, p->action, 200, "application/json", b.p, b.len);
    sk_buf_dispose(&b);
}

/* -- streams */

/* Ends the stream, after the write in flight if there is one (sse.c). */
static void stream_finish(poll_t *p)
{
    if (h2o_linklist_is_linked(&p->link))
        h2o_linklist_unlink(&p->link);
    sk_sse_finish(&p->sse);
}

static void stream_read_done(poll_t *p)
{
    sk_store_req_t *s = &p->sreq;
    /* no write is in flight (a read starts only then): the stream's buffer is empty */
    sk_buf_t *out = &p->sse.out;
    if (s->err != 0) { /* the status went out long ago: say why, and end */
        sk_buf_printf(out, "event: error\ndata: {\"error\":\"%s\",\"message\":\"%s\"}\n\n", sk_err_code(s->err),
                      sk_err_message(s->err));
        sk_sse_finish(&p->sse);
        return;
    }
    for (size_t i = 0; i < s->nevents; i++) {
        const sk_feed_event_t *ev = &s->events[i];
        sk_buf_append(out, "id: ", 4);
        put_cursor(out, ev->cursor);
        sk_buf_printf(out, "\nevent: %s\ndata: ", KINDS[ev->kind]);
        put_event(out, ev);
        sk_buf_append(out, "\n\n", 2);
    }
    if (out->len > 0) {
        p->again = s->more;
        p->deadline = sk_mono_ms() + heartbeat_ms;
        sk_sse_send(&p->sse, NULL, NULL, 0);
        return;
    }
    if (p->f->stopping)
        stream_finish(p);
    else
        park(p);
}

/* sse.c: the write in flight is flushed. */
static void on_flushed(sk_sse_t *sse)
{
    poll_t *p = H2O_STRUCT_FROM_MEMBER(poll_t, sse, sse);
    if (p->f->stopping) {
        stream_finish(p);
    } else if (p->again) {
        p->again = 0;
        poll_read(p);
    } else {
        park(p);
    }
}

/* -- reads */

static void on_read(poll_t *p)
{
    sk_store_req_t *s = &p->sreq;
    if (p->req == NULL) {
        poll_free(p);
        return;
    }
    if (s->err == 0)
        p->after = s->cursor;
    if (p->stream) {
        stream_read_done(p);
        return;
    }
    if (s->err != 0)
        sk_api_reply_error(p->req, p->action, s->err,
                           s->err == SK_EBAD_REQUEST ? "after is not a cursor this feed gave" : NULL);
    else if (s->nevents > 0 || s->more || sk_mono_ms() >= p->deadline || p->f->stopping)
        reply_page(p);
    else
        park(p);
}

static void on_answer(sk_store_req_t *sreq)
{
    poll_t *p = H2O_STRUCT_FROM_MEMBER(poll_t, sreq, sreq);
    p->pending = 0;
    p->f->w->inflight--;
    on_read(p);
}

static void poll_read(poll_t *p)
{
    sk_store_req_t *s = &p->sreq;
    sk_store_req_dispose(s);
    s->op = SK_STORE_FEED;
    s->cb = on_answer;
    s->limit = p->limit;
    s->cursor = p->after;
    s->more = 0;
    /* the mark before the read: an event committed after it moves the mark, so none is missed */
    p->mark = sk_store_feed_mark(p->f->w->server->store);
    p->next_poll = sk_mono_ms() + FEED_POLL_MS;
    int rc = sk_store_submit(p->f->w->store, s);
    if (rc == 0) {
        p->pending = 1;
        p->f->w->inflight++;
        return;
    }
    if (rc < 0)
        s->err = rc;
    on_read(p);
}

static void on_tick(h2o_timeout_entry_t *entry)
{
    feed_t *f = H2O_STRUCT_FROM_MEMBER(feed_t, tick_entry, entry);
    int64_t now = sk_mono_ms();
    uint64_t mark = sk_store_feed_mark(f->w->server->store);
    h2o_linklist_t due;
    h2o_linklist_init_anchor(&due);
    /* take out first what is due: a read may answer at once and park the request again */
    for (h2o_linklist_t *n = f->parked.next, *next; n != &f->parked; n = next) {
        next = n->next;
        poll_t *p = H2O_STRUCT_FROM_MEMBER(poll_t, link, n);
        int moved = mark != 0 ? mark != p->mark : now >= p->next_poll;
        if (moved || now >= p->deadline) {
            h2o_linklist_unlink(&p->link);
            h2o_linklist_insert(&due, &p->link);
        }
    }
    while (!h2o_linklist_is_empty(&due)) {
        poll_t *p = H2O_STRUCT_FROM_MEMBER(poll_t, link, due.next);
        int moved = mark != 0 ? mark != p->mark : now >= p->next_poll;
        h2o_linklist_unlink(&p->link);
        if (moved) {
            poll_read(p);
        } else if (!p->stream) {
            reply_page(p); /* the wait is over: nothing new */
        } else {           /* a heartbeat */
            sk_buf_append(&p->sse.out, ":\n\n", 3);
            p->deadline = now + heartbeat_ms;
            p->again = 0;
            sk_sse_send(&p->sse, NULL, NULL, 0);
        }
    }
    if (!h2o_linklist_is_empty(&f->parked))
        h2o_timeout_link(f->w->ctx.loop, &f->tick, &f->tick_entry);
}

static feed_t *feed_of(sk_worker_t *w)
{
    if (w->feed == NULL) {
        feed_t *f = sk_calloc(1, sizeof(*f));
        f->w = w;
        h2o_linklist_init_anchor(&f->parked);
        h2o_timeout_init(w->ctx.loop, &f->tick, FEED_TICK_MS);
        f->tick_entry.cb = on_tick;
        w->feed = f;
    }
    return w->feed;
}

static int wants_stream(const h2o_req_t *req)
{
    ssize_t i = h2o_find_header(&req->headers, H2O_TOKEN_ACCEPT, -1);
    return i >= 0 && memmem(req->headers.entries[i].value.base, req->headers.entries[i].value.len,
                            H2O_STRLIT("text/event-stream")) != NULL;
}

void sk_feed_serve(sk_worker_t *w, h2o_req_t *req, const char *query, size_t qlen, int action)
{
    feed_t *f = feed_of(w);
    uint64_t hi, lo;
    unsigned limit, wait;
    const char *why;
    int rc = sk_parse_feed_query(query, qlen, &hi, &lo, &limit, &wait, &why);
    if (rc != 0) {
        sk_api_reply_error(req, action, rc, why);
        return;
    }
    int head = h2o_memis(req->method.base, req->method.len, H2O_STRLIT("HEAD"));
    int stream = !head && wants_stream(req);
    if (stream) {
        ssize_t i = h2o_find_header_by_str(&req->headers, H2O_STRLIT("last-event-id"), -1);
        if (i >= 0 &&
            sk_parse_cursor(req->headers.entries[i].value.base, req->headers.entries[i].value.len, &hi, &lo) != 0) {
            sk_api_reply_error(req, action, SK_EBAD_REQUEST, "Last-Event-ID must be a cursor from this feed");
            return;
        }
        if (f->streams >= SK_FEED_MAX_STREAMS || f->stopping || w->stopping) {
            sk_api_reply_error(req, action, SK_EUNAVAILABLE, "too many open feed streams on this worker");
            return;
        }
    }
    poll_t *p = sk_calloc(1, sizeof(*p));
    p->f = f;
    p->req = req;
    p->action = action;
    p->limit = stream ? STREAM_LIMIT : limit;
    p->after = (sk_cursor_t){hi, lo};
    p->deadline = sk_mono_ms() + (head || f->stopping ? 0 : (int64_t)wait * 1000);
    p->stream = stream;
    f->open++;
    poll_t **slot = h2o_mem_alloc_shared(&req->pool, sizeof(*slot), req_gone);
    *slot = p;
    if (!stream) {
        poll_read(p);
        return;
    }
    f->streams++;
    p->deadline = sk_mono_ms() + heartbeat_ms;
    sk_api_account(req, action, 200);
    sk_sse_start(&p->sse, req, on_flushed);
    /* the headers and a reconnection delay at once; the first read when h2o has sent them */
    sk_buf_append(&p->sse.out, "retry: 2000\n\n", 13);
    p->again = 1;
    sk_sse_send(&p->sse, NULL, NULL, 0);
}

/* -- server.c's hooks */

static void worker_stop(sk_worker_t *w)
{
    feed_t *f = w->feed;
    if (f == NULL || f->stopping)
        return;
    f->stopping = 1;
    while (!h2o_linklist_is_empty(&f->parked)) {
        poll_t *p = H2O_STRUCT_FROM_MEMBER(poll_t, link, f->parked.next);
        h2o_linklist_unlink(&p->link);
        if (p->stream)
            stream_finish(p);
        else
            reply_page(p);
    }
}

static size_t worker_open(sk_worker_t *w)
{
    return w->feed != NULL ? w->feed->open : 0;
}

static void worker_dispose(sk_worker_t *w)
{
    feed_t *f = w->feed;
    if (f == NULL)
        return;
    if (f->open != 0) { /* past the shutdown timeout: h2o or the store still point here */
        sk_log(SK_LOG_WARN, "event=feed_requests_left worker=%d open=%zu", w->index, f->open);
        return;
    }
    if (h2o_timeout_is_linked(&f->tick_entry))
        h2o_timeout_unlink(&f->tick_entry);
    h2o_timeout_dispose(w->ctx.loop, &f->tick);
    free(f);
    w->feed = NULL;
}

void sk_feed_register(sk_server_t *srv)
{
    static const sk_worker_hooks_t hooks = {.stop = worker_stop, .open = worker_open, .dispose = worker_dispose};
    const char *hb = getenv("SECKILL_FEED_HEARTBEAT_MS");
    if (hb != NULL && atoi(hb) > 0)
        heartbeat_ms = atoi(hb);
    sk_server_add_worker_hooks(srv, &hooks);
}
