/* cli_cell.c: cells and policies by name for the gradient commands, and the
 * random-data cell gradient check behind `bptt gradcheck` and `bptt selfcheck`.
 *
 * Dimension letters: B rows, T steps, H hidden, V vocabulary (D/Q for real cells). */
#include <math.h>
#include <string.h>

#include "cellcheck.h"
#include "cli_cell.h"
#include "stack.h"

const bt_cell_def *cli_cell_find(const bt_registry *r, const char *name, const char *command)
{
    char names[512];
    if (!name || !name[0]) {
        cli_fail(command, "--cell NAME is required (registered cells: %s)",
                 bt_registry_names(r, BT_KIND_CELL, names, sizeof names));
        return NULL;
    }
    const bt_cell_def *c = bt_registry_cell(r, name);
    if (!c)
        cli_fail(command, "unknown cell '%s' (registered cells: %s; load your own with --plugin PATH)",
                 name, bt_registry_names(r, BT_KIND_CELL, names, sizeof names));
    return c;
}

bool cli_policy_new(const bt_registry *r, const char *spec, cli_policy *out, const char *command)
{
    memset(out, 0, sizeof *out);
    char name[BT_NAME_LEN + 1], names[512], err[512] = "";
    const char *opts = "";
    bt_split_spec(spec, name, sizeof name, &opts);
    out->def = bt_registry_policy(r, name);
    if (!out->def) {
        cli_fail(command, "unknown truncation policy '%s' (registered policies: %s)", spec,
                 bt_registry_names(r, BT_KIND_POLICY, names, sizeof names));
        return false;
    }
    if (bt_policy_create(out->def, opts, &out->state, err, sizeof err) != BT_OK) {
        cli_fail(command, "--truncation %s: %s", spec, err);
        out->def = NULL;
        return false;
    }
    if (!out->def->describe || !bt_policy_describe(out->def, out->state, out->desc, sizeof out->desc))
        snprintf(out->desc, sizeof out->desc, "%s", spec);
    return true;
}

void cli_policy_free(cli_policy *p)
{
    if (p->def && p->def->destroy)
        p->def->destroy(p->state);
    memset(p, 0, sizeof *p);
}

cli_check_tol cli_check_tol_default(void)
{
#if BT_REAL_DOUBLE
    return (cli_check_tol){.eps = 1e-5, .tol = 1e-6, .floor = 1e-3};
#else
    return (cli_check_tol){.eps = 3e-3, .tol = 3e-2, .floor = 1e-1};
#endif
}

/* Every buffer of one random check, freed together. */
typedef struct check_data {
    int32_t *ids, *targets;      /* [B*T] */
    bt_real *x, *y;              /* [B*T*V] */
    bt_real *h0[BT_MAX_STATES];  /* [B*width] */
    double *xi;                  /* [T] */
} check_data;

static void check_data_free(check_data *d)
{
    bt_free(d->ids);
    bt_free(d->targets);
    bt_free(d->x);
    bt_free(d->y);
    for (int k = 0; k < BT_MAX_STATES; k++)
        bt_free(d->h0[k]);
    bt_free(d->xi);
}

static void print_header(FILE *out, const bt_cell_def *cell, const cli_policy *pol,
                         cli_check_size s, uint64_t seed, cli_check_tol tol)
{
    fprintf(out, "cell %s, truncation %s, B=%d T=%d H=%d %s=%d output %d, seed %llu\n",
            cell->name, pol->desc, s.B, s.T, s.H, cell->input == BT_INPUT_TOKENS ? "V" : "D",
            s.V, s.Q ? s.Q : s.V, (unsigned long long)seed);
    fprintf(out, "precision %s: eps %g, tolerance %g on the relative error (floor %g)%s\n",
            BT_REAL_DOUBLE ? "double" : "float", tol.eps, tol.tol, tol.floor,
            BT_REAL_DOUBLE ? "" : "; the double build (-Dreal=double) is the strict check");
}

/* The buffers of one check for model m; false when out of memory. */
static bool check_data_alloc(check_data *d, const bt_model *m, cli_check_size s, int Q)
{
    size_t bt = (size_t)s.B * (size_t)s.T;
    d->ids = bt_calloc(bt, sizeof(int32_t));
    d->targets = bt_calloc(bt, sizeof(int32_t));
    d->x = bt_calloc(bt * (size_t)s.V, sizeof(bt_real));
    d->y = bt_calloc(bt * (size_t)Q, sizeof(bt_real));
    d->xi = bt_calloc((size_t)s.T, sizeof(double));
    bool ok = d->ids && d->targets && d->x && d->y && d->xi;
    for (int k = 0; k < m->n_states; k++)
        ok = ok && (d->h0[k] = bt_calloc((size_t)s.B * (size_t)m->state_width[k], sizeof(bt_real)));
    return ok;
}

/* Random parameters, batch (ids and real rows both drawn, so the draws do not
 * depend on the cell's kind) and initial state, all from one seeded RNG; the
 * sequence of the cell's kind into *seq. */
static void check_data_fill(check_data *d, bt_model *m, cli_check_size s, int Q, uint64_t seed,
                            bt_sequence *seq)
{
    size_t bt = (size_t)s.B * (size_t)s.T;
    bt_rng r;
    bt_rng_seed(&r, seed);
    for (size_t i = 0; i < bt_params_total(m->params); i++)
        bt_params_data(m->params)[i] = (bt_real)(0.5 * bt_rng_normal(&r));
    for (size_t i = 0; i < bt; i++) {
        d->ids[i] = (int32_t)(bt_rng_next(&r) % (uint64_t)s.V);
        d->targets[i] = (int32_t)(bt_rng_next(&r) % (uint64_t)Q);
    }
    for (size_t i = 0; i < bt * (size_t)s.V; i++)
        d->x[i] = (bt_real)bt_rng_normal(&r);
    for (size_t i = 0; i < bt * (size_t)Q; i++)
        d->y[i] = (bt_real)bt_rng_normal(&r);
    for (int k = 0; k < m->n_states; k++)
        for (int i = 0; i < s.B * m->state_width[k]; i++)
            d->h0[k][i] = (bt_real)(0.5 * bt_rng_normal(&r));
    *seq = (bt_sequence){.B = s.B, .T = s.T};
    if (m->cell->input == BT_INPUT_TOKENS)
        seq->ids = d->ids;
    else
        seq->x = d->x;
    if (m->cell->loss == BT_LOSS_XENT)
        seq->targets = d->targets;
    else
        seq->y = d->y;
}

/* One line per parameter (the table), or only the failures; 0 or 1. */
static int print_results(FILE *out, const bt_cellcheck_result *res, int n, const double *xi,
                         int T, cli_check_tol tol, bool table)
{
    int rc = 0;
    if (table) {
        fprintf(out, "xi used:");
        for (int t = 0; t < T; t++)
            fprintf(out, " %g", xi[t]);
        fprintf(out, "\n%-12s %12s %12s %7s %15s %15s  %s\n", "parameter", "max abs err",
                "max rel err", "worst", "analytic", "numeric", "result");
    }
    for (int i = 0; i < n; i++) {
        /* A NaN error must fail, so test for "within", not for "beyond". */
        bool pass = res[i].max_rel <= tol.tol;
        if (!pass)
            rc = 1;
        if (table)
            fprintf(out, "%-12s %12.3g %12.3g %7zu %15.8g %15.8g  %s\n", res[i].name,
                    res[i].max_abs, res[i].max_rel, res[i].worst, res[i].analytic,
                    res[i].numeric, pass ? "PASS" : "FAIL");
        else if (!pass)
            fprintf(out, "  %s: max rel error %.3g at element %zu (analytic %.8g, numeric %.8g)\n",
                    res[i].name, res[i].max_rel, res[i].worst, res[i].analytic,
                    res[i].numeric);
    }
    return rc;
}

int cli_cell_gradcheck(FILE *out, const bt_cell_def *cell, const cli_policy *pol,
                       cli_check_size s, uint64_t seed, cli_check_tol tol, bool table,
                       const char *command)
{
    int Q = s.Q > 0 ? s.Q : s.V;
    bt_model *m = NULL;
    char err[1024] = "";
    if (bt_model_new(cell, (bt_cell_dims){s.V, s.H, Q}, &m, err, sizeof err) != BT_OK) {
        cli_fail(command, "%s", err);
        return 2;
    }
    return cli_model_gradcheck(out, m, pol, s, seed, tol, table, command);
}

int cli_model_gradcheck(FILE *out, bt_model *m, const cli_policy *pol, cli_check_size s,
                        uint64_t seed, cli_check_tol tol, bool table, const char *command)
{
    const bt_cell_def *cell = m->cell;
    int Q = m->dims.output;
    char err[1024] = "";
    check_data d = {0};
    bt_cellcheck_result *res = bt_calloc(BT_MAX_PARAMS + BT_MAX_STATES, sizeof *res);
    int rc = 2, n = 0;
    bt_sequence seq;
    if (!check_data_alloc(&d, m, s, Q) || !res)
        cli_fail(command, "out of memory for B=%d T=%d V=%d", s.B, s.T, s.V);
    else {
        check_data_fill(&d, m, s, Q, seed, &seq);
        if (bt_cell_gradcheck(m, &seq, d.h0, pol->def, pol->state, seed, NULL, tol.eps, tol.floor,
                              res, &n, d.xi, err, sizeof err) != BT_OK)
            cli_fail(command, "cell %s under %s: %s", cell->name, pol->desc, err);
        else {
            if (table)
                print_header(out, cell, pol, s, seed, tol);
            if (table && m->n_layers) {
                char lt[256];
                fprintf(out, "stack %s (H above is layer 1's), dropout %g%s, output %d\n",
                        bt_model_layers_text(m, lt, sizeof lt), m->dropout,
                        m->variational ? " variational" : "", Q);
            }
            rc = print_results(out, res, n, d.xi, s.T, tol, table);
        }
    }
    bt_free(res);
    check_data_free(&d);
    bt_model_free(m);
    return rc;
}
