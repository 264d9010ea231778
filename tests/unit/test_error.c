/* test_error.c: the error table of src/error.h against API.md. The expected rows below are
 * written out by hand from API.md (not generated from SK_ERROR_MAP), so a row that drifts from
 * the contract, or a row added without a test, fails here. */
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "error.h"

typedef struct {
    int err;
    int status;
    const char *code;
} expect_t;

static const expect_t expected[] = {
    {SK_EBAD_REQUEST, 400, "bad_request"},
    {SK_EUNAUTHORIZED, 401, "unauthorized"},
    {SK_EFORBIDDEN, 403, "forbidden"},
    {SK_ENOT_STARTED, 403, "not_started"},
    {SK_EENDED, 403, "ended"},
    {SK_ENOT_FOUND, 404, "not_found"},
    {SK_ENO_SUCH_SALE, 404, "no_such_sale"},
    {SK_ENO_SUCH_ORDER, 404, "no_such_order"},
    {SK_EMETHOD_NOT_ALLOWED, 405, "method_not_allowed"},
    {SK_ESOLD_OUT, 409, "sold_out"},
    {SK_EUSER_LIMIT, 409, "user_limit"},
    {SK_EREQUEST_ID_REUSED, 409, "request_id_reused"},
    {SK_ESTOCK_BELOW_TAKEN, 409, "stock_below_taken"},
    {SK_EORDER_NOT_HELD, 409, "order_not_held"},
    {SK_ESALE_ACTIVE, 409, "sale_active"},
    {SK_ECURSOR_EXPIRED, 410, "cursor_expired"},
    {SK_EUNSUPPORTED_MEDIA_TYPE, 415, "unsupported_media_type"},
    {SK_EMISDIRECTED, 421, "misdirected_request"},
    {SK_EBODY_TOO_LARGE, 413, "body_too_large"},
    {SK_EHEAD_TOO_LARGE, 431, "head_too_large"},
    {SK_ERATE_LIMITED, 429, "rate_limited"},
    {SK_ETOO_MANY_SALES, 507, "too_many_sales"},
    {SK_EINTERNAL, 500, "internal"},
    {SK_EUNAVAILABLE, 503, "unavailable"},
};
#define NEXPECTED (sizeof(expected) / sizeof(expected[0]))

static void every_row_matches_api(void **state)
{
    (void)state;
    for (size_t i = 0; i < NEXPECTED; i++) {
        const expect_t *e = &expected[i];
        assert_true(e->err < 0);
        assert_int_equal(sk_err_status(e->err), e->status);
        assert_string_equal(sk_err_code(e->err), e->code);
        assert_non_null(sk_err_message(e->err));
        assert_true(strlen(sk_err_message(e->err)) > 0);
    }
}

/* Every row of the table is tested above: none was added without a test. */
static void table_size(void **state)
{
    (void)state;
    assert_int_equal(SK_ERR_COUNT, NEXPECTED);
    assert_int_equal(SK_ERR_COUNT, 24);
}

static void codes_are_distinct(void **state)
{
    (void)state;
    for (size_t i = 0; i < NEXPECTED; i++)
        for (size_t j = i + 1; j < NEXPECTED; j++) {
            assert_int_not_equal(expected[i].err, expected[j].err);
            assert_string_not_equal(sk_err_code(expected[i].err), sk_err_code(expected[j].err));
        }
}

/* API.md's order-outcome table, row by row. */
static void take_outcomes(void **state)
{
    (void)state;
    assert_int_equal(sk_err_status(SK_ESOLD_OUT), 409);
    assert_int_equal(sk_err_status(SK_EUSER_LIMIT), 409);
    assert_int_equal(sk_err_status(SK_ENOT_STARTED), 403);
    assert_int_equal(sk_err_status(SK_EENDED), 403);
    assert_int_equal(sk_err_status(SK_ENO_SUCH_SALE), 404);
    assert_int_equal(sk_err_status(SK_EBAD_REQUEST), 400);
    assert_int_equal(sk_err_status(SK_ERATE_LIMITED), 429);
    assert_int_equal(sk_err_status(SK_EUNAVAILABLE), 503);
}

static void messages(void **state)
{
    (void)state;
    assert_string_equal(sk_err_message(SK_ESOLD_OUT), "no units left");
    assert_string_equal(sk_err_message(SK_EINTERNAL), "internal error");
    assert_string_equal(sk_err_message(SK_EBAD_REQUEST), "the request is malformed");
}

static void assert_internal(int err)
{
    assert_int_equal(sk_err_status(err), 500);
    assert_string_equal(sk_err_code(err), "internal");
    assert_string_equal(sk_err_message(err), "internal error");
}

static void unknown_codes_are_internal(void **state)
{
    (void)state;
    assert_internal(SK_OK);
    assert_internal(1);
    assert_internal(-1);
    assert_internal(SK_ERR_FIRST_);
    assert_internal(SK_ERR_FIRST_ - 1);
    assert_internal(SK_ERR_END_);
    assert_internal(SK_ERR_END_ + 1);
    assert_internal(-1000);
    assert_internal(INT_MIN);
    assert_internal(INT_MAX);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_row_matches_api), cmocka_unit_test(table_size),
        cmocka_unit_test(codes_are_distinct),    cmocka_unit_test(take_outcomes),
        cmocka_unit_test(messages),              cmocka_unit_test(unknown_codes_are_internal),
    };
    return cmocka_run_group_tests_name("error", tests, NULL, NULL);
}
