/* unary.c: elementwise ops of one input. Each saves only what its backward
 * needs: exp, tanh and sigmoid reuse their output (d tanh = 1 - y^2), log and
 * relu read their input. The derivative f'(x) is one expression, DF, which
 * backward multiplies into the gradient and the tangent rule into x's tangent
 * (a diagonal Jacobian is its own transpose). */
#include <math.h>

#include "activations.h"
#include "bptt_op.h"

#if BT_REAL_DOUBLE
#define R_EXP exp
#define R_LOG log
#else
#define R_EXP expf
#define R_LOG logf
#endif

#define UNARY(NAME, FWD, DF)                                                    \
    BT_VECTOR_CLONES static void NAME##_forward(bt_node *n)                     \
    {                                                                           \
        const bt_real *x = n->in[0]->data;                                      \
        bt_real *y = n->out->data;                                              \
        const bt_real c = (bt_real)n->scalar;                                   \
        (void)c;                                                                \
        for (size_t i = 0, len = n->out->size; i < len; i++)                    \
            y[i] = FWD;                                                         \
    }                                                                           \
    BT_VECTOR_CLONES static void NAME##_backward(bt_node *n)                    \
    {                                                                           \
        const bt_real *x = n->in[0]->data, *y = n->out->data, *gy = n->out->grad; \
        bt_real *gx = n->in[0]->grad;                                           \
        const bt_real c = (bt_real)n->scalar;                                   \
        (void)x; (void)y; (void)c;                                              \
        for (size_t i = 0, len = n->out->size; i < len; i++)                    \
            gx[i] += gy[i] * (DF);                                              \
    }                                                                           \
    static void NAME##_jvp(bt_node *n)                                          \
    {                                                                           \
        const bt_real *x = n->in[0]->data, *y = n->out->data, *tx = n->in[0]->tangent; \
        bt_real *ty = bt_node_tangent(n);                                       \
        const bt_real c = (bt_real)n->scalar;                                   \
        (void)x; (void)y; (void)c;                                              \
        for (size_t i = 0, len = ty ? n->out->size : 0; i < len; i++)           \
            ty[i] += tx[i] * (DF);                                              \
    }                                                                           \
    static const bt_op op_##NAME = {#NAME, 1, NAME##_forward, NAME##_backward, NAME##_jvp};

UNARY(neg, -x[i], -1)
UNARY(scale, c * x[i], c)
UNARY(exp, R_EXP(x[i]), y[i])
UNARY(log, R_LOG(x[i]), 1 / x[i])
UNARY(tanh, R_TANH(x[i]), 1 - y[i] * y[i])
UNARY(sigmoid, R_SIGMOID(x[i]), y[i] * (1 - y[i]))
UNARY(relu, x[i] > 0 ? x[i] : 0, x[i] > 0 ? 1 : 0)

static bt_tensor *unary(bt_graph *g, const bt_op *op, bt_tensor *a, double c)
{
    if (!bt_op_begin(g, &a, 1))
        return NULL;
    bt_tensor *out = bt_op_output(g, a->ndim, a->shape);
    if (!out)
        return NULL;
    bt_node *n = bt_graph_record(g, op, out, &a, 1);
    if (!n)
        return NULL;
    n->scalar = c;
    op->forward(n);
    return out;
}

bt_tensor *bt_neg(bt_graph *g, bt_tensor *a) { return unary(g, &op_neg, a, 0); }
bt_tensor *bt_exp(bt_graph *g, bt_tensor *a) { return unary(g, &op_exp, a, 0); }
bt_tensor *bt_log(bt_graph *g, bt_tensor *a) { return unary(g, &op_log, a, 0); }
bt_tensor *bt_tanh(bt_graph *g, bt_tensor *a) { return unary(g, &op_tanh, a, 0); }
bt_tensor *bt_sigmoid(bt_graph *g, bt_tensor *a) { return unary(g, &op_sigmoid, a, 0); }
bt_tensor *bt_relu(bt_graph *g, bt_tensor *a) { return unary(g, &op_relu, a, 0); }

bt_tensor *bt_scale(bt_graph *g, bt_tensor *a, double c)
{
    if (!bt_op_finite(g, c, "scale by a non-finite constant"))
        return NULL;
    return unary(g, &op_scale, a, c);
}
