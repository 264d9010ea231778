/* test_util.c: sk_url_redact (util.c), the one way a store URL is printed: a password in it,
 * in any of the forms the Redis store reads, never shows. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "util.h"

static void redact(const char *url, const char *want)
{
    char out[256];
    assert_ptr_equal(sk_url_redact(url, out, sizeof(out)), out);
    assert_string_equal(out, want);
}

static void passwords_are_starred(void **state)
{
    (void)state;
    redact("redis://:s3cret@localhost:6379/2", "redis://:***@localhost:6379/2");
    redact("redis://user:s3cret@localhost:6379", "redis://user:***@localhost:6379");
    redact("redis://s3cret@localhost", "redis://***@localhost");        /* no colon: the Redis store's password */
    redact("redis://:p@ss@w0rd@[::1]:6379", "redis://:***@[::1]:6379"); /* the last '@' ends it */
    redact("redis://:a:b@h", "redis://:***@h");
    redact("redis://:@h", "redis://:***@h");
}

static void the_rest_is_kept(void **state)
{
    (void)state;
    redact("redis://localhost:6379/0", "redis://localhost:6379/0");
    /* an '@' after the authority: hidden too (the parsers read up to the last '@' before '#' or '?') */
    redact("redis://h/with@in-the-path", "redis://***@in-the-path");
    redact("redis://:pass/word@h:6379/0", "redis://:***@h:6379/0");
    redact("redis-sentinel://:pw@a,b/0#mymaster", "redis-sentinel://:***@a,b/0#mymaster");
    redact("sqlite:/var/lib/seckill/seckill.db", "sqlite:/var/lib/seckill/seckill.db");
    redact("sqlite:./a@b.db", "sqlite:./a@b.db");
    redact("", "");
    char small[12];
    sk_url_redact("redis://:s3cret@localhost", small, sizeof(small));
    assert_string_equal(small, "redis://:**"); /* cut, never past the stars */
    sk_url_redact(NULL, small, sizeof(small));
    assert_string_equal(small, "(none)");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(passwords_are_starred),
        cmocka_unit_test(the_rest_is_kept),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
