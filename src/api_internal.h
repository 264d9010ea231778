/* api_internal.h: what api.c reads from a request's head, for the fuzz target
 * tests/fuzz/fuzz_head.c. Nothing else includes this:
 * handlers go through sk_api_register (server.h). */
#ifndef SK_API_INTERNAL_H
#define SK_API_INTERNAL_H

#define H2O_USE_LIBUV 0
#include <h2o.h>
#include <stddef.h>
#include <stdint.h>
#include "proxy.h"
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

/* The client's address (proxy.h) into out (NI_MAXHOST bytes): the peer, or with trust_peer
 * (--trust-proxy) or a peer in `trusted` (--trusted-proxies), the right-most X-Forwarded-For
 * entry that is not a trusted proxy. Returns its length. */
size_t sk_api_client_addr(h2o_req_t *req, const sk_cidrs_t *trusted, int trust_peer, char *out);

/* The rate limit's key for a request into key[SK_API_RATE_KEY_MAX]: "u:USER" for a verified
 * buyer (ulen bytes), else "a:" and the client's address (sk_api_client_addr). Returns the key's
 * length (NUL-terminated, at most SK_API_RATE_KEY_MAX - 1 bytes). */
size_t sk_api_rate_key(h2o_req_t *req, const sk_cidrs_t *trusted, int trust_peer, const char *user, size_t ulen,
                       char *key);

/* Why the raw HTTP/1 head buf[0..len) must be refused (400 and close), or NULL: differing
 * Content-Length values, Content-Length with Transfer-Encoding, a Transfer-Encoding other than
 * one `chunked`, Transfer-Encoding in HTTP/1.0, a folded header line (obs-fold). The head is read
 * with h2o's own parser; one it cannot read is refused. */
const char *sk_api_wire_check(const char *buf, size_t len);

/* 1 when the authority (Host: name[:port]) names one of hosts (case-insensitive; "*": any). */
int sk_api_host_allowed(const char *authority, size_t len, char *const *hosts, size_t nhosts);

/* 1 when the request has one Content-Type and it is application/json (parameters allowed). */
int sk_api_json_content_type(const h2o_req_t *req);

/* 1 when the request has no Origin, or one naming the request's own Host (http or https). */
int sk_api_origin_ok(const h2o_req_t *req);

/* How much of a request target the access log may show: all of it, or the path alone when the
 * query carries a token (the dashboard's ?token=). */
size_t sk_api_log_path_len(const char *path, size_t len);

#endif
