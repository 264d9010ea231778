/* main.c: options -> server -> run -> exit code, nothing else. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include "accesslog.h"
#include "config.h"
#include "log.h"
#include "server.h"
#include "store.h"
#include "util.h"
#ifdef SK_MIMALLOC
#include <mimalloc.h>
#endif

/* -t: every problem of the configuration on stderr, nothing opened; 0 when there is none. */
static int check_config(sk_config_t *cfg, int load_rc)
{
    int bad = (load_rc != SK_CONFIG_RUN) + sk_config_check(cfg, stderr);
    const char *file = cfg->config_file ? cfg->config_file : "(no --config file)";
    if (bad)
        fprintf(stderr, "seckilld: the configuration %s has problems (each on a line above)\n", file);
    else
        fprintf(stderr, "seckilld: the configuration %s is ok\n", file);
    return bad ? 1 : 0;
}

int main(int argc, char **argv)
{
    sk_config_t cfg;
    sk_log_level_t level;
    int rc = sk_config_load(&cfg, argc, argv, stdout, stderr);
    if (cfg.check_only && rc != SK_CONFIG_EXIT_OK) {
        rc = check_config(&cfg, rc);
        sk_config_dispose(&cfg);
        return rc;
    }
    if (rc != SK_CONFIG_RUN || sk_config_check(&cfg, stderr) != 0) {
        sk_config_dispose(&cfg);
        return rc == SK_CONFIG_EXIT_OK ? 0 : 2;
    }
    sk_log_parse_level(cfg.log_level, &level); /* checked above */
    sk_log_level = level;
    if (sk_log_open(cfg.log_file) != 0) {
        fprintf(stderr, "seckilld: --log-file: cannot open %s: %s\n", cfg.log_file, strerror(errno));
        sk_config_dispose(&cfg);
        return 1;
    }
    if (cfg.access_log != NULL && sk_accesslog_open(cfg.access_log) != 0) {
        fprintf(stderr, "seckilld: --access-log: cannot open %s: %s\n", cfg.access_log, strerror(errno));
        sk_config_dispose(&cfg);
        return 1;
    }
#ifdef SK_MIMALLOC
    int v = mi_version(); /* also keeps the link to libmimalloc under --as-needed */
    sk_log(SK_LOG_INFO, "event=allocator name=mimalloc version=%d.%d.%d", v / 100, v / 10 % 10, v % 10);
#else
    sk_log(SK_LOG_INFO, "event=allocator name=libc");
#endif
    rc = sk_server_run(&cfg);
    sk_config_dispose(&cfg);
    return rc;
}
