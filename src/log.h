/* log.h: one line per event, `time level=LEVEL key=value ...`, to stderr or --log-file. The level
 * is checked before anything is formatted. sk_log_reopen (on SIGHUP) reopens the file for
 * logrotate. On stderr under systemd (JOURNAL_STREAM names stderr), each line starts with the
 * syslog priority `<N>` (sd-daemon(3)), so that journald keeps the level (`journalctl -p err`).
 * sk_log_limited is sk_log for lines that a lasting fault repeats (a failing disk, a full
 * descriptor table): at most one line per SK_LOG_LIMIT_MS per call site, the next one carrying
 * `suppressed=N`. */
#ifndef SK_LOG_H
#define SK_LOG_H

#include <stdatomic.h>
#include <stdint.h>

typedef enum sk_log_level_e { SK_LOG_DEBUG, SK_LOG_INFO, SK_LOG_WARN, SK_LOG_ERROR } sk_log_level_t;

/* Atomic: SIGHUP may change it (config reload) while workers log. */
extern _Atomic sk_log_level_t sk_log_level;

/* Opens `path` for appending (NULL: stderr, with the `<N>` prefix when stderr is the journal).
 * Returns 0, or -1 with errno set and the previous destination kept. */
int sk_log_open(const char *path);
int sk_log_reopen(void);
/* The name of a level ("debug", ...), and whether stderr lines carry the `<N>` prefix. */
const char *sk_log_level_name(sk_log_level_t level);
int sk_log_syslog_prefix(void);
int sk_log_parse_level(const char *name, sk_log_level_t *out);
void sk_log_write(sk_log_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define sk_log(level, ...)                                                                                  \
    do {                                                                                                    \
        if ((level) >= sk_log_level)                                                                        \
            sk_log_write((level), __VA_ARGS__);                                                             \
    } while (0)

/* ---- rate-limited lines ---- */

#define SK_LOG_LIMIT_MS 60000 /* one line per call site per minute */

/* The state of one rate-limited call site (or of any key the caller gives one to). Zero it
 * (static storage is) before first use; safe to share between threads. */
typedef struct sk_log_limit_s {
    _Atomic int64_t next_ms;     /* sk_mono_ms() from which the next line may be written; 0: any time */
    _Atomic uint64_t suppressed; /* lines not written since the last one that was */
} sk_log_limit_t;

/* The decision, apart from writing (unit-tested): returns 1 when a line at `now_ms` (monotonic)
 * is to be written, with *suppressed set to the number of lines held back since the previous
 * written one, or 0 when it is to be held back (and counted). */
int sk_log_limit_pass(sk_log_limit_t *lim, int64_t now_ms, uint64_t *suppressed);

/* Writes the line as sk_log_write does when sk_log_limit_pass lets it through, with
 * ` suppressed=N` appended when N > 0. */
void sk_log_limited_write(sk_log_limit_t *lim, sk_log_level_t level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* sk_log with one sk_log_limit_t per call site: the first line is written, further lines from
 * the same site within SK_LOG_LIMIT_MS are counted, and the first line after that ends with
 * `suppressed=N`. A line below the log level is neither written nor counted. */
#define sk_log_limited(level, ...)                                                                          \
    do {                                                                                                    \
        static sk_log_limit_t sk_log_site_;                                                                 \
        if ((level) >= sk_log_level)                                                                        \
            sk_log_limited_write(&sk_log_site_, (level), __VA_ARGS__);                                      \
    } while (0)

#endif
