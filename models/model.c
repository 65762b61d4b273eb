/* model.c: a cell bound to one parameter block, and the initialisations a
 * user compares (normal, orthogonal, identity, spectral radius). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "options.h"

bt_status bt_model_new(const bt_cell_def *cell, bt_cell_dims dims, bt_model **out, char *err,
                       size_t errlen)
{
    *out = NULL;
    if (!cell)
        return bt_error(err, errlen, BT_ERR_ARG, "bt_model_new: no cell (is its plugin loaded?)");
    if (dims.input <= 0 || dims.hidden <= 0 || dims.output <= 0) {
        snprintf(err, errlen, "cell %s: sizes must be positive (input %d, hidden %d, output %d)",
                 cell->name, dims.input, dims.hidden, dims.output);
        return BT_ERR_ARG;
    }
    bt_model *m = bt_calloc(1, sizeof *m);
    if (!m)
        return BT_ERR_NOMEM;
    m->cell = cell;
    m->dims = dims;
    bt_status st = bt_model_declare(m, err, errlen); /* the cell's word is checked first */
    if (st != BT_OK) {
        bt_free(m);
        return st;
    }
    m->params = bt_params_new();
    if (!m->params) {
        snprintf(err, errlen, "out of memory for the parameters of cell %s", cell->name);
        bt_model_free(m);
        return BT_ERR_NOMEM;
    }
    for (int i = 0; i < m->n_params; i++)
        m->ptab[i] = bt_params_add(m->params, m->specs[i].name, m->specs[i].ndim,
                                   m->specs[i].shape);
    st = bt_params_finalize(m->params);
    if (st != BT_OK) { /* a duplicate name or bad shape is the cell's fault */
        snprintf(err, errlen, "cell %s: %s", cell->name, bt_params_error(m->params));
        bt_model_free(m);
        return st == BT_ERR_NOMEM ? BT_ERR_NOMEM : BT_ERR_PLUGIN;
    }
    *out = m;
    return BT_OK;
}

void bt_model_free(bt_model *m)
{
    if (!m)
        return;
    bt_params_free(m->params);
    bt_free(m);
}

/* Rows of a [R,C] matrix made orthonormal (or its columns when R > C), from a
 * Gaussian draw by modified Gram-Schmidt, times gain. */
static void init_orthogonal(bt_real *w, int rows, int cols, double gain, bt_rng *rng)
{
    bool by_rows = rows <= cols;
    int nvec = by_rows ? rows : cols, len = by_rows ? cols : rows;
    double *v = bt_malloc(sizeof(double) * (size_t)nvec * (size_t)len);
    if (!v)
        return;
    for (int i = 0; i < nvec * len; i++)
        v[i] = bt_rng_normal(rng);
    for (int i = 0; i < nvec; i++) {
        double *vi = v + (size_t)i * len;
        for (int j = 0; j < i; j++) {
            const double *vj = v + (size_t)j * len;
            double d = 0;
            for (int k = 0; k < len; k++)
                d += vi[k] * vj[k];
            for (int k = 0; k < len; k++)
                vi[k] -= d * vj[k];
        }
        double n = 0;
        for (int k = 0; k < len; k++)
            n += vi[k] * vi[k];
        n = sqrt(n);
        for (int k = 0; k < len; k++)
            vi[k] /= n > 0 ? n : 1;
    }
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++)
            w[(size_t)r * cols + c] =
                (bt_real)(gain * (by_rows ? v[(size_t)r * len + c] : v[(size_t)c * len + r]));
    bt_free(v);
}

static void init_tensor(bt_tensor *t, bt_init_kind kind, double scale, bt_rng *rng)
{
    int rows = t->ndim >= 2 ? t->shape[0] : 1;
    int cols = (int)(t->size / (size_t)rows);
    switch (kind) {
    case BT_INIT_ZERO:
        memset(t->data, 0, t->size * sizeof(bt_real));
        break;
    case BT_INIT_NORMAL:
        for (size_t i = 0; i < t->size; i++)
            t->data[i] = (bt_real)(scale * bt_rng_normal(rng));
        break;
    case BT_INIT_UNIFORM:
        for (size_t i = 0; i < t->size; i++)
            t->data[i] = (bt_real)(scale * (2 * bt_rng_uniform(rng) - 1));
        break;
    case BT_INIT_ORTHOGONAL:
        init_orthogonal(t->data, rows, cols, scale, rng);
        break;
    case BT_INIT_IDENTITY: /* scale * I in every square block of [R, k R] */
        memset(t->data, 0, t->size * sizeof(bt_real));
        for (int r = 0; r < rows; r++)
            for (int c = r % cols; c < cols; c += rows)
                t->data[(size_t)r * cols + c] = (bt_real)scale;
        break;
    case BT_INIT_CONSTANT:
        for (size_t i = 0; i < t->size; i++)
            t->data[i] = (bt_real)scale;
        break;
    }
}

typedef struct init_spec {
    enum { SPEC_DEFAULT, SPEC_NORMAL, SPEC_ORTHOGONAL, SPEC_IDENTITY, SPEC_SPECTRAL } kind;
    double value;
} init_spec;

static bt_status parse_init(const char *spec, init_spec *out, char *err, size_t errlen)
{
    out->kind = SPEC_DEFAULT;
    out->value = 1;
    if (!spec || !*spec)
        return BT_OK;
    char name[32];
    const char *opts;
    bt_split_spec(spec, name, sizeof name, &opts);
    bt_option o = {.name = "value", .value = &out->value, .min = 0, .max = 1e6, .positional = true};
    if (strcmp(name, "normal") == 0) {
        out->kind = SPEC_NORMAL;
        o.name = "sigma";
        out->value = 0.01;
    } else if (strcmp(name, "orthogonal") == 0) {
        out->kind = SPEC_ORTHOGONAL;
        o.name = "gain";
    } else if (strcmp(name, "identity") == 0) {
        out->kind = SPEC_IDENTITY;
        o.name = "scale";
    } else if (strcmp(name, "spectral") == 0) {
        out->kind = SPEC_SPECTRAL;
        o.name = "rho";
        o.required = true;
    } else {
        snprintf(err, errlen,
                 "unknown --init '%s': use normal:SIGMA, orthogonal, identity[:SCALE] or "
                 "spectral:RHO",
                 spec);
        return BT_ERR_ARG;
    }
    if (bt_parse_options(opts, &o, 1, "--init", err, errlen) != BT_OK)
        return BT_ERR_ARG;
    return BT_OK;
}

bt_status bt_init_spec_check(const char *spec, char *err, size_t errlen)
{
    init_spec s;
    return parse_init(spec, &s, err, errlen);
}

/* Whether spec sets parameter i of m (rather than leaving the cell's own
 * initialisation): normal the normally drawn weights and the recurrent
 * matrices, orthogonal and identity the recurrent matrices, spectral the
 * square ones among them. */
static bool spec_sets(const init_spec *s, const bt_model *m, int i)
{
    const bt_param_spec *ps = &m->specs[i];
    const bt_tensor *t = m->ptab[i];
    switch (s->kind) {
    case SPEC_NORMAL: return ps->init == BT_INIT_NORMAL || ps->recurrent;
    case SPEC_ORTHOGONAL:
    case SPEC_IDENTITY: return ps->recurrent;
    case SPEC_SPECTRAL: return ps->recurrent && t->ndim == 2 && t->shape[0] == t->shape[1];
    default: return false;
    }
}

int bt_init_count(const bt_model *m, const char *spec)
{
    init_spec s;
    char err[256];
    if (parse_init(spec, &s, err, sizeof err) != BT_OK)
        return -1;
    int n = 0;
    for (int i = 0; i < m->n_params; i++)
        n += spec_sets(&s, m, i);
    return n;
}

/* A spec that would set nothing on a cell that has recurrent matrices (a
 * spectral radius for non-square ones) is refused, naming the cell and its
 * first recurrent matrix; a cell without any (influence) keeps its own. */
static bt_status check_applies(const bt_model *m, const init_spec *s, const char *spec, char *err,
                               size_t errlen)
{
    int rec = -1, n = 0;
    for (int i = 0; i < m->n_params; i++) {
        n += spec_sets(s, m, i);
        if (rec < 0 && m->specs[i].recurrent)
            rec = i;
    }
    if (s->kind == SPEC_DEFAULT || n > 0 || rec < 0)
        return BT_OK;
    const bt_tensor *t = m->ptab[rec];
    char shape[64] = "";
    for (int d = 0; d < t->ndim; d++)
        snprintf(shape + strlen(shape), sizeof shape - strlen(shape), "%s%d", d ? "," : "",
                 t->shape[d]);
    return bt_error(err, errlen, BT_ERR_ARG,
                    "--init %s: cell %s has no square recurrent matrix to give a spectral radius "
                    "(%s is [%s]); use orthogonal, identity[:SCALE] or normal:SIGMA",
                    spec, m->cell->name, m->specs[rec].name, shape);
}

bt_status bt_model_init(bt_model *m, const char *spec, bt_rng *rng, char *err, size_t errlen)
{
    init_spec s;
    bt_status st = parse_init(spec, &s, err, errlen);
    if (st != BT_OK || (st = check_applies(m, &s, spec, err, errlen)) != BT_OK)
        return st;
    for (int i = 0; i < m->n_params; i++) {
        const bt_param_spec *ps = &m->specs[i];
        bt_tensor *t = m->ptab[i];
        bt_init_kind kind = ps->init;
        double scale = ps->scale;
        bool set = spec_sets(&s, m, i);
        if (set && s.kind == SPEC_NORMAL)
            kind = BT_INIT_NORMAL;
        else if (set && s.kind == SPEC_ORTHOGONAL)
            kind = BT_INIT_ORTHOGONAL;
        else if (set && s.kind == SPEC_IDENTITY)
            kind = BT_INIT_IDENTITY;
        if (set && s.kind != SPEC_SPECTRAL)
            scale = s.value;
        init_tensor(t, kind, scale, rng);
        if (!set || s.kind != SPEC_SPECTRAL)
            continue;
        /* The cell's draw, rescaled to spectral radius RHO. */
        double radius;
        if ((st = bt_eigenvalues(t->data, t->shape[0], NULL, NULL, &radius)) != BT_OK) {
            snprintf(err, errlen, "--init spectral: eigenvalues of %s failed", ps->name);
            return st;
        }
        if (radius > 0)
            for (size_t k = 0; k < t->size; k++)
                t->data[k] = (bt_real)(t->data[k] * (s.value / radius));
    }
    return BT_OK;
}

#if BT_HAVE_LAPACK
extern void dgeev_(const char *jobvl, const char *jobvr, const int *n, double *a, const int *lda,
                   double *wr, double *wi, double *vl, const int *ldvl, double *vr,
                   const int *ldvr, double *work, const int *lwork, int *info);
#endif

typedef struct eig { double re, im; } eig;

static int by_modulus_desc(const void *a, const void *b)
{
    const eig *x = a, *y = b;
    double mx = hypot(x->re, x->im), my = hypot(y->re, y->im);
    return (mx < my) - (mx > my);
}

bt_status bt_eigenvalues(const bt_real *a, int n, double *re, double *im, double *radius)
{
    if (n <= 0)
        return BT_ERR_ARG;
    double *buf = bt_malloc(sizeof(double) * ((size_t)n * n + 2 * (size_t)n));
    eig *e = bt_malloc(sizeof(eig) * (size_t)n);
    if (!buf || !e) {
        bt_free(buf);
        bt_free(e);
        return BT_ERR_NOMEM;
    }
    double *m = buf, *wr = buf + (size_t)n * n, *wi = wr + n;
    /* dgeev reads column-major: it sees A^T, whose eigenvalues are A's. */
    for (size_t i = 0; i < (size_t)n * n; i++)
        m[i] = (double)a[i];
    bt_status st = BT_OK;
#if BT_HAVE_LAPACK
    int info = 0, lwork = -1, one = 1;
    double wq;
    dgeev_("N", "N", &n, m, &n, wr, wi, NULL, &one, NULL, &one, &wq, &lwork, &info);
    lwork = (int)wq;
    double *work = bt_malloc(sizeof(double) * (size_t)(lwork > 1 ? lwork : 1));
    if (!work)
        st = BT_ERR_NOMEM;
    else {
        dgeev_("N", "N", &n, m, &n, wr, wi, NULL, &one, NULL, &one, work, &lwork, &info);
        if (info != 0)
            st = BT_ERR_NUMERIC;
        bt_free(work);
    }
#else
    /* Without LAPACK: only the radius, by power iteration on A^T A is not the
     * spectral radius, so iterate A itself and report the growth rate. */
    double *x = bt_calloc((size_t)n * 2, sizeof(double));
    if (!x)
        st = BT_ERR_NOMEM;
    else {
        for (int i = 0; i < n; i++)
            x[i] = 1.0 / sqrt((double)n) * (1 + 0.01 * i);
        double rate = 0;
        for (int it = 0; it < 2000; it++) {
            double nn = 0;
            for (int i = 0; i < n; i++) {
                double s = 0;
                for (int j = 0; j < n; j++)
                    s += (double)a[(size_t)i * n + j] * x[j];
                x[n + i] = s;
                nn += s * s;
            }
            nn = sqrt(nn);
            rate = nn;
            for (int i = 0; i < n; i++)
                x[i] = nn > 0 ? x[n + i] / nn : 0;
        }
        for (int i = 0; i < n; i++)
            wr[i] = wi[i] = 0;
        wr[0] = rate;
        bt_free(x);
    }
#endif
    if (st == BT_OK) {
        for (int i = 0; i < n; i++)
            e[i] = (eig){wr[i], wi[i]};
        qsort(e, (size_t)n, sizeof *e, by_modulus_desc);
        for (int i = 0; i < n; i++) {
            if (re)
                re[i] = e[i].re;
            if (im)
                im[i] = e[i].im;
        }
        if (radius)
            *radius = hypot(e[0].re, e[0].im);
    }
    bt_free(buf);
    bt_free(e);
    return st;
}
