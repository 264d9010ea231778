/* ratelimit.c: see ratelimit.h. Tokens are kept in thousandths so that the arithmetic is exact
 * integer arithmetic. */
#include "ratelimit.h"
#include <pthread.h>
#include <stdlib.h>
#include "map.h"
#include "util.h"

#define WAYS 4
#define NLOCKS 256

typedef struct entry_s {
    uint64_t hash;   /* 0: empty */
    int64_t milli;   /* tokens * 1000 */
    int64_t last_ms; /* last refill */
} entry_t;

struct sk_ratelimit_s {
    int64_t rate, burst;
    size_t mask;
    entry_t *sets; /* sets * WAYS */
    pthread_mutex_t locks[NLOCKS];
};

sk_ratelimit_t *sk_ratelimit_new(int64_t rate, int64_t burst, size_t sets)
{
    sk_ratelimit_t *rl = sk_calloc(1, sizeof(*rl));
    rl->rate = rate;
    rl->burst = burst > 0 ? burst : rate;
    rl->mask = sets - 1;
    rl->sets = sk_calloc(sets * WAYS, sizeof(entry_t));
    for (int i = 0; i < NLOCKS; i++)
        pthread_mutex_init(&rl->locks[i], NULL);
    return rl;
}

void sk_ratelimit_free(sk_ratelimit_t *rl)
{
    if (rl == NULL)
        return;
    for (int i = 0; i < NLOCKS; i++)
        pthread_mutex_destroy(&rl->locks[i]);
    free(rl->sets);
    free(rl);
}

int sk_ratelimit_take(sk_ratelimit_t *rl, const char *key, size_t len, int64_t now_ms, int *retry_after)
{
    uint64_t h = sk_hash(key, len) | 1;
    size_t set = (size_t)(h >> 20) & rl->mask;
    entry_t *e = &rl->sets[set * WAYS], *hit = NULL, *oldest = e;
    int limited = 0;
    pthread_mutex_t *lock = &rl->locks[set & (NLOCKS - 1)];

    pthread_mutex_lock(lock);
    for (int i = 0; i < WAYS && hit == NULL; i++)
        if (e[i].hash == h)
            hit = &e[i];
    for (int i = 0; i < WAYS && hit == NULL; i++) {
        if (e[i].hash == 0) {
            oldest = &e[i];
            break;
        }
        if (e[i].last_ms < oldest->last_ms)
            oldest = &e[i];
    }
    if (hit == NULL) {
        hit = oldest;
        hit->hash = h;
        hit->milli = rl->burst * 1000;
        hit->last_ms = now_ms;
    }
    int64_t dt = now_ms - hit->last_ms;
    if (dt > 0) {
        hit->milli += dt * rl->rate; /* rate tokens/s = rate milli-tokens/ms */
        if (hit->milli > rl->burst * 1000)
            hit->milli = rl->burst * 1000;
        hit->last_ms = now_ms;
    }
    if (hit->milli >= 1000) {
        hit->milli -= 1000;
    } else {
        limited = 1;
        int64_t ms = (1000 - hit->milli + rl->rate - 1) / rl->rate;
        *retry_after = (int)((ms + 999) / 1000);
        if (*retry_after < 1)
            *retry_after = 1;
    }
    pthread_mutex_unlock(lock);
    return limited;
}
