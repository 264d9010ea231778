/* test_proxy.c: trusted networks and the client address behind proxies (proxy.h): the
 * right-most X-Forwarded-For entry that is not a trusted proxy, never the first. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "proxy.h"

static void cidrs(void **state)
{
    (void)state;
    sk_cidrs_t c;
    char err[128];
    int fam;
    uint8_t a[16];
    assert_int_equal(sk_cidrs_parse("10.0.0.0/8, 192.168.1.7 ,2001:db8::/32,[::1]", &c, err, sizeof(err)), 0);
    assert_int_equal(c.n, 4);
    struct {
        const char *ip;
        int in;
    } cases[] = {{"10.1.2.3", 1},   {"11.0.0.1", 0}, {"192.168.1.7", 1}, {"192.168.1.8", 0},     {"2001:db8:1::5", 1},
                 {"2001:db9::", 0}, {"::1", 1},      {"[::1]", 1},       {"::ffff:10.9.9.9", 1}, {"::2", 0}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        assert_int_equal(sk_ip_parse(cases[i].ip, strlen(cases[i].ip), &fam, a), 0);
        assert_int_equal(sk_cidrs_match(&c, fam, a), cases[i].in);
    }
    sk_cidrs_dispose(&c);
    assert_int_equal(sk_cidrs_parse("0.0.0.0/0", &c, err, sizeof(err)), 0);
    assert_int_equal(sk_ip_parse("8.8.8.8", 7, &fam, a), 0);
    assert_int_equal(sk_cidrs_match(&c, fam, a), 1);
    sk_cidrs_dispose(&c);
    const char *bad[] = {
        "",           "10.0.0.0/33", "::/129", "10.0.0.0/", "10.0.0.0/-1", "example.com", "10.0.0.0/8,",
        "1.2.3.4:80", "10.0.0.0/8x"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(sk_cidrs_parse(bad[i], &c, err, sizeof(err)), -1);
        assert_null(c.v);
    }
}

static const char *client(const char *trusted, int trust_peer, const char *peer, const char *h1, const char *h2)
{
    static char out[NI_MAXHOST];
    sk_cidrs_t c = {0};
    char err[128];
    const char *v[2] = {h1, h2};
    size_t l[2] = {h1 ? strlen(h1) : 0, h2 ? strlen(h2) : 0};
    if (trusted != NULL)
        assert_int_equal(sk_cidrs_parse(trusted, &c, err, sizeof(err)), 0);
    sk_proxy_client(&c, trust_peer, peer, v, l, h2 ? 2 : h1 ? 1 : 0, out);
    sk_cidrs_dispose(&c);
    return out;
}

static void client_address(void **state)
{
    (void)state;
    /* no trust: the peer, whatever the header says */
    assert_string_equal(client(NULL, 0, "192.0.2.1", "1.1.1.1", NULL), "192.0.2.1");
    assert_string_equal(client("10.0.0.0/8", 0, "192.0.2.1", "1.1.1.1", NULL), "192.0.2.1");
    /* a trusted peer: right to left past the trusted ones */
    assert_string_equal(client("10.0.0.0/8", 0, "10.0.0.5", "6.6.6.6, 203.0.113.9, 10.0.0.3", NULL), "203.0.113.9");
    assert_string_equal(client("10.0.0.0/8", 0, "10.0.0.5", "6.6.6.6, 203.0.113.9", "10.0.0.3, 10.0.0.4"),
                        "203.0.113.9");
    assert_string_equal(client("10.0.0.0/8", 0, "10.0.0.5", "6.6.6.6", "203.0.113.9,10.0.0.4"), "203.0.113.9");
    /* every entry trusted: the left-most; no entry: the peer */
    assert_string_equal(client("10.0.0.0/8", 0, "10.0.0.5", "10.0.0.1, 10.0.0.2", NULL), "10.0.0.1");
    assert_string_equal(client("10.0.0.0/8", 0, "10.0.0.5", NULL, NULL), "10.0.0.5");
    /* empty elements are skipped; garbage stops at the trusted hop to its right */
    assert_string_equal(client("10.0.0.0/8", 0, "10.0.0.5", "203.0.113.9, , 10.0.0.3,", NULL), "203.0.113.9");
    assert_string_equal(client("10.0.0.0/8", 0, "10.0.0.5", "1.1.1.1, bogus, 10.0.0.3", NULL), "10.0.0.3");
    assert_string_equal(client("10.0.0.0/8", 0, "10.0.0.5", "1.1.1.1:443", NULL), "10.0.0.5");
    /* addresses are written one way: mapped IPv4 as IPv4, IPv6 canonical */
    assert_string_equal(client("10.0.0.0/8", 0, "::ffff:10.0.0.5", "::ffff:203.0.113.9", NULL), "203.0.113.9");
    assert_string_equal(client("10.0.0.0/8", 0, "10.0.0.5", "[2001:DB8:0::1]", NULL), "2001:db8::1");
    /* --trust-proxy: the peer is a proxy, the last entry is the client */
    assert_string_equal(client(NULL, 1, "192.0.2.1", "6.6.6.6, 203.0.113.9", NULL), "203.0.113.9");
    assert_string_equal(client(NULL, 1, "192.0.2.1", NULL, NULL), "192.0.2.1");
    assert_string_equal(client(NULL, 1, "192.0.2.1", "x", NULL), "192.0.2.1");
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(cidrs), cmocka_unit_test(client_address)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
