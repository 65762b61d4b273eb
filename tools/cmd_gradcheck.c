/* cmd_gradcheck.c: `bptt gradcheck`, a finite-difference check of any cell
 * (a shipped one or a user's own, loaded with --plugin) unrolled under any
 * truncation policy, on random parameters and a random batch. */
#include <string.h>

#include "cli_cell.h"
#include "model_file.h"
#include "stack.h"

static const cli_option options[] = {
    {"cell", "NAME", "the cell to check (see bptt plugins)"},
    CLI_PLUGIN_OPTION,
    {"steps", "T", "steps (default 6)"},
    {"batch", "B", "rows (default 2)"},
    {"hidden", "H", "state size (default 4)"},
    {"vocab", "V", "vocabulary of a token cell, or input width of a real one (default 5)"},
    {"output", "Q", "output width (default: V)"},
    {"layers", "N|C:H,...", "a stack: N layers of --cell at --hidden, or a cell and width per "
                            "layer (gru:4,lstm:3)"},
    {"dropout", "P", "dropout between layers and before the output (its masks fixed by --seed)"},
    {"variational", NULL, "one dropout mask per sequence"},
    {"model-file", "FILE", "the model (cell or layers, widths, dropout) from a JSON file "
                           "(docs/stacks.md)"},
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

typedef struct gc_opts {
    const char *cell, *truncation, *layers, *model_file;
    long T, B, H, V, Q, seed;
    double dropout;
    bool variational;
    cli_check_tol tol;
} gc_opts;

static bool read_options(cli_args *a, void *vo)
{
    gc_opts *o = vo;
    o->tol = cli_check_tol_default();
    o->cell = cli_get(a, "cell");
    o->truncation = cli_get(a, "truncation");
    o->layers = cli_get(a, "layers");
    o->model_file = cli_get(a, "model-file");
    o->variational = cli_flag(a, "variational");
    if (o->model_file && (o->cell || o->layers || o->variational || cli_get(a, "hidden") ||
                          cli_get(a, "dropout")))
        return cli_usage("gradcheck", "--model-file %s sets the model: drop --cell, --hidden, "
                         "--layers, --dropout and --variational", o->model_file), false;
    return cli_double(a, "dropout", 0, 0, 0.99, &o->dropout) &&
           cli_int(a, "steps", 6, 1, 10000, &o->T) && cli_int(a, "batch", 2, 1, 10000, &o->B) &&
           cli_int(a, "hidden", 4, 1, 10000, &o->H) && cli_int(a, "vocab", 5, 1, 100000, &o->V) &&
           cli_int(a, "output", 0, 0, 100000, &o->Q) &&
           cli_int(a, "seed", 1, 0, 0x7fffffffffffffffL, &o->seed) &&
           cli_double(a, "eps", o->tol.eps, 1e-12, 1, &o->tol.eps) &&
           cli_double(a, "tolerance", o->tol.tol, 0, 1e9, &o->tol.tol);
}

/* The cell alone, or the stack --layers/--dropout describe; layer 1's cell
 * (NULL after a message). */
static const bt_cell_def *build_model(const bt_registry *reg, gc_opts *o, bt_model **m,
                                      const char *cmd)
{
    char layers[256] = "", cell[BT_NAME_LEN] = "", err[1024] = "";
    int H = (int)o->H;
    bt_model_file mf;
    if (o->model_file) { /* its init is not used: the check draws its own parameters */
        if (bt_model_file_read(o->model_file, &mf, err, sizeof err) != BT_OK) {
            cli_fail(cmd, "%s", err);
            return NULL;
        }
        o->layers = mf.layers[0] ? mf.layers : NULL;
        o->cell = mf.cell;
        o->H = mf.hidden;
        o->dropout = mf.dropout;
        o->variational = mf.variational;
        o->model_file = NULL; /* read: what it says is in o now (mf outlives the call) */
        return build_model(reg, o, m, cmd);
    }
    if (o->variational && !(o->dropout > 0)) {
        cli_usage(cmd, "--variational needs --dropout P (P > 0)");
        return NULL;
    }
    snprintf(layers, sizeof layers, "%s", o->layers ? o->layers : "");
    snprintf(cell, sizeof cell, "%s", o->cell ? o->cell : "");
    if (bt_layers_canonical(layers, sizeof layers, cell, sizeof cell, &H, err, sizeof err) != BT_OK) {
        cli_usage(cmd, "%s", err);
        return NULL;
    }
    const bt_cell_def *def = cli_cell_find(reg, cell, cmd);
    if (!def)
        return NULL;
    o->H = H;
    int Q = o->Q > 0 ? (int)o->Q : (int)o->V;
    if (bt_model_from_arch(reg, layers, cell, H, o->dropout, o->variational, (int)o->V, Q, m, err,
                           sizeof err) != BT_OK) {
        cli_fail(cmd, "%s", err);
        return NULL;
    }
    return def;
}

int cmd_gradcheck(int argc, char **argv)
{
    const char *cmd = "gradcheck";
    gc_opts o;
    bt_registry *reg;
    int rc;
    /* Exit 1 means a gradient failed: every other error, plugins included, is 2. */
    if (!cli_begin(&cmd_gradcheck_spec, argc, argv, read_options, &o, &reg, &rc))
        return rc ? 2 : 0;
    rc = 2;
    cli_policy pol = {0};
    bt_model *m = NULL;
    const bt_cell_def *cell = build_model(reg, &o, &m, cmd);
    if (cell && cli_policy_new(reg, o.truncation ? o.truncation : "full", &pol, cmd)) {
        cli_check_size size = {(int)o.B, (int)o.T, (int)o.H, (int)o.V, (int)o.Q};
        char what[300];
        if (m->n_layers) /* a stack: its layers, not layer 1's cell alone */
            bt_model_layers_text(m, what, sizeof what);
        else
            snprintf(what, sizeof what, "%s", cell->name);
        rc = cli_model_gradcheck(stdout, m, &pol, size, (uint64_t)o.seed, o.tol, true, cmd);
        m = NULL; /* freed by the check */
        if (rc == 0)
            printf("PASS: every gradient of %s under %s matches central differences\n",
                   what, pol.desc);
        else if (rc == 1)
            printf("FAIL: %s under %s: some gradients differ from central differences%s\n"
                   "  if the cell has ReLU or another kink, a central difference across it is "
                   "wrong: try a smaller --eps than %g (docs/gradcheck.md)\n",
                   what, pol.desc,
                   BT_REAL_DOUBLE ? "" : " (float build: confirm with the double build)", o.tol.eps);
        cli_policy_free(&pol);
    }
    bt_model_free(m);
    bt_registry_free(reg);
    return rc;
}
