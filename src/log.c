/* log.c: see log.h. Lines are formatted into a local buffer and written with one write(2), so
 * lines from different threads never interleave. A rate-limited call site costs, while it is
 * held back, one relaxed load and one atomic add: no lock, no formatting. */
#include "log.h"
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include "util.h"

_Atomic sk_log_level_t sk_log_level = SK_LOG_INFO;
static const char *const level_names[] = {"debug", "info", "warn", "error"};
static const char *const syslog_prefixes[] = {"<7>", "<6>", "<4>", "<3>"}; /* LOG_DEBUG ... LOG_ERR */
static int log_fd = 2;
static _Atomic int log_journal; /* log_fd is stderr, and stderr is the journal: prefix `<N>` */
static char *log_path;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

/* systemd sets JOURNAL_STREAM=DEV:INODE when stderr is connected to the journal (systemd.exec(5));
 * checked against stderr itself, since a child of the service may have redirected it. */
static int stderr_is_journal(void)
{
    const char *js = getenv("JOURNAL_STREAM");
    unsigned long long dev, ino;
    struct stat st;
    if (js == NULL || sscanf(js, "%llu:%llu", &dev, &ino) != 2 || fstat(2, &st) != 0)
        return 0;
    return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

/* Makes fd (2: stderr) the destination, closing the previous file. */
static void set_fd(int fd)
{
    pthread_mutex_lock(&log_lock);
    int old = log_fd;
    log_fd = fd;
    log_journal = fd == 2 && stderr_is_journal();
    pthread_mutex_unlock(&log_lock);
    if (old != 2 && old != fd)
        close(old);
}

static int open_path(const char *path)
{
    return open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
}

int sk_log_open(const char *path)
{
    int fd = 2;
    if (path != NULL && (fd = open_path(path)) < 0)
        return -1;
    free(log_path);
    log_path = path ? strdup(path) : NULL;
    set_fd(fd);
    return 0;
}

int sk_log_reopen(void)
{
    if (log_path == NULL)
        return 0;
    int fd = open_path(log_path);
    if (fd < 0)
        return -1;
    set_fd(fd);
    return 0;
}

const char *sk_log_level_name(sk_log_level_t level)
{
    return level_names[level];
}

int sk_log_syslog_prefix(void)
{
    return log_journal;
}

int sk_log_parse_level(const char *name, sk_log_level_t *out)
{
    for (int i = 0; i < 4; i++)
        if (strcmp(name, level_names[i]) == 0)
            return *out = (sk_log_level_t)i, 0;
    return -1;
}

/* Formats and writes one line; `suffix` (may be NULL) goes at its end. */
__attribute__((format(printf, 3, 0))) static void log_vwrite(sk_log_level_t level, const char *suffix, const char *fmt, va_list ap)
{
    char buf[2048];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts); /* a timestamp, the one thing the wall clock is for */
    gmtime_r(&ts.tv_sec, &tm);
    /* log_journal is read without the lock: at worst one line around a reload has the other form */
    int n = snprintf(buf, sizeof(buf), "%s%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ level=%s ",
                     log_journal ? syslog_prefixes[level] : "", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                     tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000, level_names[level]);
    int m = vsnprintf(buf + n, sizeof(buf) - (size_t)n - 1, fmt, ap);
    if (m < 0)
        m = 0;
    n += m;
    if (n > (int)sizeof(buf) - 2)
        n = (int)sizeof(buf) - 2;
    if (suffix != NULL) {
        size_t k = strlen(suffix);
        if (k > sizeof(buf) - 2 - (size_t)n)
            k = sizeof(buf) - 2 - (size_t)n;
        memcpy(buf + n, suffix, k);
        n += (int)k;
    }
    buf[n++] = '\n';
    int saved = errno;
    pthread_mutex_lock(&log_lock);
    ssize_t w = write(log_fd, buf, (size_t)n);
    pthread_mutex_unlock(&log_lock);
    (void)w;
    errno = saved;
}

void sk_log_write(sk_log_level_t level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_vwrite(level, NULL, fmt, ap);
    va_end(ap);
}

int sk_log_limit_pass(sk_log_limit_t *lim, int64_t now_ms, uint64_t *suppressed)
{
    int64_t next = atomic_load_explicit(&lim->next_ms, memory_order_relaxed);
    /* the first thread past the deadline moves it; the others count themselves */
    if ((next != 0 && now_ms < next) ||
        !atomic_compare_exchange_strong(&lim->next_ms, &next, now_ms + SK_LOG_LIMIT_MS)) {
        atomic_fetch_add_explicit(&lim->suppressed, 1, memory_order_relaxed);
        return 0;
    }
    *suppressed = atomic_exchange(&lim->suppressed, 0);
    return 1;
}

void sk_log_limited_write(sk_log_limit_t *lim, sk_log_level_t level, const char *fmt, ...)
{
    uint64_t suppressed;
    char suffix[40];
    if (!sk_log_limit_pass(lim, sk_mono_ms(), &suppressed))
        return;
    suffix[0] = '\0';
    if (suppressed > 0)
        snprintf(suffix, sizeof(suffix), " suppressed=%llu", (unsigned long long)suppressed);
    va_list ap;
    va_start(ap, fmt);
    log_vwrite(level, suffix, fmt, ap);
    va_end(ap);
}
