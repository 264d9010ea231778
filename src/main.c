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
#include <pthread.h>
/* util.h's sk_mem_collect. mimalloc returns a free page to the system only some time after it
 * became free (its decommit delays, 25 and 500 ms by default, which spare a busy thread giving
 * back and taking again the same pages), and only at a later collection, which an idle worker
 * never makes: the delays are 0 for the collection (one thread's at a time), then as they were. */
static pthread_mutex_t collecting = PTHREAD_MUTEX_INITIALIZER;
static long decommit_delay, segment_decommit_delay; /* mimalloc's, read at start */
static void mem_collect(void)
{
    pthread_mutex_lock(&collecting);
    mi_option_set(mi_option_decommit_delay, 0);
    mi_option_set(mi_option_segment_decommit_delay, 0);
    mi_collect(true);
    mi_option_set(mi_option_decommit_delay, decommit_delay);
    mi_option_set(mi_option_segment_decommit_delay, segment_decommit_delay);
    pthread_mutex_unlock(&collecting);
}
#elif !defined(SK_SANITIZED)
#include <malloc.h>
/* util.h's sk_mem_collect: glibc's free memory back to the system, from every arena (not under a
 * sanitizer: its allocator replaces glibc's, whose arenas malloc_trim would walk uninitialised) */
static void mem_collect(void)
{
    malloc_trim(0);
}
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
#if defined(SK_MIMALLOC) || !defined(SK_SANITIZED)
    sk_mem_collect = mem_collect;
#endif
#ifdef SK_MIMALLOC
    decommit_delay = mi_option_get(mi_option_decommit_delay);
    segment_decommit_delay = mi_option_get(mi_option_segment_decommit_delay);
    int v = mi_version(); /* also keeps the link to libmimalloc under --as-needed */
    sk_log(SK_LOG_INFO, "event=allocator name=mimalloc version=%d.%d.%d", v / 100, v / 10 % 10, v % 10);
#else
    sk_log(SK_LOG_INFO, "event=allocator name=libc");
#endif
    rc = sk_server_run(&cfg);
    sk_config_dispose(&cfg);
    return rc;
}
