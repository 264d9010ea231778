/* config.c: see config.h. */
#include "config.h"
#include <ctype.h>
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "log.h"
#include "store.h"
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
    {"store", "SECKILL_STORE", T_STR, O(store), "sqlite:./seckill.db", 0, 0, "URL", "sqlite:PATH (embedded), redis://[:PASSWORD@]HOST:PORT[/DB], unix:///PATH, redis-sentinel://HOST[:PORT],...[/DB]#MASTER or redis-cluster://HOST[:PORT],..."},
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
    {"trust-proxy", "SECKILL_TRUST_PROXY", T_BOOL, O(trust_proxy), "0", 0, 1, NULL, "the peer is a proxy: clients are the last X-Forwarded-For address"},
    {"max-connections", "SECKILL_MAX_CONNECTIONS", T_INT, O(max_connections), "0", 0, 100000000, "N", "most open public connections; more wait in the kernel (0: from the descriptor limit)"},
    {"max-body-bytes", "SECKILL_MAX_BODY_BYTES", T_INT, O(max_body_bytes), "4096", 64, 1048576, "N", "largest request body (413 past it)"},
    {"max-head-bytes", "SECKILL_MAX_HEAD_BYTES", T_INT, O(max_head_bytes), "8192", 256, 65536, "N", "largest request head (431 past it)"},
    {"idle-timeout", "SECKILL_IDLE_TIMEOUT", T_INT, O(idle_timeout), "10", 1, 3600, "SECONDS", "close connections idle or slow to send a request this long"},
    {"shutdown-timeout", "SECKILL_SHUTDOWN_TIMEOUT", T_INT, O(shutdown_timeout), "10", 0, 3600, "SECONDS", "on SIGTERM, wait this long for in-flight requests"},
    /* who is buying, who is administering, what the wire may carry (docs/API.md, "Identity") */
    {"http2", "SECKILL_HTTP2", T_BOOL, O(http2), "0", 0, 1, NULL, "serve HTTP/2 (h2c upgrade, prior knowledge) besides HTTP/1.1"},
    {"admin-hosts", "SECKILL_ADMIN_HOSTS", T_STR, O(admin_hosts), NULL, 0, 0, "HOST,...", "Host names the admin listener answers (default: its address, localhost, 127.0.0.1, [::1]; * for any)"},
    {"buyer-token-secret-file", "SECKILL_BUYER_TOKEN_SECRET_FILE", T_STR, O(buyer_token_secret_file), NULL, 0, 0, "FILE", "HS256 secret of buyer tokens (a take then needs a Bearer JWT); SIGHUP reloads"},
    {"buyer-token-public-key", "SECKILL_BUYER_TOKEN_PUBLIC_KEY", T_STR, O(buyer_token_public_key), NULL, 0, 0, "FILE", "PEM public keys of buyer tokens (ES256, EdDSA; `kid: NAME` before each); SIGHUP reloads"},
    {"buyer-token-leeway", "SECKILL_BUYER_TOKEN_LEEWAY", T_INT, O(buyer_token_leeway), "30", 0, 3600, "SECONDS", "clock skew allowed on a token's exp, nbf and iat"},
    {"buyer-token-audience", "SECKILL_BUYER_TOKEN_AUDIENCE", T_STR, O(buyer_token_audience), NULL, 0, 0, "AUD", "the aud a buyer token must name"},
    {"user-header", "SECKILL_USER_HEADER", T_STR, O(user_header), NULL, 0, 0, "NAME", "the buyer is this header's value, from --trusted-proxies peers only"},
    {"trusted-proxies", "SECKILL_TRUSTED_PROXIES", T_STR, O(trusted_proxies), NULL, 0, 0, "CIDR,...", "peers whose X-Forwarded-For and --user-header are believed"},
    {"redis-password-file", "SECKILL_REDIS_PASSWORD_FILE", T_STR, O(redis_password_file), NULL, 0, 0, "FILE", "file holding the Redis password (keeps it out of argv and env)"},
    {"config", "SECKILL_CONFIG", T_STR, O(config_file), NULL, 0, 0, "FILE", "read `key = value` lines (keys are the long option names)"},
};
/* clang-format on */

/* What SIGHUP applies to a running server (server.c applies each): these options, and the
 * secrets read from the files they name. Everything else keeps its value until a restart. An
 * option added here needs its change applied in server.c's reload. */
static const char *const live_opts[] = {"admin-token-file", "log-file",   "log-level",  "access-log",
                                        "rate-limit",       "rate-burst", "trust-proxy"};
static const struct {
    const char *name; /* as logged in applied=... */
    size_t off;       /* a char * of sk_config_t */
} live_secrets[] = {{"admin-token", O(admin_token)}};

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
    fprintf(out, "  %-30s %s\n  %-30s %s\n  %-30s %s\n", "-t, --check-config",
            "check the configuration (every option, file and secret), open nothing, exit 0 or 1", "-h, --help",
            "print this help and exit", "-v, -V, --version", "print the version and exit");
    fprintf(out, "\nSIGHUP reopens the logs and reloads the configuration: ");
    for (size_t i = 0; i < sizeof(live_opts) / sizeof(live_opts[0]); i++)
        fprintf(out, "%s--%s", i ? ", " : "", live_opts[i]);
    fprintf(out, " (and the admin token) change live; other changes need a restart.\n");
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
    while ((n = getline(&line, &cap, f)) >= 0) { /* every problem is reported, not the first only */
        lineno++;
        snprintf(origin, sizeof(origin), "%s:%d", path, lineno);
        if (n > 0 && line[n - 1] == '\n')
            n--;
        if (n > LINE_MAX_BYTES) {
            fprintf(err, "seckilld: %s: the line is longer than %d bytes\n", origin, LINE_MAX_BYTES);
            rc = -1;
            continue;
        }
        if (memchr(line, '\0', (size_t)n) != NULL) {
            fprintf(err, "seckilld: %s: the line holds a NUL byte\n", origin);
            rc = -1;
            continue;
        }
        char *s = trim(line);
        if (*s == '\0' || *s == '#')
            continue;
        char *eq = strchr(s, '=');
        if (eq == NULL) {
            fprintf(err, "seckilld: %s: expected `key = value`\n", origin);
            rc = -1;
            continue;
        }
        *eq = '\0';
        char *key = trim(s), *val = trim(eq + 1);
        const opt_t *o = find(key, strlen(key));
        if (o == NULL || strcmp(o->name, "config") == 0) {
            fprintf(err, "seckilld: %s: unknown key '%s'\n", origin, key);
            rc = -1;
            continue;
        }
        if (set(cfg, o, val, origin, err) != 0)
            rc = -1;
    }
    free(line);
    fclose(f);
    return rc;
}

/* The trimmed first 511 bytes of a secret's file into a new string, or NULL after saying why,
 * naming the option and the file. */
/* A secret from a file, whole (at most 4 KiB, one line, a final newline trimmed: never cut;
 * sk_secret_file_read). *group_readable (may be NULL) says whether others may read it. */
static char *read_secret(const char *opt, const char *what, const char *path, int *group_readable, FILE *err)
{
    char buf[SK_SECRET_FILE_MAX + 1], why[512];
    size_t n;
    int gr = 0;
    if (access(path, R_OK) != 0) {
        fprintf(err, "seckilld: --%s: cannot open the %s %s: %s\n", opt, what, path, strerror(errno));
        return NULL;
    }
    if (sk_secret_file_read(path, buf, &n, &gr, why, sizeof(why)) != 0) {
        fprintf(err, "seckilld: --%s: the %s: %s\n", opt, what, why);
        return NULL;
    }
    if (group_readable != NULL)
        *group_readable = gr;
    char *out = sk_strndup(buf, n);
    explicit_bzero(buf, sizeof(buf));
    return out;
}

static int read_token(sk_config_t *cfg, FILE *err)
{
    const char *env = getenv("SECKILL_ADMIN_TOKEN");
    free(cfg->admin_token);
    cfg->admin_token = NULL;
    if (cfg->admin_token_file != NULL) {
        if ((cfg->admin_token = read_secret("admin-token-file", "admin token file", cfg->admin_token_file,
                                            &cfg->admin_token_group_readable, err)) == NULL)
            return -1;
    } else if (env != NULL && *env != '\0') {
        cfg->admin_token = sk_strndup(env, strlen(env));
    }
    return 0;
}

/* --redis-password-file: the password goes into the store URL in memory (never into argv or the
 * environment, where ps and /proc show it); every message that prints the URL redacts it
 * (sk_url_redact). */
static int read_redis_password(sk_config_t *cfg, FILE *err)
{
    static const char opt[] = "redis-password-file";
    if (cfg->redis_password_file == NULL)
        return 0;
    if (cfg->store == NULL || strncmp(cfg->store, "redis://", 8) != 0) {
        fprintf(err, "seckilld: --%s is for a redis:// store, and --store is not one\n", opt);
        return -1;
    }
    const char *rest = cfg->store + 8, *slash = strchr(rest, '/');
    const char *at = memchr(rest, '@', slash ? (size_t)(slash - rest) : strlen(rest));
    if (at != NULL) {
        fprintf(err, "seckilld: --%s: --store already holds a password (give it in one place only)\n", opt);
        return -1;
    }
    char *pw = read_secret(opt, "password file", cfg->redis_password_file, NULL, err);
    if (pw == NULL)
        return -1;
    /* redis://:PCT(pw)@rest, every byte outside [A-Za-z0-9._~-] percent-encoded */
    size_t n = strlen(pw), len = 8 + 1 + 3 * n + 1 + strlen(rest) + 1;
    char *url = sk_malloc(len), *o = url;
    o += sprintf(o, "redis://:");
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)pw[i];
        if (isalnum(c) || c == '.' || c == '_' || c == '~' || c == '-')
            *o++ = (char)c;
        else
            o += sprintf(o, "%%%02X", c);
    }
    sprintf(o, "@%s", rest);
    memset(pw, 0, n);
    free(pw);
    free(cfg->store);
    cfg->store = url;
    return 0;
}

int sk_config_load(sk_config_t *cfg, int argc, char **argv, FILE *out, FILE *err)
{
    int bad = 0;
    memset(cfg, 0, sizeof(*cfg));
    cfg->argc = argc;
    cfg->argv = argv;
    for (size_t i = 0; i < NOPTS; i++)
        if (set(cfg, &opts[i], opts[i].def, "default", err) != 0 && opts[i].def != NULL)
            return SK_CONFIG_EXIT_USAGE;

    /* pass 1: --help, --version, --check-config and --config, which decide what else is read */
    const char *file = getenv("SECKILL_CONFIG");
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(out);
            return SK_CONFIG_EXIT_OK;
        }
        if (strcmp(argv[i], "--version") == 0 || strcmp(argv[i], "-v") == 0 || strcmp(argv[i], "-V") == 0) {
            fprintf(out, "seckilld %s\n", SK_VERSION);
            return SK_CONFIG_EXIT_OK;
        }
        if (strcmp(argv[i], "--check-config") == 0 || strcmp(argv[i], "-t") == 0)
            cfg->check_only = 1;
        else if (strcmp(argv[i], "--config") == 0 && i + 1 < argc)
            file = argv[i + 1];
        else if (strncmp(argv[i], "--config=", 9) == 0)
            file = argv[i] + 9;
    }
    /* then every source in turn, each problem reported (a config test lists them all) */
    if (file != NULL && load_file(cfg, file, err) != 0)
        bad++;
    for (size_t i = 0; i < NOPTS; i++) {
        const char *v = getenv(opts[i].env);
        if (v != NULL && strcmp(opts[i].name, "config") != 0 && set(cfg, &opts[i], v, opts[i].env, err) != 0)
            bad++;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *val = NULL;
        if (strcmp(a, "--check-config") == 0 || strcmp(a, "-t") == 0)
            continue;
        if (strncmp(a, "--", 2) != 0) {
            fprintf(err, "seckilld: unexpected argument '%s' (see --help)\n", a);
            bad++;
            continue;
        }
        a += 2;
        const char *eq = strchr(a, '=');
        const opt_t *o = find(a, eq ? (size_t)(eq - a) : strlen(a));
        if (o == NULL) {
            fprintf(err, "seckilld: unknown option '%s' (see --help)\n", argv[i]);
            bad++;
            continue;
        }
        if (eq)
            val = eq + 1;
        else if (o->type != T_BOOL) {
            if (i + 1 >= argc) {
                fprintf(err, "seckilld: option --%s needs a value\n", o->name);
                bad++;
                break;
            }
            val = argv[++i];
        }
        if (set(cfg, o, val, "command line", err) != 0)
            bad++;
    }
    if (read_token(cfg, err) != 0)
        bad++;
    if (read_redis_password(cfg, err) != 0)
        bad++;
    return bad ? SK_CONFIG_EXIT_USAGE : SK_CONFIG_RUN;
}

/* HOST:PORT (HOST may be [v6]) with a port from 0 to 65535; the host is resolved at start. */
static int hostport_ok(const char *s)
{
    const char *colon = strrchr(s, ':');
    char *end;
    if (colon == NULL || colon == s)
        return 0;
    errno = 0;
    long port = strtol(colon + 1, &end, 10);
    return end != colon + 1 && *end == '\0' && errno == 0 && port >= 0 && port <= 65535;
}

int sk_config_check(const sk_config_t *cfg, FILE *err)
{
    int bad = 0;
    char why[512], url[512];
    sk_log_level_t level;
    if (sk_log_parse_level(cfg->log_level, &level) != 0) {
        fprintf(err, "seckilld: --log-level must be debug, info, warn or error, not '%s'\n", cfg->log_level);
        bad++;
    }
    const char *const addr[2][2] = {{"listen", cfg->listen}, {"admin-listen", cfg->admin_listen}};
    for (int k = 0; k < 2; k++)
        if (!hostport_ok(addr[k][1])) {
            fprintf(err, "seckilld: --%s must be HOST:PORT, not '%s'\n", addr[k][0], addr[k][1]);
            bad++;
        }
    const char *empty[][2] = {
        {"log-file", cfg->log_file}, {"access-log", cfg->access_log}, {"admin-token-file", cfg->admin_token_file}};
    for (size_t k = 0; k < sizeof(empty) / sizeof(empty[0]); k++)
        if (empty[k][1] != NULL && empty[k][1][0] == '\0') {
            fprintf(err, "seckilld: --%s is empty (leave it out instead)\n", empty[k][0]);
            bad++;
        }
    sk_url_redact(cfg->store, url, sizeof(url));
    if (strncmp(cfg->store, "sqlite:", 7) != 0 && strncmp(cfg->store, "redis://", 8) != 0 &&
        strncmp(cfg->store, "redis-sentinel://", 17) != 0 && strncmp(cfg->store, "unix://", 7) != 0 &&
        strncmp(cfg->store, "redis-cluster://", 16) != 0) {
        fprintf(err,
                "seckilld: --store '%s' is none of sqlite:PATH, redis://HOST:PORT, unix:///PATH, "
                "redis-sentinel://HOST[:PORT],...#MASTER and redis-cluster://HOST[:PORT],...\n",
                url);
        bad++;
    } else if (sk_store_url_check(cfg->store, why, sizeof(why)) != 0) {
        fprintf(err, "seckilld: --store %s\n", why);
        bad++;
    }
    return bad;
}

/* Whether the option `name` is in live_opts. */
static int is_live(const char *name)
{
    for (size_t i = 0; i < sizeof(live_opts) / sizeof(live_opts[0]); i++)
        if (strcmp(live_opts[i], name) == 0)
            return 1;
    return 0;
}

int sk_config_live(const char *name)
{
    return is_live(name);
}

static int same_str(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

static void add_name(char *list, size_t len, const char *name)
{
    size_t n = strlen(list);
    snprintf(list + n, len - n, "%s%s", n ? "," : "", name);
}

int sk_config_reload(sk_config_t *next, const sk_config_t *cur, char *applied, size_t alen, char *restart, size_t rlen,
                     FILE *err)
{
    applied[0] = restart[0] = '\0';
    if (sk_config_load(next, cur->argc, cur->argv, err, err) != SK_CONFIG_RUN || sk_config_check(next, err) != 0) {
        sk_config_dispose(next);
        return -1;
    }
    for (size_t i = 0; i < NOPTS; i++) {
        const opt_t *o = &opts[i];
        char *pn = (char *)next + o->off;
        const char *pc = (const char *)cur + o->off;
        int changed =
            o->type == T_STR ? !same_str(*(char **)pn, *(char *const *)pc) : *(int64_t *)pn != *(const int64_t *)pc;
        if (is_live(o->name)) {
            if (changed)
                add_name(applied, alen, o->name);
            continue;
        }
        if (changed)
            add_name(restart, rlen, o->name);
        /* what needs a restart keeps its running value */
        if (o->type == T_STR) {
            free(*(char **)pn);
            *(char **)pn = *(char *const *)pc ? sk_strndup(*(char *const *)pc, strlen(*(char *const *)pc)) : NULL;
        } else {
            *(int64_t *)pn = *(const int64_t *)pc;
        }
    }
    for (size_t i = 0; i < sizeof(live_secrets) / sizeof(live_secrets[0]); i++)
        if (!same_str(*(char **)((char *)next + live_secrets[i].off),
                      *(char *const *)((const char *)cur + live_secrets[i].off)))
            add_name(applied, alen, live_secrets[i].name);
    return 0;
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
