/* util.c: see util.h. */
#include "util.h"
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void oom(size_t n)
{
    fprintf(stderr, "fatal: out of memory allocating %zu bytes\n", n);
    abort();
}

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
    const char *auth = scheme + 3, *end = auth + strcspn(auth, "/?#"), *at = NULL;
    for (const char *q = auth; q < end; q++) /* the last '@': a password may hold one */
        if (*q == '@')
            at = q;
    if (at == NULL) {
        snprintf(out, outlen, "%s", url);
        return out;
    }
    const char *colon = memchr(auth, ':', (size_t)(at - auth));
    /* redis://PASSWORD@host (no colon) is a password too, as the Redis store reads it */
    size_t keep = colon ? (size_t)(colon - url) : (size_t)(auth - url);
    snprintf(out, outlen, "%.*s%s***%s", (int)keep, url, colon ? ":" : "", at);
    return out;
}
