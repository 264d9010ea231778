/* router.c: see router.h. Paths are split into at most five segments and matched against a
 * small table; no percent-decoding is done, since no valid identifier in a path needs it. */
#include "router.h"
#include <string.h>
#include "error.h"

typedef struct {
    const char *method;
    sk_action_t action;
    int admin;
} verb_t;

/* Path shapes: a literal segment, or '*' for a captured one. */
typedef struct {
    const char *segs[6]; /* NULL-terminated */
    const char *allow_admin;
    const char *allow_public;
    verb_t verbs[3];
} shape_t;

static const shape_t shapes[] = {
    {{"healthz", NULL}, "GET", "GET", {{"GET", SK_A_HEALTHZ, 0}}},
    {{"metrics", NULL}, "GET", NULL, {{"GET", SK_A_METRICS, 1}}},
    {{"v1", "sales", NULL}, "GET", NULL, {{"GET", SK_A_SALE_LIST, 1}}},
    {{"v1", "sales", "*", NULL},
     "GET, PUT, DELETE",
     "GET",
     {{"GET", SK_A_SALE_GET, 0}, {"PUT", SK_A_SALE_PUT, 1}, {"DELETE", SK_A_SALE_DELETE, 1}}},
    {{"v1", "sales", "*", "orders", NULL}, "GET, POST", "POST", {{"POST", SK_A_TAKE, 0}, {"GET", SK_A_ORDER_LIST, 1}}},
    {{"v1", "sales", "*", "orders.csv", NULL}, "GET", NULL, {{"GET", SK_A_ORDER_EXPORT, 1}}},
    {{"v1", "sales", "*", "orders", "*", NULL}, "GET", NULL, {{"GET", SK_A_ORDER_GET, 1}}},
    {{"v1", "sales", "*", "orders", "*", "confirm"}, "POST", NULL, {{"POST", SK_A_ORDER_CONFIRM, 1}}},
    {{"v1", "sales", "*", "orders", "*", "cancel"}, "POST", NULL, {{"POST", SK_A_ORDER_CANCEL, 1}}},
    /* the dashboard (dashboard.c): "/" is the shape with no segment at all */
    {{NULL}, "GET", NULL, {{"GET", SK_A_DASHBOARD, 1}}},
    {{"v1", "events", NULL}, "GET", NULL, {{"GET", SK_A_EVENTS, 1}}},
    {{"openapi.yaml", NULL}, "GET", NULL, {{"GET", SK_A_OPENAPI, 1}}},
    {{"v1", "orders", NULL}, "GET", NULL, {{"GET", SK_A_FEED, 1}}},
};

static const char *const names[SK_A_COUNT_] = {
    "healthz", "metrics", "sale_list", "sale_put", "sale_get",     "take",        "order_list", "order_get",
    "confirm", "cancel",  "dashboard", "events",   "order_export", "sale_delete", "openapi",    "feed"};

#define MAX_SEGS 6

/* Whether p[0..len) is exactly the literal `lit` (no strlen: this runs for every request). */
static int is_lit(const char *lit, const char *p, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (lit[i] != p[i] || lit[i] == '\0')
            return 0;
    return lit[len] == '\0';
}

int sk_route(const char *method, size_t mlen, const char *path, size_t plen, int admin, sk_match_t *m)
{
    sk_slice_t segs[MAX_SEGS];
    size_t nsegs = 0;
    const char *q = memchr(path, '?', plen);
    const char *end = q ? q : path + plen;

    memset(m, 0, sizeof(*m));
    if (q)
        m->query = (sk_slice_t){q + 1, (size_t)(path + plen - q - 1)};
    if (path == end || path[0] != '/')
        return SK_ENOT_FOUND;
    for (const char *p = path + 1; end != path + 1;) { /* "/" alone has no segment */
        const char *slash = memchr(p, '/', (size_t)(end - p));
        const char *se = slash ? slash : end;
        if (se == p || nsegs == MAX_SEGS)
            return SK_ENOT_FOUND; /* empty segment ("//", trailing '/') or too deep */
        segs[nsegs++] = (sk_slice_t){p, (size_t)(se - p)};
        if (!slash)
            break;
        p = slash + 1;
    }

    for (size_t i = 0; i < sizeof(shapes) / sizeof(shapes[0]); i++) {
        const shape_t *s = &shapes[i];
        sk_slice_t caps[2];
        size_t ncaps = 0, k;
        for (k = 0; k < nsegs && s->segs[k] != NULL; k++) {
            if (s->segs[k][0] == '*' && s->segs[k][1] == '\0')
                caps[ncaps++] = segs[k];
            else if (!is_lit(s->segs[k], segs[k].p, segs[k].len))
                break;
        }
        if (k != nsegs || (k < MAX_SEGS && s->segs[k] != NULL))
            continue;
        if (!admin && s->allow_public == NULL)
            return SK_ENOT_FOUND;
        if (ncaps > 0)
            m->sale = caps[0];
        if (ncaps > 1)
            m->order = caps[1];
        for (size_t v = 0; v < 3 && s->verbs[v].method != NULL; v++) {
            const verb_t *vb = &s->verbs[v];
            int same = is_lit(vb->method, method, mlen);
            if (!admin && vb->admin) {
                if (same)
                    return SK_ENOT_FOUND; /* an admin route does not exist on the public listener */
                continue;
            }
            if (same) {
                m->action = vb->action;
                return 0;
            }
            /* HEAD is served as GET by h2o's rules; we answer it like GET minus the body */
            if (is_lit("HEAD", method, mlen) && strcmp(vb->method, "GET") == 0) {
                m->action = vb->action;
                return 0;
            }
        }
        m->allow = admin ? s->allow_admin : s->allow_public;
        return SK_EMETHOD_NOT_ALLOWED;
    }
    return SK_ENOT_FOUND;
}

int sk_action_is_admin(sk_action_t a)
{
    switch (a) {
    case SK_A_HEALTHZ:
    case SK_A_SALE_GET:
    case SK_A_TAKE:
    case SK_A_DASHBOARD: /* the page itself: static, no data; what it fetches needs the token */
        return 0;
    default:
        return 1;
    }
}

const char *sk_action_name(sk_action_t a)
{
    return (unsigned)a < SK_A_COUNT_ ? names[a] : "unknown";
}
