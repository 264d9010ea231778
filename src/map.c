/* map.c: see map.h. */
#include "map.h"
#include <assert.h>
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

static inline uint32_t tag_of(uint64_t hash)
{
    return (uint32_t)hash | 1;
}

void sk_map_init(sk_map_t *m)
{
    memset(m, 0, sizeof(*m));
}

void sk_map_dispose(sk_map_t *m, void (*free_entry)(sk_map_node_t *))
{
    if (m->tags != NULL && free_entry != NULL)
        for (size_t i = 0; i <= m->mask; i++)
            if (m->tags[i] != 0)
                free_entry(m->slots[i]);
    free(m->tags);
    free(m->slots);
    sk_map_init(m);
}

sk_map_node_t *sk_map_find(const sk_map_t *m, uint64_t hash, const char *key, size_t klen)
{
    if (m->tags == NULL)
        return NULL;
    uint32_t tag = tag_of(hash);
    for (size_t i = (tag >> 1) & m->mask;; i = (i + 1) & m->mask) {
        uint32_t t = m->tags[i];
        if (t == 0)
            return NULL;
        if (t == tag) {
            sk_map_node_t *n = m->slots[i];
            if (n->klen == klen && memcmp(n->key, key, klen) == 0)
                return n;
        }
    }
}

static void place(uint32_t *tags, sk_map_node_t **slots, size_t mask, uint32_t tag, sk_map_node_t *node)
{
    size_t i = (tag >> 1) & mask;
    while (tags[i] != 0)
        i = (i + 1) & mask;
    tags[i] = tag;
    slots[i] = node;
}

/* Doubles the table (at 70% load); entries move by their tags alone. */
static void grow(sk_map_t *m)
{
    size_t n = m->tags == NULL ? 8 : (m->mask + 1) * 2;
    uint32_t *tags = sk_calloc(n, sizeof(*tags));
    sk_map_node_t **slots = sk_calloc(n, sizeof(*slots));
    if (m->tags != NULL) {
        for (size_t i = 0; i <= m->mask; i++)
            if (m->tags[i] != 0)
                place(tags, slots, n - 1, m->tags[i], m->slots[i]);
        free(m->tags);
        free(m->slots);
    }
    m->tags = tags;
    m->slots = slots;
    m->mask = n - 1;
}

void sk_map_insert(sk_map_t *m, sk_map_node_t *node, uint64_t hash)
{
    if (m->tags == NULL || (m->count + 1) * 10 > (m->mask + 1) * 7)
        grow(m);
    place(m->tags, m->slots, m->mask, tag_of(hash), node);
    m->count++;
}

void sk_map_remove(sk_map_t *m, sk_map_node_t *node, uint64_t hash)
{
    size_t i = (tag_of(hash) >> 1) & m->mask;
    while (m->slots[i] != node || m->tags[i] == 0) {
        assert(m->tags[i] != 0); /* the node is in the map: its probe run reaches it before a hole */
        i = (i + 1) & m->mask;
    }
    /* backward-shift deletion: pull later entries of the probe run into the hole */
    for (size_t j = (i + 1) & m->mask; m->tags[j] != 0; j = (j + 1) & m->mask) {
        size_t home = (m->tags[j] >> 1) & m->mask;
        /* move j into the hole at i unless its home lies cyclically in (i, j] */
        if (((j - home) & m->mask) >= ((j - i) & m->mask)) {
            m->tags[i] = m->tags[j];
            m->slots[i] = m->slots[j];
            i = j;
        }
    }
    m->tags[i] = 0;
    m->count--;
}
