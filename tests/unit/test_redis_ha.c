/* test_redis_ha.c: the store URLs of src/redis_ha.c (redis-sentinel://, unix://) and the
 * redaction of passwords in URLs (store.c), case by case: what each form parses into, what is
 * refused, and that no refusal message shows the password. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "redis_conn.h"
#include "redis_ha.h"
#include "store.h"

static void test_sentinel_urls(void **state)
{
    sk_redis_conf_t c;
    char err[256];
    (void)state;
    unsetenv("SECKILL_SENTINEL_PASSWORD");

    assert_int_equal(sk_redis_conf_parse(&c, "redis-sentinel://s1,s2:26380,[::1]:7/3#mymaster", err, sizeof(err)), 0);
    assert_string_equal(c.master_name, "mymaster");
    assert_int_equal(c.nsentinels, 3);
    assert_string_equal(c.sentinels[0].host, "s1");
    assert_int_equal(c.sentinels[0].port, 26379);
    assert_string_equal(c.sentinels[1].host, "s2");
    assert_int_equal(c.sentinels[1].port, 26380);
    assert_string_equal(c.sentinels[2].host, "::1");
    assert_int_equal(c.sentinels[2].port, 7);
    assert_int_equal(c.db, 3);
    assert_null(c.password);
    assert_null(c.host);
    sk_redis_conf_dispose(&c);

    setenv("SECKILL_SENTINEL_PASSWORD", "sentpw", 1);
    assert_int_equal(sk_redis_conf_parse(&c, "redis-sentinel://app:p%40ss@h#m%20x", err, sizeof(err)), -1);
    sk_redis_conf_dispose(&c);
    assert_int_equal(sk_redis_conf_parse(&c, "redis-sentinel://app:p%40ss@h#m", err, sizeof(err)), 0);
    assert_string_equal(c.user, "app");
    assert_string_equal(c.password, "p@ss");
    assert_string_equal(c.sentinel_password, "sentpw");
    assert_int_equal(c.db, 0);
    sk_redis_conf_dispose(&c);
    unsetenv("SECKILL_SENTINEL_PASSWORD");

    static const char *const bad[] = {
        "redis-sentinel://h",          /* no #MASTER */
        "redis-sentinel://h#",         /* empty name */
        "redis-sentinel://#m",         /* no sentinel */
        "redis-sentinel://h,#m",       /* an empty host */
        "redis-sentinel://h:0#m",      /* port 0 */
        "redis-sentinel://h:70000#m",  /* port out of range */
        "redis-sentinel://h/x#m",      /* DB not a number */
        "redis-sentinel://:pw%zz@h#m", /* a bad escape */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        assert_int_equal(sk_redis_conf_parse(&c, bad[i], err, sizeof(err)), -1);
        assert_true(err[0] != '\0');
        sk_redis_conf_dispose(&c);
        assert_int_equal(sk_store_url_check(bad[i], err, sizeof(err)), -1);
    }
    /* a refusal never shows the password */
    assert_int_equal(sk_redis_conf_parse(&c, "redis-sentinel://:Secret99@h", err, sizeof(err)), -1);
    assert_null(strstr(err, "Secret99"));
    assert_non_null(strstr(err, ":***@h"));
    sk_redis_conf_dispose(&c);
}

static void test_unix_urls(void **state)
{
    sk_redis_conf_t c;
    char err[256];
    (void)state;
    assert_int_equal(sk_redis_conf_parse(&c, "unix:///run/redis/redis.sock", err, sizeof(err)), 0);
    assert_string_equal(c.path, "/run/redis/redis.sock");
    assert_int_equal(c.db, 0);
    sk_redis_conf_dispose(&c);
    assert_int_equal(sk_redis_conf_parse(&c, "unix://:pw@/r.sock?db=2", err, sizeof(err)), 0);
    assert_string_equal(c.path, "/r.sock");
    assert_string_equal(c.password, "pw");
    assert_int_equal(c.db, 2);
    sk_redis_conf_dispose(&c);
    static const char *const bad[] = {"unix://", "unix://relative.sock", "unix:///r.sock?db=x", "unix:///r.sock?x=1",
                                      "unix://pw@relative"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(sk_redis_conf_parse(&c, bad[i], err, sizeof(err)), -1);
        sk_redis_conf_dispose(&c);
    }
}

static void test_redact(void **state)
{
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"redis://h:6379", "redis://h:6379"},
        {"redis://:pw@h:6379/1", "redis://:***@h:6379/1"},
        {"redis://user:p@w@h", "redis://user:***@h"},
        {"redis://onlypw@h", "redis://***@h"},
        {"redis-sentinel://u:pw@a,b:1/0#m", "redis-sentinel://u:***@a,b:1/0#m"},
        {"unix://:pw@/r.sock", "unix://:***@/r.sock"},
        {"sqlite:/var/lib/x.db", "sqlite:/var/lib/x.db"},
    };
    char out[256];
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        sk_store_url_redact(cases[i].in, out, sizeof(out));
        assert_string_equal(out, cases[i].out);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sentinel_urls),
        cmocka_unit_test(test_unix_urls),
        cmocka_unit_test(test_redact),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
