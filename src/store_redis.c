/* store_redis.c: the Redis store (not implemented yet: see issue 3). */
#include <stdio.h>
#include "store.h"

sk_store_t *sk_store_redis_open(const char *url, int threads, char *err, size_t errlen)
{
    (void)threads;
    snprintf(err, errlen, "the redis store is not implemented yet (%s): unsupported", url);
    return NULL;
}
