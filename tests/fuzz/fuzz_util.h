/* fuzz_util.h: what the fuzz targets share: the CHECK macro (an oracle that fails aborts, which
 * libFuzzer and the corpus replay both report as a crash), a reader that turns the fuzz input
 * into structured values (bytes from the front, never past the end), and reference validators
 * written independently of src/ to check its parsers against. Header-only: each target is one
 * translation unit. */
#ifndef SK_FUZZ_UTIL_H
#define SK_FUZZ_UTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                                    \
    do {                                                                                                               \
        if (!(cond)) {                                                                                                 \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond);                               \
            abort();                                                                                                   \
        }                                                                                                              \
    } while (0)

/* An oracle's own code need not guide the fuzzer (its branches are not the parser's): left out
 * of coverage, it costs a fast target less (fuzz_writers reads back every body it writes). */
#if defined(__clang__)
#define FZ_ORACLE __attribute__((no_sanitize("coverage")))
#else
#define FZ_ORACLE
#endif

/* ---- a reader over the input: past the end every read gives zeros / empty ---- */

typedef struct {
    const uint8_t *p;
    size_t n;
} fz_t;

static inline uint8_t fz_u8(fz_t *f)
{
    if (f->n == 0)
        return 0;
    f->n--;
    return *f->p++;
}

static inline uint64_t fz_u64(fz_t *f, unsigned bytes)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < bytes; i++)
        v = v << 8 | fz_u8(f);
    return v;
}

/* A signed value: small ones often, then the edges of int64_t. */
static inline int64_t fz_i64(fz_t *f)
{
    uint8_t k = fz_u8(f);
    switch (k % 8) {
    case 0:
        return (int64_t)(k >> 3) - 4; /* -4..27 */
    case 1:
        return (int64_t)fz_u64(f, 1);
    case 2:
        return (int64_t)fz_u64(f, 2);
    case 3:
        return (int64_t)fz_u64(f, 4);
    case 4:
        return (int64_t)fz_u64(f, 8);
    case 5:
        return -(int64_t)fz_u64(f, 2);
    case 6:
        return (k & 8) ? INT64_MIN : INT64_MAX;
    default:
        return (int64_t)(UINT64_C(1) << 53) + (int64_t)(k >> 4) - 8; /* around SK_MAX_UNITS */
    }
}

/* Up to `max` bytes, length first; *out points into the input (not NUL-terminated). */
static inline size_t fz_bytes(fz_t *f, size_t max, const uint8_t **out)
{
    size_t len = fz_u8(f);
    if (len > max)
        len %= max + 1;
    if (len > f->n)
        len = f->n;
    *out = f->p;
    f->p += len;
    f->n -= len;
    return len;
}

/* The same into buf[cap] as a C string: bytes after a NUL are dropped. Returns strlen(buf). */
static inline size_t fz_str(fz_t *f, char *buf, size_t cap)
{
    const uint8_t *p;
    size_t n = fz_bytes(f, cap - 1, &p);
    memcpy(buf, p, n);
    buf[n] = '\0';
    return strlen(buf);
}

/* A new private directory for the target's files, `dir` (size cap): in /dev/shm when it can be
 * had (a file system in memory: the config and rebuild targets write a file per input, which on
 * a disk costs them most of their speed), else in $TMPDIR or /tmp. Returns 0 or -1. */
static inline int fz_tmpdir(char *dir, size_t cap, const char *what)
{
    const char *tmp = getenv("TMPDIR");
    const char *bases[] = {"/dev/shm", tmp != NULL && tmp[0] != '\0' ? tmp : "/tmp", "/tmp"};
    for (size_t i = 0; i < sizeof(bases) / sizeof(bases[0]); i++) {
        if ((size_t)snprintf(dir, cap, "%s/sk-fuzz-%s.XXXXXX", bases[i], what) < cap && mkdtemp(dir) != NULL)
            return 0;
    }
    return -1;
}

/* ---- references ---- */

/* Well-formed UTF-8 per the Unicode standard's table 3-7, byte ranges by lead byte, and no
 * control characters (C0, DEL, C1), 1..128 bytes: what a user or request id may be. */
static inline int ref_valid_ident(const uint8_t *s, size_t len)
{
    size_t i = 0;
    if (len < 1 || len > 128)
        return 0;
    while (i < len) {
        uint8_t b = s[i];
        uint8_t lo = 0x80, hi = 0xbf;
        size_t n;
        if (b <= 0x7f) {
            if (b <= 0x1f || b == 0x7f)
                return 0;
            i++;
            continue;
        }
        if (b >= 0xc2 && b <= 0xdf) {
            n = 1;
            if (b == 0xc2 && i + 1 < len && s[i + 1] <= 0x9f)
                return 0; /* U+0080..U+009F: C1 controls */
        } else if (b == 0xe0) {
            n = 2, lo = 0xa0;
        } else if ((b >= 0xe1 && b <= 0xec) || b == 0xee || b == 0xef) {
            n = 2;
        } else if (b == 0xed) {
            n = 2, hi = 0x9f;
        } else if (b == 0xf0) {
            n = 3, lo = 0x90;
        } else if (b >= 0xf1 && b <= 0xf3) {
            n = 3;
        } else if (b == 0xf4) {
            n = 3, hi = 0x8f;
        } else {
            return 0;
        }
        if (len - i - 1 < n)
            return 0;
        if (s[i + 1] < lo || s[i + 1] > hi)
            return 0;
        for (size_t k = 2; k <= n; k++)
            if (s[i + k] < 0x80 || s[i + k] > 0xbf)
                return 0;
        i += n + 1;
    }
    return 1;
}

/* [A-Za-z0-9_.-]{1,64}: what a sale id may be. */
static inline int ref_valid_sale_id(const uint8_t *s, size_t len)
{
    static const char ok[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-";
    if (len < 1 || len > 64)
        return 0;
    for (size_t i = 0; i < len; i++)
        if (s[i] == 0 || strchr(ok, s[i]) == NULL)
            return 0;
    return 1;
}

/* A hex digit's value, or -1: by lookup, where src/ uses comparisons. */
static inline int ref_hex(uint8_t c)
{
    static const char digits[] = "0123456789abcdefABCDEF";
    const char *d = c != 0 ? strchr(digits, c) : NULL;
    if (d == NULL)
        return -1;
    return d - digits < 16 ? (int)(d - digits) : (int)(d - digits) - 6;
}

#endif
