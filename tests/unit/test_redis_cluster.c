/* test_redis_cluster.c: the pure parts of src/redis_cluster.c: Redis Cluster's key slot (CRC16 of
 * the hash tag, checked against values Redis itself gives), the tag of each slot, the redirection
 * errors, the CLUSTER SLOTS reply, and the redis-cluster:// URL (redis_ha.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <hiredis/hiredis.h>

#include "redis_cluster.h"
#include "redis_conn.h"

static void test_slots(void **state)
{
    (void)state;
    assert_int_equal(sk_redis_crc16("123456789", 9), 0x31c3); /* CRC16/XMODEM's check value */
    /* CLUSTER KEYSLOT of Redis 7.0.15 */
    assert_int_equal(sk_redis_key_slot("foo", 3), 12182);
    assert_int_equal(sk_redis_key_slot("sk:{s1}", 7), sk_redis_key_slot("s1", 2));
    assert_int_equal(sk_redis_key_slot("{user1000}.following", 20), sk_redis_key_slot("user1000", 8));
    assert_int_equal(sk_redis_key_slot("foo{}{bar}", 10), sk_redis_crc16("foo{}{bar}", 10) & 16383);
    assert_int_equal(sk_redis_key_slot("foo{{bar}}zap", 13), sk_redis_crc16("{bar", 4) & 16383);
    assert_int_equal(sk_redis_key_slot("sk:idx:{i}:slots", 16), 15759);
    assert_int_equal(sk_redis_sale_slot("s1", 2), sk_redis_key_slot("sk:{s1}:orders", 14));
}

static void test_tags(void **state)
{
    (void)state;
    for (int s = 0; s < SK_REDIS_SLOTS; s++) {
        const char *t = sk_redis_slot_tag(s);
        char key[64];
        assert_true(t[0] != '\0' && strlen(t) < SK_REDIS_TAG_MAX);
        snprintf(key, sizeof(key), "sk:slot:{%s}:due", t);
        assert_int_equal(sk_redis_key_slot(key, strlen(key)), s);
    }
    assert_string_equal(sk_redis_slot_tag(sk_redis_key_slot("0", 1)), "0");
}

static void test_redirects(void **state)
{
    char host[64];
    int slot = -1, port = -1;
    (void)state;
    assert_int_equal(sk_redis_redirect_parse("MOVED 3999 127.0.0.1:6381", &slot, host, sizeof(host), &port), 1);
    assert_int_equal(slot, 3999);
    assert_string_equal(host, "127.0.0.1");
    assert_int_equal(port, 6381);
    assert_int_equal(sk_redis_redirect_parse("ASK 16383 ::1:7000", &slot, host, sizeof(host), &port), 2);
    assert_int_equal(slot, 16383);
    assert_string_equal(host, "::1");
    assert_int_equal(port, 7000);
    static const char *const bad[] = {"MOVED",           "MOVED 16384 h:1", "MOVED -1 h:1",    "MOVED 1 h",
                                      "MOVED 1 :1",      "MOVED 1 h:0",     "MOVED 1 h:70000", "MOVED 1 h:1x",
                                      "ERR MOVED 1 h:1", "TRYAGAIN",        "ASK 1h:1"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(sk_redis_redirect_parse(bad[i], &slot, host, sizeof(host), &port), 0);
}

/* A script that a slot in migration stopped (common.lua's touch): taken as TRYAGAIN. The first
 * text is Redis 7.0.15's own (docs/redis.md, "Layouts"). */
static void test_script_migrating(void **state)
{
    (void)state;
    static const char *const yes[] = {
        "ERR Script attempted to access a non local key in a cluster node script: "
        "2330f6c933621c6f074d25400fa900863892dc0d, on @user_script:1.",
        "ERR Error running script (call to f_339ff1ba15b16490ee27658c34fb2ef164dcfe19): @user_script:12: "
        "@user_script: 12: Lua script attempted to access a non local key in a cluster node",
        "ERR Unable to execute command 'hset' in script because undeclared keys were accessed during rehashing of "
        "the slot script: 7aca3da9520c283062e2bb9d02bdb49b6eb69190, on @user_script:1."};
    static const char *const no[] = {
        "ERR Script attempted to access keys that do not hash to the same slot script: 1, on @user_script:1.",
        "ERR Error running script: user_script:1: attempt to call a nil value",
        "TRYAGAIN Multiple keys request during rehashing of slot",
        "ASK 3999 127.0.0.1:6381",
        "OOM command not allowed when used memory > 'maxmemory'.",
        ""};
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++)
        assert_int_equal(sk_redis_script_migrating(yes[i]), 1);
    for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++)
        assert_int_equal(sk_redis_script_migrating(no[i]), 0);
    assert_int_equal(sk_redis_script_migrating(NULL), 0);
}

/* A CLUSTER SLOTS reply read from its RESP text. */
static redisReply *read_reply(const char *resp)
{
    redisReader *rd = redisReaderCreate();
    void *r = NULL;
    redisReaderFeed(rd, resp, strlen(resp));
    assert_int_equal(redisReaderGetReply(rd, &r), REDIS_OK);
    redisReaderFree(rd);
    assert_non_null(r);
    return r;
}

static void test_map(void **state)
{
    sk_redis_map_t *m = malloc(sizeof(*m));
    (void)state;
    /* two ranges of one master (the second naming itself ""), one of another, with a replica */
    redisReply *r = read_reply("*3\r\n"
                               "*3\r\n:0\r\n:8000\r\n*3\r\n$9\r\n127.0.0.1\r\n:7000\r\n$2\r\nid\r\n"
                               "*4\r\n:8001\r\n:16000\r\n*3\r\n$9\r\n127.0.0.1\r\n:7001\r\n$2\r\nid\r\n"
                               "*3\r\n$9\r\n127.0.0.1\r\n:7004\r\n$2\r\nid\r\n"
                               "*3\r\n:16001\r\n:16383\r\n*3\r\n$0\r\n\r\n:7000\r\n$2\r\nid\r\n");
    assert_int_equal(sk_redis_map_parse(m, r, "127.0.0.1"), 0);
    assert_int_equal(m->nnodes, 2);
    assert_true(m->complete);
    assert_int_equal(m->slot_node[0], 0);
    assert_int_equal(m->slot_node[8001], 1);
    assert_int_equal(m->slot_node[16383], 0);
    assert_int_equal(m->nodes[1].port, 7001);
    freeReplyObject(r);

    r = read_reply("*1\r\n*3\r\n:0\r\n:100\r\n*2\r\n$1\r\nh\r\n:1\r\n");
    assert_int_equal(sk_redis_map_parse(m, r, "x"), 0);
    assert_false(m->complete);
    assert_int_equal(m->slot_node[101], 0xff);
    freeReplyObject(r);

    static const char *const bad[] = {"+OK\r\n", "*1\r\n:1\r\n", "*1\r\n*3\r\n:5\r\n:4\r\n*2\r\n$1\r\nh\r\n:1\r\n",
                                      "*1\r\n*3\r\n:0\r\n:16384\r\n*2\r\n$1\r\nh\r\n:1\r\n",
                                      "*1\r\n*3\r\n:0\r\n:1\r\n*2\r\n$1\r\nh\r\n:0\r\n"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        r = read_reply(bad[i]);
        assert_int_equal(sk_redis_map_parse(m, r, "x"), -1);
        freeReplyObject(r);
    }
    assert_int_equal(sk_redis_map_parse(m, NULL, "x"), -1);
    free(m);
}

static void test_urls(void **state)
{
    sk_redis_conf_t c;
    char err[256];
    (void)state;
    assert_int_equal(sk_redis_conf_parse(&c, "redis-cluster://u:p%40ss@h1,h2:7001,[::1]:7002", err, sizeof(err)), 0);
    assert_true(c.cluster);
    assert_int_equal(c.nseeds, 3);
    assert_string_equal(c.seeds[0].host, "h1");
    assert_int_equal(c.seeds[0].port, 6379);
    assert_int_equal(c.seeds[1].port, 7001);
    assert_string_equal(c.seeds[2].host, "::1");
    assert_string_equal(c.user, "u");
    assert_string_equal(c.password, "p@ss");
    assert_int_equal(c.db, 0);
    sk_redis_conf_dispose(&c);
    static const char *const bad[] = {"redis-cluster://",         "redis-cluster://h1,",  "redis-cluster://,h1",
                                      "redis-cluster://h1/0",     "redis-cluster://h:0",  "redis-cluster://h:x",
                                      "redis-cluster://:secret@", "redis-cluster://h:1#m"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(sk_redis_conf_parse(&c, bad[i], err, sizeof(err)), -1);
        assert_null(strstr(err, "secret"));
        sk_redis_conf_dispose(&c);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_slots), cmocka_unit_test(test_tags), cmocka_unit_test(test_redirects),
        cmocka_unit_test(test_map),   cmocka_unit_test(test_urls), cmocka_unit_test(test_script_migrating),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
