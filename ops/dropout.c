/* dropout.c: inverted dropout, y = x * m / (1 - p) with m_i ~ Bernoulli(1 - p).
 * The mask is a pure function of (seed, element index): element i is kept
 * when the splitmix64 hash of (seed, i) gives a uniform >= p. So the same
 * seed gives the same mask in every window that rebuilds a step (TBPTT's
 * overlaps, checkpointed stretches), a resumed run draws what the first run
 * drew, and a gradient check sees a fixed mask. The saved scale (0 or
 * 1/(1-p) per element) is what backward and the tangent rule multiply by.
 *   backward: dx += dy * scale      jvp: tx = t * scale
 * Shapes: x [B,H] (any shape works: the mask runs over the flat index). */
#include <stdint.h>

#include "bptt_op.h"

static uint64_t mix64(uint64_t z)
{
    z += 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

double bt_dropout_uniform(uint64_t seed, uint64_t i)
{
    return (double)(mix64(seed ^ mix64(i)) >> 11) * 0x1.0p-53;
}

static void dropout_forward(bt_node *n)
{
    const bt_real *x = n->in[0]->data, *s = n->saved;
    bt_real *y = n->out->data;
    for (size_t i = 0, len = n->out->size; i < len; i++)
        y[i] = x[i] * s[i];
}

static void dropout_backward(bt_node *n)
{
    const bt_real *gy = n->out->grad, *s = n->saved;
    bt_real *gx = n->in[0]->grad;
    for (size_t i = 0, len = n->out->size; i < len; i++)
        gx[i] += gy[i] * s[i];
}

static void dropout_jvp(bt_node *n)
{
    const bt_real *tx = n->in[0]->tangent, *s = n->saved;
    if (!tx)
        return; /* a constant input: zero tangent */
    bt_real *ty = bt_node_tangent(n);
    if (!ty)
        return;
    for (size_t i = 0, len = n->out->size; i < len; i++)
        ty[i] += tx[i] * s[i];
}

static const bt_op op_dropout = {"dropout", 1, dropout_forward, dropout_backward, dropout_jvp};

bt_tensor *bt_dropout(bt_graph *g, bt_tensor *x, double p, uint64_t seed)
{
    if (!bt_op_begin(g, &x, 1))
        return NULL;
    if (!(p >= 0 && p < 1)) {
        bt_graph_fail(g, BT_ERR_ARG, "dropout: the probability %g is not in [0, 1)", p);
        return NULL;
    }
    bt_tensor *out = bt_op_output(g, x->ndim, x->shape);
    bt_real *scale = bt_op_scratch(g, sizeof(bt_real) * (x->size ? x->size : 1));
    if (!out || !scale)
        return NULL;
    bt_node *n = bt_graph_record(g, &op_dropout, out, &x, 1);
    if (!n)
        return NULL;
    bt_real keep = (bt_real)(1.0 / (1.0 - p));
    for (size_t i = 0; i < x->size; i++)
        scale[i] = bt_dropout_uniform(seed, i) >= p ? keep : 0;
    n->saved = scale;
    n->scalar = p;
    op_dropout.forward(n);
    return out;
}
