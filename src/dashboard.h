/* dashboard.h: the live sale dashboard on the admin listener (issues 7 and 17). `GET /` serves
 * one self-contained page (src/web/dashboard.html, embedded into the binary at build time) and
 * `GET /v1/events` streams Server-Sent Events: every SK_DASHBOARD_TICK_MS (less often past
 * SK_DASHBOARD_SALES_PER_TICK sales) each open stream gets one JSON snapshot of every sale, the
 * cumulative take outcome counters of /metrics and the store's health, however heavy the
 * traffic. api.c routes, checks the token and accounts the request; this module owns the
 * streams. Everything here runs on the worker thread that owns the request (each worker has its
 * own streams, timer and snapshot) but the latest sale list, which the workers share under a
 * mutex so that one list serves the whole process. See docs/dashboard.md. */
#ifndef SK_DASHBOARD_H
#define SK_DASHBOARD_H

#include <stddef.h>
#include "server.h"

#define SK_DASHBOARD_TICK_MS 500
/* A sale list reads every sale from the store (on Redis one script call per sale). The process
 * reads at most this many sales a tick on average: with more sales, the list (and so each
 * stream's snapshots) comes every ceil(sales / SK_DASHBOARD_SALES_PER_TICK) ticks, so that the
 * dashboard's load on the store stays bounded however many sales there are (docs/dashboard.md,
 * "Cost"). */
#define SK_DASHBOARD_SALES_PER_TICK 2000

/* The page, generated from src/web/dashboard.html by cmake/embed.cmake (NUL-terminated). */
extern const char sk_web_dashboard_html[];
extern const size_t sk_web_dashboard_html_len;

/* 1 when the query string (without '?') has a `token` parameter whose percent-decoded value is
 * `token`, compared in constant time; else 0. For EventSource, which cannot send headers. */
int sk_dashboard_query_token_ok(const char *query, size_t len, const char *token);

/* Starts the event stream on `req` (a GET on the admin listener, token already checked): 200
 * text/event-stream without Content-Length, until the client goes away or the worker stops.
 * The caller has accounted the request; it must not reply to it. */
void sk_dashboard_events(sk_worker_t *w, h2o_req_t *req);

/* The dashboard's per-worker hooks (server.h), registered by sk_dashboard_register: stop ends
 * every open stream (a final empty chunk, then h2o closes the connection) and ends new ones at
 * once; open counts the streams not yet released by h2o; dispose frees the worker's state (kept
 * if anything is still open, since h2o or the store may still point into it). */
void sk_dashboard_register(sk_server_t *srv);

#endif
