/* test_server.c: the connection limits derived from the descriptor limit (server.h), with the
 * exact numbers docs/operations.md gives. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "server.h"

static void limits(void **state)
{
    (void)state;
    long max[SK_LISTENER_COUNT];
    /* 256 descriptors, 2 workers: 256 - (64 + 2 * 16) = 160; admin 160 / 8 = 20; public 140 */
    assert_int_equal(sk_server_conn_limits(256, 2, 0, max), 0);
    assert_int_equal(max[SK_LISTENER_PUBLIC], 140);
    assert_int_equal(max[SK_LISTENER_ADMIN], 20);
    /* a smaller --max-connections is kept; a larger one is lowered to the budget */
    assert_int_equal(sk_server_conn_limits(256, 2, 4, max), 0);
    assert_int_equal(max[SK_LISTENER_PUBLIC], 4);
    assert_int_equal(max[SK_LISTENER_ADMIN], 20);
    assert_int_equal(sk_server_conn_limits(256, 2, 140, max), 0);
    assert_int_equal(max[SK_LISTENER_PUBLIC], 140);
    assert_int_equal(sk_server_conn_limits(256, 2, 141, max), 1);
    assert_int_equal(max[SK_LISTENER_PUBLIC], 140);
    /* the admin share is 16 to 1024 */
    assert_int_equal(sk_server_conn_limits(20000, 2, 0, max), 0);
    assert_int_equal(max[SK_LISTENER_PUBLIC], 20000 - 96 - 1024);
    assert_int_equal(max[SK_LISTENER_ADMIN], 1024);
    assert_int_equal(sk_server_conn_limits(1048576, 4, 0, max), 0);
    assert_int_equal(max[SK_LISTENER_PUBLIC], 1048576 - 128 - 1024);
    assert_int_equal(sk_server_conn_limits(1024, 1, 0, max), 0);
    assert_int_equal(max[SK_LISTENER_PUBLIC], 1024 - 80 - 118);
    assert_int_equal(max[SK_LISTENER_ADMIN], 118);
    assert_int_equal(sk_server_conn_limits(200, 2, 0, max), 0); /* budget 104: admin 16, public 88 */
    assert_int_equal(max[SK_LISTENER_PUBLIC], 88);
    assert_int_equal(max[SK_LISTENER_ADMIN], 16);
    /* too few descriptors: 16 each, said so */
    assert_int_equal(sk_server_conn_limits(100, 2, 0, max), -1);
    assert_int_equal(max[SK_LISTENER_PUBLIC], 16);
    assert_int_equal(max[SK_LISTENER_ADMIN], 16);
    assert_int_equal(sk_server_conn_limits(10, 0, 5, max), -1);
    assert_int_equal(max[SK_LISTENER_PUBLIC], 5);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
