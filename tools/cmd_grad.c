/* cmd_grad.c: `bptt grad`, the gradients of one batch under a truncation
 * policy, read from and written to safetensors, so a user can compare the
 * whole unrolled graph with another framework (format: docs/grad-files.md).
 *
 * Dimension letters: B rows, T steps, H hidden, V vocabulary, D input width,
 * Q output width. Token inputs are ids [B,T]; real inputs x [B,T,D]. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli_cell.h"
#include "safetensors.h"
#include "unroll.h"

static const char *const CMD = "grad";

static const cli_option options[] = {
    {"cell", "NAME", "the cell (see bptt plugins)"},
    {"params", "P.safetensors", "parameters, batch, optional h0/c0 and xi (docs/grad-files.md)"},
    {"out", "G.safetensors", "where the loss and gradients go"},
    {"truncation", "POLICY", "full (default), fixed:K, random:PI[,seed=S], tbptt:K1,K2"},
    {"seed", "S", "the policy's draws (default 1)"},
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
             "gradients are the same as without them (only memory and time change).",
    .options = {options},
};

/* ---- which cell dimension each declared parameter dimension is ------------ */

/* Parameter dimension j of spec i is mult * (input, hidden or output): found
 * by declaring the cell at two sets of distinct primes, so it works for any
 * plugin cell whose shapes are multiples of its sizes (GRU's 3H, LSTM's 4H). */
typedef struct dim_ref {
    int comp; /* 0 input, 1 hidden, 2 output; -1 unknown */
    int mult;
} dim_ref;

typedef struct layout {
    int n;                                      /* parameters; 0 if the probe failed */
    bt_param_spec spec[BT_MAX_PARAMS];          /* at the probe sizes, for names and ndim */
    dim_ref ref[BT_MAX_PARAMS][BT_MAX_DIMS];
    char letter[3][2];                          /* "V"/"D", "H", "V"/"Q" */
} layout;

static int comp_of(const bt_cell_dims *d, int c) { return c == 0 ? d->input : c == 1 ? d->hidden : d->output; }

static void probe_layout(const bt_cell_def *cell, layout *L)
{
    memset(L, 0, sizeof *L);
    snprintf(L->letter[0], 2, "%s", cell->input == BT_INPUT_TOKENS ? "V" : "D");
    snprintf(L->letter[1], 2, "H");
    snprintf(L->letter[2], 2, "%s", cell->loss == BT_LOSS_XENT ? "V" : "Q");
    const bt_cell_dims a = {37, 41, 43}, b = {53, 59, 61};
    bt_param_spec sb[BT_MAX_PARAMS];
    char err[256];
    int na = cell->params(&a, L->spec, BT_MAX_PARAMS, err, sizeof err);
    int nb = cell->params(&b, sb, BT_MAX_PARAMS, err, sizeof err);
    if (na <= 0 || na > BT_MAX_PARAMS || na != nb)
        return;
    L->n = na;
    for (int i = 0; i < na; i++)
        for (int j = 0; j < BT_MAX_DIMS; j++) {
            L->ref[i][j] = (dim_ref){-1, 0};
            for (int c = 0; c < 3 && j < L->spec[i].ndim; c++) {
                int va = L->spec[i].shape[j], vb = sb[i].shape[j];
                int ca = comp_of(&a, c), cb = comp_of(&b, c);
                if (va > 0 && va % ca == 0 && vb % cb == 0 && va / ca == vb / cb) {
                    L->ref[i][j] = (dim_ref){c, va / ca};
                    break;
                }
            }
        }
}

/* "[V,3H]": the shape a parameter must have, in letters. */
static const char *symbolic_shape(const layout *L, int i, char *buf, size_t len)
{
    size_t u = (size_t)snprintf(buf, len, "[");
    for (int j = 0; j < L->spec[i].ndim && u < len; j++) {
        dim_ref r = L->ref[i][j];
        if (r.comp < 0)
            u += (size_t)snprintf(buf + u, len - u, "%s?", j ? "," : "");
        else if (r.mult == 1)
            u += (size_t)snprintf(buf + u, len - u, "%s%s", j ? "," : "", L->letter[r.comp]);
        else
            u += (size_t)snprintf(buf + u, len - u, "%s%d%s", j ? "," : "", r.mult, L->letter[r.comp]);
    }
    if (u < len)
        snprintf(buf + u, len - u, "]");
    return buf;
}

static const char *file_shape(const bt_st_tensor *t, char *buf, size_t len)
{
    size_t u = (size_t)snprintf(buf, len, "[");
    for (int j = 0; j < t->ndim && u < len; j++)
        u += (size_t)snprintf(buf + u, len - u, "%s%lld", j ? "," : "", (long long)t->shape[j]);
    if (u < len)
        snprintf(buf + u, len - u, "]");
    return buf;
}

static bool is_real(const bt_st_tensor *t) { return t->dtype == BT_ST_F32 || t->dtype == BT_ST_F64; }
static bool is_int(const bt_st_tensor *t) { return t->dtype == BT_ST_I32 || t->dtype == BT_ST_I64; }

/* ---- reading the parameters file ---------------------------------------------- */

/* What P gives: sizes, the model with its parameters, the batch and the start state. */
typedef struct grad_in {
    bt_st_file *f;
    bt_model *m;
    int B, T;
    char dim_from[3][BT_NAME_LEN + 8]; /* which tensor each size came from, for messages */
    int32_t *ids, *targets;            /* [B*T] */
    bt_real *x, *y;                    /* [B*T*D], [B*T*Q] */
    bt_real *state[BT_MAX_STATES];     /* [B*width] */
    double *xi;                        /* [T] or NULL */
} grad_in;

static void grad_in_free(grad_in *g)
{
    bt_model_free(g->m);
    bt_st_free(g->f);
    bt_free(g->ids);
    bt_free(g->targets);
    bt_free(g->x);
    bt_free(g->y);
    for (int k = 0; k < BT_MAX_STATES; k++)
        bt_free(g->state[k]);
    bt_free(g->xi);
}

static void state_name(int k, char *buf, size_t len)
{
    if (k < 2)
        snprintf(buf, len, "%c0", k == 0 ? 'h' : 'c');
    else
        snprintf(buf, len, "s%d_0", k);
}

/* Sizes from the parameter shapes: for each size the clearest evidence wins
 * (a plain dimension over a multiple, a recurrent matrix for H). */
static int infer_dims(const bt_cell_def *cell, const layout *L, grad_in *g, bt_cell_dims *dims)
{
    char sym[64], got[64];
    int best[3] = {-1, -1, -1}, val[3] = {0, 0, 0};
    for (int i = 0; i < L->n; i++) {
        const char *name = L->spec[i].name;
        const bt_st_tensor *t = bt_st_find(g->f, name);
        if (!t)
            return cli_fail(CMD, "missing tensor '%s': cell %s needs it as F32 or F64 %s", name,
                            cell->name, symbolic_shape(L, i, sym, sizeof sym));
        if (!is_real(t))
            return cli_fail(CMD, "tensor '%s' is %s: parameters must be F32 or F64, shape %s",
                            name, bt_st_dtype_name(t->dtype), symbolic_shape(L, i, sym, sizeof sym));
        if (t->ndim != L->spec[i].ndim)
            return cli_fail(CMD, "tensor '%s' has shape %s: cell %s expects %s", name,
                            file_shape(t, got, sizeof got), cell->name,
                            symbolic_shape(L, i, sym, sizeof sym));
        for (int j = 0; j < t->ndim; j++) {
            dim_ref r = L->ref[i][j];
            if (r.comp < 0 || t->shape[j] % r.mult != 0 || t->shape[j] / r.mult > 1000000)
                continue;
            int score = (r.mult == 1 ? 2 : 0) + (r.comp == 1 && L->spec[i].recurrent ? 1 : 0);
            if (score > best[r.comp]) {
                best[r.comp] = score;
                val[r.comp] = (int)(t->shape[j] / r.mult);
                snprintf(g->dim_from[r.comp], sizeof g->dim_from[r.comp], "%s", name);
            }
        }
    }
    /* Sizes no parameter shows (a cell with unusual shapes): from the data. */
    const bt_st_tensor *X = bt_st_find(g->f, "X"), *Y = bt_st_find(g->f, "Y"),
                       *h0 = bt_st_find(g->f, "h0");
    if (!val[0] && X && is_real(X) && X->ndim == 3) {
        val[0] = (int)X->shape[2];
        snprintf(g->dim_from[0], sizeof g->dim_from[0], "X");
    }
    if (!val[2] && Y && is_real(Y) && Y->ndim == 3) {
        val[2] = (int)Y->shape[2];
        snprintf(g->dim_from[2], sizeof g->dim_from[2], "Y");
    }
    if (!val[1] && h0 && h0->ndim == 2) {
        val[1] = (int)h0->shape[1];
        snprintf(g->dim_from[1], sizeof g->dim_from[1], "h0");
    }
    static const char *const what[3] = {"input size", "hidden size", "output size"};
    for (int c = 0; c < 3; c++)
        if (val[c] <= 0)
            return cli_fail(CMD, "cannot tell the %s (%s) of cell %s from the parameter shapes",
                            what[c], L->letter[c], cell->name);
    *dims = (bt_cell_dims){val[0], val[1], val[2]};
    return 0;
}

/* Every parameter's shape at the inferred sizes, then its values. */
static int load_params(const bt_cell_def *cell, const layout *L, grad_in *g)
{
    char got[64], want[64], sym[64], err[512];
    bt_model *m = g->m;
    for (int i = 0; i < m->n_params; i++) {
        const bt_param_spec *s = &m->specs[i];
        const bt_st_tensor *t = bt_st_find(g->f, s->name);
        if (!t) /* a cell whose names depend on its sizes */
            return cli_fail(CMD, "missing tensor '%s' (cell %s)", s->name, cell->name);
        bool same = t->ndim == s->ndim && is_real(t);
        for (int j = 0; same && j < s->ndim; j++)
            same = t->shape[j] == s->shape[j];
        if (!same) {
            bt_st_tensor w = {.ndim = s->ndim};
            for (int j = 0; j < s->ndim; j++)
                w.shape[j] = s->shape[j];
            return cli_fail(CMD, "tensor '%s' is %s %s: cell %s expects F32 or F64 %s = %s "
                            "(%s=%d from %s, H=%d from %s, %s=%d from %s)",
                            s->name, bt_st_dtype_name(t->dtype), file_shape(t, got, sizeof got),
                            cell->name, i < L->n ? symbolic_shape(L, i, sym, sizeof sym) : "",
                            file_shape(&w, want, sizeof want), L->letter[0], m->dims.input,
                            g->dim_from[0], m->dims.hidden, g->dim_from[1], L->letter[2],
                            m->dims.output, g->dim_from[2]);
        }
        if (bt_st_get_real(t, m->ptab[i]->data, m->ptab[i]->size, err, sizeof err) != BT_OK)
            return cli_fail(CMD, "tensor '%s': %s", s->name, err);
    }
    return 0;
}

/* Token ids of a [B,T] tensor into int32, each checked against [0, limit). */
static int read_ids(const bt_st_tensor *t, int32_t *dst, int limit, const char *what)
{
    for (size_t i = 0; i < t->count; i++) {
        int64_t v = t->dtype == BT_ST_I32 ? ((const int32_t *)t->data)[i]
                                          : ((const int64_t *)t->data)[i];
        if (v < 0 || v >= limit)
            return cli_fail(CMD, "%s[%zu][%zu] = %lld is out of range: ids must be in [0, %d) (%s)",
                            t->name, i / (size_t)t->shape[1], i % (size_t)t->shape[1],
                            (long long)v, limit, what);
        dst[i] = (int32_t)v;
    }
    return 0;
}

/* A real tensor that must be exactly [d0, d1(, d2)], converted to bt_real. */
static int read_real(const bt_st_tensor *t, int ndim, const int64_t *shape, bt_real **out,
                     const char *shape_text)
{
    char got[64], err[256];
    bool same = is_real(t) && t->ndim == ndim;
    for (int j = 0; same && j < ndim; j++)
        same = t->shape[j] == shape[j];
    if (!same)
        return cli_fail(CMD, "tensor '%s' is %s %s: expected F32 or F64 %s", t->name,
                        bt_st_dtype_name(t->dtype), file_shape(t, got, sizeof got), shape_text);
    *out = bt_calloc(t->count ? t->count : 1, sizeof(bt_real));
    if (!*out)
        return cli_fail(CMD, "out of memory for '%s'", t->name);
    if (bt_st_get_real(t, *out, t->count, err, sizeof err) != BT_OK)
        return cli_fail(CMD, "tensor '%s': %s", t->name, err);
    return 0;
}

static int load_batch(const bt_cell_def *cell, grad_in *g)
{
    char got[64], txt[96];
    const bt_cell_dims *d = &g->m->dims;
    const bt_st_tensor *X = bt_st_find(g->f, "X"), *Y = bt_st_find(g->f, "Y");
    bool tokens_in = cell->input == BT_INPUT_TOKENS, xent = cell->loss == BT_LOSS_XENT;
    if (!X)
        return cli_fail(CMD, "missing tensor 'X': the inputs, %s",
                        tokens_in ? "token ids I32 [B,T] (or real F32/F64 [B,T,D])"
                                  : "real F32 or F64 [B,T,D]");
    if (!Y)
        return cli_fail(CMD, "missing tensor 'Y': the targets, %s",
                        xent ? "token ids I32 [B,T]" : "real F32 or F64 [B,T,Q]");
    /* Token cells take ids or real rows (x W_xh); real-input cells only real rows. */
    if (is_int(X) && tokens_in && X->ndim == 2) {
        g->B = (int)X->shape[0];
        g->T = (int)X->shape[1];
    } else if (is_real(X) && X->ndim == 3) {
        g->B = (int)X->shape[0];
        g->T = (int)X->shape[1];
        if (X->shape[2] != d->input)
            return cli_fail(CMD, "tensor 'X' is %s: expected [B,T,D] with D=%d (from %s)",
                            file_shape(X, got, sizeof got), d->input, g->dim_from[0]);
    } else
        return cli_fail(CMD, "tensor 'X' is %s %s: cell %s expects %s",
                        bt_st_dtype_name(X->dtype), file_shape(X, got, sizeof got), cell->name,
                        tokens_in ? "token ids I32 [B,T] (or real F32/F64 [B,T,D])"
                                  : "real F32 or F64 [B,T,D]");
    if (g->B <= 0 || g->T <= 0 || g->B > 1000000 || g->T > 100000000)
        return cli_fail(CMD, "tensor 'X' is %s: B and T must be positive",
                        file_shape(X, got, sizeof got));
    int64_t B = g->B, T = g->T;
    size_t bt = (size_t)B * (size_t)T;
    if (is_int(X)) {
        if (!(g->ids = bt_calloc(bt, sizeof(int32_t))))
            return cli_fail(CMD, "out of memory for X");
        if (read_ids(X, g->ids, d->input, "the input vocabulary, from the parameter shapes"))
            return 1;
    } else {
        snprintf(txt, sizeof txt, "[%lld,%lld,%d] ([B,T,D])", (long long)B, (long long)T, d->input);
        if (read_real(X, 3, (int64_t[]){B, T, d->input}, &g->x, txt))
            return 1;
    }
    if (xent) {
        if (!is_int(Y) || Y->ndim != 2 || Y->shape[0] != B || Y->shape[1] != T)
            return cli_fail(CMD, "tensor 'Y' is %s %s: expected token ids I32 [%lld,%lld] ([B,T] as X)",
                            bt_st_dtype_name(Y->dtype), file_shape(Y, got, sizeof got),
                            (long long)B, (long long)T);
        if (!(g->targets = bt_calloc(bt, sizeof(int32_t))))
            return cli_fail(CMD, "out of memory for Y");
        if (read_ids(Y, g->targets, d->output, "the output vocabulary, from the parameter shapes"))
            return 1;
    } else {
        snprintf(txt, sizeof txt, "[%lld,%lld,%d] ([B,T,Q])", (long long)B, (long long)T, d->output);
        if (read_real(Y, 3, (int64_t[]){B, T, d->output}, &g->y, txt))
            return 1;
    }
    return 0;
}

/* h0 (c0, ...) default to zeros; xi is optional. */
static int load_state_xi(grad_in *g)
{
    char name[16], txt[96];
    const bt_model *m = g->m;
    for (int k = 0; k < m->n_states; k++) {
        state_name(k, name, sizeof name);
        const bt_st_tensor *t = bt_st_find(g->f, name);
        int w = m->state_width[k];
        if (t) {
            snprintf(txt, sizeof txt, "[%d,%d] ([B,H])", g->B, w);
            if (read_real(t, 2, (int64_t[]){g->B, w}, &g->state[k], txt))
                return 1;
        } else if (!(g->state[k] = bt_calloc((size_t)g->B * (size_t)w, sizeof(bt_real))))
            return cli_fail(CMD, "out of memory for %s", name);
    }
    const bt_st_tensor *t = bt_st_find(g->f, "xi");
    if (!t)
        return 0;
    bt_real *xr = NULL;
    snprintf(txt, sizeof txt, "[%d] ([T])", g->T);
    if (read_real(t, 1, (int64_t[]){g->T}, &xr, txt))
        return 1;
    g->xi = bt_calloc((size_t)g->T, sizeof(double));
    for (int s = 0; g->xi && s < g->T; s++) {
        g->xi[s] = (double)xr[s];
        if (!isfinite(g->xi[s])) {
            bt_free(xr);
            return cli_fail(CMD, "xi[%d] is not finite", s);
        }
    }
    bt_free(xr);
    return g->xi ? 0 : cli_fail(CMD, "out of memory for xi");
}

/* Tensors P has that nothing reads: most likely a misspelt name. */
static void warn_unused(const grad_in *g)
{
    char name[16];
    for (int i = 0; i < bt_st_count(g->f); i++) {
        const char *n = bt_st_at(g->f, i)->name;
        bool known = !strcmp(n, "X") || !strcmp(n, "Y") || !strcmp(n, "xi");
        for (int p = 0; !known && p < g->m->n_params; p++)
            known = !strcmp(n, g->m->specs[p].name);
        for (int k = 0; !known && k < g->m->n_states; k++) {
            state_name(k, name, sizeof name);
            known = !strcmp(n, name);
        }
        if (!known)
            fprintf(stderr, "bptt grad: warning: ignoring tensor '%s' (not a parameter of cell %s, "
                    "nor X, Y, xi or an initial state)\n", n, g->m->cell->name);
    }
}

static int load_input(const bt_cell_def *cell, const char *path, grad_in *g)
{
    char err[1024];
    if (bt_st_read(path, &g->f, err, sizeof err) != BT_OK)
        return cli_fail(CMD, "--params %s: %s", path, err);
    layout L;
    probe_layout(cell, &L);
    bt_cell_dims dims;
    if (infer_dims(cell, &L, g, &dims))
        return 1;
    if (bt_model_new(cell, dims, &g->m, err, sizeof err) != BT_OK)
        return cli_fail(CMD, "%s", err);
    if (load_params(cell, &L, g) || load_batch(cell, g) || load_state_xi(g))
        return 1;
    warn_unused(g);
    return 0;
}

/* ---- running and writing --------------------------------------------------------- */

typedef struct grad_out {
    double loss;
    bt_real *dstate[BT_MAX_STATES]; /* [B*width] */
    double *xi_used, *dh_norms;     /* [T] */
} grad_out;

static void grad_out_free(grad_out *o)
{
    for (int k = 0; k < BT_MAX_STATES; k++)
        bt_free(o->dstate[k]);
    bt_free(o->xi_used);
    bt_free(o->dh_norms);
}

/* How the windows are stored: checkpoint spacing (-1 sqrt, 0 none) and budget. */
typedef struct grad_memory {
    int checkpoint_every;
    double budget_mb;
} grad_memory;

static int run(grad_in *g, const cli_policy *pol, uint64_t seed, const grad_memory *mem,
               grad_out *o)
{
    char err[1024];
    bt_model *m = g->m;
    o->xi_used = bt_calloc((size_t)g->T, sizeof(double));
    o->dh_norms = bt_calloc((size_t)g->T, sizeof(double));
    bool ok = o->xi_used && o->dh_norms;
    for (int k = 0; ok && k < m->n_states; k++)
        ok = (o->dstate[k] = bt_calloc((size_t)g->B * (size_t)m->state_width[k], sizeof(bt_real)));
    if (!ok)
        return cli_fail(CMD, "out of memory for B=%d T=%d", g->B, g->T);
    bt_unroller *u = NULL;
    if (bt_unroller_new(m, g->B, g->T, &u, err, sizeof err) != BT_OK)
        return cli_fail(CMD, "%s", err);
    bt_sequence seq = {.B = g->B, .T = g->T, .ids = g->ids, .targets = g->targets, .x = g->x,
                       .y = g->y};
    bt_unroll_opts opts = {.policy = pol->def, .policy_state = pol->state, .policy_seed = seed,
                           .xi = g->xi, .accumulate = true, .want_dh0 = true,
                           .want_dh_norms = true, .checkpoint_every = mem->checkpoint_every,
                           .memory_budget = (size_t)(mem->budget_mb * 1048576.0)};
    bt_unroll_result res;
    bt_params_zero_grad(m->params);
    /* The unroller advances g->state in place to the final state; h0 is not needed again. */
    bt_status st = bt_unroll_run(u, &seq, g->state, &opts, o->xi_used, o->dstate, o->dh_norms,
                                 &res, err, sizeof err);
    bt_unroller_free(u);
    if (st != BT_OK)
        return cli_fail(CMD, "cell %s under %s: %s", m->cell->name, pol->desc, err);
    o->loss = res.loss_terms ? res.loss_sum / (double)res.loss_terms : 0;
    return 0;
}

/* Real outputs in the build's precision; a double [n] buffer converted. */
static bt_status add_doubles(bt_st_file *f, const char *name, const double *v, int n, char *err,
                             size_t errlen)
{
    bt_real *r = bt_calloc((size_t)n, sizeof(bt_real));
    if (!r)
        return BT_ERR_NOMEM;
    for (int i = 0; i < n; i++)
        r[i] = (bt_real)v[i];
    bt_status st = bt_st_add_real(f, name, 1, (int64_t[]){n}, r, err, errlen);
    bt_free(r);
    return st;
}

static int write_output(const grad_in *g, const cli_policy *pol, uint64_t seed,
                        const grad_out *o, const char *path)
{
    char err[1024] = "", name[BT_NAME_LEN + 16], num[64];
    const bt_model *m = g->m;
    bt_st_file *f = bt_st_new();
    if (!f)
        return cli_fail(CMD, "out of memory");
    bt_real loss = (bt_real)o->loss;
    bt_status st = bt_st_add_real(f, "loss", 0, (int64_t[]){1}, &loss, err, sizeof err);
    for (int i = 0; st == BT_OK && i < m->n_params; i++) {
        const bt_tensor *p = m->ptab[i];
        int64_t shape[BT_MAX_DIMS];
        for (int j = 0; j < p->ndim; j++)
            shape[j] = p->shape[j];
        snprintf(name, sizeof name, "grad.%s", m->specs[i].name);
        st = bt_st_add_real(f, name, p->ndim, shape, p->grad, err, sizeof err);
    }
    for (int k = 0; st == BT_OK && k < m->n_states; k++) {
        char sn[16];
        state_name(k, sn, sizeof sn);
        snprintf(name, sizeof name, "grad.%s", sn);
        st = bt_st_add_real(f, name, 2, (int64_t[]){g->B, m->state_width[k]}, o->dstate[k], err,
                            sizeof err);
    }
    if (st == BT_OK)
        st = add_doubles(f, "xi", o->xi_used, g->T, err, sizeof err);
    if (st == BT_OK)
        st = add_doubles(f, "grad_norm_h", o->dh_norms, g->T, err, sizeof err);
    const char *meta[][2] = {
        {"format", "bptt-grad/1"},
        {"cell", m->cell->name},
        {"policy", pol->desc},
        {"xi_source", g->xi ? "given" : "policy"},
        {"loss", m->cell->loss == BT_LOSS_XENT ? "xent" : "mse"},
        {"bptt_version", bt_version()},
        {"precision", BT_REAL_DOUBLE ? "double" : "float"},
    };
    for (size_t i = 0; st == BT_OK && i < sizeof meta / sizeof *meta; i++)
        st = bt_st_set_meta(f, meta[i][0], meta[i][1]);
    const char *ikeys[] = {"B", "T", "input_size", "hidden", "output_size", "seed"};
    long long ivals[] = {g->B, g->T, m->dims.input, m->dims.hidden, m->dims.output,
                         (long long)seed};
    for (size_t i = 0; st == BT_OK && i < sizeof ikeys / sizeof *ikeys; i++) {
        snprintf(num, sizeof num, "%lld", ivals[i]);
        st = bt_st_set_meta(f, ikeys[i], num);
    }
    if (st == BT_OK)
        st = bt_st_write(f, path, err, sizeof err);
    bt_st_free(f);
    if (st != BT_OK)
        return cli_fail(CMD, "--out %s: %s", path, err[0] ? err : bt_status_name(st));
    return 0;
}

int cmd_grad(int argc, char **argv)
{
    cli_args a;
    int rc;
    if (!cli_args_begin(&a, &cmd_grad_spec, argc, argv, &rc))
        return rc;
    const char *cell_name = cli_get(&a, "cell"), *params = cli_get(&a, "params"),
               *out = cli_get(&a, "out"), *spec = cli_get(&a, "truncation");
    long seed = 1;
    grad_memory mem = {0};
    rc = cli_int(&a, "seed", 1, 0, 0x7fffffffffffffffL, &seed) &&
         cli_checkpoint(&a, &mem.checkpoint_every, &mem.budget_mb) ? 0 : 2;
    bt_registry *reg = rc ? NULL : cli_load_plugins(&a);
    if (!rc && !reg)
        rc = 1;
    if (!rc)
        cli_args_check_read(&a);
    if (!rc && (!params || !out))
        rc = cli_fail(CMD, "--params P.safetensors and --out G.safetensors are required "
                      "(see bptt grad --help)");
    const bt_cell_def *cell = rc ? NULL : cli_cell_find(reg, cell_name, CMD);
    if (!rc && !cell)
        rc = 1;
    cli_policy pol = {0};
    if (!rc && !cli_policy_new(reg, spec ? spec : "full", &pol, CMD))
        rc = 1;
    grad_in g = {0};
    grad_out o = {0};
    if (!rc)
        rc = load_input(cell, params, &g);
    if (!rc)
        rc = run(&g, &pol, (uint64_t)seed, &mem, &o);
    if (!rc)
        rc = write_output(&g, &pol, (uint64_t)seed, &o, out);
    if (!rc)
        printf("%s under %s%s: B=%d T=%d, loss %.9g -> %s\n", cell->name, pol.desc,
               g.xi ? " (given xi)" : "", g.B, g.T, o.loss, out);
    grad_out_free(&o);
    grad_in_free(&g);
    cli_policy_free(&pol);
    bt_registry_free(reg);
    cli_args_free(&a);
    return rc;
}
