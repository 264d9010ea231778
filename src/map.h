/* map.h: an intrusive string-keyed hash map, open addressing with linear probing. The embedded
 * store keeps one per lock stripe (users, request ids); callers embed sk_map_node_t in their
 * entry and own its memory. A probe reads a dense array of 32-bit hash tags and touches an entry
 * only when its tag matches, so misses and growth never chase pointers. Not thread-safe:
 * callers hold the stripe's lock. Keys are hashed with a per-process random seed, so that
 * crafted user names cannot be tuned offline to collide. */
#ifndef SK_MAP_H
#define SK_MAP_H

#include <stddef.h>
#include <stdint.h>

typedef struct sk_map_node_s {
    const char *key; /* owned by the entry, usually stored right after it */
    uint32_t klen;
} sk_map_node_t;

typedef struct sk_map_s {
    uint32_t *tags;        /* 0: empty slot; else the low 32 bits of the hash, forced odd */
    sk_map_node_t **slots;
    size_t mask;           /* slots - 1; 0 before the first insert */
    size_t count;
} sk_map_t;

uint64_t sk_hash(const char *key, size_t len);

void sk_map_init(sk_map_t *m);
/* Frees the arrays, and each entry with free_entry when it is not NULL. */
void sk_map_dispose(sk_map_t *m, void (*free_entry)(sk_map_node_t *));
sk_map_node_t *sk_map_find(const sk_map_t *m, uint64_t hash, const char *key, size_t klen);
/* Inserts a node whose key and klen are set, under `hash` (sk_hash of its key); the key must
 * not be present. */
void sk_map_insert(sk_map_t *m, sk_map_node_t *node, uint64_t hash);
/* Unlinks `node` (which must be in the map under `hash`). */
void sk_map_remove(sk_map_t *m, sk_map_node_t *node, uint64_t hash);

#endif
