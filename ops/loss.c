/* loss.c: the two losses of bptt's models, each reduced to a scalar mean over
 * rows. Softmax cross-entropy subtracts the row max before exp (stable) and
 * saves the probabilities, which are all its backward and its tangent rule
 * need. Both tangents are scalars: the gradient dotted with the tangent. */
#include <math.h>
#include <string.h>

#include "fastmath.h"
#include "bptt_op.h"

#if BT_REAL_DOUBLE
#define R_EXP exp
#else
#define R_EXP bt_fast_expf
#endif

#define LANES 8

/* The largest of x[0..v), v >= 1, in LANES independent running maxima: one
 * chain of v dependent compares was a third of the loss's time at V = 28.
 * Exact (a max does not round); NaNs are skipped as the plain loop skips them. */
static inline bt_real row_max(const bt_real *x, int v)
{
    bt_real lane[LANES];
    for (int l = 0; l < LANES; l++)
        lane[l] = x[0];
    int j = 0;
    for (; j + LANES <= v; j += LANES)
        for (int l = 0; l < LANES; l++)
            lane[l] = x[j + l] > lane[l] ? x[j + l] : lane[l];
    for (; j < v; j++)
        lane[0] = x[j] > lane[0] ? x[j] : lane[0];
    bt_real mx = lane[0];
    for (int l = 1; l < LANES; l++)
        mx = lane[l] > mx ? lane[l] : mx;
    return mx;
}

/* sum of p[0..v) in double, in LANES partial sums (same reason). */
static inline double row_sum(const bt_real *p, int v)
{
    double lane[LANES] = {0};
    int j = 0;
    for (; j + LANES <= v; j += LANES)
        for (int l = 0; l < LANES; l++)
            lane[l] += p[j + l];
    for (; j < v; j++)
        lane[j % LANES] += p[j];
    double z = 0;
    for (int l = 0; l < LANES; l++)
        z += lane[l];
    return z;
}

/* logits [M,V], targets [M] -> mean_i (logsumexp(logits_i) - logits_i[t_i]) */
BT_VECTOR_CLONES static void xent_forward(bt_node *n)
{
    const bt_tensor *x = n->in[0];
    int m = x->shape[0], v = x->shape[1];
    double total = 0;
    for (int i = 0; i < m; i++) {
        const bt_real *row = x->data + (size_t)i * v;
        bt_real *p = n->saved + (size_t)i * v;
        bt_real mx = row_max(row, v);
        for (int j = 0; j < v; j++)
            p[j] = R_EXP(row[j] - mx); /* <= 1: no overflow */
        double z = row_sum(p, v);
        bt_real inv = (bt_real)(1 / z);
        for (int j = 0; j < v; j++)
            p[j] *= inv;
        total += (double)mx + log(z) - (double)row[n->ids[i]];
    }
    n->out->data[0] = (bt_real)(total / m);
}

static void xent_backward(bt_node *n)
{
    bt_tensor *x = n->in[0];
    int m = x->shape[0], v = x->shape[1];
    bt_real d = n->out->grad[0] / (bt_real)m;
    for (int i = 0; i < m; i++) {
        const bt_real *p = n->saved + (size_t)i * v;
        bt_real *gx = x->grad + (size_t)i * v;
        for (int j = 0; j < v; j++)
            gx[j] += d * p[j];
        gx[n->ids[i]] -= d;
    }
}

/* L' = mean_i (sum_j p_ij x'_ij - x'_i[t_i]) */
static void xent_jvp(bt_node *n)
{
    const bt_tensor *x = n->in[0];
    int m = x->shape[0], v = x->shape[1];
    bt_real *to = bt_node_tangent(n);
    if (!to)
        return;
    double total = 0;
    for (int i = 0; i < m; i++) {
        const bt_real *p = n->saved + (size_t)i * v, *tx = x->tangent + (size_t)i * v;
        double s = 0;
        for (int j = 0; j < v; j++)
            s += (double)p[j] * (double)tx[j];
        total += s - (double)tx[n->ids[i]];
    }
    to[0] = (bt_real)(total / m);
}

static const bt_op op_xent = {"softmax_xent", 1, xent_forward, xent_backward, xent_jvp};

bt_tensor *bt_softmax_xent(bt_graph *g, bt_tensor *logits, const int32_t *targets)
{
    if (!bt_op_begin(g, &logits, 1))
        return NULL;
    if (logits->ndim != 2 || !targets) {
        bt_graph_fail(g, BT_ERR_SHAPE, "softmax_xent needs logits [M,V] and M targets, got %s",
                      bt_shp(logits));
        return NULL;
    }
    int m = logits->shape[0], v = logits->shape[1];
    for (int i = 0; i < m; i++)
        if (targets[i] < 0 || targets[i] >= v) {
            bt_graph_fail(g, BT_ERR_ARG, "softmax_xent: target %d at row %d is outside [0, %d)",
                          (int)targets[i], i, v);
            return NULL;
        }
    bt_tensor *out = bt_op_output(g, 0, NULL);
    int32_t *ids = out ? bt_op_scratch(g, sizeof(int32_t) * (size_t)m) : NULL;
    bt_real *probs = ids ? bt_op_scratch(g, sizeof(bt_real) * logits->size) : NULL;
    if (!probs)
        return NULL;
    memcpy(ids, targets, sizeof(int32_t) * (size_t)m);
    bt_node *n = bt_graph_record(g, &op_xent, out, &logits, 1);
    if (!n)
        return NULL;
    n->ids = ids;
    n->saved = probs;
    op_xent.forward(n);
    return out;
}

/* o, y [M,N] -> mean over rows of 0.5 ||o_i - y_i||^2 */
static void mse_forward(bt_node *n)
{
    const bt_tensor *o = n->in[0], *y = n->in[1];
    double s = 0;
    for (size_t i = 0; i < o->size; i++) {
        double d = (double)o->data[i] - (double)y->data[i];
        s += d * d;
    }
    int m = o->ndim ? o->shape[0] : 1;
    n->out->data[0] = (bt_real)(0.5 * s / m);
}

static void mse_backward(bt_node *n)
{
    bt_tensor *o = n->in[0], *y = n->in[1];
    int m = o->ndim ? o->shape[0] : 1;
    bt_real d = n->out->grad[0] / (bt_real)m;
    for (size_t i = 0; i < o->size; i++) {
        bt_real diff = d * (o->data[i] - y->data[i]);
        if (o->requires_grad)
            o->grad[i] += diff;
        if (y->requires_grad)
            y->grad[i] -= diff;
    }
}

/* L' = mean over rows of sum (o - y)(o' - y') */
static void mse_jvp(bt_node *n)
{
    const bt_tensor *o = n->in[0], *y = n->in[1];
    bt_real *to = bt_node_tangent(n);
    if (!to)
        return;
    double s = 0;
    for (size_t i = 0; i < o->size; i++) {
        double d = (double)o->data[i] - (double)y->data[i];
        double t = (o->tangent ? (double)o->tangent[i] : 0) - (y->tangent ? (double)y->tangent[i] : 0);
        s += d * t;
    }
    int m = o->ndim ? o->shape[0] : 1;
    to[0] = (bt_real)(s / m);
}

static const bt_op op_mse = {"mse", 2, mse_forward, mse_backward, mse_jvp};

bt_tensor *bt_mse(bt_graph *g, bt_tensor *o, bt_tensor *y)
{
    bt_tensor *in[2] = {o, y};
    if (!bt_op_begin(g, in, 2))
        return NULL;
    if (!bt_shape_equal(o, y)) {
        bt_graph_fail(g, BT_ERR_SHAPE, "mse: prediction %s and target %s differ in shape",
                      bt_shp(o), bt_shp(y));
        return NULL;
    }
    bt_tensor *out = bt_op_output(g, 0, NULL);
    if (!out)
        return NULL;
    bt_node *n = bt_graph_record(g, &op_mse, out, in, 2);
    if (!n)
        return NULL;
    op_mse.forward(n);
    return out;
}
