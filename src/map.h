/* map.h: an intrusive string-keyed hash map with chaining. The embedded store keeps one per lock
 * stripe (users, request ids); callers embed sk_map_node_t first in their entry and own its
 * memory. Not thread-safe: callers hold the stripe's lock. Keys are hashed with a per-process
 * random seed, so that crafted user names cannot force collisions across restarts. */
#ifndef SK_MAP_H
#define SK_MAP_H

#include <stddef.h>
#include <stdint.h>

typedef struct sk_map_node_s {
    struct sk_map_node_s *next; /* bucket chain */
    uint64_t hash;
    const char *key; /* owned by the entry, usually stored right after it */
    uint32_t klen;
} sk_map_node_t;

typedef struct sk_map_s {
    sk_map_node_t **buckets;
    size_t mask;  /* nbuckets - 1; 0 before the first insert */
    size_t count;
} sk_map_t;

uint64_t sk_hash(const char *key, size_t len);

void sk_map_init(sk_map_t *m);
/* Frees the bucket array, and each entry with free_entry when it is not NULL. */
void sk_map_dispose(sk_map_t *m, void (*free_entry)(sk_map_node_t *));
sk_map_node_t *sk_map_find(const sk_map_t *m, uint64_t hash, const char *key, size_t klen);
/* Inserts a node whose hash, key and klen are set; the key must not be present. */
void sk_map_insert(sk_map_t *m, sk_map_node_t *node);
/* Unlinks `node` (which must be in the map). */
void sk_map_remove(sk_map_t *m, sk_map_node_t *node);

#endif
