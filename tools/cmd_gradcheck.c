/* cmd_gradcheck.c: `bptt gradcheck`, a finite-difference check of any cell
 * (a shipped one or a user's own, loaded with --plugin) unrolled under any
 * truncation policy, on random parameters and a random batch. */
#include <string.h>

#include "cli_cell.h"

static const cli_option options[] = {
    {"cell", "NAME", "the cell to check (see bptt plugins)"},
    CLI_PLUGIN_OPTION,
    {"steps", "T", "steps (default 6)"},
    {"batch", "B", "rows (default 2)"},
    {"hidden", "H", "state size (default 4)"},
    {"vocab", "V", "vocabulary of a token cell, or input width of a real one (default 5)"},
    {"output", "Q", "output width (default: V)"},
    {"truncation", "POLICY", "full (default), fixed:K, random:PI[,seed=S], tbptt:K1,K2..."},
    {"seed", "S", "parameters, batch, initial state and policy draws (default 1)"},
    {"eps", "E", "central-difference step (default 1e-5 double build, 3e-3 float build)"},
    {"tolerance", "TOL", "largest relative error that passes (default 1e-6 double build, 3e-2 "
                         "float build)"},
    {NULL, NULL, NULL},
};

const cli_command cmd_gradcheck_spec = {
    .name = "gradcheck",
    .summary = "finite-difference check of a cell unrolled under a policy",
    .usage = "--cell NAME [options]",
    .about = "Compares the unroller's gradients with central differences of the truncated\n"
             "surrogate loss (exact for every policy), on random parameters, a random batch\n"
             "and a random initial state. A real-valued cell: --cell influence --hidden 6\n"
             "--vocab 3 --output 1.",
    .notes = "Exit status 1 when a gradient fails, 2 when the check cannot run.",
    .options = {options},
};

int cmd_gradcheck(int argc, char **argv)
{
    const char *cmd = "gradcheck";
    cli_args a;
    int rc;
    if (!cli_args_begin(&a, &cmd_gradcheck_spec, argc, argv, &rc))
        return rc;
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
    bt_registry *reg = ok ? cli_load_plugins(&a) : NULL;
    if (!reg) {
        cli_args_free(&a);
        return 2;
    }
    cli_args_check_read(&a);
    rc = 2;
    cli_policy pol = {0};
    const bt_cell_def *cell = cli_cell_find(reg, cell_name, cmd);
    if (cell && cli_policy_new(reg, spec ? spec : "full", &pol, cmd)) {
        cli_check_size size = {(int)B, (int)T, (int)H, (int)V, (int)Q};
        rc = cli_cell_gradcheck(stdout, cell, &pol, size, (uint64_t)seed, tol, true, cmd);
        if (rc == 0)
            printf("PASS: every gradient of %s under %s matches central differences\n",
                   cell->name, pol.desc);
        else if (rc == 1)
            printf("FAIL: %s under %s: some gradients differ from central differences%s\n"
                   "  if the cell has ReLU or another kink, a central difference across it is "
                   "wrong: try a smaller --eps than %g (docs/gradcheck.md)\n",
                   cell->name, pol.desc,
                   BT_REAL_DOUBLE ? "" : " (float build: confirm with the double build)", tol.eps);
        cli_policy_free(&pol);
    }
    bt_registry_free(reg);
    cli_args_free(&a);
    return rc;
}
