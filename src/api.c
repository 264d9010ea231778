/* api.c: the HTTP API of API.md on h2o. One handler per listener (public, admin) checks the
 * wire (framing two parsers could read differently: 400 and close), the limits, on the admin
 * listener its Host, Content-Type and Origin, routes (router.c), checks the admin token, the rate
 * limit and on a take the buyer (a token, jwt.c, or a trusted gateway's header, proxy.c), then
 * runs a thin action: parse (parse.c) -> store (store.h) -> reply. Every error reply comes from the error table
 * (error.h). A request waiting for the store survives its connection closing: a slot in the
 * request's pool is cleared when h2o frees the request, and the store's answer is then dropped. */
#include <jansson.h>
#include <netdb.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include "accesslog.h"
#include "api_internal.h"
#include "dashboard.h"
#include "error.h"
#include "feed.h"
#include "jwt.h"
#include "log.h"
#include "metrics.h"
#include "parse.h"
#include "phr.h"
#include "proxy.h"
#include "ratelimit.h"
#include "render.h"
#include "router.h"
#include "server.h"
#include "util.h"

/* docs/openapi.yaml, embedded at build time (CMakeLists.txt) */
extern const char sk_doc_openapi_yaml[];
extern const size_t sk_doc_openapi_yaml_len;

typedef struct handler_s {
    h2o_handler_t super;
    sk_server_t *srv;
    int admin;
} handler_t;

/* A request waiting for the store. */
typedef struct call_s {
    sk_store_req_t sreq;
    h2o_req_t *req;         /* NULL once h2o has freed the request */
    struct call_s **slot;   /* in the request's pool */
    sk_worker_t *worker;
    sk_action_t action;
    sk_take_body_t body;    /* take: owns the strings sreq borrows */
} call_t;

/* Error bodies for the default messages, made once at start. */
static h2o_iovec_t error_bodies[SK_ERR_COUNT + 1];

static void init_error_bodies(void)
{
    for (int i = 1; i <= SK_ERR_COUNT; i++) {
        int err = SK_ERR_FIRST_ + i;
        json_t *o = json_pack("{s:s, s:s}", "error", sk_err_code(err), "message", sk_err_message(err));
        char *s = json_dumps(o, JSON_PRESERVE_ORDER | JSON_COMPACT);
        error_bodies[i] = h2o_iovec_init(s, strlen(s));
        json_decref(o);
    }
}

static sk_worker_t *worker_of(h2o_req_t *req)
{
    return H2O_STRUCT_FROM_MEMBER(sk_worker_t, ctx, req->conn->ctx);
}

static int64_t elapsed_us(h2o_req_t *req)
{
    struct timeval now;
    gettimeofday(&now, NULL);
    return (int64_t)(now.tv_sec - req->timestamps.request_begin_at.tv_sec) * 1000000 +
           (now.tv_usec - req->timestamps.request_begin_at.tv_usec);
}

/* The client's numeric address into host (NI_MAXHOST bytes), or `otherwise` when unknown. */
static void peer_host(h2o_req_t *req, char *host, const char *otherwise)
{
    struct sockaddr_storage ss;
    socklen_t sl = req->conn->callbacks->get_peername(req->conn, (struct sockaddr *)&ss);
    if (sl == 0 || h2o_socket_getnumerichost((struct sockaddr *)&ss, sl, host) == SIZE_MAX)
        snprintf(host, NI_MAXHOST, "%s", otherwise);
}

/* Counts an answered request in the metrics and the access log; `outcome` (the error code, won,
 * replayed, ...) is the access log's, NULL for none. */
static void account(h2o_req_t *req, int action, int status, const char *outcome)
{
    int64_t us = elapsed_us(req);
    sk_metrics_request(action, status, us);
    if (sk_accesslog_enabled()) {
        char host[NI_MAXHOST];
        peer_host(req, host, "-");
        sk_accesslog_add(host, req->method.base, req->method.len, req->path.base,
                         sk_api_log_path_len(req->path.base, req->path.len), status, outcome ? outcome : "-", us);
    }
}

size_t sk_api_log_path_len(const char *path, size_t len)
{
    /* dashboard: an admin token may ride in the query (?token=, for EventSource); never log it */
    const char *q = memchr(path, '?', len);
    if (q != NULL && memmem(q, len - (size_t)(q - path), "token=", 6) != NULL)
        return (size_t)(q - path);
    return len;
}

/* Sends a reply with Content-Length (never chunked). The body is copied. */
static void reply(h2o_req_t *req, int action, int status, const char *outcome, const char *ctype, const char *body,
                  size_t len)
{
    static const char *const reasons[600] = {[200] = "OK",
                                             [201] = "Created",
                                             [400] = "Bad Request",
                                             [401] = "Unauthorized",
                                             [403] = "Forbidden",
                                             [404] = "Not Found",
                                             [405] = "Method Not Allowed",
                                             [409] = "Conflict",
                                             [410] = "Gone",
                                             [413] = "Payload Too Large",
                                             [415] = "Unsupported Media Type",
                                             [421] = "Misdirected Request",
                                             [429] = "Too Many Requests",
                                             [431] = "Request Header Fields Too Large",
                                             [500] = "Internal Server Error",
                                             [503] = "Service Unavailable",
                                             [507] = "Insufficient Storage"};
    req->res.status = status;
    req->res.reason = status < 600 && reasons[status] ? reasons[status] : "Unknown";
    req->res.content_length = len;
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, ctype, strlen(ctype));
    account(req, action, status, outcome);
    if (h2o_memis(req->method.base, req->method.len, H2O_STRLIT("HEAD")))
        len = 0;
    h2o_send_inline(req, body, len);
}

static void reply_json(h2o_req_t *req, int action, int status, const char *outcome, json_t *o)
{
    char buf[1024];
    size_t n = json_dumpb(o, buf, sizeof(buf), JSON_PRESERVE_ORDER | JSON_COMPACT);
    if (n <= sizeof(buf)) {
        reply(req, action, status, outcome, "application/json", buf, n);
    } else {
        char *s = json_dumps(o, JSON_PRESERVE_ORDER | JSON_COMPACT);
        reply(req, action, status, outcome, "application/json", s, strlen(s));
        free(s);
    }
    json_decref(o);
}

/* Replies with an error from the table; `message` overrides the default text when not NULL. */
static void reply_error(h2o_req_t *req, int action, int err, const char *message)
{
    int status = sk_err_status(err);
    if (status == 429 || status == 503)
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_RETRY_AFTER, NULL, H2O_STRLIT("1"));
    if (message == NULL) {
        int i = err - SK_ERR_FIRST_;
        if (i < 1 || i > SK_ERR_COUNT)
            i = SK_EINTERNAL - SK_ERR_FIRST_;
        reply(req, action, status, sk_err_code(err), "application/json", error_bodies[i].base, error_bodies[i].len);
        return;
    }
    reply_json(req, action, status, sk_err_code(err),
               json_pack("{s:s, s:s}", "error", sk_err_code(err), "message", message));
}

/* Optional white space (RFC 9110) around s[*a..*b). */
static void ows_trim(const char *s, size_t *a, size_t *b)
{
    while (*a < *b && (s[*a] == ' ' || s[*a] == '\t'))
        (*a)++;
    while (*b > *a && (s[*b - 1] == ' ' || s[*b - 1] == '\t'))
        (*b)--;
}

/* A qvalue ("0" [ "." 0*3DIGIT ] / "1" [ "." 0*3("0") ]) that refuses: 0, 0., 0.0, 0.00, 0.000. */
static int qvalue_zero(const char *s, size_t n)
{
    if (n == 0 || n > 5 || s[0] != '0' || (n > 1 && s[1] != '.'))
        return 0;
    for (size_t i = 2; i < n; i++)
        if (s[i] != '0')
            return 0;
    return 1;
}

/* One element of an Accept list: text/csv (case-insensitive) and not refused by q=0. */
static int accepts_csv(const char *s, size_t n)
{
    size_t a = 0, b = 0;
    while (b < n && s[b] != ';')
        b++;
    ows_trim(s, &a, &b);
    if (!h2o_lcstris(s + a, b - a, H2O_STRLIT("text/csv")))
        return 0;
    while (b < n) { /* the parameters, each after a ';' */
        size_t p = b + 1, e = p;
        while (e < n && s[e] != ';')
            e++;
        b = e;
        ows_trim(s, &p, &e);
        if (e - p >= 2 && (s[p] == 'q' || s[p] == 'Q') && s[p + 1] == '=' && qvalue_zero(s + p + 2, e - p - 2))
            return 0;
    }
    return 1;
}

int sk_api_wants_csv(const h2o_req_t *req)
{
    /* every Accept header, each a comma-separated list */
    for (ssize_t i = -1; (i = h2o_find_header(&req->headers, H2O_TOKEN_ACCEPT, i)) >= 0;) {
        h2o_iovec_t v = req->headers.entries[i].value;
        for (size_t p = 0, e; p < v.len; p = e + 1) {
            for (e = p; e < v.len && v.base[e] != ','; e++)
                ;
            if (accepts_csv(v.base + p, e - p))
                return 1;
        }
    }
    return 0;
}

static void reply_metrics(sk_server_t *srv, h2o_req_t *req, const sk_store_req_t *s);

/* ---- renderers: the answer of a store request that succeeded ---- */

static void render_take(h2o_req_t *req, call_t *c, int64_t now)
{
    char buf[SK_RENDER_MAX];
    const sk_store_req_t *s = &c->sreq;
    reply(req, c->action, s->created ? 201 : 200, s->created ? "won" : "replayed", "application/json", buf,
          sk_render_order(buf, &s->order, now));
}

static void render_sale_put(h2o_req_t *req, call_t *c, int64_t now)
{
    char buf[SK_RENDER_MAX];
    reply(req, c->action, c->sreq.created ? 201 : 200, NULL, "application/json", buf,
          sk_render_sale(buf, &c->sreq.view, now));
}

static void render_sale(h2o_req_t *req, call_t *c, int64_t now)
{
    char buf[SK_RENDER_MAX];
    reply(req, c->action, 200, NULL, "application/json", buf, sk_render_sale(buf, &c->sreq.view, now));
}

static void render_sale_list(h2o_req_t *req, call_t *c, int64_t now)
{
    sk_buf_t b = {0};
    sk_render_sale_list(&b, c->sreq.views, c->sreq.nviews, now);
    reply(req, c->action, 200, NULL, "application/json", b.p, b.len);
    sk_buf_dispose(&b);
}

static void render_order(h2o_req_t *req, call_t *c, int64_t now)
{
    char buf[SK_RENDER_MAX];
    reply(req, c->action, 200, NULL, "application/json", buf, sk_render_order(buf, &c->sreq.order, now));
}

static void render_order_list(h2o_req_t *req, call_t *c, int64_t now)
{
    const sk_store_req_t *s = &c->sreq;
    char next[24];
    sk_buf_t b = {0};
    if (s->more)
        snprintf(next, sizeof(next), "%llu", (unsigned long long)s->orders[s->norders - 1].id);
    if (sk_api_wants_csv(req)) {
        sk_render_orders_csv(&b, s->orders, s->norders, now);
        if (s->more)
            h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-next"), 0, NULL,
                                  h2o_strdup(&req->pool, next, SIZE_MAX).base, strlen(next));
        reply(req, c->action, 200, NULL, "text/csv; charset=utf-8", b.p, b.len);
    } else {
        sk_render_order_list(&b, s->orders, s->norders, s->more ? next : NULL, now);
        reply(req, c->action, 200, NULL, "application/json", b.p, b.len);
    }
    sk_buf_dispose(&b);
}

/* /metrics renders a failed sale listing too: without the per-sale gauges */
static void render_metrics(h2o_req_t *req, call_t *c, int64_t now)
{
    (void)now;
    reply_metrics(c->worker->server, req, &c->sreq);
}

/* ---- parsers: a request's inputs into its store request ---- */

static int parse_sale_put(h2o_req_t *req, const sk_match_t *m, call_t *c, const char **why)
{
    (void)m;
    return sk_parse_sale_conf(req->entity.base, req->entity.len, &c->sreq.conf, why);
}

static int parse_take(h2o_req_t *req, const sk_match_t *m, call_t *c, const char **why)
{
    (void)m;
    int rc = sk_parse_take(req->entity.base, req->entity.len, &c->body, why);
    if (rc != 0)
        sk_metrics_take(rc, 0);
    return rc; /* the store request is filled once the buyer is known: take_buyer */
}

static int parse_order_list(h2o_req_t *req, const sk_match_t *m, call_t *c, const char **why)
{
    (void)req;
    return sk_parse_list_query(m->query.p, m->query.len, &c->sreq.order_id, &c->sreq.limit, why);
}

static int parse_order_id(h2o_req_t *req, const sk_match_t *m, call_t *c, const char **why)
{
    (void)req;
    *why = NULL;
    return (c->sreq.order_id = sk_parse_order_id(m->order.p, m->order.len)) == 0 ? SK_ENO_SUCH_ORDER : 0;
}

/* ---- actions answered without the store ---- */

static void run_healthz(sk_server_t *srv, h2o_req_t *req, const sk_match_t *m)
{
    if (sk_store_healthy(srv->store))
        reply(req, m->action, 200, NULL, "application/json", H2O_STRLIT("{\"status\":\"ok\"}"));
    else
        reply(req, m->action, 503, NULL, "application/json", H2O_STRLIT("{\"status\":\"unavailable\"}"));
}

/* the dashboard (dashboard.c): the page is static and carries no data; the stream does */
static void run_dashboard(sk_server_t *srv, h2o_req_t *req, const sk_match_t *m)
{
    (void)srv;
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL, H2O_STRLIT("no-store"));
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-content-type-options"), 0, NULL,
                          H2O_STRLIT("nosniff"));
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("referrer-policy"), 0, NULL,
                          H2O_STRLIT("no-referrer"));
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("content-security-policy"), 0, NULL,
                          H2O_STRLIT("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                                     "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
                                     "frame-ancestors 'none'"));
    reply(req, m->action, 200, NULL, "text/html; charset=utf-8", sk_web_dashboard_html, sk_web_dashboard_html_len);
}

static void run_openapi(sk_server_t *srv, h2o_req_t *req, const sk_match_t *m)
{
    (void)srv;
    reply(req, m->action, 200, NULL, "application/yaml", sk_doc_openapi_yaml, sk_doc_openapi_yaml_len);
}

static void run_events(sk_server_t *srv, h2o_req_t *req, const sk_match_t *m)
{
    (void)srv;
    if (h2o_memis(req->method.base, req->method.len, H2O_STRLIT("HEAD"))) {
        reply(req, m->action, 200, NULL, "text/event-stream", "", 0);
        return;
    }
    account(req, m->action, 200, NULL);
    sk_dashboard_events(worker_of(req), req);
}

/* the winners feed (feed.c) */
static void run_feed(sk_server_t *srv, h2o_req_t *req, const sk_match_t *m)
{
    (void)srv;
    sk_feed_serve(worker_of(req), req, m->query.p, m->query.len, m->action);
}

void sk_api_reply_error(h2o_req_t *req, int action, int err, const char *message)
{
    reply_error(req, action, err, message);
}

void sk_api_reply(h2o_req_t *req, int action, int status, const char *ctype, const char *body, size_t len)
{
    reply(req, action, status, NULL, ctype, body, len);
}

void sk_api_account(h2o_req_t *req, int action, int status)
{
    account(req, action, status, NULL);
}

/* ---- the export: GET /v1/sales/{sale}/orders.csv ----
 * Every order of a sale, however many, as CSV: the store is asked for a page of EXPORT_PAGE orders
 * at a time, the next page only once h2o has written the previous one (its `proceed`), so memory
 * stays one page whatever the book's size and a slow client slows only its own export. The first
 * page decides the status (404 for an unknown sale, 503 ...); a store failure after the headers
 * went out ends the response abruptly (H2O_SEND_STATE_ERROR: no final chunk), so a client never
 * takes a cut export for a whole one. The export lives on the heap: a page may still be with the
 * store when the client goes away (h2o frees the request); the last of the two to let go of it,
 * the request's pool or the store's answer, frees it. */
#define EXPORT_PAGE 1000

typedef struct export_s {
    h2o_generator_t gen; /* first: h2o hands &gen back */
    sk_store_req_t sreq;
    h2o_req_t *req; /* NULL once h2o has freed the request */
    sk_worker_t *worker;
    sk_buf_t out; /* the page being written */
    int started;  /* the headers went out */
    int pending;  /* a page is with the store */
    int bom;      /* ?bom=1: UTF-8 byte order mark first */
} export_t;

static void export_next(export_t *x);

static void export_free(export_t *x)
{
    sk_store_req_dispose(&x->sreq);
    sk_buf_dispose(&x->out);
    free(x);
}

/* The request's pool is being freed. */
static void export_req_gone(void *p)
{
    export_t *x = *(export_t **)p;
    x->req = NULL;
    if (!x->pending)
        export_free(x);
}

static void export_proceed(h2o_generator_t *gen, h2o_req_t *req)
{
    (void)req;
    export_next((export_t *)gen);
}

static void export_stop(h2o_generator_t *gen, h2o_req_t *req)
{
    (void)gen;
    (void)req; /* the pool goes next: export_req_gone */
}

/* A page from the store. */
static void export_page(export_t *x)
{
    sk_store_req_t *s = &x->sreq;
    h2o_req_t *req = x->req;
    if (req == NULL) {
        export_free(x);
        return;
    }
    if (s->err != 0) {
        if (x->started)
            h2o_send(req, NULL, 0, H2O_SEND_STATE_ERROR);
        else
            reply_error(req, SK_A_ORDER_EXPORT, s->err, NULL);
        return;
    }
    int64_t now = s->now_ms / 1000;
    x->out.len = 0;
    if (!x->started) {
        static const h2o_iovec_t bom = {H2O_STRLIT("\xef\xbb\xbf")};
        char disp[SK_SALE_ID_MAX + 48];
        snprintf(disp, sizeof(disp), "attachment; filename=\"%s-orders.csv\"", s->sale); /* ids need no escape */
        req->res.status = 200;
        req->res.reason = "OK";
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
                       H2O_STRLIT("text/csv; charset=utf-8"));
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_DISPOSITION, NULL,
                       h2o_strdup(&req->pool, disp, SIZE_MAX).base, strlen(disp));
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL, H2O_STRLIT("no-store"));
        account(req, SK_A_ORDER_EXPORT, 200, NULL);
        x->started = 1;
        h2o_start_response(req, &x->gen);
        if (h2o_memis(req->method.base, req->method.len, H2O_STRLIT("HEAD"))) {
            h2o_send(req, NULL, 0, H2O_SEND_STATE_FINAL);
            return;
        }
        if (x->bom)
            sk_buf_append(&x->out, bom.base, bom.len);
        sk_render_orders_csv_head(&x->out);
    }
    sk_render_orders_csv_rows(&x->out, s->orders, s->norders, now);
    int more = s->more;
    if (s->norders > 0)
        s->order_id = s->orders[s->norders - 1].id;
    sk_store_req_dispose(s);
    h2o_iovec_t buf = h2o_iovec_init(x->out.p, x->out.len);
    h2o_send(req, &buf, 1, more ? H2O_SEND_STATE_IN_PROGRESS : H2O_SEND_STATE_FINAL); /* then `proceed` */
}

static void export_answer(sk_store_req_t *sreq)
{
    export_t *x = H2O_STRUCT_FROM_MEMBER(export_t, sreq, sreq);
    x->pending = 0;
    x->worker->inflight--;
    export_page(x);
}

/* Asks the store for the page after s->order_id. */
static void export_next(export_t *x)
{
    sk_store_req_t *s = &x->sreq;
    s->op = SK_STORE_ORDER_LIST;
    s->limit = EXPORT_PAGE;
    s->more = 0;
    s->cb = export_answer;
    int rc = sk_store_submit(x->worker->store, s);
    if (rc == 0) {
        x->pending = 1;
        x->worker->inflight++;
        return;
    }
    if (rc < 0)
        s->err = rc;
    export_page(x);
}

static void run_export(sk_server_t *srv, h2o_req_t *req, const sk_match_t *m)
{
    const char *why;
    int bom, rc;
    (void)srv;
    if ((rc = sk_parse_export_query(m->query.p, m->query.len, &bom, &why)) != 0) {
        reply_error(req, m->action, rc, why);
        return;
    }
    export_t *x = sk_calloc(1, sizeof(*x));
    x->gen.proceed = export_proceed;
    x->gen.stop = export_stop;
    x->req = req;
    x->worker = worker_of(req);
    x->bom = bom;
    memcpy(x->sreq.sale, m->sale.p, m->sale.len); /* checked by on_req */
    export_t **slot = h2o_mem_alloc_shared(&req->pool, sizeof(*slot), export_req_gone);
    *slot = x;
    export_next(x);
}

/* ---- the action table ----
 * What each route of router.c (which also says its method, listener and whether it needs the
 * admin token) does: either `run` without the store, or `parse` the request into a store request
 * of `op`, check the rate limit when `rate` is set (keyed on the take's user, else the client),
 * submit it, and `render` the answer (errors come from the error table, but for `render_errors`
 * actions, whose renderer takes them). */
typedef struct action_s {
    void (*run)(sk_server_t *srv, h2o_req_t *req, const sk_match_t *m);
    sk_store_op_t op;
    sk_order_op_t change; /* SK_STORE_ORDER_CHANGE */
    int (*parse)(h2o_req_t *req, const sk_match_t *m, call_t *c, const char **why);
    void (*render)(h2o_req_t *req, call_t *c, int64_t now);
    unsigned rate : 1;
    unsigned render_errors : 1;
} action_t;

static const action_t ACTIONS[SK_A_COUNT_] = {
    [SK_A_HEALTHZ] = {.run = run_healthz, .rate = 1},
    [SK_A_METRICS] = {.op = SK_STORE_SALE_LIST, .render = render_metrics, .render_errors = 1},
    [SK_A_SALE_LIST] = {.op = SK_STORE_SALE_LIST, .render = render_sale_list},
    [SK_A_SALE_PUT] = {.op = SK_STORE_SALE_PUT, .parse = parse_sale_put, .render = render_sale_put},
    [SK_A_SALE_GET] = {.op = SK_STORE_SALE_GET, .render = render_sale, .rate = 1},
    [SK_A_TAKE] = {.op = SK_STORE_TAKE, .parse = parse_take, .render = render_take, .rate = 1},
    [SK_A_ORDER_LIST] = {.op = SK_STORE_ORDER_LIST, .parse = parse_order_list, .render = render_order_list},
    [SK_A_ORDER_GET] = {.op = SK_STORE_ORDER_GET, .parse = parse_order_id, .render = render_order},
    [SK_A_ORDER_CONFIRM] = {.op = SK_STORE_ORDER_CHANGE,
                            .change = SK_OP_CONFIRM_ORDER,
                            .parse = parse_order_id,
                            .render = render_order},
    [SK_A_ORDER_CANCEL] = {.op = SK_STORE_ORDER_CHANGE,
                           .change = SK_OP_CANCEL_ORDER,
                           .parse = parse_order_id,
                           .render = render_order},
    [SK_A_DASHBOARD] = {.run = run_dashboard},
    [SK_A_EVENTS] = {.run = run_events},
    [SK_A_ORDER_EXPORT] = {.run = run_export},
    [SK_A_SALE_DELETE] = {.op = SK_STORE_SALE_DELETE, .render = render_sale},
    [SK_A_OPENAPI] = {.run = run_openapi},
    [SK_A_FEED] = {.run = run_feed},
};

/* Sends the answer of a finished store request. */
static void answer(h2o_req_t *req, call_t *c)
{
    const action_t *a = &ACTIONS[c->action];
    if (c->action == SK_A_TAKE)
        sk_metrics_take(c->sreq.err, !c->sreq.created);
    if (c->sreq.err != 0 && !a->render_errors)
        reply_error(req, c->action, c->sreq.err, NULL);
    else
        a->render(req, c, c->sreq.now_ms / 1000);
}

static void call_free(call_t *c)
{
    sk_store_req_dispose(&c->sreq);
    free(c);
}

static void on_req_disposed(void *p)
{
    call_t **slot = p;
    if (*slot != NULL)
        (*slot)->req = NULL;
}

/* The store's answer, on this worker's loop. */
static void on_store_answer(sk_store_req_t *sreq)
{
    call_t *c = H2O_STRUCT_FROM_MEMBER(call_t, sreq, sreq);
    c->worker->inflight--;
    if (c->req != NULL) {
        *c->slot = NULL;
        answer(c->req, c);
    } else if (c->action == SK_A_TAKE) {
        sk_metrics_take(sreq->err, !sreq->created);
    }
    call_free(c);
}

static void submit(h2o_req_t *req, call_t *c)
{
    sk_worker_t *w = worker_of(req);
    c->worker = w;
    c->req = req;
    c->sreq.cb = on_store_answer;
    int rc = sk_store_submit(w->store, &c->sreq);
    if (rc == SK_STORE_DONE) {
        answer(req, c);
        call_free(c);
    } else if (rc < 0) {
        reply_error(req, c->action, rc, NULL);
        call_free(c);
    } else {
        w->inflight++;
        c->slot = h2o_mem_alloc_shared(&req->pool, sizeof(*c->slot), on_req_disposed);
        *c->slot = c;
    }
}

static call_t *call_new(sk_action_t action, sk_store_op_t op, const sk_match_t *m)
{
    call_t *c = sk_calloc(1, sizeof(*c));
    c->action = action;
    c->sreq.op = op;
    if (m->sale.p != NULL && m->sale.len <= SK_SALE_ID_MAX) {
        memcpy(c->sreq.sale, m->sale.p, m->sale.len);
        c->sreq.sale[m->sale.len] = '\0';
    }
    return c;
}

size_t sk_api_head_size(const h2o_req_t *req)
{
    /* "METHOD PATH HTTP/1.1\r\n", "name: value\r\n" each, then the blank line */
    size_t n = req->method.len + 1 + req->path.len + 11 + 2;
    for (size_t i = 0; i < req->headers.size; i++)
        n += req->headers.entries[i].name->len + req->headers.entries[i].value.len + 4;
    /* h2o keeps the Host header out of the list (it is input.authority): it counts too (without
     * one, h2o fills in the host's name, a few bytes, before handlers run) */
    if (req->input.authority.base != NULL)
        n += sizeof("host: \r\n") - 1 + req->input.authority.len;
    return n;
}

int sk_api_token_ok(const h2o_req_t *req, const char *token)
{
    ssize_t i = h2o_find_header(&req->headers, H2O_TOKEN_AUTHORIZATION, -1);
    if (i < 0)
        return 0;
    h2o_iovec_t v = req->headers.entries[i].value;
    size_t tlen = strlen(token);
    if (v.len != 7 + tlen || strncasecmp(v.base, "Bearer ", 7) != 0)
        return 0;
    return CRYPTO_memcmp(v.base + 7, token, tlen) == 0;
}

static int name_is(const struct phr_header *h, const char *lit, size_t n)
{
    return h->name_len == n && strncasecmp(h->name, lit, n) == 0;
}

const char *sk_api_wire_check(const char *buf, size_t len)
{
    struct phr_header h[H2O_MAX_HEADERS];
    size_t nh = H2O_MAX_HEADERS, mlen, plen, ncl = 0, nte = 0;
    const char *m, *p, *cl = NULL;
    size_t cl_len = 0;
    int minor, chunked_only = 1;
    if (len > H2O_MAX_REQLEN)
        len = H2O_MAX_REQLEN;
    if (phr_parse_request(buf, len, &m, &mlen, &p, &plen, &minor, h, &nh, 0) <= 0)
        return "the request head cannot be read";
    for (size_t i = 0; i < nh; i++) {
        if (h[i].name == NULL || h[i].name_len == 0)
            return "a header line is folded (obs-fold)";
        if (name_is(&h[i], H2O_STRLIT("content-length"))) {
            /* the same value twice is one length (RFC 9112 6.3); two lengths are two framings */
            if (ncl++ > 0 && (h[i].value_len != cl_len || memcmp(h[i].value, cl, cl_len) != 0))
                return "differing Content-Length headers";
            cl = h[i].value;
            cl_len = h[i].value_len;
        } else if (name_is(&h[i], H2O_STRLIT("transfer-encoding"))) {
            size_t a = 0, b = h[i].value_len;
            ows_trim(h[i].value, &a, &b);
            nte++;
            chunked_only &= h2o_lcstris(h[i].value + a, b - a, H2O_STRLIT("chunked"));
        }
    }
    if (nte > 0 && ncl > 0)
        return "Content-Length with Transfer-Encoding";
    if (nte > 0 && minor == 0)
        return "Transfer-Encoding in HTTP/1.0";
    if (nte > 1 || !chunked_only)
        return "a Transfer-Encoding other than chunked";
    return NULL;
}

/* The raw head of an HTTP/1 request (h2o keeps it at the start of the socket's input until the
 * answer is sent), checked: 400 and close for what two parsers could frame differently (a proxy
 * before us and h2o), so that nothing after it runs as a request. Returns 1 when answered. */
static int wire_refused(h2o_req_t *req)
{
    h2o_socket_t *sock;
    const char *why;
    if (req->version >= 0x200 || req->conn->callbacks->get_socket == NULL ||
        (sock = req->conn->callbacks->get_socket(req->conn)) == NULL || sock->input == NULL)
        return 0;
    if ((why = sk_api_wire_check(sock->input->bytes, sock->input->size)) == NULL)
        return 0;
    req->http1_is_persistent = 0;
    reply_error(req, SK_A_COUNT_, SK_EBAD_REQUEST, why);
    return 1;
}

size_t sk_api_client_addr(h2o_req_t *req, const sk_cidrs_t *trusted, int trust_peer, char *out)
{
    char peer[NI_MAXHOST];
    size_t n = 0;
    ssize_t i = -1;
    peer_host(req, peer, "unknown");
    if (!trust_peer && (trusted == NULL || trusted->n == 0))
        return sk_proxy_client(NULL, 0, peer, NULL, NULL, 0, out);
    while ((i = h2o_find_header(&req->headers, H2O_TOKEN_X_FORWARDED_FOR, i)) >= 0)
        n++;
    const char **v = h2o_mem_alloc_pool(&req->pool, (n + 1) * sizeof(*v));
    size_t *l = h2o_mem_alloc_pool(&req->pool, (n + 1) * sizeof(*l));
    n = 0;
    while ((i = h2o_find_header(&req->headers, H2O_TOKEN_X_FORWARDED_FOR, i)) >= 0) {
        v[n] = req->headers.entries[i].value.base;
        l[n++] = req->headers.entries[i].value.len;
    }
    return sk_proxy_client(trusted, trust_peer, peer, v, l, n, out);
}

size_t sk_api_rate_key(h2o_req_t *req, const sk_cidrs_t *trusted, int trust_peer, const char *user, size_t ulen,
                       char *key)
{
    size_t klen;
    if (user != NULL) {
        klen = (size_t)snprintf(key, SK_API_RATE_KEY_MAX, "u:%.*s", (int)ulen, user);
    } else {
        char host[NI_MAXHOST];
        sk_api_client_addr(req, trusted, trust_peer, host);
        klen = (size_t)snprintf(key, SK_API_RATE_KEY_MAX, "a:%s", host);
    }
    if (klen >= SK_API_RATE_KEY_MAX)
        klen = SK_API_RATE_KEY_MAX - 1;
    return klen;
}

/* The rate limit (public listener): the client address, or with `user` (a verified buyer,
 * never a claimed one) that buyer. Returns 1 after answering 429. */
static int check_rate(sk_server_t *srv, handler_t *h, h2o_req_t *req, int action, const char *user, size_t ulen)
{
    int retry;
    char ra[16], key[SK_API_RATE_KEY_MAX];
    sk_ratelimit_t *rl = srv->ratelimit; /* read once: a reload may replace it (server.c) */
    if (h->admin || rl == NULL)
        return 0;
    size_t klen = sk_api_rate_key(req, &srv->trusted, (int)srv->cfg->trust_proxy, user, ulen, key);
    if (sk_ratelimit_take(rl, key, klen, sk_mono_ms(), &retry) == 0)
        return 0;
    snprintf(ra, sizeof(ra), "%d", retry);
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_RETRY_AFTER, NULL, h2o_strdup(&req->pool, ra, SIZE_MAX).base,
                   strlen(ra));
    if (action == SK_A_TAKE)
        sk_metrics_take(SK_ERATE_LIMITED, 0);
    reply(req, action, 429, "rate_limited", "application/json", error_bodies[SK_ERATE_LIMITED - SK_ERR_FIRST_].base,
          error_bodies[SK_ERATE_LIMITED - SK_ERR_FIRST_].len);
    return 1;
}

/* ---- the admin listener: Host, Content-Type, Origin ---- */

/* Case-insensitive equality of two byte strings (h2o_lcstris lowercases one side only). */
static int ci_eq(const char *a, size_t an, const char *b, size_t bn)
{
    return an == bn && strncasecmp(a, b, an) == 0 && memchr(a, '\0', an) == NULL && memchr(b, '\0', bn) == NULL;
}

int sk_api_host_allowed(const char *authority, size_t len, char *const *hosts, size_t nhosts)
{
    size_t n = len;
    if (len > 0 && authority[0] == '[') { /* [v6]:port */
        const char *rb = memchr(authority, ']', len);
        if (rb == NULL)
            return 0;
        n = (size_t)(rb - authority) + 1;
        if (n != len && authority[n] != ':')
            return 0;
    } else {
        const char *colon = memchr(authority, ':', len);
        if (colon != NULL)
            n = (size_t)(colon - authority);
    }
    for (size_t i = n == len ? len : n + 1; i < len; i++) /* a port is digits */
        if (authority[i] < '0' || authority[i] > '9')
            return 0;
    for (size_t i = 0; i < nhosts; i++)
        if (strcmp(hosts[i], "*") == 0 || ci_eq(authority, n, hosts[i], strlen(hosts[i])))
            return 1;
    return 0;
}

int sk_api_json_content_type(const h2o_req_t *req)
{
    ssize_t i = h2o_find_header(&req->headers, H2O_TOKEN_CONTENT_TYPE, -1);
    if (i < 0 || h2o_find_header(&req->headers, H2O_TOKEN_CONTENT_TYPE, i) >= 0)
        return 0;
    h2o_iovec_t v = req->headers.entries[i].value;
    size_t a = 0, b = 0;
    while (b < v.len && v.base[b] != ';')
        b++;
    ows_trim(v.base, &a, &b);
    return h2o_lcstris(v.base + a, b - a, H2O_STRLIT("application/json"));
}

int sk_api_origin_ok(const h2o_req_t *req)
{
    ssize_t i = h2o_find_header_by_str(&req->headers, H2O_STRLIT("origin"), -1);
    if (i < 0)
        return 1; /* not a browser's cross-origin request: browsers send Origin on every POST */
    if (h2o_find_header_by_str(&req->headers, H2O_STRLIT("origin"), i) >= 0 || req->input.authority.base == NULL)
        return 0;
    h2o_iovec_t v = req->headers.entries[i].value, a = req->input.authority;
    for (int s = 0; s < 2; s++) {
        size_t pl = s == 0 ? 7 : 8;
        if (v.len == pl + a.len && ci_eq(v.base, pl, s == 0 ? "http://" : "https://", pl) &&
            ci_eq(v.base + pl, a.len, a.base, a.len))
            return 1;
    }
    return 0;
}

/* 1 after answering a request the admin listener must not take: a Host it does not answer to
 * (421: DNS rebinding), and for a mutating request, a body that is not JSON (415: HTML forms
 * cannot send JSON without CORS; a DELETE has no body) or an Origin of another site (403: CSRF). */
static int admin_refused(sk_server_t *srv, h2o_req_t *req, int action, int *checked_host)
{
    if (!*checked_host) {
        *checked_host = 1;
        /* HTTP/1.0 may come without Host; a browser never does */
        if ((req->input.authority.base == NULL && req->version >= 0x101) ||
            (req->input.authority.base != NULL &&
             !sk_api_host_allowed(req->input.authority.base, req->input.authority.len, srv->admin_hosts,
                                  srv->nadmin_hosts))) {
            reply_error(req, action, SK_EMISDIRECTED, NULL);
            return 1;
        }
        return 0;
    }
    if (h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET")) ||
        h2o_memis(req->method.base, req->method.len, H2O_STRLIT("HEAD")))
        return 0;
    /* a DELETE carries no body (and is no request a form can send: a browser asks first) */
    if (!h2o_memis(req->method.base, req->method.len, H2O_STRLIT("DELETE")) && !sk_api_json_content_type(req)) {
        reply_error(req, action, SK_EUNSUPPORTED_MEDIA_TYPE, NULL);
        return 1;
    }
    if (!sk_api_origin_ok(req)) {
        reply_error(req, action, SK_EFORBIDDEN, "a request from another origin");
        return 1;
    }
    return 0;
}

/* ---- who buys ---- */

static int refuse_buyer(h2o_req_t *req, int err, const char *why, int bearer)
{
    if (bearer)
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_WWW_AUTHENTICATE, NULL,
                       H2O_STRLIT("Bearer error=\"invalid_token\""));
    sk_metrics_take(err, 0);
    reply_error(req, SK_A_TAKE, err, why);
    return 1;
}

/* With buyer tokens or a trusted gateway, makes the take's user the verified buyer, or answers
 * 401 (no verified buyer) or 403 (a ticket for another sale, a body naming someone else).
 * Returns 1 when answered. */
static int identify(sk_server_t *srv, h2o_req_t *req, call_t *c)
{
    const char *user, *why = NULL;
    size_t ulen;
    sk_jwt_keys_t *keys = atomic_load_explicit(&srv->jwt_keys, memory_order_acquire);
    sk_jwt_claims_t cl;
    if (keys != NULL) {
        ssize_t i = h2o_find_header(&req->headers, H2O_TOKEN_AUTHORIZATION, -1);
        h2o_iovec_t v = i >= 0 ? req->headers.entries[i].value : h2o_iovec_init(NULL, 0);
        if (i < 0 || h2o_find_header(&req->headers, H2O_TOKEN_AUTHORIZATION, i) >= 0 || v.len < 8 ||
            strncasecmp(v.base, "Bearer ", 7) != 0)
            return refuse_buyer(req, SK_EUNAUTHORIZED, "a take needs Authorization: Bearer <buyer token>", 1);
        if (sk_jwt_verify_cached(keys, v.base + 7, v.len - 7, sk_now_ms() / 1000, srv->cfg->buyer_token_leeway,
                                 srv->cfg->buyer_token_audience, &cl, &why) != 0)
            return refuse_buyer(req, SK_EUNAUTHORIZED, why, 1);
        if (cl.sale[0] != '\0' && strcmp(cl.sale, c->sreq.sale) != 0)
            return refuse_buyer(req, SK_EFORBIDDEN, "the buyer token is for another sale", 0);
        user = cl.sub;
        ulen = cl.sub_len;
    } else if (srv->cfg->user_header != NULL) {
        char peer[NI_MAXHOST];
        int family;
        uint8_t addr[16];
        peer_host(req, peer, "unknown");
        if (sk_ip_parse(peer, strlen(peer), &family, addr) != 0 || !sk_cidrs_match(&srv->trusted, family, addr))
            return refuse_buyer(req, SK_EUNAUTHORIZED, "takes come through the trusted gateway only", 0);
        const char *name = srv->cfg->user_header;
        ssize_t i = h2o_find_header_by_str(&req->headers, name, strlen(name), -1);
        if (i < 0 || h2o_find_header_by_str(&req->headers, name, strlen(name), i) >= 0 ||
            !sk_valid_ident(req->headers.entries[i].value.base, req->headers.entries[i].value.len))
            return refuse_buyer(req, SK_EUNAUTHORIZED, "the gateway named no buyer (one valid user id)", 0);
        user = req->headers.entries[i].value.base;
        ulen = req->headers.entries[i].value.len;
    } else {
        return 0;
    }
    if (c->body.user != NULL && (c->body.user_len != ulen || memcmp(c->body.user, user, ulen) != 0))
        return refuse_buyer(req, SK_EFORBIDDEN, "the body's user is not the verified buyer", 0);
    memcpy(c->body.user_buf, user, ulen);
    c->body.user_buf[ulen] = '\0';
    c->body.user = c->body.user_buf;
    c->body.user_len = ulen;
    return 0;
}

/* A take's buyer, then its inputs: the verified buyer (identify), limited as that buyer when it is
 * verified (a claimed body user is never a rate-limit key). Returns 1 when answered. */
static int take_buyer(sk_server_t *srv, handler_t *h, h2o_req_t *req, call_t *c)
{
    if (identify(srv, req, c) || ((srv->jwt_keys != NULL || srv->cfg->user_header != NULL) &&
                                  check_rate(srv, h, req, SK_A_TAKE, c->body.user, c->body.user_len)))
        return 1;
    c->sreq.user = c->body.user;
    c->sreq.user_len = c->body.user_len;
    c->sreq.qty = c->body.qty;
    c->sreq.request_id = c->body.request_id;
    c->sreq.request_id_len = c->body.request_id_len;
    return 0;
}

/* Prometheus text: the counters, the store's health and, from the sale list, per-sale gauges. */
static void reply_metrics(sk_server_t *srv, h2o_req_t *req, const sk_store_req_t *s)
{
    static const char *const g[3] = {"sold", "held", "remaining"};
    sk_buf_t b = {0};
    sk_metrics_render(&b);
    sk_server_render_metrics(srv, &b);
    sk_buf_printf(&b,
                  "# HELP seckill_store_up 1 when the store can answer.\n# TYPE seckill_store_up gauge\n"
                  "seckill_store_up{store=\"%s\"} %d\n",
                  sk_store_name(srv->store), sk_store_healthy(srv->store));
    static const char *const help[3] = {
        "Units sold (confirmed orders), by sale.",
        "Units held (orders awaiting confirmation), by sale.",
        "Units left to take, by sale.",
    };
    for (int k = 0; k < 3 && s->err == 0; k++) {
        sk_buf_printf(&b, "# HELP seckill_sale_%s %s\n# TYPE seckill_sale_%s gauge\n", g[k], help[k], g[k]);
        for (size_t i = 0; i < s->nviews; i++) {
            const sk_sale_view_t *v = &s->views[i];
            int64_t x = k == 0 ? v->sold : k == 1 ? v->held : sk_sale_remaining(v);
            sk_buf_printf(&b, "seckill_sale_%s{sale=\"%s\"} %lld\n", g[k], v->id, (long long)x);
        }
    }
    reply(req, SK_A_METRICS, 200, NULL, "text/plain; version=0.0.4; charset=utf-8", b.p, b.len);
    sk_buf_dispose(&b);
}

static int on_req(h2o_handler_t *self, h2o_req_t *req)
{
    handler_t *h = (handler_t *)self;
    sk_server_t *srv = h->srv;
    sk_match_t m;
    const char *why = NULL;
    int rc, host_checked = 0;

    if (wire_refused(req))
        return 0;
    if (sk_api_head_size(req) > (size_t)srv->cfg->max_head_bytes) {
        reply_error(req, SK_A_COUNT_, SK_EHEAD_TOO_LARGE, NULL);
        return 0;
    }
    if (req->entity.base != NULL && req->entity.len > (size_t)srv->cfg->max_body_bytes) {
        reply_error(req, SK_A_COUNT_, SK_EBODY_TOO_LARGE, NULL);
        return 0;
    }
    if (h->admin && admin_refused(srv, req, SK_A_COUNT_, &host_checked))
        return 0;
    if ((rc = sk_route(req->method.base, req->method.len, req->path.base, req->path.len, h->admin, &m)) != 0) {
        if (rc == SK_EMETHOD_NOT_ALLOWED)
            h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ALLOW, NULL, m.allow, strlen(m.allow));
        reply_error(req, SK_A_COUNT_, rc, NULL);
        return 0;
    }
    if (h->admin && admin_refused(srv, req, m.action, &host_checked))
        return 0;
    const char *token = srv->cfg->admin_token; /* read once: a reload may replace the config (server.c) */
    if (sk_action_is_admin(m.action) && token != NULL && !sk_api_token_ok(req, token) &&
        !(m.action == SK_A_EVENTS && sk_dashboard_query_token_ok(m.query.p, m.query.len, token))) {
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_WWW_AUTHENTICATE, NULL, H2O_STRLIT("Bearer"));
        reply_error(req, m.action, SK_EUNAUTHORIZED, NULL);
        return 0;
    }
    if (m.sale.p != NULL && !sk_valid_sale_id(m.sale.p, m.sale.len)) {
        reply_error(req, m.action, SK_EBAD_REQUEST, "the sale id must match [A-Za-z0-9_.-]{1,64}");
        return 0;
    }

    const action_t *a = &ACTIONS[m.action];
    if (a->run != NULL) {
        if (!a->rate || !check_rate(srv, h, req, m.action, NULL, 0))
            a->run(srv, req, &m);
        return 0;
    }
    call_t *c = call_new(m.action, a->op, &m);
    c->sreq.change = a->change;
    if (a->parse != NULL && (rc = a->parse(req, &m, c, &why)) != 0) {
        reply_error(req, m.action, rc, why);
        call_free(c);
        return 0;
    }
    /* the client's address first: a flood of forged tokens is limited before it is verified */
    if ((a->rate && check_rate(srv, h, req, m.action, NULL, 0)) ||
        (m.action == SK_A_TAKE && take_buyer(srv, h, req, c))) {
        call_free(c);
        return 0;
    }
    submit(req, c);
    return 0;
}

void sk_api_register(sk_server_t *srv)
{
    init_error_bodies();
    sk_dashboard_register(srv);
    sk_feed_register(srv);
    h2o_hostconf_t *hosts[2] = {srv->host_public, srv->host_admin};
    for (int i = 0; i < 2; i++) {
        h2o_pathconf_t *pc = h2o_config_register_path(hosts[i], "/", 0);
        handler_t *h = (handler_t *)h2o_create_handler(pc, sizeof(*h));
        h->super.on_req = on_req;
        h->srv = srv;
        h->admin = i == 1;
    }
}
