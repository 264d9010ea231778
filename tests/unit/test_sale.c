/* test_sale.c: the rules of a sale (src/sale.c) with exact values: the window, the per-user
 * limit and stock arithmetic up to 2^53, restock, remaining, states, expiry rounding and the
 * order transition table of API.md. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "error.h"
#include "sale.h"

#define MAXU SK_MAX_UNITS /* 2^53 */
#define NT SK_NO_TIME

static sk_sale_conf_t conf(int64_t stock, int64_t limit, int64_t hold, int64_t starts, int64_t ends)
{
    sk_sale_conf_t c = {stock, limit, hold, starts, ends, SK_NO_TIME};
    return c;
}

static sk_sale_view_t view(int64_t stock, int64_t sold, int64_t held, int64_t starts, int64_t ends)
{
    sk_sale_view_t v;
    memset(&v, 0, sizeof(v));
    strcpy(v.id, "s1");
    v.conf = conf(stock, 0, 0, starts, ends);
    v.sold = sold;
    v.held = held;
    return v;
}

static void constants(void **state)
{
    (void)state;
    assert_true(SK_MAX_UNITS == INT64_C(9007199254740992));
    assert_true(SK_NO_TIME == INT64_MIN);
    assert_int_equal(SK_SALE_ID_MAX, 64);
    assert_int_equal(SK_IDENT_MAX, 128);
    /* status values may be persisted: pin them */
    assert_int_equal(SK_ORDER_HELD, 1);
    assert_int_equal(SK_ORDER_CONFIRMED, 2);
    assert_int_equal(SK_ORDER_CANCELLED, 3);
    assert_int_equal(SK_ORDER_EXPIRED, 4);
}

/* ---- sk_sale_conf_check ---- */

static int check(sk_sale_conf_t c, const char **why)
{
    *why = NULL;
    return sk_sale_conf_check(&c, why);
}

static void conf_defaults_ok(void **state)
{
    const char *why;
    (void)state;
    assert_int_equal(check(conf(0, 0, 0, NT, NT), &why), 0);
    assert_null(why);
    assert_int_equal(check(conf(100, 1, 0, NT, NT), &why), 0);
}

static void conf_stock_range(void **state)
{
    const char *why;
    (void)state;
    assert_int_equal(check(conf(-1, 0, 0, NT, NT), &why), SK_EBAD_REQUEST);
    assert_string_equal(why, "stock must be an integer from 0 to 2^53");
    assert_int_equal(check(conf(INT64_MIN, 0, 0, NT, NT), &why), SK_EBAD_REQUEST);
    assert_int_equal(check(conf(0, 0, 0, NT, NT), &why), 0);
    assert_int_equal(check(conf(MAXU, 0, 0, NT, NT), &why), 0);
    assert_int_equal(check(conf(MAXU + 1, 0, 0, NT, NT), &why), SK_EBAD_REQUEST);
    assert_int_equal(check(conf(INT64_MAX, 0, 0, NT, NT), &why), SK_EBAD_REQUEST);
}

static void conf_limit_range(void **state)
{
    const char *why;
    (void)state;
    assert_int_equal(check(conf(1, -1, 0, NT, NT), &why), SK_EBAD_REQUEST);
    assert_string_equal(why, "per_user_limit must be an integer from 0 to 2^53");
    assert_int_equal(check(conf(1, 0, 0, NT, NT), &why), 0);
    assert_int_equal(check(conf(1, MAXU, 0, NT, NT), &why), 0);
    assert_int_equal(check(conf(1, MAXU + 1, 0, NT, NT), &why), SK_EBAD_REQUEST);
    assert_int_equal(check(conf(1, INT64_MAX, 0, NT, NT), &why), SK_EBAD_REQUEST);
}

static void conf_hold_range(void **state)
{
    const char *why;
    (void)state;
    assert_int_equal(check(conf(1, 0, -1, NT, NT), &why), SK_EBAD_REQUEST);
    assert_string_equal(why, "hold_seconds must be an integer from 0 to 31536000");
    assert_int_equal(check(conf(1, 0, 1, NT, NT), &why), 0);
    assert_int_equal(check(conf(1, 0, 31536000, NT, NT), &why), 0);
    assert_int_equal(check(conf(1, 0, 31536001, NT, NT), &why), SK_EBAD_REQUEST);
}

static void conf_times(void **state)
{
    const char *why;
    (void)state;
    assert_int_equal(check(conf(1, 0, 0, -1, NT), &why), SK_EBAD_REQUEST);
    assert_string_equal(why, "starts_at and ends_at must be null or non-negative integers");
    assert_int_equal(check(conf(1, 0, 0, NT, -1), &why), SK_EBAD_REQUEST);
    assert_int_equal(check(conf(1, 0, 0, 0, NT), &why), 0);
    assert_int_equal(check(conf(1, 0, 0, NT, 0), &why), 0);
    assert_int_equal(check(conf(1, 0, 0, 100, NT), &why), 0);
    assert_int_equal(check(conf(1, 0, 0, NT, 100), &why), 0);
    /* ends_at <= starts_at is refused, by exactly one second */
    assert_int_equal(check(conf(1, 0, 0, 100, 100), &why), SK_EBAD_REQUEST);
    assert_string_equal(why, "ends_at must be after starts_at");
    assert_int_equal(check(conf(1, 0, 0, 100, 99), &why), SK_EBAD_REQUEST);
    assert_int_equal(check(conf(1, 0, 0, 100, 0), &why), SK_EBAD_REQUEST);
    assert_int_equal(check(conf(1, 0, 0, 100, 101), &why), 0);
    assert_int_equal(check(conf(1, 0, 0, 0, 1), &why), 0);
    assert_int_equal(check(conf(1, 0, 0, 0, 0), &why), SK_EBAD_REQUEST);
}

/* ---- sk_sale_retain_due: retain_seconds after ends_at, nothing held ---- */

static void retain_due(void **state)
{
    (void)state;
    sk_sale_conf_t c = conf(1, 0, 0, NT, 100);
    const char *why;
    assert_int_equal(sk_sale_retain_due(&c, 0, 1000000), 0); /* no retain_seconds: kept */
    c.retain_seconds = 0;
    assert_int_equal(sk_sale_conf_check(&c, &why), 0);
    assert_int_equal(sk_sale_retain_due(&c, 0, 99), 0);
    assert_int_equal(sk_sale_retain_due(&c, 0, 100), 1);
    assert_int_equal(sk_sale_retain_due(&c, 1, 100), 0); /* still holds */
    c.retain_seconds = 60;
    assert_int_equal(sk_sale_retain_due(&c, 0, 159), 0);
    assert_int_equal(sk_sale_retain_due(&c, 0, 160), 1);
    c.ends_at = NT;
    assert_int_equal(sk_sale_retain_due(&c, 0, 1000000), 0); /* never ends */
    c.retain_seconds = SK_RETAIN_MAX + 1;
    assert_int_equal(sk_sale_conf_check(&c, &why), SK_EBAD_REQUEST);
    assert_string_equal(why, "retain_seconds must be null or an integer from 0 to 315360000");
    c.retain_seconds = -1;
    assert_int_equal(sk_sale_conf_check(&c, &why), SK_EBAD_REQUEST);
}

/* ---- sk_sale_window: starts_at inclusive, ends_at exclusive ---- */

static void window_bounds(void **state)
{
    sk_sale_conf_t c = conf(10, 0, 0, 100, 200);
    (void)state;
    assert_int_equal(sk_sale_window(&c, INT64_MIN + 1), SK_ENOT_STARTED);
    assert_int_equal(sk_sale_window(&c, 0), SK_ENOT_STARTED);
    assert_int_equal(sk_sale_window(&c, 99), SK_ENOT_STARTED);
    assert_int_equal(sk_sale_window(&c, 100), 0);
    assert_int_equal(sk_sale_window(&c, 101), 0);
    assert_int_equal(sk_sale_window(&c, 199), 0);
    assert_int_equal(sk_sale_window(&c, 200), SK_EENDED);
    assert_int_equal(sk_sale_window(&c, 201), SK_EENDED);
    assert_int_equal(sk_sale_window(&c, INT64_MAX), SK_EENDED);
}

static void window_open_ended(void **state)
{
    sk_sale_conf_t none = conf(10, 0, 0, NT, NT);
    sk_sale_conf_t from = conf(10, 0, 0, 100, NT);
    sk_sale_conf_t until = conf(10, 0, 0, NT, 200);
    (void)state;
    assert_int_equal(sk_sale_window(&none, 0), 0);
    assert_int_equal(sk_sale_window(&none, INT64_MIN + 1), 0);
    assert_int_equal(sk_sale_window(&none, INT64_MAX), 0);
    assert_int_equal(sk_sale_window(&from, 99), SK_ENOT_STARTED);
    assert_int_equal(sk_sale_window(&from, 100), 0);
    assert_int_equal(sk_sale_window(&from, INT64_MAX), 0);
    assert_int_equal(sk_sale_window(&until, 0), 0);
    assert_int_equal(sk_sale_window(&until, 199), 0);
    assert_int_equal(sk_sale_window(&until, 200), SK_EENDED);
}

/* A window of one second: open at exactly starts_at only. */
static void window_one_second(void **state)
{
    sk_sale_conf_t c = conf(10, 0, 0, 1764000000, 1764000001);
    (void)state;
    assert_int_equal(sk_sale_window(&c, 1763999999), SK_ENOT_STARTED);
    assert_int_equal(sk_sale_window(&c, 1764000000), 0);
    assert_int_equal(sk_sale_window(&c, 1764000001), SK_EENDED);
}

/* ---- sk_sale_check_take ---- */

static void take_qty_range(void **state)
{
    sk_sale_conf_t c = conf(10, 0, 0, NT, NT);
    const char *why = NULL;
    (void)state;
    assert_int_equal(sk_sale_check_take(&c, 0, 0, &why), SK_EBAD_REQUEST);
    assert_string_equal(why, "qty must be an integer from 1 to 2^53");
    assert_int_equal(sk_sale_check_take(&c, 0, -1, &why), SK_EBAD_REQUEST);
    assert_int_equal(sk_sale_check_take(&c, 0, INT64_MIN, &why), SK_EBAD_REQUEST);
    assert_int_equal(sk_sale_check_take(&c, 0, 1, &why), 0);
    assert_int_equal(sk_sale_check_take(&c, 0, MAXU, &why), 0);
    assert_int_equal(sk_sale_check_take(&c, 0, MAXU + 1, &why), SK_EBAD_REQUEST);
    assert_int_equal(sk_sale_check_take(&c, 0, INT64_MAX, &why), SK_EBAD_REQUEST);
}

static void take_user_required_with_limit(void **state)
{
    sk_sale_conf_t nolimit = conf(10, 0, 0, NT, NT);
    sk_sale_conf_t limit = conf(10, 1, 0, NT, NT);
    const char *why = NULL;
    (void)state;
    assert_int_equal(sk_sale_check_take(&nolimit, 0, 1, &why), 0); /* anonymous storm */
    assert_int_equal(sk_sale_check_take(&nolimit, 1, 1, &why), 0);
    assert_int_equal(sk_sale_check_take(&limit, 1, 1, &why), 0);
    assert_int_equal(sk_sale_check_take(&limit, 0, 1, &why), SK_EBAD_REQUEST);
    assert_string_equal(why, "user is required: this sale has a per-user limit");
    /* qty is checked first */
    assert_int_equal(sk_sale_check_take(&limit, 0, 0, &why), SK_EBAD_REQUEST);
    assert_string_equal(why, "qty must be an integer from 1 to 2^53");
}

/* The Redis store's sold-out cache answers as the full rules would: a missing user where a limit
 * is set is still a 400, everything else sold_out. */
static void soldout_answer(void **state)
{
    (void)state;
    assert_int_equal(sk_sale_soldout_answer(0, 0, 1), SK_ESOLD_OUT);
    assert_int_equal(sk_sale_soldout_answer(0, 1, 5), SK_ESOLD_OUT);
    assert_int_equal(sk_sale_soldout_answer(1, 1, 1), SK_ESOLD_OUT);
    assert_int_equal(sk_sale_soldout_answer(1, 1, 2), SK_ESOLD_OUT); /* sold out wins over user_limit */
    assert_int_equal(sk_sale_soldout_answer(1, 0, 1), SK_EBAD_REQUEST);
    assert_int_equal(sk_sale_soldout_answer(0, 0, 0), SK_EBAD_REQUEST);
}

/* ---- sk_sale_check_user ---- */

static void user_limit_small(void **state)
{
    (void)state;
    assert_int_equal(sk_sale_check_user(1, 0, 1), 0);
    assert_int_equal(sk_sale_check_user(1, 1, 1), SK_EUSER_LIMIT);
    assert_int_equal(sk_sale_check_user(1, 0, 2), SK_EUSER_LIMIT);
    assert_int_equal(sk_sale_check_user(5, 3, 2), 0);
    assert_int_equal(sk_sale_check_user(5, 3, 3), SK_EUSER_LIMIT);
    assert_int_equal(sk_sale_check_user(5, 4, 1), 0);
    assert_int_equal(sk_sale_check_user(5, 5, 1), SK_EUSER_LIMIT);
    assert_int_equal(sk_sale_check_user(5, 0, 5), 0);
    assert_int_equal(sk_sale_check_user(5, 0, 6), SK_EUSER_LIMIT);
}

static void user_no_limit(void **state)
{
    (void)state;
    assert_int_equal(sk_sale_check_user(0, 0, 1), 0);
    assert_int_equal(sk_sale_check_user(0, 1000000, 1), 0);
    assert_int_equal(sk_sale_check_user(0, MAXU, MAXU), 0);
    assert_int_equal(sk_sale_check_user(0, INT64_MAX, INT64_MAX), 0);
}

/* taken + qty must not be computed (it could overflow): near 2^53 and past it */
static void user_limit_near_2_53(void **state)
{
    (void)state;
    assert_int_equal(sk_sale_check_user(MAXU, 0, MAXU), 0);
    assert_int_equal(sk_sale_check_user(MAXU, 1, MAXU), SK_EUSER_LIMIT);
    assert_int_equal(sk_sale_check_user(MAXU, MAXU - 1, 1), 0);
    assert_int_equal(sk_sale_check_user(MAXU, MAXU, 1), SK_EUSER_LIMIT);
    assert_int_equal(sk_sale_check_user(MAXU, MAXU, MAXU), SK_EUSER_LIMIT);
    assert_int_equal(sk_sale_check_user(MAXU, 0, MAXU + 1), SK_EUSER_LIMIT);
    assert_int_equal(sk_sale_check_user(MAXU, MAXU / 2, MAXU / 2), 0);
    assert_int_equal(sk_sale_check_user(MAXU, MAXU / 2, MAXU / 2 + 1), SK_EUSER_LIMIT);
    assert_int_equal(sk_sale_check_user(MAXU - 1, MAXU - 1, 1), SK_EUSER_LIMIT);
    /* out-of-contract extremes still answer without overflow */
    assert_int_equal(sk_sale_check_user(1, 0, INT64_MAX), SK_EUSER_LIMIT);
    assert_int_equal(sk_sale_check_user(INT64_MAX, INT64_MAX, 1), SK_EUSER_LIMIT);
    assert_int_equal(sk_sale_check_user(INT64_MAX, INT64_MAX - 1, 1), 0);
    assert_int_equal(sk_sale_check_user(INT64_MAX, 0, INT64_MAX), 0);
    assert_int_equal(sk_sale_check_user(INT64_MAX, 1, INT64_MAX), SK_EUSER_LIMIT);
}

/* ---- sk_sale_check_stock ---- */

static void stock_checks(void **state)
{
    (void)state;
    assert_int_equal(sk_sale_check_stock(0, 1), SK_ESOLD_OUT);
    assert_int_equal(sk_sale_check_stock(1, 1), 0);
    assert_int_equal(sk_sale_check_stock(2, 1), 0);
    assert_int_equal(sk_sale_check_stock(5, 5), 0);
    assert_int_equal(sk_sale_check_stock(5, 6), SK_ESOLD_OUT); /* all or nothing */
    assert_int_equal(sk_sale_check_stock(MAXU, MAXU), 0);
    assert_int_equal(sk_sale_check_stock(MAXU - 1, MAXU), SK_ESOLD_OUT);
    assert_int_equal(sk_sale_check_stock(MAXU, 1), 0);
}

/* ---- sk_sale_check_restock ---- */

static void restock_checks(void **state)
{
    (void)state;
    assert_int_equal(sk_sale_check_restock(0, 0, 0), 0);
    assert_int_equal(sk_sale_check_restock(10, 6, 4), 0);
    assert_int_equal(sk_sale_check_restock(9, 6, 4), SK_ESTOCK_BELOW_TAKEN);
    assert_int_equal(sk_sale_check_restock(11, 6, 4), 0);
    assert_int_equal(sk_sale_check_restock(0, 1, 0), SK_ESTOCK_BELOW_TAKEN);
    assert_int_equal(sk_sale_check_restock(0, 0, 1), SK_ESTOCK_BELOW_TAKEN);
    assert_int_equal(sk_sale_check_restock(100, 100, 0), 0);
    assert_int_equal(sk_sale_check_restock(MAXU, MAXU, 0), 0);
    assert_int_equal(sk_sale_check_restock(MAXU, MAXU / 2, MAXU / 2), 0);
    assert_int_equal(sk_sale_check_restock(MAXU - 1, MAXU / 2, MAXU / 2), SK_ESTOCK_BELOW_TAKEN);
}

/* ---- sk_sale_remaining ---- */

static void remaining_values(void **state)
{
    sk_sale_view_t v;
    (void)state;
    v = view(100, 60, 3, NT, NT);
    assert_int_equal(sk_sale_remaining(&v), 37);
    v = view(100, 0, 0, NT, NT);
    assert_int_equal(sk_sale_remaining(&v), 100);
    v = view(10, 10, 0, NT, NT);
    assert_int_equal(sk_sale_remaining(&v), 0);
    v = view(10, 5, 5, NT, NT);
    assert_int_equal(sk_sale_remaining(&v), 0);
    v = view(0, 0, 0, NT, NT);
    assert_int_equal(sk_sale_remaining(&v), 0);
    v = view(MAXU, 0, 0, NT, NT);
    assert_true(sk_sale_remaining(&v) == MAXU);
    v = view(MAXU, MAXU - 1, 0, NT, NT);
    assert_int_equal(sk_sale_remaining(&v), 1);
}

static void remaining_never_negative(void **state)
{
    sk_sale_view_t v;
    (void)state;
    v = view(5, 6, 0, NT, NT);
    assert_int_equal(sk_sale_remaining(&v), 0);
    v = view(5, 3, 3, NT, NT);
    assert_int_equal(sk_sale_remaining(&v), 0);
    v = view(0, MAXU, MAXU, NT, NT);
    assert_int_equal(sk_sale_remaining(&v), 0);
}

/* ---- sk_sale_state ---- */

static void state_names(void **state)
{
    (void)state;
    assert_string_equal(sk_sale_state_name(SK_SALE_SCHEDULED), "scheduled");
    assert_string_equal(sk_sale_state_name(SK_SALE_OPEN), "open");
    assert_string_equal(sk_sale_state_name(SK_SALE_SOLD_OUT), "sold_out");
    assert_string_equal(sk_sale_state_name(SK_SALE_ENDED), "ended");
}

static void state_values(void **state)
{
    sk_sale_view_t v;
    (void)state;
    v = view(10, 0, 0, 100, 200);
    assert_int_equal(sk_sale_state(&v, 99), SK_SALE_SCHEDULED);
    assert_int_equal(sk_sale_state(&v, 100), SK_SALE_OPEN);
    assert_int_equal(sk_sale_state(&v, 199), SK_SALE_OPEN);
    assert_int_equal(sk_sale_state(&v, 200), SK_SALE_ENDED);
    v = view(10, 7, 3, 100, 200); /* remaining 0 */
    assert_int_equal(sk_sale_state(&v, 99), SK_SALE_SCHEDULED);
    assert_int_equal(sk_sale_state(&v, 100), SK_SALE_SOLD_OUT);
    assert_int_equal(sk_sale_state(&v, 199), SK_SALE_SOLD_OUT);
    assert_int_equal(sk_sale_state(&v, 200), SK_SALE_ENDED);
    v = view(10, 7, 2, NT, NT); /* remaining 1 */
    assert_int_equal(sk_sale_state(&v, 0), SK_SALE_OPEN);
    v = view(0, 0, 0, NT, NT); /* a sale of nothing is sold out from the start */
    assert_int_equal(sk_sale_state(&v, 0), SK_SALE_SOLD_OUT);
    v = view(5, 6, 0, NT, NT);
    assert_int_equal(sk_sale_state(&v, 0), SK_SALE_SOLD_OUT);
    v = view(10, 0, 0, NT, 200);
    assert_int_equal(sk_sale_state(&v, INT64_MAX), SK_SALE_ENDED);
}

/* ---- sk_sale_expires_at: now_ms rounded up to a whole second, plus hold ---- */

static void expires_at_values(void **state)
{
    (void)state;
    assert_true(sk_sale_expires_at(1764000000000, 0) == SK_NO_TIME);
    assert_true(sk_sale_expires_at(1764000000123, 0) == SK_NO_TIME);
    assert_true(sk_sale_expires_at(1764000000000, -1) == SK_NO_TIME);
    assert_int_equal(sk_sale_expires_at(1764000000000, 30), 1764000030);
    assert_int_equal(sk_sale_expires_at(1764000000001, 30), 1764000031);
    assert_int_equal(sk_sale_expires_at(1764000000500, 30), 1764000031);
    assert_int_equal(sk_sale_expires_at(1764000000999, 30), 1764000031);
    assert_int_equal(sk_sale_expires_at(1764000001000, 30), 1764000031);
    assert_int_equal(sk_sale_expires_at(1764000001001, 30), 1764000032);
    assert_int_equal(sk_sale_expires_at(0, 1), 1);
    assert_int_equal(sk_sale_expires_at(1, 1), 2);
    assert_int_equal(sk_sale_expires_at(999, 1), 2);
    assert_int_equal(sk_sale_expires_at(1000, 1), 2);
    assert_int_equal(sk_sale_expires_at(1001, 1), 3);
    assert_int_equal(sk_sale_expires_at(1764000000000, 31536000), 1764000000 + 31536000);
}

/* A hold lasts at least hold_seconds and less than hold_seconds + 1. */
static void expires_at_hold_at_least(void **state)
{
    (void)state;
    for (int64_t ms = 1764000000000; ms < 1764000003000; ms += 7)
        for (int64_t h = 1; h <= 3; h++) {
            int64_t e = sk_sale_expires_at(ms, h);
            assert_true(e * 1000 - ms >= h * 1000);
            assert_true(e * 1000 - ms < (h + 1) * 1000);
        }
}

/* ---- orders ---- */

static void status_names(void **state)
{
    (void)state;
    assert_string_equal(sk_order_status_name(SK_ORDER_HELD), "held");
    assert_string_equal(sk_order_status_name(SK_ORDER_CONFIRMED), "confirmed");
    assert_string_equal(sk_order_status_name(SK_ORDER_CANCELLED), "cancelled");
    assert_string_equal(sk_order_status_name(SK_ORDER_EXPIRED), "expired");
    assert_string_equal(sk_order_status_name((sk_order_status_t)0), "unknown");
    assert_string_equal(sk_order_status_name((sk_order_status_t)5), "unknown");
}

static void status_parse(void **state)
{
    (void)state;
    assert_int_equal(sk_order_status_parse("held"), SK_ORDER_HELD);
    assert_int_equal(sk_order_status_parse("confirmed"), SK_ORDER_CONFIRMED);
    assert_int_equal(sk_order_status_parse("cancelled"), SK_ORDER_CANCELLED);
    assert_int_equal(sk_order_status_parse("expired"), SK_ORDER_EXPIRED);
    assert_int_equal(sk_order_status_parse(""), 0);
    assert_int_equal(sk_order_status_parse("unknown"), 0);
    assert_int_equal(sk_order_status_parse("HELD"), 0);
    assert_int_equal(sk_order_status_parse("held "), 0);
    assert_int_equal(sk_order_status_parse("canceled"), 0);
    assert_int_equal(sk_order_status_parse("confirme"), 0);
}

static void effective_status(void **state)
{
    (void)state;
    /* a held order expires at expires_at exactly */
    assert_int_equal(sk_order_effective(SK_ORDER_HELD, 100, 0), SK_ORDER_HELD);
    assert_int_equal(sk_order_effective(SK_ORDER_HELD, 100, 99), SK_ORDER_HELD);
    assert_int_equal(sk_order_effective(SK_ORDER_HELD, 100, 100), SK_ORDER_EXPIRED);
    assert_int_equal(sk_order_effective(SK_ORDER_HELD, 100, 101), SK_ORDER_EXPIRED);
    assert_int_equal(sk_order_effective(SK_ORDER_HELD, SK_NO_TIME, INT64_MAX), SK_ORDER_HELD);
    /* other statuses never change with time */
    for (int s = SK_ORDER_CONFIRMED; s <= SK_ORDER_EXPIRED; s++) {
        assert_int_equal(sk_order_effective((sk_order_status_t)s, 100, 99), s);
        assert_int_equal(sk_order_effective((sk_order_status_t)s, 100, 100), s);
        assert_int_equal(sk_order_effective((sk_order_status_t)s, 100, INT64_MAX), s);
        assert_int_equal(sk_order_effective((sk_order_status_t)s, SK_NO_TIME, 0), s);
    }
}

typedef struct {
    const char *what;
    sk_order_status_t st;
    int64_t expires_at;
    int64_t now;
    sk_order_op_t op;
    int rc;
    sk_order_status_t next;
    int returns_units;
} trans_t;

#define EXP 1000 /* expires_at of the held orders below */
#define LIVE 999 /* a moment the hold still runs */
#define PAST 1000 /* the hold has just run out */

static const trans_t transitions[] = {
    /* held, still in time */
    {"held confirm", SK_ORDER_HELD, EXP, LIVE, SK_OP_CONFIRM_ORDER, 0, SK_ORDER_CONFIRMED, 0},
    {"held cancel", SK_ORDER_HELD, EXP, LIVE, SK_OP_CANCEL_ORDER, 0, SK_ORDER_CANCELLED, 1},
    {"held expire early", SK_ORDER_HELD, EXP, LIVE, SK_OP_EXPIRE_ORDER, SK_EORDER_NOT_HELD, SK_ORDER_HELD, 0},
    /* held, past expires_at but not yet swept: it counts as expired */
    {"held-past confirm", SK_ORDER_HELD, EXP, PAST, SK_OP_CONFIRM_ORDER, SK_EORDER_NOT_HELD, SK_ORDER_HELD, 0},
    {"held-past cancel", SK_ORDER_HELD, EXP, PAST, SK_OP_CANCEL_ORDER, SK_EORDER_NOT_HELD, SK_ORDER_HELD, 0},
    {"held-past expire", SK_ORDER_HELD, EXP, PAST, SK_OP_EXPIRE_ORDER, 0, SK_ORDER_EXPIRED, 1},
    {"held-long-past confirm", SK_ORDER_HELD, EXP, INT64_MAX, SK_OP_CONFIRM_ORDER, SK_EORDER_NOT_HELD, SK_ORDER_HELD,
     0},
    {"held-long-past expire", SK_ORDER_HELD, EXP, INT64_MAX, SK_OP_EXPIRE_ORDER, 0, SK_ORDER_EXPIRED, 1},
    /* held without an expiry never expires */
    {"held-forever confirm", SK_ORDER_HELD, SK_NO_TIME, INT64_MAX, SK_OP_CONFIRM_ORDER, 0, SK_ORDER_CONFIRMED, 0},
    {"held-forever cancel", SK_ORDER_HELD, SK_NO_TIME, INT64_MAX, SK_OP_CANCEL_ORDER, 0, SK_ORDER_CANCELLED, 1},
    {"held-forever expire", SK_ORDER_HELD, SK_NO_TIME, INT64_MAX, SK_OP_EXPIRE_ORDER, SK_EORDER_NOT_HELD,
     SK_ORDER_HELD, 0},
    /* confirmed: idempotent confirm, cancel returns units, never expires */
    {"confirmed confirm", SK_ORDER_CONFIRMED, SK_NO_TIME, LIVE, SK_OP_CONFIRM_ORDER, 0, SK_ORDER_CONFIRMED, 0},
    {"confirmed cancel", SK_ORDER_CONFIRMED, SK_NO_TIME, LIVE, SK_OP_CANCEL_ORDER, 0, SK_ORDER_CANCELLED, 1},
    {"confirmed expire", SK_ORDER_CONFIRMED, SK_NO_TIME, LIVE, SK_OP_EXPIRE_ORDER, SK_EORDER_NOT_HELD,
     SK_ORDER_CONFIRMED, 0},
    /* a confirmed order that had been held keeps its expires_at; it no longer matters */
    {"confirmed-past confirm", SK_ORDER_CONFIRMED, EXP, PAST, SK_OP_CONFIRM_ORDER, 0, SK_ORDER_CONFIRMED, 0},
    {"confirmed-past cancel", SK_ORDER_CONFIRMED, EXP, PAST, SK_OP_CANCEL_ORDER, 0, SK_ORDER_CANCELLED, 1},
    {"confirmed-past expire", SK_ORDER_CONFIRMED, EXP, PAST, SK_OP_EXPIRE_ORDER, SK_EORDER_NOT_HELD,
     SK_ORDER_CONFIRMED, 0},
    /* cancelled: idempotent cancel that returns nothing again */
    {"cancelled confirm", SK_ORDER_CANCELLED, EXP, LIVE, SK_OP_CONFIRM_ORDER, SK_EORDER_NOT_HELD, SK_ORDER_CANCELLED,
     0},
    {"cancelled cancel", SK_ORDER_CANCELLED, EXP, LIVE, SK_OP_CANCEL_ORDER, 0, SK_ORDER_CANCELLED, 0},
    {"cancelled expire", SK_ORDER_CANCELLED, EXP, PAST, SK_OP_EXPIRE_ORDER, SK_EORDER_NOT_HELD, SK_ORDER_CANCELLED,
     0},
    {"cancelled-past cancel", SK_ORDER_CANCELLED, EXP, PAST, SK_OP_CANCEL_ORDER, 0, SK_ORDER_CANCELLED, 0},
    /* expired: final; units came back exactly once */
    {"expired confirm", SK_ORDER_EXPIRED, EXP, PAST, SK_OP_CONFIRM_ORDER, SK_EORDER_NOT_HELD, SK_ORDER_EXPIRED, 0},
    {"expired cancel", SK_ORDER_EXPIRED, EXP, PAST, SK_OP_CANCEL_ORDER, SK_EORDER_NOT_HELD, SK_ORDER_EXPIRED, 0},
    {"expired expire", SK_ORDER_EXPIRED, EXP, PAST, SK_OP_EXPIRE_ORDER, SK_EORDER_NOT_HELD, SK_ORDER_EXPIRED, 0},
};

static void transition_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(transitions) / sizeof(transitions[0]); i++) {
        const trans_t *t = &transitions[i];
        sk_order_status_t next = (sk_order_status_t)0;
        int ret = -1;
        int rc = sk_order_transition(t->st, t->expires_at, t->now, t->op, &next, &ret);
        if (rc != t->rc || next != t->next || ret != t->returns_units)
            fail_msg("%s: got rc=%d next=%d returns_units=%d, want rc=%d next=%d returns_units=%d", t->what, rc,
                     (int)next, ret, t->rc, (int)t->next, t->returns_units);
    }
}

/* Expiry and confirmation race at the boundary second: exactly one of them wins. */
static void transition_boundary(void **state)
{
    sk_order_status_t next;
    int ret;
    (void)state;
    for (int64_t now = EXP - 2; now <= EXP + 2; now++) {
        int c = sk_order_transition(SK_ORDER_HELD, EXP, now, SK_OP_CONFIRM_ORDER, &next, &ret);
        int e = sk_order_transition(SK_ORDER_HELD, EXP, now, SK_OP_EXPIRE_ORDER, &next, &ret);
        assert_true((c == 0) != (e == 0));
        assert_int_equal(c == 0, now < EXP);
    }
}

static void transition_bad_op(void **state)
{
    sk_order_status_t next;
    int ret = -1;
    (void)state;
    assert_int_equal(sk_order_transition(SK_ORDER_HELD, EXP, LIVE, (sk_order_op_t)99, &next, &ret), SK_EINTERNAL);
    assert_int_equal(ret, 0);
    assert_int_equal(next, SK_ORDER_HELD);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(constants),
        cmocka_unit_test(soldout_answer),
        cmocka_unit_test(conf_defaults_ok),
        cmocka_unit_test(conf_stock_range),
        cmocka_unit_test(conf_limit_range),
        cmocka_unit_test(conf_hold_range),
        cmocka_unit_test(conf_times),
        cmocka_unit_test(retain_due),
        cmocka_unit_test(window_bounds),
        cmocka_unit_test(window_open_ended),
        cmocka_unit_test(window_one_second),
        cmocka_unit_test(take_qty_range),
        cmocka_unit_test(take_user_required_with_limit),
        cmocka_unit_test(user_limit_small),
        cmocka_unit_test(user_no_limit),
        cmocka_unit_test(user_limit_near_2_53),
        cmocka_unit_test(stock_checks),
        cmocka_unit_test(restock_checks),
        cmocka_unit_test(remaining_values),
        cmocka_unit_test(remaining_never_negative),
        cmocka_unit_test(state_names),
        cmocka_unit_test(state_values),
        cmocka_unit_test(expires_at_values),
        cmocka_unit_test(expires_at_hold_at_least),
        cmocka_unit_test(status_names),
        cmocka_unit_test(status_parse),
        cmocka_unit_test(effective_status),
        cmocka_unit_test(transition_table),
        cmocka_unit_test(transition_boundary),
        cmocka_unit_test(transition_bad_op),
    };
    return cmocka_run_group_tests_name("sale", tests, NULL, NULL);
}
