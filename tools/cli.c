/* cli.c: the table-driven argument parser, --help, and plugin loading shared
 * by the subcommands. */
#include <errno.h>
#include <sys/stat.h>
#include <unistd.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "bt_assert.h"
#include "cli.h"
#include "unroll.h"

/* Options every command takes, after its own tables; cli_args_begin applies them. */
static const cli_option common_options[] = {
    {"threads", "N", "threads: train splits each minibatch's rows (a process's, under "
                     "mpirun) over them, one BLAS thread each (not with an online estimator, "
                     "which keeps its rows together); other commands run their matrix products on "
                     "them (OpenBLAS; default: its own choice, OPENBLAS_NUM_THREADS or the "
                     "number of cores)"},
    {NULL, NULL, NULL},
};

/* Table t of cmd: its own tables, then the common one; NULL after the last. */
static const cli_option *table(const cli_command *cmd, int t)
{
    int own = 0;
    while (own < CLI_MAX_TABLES && cmd->options[own])
        own++;
    return t < own ? cmd->options[t] : t == own ? common_options : NULL;
}

static const cli_option *find_option(const cli_command *cmd, const char *name, size_t len)
{
    for (int t = 0; table(cmd, t); t++)
        for (const cli_option *o = table(cmd, t); o->name; o++)
            if (strlen(o->name) == len && strncmp(o->name, name, len) == 0)
                return o;
    return NULL;
}

static bool is_help(const char *arg) { return !strcmp(arg, "--help") || !strcmp(arg, "-h"); }

/* The declared option arg names ("--name" or "--name=value"), or NULL. */
static const cli_option *option_of(const cli_command *cmd, const char *arg)
{
    if (strncmp(arg, "--", 2) != 0)
        return NULL;
    const char *name = arg + 2, *eq = strchr(name, '=');
    return find_option(cmd, name, eq ? (size_t)(eq - name) : strlen(name));
}

/* argv[*i] is option o: its value, or NULL with the reason in msg. */
static const char *value_of(const cli_option *o, int argc, char **argv, int *i, char *msg,
                            size_t len, const cli_command *cmd)
{
    const char *eq = strchr(argv[*i], '=');
    if (!o->arg) {
        if (eq)
            snprintf(msg, len, "--%s takes no value (got '%s')", o->name, argv[*i]);
        return eq ? NULL : "";
    }
    if (eq)
        return eq + 1;
    /* The next word, unless it is the next option: `--truncation --seed 3` lacks a value. */
    if (*i + 1 < argc && !is_help(argv[*i + 1]) && !option_of(cmd, argv[*i + 1]))
        return argv[++*i];
    if (*i + 1 < argc)
        snprintf(msg, len, "--%s needs a value (--%s %s), but %s follows it", o->name, o->name,
                 o->arg, argv[*i + 1]);
    else
        snprintf(msg, len, "--%s needs a value (--%s %s) and is last on the line", o->name,
                 o->name, o->arg);
    return NULL;
}

void cli_args_free(cli_args *a)
{
    bt_free(a->given);
    a->given = NULL;
    a->n = 0;
}

bool cli_args_begin(cli_args *a, const cli_command *cmd, int argc, char **argv, int *rc)
{
    memset(a, 0, sizeof *a);
    a->cmd = cmd;
    a->given = bt_calloc(argc > 0 ? (size_t)argc : 1, sizeof *a->given);
    if (!a->given) {
        *rc = cli_fail(cmd->name, "out of memory");
        return false;
    }
    /* The first problem is reported, but --help anywhere wins over it. */
    char msg[512] = "";
    bool help = false;
    for (int i = 1; i < argc; i++) {
        const cli_option *o = option_of(cmd, argv[i]);
        const char *value = NULL;
        char why[512] = "";
        if (is_help(argv[i]))
            help = true;
        else if (!o)
            snprintf(why, sizeof why, strncmp(argv[i], "--", 2) == 0
                     ? "unknown option %s (see bptt %s --help)"
                     : "unexpected argument '%s': options start with -- (see bptt %s --help)",
                     argv[i], cmd->name);
        else if ((value = value_of(o, argc, argv, &i, why, sizeof why, cmd)))
            a->given[a->n++] = (cli_given){.opt = o, .value = value};
        if (why[0] && !msg[0])
            memcpy(msg, why, sizeof msg);
    }
    if (help) {
        cli_print_help(stdout, cmd);
        *rc = 0;
    } else if (msg[0]) {
        fprintf(stderr, "bptt %s: %s\n", cmd->name, msg);
        *rc = 2;
    }
    if (help || msg[0]) {
        cli_args_free(a); /* the command returns *rc at once */
        return false;
    }
    long threads;
    if (!cli_int(a, "threads", 0, 0, 1024, &threads)) {
        cli_args_free(a);
        *rc = 2;
        return false;
    }
    if (threads > 0)
        bt_blas_set_threads((int)threads);
    return true;
}

/* A name the code reads must be in the table, with the right kind: a bug otherwise. */
static const cli_option *declared(const cli_args *a, const char *name, bool takes_value)
{
    const cli_option *o = find_option(a->cmd, name, strlen(name));
    BT_ASSERT(o && (o->arg != NULL) == takes_value,
              "bptt %s: the code reads --%s as a %s, but the command's option table %s",
              a->cmd->name, name, takes_value ? "value" : "flag",
              o ? "says otherwise" : "does not declare it");
    return o;
}

void cli_args_check_read(const cli_args *a)
{
    for (int i = 0; i < a->n; i++)
        BT_ASSERT(a->given[i].read,
                  "bptt %s: --%s is in the command's option table, but the command never read it",
                  a->cmd->name, a->given[i].opt->name);
}

const char *cli_get(cli_args *a, const char *name)
{
    const cli_option *o = declared(a, name, true);
    const char *found = NULL;
    for (int i = 0; i < a->n; i++)
        if (a->given[i].opt == o) {
            a->given[i].read = true;
            found = a->given[i].value;
        }
    return found;
}

int cli_get_all(cli_args *a, const char *name, const char **out, int max)
{
    const cli_option *o = declared(a, name, true);
    int n = 0;
    for (int i = 0; i < a->n; i++)
        if (a->given[i].opt == o) {
            a->given[i].read = true;
            if (n < max)
                out[n++] = a->given[i].value;
        }
    return n;
}

bool cli_flag(cli_args *a, const char *name)
{
    const cli_option *o = declared(a, name, false);
    bool on = false;
    for (int i = 0; i < a->n; i++)
        if (a->given[i].opt == o)
            on = a->given[i].read = true;
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
    if (!cli_double(a, "memory-budget", 0, 0, 1e9, budget_mb))
        return false;
    size_t bytes;
    char err[256];
    if (bt_unroll_budget_bytes(*budget_mb, &bytes, err, sizeof err) != BT_OK) {
        fprintf(stderr, "bptt: --memory-budget: %s\n", err);
        return false;
    }
    return true;
}

/* "  --name ARG   help", the help wrapped at word boundaries to 80 columns. */
static void print_option(FILE *f, const char *left, const char *help)
{
    enum { COL = 25, WIDTH = 80 };
    int at = fprintf(f, "  %s", left);
    const char *p = help;
    while (*p) {
        size_t word = strcspn(p, " ");
        if (at >= COL && at + 1 + (int)word >= WIDTH) /* the word moves to a new line */
            at = 0, fputc('\n', f);
        at += fprintf(f, "%*s%.*s", at < COL ? COL - at : 1, "", (int)word, p);
        p += word;
        p += strspn(p, " ");
    }
    fputc('\n', f);
}

void cli_print_help(FILE *f, const cli_command *cmd)
{
    fprintf(f, "usage: bptt %s %s\n\n", cmd->name, cmd->usage);
    if (cmd->about)
        fprintf(f, "%s\n\n", cmd->about);
    char left[128];
    for (int t = 0; table(cmd, t); t++)
        for (const cli_option *o = table(cmd, t); o->name; o++) {
            snprintf(left, sizeof left, "--%s%s%s", o->name, o->arg ? " " : "",
                     o->arg ? o->arg : "");
            print_option(f, left, o->help);
        }
    print_option(f, "-h, --help", "print this help");
    if (cmd->notes)
        fprintf(f, "\n%s\n", cmd->notes);
}

void cli_print_option_list(FILE *f, const cli_command *cmd)
{
    for (int t = 0; table(cmd, t); t++)
        for (const cli_option *o = table(cmd, t); o->name; o++)
            fprintf(f, "--%s%s%s\n", o->name, o->arg ? " " : "", o->arg ? o->arg : "");
}

/* Run from a build tree (build/tools/bptt, with build/meson-info beside it),
 * bptt loads that build's freshly made plugins after BPTT_PLUGIN_PATH and
 * before the installed folder, without installing. An installed bptt never
 * looks into a build tree: the path is found at run time, not compiled in. */
static void add_build_tree_plugins(void)
{
    char dir[4096];
    ssize_t n = readlink("/proc/self/exe", dir, sizeof dir - 32);
    if (n <= 0)
        return;
    dir[n] = '\0';
    for (int up = 0; up < 2; up++) { /* build/tools/bptt -> build */
        char *slash = strrchr(dir, '/');
        if (!slash)
            return;
        *slash = '\0';
    }
    size_t len = strlen(dir);
    struct stat st;
    strcpy(dir + len, "/meson-info");
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return;
    strcpy(dir + len, "/plugins");
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return;
    const char *old = getenv("BPTT_PLUGIN_PATH");
    char *path = bt_malloc((old ? strlen(old) : 0) + strlen(dir) + 2);
    if (!path)
        return;
    sprintf(path, "%s%s%s", old && *old ? old : "", old && *old ? ":" : "", dir);
    setenv("BPTT_PLUGIN_PATH", path, 1);
    bt_free(path);
}

bt_registry *cli_load_plugins(cli_args *a)
{
    char err[2048] = "";
    add_build_tree_plugins();
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

bool cli_begin(const cli_command *cmd, int argc, char **argv, cli_read_fn read, void *opts,
               bt_registry **reg, int *rc)
{
    cli_args a;
    *reg = NULL;
    if (!cli_args_begin(&a, cmd, argc, argv, rc))
        return false;
    if (read && !read(&a, opts))
        *rc = 2;
    else if (!(*reg = cli_load_plugins(&a)))
        *rc = 1;
    else
        cli_args_check_read(&a);
    cli_args_free(&a);
    return *reg != NULL;
}

static void vfail(const char *command, const char *fmt, va_list ap)
{
    fprintf(stderr, "bptt %s: ", command);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

int cli_fail(const char *command, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfail(command, fmt, ap);
    va_end(ap);
    return 1;
}

int cli_usage(const char *command, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfail(command, fmt, ap);
    va_end(ap);
    return 2;
}
