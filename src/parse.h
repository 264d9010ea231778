/* parse.h: request-body and identifier parsing, on jansson. Everything that meets the network
 * goes through here and is fuzzed by tests/fuzz/fuzz_body.c. On error, functions return
 * SK_EBAD_REQUEST and set *why to a human-readable message: static, or (an unknown field, named in
 * it) the calling thread's, valid until its next parse. */
#ifndef SK_PARSE_H
#define SK_PARSE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include "sale.h"

/* A parsed take body. It owns its strings (NUL-terminated copies), so it outlives the request
 * buffer it was read from; nothing to dispose. Not to be copied: user and request_id point into
 * the struct itself. */
typedef struct sk_take_body_s {
    const char *user;       /* NULL when absent, else user_buf */
    size_t user_len;
    int64_t qty;            /* 1 when absent */
    const char *request_id; /* NULL when absent, else request_id_buf */
    size_t request_id_len;
    char user_buf[SK_IDENT_MAX + 1];
    char request_id_buf[SK_IDENT_MAX + 1];
} sk_take_body_t;

/* Parses {"user": str, "qty": int, "request_id": str}, all optional. An empty body is {}.
 * The bodies clients send (those three keys at most once each, strings without escapes, qty a
 * plain integer, JSON whitespace anywhere between tokens) are read by a direct scan; every other
 * body, each error included, goes to jansson, which stays the authority. Either way the result is
 * the one sk_parse_take_json gives: tests/fuzz/fuzz_body.c checks that on every input. */
int sk_parse_take(const char *buf, size_t len, sk_take_body_t *out, const char **why);
/* The same with jansson only (the reference of the direct scan). */
int sk_parse_take_json(const char *buf, size_t len, sk_take_body_t *out, const char **why);
/* The direct scan alone: 1 when it read the body into *out, 0 when it left it to jansson. */
int sk_parse_take_direct(const char *buf, size_t len, sk_take_body_t *out);

/* Parses a sale definition {"stock": int, "per_user_limit", "hold_seconds", "starts_at",
 * "ends_at"} (stock required; times may be null) and checks it with sk_sale_conf_check. */
int sk_parse_sale_conf(const char *buf, size_t len, sk_sale_conf_t *out, const char **why);

/* 1 if s matches [A-Za-z0-9_.-]{1,64}. */
int sk_valid_sale_id(const char *s, size_t len);
/* 1 if s is 1-128 bytes of valid UTF-8 with no control characters. */
int sk_valid_ident(const char *s, size_t len);
/* Parses a decimal order id (1..2^63-1, no sign, no leading zeros); returns 0 when invalid. */
uint64_t sk_parse_order_id(const char *s, size_t len);

/* Parses the query string of an order listing: after=ORDER&limit=N (both optional). */
int sk_parse_list_query(const char *q, size_t len, uint64_t *after, unsigned *limit, const char **why);

/* Parses the query string of an export: bom=0|1 (optional; other parameters are ignored, as in a
 * listing). */
int sk_parse_export_query(const char *q, size_t len, int *bom, const char **why);

/* Parses a feed cursor "HI-LO" (two decimal integers below 2^64, no sign, no leading zeros);
 * returns 0, or -1 when it is not one. */
int sk_parse_cursor(const char *s, size_t len, uint64_t *hi, uint64_t *lo);

/* Parses the query string of the feed, GET /v1/orders: after=CURSOR (default 0-0, the start),
 * limit=1..1000 (default 100), wait=0..60 seconds (default 0). Other parameters are ignored. */
int sk_parse_feed_query(const char *q, size_t len, uint64_t *hi, uint64_t *lo, unsigned *limit, unsigned *wait,
                        const char **why);

#endif
