/* store.c: what both stores share: opening by URL, answering on the caller's loop, and the
 * ownership of results. */
#include "store.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "redis_conn.h"
#include "util.h"

static int is_redis(const char *url)
{
    return strncmp(url, "redis://", 8) == 0 || strncmp(url, "redis-sentinel://", 17) == 0 ||
           strncmp(url, "unix://", 7) == 0 || strncmp(url, "redis-cluster://", 16) == 0;
}

void sk_store_url_redact(const char *url, char *out, size_t outlen)
{
    sk_url_redact(url, out, outlen); /* util.c: one way to hide a password, for every URL */
}

int sk_store_url_check(const char *url, char *err, size_t errlen)
{
    char shown[512];
    if (strncmp(url, "sqlite:", 7) == 0) {
        const char *path = url + 7;
        /* an order book must be a file: SQLite would take "" and ":memory:" for a temporary or an
         * in-memory database, which a restart loses */
        if (path[0] == '\0' || strcmp(path, ":memory:") == 0) {
            snprintf(err, errlen, "'%s': the order book must be a file path (sqlite:PATH)", url);
            return -1;
        }
        /* and SQLite (built with URI filenames, as Debian's is) would open another file than the
         * one the store locks and watches */
        if (strncmp(path, "file:", 5) == 0) {
            snprintf(err, errlen, "'%s': SQLite reads a path starting with file: as a URI (write ./%s)", url, path);
            return -1;
        }
        return 0;
    }
    if (is_redis(url)) {
        /* parsed now, so that a URL the store cannot open is a configuration error too */
        sk_redis_conf_t conf;
        int rc = sk_redis_conf_parse(&conf, url, err, errlen);
        sk_redis_conf_dispose(&conf);
        return rc;
    }
    sk_store_url_redact(url, shown, sizeof(shown));
    snprintf(err, errlen,
             "unsupported store url '%s' (use sqlite:PATH, redis://HOST:PORT, unix:///PATH, "
             "redis-sentinel://HOST[:PORT],...#MASTER or redis-cluster://HOST[:PORT],...)",
             shown);
    return -1;
}

sk_store_t *sk_store_open(const char *url, int threads, const sk_store_opts_t *opts, char *err, size_t errlen)
{
    if (sk_store_url_check(url, err, errlen) != 0)
        return NULL;
    if (strncmp(url, "sqlite:", 7) == 0)
        return sk_store_embed_open(url + 7, threads, err, errlen);
    return sk_store_redis_open(url, threads, opts, err, errlen);
}

int sk_store_submit(sk_store_worker_t *w, sk_store_req_t *req)
{
    req->now_ms = sk_now_ms();
    req->err = 0;
    req->worker = w;
    return w->store->ops->submit(w, req);
}

void sk_store_complete(sk_store_req_t *req)
{
    req->worker->env.post(req->worker->env.post_ctx, req);
}

void sk_order_dispose(sk_order_t *o)
{
    free(o->user);
    free(o->request_id);
    o->user = NULL;
    o->request_id = NULL;
}

void sk_order_copy(sk_order_t *dst, const sk_order_t *src)
{
    *dst = *src;
    dst->user = src->user ? sk_strndup(src->user, strlen(src->user)) : NULL;
    dst->request_id = src->request_id ? sk_strndup(src->request_id, strlen(src->request_id)) : NULL;
}

void sk_store_req_dispose(sk_store_req_t *req)
{
    sk_order_dispose(&req->order);
    for (size_t i = 0; i < req->norders; i++)
        sk_order_dispose(&req->orders[i]);
    free(req->orders);
    free(req->views);
    for (size_t i = 0; i < req->nevents; i++)
        sk_order_dispose(&req->events[i].order);
    free(req->events);
    req->events = NULL;
    req->orders = NULL;
    req->views = NULL;
    req->norders = req->nviews = req->nevents = 0;
}

uint64_t sk_feed_retain(void)
{
    const char *v = getenv("SECKILL_FEED_RETAIN"); /* for tests of the retention; undocumented */
    char *end;
    unsigned long long n = v != NULL ? strtoull(v, &end, 10) : 0;
    return v != NULL && *end == '\0' && n > 0 ? (uint64_t)n : SK_FEED_RETAIN_DEFAULT;
}
