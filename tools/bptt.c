/* bptt.c: the `bptt` program. One table of subcommands, each in its own
 * tools/cmd_<name>.c with its options in a table (cmd_<name>_spec); this
 * file only dispatches. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "dist.h"

static const struct {
    cli_command_fn fn;
    const cli_command *spec;
} commands[] = {
    {cmd_train, &cmd_train_spec},
    {cmd_generate, &cmd_generate_spec},
    {cmd_compare, &cmd_compare_spec},
    {cmd_grad, &cmd_grad_spec},
    {cmd_gradcheck, &cmd_gradcheck_spec},
    {cmd_analyze, &cmd_analyze_spec},
    {cmd_demo, &cmd_demo_spec},
    {cmd_plugins, &cmd_plugins_spec},
    {cmd_selfcheck, &cmd_selfcheck_spec},
};
enum { N_COMMANDS = sizeof commands / sizeof *commands };

static void usage(FILE *f)
{
    fprintf(f, "bptt %s: backpropagation through time, with truncation as graph nodes\n\n"
               "usage: bptt COMMAND [OPTIONS]   (bptt COMMAND --help for its options)\n\n",
            bt_version());
    for (int i = 0; i < N_COMMANDS; i++)
        fprintf(f, "  %-10s %s\n", commands[i].spec->name, commands[i].spec->summary);
    fprintf(f, "\n  --version            print the version\n"
               "  --options COMMAND    the options COMMAND accepts, one per line (for scripts\n"
               "                       and shell completion)\n");
}

static int find(const char *name)
{
    for (int i = 0; i < N_COMMANDS; i++)
        if (strcmp(name, commands[i].spec->name) == 0)
            return i;
    fprintf(stderr, "bptt: unknown command '%s'\n\n", name);
    usage(stderr);
    return -1;
}

int main(int argc, char **argv)
{
    cli_blas_choose(argv);
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "version") == 0) {
        char blas[256];
        printf("bptt %s (%s precision, %s)\n", bt_version(), BT_REAL_DOUBLE ? "double" : "float",
               BT_HAVE_CBLAS ? "OpenBLAS" : "portable matrix products");
        printf("matrix products: %s\n", cli_blas_describe(blas, sizeof blas));
        return 0;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(argv[1], "--options") == 0) {
        if (argc != 3) {
            fprintf(stderr, "bptt: --options needs one command name (bptt --options train)\n");
            return 2;
        }
        int i = find(argv[2]);
        if (i >= 0)
            cli_print_option_list(stdout, commands[i].spec);
        return i >= 0 ? 0 : 2;
    }
    /* Under mpirun only train is data-parallel: N copies of another command
     * would each do the whole job and write the same files. */
    int rank, launched = bt_dist_launched(&rank);
    if (launched > 1 && strcmp(argv[1], "train") != 0) {
        if (rank == 0)
            fprintf(stderr, "bptt: '%s' does not run under mpirun (%d processes): only bptt "
                    "train trains data-parallel; run it without mpirun\n", argv[1], launched);
        return 2;
    }
    int i = find(argv[1]);
    return i >= 0 ? commands[i].fn(argc - 1, argv + 1) : 2;
}
