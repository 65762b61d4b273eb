/* matmul.c: out[M,N] = op(a) op(b), op = optional transpose.
 * Both operands may need gradients: da = dout op(b)^T, db = op(a)^T dout,
 * written for the stored (possibly transposed) layouts. The tangent is the
 * product rule, out' = op(a') op(b) + op(a) op(b'), in the stored layouts as
 * they are (a tangent has its tensor's layout). */
#include "bptt_op.h"
#include "packed.h"
#include "wgrad.h"

static void matmul_forward(bt_node *n)
{
    bt_tensor *a = n->in[0], *b = n->in[1], *out = n->out;
    bool ta = n->iarg[0], tb = n->iarg[1];
    int m = out->shape[0], nn = out->shape[1], k = ta ? a->shape[0] : a->shape[1];
    if (!ta) /* x W: a weight b may be read packed (packed.c) */
        bt_gemm_weight(n->graph, m, a->data, b, tb, 0, out->data);
    else
        bt_gemm(ta, tb, m, nn, k, 1, a->data, a->shape[1], b->data, b->shape[1], 0, out->data, nn);
}

static void matmul_backward(bt_node *n)
{
    bt_tensor *a = n->in[0], *b = n->in[1], *out = n->out;
    bool ta = n->iarg[0], tb = n->iarg[1];
    int m = out->shape[0], nn = out->shape[1], k = ta ? a->shape[0] : a->shape[1];
    int lda = a->shape[1], ldb = b->shape[1];
    if (a->requires_grad) {
        if (!ta) /* da[M,K] += dout[M,N] op(b)^T */
            bt_gemm_weight(n->graph, m, out->grad, b, !tb, 1, a->grad);
        else /* a stored [K,M]: da += op(b) dout^T */
            bt_gemm(tb, true, k, m, nn, 1, b->data, ldb, out->grad, nn, 1, a->grad, lda);
    }
    if (b->requires_grad) {
        if (!ta && !tb) /* db[K,N] += a^T dout, batched over the sweep for a weight */
            bt_wgrad_add(n->graph, b, a->data, out->grad, m);
        else if (!tb) /* db[K,N] += op(a)^T dout */
            bt_gemm(!ta, false, k, nn, m, 1, a->data, lda, out->grad, nn, 1, b->grad, ldb);
        else /* b stored [N,K]: db += dout^T op(a) */
            bt_gemm(true, ta, nn, k, m, 1, out->grad, nn, a->data, lda, 1, b->grad, ldb);
    }
}

static void matmul_jvp(bt_node *n)
{
    bt_tensor *a = n->in[0], *b = n->in[1], *out = n->out;
    bool ta = n->iarg[0], tb = n->iarg[1];
    int m = out->shape[0], nn = out->shape[1], k = ta ? a->shape[0] : a->shape[1];
    bt_real *to = bt_node_tangent(n);
    if (!to)
        return;
    if (a->tangent)
        bt_gemm(ta, tb, m, nn, k, 1, a->tangent, a->shape[1], b->data, b->shape[1], 1, to, nn);
    if (b->tangent)
        bt_gemm(ta, tb, m, nn, k, 1, a->data, a->shape[1], b->tangent, b->shape[1], 1, to, nn);
}

static const bt_op op_matmul = {"matmul", 2, matmul_forward, matmul_backward, matmul_jvp};

bt_tensor *bt_matmul_t(bt_graph *g, bt_tensor *a, bool trans_a, bt_tensor *b, bool trans_b)
{
    bt_tensor *in[2] = {a, b};
    if (!bt_op_begin(g, in, 2))
        return NULL;
    if (a->ndim != 2 || b->ndim != 2) {
        bt_graph_fail(g, BT_ERR_SHAPE, "matmul needs 2-D operands, got %s and %s", bt_shp(a),
                      bt_shp(b));
        return NULL;
    }
    int m = trans_a ? a->shape[1] : a->shape[0], ka = trans_a ? a->shape[0] : a->shape[1];
    int kb = trans_b ? b->shape[1] : b->shape[0], nn = trans_b ? b->shape[0] : b->shape[1];
    if (ka != kb) {
        bt_graph_fail(g, BT_ERR_SHAPE,
                      "matmul: inner dimensions differ: %s%s x %s%s (%d vs %d)", bt_shp(a),
                      trans_a ? "^T" : "", bt_shp(b), trans_b ? "^T" : "", ka, kb);
        return NULL;
    }
    int shape[2] = {m, nn};
    bt_tensor *out = bt_op_output(g, 2, shape);
    if (!out)
        return NULL;
    bt_node *n = bt_graph_record(g, &op_matmul, out, in, 2);
    if (!n)
        return NULL;
    n->iarg[0] = trans_a;
    n->iarg[1] = trans_b;
    op_matmul.forward(n);
    return out;
}

bt_tensor *bt_matmul(bt_graph *g, bt_tensor *a, bt_tensor *b)
{
    return bt_matmul_t(g, a, false, b, false);
}
