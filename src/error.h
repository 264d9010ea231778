/* error.h: the one table of errors. Each row generates an SK_E* code (negative), its HTTP
 * status, the API's `error` string and a default message, so API.md's tables and the server
 * cannot drift apart. Handlers return these codes; http.c turns them into replies. */
#ifndef SK_ERROR_H
#define SK_ERROR_H

#define SK_ERROR_MAP(XX)                                                                                               \
    XX(BAD_REQUEST, 400, "bad_request", "the request is malformed")                                                    \
    XX(UNAUTHORIZED, 401, "unauthorized", "a valid admin token is required")                                           \
    XX(FORBIDDEN, 403, "forbidden", "this credential does not allow this request")                                     \
    XX(NOT_STARTED, 403, "not_started", "the sale has not started yet")                                                \
    XX(ENDED, 403, "ended", "the sale has ended")                                                                      \
    XX(NOT_FOUND, 404, "not_found", "no such route")                                                                   \
    XX(NO_SUCH_SALE, 404, "no_such_sale", "no such sale")                                                              \
    XX(NO_SUCH_ORDER, 404, "no_such_order", "no such order")                                                           \
    XX(METHOD_NOT_ALLOWED, 405, "method_not_allowed", "method not allowed on this route")                              \
    XX(SOLD_OUT, 409, "sold_out", "no units left")                                                                     \
    XX(USER_LIMIT, 409, "user_limit", "this user would pass the sale's per-user limit")                                \
    XX(REQUEST_ID_REUSED, 409, "request_id_reused", "this request_id was used with another user or qty")               \
    XX(STOCK_BELOW_TAKEN, 409, "stock_below_taken", "stock cannot go below sold + held")                               \
    XX(ORDER_NOT_HELD, 409, "order_not_held", "the order is no longer held")                                           \
    XX(SALE_ACTIVE, 409, "sale_active", "a sale can be deleted once it has ended and holds no held order")             \
    XX(CURSOR_EXPIRED, 410, "cursor_expired", "events after this cursor have left the feed's retention")               \
    XX(UNSUPPORTED_MEDIA_TYPE, 415, "unsupported_media_type",                                                          \
       "a mutating admin request needs Content-Type: application/json")                                                \
    XX(MISDIRECTED, 421, "misdirected_request", "this listener does not answer to that Host")                          \
    XX(BODY_TOO_LARGE, 413, "body_too_large", "the request body is too large")                                         \
    XX(HEAD_TOO_LARGE, 431, "head_too_large", "the request head is too large")                                         \
    XX(RATE_LIMITED, 429, "rate_limited", "too many requests from this client")                                        \
    XX(TOO_MANY_SALES, 507, "too_many_sales", "the server's sale table is full")                                       \
    XX(INTERNAL, 500, "internal", "internal error")                                                                    \
    XX(UNAVAILABLE, 503, "unavailable", "the store is unreachable or failed; the outcome is unknown")

/* 0 is success; every error is negative so that `if (rc < 0)` reads naturally. */
typedef enum sk_err_e {
    SK_OK = 0,
#define XX(name, status, code, msg) SK_E##name,
    SK_ERR_FIRST_ = -100,
    SK_ERROR_MAP(XX)
#undef XX
    SK_ERR_END_
} sk_err_t;

#define SK_ERR_COUNT (SK_ERR_END_ - SK_ERR_FIRST_ - 1)

/* HTTP status, API code and message of an error; unknown codes map to INTERNAL. */
int sk_err_status(int err);
const char *sk_err_code(int err);
const char *sk_err_message(int err);

#endif
