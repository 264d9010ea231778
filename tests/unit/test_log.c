/* test_log.c: the rate limit of repeated log lines (log.c): one line per SK_LOG_LIMIT_MS per call
 * site, the next written one counting those held back, and the macro's state per call site. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "log.h"

static void first_line_passes_then_one_per_interval(void **state)
{
    (void)state;
    sk_log_limit_t lim = {0};
    uint64_t n = 99;
    assert_int_equal(sk_log_limit_pass(&lim, 5000, &n), 1);
    assert_int_equal(n, 0);
    for (int64_t t = 5000; t < 5000 + SK_LOG_LIMIT_MS; t += 10000)
        assert_int_equal(sk_log_limit_pass(&lim, t, &n), 0); /* 6 held back */
    assert_int_equal(sk_log_limit_pass(&lim, 5000 + SK_LOG_LIMIT_MS - 1, &n), 0);
    assert_int_equal(sk_log_limit_pass(&lim, 5000 + SK_LOG_LIMIT_MS, &n), 1);
    assert_int_equal(n, 7);
    /* the count starts again; the interval runs from the line just written */
    assert_int_equal(sk_log_limit_pass(&lim, 5000 + SK_LOG_LIMIT_MS + 1, &n), 0);
    assert_int_equal(sk_log_limit_pass(&lim, 5000 + 2 * SK_LOG_LIMIT_MS, &n), 1);
    assert_int_equal(n, 1);
    /* a quiet minute: the next line passes with nothing to report */
    assert_int_equal(sk_log_limit_pass(&lim, 5000 + 10 * SK_LOG_LIMIT_MS, &n), 1);
    assert_int_equal(n, 0);
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char *buf = calloc(1, 65536);
    size_t n = fread(buf, 1, 65535, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static int count_lines(const char *s, const char *needle)
{
    int n = 0;
    for (const char *p = s; (p = strstr(p, needle)) != NULL; p += strlen(needle))
        n++;
    return n;
}

static void one_state_per_call_site(void **state)
{
    (void)state;
    char path[] = "/tmp/sk_test_log_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(sk_log_open(path), 0);
    for (int i = 0; i < 1000; i++) {
        sk_log_limited(SK_LOG_ERROR, "event=site_a i=%d", i);
        sk_log_limited(SK_LOG_ERROR, "event=site_b i=%d", i);
        sk_log_limited(SK_LOG_DEBUG, "event=site_c i=%d", i); /* below the level: nothing */
    }
    char *text = slurp(path);
    assert_int_equal(count_lines(text, "event=site_a i=0\n"), 1);
    assert_int_equal(count_lines(text, "event=site_a"), 1);
    assert_int_equal(count_lines(text, "event=site_b i=0\n"), 1);
    assert_int_equal(count_lines(text, "event=site_b"), 1);
    assert_int_equal(count_lines(text, "site_c"), 0);
    assert_int_equal(count_lines(text, "\n"), 2);
    assert_non_null(strstr(text, " level=error event=site_a i=0\n"));
    free(text);

    /* a written line ends with suppressed=N */
    sk_log_limit_t lim = {0};
    atomic_store(&lim.next_ms, INT64_MAX); /* a line was just written */
    for (int i = 0; i < 41; i++)
        sk_log_limited_write(&lim, SK_LOG_WARN, "event=site_d"); /* within the minute: held back */
    atomic_store(&lim.next_ms, 1);                               /* the minute is over */
    sk_log_limited_write(&lim, SK_LOG_WARN, "event=site_d x=%d", 7);
    text = slurp(path);
    assert_non_null(strstr(text, " level=warn event=site_d x=7 suppressed=41\n"));
    assert_int_equal(count_lines(text, "event=site_d"), 1);
    free(text);
    assert_int_equal(sk_log_open(NULL), 0);
    unlink(path);
}

/* Under systemd with stderr on the journal (JOURNAL_STREAM=DEV:INODE of stderr), every line
 * starts with its syslog priority; elsewhere it does not. */
static void journal_lines_carry_the_syslog_priority(void **state)
{
    (void)state;
    char path[] = "/tmp/sk_test_log_XXXXXX", js[64];
    int fd = mkstemp(path), saved = dup(2);
    struct stat st;
    assert_true(fd >= 0 && saved >= 0);
    assert_int_equal(dup2(fd, 2), 2);
    assert_int_equal(fstat(2, &st), 0);
    snprintf(js, sizeof(js), "%llu:%llu", (unsigned long long)st.st_dev, (unsigned long long)st.st_ino);
    setenv("JOURNAL_STREAM", js, 1);
    assert_int_equal(sk_log_open(NULL), 0);
    assert_int_equal(sk_log_syslog_prefix(), 1);
    sk_log(SK_LOG_ERROR, "event=j1");
    sk_log(SK_LOG_WARN, "event=j2");
    sk_log(SK_LOG_INFO, "event=j3");
    setenv("JOURNAL_STREAM", "1:2", 1); /* another stream: stderr was redirected */
    assert_int_equal(sk_log_open(NULL), 0);
    assert_int_equal(sk_log_syslog_prefix(), 0);
    sk_log(SK_LOG_ERROR, "event=j4");
    unsetenv("JOURNAL_STREAM");
    dup2(saved, 2);
    close(saved);
    close(fd);
    char *text = slurp(path);
    assert_int_equal(strncmp(text, "<3>", 3), 0);
    assert_non_null(strstr(text, " level=error event=j1\n<4>"));
    assert_non_null(strstr(text, " level=warn event=j2\n<6>"));
    assert_non_null(strstr(text, " level=info event=j3\n2"));
    assert_non_null(strstr(text, "Z level=error event=j4\n"));
    free(text);
    unlink(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(first_line_passes_then_one_per_interval),
        cmocka_unit_test(one_state_per_call_site),
        cmocka_unit_test(journal_lines_carry_the_syslog_priority),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
