/* rnn_step.c: the fused tanh RNN step, out[B,H] = tanh(x W_x + h W_hh + b).
 * The five primitive ops it replaces (lookup or product, product, two adds,
 * tanh) would keep five [B,H] buffers per step; this op keeps only its output,
 * which is all its backward needs: dA = dout (1 - out^2), and all its tangent
 * rule needs: out' = (1 - out^2) A'. Added because the benchmark said so
 * (bench/), and gradient-checked like every other op.
 * x W_x is a row lookup for token ids (W_x [V,H]) or a product for real x [B,D]
 * (W_x [D,H]). Inputs: W_x, h [B,H], W_hh [H,H], b [H], then x if real. */
#include <string.h>

#include "activations.h"
#include "bptt_op.h"
#include "packed.h"
#include "recurrent_grad.h"

/* o[B,H] = tanh(o + x + b), row by row, where x is row ids[r] of W_x (the
 * token's column of x W_x) when ids are given, and nothing otherwise. Adding
 * the row here rather than copying it into o before the product saves a pass
 * over o and lets the product overwrite o instead of adding to it. */
BT_VECTOR_CLONES static void tanh_rows(bt_real *o, const bt_real *wx, const int32_t *ids,
                                       const bt_real *b, int B, int H)
{
    for (int r = 0; r < B; r++) {
        bt_real *row = o + (size_t)r * H;
        if (ids) {
            const bt_real *x = wx + (size_t)ids[r] * H;
            for (int j = 0; j < H; j++)
                row[j] = R_TANH(row[j] + x[j] + b[j]);
        } else {
            for (int j = 0; j < H; j++)
                row[j] = R_TANH(row[j] + b[j]);
        }
    }
}

/* da = dout (1 - out^2), and db += the column sums of da when db is given. */
BT_VECTOR_CLONES static void dtanh_rows(bt_real *da, const bt_real *dout, const bt_real *out,
                                        bt_real *db, int B, int H)
{
    for (size_t i = 0, len = (size_t)B * H; i < len; i++)
        da[i] = dout[i] * (1 - out[i] * out[i]);
    for (int r = 0; db && r < B; r++)
        for (int j = 0; j < H; j++)
            db[j] += da[(size_t)r * H + j];
}

static void rnn_step_forward(bt_node *n)
{
    bt_tensor *wx = n->in[0], *h = n->in[1], *whh = n->in[2], *b = n->in[3], *out = n->out;
    int B = out->shape[0], H = out->shape[1];
    bt_real *o = out->data;
    if (!n->ids)
        bt_gemm_weight(n->graph, B, n->in[4]->data, wx, false, 0, o);
    /* W_hh packed once per window where the backend keeps packs (packed.c) */
    bt_gemm_weight(n->graph, B, h->data, whh, false, n->ids ? 0 : 1, o);
    tanh_rows(o, wx->data, n->ids, b->data, B, H);
}

static void rnn_step_backward(bt_node *n)
{
    bt_tensor *wx = n->in[0], *h = n->in[1], *whh = n->in[2], *b = n->in[3], *out = n->out;
    int B = out->shape[0], H = out->shape[1];
    /* dA in W_hh's slot unless x's own weight product would read it too (a
     * slot is for one weight's product only) */
    bt_real *da = bt_recurrent_d(n, whh, B, n->ids || !wx->requires_grad);
    if (!da)
        return;
    dtanh_rows(da, out->grad, out->data, b->requires_grad ? b->grad : NULL, B, H);
    bt_recurrent_backward(n, h, whh, da, B);
    if (wx->requires_grad) {
        if (n->ids)
            for (int r = 0; r < B; r++) {
                bt_real *dst = wx->grad + (size_t)n->ids[r] * H;
                const bt_real *src = da + (size_t)r * H;
                for (int j = 0; j < H; j++)
                    dst[j] += src[j];
            }
        else /* dW_x += x^T dA */
            bt_wgrad_add(n->graph, wx, n->in[4]->data, da, B);
    }
    if (!n->ids && n->in[4]->requires_grad) /* dx += dA W_x^T */
        bt_gemm_weight(n->graph, B, da, wx, true, 1, n->in[4]->grad);
}

/* out' = (1 - out^2) * A', A' = x' W_x + x W_x' + h' W_hh + h W_hh' + b' (the
 * product rule on each term; for ids, x W_x' is a row lookup in W_x'). */
static void rnn_step_jvp(bt_node *n)
{
    bt_tensor *wx = n->in[0], *h = n->in[1], *whh = n->in[2], *b = n->in[3], *out = n->out;
    bt_tensor *x = n->ids ? NULL : n->in[4];
    int B = out->shape[0], H = out->shape[1], D = wx->shape[0];
    bt_real *ta = bt_node_tangent(n); /* A', then out' in place */
    if (!ta)
        return;
    if (wx->tangent && n->ids)
        for (int r = 0; r < B; r++)
            memcpy(ta + (size_t)r * H, wx->tangent + (size_t)n->ids[r] * H, sizeof(bt_real) * H);
    else if (wx->tangent)
        bt_gemm(false, false, B, H, D, 1, x->data, D, wx->tangent, H, 1, ta, H);
    if (x && x->tangent)
        bt_gemm(false, false, B, H, D, 1, x->tangent, D, wx->data, H, 1, ta, H);
    bt_recurrent_tangent(h, whh, B, H, H, ta);
    for (int r = 0; r < B; r++) {
        bt_real *row = ta + (size_t)r * H;
        const bt_real *y = out->data + (size_t)r * H;
        for (int j = 0; j < H; j++)
            row[j] = (row[j] + (b->tangent ? b->tangent[j] : 0)) * (1 - y[j] * y[j]);
    }
}

static const bt_op op_rnn_step = {"rnn_tanh_step", -1, rnn_step_forward, rnn_step_backward,
                                  rnn_step_jvp};

bt_tensor *bt_rnn_tanh_step(bt_graph *g, bt_tensor *w_x, const int32_t *ids, bt_tensor *x,
                            bt_tensor *h, bt_tensor *w_hh, bt_tensor *b)
{
    bt_tensor *in[5] = {w_x, h, w_hh, b, x};
    int n_in = ids ? 4 : 5;
    if (!bt_op_begin(g, in, n_in))
        return NULL;
    int B = h->ndim == 2 ? h->shape[0] : 0, H = h->ndim == 2 ? h->shape[1] : 0;
    bool ok = h->ndim == 2 && w_x->ndim == 2 && w_x->shape[1] == H && w_hh->ndim == 2 &&
              w_hh->shape[0] == H && w_hh->shape[1] == H && b->size == (size_t)H &&
              (ids || (x->ndim == 2 && x->shape[0] == B && x->shape[1] == w_x->shape[0]));
    if (!ok) {
        bt_graph_fail(g, BT_ERR_SHAPE,
                      "rnn_tanh_step: needs h [B,H], W_x [V or D,H], W_hh [H,H], b [H]%s; got h %s, "
                      "W_x %s, W_hh %s, b %s%s%s",
                      ids ? "" : ", x [B,D]", bt_shp(h), bt_shp(w_x), bt_shp(w_hh), bt_shp(b),
                      ids ? "" : ", x ", ids ? "" : bt_shp(x));
        return NULL;
    }
    int32_t *copy = NULL;
    if (ids) {
        for (int r = 0; r < B; r++)
            if (ids[r] < 0 || ids[r] >= w_x->shape[0]) {
                bt_graph_fail(g, BT_ERR_ARG, "rnn_tanh_step: id %d at row %d is outside W_x's %d rows",
                              (int)ids[r], r, w_x->shape[0]);
                return NULL;
            }
        copy = bt_op_scratch(g, sizeof(int32_t) * (size_t)B);
        if (!copy)
            return NULL;
        memcpy(copy, ids, sizeof(int32_t) * (size_t)B);
    }
    bt_tensor *out = bt_op_output_lane(g, 2, (int[]){B, H}, w_hh); /* h_t beside h_{t-1} */
    if (!out)
        return NULL;
    bt_node *n = bt_graph_record(g, &op_rnn_step, out, in, n_in);
    if (!n)
        return NULL;
    n->ids = copy;
    op_rnn_step.forward(n);
    return out;
}
