/* parse.c: see parse.h. jansson does the JSON (with UTF-8 validation, duplicate-key rejection
 * and no NUL in strings); this file checks shapes, types and ranges. The one exception is the
 * take body, the request of a flash sale's storm: its usual shapes are scanned directly, and all
 * else is left to jansson (sk_parse_take). */
#include "parse.h"
#include <stdio.h>
#include <string.h>
#include "error.h"



static int fail(const char **why, const char *msg)
{
    *why = msg;
    return SK_EBAD_REQUEST;
}

/* "unknown field 'KEY' in the body", KEY cut to 64 bytes on a UTF-8 boundary (jansson's keys are
 * valid UTF-8, and the message goes into a JSON reply). Valid until the thread's next parse. */
static int fail_unknown(const char **why, const char *key)
{
    static __thread char msg[128];
    size_t n = strlen(key);
    if (n > 64) {
        n = 64;
        while (n > 0 && ((unsigned char)key[n] & 0xC0) == 0x80)
            n--;
    }
    snprintf(msg, sizeof(msg), "unknown field '%.*s' in the body", (int)n, key);
    return fail(why, msg);
}

static json_t *load_object(const char *buf, size_t len, const char **why)
{
    json_error_t e;
    json_t *root;
    if (len == 0)
        return json_object();
    if ((root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &e)) == NULL) {
        *why = "the body is not valid JSON";
        return NULL;
    }
    if (!json_is_object(root)) {
        json_decref(root);
        *why = "the body must be a JSON object";
        return NULL;
    }
    return root;
}

/* Integers only: 1.0, true and "1" are type errors, as are values past 2^53. */
static int get_int(json_t *v, int64_t min, int64_t max, int64_t *out)
{
    if (!json_is_integer(v))
        return -1;
    json_int_t i = json_integer_value(v);
    if (i < min || i > max)
        return -1;
    *out = (int64_t)i;
    return 0;
}

int sk_valid_sale_id(const char *s, size_t len)
{
    if (len < 1 || len > SK_SALE_ID_MAX)
        return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
              c == '-'))
            return 0;
    }
    return 1;
}

int sk_valid_ident(const char *s, size_t len)
{
    if (len < 1 || len > SK_IDENT_MAX)
        return 0;
    for (size_t i = 0; i < len;) {
        unsigned char c = (unsigned char)s[i];
        size_t n;
        uint32_t cp;
        if (c < 0x80) {
            if (c < 0x20 || c == 0x7f)
                return 0;
            i++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            n = 2, cp = c & 0x1f;
        } else if ((c & 0xf0) == 0xe0) {
            n = 3, cp = c & 0x0f;
        } else if ((c & 0xf8) == 0xf0) {
            n = 4, cp = c & 0x07;
        } else {
            return 0;
        }
        if (i + n > len)
            return 0;
        for (size_t k = 1; k < n; k++) {
            unsigned char cc = (unsigned char)s[i + k];
            if ((cc & 0xc0) != 0x80)
                return 0;
            cp = (cp << 6) | (cc & 0x3f);
        }
        /* overlong forms, surrogates, past U+10FFFF, and C1 controls */
        if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || cp > 0x10ffff ||
            (cp >= 0xd800 && cp <= 0xdfff) || (cp >= 0x80 && cp <= 0x9f))
            return 0;
        i += n;
    }
    return 1;
}

uint64_t sk_parse_order_id(const char *s, size_t len)
{
    uint64_t v = 0;
    if (len < 1 || len > 19 || s[0] == '0')
        return 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return 0;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    return v <= (uint64_t)INT64_MAX ? v : 0;
}

/* ---- the take body ---- */

static void take_init(sk_take_body_t *out)
{
    out->user = NULL;
    out->user_len = 0;
    out->qty = 1;
    out->request_id = NULL;
    out->request_id_len = 0;
    out->user_buf[0] = '\0';
    out->request_id_buf[0] = '\0';
}

/* Copies a checked identifier (1..SK_IDENT_MAX bytes) into the body. */
static void take_set(char *buf, const char **dst, size_t *dlen, const char *s, size_t len)
{
    memcpy(buf, s, len);
    buf[len] = '\0';
    *dst = buf;
    *dlen = len;
}

static const char *skip_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

/* The direct scan. It accepts a strict subset of what the jansson path accepts, and for that
 * subset gives the same result; anything it is not sure of, it declines (returns 0) at once. */
int sk_parse_take_direct(const char *buf, size_t len, sk_take_body_t *out)
{
    const char *p = buf, *end;
    unsigned seen = 0;
    take_init(out);
    if (len == 0)
        return 1; /* no body (buf may be NULL): {} */
    end = buf + len;
    p = skip_ws(p, end);
    if (p == end || *p++ != '{')
        return 0;
    p = skip_ws(p, end);
    if (p < end && *p == '}') {
        p++;
        return skip_ws(p, end) == end;
    }
    for (;;) {
        const char *k, *s;
        size_t klen, slen;
        unsigned field;
        if (p == end || *p++ != '"')
            return 0;
        for (k = p; p < end && *p != '"' && *p != '\\'; p++)
            ;
        if (p == end || *p != '"')
            return 0;
        klen = (size_t)(p++ - k);
        if (klen == 4 && memcmp(k, "user", 4) == 0)
            field = 1;
        else if (klen == 3 && memcmp(k, "qty", 3) == 0)
            field = 2;
        else if (klen == 10 && memcmp(k, "request_id", 10) == 0)
            field = 4;
        else
            return 0; /* unknown field: jansson's path says so */
        if (seen & field)
            return 0; /* duplicate key */
        seen |= field;
        p = skip_ws(p, end);
        if (p == end || *p++ != ':')
            return 0;
        p = skip_ws(p, end);
        if (field == 2) {
            /* 1..2^53 written plainly: no sign, leading zero, fraction or exponent */
            int64_t v = 0;
            const char *d = p;
            if (p == end || *p < '1' || *p > '9')
                return 0;
            for (; p < end && *p >= '0' && *p <= '9' && p - d < 16; p++)
                v = v * 10 + (*p - '0');
            if (p < end && ((*p >= '0' && *p <= '9') || *p == '.' || *p == 'e' || *p == 'E'))
                return 0;
            if (v > SK_MAX_UNITS)
                return 0;
            out->qty = v;
        } else {
            /* a string without escapes or raw control characters, then the identifier rules */
            if (p == end || *p++ != '"')
                return 0;
            for (s = p; p < end && *p != '"' && *p != '\\' && (unsigned char)*p >= 0x20; p++)
                ;
            if (p == end || *p != '"')
                return 0;
            slen = (size_t)(p++ - s);
            if (!sk_valid_ident(s, slen))
                return 0;
            if (field == 1)
                take_set(out->user_buf, &out->user, &out->user_len, s, slen);
            else
                take_set(out->request_id_buf, &out->request_id, &out->request_id_len, s, slen);
        }
        p = skip_ws(p, end);
        if (p == end)
            return 0;
        if (*p == '}')
            return skip_ws(p + 1, end) == end;
        if (*p++ != ',')
            return 0;
        p = skip_ws(p, end);
    }
}

int sk_parse_take_json(const char *buf, size_t len, sk_take_body_t *out, const char **why)
{
    const char *key;
    json_t *v, *root;
    int rc = 0;
    take_init(out);
    if ((root = load_object(buf, len, why)) == NULL)
        return SK_EBAD_REQUEST;
    json_object_foreach(root, key, v)
    {
        if (strcmp(key, "user") == 0) {
            if (json_is_null(v))
                continue;
            if (!json_is_string(v) || !sk_valid_ident(json_string_value(v), json_string_length(v))) {
                rc = fail(why, "user must be 1-128 bytes of UTF-8 without control characters");
                break;
            }
            take_set(out->user_buf, &out->user, &out->user_len, json_string_value(v), json_string_length(v));
        } else if (strcmp(key, "qty") == 0) {
            if (get_int(v, 1, SK_MAX_UNITS, &out->qty) != 0) {
                rc = fail(why, "qty must be an integer from 1 to 2^53");
                break;
            }
        } else if (strcmp(key, "request_id") == 0) {
            if (json_is_null(v))
                continue;
            if (!json_is_string(v) || !sk_valid_ident(json_string_value(v), json_string_length(v))) {
                rc = fail(why, "request_id must be 1-128 bytes of UTF-8 without control characters");
                break;
            }
            take_set(out->request_id_buf, &out->request_id, &out->request_id_len, json_string_value(v),
                     json_string_length(v));
        } else {
            rc = fail_unknown(why, key);
            break;
        }
    }
    json_decref(root);
    if (rc != 0)
        take_init(out); /* nothing half-read after a failure */
    return rc;
}

int sk_parse_take(const char *buf, size_t len, sk_take_body_t *out, const char **why)
{
    if (sk_parse_take_direct(buf, len, out))
        return 0;
    return sk_parse_take_json(buf, len, out, why);
}

int sk_parse_sale_conf(const char *buf, size_t len, sk_sale_conf_t *out, const char **why)
{
    const char *key;
    json_t *v, *root;
    int have_stock = 0, rc = SK_EBAD_REQUEST;
    *out = (sk_sale_conf_t){0, 0, 0, SK_NO_TIME, SK_NO_TIME, SK_NO_TIME};
    if ((root = load_object(buf, len, why)) == NULL)
        return SK_EBAD_REQUEST;
    json_object_foreach(root, key, v)
    {
        if (strcmp(key, "stock") == 0) {
            if (get_int(v, 0, SK_MAX_UNITS, &out->stock) != 0) {
                fail(why, "stock must be an integer from 0 to 2^53");
                goto out;
            }
            have_stock = 1;
        } else if (strcmp(key, "per_user_limit") == 0) {
            if (get_int(v, 0, SK_MAX_UNITS, &out->per_user_limit) != 0) {
                fail(why, "per_user_limit must be an integer from 0 to 2^53");
                goto out;
            }
        } else if (strcmp(key, "hold_seconds") == 0) {
            if (get_int(v, 0, 31536000, &out->hold_seconds) != 0) {
                fail(why, "hold_seconds must be an integer from 0 to 31536000");
                goto out;
            }
        } else if (strcmp(key, "retain_seconds") == 0) {
            if (json_is_null(v))
                out->retain_seconds = SK_NO_TIME;
            else if (get_int(v, 0, SK_RETAIN_MAX, &out->retain_seconds) != 0) {
                fail(why, "retain_seconds must be null or an integer from 0 to 315360000");
                goto out;
            }
        } else if (strcmp(key, "starts_at") == 0 || strcmp(key, "ends_at") == 0) {
            int64_t *t = key[0] == 's' ? &out->starts_at : &out->ends_at;
            if (json_is_null(v))
                *t = SK_NO_TIME;
            else if (get_int(v, 0, INT64_C(253402300799), t) != 0) {
                fail(why, "starts_at and ends_at must be null or integer seconds since the epoch");
                goto out;
            }
        } else {
            fail_unknown(why, key);
            goto out;
        }
    }
    if (!have_stock) {
        fail(why, "stock is required");
        goto out;
    }
    rc = sk_sale_conf_check(out, why);
out:
    json_decref(root);
    return rc;
}

static int query_value(const char *q, size_t len, const char *name, const char **val, size_t *vlen)
{
    size_t nlen = strlen(name);
    if (q == NULL || len == 0)
        return 0;
    const char *end = q + len;
    for (;;) {
        const char *amp = memchr(q, '&', (size_t)(end - q));
        const char *pe = amp ? amp : end;
        if ((size_t)(pe - q) > nlen && memcmp(q, name, nlen) == 0 && q[nlen] == '=') {
            *val = q + nlen + 1;
            *vlen = (size_t)(pe - *val);
            return 1;
        }
        if (amp == NULL)
            return 0;
        q = amp + 1;
    }
}

/* A decimal below 2^64 without sign or leading zeros ("0" itself allowed). */
static int parse_u64(const char *s, size_t len, uint64_t *out)
{
    uint64_t v = 0;
    if (len == 0 || len > 20 || (len > 1 && s[0] == '0'))
        return -1;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        unsigned d = (unsigned)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

int sk_parse_cursor(const char *s, size_t len, uint64_t *hi, uint64_t *lo)
{
    const char *dash = s != NULL && len > 0 ? memchr(s, '-', len) : NULL;
    if (dash == NULL || parse_u64(s, (size_t)(dash - s), hi) != 0 ||
        parse_u64(dash + 1, len - (size_t)(dash - s) - 1, lo) != 0)
        return -1;
    return 0;
}

int sk_parse_feed_query(const char *q, size_t len, uint64_t *hi, uint64_t *lo, unsigned *limit, unsigned *wait,
                        const char **why)
{
    const char *v;
    size_t vlen;
    uint64_t n;
    *hi = *lo = 0;
    *limit = 100;
    *wait = 0;
    if (query_value(q, len, "after", &v, &vlen) && sk_parse_cursor(v, vlen, hi, lo) != 0)
        return fail(why, "after must be a cursor from this feed");
    if (query_value(q, len, "limit", &v, &vlen)) {
        if (parse_u64(v, vlen, &n) != 0 || n < 1 || n > 1000)
            return fail(why, "limit must be an integer from 1 to 1000");
        *limit = (unsigned)n;
    }
    if (query_value(q, len, "wait", &v, &vlen)) {
        if (parse_u64(v, vlen, &n) != 0 || n > 60)
            return fail(why, "wait must be an integer from 0 to 60 (seconds)");
        *wait = (unsigned)n;
    }
    return 0;
}

int sk_parse_export_query(const char *q, size_t len, int *bom, const char **why)
{
    const char *v;
    size_t vlen;
    *bom = 0;
    if (query_value(q, len, "bom", &v, &vlen)) {
        if (vlen != 1 || (v[0] != '0' && v[0] != '1'))
            return fail(why, "bom must be 0 or 1");
        *bom = v[0] == '1';
    }
    return 0;
}

int sk_parse_list_query(const char *q, size_t len, uint64_t *after, unsigned *limit, const char **why)
{
    const char *v;
    size_t vlen;
    *after = 0;
    *limit = 100;
    if (query_value(q, len, "after", &v, &vlen)) {
        if (vlen == 1 && v[0] == '0')
            *after = 0;
        else if ((*after = sk_parse_order_id(v, vlen)) == 0)
            return fail(why, "after must be an order id");
    }
    if (query_value(q, len, "limit", &v, &vlen)) {
        uint64_t n = sk_parse_order_id(v, vlen);
        if (n < 1 || n > 1000)
            return fail(why, "limit must be an integer from 1 to 1000");
        *limit = (unsigned)n;
    }
    return 0;
}
