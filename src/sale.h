/* sale.h: the rules of a flash sale as pure functions over plain values. No I/O, no locks, no
 * clock: callers pass `now`. The embedded store calls these under its stripe locks or on its
 * atomics; the Redis scripts implement the same rules in Lua (see src/lua/); the unit tests in
 * tests/unit/test_sale.c pin them down. */
#ifndef SK_SALE_H
#define SK_SALE_H

#include <stddef.h>
#include <stdint.h>

#define SK_NO_TIME INT64_MIN              /* a null starts_at / ends_at / expires_at */
#define SK_MAX_UNITS (INT64_C(1) << 53)   /* largest stock, qty and per_user_limit */
#define SK_SALE_ID_MAX 64
#define SK_IDENT_MAX 128                  /* user ids and request ids */

typedef enum sk_order_status_e {
    SK_ORDER_HELD = 1,
    SK_ORDER_CONFIRMED = 2,
    SK_ORDER_CANCELLED = 3,
    SK_ORDER_EXPIRED = 4,
} sk_order_status_t;

typedef enum sk_sale_state_e {
    SK_SALE_SCHEDULED,
    SK_SALE_OPEN,
    SK_SALE_SOLD_OUT,
    SK_SALE_ENDED,
} sk_sale_state_t;

typedef enum sk_order_op_e {
    SK_OP_CONFIRM_ORDER,
    SK_OP_CANCEL_ORDER,
    SK_OP_EXPIRE_ORDER,
} sk_order_op_t;

/* What an admin sets with PUT /v1/sales/{sale}. */
typedef struct sk_sale_conf_s {
    int64_t stock;          /* total units, 0..SK_MAX_UNITS */
    int64_t per_user_limit; /* 0: no limit */
    int64_t hold_seconds;   /* 0: orders are final when taken */
    int64_t starts_at;      /* SK_NO_TIME: open from creation */
    int64_t ends_at;        /* SK_NO_TIME: never ends */
    int64_t retain_seconds; /* SK_NO_TIME: kept until deleted; else deleted this long after it ends */
} sk_sale_conf_t;

/* A sale as GET /v1/sales/{sale} shows it. */
typedef struct sk_sale_view_s {
    char id[SK_SALE_ID_MAX + 1];
    sk_sale_conf_t conf;
    int64_t sold; /* units of confirmed orders */
    int64_t held; /* units of held orders */
} sk_sale_view_t;

/* 0 if the configuration is acceptable, else SK_EBAD_REQUEST with *why set. */
int sk_sale_conf_check(const sk_sale_conf_t *conf, const char **why);

#define SK_RETAIN_MAX INT64_C(315360000) /* ten years */

/* 1 when a sale with these settings, ended, holding `held` units, is due for deletion at `now`
 * (retain_seconds past ends_at, nothing held). */
int sk_sale_retain_due(const sk_sale_conf_t *conf, int64_t held, int64_t now);

/* 0 if buying is allowed at `now`, else SK_ENOT_STARTED or SK_EENDED. */
int sk_sale_window(const sk_sale_conf_t *conf, int64_t now);

/* Request-level rules that need the sale: a user is required when a limit is set. */
int sk_sale_check_take(const sk_sale_conf_t *conf, int has_user, int64_t qty, const char **why);

/* What a take gets from a sale known to be sold out (the Redis store's cache of that answer, with
 * the sale's per-user limit as it learnt it): the request-level rules that come before stock in
 * docs/API.md, then sold_out. The caller has checked the window and that there is no request id
 * (a replay is answered even when sold out). */
int sk_sale_soldout_answer(int64_t per_user_limit, int has_user, int64_t qty);

/* 0 if a user who already holds or bought `taken` units may take `qty` more, else SK_EUSER_LIMIT. */
int sk_sale_check_user(int64_t per_user_limit, int64_t taken, int64_t qty);

/* 0 if `qty` units can come out of `remaining`, else SK_ESOLD_OUT. */
int sk_sale_check_stock(int64_t remaining, int64_t qty);

/* 0 if stock may be set to `new_stock` given what is sold and held, else SK_ESTOCK_BELOW_TAKEN. */
int sk_sale_check_restock(int64_t new_stock, int64_t sold, int64_t held);

/* remaining = stock - sold - held, never negative. */
int64_t sk_sale_remaining(const sk_sale_view_t *v);

sk_sale_state_t sk_sale_state(const sk_sale_view_t *v, int64_t now);
const char *sk_sale_state_name(sk_sale_state_t s);

/* When a hold taken at `now_ms` (milliseconds) for `hold_seconds` expires: the take's time
 * rounded up to a whole second, plus hold_seconds. SK_NO_TIME when hold_seconds is 0. */
int64_t sk_sale_expires_at(int64_t now_ms, int64_t hold_seconds);

/* The status an order shows at `now`: a held order past expires_at is expired. */
sk_order_status_t sk_order_effective(sk_order_status_t st, int64_t expires_at, int64_t now);

/* Applies `op` to an order of status `st` at `now`. On success returns 0, sets *next and sets
 * *returns_units to 1 when the order's units go back to the sale and the user's allowance
 * (0 when the op changes nothing, as in confirming a confirmed order). Else SK_EORDER_NOT_HELD. */
int sk_order_transition(sk_order_status_t st, int64_t expires_at, int64_t now, sk_order_op_t op,
                        sk_order_status_t *next, int *returns_units);

const char *sk_order_status_name(sk_order_status_t st);
/* "confirm", "cancel", "expire" (the Redis change script's argument). */
const char *sk_order_op_name(sk_order_op_t op);
/* Parses a status name; returns 0 when unknown. */
sk_order_status_t sk_order_status_parse(const char *name);

#endif
