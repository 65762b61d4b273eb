/* cli.c: argument parsing and plugin loading shared by the subcommands. */
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

bool cli_args_init(cli_args *a, int argc, char **argv)
{
    a->argc = argc;
    a->argv = argv;
    a->used = bt_calloc((size_t)argc + 1, sizeof(bool));
    if (a->used && argc > 0)
        a->used[0] = true; /* the command name */
    return a->used != NULL;
}

void cli_args_free(cli_args *a) { bt_free(a->used); }

bool cli_wants_help(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
            return true;
    return false;
}

/* Index of the value of --name at argv[i], or -1; handles --name=value. */
static const char *match(cli_args *a, int i, const char *name, bool want_value, int *consumed)
{
    const char *arg = a->argv[i];
    size_t n = strlen(name);
    if (strncmp(arg, "--", 2) != 0 || strncmp(arg + 2, name, n) != 0)
        return NULL;
    const char *rest = arg + 2 + n;
    if (*rest == '=' && want_value) {
        *consumed = 1;
        return rest + 1;
    }
    if (*rest != '\0')
        return NULL;
    if (!want_value) {
        *consumed = 1;
        return "";
    }
    if (i + 1 >= a->argc) {
        *consumed = 1;
        return NULL; /* reported by the caller as missing */
    }
    *consumed = 2;
    return a->argv[i + 1];
}

const char *cli_get(cli_args *a, const char *name)
{
    const char *found = NULL;
    for (int i = 1; i < a->argc; i++) {
        int c = 0;
        const char *v = match(a, i, name, true, &c);
        if (c) {
            for (int k = 0; k < c; k++)
                a->used[i + k] = true;
            if (!v) {
                fprintf(stderr, "bptt: --%s needs a value\n", name);
                return NULL;
            }
            found = v;
            i += c - 1;
        }
    }
    return found;
}

int cli_get_all(cli_args *a, const char *name, const char **out, int max)
{
    int n = 0;
    for (int i = 1; i < a->argc; i++) {
        int c = 0;
        const char *v = match(a, i, name, true, &c);
        if (c) {
            for (int k = 0; k < c; k++)
                a->used[i + k] = true;
            if (v && n < max)
                out[n++] = v;
            i += c - 1;
        }
    }
    return n;
}

bool cli_flag(cli_args *a, const char *name)
{
    bool on = false;
    for (int i = 1; i < a->argc; i++) {
        int c = 0;
        match(a, i, name, false, &c);
        if (c) {
            a->used[i] = true;
            on = true;
        }
    }
    return on;
}

bool cli_int(cli_args *a, const char *name, long def, long min, long max, long *out)
{
    const char *v = cli_get(a, name);
    *out = def;
    if (!v)
        return true;
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < min || x > max) {
        fprintf(stderr, "bptt: --%s %s: expected a whole number in [%ld, %ld]\n", name, v, min, max);
        return false;
    }
    *out = x;
    return true;
}

bool cli_double(cli_args *a, const char *name, double def, double min, double max, double *out)
{
    const char *v = cli_get(a, name);
    *out = def;
    if (!v)
        return true;
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || end == v || *end || !(x >= min && x <= max)) {
        fprintf(stderr, "bptt: --%s %s: expected a number in [%g, %g]\n", name, v, min, max);
        return false;
    }
    *out = x;
    return true;
}

bool cli_checkpoint(cli_args *a, int *every, double *budget_mb)
{
    const char *ck = cli_get(a, "checkpoint");
    if (ck) {
        char *end;
        errno = 0;
        long n = strtol(ck, &end, 10);
        if (strcmp(ck, "sqrt") == 0)
            *every = -1;
        else if (strcmp(ck, "off") == 0)
            *every = 0;
        else if (*ck && !*end && !errno && n >= 1 && n <= 100000000)
            *every = (int)n;
        else {
            fprintf(stderr, "bptt: --checkpoint %s: use 'sqrt', 'off' or a number of steps >= 1\n", ck);
            return false;
        }
    }
    return cli_double(a, "memory-budget", 0, 0, 1e9, budget_mb);
}

void cli_checkpoint_usage(FILE *f)
{
    fprintf(f,
        "  --checkpoint sqrt|N    exact BPTT in less memory: keep one state every sqrt(window)\n"
        "                         (or N) steps and recompute the rest during backward\n"
        "  --memory-budget MB     checkpoint only windows that would not fit in MB, with the\n"
        "                         largest spacing that fits (an error says the minimum)\n");
}

int cli_check_unused(cli_args *a, const char *command)
{
    for (int i = 1; i < a->argc; i++)
        if (!a->used[i]) {
            fprintf(stderr, "bptt %s: unknown option or argument '%s' (see bptt %s --help)\n",
                    command, a->argv[i], command);
            return 2;
        }
    return 0;
}

bt_registry *cli_load_plugins(cli_args *a)
{
    char err[2048] = "";
    bt_registry *r = bt_registry_new();
    if (!r) {
        fprintf(stderr, "bptt: out of memory\n");
        return NULL;
    }
    if (bt_registry_load_default(r, err, sizeof err) != BT_OK)
        fprintf(stderr, "bptt: warning: %s\n", err); /* a broken file in a folder: keep going */
    const char *paths[64];
    int n = cli_get_all(a, "plugin", paths, 64);
    for (int i = 0; i < n; i++)
        if (bt_registry_load(r, paths[i], err, sizeof err) != BT_OK) {
            fprintf(stderr, "bptt: %s\n", err);
            bt_registry_free(r);
            return NULL;
        }
    return r;
}

int cli_fail(const char *command, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "bptt %s: ", command);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 1;
}

void cli_json_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
        switch (*p) {
        case '"': fputs("\\\"", f); break;
        case '\\': fputs("\\\\", f); break;
        case '\n': fputs("\\n", f); break;
        case '\r': fputs("\\r", f); break;
        case '\t': fputs("\\t", f); break;
        case '\b': fputs("\\b", f); break;
        case '\f': fputs("\\f", f); break;
        default:
            if (*p < 0x20)
                fprintf(f, "\\u%04x", *p);
            else
                fputc(*p, f);
        }
    }
    fputc('"', f);
}
