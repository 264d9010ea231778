/* feed.h: the winners feed, GET /v1/orders (admin; docs/API.md "The winners feed"): every order
 * event of every sale, in one sequence, read from the store (SK_STORE_FEED) after an opaque
 * cursor. As JSON, one page, or with `wait=S` a long-poll that answers as soon as there is an
 * event (or empty after S seconds); with `Accept: text/event-stream` a stream of Server-Sent
 * Events that goes on until the client leaves. api.c routes and checks the admin token; this
 * module owns the waiting requests. Everything runs on the worker thread that owns the request:
 * each worker has its own waiting requests and its own timer (FEED_TICK_MS), running only while
 * any wait. */
#ifndef SK_FEED_H
#define SK_FEED_H

#include "server.h"

/* Open event streams per worker; past it a stream request gets 503. */
#define SK_FEED_MAX_STREAMS 64
/* A stream sends a comment line when it has sent nothing for this long. */
#define SK_FEED_HEARTBEAT_MS 15000

/* Serves GET /v1/orders on `req` (token checked; the query string after '?', `action` for the
 * access log and metrics). Replies, now or later; the caller must not. */
void sk_feed_serve(sk_worker_t *w, h2o_req_t *req, const char *query, size_t qlen, int action);

/* The per-worker hooks (server.h): stop answers every long-poll at once and ends every stream;
 * open counts what h2o or the store still hold; dispose frees the worker's state. */
void sk_feed_register(sk_server_t *srv);

/* api.c's replies, for this module: an error from the table (message: NULL for its default) and
 * a body with Content-Length. */
void sk_api_reply_error(h2o_req_t *req, int action, int err, const char *message);
void sk_api_reply(h2o_req_t *req, int action, int status, const char *ctype, const char *body, size_t len);
/* Counts a request that is answered by a stream (its status goes out first). */
void sk_api_account(h2o_req_t *req, int action, int status);

#endif
