/* cli.h: what every `bptt` subcommand shares: the prologue each starts with
 * (cli_begin: help, arguments, its own options, plugins), the argument parser
 * driven by each command's table of options (which --help prints), loading
 * plugins (default folders plus --plugin files), and error output.
 * Each command lives in its own tools/cmd_<name>.c. */
#ifndef BPTT_CLI_H
#define BPTT_CLI_H

#include <stdbool.h>
#include <stdio.h>

#include "registry.h"

/* One option a command accepts. A command's options are a table: the parser
 * refuses every other option, and --help prints exactly these, so the help
 * and the parser cannot drift apart. */
typedef struct cli_option {
    const char *name; /* without the dashes: "hidden"; NULL ends a table */
    const char *arg;  /* placeholder of its value ("H"); NULL for a flag */
    const char *help; /* what it does: one sentence, wrapped by --help */
} cli_option;

#define CLI_MAX_TABLES 4

/* A subcommand: what `bptt --help` and `bptt NAME --help` print, and the
 * tables of its options (train and compare share one). */
typedef struct cli_command {
    const char *name;    /* "train" */
    const char *summary; /* one line for `bptt --help` */
    const char *usage;   /* after "usage: bptt NAME " */
    const char *about;   /* before the options; NULL for none */
    const char *notes;   /* after them; NULL for none */
    const cli_option *options[CLI_MAX_TABLES]; /* tables, NULL after the last */
} cli_command;

/* The options given, checked against the command's tables. */
typedef struct cli_given {
    const cli_option *opt;
    const char *value; /* "" for a flag */
    bool read;         /* taken by a getter: cli_args_check_read wants them all */
} cli_given;

typedef struct cli_args {
    const cli_command *cmd;
    int n;
    cli_given *given; /* [n], in command-line order */
} cli_args;

/* Parses argv (argv[0] is the command name) against cmd's options. Returns
 * false when the command should stop and return *rc: 0 after printing the
 * help for --help or -h; 2 after a one-line message for an unknown option, a
 * stray argument, an option that needs a value given none (last on the line,
 * or followed by another option), or a flag given a value; 1 if out of memory. */
bool cli_args_begin(cli_args *a, const cli_command *cmd, int argc, char **argv, int *rc);
void cli_args_free(cli_args *a);
/* Once a command has read its options: every option given was read by a
 * getter. One that was not is a bug here (a table entry the code ignores),
 * reported with the option's name and aborted on, like a failed assert. */
void cli_args_check_read(const cli_args *a);

/* The getters take a name declared in the command's tables (anything else
 * is a bug and aborts). The value of --name (NULL if absent); repeated: the last. */
const char *cli_get(cli_args *a, const char *name);
/* Every value of a repeatable option (e.g. --plugin), in order; returns the count. */
int cli_get_all(cli_args *a, const char *name, const char **out, int max);
bool cli_flag(cli_args *a, const char *name);
/* Typed getters: false (with a message on stderr) on a bad value. */
bool cli_int(cli_args *a, const char *name, long def, long min, long max, long *out);
bool cli_double(cli_args *a, const char *name, double def, double min, double max, double *out);

/* `bptt NAME --help`: usage, about, one line per option of the tables, notes. */
void cli_print_help(FILE *f, const cli_command *cmd);
/* One line per option ("--hidden H", "--json"): `bptt --options NAME`. */
void cli_print_option_list(FILE *f, const cli_command *cmd);
/* --checkpoint sqrt|N|off and --memory-budget MB, as bt_unroll_opts and
 * bt_lm_config take them: every = -1 (sqrt), 0 (off, the default) or N;
 * budget_mb 0 when absent. False (with a message on stderr) on a bad value.
 * Their table entries: CLI_CHECKPOINT_OPTIONS (train, compare, grad). */
bool cli_checkpoint(cli_args *a, int *every, double *budget_mb);

/* Re-executes the program once on a better OpenBLAS kernel when OpenBLAS fell
 * back to a generic one and OPENBLAS_CORETYPE is unset (see blas_kernel.c);
 * call first thing in main, with main's argv. */
void cli_blas_choose(char **argv);
/* "OpenBLAS, kernel SkylakeX (chosen by bptt for this CPU ...), 2 threads". */
const char *cli_blas_describe(char *buf, size_t len);

/* Default plugin folders, then each --plugin PATH. Prints the error and returns NULL. */
bt_registry *cli_load_plugins(cli_args *a);

/* Reads a command's own options into *opts with the getters above; false
 * (the message printed) on a bad value. */
typedef bool (*cli_read_fn)(cli_args *a, void *opts);

/* The prologue every command shares: the command line checked against the
 * command's tables (--help prints the help), the command's options read by
 * `read` into *opts, the plugins loaded (default folders, then each --plugin),
 * and every option given checked as read. True when the command goes on,
 * with *reg its registry (bt_registry_free it); false when it stops with
 * exit status *rc: 0 after --help, 2 for a bad command line or value, 1 when
 * a plugin cannot be loaded. The values in *opts point into argv. */
bool cli_begin(const cli_command *cmd, int argc, char **argv, cli_read_fn read, void *opts,
               bt_registry **reg, int *rc);

/* "bptt CMD: message" on stderr; returns the exit status to use: 1 for an
 * error (cli_fail), 2 for a command line that cannot work (cli_usage). */
int cli_fail(const char *command, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int cli_usage(const char *command, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Every command: int cmd_NAME(int argc, char **argv), argv[0] is the command
 * name, and its options and help in cmd_NAME_spec. */
typedef int (*cli_command_fn)(int argc, char **argv);
int cmd_plugins(int argc, char **argv);
int cmd_selfcheck(int argc, char **argv);
int cmd_grad(int argc, char **argv);
int cmd_gradcheck(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_compare(int argc, char **argv);
int cmd_analyze(int argc, char **argv);
int cmd_demo(int argc, char **argv);
extern const cli_command cmd_plugins_spec, cmd_selfcheck_spec, cmd_grad_spec, cmd_gradcheck_spec,
    cmd_train_spec, cmd_generate_spec, cmd_compare_spec, cmd_analyze_spec, cmd_demo_spec;

/* The entries of --checkpoint and --memory-budget, for the tables of the
 * commands that unroll with bt_unroll_opts (cli_checkpoint reads them). */
#define CLI_CHECKPOINT_OPTIONS \
    {"checkpoint", "sqrt|N", "exact BPTT in less memory: keep one state every sqrt(window) " \
                             "(or N) steps and recompute the rest during backward (off, the " \
                             "default: keep every step)"}, \
    {"memory-budget", "MB", "checkpoint only windows that would not fit in MB, with the " \
                            "largest spacing that fits (an error says the minimum)"}

/* The --plugin option every command takes, for its table (cli_load_plugins reads it). */
#define CLI_PLUGIN_OPTION \
    {"plugin", "PATH", "load a plugin besides the default folders (repeatable)"}

#endif
