/* bt_assert.h: the second tier of errors, for bugs in bptt's own code. A user
 * or a plugin can never trigger BT_ASSERT (bad input gets a bt_status and a
 * message); when it fires, bptt is wrong, so it says where and stops.
 * Unlike assert(), it stays on in every build (NDEBUG does not remove it).
 * Header-only so every layer and the program can use it without the library
 * exporting a symbol for it; not installed. */
#ifndef BPTT_ASSERT_H
#define BPTT_ASSERT_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

__attribute__((noreturn, format(printf, 4, 5), cold)) static inline void
bt_assert_fail(const char *file, int line, const char *cond, const char *fmt, ...)
{
    fprintf(stderr, "%s:%d: bptt internal error: ", file, line);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, " (failed: %s)\n", cond);
    fflush(stderr);
    abort();
}

/* BT_ASSERT(cond, fmt, ...): if cond is false, prints "file:line: bptt internal
 * error: <message> (failed: cond)" on stderr and aborts. */
#define BT_ASSERT(cond, ...) \
    ((cond) ? (void)0 : bt_assert_fail(__FILE__, __LINE__, #cond, __VA_ARGS__))

#endif
