/* router.h: the route table of API.md as data: which (method, path) is which action, and which
 * actions are admin-only. Pure: no HTTP library types, so it is unit-tested directly. */
#ifndef SK_ROUTER_H
#define SK_ROUTER_H

#include <stddef.h>

typedef enum sk_action_e {
    SK_A_HEALTHZ,
    SK_A_METRICS,
    SK_A_SALE_LIST,
    SK_A_SALE_PUT,
    SK_A_SALE_GET,
    SK_A_TAKE,
    SK_A_ORDER_LIST,
    SK_A_ORDER_GET,
    SK_A_ORDER_CONFIRM,
    SK_A_ORDER_CANCEL,
    SK_A_DASHBOARD,    /* GET /: the dashboard page (admin listener, no token: it holds no data) */
    SK_A_EVENTS,       /* GET /v1/events: the dashboard's event stream (admin listener) */
    SK_A_ORDER_EXPORT, /* GET /v1/sales/{sale}/orders.csv: every order of a sale, streamed */
    SK_A_SALE_DELETE,  /* DELETE /v1/sales/{sale} */
    SK_A_OPENAPI,      /* GET /openapi.yaml: docs/openapi.yaml, embedded (admin listener) */
    SK_A_FEED,         /* GET /v1/orders: the winners feed (feed.c) */
    SK_A_COUNT_
} sk_action_t;

typedef struct sk_slice_s {
    const char *p;
    size_t len;
} sk_slice_t;

typedef struct sk_match_s {
    sk_action_t action;
    sk_slice_t sale;  /* the {sale} segment, unvalidated */
    sk_slice_t order; /* the {order} segment, unvalidated */
    sk_slice_t query; /* after '?', without it */
    const char *allow; /* for 405: the methods the path accepts, as an Allow header value */
} sk_match_t;

/* Matches a request. Returns 0 and fills *m, or SK_ENOT_FOUND (no such path on this listener:
 * admin-only paths are not found on the public listener), or SK_EMETHOD_NOT_ALLOWED with
 * m->allow set. `admin` is 1 on the admin listener. */
int sk_route(const char *method, size_t mlen, const char *path, size_t plen, int admin, sk_match_t *m);

/* 1 if the action needs the admin token. */
int sk_action_is_admin(sk_action_t a);
/* A stable short name for metrics labels. */
const char *sk_action_name(sk_action_t a);

#endif
