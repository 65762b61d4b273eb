/* analyze.c: the measurements behind `bptt analyze` and the demo: gradient
 * norm against lag from the tape, Jacobian-product norms, eigenvalues of the
 * recurrent matrix, and power iteration on its symmetric part. Numbers only:
 * the table, JSON and SVG forms are the program's (tools/analysis_report.c).
 *
 * Dimension letters: B rows, T steps, H hidden (state width), K largest lag. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "analyze.h"

/* ---- probe data ------------------------------------------------------------ */

/* n token ids uniform in [0, limit), or NULL when out of memory. */
static int32_t *random_ids(bt_rng *rng, size_t n, int limit)
{
    int32_t *ids = bt_malloc(sizeof(int32_t) * (n ? n : 1));
    for (size_t i = 0; ids && i < n; i++)
        ids[i] = (int32_t)(bt_rng_next(rng) % (uint64_t)limit);
    return ids;
}

/* n values N(0, 1), or NULL when out of memory. */
static bt_real *random_normals(bt_rng *rng, size_t n)
{
    bt_real *x = bt_malloc(sizeof(bt_real) * (n ? n : 1));
    for (size_t i = 0; x && i < n; i++)
        x[i] = (bt_real)bt_rng_normal(rng);
    return x;
}

bt_status bt_probe_sequence_new(const bt_model *m, int B, int T, bt_rng *rng, bt_sequence *seq)
{
    memset(seq, 0, sizeof *seq);
    if (B <= 0 || T <= 0)
        return BT_ERR_ARG;
    size_t bt = (size_t)B * (size_t)T;
    int D = m->dims.input, Q = m->dims.output;
    seq->B = B;
    seq->T = T;
    bool ok;
    if (m->cell->input == BT_INPUT_TOKENS)
        ok = (seq->ids = random_ids(rng, bt, D)) != NULL;
    else
        ok = (seq->x = random_normals(rng, bt * (size_t)D)) != NULL;
    if (ok && m->cell->loss == BT_LOSS_XENT)
        ok = (seq->targets = random_ids(rng, bt, Q)) != NULL;
    else if (ok)
        ok = (seq->y = random_normals(rng, bt * (size_t)Q)) != NULL;
    if (!ok) {
        bt_probe_sequence_free(seq);
        return BT_ERR_NOMEM;
    }
    return BT_OK;
}

bt_status bt_probe_sequence_from_ids(const int32_t *ids, long n, int B, int T, bt_sequence *seq,
                                     char *err, size_t errlen)
{
    memset(seq, 0, sizeof *seq);
    if (B <= 0 || T <= 0 || n < (long)B * (T + 1))
        return bt_error(err, errlen, BT_ERR_ARG, "%ld tokens; %d rows of %d steps need %ld", n, B,
                        T, (long)B * (T + 1));
    int32_t *x = bt_malloc(sizeof(int32_t) * (size_t)B * T);
    int32_t *y = bt_malloc(sizeof(int32_t) * (size_t)B * T);
    if (!x || !y) {
        bt_free(x);
        bt_free(y);
        return bt_error(err, errlen, BT_ERR_NOMEM, "out of memory for %d x %d steps", B, T);
    }
    long stride = n / B;
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            x[b * T + t] = ids[b * stride + t];
            y[b * T + t] = ids[b * stride + t + 1];
        }
    *seq = (bt_sequence){.B = B, .T = T, .ids = x, .targets = y};
    return BT_OK;
}

void bt_probe_sequence_free(bt_sequence *seq)
{
    bt_free((void *)seq->ids);
    bt_free((void *)seq->targets);
    bt_free((void *)seq->x);
    bt_free((void *)seq->y);
    bt_free((void *)seq->loss_weight);
    memset(seq, 0, sizeof *seq);
}

/* The first L columns of seq, with a loss on the last step only. */
static bt_status last_loss_columns(const bt_model *m, const bt_sequence *seq, int L,
                                   bt_sequence *out)
{
    memset(out, 0, sizeof *out);
    int B = seq->B, T = seq->T, D = m->dims.input, Q = m->dims.output;
    out->B = B;
    out->T = L;
    size_t bl = (size_t)B * (size_t)L;
    int32_t *ids = seq->ids ? bt_malloc(sizeof(int32_t) * bl) : NULL;
    int32_t *tg = seq->targets ? bt_malloc(sizeof(int32_t) * bl) : NULL;
    bt_real *x = seq->x ? bt_malloc(sizeof(bt_real) * bl * (size_t)D) : NULL;
    bt_real *y = seq->y ? bt_malloc(sizeof(bt_real) * bl * (size_t)Q) : NULL;
    bt_real *w = bt_calloc((size_t)L, sizeof(bt_real));
    out->ids = ids;
    out->targets = tg;
    out->x = x;
    out->y = y;
    out->loss_weight = w;
    if ((seq->ids && !ids) || (seq->targets && !tg) || (seq->x && !x) || (seq->y && !y) || !w) {
        bt_probe_sequence_free(out);
        return BT_ERR_NOMEM;
    }
    for (int b = 0; b < B; b++) {
        size_t src = (size_t)b * T, dst = (size_t)b * L;
        if (ids)
            memcpy(ids + dst, seq->ids + src, sizeof(int32_t) * L);
        if (tg)
            memcpy(tg + dst, seq->targets + src, sizeof(int32_t) * L);
        if (x)
            memcpy(x + dst * D, seq->x + src * D, sizeof(bt_real) * (size_t)L * D);
        if (y)
            memcpy(y + dst * Q, seq->y + src * Q, sizeof(bt_real) * (size_t)L * Q);
    }
    w[L - 1] = 1;
    return BT_OK;
}

/* A copy of h0 (or zeros) the unroller may overwrite. */
static bt_real *state_copy(const bt_model *m, int B, bt_real *const *h0, bt_real **ptrs)
{
    size_t len = 0;
    for (int k = 0; k < m->n_states; k++)
        len += (size_t)B * (size_t)m->state_width[k];
    bt_real *buf = bt_calloc(len, sizeof(bt_real));
    if (!buf)
        return NULL;
    bt_real *p = buf;
    for (int k = 0; k < m->n_states; k++) {
        size_t n = (size_t)B * (size_t)m->state_width[k];
        if (h0 && h0[k])
            memcpy(p, h0[k], sizeof(bt_real) * n);
        ptrs[k] = p;
        p += n;
    }
    return buf;
}

/* ---- gradient norm against lag ------------------------------------------------ */

bt_status bt_grad_vs_lag(bt_model *m, const bt_sequence *seq, bt_real *const *h0, int K,
                         double *norm, char *err, size_t errlen)
{
    int L = K + 1;
    if (K < 0 || seq->T < L) {
        snprintf(err, errlen, "analyze: %d lags need %d steps; the sequence has %d", K, L, seq->T);
        return BT_ERR_ARG;
    }
    bt_sequence sub;
    bt_real *sp[BT_MAX_STATES];
    bt_unroller *u = NULL;
    double *xi = bt_malloc(sizeof(double) * (size_t)L), *dh = bt_malloc(sizeof(double) * (size_t)L);
    bt_real *sbuf = state_copy(m, seq->B, h0, sp);
    bt_status st = last_loss_columns(m, seq, L, &sub);
    if (!xi || !dh || !sbuf || st != BT_OK) {
        snprintf(err, errlen, "analyze: out of memory");
        st = BT_ERR_NOMEM;
        goto done;
    }
    if ((st = bt_unroller_new(m, seq->B, L, &u, err, errlen)) != BT_OK)
        goto done;
    for (int t = 0; t < L; t++)
        xi[t] = 1; /* full BPTT: no cut anywhere */
    bt_unroll_opts opts = {.xi = xi, .accumulate = true, .want_dh_norms = true};
    bt_unroll_result res;
    bt_params_zero_grad(m->params);
    st = bt_unroll_run(u, &sub, sp, &opts, NULL, NULL, dh, &res, err, errlen);
    bt_params_zero_grad(m->params);
    if (st == BT_OK)
        for (int k = 0; k <= K; k++)
            norm[k] = dh[K - k]; /* dh[s]: the state after step s; the loss is at step K */
done:
    bt_unroller_free(u);
    bt_probe_sequence_free(&sub);
    bt_free(xi);
    bt_free(dh);
    bt_free(sbuf);
    return st;
}

/* ||dh_K/dh_{K-k}||_2 for batch row 0, k = 0..K: one backward sweep per
 * component of h_K gives one row of every Jacobian product at once. */
static bt_status jacobian_norms(bt_model *m, const bt_sequence *seq, bt_real *const *h0, int K,
                                double *out, char *err, size_t errlen)
{
    int B = seq->B, H = m->state_width[0], L = K + 1;
    size_t HH = (size_t)H * H;
    bt_graph *g = bt_graph_new();
    bt_tensor **hs = bt_malloc(sizeof(bt_tensor *) * (size_t)L);
    double *J = bt_calloc((size_t)L * HH, sizeof(double));
    double *S = bt_malloc(sizeof(double) * HH * 2), *w = bt_malloc(sizeof(double) * (size_t)H);
    bt_real *dout = bt_calloc((size_t)B * H, sizeof(bt_real));
    bt_real *sp[BT_MAX_STATES];
    bt_real *sbuf = state_copy(m, B, h0, sp);
    bt_status st = BT_OK;
    if (!g || !hs || !J || !S || !w || !dout || !sbuf) {
        snprintf(err, errlen, "analyze: out of memory for %d Jacobians of %d x %d", L, H, H);
        st = BT_ERR_NOMEM;
        goto done;
    }
    bt_tensor *state[BT_MAX_STATES], *next[BT_MAX_STATES];
    for (int k = 0; k < m->n_states; k++) {
        state[k] = bt_graph_input(g, 2, (int[]){B, m->state_width[k]}, sp[k]);
        if (state[k])
            state[k]->requires_grad = true; /* so every step records, whatever the cell */
    }
    for (int s = 0; s < L; s++) {
        if (!bt_unroll_step(g, m, seq, s, state, next))
            break;
        hs[s] = next[0];
        hs[s]->retain_grad = true; /* fused ops may reuse an output's gradient in place */
        memcpy(state, next, sizeof(bt_tensor *) * (size_t)m->n_states);
    }
    if ((st = bt_graph_status(g)) != BT_OK) {
        snprintf(err, errlen, "cell %s: %s", m->cell->name, bt_graph_error(g));
        goto done;
    }
    for (int i = 0; i < H; i++) {
        dout[i] = 1; /* d h_K[row 0, i] */
        if ((st = bt_backward_from(g, hs[K], dout)) != BT_OK) {
            snprintf(err, errlen, "analyze: backward: %s", bt_graph_error(g));
            goto done;
        }
        dout[i] = 0;
        for (int k = 0; k <= K; k++) {
            const bt_tensor *t = hs[K - k];
            for (int j = 0; t->grad && j < H; j++)
                J[(size_t)k * HH + (size_t)i * H + j] = (double)t->grad[j];
        }
    }
    /* ||J||_2 = sqrt of the largest eigenvalue of J^T J. */
    for (int k = 0; k <= K; k++) {
        const double *Jk = J + (size_t)k * HH;
        for (int a = 0; a < H; a++)
            for (int b = a; b < H; b++) {
                double s = 0;
                for (int r = 0; r < H; r++)
                    s += Jk[(size_t)r * H + a] * Jk[(size_t)r * H + b];
                S[(size_t)a * H + b] = S[(size_t)b * H + a] = s;
            }
        if ((st = bt_sym_eigen(S, H, w, S + HH)) != BT_OK) {
            snprintf(err, errlen, "analyze: eigenvalues of J^T J failed");
            goto done;
        }
        out[k] = sqrt(w[H - 1] > 0 ? w[H - 1] : 0);
    }
done:
    if (m->params)
        bt_params_zero_grad(m->params);
    bt_graph_free(g);
    bt_free(hs);
    bt_free(J);
    bt_free(S);
    bt_free(w);
    bt_free(dout);
    bt_free(sbuf);
    return st;
}

bt_status bt_geometric_fit(const double *y, int n, double *scale, double *rate)
{
    double sx = 0, sy = 0, sxx = 0, sxy = 0;
    int c = 0;
    for (int k = 0; k < n; k++)
        if (isfinite(y[k]) && y[k] > 0) {
            double l = log(y[k]);
            sx += k;
            sy += l;
            sxx += (double)k * k;
            sxy += k * l;
            c++;
        }
    double den = c * sxx - sx * sx;
    if (c < 2 || den == 0) {
        *scale = *rate = NAN;
        return BT_ERR_NUMERIC;
    }
    double slope = (c * sxy - sx * sy) / den;
    *rate = exp(slope);
    *scale = exp((sy - slope * sx) / c);
    return BT_OK;
}

double bt_geometric_rate(const double *y, int n)
{
    double scale, rate;
    bt_geometric_fit(y, n, &scale, &rate);
    return rate;
}

/* ---- symmetric eigenproblems and power iteration ------------------------------- */

#if BT_HAVE_LAPACK
extern void dsyev_(const char *jobz, const char *uplo, const int *n, double *a, const int *lda,
                   double *w, double *work, const int *lwork, int *info);

bt_status bt_sym_eigen(const double *M, int n, double *w, double *V)
{
    if (n <= 0)
        return BT_ERR_ARG;
    size_t nn = (size_t)n * n;
    /* Symmetric: column-major is the same matrix. On return column j of A is
     * eigenvector j, i.e. A[i + j n] = component i, which is V[i n + j] transposed. */
    double *A = bt_malloc(sizeof(double) * nn), wq;
    if (!A)
        return BT_ERR_NOMEM;
    memcpy(A, M, sizeof(double) * nn);
    int info = 0, lwork = -1;
    dsyev_("V", "U", &n, A, &n, w, &wq, &lwork, &info);
    lwork = (int)wq;
    double *work = bt_malloc(sizeof(double) * (size_t)(lwork > 1 ? lwork : 1));
    if (!work) {
        bt_free(A);
        return BT_ERR_NOMEM;
    }
    dsyev_("V", "U", &n, A, &n, w, work, &lwork, &info);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++)
            V[(size_t)i * n + j] = A[(size_t)j * n + i];
    bt_free(work);
    bt_free(A);
    return info == 0 ? BT_OK : BT_ERR_NUMERIC;
}
#else
/* One Jacobi rotation G(p, q) that zeroes A[p][q]: A = G^T A G, V = V G. */
static void jacobi_rotate(double *A, double *V, int n, int p, int q)
{
    double apq = A[(size_t)p * n + q];
    if (apq == 0)
        return;
    double th = (A[(size_t)q * n + q] - A[(size_t)p * n + p]) / (2 * apq);
    double t = (th >= 0 ? 1 : -1) / (fabs(th) + sqrt(th * th + 1));
    double c = 1 / sqrt(t * t + 1), s = t * c;
    for (int k = 0; k < n; k++) { /* A = A G */
        double akp = A[(size_t)k * n + p], akq = A[(size_t)k * n + q];
        A[(size_t)k * n + p] = c * akp - s * akq;
        A[(size_t)k * n + q] = s * akp + c * akq;
    }
    for (int k = 0; k < n; k++) { /* A = G^T A */
        double apk = A[(size_t)p * n + k], aqk = A[(size_t)q * n + k];
        A[(size_t)p * n + k] = c * apk - s * aqk;
        A[(size_t)q * n + k] = s * apk + c * aqk;
    }
    for (int k = 0; k < n; k++) { /* V = V G */
        double vkp = V[(size_t)k * n + p], vkq = V[(size_t)k * n + q];
        V[(size_t)k * n + p] = c * vkp - s * vkq;
        V[(size_t)k * n + q] = s * vkp + c * vkq;
    }
}

/* Ascending, like dsyev: a selection sort that swaps V's columns too. */
static void sort_ascending(double *w, double *V, int n)
{
    for (int i = 0; i < n; i++) {
        int best = i;
        for (int j = i + 1; j < n; j++)
            if (w[j] < w[best])
                best = j;
        if (best == i)
            continue;
        double t = w[i];
        w[i] = w[best];
        w[best] = t;
        for (int k = 0; k < n; k++) {
            t = V[(size_t)k * n + i];
            V[(size_t)k * n + i] = V[(size_t)k * n + best];
            V[(size_t)k * n + best] = t;
        }
    }
}

/* Without LAPACK: cyclic Jacobi, rotating away each off-diagonal element until none is left. */
bt_status bt_sym_eigen(const double *M, int n, double *w, double *V)
{
    if (n <= 0)
        return BT_ERR_ARG;
    size_t nn = (size_t)n * n;
    double *A = bt_malloc(sizeof(double) * nn);
    if (!A)
        return BT_ERR_NOMEM;
    memcpy(A, M, sizeof(double) * nn);
    for (size_t i = 0; i < nn; i++)
        V[i] = i % (size_t)(n + 1) == 0;
    for (int sweep = 0; sweep < 100; sweep++) {
        double off = 0;
        for (int p = 0; p < n; p++)
            for (int q = p + 1; q < n; q++)
                off += A[(size_t)p * n + q] * A[(size_t)p * n + q];
        if (off < 1e-30)
            break;
        for (int p = 0; p < n; p++)
            for (int q = p + 1; q < n; q++)
                jacobi_rotate(A, V, n, p, q);
    }
    for (int i = 0; i < n; i++)
        w[i] = A[(size_t)i * n + i];
    sort_ascending(w, V, n);
    bt_free(A);
    return BT_OK;
}
#endif

/* Indices of the eigenvalues of largest and second largest modulus. */
static void top_two(const double *w, int n, int *i1, int *i2)
{
    *i1 = 0;
    for (int i = 1; i < n; i++)
        if (fabs(w[i]) > fabs(w[*i1]))
            *i1 = i;
    *i2 = -1;
    for (int i = 0; i < n; i++)
        if (i != *i1 && (*i2 < 0 || fabs(w[i]) > fabs(w[*i2])))
            *i2 = i;
}

bt_status bt_power_angles(const double *M, int n, int K, const double *x0, uint64_t seed,
                          double *tan_angle, double *pred, double *l1, double *l2)
{
    if (n <= 0 || K < 0)
        return BT_ERR_ARG;
    size_t nn = (size_t)n * n;
    double *w = bt_malloc(sizeof(double) * (size_t)n), *V = bt_malloc(sizeof(double) * nn);
    double *x = bt_malloc(sizeof(double) * (size_t)n * 2);
    if (!w || !V || !x) {
        bt_free(w);
        bt_free(V);
        bt_free(x);
        return BT_ERR_NOMEM;
    }
    bt_status st = bt_sym_eigen(M, n, w, V);
    if (st == BT_OK) {
        int i1, i2;
        top_two(w, n, &i1, &i2);
        double lam1 = w[i1], lam2 = i2 >= 0 ? w[i2] : 0;
        if (l1)
            *l1 = lam1;
        if (l2)
            *l2 = lam2;
        bt_rng r;
        bt_rng_seed(&r, seed);
        for (int i = 0; i < n; i++)
            x[i] = x0 ? x0[i] : bt_rng_normal(&r);
        double q = lam1 != 0 ? fabs(lam2 / lam1) : NAN;
        for (int k = 0; k <= K; k++) {
            /* tan = ||x - (x.v1) v1|| / |x.v1|: the residual is computed as a
             * vector, so small angles do not drown in cancellation. */
            double c1 = 0, r2 = 0, nx = 0;
            for (int i = 0; i < n; i++)
                c1 += x[i] * V[(size_t)i * n + i1];
            for (int i = 0; i < n; i++) {
                double e = x[i] - c1 * V[(size_t)i * n + i1];
                r2 += e * e;
            }
            tan_angle[k] = c1 != 0 ? sqrt(r2) / fabs(c1) : INFINITY;
            if (pred)
                pred[k] = tan_angle[0] * pow(q, k);
            /* x = M x / ||M x||: only the direction matters. */
            for (int i = 0; i < n; i++) {
                double s = 0;
                for (int j = 0; j < n; j++)
                    s += M[(size_t)i * n + j] * x[j];
                x[n + i] = s;
                nx += s * s;
            }
            nx = sqrt(nx);
            for (int i = 0; i < n; i++)
                x[i] = nx > 0 ? x[n + i] / nx : 0;
        }
    }
    bt_free(w);
    bt_free(V);
    bt_free(x);
    return st;
}

/* ---- the whole analysis ----------------------------------------------------------- */

void bt_analysis_free(bt_analysis *a)
{
    if (!a)
        return;
    bt_free(a->grad_norm);
    bt_free(a->jac_norm);
    bt_free(a->eig_re);
    bt_free(a->eig_im);
    bt_free(a->power_tan);
    bt_free(a->power_pred);
    memset(a, 0, sizeof *a);
}

bt_status bt_analysis_run(bt_model *m, const bt_sequence *seq, bt_real *const *h0, int K,
                          int power_K, uint64_t seed, bt_analysis *a, char *err, size_t errlen)
{
    memset(a, 0, sizeof *a);
    a->K = K;
    a->H = m->state_width[0];
    a->grad_norm = bt_calloc((size_t)K + 1, sizeof(double));
    a->jac_norm = bt_calloc((size_t)K + 1, sizeof(double));
    if (!a->grad_norm || !a->jac_norm) {
        bt_analysis_free(a);
        return BT_ERR_NOMEM;
    }
    bt_status st = bt_grad_vs_lag(m, seq, h0, K, a->grad_norm, err, errlen);
    if (st == BT_OK)
        st = jacobian_norms(m, seq, h0, K, a->jac_norm, err, errlen);
    if (st != BT_OK) {
        bt_analysis_free(a);
        return st;
    }
    bt_geometric_fit(a->grad_norm, K + 1, &a->grad_scale, &a->grad_rate);
    a->jac_rate = bt_geometric_rate(a->jac_norm, K + 1);

    const bt_tensor *W = NULL;
    for (int i = 0; i < m->n_params && !W; i++)
        if (m->specs[i].recurrent && m->ptab[i]->ndim == 2 &&
            m->ptab[i]->shape[0] == m->ptab[i]->shape[1]) {
            W = m->ptab[i];
            snprintf(a->matrix, sizeof a->matrix, "%s", m->specs[i].name);
        }
    if (!W)
        return BT_OK; /* e.g. influence: no recurrent matrix to look at */
    int n = a->n = W->shape[0];
    a->eig_re = bt_malloc(sizeof(double) * (size_t)n);
    a->eig_im = bt_malloc(sizeof(double) * (size_t)n);
    double *M = bt_malloc(sizeof(double) * (size_t)n * n);
    double *w = bt_malloc(sizeof(double) * (size_t)n);
    double *V = bt_malloc(sizeof(double) * (size_t)n * n);
    if (!a->eig_re || !a->eig_im || !M || !w || !V) {
        st = BT_ERR_NOMEM;
        goto done;
    }
    if ((st = bt_eigenvalues(W->data, n, a->eig_re, a->eig_im, &a->radius)) != BT_OK) {
        snprintf(err, errlen, "analyze: eigenvalues of %s failed", a->matrix);
        goto done;
    }
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++)
            M[(size_t)i * n + j] = 0.5 * ((double)W->data[(size_t)i * n + j] +
                                          (double)W->data[(size_t)j * n + i]);
    if ((st = bt_sym_eigen(M, n, w, V)) != BT_OK)
        goto done;
    if (power_K <= 0) {
        /* Long enough for |l2/l1|^k to fall to 1e-12, within 10..200 steps. */
        int i1, i2;
        top_two(w, n, &i1, &i2);
        double q = i2 >= 0 && w[i1] != 0 ? fabs(w[i2] / w[i1]) : 0;
        power_K = q > 0 && q < 1 ? (int)ceil(log(1e-12) / log(q)) : 50;
        power_K = power_K < 10 ? 10 : power_K > 200 ? 200 : power_K;
    }
    a->power_K = power_K;
    a->power_tan = bt_malloc(sizeof(double) * ((size_t)power_K + 1));
    a->power_pred = bt_malloc(sizeof(double) * ((size_t)power_K + 1));
    if (!a->power_tan || !a->power_pred) {
        st = BT_ERR_NOMEM;
        goto done;
    }
    st = bt_power_angles(M, n, power_K, NULL, seed, a->power_tan, a->power_pred, &a->lambda1,
                         &a->lambda2);
done:
    bt_free(M);
    bt_free(w);
    bt_free(V);
    if (st != BT_OK) {
        if (st == BT_ERR_NOMEM)
            snprintf(err, errlen, "analyze: out of memory");
        bt_analysis_free(a);
    }
    return st;
}
