/* cmd_gradcheck.c: `bptt gradcheck`, a finite-difference check of any cell
 * (a shipped one or a user's own, loaded with --plugin) unrolled under any
 * truncation policy, on random parameters and a random batch. */
#include <string.h>

#include "cli_cell.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: bptt gradcheck --cell NAME [--plugin PATH] [--steps T (6)] [--batch B (2)]\n"
            "                      [--hidden H (4)] [--vocab V (5)] [--output Q (V)]\n"
            "                      [--truncation POLICY (full)]\n"
            "                      [--seed S (1)] [--eps E] [--tolerance TOL]\n\n"
            "Compares the unroller's gradients with central differences of the truncated\n"
            "surrogate loss (exact for every policy). --vocab is the vocabulary of a token\n"
            "cell, or the input width of a real-valued cell; --output its output width\n"
            "(e.g. --cell influence --hidden 6 --vocab 3 --output 1). Defaults: eps 1e-5,\n"
            "tolerance 1e-6 in the double build; eps 3e-3, tolerance 3e-2 in the float build.\n"
            "Exit status 1 when a gradient fails.\n");
}

int cmd_gradcheck(int argc, char **argv)
{
    const char *cmd = "gradcheck";
    if (cli_wants_help(argc, argv)) {
        usage(stdout);
        return 0;
    }
    cli_args a;
    if (!cli_args_init(&a, argc, argv))
        return cli_fail(cmd, "out of memory");
    cli_check_tol tol = cli_check_tol_default();
    long T, B, H, V, Q, seed;
    const char *cell_name = cli_get(&a, "cell");
    const char *spec = cli_get(&a, "truncation");
    bool ok = cli_int(&a, "steps", 6, 1, 10000, &T) && cli_int(&a, "batch", 2, 1, 10000, &B) &&
              cli_int(&a, "hidden", 4, 1, 10000, &H) && cli_int(&a, "vocab", 5, 1, 100000, &V) &&
              cli_int(&a, "output", 0, 0, 100000, &Q) &&
              cli_int(&a, "seed", 1, 0, 0x7fffffffffffffffL, &seed) &&
              cli_double(&a, "eps", tol.eps, 1e-12, 1, &tol.eps) &&
              cli_double(&a, "tolerance", tol.tol, 0, 1e9, &tol.tol);
    /* --plugin is consumed by cli_load_plugins, so check for strays after it. */
    bt_registry *reg = ok ? cli_load_plugins(&a) : NULL;
    if (!reg || cli_check_unused(&a, cmd) != 0) {
        bt_registry_free(reg);
        cli_args_free(&a);
        return 2;
    }
    int rc = 2;
    cli_policy pol = {0};
    const bt_cell_def *cell = cli_cell_find(reg, cell_name, cmd);
    if (cell && cli_policy_new(reg, spec ? spec : "full", &pol, cmd)) {
        cli_check_size size = {(int)B, (int)T, (int)H, (int)V, (int)Q};
        rc = cli_cell_gradcheck(stdout, cell, &pol, size, (uint64_t)seed, tol, true, cmd);
        if (rc == 0)
            printf("PASS: every gradient of %s under %s matches central differences\n",
                   cell->name, pol.desc);
        else if (rc == 1)
            printf("FAIL: %s under %s: some gradients differ from central differences%s\n",
                   cell->name, pol.desc,
                   BT_REAL_DOUBLE ? "" : " (float build: confirm with the double build)");
        cli_policy_free(&pol);
    }
    bt_registry_free(reg);
    cli_args_free(&a);
    return rc;
}
