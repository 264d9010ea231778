/* test_render.c: the hand-written order and sale bodies parse with jansson to exactly the
 * values they were made from, whatever bytes the identifiers hold. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>
#include <jansson.h>
#include "render.h"

static json_t *parse(const char *buf, size_t len)
{
    json_error_t e;
    json_t *j = json_loadb(buf, len, 0, &e);
    if (j == NULL)
        fail_msg("not JSON (%s): %.*s", e.text, (int)len, buf);
    return j;
}

static void order_roundtrip(void **state)
{
    (void)state;
    char buf[SK_RENDER_MAX];
    char user[129];
    memset(user, 0, sizeof(user));
    /* every awkward byte: quotes, backslashes, controls, DEL and multi-byte UTF-8 */
    strcpy(user, "a\"b\\c\x01\x1f\x7f/\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80");
    sk_order_t o = {.id = 17, .qty = 3, .status = SK_ORDER_HELD, .created_at = 1764000000,
                    .expires_at = 1764000060, .user = user, .request_id = "r-1"};
    strcpy(o.sale, "s1.x_y-z");
    size_t n = sk_render_order(buf, &o, 1764000001);
    json_t *j = parse(buf, n);
    assert_string_equal(json_string_value(json_object_get(j, "sale")), "s1.x_y-z");
    assert_string_equal(json_string_value(json_object_get(j, "order")), "17");
    assert_string_equal(json_string_value(json_object_get(j, "user")), user);
    assert_int_equal(json_integer_value(json_object_get(j, "qty")), 3);
    assert_string_equal(json_string_value(json_object_get(j, "status")), "held");
    assert_string_equal(json_string_value(json_object_get(j, "request_id")), "r-1");
    assert_int_equal(json_integer_value(json_object_get(j, "created_at")), 1764000000);
    assert_int_equal(json_integer_value(json_object_get(j, "expires_at")), 1764000060);
    assert_int_equal(json_object_size(j), 8);
    json_decref(j);
    /* past its deadline a held order shows expired; nulls for an anonymous final order */
    n = sk_render_order(buf, &o, 1764000060);
    j = parse(buf, n);
    assert_string_equal(json_string_value(json_object_get(j, "status")), "expired");
    json_decref(j);
    o.user = NULL;
    o.request_id = NULL;
    o.status = SK_ORDER_CONFIRMED;
    o.expires_at = SK_NO_TIME;
    n = sk_render_order(buf, &o, 0);
    assert_int_equal(n, strlen("{\"sale\":\"s1.x_y-z\",\"order\":\"17\",\"user\":null,\"qty\":3,"
                               "\"status\":\"confirmed\",\"request_id\":null,\"created_at\":1764000000,"
                               "\"expires_at\":null}"));
    assert_memory_equal(buf,
                        "{\"sale\":\"s1.x_y-z\",\"order\":\"17\",\"user\":null,\"qty\":3,\"status\":\"confirmed\","
                        "\"request_id\":null,\"created_at\":1764000000,\"expires_at\":null}",
                        n);
}

static void longest_identifiers_fit(void **state)
{
    (void)state;
    char buf[SK_RENDER_MAX], ctl[129];
    memset(ctl, 0x01, 128); /* each escapes to \u0001: the longest possible rendering */
    ctl[128] = '\0';
    sk_order_t o = {.id = UINT64_C(9223372036854775807), .qty = INT64_C(9007199254740992),
                    .status = SK_ORDER_CONFIRMED, .created_at = 253402300799, .expires_at = SK_NO_TIME,
                    .user = ctl, .request_id = ctl};
    memset(o.sale, 'S', 64);
    o.sale[64] = '\0';
    size_t n = sk_render_order(buf, &o, 0);
    json_t *j = parse(buf, n);
    assert_string_equal(json_string_value(json_object_get(j, "user")), ctl);
    assert_string_equal(json_string_value(json_object_get(j, "request_id")), ctl);
    assert_string_equal(json_string_value(json_object_get(j, "order")), "9223372036854775807");
    json_decref(j);
}

static void sale_roundtrip(void **state)
{
    (void)state;
    char buf[SK_RENDER_MAX];
    sk_sale_view_t v = {.conf = {100, 1, 0, SK_NO_TIME, 2000, SK_NO_TIME}, .sold = 60, .held = 3};
    strcpy(v.id, "s1");
    size_t n = sk_render_sale(buf, &v, 1000);
    assert_memory_equal(
        buf,
        "{\"sale\":\"s1\",\"stock\":100,\"sold\":60,\"held\":3,\"remaining\":37,\"per_user_limit\":1,"
        "\"hold_seconds\":0,\"starts_at\":null,\"ends_at\":2000,\"retain_seconds\":null,\"state\":\"open\"}",
        n);
    n = sk_render_sale(buf, &v, 2000);
    json_t *j = parse(buf, n);
    assert_string_equal(json_string_value(json_object_get(j, "state")), "ended");
    assert_int_equal(json_object_size(j), 11);
    json_decref(j);
}

/* the integers at their limits, written exactly (no stdio behind them any more) */
static void numbers_exact(void **state)
{
    (void)state;
    char buf[SK_RENDER_MAX];
    sk_sale_view_t v = {.conf = {INT64_C(9007199254740992), INT64_C(9007199254740992), 31536000, 0,
                                 INT64_C(253402300799), SK_RETAIN_MAX},
                        .sold = INT64_C(9007199254740992),
                        .held = 0};
    strcpy(v.id, "m");
    size_t n = sk_render_sale(buf, &v, 1);
    const char *want = "{\"sale\":\"m\",\"stock\":9007199254740992,\"sold\":9007199254740992,\"held\":0,"
                       "\"remaining\":0,\"per_user_limit\":9007199254740992,\"hold_seconds\":31536000,"
                       "\"starts_at\":0,\"ends_at\":253402300799,\"retain_seconds\":315360000,\"state\":\"sold_out\"}";
    assert_int_equal(n, strlen(want));
    assert_memory_equal(buf, want, n);
    sk_order_t o = {.id = 1, .qty = 1, .status = SK_ORDER_CONFIRMED, .created_at = 0, .expires_at = 9,
                    .user = "u", .request_id = NULL};
    strcpy(o.sale, "m");
    n = sk_render_order(buf, &o, 0);
    want = "{\"sale\":\"m\",\"order\":\"1\",\"user\":\"u\",\"qty\":1,\"status\":\"confirmed\",\"request_id\":null,"
           "\"created_at\":0,\"expires_at\":9}";
    assert_int_equal(n, strlen(want));
    assert_memory_equal(buf, want, n);
    o.id = UINT64_C(18446744073709551615); /* past any real id: still digits */
    n = sk_render_order(buf, &o, 0);
    assert_non_null(memmem(buf, n, "\"order\":\"18446744073709551615\"", 30));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(order_roundtrip),
        cmocka_unit_test(longest_identifiers_fit),
        cmocka_unit_test(sale_roundtrip),
        cmocka_unit_test(numbers_exact),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
