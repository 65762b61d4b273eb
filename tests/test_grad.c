/* test_grad.c: a central-difference gradient check of every op with a
 * backward, including broadcasting, transposes and dimensions of size 1. */
#include <stdio.h>
#include <string.h>

#include "check.h"

typedef struct {
    int kind;
    int a[4], b[4];
    int an, bn;
    double c;
} spec;

enum { K_ADD, K_SUB, K_MUL, K_MATMUL, K_MATMUL_TA, K_MATMUL_TB, K_MATMUL_TATB, K_NEG, K_SCALE,
       K_EXP, K_LOG, K_TANH, K_SIGMOID, K_RELU, K_SUM, K_MEAN, K_SLICE, K_CONCAT, K_EMBED,
       K_XENT, K_MSE, K_GRAD_SCALE };

static bt_tensor *build(bt_graph *g, bt_tensor *const *in, int n, void *ctx)
{
    const spec *s = ctx;
    bt_tensor *a = in[0], *b = n > 1 ? in[1] : NULL;
    switch (s->kind) {
    case K_ADD: return weighted_sum(g, bt_add(g, a, b));
    case K_SUB: return weighted_sum(g, bt_sub(g, a, b));
    case K_MUL: return weighted_sum(g, bt_mul(g, a, b));
    case K_MATMUL: return weighted_sum(g, bt_matmul(g, a, b));
    case K_MATMUL_TA: return weighted_sum(g, bt_matmul_t(g, a, true, b, false));
    case K_MATMUL_TB: return weighted_sum(g, bt_matmul_t(g, a, false, b, true));
    case K_MATMUL_TATB: return weighted_sum(g, bt_matmul_t(g, a, true, b, true));
    case K_NEG: return weighted_sum(g, bt_neg(g, a));
    case K_SCALE: return weighted_sum(g, bt_scale(g, a, s->c));
    case K_EXP: return weighted_sum(g, bt_exp(g, a));
    case K_LOG: return weighted_sum(g, bt_log(g, a));
    case K_TANH: return weighted_sum(g, bt_tanh(g, a));
    case K_SIGMOID: return weighted_sum(g, bt_sigmoid(g, a));
    case K_RELU: return weighted_sum(g, bt_relu(g, a));
    /* sum and mean feed a nonlinearity so their gradient is not just a seed */
    case K_SUM: return bt_tanh(g, bt_sum(g, bt_mul(g, a, a)));
    case K_MEAN: return bt_tanh(g, bt_mean(g, bt_mul(g, a, a)));
    case K_SLICE: return weighted_sum(g, bt_slice(g, a, 1, 2));
    case K_CONCAT: {
        bt_tensor *parts[3] = {a, b, in[2]};
        return weighted_sum(g, bt_concat(g, parts, 3));
    }
    case K_EMBED: {
        static const int32_t ids[5] = {2, 0, 2, 3, 2}; /* repeats: rows accumulate */
        return weighted_sum(g, bt_embedding(g, a, ids, 5));
    }
    case K_XENT: {
        static const int32_t t[4] = {1, 0, 4, 1};
        return bt_softmax_xent(g, a, t);
    }
    case K_MSE: return bt_mse(g, a, b);
    case K_GRAD_SCALE: return weighted_sum(g, bt_tanh(g, bt_grad_scale(g, a, s->c)));
    }
    return NULL;
}

static void check(const char *what, spec s, int n_in, double lo, double hi)
{
    bt_rng r;
    bt_rng_seed(&r, 42 + (uint64_t)s.kind);
    bt_tensor *in[3] = {NULL, NULL, NULL};
    in[0] = test_tensor(s.an, s.a, true);
    if (n_in > 1)
        in[1] = test_tensor(s.bn, s.b, true);
    if (n_in > 2) {
        int w[2] = {s.a[0], 3};
        in[2] = test_tensor(2, w, true);
    }
    for (int i = 0; i < n_in; i++) {
        cr_assert_not_null(in[i], "%s: could not make input %d", what, i);
        fill_uniform(in[i], &r, lo, hi);
    }
    assert_gradcheck(what, build, &s, in, n_in);
    for (int i = 0; i < n_in; i++)
        bt_tensor_free(in[i]);
}

#define SHAPE(...) {__VA_ARGS__}

Test(grad, add_same_shape) { check("add", (spec){K_ADD, SHAPE(3, 4), SHAPE(3, 4), 2, 2, 0}, 2, -1, 1); }
Test(grad, add_row_bias) { check("add [M,N]+[N]", (spec){K_ADD, SHAPE(3, 4), SHAPE(4), 2, 1, 0}, 2, -1, 1); }
Test(grad, add_column_broadcast) { check("add [M,N]+[M,1]", (spec){K_ADD, SHAPE(3, 4), SHAPE(3, 1), 2, 2, 0}, 2, -1, 1); }
Test(grad, add_left_broadcast) { check("add [1,N]+[M,N]", (spec){K_ADD, SHAPE(1, 4), SHAPE(3, 4), 2, 2, 0}, 2, -1, 1); }
Test(grad, add_3d) { check("add [2,3,4]+[3,1]", (spec){K_ADD, SHAPE(2, 3, 4), SHAPE(3, 1), 3, 2, 0}, 2, -1, 1); }
Test(grad, add_scalar_like) { check("add [M,N]+[1]", (spec){K_ADD, SHAPE(3, 4), SHAPE(1), 2, 1, 0}, 2, -1, 1); }
Test(grad, sub_row_bias) { check("sub [M,N]-[N]", (spec){K_SUB, SHAPE(3, 4), SHAPE(4), 2, 1, 0}, 2, -1, 1); }
Test(grad, sub_reverse_broadcast) { check("sub [N]-[M,N]", (spec){K_SUB, SHAPE(4), SHAPE(3, 4), 1, 2, 0}, 2, -1, 1); }
Test(grad, mul_same_shape) { check("mul", (spec){K_MUL, SHAPE(3, 4), SHAPE(3, 4), 2, 2, 0}, 2, -1, 1); }
Test(grad, mul_row_bias) { check("mul [M,N]*[1,N]", (spec){K_MUL, SHAPE(3, 4), SHAPE(1, 4), 2, 2, 0}, 2, -1, 1); }
Test(grad, sum_of_square) { check("sum(a*a), a used twice", (spec){K_SUM, SHAPE(2, 3), SHAPE(0), 2, 0, 0}, 1, -1, 1); }
Test(grad, matmul) { check("matmul", (spec){K_MATMUL, SHAPE(3, 5), SHAPE(5, 2), 2, 2, 0}, 2, -1, 1); }
Test(grad, matmul_ta) { check("matmul a^T", (spec){K_MATMUL_TA, SHAPE(5, 3), SHAPE(5, 2), 2, 2, 0}, 2, -1, 1); }
Test(grad, matmul_tb) { check("matmul b^T", (spec){K_MATMUL_TB, SHAPE(3, 5), SHAPE(2, 5), 2, 2, 0}, 2, -1, 1); }
Test(grad, matmul_ta_tb) { check("matmul a^T b^T", (spec){K_MATMUL_TATB, SHAPE(5, 3), SHAPE(2, 5), 2, 2, 0}, 2, -1, 1); }
Test(grad, matmul_size_one) { check("matmul [1,3]x[3,1]", (spec){K_MATMUL, SHAPE(1, 3), SHAPE(3, 1), 2, 2, 0}, 2, -1, 1); }
Test(grad, matmul_outer) { check("matmul [4,1]x[1,3]", (spec){K_MATMUL, SHAPE(4, 1), SHAPE(1, 3), 2, 2, 0}, 2, -1, 1); }
Test(grad, neg) { check("neg", (spec){K_NEG, SHAPE(2, 3), SHAPE(0), 2, 0, 0}, 1, -1, 1); }
Test(grad, scale) { check("scale", (spec){K_SCALE, SHAPE(2, 3), SHAPE(0), 2, 0, -2.5}, 1, -1, 1); }
Test(grad, exp) { check("exp", (spec){K_EXP, SHAPE(2, 3), SHAPE(0), 2, 0, 0}, 1, -1, 1); }
Test(grad, log) { check("log", (spec){K_LOG, SHAPE(2, 3), SHAPE(0), 2, 0, 0}, 1, 0.5, 2); }
Test(grad, tanh) { check("tanh", (spec){K_TANH, SHAPE(2, 3), SHAPE(0), 2, 0, 0}, 1, -2, 2); }
Test(grad, sigmoid) { check("sigmoid", (spec){K_SIGMOID, SHAPE(2, 3), SHAPE(0), 2, 0, 0}, 1, -3, 3); }
/* relu: inputs kept away from the kink at 0 */
Test(grad, relu) { check("relu", (spec){K_RELU, SHAPE(2, 3), SHAPE(0), 2, 0, 0}, 1, 0.2, 1); }
Test(grad, relu_negative) { check("relu<0", (spec){K_RELU, SHAPE(2, 3), SHAPE(0), 2, 0, 0}, 1, -1, -0.2); }
Test(grad, mean) { check("mean", (spec){K_MEAN, SHAPE(2, 3, 2), SHAPE(0), 3, 0, 0}, 1, -1, 1); }
Test(grad, slice) { check("slice", (spec){K_SLICE, SHAPE(3, 5), SHAPE(0), 2, 0, 0}, 1, -1, 1); }
Test(grad, concat) { check("concat", (spec){K_CONCAT, SHAPE(3, 1), SHAPE(3, 2), 2, 2, 0}, 3, -1, 1); }
Test(grad, embedding) { check("embedding", (spec){K_EMBED, SHAPE(4, 3), SHAPE(0), 2, 0, 0}, 1, -1, 1); }
Test(grad, softmax_xent) { check("softmax_xent", (spec){K_XENT, SHAPE(4, 5), SHAPE(0), 2, 0, 0}, 1, -2, 2); }
Test(grad, softmax_xent_one_row) { check("softmax_xent [1,5]", (spec){K_XENT, SHAPE(1, 5), SHAPE(0), 2, 0, 0}, 1, -2, 2); }
Test(grad, mse) { check("mse", (spec){K_MSE, SHAPE(3, 2), SHAPE(3, 2), 2, 2, 0}, 2, -1, 1); }
/* grad_scale is the derivative of its forward only at xi = 1; other xi are
 * pinned exactly in test_tape.c (grad_scale_multiplies_exactly). */
Test(grad, grad_scale_identity) { check("grad_scale", (spec){K_GRAD_SCALE, SHAPE(2, 3), SHAPE(0), 2, 0, 1.0}, 1, -1, 1); }

/* A composite: a tiny tanh RNN unrolled 4 steps, so W is used at every step. */
static bt_tensor *tiny_rnn(bt_graph *g, bt_tensor *const *in, int n, void *ctx)
{
    (void)n; (void)ctx;
    bt_tensor *wx = in[0], *wh = in[1], *b = in[2], *x = in[3];
    bt_tensor *h = bt_graph_tensor2(g, 2, 3);
    bt_tensor *loss = NULL;
    for (int t = 0; t < 4; t++) {
        bt_tensor *xt = bt_slice(g, x, t * 2, 2);
        h = bt_tanh(g, bt_add(g, bt_add(g, bt_matmul(g, xt, wx), bt_matmul(g, h, wh)), b));
        bt_tensor *l = weighted_sum(g, h);
        loss = loss ? bt_add(g, loss, l) : l;
    }
    return loss;
}

Test(grad, composite_rnn_fan_out)
{
    bt_rng r;
    bt_rng_seed(&r, 7);
    bt_tensor *in[4] = {test_tensor2(2, 3, true), test_tensor2(3, 3, true),
                        test_tensor(1, (int[]){3}, true), test_tensor2(2, 8, true)};
    for (int i = 0; i < 4; i++)
        fill_uniform(in[i], &r, -1, 1);
    assert_gradcheck("tiny rnn", tiny_rnn, NULL, in, 4);
    for (int i = 0; i < 4; i++)
        bt_tensor_free(in[i]);
}

/* ---- the fused ops against the primitive ops they replace -------------------------- */

/* The inputs' gradients from a fresh backward of fn against saved ones (input
 * i's at saved + i * stride): a fused op's against its primitive ops'. */
static void expect_same_grads(const char *what, bt_loss_fn fn, void *ctx, bt_tensor *const *in,
                              int n, const bt_real *saved, size_t stride)
{
    bt_graph *g = bt_graph_new();
    for (int i = 0; i < n; i++)
        bt_tensor_zero_grad(in[i]);
    cr_assert_eq(bt_backward(g, fn(g, in, n, ctx)), BT_OK);
    for (int i = 0; i < n; i++)
        for (size_t j = 0; j < in[i]->size; j++)
            cr_expect_float_eq(saved[(size_t)i * stride + j], in[i]->grad[j],
                               BT_REAL_DOUBLE ? 1e-12 : 2e-6, "%s: input %d element %zu", what, i, j);
    bt_graph_free(g);
}

/* ---- the fused tanh RNN step ---------------------------------------------------- */

typedef struct fused_ctx { bool tokens, retain, composite; } fused_ctx;

/* Two steps, so h enters the op both as a leaf and as the op's own output. */
static bt_tensor *fused_rnn(bt_graph *g, bt_tensor *const *in, int n, void *vctx)
{
    (void)n;
    const fused_ctx *c = vctx;
    static const int32_t ids[2][3] = {{2, 0, 2}, {1, 3, 0}};
    bt_tensor *wx = in[0], *wh = in[1], *b = in[2], *h = in[3], *x = in[4];
    for (int t = 0; t < 2; t++) {
        bt_tensor *xt = c->tokens ? NULL : bt_slice(g, x, 2 * t, 2);
        if (c->composite) {
            bt_tensor *xw = c->tokens ? bt_embedding(g, wx, ids[t], 3) : bt_matmul(g, xt, wx);
            h = bt_tanh(g, bt_add(g, bt_add(g, xw, bt_matmul(g, h, wh)), b));
        } else
            h = bt_rnn_tanh_step(g, wx, c->tokens ? ids[t] : NULL, xt, h, wh, b);
        if (h && c->retain)
            h->retain_grad = true;
    }
    return weighted_sum(g, h);
}

static void check_fused(fused_ctx c)
{
    bt_rng r;
    bt_rng_seed(&r, 99);
    bt_tensor *in[5] = {test_tensor2(c.tokens ? 4 : 2, 3, true), test_tensor2(3, 3, true),
                        test_tensor(1, (int[]){3}, true), test_tensor2(3, 3, true),
                        test_tensor2(3, 4, true)};
    for (int i = 0; i < 5; i++)
        fill_uniform(in[i], &r, -1, 1);
    char what[64];
    snprintf(what, sizeof what, "rnn_tanh_step (%s%s)", c.tokens ? "tokens" : "real x",
             c.retain ? ", retain_grad" : "");
    assert_gradcheck(what, fused_rnn, &c, in, 5);
    /* and the same gradients as the five primitive ops it replaces */
    bt_real fused[5][12];
    for (int i = 0; i < 5; i++)
        memcpy(fused[i], in[i]->grad, sizeof(bt_real) * in[i]->size);
    fused_ctx comp = c;
    comp.composite = true;
    expect_same_grads(what, fused_rnn, &comp, in, 5, fused[0], 12);
    for (int i = 0; i < 5; i++)
        bt_tensor_free(in[i]);
}

Test(grad, rnn_tanh_step_tokens) { check_fused((fused_ctx){true, false, false}); }
Test(grad, rnn_tanh_step_real_input) { check_fused((fused_ctx){false, false, false}); }
Test(grad, rnn_tanh_step_retain_grad) { check_fused((fused_ctx){true, true, false}); }

/* A fused op family's six inputs against its primitive ops: the gradient
 * check of fn, then one backward of it (during which retained(ctx) checks a
 * retained gradient, when given), then the same gradients from comp, the
 * primitive build. */
static void expect_fused_like_primitive(const char *what, bt_loss_fn fn, void *ctx, void *comp,
                                        void (*retained)(const void *ctx), bt_tensor *const *in)
{
    enum { N = 6, MAX = 48 };
    assert_gradcheck(what, fn, ctx, in, N);
    bt_real fused[N][MAX];
    bt_graph *g = bt_graph_new();
    for (int i = 0; i < N; i++)
        bt_tensor_zero_grad(in[i]);
    cr_assert_eq(bt_backward(g, fn(g, in, N, ctx)), BT_OK);
    if (retained)
        retained(ctx);
    for (int i = 0; i < N; i++) {
        cr_assert_leq(in[i]->size, (size_t)MAX);
        memcpy(fused[i], in[i]->grad, sizeof(bt_real) * in[i]->size);
    }
    bt_graph_free(g);
    expect_same_grads(what, fn, comp, in, N, fused[0], MAX);
}

/* ---- the fused LSTM step ------------------------------------------------------ */

typedef struct lstm_ctx {
    bool tokens, retain, composite;
    bt_tensor *act, *c_prev; /* the last step's gates and incoming c (fused) */
} lstm_ctx;

/* The loss both builds end with: every path into c and h is checked. */
static bt_tensor *lstm_loss(bt_graph *g, bt_tensor *h, bt_tensor *c)
{
    return bt_add(g, weighted_sum(g, h), weighted_sum(g, bt_scale(g, c, 0.7)));
}

/* Two steps of lstm_gates, lstm_cell and lstm_hidden (H = 3), or of the same
 * cell written with primitive ops. Inputs: W_x, W_h, b, h0, c0, x. */
static bt_tensor *fused_lstm(bt_graph *g, bt_tensor *const *in, int n, void *vctx)
{
    (void)n;
    lstm_ctx *c = vctx;
    static const int32_t ids[2][3] = {{2, 0, 2}, {1, 3, 0}};
    bt_tensor *wx = in[0], *wh = in[1], *b = in[2], *h = in[3], *cs = in[4], *x = in[5];
    const int H = 3;
    for (int t = 0; t < 2; t++) {
        bt_tensor *xw = c->tokens ? bt_embedding(g, wx, ids[t], 3)
                                  : bt_matmul(g, bt_slice(g, x, 2 * t, 2), wx);
        if (c->composite) {
            bt_tensor *a = bt_add(g, bt_add(g, xw, bt_matmul(g, h, wh)), b);
            bt_tensor *i = bt_sigmoid(g, bt_slice(g, a, 0, H)), *f = bt_sigmoid(g, bt_slice(g, a, H, H));
            bt_tensor *gg = bt_tanh(g, bt_slice(g, a, 2 * H, H));
            bt_tensor *o = bt_sigmoid(g, bt_slice(g, a, 3 * H, H));
            cs = bt_add(g, bt_mul(g, f, cs), bt_mul(g, i, gg));
            h = bt_mul(g, o, bt_tanh(g, cs));
        } else {
            bt_tensor *act = bt_lstm_gates(g, xw, h, wh, b);
            if (act && c->retain)
                act->retain_grad = true;
            c->act = act, c->c_prev = cs;
            cs = bt_lstm_cell(g, act, cs);
            h = bt_lstm_hidden(g, act, cs);
        }
    }
    return lstm_loss(g, h, cs);
}

/* A retained act->grad is dL/d(act) (lstm_gates must not write its dA over
 * it): the last step's, against lstm_cell and lstm_hidden on a leaf copy. */
static void expect_retained_act_grad(const void *ctx)
{
    const lstm_ctx *c = ctx;
    bt_tensor *act = test_tensor2(3, 12, true), *cp = test_tensor2(3, 3, true);
    memcpy(act->data, c->act->data, sizeof(bt_real) * act->size);
    memcpy(cp->data, c->c_prev->data, sizeof(bt_real) * cp->size);
    bt_graph *g = bt_graph_new();
    bt_tensor *cn = bt_lstm_cell(g, act, cp);
    cr_assert_eq(bt_backward(g, lstm_loss(g, bt_lstm_hidden(g, act, cn), cn)), BT_OK);
    cr_assert_not_null(c->act->grad, "the retained act has no gradient");
    for (size_t j = 0; j < act->size; j++)
        cr_expect_float_eq(c->act->grad[j], act->grad[j], BT_REAL_DOUBLE ? 1e-12 : 2e-6,
                           "retained dL/d(act) element %zu", j);
    bt_graph_free(g);
    bt_tensor_free(act);
    bt_tensor_free(cp);
}

/* With param_wh, W_h is a weight of a bt_params block: its gradient waits
 * for the sweep's batched product and lstm_gates writes dA into its slot
 * (framework/wgrad.c), the path the cell takes in training. */
static void check_fused_lstm(lstm_ctx c, bool param_wh)
{
    bt_rng r;
    bt_rng_seed(&r, 77);
    bt_params *p = bt_params_new();
    bt_tensor *wh_param = bt_params_add(p, "W_h", 2, (int[]){3, 12});
    cr_assert_eq(bt_params_finalize(p), BT_OK);
    bt_tensor *in[6] = {test_tensor2(c.tokens ? 4 : 2, 12, true),
                        param_wh ? wh_param : test_tensor2(3, 12, true),
                        test_tensor(1, (int[]){12}, true), test_tensor2(3, 3, true),
                        test_tensor2(3, 3, true), test_tensor2(3, 4, true)};
    for (int i = 0; i < 6; i++)
        fill_uniform(in[i], &r, -1.5, 1.5);
    char what[64];
    snprintf(what, sizeof what, "lstm ops (%s%s%s)", c.tokens ? "tokens" : "real x",
             c.retain ? ", retain_grad" : "", param_wh ? ", W_h a parameter" : "");
    lstm_ctx comp = c;
    comp.composite = true;
    expect_fused_like_primitive(what, fused_lstm, &c, &comp,
                                c.retain ? expect_retained_act_grad : NULL, in);
    for (int i = 0; i < 6; i++)
        if (in[i] != wh_param)
            bt_tensor_free(in[i]);
    bt_params_free(p);
}

Test(grad, lstm_ops_tokens) { check_fused_lstm((lstm_ctx){.tokens = true}, false); }
Test(grad, lstm_ops_real_input) { check_fused_lstm((lstm_ctx){.tokens = false}, false); }
Test(grad, lstm_ops_retain_grad) { check_fused_lstm((lstm_ctx){.tokens = true, .retain = true}, false); }
Test(grad, lstm_ops_weight_in_a_params_block)
{
    check_fused_lstm((lstm_ctx){.tokens = true}, true);
    check_fused_lstm((lstm_ctx){.tokens = true, .retain = true}, true);
}

Test(grad, lstm_ops_reject_bad_shapes)
{
    bt_graph *g = bt_graph_new();
    bt_tensor *xw = bt_graph_tensor2(g, 2, 12), *h = bt_graph_tensor2(g, 2, 3),
              *wh = bt_graph_tensor2(g, 3, 9), *b = bt_graph_tensor(g, 1, (int[]){12});
    cr_assert_null(bt_lstm_gates(g, xw, h, wh, b));
    cr_assert(strstr(bt_graph_error(g), "W_h [3,9]") != NULL, "%s", bt_graph_error(g));
    bt_graph_reset(g);
    bt_tensor *act = bt_graph_tensor2(g, 2, 12), *c = bt_graph_tensor2(g, 2, 4);
    cr_assert_null(bt_lstm_cell(g, act, c));
    cr_assert(strstr(bt_graph_error(g), "lstm_cell") != NULL, "%s", bt_graph_error(g));
    bt_graph_reset(g);
    act = bt_graph_tensor2(g, 3, 12);
    c = bt_graph_tensor2(g, 2, 3);
    cr_assert_null(bt_lstm_hidden(g, act, c));
    cr_assert(strstr(bt_graph_error(g), "lstm_hidden") != NULL, "%s", bt_graph_error(g));
    bt_graph_free(g);
}

/* ---- the fused GRU step (torch.nn.GRU's equations) ------------------------------ */

typedef struct gru_ctx {
    bool tokens, retain, composite;
    bt_tensor *act, *h_prev, *h; /* the last step's gates, incoming h and h' */
} gru_ctx;

/* Two steps of gru_gates and gru_hidden (H = 3), or of the same cell written
 * with primitive ops (cell_gru_torch.c before the fused ops). The loss reads
 * act ([r z n], concatenated in the primitive cell) as well as h, so the
 * gradient that reaches act from other readers than gru_hidden (its r block)
 * is checked too. Inputs: W_ih, W_hh, b_ih, b_hh, h0, x. */
static bt_tensor *fused_gru(bt_graph *g, bt_tensor *const *in, int n, void *vctx)
{
    (void)n;
    gru_ctx *c = vctx;
    static const int32_t ids[2][3] = {{2, 0, 2}, {1, 3, 0}};
    bt_tensor *wi = in[0], *wh = in[1], *bi = in[2], *bh = in[3], *h = in[4], *x = in[5];
    bt_tensor *act = NULL;
    const int H = 3;
    for (int t = 0; t < 2; t++) {
        bt_tensor *xw = c->tokens ? bt_embedding(g, wi, ids[t], 3)
                                  : bt_matmul(g, bt_slice(g, x, 2 * t, 2), wi);
        if (c->composite) {
            bt_tensor *gi = bt_add(g, xw, bi), *gh = bt_add(g, bt_matmul(g, h, wh), bh);
            bt_tensor *rz = bt_sigmoid(g, bt_add(g, bt_slice(g, gi, 0, 2 * H),
                                                 bt_slice(g, gh, 0, 2 * H)));
            bt_tensor *r = bt_slice(g, rz, 0, H), *z = bt_slice(g, rz, H, H);
            bt_tensor *nn = bt_tanh(g, bt_add(g, bt_slice(g, gi, 2 * H, H),
                                              bt_mul(g, r, bt_slice(g, gh, 2 * H, H))));
            act = bt_concat(g, (bt_tensor *[]){r, z, nn}, 3);
            c->h_prev = h;
            h = bt_add(g, nn, bt_mul(g, z, bt_sub(g, h, nn)));
        } else {
            act = bt_gru_gates(g, xw, h, wh, bi, bh);
            if (act && c->retain)
                act->retain_grad = true;
            c->h_prev = h;
            h = bt_gru_hidden(g, act, h);
        }
        c->act = act, c->h = h;
    }
    return bt_add(g, weighted_sum(g, h), weighted_sum(g, bt_scale(g, act, 0.3)));
}

/* A retained act->grad is dL/d(act) (gru_gates must not write over it): the
 * last step's, against gru_hidden and the loss's own read of act on a leaf
 * copy. */
static void expect_retained_gru_act_grad(const void *ctx)
{
    const gru_ctx *c = ctx;
    bt_tensor *act = test_tensor2(3, 9, true), *hp = test_tensor2(3, 3, true);
    memcpy(act->data, c->act->data, sizeof(bt_real) * act->size);
    memcpy(hp->data, c->h_prev->data, sizeof(bt_real) * hp->size);
    bt_graph *g = bt_graph_new();
    bt_tensor *loss = bt_add(g, weighted_sum(g, bt_gru_hidden(g, act, hp)),
                             weighted_sum(g, bt_scale(g, act, 0.3)));
    cr_assert_eq(bt_backward(g, loss), BT_OK);
    cr_assert_not_null(c->act->grad, "the retained act has no gradient");
    for (size_t j = 0; j < act->size; j++)
        cr_expect_float_eq(c->act->grad[j], act->grad[j], BT_REAL_DOUBLE ? 1e-12 : 2e-6,
                           "retained dL/d(act) element %zu", j);
    bt_graph_free(g);
    bt_tensor_free(act);
    bt_tensor_free(hp);
}

/* The fused ops' act and h (the last step's, after a step from the fused
 * ops' own h) equal the primitive cell's bit for bit: the same sums in the
 * same order, the same product, the same sigmoid and tanh. */
static void expect_same_gru_values(gru_ctx c, bt_tensor *const *in)
{
    gru_ctx comp = c;
    comp.composite = true;
    bt_graph *g = bt_graph_new(), *gc = bt_graph_new();
    cr_assert_not_null(fused_gru(g, in, 6, &c));
    cr_assert_not_null(fused_gru(gc, in, 6, &comp));
    cr_expect(memcmp(c.act->data, comp.act->data, sizeof(bt_real) * c.act->size) == 0,
              "gru act differs from the primitive ops' [r z n]");
    cr_expect(memcmp(c.h->data, comp.h->data, sizeof(bt_real) * c.h->size) == 0,
              "gru h' differs from the primitive ops'");
    bt_graph_free(g);
    bt_graph_free(gc);
}

/* With param_wh, W_hh is a weight of a bt_params block: its gradient waits
 * for the sweep's batched product and gru_gates writes its rows into its slot
 * (framework/wgrad.c), the path the cell takes in training. */
static void check_fused_gru(gru_ctx c, bool param_wh)
{
    bt_rng r;
    bt_rng_seed(&r, 55);
    bt_params *p = bt_params_new();
    bt_tensor *wh_param = bt_params_add(p, "W_hh", 2, (int[]){3, 9});
    cr_assert_eq(bt_params_finalize(p), BT_OK);
    bt_tensor *in[6] = {test_tensor2(c.tokens ? 4 : 2, 9, true),
                        param_wh ? wh_param : test_tensor2(3, 9, true),
                        test_tensor(1, (int[]){9}, true), test_tensor(1, (int[]){9}, true),
                        test_tensor2(3, 3, true), test_tensor2(3, 4, true)};
    for (int i = 0; i < 6; i++)
        fill_uniform(in[i], &r, -1.5, 1.5);
    char what[64];
    snprintf(what, sizeof what, "gru ops (%s%s%s)", c.tokens ? "tokens" : "real x",
             c.retain ? ", retain_grad" : "", param_wh ? ", W_hh a parameter" : "");
    expect_same_gru_values(c, in);
    gru_ctx comp = c;
    comp.composite = true;
    expect_fused_like_primitive(what, fused_gru, &c, &comp,
                                c.retain ? expect_retained_gru_act_grad : NULL, in);
    for (int i = 0; i < 6; i++)
        if (in[i] != wh_param)
            bt_tensor_free(in[i]);
    bt_params_free(p);
}

Test(grad, gru_ops_tokens) { check_fused_gru((gru_ctx){.tokens = true}, false); }
Test(grad, gru_ops_real_input) { check_fused_gru((gru_ctx){.tokens = false}, false); }
Test(grad, gru_ops_retain_grad) { check_fused_gru((gru_ctx){.tokens = true, .retain = true}, false); }
/* Inputs that take no gradient (frozen biases, a fixed input's product, a
 * start state that is data): the others' gradients are the primitive ops',
 * and the frozen ones get none. */
Test(grad, gru_ops_with_frozen_inputs)
{
    bt_rng r;
    bt_rng_seed(&r, 56);
    bt_tensor *in[6] = {test_tensor2(2, 9, true), test_tensor2(3, 9, true),
                        test_tensor(1, (int[]){9}, false), test_tensor(1, (int[]){9}, false),
                        test_tensor2(3, 3, false), test_tensor2(3, 4, false)};
    for (int i = 0; i < 6; i++)
        fill_uniform(in[i], &r, -1.5, 1.5);
    bt_real grads[2][45]; /* W_ih [2,9], W_hh [3,9] */
    for (int k = 0; k < 2; k++) {
        gru_ctx c = {.tokens = false, .composite = k == 1};
        bt_graph *g = bt_graph_new();
        bt_tensor_zero_grad(in[0]);
        bt_tensor_zero_grad(in[1]);
        cr_assert_eq(bt_backward(g, fused_gru(g, in, 6, &c)), BT_OK);
        memcpy(grads[k], in[0]->grad, sizeof(bt_real) * 18);
        memcpy(grads[k] + 18, in[1]->grad, sizeof(bt_real) * 27);
        for (int i = 2; i < 6; i++)
            cr_expect_null(in[i]->grad, "frozen input %d got a gradient", i);
        bt_graph_free(g);
    }
    for (int j = 0; j < 45; j++)
        cr_expect_float_eq(grads[0][j], grads[1][j], BT_REAL_DOUBLE ? 1e-12 : 2e-6,
                           "gru ops with frozen inputs: gradient %d", j);
    for (int i = 0; i < 6; i++)
        bt_tensor_free(in[i]);
}

Test(grad, gru_ops_weight_in_a_params_block)
{
    check_fused_gru((gru_ctx){.tokens = true}, true);
    check_fused_gru((gru_ctx){.tokens = false, .retain = true}, true);
}

Test(grad, gru_ops_reject_bad_shapes)
{
    bt_graph *g = bt_graph_new();
    bt_tensor *xw = bt_graph_tensor2(g, 2, 9), *h = bt_graph_tensor2(g, 2, 3),
              *wh = bt_graph_tensor2(g, 3, 12), *b = bt_graph_tensor(g, 1, (int[]){9});
    cr_assert_null(bt_gru_gates(g, xw, h, wh, b, b));
    cr_assert(strstr(bt_graph_error(g), "W_hh [3,12]") != NULL, "%s", bt_graph_error(g));
    bt_graph_reset(g);
    xw = bt_graph_tensor2(g, 2, 9), h = bt_graph_tensor2(g, 2, 3);
    wh = bt_graph_tensor2(g, 3, 9);
    bt_tensor *b8 = bt_graph_tensor(g, 1, (int[]){8}), *b9 = bt_graph_tensor(g, 1, (int[]){9});
    cr_assert_null(bt_gru_gates(g, xw, h, wh, b9, b8));
    cr_assert(strstr(bt_graph_error(g), "b_hh [8]") != NULL, "%s", bt_graph_error(g));
    bt_graph_reset(g);
    xw = bt_graph_tensor2(g, 3, 9), h = bt_graph_tensor2(g, 2, 3); /* rows differ */
    wh = bt_graph_tensor2(g, 3, 9), b9 = bt_graph_tensor(g, 1, (int[]){9});
    cr_assert_null(bt_gru_gates(g, xw, h, wh, b9, b9));
    cr_assert(strstr(bt_graph_error(g), "got xw [3,9], h [2,3]") != NULL, "%s", bt_graph_error(g));
    bt_graph_reset(g);
    xw = bt_graph_tensor2(g, 2, 9), h = bt_graph_tensor(g, 1, (int[]){3}); /* h not 2-D */
    wh = bt_graph_tensor2(g, 3, 9), b9 = bt_graph_tensor(g, 1, (int[]){9});
    cr_assert_null(bt_gru_gates(g, xw, h, wh, b9, b9));
    cr_assert(strstr(bt_graph_error(g), "h [3]") != NULL, "%s", bt_graph_error(g));
    bt_graph_reset(g);
    bt_tensor *act = bt_graph_tensor2(g, 2, 12);
    h = bt_graph_tensor2(g, 2, 3);
    cr_assert_null(bt_gru_hidden(g, act, h));
    cr_assert(strstr(bt_graph_error(g), "gru_hidden") != NULL, "%s", bt_graph_error(g));
    bt_graph_free(g);
}

/* ---- the fused GRU step (the form of Cho et al. and d2l.ai) ------------------------ */

typedef struct cho_ctx {
    bool tokens, retain, composite;
    bt_tensor *zr, *rh, *h; /* the last step's gates, r h and h' */
} cho_ctx;

/* Two steps of gru_cho_gates, gru_cho_reset and gru_cho_hidden (B = 3, H = 4:
 * a stride that mixed them up would show), or of the same cell written with
 * primitive ops (cell_gru.c before the fused ops). The loss reads zr and rh
 * as well as h, so the gradients that reach them from other readers are
 * checked too. Inputs: W_x, W_hzr, W_hh, b, h0, x. */
static bt_tensor *fused_cho(bt_graph *g, bt_tensor *const *in, int n, void *vctx)
{
    (void)n;
    cho_ctx *c = vctx;
    static const int32_t ids[2][3] = {{2, 0, 2}, {1, 3, 0}};
    bt_tensor *wx = in[0], *wzr = in[1], *wh = in[2], *b = in[3], *h = in[4], *x = in[5];
    bt_tensor *zr = NULL, *rh = NULL;
    const int H = 4;
    for (int t = 0; t < 2; t++) {
        bt_tensor *xw = c->tokens ? bt_embedding(g, wx, ids[t], 3)
                                  : bt_matmul(g, bt_slice(g, x, 2 * t, 2), wx);
        if (c->composite) {
            bt_tensor *xg = bt_add(g, xw, b);
            zr = bt_sigmoid(g, bt_add(g, bt_slice(g, xg, 0, 2 * H), bt_matmul(g, h, wzr)));
            bt_tensor *z = bt_slice(g, zr, 0, H), *r = bt_slice(g, zr, H, H);
            rh = bt_mul(g, r, h);
            bt_tensor *cand = bt_tanh(g, bt_add(g, bt_slice(g, xg, 2 * H, H),
                                                bt_matmul(g, rh, wh)));
            h = bt_add(g, cand, bt_mul(g, z, bt_sub(g, h, cand)));
        } else {
            zr = bt_gru_cho_gates(g, xw, h, wzr, b);
            rh = bt_gru_cho_reset(g, zr, h);
            h = bt_gru_cho_hidden(g, xw, h, zr, rh, wh, b);
        }
        if (zr && rh && h && c->retain)
            zr->retain_grad = rh->retain_grad = h->retain_grad = true;
        c->zr = zr, c->rh = rh, c->h = h;
    }
    return bt_add(g, bt_add(g, weighted_sum(g, h), weighted_sum(g, bt_scale(g, zr, 0.3))),
                  weighted_sum(g, bt_scale(g, rh, -0.4)));
}

/* The fused ops' zr, rh and h' (the last step's, after a step from the fused
 * ops' own h) equal the primitive cell's bit for bit; and with retain, the
 * retained gradients dL/dzr, dL/d(rh) and dL/dh' equal the primitive
 * graph's to rounding (gru_cho_gates and gru_cho_hidden must not write
 * theirs over them). */
static void expect_cho_like_primitive_values(cho_ctx c, bt_tensor *const *in)
{
    cho_ctx comp = c;
    comp.composite = true;
    bt_graph *g = bt_graph_new(), *gc = bt_graph_new();
    bt_tensor *loss = fused_cho(g, in, 6, &c), *lossc = fused_cho(gc, in, 6, &comp);
    cr_assert(loss && lossc);
    const char *name[3] = {"zr", "rh", "h'"};
    bt_tensor *f[3] = {c.zr, c.rh, c.h}, *p[3] = {comp.zr, comp.rh, comp.h};
    for (int k = 0; k < 3; k++)
        cr_expect(memcmp(f[k]->data, p[k]->data, sizeof(bt_real) * f[k]->size) == 0,
                  "Cho GRU %s differs from the primitive ops'", name[k]);
    if (c.retain) {
        for (int i = 0; i < 6; i++)
            bt_tensor_zero_grad(in[i]);
        cr_assert_eq(bt_backward(g, loss), BT_OK);
        cr_assert_eq(bt_backward(gc, lossc), BT_OK);
        for (int k = 0; k < 3; k++) {
            cr_assert(f[k]->grad && p[k]->grad, "the retained %s has no gradient", name[k]);
            for (size_t j = 0; j < f[k]->size; j++)
                cr_expect_float_eq(f[k]->grad[j], p[k]->grad[j], BT_REAL_DOUBLE ? 1e-12 : 2e-6,
                                   "retained dL/d%s element %zu", name[k], j);
        }
    }
    bt_graph_free(g);
    bt_graph_free(gc);
}

/* With params, W_hzr and W_hh are weights of a bt_params block: their
 * gradients wait for the sweep's batched products and the ops write theirs
 * into their slots (framework/wgrad.c), the path the cell takes in training. */
static void check_fused_cho(cho_ctx c, bool params)
{
    bt_rng r;
    bt_rng_seed(&r, 57);
    bt_params *p = bt_params_new();
    bt_tensor *wzr_param = bt_params_add(p, "W_hzr", 2, (int[]){4, 8});
    bt_tensor *wh_param = bt_params_add(p, "W_hh", 2, (int[]){4, 4});
    cr_assert_eq(bt_params_finalize(p), BT_OK);
    bt_tensor *in[6] = {test_tensor2(c.tokens ? 4 : 2, 12, true),
                        params ? wzr_param : test_tensor2(4, 8, true),
                        params ? wh_param : test_tensor2(4, 4, true),
                        test_tensor(1, (int[]){12}, true), test_tensor2(3, 4, true),
                        test_tensor2(3, 4, true)};
    for (int i = 0; i < 6; i++)
        fill_uniform(in[i], &r, -1.5, 1.5);
    char what[80];
    snprintf(what, sizeof what, "Cho GRU ops (%s%s%s)", c.tokens ? "tokens" : "real x",
             c.retain ? ", retain_grad" : "", params ? ", weights in a params block" : "");
    expect_cho_like_primitive_values(c, in);
    cho_ctx comp = c;
    comp.composite = true;
    expect_fused_like_primitive(what, fused_cho, &c, &comp, NULL, in);
    for (int i = 0; i < 6; i++)
        if (in[i] != wh_param && in[i] != wzr_param)
            bt_tensor_free(in[i]);
    bt_params_free(p);
}

Test(grad, gru_cho_ops_tokens) { check_fused_cho((cho_ctx){.tokens = true}, false); }
Test(grad, gru_cho_ops_real_input) { check_fused_cho((cho_ctx){.tokens = false}, false); }
Test(grad, gru_cho_ops_retain_grad)
{
    check_fused_cho((cho_ctx){.tokens = true, .retain = true}, false);
    check_fused_cho((cho_ctx){.tokens = false, .retain = true}, true);
}
Test(grad, gru_cho_ops_weights_in_a_params_block)
{
    check_fused_cho((cho_ctx){.tokens = true}, true);
    check_fused_cho((cho_ctx){.tokens = false}, true);
}

/* Inputs that take no gradient, frozen[i] for input i (W_x, W_hzr, W_hh, b,
 * h0, x): the others' gradients are the primitive ops', and the frozen ones
 * get none. */
static void expect_cho_frozen_like_primitive(const bool frozen[6])
{
    static const int rows[6] = {2, 4, 4, 12, 3, 3}, cols[6] = {12, 8, 4, 0, 4, 4};
    bt_rng r;
    bt_rng_seed(&r, 58);
    bt_tensor *in[6];
    for (int i = 0; i < 6; i++) {
        in[i] = cols[i] ? test_tensor2(rows[i], cols[i], !frozen[i])
                        : test_tensor(1, (int[]){rows[i]}, !frozen[i]);
        fill_uniform(in[i], &r, -1.5, 1.5);
    }
    bt_real grads[2][6][32]; /* the largest input, W_hzr [4,8] */
    for (int k = 0; k < 2; k++) {
        cho_ctx c = {.tokens = false, .composite = k == 1};
        bt_graph *g = bt_graph_new();
        for (int i = 0; i < 6; i++)
            if (!frozen[i])
                bt_tensor_zero_grad(in[i]);
        cr_assert_eq(bt_backward(g, fused_cho(g, in, 6, &c)), BT_OK);
        for (int i = 0; i < 6; i++) {
            if (frozen[i])
                cr_expect_null(in[i]->grad, "frozen input %d got a gradient", i);
            else
                memcpy(grads[k][i], in[i]->grad, sizeof(bt_real) * in[i]->size);
        }
        bt_graph_free(g);
    }
    for (int i = 0; i < 6; i++)
        for (size_t j = 0; !frozen[i] && j < in[i]->size; j++)
            cr_expect_float_eq(grads[0][i][j], grads[1][i][j], BT_REAL_DOUBLE ? 1e-12 : 2e-6,
                               "Cho GRU ops with frozen inputs: input %d element %zu", i, j);
    for (int i = 0; i < 6; i++)
        bt_tensor_free(in[i]);
}

/* A frozen bias, input and start state; then xw without a gradient (W_x
 * frozen) and a frozen W_hh; then zr without one in the first step (W_x,
 * W_hzr, b and h0 frozen: only W_hh learns). */
Test(grad, gru_cho_ops_with_frozen_inputs)
{
    expect_cho_frozen_like_primitive((bool[6]){false, false, false, true, true, true});
    expect_cho_frozen_like_primitive((bool[6]){true, false, true, false, false, true});
    expect_cho_frozen_like_primitive((bool[6]){true, true, false, true, true, true});
}

Test(grad, gru_cho_ops_reject_bad_shapes)
{
    bt_graph *g = bt_graph_new();
    bt_tensor *xw = bt_graph_tensor2(g, 2, 9), *h = bt_graph_tensor2(g, 2, 3),
              *wzr = bt_graph_tensor2(g, 3, 9), *b = bt_graph_tensor(g, 1, (int[]){9});
    cr_assert_null(bt_gru_cho_gates(g, xw, h, wzr, b));
    cr_assert(strstr(bt_graph_error(g), "W_hzr [3,9]") != NULL, "%s", bt_graph_error(g));
    bt_graph_reset(g);
    xw = bt_graph_tensor2(g, 2, 6), h = bt_graph_tensor2(g, 2, 3); /* xw [B,2H]: no n block */
    wzr = bt_graph_tensor2(g, 3, 6), b = bt_graph_tensor(g, 1, (int[]){9});
    cr_assert_null(bt_gru_cho_gates(g, xw, h, wzr, b));
    cr_assert(strstr(bt_graph_error(g), "got xw [2,6]") != NULL, "%s", bt_graph_error(g));
    bt_graph_reset(g);
    bt_tensor *zr = bt_graph_tensor2(g, 2, 3);
    h = bt_graph_tensor2(g, 2, 3);
    cr_assert_null(bt_gru_cho_reset(g, zr, h));
    cr_assert(strstr(bt_graph_error(g), "gru_cho_reset") != NULL, "%s", bt_graph_error(g));
    bt_graph_reset(g);
    xw = bt_graph_tensor2(g, 2, 9), h = bt_graph_tensor2(g, 2, 3), zr = bt_graph_tensor2(g, 2, 6);
    bt_tensor *rh = bt_graph_tensor2(g, 3, 3), *wh = bt_graph_tensor2(g, 3, 3); /* rh's rows */
    b = bt_graph_tensor(g, 1, (int[]){9});
    cr_assert_null(bt_gru_cho_hidden(g, xw, h, zr, rh, wh, b));
    cr_assert(strstr(bt_graph_error(g), "rh [3,3], W_hh [3,3], b [9]") != NULL, "%s",
              bt_graph_error(g));
    bt_graph_reset(g);
    xw = bt_graph_tensor2(g, 2, 9), h = bt_graph_tensor2(g, 2, 3), zr = bt_graph_tensor2(g, 2, 6);
    rh = bt_graph_tensor2(g, 2, 3), wh = bt_graph_tensor2(g, 3, 6); /* W_hh [H,2H] */
    b = bt_graph_tensor(g, 1, (int[]){9});
    cr_assert_null(bt_gru_cho_hidden(g, xw, h, zr, rh, wh, b));
    cr_assert(strstr(bt_graph_error(g), "W_hh [3,6]") != NULL, "%s", bt_graph_error(g));
    bt_graph_free(g);
}

Test(grad, rnn_tanh_step_rejects_bad_shapes)
{
    bt_graph *g = bt_graph_new();
    bt_tensor *wx = bt_graph_tensor2(g, 4, 3), *h = bt_graph_tensor2(g, 2, 3),
              *wh = bt_graph_tensor2(g, 3, 2), *b = bt_graph_tensor(g, 1, (int[]){3});
    cr_assert_null(bt_rnn_tanh_step(g, wx, (int32_t[]){0, 1}, NULL, h, wh, b));
    cr_assert(strstr(bt_graph_error(g), "W_hh [2,3]") || strstr(bt_graph_error(g), "W_hh [3,2]"),
              "%s", bt_graph_error(g));
    bt_graph_reset(g);
    wx = bt_graph_tensor2(g, 4, 3); h = bt_graph_tensor2(g, 2, 3);
    wh = bt_graph_tensor2(g, 3, 3); b = bt_graph_tensor(g, 1, (int[]){3});
    cr_assert_null(bt_rnn_tanh_step(g, wx, (int32_t[]){0, 7}, NULL, h, wh, b));
    cr_assert(strstr(bt_graph_error(g), "outside") != NULL, "%s", bt_graph_error(g));
    /* real x: the message names five shapes, each its own (bt_shp kept four
     * buffers, and the fifth overwrote the first) */
    bt_graph_reset(g);
    bt_tensor *x = bt_graph_tensor2(g, 2, 5);
    wx = bt_graph_tensor2(g, 4, 3); h = bt_graph_tensor2(g, 2, 3);
    wh = bt_graph_tensor2(g, 3, 3); b = bt_graph_tensor(g, 1, (int[]){3});
    cr_assert_null(bt_rnn_tanh_step(g, wx, NULL, x, h, wh, b));
    cr_assert(strstr(bt_graph_error(g), "got h [2,3], W_x [4,3], W_hh [3,3], b [3], x [2,5]") != NULL,
              "%s", bt_graph_error(g));
    bt_graph_free(g);
}
