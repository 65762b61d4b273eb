/* cmd_grad.c: `bptt grad`, the gradients of one batch under a truncation
 * policy (or estimated online by an estimator), read from and written to
 * safetensors, so a user can compare the whole unrolled graph with another
 * framework. The files are the library's
 * (io/gradfile.h, docs/grad-files.md); this command names them and prints. */
#include "cli_cell.h"
#include "gradfile.h"
#include "model_file.h"
#include "paths.h"
#include "stack.h"

static const char *const CMD = "grad";

static const cli_option options[] = {
    {"cell", "NAME", "the cell (see bptt plugins)"},
    {"params", "P.safetensors", "parameters, batch, optional h0/c0 and xi (docs/grad-files.md)"},
    {"out", "G.safetensors", "where the loss and gradients go"},
    {"truncation", "POLICY", "full (default), fixed:K, random:PI[,seed=S], tbptt:K1,K2"},
    {"estimator", "NAME[,OPTS]", "estimate the gradients online instead of backpropagating "
                                 "through time: rtrl (exact), uoro[,seed=S] (unbiased); see "
                                 "docs/estimators.md"},
    {"layers", "C:H,...", "a stack (docs/stacks.md): a cell and width per layer (lstm:4,lstm:3), "
                          "or N layers of --cell at --hidden; P names its parameters l1.W_x ... "
                          "out.W_hq, out.b_q and its states l1.h0, l2.c0"},
    {"hidden", "H", "the width of every layer with --layers N"},
    {"dropout", "P", "a stack's dropout, its masks drawn from --seed"},
    {"variational", NULL, "one dropout mask per sequence"},
    {"model-file", "FILE", "the model (cell or layers, widths, dropout) from a JSON file "
                           "(docs/stacks.md); P holds the parameters"},
    {"seed", "S", "the policy's or the estimator's draws (default 1)"},
    CLI_CHECKPOINT_OPTIONS,
    CLI_PLUGIN_OPTION,
    {NULL, NULL, NULL},
};

const cli_command cmd_grad_spec = {
    .name = "grad",
    .summary = "gradients of one batch under a policy, as safetensors",
    .usage = "--cell NAME --params P.safetensors --out G.safetensors ...",
    .about = "P holds every parameter of the cell by name, X and Y (token ids [B,T] as I32\n"
             "or I64, or real X [B,T,D] / Y [B,T,Q] as F32 or F64), optionally h0 [B,H] (c0\n"
             "for lstm) and xi [T], the factors that replace the policy's draws. G receives\n"
             "loss, grad.<param>, grad.h0, xi and grad_norm_h. See docs/grad-files.md.\n"
             "--checkpoint and --memory-budget store each window as bptt train does; the\n"
             "gradients are the same as without them (only memory and time change).\n"
             "--estimator runs the batch forward one step at a time with an online gradient\n"
             "estimator instead (parameters fixed); G then holds loss, grad.<param> and,\n"
             "from rtrl, grad.h0 (no xi, no grad_norm_h).",
    .options = {options},
};

typedef struct grad_opts {
    const char *cell, *params, *out, *truncation, *estimator, *layers, *model_file;
    long seed, hidden;
    double dropout;
    bool variational;
    int checkpoint_every;
    double budget_mb;
} grad_opts;

static bool read_options(cli_args *a, void *vo)
{
    grad_opts *o = vo;
    o->cell = cli_get(a, "cell");
    o->params = cli_get(a, "params");
    o->out = cli_get(a, "out");
    o->truncation = cli_get(a, "truncation");
    o->estimator = cli_get(a, "estimator");
    o->layers = cli_get(a, "layers");
    o->model_file = cli_get(a, "model-file");
    o->variational = cli_flag(a, "variational");
    return cli_int(a, "seed", 1, 0, 0x7fffffffffffffffL, &o->seed) &&
           cli_int(a, "hidden", 0, 0, 1 << 16, &o->hidden) &&
           cli_double(a, "dropout", 0, 0, 0.99, &o->dropout) &&
           cli_checkpoint(a, &o->checkpoint_every, &o->budget_mb);
}

/* P read and checked (a warning per tensor nothing reads), the gradients
 * computed, G written; 0, or 1 with the message printed. */
static int grad_files(const bt_registry *reg, const bt_cell_def *cell, const grad_opts *o,
                      const cli_policy *pol)
{
    char err[2048] = "";
    bt_st_file *f = NULL;
    bt_grad_input *in = NULL;
    bt_grad_output out = {0};
    bt_grad_options go = {.policy = pol->def, .policy_state = pol->state,
                          .policy_desc = pol->desc, .seed = (uint64_t)o->seed,
                          .checkpoint_every = o->checkpoint_every,
                          .memory_budget_mb = o->budget_mb, .estimator = o->estimator,
                          .registry = reg};
    int rc = 1;
    if (bt_st_read(o->params, &f, err, sizeof err) != BT_OK)
        cli_fail(CMD, "--params %s: %s", o->params, err);
    else if ((o->layers ? bt_grad_input_new_stack(reg, o->layers, o->dropout, o->variational, f,
                                                  &in, err, sizeof err)
                        : bt_grad_input_new(cell, f, &in, err, sizeof err)) != BT_OK)
        cli_fail(CMD, "%s", err);
    else {
        const char *unused[64];
        int n = bt_grad_input_unused(in, unused, 64);
        for (int i = 0; i < n && i < 64; i++)
            fprintf(stderr, "bptt grad: warning: ignoring tensor '%s' (not a parameter of cell %s, "
                    "nor X, Y, xi or an initial state)\n", unused[i], cell->name);
        if (bt_grad_compute(in, &go, &out, err, sizeof err) != BT_OK)
            cli_fail(CMD, "%s", err);
        else if (bt_grad_output_write(in, &go, &out, o->out, err, sizeof err) != BT_OK)
            cli_fail(CMD, "--out %s: %s", o->out, err);
        else {
            printf("%s %s %s%s: B=%d T=%d, loss %.9g -> %s\n", cell->name,
                   o->estimator ? "with estimator" : "under",
                   o->estimator ? out.estimator : pol->desc, in->xi ? " (given xi)" : "",
                   in->seq.B, in->seq.T, out.loss, o->out);
            rc = 0;
        }
    }
    bt_grad_output_free(&out);
    bt_grad_input_free(in);
    return rc;
}

/* The cell (a stack's layer 1, with o->layers made canonical in buf, "C:H"
 * for every layer); NULL after a message, *rc the exit status. */
static const bt_cell_def *stack_spec(const bt_registry *reg, grad_opts *o, char *buf, size_t len,
                                     int *rc)
{
    char cell[BT_NAME_LEN] = "", err[1024];
    int H = (int)o->hidden;
    *rc = 2;
    static bt_model_file mf; /* o->cell and o->layers point into it */
    if (o->model_file) {
        if (o->cell || o->layers || o->hidden || o->dropout > 0 || o->variational)
            return cli_usage(CMD, "--model-file %s sets the model: drop --cell, --hidden, "
                             "--layers, --dropout and --variational", o->model_file), NULL;
        if (bt_model_file_read(o->model_file, &mf, err, sizeof err) != BT_OK)
            return *rc = 1, cli_fail(CMD, "%s", err), NULL;
        o->cell = mf.cell;
        o->dropout = mf.dropout;
        o->variational = mf.variational;
        if (mf.layers[0] || mf.dropout > 0) {
            o->layers = mf.layers[0] ? mf.layers : o->cell;
            H = mf.hidden;
        }
        o->model_file = NULL;
        o->hidden = H;
        return stack_spec(reg, o, buf, len, rc);
    }
    if (!o->layers) {
        if (o->hidden || o->dropout > 0 || o->variational)
            return cli_usage(CMD, "--%s describes a stack: give --layers too (P's sizes give "
                             "a single cell's)", o->hidden ? "hidden" : o->dropout > 0 ?
                             "dropout" : "variational"), NULL;
        *rc = 1;
        return cli_cell_find(reg, o->cell, CMD);
    }
    snprintf(buf, len, "%s", o->layers);
    snprintf(cell, sizeof cell, "%s", o->cell ? o->cell : "");
    if (bt_layers_canonical(buf, len, cell, sizeof cell, &H, err, sizeof err) != BT_OK)
        return cli_usage(CMD, "%s", err), NULL;
    if (H < 1 || (o->variational && !(o->dropout > 0)))
        return cli_usage(CMD, "%s", H < 1 ? "--layers: give every layer's width (C:H,C:H) or "
                         "--hidden H" : "--variational needs --dropout P (P > 0)"), NULL;
    if (!buf[0]) /* one layer: a stack only with dropout */
        snprintf(buf, len, "%s:%d", cell, H);
    o->layers = buf;
    *rc = 1;
    return cli_cell_find(reg, cell, CMD);
}

int cmd_grad(int argc, char **argv)
{
    grad_opts o = {0}; /* cli_checkpoint leaves checkpoint_every alone when --checkpoint is absent */
    char layers[256];
    bt_registry *reg;
    int rc;
    if (!cli_begin(&cmd_grad_spec, argc, argv, read_options, &o, &reg, &rc))
        return rc;
    rc = 1;
    cli_policy pol = {0};
    const bt_cell_def *cell = NULL;
    const bt_file_use uses[] = {{"--params", o.params, false, 0}, {"--out", o.out, true, 0}};
    bt_files *files = NULL;
    char err[2048];
    bt_status st;
    if (!o.params || !o.out)
        cli_fail(CMD, "--params P.safetensors and --out G.safetensors are required "
                 "(see bptt grad --help)");
    else if (o.estimator && (o.truncation || o.checkpoint_every || o.budget_mb > 0))
        rc = cli_usage(CMD, "--estimator %s replaces backpropagation through time: it takes no "
                       "--%s", o.estimator, o.truncation ? "truncation"
                       : o.checkpoint_every ? "checkpoint" : "memory-budget");
    else if ((st = bt_files_claim(uses, 2, &files, err, sizeof err)) != BT_OK)
        rc = st == BT_ERR_ARG ? cli_usage(CMD, "%s", err) : cli_fail(CMD, "%s", err);
    else if ((cell = stack_spec(reg, &o, layers, sizeof layers, &rc)) &&
             cli_policy_new(reg, o.truncation ? o.truncation : "full", &pol, CMD))
        rc = grad_files(reg, cell, &o, &pol);
    bt_files_release(files);
    cli_policy_free(&pol);
    bt_registry_free(reg);
    return rc;
}
