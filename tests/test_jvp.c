/* test_jvp.c: forward mode (bt_jvp) checked against two things it does not
 * share code with: (a) central differences of the forward along a random
 * direction u, and (b) the tape's own backward, by the dot-product test
 * <v, J u> = <J^T v, u> for random u, v. For every op descriptor in ops/ (a
 * scan of the sources fails the suite when an op has no case here) and every
 * shipped cell, one step and several unrolled steps. Also: detach passes a zero
 * tangent, grad_scale the identity, the fused tanh step equals its five-op
 * composition, one recording serves backward and many sweeps unchanged, later
 * sweeps allocate nothing, and RTRL built from sweeps equals full BPTT. */
#include <dirent.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bptt_op.h"
#include "check.h"
#include "unroll.h"

/* (a) uses Richardson's extrapolation of central differences at h and h/2,
 * (4 D(h/2) - D(h)) / 3, whose truncation error is O(h^4). Double: h = 3e-4
 * leaves ~1e-11 on four unrolled steps of the linear cell (a polynomial of high
 * degree in the parameters; h = 1e-3 left 3e-10 there) and ~1e-12 of rounding;
 * the worst case measured is 1.6e-11, against 1e-10. Float: the forward's own
 * rounding (~6e-8 relative, fast tanh and exp a few ulps, amplified over
 * unrolled steps) divided by h is the floor; h = 1e-2 gives 2.1e-4 at worst
 * (those four linear steps), 1e-5 for single ops, so 1e-3 leaves room, while a
 * wrong factor or a dropped term is off by O(1) (0.5 for a halved matmul term).
 * (b) compares two sums of the same products taken in two orders, so only
 * rounding separates them: ~1e-15 relative in double (1e-10 allowed), ~1e-6 in
 * float (1e-4 allowed). */
#if BT_REAL_DOUBLE
#define FD_H 3e-4
#define FD_TOL 1e-10
#define DOT_TOL 1e-10
#define SAME_TOL 1e-12
#else
#define FD_H 1e-2
#define FD_TOL 1e-3
#define DOT_TOL 1e-4
#define SAME_TOL 1e-5
#endif

#define MAX_LEAVES 24
#define MAX_OUTS 16

typedef enum {
    LEAF_TANGENT, /* a random tangent, perturbed in (a) */
    LEAF_FROZEN,  /* a random tangent that must not get through (detach's input):
                     held constant in (a), as a detached value is a constant */
    LEAF_NONE     /* requires grad, no tangent (NULL, a zero tangent) */
} leaf_mode;

typedef int (*build_fn)(bt_graph *g, bt_tensor *const *leaves, void *ctx, bt_tensor **outs);

typedef struct jcase {
    const char *what;
    const char *op; /* an op the graph must contain (NULL: not checked) */
    build_fn build;
    void *ctx;
    bt_tensor *leaves[MAX_LEAVES];
    leaf_mode mode[MAX_LEAVES];
    int n_leaves;
    double adjoint; /* backward is adjoint times the transpose: xi for grad_scale(xi) */
} jcase;

typedef struct jreport {
    double fd, dot;
} jreport;

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n, size);
    cr_assert_not_null(p);
    return p;
}

/* ---- the two checks ------------------------------------------------------------ */

static bool contains_op(const bt_tensor *t, const char *op, int depth)
{
    if (!t || !t->node || depth > 64)
        return false;
    if (strcmp(t->node->op->name, op) == 0)
        return true;
    for (int i = 0; i < t->node->n_in; i++)
        if (contains_op(t->node->in[i], op, depth + 1))
            return true;
    return false;
}

static int record(jcase *c, bt_graph *g, bt_tensor **outs)
{
    bt_graph_reset(g);
    int n = c->build(g, c->leaves, c->ctx, outs);
    cr_assert_eq(bt_graph_status(g), BT_OK, "%s: %s", c->what, bt_graph_error(g));
    cr_assert(n > 0 && n <= MAX_OUTS, "%s: %d outputs", c->what, n);
    return n;
}

/* Sets every leaf's data to x0 + s u (leaves with a tangent, not frozen). */
static void perturb(jcase *c, bt_real *const *x0, bt_real *const *u, double s)
{
    for (int i = 0; i < c->n_leaves; i++) {
        bt_tensor *l = c->leaves[i];
        for (size_t e = 0; e < l->size; e++)
            l->data[e] = (bt_real)(x0[i][e] + (c->mode[i] == LEAF_TANGENT ? s * u[i][e] : 0));
    }
}

/* (a): max over outputs of ||J u - FD||_inf / ||J u||_inf (each output on its own
 * scale, so a scalar loss is held to the same standard as a state). */
static double fd_error(jcase *c, bt_graph *g, bt_real *const *x0, bt_real *const *u,
                       double *const *ju, int n)
{
    const double steps[4] = {FD_H, -FD_H, FD_H / 2, -FD_H / 2};
    double *f[4][MAX_OUTS];
    bt_tensor *outs[MAX_OUTS];
    for (int s = 0; s < 4; s++) {
        perturb(c, x0, u, steps[s]);
        cr_assert_eq(record(c, g, outs), n);
        for (int k = 0; k < n; k++) {
            f[s][k] = xcalloc(outs[k]->size, sizeof(double));
            for (size_t e = 0; e < outs[k]->size; e++)
                f[s][k][e] = (double)outs[k]->data[e];
        }
    }
    perturb(c, x0, u, 0);
    double worst = 0;
    for (int k = 0; k < n; k++) {
        double diff = 0, scale = 0;
        for (size_t e = 0; e < outs[k]->size; e++) {
            double d1 = (f[0][k][e] - f[1][k][e]) / (2 * FD_H);
            double d2 = (f[2][k][e] - f[3][k][e]) / FD_H;
            double fd = (4 * d2 - d1) / 3;
            diff = fmax(diff, fabs(ju[k][e] - fd));
            scale = fmax(scale, fmax(fabs(ju[k][e]), fabs(fd)));
        }
        double err = scale > 0 ? diff / scale : 0;
        worst = fmax(worst, err);
        for (int s = 0; s < 4; s++)
            free(f[s][k]);
    }
    return worst;
}

/* (b): records the graph with probe = sum_k <out_k, v_k>, backward from it, and
 * compares <J^T v, u> (leaf gradients against u) with <v, J u>. Then sweeps the
 * same recording forward again: the tangents must be the ones before backward. */
static double dot_error(jcase *c, bt_graph *g, bt_rng *r, bt_real *const *u,
                        double *const *ju, int n)
{
    bt_tensor *outs[MAX_OUTS];
    cr_assert_eq(record(c, g, outs), n);
    bt_tensor *probe = NULL;
    double vju = 0;
    for (int k = 0; k < n; k++) {
        if (!outs[k]->requires_grad)
            continue; /* a constant (a detached output): nothing to send back */
        bt_tensor *v = bt_graph_tensor(g, outs[k]->ndim, outs[k]->shape);
        cr_assert_not_null(v);
        for (size_t e = 0; e < v->size; e++) {
            v->data[e] = (bt_real)bt_rng_normal(r);
            vju += (double)v->data[e] * ju[k][e];
        }
        bt_tensor *term = bt_sum(g, bt_mul(g, outs[k], v));
        probe = probe ? bt_add(g, probe, term) : term;
    }
    cr_assert_not_null(probe, "%s: no output requires grad", c->what);
    for (int i = 0; i < c->n_leaves; i++)
        bt_tensor_zero_grad(c->leaves[i]);
    cr_assert_eq(bt_backward(g, probe), BT_OK, "%s: %s", c->what, bt_graph_error(g));
    double jtvu = 0;
    for (int i = 0; i < c->n_leaves; i++)
        for (size_t e = 0; u[i] && e < c->leaves[i]->size; e++)
            jtvu += (double)c->leaves[i]->grad[e] * (double)u[i][e];
    cr_assert_eq(bt_jvp(g), BT_OK, "%s: %s", c->what, bt_graph_error(g));
    for (int k = 0; k < n; k++)
        for (size_t e = 0; e < outs[k]->size; e++) {
            double t = outs[k]->tangent ? (double)outs[k]->tangent[e] : 0;
            cr_assert_eq(t, ju[k][e], "%s: output %d[%zu]: a sweep after backward gives %.17g, "
                         "before it %.17g", c->what, k, e, t, ju[k][e]);
        }
    double want = c->adjoint * vju;
    double scale = fmax(fabs(jtvu), fabs(want));
    return scale > 0 ? fabs(jtvu - want) / scale : 0;
}

static jreport run_case(jcase *c, uint64_t seed)
{
    bt_rng r;
    bt_rng_seed(&r, seed);
    bt_real *u[MAX_LEAVES] = {0}, *x0[MAX_LEAVES];
    for (int i = 0; i < c->n_leaves; i++) {
        bt_tensor *l = c->leaves[i];
        cr_assert(l->requires_grad, "%s: leaf %d must require grad", c->what, i);
        x0[i] = xcalloc(l->size, sizeof(bt_real));
        memcpy(x0[i], l->data, l->size * sizeof(bt_real));
        if (c->mode[i] != LEAF_NONE) {
            u[i] = xcalloc(l->size, sizeof(bt_real));
            for (size_t e = 0; e < l->size; e++)
                u[i][e] = (bt_real)bt_rng_normal(&r);
        }
        l->tangent = u[i];
    }
    bt_graph *g = bt_graph_new();
    bt_tensor *outs[MAX_OUTS];
    int n = record(c, g, outs);
    if (c->op)
        for (int k = 0; k <= n; k++) {
            cr_assert_lt(k, n, "%s: the graph has no op %s", c->what, c->op);
            if (contains_op(outs[k], c->op, 0))
                break;
        }
    cr_assert_eq(bt_jvp(g), BT_OK, "%s: %s", c->what, bt_graph_error(g));
    double *ju[MAX_OUTS];
    for (int k = 0; k < n; k++) {
        ju[k] = xcalloc(outs[k]->size, sizeof(double));
        for (size_t e = 0; outs[k]->tangent && e < outs[k]->size; e++)
            ju[k][e] = (double)outs[k]->tangent[e];
    }
    jreport rep = {fd_error(c, g, x0, u, ju, n), dot_error(c, g, &r, u, ju, n)};
    fprintf(stderr, "jvp %-44s (a) fd %9.2e   (b) dot %9.2e\n", c->what, rep.fd, rep.dot);
    cr_expect_leq(rep.fd, FD_TOL, "%s: J u differs from central differences by %.3g (relative)",
                  c->what, rep.fd);
    cr_expect_leq(rep.dot, DOT_TOL, "%s: <v, J u> and <J^T v, u> differ by %.3g (relative)",
                  c->what, rep.dot);
    for (int k = 0; k < n; k++)
        free(ju[k]);
    for (int i = 0; i < c->n_leaves; i++) {
        c->leaves[i]->tangent = NULL;
        free(u[i]);
        free(x0[i]);
    }
    bt_graph_free(g);
    return rep;
}

/* ---- leaves ------------------------------------------------------------------------ */

static bt_rng data_rng;

static bt_tensor *make(int ndim, const int *shape, bool requires_grad, double lo, double hi)
{
    bt_tensor *t = test_tensor(ndim, shape, requires_grad);
    fill_uniform(t, &data_rng, lo, hi);
    return t;
}

static void add_leaf(jcase *c, bt_tensor *t, leaf_mode mode)
{
    cr_assert_lt(c->n_leaves, MAX_LEAVES);
    c->leaves[c->n_leaves] = t;
    c->mode[c->n_leaves++] = mode;
}

/* A leaf [a] or [a,b] (b 0), or [a,b,c]: data uniform in [lo, hi]. */
static bt_tensor *leaf(jcase *c, int a, int b, int d, double lo, double hi, leaf_mode mode)
{
    int shape[3] = {a, b, d}, ndim = d ? 3 : b ? 2 : 1;
    bt_tensor *t = make(ndim, shape, true, lo, hi);
    add_leaf(c, t, mode);
    return t;
}

static void free_leaves(jcase *c)
{
    for (int i = 0; i < c->n_leaves; i++)
        bt_tensor_free(c->leaves[i]);
    c->n_leaves = 0;
}

/* ---- the ops, one case or more each -------------------------------------------------- */

typedef struct opctx {
    int variant;
    bool ta, tb;
    double c;
    int32_t ids[8];
    bt_tensor *k[2]; /* constants */
} opctx;

enum { V_ADD, V_SUB, V_MUL, V_NEG, V_SCALE, V_EXP, V_LOG, V_TANH, V_SIGMOID, V_RELU, V_SUM,
       V_MEAN, V_CONCAT, V_SLICE, V_EMBEDDING, V_XENT, V_MSE, V_MSE_CONST_Y, V_MATMUL,
       V_MATMUL_CONST_A, V_DETACH, V_GRAD_SCALE, V_GRAD_SCALE0, V_RNN_IDS, V_RNN_REAL, V_DROPOUT,
       V_LSTM_GATES, V_LSTM_CELL, V_LSTM_HIDDEN, V_GRU_GATES, V_GRU_HIDDEN, V_GRU_CHO_GATES,
       V_GRU_CHO_RESET, V_GRU_CHO_HIDDEN };

static int build_op(bt_graph *g, bt_tensor *const *L, void *ctx, bt_tensor **outs)
{
    opctx *o = ctx;
    bt_tensor *y = NULL;
    switch (o->variant) {
    case V_ADD: y = bt_add(g, L[0], L[1]); break;
    case V_SUB: y = bt_sub(g, L[0], L[1]); break;
    case V_MUL: y = bt_mul(g, L[0], L[1]); break;
    case V_NEG: y = bt_neg(g, L[0]); break;
    case V_SCALE: y = bt_scale(g, L[0], o->c); break;
    case V_EXP: y = bt_exp(g, L[0]); break;
    case V_LOG: y = bt_log(g, L[0]); break;
    case V_TANH: y = bt_tanh(g, L[0]); break;
    case V_SIGMOID: y = bt_sigmoid(g, L[0]); break;
    case V_RELU: y = bt_relu(g, L[0]); break;
    case V_DROPOUT: y = bt_dropout(g, L[0], o->c, 7); break; /* a fixed mask */
    case V_SUM: y = bt_sum(g, L[0]); break;
    case V_MEAN: y = bt_mean(g, L[0]); break;
    case V_CONCAT: y = bt_concat(g, (bt_tensor *[]){L[0], o->k[0], L[1]}, 3); break;
    case V_SLICE: y = bt_slice(g, L[0], 1, 3); break;
    case V_EMBEDDING: y = bt_embedding(g, L[0], o->ids, 6); break;
    case V_XENT: y = bt_softmax_xent(g, L[0], o->ids); break;
    case V_MSE: y = bt_mse(g, L[0], L[1]); break;
    case V_MSE_CONST_Y: y = bt_mse(g, L[0], o->k[0]); break;
    case V_MATMUL: y = bt_matmul_t(g, L[0], o->ta, L[1], o->tb); break;
    case V_MATMUL_CONST_A: y = bt_matmul_t(g, o->k[0], o->ta, L[0], o->tb); break;
    case V_DETACH: y = bt_add(g, bt_detach(g, L[0]), bt_tanh(g, L[1])); break;
    case V_GRAD_SCALE: y = bt_mul(g, bt_grad_scale(g, L[0], o->c), o->k[0]); break;
    case V_GRAD_SCALE0: y = bt_add(g, bt_grad_scale(g, L[0], 0), bt_tanh(g, L[1])); break;
    case V_RNN_IDS: y = bt_rnn_tanh_step(g, L[0], o->ids, NULL, L[1], L[2], L[3]); break;
    case V_RNN_REAL: y = bt_rnn_tanh_step(g, L[0], NULL, L[4], L[1], L[2], L[3]); break;
    case V_LSTM_GATES: y = bt_lstm_gates(g, L[0], L[1], L[2], L[3]); break;
    case V_LSTM_CELL: y = bt_lstm_cell(g, L[0], L[1]); break;
    case V_LSTM_HIDDEN: y = bt_lstm_hidden(g, L[0], L[1]); break;
    case V_GRU_GATES: y = bt_gru_gates(g, L[0], L[1], L[2], L[3], L[4]); break;
    case V_GRU_HIDDEN: y = bt_gru_hidden(g, L[0], L[1]); break;
    case V_GRU_CHO_GATES: y = bt_gru_cho_gates(g, L[0], L[1], L[2], L[3]); break;
    case V_GRU_CHO_RESET: y = bt_gru_cho_reset(g, L[0], L[1]); break;
    case V_GRU_CHO_HIDDEN: y = bt_gru_cho_hidden(g, L[0], L[1], L[2], L[3], L[4], L[5]); break;
    default: cr_assert_fail("variant %d", o->variant);
    }
    outs[0] = y;
    return 1;
}

/* One op case: name, the op it tests, and its leaves (made by the caller). */
static jcase op_case(const char *what, const char *op, opctx *o)
{
    return (jcase){.what = what, .op = op, .build = build_op, .ctx = o, .adjoint = 1};
}

static void run_op_case(jcase *c, jreport *worst)
{
    jreport r = run_case(c, 7 + (uint64_t)c->n_leaves);
    worst->fd = fmax(worst->fd, r.fd);
    worst->dot = fmax(worst->dot, r.dot);
    free_leaves(c);
    opctx *o = c->ctx;
    for (int i = 0; i < 2; i++) {
        bt_tensor_free(o->k[i]);
        o->k[i] = NULL;
    }
}

#define CASE(WHAT, OP) jcase c = op_case(WHAT, OP, &o)

static void fam_add(jreport *w)
{
    opctx o = {.variant = V_ADD};
    { CASE("add [3,4] + [3,4]", "add"); leaf(&c, 3, 4, 0, -1, 1, 0); leaf(&c, 3, 4, 0, -1, 1, 0); run_op_case(&c, w); }
    { CASE("add [3,4] + [4] (row bias)", "add"); leaf(&c, 3, 4, 0, -1, 1, 0); leaf(&c, 4, 0, 0, -1, 1, 0); run_op_case(&c, w); }
    { CASE("add [2,3,4] + [3,1]", "add"); leaf(&c, 2, 3, 4, -1, 1, 0); leaf(&c, 3, 1, 0, -1, 1, 0); run_op_case(&c, w); }
    { CASE("add [4] + [3,4] (a broadcast)", "add"); leaf(&c, 4, 0, 0, -1, 1, 0); leaf(&c, 3, 4, 0, -1, 1, 0); run_op_case(&c, w); }
    { CASE("add [3,4] + [3,4], b without tangent", "add"); leaf(&c, 3, 4, 0, -1, 1, 0); leaf(&c, 3, 4, 0, -1, 1, LEAF_NONE); run_op_case(&c, w); }
}

static void fam_sub(jreport *w)
{
    opctx o = {.variant = V_SUB};
    { CASE("sub [3,4] - [3,4]", "sub"); leaf(&c, 3, 4, 0, -1, 1, 0); leaf(&c, 3, 4, 0, -1, 1, 0); run_op_case(&c, w); }
    { CASE("sub [2,1,4] - [3,1]", "sub"); leaf(&c, 2, 1, 4, -1, 1, 0); leaf(&c, 3, 1, 0, -1, 1, 0); run_op_case(&c, w); }
    { CASE("sub [3,4] - [4], a without tangent", "sub"); leaf(&c, 3, 4, 0, -1, 1, LEAF_NONE); leaf(&c, 4, 0, 0, -1, 1, 0); run_op_case(&c, w); }
}

static void fam_mul(jreport *w)
{
    opctx o = {.variant = V_MUL};
    { CASE("mul [3,4] * [3,4]", "mul"); leaf(&c, 3, 4, 0, -1, 1, 0); leaf(&c, 3, 4, 0, -1, 1, 0); run_op_case(&c, w); }
    { CASE("mul [2,3,4] * [3,1]", "mul"); leaf(&c, 2, 3, 4, -1, 1, 0); leaf(&c, 3, 1, 0, -1, 1, 0); run_op_case(&c, w); }
    { CASE("mul [1,4] * [3,1] (both broadcast)", "mul"); leaf(&c, 1, 4, 0, -1, 1, 0); leaf(&c, 3, 1, 0, -1, 1, 0); run_op_case(&c, w); }
    { CASE("mul [3,4] * [4], a without tangent", "mul"); leaf(&c, 3, 4, 0, -1, 1, LEAF_NONE); leaf(&c, 4, 0, 0, -1, 1, 0); run_op_case(&c, w); }
}

static void fam_matmul(jreport *w)
{
    enum { M = 3, K = 4, N = 2 };
    static const char *names[4] = {"matmul a b", "matmul a b^T", "matmul a^T b", "matmul a^T b^T"};
    static const char *consts[4] = {"matmul (const a) b", "matmul (const a) b^T",
                                    "matmul (const a)^T b", "matmul (const a)^T b^T"};
    for (int t = 0; t < 4; t++) {
        opctx o = {.variant = V_MATMUL, .ta = t & 2, .tb = t & 1};
        CASE(names[t], "matmul");
        leaf(&c, o.ta ? K : M, o.ta ? M : K, 0, -1, 1, 0);
        leaf(&c, o.tb ? N : K, o.tb ? K : N, 0, -1, 1, 0);
        run_op_case(&c, w);
    }
    for (int t = 0; t < 4; t++) { /* a constant: the weight-only path */
        opctx o = {.variant = V_MATMUL_CONST_A, .ta = t & 2, .tb = t & 1};
        o.k[0] = make(2, (int[]){o.ta ? K : M, o.ta ? M : K}, false, -1, 1);
        CASE(consts[t], "matmul");
        leaf(&c, o.tb ? N : K, o.tb ? K : N, 0, -1, 1, 0);
        run_op_case(&c, w);
    }
    opctx o = {.variant = V_MATMUL};
    CASE("matmul a b, a without tangent", "matmul");
    leaf(&c, M, K, 0, -1, 1, LEAF_NONE);
    leaf(&c, K, N, 0, -1, 1, 0);
    run_op_case(&c, w);
}

static void unary_case(jreport *w, const char *what, const char *op, int variant, double lo,
                       double hi)
{
    opctx o = {.variant = variant, .c = -1.7};
    CASE(what, op);
    bt_tensor *x = leaf(&c, 3, 4, 0, lo, hi, 0);
    if (variant == V_RELU) /* away from the kink: |x| >= 0.2 > the largest step */
        for (size_t e = 0; e < x->size; e++)
            x->data[e] = x->data[e] < 0 ? x->data[e] - (bt_real)0.2 : x->data[e] + (bt_real)0.2;
    run_op_case(&c, w);
}

static void fam_neg(jreport *w) { unary_case(w, "neg", "neg", V_NEG, -1, 1); }
static void fam_scale(jreport *w) { unary_case(w, "scale -1.7", "scale", V_SCALE, -1, 1); }
static void fam_exp(jreport *w) { unary_case(w, "exp", "exp", V_EXP, -1, 1); }
static void fam_log(jreport *w) { unary_case(w, "log", "log", V_LOG, 0.5, 2); }
static void fam_tanh(jreport *w) { unary_case(w, "tanh", "tanh", V_TANH, -2, 2); }
static void fam_sigmoid(jreport *w) { unary_case(w, "sigmoid", "sigmoid", V_SIGMOID, -3, 3); }
static void fam_relu(jreport *w) { unary_case(w, "relu", "relu", V_RELU, -1, 1); }

static void fam_dropout(jreport *w)
{
    opctx o = {.variant = V_DROPOUT, .c = 0.4};
    CASE("dropout 0.4, seed 7", "dropout");
    leaf(&c, 3, 4, 0, -1, 1, 0);
    run_op_case(&c, w);
}

static void fam_sum(jreport *w)
{
    opctx o = {.variant = V_SUM};
    CASE("sum [2,3,4]", "sum");
    leaf(&c, 2, 3, 4, -1, 1, 0);
    run_op_case(&c, w);
}

static void fam_mean(jreport *w)
{
    opctx o = {.variant = V_MEAN};
    CASE("mean [3,4]", "mean");
    leaf(&c, 3, 4, 0, -1, 1, 0);
    run_op_case(&c, w);
}

static void fam_concat(jreport *w)
{
    opctx o = {.variant = V_CONCAT};
    {
        o.k[0] = make(2, (int[]){3, 3}, false, -1, 1);
        CASE("concat [3,2] [3,3](const) [3,4]", "concat");
        leaf(&c, 3, 2, 0, -1, 1, 0);
        leaf(&c, 3, 4, 0, -1, 1, 0);
        run_op_case(&c, w);
    }
    {
        o.k[0] = make(3, (int[]){2, 2, 1}, false, -1, 1);
        CASE("concat [2,2,3] [2,2,1](const) [2,2,2]", "concat");
        leaf(&c, 2, 2, 3, -1, 1, 0);
        leaf(&c, 2, 2, 2, -1, 1, 0);
        run_op_case(&c, w);
    }
}

static void fam_slice(jreport *w)
{
    opctx o = {.variant = V_SLICE};
    { CASE("slice [3,5] columns 1..3", "slice"); leaf(&c, 3, 5, 0, -1, 1, 0); run_op_case(&c, w); }
    { CASE("slice [2,3,4] columns 1..3", "slice"); leaf(&c, 2, 3, 4, -1, 1, 0); run_op_case(&c, w); }
}

static const int32_t some_ids[8] = {1, 4, 0, 4, 2, 3, 0, 1}; /* all < 5, with repeats */

static void fam_embedding(jreport *w)
{
    opctx o = {.variant = V_EMBEDDING};
    memcpy(o.ids, some_ids, sizeof o.ids);
    CASE("embedding [5,4], 6 ids", "embedding");
    leaf(&c, 5, 4, 0, -1, 1, 0);
    run_op_case(&c, w);
}

static void fam_xent(jreport *w)
{
    opctx o = {.variant = V_XENT};
    memcpy(o.ids, some_ids, sizeof o.ids);
    CASE("softmax_xent [4,5]", "softmax_xent");
    leaf(&c, 4, 5, 0, -2, 2, 0);
    run_op_case(&c, w);
}

static void fam_mse(jreport *w)
{
    opctx o = {.variant = V_MSE};
    { CASE("mse [3,4], o and y", "mse"); leaf(&c, 3, 4, 0, -1, 1, 0); leaf(&c, 3, 4, 0, -1, 1, 0); run_op_case(&c, w); }
    o.variant = V_MSE_CONST_Y;
    o.k[0] = make(2, (int[]){3, 4}, false, -1, 1);
    { CASE("mse [3,4], y constant", "mse"); leaf(&c, 3, 4, 0, -1, 1, 0); run_op_case(&c, w); }
}

/* add(detach(x), tanh(y)) with tangents on x and y: only y's gets through, as
 * a detached value is a constant (held so in (a)); backward agrees (b). */
static void fam_detach(jreport *w)
{
    opctx o = {.variant = V_DETACH};
    CASE("detach: add(detach(x), tanh(y))", "detach");
    leaf(&c, 3, 4, 0, -1, 1, LEAF_FROZEN);
    leaf(&c, 3, 4, 0, -1, 1, 0);
    run_op_case(&c, w);
}

/* mul(grad_scale(x, xi), k): the tangent is the identity's (a), backward xi
 * times the transpose (b, with adjoint xi). grad_scale(0) is a cut, as detach. */
static void fam_grad_scale(jreport *w)
{
    static const double xis[3] = {0.5, 1, -2};
    static const char *names[3] = {"grad_scale 0.5: mul(gs(x), k)", "grad_scale 1: mul(gs(x), k)",
                                   "grad_scale -2: mul(gs(x), k)"};
    for (int i = 0; i < 3; i++) {
        opctx o = {.variant = V_GRAD_SCALE, .c = xis[i]};
        o.k[0] = make(2, (int[]){3, 4}, false, -1, 1);
        CASE(names[i], "grad_scale");
        c.adjoint = xis[i];
        leaf(&c, 3, 4, 0, -1, 1, 0);
        run_op_case(&c, w);
    }
    opctx o = {.variant = V_GRAD_SCALE0};
    CASE("grad_scale 0: add(gs(x, 0), tanh(y))", "grad_scale");
    leaf(&c, 3, 4, 0, -1, 1, LEAF_FROZEN);
    leaf(&c, 3, 4, 0, -1, 1, 0);
    run_op_case(&c, w);
}

static void fam_rnn_step(jreport *w)
{
    enum { B = 3, V = 5, D = 2, H = 4 };
    opctx o = {.variant = V_RNN_IDS};
    memcpy(o.ids, some_ids, sizeof o.ids);
    {
        CASE("rnn_tanh_step, ids", "rnn_tanh_step");
        leaf(&c, V, H, 0, -0.8, 0.8, 0);
        leaf(&c, B, H, 0, -1, 1, 0);
        leaf(&c, H, H, 0, -0.8, 0.8, 0);
        leaf(&c, H, 0, 0, -0.5, 0.5, 0);
        run_op_case(&c, w);
    }
    for (int none = -1; none < 5; none++) { /* every input, and each one without a tangent */
        o.variant = V_RNN_REAL;
        char what[64];
        snprintf(what, sizeof what, none < 0 ? "rnn_tanh_step, real x" :
                 "rnn_tanh_step, real x, input %d without tangent", none);
        CASE(what, "rnn_tanh_step");
        leaf(&c, D, H, 0, -0.8, 0.8, none == 0 ? LEAF_NONE : 0);
        leaf(&c, B, H, 0, -1, 1, none == 1 ? LEAF_NONE : 0);
        leaf(&c, H, H, 0, -0.8, 0.8, none == 2 ? LEAF_NONE : 0);
        leaf(&c, H, 0, 0, -0.5, 0.5, none == 3 ? LEAF_NONE : 0);
        leaf(&c, B, D, 0, -1, 1, none == 4 ? LEAF_NONE : 0);
        run_op_case(&c, w);
    }
}

/* The fused LSTM ops (gates = 4 blocks) and GRU ops (3), each with every
 * input and with each one lacking a tangent. The gate ops take xw [B,gH],
 * h, W [H,gH] and their biases [gH]: pre-activations span both sides of 0.
 * The others take act [B,gH], which holds activations (in (0, 1); tanh's
 * blocks may be anything), and a state [B,H]. */
static void fam_gated(jreport *w, const char *op, int variant, int n_in, int gates)
{
    enum { B = 3, H = 4 };
    const int G = gates * H;
    opctx o = {.variant = variant};
    for (int none = -1; none < n_in; none++) {
        char what[64];
        snprintf(what, sizeof what, none < 0 ? "%s" : "%s, input %d without tangent", op, none);
        CASE(what, op);
        if (variant == V_LSTM_GATES || variant == V_GRU_GATES) {
            leaf(&c, B, G, 0, -1, 1, none == 0 ? LEAF_NONE : 0);
            leaf(&c, B, H, 0, -1, 1, none == 1 ? LEAF_NONE : 0);
            leaf(&c, H, G, 0, -0.8, 0.8, none == 2 ? LEAF_NONE : 0);
            for (int k = 3; k < n_in; k++) /* the biases */
                leaf(&c, G, 0, 0, -0.5, 0.5, none == k ? LEAF_NONE : 0);
        } else {
            leaf(&c, B, G, 0, 0.05, 0.95, none == 0 ? LEAF_NONE : 0);
            leaf(&c, B, H, 0, -1.5, 1.5, none == 1 ? LEAF_NONE : 0);
        }
        run_op_case(&c, w);
    }
}

static void fam_lstm_gates(jreport *w) { fam_gated(w, "lstm_gates", V_LSTM_GATES, 4, 4); }
static void fam_lstm_cell(jreport *w) { fam_gated(w, "lstm_cell", V_LSTM_CELL, 2, 4); }
static void fam_lstm_hidden(jreport *w) { fam_gated(w, "lstm_hidden", V_LSTM_HIDDEN, 2, 4); }
static void fam_gru_gates(jreport *w) { fam_gated(w, "gru_gates", V_GRU_GATES, 5, 3); }
static void fam_gru_hidden(jreport *w) { fam_gated(w, "gru_hidden", V_GRU_HIDDEN, 2, 3); }

/* The Cho GRU's gates and hidden ops, each with every input and with each one
 * lacking a tangent: xw [B,3H] and b [3H] (blocks z | r | n) and the state
 * span both sides of 0; zr holds gates, in (0, 1). (gru_cho_reset takes zr
 * and h: fam_gated's shape with two blocks.) */
static void fam_gru_cho(jreport *w, const char *op, int variant)
{
    enum { B = 3, H = 4 };
    const bool gates = variant == V_GRU_CHO_GATES;
    const int n_in = gates ? 4 : 6;
    opctx o = {.variant = variant};
    for (int none = -1; none < n_in; none++) {
        char what[64];
        snprintf(what, sizeof what, none < 0 ? "%s" : "%s, input %d without tangent", op, none);
        CASE(what, op);
        int k = 0;
        leaf(&c, B, 3 * H, 0, -1, 1, none == k++ ? LEAF_NONE : 0);       /* xw */
        leaf(&c, B, H, 0, -1, 1, none == k++ ? LEAF_NONE : 0);           /* h */
        if (gates) {
            leaf(&c, H, 2 * H, 0, -0.8, 0.8, none == k++ ? LEAF_NONE : 0); /* W_hzr */
        } else {
            leaf(&c, B, 2 * H, 0, 0.05, 0.95, none == k++ ? LEAF_NONE : 0); /* zr */
            leaf(&c, B, H, 0, -1, 1, none == k++ ? LEAF_NONE : 0);        /* rh */
            leaf(&c, H, H, 0, -0.8, 0.8, none == k++ ? LEAF_NONE : 0);    /* W_hh */
        }
        leaf(&c, 3 * H, 0, 0, -0.5, 0.5, none == k++ ? LEAF_NONE : 0);   /* b */
        run_op_case(&c, w);
    }
}

static void fam_gru_cho_gates(jreport *w) { fam_gru_cho(w, "gru_cho_gates", V_GRU_CHO_GATES); }
static void fam_gru_cho_reset(jreport *w) { fam_gated(w, "gru_cho_reset", V_GRU_CHO_RESET, 2, 2); }
static void fam_gru_cho_hidden(jreport *w) { fam_gru_cho(w, "gru_cho_hidden", V_GRU_CHO_HIDDEN); }

/* Every op of ops/, by name, with the function that checks it. */
typedef void (*family_fn)(jreport *w);
static const struct family {
    const char *op;
    family_fn run;
} families[] = {
    {"add", fam_add}, {"sub", fam_sub}, {"mul", fam_mul}, {"matmul", fam_matmul},
    {"neg", fam_neg}, {"scale", fam_scale}, {"exp", fam_exp}, {"log", fam_log},
    {"tanh", fam_tanh}, {"sigmoid", fam_sigmoid}, {"relu", fam_relu}, {"sum", fam_sum},
    {"mean", fam_mean}, {"concat", fam_concat}, {"slice", fam_slice},
    {"embedding", fam_embedding}, {"softmax_xent", fam_xent}, {"mse", fam_mse},
    {"detach", fam_detach}, {"grad_scale", fam_grad_scale}, {"rnn_tanh_step", fam_rnn_step},
    {"dropout", fam_dropout}, {"lstm_gates", fam_lstm_gates}, {"lstm_cell", fam_lstm_cell},
    {"lstm_hidden", fam_lstm_hidden}, {"gru_gates", fam_gru_gates}, {"gru_hidden", fam_gru_hidden},
    {"gru_cho_gates", fam_gru_cho_gates}, {"gru_cho_reset", fam_gru_cho_reset},
    {"gru_cho_hidden", fam_gru_cho_hidden},
};
#define N_FAMILIES ((int)(sizeof families / sizeof *families))

static void seed_data(void) { bt_rng_seed(&data_rng, 2024); }

TestSuite(jvp_ops, .init = seed_data);

Test(jvp_ops, every_op_against_differences_and_backward)
{
    for (int f = 0; f < N_FAMILIES; f++) {
        jreport w = {0, 0};
        families[f].run(&w);
        fprintf(stderr, "jvp worst for op %-14s (a) fd %9.2e   (b) dot %9.2e\n", families[f].op,
                w.fd, w.dot);
    }
}

/* ---- no op without a case ----------------------------------------------------------- */

/* The names of the bt_op descriptors defined in the C files of ops/: `bt_op op_x = {"name", ...`
 * directly, or `{#NAME, ...` inside a macro, whose invocations `MACRO(name, ...`
 * then each define one. A descriptor written any other way fails the test, so
 * the scan is taught before the op can slip past it. */
static int scan_file(const char *text, char names[][32], int n, int max)
{
    regex_t desc, def;
    cr_assert_eq(regcomp(&desc, "bt_op[ \t]+[A-Za-z_#]+[ \t]*=[ \t]*\\{[ \t]*(\"([a-z_]+)\"|#([A-Za-z_]+))?",
                         REG_EXTENDED), 0);
    cr_assert_eq(regcomp(&def, "#define[ \t]+([A-Z_]+)\\(", REG_EXTENDED), 0);
    regmatch_t m[4];
    for (const char *p = text; regexec(&desc, p, 4, m, 0) == 0; p += m[0].rm_eo) {
        cr_assert(m[1].rm_so >= 0, "an op descriptor the scan cannot read: %.60s", p + m[0].rm_so);
        if (m[2].rm_so >= 0) {
            cr_assert_lt(n, max);
            snprintf(names[n++], 32, "%.*s", (int)(m[2].rm_eo - m[2].rm_so), p + m[2].rm_so);
            continue;
        }
        /* In a macro: the last #define before it names the macro. */
        const char *mac = NULL;
        regmatch_t dm[2];
        for (const char *q = text; regexec(&def, q, 2, dm, 0) == 0 && q + dm[0].rm_so < p + m[0].rm_so;
             q += dm[0].rm_eo)
            mac = q + dm[1].rm_so;
        cr_assert_not_null(mac, "a descriptor with #name outside a macro");
        char pat[96];
        snprintf(pat, sizeof pat, "\n%.*s\\(([a-z_]+),", (int)strcspn(mac, "("), mac);
        regex_t use;
        cr_assert_eq(regcomp(&use, pat, REG_EXTENDED), 0);
        regmatch_t um[2];
        for (const char *q = text; regexec(&use, q, 2, um, 0) == 0; q += um[0].rm_eo) {
            cr_assert_lt(n, max);
            snprintf(names[n++], 32, "%.*s", (int)(um[1].rm_eo - um[1].rm_so), q + um[1].rm_so);
        }
        regfree(&use);
    }
    regfree(&desc);
    regfree(&def);
    return n;
}

static int scan_ops(char names[][32], int max)
{
    char dir[512];
    snprintf(dir, sizeof dir, "%s/ops", BT_SOURCE_ROOT);
    DIR *d = opendir(dir);
    cr_assert_not_null(d, "open %s", dir);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) {
        size_t len = strlen(e->d_name);
        if (len < 3 || strcmp(e->d_name + len - 2, ".c") != 0)
            continue;
        char path[800];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        FILE *f = fopen(path, "r");
        cr_assert_not_null(f, "open %s", path);
        static char text[1 << 18];
        size_t got = fread(text, 1, sizeof text - 1, f);
        fclose(f);
        text[got] = '\0';
        n = scan_file(text, names, n, max);
    }
    closedir(d);
    return n;
}

Test(jvp_ops, every_op_in_ops_has_a_case)
{
    char names[64][32];
    int n = scan_ops(names, 64);
    cr_assert_geq(n, 21, "the scan of ops/ found only %d descriptors", n);
    for (int i = 0; i < n; i++) {
        bool found = false;
        for (int f = 0; f < N_FAMILIES && !found; f++)
            found = strcmp(families[f].op, names[i]) == 0;
        cr_expect(found, "op %s (ops/) has no forward-mode case in test_jvp.c: add one to "
                  "`families`", names[i]);
    }
    fprintf(stderr, "jvp: %d op descriptors in ops/, each with a case\n", n);
}

/* An op without a tangent rule stops the sweep with a message naming it. */
static void copy_forward(bt_node *n)
{
    memcpy(n->out->data, n->in[0]->data, n->out->size * sizeof(bt_real));
}

static void copy_backward(bt_node *n)
{
    for (size_t i = 0; i < n->out->size; i++)
        n->in[0]->grad[i] += n->out->grad[i];
}

static const bt_op op_nojvp = {"nojvp", 1, copy_forward, copy_backward, NULL};

Test(jvp_ops, an_op_without_a_rule_is_refused)
{
    bt_graph *g = bt_graph_new();
    bt_tensor *x = test_tensor2(2, 3, true);
    bt_real u[6] = {1, 2, 3, 4, 5, 6};
    bt_tensor *out = bt_op_output(g, 2, x->shape);
    bt_node *n = bt_graph_record(g, &op_nojvp, out, &x, 1);
    cr_assert_not_null(n);
    op_nojvp.forward(n);
    bt_tensor *y = bt_tanh(g, out);
    cr_assert_eq(bt_jvp(g), BT_OK, "no tangents anywhere: nothing to push, nothing refused");
    cr_expect_null(y->tangent);
    x->tangent = u;
    cr_assert_eq(bt_jvp(g), BT_ERR_ARG);
    cr_expect(strstr(bt_graph_error(g), "op nojvp has no tangent rule"), "%s", bt_graph_error(g));
    bt_graph_free(g);
    bt_tensor_free(x);
}

/* ---- the shipped cells ------------------------------------------------------------------- */

static bt_registry *reg;

static void load_plugins(void)
{
    char err[1024] = "";
    seed_data();
    reg = bt_registry_new();
    cr_assert_not_null(reg);
    cr_assert_eq(bt_registry_load_default(reg, err, sizeof err), BT_OK, "%s", err);
}

static void unload_plugins(void) { bt_registry_free(reg); }

TestSuite(jvp_cells, .init = load_plugins, .fini = unload_plugins);

enum { CB = 2, CT = 4, CV = 5, CH = 4, CD = 3 };

typedef struct cellctx {
    bt_model *m;
    bool real_x;  /* a token cell handed real rows (its W_x is [D, ...]) */
    int steps;    /* 0: one bt_model_step; else steps of bt_unroll_step */
    bt_sequence seq;
    int32_t ids[CB * CT], targets[CB * CT];
    bt_real x[CB * CT * CD], y[CB * CT * CV];
} cellctx;

static const char *const cells[] = {"rnn_tanh", "linear", "gru", "gru_torch", "lstm", "influence"};

static bt_cell_dims dims_of(const bt_cell_def *def, bool real_x)
{
    if (strcmp(def->name, "influence") == 0)
        return (bt_cell_dims){2, CH, 1}; /* P = 2 positive signs of N = 4, output 1 */
    if (def->input == BT_INPUT_TOKENS)
        return (bt_cell_dims){real_x ? CD : CV, CH, CV};
    return (bt_cell_dims){CD, CH, 2};
}

/* A model with weights N(0, 0.5^2) (gradients through time matter), data, and
 * the leaves: every parameter, every initial state, and x for one real step. */
static void make_cell(jcase *c, cellctx *x, const char *cell, bool real_x, int steps)
{
    const bt_cell_def *def = bt_registry_cell(reg, cell);
    cr_assert_not_null(def, "cell %s is not registered", cell);
    bt_cell_dims dims = dims_of(def, real_x);
    char err[512];
    memset(x, 0, sizeof *x);
    cr_assert_eq(bt_model_new(def, dims, &x->m, err, sizeof err), BT_OK, "%s", err);
    for (size_t i = 0; i < bt_params_total(x->m->params); i++)
        bt_params_data(x->m->params)[i] = (bt_real)(0.5 * bt_rng_normal(&data_rng));
    x->real_x = real_x || def->input == BT_INPUT_REAL;
    x->steps = steps;
    for (int i = 0; i < CB * CT; i++) {
        x->ids[i] = (int32_t)(bt_rng_next(&data_rng) % CV);
        x->targets[i] = (int32_t)(bt_rng_next(&data_rng) % CV);
    }
    for (int i = 0; i < CB * CT * dims.input && x->real_x; i++)
        x->x[i] = (bt_real)bt_rng_normal(&data_rng);
    for (int i = 0; i < CB * CT * dims.output; i++)
        x->y[i] = (bt_real)bt_rng_normal(&data_rng);
    x->seq = def->input == BT_INPUT_TOKENS
                 ? (bt_sequence){.B = CB, .T = CT, .ids = x->ids, .targets = x->targets}
                 : (bt_sequence){.B = CB, .T = CT, .x = x->x, .y = x->y};
    for (int i = 0; i < x->m->n_params; i++)
        add_leaf(c, x->m->ptab[i], LEAF_TANGENT);
    for (int k = 0; k < x->m->n_states; k++) {
        bt_tensor *s = make(2, (int[]){CB, x->m->state_width[k]}, true, -0.8, 0.8);
        add_leaf(c, s, LEAF_TANGENT);
    }
    if (x->real_x && steps == 0)
        add_leaf(c, make(2, (int[]){CB, dims.input}, true, -1, 1), LEAF_TANGENT);
}

static int build_cell(bt_graph *g, bt_tensor *const *L, void *ctx, bt_tensor **outs)
{
    cellctx *x = ctx;
    const bt_model *m = x->m;
    bt_tensor *const *state = L + m->n_params;
    bt_tensor *next[BT_MAX_STATES], *cur[BT_MAX_STATES];
    if (x->steps == 0) {
        bt_step_input in = {.batch = CB, .ids = x->real_x ? NULL : x->ids,
                            .x = x->real_x ? L[m->n_params + m->n_states] : NULL};
        outs[0] = bt_model_step(g, m, &in, state, next);
        memcpy(outs + 1, next, sizeof(bt_tensor *) * (size_t)m->n_states);
        return 1 + m->n_states;
    }
    memcpy(cur, state, sizeof(bt_tensor *) * (size_t)m->n_states);
    for (int s = 0; s < x->steps; s++) {
        outs[s] = bt_unroll_step(g, m, &x->seq, s, cur, next); /* the step's loss */
        memcpy(cur, next, sizeof(bt_tensor *) * (size_t)m->n_states);
    }
    memcpy(outs + x->steps, cur, sizeof(bt_tensor *) * (size_t)m->n_states);
    return x->steps + m->n_states;
}

/* Leaves other than the model's parameters are the case's own. */
static void free_cell(jcase *c, cellctx *x)
{
    for (int i = x->m->n_params; i < c->n_leaves; i++)
        bt_tensor_free(c->leaves[i]);
    c->n_leaves = 0;
    bt_model_free(x->m);
}

static void check_cell(const char *cell, bool real_x, int steps, jreport *w)
{
    char what[96];
    snprintf(what, sizeof what, "cell %s%s, %s", cell, real_x ? " (real x)" : "",
             steps ? "4 unrolled steps with losses" : "one step");
    cellctx x;
    jcase c = {.what = what, .build = build_cell, .ctx = &x, .adjoint = 1};
    make_cell(&c, &x, cell, real_x, steps);
    jreport r = run_case(&c, 31);
    w->fd = fmax(w->fd, r.fd);
    w->dot = fmax(w->dot, r.dot);
    free_cell(&c, &x);
}

Test(jvp_cells, every_cell_one_step_and_unrolled)
{
    for (size_t i = 0; i < sizeof cells / sizeof *cells; i++) {
        const bt_cell_def *def = bt_registry_cell(reg, cells[i]);
        cr_assert_not_null(def, "cell %s is not registered", cells[i]);
        jreport w = {0, 0};
        check_cell(cells[i], false, 0, &w);
        if (def->input == BT_INPUT_TOKENS)
            check_cell(cells[i], true, 0, &w);
        check_cell(cells[i], false, CT, &w);
        fprintf(stderr, "jvp worst for cell %-10s (a) fd %9.2e   (b) dot %9.2e\n", cells[i],
                w.fd, w.dot);
    }
}

/* ---- the fused tanh step against its five ops ------------------------------------------ */

static double max_rel_diff(const bt_real *a, const bt_real *b, size_t n)
{
    double diff = 0, scale = 0;
    for (size_t i = 0; i < n; i++) {
        diff = fmax(diff, fabs((double)a[i] - (double)b[i]));
        scale = fmax(scale, fmax(fabs((double)a[i]), fabs((double)b[i])));
    }
    return scale > 0 ? diff / scale : 0;
}

Test(jvp_ops, fused_tanh_step_equals_its_five_ops)
{
    enum { B = 3, V = 5, D = 2, H = 4 };
    for (int real = 0; real < 2; real++) {
        bt_tensor *wx = make(2, (int[]){real ? D : V, H}, true, -0.8, 0.8);
        bt_tensor *h = make(2, (int[]){B, H}, true, -1, 1);
        bt_tensor *whh = make(2, (int[]){H, H}, true, -0.8, 0.8);
        bt_tensor *b = make(1, (int[]){H}, true, -0.5, 0.5);
        bt_tensor *x = make(2, (int[]){B, D}, true, -1, 1);
        bt_tensor *leaves[5] = {wx, h, whh, b, x};
        bt_real *u[5];
        for (int i = 0; i < 5; i++) {
            u[i] = xcalloc(leaves[i]->size, sizeof(bt_real));
            for (size_t e = 0; e < leaves[i]->size; e++)
                u[i][e] = (bt_real)bt_rng_normal(&data_rng);
            leaves[i]->tangent = u[i];
        }
        bt_graph *g = bt_graph_new();
        bt_tensor *fused = bt_rnn_tanh_step(g, wx, real ? NULL : some_ids, real ? x : NULL, h, whh, b);
        bt_tensor *in = real ? bt_matmul(g, x, wx) : bt_embedding(g, wx, some_ids, B);
        bt_tensor *five = bt_tanh(g, bt_add(g, bt_add(g, in, bt_matmul(g, h, whh)), b));
        cr_assert_eq(bt_jvp(g), BT_OK, "%s", bt_graph_error(g));
        double dv = max_rel_diff(fused->data, five->data, fused->size);
        double dt = max_rel_diff(fused->tangent, five->tangent, fused->size);
        fprintf(stderr, "jvp fused rnn_tanh_step (%s) vs its five ops: values %.2e, tangents %.2e\n",
                real ? "real x" : "ids", dv, dt);
        cr_expect_leq(dt, SAME_TOL, "fused step's tangent differs from the five ops' by %.3g", dt);
        bt_graph_free(g);
        for (int i = 0; i < 5; i++) {
            bt_tensor_free(leaves[i]);
            free(u[i]);
        }
    }
}

Test(jvp_ops, no_graph_or_a_failed_one)
{
    cr_expect_eq(bt_jvp(NULL), BT_ERR_ARG);
    bt_graph *g = bt_graph_new();
    cr_expect_eq(bt_jvp(g), BT_OK, "an empty tape");
    bt_tensor *a = test_tensor2(2, 3, true), *b = test_tensor2(4, 5, true);
    cr_expect_null(bt_matmul(g, a, b));
    cr_expect_eq(bt_jvp(g), BT_ERR_SHAPE, "the graph's first error, not a sweep over a broken tape");
    bt_graph_free(g);
    bt_tensor_free(a);
    bt_tensor_free(b);
}

/* ---- one recording: a backward and many sweeps, as the online estimators use it ---------- */

/* The tangents (or zeros) of outs, concatenated into buf; returns the count. */
static size_t save_tangents(bt_tensor *const *outs, int n, double *buf)
{
    size_t at = 0;
    for (int k = 0; k < n; k++)
        for (size_t e = 0; e < outs[k]->size; e++)
            buf[at++] = outs[k]->tangent ? (double)outs[k]->tangent[e] : 0;
    return at;
}

/* The gradients of the leaves, concatenated into buf. */
static size_t save_grads(const jcase *c, double *buf)
{
    size_t at = 0;
    for (int i = 0; i < c->n_leaves; i++)
        for (size_t e = 0; e < c->leaves[i]->size; e++)
            buf[at++] = (double)c->leaves[i]->grad[e];
    return at;
}

static void zero_grads(jcase *c)
{
    for (int i = 0; i < c->n_leaves; i++)
        bt_tensor_zero_grad(c->leaves[i]);
}

/* Tangents u on states only (first) or parameters only, as UORO's two sweeps. */
static void seed(jcase *c, const cellctx *x, bt_real *const *u, bool states)
{
    for (int i = 0; i < c->n_leaves; i++)
        c->leaves[i]->tangent = (i >= x->m->n_params) == states ? u[i] : NULL;
}

static double dot_on(const jcase *c, const cellctx *x, const double *grads, bt_real *const *u,
                     bool states)
{
    double s = 0;
    size_t at = 0;
    for (int i = 0; i < c->n_leaves; i++)
        for (size_t e = 0; e < c->leaves[i]->size; e++, at++)
            if ((i >= x->m->n_params) == states)
                s += grads[at] * (double)u[i][e];
    return s;
}

static void expect_same(const double *a, const double *b, size_t n, const char *cell, const char *what)
{
    for (size_t i = 0; i < n; i++)
        if (a[i] != b[i]) {
            cr_expect_eq(a[i], b[i], "cell %s: %s differs at %zu: %.17g vs %.17g", cell, what, i, a[i], b[i]);
            return;
        }
}

/* Step graph: the step and its loss, then probe = sum_k <next_k, nu_k>. */
static int record_step(bt_graph *g, jcase *c, cellctx *x, bt_rng *nu_rng, bt_tensor **outs, bt_tensor **probe)
{
    bt_graph_reset(g);
    int n = build_cell(g, c->leaves, x, outs); /* loss, then next states */
    *probe = NULL;
    for (int k = 1; k < n; k++) {
        bt_tensor *nu = bt_graph_tensor(g, outs[k]->ndim, outs[k]->shape);
        for (size_t e = 0; nu && e < nu->size; e++)
            nu->data[e] = bt_rng_uniform(nu_rng) < 0.5 ? -1 : 1; /* UORO's random signs */
        bt_tensor *t = bt_sum(g, bt_mul(g, outs[k], nu));
        *probe = *probe ? bt_add(g, *probe, t) : t;
    }
    cr_assert_eq(bt_graph_status(g), BT_OK, "%s", bt_graph_error(g));
    return n;
}

/* Fresh recordings, one with a backward only and one with a sweep only, give the
 * gradients gl and the tangents tp that one recording gave amid other sweeps. */
static void fresh_recordings_agree(bt_graph *g, jcase *c, cellctx *x, bt_real *const *u,
                                   const double *gl, const double *tp)
{
    bt_tensor *outs[MAX_OUTS], *probe;
    bt_rng nu_rng;
    bt_rng_seed(&nu_rng, 5);
    size_t n_grads = 0;
    for (int i = 0; i < c->n_leaves; i++)
        n_grads += c->leaves[i]->size;
    double *got = xcalloc(n_grads > 4096 ? n_grads : 4096, sizeof(double));
    int n = record_step(g, c, x, &nu_rng, outs, &probe);
    for (int i = 0; i < c->n_leaves; i++)
        c->leaves[i]->tangent = NULL;
    zero_grads(c);
    cr_assert_eq(bt_backward(g, outs[0]), BT_OK);
    save_grads(c, got);
    expect_same(gl, got, n_grads, c->what, "the loss's backward with and without sweeps");
    record_step(g, c, x, &nu_rng, outs, &probe);
    seed(c, x, u, false);
    cr_assert_eq(bt_jvp(g), BT_OK);
    size_t nt = save_tangents(outs, n, got);
    expect_same(tp, got, nt, c->what, "the parameter sweep, fresh or after a backward");
    free(got);
}

static void one_recording(const char *cell)
{
    const bt_host *H = bt_host_table();
    cellctx x;
    jcase c = {.what = cell, .ctx = &x};
    make_cell(&c, &x, cell, false, 1);
    bt_real *u[MAX_LEAVES];
    size_t n_grads = 0;
    for (int i = 0; i < c.n_leaves; i++) {
        u[i] = xcalloc(c.leaves[i]->size, sizeof(bt_real));
        for (size_t e = 0; e < c.leaves[i]->size; e++)
            u[i][e] = (bt_real)bt_rng_normal(&data_rng);
        n_grads += c.leaves[i]->size;
    }
    double *ts1 = xcalloc(4096, sizeof(double)), *tp1 = xcalloc(4096, sizeof(double));
    double *again = xcalloc(4096, sizeof(double));
    double *gp1 = xcalloc(n_grads, sizeof(double)), *gl1 = xcalloc(n_grads, sizeof(double));
    double *fresh = xcalloc(n_grads, sizeof(double));
    bt_graph *g = bt_graph_new();
    bt_tensor *outs[MAX_OUTS], *probe;
    bt_rng nu_rng;
    bt_rng_seed(&nu_rng, 5);
    int n = record_step(g, &c, &x, &nu_rng, outs, &probe);
    /* sweep (states), backward (probe), sweep (params), backward (loss), then again */
    seed(&c, &x, u, true);
    cr_assert_eq(H->jvp(g), BT_OK, "%s", bt_graph_error(g));
    size_t nt = save_tangents(outs, n, ts1);
    zero_grads(&c);
    cr_assert_eq(H->backward_from(g, probe, (bt_real[]){1}), BT_OK, "%s", bt_graph_error(g));
    save_grads(&c, gp1);
    seed(&c, &x, u, false);
    cr_assert_eq(H->jvp(g), BT_OK);
    save_tangents(outs, n, tp1);
    zero_grads(&c);
    cr_assert_eq(H->backward_from(g, outs[0], (bt_real[]){1}), BT_OK);
    save_grads(&c, gl1);
    seed(&c, &x, u, true);
    cr_assert_eq(H->jvp(g), BT_OK);
    save_tangents(outs, n, again);
    expect_same(ts1, again, nt, cell, "the state sweep, repeated after two backwards");
    zero_grads(&c);
    cr_assert_eq(H->backward_from(g, probe, (bt_real[]){1}), BT_OK);
    save_grads(&c, fresh);
    expect_same(gp1, fresh, n_grads, cell, "the probe's backward, repeated after sweeps");
    /* <nu, J_s u_s> = <J_s^T nu, u_s> and <nu, J_theta u_theta> = <J_theta^T nu, u_theta>:
     * UORO's two products, from one recording */
    double dots[2][2] = {{0, dot_on(&c, &x, gp1, u, true)}, {0, dot_on(&c, &x, gp1, u, false)}};
    for (int w = 0; w < 2; w++) {
        seed(&c, &x, u, w == 0);
        cr_assert_eq(H->jvp(g), BT_OK);
        dots[w][0] = probe->tangent ? (double)probe->tangent[0] : 0;
        double rel = fabs(dots[w][0] - dots[w][1]) / fmax(fabs(dots[w][0]), 1e-300);
        cr_expect_leq(rel, DOT_TOL, "cell %s: <nu, J u> %.17g vs <J^T nu, u> %.17g (%s)", cell,
                      dots[w][0], dots[w][1], w ? "parameters" : "states");
    }
    fresh_recordings_agree(g, &c, &x, u, gl1, tp1);
    fprintf(stderr, "jvp cell %-10s one recording: 3 backwards and 5 sweeps repeat bitwise, match fresh "
            "recordings bitwise; <nu,Ju> = <J^T nu,u> to %.1e (states), %.1e (parameters)\n", cell,
            fabs(dots[0][0] - dots[0][1]) / fmax(fabs(dots[0][0]), 1e-300),
            fabs(dots[1][0] - dots[1][1]) / fmax(fabs(dots[1][0]), 1e-300));
    for (int i = 0; i < c.n_leaves; i++) {
        c.leaves[i]->tangent = NULL;
        free(u[i]);
    }
    free(ts1), free(tp1), free(again), free(gp1), free(gl1), free(fresh);
    bt_graph_free(g);
    free_cell(&c, &x);
}

Test(jvp_cells, one_recording_serves_backward_and_many_sweeps)
{
    for (size_t i = 0; i < sizeof cells / sizeof *cells; i++)
        one_recording(cells[i]);
}

/* ---- memory: sweeps after the first allocate nothing ------------------------------------- */

/* Sweeps (any leaves seeded) without growing the arena or touching the heap. */
static void sweep_subsets(jcase *c, bt_graph *g, bt_real *const *u)
{
    size_t used = bt_arena_used(bt_graph_arena(g));
    uint64_t heap = bt_alloc_count();
    for (int sweep = 0; sweep < 6; sweep++) {
        for (int i = 0; i < c->n_leaves; i++)
            c->leaves[i]->tangent = sweep == 5 || i % 5 == sweep ? u[i] : NULL;
        cr_assert_eq(bt_jvp(g), BT_OK, "%s", bt_graph_error(g));
    }
    cr_expect_eq(bt_arena_used(bt_graph_arena(g)), used, "cell %s: a later sweep grew the arena",
                 c->what);
    cr_expect_eq(bt_alloc_count(), heap, "cell %s: a sweep allocated on the heap", c->what);
}

/* Windows of 4 unrolled steps: record, sweep, sweeps, backward, sweeps. The first
 * sweep makes the tangent buffers; later ones reuse them, before and after a
 * backward; from the second window on, nothing is allocated on the heap at all. */
static void sweeps_allocate_nothing(const char *cell)
{
    cellctx x;
    jcase c = {.what = cell, .ctx = &x};
    make_cell(&c, &x, cell, false, CT);
    bt_real *u[MAX_LEAVES];
    for (int i = 0; i < c.n_leaves; i++) {
        u[i] = xcalloc(c.leaves[i]->size, sizeof(bt_real));
        for (size_t e = 0; e < c.leaves[i]->size; e++)
            u[i][e] = (bt_real)bt_rng_normal(&data_rng);
    }
    bt_graph *g = bt_graph_new();
    bt_tensor *outs[MAX_OUTS];
    uint64_t heap = 0;
    for (int window = 0; window < 4; window++) {
        if (window == 1)
            heap = bt_alloc_count();
        bt_graph_reset(g);
        build_cell(g, c.leaves, &x, outs);
        for (int i = 0; i < c.n_leaves; i++)
            c.leaves[i]->tangent = u[i];
        cr_assert_eq(bt_jvp(g), BT_OK, "%s", bt_graph_error(g));
        sweep_subsets(&c, g, u);
        cr_assert_eq(bt_backward(g, outs[0]), BT_OK, "%s", bt_graph_error(g));
        sweep_subsets(&c, g, u);
    }
    cr_expect_eq(bt_alloc_count(), heap, "cell %s: windows after the first allocated on the heap",
                 cell);
    for (int i = 0; i < c.n_leaves; i++) {
        c.leaves[i]->tangent = NULL;
        free(u[i]);
    }
    bt_graph_free(g);
    free_cell(&c, &x);
}

Test(jvp_cells, sweeps_after_the_first_allocate_nothing)
{
    for (size_t i = 0; i < sizeof cells / sizeof *cells; i++)
        sweeps_allocate_nothing(cells[i]);
}

/* ---- RTRL from sweeps (docs/forward-mode.md), against full BPTT ----------------------- */

/* Full BPTT's gradient of mean_t l_t over seq from the states h0, by the unroller. */
static void bptt_gradient(bt_model *m, const bt_sequence *seq, bt_real *const *h0, double *grad)
{
    char err[512] = "", name[32];
    const char *opts;
    bt_split_spec("full", name, sizeof name, &opts);
    const bt_policy_def *pd = bt_registry_policy(reg, name);
    cr_assert_not_null(pd);
    void *ps = NULL;
    cr_assert_eq(pd->create(bt_host_table(), opts, &ps, err, sizeof err), 0, "%s", err);
    bt_unroller *u;
    cr_assert_eq(bt_unroller_new(m, seq->B, seq->T, &u, err, sizeof err), BT_OK, "%s", err);
    bt_unroll_opts o = {.policy = pd, .policy_state = ps, .accumulate = true};
    bt_unroll_result res = {0};
    bt_params_zero_grad(m->params);
    cr_assert_eq(bt_unroll_run(u, seq, h0, &o, NULL, NULL, NULL, &res, err, sizeof err), BT_OK,
                 "%s", err);
    for (size_t j = 0; j < bt_params_total(m->params); j++)
        grad[j] = (double)bt_params_grad(m->params)[j];
    bt_unroller_free(u);
    pd->destroy(ps);
}

typedef struct rtrl {
    size_t P, S, soff[BT_MAX_STATES];
    bt_real *M, *Mn; /* [P,S]: row j is d state / d theta_j, contiguous per state */
    bt_real *E;      /* [P]: e_j, the parameters' tangent */
    bt_real *h;      /* [S]: the state */
} rtrl;

/* One step of RTRL on a recorded step graph: P sweeps, re-seeded, never re-recorded.
 * Sweep j: parameters <- e_j (only the tensor holding j), states <- row j of M.
 * The next states' tangents are row j of M_t = J_h M_{t-1} + dF/dtheta; the
 * loss's tangent is d l_t / d theta_j. */
static void rtrl_step(const bt_host *H, bt_graph *g, bt_model *m, rtrl *r, bt_tensor **state,
                      bt_tensor **next, bt_tensor *loss, double *grad, double weight)
{
    bt_real *base = bt_params_data(m->params);
    for (size_t j = 0; j < r->P; j++) {
        r->E[j] = 1;
        for (int q = 0; q < m->n_params; q++) {
            size_t off = (size_t)(m->ptab[q]->data - base);
            m->ptab[q]->tangent = j >= off && j < off + m->ptab[q]->size ? r->E + off : NULL;
        }
        for (int k = 0; k < m->n_states; k++)
            state[k]->tangent = r->M + j * r->S + r->soff[k];
        cr_assert_eq(H->jvp(g), BT_OK, "%s", bt_graph_error(g));
        grad[j] += loss->tangent ? weight * (double)loss->tangent[0] : 0;
        for (int k = 0; k < m->n_states; k++)
            for (size_t e = 0; e < next[k]->size; e++)
                r->Mn[j * r->S + r->soff[k] + e] = next[k]->tangent ? next[k]->tangent[e] : 0;
        r->E[j] = 0;
    }
    bt_real *t = r->M;
    r->M = r->Mn, r->Mn = t;
    for (int k = 0; k < m->n_states; k++)
        memcpy(r->h + r->soff[k], next[k]->data, next[k]->size * sizeof(bt_real));
}

static void rtrl_equals_bptt(const char *cell)
{
    const bt_host *H = bt_host_table();
    cellctx x;
    jcase c = {.what = cell, .ctx = &x};
    make_cell(&c, &x, cell, false, CT);
    bt_model *m = x.m;
    rtrl r = {.P = bt_params_total(m->params)};
    bt_real *h0[BT_MAX_STATES];
    for (int k = 0; k < m->n_states; k++) {
        r.soff[k] = r.S;
        r.S += (size_t)CB * (size_t)m->state_width[k];
    }
    r.M = xcalloc(r.P * r.S, sizeof(bt_real)); /* M_0 = 0: h0 does not depend on theta */
    r.Mn = xcalloc(r.P * r.S, sizeof(bt_real));
    r.E = xcalloc(r.P, sizeof(bt_real));
    r.h = xcalloc(r.S, sizeof(bt_real));
    double *grad = xcalloc(r.P, sizeof(double)), *want = xcalloc(r.P, sizeof(double));
    for (int k = 0; k < m->n_states; k++) {
        memcpy(r.h + r.soff[k], c.leaves[m->n_params + k]->data, c.leaves[m->n_params + k]->size * sizeof(bt_real));
        h0[k] = c.leaves[m->n_params + k]->data;
    }
    bt_graph *g = bt_graph_new();
    for (int t = 0; t < CT; t++) { /* one recording per step */
        bt_graph_reset(g);
        bt_tensor *state[BT_MAX_STATES], *next[BT_MAX_STATES];
        for (int k = 0; k < m->n_states; k++) {
            state[k] = bt_graph_input(g, 2, (int[]){CB, m->state_width[k]}, r.h + r.soff[k]);
            cr_assert_not_null(state[k]);
            state[k]->requires_grad = true; /* a leaf with a tangent must require grad */
        }
        bt_tensor *loss = bt_unroll_step(g, m, &x.seq, t, state, next);
        cr_assert_not_null(loss, "%s", bt_graph_error(g));
        rtrl_step(H, g, m, &r, state, next, loss, grad, 1.0 / CT);
    }
    bptt_gradient(m, &x.seq, h0, want);
    double diff = 0, scale = 0;
    for (size_t j = 0; j < r.P; j++) {
        diff = fmax(diff, fabs(grad[j] - want[j]));
        scale = fmax(scale, fabs(want[j]));
    }
    fprintf(stderr, "jvp cell %-10s RTRL from %zu sweeps per step vs full BPTT over %d steps: "
            "%.2e (relative)\n", cell, r.P, CT, diff / scale);
    cr_expect_leq(diff / scale, DOT_TOL, "cell %s: RTRL from sweeps differs from BPTT by %.3g",
                  cell, diff / scale);
    for (int q = 0; q < m->n_params; q++)
        m->ptab[q]->tangent = NULL;
    free(r.M), free(r.Mn), free(r.E), free(r.h), free(grad), free(want);
    bt_graph_free(g);
    free_cell(&c, &x);
}

Test(jvp_cells, rtrl_from_sweeps_equals_full_bptt)
{
    for (size_t i = 0; i < sizeof cells / sizeof *cells; i++)
        rtrl_equals_bptt(cells[i]);
}

/* What bt_jvp reads: tangents of leaves that require grad. A tangent on a leaf
 * that does not (its ops are not recorded) or on an op's output is not read. */
Test(jvp_ops, tangents_come_from_recorded_leaves_only)
{
    bt_graph *g = bt_graph_new();
    bt_tensor *x = test_tensor2(2, 2, false), *w = test_tensor2(2, 2, true);
    bt_real ux[4] = {1, 1, 1, 1}, uw[4] = {1, 2, 3, 4}, junk[4] = {9, 9, 9, 9};
    for (int i = 0; i < 4; i++)
        x->data[i] = (bt_real)(0.1 * i), w->data[i] = (bt_real)(0.2 * i - 0.3);
    x->tangent = ux;
    bt_tensor *tx = bt_tanh(g, x); /* not on the tape: x does not require grad */
    bt_tensor *y = bt_mul(g, tx, w);
    cr_assert_eq(bt_jvp(g), BT_OK);
    cr_expect_null(tx->tangent, "an op of a leaf without requires_grad has no tangent");
    cr_expect_null(y->tangent, "x's tangent is not read: w has none, so y's is zero");
    w->tangent = uw;
    y->tangent = junk; /* a caller's tangent on an op output is overwritten */
    cr_assert_eq(bt_jvp(g), BT_OK);
    cr_assert_not_null(y->tangent);
    cr_expect_neq((void *)y->tangent, (void *)junk);
    for (int i = 0; i < 4; i++)
        cr_expect_eq(y->tangent[i], tx->data[i] * uw[i], "y' = tanh(x) w' at %d", i);
    bt_graph_free(g);
    bt_tensor_free(x);
    bt_tensor_free(w);
}
