/* accesslog.h: the optional access log (--access-log PATH), one line per request:
 *   2026-11-27T08:18:04Z 127.0.0.1 POST /v1/sales/s1/orders 409 sold_out 123
 * (time, client, method, path, status, outcome: the API error code, "won", "replayed" or "-",
 * latency in microseconds). Each worker thread buffers its lines and writes them in blocks of
 * up to 64 KiB, at least once a second, so logging costs no system call per request. */
#ifndef SK_ACCESSLOG_H
#define SK_ACCESSLOG_H

#include <stddef.h>
#include <stdint.h>

/* Opens the log (O_APPEND). Returns 0 or -1 with errno set. */
int sk_accesslog_open(const char *path);
/* Makes `path` the log (NULL: off), for a config reload; the lines already buffered go to the
 * new destination. Returns 0, or -1 with errno set and nothing changed. Main thread only. */
int sk_accesslog_set(const char *path);
/* Reopens the file after a rename (SIGHUP); writers never see a closed descriptor. */
int sk_accesslog_reopen(void);
int sk_accesslog_enabled(void);

/* Appends a line to the calling thread's buffer. */
void sk_accesslog_add(const char *client, const char *method, size_t mlen, const char *path, size_t plen,
                      int status, const char *outcome, int64_t latency_us);
/* Writes the calling thread's buffer if it is older than a second (force: now). */
void sk_accesslog_flush(int force);

#endif
