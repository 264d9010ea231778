/* ratelimit.h: per-client token buckets shared by all worker threads, in a fixed-size table
 * (bounded memory however many clients appear). Each client hashes to a set of a few entries
 * under a striped lock; a new client evicts the set's least recently seen entry, which then
 * starts again with a full bucket (the limiter errs on the side of admitting). */
#ifndef SK_RATELIMIT_H
#define SK_RATELIMIT_H

#include <stddef.h>
#include <stdint.h>

typedef struct sk_ratelimit_s sk_ratelimit_t;

/* `rate` tokens per second, at most `burst` saved; `sets` (a power of two) times 4 entries. */
sk_ratelimit_t *sk_ratelimit_new(int64_t rate, int64_t burst, size_t sets);
void sk_ratelimit_free(sk_ratelimit_t *rl);

/* Takes one token for `key` at `now_ms`. Returns 0 if allowed, else 1 with *retry_after set to
 * the whole seconds until a token is available (at least 1). */
int sk_ratelimit_take(sk_ratelimit_t *rl, const char *key, size_t len, int64_t now_ms, int *retry_after);

#endif
