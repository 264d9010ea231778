/* accesslog.c: see accesslog.h. The descriptor number never changes once opened: a reopen (or a
 * reload naming another file) opens the new file and dup2()s it over the old number, which is
 * atomic for concurrent writers; turning the log off puts /dev/null there, so that a worker
 * flushing at that moment never writes into a descriptor reused for something else. */
#include "accesslog.h"
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "util.h"

#define BUF_MAX 65536

static _Atomic int fd = -1;
static _Atomic int on; /* lines are collected */
static char *path_;    /* NULL when off; the main thread's */

static __thread char *buf;
static __thread size_t len;
static __thread int64_t last_flush_ms;
static __thread time_t stamp_sec;
static __thread char stamp[32];

int sk_accesslog_open(const char *path)
{
    return sk_accesslog_set(path);
}

/* Puts nfd's file at the log's descriptor number (or makes nfd that number the first time). */
static int install(int nfd)
{
    if (fd < 0) {
        fd = nfd;
        return 0;
    }
    int rc = dup2(nfd, fd) < 0 ? -1 : 0;
    close(nfd);
    return rc;
}

int sk_accesslog_set(const char *path)
{
    int nfd;
    if (path == NULL) {
        if (!on)
            return 0;
        on = 0;
        if ((nfd = open("/dev/null", O_WRONLY | O_CLOEXEC)) >= 0)
            install(nfd);
        free(path_);
        path_ = NULL;
        return 0;
    }
    if ((nfd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640)) < 0)
        return -1;
    if (install(nfd) != 0)
        return -1;
    free(path_);
    path_ = sk_strndup(path, strlen(path));
    on = 1;
    return 0;
}

int sk_accesslog_reopen(void)
{
    if (path_ == NULL)
        return 0;
    int nfd = open(path_, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (nfd < 0)
        return -1;
    int rc = dup2(nfd, fd) < 0 ? -1 : 0;
    close(nfd);
    return rc;
}

int sk_accesslog_enabled(void)
{
    return on;
}

void sk_accesslog_flush(int force)
{
    if (len == 0)
        return;
    int64_t now = sk_mono_ms();
    if (!force && now - last_flush_ms < 1000)
        return;
    for (size_t off = 0; off < len;) {
        ssize_t n = write(fd, buf + off, len - off);
        if (n <= 0)
            break; /* the log is best effort: a full disk must not stop the sale */
        off += (size_t)n;
    }
    len = 0;
    last_flush_ms = now;
}

void sk_accesslog_add(const char *client, const char *method, size_t mlen, const char *path, size_t plen,
                      int status, const char *outcome, int64_t latency_us)
{
    if (!on)
        return;
    if (buf == NULL) {
        buf = sk_malloc(BUF_MAX);
        last_flush_ms = sk_mono_ms();
    }
    time_t now = time(NULL);
    if (now != stamp_sec) {
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%SZ", &tm);
        stamp_sec = now;
    }
    if (plen > 512)
        plen = 512;
    if (len + 700 > BUF_MAX)
        sk_accesslog_flush(1);
    size_t start = len;
    int n = snprintf(buf + len, BUF_MAX - len, "%s %s %.*s %.*s %d %s %lld\n", stamp, client, (int)mlen, method,
                     (int)plen, path, status, outcome, (long long)latency_us);
    if (n > 0 && (size_t)n < BUF_MAX - len) {
        /* the path is the client's: keep one line per request whatever it holds */
        for (size_t i = start; i < start + (size_t)n - 1; i++)
            if ((unsigned char)buf[i] < 0x20)
                buf[i] = '?';
        len += (size_t)n;
    }
    sk_accesslog_flush(0);
}
