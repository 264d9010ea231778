/* render.h: the JSON bodies of orders and sales, written straight into a buffer. These are the
 * replies of the hot paths (every take that wins or replays), where building a jansson tree
 * cost about fifteen allocations per reply; tests/unit/test_render.c checks the output against
 * jansson's parser. Strings are escaped per RFC 8259 (identifiers are valid UTF-8 by then). */
#ifndef SK_RENDER_H
#define SK_RENDER_H

#include <stddef.h>
#include <stdint.h>
#include "store.h"

/* Large enough for any order or sale object (128-byte identifiers escaped as \uXXXX). */
#define SK_RENDER_MAX 2048

/* Write the object into buf (size SK_RENDER_MAX) and return its length. `now` decides the shown
 * status of a held order past its deadline and a sale's state. */
size_t sk_render_order(char *buf, const sk_order_t *o, int64_t now);
size_t sk_render_sale(char *buf, const sk_sale_view_t *v, int64_t now);

#endif
