/* test_metrics.c: the feed relay's metrics as GET /metrics renders them (metrics.c): the counters
 * from the start at 0, what each step result counts, and the lag gauge shown only while a relay
 * runs, as the time since the start of its last complete round. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "metrics.h"
#include "util.h"

/* The rendered text, NUL-terminated. */
static char *render(void)
{
    sk_buf_t b = {0};
    sk_metrics_render(&b);
    sk_buf_append(&b, "", 1);
    return b.p;
}

/* The value of the sample `name` (with its labels) in `text`; -1 when it is not there. */
static double sample(const char *text, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = text; p != NULL && *p != '\0'; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
        if (strncmp(p, name, n) == 0 && p[n] == ' ')
            return strtod(p + n + 1, NULL);
    return -1;
}

static int count(const char *text, const char *needle)
{
    int k = 0;
    for (const char *p = strstr(text, needle); p != NULL; p = strstr(p + 1, needle))
        k++;
    return k;
}

static void relay_metrics(void **state)
{
    (void)state;
    sk_metrics_thread_init();
    char *t = render();
    assert_true(sample(t, "seckill_feed_relay_entries_total") == 0);
    assert_true(sample(t, "seckill_feed_relay_copies_total{result=\"copied\"}") == 0);
    assert_true(sample(t, "seckill_feed_relay_copies_total{result=\"raced\"}") == 0);
    assert_true(sample(t, "seckill_feed_relay_copies_total{result=\"failed\"}") == 0);
    assert_true(sample(t, "seckill_feed_relay_gaps_total") == 0);
    assert_int_equal(count(t, "# TYPE seckill_feed_relay_entries_total counter\n"), 1);
    assert_int_equal(count(t, "# TYPE seckill_feed_relay_copies_total counter\n"), 1);
    assert_int_equal(count(t, "# TYPE seckill_feed_relay_gaps_total counter\n"), 1);
    assert_int_equal(count(t, "# HELP seckill_feed_relay_"), 3);
    assert_null(strstr(t, "seckill_feed_relay_lag_seconds")); /* no relay runs */
    free(t);

    sk_metrics_relay_step(SK_RELAY_COPIED, 5);
    sk_metrics_relay_step(SK_RELAY_COPIED, 0); /* a copy of nothing (it clears the mark) */
    sk_metrics_relay_step(SK_RELAY_RACED, 7);  /* lost the compare-and-set: no entry landed */
    sk_metrics_relay_step(SK_RELAY_FAILED, 0);
    sk_metrics_relay_step(SK_RELAY_RESULTS_, 3); /* out of range: ignored */
    sk_metrics_relay_gap();
    int64_t now = sk_mono_ms();
    sk_metrics_relay_running(1, now - 1500); /* started 1.5 s ago, no round complete yet */
    t = render();
    assert_true(sample(t, "seckill_feed_relay_entries_total") == 5);
    assert_true(sample(t, "seckill_feed_relay_copies_total{result=\"copied\"}") == 2);
    assert_true(sample(t, "seckill_feed_relay_copies_total{result=\"raced\"}") == 1);
    assert_true(sample(t, "seckill_feed_relay_copies_total{result=\"failed\"}") == 1);
    assert_true(sample(t, "seckill_feed_relay_gaps_total") == 1);
    assert_int_equal(count(t, "# TYPE seckill_feed_relay_lag_seconds gauge\n"), 1);
    double lag = sample(t, "seckill_feed_relay_lag_seconds");
    assert_true(lag >= 1.5 && lag < 30);
    free(t);

    sk_metrics_relay_complete(sk_mono_ms()); /* a round complete that began now */
    t = render();
    lag = sample(t, "seckill_feed_relay_lag_seconds");
    assert_true(lag >= 0 && lag < 1.0);
    free(t);
    sk_metrics_relay_complete(sk_mono_ms() + 1000); /* never below 0 */
    t = render();
    assert_true(sample(t, "seckill_feed_relay_lag_seconds") == 0);
    free(t);

    sk_metrics_relay_running(0, 0);
    t = render();
    assert_null(strstr(t, "seckill_feed_relay_lag_seconds"));
    assert_true(sample(t, "seckill_feed_relay_entries_total") == 5); /* counters stay */
    free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(relay_metrics),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
