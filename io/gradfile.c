/* gradfile.c: the files of `bptt grad` (docs/grad-files.md). Reading P finds
 * the cell's sizes in the parameter shapes, then checks every tensor against
 * them with a message that names the tensor and the shape it should have;
 * computing runs the unroller over the batch under the policy, or the online
 * runner with an estimator; writing G adds the metadata that lets another
 * framework replay the run.
 *
 * Dimension letters: B rows, T steps, H hidden, V vocabulary, D input width,
 * Q output width. Token inputs are ids [B,T]; real inputs x [B,T,D]. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "gradfile.h"
#include "stack.h"

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

/* Which size (and multiple of it) dimension j of parameter i is, from its
 * values at the two probe sizes a and b. */
static dim_ref ref_of(int va, int vb, const bt_cell_dims *a, const bt_cell_dims *b)
{
    for (int c = 0; c < 3; c++) {
        int ca = comp_of(a, c), cb = comp_of(b, c);
        if (va > 0 && va % ca == 0 && vb % cb == 0 && va / ca == vb / cb)
            return (dim_ref){c, va / ca};
    }
    return (dim_ref){-1, 0};
}

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
        for (int j = 0; j < BT_MAX_DIMS; j++)
            L->ref[i][j] = j < L->spec[i].ndim ? ref_of(L->spec[i].shape[j], sb[i].shape[j], &a, &b)
                                               : (dim_ref){-1, 0};
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

/* Refuses a NaN or an infinity in the values of tensor t: the checkpoint
 * loader refuses them in parameters, and so does P, in every real tensor. */
static bt_status check_finite(const bt_st_tensor *t, const bt_real *v, size_t n, char *err,
                              size_t errlen)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite((double)v[i]))
            return bt_error(err, errlen, BT_ERR_NUMERIC, "tensor '%s' is not finite at element "
                            "%zu (%g): every value in P must be finite", t->name, i, (double)v[i]);
    return BT_OK;
}
static bool is_int(const bt_st_tensor *t) { return t->dtype == BT_ST_I32 || t->dtype == BT_ST_I64; }

/* "h0", "c0", then "s2_0", ... (a stack's "l1.h0", "l2.c0"): the name of
 * initial state k in P, and of grad.<name> in G. */
static void state_name(const bt_model *m, int k, char *buf, size_t len)
{
    bt_model_state_name(m, k, buf, len);
}

/* ---- reading the parameters file ---------------------------------------------- */

void bt_grad_input_free(bt_grad_input *in)
{
    if (!in)
        return;
    bt_model_free(in->model);
    bt_st_free(in->file);
    bt_free((void *)in->seq.ids);
    bt_free((void *)in->seq.targets);
    bt_free((void *)in->seq.x);
    bt_free((void *)in->seq.y);
    for (int k = 0; k < BT_MAX_STATES; k++)
        bt_free(in->state[k]);
    bt_free(in->xi);
    bt_free(in);
}

/* Parameter i's shape raises the evidence for the sizes it shows: a plain
 * dimension beats a multiple, a recurrent matrix is the best witness of H. */
static void note_sizes(const layout *L, int i, const bt_st_tensor *t, bt_grad_input *in,
                       int *best, int *val)
{
    for (int j = 0; j < t->ndim; j++) {
        dim_ref r = L->ref[i][j];
        if (r.comp < 0 || t->shape[j] % r.mult != 0 || t->shape[j] / r.mult > 1000000)
            continue;
        int score = (r.mult == 1 ? 2 : 0) + (r.comp == 1 && L->spec[i].recurrent ? 1 : 0);
        if (score > best[r.comp]) {
            best[r.comp] = score;
            val[r.comp] = (int)(t->shape[j] / r.mult);
            snprintf(in->dim_from[r.comp], sizeof in->dim_from[r.comp], "%s", t->name);
        }
    }
}

/* Sizes no parameter shows (a cell with unusual shapes): from the data. */
static void sizes_from_data(bt_grad_input *in, int *val)
{
    const bt_st_tensor *X = bt_st_find(in->file, "X"), *Y = bt_st_find(in->file, "Y"),
                       *h0 = bt_st_find(in->file, "h0");
    if (!val[0] && X && is_real(X) && X->ndim == 3) {
        val[0] = (int)X->shape[2];
        snprintf(in->dim_from[0], sizeof in->dim_from[0], "X");
    }
    if (!val[2] && Y && is_real(Y) && Y->ndim == 3) {
        val[2] = (int)Y->shape[2];
        snprintf(in->dim_from[2], sizeof in->dim_from[2], "Y");
    }
    if (!val[1] && h0 && h0->ndim == 2) {
        val[1] = (int)h0->shape[1];
        snprintf(in->dim_from[1], sizeof in->dim_from[1], "h0");
    }
}

/* Sizes from the parameter shapes: for each size the clearest evidence wins. */
static bt_status infer_dims(const bt_cell_def *cell, const layout *L, bt_grad_input *in,
                            bt_cell_dims *dims, char *err, size_t errlen)
{
    char sym[64], got[64];
    int best[3] = {-1, -1, -1}, val[3] = {0, 0, 0};
    for (int i = 0; i < L->n; i++) {
        const char *name = L->spec[i].name;
        const bt_st_tensor *t = bt_st_find(in->file, name);
        if (!t)
            return bt_error(err, errlen, BT_ERR_FORMAT,
                            "missing tensor '%s': cell %s needs it as F32 or F64 %s", name,
                            cell->name, symbolic_shape(L, i, sym, sizeof sym));
        if (!is_real(t))
            return bt_error(err, errlen, BT_ERR_FORMAT,
                            "tensor '%s' is %s: parameters must be F32 or F64, shape %s", name,
                            bt_st_dtype_name(t->dtype), symbolic_shape(L, i, sym, sizeof sym));
        if (t->ndim != L->spec[i].ndim)
            return bt_error(err, errlen, BT_ERR_FORMAT, "tensor '%s' has shape %s: cell %s expects %s",
                            name, file_shape(t, got, sizeof got), cell->name,
                            symbolic_shape(L, i, sym, sizeof sym));
        note_sizes(L, i, t, in, best, val);
    }
    sizes_from_data(in, val);
    static const char *const what[3] = {"input size", "hidden size", "output size"};
    for (int c = 0; c < 3; c++)
        if (val[c] <= 0)
            return bt_error(err, errlen, BT_ERR_FORMAT,
                            "cannot tell the %s (%s) of cell %s from the parameter shapes",
                            what[c], L->letter[c], cell->name);
    *dims = (bt_cell_dims){val[0], val[1], val[2]};
    return BT_OK;
}

/* Every parameter's shape at the inferred sizes, then its values. */
static bt_status load_params(const bt_cell_def *cell, const layout *L, bt_grad_input *in, char *err,
                             size_t errlen)
{
    char got[64], want[64], sym[64], why[512];
    bt_model *m = in->model;
    for (int i = 0; i < m->n_params; i++) {
        const bt_param_spec *s = &m->specs[i];
        const bt_st_tensor *t = bt_st_find(in->file, s->name);
        if (!t) /* a cell whose names depend on its sizes */
            return bt_error(err, errlen, BT_ERR_FORMAT, "missing tensor '%s' (cell %s)", s->name,
                            cell->name);
        bool same = t->ndim == s->ndim && is_real(t);
        for (int j = 0; same && j < s->ndim; j++)
            same = t->shape[j] == s->shape[j];
        if (!same) {
            bt_st_tensor w = {.ndim = s->ndim};
            for (int j = 0; j < s->ndim; j++)
                w.shape[j] = s->shape[j];
            return bt_error(err, errlen, BT_ERR_FORMAT,
                            "tensor '%s' is %s %s: cell %s expects F32 or F64 %s = %s "
                            "(%s=%d from %s, H=%d from %s, %s=%d from %s)",
                            s->name, bt_st_dtype_name(t->dtype), file_shape(t, got, sizeof got),
                            cell->name, i < L->n ? symbolic_shape(L, i, sym, sizeof sym) : "",
                            file_shape(&w, want, sizeof want), L->letter[0], m->dims.input,
                            in->dim_from[0], m->dims.hidden, in->dim_from[1], L->letter[2],
                            m->dims.output, in->dim_from[2]);
        }
        if (bt_st_get_real(t, m->ptab[i]->data, m->ptab[i]->size, why, sizeof why) != BT_OK)
            return bt_error(err, errlen, BT_ERR_FORMAT, "tensor '%s': %s", s->name, why);
        bt_status st = check_finite(t, m->ptab[i]->data, m->ptab[i]->size, err, errlen);
        if (st != BT_OK)
            return st;
    }
    return BT_OK;
}

/* Token ids of a [B,T] tensor into a new int32 buffer, each checked against [0, limit). */
static bt_status read_ids(const bt_st_tensor *t, const int32_t **out, int limit, const char *what,
                          char *err, size_t errlen)
{
    int32_t *dst = bt_calloc(t->count ? t->count : 1, sizeof(int32_t));
    *out = dst; /* owned by the caller from here, even on failure */
    if (!dst)
        return bt_error(err, errlen, BT_ERR_NOMEM, "out of memory for %s", t->name);
    for (size_t i = 0; i < t->count; i++) {
        int64_t v = t->dtype == BT_ST_I32 ? ((const int32_t *)t->data)[i]
                                          : ((const int64_t *)t->data)[i];
        if (v < 0 || v >= limit)
            return bt_error(err, errlen, BT_ERR_FORMAT,
                            "%s[%zu][%zu] = %lld is out of range: ids must be in [0, %d) (%s)",
                            t->name, i / (size_t)t->shape[1], i % (size_t)t->shape[1],
                            (long long)v, limit, what);
        dst[i] = (int32_t)v;
    }
    return BT_OK;
}

/* A real tensor that must be exactly [d0, d1(, d2)], converted to bt_real. */
static bt_status read_real(const bt_st_tensor *t, int ndim, const int64_t *shape, bt_real **out,
                           const char *shape_text, char *err, size_t errlen)
{
    char got[64], why[256];
    bool same = is_real(t) && t->ndim == ndim;
    for (int j = 0; same && j < ndim; j++)
        same = t->shape[j] == shape[j];
    if (!same)
        return bt_error(err, errlen, BT_ERR_FORMAT, "tensor '%s' is %s %s: expected F32 or F64 %s",
                        t->name, bt_st_dtype_name(t->dtype), file_shape(t, got, sizeof got),
                        shape_text);
    *out = bt_calloc(t->count ? t->count : 1, sizeof(bt_real));
    if (!*out)
        return bt_error(err, errlen, BT_ERR_NOMEM, "out of memory for '%s'", t->name);
    if (bt_st_get_real(t, *out, t->count, why, sizeof why) != BT_OK)
        return bt_error(err, errlen, BT_ERR_FORMAT, "tensor '%s': %s", t->name, why);
    return check_finite(t, *out, t->count, err, errlen);
}

/* X's kind and shape, which give B and T: token cells take ids [B,T] or real
 * rows [B,T,D] (x W_xh); real-input cells only real rows. */
static bt_status batch_shape(const bt_cell_def *cell, bt_grad_input *in, const bt_st_tensor *X,
                             char *err, size_t errlen)
{
    char got[64];
    const bt_cell_dims *d = &in->model->dims;
    bool tokens_in = cell->input == BT_INPUT_TOKENS;
    if (is_int(X) && tokens_in && X->ndim == 2) {
        in->seq.B = (int)X->shape[0];
        in->seq.T = (int)X->shape[1];
    } else if (is_real(X) && X->ndim == 3) {
        in->seq.B = (int)X->shape[0];
        in->seq.T = (int)X->shape[1];
        if (X->shape[2] != d->input)
            return bt_error(err, errlen, BT_ERR_FORMAT,
                            "tensor 'X' is %s: expected [B,T,D] with D=%d (from %s)",
                            file_shape(X, got, sizeof got), d->input, in->dim_from[0]);
    } else
        return bt_error(err, errlen, BT_ERR_FORMAT, "tensor 'X' is %s %s: cell %s expects %s",
                        bt_st_dtype_name(X->dtype), file_shape(X, got, sizeof got), cell->name,
                        tokens_in ? "token ids I32 [B,T] (or real F32/F64 [B,T,D])"
                                  : "real F32 or F64 [B,T,D]");
    if (in->seq.B <= 0 || in->seq.T <= 0 || in->seq.B > 1000000 || in->seq.T > 100000000)
        return bt_error(err, errlen, BT_ERR_FORMAT, "tensor 'X' is %s: B and T must be positive",
                        file_shape(X, got, sizeof got));
    return BT_OK;
}

/* Y: target ids [B,T] for the cross-entropy loss, real [B,T,Q] for squared error. */
static bt_status load_targets(const bt_cell_def *cell, bt_grad_input *in, const bt_st_tensor *Y,
                              char *err, size_t errlen)
{
    char got[64], txt[96];
    int64_t B = in->seq.B, T = in->seq.T;
    int Q = in->model->dims.output;
    if (cell->loss != BT_LOSS_XENT) {
        bt_real *y = NULL;
        snprintf(txt, sizeof txt, "[%lld,%lld,%d] ([B,T,Q])", (long long)B, (long long)T, Q);
        bt_status st = read_real(Y, 3, (int64_t[]){B, T, Q}, &y, txt, err, errlen);
        in->seq.y = y;
        return st;
    }
    if (!is_int(Y) || Y->ndim != 2 || Y->shape[0] != B || Y->shape[1] != T)
        return bt_error(err, errlen, BT_ERR_FORMAT,
                        "tensor 'Y' is %s %s: expected token ids I32 [%lld,%lld] ([B,T] as X)",
                        bt_st_dtype_name(Y->dtype), file_shape(Y, got, sizeof got),
                        (long long)B, (long long)T);
    return read_ids(Y, &in->seq.targets, Q,
                    "the output vocabulary, from the parameter shapes", err, errlen);
}

static bt_status load_batch(const bt_cell_def *cell, bt_grad_input *in, char *err, size_t errlen)
{
    char txt[96];
    const bt_st_tensor *X = bt_st_find(in->file, "X"), *Y = bt_st_find(in->file, "Y");
    int D = in->model->dims.input;
    if (!X)
        return bt_error(err, errlen, BT_ERR_FORMAT, "missing tensor 'X': the inputs, %s",
                        cell->input == BT_INPUT_TOKENS
                            ? "token ids I32 [B,T] (or real F32/F64 [B,T,D])"
                            : "real F32 or F64 [B,T,D]");
    if (!Y)
        return bt_error(err, errlen, BT_ERR_FORMAT, "missing tensor 'Y': the targets, %s",
                        cell->loss == BT_LOSS_XENT ? "token ids I32 [B,T]" : "real F32 or F64 [B,T,Q]");
    bt_status st = batch_shape(cell, in, X, err, errlen);
    if (st != BT_OK)
        return st;
    int64_t B = in->seq.B, T = in->seq.T;
    if (is_int(X))
        st = read_ids(X, &in->seq.ids, D, "the input vocabulary, from the parameter shapes", err,
                      errlen);
    else {
        bt_real *x = NULL;
        snprintf(txt, sizeof txt, "[%lld,%lld,%d] ([B,T,D])", (long long)B, (long long)T, D);
        st = read_real(X, 3, (int64_t[]){B, T, D}, &x, txt, err, errlen);
        in->seq.x = x;
    }
    return st == BT_OK ? load_targets(cell, in, Y, err, errlen) : st;
}

/* xi [T], optional: the factors that replace the policy's draws. */
static bt_status load_xi(bt_grad_input *in, const bt_st_tensor *t, char *err, size_t errlen)
{
    char txt[96];
    bt_real *xr = NULL;
    snprintf(txt, sizeof txt, "[%d] ([T])", in->seq.T);
    bt_status st = read_real(t, 1, (int64_t[]){in->seq.T}, &xr, txt, err, errlen);
    if (st != BT_OK)
        return st;
    in->xi = bt_calloc((size_t)in->seq.T, sizeof(double));
    for (int s = 0; in->xi && s < in->seq.T && st == BT_OK; s++) {
        in->xi[s] = (double)xr[s]; /* finite: read_real checked */
    }
    bt_free(xr);
    if (st == BT_OK && !in->xi)
        st = bt_error(err, errlen, BT_ERR_NOMEM, "out of memory for xi");
    return st;
}

/* h0 (c0, ...) default to zeros; xi is optional. */
static bt_status load_state_xi(bt_grad_input *in, char *err, size_t errlen)
{
    char name[16], txt[96];
    const bt_model *m = in->model;
    int B = in->seq.B;
    for (int k = 0; k < m->n_states; k++) {
        state_name(m, k, name, sizeof name);
        const bt_st_tensor *t = bt_st_find(in->file, name);
        int w = m->state_width[k];
        if (t) {
            snprintf(txt, sizeof txt, "[%d,%d] ([B,H])", B, w);
            bt_status st = read_real(t, 2, (int64_t[]){B, w}, &in->state[k], txt, err, errlen);
            if (st != BT_OK)
                return st;
        } else if (!(in->state[k] = bt_calloc((size_t)B * (size_t)w, sizeof(bt_real))))
            return bt_error(err, errlen, BT_ERR_NOMEM, "out of memory for %s", name);
    }
    const bt_st_tensor *t = bt_st_find(in->file, "xi");
    return t ? load_xi(in, t, err, errlen) : BT_OK;
}

/* A grad input owning f (freed here when out of memory). */
static bt_grad_input *input_alloc(bt_st_file *f)
{
    bt_grad_input *in = bt_calloc(1, sizeof *in);
    if (in)
        in->file = f;
    else
        bt_st_free(f);
    return in;
}

/* Once the model is built (st BT_OK): its parameters, the batch, h0 and xi
 * from the file; in handed to *out, or freed on any failure. */
static bt_status input_finish(const bt_cell_def *cell, const layout *L, bt_grad_input *in,
                              bt_status st, bt_grad_input **out, char *err, size_t errlen)
{
    if (st == BT_OK)
        st = load_params(cell, L, in, err, errlen);
    if (st == BT_OK)
        st = load_batch(cell, in, err, errlen);
    if (st == BT_OK)
        st = load_state_xi(in, err, errlen);
    if (st != BT_OK) {
        bt_grad_input_free(in);
        return st;
    }
    *out = in;
    return BT_OK;
}

bt_status bt_grad_input_new(const bt_cell_def *cell, bt_st_file *f, bt_grad_input **out,
                            char *err, size_t errlen)
{
    *out = NULL;
    bt_grad_input *in = input_alloc(f);
    if (!in)
        return bt_error(err, errlen, BT_ERR_NOMEM, "out of memory");
    layout L;
    probe_layout(cell, &L);
    bt_cell_dims dims;
    bt_status st = infer_dims(cell, &L, in, &dims, err, errlen);
    if (st == BT_OK)
        st = bt_model_new(cell, dims, &in->model, err, errlen);
    return input_finish(cell, &L, in, st, out, err, errlen);
}

/* The input width of a stack's layer 1 from its parameters in P: declared at
 * two input widths, the dimension that follows them is a multiple of D (or V). */
static bt_status stack_input_size(const bt_layer_def *l1, bt_grad_input *in, int *D, char *err,
                                  size_t errlen)
{
    bt_param_spec a[BT_MAX_CELL_PARAMS], b[BT_MAX_CELL_PARAMS];
    char cerr[256], name[BT_NAME_LEN + 8];
    const bt_cell_dims da = {37, l1->hidden, 0}, db = {53, l1->hidden, 0};
    int na = l1->cell->params(&da, a, BT_MAX_CELL_PARAMS, cerr, sizeof cerr);
    int nb = l1->cell->params(&db, b, BT_MAX_CELL_PARAMS, cerr, sizeof cerr);
    for (int i = 0; na > 0 && na == nb && i < na; i++)
        for (int j = 0; j < a[i].ndim && j < BT_MAX_DIMS; j++) {
            int mult = a[i].shape[j] / 37;
            if (a[i].shape[j] == b[i].shape[j] || mult < 1 || a[i].shape[j] != 37 * mult ||
                b[i].shape[j] != 53 * mult)
                continue;
            snprintf(name, sizeof name, "l1.%s", a[i].name);
            const bt_st_tensor *t = bt_st_find(in->file, name);
            if (!t || t->ndim != a[i].ndim || t->shape[j] % mult || t->shape[j] < mult)
                return bt_error(err, errlen, BT_ERR_FORMAT, "tensor '%s' is missing or has a "
                                "shape that no input size gives (layer 1, cell %s, width %d)",
                                name, l1->cell->name, l1->hidden);
            *D = (int)(t->shape[j] / mult);
            snprintf(in->dim_from[0], sizeof in->dim_from[0], "%s", name);
            return BT_OK;
        }
    return bt_error(err, errlen, BT_ERR_FORMAT, "cannot tell the input size of layer 1 (cell %s) "
                    "from its parameters", l1->cell->name);
}

bt_status bt_grad_input_new_stack(const bt_registry *reg, const char *layers, double dropout,
                                  bool variational, bt_st_file *f, bt_grad_input **out,
                                  char *err, size_t errlen)
{
    *out = NULL;
    bt_layer_def defs[BT_MAX_LAYERS];
    bt_grad_input *in = input_alloc(f);
    if (!in)
        return bt_error(err, errlen, BT_ERR_NOMEM, "out of memory");
    int n = bt_layers_parse(reg, layers, NULL, 1, defs, err, errlen), D = 0;
    const bt_st_tensor *bq = bt_st_find(f, "out.b_q");
    bt_status st = n < 1 ? BT_ERR_ARG : stack_input_size(&defs[0], in, &D, err, errlen);
    if (st == BT_OK && (!bq || bq->ndim != 1 || bq->shape[0] < 1 || bq->shape[0] > 1 << 24))
        st = bt_error(err, errlen, BT_ERR_FORMAT, "%s tensor 'out.b_q': a stack's output bias, "
                      "F32 or F64 [Q]", bq ? "bad shape of" : "missing");
    if (st == BT_OK) {
        snprintf(in->dim_from[2], sizeof in->dim_from[2], "out.b_q");
        st = bt_model_new_stack(defs, n, D, (int)bq->shape[0], dropout, variational, &in->model,
                                err, errlen);
    }
    layout L = {0}; /* names and shapes come from the stack itself */
    return input_finish(st == BT_OK ? in->model->cell : NULL, &L, in, st, out, err, errlen);
}

bt_status bt_grad_input_read(const bt_cell_def *cell, const char *path, bt_grad_input **out,
                             char *err, size_t errlen)
{
    bt_st_file *f = NULL;
    *out = NULL;
    bt_status st = bt_st_read(path, &f, err, errlen);
    return st == BT_OK ? bt_grad_input_new(cell, f, out, err, errlen) : st;
}

int bt_grad_input_unused(const bt_grad_input *in, const char **names, int max)
{
    char name[16];
    int n = 0;
    for (int i = 0; i < bt_st_count(in->file); i++) {
        const char *t = bt_st_at(in->file, i)->name;
        bool known = !strcmp(t, "X") || !strcmp(t, "Y") || !strcmp(t, "xi");
        for (int p = 0; !known && p < in->model->n_params; p++)
            known = !strcmp(t, in->model->specs[p].name);
        for (int k = 0; !known && k < in->model->n_states; k++) {
            state_name(in->model, k, name, sizeof name);
            known = !strcmp(t, name);
        }
        if (!known && n < max)
            names[n] = t;
        n += !known;
    }
    return n;
}

/* ---- computing --------------------------------------------------------------------- */

void bt_grad_output_free(bt_grad_output *o)
{
    for (int k = 0; k < BT_MAX_STATES; k++)
        bt_free(o->dstate[k]);
    bt_free(o->xi_used);
    bt_free(o->dh_norms);
    memset(o, 0, sizeof *o);
}

/* The online path: the estimator bound to the model at B (asked for dL/ds_0),
 * the estimates summed over the steps with the parameters fixed. */
static bt_status grad_estimate(bt_grad_input *in, const bt_grad_options *opt, bt_grad_output *o,
                               char *err, size_t errlen)
{
    bt_model *m = in->model;
    int B = in->seq.B;
    if (m->dropout > 0)
        return bt_error(err, errlen, BT_ERR_ARG, "estimator %s runs without dropout: compute "
                        "a model with dropout under a truncation policy", opt->estimator);
    if (in->xi)
        return bt_error(err, errlen, BT_ERR_ARG, "P holds xi, truncation factors, which "
                        "estimator %s does not use: remove xi from P, or compute without the "
                        "estimator", opt->estimator);
    bt_estimator *e = NULL;
    bt_online *on = NULL;
    bt_status st = bt_estimator_new(opt->registry, opt->estimator, m, B, true, &e, err, errlen);
    if (st == BT_OK)
        st = bt_online_new(m, B, &on, err, errlen);
    for (int k = 0; st == BT_OK && bt_estimator_has_dstate0(e) && k < m->n_states; k++)
        if (!(o->dstate[k] = bt_calloc((size_t)B * (size_t)m->state_width[k], sizeof(bt_real))))
            st = bt_error(err, errlen, BT_ERR_NOMEM, "out of memory for B=%d", B);
    if (st == BT_OK) {
        bt_estimator_describe(e, o->estimator, sizeof o->estimator);
        bt_online_opts oo = {.estimator = e, .begin = true, .seed = opt->seed,
                             .accumulate = true};
        bt_unroll_result res;
        char why[BT_ERRMSG_LEN];
        /* The runner advances in->state in place to the final state. */
        st = bt_online_run(on, &in->seq, in->state, &oo, o->dstate, &res, why, sizeof why);
        if (st != BT_OK)
            bt_errorf(err, errlen, "cell %s with estimator %s: %s", m->cell->name, o->estimator,
                      why);
        o->loss = res.loss_terms ? res.loss_sum / (double)res.loss_terms : 0;
    }
    bt_online_free(on);
    bt_estimator_free(e);
    return st;
}

bt_status bt_grad_compute(bt_grad_input *in, const bt_grad_options *opt, bt_grad_output *o,
                          char *err, size_t errlen)
{
    bt_model *m = in->model;
    int B = in->seq.B, T = in->seq.T;
    memset(o, 0, sizeof *o);
    size_t budget;
    if (bt_unroll_budget_bytes(opt->memory_budget_mb, &budget, err, errlen) != BT_OK)
        return BT_ERR_ARG;
    if (opt->estimator) {
        bt_status st = grad_estimate(in, opt, o, err, errlen);
        if (st != BT_OK)
            bt_grad_output_free(o);
        return st;
    }
    o->xi_used = bt_calloc((size_t)T, sizeof(double));
    o->dh_norms = bt_calloc((size_t)T, sizeof(double));
    bool ok = o->xi_used && o->dh_norms;
    for (int k = 0; ok && k < m->n_states; k++)
        ok = (o->dstate[k] = bt_calloc((size_t)B * (size_t)m->state_width[k], sizeof(bt_real)));
    bt_unroller *u = NULL;
    bt_status st = ok ? bt_unroller_new(m, B, T, &u, err, errlen)
                      : bt_error(err, errlen, BT_ERR_NOMEM, "out of memory for B=%d T=%d", B, T);
    if (st != BT_OK) {
        bt_grad_output_free(o);
        return st;
    }
    bt_unroll_opts uo = {.policy = opt->policy, .policy_state = opt->policy_state,
                         .policy_seed = opt->seed, .xi = in->xi, .accumulate = true,
                         .want_dh0 = true, .want_dh_norms = true,
                         .checkpoint_every = opt->checkpoint_every,
                         .memory_budget = budget,
                         .dropout = true}; /* a stack's, masks from the seed */
    bt_unroll_result res;
    char why[BT_ERRMSG_LEN];
    bt_params_zero_grad(m->params);
    /* The unroller advances in->state in place to the final state. */
    st = bt_unroll_run(u, &in->seq, in->state, &uo, o->xi_used, o->dstate, o->dh_norms, &res, why,
                       sizeof why);
    bt_unroller_free(u);
    if (st != BT_OK) {
        bt_grad_output_free(o);
        return bt_error(err, errlen, st, "cell %s under %s: %s", m->cell->name,
                        opt->policy_desc ? opt->policy_desc : "the policy", why);
    }
    o->loss = res.loss_terms ? res.loss_sum / (double)res.loss_terms : 0;
    return BT_OK;
}

/* ---- writing --------------------------------------------------------------------------- */

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

/* loss, grad.<param>, grad.<state>, xi and grad_norm_h. */
static bt_status add_tensors(bt_st_file *f, const bt_grad_input *in, const bt_grad_output *o,
                             char *err, size_t errlen)
{
    char name[BT_NAME_LEN + 16], sn[16];
    const bt_model *m = in->model;
    bt_real loss = (bt_real)o->loss;
    bt_status st = bt_st_add_real(f, "loss", 0, (int64_t[]){1}, &loss, err, errlen);
    for (int i = 0; st == BT_OK && i < m->n_params; i++) {
        const bt_tensor *p = m->ptab[i];
        int64_t shape[BT_MAX_DIMS];
        for (int j = 0; j < p->ndim; j++)
            shape[j] = p->shape[j];
        snprintf(name, sizeof name, "grad.%s", m->specs[i].name);
        st = bt_st_add_real(f, name, p->ndim, shape, p->grad, err, errlen);
    }
    for (int k = 0; st == BT_OK && k < m->n_states && o->dstate[k]; k++) {
        state_name(m, k, sn, sizeof sn);
        snprintf(name, sizeof name, "grad.%s", sn);
        st = bt_st_add_real(f, name, 2, (int64_t[]){in->seq.B, m->state_width[k]}, o->dstate[k],
                            err, errlen);
    }
    if (st == BT_OK && o->xi_used)
        st = add_doubles(f, "xi", o->xi_used, in->seq.T, err, errlen);
    if (st == BT_OK && o->dh_norms)
        st = add_doubles(f, "grad_norm_h", o->dh_norms, in->seq.T, err, errlen);
    return st;
}

/* An estimator's G says which estimator (and no policy, no xi source). */
static bt_status add_metadata(bt_st_file *f, const bt_grad_input *in, const bt_grad_options *opt,
                              const bt_grad_output *o)
{
    const bt_model *m = in->model;
    bool est = o->estimator[0] != '\0';
    const char *meta[][2] = {
        {"format", BT_GRAD_FORMAT},
        {"cell", m->cell->name},
        {est ? "estimator" : "policy", est ? o->estimator : opt->policy_desc ? opt->policy_desc : ""},
        {est ? "grad_h0" : "xi_source", est ? (o->dstate[0] ? "computed" : "absent")
                                            : in->xi ? "given" : "policy"},
        {"loss", m->cell->loss == BT_LOSS_XENT ? "xent" : "mse"},
        {"bptt_version", bt_version()},
        {"precision", BT_REAL_DOUBLE ? "double" : "float"},
    };
    bt_status st = BT_OK;
    for (size_t i = 0; st == BT_OK && i < sizeof meta / sizeof *meta; i++)
        st = bt_st_set_meta(f, meta[i][0], meta[i][1]);
    char lt[256];
    if (st == BT_OK && m->n_layers) { /* a stack: what rebuilds it */
        st = bt_st_set_meta(f, "layers", bt_model_layers_text(m, lt, sizeof lt));
        snprintf(lt, sizeof lt, "%.17g", m->dropout);
        if (st == BT_OK && m->dropout > 0)
            st = bt_st_set_meta(f, "dropout", lt);
        if (st == BT_OK && m->dropout > 0)
            st = bt_st_set_meta(f, "variational", m->variational ? "1" : "0");
    }
    const char *ikeys[] = {"B", "T", "input_size", "hidden", "output_size", "seed"};
    long long ivals[] = {in->seq.B, in->seq.T, m->dims.input, m->dims.hidden, m->dims.output,
                         (long long)opt->seed};
    char num[64];
    for (size_t i = 0; st == BT_OK && i < sizeof ikeys / sizeof *ikeys; i++) {
        snprintf(num, sizeof num, "%lld", ivals[i]);
        st = bt_st_set_meta(f, ikeys[i], num);
    }
    return st;
}

bt_status bt_grad_output_write(const bt_grad_input *in, const bt_grad_options *opt,
                               const bt_grad_output *o, const char *path, char *err, size_t errlen)
{
    char why[1024] = "";
    bt_st_file *f = bt_st_new();
    if (!f)
        return bt_error(err, errlen, BT_ERR_NOMEM, "out of memory");
    bt_status st = add_tensors(f, in, o, why, sizeof why);
    if (st == BT_OK)
        st = add_metadata(f, in, opt, o);
    if (st == BT_OK)
        st = bt_st_write(f, path, why, sizeof why);
    bt_st_free(f);
    if (st != BT_OK)
        bt_errorf(err, errlen, "%s", why[0] ? why : bt_status_name(st));
    return st;
}
