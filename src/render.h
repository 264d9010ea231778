/* render.h: the JSON bodies of orders and sales, written straight into a buffer. These are the
 * replies of the hot paths (every take that wins or replays), where building a jansson tree
 * cost about fifteen allocations per reply; tests/unit/test_render.c checks the output against
 * jansson's parser. Strings are escaped per RFC 8259 (identifiers are valid UTF-8 by then). */
#ifndef SK_RENDER_H
#define SK_RENDER_H

#include <stddef.h>
#include <stdint.h>
#include "store.h"
#include "util.h"

/* Large enough for any order or sale object (128-byte identifiers escaped as \uXXXX). */
#define SK_RENDER_MAX 2048

/* Write the object into buf (size SK_RENDER_MAX) and return its length. `now` decides the shown
 * status of a held order past its deadline and a sale's state. */
size_t sk_render_order(char *buf, const sk_order_t *o, int64_t now);
size_t sk_render_sale(char *buf, const sk_sale_view_t *v, int64_t now);

/* The listings, appended to b: {"sales":[...]} and {"orders":[...],"next":NEXT} (next: the cursor
 * of the following page, or NULL for null). */
void sk_render_sale_list(sk_buf_t *b, const sk_sale_view_t *views, size_t n, int64_t now);
void sk_render_order_list(sk_buf_t *b, const sk_order_t *orders, size_t n, const char *next, int64_t now);

/* Appends the orders as GET /v1/sales/{sale}/orders sends them with Accept: text/csv: a header
 * line, then one line per order (CRLF), fields quoted per RFC 4180 where they must be; `now`
 * decides the shown status of a held order. */
void sk_render_orders_csv(sk_buf_t *b, const sk_order_t *orders, size_t n, int64_t now);

#endif
