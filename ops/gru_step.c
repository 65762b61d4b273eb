/* gru_step.c: torch.nn.GRU's step in two fused ops, gates r, z, n in blocks
 * of H columns:
 *   gru_gates    act[B,3H] = [r z n],
 *                r, z = sigmoid((xw + b_ih) + (h W_hh + b_hh)) on their blocks,
 *                n = tanh((xw + b_ih)'s n block + r hn),
 *                hn = (h W_hh + b_hh)'s n block, kept by the op (saved)
 *   gru_hidden   h'[B,H] = n + z (h - n)      (= (1 - z) n + z h)
 * xw is the input's product or row lookup. The same cell from primitive ops
 * (a product, five sums, six slices, a sigmoid, a tanh, two elementwise
 * products and a difference: cell_gru_torch.c before) kept a buffer per op
 * and step; these keep act, hn and h', which is all their backward needs:
 * dr = dA_n hn, and the derivatives are s (1 - s) and 1 - tanh^2 of saved
 * outputs. h W_hh is written straight into act (a dense [B,3H] product, so a
 * backend runs it on its packed weights) and activated in place. The sums
 * run in the order the primitive ops ran them, so the forward values are
 * theirs. Each op is gradient-checked and has its tangent rule, like every
 * other (tests/test_grad.c, tests/test_jvp.c). */
#include "activations.h"
#include "bptt_op.h"
#include "packed.h"
#include "recurrent_grad.h"

/* ---- gru_gates -------------------------------------------------------------------- */

/* One row: a holds h W_hh on entry and [r z n] on return; hn gets
 * (h W_hh + b_hh)'s n block. restrict: the buffers do not overlap, so the
 * loops vectorise. */
static inline void activate_row(bt_real *restrict a, bt_real *restrict hn,
                                const bt_real *restrict xw, const bt_real *restrict bi,
                                const bt_real *restrict bh, int H)
{
    for (int j = 0; j < 2 * H; j++)
        a[j] = R_SIGMOID((xw[j] + bi[j]) + (a[j] + bh[j]));
    for (int j = 0; j < H; j++) {
        hn[j] = a[2 * H + j] + bh[2 * H + j];
        a[2 * H + j] = R_TANH((xw[2 * H + j] + bi[2 * H + j]) + a[j] * hn[j]);
    }
}

BT_VECTOR_CLONES static void activate_rows(bt_real *act, bt_real *hn, const bt_real *xw,
                                           const bt_real *bi, const bt_real *bh, int B, int H)
{
    for (size_t r = 0; r < (size_t)B; r++)
        activate_row(act + r * 3 * H, hn + r * H, xw + r * 3 * H, bi, bh, H);
}

static void gates_forward(bt_node *n)
{
    bt_tensor *xw = n->in[0], *h = n->in[1], *whh = n->in[2], *out = n->out;
    int B = out->shape[0], H = h->shape[1];
    /* W_hh packed once per window where the backend keeps packs (packed.c) */
    bt_gemm_weight(n->graph, B, h->data, whh, false, 0, out->data);
    activate_rows(out->data, n->saved, xw->data, n->in[3]->data, n->in[4]->data, B, H);
}

/* One row of the backward: dgh [3H], the gradient of h W_hh + b_hh; the n
 * block of xw + b_ih's, dn, is added to dxn and dbn where given (its r and z
 * blocks are dgh's). dact's r block holds dL/dr from other readers of act,
 * if any. dgh may be dact itself: each column j reads dact's three blocks
 * before it writes dgh's (so those two are not restrict). */
static inline void dactivate_row(bt_real *dgh, bt_real *restrict dxn, bt_real *restrict dbn,
                                 const bt_real *restrict a, const bt_real *restrict hn,
                                 const bt_real *dact, int H)
{
    for (int j = 0; j < H; j++) {
        bt_real r = a[j], z = a[H + j], nv = a[2 * H + j];
        bt_real dn = dact[2 * H + j] * (1 - nv * nv);
        dgh[2 * H + j] = dn * r;
        dgh[j] = (dact[j] + dn * hn[j]) * (r * (1 - r));
        dgh[H + j] = dact[H + j] * (z * (1 - z));
        if (dxn)
            dxn[j] += dn;
        if (dbn)
            dbn[j] += dn;
    }
}

/* dgh rows [B,3H]; dxw += [dgh_r dgh_z dn] and db_ih += its column sums,
 * db_hh += dgh's, each where given. */
BT_VECTOR_CLONES static void dactivate_rows(bt_real *dgh, const bt_real *act, const bt_real *hn,
                                            const bt_real *dact, bt_real *dxw, bt_real *dbi,
                                            bt_real *dbh, int B, int H)
{
    for (size_t r = 0; r < (size_t)B; r++) {
        bt_real *g = dgh + r * 3 * H, *dx = dxw ? dxw + r * 3 * H : NULL;
        dactivate_row(g, dx ? dx + 2 * H : NULL, dbi ? dbi + 2 * H : NULL, act + r * 3 * H,
                      hn + r * H, dact + r * 3 * H, H);
        for (int j = 0; dx && j < 2 * H; j++)
            dx[j] += g[j];
        for (int j = 0; dbi && j < 2 * H; j++)
            dbi[j] += g[j];
        for (int j = 0; dbh && j < 3 * H; j++)
            dbh[j] += g[j];
    }
}

static void gates_backward(bt_node *n)
{
    bt_tensor *xw = n->in[0], *h = n->in[1], *whh = n->in[2], *bi = n->in[3], *bh = n->in[4];
    int B = n->out->shape[0], H = h->shape[1];
    bt_real *dgh = bt_recurrent_d(n, whh, B, true);
    if (!dgh)
        return;
    dactivate_rows(dgh, n->out->data, n->saved, n->out->grad,
                   xw->requires_grad ? xw->grad : NULL, bi->requires_grad ? bi->grad : NULL,
                   bh->requires_grad ? bh->grad : NULL, B, H);
    bt_recurrent_backward(n, h, whh, dgh, B);
}

/* With a = (xw + b_ih) + (h W_hh + b_hh) on the r, z blocks:
 * r' = r (1 - r) a_r', z' = z (1 - z) a_z', hn' = (h W_hh)_n' + b_hh_n',
 * n' = (1 - n^2) (xw_n' + b_ih_n' + r' hn + r hn'), where
 * (h W_hh)' = h' W_hh + h W_hh'. */
static void gates_jvp(bt_node *n)
{
    bt_tensor *xw = n->in[0], *h = n->in[1], *whh = n->in[2], *bi = n->in[3], *bh = n->in[4];
    int B = n->out->shape[0], H = h->shape[1], N = 3 * H;
    bt_real *ta = bt_node_tangent(n); /* (h W_hh)', then act' in place */
    if (!ta)
        return;
    bt_recurrent_tangent(h, whh, B, H, N, ta);
    const bt_real *tbi = bi->tangent, *tbh = bh->tangent;
    for (size_t r = 0; r < (size_t)B; r++) {
        bt_real *t = ta + r * N;
        const bt_real *a = n->out->data + r * N, *hn = n->saved + r * H;
        const bt_real *tx = xw->tangent ? xw->tangent + r * N : NULL;
        for (int j = 0; j < 2 * H; j++) /* r', z' */
            t[j] = ((tx ? tx[j] : 0) + (tbi ? tbi[j] : 0) + t[j] + (tbh ? tbh[j] : 0)) *
                   (a[j] * (1 - a[j]));
        for (int j = 2 * H; j < N; j++) {
            bt_real thn = t[j] + (tbh ? tbh[j] : 0);
            bt_real tin = (tx ? tx[j] : 0) + (tbi ? tbi[j] : 0);
            t[j] = (tin + t[j - 2 * H] * hn[j - 2 * H] + a[j - 2 * H] * thn) * (1 - a[j] * a[j]);
        }
    }
}

static const bt_op op_gru_gates = {"gru_gates", 5, gates_forward, gates_backward, gates_jvp};

bt_tensor *bt_gru_gates(bt_graph *g, bt_tensor *xw, bt_tensor *h, bt_tensor *w_hh, bt_tensor *b_ih,
                        bt_tensor *b_hh)
{
    bt_tensor *in[5] = {xw, h, w_hh, b_ih, b_hh};
    if (!bt_op_begin(g, in, 5))
        return NULL;
    int B = h->ndim == 2 ? h->shape[0] : 0, H = h->ndim == 2 ? h->shape[1] : 0;
    if (h->ndim != 2 || w_hh->ndim != 2 || w_hh->shape[0] != H || w_hh->shape[1] != 3 * H ||
        b_ih->size != (size_t)3 * H || b_hh->size != (size_t)3 * H || xw->ndim != 2 ||
        xw->shape[0] != B || xw->shape[1] != 3 * H) {
        bt_graph_fail(g, BT_ERR_SHAPE, "gru_gates: needs xw [B,3H], h [B,H], W_hh [H,3H], b_ih [3H], "
                      "b_hh [3H]; got xw %s, h %s, W_hh %s, b_ih %s, b_hh %s", bt_shp(xw), bt_shp(h),
                      bt_shp(w_hh), bt_shp(b_ih), bt_shp(b_hh));
        return NULL;
    }
    bt_tensor *out = bt_op_output(g, 2, (int[]){B, 3 * H});
    bt_real *hn = out ? bt_op_scratch(g, sizeof(bt_real) * (size_t)B * H) : NULL;
    if (!hn)
        return NULL;
    bt_node *n = bt_graph_record(g, &op_gru_gates, out, in, 5);
    if (!n)
        return NULL;
    n->saved = hn;
    op_gru_gates.forward(n);
    return out;
}

/* ---- gru_hidden: act's z and n blocks read in place ------------------------------ */

/* h' = n + z (h - n) */
BT_VECTOR_CLONES static void hidden_forward(bt_node *n)
{
    const bt_real *act = n->in[0]->data, *h = n->in[1]->data;
    bt_real *out = n->out->data;
    int B = n->out->shape[0], H = n->out->shape[1];
    for (int r = 0; r < B; r++) {
        const bt_real *z = act + (size_t)r * 3 * H + H, *nv = z + H, *hr = h + (size_t)r * H;
        bt_real *o = out + (size_t)r * H;
        for (int j = 0; j < H; j++)
            o[j] = nv[j] + z[j] * (hr[j] - nv[j]);
    }
}

/* One row: dz += d (h - n), dn += d (1 - z) (dzn: act's z and n blocks, when
 * given), dh += d z (when given); restrict: the gradients are other buffers
 * than the values. */
static inline void hidden_backward_row(bt_real *restrict dzn, bt_real *restrict dh,
                                       const bt_real *restrict zn, const bt_real *restrict h,
                                       const bt_real *restrict d, int H)
{
    for (int j = 0; dzn && j < H; j++) {
        dzn[j] += d[j] * (h[j] - zn[H + j]);
        dzn[H + j] += d[j] * (1 - zn[j]);
    }
    for (int j = 0; dh && j < H; j++)
        dh[j] += d[j] * zn[j];
}

BT_VECTOR_CLONES static void hidden_backward(bt_node *n)
{
    bt_tensor *act = n->in[0], *h = n->in[1];
    int B = n->out->shape[0], H = n->out->shape[1];
    for (size_t r = 0; r < (size_t)B; r++)
        hidden_backward_row(act->requires_grad ? act->grad + r * 3 * H + H : NULL,
                            h->requires_grad ? h->grad + r * H : NULL,
                            act->data + r * 3 * H + H, h->data + r * H, n->out->grad + r * H, H);
}

/* h'' = n' + z' (h - n) + z (h~ - n')  (h~: h's tangent) */
static void hidden_jvp(bt_node *n)
{
    bt_tensor *act = n->in[0], *h = n->in[1];
    bt_real *t = bt_node_tangent(n);
    int B = n->out->shape[0], H = n->out->shape[1];
    for (int r = 0; t && r < B; r++) {
        const bt_real *z = act->data + (size_t)r * 3 * H + H, *nv = z + H;
        const bt_real *hr = h->data + (size_t)r * H;
        const bt_real *tzn = act->tangent ? act->tangent + (size_t)r * 3 * H + H : NULL;
        const bt_real *th = h->tangent ? h->tangent + (size_t)r * H : NULL;
        bt_real *y = t + (size_t)r * H;
        for (int j = 0; j < H; j++) {
            if (tzn) /* z', n' */
                y[j] += tzn[H + j] * (1 - z[j]) + tzn[j] * (hr[j] - nv[j]);
            if (th)
                y[j] += z[j] * th[j];
        }
    }
}

static const bt_op op_gru_hidden = {"gru_hidden", 2, hidden_forward, hidden_backward, hidden_jvp};

bt_tensor *bt_gru_hidden(bt_graph *g, bt_tensor *act, bt_tensor *h)
{
    bt_tensor *in[2] = {act, h};
    if (!bt_op_begin(g, in, 2))
        return NULL;
    if (act->ndim != 2 || h->ndim != 2 || act->shape[0] != h->shape[0] ||
        act->shape[1] != 3 * h->shape[1]) {
        bt_graph_fail(g, BT_ERR_SHAPE, "gru_hidden: needs act [B,3H] and h [B,H]; got act %s, h %s",
                      bt_shp(act), bt_shp(h));
        return NULL;
    }
    bt_tensor *out = bt_op_output(g, 2, h->shape);
    if (!out)
        return NULL;
    bt_node *n = bt_graph_record(g, &op_gru_hidden, out, in, 2);
    if (!n)
        return NULL;
    op_gru_hidden.forward(n);
    return out;
}
