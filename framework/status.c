/* status.c: names of status codes, error messages (and the first-error-kept
 * rule of sticky errors), and the library version. */
#include <stdarg.h>
#include <stdio.h>

#include "bptt.h"
#include "first_error.h"

static void verrorf(char *err, size_t errlen, const char *fmt, va_list ap)
{
    if (err && errlen)
        vsnprintf(err, errlen, fmt, ap);
}

void bt_errorf(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    verrorf(err, errlen, fmt, ap);
    va_end(ap);
}

bt_status bt_error(char *err, size_t errlen, bt_status s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    verrorf(err, errlen, fmt, ap);
    va_end(ap);
    return s;
}

bt_status bt_first_error(bt_status *status, char *err, size_t errlen, bt_status s, const char *fmt,
                         va_list ap)
{
    if (*status == BT_OK) {
        *status = s;
        verrorf(err, errlen, fmt, ap);
    }
    return *status;
}

const char *bt_status_name(bt_status s)
{
    switch (s) {
    case BT_OK: return "ok";
    case BT_ERR_ARG: return "invalid argument";
    case BT_ERR_SHAPE: return "shape mismatch";
    case BT_ERR_NOMEM: return "out of memory";
    case BT_ERR_IO: return "i/o error";
    case BT_ERR_FORMAT: return "malformed file";
    case BT_ERR_PLUGIN: return "plugin error";
    case BT_ERR_NUMERIC: return "non-finite value";
    case BT_ERR_NOT_FOUND: return "not found";
    }
    return "unknown status";
}

const char *bt_version(void) { return BT_VERSION; }
