/* truncation.c: the two ops that truncate backpropagation through time.
 * Both are identity in the forward pass and share the input's data (no copy);
 * they differ only in what flows back:
 *   detach         nothing (the recurrent edge is cut);
 *   grad_scale(xi) xi * gradient; xi = 0 adds nothing at all, so an infinite
 *                  upstream gradient cannot become 0 * inf = NaN.
 * And forward (bt_jvp, docs/forward-mode.md): detach makes its output a
 * constant, tangent zero, as backward does; grad_scale is the identity, so its
 * tangent is the input's (shared, no copy): xi scales only what flows back. A
 * grad_scale(0) is recorded as a cut (nothing downstream of it alone is on the
 * tape), so it is a detach in both directions. */
#include <math.h>
#include <string.h>

#include "bptt_op.h"

static void alias_forward(bt_node *n) { n->out->data = n->in[0]->data; }

static void detach_backward(bt_node *n) { (void)n; }

static void grad_scale_backward(bt_node *n)
{
    if (n->scalar == 0)
        return;
    bt_real xi = (bt_real)n->scalar;
    const bt_real *gy = n->out->grad;
    bt_real *gx = n->in[0]->grad;
    for (size_t i = 0, len = n->out->size; i < len; i++)
        gx[i] += xi * gy[i];
}

static void detach_jvp(bt_node *n) { (void)n; /* out->tangent stays NULL: zero */ }

static void grad_scale_jvp(bt_node *n)
{
    if (n->scalar != 0)
        n->out->tangent = n->in[0]->tangent;
}

static const bt_op op_detach = {"detach", 1, alias_forward, detach_backward, detach_jvp};
static const bt_op op_grad_scale = {"grad_scale", 1, alias_forward, grad_scale_backward,
                                    grad_scale_jvp};

static bt_tensor *alias(bt_graph *g, const bt_op *op, bt_tensor *x, double xi)
{
    if (!bt_op_begin(g, &x, 1))
        return NULL;
    bt_tensor *out = bt_arena_alloc(bt_graph_arena(g), sizeof *out);
    if (!out) {
        bt_graph_fail(g, BT_ERR_NOMEM, "out of memory for %s", op->name);
        return NULL;
    }
    *out = (bt_tensor){.ndim = x->ndim, .size = x->size, .data = x->data};
    memcpy(out->shape, x->shape, sizeof out->shape);
    bt_node *n = bt_graph_record(g, op, out, &x, 1);
    if (!n)
        return NULL;
    n->scalar = xi;
    if (op == &op_detach || xi == 0) {
        /* Recorded on the tape so the cut is visible, but nothing downstream
         * asks this tensor for a gradient. */
        out->requires_grad = false;
    }
    return out;
}

bt_tensor *bt_detach(bt_graph *g, bt_tensor *x) { return alias(g, &op_detach, x, 0); }

bt_tensor *bt_grad_scale(bt_graph *g, bt_tensor *x, double xi)
{
    if (!bt_op_finite(g, xi, "grad_scale by a non-finite factor"))
        return NULL;
    return alias(g, &op_grad_scale, x, xi);
}
