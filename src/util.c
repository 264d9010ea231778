/* util.c: see util.h. */
#include "util.h"
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static void oom(size_t n)
{
    fprintf(stderr, "fatal: out of memory allocating %zu bytes\n", n);
    abort();
}

void (*sk_mem_collect)(void);

void *sk_malloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (p == NULL)
        oom(n);
    return p;
}

void *sk_calloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (p == NULL)
        oom(n * size);
    return p;
}

void *sk_realloc(void *p, size_t n)
{
    if ((p = realloc(p, n ? n : 1)) == NULL)
        oom(n);
    return p;
}

char *sk_strndup(const char *s, size_t n)
{
    if (s == NULL)
        return NULL;
    char *d = sk_malloc(n + 1);
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

int64_t sk_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t sk_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void sk_buf_reserve(sk_buf_t *b, size_t extra)
{
    if (b->len + extra + 1 <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra + 1)
        cap *= 2;
    b->p = sk_realloc(b->p, cap);
    b->cap = cap;
}

void sk_buf_append(sk_buf_t *b, const char *s, size_t n)
{
    sk_buf_reserve(b, n);
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void sk_buf_printf(sk_buf_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n <= 0)
        return;
    sk_buf_reserve(b, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void sk_buf_dispose(sk_buf_t *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

int sk_secret_file_read(const char *path, char *buf, size_t *len, int *group_readable, char *err, size_t errlen)
{
    struct stat st;
    size_t n = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "%s is not a regular file", path);
        close(fd);
        return -1;
    }
    *group_readable = (st.st_mode & (S_IRGRP | S_IROTH)) != 0;
    /* one byte more than allowed: a longer file is refused, never cut */
    for (;;) {
        ssize_t r = read(fd, buf + n, SK_SECRET_FILE_MAX + 1 - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
            close(fd);
            return -1;
        }
        if (r == 0 || (n += (size_t)r) > SK_SECRET_FILE_MAX)
            break;
    }
    close(fd);
    if (n > SK_SECRET_FILE_MAX) {
        snprintf(err, errlen, "%s is larger than %d bytes", path, SK_SECRET_FILE_MAX);
        return -1;
    }
    buf[n] = '\0';
    if (n > 0 && buf[n - 1] == '\n')
        buf[--n] = '\0';
    if (n > 0 && buf[n - 1] == '\r')
        buf[--n] = '\0';
    if (memchr(buf, '\0', n) != NULL) {
        snprintf(err, errlen, "%s holds a NUL byte", path);
        return -1;
    }
    if (memchr(buf, '\n', n) != NULL || memchr(buf, '\r', n) != NULL) {
        snprintf(err, errlen, "%s holds a newline before its end (one secret, one line)", path);
        return -1;
    }
    if (n == 0) {
        snprintf(err, errlen, "%s is empty", path);
        return -1;
    }
    *len = n;
    return 0;
}

char *sk_url_redact(const char *url, char *out, size_t outlen)
{
    const char *scheme = url ? strstr(url, "://") : NULL;
    if (outlen == 0)
        return out;
    if (url == NULL) {
        snprintf(out, outlen, "(none)");
        return out;
    }
    if (scheme == NULL) {
        snprintf(out, outlen, "%s", url);
        return out;
    }
    /* The user info is starred from after the user name (a ':' before the first '@') or from the
     * start, up to the last '@' of the URL: whichever '@' a Redis URL parser takes to end it (a
     * password may hold '@', '/', '#' or '?'), no byte of a password can show. An '@' later in a
     * path or a master name is starred over too: more hidden than needed, never less. */
    const char *auth = scheme + 3, *end = auth + strlen(auth), *first = NULL, *last = NULL;
    for (const char *q = auth; q < end; q++)
        if (*q == '@') {
            if (first == NULL)
                first = q;
            last = q;
        }
    if (last == NULL) {
        snprintf(out, outlen, "%s", url);
        return out;
    }
    const char *colon = memchr(auth, ':', (size_t)(first - auth));
    /* redis://PASSWORD@host (no colon) is a password too, as the Redis store reads it */
    size_t keep = colon ? (size_t)(colon - url) : (size_t)(auth - url);
    snprintf(out, outlen, "%.*s%s***%s", (int)keep, url, colon ? ":" : "", last);
    return out;
}
