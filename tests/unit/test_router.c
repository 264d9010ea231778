/* test_router.c: the route table (src/router.c) against API.md: every route on the admin and
 * the public listener, 404 for admin-only paths on the public listener, 405 with the exact Allow
 * value, and what trailing slashes, empty segments and query strings do. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "error.h"
#include "router.h"

enum { PUB = 0, ADM = 1 };

typedef struct {
    int admin;
    const char *method;
    const char *path;
    int rc;
    sk_action_t action; /* when rc == 0 */
    const char *sale;   /* NULL: no capture */
    const char *order;
    const char *query; /* NULL: no '?' at all */
    const char *allow; /* when rc == SK_EMETHOD_NOT_ALLOWED */
} route_t;

#define OK(adm, meth, path, act, sale, order, query) {adm, meth, path, 0, act, sale, order, query, NULL}
#define NF(adm, meth, path) {adm, meth, path, SK_ENOT_FOUND, 0, NULL, NULL, NULL, NULL}
#define NA(adm, meth, path, allow, sale, order) \
    {adm, meth, path, SK_EMETHOD_NOT_ALLOWED, 0, sale, order, NULL, allow}

static const route_t routes[] = {
    /* admin listener: every route of API.md */
    OK(ADM, "GET", "/healthz", SK_A_HEALTHZ, NULL, NULL, NULL),
    OK(ADM, "GET", "/metrics", SK_A_METRICS, NULL, NULL, NULL),
    OK(ADM, "GET", "/v1/sales", SK_A_SALE_LIST, NULL, NULL, NULL),
    OK(ADM, "PUT", "/v1/sales/s1", SK_A_SALE_PUT, "s1", NULL, NULL),
    OK(ADM, "GET", "/v1/sales/s1", SK_A_SALE_GET, "s1", NULL, NULL),
    OK(ADM, "POST", "/v1/sales/s1/orders", SK_A_TAKE, "s1", NULL, NULL),
    OK(ADM, "GET", "/v1/sales/s1/orders", SK_A_ORDER_LIST, "s1", NULL, NULL),
    OK(ADM, "GET", "/v1/sales/s1/orders/17", SK_A_ORDER_GET, "s1", "17", NULL),
    OK(ADM, "POST", "/v1/sales/s1/orders/17/confirm", SK_A_ORDER_CONFIRM, "s1", "17", NULL),
    OK(ADM, "POST", "/v1/sales/s1/orders/17/cancel", SK_A_ORDER_CANCEL, "s1", "17", NULL),
    /* the dashboard: its page at "/" and its event stream */
    OK(ADM, "GET", "/", SK_A_DASHBOARD, NULL, NULL, NULL),
    OK(ADM, "HEAD", "/", SK_A_DASHBOARD, NULL, NULL, NULL),
    OK(ADM, "GET", "/?x=1", SK_A_DASHBOARD, NULL, NULL, "x=1"),
    OK(ADM, "GET", "/v1/events", SK_A_EVENTS, NULL, NULL, NULL),
    OK(ADM, "GET", "/v1/events?token=a%20b", SK_A_EVENTS, NULL, NULL, "token=a%20b"),
    OK(ADM, "HEAD", "/v1/events", SK_A_EVENTS, NULL, NULL, NULL),
    OK(ADM, "GET", "/openapi.yaml", SK_A_OPENAPI, NULL, NULL, NULL),
    OK(ADM, "GET", "/v1/orders?after=0-0&wait=5", SK_A_FEED, NULL, NULL, "after=0-0&wait=5"),
    /* HEAD is answered as GET */
    OK(ADM, "HEAD", "/healthz", SK_A_HEALTHZ, NULL, NULL, NULL),
    OK(ADM, "HEAD", "/metrics", SK_A_METRICS, NULL, NULL, NULL),
    OK(ADM, "HEAD", "/v1/sales/s1", SK_A_SALE_GET, "s1", NULL, NULL),
    OK(ADM, "HEAD", "/v1/sales/s1/orders", SK_A_ORDER_LIST, "s1", NULL, NULL),
    /* the literal segment names are not sale ids: captures are positional */
    OK(ADM, "GET", "/v1/sales/orders", SK_A_SALE_GET, "orders", NULL, NULL),
    OK(ADM, "GET", "/v1/sales/sales/orders/orders", SK_A_ORDER_GET, "sales", "orders", NULL),
    OK(ADM, "POST", "/v1/sales/confirm/orders/cancel/confirm", SK_A_ORDER_CONFIRM, "confirm", "cancel", NULL),
    /* captures are not validated here (the handlers do it) */
    OK(ADM, "GET", "/v1/sales/a%2Fb", SK_A_SALE_GET, "a%2Fb", NULL, NULL),
    OK(ADM, "GET", "/v1/sales/s1/orders/abc", SK_A_ORDER_GET, "s1", "abc", NULL),
    OK(ADM, "GET", "/v1/sales/\xc3\xa9", SK_A_SALE_GET, "\xc3\xa9", NULL, NULL),

    /* admin listener: 405 with the methods the path accepts */
    NA(ADM, "POST", "/healthz", "GET", NULL, NULL),
    NA(ADM, "PUT", "/healthz", "GET", NULL, NULL),
    NA(ADM, "POST", "/metrics", "GET", NULL, NULL),
    NA(ADM, "POST", "/v1/sales", "GET", NULL, NULL),
    NA(ADM, "PUT", "/v1/sales", "GET", NULL, NULL),
    NA(ADM, "POST", "/v1/sales/s1", "GET, PUT, DELETE", "s1", NULL),
    OK(ADM, "DELETE", "/v1/sales/s1", SK_A_SALE_DELETE, "s1", NULL, NULL),
    NA(ADM, "PATCH", "/v1/sales/s1", "GET, PUT, DELETE", "s1", NULL),
    NA(ADM, "PUT", "/v1/sales/s1/orders", "GET, POST", "s1", NULL),
    NA(ADM, "DELETE", "/v1/sales/s1/orders", "GET, POST", "s1", NULL),
    NA(ADM, "POST", "/v1/sales/s1/orders/17", "GET", "s1", "17"),
    NA(ADM, "DELETE", "/v1/sales/s1/orders/17", "GET", "s1", "17"),
    NA(ADM, "GET", "/v1/sales/s1/orders/17/confirm", "POST", "s1", "17"),
    NA(ADM, "PUT", "/v1/sales/s1/orders/17/confirm", "POST", "s1", "17"),
    NA(ADM, "GET", "/v1/sales/s1/orders/17/cancel", "POST", "s1", "17"),
    NA(ADM, "HEAD", "/v1/sales/s1/orders/17/cancel", "POST", "s1", "17"),
    /* methods are case-sensitive and matched whole */
    NA(ADM, "get", "/healthz", "GET", NULL, NULL),
    NA(ADM, "GETS", "/healthz", "GET", NULL, NULL),
    NA(ADM, "GE", "/healthz", "GET", NULL, NULL),
    NA(ADM, "", "/healthz", "GET", NULL, NULL),
    NA(ADM, "OPTIONS", "/v1/sales/s1", "GET, PUT, DELETE", "s1", NULL),
    NA(ADM, "POST", "/", "GET", NULL, NULL),
    NA(ADM, "PUT", "/?x", "GET", NULL, NULL),
    NA(ADM, "POST", "/v1/events", "GET", NULL, NULL),
    NA(ADM, "PUT", "/openapi.yaml", "GET", NULL, NULL),

    /* public listener: the three public routes */
    OK(PUB, "GET", "/healthz", SK_A_HEALTHZ, NULL, NULL, NULL),
    OK(PUB, "GET", "/v1/sales/s1", SK_A_SALE_GET, "s1", NULL, NULL),
    OK(PUB, "POST", "/v1/sales/s1/orders", SK_A_TAKE, "s1", NULL, NULL),
    OK(PUB, "HEAD", "/healthz", SK_A_HEALTHZ, NULL, NULL, NULL),
    OK(PUB, "HEAD", "/v1/sales/s1", SK_A_SALE_GET, "s1", NULL, NULL),
    /* public listener: admin-only paths do not exist, whatever the method */
    NF(PUB, "GET", "/metrics"),
    NF(PUB, "POST", "/metrics"),
    NF(PUB, "GET", "/v1/sales"),
    NF(PUB, "PUT", "/v1/sales"),
    NF(PUB, "GET", "/v1/sales/s1/orders/17"),
    NF(PUB, "POST", "/v1/sales/s1/orders/17"),
    NF(PUB, "POST", "/v1/sales/s1/orders/17/confirm"),
    NF(PUB, "GET", "/v1/sales/s1/orders/17/confirm"),
    NF(PUB, "POST", "/v1/sales/s1/orders/17/cancel"),
    NF(PUB, "GET", "/?x=1"),
    NF(PUB, "HEAD", "/"),
    NF(PUB, "POST", "/"),
    NF(PUB, "GET", "/v1/events"),
    NF(PUB, "GET", "/openapi.yaml"),
    NF(PUB, "GET", "/v1/orders"),
    NF(ADM, "GET", "/openapi.yml"),
    NF(PUB, "GET", "/v1/events?token=t"),
    NF(PUB, "POST", "/v1/events"),
    /* public listener: an admin route (method + path) does not exist there (404, API.md); a
     * public path with an unknown method is 405, and Allow names only the public methods */
    NF(PUB, "PUT", "/v1/sales/s1"),
    NF(PUB, "DELETE", "/v1/sales/s1"),
    NA(PUB, "PATCH", "/v1/sales/s1", "GET", "s1", NULL),
    NF(PUB, "GET", "/v1/sales/s1/orders"),
    NA(PUB, "HEAD", "/v1/sales/s1/orders", "POST", "s1", NULL),
    NA(PUB, "PUT", "/v1/sales/s1/orders", "POST", "s1", NULL),
    NA(PUB, "POST", "/healthz", "GET", NULL, NULL),

    /* query strings are cut off and handed over without the '?' */
    OK(ADM, "GET", "/healthz?x=1", SK_A_HEALTHZ, NULL, NULL, "x=1"),
    OK(PUB, "GET", "/healthz?", SK_A_HEALTHZ, NULL, NULL, ""),
    OK(ADM, "GET", "/v1/sales?after=x", SK_A_SALE_LIST, NULL, NULL, "after=x"),
    OK(ADM, "GET", "/v1/sales/s1/orders?after=5&limit=10", SK_A_ORDER_LIST, "s1", NULL, "after=5&limit=10"),
    OK(PUB, "POST", "/v1/sales/s1/orders?x", SK_A_TAKE, "s1", NULL, "x"),
    OK(ADM, "GET", "/v1/sales/s1/orders/17?a/b", SK_A_ORDER_GET, "s1", "17", "a/b"),
    OK(ADM, "GET", "/healthz?a?b", SK_A_HEALTHZ, NULL, NULL, "a?b"),
    OK(ADM, "GET", "/healthz?/", SK_A_HEALTHZ, NULL, NULL, "/"),
    NF(ADM, "GET", "/healthz/?x=1"),
    NF(ADM, "GET", "?x=1"),
    NF(ADM, "GET", "//?x=1"),

    /* trailing slashes, empty segments, depth, case */
    NF(ADM, "GET", ""),
    NF(ADM, "GET", "//"),
    NF(ADM, "GET", "/v1/events/"),
    NF(ADM, "GET", "/v1/events/x"),
    NF(ADM, "GET", "/v1/event"),
    NF(ADM, "GET", "/index.html"),
    NF(ADM, "GET", "healthz"),
    NF(ADM, "GET", "/healthz/"),
    NF(ADM, "GET", "//healthz"),
    NF(ADM, "GET", "/healthz//"),
    NF(ADM, "GET", "/HEALTHZ"),
    NF(ADM, "GET", "/healthz/x"),
    NF(ADM, "GET", "/metrics/"),
    NF(ADM, "GET", "/v1"),
    NF(ADM, "GET", "/v1/"),
    NF(ADM, "GET", "/v1/sales/"),
    NF(ADM, "GET", "/v1//sales"),
    NF(ADM, "GET", "//v1/sales"),
    NF(ADM, "GET", "/V1/sales"),
    NF(ADM, "GET", "/v2/sales"),
    NF(ADM, "GET", "/v1/Sales"),
    NF(ADM, "GET", "/v1/sales//orders"),
    NF(ADM, "GET", "/v1/sales/s1/"),
    NF(ADM, "POST", "/v1/sales/s1/orders/"),
    NF(ADM, "GET", "/v1/sales/s1/orders//confirm"),
    NF(ADM, "GET", "/v1/sales/s1/orders/17/"),
    NF(ADM, "POST", "/v1/sales/s1/orders/17/confirm/"),
    NF(ADM, "POST", "/v1/sales/s1/orders/17/refund"),
    NF(ADM, "POST", "/v1/sales/s1/orders/17/confirm/x"),
    NF(ADM, "POST", "/v1/sales/s1/orders/17/confirm/x/y"),
    NF(ADM, "GET", "/v1/sales/s1/order"),
    NF(ADM, "GET", "/v1/sales/s1/Orders"),
    NF(ADM, "GET", "/a/b/c/d/e/f"),
    NF(ADM, "GET", "/a/b/c/d/e/f/g"),
    NF(ADM, "GET", "/v1/sales/s1/orders/17/confirm/a/b/c/d/e/f/g/h"),
    NF(PUB, "GET", "/"),
    NF(PUB, "GET", "/healthz/"),
    NF(PUB, "GET", "//healthz"),
    NF(PUB, "GET", "/v1/sales/"),
    NF(PUB, "GET", "/v1/sales/s1/"),
    NF(PUB, "POST", "/v1/sales/s1/orders/"),
    NF(PUB, "POST", "/v1/sales//orders"),
    NF(ADM, "GET", "/unknown"),
    NF(PUB, "GET", "/unknown"),
};

static void slice_is(const char *what, const route_t *r, sk_slice_t got, const char *want)
{
    if (want == NULL) {
        if (got.p != NULL || got.len != 0)
            fail_msg("%s %s (%s): %s is <%.*s>, want none", r->method, r->path, r->admin ? "admin" : "public", what,
                     (int)got.len, got.p);
        return;
    }
    if (got.p == NULL || got.len != strlen(want) || memcmp(got.p, want, got.len) != 0)
        fail_msg("%s %s (%s): %s is <%.*s>, want <%s>", r->method, r->path, r->admin ? "admin" : "public", what,
                 (int)got.len, got.p ? got.p : "(null)", want);
}

static void route_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
        const route_t *r = &routes[i];
        sk_match_t m;
        int rc;
        memset(&m, 0xa5, sizeof(m)); /* sk_route must set every field */
        rc = sk_route(r->method, strlen(r->method), r->path, strlen(r->path), r->admin, &m);
        if (rc != r->rc)
            fail_msg("%s %s (%s): rc %d, want %d", r->method, r->path, r->admin ? "admin" : "public", rc, r->rc);
        if (rc == 0 && m.action != r->action)
            fail_msg("%s %s (%s): action %s, want %s", r->method, r->path, r->admin ? "admin" : "public",
                     sk_action_name(m.action), sk_action_name(r->action));
        if (rc == SK_ENOT_FOUND)
            continue;
        slice_is("sale", r, m.sale, r->sale);
        slice_is("order", r, m.order, r->order);
        if (rc == 0)
            slice_is("query", r, m.query, r->query);
        if (rc == SK_EMETHOD_NOT_ALLOWED) {
            if (m.allow == NULL || strcmp(m.allow, r->allow) != 0)
                fail_msg("%s %s (%s): Allow <%s>, want <%s>", r->method, r->path, r->admin ? "admin" : "public",
                         m.allow ? m.allow : "(null)", r->allow);
        } else if (m.allow != NULL) {
            fail_msg("%s %s: allow set on a match", r->method, r->path);
        }
    }
}

/* The captured slices point into the caller's path buffer. */
static void slices_point_into_path(void **state)
{
    const char *path = "/v1/sales/s1/orders/17?limit=5";
    sk_match_t m;
    (void)state;
    assert_int_equal(sk_route("GET", 3, path, strlen(path), 1, &m), 0);
    assert_ptr_equal(m.sale.p, path + 10);
    assert_int_equal(m.sale.len, 2);
    assert_ptr_equal(m.order.p, path + 20);
    assert_int_equal(m.order.len, 2);
    assert_ptr_equal(m.query.p, path + 23);
    assert_int_equal(m.query.len, 7);
}

/* Only plen bytes of the path and mlen bytes of the method are read. */
static void lengths_are_honoured(void **state)
{
    sk_match_t m;
    (void)state;
    assert_int_equal(sk_route("GETX", 3, "/healthzzz", 8, 1, &m), 0);
    assert_int_equal(m.action, SK_A_HEALTHZ);
    assert_int_equal(sk_route("GET", 3, "/v1/sales/s1/orders", 12, 1, &m), 0);
    assert_int_equal(m.action, SK_A_SALE_GET);
    assert_int_equal(m.sale.len, 2);
    assert_int_equal(sk_route("GET", 3, "/healthz?x=1", 8, 1, &m), 0);
    assert_null(m.query.p);
    assert_int_equal(m.query.len, 0);
}

/* Whatever matches on the public listener is a public action, and never the dashboard. */
static void public_never_routes_admin_actions(void **state)
{
    static const char *const methods[] = {"GET", "HEAD", "POST", "PUT", "DELETE"};
    static const char *const paths[] = {
        "/healthz", "/metrics", "/v1/sales", "/v1/sales/s1", "/v1/sales/s1/orders", "/v1/sales/s1/orders/1",
        "/v1/sales/s1/orders/1/confirm", "/v1/sales/s1/orders/1/cancel", "/", "/v1/events",
    };
    (void)state;
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++)
        for (size_t j = 0; j < sizeof(paths) / sizeof(paths[0]); j++) {
            sk_match_t m;
            int rc = sk_route(methods[i], strlen(methods[i]), paths[j], strlen(paths[j]), 0, &m);
            assert_true(rc == 0 || rc == SK_ENOT_FOUND || rc == SK_EMETHOD_NOT_ALLOWED);
            if (rc == 0 && (sk_action_is_admin(m.action) || m.action == SK_A_DASHBOARD))
                fail_msg("public %s %s routed to admin action %s", methods[i], paths[j], sk_action_name(m.action));
        }
}

static void action_admin_flags(void **state)
{
    (void)state;
    assert_int_equal(sk_action_is_admin(SK_A_HEALTHZ), 0);
    assert_int_equal(sk_action_is_admin(SK_A_SALE_GET), 0);
    assert_int_equal(sk_action_is_admin(SK_A_TAKE), 0);
    assert_int_equal(sk_action_is_admin(SK_A_METRICS), 1);
    assert_int_equal(sk_action_is_admin(SK_A_SALE_LIST), 1);
    assert_int_equal(sk_action_is_admin(SK_A_SALE_PUT), 1);
    assert_int_equal(sk_action_is_admin(SK_A_ORDER_LIST), 1);
    assert_int_equal(sk_action_is_admin(SK_A_ORDER_GET), 1);
    assert_int_equal(sk_action_is_admin(SK_A_ORDER_CONFIRM), 1);
    assert_int_equal(sk_action_is_admin(SK_A_ORDER_CANCEL), 1);
    assert_int_equal(sk_action_is_admin(SK_A_DASHBOARD), 0); /* the page holds no data */
    assert_int_equal(sk_action_is_admin(SK_A_EVENTS), 1);
    assert_int_equal(sk_action_is_admin(SK_A_ORDER_EXPORT), 1);
    assert_int_equal(sk_action_is_admin(SK_A_SALE_DELETE), 1);
}

static void action_names(void **state)
{
    (void)state;
    assert_string_equal(sk_action_name(SK_A_HEALTHZ), "healthz");
    assert_string_equal(sk_action_name(SK_A_METRICS), "metrics");
    assert_string_equal(sk_action_name(SK_A_SALE_LIST), "sale_list");
    assert_string_equal(sk_action_name(SK_A_SALE_PUT), "sale_put");
    assert_string_equal(sk_action_name(SK_A_SALE_GET), "sale_get");
    assert_string_equal(sk_action_name(SK_A_TAKE), "take");
    assert_string_equal(sk_action_name(SK_A_ORDER_LIST), "order_list");
    assert_string_equal(sk_action_name(SK_A_ORDER_GET), "order_get");
    assert_string_equal(sk_action_name(SK_A_ORDER_CONFIRM), "confirm");
    assert_string_equal(sk_action_name(SK_A_ORDER_CANCEL), "cancel");
    assert_string_equal(sk_action_name(SK_A_DASHBOARD), "dashboard");
    assert_string_equal(sk_action_name(SK_A_EVENTS), "events");
    assert_string_equal(sk_action_name(SK_A_OPENAPI), "openapi");
    assert_string_equal(sk_action_name(SK_A_COUNT_), "unknown");
    assert_string_equal(sk_action_name((sk_action_t)-1), "unknown");
    assert_int_equal(SK_A_COUNT_, 16);
    assert_string_equal(sk_action_name(SK_A_FEED), "feed");
    assert_string_equal(sk_action_name(SK_A_OPENAPI), "openapi");
    assert_string_equal(sk_action_name(SK_A_SALE_DELETE), "sale_delete");
    assert_string_equal(sk_action_name(SK_A_ORDER_EXPORT), "order_export");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(route_table),
        cmocka_unit_test(slices_point_into_path),
        cmocka_unit_test(lengths_are_honoured),
        cmocka_unit_test(public_never_routes_admin_actions),
        cmocka_unit_test(action_admin_flags),
        cmocka_unit_test(action_names),
    };
    return cmocka_run_group_tests_name("router", tests, NULL, NULL);
}
