/* grad_reference.c: writes the committed fixtures of tests/fixtures/ that
 * `bptt grad` is compared with. The gradients are computed here by explicit
 * loops in double precision from the textbook BPTT recursions, with no bptt
 * op, graph or unroller: an independent reference (numpy is not assumed).
 * The library is used only to write safetensors files.
 *
 *   grad_reference OUTDIR      (regenerate: run from a build, commit the files)
 *
 * A truncation is a factor xi_t on the edge h_{t-1} -> h_t in the backward
 * pass only: dL/dh_{t-1} receives xi_t times what flows back through step t
 * (0 is a cut, as fixed:TAU does at t = TAU, 2 TAU, ...).
 *
 * Dimension letters: B rows, T steps, V vocabulary, D input, H hidden, Q output. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "safetensors.h"

enum { B = 2, T = 5, V = 4, H = 3, D = 3, HL = 4, Q = 2 };

/* xorshift64*: its own generator, so fixtures do not move with bt_rng. */
static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;
static double uniform(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (double)((rng_state * 2685821657736338717ULL) >> 11) / 9007199254740992.0;
}
/* Values in [-s, s] rounded to float, so the float and double builds read the same numbers. */
static void fill(double *v, int n, double s)
{
    for (int i = 0; i < n; i++)
        v[i] = (double)(float)(s * (2 * uniform() - 1));
}

static int fail(const char *what, const char *err)
{
    fprintf(stderr, "grad_reference: %s: %s\n", what, err);
    return 1;
}

/* Adds a [n0(,n1(,n2))] double tensor as F32 (inputs, exactly representable) or F64. */
static int add(bt_st_file *f, const char *name, bool f32, int ndim, int64_t n0, int64_t n1,
               int64_t n2, const double *v)
{
    char err[256];
    int64_t shape[3] = {n0, n1, n2};
    size_t n = 1;
    for (int i = 0; i < ndim; i++)
        n *= (size_t)shape[i];
    bt_status st;
    if (f32) {
        float *tmp = malloc(n * sizeof *tmp);
        for (size_t i = 0; tmp && i < n; i++)
            tmp[i] = (float)v[i];
        st = tmp ? bt_st_add(f, name, BT_ST_F32, ndim, shape, tmp, err, sizeof err) : BT_ERR_NOMEM;
        free(tmp);
    } else
        st = bt_st_add(f, name, BT_ST_F64, ndim, shape, v, err, sizeof err);
    return st == BT_OK ? 0 : fail(name, err);
}

static int add_ids(bt_st_file *f, const char *name, const int32_t *ids)
{
    char err[256];
    return bt_st_add(f, name, BT_ST_I32, 2, (int64_t[]){B, T}, ids, err, sizeof err) == BT_OK
               ? 0 : fail(name, err);
}

static int save(bt_st_file *f, const char *dir, const char *file)
{
    char path[4096], err[512];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    bt_status st = bt_st_write(f, path, err, sizeof err);
    bt_st_free(f);
    if (st != BT_OK)
        return fail(path, err);
    printf("wrote %s\n", path);
    return 0;
}

/* ---- rnn_tanh: h_t = tanh(W_xh[x_t] + h_{t-1} W_hh + b_h), o_t = h_t W_hq + b_q ---- */

typedef struct rnn {
    double Wxh[V * H], Whh[H * H], bh[H], Whq[H * V], bq[V], h0[B * H];
    int32_t x[B * T], y[B * T];
} rnn;

typedef struct rnn_grad {
    double loss, Wxh[V * H], Whh[H * H], bh[H], Whq[H * V], bq[V], h0[B * H], norm[T];
} rnn_grad;

static void rnn_reference(const rnn *p, const double *xi, rnn_grad *g)
{
    double h[T + 1][B][H], dh[T][B][H], da[T][B][H], dout[T][B][V];
    memset(g, 0, sizeof *g);
    for (int b = 0; b < B; b++)
        for (int i = 0; i < H; i++)
            h[0][b][i] = p->h0[b * H + i];
    for (int t = 0; t < T; t++)
        for (int b = 0; b < B; b++) {
            int tok = p->x[b * T + t], tgt = p->y[b * T + t];
            for (int j = 0; j < H; j++) {
                double a = p->Wxh[tok * H + j] + p->bh[j];
                for (int i = 0; i < H; i++)
                    a += h[t][b][i] * p->Whh[i * H + j];
                h[t + 1][b][j] = tanh(a);
            }
            double o[V], mx = -INFINITY, z = 0;
            for (int v = 0; v < V; v++) {
                o[v] = p->bq[v];
                for (int j = 0; j < H; j++)
                    o[v] += h[t + 1][b][j] * p->Whq[j * V + v];
                mx = fmax(mx, o[v]);
            }
            for (int v = 0; v < V; v++)
                z += exp(o[v] - mx);
            /* L = 1/(T B) sum_t sum_b -log softmax(o)[y]; dL/do = (softmax - onehot)/(T B) */
            g->loss += -(o[tgt] - mx - log(z)) / (T * B);
            for (int v = 0; v < V; v++)
                dout[t][b][v] = (exp(o[v] - mx) / z - (v == tgt)) / (T * B);
        }
    /* Backward: dh_t = dout_t W_hq^T + xi_{t+1} da_{t+1} W_hh^T, da_t = dh_t (1 - h_t^2). */
    for (int t = T - 1; t >= 0; t--)
        for (int b = 0; b < B; b++)
            for (int j = 0; j < H; j++) {
                double s = 0;
                for (int v = 0; v < V; v++)
                    s += dout[t][b][v] * p->Whq[j * V + v];
                if (t + 1 < T)
                    for (int k = 0; k < H; k++)
                        s += xi[t + 1] * da[t + 1][b][k] * p->Whh[j * H + k];
                dh[t][b][j] = s;
                da[t][b][j] = s * (1 - h[t + 1][b][j] * h[t + 1][b][j]);
            }
    for (int t = 0; t < T; t++) {
        double n2 = 0;
        for (int b = 0; b < B; b++) {
            int tok = p->x[b * T + t];
            for (int j = 0; j < H; j++) {
                n2 += dh[t][b][j] * dh[t][b][j];
                g->Wxh[tok * H + j] += da[t][b][j];
                g->bh[j] += da[t][b][j];
                for (int i = 0; i < H; i++)
                    g->Whh[i * H + j] += h[t][b][i] * da[t][b][j];
                for (int v = 0; v < V; v++)
                    g->Whq[j * V + v] += h[t + 1][b][j] * dout[t][b][v];
            }
            for (int v = 0; v < V; v++)
                g->bq[v] += dout[t][b][v];
        }
        g->norm[t] = sqrt(n2);
    }
    for (int b = 0; b < B; b++)
        for (int i = 0; i < H; i++)
            for (int k = 0; k < H; k++)
                g->h0[b * H + i] += xi[0] * da[0][b][k] * p->Whh[i * H + k];
}

static int rnn_expected(const rnn *p, const double *xi, const char *dir, const char *file)
{
    rnn_grad g;
    rnn_reference(p, xi, &g);
    bt_st_file *f = bt_st_new();
    if (!f)
        return fail(file, "out of memory");
    int bad = add(f, "loss", false, 0, 0, 0, 0, &g.loss) ||
              add(f, "grad.W_xh", false, 2, V, H, 0, g.Wxh) ||
              add(f, "grad.W_hh", false, 2, H, H, 0, g.Whh) ||
              add(f, "grad.b_h", false, 1, H, 0, 0, g.bh) ||
              add(f, "grad.W_hq", false, 2, H, V, 0, g.Whq) ||
              add(f, "grad.b_q", false, 1, V, 0, 0, g.bq) ||
              add(f, "grad.h0", false, 2, B, H, 0, g.h0) ||
              add(f, "xi", false, 1, T, 0, 0, xi) ||
              add(f, "grad_norm_h", false, 1, T, 0, 0, g.norm);
    if (bad) {
        bt_st_free(f);
        return 1;
    }
    return save(f, dir, file);
}

/* The broken inputs the error tests feed `bptt grad`, one fault each. */
typedef enum { RNN_GOOD, RNN_BAD_SHAPE, RNN_BAD_ID, RNN_BAD_DTYPE } rnn_variant;

static int rnn_params(const rnn *p, rnn_variant variant, const char *dir, const char *file)
{
    bt_st_file *f = bt_st_new();
    if (!f)
        return fail(file, "out of memory");
    int32_t x[B * T];
    memcpy(x, p->x, sizeof x);
    if (variant == RNN_BAD_ID)
        x[B * T - 1] = V; /* one past the vocabulary */
    double bq[V + 1] = {0};
    memcpy(bq, p->bq, sizeof p->bq);
    double y[B * T];
    for (int i = 0; i < B * T; i++)
        y[i] = p->y[i];
    int bad = add(f, "W_xh", true, 2, V, H, 0, p->Wxh) || add(f, "W_hh", true, 2, H, H, 0, p->Whh) ||
              add(f, "b_h", true, 1, H, 0, 0, p->bh) || add(f, "W_hq", true, 2, H, V, 0, p->Whq) ||
              add(f, "b_q", true, 1, variant == RNN_BAD_SHAPE ? V + 1 : V, 0, 0, bq) ||
              add(f, "h0", true, 2, B, H, 0, p->h0) || add_ids(f, "X", x) ||
              (variant == RNN_BAD_DTYPE ? add(f, "Y", true, 2, B, T, 0, y) : add_ids(f, "Y", p->y));
    if (bad) {
        bt_st_free(f);
        return 1;
    }
    bt_st_set_meta(f, "note", "rnn_tanh B=2 T=5 V=4 H=3: written by tests/grad_reference.c");
    return save(f, dir, file);
}

static int rnn_fixtures(const char *dir)
{
    rnn p;
    fill(p.Wxh, V * H, 0.8);
    fill(p.Whh, H * H, 0.8);
    fill(p.bh, H, 0.3);
    fill(p.Whq, H * V, 0.8);
    fill(p.bq, V, 0.3);
    fill(p.h0, B * H, 0.5);
    for (int i = 0; i < B * T; i++) {
        p.x[i] = (int32_t)(uniform() * V);
        p.y[i] = (int32_t)(uniform() * V);
    }
    static const double full[T] = {1, 1, 1, 1, 1};
    static const double fixed2[T] = {1, 1, 0, 1, 0}; /* fixed:2 cuts the edges into t = 2, 4 */
    return rnn_params(&p, RNN_GOOD, dir, "rnn_tanh_params.safetensors") ||
           rnn_expected(&p, full, dir, "rnn_tanh_full.expected.safetensors") ||
           rnn_expected(&p, fixed2, dir, "rnn_tanh_fixed2.expected.safetensors") ||
           rnn_params(&p, RNN_BAD_SHAPE, dir, "bad_shape_params.safetensors") ||
           rnn_params(&p, RNN_BAD_ID, dir, "bad_id_params.safetensors") ||
           rnn_params(&p, RNN_BAD_DTYPE, dir, "bad_dtype_params.safetensors");
}

/* ---- linear: h_t = W_hx x_t + W_hh h_{t-1}, o_t = W_qh h_t (column vectors) ---- */

typedef struct lin {
    double Whx[HL * D], Whh[HL * HL], Wqh[Q * HL], h0[B * HL], x[B * T * D], y[B * T * Q];
} lin;

typedef struct lin_grad {
    double loss, Whx[HL * D], Whh[HL * HL], Wqh[Q * HL], h0[B * HL], norm[T];
} lin_grad;

static void lin_reference(const lin *p, const double *xi, lin_grad *g)
{
    double h[T + 1][B][HL], dh[T][B][HL], dout[T][B][Q];
    memset(g, 0, sizeof *g);
    for (int b = 0; b < B; b++)
        for (int i = 0; i < HL; i++)
            h[0][b][i] = p->h0[b * HL + i];
    for (int t = 0; t < T; t++)
        for (int b = 0; b < B; b++) {
            const double *x = p->x + (b * T + t) * D, *y = p->y + (b * T + t) * Q;
            for (int i = 0; i < HL; i++) {
                double s = 0;
                for (int j = 0; j < D; j++)
                    s += p->Whx[i * D + j] * x[j];
                for (int j = 0; j < HL; j++)
                    s += p->Whh[i * HL + j] * h[t][b][j];
                h[t + 1][b][i] = s;
            }
            /* L = 1/(T B) sum_t sum_b 0.5 ||o_t - y_t||^2 */
            for (int q = 0; q < Q; q++) {
                double o = 0;
                for (int j = 0; j < HL; j++)
                    o += p->Wqh[q * HL + j] * h[t + 1][b][j];
                g->loss += 0.5 * (o - y[q]) * (o - y[q]) / (T * B);
                dout[t][b][q] = (o - y[q]) / (T * B);
            }
        }
    /* dh_t = W_qh^T dout_t + xi_{t+1} W_hh^T dh_{t+1} */
    for (int t = T - 1; t >= 0; t--)
        for (int b = 0; b < B; b++)
            for (int i = 0; i < HL; i++) {
                double s = 0;
                for (int q = 0; q < Q; q++)
                    s += p->Wqh[q * HL + i] * dout[t][b][q];
                if (t + 1 < T)
                    for (int j = 0; j < HL; j++)
                        s += xi[t + 1] * p->Whh[j * HL + i] * dh[t + 1][b][j];
                dh[t][b][i] = s;
            }
    for (int t = 0; t < T; t++) {
        double n2 = 0;
        for (int b = 0; b < B; b++) {
            const double *x = p->x + (b * T + t) * D;
            for (int i = 0; i < HL; i++) {
                n2 += dh[t][b][i] * dh[t][b][i];
                for (int j = 0; j < D; j++)
                    g->Whx[i * D + j] += dh[t][b][i] * x[j];
                for (int j = 0; j < HL; j++)
                    g->Whh[i * HL + j] += dh[t][b][i] * h[t][b][j];
            }
            for (int q = 0; q < Q; q++)
                for (int j = 0; j < HL; j++)
                    g->Wqh[q * HL + j] += dout[t][b][q] * h[t + 1][b][j];
        }
        g->norm[t] = sqrt(n2);
    }
    for (int b = 0; b < B; b++)
        for (int i = 0; i < HL; i++)
            for (int j = 0; j < HL; j++)
                g->h0[b * HL + i] += xi[0] * p->Whh[j * HL + i] * dh[0][b][j];
}

static int lin_expected(const lin *p, const double *xi, const char *dir, const char *file)
{
    lin_grad g;
    lin_reference(p, xi, &g);
    bt_st_file *f = bt_st_new();
    if (!f)
        return fail(file, "out of memory");
    int bad = add(f, "loss", false, 0, 0, 0, 0, &g.loss) ||
              add(f, "grad.W_hx", false, 2, HL, D, 0, g.Whx) ||
              add(f, "grad.W_hh", false, 2, HL, HL, 0, g.Whh) ||
              add(f, "grad.W_qh", false, 2, Q, HL, 0, g.Wqh) ||
              add(f, "grad.h0", false, 2, B, HL, 0, g.h0) ||
              add(f, "xi", false, 1, T, 0, 0, xi) ||
              add(f, "grad_norm_h", false, 1, T, 0, 0, g.norm);
    if (bad) {
        bt_st_free(f);
        return 1;
    }
    return save(f, dir, file);
}

static int lin_params(const lin *p, const double *xi, const char *dir, const char *file)
{
    bt_st_file *f = bt_st_new();
    if (!f)
        return fail(file, "out of memory");
    /* F64 here (F32 in the rnn_tanh file): both dtypes are read. */
    int bad = add(f, "W_hx", false, 2, HL, D, 0, p->Whx) ||
              add(f, "W_hh", false, 2, HL, HL, 0, p->Whh) ||
              add(f, "W_qh", false, 2, Q, HL, 0, p->Wqh) ||
              add(f, "h0", false, 2, B, HL, 0, p->h0) ||
              add(f, "X", false, 3, B, T, D, p->x) || add(f, "Y", false, 3, B, T, Q, p->y) ||
              (xi && add(f, "xi", false, 1, T, 0, 0, xi));
    if (bad) {
        bt_st_free(f);
        return 1;
    }
    bt_st_set_meta(f, "note", "linear B=2 T=5 D=3 H=4 Q=2: written by tests/grad_reference.c");
    return save(f, dir, file);
}

static int lin_fixtures(const char *dir)
{
    lin p;
    fill(p.Whx, HL * D, 0.7);
    fill(p.Whh, HL * HL, 0.7);
    fill(p.Wqh, Q * HL, 0.7);
    fill(p.h0, B * HL, 0.5);
    fill(p.x, B * T * D, 1);
    fill(p.y, B * T * Q, 1);
    static const double full[T] = {1, 1, 1, 1, 1};
    /* A given xi: scaled edges (0.5 into step 0 reaches h0; 2 and 1.25) and one cut. */
    static const double given[T] = {0.5, 1, 0, 2, 1.25};
    return lin_params(&p, NULL, dir, "linear_params.safetensors") ||
           lin_expected(&p, full, dir, "linear_full.expected.safetensors") ||
           lin_params(&p, given, dir, "linear_xi_params.safetensors") ||
           lin_expected(&p, given, dir, "linear_xi.expected.safetensors");
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: grad_reference OUTDIR   (writes the fixtures of tests/fixtures)\n");
        return 2;
    }
    return rnn_fixtures(argv[1]) || lin_fixtures(argv[1]);
}
