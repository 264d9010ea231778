/* sse.h: one Server-Sent Events response on h2o 2.2.5's generator interface, for the streams of
 * feed.c (the winners feed) and dashboard.c (the snapshots). It owns what every such stream does
 * the same way: the 200 with the event-stream headers, at most one write in flight (h2o_send,
 * then nothing more until h2o's `proceed`), the bytes of that write, and the end (a final empty
 * chunk, after the write in flight if there is one). What to send, and what to do when a write
 * is flushed (read more, park, skip a snapshot), stays with the caller. Runs on the worker thread
 * that owns the request. */
#ifndef SK_SSE_H
#define SK_SSE_H

#include <h2o.h>
#include "util.h"

typedef struct sk_sse_s sk_sse_t;

/* The write in flight was flushed; the stream is idle again (not called when it is finishing). */
typedef void (*sk_sse_flushed_cb)(sk_sse_t *s);

struct sk_sse_s {
    h2o_generator_t gen;       /* first: h2o hands &gen back to proceed / stop */
    h2o_req_t *req;            /* NULL once h2o stopped the response (the client went away) */
    sk_sse_flushed_cb flushed; /* the caller's next step, or NULL */
    sk_buf_t out;              /* the next write, then the write in flight; the caller appends while idle */
    void *held;                /* a reference to the shared block written after `out`, or NULL */
    unsigned busy : 1;         /* a write is in flight: wait for proceed */
    unsigned finishing : 1;    /* end the response once the write in flight is flushed */
    unsigned finished : 1;     /* the final chunk was sent: h2o owns the rest */
};

/* Starts the response on `req`: 200, Content-Type: text/event-stream, Cache-Control: no-store,
 * X-Accel-Buffering: no, no Content-Length (HTTP/1.1 gets chunks), a connection that is not
 * kept alive. `s` must be zeroed and outlive the request (a pool's dispose hook or later frees
 * it, with sk_sse_dispose). Sends nothing yet: the headers go with the first write. */
void sk_sse_start(sk_sse_t *s, h2o_req_t *req, sk_sse_flushed_cb flushed);

/* 1 when a write may be sent now: the response is open and no write is in flight. */
int sk_sse_idle(const sk_sse_t *s);

/* Writes `out` (may be empty), then `len` bytes at `p` (may be 0) inside `shared`, a block of
 * h2o_mem_alloc_shared (or NULL) that the stream holds a reference to until they are flushed.
 * The stream must be idle. Nothing may touch the stream's owner after this call: h2o may fail
 * the write and release the request at once. */
void sk_sse_send(sk_sse_t *s, void *shared, const char *p, size_t len);

/* Ends the response: `out` (may be empty) as the final chunk, now or, when a write is in flight,
 * an empty one once it is flushed. Does nothing when it has ended already or h2o stopped it. */
void sk_sse_finish(sk_sse_t *s);

/* Frees what the stream holds (not `s` itself); the request must be gone or finished. */
void sk_sse_dispose(sk_sse_t *s);

#endif
