/* error.c: lookups over SK_ERROR_MAP (see error.h). */
#include "error.h"

typedef struct {
    int status;
    const char *code;
    const char *message;
} row_t;

static const row_t rows[] = {
#define XX(name, status, code, msg) {status, code, msg},
    SK_ERROR_MAP(XX)
#undef XX
};

static const row_t *row(int err)
{
    if (err <= SK_ERR_FIRST_ || err >= SK_ERR_END_)
        err = SK_EINTERNAL;
    return &rows[err - SK_ERR_FIRST_ - 1];
}

int sk_err_status(int err) { return row(err)->status; }
const char *sk_err_code(int err) { return row(err)->code; }
const char *sk_err_message(int err) { return row(err)->message; }
