/* phr.h: picohttpparser's request parser, as built into libh2o, whose installed headers do not
 * declare it (h2o/http1.h parses with it; Debian ships no picohttpparser.h). Declared here once,
 * with picohttpparser's own signature, for api.c (which reads a request head again exactly as h2o
 * read it) and the fuzz target of request heads. */
#ifndef SK_PHR_H
#define SK_PHR_H

#include <stddef.h>

struct phr_header {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
};

/* Returns the head's length once it is whole, -2 while it is partial, -1 when it is malformed. */
int phr_parse_request(const char *buf, size_t len, const char **method, size_t *method_len, const char **path,
                      size_t *path_len, int *minor_version, struct phr_header *headers, size_t *num_headers,
                      size_t last_len);

#endif
