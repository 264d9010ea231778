/* sale.c: the rules of a sale (see sale.h). */
#include "sale.h"
#include <string.h>
#include "error.h"

int sk_sale_conf_check(const sk_sale_conf_t *c, const char **why)
{
    if (c->stock < 0 || c->stock > SK_MAX_UNITS) {
        *why = "stock must be an integer from 0 to 2^53";
        return SK_EBAD_REQUEST;
    }
    if (c->per_user_limit < 0 || c->per_user_limit > SK_MAX_UNITS) {
        *why = "per_user_limit must be an integer from 0 to 2^53";
        return SK_EBAD_REQUEST;
    }
    if (c->hold_seconds < 0 || c->hold_seconds > 31536000) {
        *why = "hold_seconds must be an integer from 0 to 31536000";
        return SK_EBAD_REQUEST;
    }
    if ((c->starts_at != SK_NO_TIME && c->starts_at < 0) || (c->ends_at != SK_NO_TIME && c->ends_at < 0)) {
        *why = "starts_at and ends_at must be null or non-negative integers";
        return SK_EBAD_REQUEST;
    }
    if (c->retain_seconds != SK_NO_TIME && (c->retain_seconds < 0 || c->retain_seconds > SK_RETAIN_MAX)) {
        *why = "retain_seconds must be null or an integer from 0 to 315360000";
        return SK_EBAD_REQUEST;
    }
    if (c->starts_at != SK_NO_TIME && c->ends_at != SK_NO_TIME && c->ends_at <= c->starts_at) {
        *why = "ends_at must be after starts_at";
        return SK_EBAD_REQUEST;
    }
    return 0;
}

int sk_sale_retain_due(const sk_sale_conf_t *c, int64_t held, int64_t now)
{
    return c->retain_seconds != SK_NO_TIME && c->ends_at != SK_NO_TIME && held == 0 &&
           now >= c->ends_at + c->retain_seconds;
}

int sk_sale_window(const sk_sale_conf_t *c, int64_t now)
{
    if (c->starts_at != SK_NO_TIME && now < c->starts_at)
        return SK_ENOT_STARTED;
    if (c->ends_at != SK_NO_TIME && now >= c->ends_at)
        return SK_EENDED;
    return 0;
}

int sk_sale_check_take(const sk_sale_conf_t *c, int has_user, int64_t qty, const char **why)
{
    if (qty < 1 || qty > SK_MAX_UNITS) {
        *why = "qty must be an integer from 1 to 2^53";
        return SK_EBAD_REQUEST;
    }
    if (c->per_user_limit > 0 && !has_user) {
        *why = "user is required: this sale has a per-user limit";
        return SK_EBAD_REQUEST;
    }
    return 0;
}

int sk_sale_soldout_answer(int64_t per_user_limit, int has_user, int64_t qty)
{
    sk_sale_conf_t c = {
        .per_user_limit = per_user_limit, .starts_at = SK_NO_TIME, .ends_at = SK_NO_TIME, .retain_seconds = SK_NO_TIME};
    const char *why;
    int rc = sk_sale_check_take(&c, has_user, qty, &why);
    return rc != 0 ? rc : SK_ESOLD_OUT;
}

int sk_sale_check_user(int64_t limit, int64_t taken, int64_t qty)
{
    if (limit > 0 && (qty > limit || taken > limit - qty))
        return SK_EUSER_LIMIT;
    return 0;
}

int sk_sale_check_stock(int64_t remaining, int64_t qty)
{
    return remaining >= qty ? 0 : SK_ESOLD_OUT;
}

int sk_sale_check_restock(int64_t new_stock, int64_t sold, int64_t held)
{
    return new_stock >= sold + held ? 0 : SK_ESTOCK_BELOW_TAKEN;
}

int64_t sk_sale_remaining(const sk_sale_view_t *v)
{
    int64_t r = v->conf.stock - v->sold - v->held;
    return r > 0 ? r : 0;
}

sk_sale_state_t sk_sale_state(const sk_sale_view_t *v, int64_t now)
{
    switch (sk_sale_window(&v->conf, now)) {
    case SK_ENOT_STARTED:
        return SK_SALE_SCHEDULED;
    case SK_EENDED:
        return SK_SALE_ENDED;
    default:
        return sk_sale_remaining(v) == 0 ? SK_SALE_SOLD_OUT : SK_SALE_OPEN;
    }
}

const char *sk_sale_state_name(sk_sale_state_t s)
{
    static const char *const names[] = {"scheduled", "open", "sold_out", "ended"};
    return names[s];
}

int64_t sk_sale_expires_at(int64_t now_ms, int64_t hold_seconds)
{
    if (hold_seconds <= 0)
        return SK_NO_TIME;
    return (now_ms + 999) / 1000 + hold_seconds;
}

sk_order_status_t sk_order_effective(sk_order_status_t st, int64_t expires_at, int64_t now)
{
    if (st == SK_ORDER_HELD && expires_at != SK_NO_TIME && now >= expires_at)
        return SK_ORDER_EXPIRED;
    return st;
}

int sk_order_transition(sk_order_status_t st, int64_t expires_at, int64_t now, sk_order_op_t op,
                        sk_order_status_t *next, int *returns_units)
{
    sk_order_status_t eff = sk_order_effective(st, expires_at, now);
    *next = st;
    *returns_units = 0;
    switch (op) {
    case SK_OP_CONFIRM_ORDER:
        if (eff == SK_ORDER_HELD)
            *next = SK_ORDER_CONFIRMED;
        else if (eff != SK_ORDER_CONFIRMED)
            return SK_EORDER_NOT_HELD;
        return 0;
    case SK_OP_CANCEL_ORDER:
        if (eff == SK_ORDER_HELD || eff == SK_ORDER_CONFIRMED) {
            *next = SK_ORDER_CANCELLED;
            *returns_units = 1;
        } else if (eff != SK_ORDER_CANCELLED) {
            return SK_EORDER_NOT_HELD;
        }
        return 0;
    case SK_OP_EXPIRE_ORDER:
        if (st == SK_ORDER_HELD && eff == SK_ORDER_EXPIRED) {
            *next = SK_ORDER_EXPIRED;
            *returns_units = 1;
            return 0;
        }
        return SK_EORDER_NOT_HELD;
    }
    return SK_EINTERNAL;
}

const char *sk_order_op_name(sk_order_op_t op)
{
    switch (op) {
    case SK_OP_CONFIRM_ORDER:
        return "confirm";
    case SK_OP_CANCEL_ORDER:
        return "cancel";
    case SK_OP_EXPIRE_ORDER:
        return "expire";
    }
    return "?";
}

const char *sk_order_status_name(sk_order_status_t st)
{
    switch (st) {
    case SK_ORDER_HELD:
        return "held";
    case SK_ORDER_CONFIRMED:
        return "confirmed";
    case SK_ORDER_CANCELLED:
        return "cancelled";
    case SK_ORDER_EXPIRED:
        return "expired";
    }
    return "unknown";
}

sk_order_status_t sk_order_status_parse(const char *name)
{
    for (int s = SK_ORDER_HELD; s <= SK_ORDER_EXPIRED; s++)
        if (strcmp(name, sk_order_status_name((sk_order_status_t)s)) == 0)
            return (sk_order_status_t)s;
    return 0;
}
