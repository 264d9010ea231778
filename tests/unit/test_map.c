/* test_map.c: the open-addressing map against a plain reference array: inserts, finds, removes
 * in random order (backward-shift deletion), growth, and sk_hash's seeding. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include "map.h"

typedef struct entry_s {
    sk_map_node_t node;
    int present;
    char key[24];
} entry_t;

#define N 20000

static entry_t *make(void)
{
    entry_t *e = calloc(N, sizeof(*e));
    for (int i = 0; i < N; i++) {
        snprintf(e[i].key, sizeof(e[i].key), "user%d", i);
        e[i].node = (sk_map_node_t){e[i].key, (uint32_t)strlen(e[i].key)};
    }
    return e;
}

static void check(const sk_map_t *m, entry_t *e)
{
    size_t count = 0;
    for (int i = 0; i < N; i++) {
        sk_map_node_t *f = sk_map_find(m, sk_hash(e[i].key, e[i].node.klen), e[i].key, e[i].node.klen);
        if (e[i].present) {
            assert_ptr_equal(f, &e[i].node);
            count++;
        } else {
            assert_null(f);
        }
    }
    assert_int_equal(m->count, count);
}

static void insert_find_remove(void **state)
{
    (void)state;
    sk_map_t m;
    entry_t *e = make();
    sk_map_init(&m);
    assert_null(sk_map_find(&m, sk_hash("x", 1), "x", 1));
    for (int i = 0; i < N; i += 2) {
        sk_map_insert(&m, &e[i].node, sk_hash(e[i].key, e[i].node.klen));
        e[i].present = 1;
    }
    check(&m, e);
    assert_true((m.mask + 1) * 7 >= m.count * 10); /* load stays under 70% */
    /* remove in a scattered order, checking everything as we go */
    srand(7);
    for (int k = 0; k < 4000; k++) {
        int i = (rand() % (N / 2)) * 2;
        if (e[i].present) {
            sk_map_remove(&m, &e[i].node, sk_hash(e[i].key, e[i].node.klen));
            e[i].present = 0;
        } else {
            sk_map_insert(&m, &e[i].node, sk_hash(e[i].key, e[i].node.klen));
            e[i].present = 1;
        }
        if (k % 500 == 0)
            check(&m, e);
    }
    check(&m, e);
    for (int i = 0; i < N; i++)
        if (e[i].present) {
            sk_map_remove(&m, &e[i].node, sk_hash(e[i].key, e[i].node.klen));
            e[i].present = 0;
        }
    check(&m, e);
    assert_int_equal(m.count, 0);
    sk_map_dispose(&m, NULL);
    free(e);
}

static int freed;
static void count_free(sk_map_node_t *n)
{
    (void)n;
    freed++;
}

static void dispose_frees_every_entry(void **state)
{
    (void)state;
    sk_map_t m;
    entry_t *e = make();
    sk_map_init(&m);
    for (int i = 0; i < 1000; i++)
        sk_map_insert(&m, &e[i].node, sk_hash(e[i].key, e[i].node.klen));
    freed = 0;
    sk_map_dispose(&m, count_free);
    assert_int_equal(freed, 1000);
    assert_null(m.tags);
    free(e);
}

static void hash_depends_on_every_byte(void **state)
{
    (void)state;
    const char *a = "abcdefghijklmnopq", *b = "abcdefghijklmnopr";
    assert_int_equal(sk_hash(a, 17), sk_hash(a, 17));
    assert_int_not_equal(sk_hash(a, 17), sk_hash(b, 17));
    assert_int_not_equal(sk_hash(a, 16), sk_hash(a, 17));
    assert_int_not_equal(sk_hash("", 0), sk_hash("\0", 1));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(insert_find_remove),
        cmocka_unit_test(dispose_frees_every_entry),
        cmocka_unit_test(hash_depends_on_every_byte),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
