/* sse.c: see sse.h. A stream never has two writes in flight: h2o 2.2.5 keeps the buffers of a
 * write (it does not copy them) until it calls `proceed`, so `out` and the held block must stay
 * as they are until then, and a second h2o_send before it would be a misuse of the generator. */
#include "sse.h"

static void release_held(sk_sse_t *s)
{
    if (s->held != NULL)
        h2o_mem_release_shared(s->held);
    s->held = NULL;
}

/* h2o: the previous write is flushed. */
static void on_proceed(h2o_generator_t *gen, h2o_req_t *req)
{
    sk_sse_t *s = (sk_sse_t *)gen;
    (void)req;
    s->busy = 0;
    s->out.len = 0;
    release_held(s);
    if (s->finishing)
        sk_sse_finish(s);
    else if (s->flushed != NULL)
        s->flushed(s); /* last: it may send, and h2o may then release the request */
}

/* h2o: the response ends abruptly (the client went away); the pool goes next. */
static void on_stop(h2o_generator_t *gen, h2o_req_t *req)
{
    sk_sse_t *s = (sk_sse_t *)gen;
    (void)req;
    s->req = NULL;
}

void sk_sse_start(sk_sse_t *s, h2o_req_t *req, sk_sse_flushed_cb flushed)
{
    s->gen.proceed = on_proceed;
    s->gen.stop = on_stop;
    s->req = req;
    s->flushed = flushed;
    req->res.status = 200;
    req->res.reason = "OK";
    /* content_length stays unknown: HTTP/1.1 gets chunks, HTTP/1.0 the end of the connection */
    req->http1_is_persistent = 0;
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, H2O_STRLIT("text/event-stream"));
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL, H2O_STRLIT("no-store"));
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-accel-buffering"), 0, NULL, H2O_STRLIT("no"));
    h2o_start_response(req, &s->gen);
}

int sk_sse_idle(const sk_sse_t *s)
{
    return s->req != NULL && !s->busy && !s->finished;
}

void sk_sse_send(sk_sse_t *s, void *shared, const char *p, size_t len)
{
    h2o_iovec_t bufs[2];
    size_t n = 0;
    if (s->out.len != 0)
        bufs[n++] = h2o_iovec_init(s->out.p, s->out.len);
    if (shared != NULL) {
        h2o_mem_addref_shared(shared);
        s->held = shared;
    }
    if (len != 0)
        bufs[n++] = h2o_iovec_init(p, len);
    s->busy = 1;
    h2o_send(s->req, bufs, n, H2O_SEND_STATE_IN_PROGRESS);
}

void sk_sse_finish(sk_sse_t *s)
{
    if (s->finished || s->req == NULL)
        return;
    if (s->busy) {
        s->finishing = 1;
        return;
    }
    h2o_iovec_t buf = h2o_iovec_init(s->out.p, s->out.len);
    s->finished = 1;
    s->req->http1_is_persistent = 0; /* h2o closes the connection after the final chunk */
    h2o_send(s->req, &buf, s->out.len != 0 ? 1 : 0, H2O_SEND_STATE_FINAL);
}

void sk_sse_dispose(sk_sse_t *s)
{
    release_held(s);
    sk_buf_dispose(&s->out);
}
