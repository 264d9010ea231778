/* main.c: options -> server -> run -> exit code, nothing else. */
#include <stdio.h>
#include "accesslog.h"
#include "config.h"
#include "log.h"
#include "server.h"
#include "store.h"
#ifdef SK_MIMALLOC
#include <mimalloc.h>
#endif

int main(int argc, char **argv)
{
    sk_config_t cfg;
    sk_log_level_t level;
    int rc = sk_config_load(&cfg, argc, argv, stdout, stderr);
    if (rc != SK_CONFIG_RUN) {
        sk_config_dispose(&cfg);
        return rc == SK_CONFIG_EXIT_OK ? 0 : 2;
    }
    char err[512];
    if (sk_store_url_check(cfg.store, err, sizeof(err)) != 0) {
        fprintf(stderr, "seckilld: --store %s\n", err);
        sk_config_dispose(&cfg);
        return 2;
    }
    if (sk_log_parse_level(cfg.log_level, &level) != 0) {
        fprintf(stderr, "seckilld: --log-level must be debug, info, warn or error\n");
        sk_config_dispose(&cfg);
        return 2;
    }
    sk_log_level = level;
    if (sk_log_open(cfg.log_file) != 0) {
        perror("seckilld: cannot open the log file");
        sk_config_dispose(&cfg);
        return 1;
    }
    if (cfg.access_log != NULL && sk_accesslog_open(cfg.access_log) != 0) {
        perror("seckilld: cannot open the access log");
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
