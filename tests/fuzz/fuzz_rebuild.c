/* fuzz_rebuild.c: libFuzzer target for the rows the embedded store reads back at start
 * (sk_embed_rebuild() in embed_rebuild.c). The input is an order book: its schema (the store's,
 * or tables made by hand without its types and keys, as an operator's edit could leave them)
 * and rows of sales and orders, every value drawn with any SQLite type. The book is written to a
 * file in a fresh directory, then opened with sk_store_embed_open, as seckilld does at start.
 *
 * Oracles: a reference reading of the same rows (written here, from what SQLite holds) says
 * whether the book keeps the store's rules; the store must refuse exactly the books that break
 * one, with a message, and open the others. An opened store shows every sale with its settings,
 * its sold and held units as the rows add them up, never a negative remaining and never more
 * sold and held than its stock; and a take of one unit more than what remains is refused at
 * once (nothing can be oversold). Holds whose deadline has passed may expire while the store is
 * looked at: their sales get the invariants only. */
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "error.h"
#include "fuzz_util.h"
#include "log.h"
#include "store.h"

#define MAX_SALES 4
#define MAX_ORDERS 12

/* the store's schema (src/sql/schema.sql, as the store runs it), and one made by hand: no types,
 * no keys */
extern const char sk_sql_schema[];
#define SCHEMA_STORE sk_sql_schema
static const char SCHEMA_HAND[] =
    "CREATE TABLE sales(sale, stock, per_user_limit, hold_seconds, starts_at, ends_at);"
    "CREATE TABLE orders(sale, id, user, qty, status, request_id, created_at, expires_at);";

#define FAR_FUTURE INT64_C(4102444800) /* 2100 */
#define TIME_MAX INT64_C(253402300799) /* the largest time an order may hold (as the API takes) */

/* ---- values ---- */

static const char *const SALE_IDS[] = {"s1", "s2", "phone.x-1_A"};
static const char *const STATUSES[] = {"held", "confirmed", "cancelled", "expired"};
static const char *const IDENTS[] = {"alice", "bob", "\xc3\xa9t\xc3\xa9", "r-1", "r-2"};

/* Binds a value for column `col` of a row, drawn as that column mostly holds it. */
static void bind_cell(sqlite3_stmt *st, int i, fz_t *f, char col)
{
    static const char NUL_TEXT[] = "held\0x";
    uint8_t k = fz_u8(f);
    if (k >= 236) { /* any type, any value */
        const uint8_t *p;
        size_t n;
        switch (k % 5) {
        case 0:
            sqlite3_bind_null(st, i);
            return;
        case 1:
            sqlite3_bind_int64(st, i, fz_i64(f));
            return;
        case 2:
            sqlite3_bind_double(st, i, (double)fz_i64(f) / 4);
            return;
        case 3:
            n = fz_bytes(f, 40, &p);
            sqlite3_bind_text(st, i, (const char *)p, (int)n, SQLITE_TRANSIENT);
            return;
        default:
            n = fz_bytes(f, 40, &p);
            sqlite3_bind_blob(st, i, p, (int)n, SQLITE_TRANSIENT);
            return;
        }
    }
    switch (col) {
    case 'S': /* a sale id */
        if (k < 200)
            sqlite3_bind_text(st, i, SALE_IDS[k % 3], -1, SQLITE_STATIC);
        else if (k < 220)
            sqlite3_bind_blob(st, i, "s1\0", 3, SQLITE_STATIC);
        else
            sqlite3_bind_text(st, i, "s 1", -1, SQLITE_STATIC);
        return;
    case 'u': /* units */
        sqlite3_bind_int64(st, i, k < 200 ? k % 12 : (k & 1 ? SK_MAX_UNITS : SK_MAX_UNITS + 1));
        return;
    case 'l': /* a per-user limit */
        sqlite3_bind_int64(st, i, k % 4);
        return;
    case 'h': /* hold seconds */
        sqlite3_bind_int64(st, i, k < 128 ? 0 : k < 230 ? 60 : 31536001);
        return;
    case 't': /* a window time: mostly none */
        if (k < 160)
            sqlite3_bind_null(st, i);
        else
            sqlite3_bind_int64(st, i, k < 200 ? 1 : k < 225 ? FAR_FUTURE + k : -1);
        return;
    case 'i': /* an order id */
        sqlite3_bind_int64(st, i, k < 220 ? 1 + k % 8 : (int64_t)(k % 3) - 1);
        return;
    case 'q': /* qty */
        sqlite3_bind_int64(st, i, k < 220 ? 1 + k % 4 : (k & 1 ? SK_MAX_UNITS + 1 : 0));
        return;
    case 's': /* a status */
        if (k < 220)
            sqlite3_bind_text(st, i, STATUSES[k % 4], -1, SQLITE_STATIC);
        else if (k < 228)
            sqlite3_bind_text(st, i, NUL_TEXT, sizeof(NUL_TEXT) - 1, SQLITE_STATIC);
        else
            sqlite3_bind_blob(st, i, "confirmed", 9, SQLITE_STATIC);
        return;
    case 'n': /* a user or request id, mostly none */
        if (k < 128)
            sqlite3_bind_null(st, i);
        else if (k < 220)
            sqlite3_bind_text(st, i, IDENTS[k % 5], -1, SQLITE_STATIC);
        else
            sqlite3_bind_text(st, i, k & 1 ? "a\x01" : "", -1, SQLITE_STATIC);
        return;
    case 'c': /* created_at */
        sqlite3_bind_int64(st, i, k < 230 ? 1764000000 + k : -1);
        return;
    default: /* expires_at: none, past or far away */
        if (k < 100)
            sqlite3_bind_null(st, i);
        else
            sqlite3_bind_int64(st, i, k < 160 ? 1 + k : FAR_FUTURE + k);
        return;
    }
}

static void build(const char *path, fz_t *f, int hand)
{
    sqlite3 *db;
    sqlite3_stmt *st;
    CHECK(sqlite3_open(path, &db) == SQLITE_OK);
    CHECK(sqlite3_exec(db, "PRAGMA synchronous=OFF; PRAGMA journal_mode=MEMORY; BEGIN", NULL, NULL, NULL) == SQLITE_OK);
    CHECK(sqlite3_exec(db, hand ? SCHEMA_HAND : SCHEMA_STORE, NULL, NULL, NULL) == SQLITE_OK);
    size_t ns = fz_u8(f) % (MAX_SALES + 1), no = fz_u8(f) % (MAX_ORDERS + 1);
    CHECK(
        sqlite3_prepare_v2(db,
                           "INSERT OR IGNORE INTO sales(sale, stock, per_user_limit, hold_seconds, starts_at, ends_at)"
                           " VALUES(?1, ?2, ?3, ?4, ?5, ?6)",
                           -1, &st, NULL) == SQLITE_OK);
    for (size_t r = 0; r < ns; r++) {
        const char *cols = "Sulhtt";
        for (int c = 0; c < 6; c++)
            bind_cell(st, c + 1, f, cols[c]);
        sqlite3_step(st); /* NOT NULL and the like may refuse a row: what is stored is read back */
        sqlite3_reset(st);
    }
    sqlite3_finalize(st);
    CHECK(sqlite3_prepare_v2(db, "INSERT OR IGNORE INTO orders VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)", -1, &st,
                             NULL) == SQLITE_OK);
    for (size_t r = 0; r < no; r++) {
        const char *cols = "Sinqsnce";
        for (int c = 0; c < 8; c++)
            bind_cell(st, c + 1, f, cols[c]);
        sqlite3_step(st);
        sqlite3_reset(st);
    }
    sqlite3_finalize(st);
    CHECK(sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) == SQLITE_OK);
    CHECK(sqlite3_close(db) == SQLITE_OK);
}

/* ---- the reference: the rows as SQLite holds them ---- */

typedef struct {
    int type;
    int64_t i;
    char t[64]; /* the value as text (sqlite3_column_text), cut to fit */
    size_t len;
} cell_t;

typedef struct {
    cell_t c[8];
} row_t;

typedef struct {
    row_t sales[MAX_SALES], orders[MAX_ORDERS];
    size_t ns, no;
} book_t;

static void read_rows(sqlite3 *db, const char *sql, row_t *rows, size_t max, size_t *n, int ncols)
{
    sqlite3_stmt *st;
    *n = 0;
    CHECK(sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK);
    while (sqlite3_step(st) == SQLITE_ROW) {
        CHECK(*n < max);
        for (int c = 0; c < ncols; c++) {
            cell_t *x = &rows[*n].c[c];
            x->type = sqlite3_column_type(st, c);
            x->i = sqlite3_column_int64(st, c);
            const unsigned char *t = sqlite3_column_text(st, c);
            x->len = (size_t)sqlite3_column_bytes(st, c);
            if (x->len > sizeof(x->t))
                x->len = sizeof(x->t); /* longer than any valid id: stays invalid */
            memcpy(x->t, t ? (const char *)t : "", t ? x->len : 0);
        }
        (*n)++;
    }
    sqlite3_finalize(st);
}

static void read_book(const char *path, book_t *b)
{
    sqlite3 *db;
    CHECK(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK);
    read_rows(db, "SELECT sale, stock, per_user_limit, hold_seconds, starts_at, ends_at FROM sales", b->sales,
              MAX_SALES, &b->ns, 6);
    read_rows(db, "SELECT sale, id, user, qty, status, request_id, created_at, expires_at FROM orders", b->orders,
              MAX_ORDERS, &b->no, 8);
    sqlite3_close(db);
}

static int is_int(const cell_t *x)
{
    return x->type == SQLITE_INTEGER;
}

static int is_time(const cell_t *x)
{
    return x->type == SQLITE_NULL || x->type == SQLITE_INTEGER;
}

static int64_t time_of(const cell_t *x)
{
    return x->type == SQLITE_NULL ? SK_NO_TIME : x->i;
}

static int same_text(const cell_t *a, const cell_t *b)
{
    return a->len == b->len && memcmp(a->t, b->t, a->len) == 0;
}

static int ident_or_null(const cell_t *x)
{
    return x->type == SQLITE_NULL || (x->type == SQLITE_TEXT && ref_valid_ident((const uint8_t *)x->t, x->len));
}

typedef struct {
    int64_t sold, held, held_due; /* held_due: held units whose deadline is not far away */
} tally_t;

static void never_posted(void *ctx, sk_store_req_t *req)
{
    (void)ctx;
    (void)req;
    CHECK(!"an answer posted");
}

/* 1 when the store must open the book; tallies per sale (in the order of b->sales). */
static int ref_accepts(const book_t *b, tally_t *t, int64_t now)
{
    memset(t, 0, sizeof(tally_t) * MAX_SALES);
    for (size_t s = 0; s < b->ns; s++) {
        const cell_t *c = b->sales[s].c;
        if (c[0].type == SQLITE_NULL || !ref_valid_sale_id((const uint8_t *)c[0].t, c[0].len))
            return 0;
        if (!is_int(&c[1]) || !is_int(&c[2]) || !is_int(&c[3]) || !is_time(&c[4]) || !is_time(&c[5]))
            return 0;
        if (c[1].i < 0 || c[1].i > SK_MAX_UNITS || c[2].i < 0 || c[2].i > SK_MAX_UNITS || c[3].i < 0 ||
            c[3].i > 31536000 || (c[4].type == SQLITE_INTEGER && c[4].i < 0) ||
            (c[5].type == SQLITE_INTEGER && c[5].i < 0))
            return 0;
        if (c[4].type == SQLITE_INTEGER && c[5].type == SQLITE_INTEGER && c[5].i <= c[4].i)
            return 0;
        for (size_t k = 0; k < s; k++) /* a sale listed twice */
            if (same_text(&b->sales[k].c[0], &c[0]))
                return 0;
    }
    for (size_t o = 0; o < b->no; o++) {
        const cell_t *c = b->orders[o].c;
        size_t s = 0;
        int status = 0;
        while (s < b->ns && (c[0].type == SQLITE_NULL || !same_text(&b->sales[s].c[0], &c[0])))
            s++;
        if (s == b->ns)
            return 0;
        if (!is_int(&c[1]) || c[1].i < 1 || !is_int(&c[3]) || c[3].i < 1 || c[3].i > SK_MAX_UNITS)
            return 0;
        for (int k = 0; k < 4; k++)
            if (c[4].len == strlen(STATUSES[k]) && memcmp(c[4].t, STATUSES[k], c[4].len) == 0)
                status = k + 1;
        if (status == 0 || !is_int(&c[6]) || c[6].i < 0 || c[6].i > TIME_MAX || !is_time(&c[7]) ||
            (c[7].type == SQLITE_INTEGER && c[7].i != SK_NO_TIME && (c[7].i < 0 || c[7].i > TIME_MAX)) ||
            (status == SK_ORDER_HELD && (c[7].type == SQLITE_NULL || c[7].i == SK_NO_TIME))) /* -2^63 reads as null */
            return 0;
        if (!ident_or_null(&c[2]) || !ident_or_null(&c[5]))
            return 0;
        for (size_t k = 0; k < o; k++) {
            const cell_t *d = b->orders[k].c;
            if (!same_text(&d[0], &c[0]))
                continue;
            if (d[1].i == c[1].i) /* an order id used twice */
                return 0;
            if (c[5].type != SQLITE_NULL && d[5].type != SQLITE_NULL && same_text(&d[5], &c[5])) /* a request id */
                return 0;
        }
        if (status == SK_ORDER_CONFIRMED)
            t[s].sold += c[3].i;
        if (status == SK_ORDER_HELD) {
            t[s].held += c[3].i;
            if (c[7].i <= now + 60)
                t[s].held_due += c[3].i;
        }
        if (t[s].sold + t[s].held > b->sales[s].c[1].i)
            return 0;
    }
    return 1;
}

/* The rows, for SK_FUZZ_VERBOSE=1 when replaying an input. */
static void dump(const char *what, const row_t *rows, size_t n, int ncols)
{
    static const char *const TYPES[] = {"?", "int", "real", "text", "blob", "null"};
    for (size_t r = 0; r < n; r++) {
        fprintf(stderr, "%s:", what);
        for (int c = 0; c < ncols; c++) {
            const cell_t *x = &rows[r].c[c];
            fprintf(stderr, " %s:", TYPES[x->type]);
            for (size_t i = 0; i < x->len; i++)
                fprintf(stderr, x->t[i] >= 0x20 && x->t[i] < 0x7f ? "%c" : "\\x%02x", (unsigned char)x->t[i]);
        }
        fprintf(stderr, "\n");
    }
}

/* ---- the target ---- */

static char dir[64], path[96];

static void remove_book(void)
{
    char p[128];
    unlink(path);
    snprintf(p, sizeof(p), "%s-wal", path);
    unlink(p);
    snprintf(p, sizeof(p), "%s-shm", path);
    unlink(p);
}

static void cleanup(void)
{
    remove_book();
    rmdir(dir);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    fz_t f = {data, size};
    book_t b;
    tally_t t[MAX_SALES];
    char err[512] = "";

    if (!ready) {
        sk_log_level = (sk_log_level_t)(SK_LOG_ERROR + 1); /* a refused book is logged */
        CHECK(fz_tmpdir(dir, sizeof(dir), "rebuild") == 0);
        snprintf(path, sizeof(path), "%s/book.db", dir);
        atexit(cleanup);
        ready = 1;
    }
    remove_book();
    build(path, &f, fz_u8(&f) & 1);
    read_book(path, &b);
    int64_t now = (int64_t)time(NULL);
    int want = ref_accepts(&b, t, now);
    if (getenv("SK_FUZZ_VERBOSE") != NULL) {
        dump("sale", b.sales, b.ns, 6);
        dump("order", b.orders, b.no, 8);
    }

    sk_store_t *st = sk_store_embed_open(path, 1, err, sizeof(err));
    if (st == NULL) {
        if (want)
            fprintf(stderr, "refused a book that keeps the rules: %s\n", err);
        CHECK(!want);
        CHECK(err[0] != '\0');
        return 0;
    }
    if (!want)
        fprintf(stderr, "opened a book that breaks a rule\n");
    CHECK(want);

    /* everything asked here is answered at once: nothing is posted */
    sk_store_env_t env = {.post = never_posted};
    sk_store_worker_t *w = NULL;
    CHECK(sk_store_worker_open(st, &env, &w, err, sizeof(err)) == 0);
    sk_store_req_t list = {.op = SK_STORE_SALE_LIST};
    CHECK(sk_store_submit(w, &list) == SK_STORE_DONE && list.err == 0);
    CHECK(list.nviews == b.ns);
    for (size_t s = 0; s < b.ns; s++) {
        const cell_t *c = b.sales[s].c;
        const sk_sale_view_t *v = NULL;
        for (size_t k = 0; k < list.nviews; k++)
            if (strlen(list.views[k].id) == c[0].len && memcmp(list.views[k].id, c[0].t, c[0].len) == 0)
                v = &list.views[k];
        CHECK(v != NULL);
        CHECK(v->conf.stock == c[1].i && v->conf.per_user_limit == c[2].i && v->conf.hold_seconds == c[3].i);
        CHECK(v->conf.starts_at == time_of(&c[4]) && v->conf.ends_at == time_of(&c[5]));
        /* never oversold, whatever expires meanwhile */
        CHECK(v->sold >= 0 && v->held >= 0 && v->sold + v->held <= v->conf.stock);
        CHECK(sk_sale_remaining(v) == v->conf.stock - v->sold - v->held);
        if (t[s].held_due != 0) {
            CHECK(v->sold <= t[s].sold && v->held <= t[s].held);
            continue;
        }
        CHECK(v->sold == t[s].sold && v->held == t[s].held);
        /* one unit more than remains: refused at once */
        int64_t more = sk_sale_remaining(v) + 1;
        sk_store_req_t take = {.op = SK_STORE_TAKE, .qty = more, .user = "probe", .user_len = 5};
        memcpy(take.sale, v->id, sizeof(take.sale));
        CHECK(sk_store_submit(w, &take) == SK_STORE_DONE);
        CHECK(take.err == SK_ESOLD_OUT || take.err == SK_ENOT_STARTED || take.err == SK_EENDED ||
              (take.err == SK_EBAD_REQUEST && more > SK_MAX_UNITS));
        sk_store_req_dispose(&take);
    }
    sk_store_req_dispose(&list);
    sk_store_worker_close(w);
    sk_store_close(st);
    return 0;
}
