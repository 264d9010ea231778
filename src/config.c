/* config.c: see config.h. */
#include "config.h"
#include <ctype.h>
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include "util.h"

typedef enum { T_STR, T_INT, T_BOOL } type_t;

typedef struct {
    const char *name; /* long option, and the config-file key */
    const char *env;
    type_t type;
    size_t off;
    const char *def;
    int64_t min, max;
    const char *arg;
    const char *help;
} opt_t;

#define O(f) offsetof(sk_config_t, f)

/* One row per option, as a table: clang-format would fold each row over two lines (every branch
 * adding an option would then touch them all). */
/* clang-format off */
static const opt_t opts[] = {
    {"listen", "SECKILL_LISTEN", T_STR, O(listen), "0.0.0.0:8080", 0, 0, "HOST:PORT", "public listener (port 0: any free port)"},
    {"admin-listen", "SECKILL_ADMIN_LISTEN", T_STR, O(admin_listen), "127.0.0.1:8081", 0, 0, "HOST:PORT", "admin listener"},
    {"store", "SECKILL_STORE", T_STR, O(store), "sqlite:./seckill.db", 0, 0, "URL", "sqlite:PATH (embedded), redis://[:PASSWORD@]HOST:PORT[/DB], unix:///PATH or redis-sentinel://HOST[:PORT],...[/DB]#MASTER"},
    /* the Redis store's high availability (docs/redis.md) */
    {"redis-min-replicas", "SECKILL_REDIS_MIN_REPLICAS", T_INT, O(redis_min_replicas), "0", 0, 16, "N", "Redis store: answer a take only once WAIT says N replicas have it (0: no WAIT)"},
    {"redis-wait-timeout", "SECKILL_REDIS_WAIT_TIMEOUT", T_INT, O(redis_wait_timeout), "100", 1, 1000, "MS", "Redis store: how long WAIT may take; past it the take is answered 503"},
    {"threads", "SECKILL_THREADS", T_INT, O(threads), "0", 0, 256, "N", "worker threads (0: one per core)"},
    {"admin-token-file", "SECKILL_ADMIN_TOKEN_FILE", T_STR, O(admin_token_file), NULL, 0, 0, "FILE", "file holding the admin bearer token (or env SECKILL_ADMIN_TOKEN)"},
    {"log-file", "SECKILL_LOG_FILE", T_STR, O(log_file), NULL, 0, 0, "PATH", "log destination (default stderr); SIGHUP reopens it"},
    {"log-level", "SECKILL_LOG_LEVEL", T_STR, O(log_level), "info", 0, 0, "LEVEL", "debug, info, warn or error"},
    {"access-log", "SECKILL_ACCESS_LOG", T_STR, O(access_log), NULL, 0, 0, "PATH", "write one line per request to PATH (buffered; off by default)"},
    {"rate-limit", "SECKILL_RATE_LIMIT", T_INT, O(rate_limit), "0", 0, 100000000, "N", "requests per second per client on the public listener (0: off)"},
    {"rate-burst", "SECKILL_RATE_BURST", T_INT, O(rate_burst), "0", 0, 100000000, "N", "burst allowed by the rate limit (0: same as --rate-limit)"},
    {"trust-proxy", "SECKILL_TRUST_PROXY", T_BOOL, O(trust_proxy), "0", 0, 1, NULL, "identify clients by the first X-Forwarded-For address"},
    {"max-connections", "SECKILL_MAX_CONNECTIONS", T_INT, O(max_connections), "0", 0, 100000000, "N", "most open public connections; more wait in the kernel (0: from the descriptor limit)"},
    {"max-body-bytes", "SECKILL_MAX_BODY_BYTES", T_INT, O(max_body_bytes), "4096", 64, 1048576, "N", "largest request body (413 past it)"},
    {"max-head-bytes", "SECKILL_MAX_HEAD_BYTES", T_INT, O(max_head_bytes), "8192", 256, 65536, "N", "largest request head (431 past it)"},
    {"idle-timeout", "SECKILL_IDLE_TIMEOUT", T_INT, O(idle_timeout), "10", 1, 3600, "SECONDS", "close connections idle or slow to send a request this long"},
    {"shutdown-timeout", "SECKILL_SHUTDOWN_TIMEOUT", T_INT, O(shutdown_timeout), "10", 0, 3600, "SECONDS", "on SIGTERM, wait this long for in-flight requests"},
    {"config", "SECKILL_CONFIG", T_STR, O(config_file), NULL, 0, 0, "FILE", "read `key = value` lines (keys are the long option names)"},
};
/* clang-format on */

#define NOPTS (sizeof(opts) / sizeof(opts[0]))

static const opt_t *find(const char *name, size_t len)
{
    for (size_t i = 0; i < NOPTS; i++)
        if (strlen(opts[i].name) == len && memcmp(opts[i].name, name, len) == 0)
            return &opts[i];
    return NULL;
}

static int set(sk_config_t *cfg, const opt_t *o, const char *val, const char *origin, FILE *err)
{
    char *p = (char *)cfg + o->off;
    if (o->type == T_STR) {
        char **s = (char **)p;
        free(*s);
        *s = val ? sk_strndup(val, strlen(val)) : NULL;
        return 0;
    }
    if (o->type == T_BOOL && val == NULL)
        val = "1";
    if (o->type == T_BOOL && (strcmp(val, "true") == 0 || strcmp(val, "yes") == 0))
        val = "1";
    if (o->type == T_BOOL && (strcmp(val, "false") == 0 || strcmp(val, "no") == 0))
        val = "0";
    char *end;
    errno = 0;
    long long v = strtoll(val, &end, 10);
    if (errno != 0 || end == val || *end != '\0' || v < o->min || v > o->max) {
        fprintf(err, "seckilld: %s: --%s must be an integer from %lld to %lld, not '%s'\n", origin, o->name,
                (long long)o->min, (long long)o->max, val);
        return -1;
    }
    *(int64_t *)p = v;
    return 0;
}

static void usage(FILE *out)
{
    fprintf(out, "usage: seckilld [OPTION]...\n"
                 "The seckill flash-sale server: an HTTP/1.1 JSON API (see API.md) on an embedded or Redis store.\n\n");
    for (size_t i = 0; i < NOPTS; i++) {
        const opt_t *o = &opts[i];
        char left[64];
        snprintf(left, sizeof(left), "--%s%s%s", o->name, o->arg ? " " : "", o->arg ? o->arg : "");
        fprintf(out, "  %-30s %s", left, o->help);
        if (o->def && strcmp(o->def, "0") != 0)
            fprintf(out, " [%s]", o->def);
        fprintf(out, "\n  %-30s env %s\n", "", o->env);
    }
    fprintf(out, "  %-30s %s\n  %-30s %s\n", "--help", "print this help and exit", "--version",
            "print the version and exit");
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = '\0';
    return s;
}

/* The longest line of a config file, its newline not counted. */
#define LINE_MAX_BYTES 1023

static int load_file(sk_config_t *cfg, const char *path, FILE *err)
{
    FILE *f = fopen(path, "r");
    char *line = NULL, origin[1100];
    size_t cap = 0;
    ssize_t n;
    int lineno = 0, rc = 0;
    if (f == NULL) {
        fprintf(err, "seckilld: cannot open config file %s: %s\n", path, strerror(errno));
        return -1;
    }
    /* whole lines: a longer line is refused, never cut (its tail would become a line of its
     * own, and a live setting), and so is a NUL (everything after it would be dropped) */
    while (rc == 0 && (n = getline(&line, &cap, f)) >= 0) {
        lineno++;
        snprintf(origin, sizeof(origin), "%s:%d", path, lineno);
        if (n > 0 && line[n - 1] == '\n')
            n--;
        if (n > LINE_MAX_BYTES) {
            fprintf(err, "seckilld: %s: the line is longer than %d bytes\n", origin, LINE_MAX_BYTES);
            rc = -1;
            break;
        }
        if (memchr(line, '\0', (size_t)n) != NULL) {
            fprintf(err, "seckilld: %s: the line holds a NUL byte\n", origin);
            rc = -1;
            break;
        }
        char *s = trim(line);
        if (*s == '\0' || *s == '#')
            continue;
        char *eq = strchr(s, '=');
        if (eq == NULL) {
            fprintf(err, "seckilld: %s: expected `key = value`\n", origin);
            rc = -1;
            break;
        }
        *eq = '\0';
        char *key = trim(s), *val = trim(eq + 1);
        const opt_t *o = find(key, strlen(key));
        if (o == NULL || strcmp(o->name, "config") == 0) {
            fprintf(err, "seckilld: %s: unknown key '%s'\n", origin, key);
            rc = -1;
            break;
        }
        rc = set(cfg, o, val, origin, err);
    }
    free(line);
    fclose(f);
    return rc;
}

static int read_token(sk_config_t *cfg, FILE *err)
{
    const char *env = getenv("SECKILL_ADMIN_TOKEN");
    free(cfg->admin_token);
    cfg->admin_token = NULL;
    if (cfg->admin_token_file != NULL) {
        FILE *f = fopen(cfg->admin_token_file, "r");
        char buf[512];
        if (f == NULL) {
            fprintf(err, "seckilld: cannot open admin token file %s: %s\n", cfg->admin_token_file, strerror(errno));
            return -1;
        }
        size_t n = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        buf[n] = '\0';
        char *t = trim(buf);
        if (*t == '\0') {
            fprintf(err, "seckilld: admin token file %s is empty\n", cfg->admin_token_file);
            return -1;
        }
        cfg->admin_token = sk_strndup(t, strlen(t));
    } else if (env != NULL && *env != '\0') {
        cfg->admin_token = sk_strndup(env, strlen(env));
    }
    return 0;
}

int sk_config_load(sk_config_t *cfg, int argc, char **argv, FILE *out, FILE *err)
{
    memset(cfg, 0, sizeof(*cfg));
    for (size_t i = 0; i < NOPTS; i++)
        if (set(cfg, &opts[i], opts[i].def, "default", err) != 0 && opts[i].def != NULL)
            return SK_CONFIG_EXIT_USAGE;

    /* pass 1: --help, --version and --config, which decide what else is read */
    const char *file = getenv("SECKILL_CONFIG");
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(out);
            return SK_CONFIG_EXIT_OK;
        }
        if (strcmp(argv[i], "--version") == 0) {
            fprintf(out, "seckilld %s\n", SK_VERSION);
            return SK_CONFIG_EXIT_OK;
        }
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc)
            file = argv[i + 1];
        else if (strncmp(argv[i], "--config=", 9) == 0)
            file = argv[i] + 9;
    }
    if (file != NULL && load_file(cfg, file, err) != 0)
        return SK_CONFIG_EXIT_USAGE;
    for (size_t i = 0; i < NOPTS; i++) {
        const char *v = getenv(opts[i].env);
        if (v != NULL && strcmp(opts[i].name, "config") != 0 && set(cfg, &opts[i], v, opts[i].env, err) != 0)
            return SK_CONFIG_EXIT_USAGE;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *val = NULL;
        if (strncmp(a, "--", 2) != 0) {
            fprintf(err, "seckilld: unexpected argument '%s' (see --help)\n", a);
            return SK_CONFIG_EXIT_USAGE;
        }
        a += 2;
        const char *eq = strchr(a, '=');
        const opt_t *o = find(a, eq ? (size_t)(eq - a) : strlen(a));
        if (o == NULL) {
            fprintf(err, "seckilld: unknown option '%s' (see --help)\n", argv[i]);
            return SK_CONFIG_EXIT_USAGE;
        }
        if (eq)
            val = eq + 1;
        else if (o->type != T_BOOL) {
            if (i + 1 >= argc) {
                fprintf(err, "seckilld: option --%s needs a value\n", o->name);
                return SK_CONFIG_EXIT_USAGE;
            }
            val = argv[++i];
        }
        if (set(cfg, o, val, "command line", err) != 0)
            return SK_CONFIG_EXIT_USAGE;
    }
    if (read_token(cfg, err) != 0)
        return SK_CONFIG_EXIT_USAGE;
    return SK_CONFIG_RUN;
}

void sk_config_dispose(sk_config_t *cfg)
{
    for (size_t i = 0; i < NOPTS; i++)
        if (opts[i].type == T_STR) {
            char **s = (char **)((char *)cfg + opts[i].off);
            free(*s);
            *s = NULL;
        }
    free(cfg->admin_token);
    cfg->admin_token = NULL;
}
