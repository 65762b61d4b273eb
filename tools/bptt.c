/* bptt.c: the `bptt` program. One table of subcommands, each in its own
 * tools/cmd_<name>.c; this file only dispatches. */
#include <stdio.h>
#include <string.h>

#include "cli.h"

static const struct {
    const char *name;
    cli_command_fn fn;
    const char *summary;
} commands[] = {
    {"train", cmd_train, "train a character-level language model on a text"},
    {"generate", cmd_generate, "sample text from a trained model"},
    {"compare", cmd_compare, "train once per truncation policy and compare them"},
    {"grad", cmd_grad, "gradients of one batch under a policy, as safetensors"},
    {"gradcheck", cmd_gradcheck, "finite-difference check of a cell unrolled under a policy"},
    {"analyze", cmd_analyze, "vanishing and exploding gradients: norms against lag, eigenvalues"},
    {"demo", cmd_demo, "a one-minute tour: truncation bias, gradient norms, char-level training"},
    {"plugins", cmd_plugins, "list registered cells, truncation policies and optimizers"},
    {"selfcheck", cmd_selfcheck, "train a tiny model and check its gradients"},
};

static void usage(FILE *f)
{
    fprintf(f, "bptt %s: backpropagation through time, with truncation as graph nodes\n\n"
               "usage: bptt COMMAND [OPTIONS]   (bptt COMMAND --help for its options)\n\n",
            bt_version());
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\n  --version  print the version\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "version") == 0) {
        printf("bptt %s (%s precision, %s)\n", bt_version(), BT_REAL_DOUBLE ? "double" : "float",
               BT_HAVE_CBLAS ? "OpenBLAS" : "portable matrix products");
        return 0;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(stdout);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        if (strcmp(argv[1], commands[i].name) == 0)
            return commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "bptt: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
