/* log.h: one line per event, `time level key=value ...`, to stderr or --log-file. The level is
 * checked before anything is formatted. sk_log_reopen (on SIGHUP) reopens the file for logrotate. */
#ifndef SK_LOG_H
#define SK_LOG_H

typedef enum sk_log_level_e { SK_LOG_DEBUG, SK_LOG_INFO, SK_LOG_WARN, SK_LOG_ERROR } sk_log_level_t;

extern sk_log_level_t sk_log_level;

/* Opens `path` for appending (NULL: stderr). Returns 0 or -1 with errno set. */
int sk_log_open(const char *path);
int sk_log_reopen(void);
int sk_log_parse_level(const char *name, sk_log_level_t *out);
void sk_log_write(sk_log_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define sk_log(level, ...)                                                                                  \
    do {                                                                                                    \
        if ((level) >= sk_log_level)                                                                        \
            sk_log_write((level), __VA_ARGS__);                                                             \
    } while (0)

#endif
