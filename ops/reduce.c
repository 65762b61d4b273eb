/* reduce.c: sum and mean of all elements, to a scalar (ndim 0); the tangent
 * is the same reduction of the input's tangent. */
#include "bptt_op.h"

static void reduce_forward(bt_node *n)
{
    const bt_real *x = n->in[0]->data;
    double s = 0; /* accumulate in double: long sums of floats drift */
    for (size_t i = 0, len = n->in[0]->size; i < len; i++)
        s += x[i];
    n->out->data[0] = (bt_real)(s * n->scalar);
}

static void reduce_backward(bt_node *n)
{
    bt_real d = n->out->grad[0] * (bt_real)n->scalar;
    bt_real *gx = n->in[0]->grad;
    for (size_t i = 0, len = n->in[0]->size; i < len; i++)
        gx[i] += d;
}

static void reduce_jvp(bt_node *n)
{
    const bt_real *tx = n->in[0]->tangent;
    bt_real *to = bt_node_tangent(n);
    if (!to)
        return;
    double s = 0;
    for (size_t i = 0, len = n->in[0]->size; i < len; i++)
        s += tx[i];
    to[0] = (bt_real)(s * n->scalar);
}

static const bt_op op_sum = {"sum", 1, reduce_forward, reduce_backward, reduce_jvp};
static const bt_op op_mean = {"mean", 1, reduce_forward, reduce_backward, reduce_jvp};

static bt_tensor *reduce(bt_graph *g, const bt_op *op, bt_tensor *a, bool mean)
{
    if (!bt_op_begin(g, &a, 1))
        return NULL;
    bt_tensor *out = bt_op_output(g, 0, NULL);
    if (!out)
        return NULL;
    bt_node *n = bt_graph_record(g, op, out, &a, 1);
    if (!n)
        return NULL;
    n->scalar = mean ? 1.0 / (double)a->size : 1.0;
    op->forward(n);
    return out;
}

bt_tensor *bt_sum(bt_graph *g, bt_tensor *a) { return reduce(g, &op_sum, a, false); }
bt_tensor *bt_mean(bt_graph *g, bt_tensor *a) { return reduce(g, &op_mean, a, true); }
