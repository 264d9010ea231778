/* api.c: the HTTP API of API.md on h2o. One handler per listener (public, admin) checks the
 * limits, routes (router.c), checks the admin token and the rate limit, then runs a thin action:
 * parse (parse.c) -> store (store.h) -> reply. Every error reply comes from the error table
 * (error.h). A request waiting for the store survives its connection closing: a slot in the
 * request's pool is cleared when h2o frees the request, and the store's answer is then dropped. */
#include <jansson.h>
#include <netdb.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include "accesslog.h"
#include "api_internal.h"
#include "dashboard.h"
#include "error.h"
#include "log.h"
#include "metrics.h"
#include "parse.h"
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
    static const char *const reasons[600] = {
        [200] = "OK", [201] = "Created", [400] = "Bad Request", [401] = "Unauthorized", [403] = "Forbidden",
        [404] = "Not Found", [405] = "Method Not Allowed", [409] = "Conflict", [413] = "Payload Too Large",
        [429] = "Too Many Requests", [431] = "Request Header Fields Too Large", [500] = "Internal Server Error",
        [503] = "Service Unavailable", [507] = "Insufficient Storage"};
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
    if (rc != 0) {
        sk_metrics_take(rc, 0);
        return rc;
    }
    c->sreq.user = c->body.user;
    c->sreq.user_len = c->body.user_len;
    c->sreq.qty = c->body.qty;
    c->sreq.request_id = c->body.request_id;
    c->sreq.request_id_len = c->body.request_id_len;
    return 0;
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
    [SK_A_OPENAPI] = {.run = run_openapi},
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

size_t sk_api_rate_key(h2o_req_t *req, int trust_proxy, const char *user, size_t ulen, char *key)
{
    size_t klen;
    if (user != NULL) {
        klen = (size_t)snprintf(key, SK_API_RATE_KEY_MAX, "u:%.*s", (int)ulen, user);
    } else {
        ssize_t i;
        if (trust_proxy && (i = h2o_find_header(&req->headers, H2O_TOKEN_X_FORWARDED_FOR, -1)) >= 0) {
            h2o_iovec_t v = req->headers.entries[i].value;
            const char *comma = memchr(v.base, ',', v.len);
            size_t n = comma ? (size_t)(comma - v.base) : v.len;
            while (n > 0 && v.base[n - 1] == ' ')
                n--;
            klen = (size_t)snprintf(key, SK_API_RATE_KEY_MAX, "a:%.*s", (int)(n > 100 ? 100 : n), v.base);
        } else {
            char host[NI_MAXHOST];
            peer_host(req, host, "unknown");
            klen = (size_t)snprintf(key, SK_API_RATE_KEY_MAX, "a:%s", host);
        }
    }
    if (klen >= SK_API_RATE_KEY_MAX)
        klen = SK_API_RATE_KEY_MAX - 1;
    return klen;
}

/* The client a rate limit applies to: see sk_api_rate_key. */
static int rate_limited(sk_server_t *srv, sk_ratelimit_t *rl, h2o_req_t *req, const char *user, size_t ulen,
                        int *retry_after)
{
    char key[SK_API_RATE_KEY_MAX];
    size_t klen = sk_api_rate_key(req, (int)srv->cfg->trust_proxy, user, ulen, key);
    return sk_ratelimit_take(rl, key, klen, sk_mono_ms(), retry_after) != 0;
}

static int check_rate(sk_server_t *srv, handler_t *h, h2o_req_t *req, int action, const char *user, size_t ulen)
{
    int retry;
    char ra[16];
    sk_ratelimit_t *rl = srv->ratelimit; /* read once: a reload may replace it (server.c) */
    if (h->admin || rl == NULL || !rate_limited(srv, rl, req, user, ulen, &retry))
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
    int rc;

    if (sk_api_head_size(req) > (size_t)srv->cfg->max_head_bytes) {
        reply_error(req, SK_A_COUNT_, SK_EHEAD_TOO_LARGE, NULL);
        return 0;
    }
    if (req->entity.base != NULL && req->entity.len > (size_t)srv->cfg->max_body_bytes) {
        reply_error(req, SK_A_COUNT_, SK_EBODY_TOO_LARGE, NULL);
        return 0;
    }
    if ((rc = sk_route(req->method.base, req->method.len, req->path.base, req->path.len, h->admin, &m)) != 0) {
        if (rc == SK_EMETHOD_NOT_ALLOWED)
            h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ALLOW, NULL, m.allow, strlen(m.allow));
        reply_error(req, SK_A_COUNT_, rc, NULL);
        return 0;
    }
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
    if (a->rate && check_rate(srv, h, req, m.action, c->sreq.user, c->sreq.user_len)) {
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
    h2o_hostconf_t *hosts[2] = {srv->host_public, srv->host_admin};
    for (int i = 0; i < 2; i++) {
        h2o_pathconf_t *pc = h2o_config_register_path(hosts[i], "/", 0);
        handler_t *h = (handler_t *)h2o_create_handler(pc, sizeof(*h));
        h->super.on_req = on_req;
        h->srv = srv;
        h->admin = i == 1;
    }
}
