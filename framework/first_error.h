/* first_error.h: the sticky errors of the core, a graph's and a parameter
 * block's: the first failure is kept with its message and later ones do not
 * overwrite it (the first error is the one worth reading). Internal to
 * libbptt; not installed. */
#ifndef BPTT_FIRST_ERROR_H
#define BPTT_FIRST_ERROR_H

#include <stdarg.h>

#include "bptt.h"

/* Records s with the message in *status and err[errlen] unless *status
 * already holds a failure; returns *status, the first failure. */
bt_status bt_first_error(bt_status *status, char *err, size_t errlen, bt_status s, const char *fmt,
                         va_list ap);

#endif
