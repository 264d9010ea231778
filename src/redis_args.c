/* redis_args.c: what the Redis store's commands send (store_redis_internal.h). The scripts,
 * composed once at start: each is its shebang, the result codes as Lua locals (SK_REDIS_RESULTS),
 * common.lua, then the script (src/lua/, embedded at build time). A script call's keys and
 * arguments, in the order its script reads them (common.lua's K, then ARGV), written again when
 * the call is re-sent as EVAL. A plain command's words. Where a command goes, and what comes
 * back, is store_redis.c's. */
#include <stdio.h>
#include <string.h>
#include "store_redis_internal.h"
#include "util.h"

/* holds per reap call (~5 ms of Redis); a sale with more due gets the next call at once */
#define REAP_MAX 1000

/* the scripts, generated from the .lua files of src/lua by cmake/embed.cmake */
extern const char sk_lua_common[], sk_lua_take[], sk_lua_put[], sk_lua_view[], sk_lua_order[], sk_lua_orders[],
    sk_lua_change[], sk_lua_reap[], sk_lua_delete[], sk_lua_due_get[], sk_lua_due_add[], sk_lua_due_set[],
    sk_lua_feed[], sk_lua_feedtrim[], sk_lua_relay[], sk_lua_relay_mark[];

static const struct {
    const char *name;
    const char *body;
    int readonly; /* sent with flags=no-writes */
} SCRIPTS[S_COUNT] = {
    [S_TAKE] = {"take", sk_lua_take, 0},
    [S_PUT] = {"put", sk_lua_put, 0},
    [S_VIEW] = {"view", sk_lua_view, 1},
    [S_ORDER] = {"order", sk_lua_order, 1},
    [S_ORDERS] = {"orders", sk_lua_orders, 1},
    [S_CHANGE] = {"change", sk_lua_change, 0},
    [S_REAP] = {"reap", sk_lua_reap, 0},
    [S_DELETE] = {"delete", sk_lua_delete, 0},
    [S_DUE_GET] = {"due_get", sk_lua_due_get, 1},
    [S_DUE_ADD] = {"due_add", sk_lua_due_add, 0},
    [S_DUE_SET] = {"due_set", sk_lua_due_set, 0},
    [S_FEED] = {"feed", sk_lua_feed, 1},
    [S_FEEDTRIM] = {"feedtrim", sk_lua_feedtrim, 0},
    [S_RELAY] = {"relay", sk_lua_relay, 0},
    [S_RELAY_MARK] = {"relay_mark", sk_lua_relay_mark, 0},
};

/* Every script gets these keys of its sale, in this order (common.lua's K). */
static const char *const KEY_SUFFIX[] = {"", ":users", ":holds", ":stream", ":rids", ":seq", ":orders"};
#define NKEYS (sizeof(KEY_SUFFIX) / sizeof(KEY_SUFFIX[0]))

/* Each script as sent: the shebang with its flags, the result codes, common.lua, the script. */
int sk_store_redis_load_scripts(redis_t *r, char *err, size_t errlen)
{
    static const char *const NAMES[RC_COUNT_] = {
#define XX(name, e) "R_" #name,
        SK_REDIS_RESULTS(XX)
#undef XX
    };
    sk_buf_t codes = {0};
    for (int i = 0; i < RC_COUNT_; i++) /* one line each: Lua allows 200 locals, not 200 values a line */
        sk_buf_printf(&codes, "local %s = %d\n", NAMES[i], i);
    for (int i = 0; i < S_COUNT; i++) {
        sk_buf_t b = {0};
        sk_buf_printf(&b, "#!lua%s\n", SCRIPTS[i].readonly ? " flags=no-writes" : "");
        sk_buf_append(&b, codes.p, codes.len);
        sk_buf_append(&b, sk_lua_common, strlen(sk_lua_common));
        sk_buf_append(&b, "\n", 1);
        sk_buf_append(&b, SCRIPTS[i].body, strlen(SCRIPTS[i].body));
        if (sk_redis_script_init(&r->scripts[i], SCRIPTS[i].name, b.p, b.len) != 0) {
            snprintf(err, errlen, "cannot compute the SHA1 of script %s", SCRIPTS[i].name);
            sk_buf_dispose(&codes);
            return -1;
        }
    }
    sk_buf_dispose(&codes);
    return 0;
}

/* The last key of every sale script (common.lua's K.feed): the feed, sk:feed, or on a Redis Cluster
 * the stream of the slot whose tag is `tag`, so that every script touches one slot only. */
static void args_feed(sk_redis_argv_t *a, const worker_t *w, const char *tag)
{
    if (w->r->cl != NULL)
        sk_redis_arg_printf(a, "sk:slot:{%s}%s", tag, SLOT_FEED);
    else
        sk_redis_arg_s(a, FEED_KEY);
}

/* The sale's keys, then `nextra` keys of its slot's own (SLOT_*; declared as KEYS too, so that
 * Redis knows them). */
static void args_keys_and(sk_redis_argv_t *a, const worker_t *w, const char *sale, const char *const *extra,
                          size_t nextra)
{
    const char *tag = sk_redis_slot_tag(sk_redis_sale_slot(sale, strlen(sale)));
    sk_redis_arg_u(a, NKEYS + nextra + 1);
    for (size_t i = 0; i < NKEYS; i++)
        sk_redis_arg_printf(a, "sk:{%s}%s", sale, KEY_SUFFIX[i]);
    for (size_t i = 0; i < nextra; i++)
        sk_redis_arg_printf(a, "sk:slot:{%s}%s", tag, extra[i]);
    args_feed(a, w, tag);
}

/* The index's keys (due_*.lua). */
static void args_index(sk_redis_argv_t *a)
{
    sk_redis_arg_u(a, 2);
    sk_redis_arg_s(a, IDX_DUE);
    sk_redis_arg_s(a, IDX_VER);
}

static void args_keys(sk_redis_argv_t *a, const worker_t *w, const char *sale)
{
    args_keys_and(a, w, sale, NULL, 0);
}

static void args_time(sk_redis_argv_t *a, int64_t t)
{
    if (t == SK_NO_TIME)
        sk_redis_arg(a, "", 0);
    else
        sk_redis_arg_i(a, t);
}

/* A script command's keys and arguments (again when it is re-sent as EVAL). */
void sk_store_redis_cmd_args(sk_redis_cmd_t *super, sk_redis_argv_t *a)
{
    cmd_t *cmd = (cmd_t *)super;
    const sk_store_req_t *req = cmd->req;
    switch (cmd->type) {
    case C_TAKE: {
        static const char *const extra[] = {SLOT_DUE};
        args_keys_and(a, cmd->w, req->sale, extra, 1); /* every take of the batch is of this sale */
        sk_redis_arg_u(a, cmd->nreqs);
        for (const sk_store_req_t *q = req; q != NULL; q = q->next) {
            sk_redis_arg(a, q->user ? q->user : "", q->user ? q->user_len : 0);
            sk_redis_arg_i(a, q->qty);
            sk_redis_arg(a, q->request_id ? q->request_id : "", q->request_id ? q->request_id_len : 0);
        }
        return;
    }
    case C_VIEW:
        args_keys(a, cmd->w, req->sale);
        return;
    case C_LIST_VIEW:
        args_keys(a, cmd->w, cmd->sale);
        return;
    case C_PUT: {
        static const char *const extra[] = {SLOT_SALES, SLOT_TOMBSTONES, SLOT_DUE};
        args_keys_and(a, cmd->w, req->sale, extra, 3);
        sk_redis_arg_i(a, req->conf.stock);
        sk_redis_arg_i(a, req->conf.per_user_limit);
        sk_redis_arg_i(a, req->conf.hold_seconds);
        args_time(a, req->conf.starts_at);
        args_time(a, req->conf.ends_at);
        sk_redis_arg_s(a, req->sale);
        args_time(a, req->conf.retain_seconds);
        return;
    }
    case C_DELETE: {
        static const char *const extra[] = {SLOT_SALES, SLOT_DUE, SLOT_TOMBSTONES};
        args_keys_and(a, cmd->w, req->sale, extra, 3);
        sk_redis_arg_s(a, req->sale);
        return;
    }
    case C_ORDER:
        args_keys(a, cmd->w, req->sale);
        sk_redis_arg_u(a, req->order_id);
        return;
    case C_ORDERS:
        args_keys(a, cmd->w, req->sale);
        sk_redis_arg_u(a, req->order_id);
        sk_redis_arg_u(a, req->limit);
        return;
    case C_CHANGE:
        args_keys(a, cmd->w, req->sale);
        sk_redis_arg_u(a, req->order_id);
        sk_redis_arg_s(a, sk_order_op_name(req->change));
        return;
    case C_REAP: {
        const char *tag = sk_redis_slot_tag(cmd->sslot);
        sk_redis_arg_u(a, 4);
        sk_redis_arg_printf(a, "sk:slot:{%s}%s", tag, SLOT_DUE);
        sk_redis_arg_printf(a, "sk:slot:{%s}%s", tag, SLOT_SALES);
        sk_redis_arg_printf(a, "sk:slot:{%s}%s", tag, SLOT_TOMBSTONES);
        args_feed(a, cmd->w, tag);
        sk_redis_arg_i(a, REAP_MAX);
        return;
    }
    case C_DUE_GET:
        args_index(a);
        sk_redis_arg_i(a, DUE_SLOTS_MAX);
        return;
    case C_DUE_ADD:
        args_index(a);
        sk_redis_arg_i(a, cmd->sslot);
        sk_redis_arg_i(a, cmd->next);
        return;
    case C_DUE_SET:
        args_index(a);
        sk_redis_arg_i(a, cmd->sslot);
        sk_redis_arg_i(a, cmd->ver);
        sk_redis_arg_i(a, cmd->next);
        return;
    case C_FEED:
        if (cmd->w->r->cl != NULL) {
            sk_redis_arg_u(a, 3);
            sk_redis_arg_s(a, CL_FEED_KEY);
            sk_redis_arg_s(a, CL_FEED_TRIMMED_KEY);
            sk_redis_arg_s(a, CL_FEED_GONE_KEY);
        } else {
            sk_redis_arg_u(a, 2);
            sk_redis_arg_s(a, FEED_KEY);
            sk_redis_arg_s(a, FEED_TRIMMED_KEY);
        }
        sk_redis_arg_printf(a, "%llu-%llu", (unsigned long long)req->cursor.hi, (unsigned long long)req->cursor.lo);
        sk_redis_arg_u(a, req->limit);
        return;
    case C_FEEDTRIM:
        sk_redis_arg_u(a, 3);
        sk_redis_arg_s(a, FEED_KEY);
        sk_redis_arg_s(a, FEED_TRIMMED_KEY);
        sk_redis_arg_s(a, FEED_EXTRA_KEY);
        sk_redis_arg_u(a, sk_feed_retain());
        return;
    case C_RELAY_COPY:
        sk_redis_arg_u(a, 6);
        sk_redis_arg_s(a, CL_FEED_KEY);
        sk_redis_arg_s(a, CL_FEED_TRIMMED_KEY);
        sk_redis_arg_s(a, CL_FEED_GONE_KEY);
        sk_redis_arg_s(a, CL_FEED_POS_KEY);
        sk_redis_arg_s(a, CL_FEED_DIRTY_KEY);
        sk_redis_arg_s(a, CL_FEED_EXTRA_KEY);
        sk_redis_arg_s(a, cmd->key);
        sk_redis_arg_s(a, cmd->pos);
        sk_redis_arg_i(a, cmd->sslot);
        sk_redis_arg_i(a, cmd->ver);
        sk_redis_arg_i(a, cmd->at_end);
        sk_redis_arg_u(a, sk_feed_retain());
        sk_redis_arg(a, cmd->blob, cmd->bloblen);
        return;
    case C_RELAY_MARK:
        sk_redis_arg_u(a, 2);
        sk_redis_arg_s(a, CL_FEED_DIRTY_KEY);
        sk_redis_arg_s(a, CL_FEED_MARKSEQ_KEY);
        sk_redis_arg(a, cmd->blob, cmd->bloblen);
        return;
    default:
        return;
    }
}

/* Sends a plain command (no script) on c: sk_redis_send's 0 or -1. */
int sk_store_redis_send_plain(sk_redis_conn_t *c, cmd_t *cmd)
{
    const redis_t *r = cmd->w->r;
    if (cmd->type == C_REINDEX_SLOT)
        return sk_redis_send(c, &cmd->super, SK_REDIS_ARGS("ZRANGE", cmd->key, "0", "0", "WITHSCORES"));
    if (cmd->type == C_RELAY_READ) {
        /* from the position itself, which is still there unless entries were lost (relay_read_done) */
        int none = strcmp(cmd->pos, "0-0") == 0;
        char count[16];
        snprintf(count, sizeof(count), "%d", RELAY_BATCH + !none);
        const char *start = none ? "-" : cmd->pos;
        return sk_redis_send(c, &cmd->super, SK_REDIS_ARGS("XRANGE", cmd->key, start, "+", "COUNT", count));
    }
    if (cmd->type == C_RELAY_TRIM)
        return sk_redis_send(c, &cmd->super, SK_REDIS_ARGS("XTRIM", cmd->key, "MINID", cmd->val));
    if (cmd->type == C_RELAY_WAIT) {
        char n[16], ms[16];
        snprintf(n, sizeof(n), "%d", r->conf.min_replicas);
        snprintf(ms, sizeof(ms), "%d", r->conf.wait_timeout_ms);
        return sk_redis_send(c, &cmd->super, SK_REDIS_ARGS("WAIT", n, ms));
    }
    return cmd->val[0] != '\0' ? sk_redis_send(c, &cmd->super, SK_REDIS_ARGS(cmd->verb, cmd->key, cmd->val))
                               : sk_redis_send(c, &cmd->super, SK_REDIS_ARGS(cmd->verb, cmd->key));
}
