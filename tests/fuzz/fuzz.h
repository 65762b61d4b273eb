/* fuzz.h: what the libFuzzer targets in tests/fuzz share: FUZZ_CHECK, which
 * turns a broken invariant into a crash libFuzzer records (with the message
 * on the sanitizer's report channel, so it survives -close_fd_mask), a
 * NUL-terminated copy of the input, and the shipped plugins loaded once from
 * the build tree. Each target is one file that includes this header. */
#ifndef BPTT_FUZZ_H
#define BPTT_FUZZ_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bptt_config.h"
#include "registry.h"

/* The sanitizer runtime's printer: it writes where sanitizer reports go,
 * which libFuzzer keeps open when it closes stderr. */
void __sanitizer_report_error_summary(const char *error_summary);

__attribute__((format(printf, 3, 4), noreturn, unused))
static void fuzz_fail(const char *file, int line, const char *fmt, ...)
{
    char msg[1024];
    int k = snprintf(msg, sizeof msg, "%s:%d: invariant broken: ", file, line);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg + k, sizeof msg - (size_t)k, fmt, ap);
    va_end(ap);
    __sanitizer_report_error_summary(msg);
    abort();
}

/* An invariant of the code under test: a crash with the message when false. */
#define FUZZ_CHECK(cond, ...) \
    do { \
        if (!(cond)) \
            fuzz_fail(__FILE__, __LINE__, __VA_ARGS__); \
    } while (0)

/* data[0..n) with a NUL after it (malloc'd; the caller frees). Inputs with a
 * NUL inside are cut there, as a C string would be. */
__attribute__((unused))
static char *fuzz_cstr(const uint8_t *data, size_t n)
{
    char *s = malloc(n + 1);
    if (!s)
        abort();
    memcpy(s, data, n);
    s[n] = '\0';
    return s;
}

/* The shipped cells, policies and optimizers, from the build tree's plugin
 * folder (built with the same instrumentation as the libraries). */
__attribute__((unused))
static bt_registry *fuzz_registry(void)
{
    static bt_registry *r;
    if (!r) {
        char err[1024] = "";
        r = bt_registry_new();
        if (!r || bt_registry_load_dir(r, BT_BUILD_PLUGIN_DIR, err, sizeof err) != BT_OK ||
            !bt_registry_cell(r, "rnn_tanh") || !bt_registry_policy(r, "full") ||
            !bt_registry_optimizer(r, "sgd")) {
            fprintf(stderr, "fuzz: cannot load the shipped plugins from %s: %s (build them: "
                    "ninja -C BUILD)\n", BT_BUILD_PLUGIN_DIR, err);
            exit(1);
        }
    }
    return r;
}

#endif
