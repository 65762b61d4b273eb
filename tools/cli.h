/* cli.h: what every `bptt` subcommand shares: a small argument parser,
 * loading plugins (default folders plus --plugin files), and error output.
 * Each command lives in its own tools/cmd_<name>.c. */
#ifndef BPTT_CLI_H
#define BPTT_CLI_H

#include <stdbool.h>
#include <stdio.h>

#include "registry.h"

/* Arguments of the form --name VALUE, --name=VALUE and --flag. */
typedef struct cli_args {
    int argc;
    char **argv;
    bool *used; /* [argc] which were consumed, to report unknown ones */
} cli_args;

bool cli_args_init(cli_args *a, int argc, char **argv);
/* True when --help or -h is among the arguments (each command then prints its usage). */
bool cli_wants_help(int argc, char **argv);
void cli_args_free(cli_args *a);
/* The value of --name (NULL if absent). Repeated options: the last wins. */
const char *cli_get(cli_args *a, const char *name);
/* Every value of a repeatable option (e.g. --plugin), in order; returns the count. */
int cli_get_all(cli_args *a, const char *name, const char **out, int max);
bool cli_flag(cli_args *a, const char *name);
/* Typed getters: false (with a message on stderr) on a bad value. */
bool cli_int(cli_args *a, const char *name, long def, long min, long max, long *out);
bool cli_double(cli_args *a, const char *name, double def, double min, double max, double *out);
/* --checkpoint sqrt|N|off and --memory-budget MB, as bt_unroll_opts and
 * bt_lm_config take them: every = -1 (sqrt), 0 (off, the default) or N;
 * budget_mb 0 when absent. False (with a message on stderr) on a bad value.
 * cli_checkpoint_usage prints their help lines (train, compare, grad). */
bool cli_checkpoint(cli_args *a, int *every, double *budget_mb);
void cli_checkpoint_usage(FILE *f);
/* Non-zero if something was not consumed: prints "unknown option --x" and the usage hint. */
int cli_check_unused(cli_args *a, const char *command);

/* Default plugin folders, then each --plugin PATH. Prints the error and returns NULL. */
bt_registry *cli_load_plugins(cli_args *a);

/* s as a JSON string literal: quotes, backslashes and control bytes escaped;
 * other bytes (UTF-8) pass through, as JSON allows. NULL prints "". */
void cli_json_string(FILE *f, const char *s);

/* "bptt CMD: message" on stderr; returns the exit status to use (1). */
int cli_fail(const char *command, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Every command: int cmd_NAME(int argc, char **argv), argv[0] is the command name. */
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

#endif
