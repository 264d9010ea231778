/* fuzz_config.c: libFuzzer target for the --config file (config.c): the input is the whole file,
 * written to a temporary file and read by sk_config_load as seckilld would at start.
 *
 * Oracle: a reference reader written here another way (the file cut into lines by hand, its own
 * option table, its own integer parser) says what the load must do: refuse, naming the line
 * (`PATH:N:`), or give every setting the value of the last line that set it, on top of the
 * defaults. Lines are at most 1023 bytes and hold no NUL (either is refused, never cut or
 * skipped); blank lines and lines starting with '#' are ignored; keys and values are trimmed.
 * The command line still wins over the file: a --threads given with it is what the load keeps. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "fuzz_util.h"

extern char **environ;

/* ---- the reference: what the README's option table says ---- */

typedef enum { R_STR, R_INT, R_BOOL } rtype_t;

static const struct {
    const char *key;
    rtype_t type;
    const char *def; /* strings; NULL: unset */
    long long idef, min, max;
} REF[] = {
    {"listen", R_STR, "0.0.0.0:8080", 0, 0, 0},
    {"admin-listen", R_STR, "127.0.0.1:8081", 0, 0, 0},
    {"store", R_STR, "sqlite:./seckill.db", 0, 0, 0},
    {"threads", R_INT, NULL, 0, 0, 256},
    {"admin-token-file", R_STR, NULL, 0, 0, 0},
    {"log-file", R_STR, NULL, 0, 0, 0},
    {"log-level", R_STR, "info", 0, 0, 0},
    {"access-log", R_STR, NULL, 0, 0, 0},
    {"rate-limit", R_INT, NULL, 0, 0, 100000000},
    {"rate-burst", R_INT, NULL, 0, 0, 100000000},
    {"trust-proxy", R_BOOL, NULL, 0, 0, 1},
    {"max-body-bytes", R_INT, NULL, 4096, 64, 1048576},
    {"max-head-bytes", R_INT, NULL, 8192, 256, 65536},
    {"idle-timeout", R_INT, NULL, 10, 1, 3600},
    {"shutdown-timeout", R_INT, NULL, 10, 0, 3600},
    {"redis-password-file", R_STR, NULL, 0, 0, 0},
    {"max-connections", R_INT, NULL, 0, 0, 100000000},
    /* issue 14: the Redis store's failover */
    {"redis-min-replicas", R_INT, NULL, 0, 0, 16},
    {"redis-wait-timeout", R_INT, NULL, 100, 1, 1000},
    /* issue 15: buyers, the wire, the admin listener (files and lists are read at start, not here) */
    {"http2", R_BOOL, NULL, 0, 0, 1},
    {"admin-hosts", R_STR, NULL, 0, 0, 0},
    {"buyer-token-secret-file", R_STR, NULL, 0, 0, 0},
    {"buyer-token-public-key", R_STR, NULL, 0, 0, 0},
    {"buyer-token-leeway", R_INT, NULL, 30, 0, 3600},
    {"buyer-token-audience", R_STR, NULL, 0, 0, 0},
    {"user-header", R_STR, NULL, 0, 0, 0},
    {"trusted-proxies", R_STR, NULL, 0, 0, 0},
};
#define K_PWFILE 15 /* its password goes into the store URL, when the file and the store allow */
#define K_MAXCONN 16
#define NREF (sizeof(REF) / sizeof(REF[0]))

typedef struct {
    const char *s[NREF]; /* strings: point into the input copy, or defaults */
    size_t slen[NREF];
    long long i[NREF];
} ref_cfg_t;

/* The value of a config field for REF[k], from the real config. */
static char *const *str_field(sk_config_t *c, size_t k)
{
    char *const *f[] = {
        [0] = &c->listen,
        [1] = &c->admin_listen,
        [2] = &c->store,
        [4] = &c->admin_token_file,
        [5] = &c->log_file,
        [6] = &c->log_level,
        [7] = &c->access_log,
        [K_PWFILE] = &c->redis_password_file,
        [20] = &c->admin_hosts,
        [21] = &c->buyer_token_secret_file,
        [22] = &c->buyer_token_public_key,
        [24] = &c->buyer_token_audience,
        [25] = &c->user_header,
        [26] = &c->trusted_proxies,
    };
    CHECK(k < sizeof(f) / sizeof(f[0]) && f[k] != NULL);
    return f[k];
}

static int64_t int_field(const sk_config_t *c, size_t k)
{
    switch (k) {
    case 3:
        return c->threads;
    case 8:
        return c->rate_limit;
    case 9:
        return c->rate_burst;
    case 10:
        return c->trust_proxy;
    case K_MAXCONN:
        return c->max_connections;
    case 11:
        return c->max_body_bytes;
    case 12:
        return c->max_head_bytes;
    case 13:
        return c->idle_timeout;
    case 14:
        return c->shutdown_timeout;
    case 17:
        return c->redis_min_replicas;
    case 18:
        return c->redis_wait_timeout;
    case 19:
        return c->http2;
    case 23:
        return c->buyer_token_leeway;
    }
    CHECK(0);
    return 0;
}

static int is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

static void trim(const char **s, size_t *n)
{
    while (*n > 0 && is_space(**s))
        (*s)++, (*n)--;
    while (*n > 0 && is_space((*s)[*n - 1]))
        (*n)--;
}

/* [+-]digits, nothing else, no overflow, in min..max. */
static int ref_int(const char *s, size_t n, long long min, long long max, long long *out)
{
    int neg = 0;
    unsigned long long v = 0;
    size_t i = 0;
    if (n > 0 && (s[0] == '+' || s[0] == '-'))
        neg = s[0] == '-', i++;
    if (i == n)
        return -1;
    for (; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        if (v > (UINT64_C(1) << 63) / 10)
            return -1;
        v = v * 10 + (unsigned)(s[i] - '0');
        if (v > (UINT64_C(1) << 63))
            return -1;
    }
    if (!neg && v == (UINT64_C(1) << 63))
        return -1;
    long long x = neg ? (long long)(0 - v) : (long long)v;
    if (x < min || x > max)
        return -1;
    *out = x;
    return 0;
}

static int eq(const char *s, size_t n, const char *lit)
{
    return n == strlen(lit) && memcmp(s, lit, n) == 0;
}

/* 0 when the file loads, else the number of the line it is refused at. */
static int ref_load(const char *d, size_t size, ref_cfg_t *r)
{
    size_t pos = 0;
    int lineno = 0;
    for (size_t k = 0; k < NREF; k++) {
        r->s[k] = REF[k].def;
        r->slen[k] = REF[k].def ? strlen(REF[k].def) : 0;
        r->i[k] = REF[k].idef;
    }
    while (pos < size) {
        const char *line = d + pos, *nl = memchr(line, '\n', size - pos);
        size_t n = nl ? (size_t)(nl - line) : size - pos;
        pos += n + (nl != NULL);
        lineno++;
        if (n > 1023 || memchr(line, '\0', n) != NULL)
            return lineno;
        trim(&line, &n);
        if (n == 0 || line[0] == '#')
            continue;
        const char *eqs = memchr(line, '=', n);
        if (eqs == NULL)
            return lineno;
        const char *key = line, *val = eqs + 1;
        size_t klen = (size_t)(eqs - line), vlen = n - klen - 1;
        trim(&key, &klen);
        trim(&val, &vlen);
        size_t k = 0;
        while (k < NREF && !eq(key, klen, REF[k].key))
            k++;
        if (k == NREF)
            return lineno;
        if (REF[k].type == R_STR) {
            r->s[k] = val;
            r->slen[k] = vlen;
            continue;
        }
        if (REF[k].type == R_BOOL && (eq(val, vlen, "true") || eq(val, vlen, "yes")))
            val = "1", vlen = 1;
        else if (REF[k].type == R_BOOL && (eq(val, vlen, "false") || eq(val, vlen, "no")))
            val = "0", vlen = 1;
        if (ref_int(val, vlen, REF[k].min, REF[k].max, &r->i[k]) != 0)
            return lineno;
    }
    return 0;
}

/* ---- the target ---- */

static char dir[64], path[96];

static void setup(void)
{
    /* the load reads SECKILL_* too: none of the caller's may leak in */
    for (int again = 1; again;) {
        again = 0;
        for (char **e = environ; *e != NULL; e++)
            if (strncmp(*e, "SECKILL_", 8) == 0) {
                char name[128];
                size_t n = strcspn(*e, "=");
                snprintf(name, sizeof(name), "%.*s", (int)n, *e);
                unsetenv(name);
                again = 1;
                break;
            }
    }
    CHECK(fz_tmpdir(dir, sizeof(dir), "config") == 0);
    snprintf(path, sizeof(path), "%s/seckilld.conf", dir);
}

static void cleanup(void)
{
    unlink(path);
    rmdir(dir);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    sk_config_t cfg;
    ref_cfg_t r;
    char *out = NULL, *errs = NULL, arg[128];
    size_t outlen = 0, errlen = 0;
    int fd, rc, line;
    /* the last byte, when it is an ASCII digit, is also given as --threads: the command line wins */
    int threads_arg = size > 0 && data[size - 1] >= '0' && data[size - 1] <= '9' ? data[size - 1] - '0' : -1;

    if (!ready) {
        setup();
        atexit(cleanup);
        ready = 1;
    }
    line = ref_load((const char *)data, size, &r);
    if (line == 0 && r.s[4] != NULL) {
        /* an admin token file is read at load: only a regular file (a FIFO or a terminal would
         * block), and the reference reads it too */
        char tf[1100];
        struct stat st;
        snprintf(tf, sizeof(tf), "%.*s", (int)r.slen[4], r.s[4]);
        if (r.slen[4] >= sizeof(tf) || stat(tf, &st) != 0 || !S_ISREG(st.st_mode))
            return 0;
    }
    if (line == 0 && r.s[K_PWFILE] != NULL) { /* the same for the Redis password file */
        char pf[1100];
        struct stat st;
        snprintf(pf, sizeof(pf), "%.*s", (int)r.slen[K_PWFILE], r.s[K_PWFILE]);
        if (r.slen[K_PWFILE] >= sizeof(pf) || stat(pf, &st) != 0 || !S_ISREG(st.st_mode))
            return 0;
    }
    CHECK((fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600)) >= 0);
    CHECK(write(fd, data, size) == (ssize_t)size);
    close(fd);

    FILE *o = open_memstream(&out, &outlen), *e = open_memstream(&errs, &errlen);
    CHECK(o != NULL && e != NULL);
    snprintf(arg, sizeof(arg), "--config=%s", path);
    char thr[32];
    snprintf(thr, sizeof(thr), "--threads=%d", threads_arg);
    char *argv[] = {"seckilld", arg, thr, NULL};
    rc = sk_config_load(&cfg, threads_arg >= 0 ? 3 : 2, argv, o, e);
    fclose(o);
    fclose(e);

    if (line != 0) {
        char where[128];
        CHECK(rc == SK_CONFIG_EXIT_USAGE);
        snprintf(where, sizeof(where), "%s:%d: ", path, line);
        if (strstr(errs, where) == NULL) {
            fprintf(stderr, "want an error at %s, got: %s", where, errs);
            CHECK(0);
        }
    } else if (r.s[4] != NULL && rc != SK_CONFIG_RUN && strstr(errs, "admin token file") != NULL) {
        /* the token file: unreadable or blank */
        CHECK(rc == SK_CONFIG_EXIT_USAGE);
    } else if (r.s[K_PWFILE] != NULL && rc != SK_CONFIG_RUN) {
        /* the password file: unreadable or blank, or the store not redis:// or holding one */
        CHECK(rc == SK_CONFIG_EXIT_USAGE && strstr(errs, "--redis-password-file") != NULL);
    } else {
        if (rc != SK_CONFIG_RUN)
            fprintf(stderr, "want the file accepted, got: %s", errs);
        CHECK(rc == SK_CONFIG_RUN);
        CHECK(errlen == 0 && outlen == 0);
        for (size_t k = 0; k < NREF; k++) {
            if (k == 2 && r.s[K_PWFILE] != NULL) {
                continue; /* the store URL now holds the password */
            } else if (REF[k].type == R_STR) {
                const char *got = *str_field(&cfg, k);
                if (r.s[k] == NULL)
                    CHECK(got == NULL);
                else
                    CHECK(got != NULL && strlen(got) == r.slen[k] && memcmp(got, r.s[k], r.slen[k]) == 0);
            } else if (k == 3 && threads_arg >= 0) {
                CHECK(cfg.threads == threads_arg);
            } else {
                CHECK(int_field(&cfg, k) == r.i[k]);
            }
        }
        CHECK(cfg.config_file != NULL && strcmp(cfg.config_file, path) == 0);
        if (r.s[4] == NULL)
            CHECK(cfg.admin_token == NULL);
        else
            CHECK(cfg.admin_token != NULL && cfg.admin_token[0] != '\0' && !isspace((unsigned char)cfg.admin_token[0]));
    }
    sk_config_dispose(&cfg);
    free(out);
    free(errs);
    return 0;
}
