/* api_internal.h: what api.c reads from a request's head, for the fuzz target
 * tests/fuzz/fuzz_head.c. Nothing else includes this:
 * handlers go through sk_api_register (server.h). */
#ifndef SK_API_INTERNAL_H
#define SK_API_INTERNAL_H

#define H2O_USE_LIBUV 0
#include <h2o.h>
#include <stddef.h>
#include <stdint.h>
#include "store.h"
#include "util.h"

#define SK_API_RATE_KEY_MAX 160

/* The size of the request head as the client sent it, in HTTP/1.1 form ("METHOD PATH
 * HTTP/1.1\r\n", "name: value\r\n" for each header and the Host header, a blank line): what
 * --max-head-bytes limits. h2o consumes Content-Length, Transfer-Encoding, Expect and Upgrade
 * itself and keeps only the last Host: those lines are not seen (h2o's own limit on a head,
 * 417,792 bytes, bounds them). */
size_t sk_api_head_size(const h2o_req_t *req);

/* 1 when the first Authorization header is "Bearer TOKEN" (the scheme in any case, one space)
 * for exactly `token`, compared in constant time; else 0. */
int sk_api_token_ok(const h2o_req_t *req, const char *token);

/* 1 when an Accept header lists text/csv (in any case) without q=0; else 0 (JSON). */
int sk_api_wants_csv(const h2o_req_t *req);

/* The rate limit's key for a request into key[SK_API_RATE_KEY_MAX]: "u:USER" when the request
 * names a user (ulen bytes), else "a:" and the first X-Forwarded-For address (trailing spaces
 * cut, at most 100 bytes) when trust_proxy is set and the header is there, else "a:" and the
 * peer's numeric address. Returns the key's length (NUL-terminated, at most
 * SK_API_RATE_KEY_MAX - 1 bytes). */
size_t sk_api_rate_key(h2o_req_t *req, int trust_proxy, const char *user, size_t ulen, char *key);

/* How much of a request target the access log may show: all of it, or the path alone when the
 * query carries a token (the dashboard's ?token=). */
size_t sk_api_log_path_len(const char *path, size_t len);

#endif
