/* util.h: small helpers used everywhere: allocation that aborts on out-of-memory (as redis and
 * h2o do, so error paths handle real failures only), clocks, and string copies. */
#ifndef SK_UTIL_H
#define SK_UTIL_H

#include <stddef.h>
#include <stdint.h>

#define SK_CONTAINER_OF(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

void *sk_malloc(size_t n);
void *sk_calloc(size_t n, size_t size);
void *sk_realloc(void *p, size_t n);
char *sk_strndup(const char *s, size_t n); /* NULL in, NULL out */
/* url for messages and logs: a password in it (redis://[USER]:PASSWORD@...) becomes `***`; the
 * result, cut to fit, is always NUL-terminated. Returns out. */
char *sk_url_redact(const char *url, char *out, size_t outlen);

/* Gives what the calling thread has freed back to the system, where the allocator keeps it for
 * the thread otherwise: mimalloc keeps a thread's freed pages (and the frees other threads made
 * into them) for that thread's next allocations. Set by main.c for the allocator seckilld is
 * linked with; NULL (the library and the tests) does nothing. Called after freeing much at once
 * (deleted sales, store_embed.c), never on a request's path. */
extern void (*sk_mem_collect)(void);

int64_t sk_now_ms(void); /* wall clock, milliseconds since the epoch */
int64_t sk_mono_ms(void);

/* The most bytes a secret file (admin token, buyer-token secret) may hold. */
#define SK_SECRET_FILE_MAX 4096

/* Reads a secret file whole into buf (SK_SECRET_FILE_MAX + 1 bytes), NUL-terminated, *len its
 * length: one final newline ("\n" or "\r\n") is trimmed; a file over SK_SECRET_FILE_MAX bytes,
 * holding a NUL or a newline anywhere but at its end, or empty is refused (never cut). Sets
 * *group_readable when group or others may read it. Returns 0, or -1 with a message in err. */
int sk_secret_file_read(const char *path, char *buf, size_t *len, int *group_readable, char *err, size_t errlen);

/* A growable byte buffer for building replies. */
typedef struct sk_buf_s {
    char *p;
    size_t len, cap;
} sk_buf_t;

void sk_buf_reserve(sk_buf_t *b, size_t extra);
void sk_buf_append(sk_buf_t *b, const char *s, size_t n);
void sk_buf_printf(sk_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void sk_buf_dispose(sk_buf_t *b);
#endif
