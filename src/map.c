/* map.c: see map.h. */
#include "map.h"
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include "util.h"

static uint64_t seed;

static uint64_t mix(uint64_t h)
{
    h ^= h >> 33;
    h *= UINT64_C(0xff51afd7ed558ccd);
    h ^= h >> 33;
    h *= UINT64_C(0xc4ceb9fe1a85ec53);
    h ^= h >> 33;
    return h;
}

__attribute__((constructor)) static void seed_init(void)
{
    if (getrandom(&seed, sizeof(seed), GRND_NONBLOCK) != (ssize_t)sizeof(seed))
        seed = (uint64_t)(uintptr_t)&seed ^ UINT64_C(0x9e3779b97f4a7c15);
}

uint64_t sk_hash(const char *key, size_t len)
{
    /* 8 bytes at a time through a strong 64-bit mixer, keyed by the seed */
    uint64_t h = seed ^ (len * UINT64_C(0x9e3779b97f4a7c15));
    while (len >= 8) {
        uint64_t w;
        memcpy(&w, key, 8);
        h = mix(h ^ w) + UINT64_C(0x9e3779b97f4a7c15);
        key += 8;
        len -= 8;
    }
    uint64_t w = 0;
    memcpy(&w, key, len);
    return mix(h ^ w ^ seed);
}

void sk_map_init(sk_map_t *m)
{
    memset(m, 0, sizeof(*m));
}

void sk_map_dispose(sk_map_t *m, void (*free_entry)(sk_map_node_t *))
{
    if (m->buckets != NULL && free_entry != NULL) {
        for (size_t i = 0; i <= m->mask; i++) {
            sk_map_node_t *n = m->buckets[i];
            while (n != NULL) {
                sk_map_node_t *next = n->next;
                free_entry(n);
                n = next;
            }
        }
    }
    free(m->buckets);
    sk_map_init(m);
}

sk_map_node_t *sk_map_find(const sk_map_t *m, uint64_t hash, const char *key, size_t klen)
{
    if (m->buckets == NULL)
        return NULL;
    for (sk_map_node_t *n = m->buckets[hash & m->mask]; n != NULL; n = n->next)
        if (n->hash == hash && n->klen == klen && memcmp(n->key, key, klen) == 0)
            return n;
    return NULL;
}

static void grow(sk_map_t *m)
{
    size_t nb = m->buckets == NULL ? 8 : (m->mask + 1) * 2;
    sk_map_node_t **b = sk_calloc(nb, sizeof(*b));
    if (m->buckets != NULL) {
        for (size_t i = 0; i <= m->mask; i++) {
            sk_map_node_t *n = m->buckets[i];
            while (n != NULL) {
                sk_map_node_t *next = n->next;
                n->next = b[n->hash & (nb - 1)];
                b[n->hash & (nb - 1)] = n;
                n = next;
            }
        }
        free(m->buckets);
    }
    m->buckets = b;
    m->mask = nb - 1;
}

void sk_map_insert(sk_map_t *m, sk_map_node_t *node)
{
    if (m->buckets == NULL || m->count >= m->mask + 1)
        grow(m);
    sk_map_node_t **slot = &m->buckets[node->hash & m->mask];
    node->next = *slot;
    *slot = node;
    m->count++;
}

void sk_map_remove(sk_map_t *m, sk_map_node_t *node)
{
    for (sk_map_node_t **p = &m->buckets[node->hash & m->mask]; *p != NULL; p = &(*p)->next) {
        if (*p == node) {
            *p = node->next;
            m->count--;
            return;
        }
    }
}
